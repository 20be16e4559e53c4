"""
The generated world's detection data: long-tailed LVIS v1-format train / val splits.

Every category is a (colour, texture, shape) object of the world (:mod:`.attributes`) with a name a
CLIP text encoder can embed ("red striped circle", ...). Images show several such objects on a
cluttered background (:mod:`.render`); each box is tight around the drawn shape's pixels. Category
image counts on the train split follow a designed long tail over LVIS's frequency rule (rare: 1-10
training images, common: 11-100, frequent: > 100); each category's ``frequency`` is computed from the
generated train split by that rule.

Rare categories (the open-vocabulary protocol's novel classes: their annotations are removed for
training) are annotated in only ``rare_max_train_images`` training images each. Two things make the
world closer to LVIS, where image-level alignment has something to add (version 3):

- **novel-only shapes** (``novel_only_shapes``, default ``("cross",)``): every category with such a
  shape is rare, so no base category wears it and it cannot be learned by recombining base
  attributes; the other attributes of rare categories (colours, textures, other shapes) are worn by
  some base category whenever the category set allows it (``attribute_coverage``);
- **unannotated novel objects** (``unannotated_novel_share``, default 0.25): that share of training
  images also shows one object of a rare category that is annotated in neither split's json (as an
  LVIS image shows objects outside its annotated categories). The grid-level loss sees it as
  background (the paper's §3.3); the image-level teacher sees the whole image, so it can carry it.
  Such an image does not list the category in ``neg_category_ids`` (it is there, unverified).

Layout written under ``root``::

    annotations/lvis_v1_train.json   annotations/lvis_v1_val.json
    images/train/000000000001.jpg    images/val/...

Images carry ``coco_url = "images/<split>/<file>"`` so Detectron2's ``load_lvis_json`` resolves them
as ``image_root + "<split>/<file>"`` with ``image_root = root/images/``. All objects are annotated,
so each image's ``neg_category_ids`` lists every category absent from it and
``not_exhaustive_category_ids`` is empty: the LVIS evaluation is exhaustive on this data (val holds
no unannotated object).

Generation is deterministic: the same arguments give byte-identical JSON files and images. The
caption corpus uses other random streams, so it never holds a detection val image.
"""
import json
import logging
import os
import tempfile

import numpy as np
from PIL import Image

from ..file_io import TEMP_PREFIX, atomic_write_text, current_umask, read_json
from .attributes import COLOURS, SHAPES, TEXTURES, TEXTURE_PHRASES, WORLD_OBJECTS, object_name, object_synonym
from .render import render_scene

__all__ = [
    "MIN_TRAIN_IMAGES",
    "DEFAULT_GENERATOR_ARGS",
    "frequency_from_image_count",
    "world_categories",
    "rare_attribute_coverage",
    "novel_only_shape_categories",
    "generate_world_dataset",
    "ensure_world_dataset",
    "world_dataset_paths",
]

logger = logging.getLogger(__name__)

#: LVIS's image-count rule needs > 100 training images for a "frequent" category.
MIN_TRAIN_IMAGES = 120
# 1.1: both splits carry the training statistics, as LVIS v1 does.
# 2.0: categories from all 192 world objects; rare categories in few training images; attribute coverage.
# 3.0: novel-only shapes; unannotated novel objects in a share of the training images.
_DATASET_VERSION = "3.0"
_MAX_CATEGORIES = len(WORLD_OBJECTS)


def frequency_from_image_count(image_count):
    """LVIS's rule: ``"r"`` for 1-10 training images, ``"c"`` for 11-100, ``"f"`` for more."""
    if image_count <= 10:
        return "r"
    if image_count <= 100:
        return "c"
    return "f"


