"""
Vocabularies: the ordered lists of category names a GridCLIP classifier scores.

A vocabulary is named by a *spec* string, as in ``MODEL.GRIDCLIP.TRAIN_VOCABULARY`` /
``TEST_VOCABULARY`` and ``tools/demo.py --vocabulary``:

=====================  =====================================================================
spec                   vocabulary
=====================  =====================================================================
``""``                 the ``thing_classes`` of the dataset the vocabulary is resolved for
``"lvis"``             the 1203 LVIS v1 categories, in category-id order
``"lvis_base"``        the 866 LVIS v1 base categories (common + frequent), in category-id order
``"coco"``             the 80 COCO thing classes, in contiguous-id order
``"voc"``              the 20 PASCAL VOC classes
a dataset name         ``MetadataCatalog.get(name).thing_classes`` of a registered dataset
a file path            a text file with one category name per line (blank and ``#`` lines ignored)
``"a,b c,d"``          a comma-separated list of names
=====================  =====================================================================

Whatever the source (a spec string, a list of names, a file, a dataset, ``set_vocabulary``,
``rescore``), the names pass :func:`validate_vocabulary`: invisible characters removed, ``None`` /
non-strings / empty names / duplicates refused. A spec that looks like a file path but names no
existing file is an error, never a one-class vocabulary named after the path.

LVIS names are the ``name`` field of Detectron2's ``LVIS_CATEGORIES`` (as ViLD and Detic use them).
Detectron2's own LVIS metadata uses each category's first synonym instead; the two differ for one
category (id 139: name ``bull``, first synonym ``horned_cow``).
"""
import os
import re
import unicodedata
from typing import Sequence, Union

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_CLASS_NAMES

from ..modeling.text_embeddings import clean_category_name

__all__ = [
    "BUILTIN_VOCABULARIES",
    "resolve_vocabulary",
    "parse_custom_vocabulary",
    "validate_vocabulary",
    "register_vocabulary",
    "lvis_v1_class_names",
    "lvis_v1_class_frequencies",
    "lvis_v1_base_class_names",
    "coco_class_names",
    "voc_class_names",
]

# Extensions that mark a spec as a file path even when the file does not exist (to name it).
_VOCABULARY_FILE_EXTENSIONS = (".txt", ".csv", ".names", ".lst")
# Anything that ends like a file name ("names.json", "my.vocab"): a path, not a category name.
_FILE_LIKE = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,5}$")
#: lines of a vocabulary file starting with this are comments
COMMENT_PREFIX = "#"


def _lvis_v1_categories_by_id():
    return sorted(LVIS_CATEGORIES, key=lambda c: c["id"])


def lvis_v1_class_names():
    """The 1203 LVIS v1 category names (``name`` field), in category-id order."""
    return [c["name"] for c in _lvis_v1_categories_by_id()]


def lvis_v1_class_frequencies():
    """LVIS v1 frequency group of each category (``"r"``, ``"c"`` or ``"f"``), aligned with
    :func:`lvis_v1_class_names`."""
    return [c["frequency"] for c in _lvis_v1_categories_by_id()]


def lvis_v1_base_class_names():
    """The 866 LVIS v1 base categories (common + frequent; the 337 rare ones are novel), in
    category-id order: the training vocabulary of the open-vocabulary protocol (ViLD)."""
    return [c["name"] for c in _lvis_v1_categories_by_id() if c["frequency"] in ("c", "f")]


def coco_class_names():
    """The 80 COCO thing classes, in Detectron2's contiguous-id order."""
    return [c["name"] for c in COCO_CATEGORIES if c["isthing"] == 1]


def voc_class_names():
    """The 20 PASCAL VOC classes, in Detectron2's order."""
    return list(VOC_CLASS_NAMES)


BUILTIN_VOCABULARIES = {
    "lvis": lvis_v1_class_names,
    "lvis_base": lvis_v1_base_class_names,
    "coco": coco_class_names,
    "voc": voc_class_names,
}

