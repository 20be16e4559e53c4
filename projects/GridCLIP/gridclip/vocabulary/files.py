"""
Custom vocabularies: a text file with one name per line, or a comma-separated list of names.

A spec that looks like a file path but names no existing file is an error, never a one-class
vocabulary named after the path. A vocabulary file must be a regular file of at most
``MAX_VOCABULARY_FILE_BYTES``: a FIFO, a device (``/dev/zero``) or a socket is refused without
reading (opening a FIFO would wait for a writer for ever), and at most the cap + 1 bytes are ever read.
"""
import os
import re
import stat

from .names import clean_name, validate_vocabulary

__all__ = [
    "COMMENT_PREFIX", "MAX_VOCABULARY_FILE_BYTES", "looks_like_path", "read_vocabulary_file", "parse_custom_vocabulary",
]

# Extensions that mark a spec as a file path even when the file does not exist (to name it).
_VOCABULARY_FILE_EXTENSIONS = (".txt", ".csv", ".names", ".lst")
# Anything that ends like a file name ("names.json", "my.vocab"): a path, not a category name.
_FILE_LIKE = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,5}$")
#: lines of a vocabulary file starting with this are comments
COMMENT_PREFIX = "#"
#: the largest vocabulary file read (LVIS's 1203 names take 14 KB; 16 MiB is over a million names)
MAX_VOCABULARY_FILE_BYTES = 16 * 1024 * 1024


def _file_kind(mode):
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def _read_regular_file(path, max_bytes=MAX_VOCABULARY_FILE_BYTES):
    """
    The bytes of ``path`` if it is a regular file of at most ``max_bytes``. Opened non-blocking and
    checked with ``fstat`` on the open descriptor (no window for the path to change in between), so a
    FIFO never blocks; at most ``max_bytes + 1`` bytes are read, so a file that grows is caught too.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    folder = f"Vocabulary file {path} is a folder; give a text file with one name per line."
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise IsADirectoryError(folder) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(folder)
        if not stat.S_ISREG(mode):
            raise ValueError(
                f"Vocabulary file {path} is {_file_kind(mode)}, not a regular file; give a text file with one "
                "name per line."
            )
        with os.fdopen(fd, "rb") as f:
            fd = None  # closed by f
            data = f.read(max_bytes + 1)
    finally:
        if fd is not None:
            os.close(fd)
    if len(data) > max_bytes:
        raise ValueError(
            f"Vocabulary file {path} is larger than {max_bytes} bytes ({max_bytes // 2**20} MiB), too large to be "
            "a list of category names; give a text file with one name per line."
        )
    return data


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
    (:func:`~gridclip.vocabulary.names.validate_vocabulary`). Only a regular file of at most
    ``MAX_VOCABULARY_FILE_BYTES`` is read (a FIFO, a device or a larger file is a ValueError naming it).
    """
    data = _read_regular_file(path)
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"Vocabulary file {path} is not UTF-8 text ({e.reason} at byte {e.start}).") from None
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
