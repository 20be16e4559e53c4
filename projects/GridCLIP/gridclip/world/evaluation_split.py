"""
The world's large held-out evaluation split: what gives the ablations their statistical power.

The default val split (120 images, ~100 novel objects over 12 rare categories) is what ``make demo``
reports; with it, evaluation sampling alone moves AP_r by several points between two models that
differ only in training noise. The ablation runner (:mod:`.ablations`) evaluates on this split instead:
``num_images`` (default :data:`EVAL_SPLIT_IMAGES`) more val images drawn exactly as the val split's
(2-5 uniformly drawn categories per image, every category at least twice, no unannotated object),
from a random stream of their own (the world's seed and a salt), so adding it changes neither the
train nor the val split. Its json carries the train json's categories (training statistics, as every
split of the world) and the train json's generator arguments, so a split made for another world is
generated again, never paired with it.

Layout under the world's ``root`` (beside :func:`.detection.world_dataset_paths`)::

    annotations/lvis_v1_val_large.json   images/val_large/000000000001.jpg ...

registered as ``world_v1_val_large`` (all classes) and ``world_v1_val_large_base`` (base classes) by
:func:`.datasets.register_world_datasets` when present.
"""
import json
import logging
import os

import numpy as np

from ..file_io import atomic_write_text, current_umask, read_json
from .attributes import parse_object_name
from .detection import _assign_val_objects, _write_jpeg, world_dataset_paths
from .render import render_scene

__all__ = ["EVAL_SPLIT", "EVAL_SPLIT_IMAGES", "eval_split_paths", "generate_eval_split", "ensure_eval_split"]

logger = logging.getLogger(__name__)

#: the split's name (its json, image folder and the suffix of its registered datasets)
EVAL_SPLIT = "val_large"
#: images of the split: 10x the val split (about 1,100 novel objects; docs/WORLD.md "Statistical power")
EVAL_SPLIT_IMAGES = 1200
_SALT = 99
_VERSION = "1.0"


def eval_split_paths(root):
    """{"json": annotation file, "images": image folder, "image_root": as Detectron2's load_lvis_json wants it}."""
    paths = world_dataset_paths(root)
    return {
        "json": os.path.join(paths["root"], "annotations", f"lvis_v1_{EVAL_SPLIT}.json"),
        "images": os.path.join(paths["root"], "images", EVAL_SPLIT),
        "image_root": paths["image_root"],
    }


def _world_train(root):
    paths = world_dataset_paths(root)
    if not os.path.isfile(paths["train_json"]):
        raise FileNotFoundError(
            f"{paths['train_json']} does not exist: generate the world first (`python datasets/generate_world.py "
            f"--root {paths['root']}`); the evaluation split takes its categories from it."
        )
    train = read_json(paths["train_json"], "world dataset annotations")
    generator = train.get("info", {}).get("generator") if isinstance(train, dict) else None
    if not isinstance(generator, dict) or not isinstance(train.get("categories"), list):
        raise ValueError(f"{paths['train_json']} is not a world train split (no generator arguments or categories).")
    return train, generator


def generate_eval_split(root, num_images=EVAL_SPLIT_IMAGES):
    """
    Render the evaluation split of the world under ``root`` (its train split must exist).

    Args:
        root (str): the world's folder (:func:`.detection.generate_world_dataset`'s ``root``).
        num_images (int): images of the split (>= 2).

    Returns:
        dict: :func:`eval_split_paths` plus ``num_images``, ``num_objects`` and ``num_novel_objects``.
    """
    num_images = int(num_images)
    if num_images < 2:
        raise ValueError(f"num_images must be at least 2, got {num_images}.")
    train, generator = _world_train(root)
    categories = sorted(train["categories"], key=lambda c: c["id"])
    triples = [parse_object_name(c["name"]) for c in categories]
    height, width = generator["image_size"]
    paths = eval_split_paths(root)
    os.makedirs(paths["images"], exist_ok=True)
    try:  # no complete-looking split while its images are replaced
        os.remove(paths["json"])
    except FileNotFoundError:
        pass
    rng = np.random.default_rng([int(generator["seed"]), _SALT])
    umask = current_umask()
    images, annotations = [], []
    for index, objects in enumerate(_assign_val_objects(len(categories), num_images, rng)):
        image_id, file_name = index + 1, f"{index + 1:012d}.jpg"
        pixels, drawn = render_scene([triples[c] for c in objects], height, width, rng)
        _write_jpeg(os.path.join(paths["images"], file_name), pixels, int(generator["jpeg_quality"]), umask)
        present = {c + 1 for c in objects}
        images.append({
            "id": image_id, "file_name": file_name, "coco_url": f"images/{EVAL_SPLIT}/{file_name}",
            "height": height, "width": width,
            "neg_category_ids": [c["id"] for c in categories if c["id"] not in present],
            "not_exhaustive_category_ids": [],
        })
        for c, obj in zip(objects, drawn):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": c + 1,
                                "bbox": [round(v, 2) for v in obj["bbox"]], "area": obj["area"],
                                "segmentation": obj["segmentation"]})
    info = {"description": "GridCLIP generated world: the large held-out evaluation split (LVIS v1 format)",
            "version": _VERSION, "num_images": num_images, "world_generator": generator}
    data = {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}
    atomic_write_text(paths["json"], json.dumps(data, separators=(",", ":")))  # last: the split is complete
    rare = {c["id"] for c in categories if c["frequency"] == "r"}
    num_novel = sum(1 for a in annotations if a["category_id"] in rare)
    logger.info("Generated the world's evaluation split at %s: %d images, %d objects (%d novel).",
                paths["json"], num_images, len(annotations), num_novel)
    return dict(paths, num_images=num_images, num_objects=len(annotations), num_novel_objects=num_novel)


def ensure_eval_split(root, num_images=EVAL_SPLIT_IMAGES):
    """
    :func:`generate_eval_split` unless the split is there, made for this world (the train json's
    generator arguments) with ``num_images`` images, all present. Returns :func:`eval_split_paths` (+ counts).
    """
    paths = eval_split_paths(root)
    if os.path.isfile(paths["json"]):
        try:
            data = read_json(paths["json"], "world evaluation split")
            info = data.get("info", {})
            _, generator = _world_train(root)
            fits = (info.get("version") == _VERSION and info.get("num_images") == int(num_images)
                    and info.get("world_generator") == generator
                    and all(os.path.isfile(os.path.join(paths["images"], im["file_name"])) for im in data["images"]))
        except (ValueError, OSError, AttributeError, KeyError, TypeError) as e:
            logger.warning("The evaluation split at %s cannot be used (%s); generating it again.", paths["json"], e)
            fits = False
        if fits:
            rare = {c["id"] for c in data["categories"] if c["frequency"] == "r"}
            return dict(paths, num_images=len(data["images"]), num_objects=len(data["annotations"]),
                        num_novel_objects=sum(1 for a in data["annotations"] if a["category_id"] in rare))
    return generate_eval_split(root, num_images)