_ACCEPTED_SPECS = (
    "'' (the dataset's own classes), 'lvis' (1203), 'lvis_base' (866), 'coco' (80), 'voc' (20), "
    "a registered dataset name, a text file with one name per line, or a comma-separated list of "
    "names such as 'cat,red umbrella'"
)


def _looks_like_path(text):
    """A spec that names a file: a folder separator, a home/relative prefix or a file-like extension."""
    text = text.strip()
    return (
        text.lower().endswith(_VOCABULARY_FILE_EXTENSIONS)
        or text.startswith(("/", "./", "../", "~", ".\\"))
        or "/" in text
        or "\\" in text
        or (" " not in text and bool(_FILE_LIKE.search(text)))
    )


def _clean_name(name):
    """
    A category name as typed, minus what the eye does not see: Unicode NFC form, invisible format
    characters (byte-order marks, zero-width spaces and joiners, bidi marks) and control characters
    removed, every kind of space (no-break, ideographic, tabs) turned into one plain space, stripped.
    """
    name = unicodedata.normalize("NFC", name)
    kept = []
    for ch in name:
        category = unicodedata.category(ch)
        if category == "Cf" or (category == "Cc" and not ch.isspace()):
            continue  # invisible: BOM, ZWSP, ZWJ, LRM, soft hyphen, NUL, ...
        kept.append(" " if ch.isspace() else ch)
    return " ".join("".join(kept).split())


def validate_vocabulary(names, source="the vocabulary"):
    """
    The one check every vocabulary goes through, whatever its source (CLI, file, config, Python
    API, ``set_vocabulary``, ``rescore``).

    Each name must be a string; invisible characters are removed and whitespace normalised
    (:func:`_clean_name`). Refused, with a message naming ``source`` and the offending entries: an
    empty vocabulary, a bare string (a spec, not a list: use :func:`resolve_vocabulary`), ``None`` or
    other non-strings, names that are empty after cleaning, and duplicates (names compared as the
    text prompts see them: stripped, lower-cased, ``_`` → space, trailing dots removed).

    Returns:
        list[str]: the cleaned names, in order.
    """
    if isinstance(names, (str, bytes)):
        raise TypeError(
            f"{source}: expected a list of category names, got the string {names!r}; pass a list such as "
            "['cat', 'dog'] or resolve a spec string with resolve_vocabulary()."
        )
    try:
        names = list(names)
    except TypeError:
        raise TypeError(f"{source}: expected a list of category names, got {type(names).__name__}.") from None
    if not names:
        raise ValueError(f"The vocabulary from {source} is empty; give at least one category name.")
    not_strings = [f"{i}: {name!r}" for i, name in enumerate(names) if not isinstance(name, str)]
    if not_strings:
        raise TypeError(
            f"The vocabulary from {source} has entries that are not strings (position: value): "
            f"{', '.join(not_strings[:10])}{' ...' if len(not_strings) > 10 else ''}."
        )
    cleaned = [_clean_name(name) for name in names]
    empty = [i for i, name in enumerate(cleaned) if not clean_category_name(name)]
    if empty:
        raise ValueError(
            f"The vocabulary from {source} has empty category names at positions {empty} "
            "(0-based); remove the stray separators or blank entries."
        )
    first_seen = {}
    duplicates = []
    for name in cleaned:
        key = clean_category_name(name)
        if key in first_seen:
            duplicates.append(
                repr(name) if first_seen[key] == name else f"{first_seen[key]!r} / {name!r}"
            )
        else:
            first_seen[key] = name
    if duplicates:
        raise ValueError(
            f"The vocabulary from {source} has duplicate category names: {', '.join(duplicates)}. "
            "Each category needs a distinct name (names are compared after stripping, lower-casing "
            "and '_' → ' ', as the text prompts see them)."
        )
    return cleaned


# Kept for callers of the earlier name.
_check_names = validate_vocabulary


