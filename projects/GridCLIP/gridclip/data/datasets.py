"""
Dataset registrations for GridCLIP (Detectron2's ``DatasetCatalog`` / ``MetadataCatalog``).

Real LVIS v1, open-vocabulary protocol (ViLD) and closed-set protocol, registered on ``import gridclip``
under ``$DETECTRON2_DATASETS`` (default ``./datasets``; same layout as Detectron2's builtin LVIS):

==========================  ====================================  ===============================
name                        data                                  classes (``thing_classes``)
==========================  ====================================  ===============================
``lvis_v1_train_base``      lvis_v1_train minus rare annotations  866 base (common + frequent)
``lvis_v1_train_cf``        same data (closed-set protocol)       866 common + frequent
``lvis_v1_val_cf``          lvis_v1_val minus rare annotations    866 common + frequent
==========================  ====================================  ===============================

Open-vocabulary evaluation uses Detectron2's builtin ``lvis_v1_val`` (all 1203 classes); transfer
uses the builtin ``coco_2017_val`` and ``voc_2007_test``. Registration reads no file; a dataset's
json is read when the dataset is loaded, and a missing root or json raises a ``FileNotFoundError``
that names ``DETECTRON2_DATASETS`` and the expected path (also for those builtin datasets).

Category ids of the subsets are contiguous in the subset's class space; the metadata keeps the maps
``thing_dataset_id_to_contiguous_id`` (LVIS category id -> subset index) and
``full_to_base_class_index`` (index among all categories -> subset index). Every LVIS-derived dataset
has ``class_frequencies`` ("r"/"c"/"f" per class) and ``class_synonyms``.

The generated world's datasets are registered by :mod:`gridclip.world.datasets`. Your own
COCO-format data: :func:`register_custom_coco_dataset`, or declared in the config
(``DATASETS.COCO_FORMAT``, :func:`register_config_datasets`) so that every process registers it.
"""
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import register_coco_instances
from detectron2.data.datasets.lvis import load_lvis_json
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES as LVIS_V1_CATEGORIES

__all__ = [
    "dataset_root",
    "load_lvis_json_subset",
    "register_lvis_ov_datasets",
    "register_custom_coco_dataset",
    "register_config_datasets",
    "guard_builtin_datasets",
    "LVIS_OV_DATASETS",
]

logger = logging.getLogger(__name__)

#: name -> (image root, json file) relative to $DETECTRON2_DATASETS, frequency groups kept
LVIS_OV_DATASETS = {
    "lvis_v1_train_base": ("coco/", "lvis/lvis_v1_train.json", ("c", "f")),
    "lvis_v1_train_cf": ("coco/", "lvis/lvis_v1_train.json", ("c", "f")),
    "lvis_v1_val_cf": ("coco/", "lvis/lvis_v1_val.json", ("c", "f")),
}

# Builtin Detectron2 datasets whose loading we guard with a clear missing-file error.
_GUARDED_BUILTIN_PREFIXES = ("lvis_v1_", "lvis_v0.5_", "coco_2017_", "coco_2014_", "voc_2007_", "voc_2012_")


def dataset_root():
    """``$DETECTRON2_DATASETS`` (default ``datasets``), as Detectron2's builtin registrations use it."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def _missing_file_message(dataset_name, missing_path, what, hint=None):
    env = os.environ.get("DETECTRON2_DATASETS")
    env_text = f"DETECTRON2_DATASETS={env}" if env is not None else "DETECTRON2_DATASETS is not set (default ./datasets)"
    hint = hint or (
        "Set DETECTRON2_DATASETS to the folder that holds the datasets (layout in datasets/README.md)"
    )
    return (
        f"Dataset '{dataset_name}' needs its {what} at '{os.path.abspath(missing_path)}', which does not "
        f"exist ({env_text}). {hint}."
    )


def _check_files(dataset_name, json_file=None, image_root=None, dirname=None, hint=None):
    """Raise FileNotFoundError naming DETECTRON2_DATASETS and the expected path of a missing file."""
    checks = ((json_file, "annotation file", os.path.isfile), (image_root, "image folder", os.path.isdir),
              (dirname, "dataset folder", os.path.isdir))
    for path, what, exists in checks:
        if path and not exists(path):
            raise FileNotFoundError(_missing_file_message(dataset_name, path, what, hint))


def _register(name, loader, **metadata):
    """(Re-)register ``name``: an earlier registration of the same name is replaced."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)


