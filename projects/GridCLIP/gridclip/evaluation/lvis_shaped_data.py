"""
LVIS-v1-shaped annotation files and detections at any size, without images, for measuring evaluation
and data loading at real LVIS scale.

What is LVIS v1 here: the 1203 categories (names, synonyms, r/c/f frequencies from Detectron2) and
their training-image counts (:mod:`.lvis_v1_image_counts`); per image about 3.6 categories (LVIS v1
train: 360,952 image-category pairs over 100,170 images), drawn with probability proportional to the
category's image count, and 3.5 boxes per present category (1.27 M boxes over those pairs); COCO-like
image sizes; many small boxes; ``neg_category_ids`` (verified absent, about 6 per image) and
``not_exhaustive_category_ids`` (10 % of the present categories). What is not: box positions, mask
shapes (each segmentation is the box's 4-corner polygon; ``area`` is 45-95 % of the box, as a mask's
would be), the exact per-category box counts.

Everything is deterministic from ``seed``: images are generated in blocks of :data:`BLOCK` with one
random generator per (seed, split, block), so the first N images are the same whatever the total.

:func:`lvis_shaped_detections` gives ``dets_per_image`` detections per image for those images
(matched boxes with jitter, duplicates, wrong-class boxes, false positives on negative categories,
background), with ``quality`` in [0, 1] moving AP from near 0 to near 100.
"""
import json
import os

import numpy as np

from .compact_detections import CompactDetections
from .lvis_v1_image_counts import lvis_v1_image_counts

__all__ = [
    "BLOCK", "LVISShapedBlock", "lvis_v1_categories", "lvis_shaped_blocks", "write_lvis_shaped_json",
    "lvis_shaped_detections", "LVIS_V1_VAL_IMAGES", "LVIS_V1_TRAIN_IMAGES",
]

BLOCK = 1000
LVIS_V1_VAL_IMAGES = 19809
LVIS_V1_TRAIN_IMAGES = 100170
#: mean categories per image and boxes per present category of LVIS v1 train
CATEGORIES_PER_IMAGE = 3.6
BOXES_PER_CATEGORY = 3.52
NEG_CATEGORIES_PER_IMAGE = 6.0
NOT_EXHAUSTIVE_FRACTION = 0.1
EMPTY_IMAGE_FRACTION = 0.01
_SPLIT_SEED = {"train": 1, "val": 2}
# (width, height, probability): COCO's common image sizes
_IMAGE_SIZES = ((640, 480, 0.5), (640, 427, 0.2), (480, 640, 0.15), (640, 640, 0.1), (500, 375, 0.05))


def lvis_v1_categories(categories=None):
    """The 1203 LVIS v1 category dicts (id, name, synonyms, def, synset, frequency, image_count, instance_count)."""
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

    counts = lvis_v1_image_counts()
    cats = []
    for c in sorted(categories or LVIS_CATEGORIES, key=lambda c: c["id"]):
        n = counts[c["id"]]
        cats.append(dict(c, image_count=n, instance_count=int(round(n * BOXES_PER_CATEGORY))))
    return cats


class LVISShapedBlock:
    """
    One block of generated images (arrays).

    Attributes:
        image_id (np.ndarray): [n] int64.
        width, height (np.ndarray): [n] int64.
        ann_image (np.ndarray): [m] int64 index into the block's images; annotations grouped by image.
        ann_category (np.ndarray): [m] int64 LVIS category id.
        ann_bbox (np.ndarray): [m, 4] float64 XYWH (2 decimals, as LVIS's json).
        ann_area (np.ndarray): [m] float64.
        neg (list[list[int]]), not_exhaustive (list[list[int]]): per image category ids.
    """

    def __init__(self, **arrays):
        self.__dict__.update(arrays)

    def __len__(self):
        return len(self.image_id)

    def head(self, n):
        """The block's first ``n`` images (and their annotations)."""
        if n >= len(self):
            return self
        keep = self.ann_image < n
        return LVISShapedBlock(
            image_id=self.image_id[:n], width=self.width[:n], height=self.height[:n],
            ann_image=self.ann_image[keep], ann_category=self.ann_category[keep], ann_bbox=self.ann_bbox[keep],
            ann_area=self.ann_area[keep], neg=self.neg[:n], not_exhaustive=self.not_exhaustive[:n],
        )

    def images_json(self):
        return [
            {"id": int(i), "width": int(w), "height": int(h), "file_name": f"{int(i):012d}.jpg",
             "coco_url": f"http://images.cocodataset.org/val2017/{int(i):012d}.jpg",
             "neg_category_ids": neg, "not_exhaustive_category_ids": nel}
            for i, w, h, neg, nel in zip(self.image_id, self.width, self.height, self.neg, self.not_exhaustive)
        ]

    def annotations_json(self, first_id):
        anns = []
        boxes = self.ann_bbox.tolist()
        for j, (img, cat, (x, y, w, h), area) in enumerate(zip(
            self.image_id[self.ann_image].tolist(), self.ann_category.tolist(), boxes, self.ann_area.tolist()
        )):
            x2, y2 = round(x + w, 2), round(y + h, 2)
            anns.append({
                "id": first_id + j, "image_id": img, "category_id": cat, "bbox": [x, y, w, h], "area": area,
                "segmentation": [[x, y, x2, y, x2, y2, x, y2]],
            })
        return anns