def world_categories(num_categories):
    """
    The (colour, texture, shape) triples of the first ``num_categories`` categories.

    The first 32 cycle through shapes, the k-th variant of a shape changing both colour and texture
    (no two look alike); beyond 32 they continue in a fixed shuffled order of the other world
    objects. At most 192.

    Returns:
        list[tuple[str, str, str]]: (colour, texture, shape) per category, in category-id order.
    """
    if not 3 <= num_categories <= _MAX_CATEGORIES:
        raise ValueError(
            f"num_categories must be between 3 (one per frequency group) and {_MAX_CATEGORIES} "
            f"(all colour x texture x shape combinations), got {num_categories}."
        )
    colours = list(COLOURS)
    triples = []
    for index in range(min(num_categories, len(SHAPES) * len(TEXTURES))):
        s, variant = index % len(SHAPES), index // len(SHAPES)
        triples.append((colours[(s + 2 * variant) % len(colours)], TEXTURES[(s + variant) % len(TEXTURES)], SHAPES[s]))
    rest = [t for t in WORLD_OBJECTS if t not in set(triples)]
    order = np.random.default_rng(1234).permutation(len(rest))
    triples += [rest[i] for i in order[: num_categories - len(triples)]]
    assert len(set(triples)) == len(triples)
    return triples


def rare_attribute_coverage(categories, frequencies, novel_only_shapes=()):
    """
    True if every colour, texture and shape of a rare category is also worn by a base category, the
    ``novel_only_shapes`` excepted (by design no base category wears them).
    """
    base = [t for t, f in zip(categories, frequencies) if f != "r"]
    rare = [t for t, f in zip(categories, frequencies) if f == "r"]
    return all(
        any(b[k] == r[k] for b in base) for r in rare for k in range(3) if not (k == 2 and r[2] in novel_only_shapes)
    )


def novel_only_shape_categories(categories, novel_only_shapes):
    """Indices of the categories whose shape is one of ``novel_only_shapes`` (all designed rare)."""
    return [i for i, t in enumerate(categories) if t[2] in set(novel_only_shapes)]


def _design_groups(categories, num_rare, num_frequent, rng, novel_only_shapes=()):
    """
    Which categories are designed rare / frequent (the rest common): a seeded draw in which every
    category with a novel-only shape is rare and the other rare categories only reuse colours,
    textures and shapes of base categories when that is possible.

    Returns:
        (list[str] group per category, bool attribute coverage holds)
    """
    n = len(categories)
    order = [int(i) for i in rng.permutation(n)]
    rare = [i for i in order if categories[i][2] in set(novel_only_shapes)]
    if len(rare) > num_rare:
        raise ValueError(
            f"{len(rare)} categories carry a novel-only shape {tuple(novel_only_shapes)}, more than "
            f"num_rare={num_rare}: raise num_rare or use fewer novel-only shapes."
        )
    for i in order:
        if i in rare:
            continue
        if len(rare) == num_rare:
            break
        trial = rare + [i]
        groups = ["r" if j in trial else "b" for j in range(n)]
        if rare_attribute_coverage(categories, groups, novel_only_shapes):
            rare = trial
    covered = len(rare) == num_rare
    if not covered:  # the category set cannot cover every rare attribute (e.g. 8 distinct shapes)
        rare += [i for i in order if i not in rare][: num_rare - len(rare)]
    base = [i for i in order if i not in rare]
    frequent = set(base[:num_frequent])
    groups = ["r" if i in rare else ("f" if i in frequent else "c") for i in range(n)]
    return groups, covered


def _target_image_counts(groups, num_train_images, rare_max_train_images, rng):
    """Designed number of training images per category: a long tail over rare/common/frequent."""
    num_frequent, num_common = groups.count("f"), groups.count("c")
    frequent_max = max(105, int(0.4 * num_train_images))
    frequent = iter(int(round(c)) for c in rng.permutation(np.geomspace(frequent_max, 105, num_frequent)))
    common = iter(int(round(c)) for c in rng.permutation(np.geomspace(90, 12, num_common)))
    rare_max = max(1, min(10, int(rare_max_train_images)))
    return [
        next(frequent) if g == "f" else next(common) if g == "c" else int(rng.integers(1, rare_max + 1))
        for g in groups
    ]