def _categories_metadata(categories, keep_frequencies=None):
    """
    Metadata of the classes of ``categories`` (LVIS category dicts) kept by ``keep_frequencies``.

    Returns:
        dict: thing_classes, class_frequencies, class_synonyms, thing_dataset_id_to_contiguous_id,
        full_to_base_class_index (only when a subset is kept) and, when the categories have it,
        class_image_counts.
    """
    categories = sorted(categories, key=lambda c: c["id"])
    kept = [c for c in categories if keep_frequencies is None or c["frequency"] in keep_frequencies]
    meta = {
        "thing_classes": [c["name"] for c in kept],
        "class_frequencies": [c["frequency"] for c in kept],
        "class_synonyms": [list(c.get("synonyms", [c["name"]])) for c in kept],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(kept)},
    }
    if keep_frequencies is not None:
        full_index = {c["id"]: i for i, c in enumerate(categories)}
        meta["full_to_base_class_index"] = {full_index[c["id"]]: i for i, c in enumerate(kept)}
        meta["full_thing_classes"] = [c["name"] for c in categories]
    if all("image_count" in c for c in kept):
        meta["class_image_counts"] = [int(c["image_count"]) for c in kept]
    return meta


def load_lvis_json_subset(json_file, image_root, dataset_id_to_contiguous_id, dataset_name=None):
    """
    Load an LVIS json with Detectron2's ``load_lvis_json`` and keep only some categories.

    Args:
        json_file, image_root: as for ``load_lvis_json`` (``image_root`` ends with "/").
        dataset_id_to_contiguous_id (dict[int, int]): LVIS category id -> class index of the kept
            classes; annotations of other categories are removed (their images are kept).
        dataset_name (str): used in error messages only.

    Returns:
        list[dict]: Detectron2 dataset dicts, ``category_id`` in the kept classes' index space.
    """
    # dataset_name=None: Detectron2 would otherwise replace thing_classes by its builtin 1203 names.
    dicts = load_lvis_json(json_file, image_root, dataset_name=None)
    removed = 0
    for record in dicts:
        kept = []
        for obj in record["annotations"]:
            lvis_id = obj["category_id"] + 1  # load_lvis_json made it 0-based
            if lvis_id in dataset_id_to_contiguous_id:
                obj["category_id"] = dataset_id_to_contiguous_id[lvis_id]
                kept.append(obj)
            else:
                removed += 1
        record["annotations"] = kept
    logger.info(
        "Dataset '%s': kept %d annotations of %d classes, removed %d of other classes.",
        dataset_name or json_file, sum(len(r["annotations"]) for r in dicts), len(dataset_id_to_contiguous_id), removed,
    )
    return dicts


def _lvis_ov_loader(name, json_file, image_root, id_map):
    def load():
        _check_files(name, json_file=json_file, image_root=image_root)
        return load_lvis_json_subset(json_file, image_root, id_map, dataset_name=name)

    return load


def register_lvis_ov_datasets(root=None):
    """
    Register ``lvis_v1_train_base``, ``lvis_v1_train_cf`` and ``lvis_v1_val_cf`` under ``root``
    (default: :func:`dataset_root`). Reads no file; re-registering replaces earlier registrations.

    Returns:
        list[str]: the registered names.
    """
    root = dataset_root() if root is None else os.path.expanduser(os.fspath(root))
    for name, (image_dir, json_rel, keep) in LVIS_OV_DATASETS.items():
        json_file = os.path.join(root, json_rel)
        image_root = os.path.join(root, image_dir)
        meta = _categories_metadata(LVIS_V1_CATEGORIES, keep_frequencies=keep)
        _register(
            name,
            _lvis_ov_loader(name, json_file, image_root, meta["thing_dataset_id_to_contiguous_id"]),
            json_file=json_file,
            image_root=image_root,
            evaluator_type="lvis",
            **meta,
        )
    return list(LVIS_OV_DATASETS)


def _guarded(name, loader, metadata):
    def load():
        _check_files(
            name,
            json_file=metadata.get("json_file"),
            image_root=metadata.get("image_root"),
            dirname=metadata.get("dirname"),
        )
        return loader()

    load._gridclip_guarded = True
    return load