def _sample_without_replacement(rng, log_p, counts):
    """Per row i, ``counts[i]`` distinct column indices drawn with probabilities exp(log_p) (Gumbel top-k)."""
    n, k_max = len(counts), int(counts.max(initial=0))
    if k_max == 0:
        return [np.zeros(0, np.int64) for _ in range(n)]
    keys = log_p[None, :] + rng.gumbel(size=(n, len(log_p)))
    top = np.argpartition(-keys, k_max - 1, axis=1)[:, :k_max]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, 1), axis=1), 1)
    return [top[i, : counts[i]] for i in range(n)]


def _block(seed, split, block_index, cat_ids, log_p):
    """A full block of :data:`BLOCK` images (a shorter one is its head: the same first images)."""
    num_images = BLOCK
    rng = np.random.default_rng([seed, _SPLIT_SEED[split], block_index])
    first = block_index * BLOCK
    image_id = np.arange(first + 1, first + num_images + 1, dtype=np.int64)
    size_index = rng.choice(len(_IMAGE_SIZES), size=num_images, p=[s[2] for s in _IMAGE_SIZES])
    width = np.array([_IMAGE_SIZES[i][0] for i in size_index], np.int64)
    height = np.array([_IMAGE_SIZES[i][1] for i in size_index], np.int64)

    # present categories: 1 + negative binomial (mean CATEGORIES_PER_IMAGE), some images empty
    n_present = 1 + rng.negative_binomial(1.5, 1.5 / (1.5 + CATEGORIES_PER_IMAGE - 1), size=num_images)
    n_present = np.minimum(n_present, 40)
    n_present[rng.random(num_images) < EMPTY_IMAGE_FRACTION] = 0
    n_neg = np.minimum(rng.poisson(NEG_CATEGORIES_PER_IMAGE, size=num_images), 60)
    drawn = _sample_without_replacement(rng, log_p, n_present + n_neg)
    present = [d[:k] for d, k in zip(drawn, n_present)]
    neg = [sorted(cat_ids[d[k:]].tolist()) for d, k in zip(drawn, n_present)]

    pair_image = np.repeat(np.arange(num_images), n_present)
    pair_category = cat_ids[np.concatenate(present)] if len(pair_image) else np.zeros(0, np.int64)
    not_exhaustive_mask = rng.random(len(pair_image)) < NOT_EXHAUSTIVE_FRACTION
    not_exhaustive = [[] for _ in range(num_images)]
    for i, c in zip(pair_image[not_exhaustive_mask], pair_category[not_exhaustive_mask]):
        not_exhaustive[i].append(int(c))
    not_exhaustive = [sorted(x) for x in not_exhaustive]

    boxes_per_pair = 1 + np.minimum(rng.negative_binomial(0.8, 0.8 / (0.8 + BOXES_PER_CATEGORY - 1), size=len(pair_image)), 60)
    ann_image = np.repeat(pair_image, boxes_per_pair)
    ann_category = np.repeat(pair_category, boxes_per_pair)
    m = len(ann_image)
    W, H = width[ann_image].astype(np.float64), height[ann_image].astype(np.float64)
    side = np.clip(np.exp(rng.normal(np.log(0.1), 0.9, size=m)), 0.01, 1.0) * np.sqrt(W * H)
    aspect = np.exp(rng.normal(0.0, 0.5, size=m))
    w = np.minimum(side * np.sqrt(aspect), W - 1)
    h = np.minimum(side / np.sqrt(aspect), H - 1)
    x = rng.random(m) * (W - w)
    y = rng.random(m) * (H - h)
    bbox = np.round(np.stack([x, y, w, h], 1), 2)
    bbox[:, 2:] = np.maximum(bbox[:, 2:], 1.0)
    area = np.round(bbox[:, 2] * bbox[:, 3] * rng.uniform(0.45, 0.95, size=m), 2)
    return LVISShapedBlock(
        image_id=image_id, width=width, height=height, ann_image=ann_image, ann_category=ann_category,
        ann_bbox=bbox, ann_area=area, neg=neg, not_exhaustive=not_exhaustive,
    )


