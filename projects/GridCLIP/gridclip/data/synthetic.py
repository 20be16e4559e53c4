"""
A generated long-tailed dataset in LVIS v1 format: the embedded default's training and test data.

Every category is a (colour, texture, shape) combination with a name a CLIP text encoder can embed
("red striped circle", "blue dotted star", ...). Images show several such objects on a cluttered
background (smooth noise, random lines and blobs in muted colours); each box is tight around the
drawn shape's pixels. Category image counts on the train split follow a designed long tail that
spans LVIS's frequency rule (rare: 1-10 training images, common: 11-100, frequent: > 100), and each
category's ``frequency`` is computed from the generated train split by that rule.

Layout written under ``root``::

    annotations/lvis_v1_train.json   annotations/lvis_v1_val.json
    images/train/000000000001.jpg    images/val/...

Images carry ``coco_url = "images/<split>/<file>"`` so Detectron2's ``load_lvis_json`` resolves them
as ``image_root + "<split>/<file>"`` with ``image_root = root/images/``. All objects are annotated,
so each image's ``neg_category_ids`` lists every category absent from it and
``not_exhaustive_category_ids`` is empty: the LVIS evaluation is exhaustive on this data.

Generation is deterministic: the same arguments give byte-identical JSON files and images.
"""
import json
import logging
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "SHAPES",
    "COLOURS",
    "TEXTURES",
    "MIN_TRAIN_IMAGES",
    "DEFAULT_GENERATOR_ARGS",
    "frequency_from_image_count",
    "synthetic_categories",
    "generate_synthetic_lvis",
    "ensure_synthetic_lvis",
    "synthetic_lvis_paths",
]

logger = logging.getLogger(__name__)

SHAPES = ["circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon"]
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "purple": (145, 60, 185),
    "orange": (245, 140, 30),
}
TEXTURES = ["solid", "striped", "checkered", "dotted"]
_TEXTURE_PHRASES = {
    "solid": "in solid colour",
    "striped": "with stripes",
    "checkered": "with a checkered pattern",
    "dotted": "with dots",
}

#: LVIS's image-count rule needs > 100 training images for a "frequent" category.
MIN_TRAIN_IMAGES = 120
_DATASET_VERSION = "1.1"  # 1.1: both splits carry the training statistics, as LVIS v1 does


def frequency_from_image_count(image_count):
    """LVIS's rule: ``"r"`` for 1-10 training images, ``"c"`` for 11-100, ``"f"`` for more."""
    if image_count <= 10:
        return "r"
    if image_count <= 100:
        return "c"
    return "f"


def synthetic_categories(num_categories):
    """
    The (colour, texture, shape) triples of the first ``num_categories`` categories.

    Consecutive categories cycle through shapes; the k-th variant of a shape changes both colour and
    texture, so no two categories look alike. At most ``len(SHAPES) * len(TEXTURES)`` = 32.

    Returns:
        list[tuple[str, str, str]]: (colour, texture, shape) per category, in category-id order.
    """
    colours = list(COLOURS)
    max_categories = len(SHAPES) * len(TEXTURES)
    if not 3 <= num_categories <= max_categories:
        raise ValueError(
            f"num_categories must be between 3 (one per frequency group) and {max_categories}, "
            f"got {num_categories}."
        )
    triples = []
    for index in range(num_categories):
        s, variant = index % len(SHAPES), index // len(SHAPES)
        colour = colours[(s + 2 * variant) % len(colours)]
        texture = TEXTURES[(s + variant) % len(TEXTURES)]
        triples.append((colour, texture, SHAPES[s]))
    assert len(set(triples)) == len(triples)
    return triples


def _target_image_counts(num_categories, num_train_images):
    """Designed number of training images per category: a long tail over rare/common/frequent."""
    num_rare = max(1, round(num_categories * 0.25))
    num_frequent = max(1, round(num_categories * 0.25))
    num_common = num_categories - num_rare - num_frequent
    frequent_max = max(105, int(0.55 * num_train_images))
    counts = (
        list(np.geomspace(frequent_max, 105, num_frequent))
        + list(np.geomspace(90, 12, num_common))
        + list(np.linspace(10, 2, num_rare))
    )
    return [int(round(c)) for c in counts]