def read_vocabulary_file(path):
    """
    Names from a text file, one per line: UTF-8 (a byte-order mark is ignored), blank lines and lines
    starting with ``#`` skipped, each name cleaned and the whole list validated
    (:func:`validate_vocabulary`).
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
        name = _clean_name(line)
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
    if "," not in text_or_path and _looks_like_path(text_or_path):
        raise FileNotFoundError(
            f"Vocabulary file not found: {path} (a name that looks like a file path is read as one; "
            "give existing files, or comma-separated names such as 'cat,dog')."
        )
    if not _clean_name(text_or_path):
        raise ValueError("The custom vocabulary is empty; give comma-separated names such as 'cat,dog'.")
    names = [name.strip() for name in text_or_path.split(",")]
    return validate_vocabulary(names, f"custom vocabulary {text_or_path!r}")


def register_vocabulary(names, label="vocabulary"):
    """
    Register ``names`` (validated) as a metadata-only entry of Detectron2's catalogs and return its
    name: usable wherever a vocabulary spec or a Visualizer's metadata is expected, without any
    dataset file. Loading it as a dataset raises a clear error. The same names give the same entry.
    """
    import hashlib

    names = validate_vocabulary(names, label)
    digest = hashlib.sha1("\n".join(names).encode("utf-8")).hexdigest()[:12]
    entry = f"__gridclip_{label}_{digest}"
    if entry not in DatasetCatalog.list():

        def _not_a_dataset():
            raise ValueError(
                f"'{entry}' is a vocabulary of {len(names)} names registered for inference, not a dataset "
                "with images; set DATASETS.TRAIN / DATASETS.TEST to real datasets."
            )

        DatasetCatalog.register(entry, _not_a_dataset)
        MetadataCatalog.get(entry).set(thing_classes=list(names))
    return entry


def _dataset_classes(dataset_name):
    metadata = MetadataCatalog.get(dataset_name)
    classes = metadata.get("thing_classes", None)
    if not classes:
        raise ValueError(
            f"Dataset {dataset_name!r} has no thing_classes in its metadata, so it cannot provide a "
            f"vocabulary. Set the vocabulary explicitly: {_ACCEPTED_SPECS}."
        )
    return list(classes)


def resolve_vocabulary(spec, dataset_name=None):
    """
    Turn a vocabulary spec (see the module doc), or a list of names, into the validated list of
    category names (:func:`validate_vocabulary`: the same check for every source).

    Args:
        spec (str or list[str]): the vocabulary spec (``""`` means ``dataset_name``'s classes), or the
            names themselves.
        dataset_name (str or None): the dataset whose ``thing_classes`` ``""`` resolves to.

    Returns:
        list[str]: category names; their order defines the class indices of the classifier.
    """
    if spec is None:
        spec = ""
    if isinstance(spec, (list, tuple)):
        return validate_vocabulary(spec, "the list of names")
    if not isinstance(spec, str):
        raise TypeError(f"A vocabulary spec is a string or a list of names, got {type(spec).__name__}: {spec!r}.")
    spec = spec.strip()
    if not spec:
        if not dataset_name:
            raise ValueError(
                "An empty vocabulary spec means 'the dataset's classes', but no dataset was given. "
                f"Set the vocabulary to one of: {_ACCEPTED_SPECS}."
            )
        if dataset_name not in DatasetCatalog.list():
            raise KeyError(
                f"Dataset {dataset_name!r} is not registered, so its classes cannot be the vocabulary. "
                "Register it first (import gridclip registers GridCLIP's datasets; DATASETS.COCO_FORMAT "
                f"declares your own) or set the vocabulary explicitly: {_ACCEPTED_SPECS}."
            )
        return validate_vocabulary(_dataset_classes(dataset_name), f"dataset {dataset_name!r}")
    if spec.lower() in BUILTIN_VOCABULARIES:
        return BUILTIN_VOCABULARIES[spec.lower()]()
    if spec in DatasetCatalog.list():
        return validate_vocabulary(_dataset_classes(spec), f"dataset {spec!r}")
    if "," in spec or os.path.exists(os.path.expanduser(spec)) or _looks_like_path(spec):
        return parse_custom_vocabulary(spec)
    raise ValueError(
        f"Unknown vocabulary {spec!r}: it is not a built-in vocabulary, a registered dataset or an "
        f"existing file. Accepted: {_ACCEPTED_SPECS}. For a custom vocabulary of one name, write it "
        "in a text file."
    )