def _assign_train_objects(target_counts, num_images, rng):
    """For each image, the list of category indices it shows (category c in exactly target[c] images)."""
    load = np.zeros(num_images)
    objects = [[] for _ in range(num_images)]
    order = sorted(range(len(target_counts)), key=lambda c: -target_counts[c])
    for c in order:
        weights = 1.0 / (1.0 + load) ** 2
        chosen = rng.choice(num_images, size=target_counts[c], replace=False, p=weights / weights.sum())
        for i in sorted(chosen.tolist()):
            copies = 2 if (target_counts[c] > 100 and rng.random() < 0.12) else 1
            objects[i].extend([c] * copies)
            load[i] += copies
    for i in range(num_images):
        rng.shuffle(objects[i])
    return objects


def _assign_unannotated_novel(annotated, rare_indices, share, rng):
    """
    For each training image, the rare categories it shows without annotation: ``round(share * N)``
    images (a seeded draw) get one, uniform over ``rare_indices`` and not one the image annotates.
    """
    unannotated = [[] for _ in annotated]
    if not rare_indices or share <= 0:
        return unannotated
    chosen = rng.choice(len(annotated), size=int(round(share * len(annotated))), replace=False)
    for i in sorted(chosen.tolist()):
        candidates = [c for c in rare_indices if c not in annotated[i]]
        if candidates:
            unannotated[i].append(int(rng.choice(candidates)))
    return unannotated


def _assign_val_objects(num_categories, num_images, rng):
    """Val images show 2-5 uniformly drawn categories; every category appears at least twice."""
    objects = [
        rng.choice(num_categories, size=int(rng.integers(2, 6)), replace=False).tolist() for _ in range(num_images)
    ]
    counts = np.bincount([c for objs in objects for c in objs], minlength=num_categories)
    for c in np.nonzero(counts < 2)[0].tolist():
        for _ in range(2 - counts[c]):
            candidates = [i for i in range(num_images) if c not in objects[i]]
            i = min(candidates, key=lambda j: (len(objects[j]), j))
            objects[i].append(c)
    return objects


def world_dataset_paths(root):
    """The files :func:`generate_world_dataset` writes under ``root`` (dict of paths)."""
    root = os.path.abspath(os.fspath(root))
    return {
        "root": root,
        "train_json": os.path.join(root, "annotations", "lvis_v1_train.json"),
        "val_json": os.path.join(root, "annotations", "lvis_v1_val.json"),
        # Detectron2's load_lvis_json concatenates image_root + "<split>/<file>": keep the "/".
        "image_root": os.path.join(root, "images") + os.sep,
        "train_images": os.path.join(root, "images", "train"),
        "val_images": os.path.join(root, "images", "val"),
    }


#: defaults of :func:`generate_world_dataset` (the embedded default: ``make demo`` trains on it):
#: 48 categories = 12 rare (novel), 30 common, 6 frequent
DEFAULT_GENERATOR_ARGS = dict(
    num_train_images=480, num_val_images=120, image_size=(128, 128), num_categories=48, seed=0, jpeg_quality=92,
    num_rare=12, num_frequent=6, rare_max_train_images=3, novel_only_shapes=("cross",), unannotated_novel_share=0.25,
)


def _resolve_design(num_categories, num_rare, num_frequent):
    num_rare = max(1, round(0.25 * num_categories)) if num_rare is None else int(num_rare)
    num_frequent = max(1, round(0.125 * num_categories)) if num_frequent is None else int(num_frequent)
    if num_rare < 1 or num_frequent < 1 or num_categories - num_rare - num_frequent < 1:
        raise ValueError(
            f"num_categories={num_categories} cannot hold num_rare={num_rare} and num_frequent={num_frequent} "
            "with at least one category in each of the rare, common and frequent groups."
        )
    return num_rare, num_frequent


