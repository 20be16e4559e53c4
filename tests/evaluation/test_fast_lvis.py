"""
The "faster" LVIS backend (arrays + faster-coco-eval in category chunks) against lvis-api, bit for bit,
on generated LVIS-v1-shaped data: negative and not-exhaustive categories, rare categories without
detections, empty images, score ties, the per-image detection limit, the closed-set protocol.
"""
import json

import numpy as np
import pytest
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES
from lvis import LVIS, LVISEval, LVISResults

from gridclip.evaluation.compact_detections import CompactDetections
from gridclip.evaluation.fast_lvis import LVIS_FIRST_TP_PRECISION, evaluate_lvis_boxes
from gridclip.evaluation.lvis_shaped_data import (
    lvis_shaped_blocks, lvis_shaped_detections, lvis_v1_categories, write_lvis_shaped_json,
)

NUM_IMAGES = 60
# 12 rare, 14 common, 14 frequent LVIS v1 categories
CATEGORIES = (
    [c for c in LVIS_CATEGORIES if c["frequency"] == "r"][::30][:12]
    + [c for c in LVIS_CATEGORIES if c["frequency"] == "c"][::30][:14]
    + [c for c in LVIS_CATEGORIES if c["frequency"] == "f"][::25][:14]
)
EMPTY_IMAGE_ID = 10 ** 6


def _add_empty_image(json_file, neg_category):
    """An image without annotations whose negative list holds ``neg_category``; one zero-area ground truth."""
    with open(json_file) as f:
        data = json.load(f)
    data["annotations"][0]["area"] = 0  # lvis-api drops it (area must be > 0)
    data["images"].append({
        "id": EMPTY_IMAGE_ID, "width": 640, "height": 480, "file_name": "empty.jpg",
        "neg_category_ids": [neg_category], "not_exhaustive_category_ids": [],
    })
    with open(json_file, "w") as f:
        json.dump(data, f)