def _shape_polygons(shape, x0, y0, w, h):
    """Outline polygon(s) of a shape inscribed in the box (x0, y0, w, h), as lists of (x, y)."""
    cx, cy, rx, ry = x0 + w / 2.0, y0 + h / 2.0, w / 2.0, h / 2.0

    def regular(n, start_deg, radius_scale=1.0):
        angles = np.deg2rad(start_deg + 360.0 * np.arange(n) / n)
        return [(cx + rx * radius_scale * np.cos(a), cy + ry * radius_scale * np.sin(a)) for a in angles]

    if shape in ("circle", "ring"):
        return [regular(24, 0.0)]
    if shape == "square":
        return [[(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]]
    if shape == "triangle":
        return [[(cx, y0), (x0 + w, y0 + h), (x0, y0 + h)]]
    if shape == "diamond":
        return [[(cx, y0), (x0 + w, cy), (cx, y0 + h), (x0, cy)]]
    if shape == "hexagon":
        return [regular(6, 0.0)]
    if shape == "star":
        angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return [[(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii)]]
    if shape == "cross":
        ax, ay = 0.18 * w, 0.18 * h
        return [[
            (cx - ax, y0), (cx + ax, y0), (cx + ax, cy - ay), (x0 + w, cy - ay), (x0 + w, cy + ay),
            (cx + ax, cy + ay), (cx + ax, y0 + h), (cx - ax, y0 + h), (cx - ax, cy + ay), (x0, cy + ay),
            (x0, cy - ay), (cx - ax, cy - ay),
        ]]
    raise ValueError(f"Unknown shape {shape!r}; known: {SHAPES}")


def _shape_mask(shape, x0, y0, w, h, height, width):
    """Boolean [height, width] mask of the shape drawn in the box (x0, y0, w, h)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if shape in ("circle", "ring"):
        draw.ellipse([x0, y0, x0 + w - 1, y0 + h - 1], fill=255)
        if shape == "ring":
            iw, ih = 0.5 * w, 0.5 * h
            ix, iy = x0 + (w - iw) / 2.0, y0 + (h - ih) / 2.0
            draw.ellipse([ix, iy, ix + iw - 1, iy + ih - 1], fill=0)
    else:
        for polygon in _shape_polygons(shape, x0, y0, w - 1, h - 1):
            draw.polygon(polygon, fill=255)
    return np.asarray(canvas) > 0


def _texture_pattern(texture, height, width, rng):
    """Boolean [height, width]: True where the object shows its colour, False its secondary tone."""
    yy, xx = np.mgrid[0:height, 0:width]
    if texture == "solid":
        return np.ones((height, width), dtype=bool)
    if texture == "striped":
        angle = np.deg2rad(rng.choice([0.0, 45.0, 90.0, 135.0]))
        period = int(rng.integers(5, 8))
        phase = rng.uniform(0, period)
        t = xx * np.cos(angle) + yy * np.sin(angle) + phase
        return np.mod(t, period) < period / 2.0
    if texture == "checkered":
        cell = int(rng.integers(3, 5))
        ox, oy = rng.integers(0, cell, size=2)
        return ((xx + ox) // cell + (yy + oy) // cell) % 2 == 0
    if texture == "dotted":
        period = int(rng.integers(5, 7))
        ox, oy = rng.uniform(0, period, size=2)
        dx = np.mod(xx + ox, period) - period / 2.0
        dy = np.mod(yy + oy, period) - period / 2.0
        return dx * dx + dy * dy > 1.6 ** 2
    raise ValueError(f"Unknown texture {texture!r}; known: {TEXTURES}")


def _cluttered_background(height, width, rng):
    """An RGB uint8 background: smooth low-saturation noise, random lines and blurred blobs."""
    base = rng.uniform(70, 190)
    tint = rng.uniform(-20, 20, size=3)
    coarse = rng.normal(0.0, 28.0, size=(max(2, height // 16), max(2, width // 16), 3))
    coarse_img = Image.fromarray(np.clip(coarse + 128.0, 0, 255).astype(np.uint8))
    smooth = np.asarray(coarse_img.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32) - 128.0
    grey_noise = smooth.mean(axis=2, keepdims=True) * 0.7 + smooth * 0.3  # mostly desaturated
    background = np.clip(base + tint + grey_noise, 0, 255).astype(np.uint8)

    canvas = Image.fromarray(background)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 6))):  # blobs
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.2) * min(height, width)
        grey = rng.uniform(40, 220)
        colour = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.uniform(-25, 25, size=3))
        draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r], fill=colour)
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=1.5))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(3, 9))):  # lines
        points = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(2)]
        grey = rng.uniform(20, 235)
        colour = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.uniform(-30, 30, size=3))
        draw.line(points, fill=colour, width=int(rng.integers(1, 3)))
    return np.asarray(canvas).copy()


def _place_boxes(num_objects, height, width, rng, min_frac=0.14, max_frac=0.34):
    """Non-overlapping (x0, y0, w, h) integer boxes, one per object (shrinking when crowded)."""
    short = min(height, width)
    min_side = max(8, int(round(min_frac * short)))
    boxes = []
    for _ in range(num_objects):
        side = rng.uniform(min_frac, max_frac) * short
        aspect = rng.uniform(0.8, 1.25)
        placed = None
        while placed is None:
            w = int(np.clip(round(side * np.sqrt(aspect)), min_side, width - 2))
            h = int(np.clip(round(side / np.sqrt(aspect)), min_side, height - 2))
            for _attempt in range(60):
                x0 = int(rng.integers(1, width - w))
                y0 = int(rng.integers(1, height - h))
                if all(
                    x0 + w + 1 <= bx or bx + bw + 1 <= x0 or y0 + h + 1 <= by or by + bh + 1 <= y0
                    for bx, by, bw, bh in boxes
                ):
                    placed = (x0, y0, w, h)
                    break
            if placed is None:
                if side <= min_side:
                    raise RuntimeError(
                        f"Cannot place {num_objects} non-overlapping objects in a {width}x{height} image; "
                        "use larger images (--image-size) or more images so each holds fewer objects."
                    )
                side = max(min_side, side * 0.85)
        boxes.append(placed)
    return boxes


def _polygon_area(polygon):
    xs, ys = polygon[0::2], polygon[1::2]
    return 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))


def _render_image(objects, categories, height, width, rng):
    """
    Draw ``objects`` (list of category indices) on a cluttered background.

    Returns:
        image (ndarray[H, W, 3] uint8), and per object a dict with the tight ``bbox`` (XYWH, in
        Detectron2's continuous pixel coordinates), ``segmentation`` (polygons) and ``area``.
    """
    image = _cluttered_background(height, width, rng).astype(np.float32)
    boxes = _place_boxes(len(objects), height, width, rng)
    drawn = []
    for category_index, (x0, y0, w, h) in zip(objects, boxes):
        colour_name, texture, shape = categories[category_index]
        mask = _shape_mask(shape, x0, y0, w, h, height, width)
        colour = np.clip(np.array(COLOURS[colour_name], np.float32) + rng.uniform(-12, 12, size=3), 0, 255)
        secondary = np.array([238.0, 238.0, 238.0], np.float32) if texture != "solid" else colour
        pattern = _texture_pattern(texture, height, width, rng)
        fill = np.where(pattern[..., None], colour, secondary)
        image[mask] = fill[mask]
        ys, xs = np.nonzero(mask)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
        polygons = [
            [round(float(v), 2) for point in polygon for v in point]
            for polygon in _shape_polygons(shape, x0, y0, w - 1, h - 1)
        ]
        # keep the outline inside the tight box (the rasteriser rounds inwards at the edges)
        bx0, by0, bw, bh = bbox
        polygons = [
            [round(min(max(v, (bx0, by0)[i % 2]), (bx0 + bw, by0 + bh)[i % 2]), 2) for i, v in enumerate(p)]
            for p in polygons
        ]
        drawn.append({"bbox": bbox, "segmentation": polygons, "area": float(mask.sum())})
    image += rng.normal(0.0, 5.0, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), drawn


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


def synthetic_lvis_paths(root):
    """The files :func:`generate_synthetic_lvis` writes under ``root`` (dict of paths)."""
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


def _write_json_atomically(data, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)


#: defaults of :func:`generate_synthetic_lvis` (the embedded default: ``make demo`` trains on it)
DEFAULT_GENERATOR_ARGS = dict(
    num_train_images=320, num_val_images=80, image_size=(128, 128), num_categories=24, seed=0, jpeg_quality=92
)


def generate_synthetic_lvis(
    root,
    num_train_images=320,
    num_val_images=80,
    image_size=(128, 128),
    num_categories=24,
    seed=0,
    jpeg_quality=92,
):
    """
    Generate the long-tailed LVIS-format dataset under ``root`` (see the module docstring).

    Args:
        root (str): output folder (created; existing files of the dataset are overwritten).
        num_train_images (int): train split size; at least :data:`MIN_TRAIN_IMAGES` so that
            frequent categories (> 100 training images) exist.
        num_val_images (int): val split size; every category gets at least two val instances.
        image_size (tuple[int, int]): (height, width) of every image, each >= 48.
        num_categories (int): 3..32; a quarter rare, a quarter frequent, the rest common.
        seed (int): the only source of randomness.
        jpeg_quality (int): JPEG quality of the written images.

    Returns:
        dict: the paths of :func:`synthetic_lvis_paths` plus ``class_names``, ``frequencies``
        (``"r"/"c"/"f"`` per category, by the image-count rule on train) and ``train_image_counts``.
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
    categories = synthetic_categories(num_categories)
    paths = synthetic_lvis_paths(root)
    for key in ("train_images", "val_images"):
        os.makedirs(paths[key], exist_ok=True)
    os.makedirs(os.path.dirname(paths["train_json"]), exist_ok=True)

    rng = np.random.default_rng(seed)
    # Which category gets which designed count is drawn too, so the frequency groups mix shapes,
    # colours and textures (a rare category's words all occur in some base category).
    targets = [int(t) for t in rng.permutation(_target_image_counts(num_categories, num_train_images))]
    split_objects = {
        "train": _assign_train_objects(targets, num_train_images, rng),
        "val": _assign_val_objects(num_categories, num_val_images, rng),
    }
    parameters = {
        "num_train_images": num_train_images,
        "num_val_images": num_val_images,
        "image_size": [height, width],
        "num_categories": num_categories,
        "seed": seed,
        "jpeg_quality": jpeg_quality,
        "version": _DATASET_VERSION,
    }

    splits = {}
    next_image_id, next_annotation_id = 1, 1
    for split in ("train", "val"):
        images, annotations = [], []
        for objects in split_objects[split]:
            image_id = next_image_id
            next_image_id += 1
            file_name = f"{image_id:012d}.jpg"
            pixels, drawn = _render_image(objects, categories, height, width, rng)
            Image.fromarray(pixels).save(
                os.path.join(paths[f"{split}_images"], file_name), quality=jpeg_quality, subsampling=0
            )
            present = sorted({c + 1 for c in objects})
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

    # As in LVIS v1, both jsons carry the same category records with the TRAINING statistics
    # (image_count / instance_count / frequency): evaluation tools sort and group categories by them.
    class_names = []
    for split in ("train", "val"):
        images, annotations = splits[split]
        category_records = []
        for index, (colour, texture, shape) in enumerate(categories):
            name = f"{colour} {texture} {shape}"
            if split == "train":
                class_names.append(name)
            category_records.append({
                "id": index + 1,
                "name": name,
                "synonyms": [name, f"{colour} {shape} {_TEXTURE_PHRASES[texture]}"],
                "def": f"a {colour} {shape} {_TEXTURE_PHRASES[texture]}, drawn on a cluttered background",
                "synset": f"{colour}_{texture}_{shape}.n.01",
                "frequency": frequencies[index],
                "image_count": train_image_counts[index],
                "instance_count": train_instance_counts[index],
            })
        data = {
            "info": {
                "description": "GridCLIP synthetic long-tailed dataset in LVIS v1 format",
                "version": _DATASET_VERSION,
                "generator": parameters,
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": category_records,
        }
        # JSON last (atomically), so an interrupted run never leaves annotations without images.
        _write_json_atomically(data, paths[f"{split}_json"])

    logger.info(
        "Generated synthetic LVIS at %s: %d train / %d val images, %d categories (r/c/f = %d/%d/%d).",
        paths["root"], num_train_images, num_val_images, num_categories,
        frequencies.count("r"), frequencies.count("c"), frequencies.count("f"),
    )
    return dict(paths, class_names=class_names, frequencies=frequencies, train_image_counts=train_image_counts)


def ensure_synthetic_lvis(root, **kwargs):
    """
    Generate the dataset under ``root`` unless it is already there with the same arguments.

    Args and return value as :func:`generate_synthetic_lvis`.
    """
    paths = synthetic_lvis_paths(root)
    if os.path.isfile(paths["train_json"]) and os.path.isfile(paths["val_json"]):
        with open(paths["train_json"]) as f:
            train = json.load(f)
        existing = train.get("info", {}).get("generator")
        defaults = dict(DEFAULT_GENERATOR_ARGS, **kwargs)
        size = defaults["image_size"]
        wanted = dict(defaults, image_size=[int(size), int(size)] if np.isscalar(size) else [int(s) for s in size],
                      version=_DATASET_VERSION)
        images_present = all(
            os.path.isfile(os.path.join(paths["train_images"], img["file_name"])) for img in train["images"]
        )
        if existing == wanted and images_present:
            categories = sorted(train["categories"], key=lambda c: c["id"])
            return dict(
                paths,
                class_names=[c["name"] for c in categories],
                frequencies=[c["frequency"] for c in categories],
                train_image_counts=[c["image_count"] for c in categories],
            )
    return generate_synthetic_lvis(root, **kwargs)
