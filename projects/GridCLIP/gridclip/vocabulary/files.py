"""
Custom vocabularies: a text file with one name per line, or a comma-separated list of names.

A spec that looks like a file path but names no existing file is an error, never a one-class
vocabulary named after the path.
"""
import os
import re

from .names import clean_name, validate_vocabulary

__all__ = ["COMMENT_PREFIX", "looks_like_path", "read_vocabulary_file", "parse_custom_vocabulary"]

# Extensions that mark a spec as a file path even when the file does not exist (to name it).
_VOCABULARY_FILE_EXTENSIONS = (".txt", ".csv", ".names", ".lst")
# Anything that ends like a file name ("names.json", "my.vocab"): a path, not a category name.
_FILE_LIKE = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,5}$")
#: lines of a vocabulary file starting with this are comments
COMMENT_PREFIX = "#"


def looks_like_path(text):
    """A spec that names a file: a folder separator, a home/relative prefix or a file-like extension."""
    text = text.strip()
    return (
        text.lower().endswith(_VOCABULARY_FILE_EXTENSIONS)
        or text.startswith(("/", "./", "../", "~", ".\\"))
        or "/" in text
        or "\\" in text
        or (" " not in text and bool(_FILE_LIKE.search(text)))
    )


def read_vocabulary_file(path):
    """
    Names from a text file, one per line: UTF-8 (a byte-order mark is ignored), blank lines and lines
    starting with ``#`` skipped, each name cleaned and the whole list validated
    (:func:`~gridclip.vocabulary.names.validate_vocabulary`).
    """
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"Vocabulary file {path} is not UTF-8 text ({e.reason} at byte {e.start}).") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"Vocabulary file {path} is a folder; give a text file with one name per line.") from None
    names = []
    for line in lines:
        name = clean_name(line)
        if not name or name.startswith(COMMENT_PREFIX):
            continue
        names.append(name)
    return validate_vocabulary(names, f"file {path}")


def parse_custom_vocabulary(text_or_path):
    """
    Parse a user vocabulary.

    Args:
        text_or_path (str): a path to a text file with one category name per line (see
            :func:`read_vocabulary_file`: blank and ``#`` comment lines skipped), or a
            comma-separated list of names (``"cat, red umbrella"``; each name stripped).

    Returns:
        list[str]: the category names, in the given order.

    Raises:
        FileNotFoundError: the argument looks like a file path (a folder separator, ``~`` or ``.``
            prefix, or a file-like extension such as .txt/.json) but no such file exists.
        ValueError: the vocabulary is empty, has an empty name, or has duplicate names (the
            message names them).
    """
    if not isinstance(text_or_path, str):
        raise TypeError(f"A custom vocabulary is a string, got {type(text_or_path).__name__}.")
    path = os.path.expanduser(text_or_path.strip())
    if path and os.path.exists(path) and ("," not in text_or_path or os.path.isfile(path)):
        return read_vocabulary_file(path)
    if "," not in text_or_path and looks_like_path(text_or_path):
        raise FileNotFoundError(
            f"Vocabulary file not found: {path} (a name that looks like a file path is read as one; "
            "give existing files, or comma-separated names such as 'cat,dog')."
        )
    if not clean_name(text_or_path):
        raise ValueError("The custom vocabulary is empty; give comma-separated names such as 'cat,dog'.")
    names = [name.strip() for name in text_or_path.split(",")]
    return validate_vocabulary(names, f"custom vocabulary {text_or_path!r}")
