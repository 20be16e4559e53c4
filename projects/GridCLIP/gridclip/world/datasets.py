"""
The world's detection data in Detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.

The data (:mod:`.detection`) lives under ``$DETECTRON2_DATASETS/world`` (default ``./datasets/world``)
and is registered, LVIS v1-style, under these names (``prefix`` "world"):

============================  ============================================  ==========================
name                          data                                          classes (``thing_classes``)
============================  ============================================  ==========================
``world_v1_train``            train split                                   all
``world_v1_train_base``       train split minus rare annotations            base (common + frequent)
``world_v1_val``              val split (open-vocabulary protocol)          all
``world_v1_val_base``         val split minus rare annotations (closed)     base (common + frequent)
``world_v1_val_large``        the large evaluation split (when generated)   all
``world_v1_val_large_base``   the same minus rare annotations               base (common + frequent)
============================  ============================================  ==========================

The large evaluation split (:mod:`.evaluation_split`, the ablations' test data) is registered only when
its json exists.

Every dataset has ``evaluator_type`` "lvis", ``class_frequencies``, ``class_synonyms`` and
``class_image_counts``; the base ones also ``full_to_base_class_index``. Registration reads the train
json's categories (which of them are rare), so it happens on demand (a config that names a ``world_v1_*``
dataset, :func:`register_config_world_datasets`), not on ``import gridclip``.
"""
import json
import os

from detectron2.data import DatasetCatalog

from ..data.datasets import _categories_metadata, _check_files, _register, dataset_root, load_lvis_json_subset
from .detection import ensure_world_dataset, world_dataset_paths
from .evaluation_split import EVAL_SPLIT, ensure_eval_split, eval_split_paths

__all__ = [
    "WORLD_DATASET_NAME",
    "world_dataset_root",
    "register_world_datasets",
    "register_config_world_datasets",
]

#: dataset-name prefix of the world's datasets and their folder under ``$DETECTRON2_DATASETS``
WORLD_DATASET_NAME = "world"


def world_dataset_root(name=WORLD_DATASET_NAME):
    """``$DETECTRON2_DATASETS/<name>``: where the world's detection data of that name is generated."""
    return os.path.join(dataset_root(), name)


def _loader(name, json_file, image_root, id_map, hint):
    def load():
        _check_files(name, json_file=json_file, image_root=image_root, hint=hint)
        return load_lvis_json_subset(json_file, image_root, id_map, dataset_name=name)

    return load


def register_world_datasets(root, prefix=WORLD_DATASET_NAME):
    """
    Register the detection data :func:`gridclip.world.generate_world_dataset` wrote under ``root``.
    Reads the train json's categories (to know which are rare); images are read later.

    Registers ``{prefix}_v1_train`` (all classes), ``{prefix}_v1_train_base`` (rare annotations
    removed; thing_classes = the base classes, ids contiguous in base space), ``{prefix}_v1_val``
    (all classes; evaluator_type "lvis") and ``{prefix}_v1_val_base`` (val, base classes: the closed-set
    protocol); when the large evaluation split exists, ``{prefix}_v1_val_large`` and ``{prefix}_v1_val_large_base``
    the same way. Re-registering replaces earlier registrations.

    Returns:
        dict: {"train": name, "train_base": name, "val": name, "val_base": name} (+ "val_large",
        "val_large_base").
    """
    paths = world_dataset_paths(root)
    hint = f"Generate it with `python datasets/generate_world.py --root {paths['root']}` (or `make demo`)"
    _check_files(prefix, json_file=paths["train_json"], hint=hint)
    with open(paths["train_json"]) as f:
        train_categories = json.load(f)["categories"]
    ids = sorted(c["id"] for c in train_categories)
    if ids != list(range(1, len(ids) + 1)):
        raise ValueError(f"Category ids in {paths['train_json']} must be 1..{len(ids)}, got {ids}.")

    names = {"train": f"{prefix}_v1_train", "train_base": f"{prefix}_v1_train_base", "val": f"{prefix}_v1_val",
             "val_base": f"{prefix}_v1_val_base"}
    # val_base: val with the base classes only (the closed-set protocol, as lvis_v1_val_cf)
    splits = {"train": ("train_json", None), "train_base": ("train_json", ("c", "f")), "val": ("val_json", None),
              "val_base": ("val_json", ("c", "f"))}
    large_json = eval_split_paths(root)["json"]
    if os.path.isfile(large_json):
        paths[EVAL_SPLIT] = large_json
        splits.update({EVAL_SPLIT: (EVAL_SPLIT, None), f"{EVAL_SPLIT}_base": (EVAL_SPLIT, ("c", "f"))})
        names.update({EVAL_SPLIT: f"{prefix}_v1_{EVAL_SPLIT}", f"{EVAL_SPLIT}_base": f"{prefix}_v1_{EVAL_SPLIT}_base"})
    for key, (json_key, keep) in splits.items():
        name, json_file = names[key], paths[json_key]
        meta = _categories_metadata(train_categories, keep_frequencies=keep)
        _register(
            name,
            _loader(name, json_file, paths["image_root"], meta["thing_dataset_id_to_contiguous_id"], hint),
            json_file=json_file,
            image_root=paths["image_root"],
            evaluator_type="lvis",
            **meta,
        )
    return names


def register_config_world_datasets(cfg, generate=True):
    """
    Register the world's datasets when ``cfg`` names one (``world_v1_*`` in DATASETS.TRAIN / TEST).

    They live under :func:`world_dataset_root` and are generated there (deterministically, with the
    generator's defaults) if missing and ``generate``; so is the large evaluation split when ``cfg`` names
    it. An existing dataset there is never regenerated, whatever sizes it was generated with. Nothing to
    do when they are registered already.

    Returns:
        dict or None: the registered names (as :func:`register_world_datasets`), None if nothing was done.
    """
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if not any(name.startswith(WORLD_DATASET_NAME + "_v1") for name in names):
        return None
    large = f"{WORLD_DATASET_NAME}_v1_{EVAL_SPLIT}"
    wants_large = any(name.startswith(large) for name in names)
    if f"{WORLD_DATASET_NAME}_v1_val" in DatasetCatalog.list() and (not wants_large or large in DatasetCatalog.list()):
        return None
    root = world_dataset_root()
    paths = world_dataset_paths(root)
    missing = not (os.path.isfile(paths["train_json"]) and os.path.isfile(paths["val_json"]))
    if generate and missing:
        # A dataset already there (possibly generated with other sizes by the user) is used as it is.
        ensure_world_dataset(root)
    if generate and wants_large and not os.path.isfile(eval_split_paths(root)["json"]):
        ensure_eval_split(root)
    return register_world_datasets(root, prefix=WORLD_DATASET_NAME)