def _empty_image_detections(category):
    """Two false positives of ``category`` in the empty image, and a zero-area one (lvis-api drops it)."""
    return CompactDetections(
        np.array([EMPTY_IMAGE_ID] * 3, np.int64), np.array([category] * 3, np.int64),
        np.array([[10, 10, 50, 40], [200, 100, 30, 30], [5, 5, 20, 0]], np.float32),
        np.array([0.9, 0.2, 0.95], np.float32),
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """(LVIS ground truth, detections by quality) with a rare category that has no detections."""
    json_file = tmp_path_factory.mktemp("lvis_shaped") / "lvis_v1_val_shaped.json"
    write_lvis_shaped_json(json_file, NUM_IMAGES, seed=5, categories=CATEGORIES, count_exponent=0.3)
    gt_counts = {}
    for block in lvis_shaped_blocks(NUM_IMAGES, seed=5, categories=CATEGORIES, count_exponent=0.3):
        for c in block.ann_category.tolist():
            gt_counts[c] = gt_counts.get(c, 0) + 1
    rare_with_gt = [c["id"] for c in CATEGORIES if c["frequency"] == "r" and gt_counts.get(c["id"])]
    assert rare_with_gt, "the generated set must hold rare categories"
    undetected = rare_with_gt[0]
    detections = {}
    for quality, decimals in ((0.3, None), (0.8, 2), (1.0, 1)):
        d = lvis_shaped_detections(
            NUM_IMAGES, seed=5, quality=quality, categories=CATEGORIES, score_decimals=decimals, count_exponent=0.3
        )
        keep = d.category_id != undetected
        detections[quality] = CompactDetections(d.image_id[keep], d.category_id[keep], d.bbox[keep], d.score[keep])
    negative = CATEGORIES[-1]["id"]
    _add_empty_image(json_file, negative)
    detections = {q: CompactDetections.concatenate([d, _empty_image_detections(negative)]) for q, d in detections.items()}
    return LVIS(str(json_file)), detections, undetected


def _lvis_api(lvis_gt, detections, max_dets=300, cat_ids=None):
    results = LVISResults(lvis_gt, detections.to_coco_json(), max_dets=max_dets)
    lvis_eval = LVISEval(lvis_gt, results, "bbox")
    if cat_ids is not None:
        lvis_eval.params.cat_ids = cat_ids
    lvis_eval.run()
    return lvis_eval


def _assert_identical(theirs, ours):
    assert np.array_equal(theirs.eval["precision"], ours.eval["precision"])
    assert np.array_equal(theirs.eval["recall"], ours.eval["recall"])
    assert list(theirs.params.cat_ids) == list(ours.params.cat_ids)
    assert dict(theirs.results) == dict(ours.results)  # exact floats


@pytest.mark.parametrize("quality", [0.3, 0.8, 1.0])
def test_identical_to_lvis_api(generated, quality):
    lvis_gt, detections, undetected = generated
    theirs = _lvis_api(lvis_gt, detections[quality])
    # small chunks: many category chunks, the same numbers
    ours = evaluate_lvis_boxes(lvis_gt, detections[quality], chunk_boxes=500, chunk_categories=7, chunk_pairs=300)
    _assert_identical(theirs, ours)
    assert ours.stats["chunks"] > 3
    k = list(ours.params.cat_ids).index(undetected)
    area_all = 0
    assert (ours.eval["precision"][:, :, k, area_all] == 0).all()  # a rare category with GT, no detections
    assert 0 < ours.results["AP"] < 1 and ours.results["APr"] >= 0


def test_first_true_positive_precision_is_lvis_apis(generated):
    """lvis-api's tp / (tp + fp + eps) gives 1 - 2^-52 after a lone first true positive; so must we."""
    lvis_gt, detections, _ = generated
    ours = evaluate_lvis_boxes(lvis_gt, detections[0.3])
    assert (ours.eval["precision"] == LVIS_FIRST_TP_PRECISION).any()
    assert (ours.eval["precision"] == 1.0).any()


def test_per_image_limit_with_ties_identical(generated):
    lvis_gt, detections, _ = generated
    for max_dets in (5, 40):
        _assert_identical(_lvis_api(lvis_gt, detections[1.0], max_dets), evaluate_lvis_boxes(lvis_gt, detections[1.0], max_dets))


def test_closed_set_category_subset_identical(generated):
    lvis_gt, detections, _ = generated
    common_frequent = sorted(c["id"] for c in CATEGORIES if c["frequency"] != "r")
    theirs = _lvis_api(lvis_gt, detections[0.8], cat_ids=common_frequent)
    ours = evaluate_lvis_boxes(lvis_gt, detections[0.8], cat_ids=common_frequent, chunk_categories=5)
    _assert_identical(theirs, ours)
    assert ours.results["APr"] == -1


def test_detections_of_unknown_images_are_an_error(generated):
    lvis_gt, _, _ = generated
    bad = CompactDetections(np.array([123456789]), np.array([CATEGORIES[0]["id"]]), np.ones((1, 4), np.float32),
                            np.ones(1, np.float32))
    with pytest.raises(ValueError, match="do not correspond"):
        evaluate_lvis_boxes(lvis_gt, bad)


def test_generator_is_deterministic_and_lvis_shaped(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    info = write_lvis_shaped_json(a, 30, seed=1)
    write_lvis_shaped_json(b, 30, seed=1)
    assert a.read_bytes() == b.read_bytes()
    data = json.loads(a.read_text())
    assert info["annotations"] == len(data["annotations"]) > 30 * 5
    cats = data["categories"]
    assert len(cats) == 1203 and [sum(c["frequency"] == g for c in cats) for g in "rcf"] == [337, 461, 405]
    assert sum(c["image_count"] for c in cats) == 360952  # LVIS v1 train's image-category pairs
    assert all("neg_category_ids" in i and "not_exhaustive_category_ids" in i for i in data["images"])
    # the first images do not depend on the total, detections neither
    d30 = lvis_shaped_detections(30, seed=1)
    d20 = lvis_shaped_detections(20, seed=1)
    assert len(d30) == 30 * 300
    first20 = d30.image_id <= 20
    assert np.array_equal(d30.bbox[first20], d20.bbox) and np.array_equal(d30.score[first20], d20.score)
    assert lvis_v1_categories()[0]["image_count"] == 64


def test_compact_json_is_detectron2s_json(tmp_path):
    import io

    import torch
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json
    from detectron2.structures import Boxes, Instances

    instances = Instances((480, 640))
    instances.pred_boxes = Boxes(torch.tensor([[1.5, 2.25, 30.1, 40.7], [0.0, 0.0, 639.9, 479.3]]))
    instances.scores = torch.tensor([0.912345, 1e-7])
    instances.pred_classes = torch.tensor([3, 0])
    compact = CompactDetections.from_instances(instances, 42)
    f = io.StringIO()
    compact.write_json(f)
    assert f.getvalue() == json.dumps(instances_to_coco_json(instances, 42))