def _write_jpeg(path, pixels, quality, umask):
    """An image written under a unique temporary name and renamed: a reader never sees half of it, and
    two processes generating the same dataset never write into one file (mode as open() under ``umask``)."""
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".jpg", dir=os.path.dirname(path))
    os.close(fd)
    try:
        Image.fromarray(pixels).save(tmp, format="JPEG", quality=quality, subsampling=0)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def generate_world_dataset(
    root,
    num_train_images=480,
    num_val_images=120,
    image_size=(128, 128),
    num_categories=48,
    seed=0,
    jpeg_quality=92,
    num_rare=None,
    num_frequent=None,
    rare_max_train_images=3,
    novel_only_shapes=("cross",),
    unannotated_novel_share=0.25,
):
    """
    Generate the long-tailed LVIS-format dataset under ``root`` (see the module docstring).

    Args:
        root (str): output folder (created; existing files of the dataset are overwritten).
        num_train_images (int): train split size; at least :data:`MIN_TRAIN_IMAGES` so that
            frequent categories (> 100 training images) exist.
        num_val_images (int): val split size; every category gets at least two val instances.
        image_size (tuple[int, int]): (height, width) of every image, each >= 48.
        num_categories (int): 3..192 world objects.
        seed (int): the only source of randomness.
        jpeg_quality (int): JPEG quality of the written images.
        num_rare (int or None): designed rare categories (None: a quarter).
        num_frequent (int or None): designed frequent categories (None: an eighth); the rest are common.
        rare_max_train_images (int): each rare category is annotated in 1..this many training images (<= 10).
        novel_only_shapes (tuple[str]): shapes only rare categories wear (``()``: none).
        unannotated_novel_share (float): share of training images that also show one unannotated object
            of a rare category (0: none).

    Returns:
        dict: the paths of :func:`world_dataset_paths` plus ``class_names``, ``frequencies``
        (``"r"/"c"/"f"`` per category, by the image-count rule on train), ``train_image_counts``,
        ``categories`` ((colour, texture, shape) per category), ``attribute_coverage`` (every
        attribute of a rare category but a novel-only shape is worn by a base category),
        ``novel_only_shapes`` and ``unannotated_novel_images`` (training images showing an
        unannotated novel object).
    """
    height, width = (int(image_size), int(image_size)) if np.isscalar(image_size) else map(int, image_size)
    if min(height, width) < 48:
        raise ValueError(f"image_size must be at least 48x48 to hold several objects, got {height}x{width}.")
    if num_train_images < MIN_TRAIN_IMAGES:
        raise ValueError(
            f"num_train_images={num_train_images} is too small: LVIS's 'frequent' group needs categories "
            f"in more than 100 training images; use at least {MIN_TRAIN_IMAGES}."
        )
    if num_val_images < 2:
        raise ValueError(f"num_val_images must be at least 2, got {num_val_images}.")
    novel_only_shapes = _check_novel_only_shapes(novel_only_shapes)
    if not 0.0 <= float(unannotated_novel_share) <= 1.0:
        raise ValueError(f"unannotated_novel_share must be in [0, 1], got {unannotated_novel_share}.")
    categories = world_categories(num_categories)
    num_rare, num_frequent = _resolve_design(num_categories, num_rare, num_frequent)
    paths = world_dataset_paths(root)
    for key in ("train_images", "val_images"):
        os.makedirs(paths[key], exist_ok=True)
    os.makedirs(os.path.dirname(paths["train_json"]), exist_ok=True)
    # An earlier dataset's annotations go first: while its images are replaced, no complete-looking
    # dataset exists (ensure_world_dataset would otherwise pair old annotations with new images).
    for split in ("train", "val"):
        try:
            os.remove(paths[f"{split}_json"])
        except FileNotFoundError:
            pass
    umask = current_umask()

    rng = np.random.default_rng(seed)
    groups, covered = _design_groups(categories, num_rare, num_frequent, rng, novel_only_shapes)
    targets = _target_image_counts(groups, num_train_images, rare_max_train_images, rng)
    train_objects = _assign_train_objects(targets, num_train_images, rng)
    split_objects = {
        "train": train_objects,
        "val": _assign_val_objects(num_categories, num_val_images, rng),
    }
    unannotated_objects = {
        "train": _assign_unannotated_novel(
            train_objects, [i for i, g in enumerate(groups) if g == "r"], float(unannotated_novel_share), rng
        ),
        "val": [[] for _ in range(num_val_images)],
    }
    parameters = {
        "num_train_images": num_train_images,
        "num_val_images": num_val_images,
        "image_size": [height, width],
        "num_categories": num_categories,
        "seed": seed,
        "jpeg_quality": jpeg_quality,
        "num_rare": num_rare,
        "num_frequent": num_frequent,
        "rare_max_train_images": rare_max_train_images,
        "novel_only_shapes": list(novel_only_shapes),
        "unannotated_novel_share": float(unannotated_novel_share),
        "version": _DATASET_VERSION,
    }

    splits = {}
    next_image_id, next_annotation_id = 1, 1
    for split in ("train", "val"):
        images, annotations = [], []
        for objects, unannotated in zip(split_objects[split], unannotated_objects[split]):
            image_id = next_image_id
            next_image_id += 1
            file_name = f"{image_id:012d}.jpg"
            # the unannotated objects are drawn last, so the annotated ones keep their order in `drawn`
            pixels, drawn = render_scene([categories[c] for c in objects + unannotated], height, width, rng)
            _write_jpeg(os.path.join(paths[f"{split}_images"], file_name), pixels, jpeg_quality, umask)
            present = sorted({c + 1 for c in objects + unannotated})
            images.append({
                "id": image_id,
                "file_name": file_name,
                "coco_url": f"images/{split}/{file_name}",
                "height": height,
                "width": width,
                "neg_category_ids": [c for c in range(1, num_categories + 1) if c not in present],
                "not_exhaustive_category_ids": [],
            })
            for category_index, obj in zip(objects, drawn):
                annotations.append({
                    "id": next_annotation_id,
                    "image_id": image_id,
                    "category_id": category_index + 1,
                    "bbox": [round(v, 2) for v in obj["bbox"]],
                    "area": obj["area"],
                    "segmentation": obj["segmentation"],
                })
                next_annotation_id += 1
        splits[split] = (images, annotations)

    def counts(annotations, num):
        image_sets = [set() for _ in range(num)]
        instances = [0] * num
        for a in annotations:
            image_sets[a["category_id"] - 1].add(a["image_id"])
            instances[a["category_id"] - 1] += 1
        return [len(s) for s in image_sets], instances

    train_image_counts, train_instance_counts = counts(splits["train"][1], num_categories)
    frequencies = [frequency_from_image_count(n) for n in train_image_counts]
    val_image_counts, _ = counts(splits["val"][1], num_categories)
    missing_val = [i + 1 for i, n in enumerate(val_image_counts) if n == 0]
    if missing_val or train_image_counts.count(0) or set(frequencies) != {"r", "c", "f"}:
        raise RuntimeError(  # the design above guarantees these; fail loudly if it ever does not
            f"Generated dataset is not long-tailed as designed: categories without val instances "
            f"{missing_val}, train image counts {train_image_counts}."
        )
    covered = rare_attribute_coverage(categories, frequencies, novel_only_shapes)
    num_unannotated_images = sum(1 for u in unannotated_objects["train"] if u)

    # As in LVIS v1, both jsons carry the same category records with the TRAINING statistics
    # (image_count / instance_count / frequency): evaluation tools sort and group categories by them.
    class_names = [object_name(t) for t in categories]
    for split in ("train", "val"):
        images, annotations = splits[split]
        category_records = []
        for index, triple in enumerate(categories):
            colour, texture, shape = triple
            category_records.append({
                "id": index + 1,
                "name": class_names[index],
                "synonyms": [class_names[index], object_synonym(triple)],
                "def": f"a {colour} {shape} {TEXTURE_PHRASES[texture]}, drawn on a cluttered background",
                "synset": f"{colour}_{texture}_{shape}.n.01",
                "frequency": frequencies[index],
                "image_count": train_image_counts[index],
                "instance_count": train_instance_counts[index],
            })
        data = {
            "info": {
                "description": "GridCLIP generated world: long-tailed detection dataset in LVIS v1 format",
                "version": _DATASET_VERSION,
                "generator": parameters,
                "rare_attribute_coverage": covered,
                "unannotated_novel_images": num_unannotated_images if split == "train" else 0,
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": category_records,
        }
        # JSON last (atomically), so an interrupted run never leaves annotations without images.
        atomic_write_text(paths[f"{split}_json"], json.dumps(data, separators=(",", ":")))

    logger.info(
        "Generated the world's detection dataset at %s: %d train / %d val images, %d categories (r/c/f = %d/%d/%d), "
        "novel-only shapes %s, %d training images with an unannotated novel object.",
        paths["root"], num_train_images, num_val_images, num_categories,
        frequencies.count("r"), frequencies.count("c"), frequencies.count("f"), list(novel_only_shapes),
        num_unannotated_images,
    )
    return _result(paths, categories, frequencies, train_image_counts, covered, novel_only_shapes,
                   num_unannotated_images)


def _check_novel_only_shapes(novel_only_shapes):
    shapes = tuple(novel_only_shapes or ())
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise ValueError(f"novel_only_shapes {unknown} are not shapes of the world; known: {SHAPES}.")
    return shapes


def _result(paths, categories, frequencies, train_image_counts, covered, novel_only_shapes, unannotated_images):
    return dict(
        paths, class_names=[object_name(t) for t in categories], frequencies=list(frequencies),
        train_image_counts=list(train_image_counts), categories=[tuple(t) for t in categories],
        attribute_coverage=bool(covered), novel_only_shapes=tuple(novel_only_shapes),
        unannotated_novel_images=int(unannotated_images),
    )


def _read_annotations(paths):
    """The train annotations of an existing dataset, or None (missing; or unreadable, corrupt or not
    LVIS-shaped: one warning naming the file, and the dataset is generated again)."""
    if not (os.path.isfile(paths["train_json"]) and os.path.isfile(paths["val_json"])):
        return None
    try:
        data = {split: read_json(paths[f"{split}_json"], "world dataset annotations") for split in ("train", "val")}
        for split, split_data in data.items():
            if not isinstance(split_data, dict) or not all(
                    isinstance(split_data.get(k), list) for k in ("images", "annotations", "categories")):
                raise ValueError(f"{paths[f'{split}_json']} is not an LVIS annotation file")
    except (ValueError, OSError) as e:
        logger.warning("The world dataset at %s cannot be used (%s); generating it again.", paths["root"], e)
        return None
    return data["train"]


def ensure_world_dataset(root, **kwargs):
    """
    Generate the dataset under ``root`` unless it is already there with the same arguments.

    Args and return value as :func:`generate_world_dataset`.
    """
    paths = world_dataset_paths(root)
    train = _read_annotations(paths)
    if train is not None:
        existing = train.get("info", {}).get("generator")
        wanted = dict(DEFAULT_GENERATOR_ARGS, num_rare=None, num_frequent=None)
        wanted.update(kwargs)
        size = wanted["image_size"]
        wanted["image_size"] = [int(size), int(size)] if np.isscalar(size) else [int(s) for s in size]
        wanted["num_rare"], wanted["num_frequent"] = _resolve_design(
            wanted["num_categories"], wanted["num_rare"], wanted["num_frequent"]
        )
        wanted["novel_only_shapes"] = list(_check_novel_only_shapes(wanted["novel_only_shapes"]))
        wanted["unannotated_novel_share"] = float(wanted["unannotated_novel_share"])
        wanted["version"] = _DATASET_VERSION
        images_present = all(
            os.path.isfile(os.path.join(paths["train_images"], img["file_name"])) for img in train["images"]
        )
        if existing == wanted and images_present:
            categories = sorted(train["categories"], key=lambda c: c["id"])
            triples = [tuple(c["name"].split()) for c in categories]
            return _result(
                paths, triples, [c["frequency"] for c in categories], [c["image_count"] for c in categories],
                train["info"].get("rare_attribute_coverage", False), existing["novel_only_shapes"],
                train["info"].get("unannotated_novel_images", 0),
            )
    return generate_world_dataset(root, **kwargs)