def guard_builtin_datasets():
    """
    Make Detectron2's builtin LVIS/COCO/VOC datasets fail with a clear message (naming
    ``DETECTRON2_DATASETS`` and the expected path) when their files are missing, and add
    ``class_frequencies`` / ``class_synonyms`` to the builtin LVIS v1 datasets. Reads no file.
    """
    lvis_meta = _categories_metadata(LVIS_V1_CATEGORIES)
    for name in DatasetCatalog.list():
        if not name.startswith(_GUARDED_BUILTIN_PREFIXES):
            continue
        loader = DatasetCatalog[name]
        if not getattr(loader, "_gridclip_guarded", False):
            metadata = MetadataCatalog.get(name)
            DatasetCatalog.remove(name)
            DatasetCatalog.register(name, _guarded(name, loader, metadata.as_dict()))
        if name.startswith("lvis_v1_") and name not in LVIS_OV_DATASETS:
            metadata = MetadataCatalog.get(name)
            if not hasattr(metadata, "class_frequencies"):
                metadata.set(class_frequencies=lvis_meta["class_frequencies"], class_synonyms=lvis_meta["class_synonyms"])


def register_custom_coco_dataset(name, json_file, image_root):
    """
    Register a COCO-format detection dataset and return its vocabulary.

    The vocabulary is the json's category names in category-id order; use the returned list (or the
    dataset name) as ``MODEL.GRIDCLIP.TRAIN_VOCABULARY`` / ``TEST_VOCABULARY`` or with
    ``tools/demo.py --vocabulary``. Evaluated with Detectron2's COCOEvaluator.

    Args:
        name (str): the new dataset's name (must not be one of Detectron2's builtin names).
        json_file (str): COCO instances json.
        image_root (str): folder holding the images named by the json's ``file_name``.

    Returns:
        list[str]: the category names (the dataset's ``thing_classes``).
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"Custom dataset '{name}': annotation file '{os.path.abspath(json_file)}' does not exist.")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"Custom dataset '{name}': image folder '{os.path.abspath(image_root)}' does not exist.")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"Custom dataset '{name}': '{json_file}' is not valid JSON ({e}).") from None
    categories = data.get("categories") if isinstance(data, dict) else None
    if not categories:
        raise ValueError(f"Custom dataset '{name}': '{json_file}' has no 'categories'; a COCO json lists them.")
    categories = sorted(categories, key=lambda c: c["id"])
    class_names = [str(c.get("name", "")).strip() for c in categories]
    empty = [c["id"] for c, n in zip(categories, class_names) if not n]
    duplicates = sorted({n for n in class_names if class_names.count(n) > 1})
    if empty or duplicates:
        raise ValueError(
            f"Custom dataset '{name}': category names in '{json_file}' must be non-empty and unique "
            f"(empty names for ids {empty}; duplicates {duplicates})."
        )
    from ..vocabulary import validate_vocabulary

    # The one vocabulary check (invisible characters, case-only duplicates), as for every other source.
    class_names = validate_vocabulary(class_names, f"custom dataset '{name}' ({json_file})")
    if name in DatasetCatalog.list():
        existing = MetadataCatalog.get(name).get("json_file")
        if existing is None or os.path.abspath(existing) != os.path.abspath(json_file):
            raise ValueError(
                f"Dataset name '{name}' is already registered (json {existing}); choose another name."
            )
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(
        name,
        {
            "thing_classes": class_names,
            # the same map load_coco_json computes, known before loading (evaluators read it)
            "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
        },
        json_file,
        image_root,
    )
    return class_names


def register_config_datasets(cfg):
    """
    Register the COCO-format datasets a config declares in ``DATASETS.COCO_FORMAT`` (a list of
    ``[name, json file, image folder]``) with :func:`register_custom_coco_dataset`. Every process
    that loads the config calls this (``tools/train_net.py`` in the launcher and in each
    ``--num-gpus`` worker), so the datasets exist wherever they are used. Relative paths are relative
    to the working directory, as for every Detectron2 path.

    Returns:
        list[str]: the registered names.
    """
    entries = list(cfg.DATASETS.get("COCO_FORMAT", ()) or ())
    names = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, (list, tuple)) or len(entry) != 3 or not all(isinstance(x, str) for x in entry):
            raise ValueError(
                f"DATASETS.COCO_FORMAT[{index}] is {entry!r}; each entry is [name, json file, image folder], "
                'e.g. ["my_train", "data/my/train.json", "data/my/images"].'
            )
        name, json_file, image_root = entry
        register_custom_coco_dataset(name, os.path.expanduser(json_file), os.path.expanduser(image_root))
        names.append(name)
    return names


register_lvis_ov_datasets()
guard_builtin_datasets()