def _category_log_p(cats, count_exponent):
    p = np.array([c["image_count"] for c in cats], np.float64) ** count_exponent
    return np.array([c["id"] for c in cats], np.int64), np.log(p / p.sum())


def lvis_shaped_blocks(num_images, seed=0, split="val", categories=None, count_exponent=1.0):
    """
    Yield the :class:`LVISShapedBlock` s of ``num_images`` generated images (blocks of :data:`BLOCK`).

    Args:
        categories (list[dict] or None): a subset of Detectron2's ``LVIS_CATEGORIES`` (default all).
        count_exponent (float): categories are drawn with probability ~ image_count ** count_exponent
            (1 = LVIS's; smaller flattens, so that a small test set holds rare categories).
    """
    cats = lvis_v1_categories(categories)
    cat_ids, log_p = _category_log_p(cats, count_exponent)
    for b in range((num_images + BLOCK - 1) // BLOCK):
        yield _block(seed, split, b, cat_ids, log_p).head(num_images - b * BLOCK)


def write_lvis_shaped_json(path, num_images, seed=0, split="val", categories=None, count_exponent=1.0):
    """
    Write an LVIS v1 format json of ``num_images`` generated images to ``path`` (streamed: memory stays
    at one block). Loadable by ``lvis.LVIS`` and Detectron2's ``load_lvis_json``.

    Returns:
        dict: ``{"images", "annotations", "categories", "bytes"}`` counts.
    """
    cats = lvis_v1_categories(categories)
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    n_anns = 0
    with open(tmp, "w") as f:
        f.write('{"info": {"description": "LVIS-v1-shaped generated annotations (gridclip)"}, "licenses": [], ')
        f.write('"categories": ' + json.dumps(cats) + ', "images": [')
        for b, block in enumerate(lvis_shaped_blocks(num_images, seed, split, categories, count_exponent)):
            f.write((", " if b else "") + json.dumps(block.images_json())[1:-1])
        f.write('], "annotations": [')
        for block in lvis_shaped_blocks(num_images, seed, split, categories, count_exponent):
            anns = block.annotations_json(first_id=n_anns + 1)
            if anns:
                f.write((", " if n_anns else "") + json.dumps(anns)[1:-1])
            n_anns += len(anns)
        f.write("]}")
    os.replace(tmp, path)
    return {"images": num_images, "annotations": n_anns, "categories": len(cats), "bytes": os.path.getsize(path)}


def _block_detections(block, seed, block_index, quality, dets_per_image, cat_ids, log_p, score_decimals):
    """Detections of a full block's images (keep those of its head with ``image_id``)."""
    rng = np.random.default_rng([seed, 7, block_index])
    n, m = len(block), len(block.ann_image)
    recall = 0.2 + 0.75 * quality
    jitter = 0.02 + 0.3 * (1.0 - quality)
    W = block.width[block.ann_image].astype(np.float64)
    H = block.height[block.ann_image].astype(np.float64)

    def jittered(rows, scale):
        x, y, w, h = (block.ann_bbox[rows, i] for i in range(4))
        d = rng.normal(0.0, scale, size=(len(rows), 4))
        x2, y2 = x + w * (1 + d[:, 2]), y + h * (1 + d[:, 3])
        x1, y1 = x + w * d[:, 0], y + h * d[:, 1]
        return np.stack([np.clip(x1, 0, W[rows]), np.clip(y1, 0, H[rows]), np.clip(x2, 0, W[rows]), np.clip(y2, 0, H[rows])], 1)

    parts = []  # (image index, category id, xyxy, score)
    hit = np.flatnonzero(rng.random(m) < recall)
    parts.append((block.ann_image[hit], block.ann_category[hit], jittered(hit, jitter),
                  0.35 + 0.6 * rng.random(len(hit)) ** (1.0 / (1.0 + 3.0 * quality))))
    dup = hit[rng.random(len(hit)) < 0.3]
    parts.append((block.ann_image[dup], block.ann_category[dup], jittered(dup, 2 * jitter), 0.5 * rng.random(len(dup))))
    confused = np.flatnonzero(rng.random(m) < 0.4 * (1.0 - quality) + 0.05)
    wrong = cat_ids[rng.choice(len(cat_ids), size=len(confused), p=np.exp(log_p))]
    parts.append((block.ann_image[confused], wrong, jittered(confused, jitter), 0.6 * rng.random(len(confused))))
    neg_image = np.repeat(np.arange(n), [len(x) for x in block.neg])
    neg_cat = np.array([c for x in block.neg for c in x], np.int64)
    chosen = rng.random(len(neg_image)) < 0.5
    neg_image, neg_cat = neg_image[chosen], neg_cat[chosen]
    Wn, Hn = block.width[neg_image].astype(np.float64), block.height[neg_image].astype(np.float64)
    s = 0.3 * rng.random((len(neg_image), 4))
    parts.append((neg_image, neg_cat, np.stack([s[:, 0] * Wn, s[:, 1] * Hn, (s[:, 0] + 0.1 + s[:, 2]) * Wn, (s[:, 1] + 0.1 + s[:, 3]) * Hn], 1),
                  0.5 * rng.random(len(neg_image))))

    image = np.concatenate([p[0] for p in parts])
    count = np.bincount(image, minlength=n)
    fill = np.maximum(dets_per_image - count, 0)
    bg_image = np.repeat(np.arange(n), fill)
    k = len(bg_image)
    Wb, Hb = block.width[bg_image].astype(np.float64), block.height[bg_image].astype(np.float64)
    c = rng.random((k, 2)) * np.stack([Wb, Hb], 1)
    half = np.exp(rng.normal(np.log(30), 0.8, size=(k, 2))) / 2
    bg_box = np.stack([np.clip(c[:, 0] - half[:, 0], 0, Wb), np.clip(c[:, 1] - half[:, 1], 0, Hb),
                       np.clip(c[:, 0] + half[:, 0], 0, Wb), np.clip(c[:, 1] + half[:, 1], 0, Hb)], 1)
    bg_cat = cat_ids[rng.choice(len(cat_ids), size=k, p=np.exp(log_p))]
    parts.append((bg_image, bg_cat, bg_box, 0.25 * rng.random(k)))

    image = np.concatenate([p[0] for p in parts])
    category = np.concatenate([p[1] for p in parts]).astype(np.int64)
    xyxy = np.concatenate([p[2] for p in parts]).astype(np.float32)
    score = np.concatenate([p[3] for p in parts])
    if score_decimals is not None:
        score = np.round(score, score_decimals)
    score = score.astype(np.float32)
    # per image: best dets_per_image by score, in decreasing score (a detector's output order)
    order = np.lexsort((-score, image))
    image, category, xyxy, score = image[order], category[order], xyxy[order], score[order]
    starts = np.r_[0, np.flatnonzero(image[1:] != image[:-1]) + 1]
    rank = np.arange(len(image)) - np.repeat(starts, np.diff(np.r_[starts, len(image)]))
    keep = rank < dets_per_image
    xyxy = xyxy[keep]
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1).astype(np.float32)
    return CompactDetections(block.image_id[image[keep]], category[keep], xywh, score[keep])


def lvis_shaped_detections(num_images, seed=0, quality=0.5, dets_per_image=300, split="val", categories=None,
                           score_decimals=None, count_exponent=1.0):
    """
    Detections for the images of ``write_lvis_shaped_json(num_images, seed, split, categories, count_exponent)``.

    Args:
        quality (float): 0 = poor (low recall, loose boxes, many confusions) .. 1 = near perfect.
        dets_per_image (int): detections per image (the rest is background), best first.
        score_decimals (int or None): round scores (many ties, to test tie handling).

    Returns:
        CompactDetections: ``category_id`` = LVIS category ids, in image order.
    """
    cat_ids, log_p = _category_log_p(lvis_v1_categories(categories), count_exponent)
    parts = []
    for b in range((num_images + BLOCK - 1) // BLOCK):
        block = _block(seed, split, b, cat_ids, log_p)
        d = _block_detections(block, seed, b, quality, dets_per_image, cat_ids, log_p, score_decimals)
        keep = d.image_id <= block.image_id[min(BLOCK, num_images - b * BLOCK) - 1]
        parts.append(CompactDetections(d.image_id[keep], d.category_id[keep], d.bbox[keep], d.score[keep]))
    return CompactDetections.concatenate(parts)
