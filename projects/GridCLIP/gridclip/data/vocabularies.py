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
a file path            a text file with one category name per line (blank lines ignored)
``"a,b c,d"``          a comma-separated list of names
=====================  =====================================================================

LVIS names are the ``name`` field of Detectron2's ``LVIS_CATEGORIES`` (as ViLD and Detic use them).
Detectron2's own LVIS metadata uses each category's first synonym instead; the two differ for one
category (id 139: name ``bull``, first synonym ``horned_cow``).
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_CLASS_NAMES

from ..modeling.text_embeddings import clean_category_name

__all__ = [
    "BUILTIN_VOCABULARIES",
    "resolve_vocabulary",
    "parse_custom_vocabulary",
    "lvis_v1_class_names",
    "lvis_v1_class_frequencies",
    "lvis_v1_base_class_names",
    "coco_class_names",
    "voc_class_names",
]

# Extensions that mark a spec as a file path even when the file does not exist (to name it).
_VOCABULARY_FILE_EXTENSIONS = (".txt", ".csv", ".names", ".lst")


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
    return text.lower().endswith(_VOCABULARY_FILE_EXTENSIONS) or text.startswith(
        ("/", "./", "../", "~")
    )


def _check_names(names, source):
    """Refuse empty vocabularies, empty names and names that are (or prompt as) duplicates."""
    if not names:
        raise ValueError(f"The vocabulary from {source} is empty; give at least one category name.")
    empty = [i for i, name in enumerate(names) if not name]
    if empty:
        raise ValueError(
            f"The vocabulary from {source} has empty category names at positions {empty} "
            "(0-based); remove the stray separators or blank entries."
        )
    first_seen = {}
    duplicates = []
    for name in names:
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
    return names


def parse_custom_vocabulary(text_or_path):
    """
    Parse a user vocabulary.

    Args:
        text_or_path (str): a path to a text file with one category name per line (surrounding
            whitespace stripped, blank lines ignored), or a comma-separated list of names
            (``"cat, red umbrella"``; each name stripped).

    Returns:
        list[str]: the category names, in the given order.

    Raises:
        FileNotFoundError: the argument looks like a file path (ends with .txt/.csv/.names/.lst or
            starts with / ./ ../ ~) but no such file exists.
        ValueError: the vocabulary is empty, has an empty name, or has duplicate names (the
            message names them).
    """
    if not isinstance(text_or_path, str):
        raise TypeError(f"A custom vocabulary is a string, got {type(text_or_path).__name__}.")
    path = os.path.expanduser(text_or_path.strip())
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f]
        names = [name for name in names if name]
        return _check_names(names, f"file {path}")
    if _looks_like_path(text_or_path.strip()):
        raise FileNotFoundError(f"Vocabulary file not found: {path}")
    if not text_or_path.strip():
        raise ValueError("The custom vocabulary is empty; give comma-separated names such as 'cat,dog'.")
    names = [name.strip() for name in text_or_path.split(",")]
    return _check_names(names, f"custom vocabulary {text_or_path!r}")


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
    Turn a vocabulary spec (see the module doc) into the list of category names.

    Args:
        spec (str): the vocabulary spec; ``""`` means ``dataset_name``'s classes.
        dataset_name (str or None): the dataset whose ``thing_classes`` ``""`` resolves to.

    Returns:
        list[str]: category names; their order defines the class indices of the classifier.
    """
    if spec is None:
        spec = ""
    if not isinstance(spec, str):
        raise TypeError(f"A vocabulary spec is a string, got {type(spec).__name__}: {spec!r}.")
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
                "Register it first (import gridclip registers GridCLIP's datasets) or set the vocabulary "
                f"explicitly: {_ACCEPTED_SPECS}."
            )
        return _dataset_classes(dataset_name)
    if spec.lower() in BUILTIN_VOCABULARIES:
        return BUILTIN_VOCABULARIES[spec.lower()]()
    if spec in DatasetCatalog.list():
        return _dataset_classes(spec)
    if "," in spec or os.path.isfile(os.path.expanduser(spec)) or _looks_like_path(spec):
        return parse_custom_vocabulary(spec)
    raise ValueError(
        f"Unknown vocabulary {spec!r}: it is not a built-in vocabulary, a registered dataset or an "
        f"existing file. Accepted: {_ACCEPTED_SPECS}. For a custom vocabulary of one name, write it "
        "in a text file."
    )
