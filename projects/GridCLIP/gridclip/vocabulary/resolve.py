"""
Vocabulary specs -> class names, and a config's training and test vocabularies.

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

Whatever the source, the names pass :func:`~gridclip.vocabulary.names.validate_vocabulary` once,
where they enter: invisible characters removed, ``None`` / non-strings / empty names / duplicates
refused.
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .builtin import BUILTIN_VOCABULARIES
from .files import looks_like_path, parse_custom_vocabulary
from .names import validate_vocabulary

__all__ = ["resolve_vocabulary", "resolve_train_vocabulary", "resolve_train_test_vocabularies"]

_ACCEPTED_SPECS = (
    "'' (the dataset's own classes), 'lvis' (1203), 'lvis_base' (866), 'coco' (80), 'voc' (20), "
    "a registered dataset name, a text file with one name per line, or a comma-separated list of "
    "names such as 'cat,red umbrella'"
)


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
    category names (``validate_vocabulary``: the same check for every source).

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
    if "," in spec or os.path.exists(os.path.expanduser(spec)) or looks_like_path(spec):
        return parse_custom_vocabulary(spec)
    raise ValueError(
        f"Unknown vocabulary {spec!r}: it is not a built-in vocabulary, a registered dataset or an "
        f"existing file. Accepted: {_ACCEPTED_SPECS}. For a custom vocabulary of one name, write it "
        "in a text file."
    )


def resolve_train_vocabulary(cfg):
    """The training vocabulary of ``cfg``: ``MODEL.GRIDCLIP.TRAIN_VOCABULARY`` ("" = the classes of
    ``DATASETS.TRAIN[0]``)."""
    train_dataset = cfg.DATASETS.TRAIN[0] if len(cfg.DATASETS.TRAIN) else None
    return list(resolve_vocabulary(cfg.MODEL.GRIDCLIP.TRAIN_VOCABULARY, train_dataset))


def resolve_train_test_vocabularies(cfg):
    """
    (train_class_names, test_class_names) from MODEL.GRIDCLIP.TRAIN_VOCABULARY / DATASETS.TRAIN[0] and
    TEST_VOCABULARY / DATASETS.TEST[0] (the training vocabulary when neither test setting is given).
    """
    train_names = resolve_train_vocabulary(cfg)
    test_dataset = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None
    if cfg.MODEL.GRIDCLIP.TEST_VOCABULARY or test_dataset:
        test_names = list(resolve_vocabulary(cfg.MODEL.GRIDCLIP.TEST_VOCABULARY, test_dataset))
    else:
        test_names = list(train_names)
    return train_names, test_names
