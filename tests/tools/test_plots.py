"""Fig. 3 / Fig. 4 tools: moving average, recall@k, and PNGs written from real evaluation / analysis outputs."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances
from PIL import Image

from gridclip.evaluation import GridCLIPLVISEvaluator
from gridclip.evaluation.plots import ap_by_frequency_curve, moving_average, plot_ap_by_frequency
from gridclip.evaluation.recall_analysis import recall_at_k, summarize_recall
from gridclip.modeling.clip_configs import TINY_TEACHER_CLIP

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUM_CATEGORIES, NUM_IMAGES = 30, 12


def _load_tool(repo_root, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(repo_root, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_png(path, min_bytes=5000):
    data = open(path, "rb").read()
    assert data[:8] == PNG_SIGNATURE and len(data) > min_bytes


def _write_lvis_dataset(root, with_images=False):
    """A tiny long-tailed LVIS-format val set: 30 categories, image_count 1..~900, 2-4 objects/image."""
    rng = np.random.default_rng(0)
    categories = []
    for i in range(1, NUM_CATEGORIES + 1):
        image_count = int(round(1.27 ** i))
        frequency = "r" if image_count < 10 else ("c" if image_count < 100 else "f")
        categories.append({"id": i, "name": f"thing{i}", "frequency": frequency, "image_count": image_count,
                           "instance_count": image_count, "synonyms": [f"thing{i}"], "def": "a thing"})
    images, annotations = [], []
    os.makedirs(os.path.join(root, "images", "val"), exist_ok=True)
    for image_id in range(1, NUM_IMAGES + 1):
        file_name = f"{image_id:012d}.jpg"
        images.append({"id": image_id, "height": 64, "width": 64, "file_name": file_name,
                       "coco_url": f"images/val/{file_name}", "neg_category_ids": [],
                       "not_exhaustive_category_ids": []})
        for category_id in rng.choice(NUM_CATEGORIES, size=int(rng.integers(2, 5)), replace=False) + 1:
            x, y = (int(v) for v in rng.integers(0, 32, 2))
            w, h = (int(v) for v in rng.integers(12, 32, 2))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(category_id),
                                "bbox": [x, y, w, h], "area": w * h,
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
        if with_images:
            pixels = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, "images", "val", file_name))
    json_file = os.path.join(root, "lvis_v1_val.json")
    with open(json_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return json_file, annotations


def _evaluate(json_file, annotations, output_dir, quality, name):
    """A real GridCLIPLVISEvaluator run; each GT box is detected with probability `quality`."""
    MetadataCatalog.get(name).set(json_file=json_file, thing_classes=[f"thing{i}" for i in range(1, NUM_CATEGORIES + 1)])
    rng = np.random.default_rng(1)
    evaluator = GridCLIPLVISEvaluator(name, distributed=False, output_dir=str(output_dir))
    evaluator.reset()
    for image_id in range(1, NUM_IMAGES + 1):
        objects = [a for a in annotations if a["image_id"] == image_id and rng.random() < quality]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in objects)]
        instances = Instances((64, 64), pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
                              scores=torch.full((len(objects),), 0.9),
                              pred_classes=torch.tensor([a["category_id"] - 1 for a in objects], dtype=torch.int64))
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    evaluator.evaluate()
    MetadataCatalog.remove(name)
    return os.path.join(output_dir, "per_category_ap.json")


def test_moving_average_matches_the_window_definition():
    values = np.arange(6, dtype=float)
    np.testing.assert_allclose(moving_average(values, (-1, 1)), [0.5, 1, 2, 3, 4, 4.5])
    # Window [-10, 10] over fewer than 21 values: every output is the mean of everything in reach.
    np.testing.assert_allclose(moving_average(values, (-10, 10)), np.full(6, 2.5))
    with_nan = moving_average([1.0, math.nan, 3.0, math.nan], (-1, 0))
    np.testing.assert_allclose(with_nan, [1.0, 1.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="window must contain 0"):
        moving_average(values, (1, 3))


def test_curve_is_sorted_by_training_frequency_and_skips_categories_without_ap():
    records = [{"id": 1, "ap": 10.0, "image_count": 50, "frequency": "c"},
               {"id": 2, "ap": None, "image_count": 1, "frequency": "r"},
               {"id": 3, "ap": 30.0, "image_count": 2, "frequency": "r"},
               {"id": 4, "ap": 50.0, "image_count": 500, "frequency": "f"}]
    curve = ap_by_frequency_curve(records, window=(0, 0))
    assert curve["ids"] == [3, 1, 4] and curve["frequency"] == ["r", "c", "f"]
    np.testing.assert_allclose(curve["smoothed"], [30.0, 10.0, 50.0])
    with pytest.raises(ValueError, match="image_count"):
        ap_by_frequency_curve([{"id": 1, "ap": 1.0, "image_count": None}])


def test_ap_by_frequency_pngs_from_real_evaluation_outputs(tmp_path, repo_root):
    json_file, annotations = _write_lvis_dataset(str(tmp_path / "data"))
    good = _evaluate(json_file, annotations, tmp_path / "good", quality=0.9, name="gridclip_plot_test_good")
    weak = _evaluate(json_file, annotations, tmp_path / "weak", quality=0.4, name="gridclip_plot_test_weak")
    assert len(json.load(open(good))) == NUM_CATEGORIES

    # Library, two runs with labels.
    png = plot_ap_by_frequency([good, weak], str(tmp_path / "fig3.png"), labels=["good", "weak"], title="t")
    _assert_png(png)

    # Command line, folders as inputs.
    out = tmp_path / "cli" / "fig3.png"
    completed = subprocess.run(
        [sys.executable, os.path.join(repo_root, "tools", "plot_ap_by_frequency.py"), str(tmp_path / "good"),
         str(tmp_path / "weak"), "--output", str(out), "--window", "-3", "3"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    _assert_png(out)

    tool = _load_tool(repo_root, "plot_ap_by_frequency")
    assert tool.main([str(tmp_path / "missing"), "--output", str(tmp_path / "x.png")]) == 1
    assert not (tmp_path / "x.png").exists()


def test_recall_at_k_known_answer():
    text = torch.eye(4)
    images = torch.tensor([[0.9, 0.5, 0.1, 0.0],   # ranking 0, 1, 2, 3
                           [0.0, 0.0, 1.0, 0.2],   # ranking 2, 3, 0, 1
                           [1.0, 0.0, 0.0, 0.0]])
    gt = [[1, 3], [2], []]
    out = recall_at_k(images, text, gt, ks=(1, 2, 300))
    assert out["k_effective"] == [1, 2, 4]  # 300 capped at 4 categories
    assert out["hits"][1].tolist() == [0, 1, 0] and out["hits"][2].tolist() == [1, 1, 0]
    assert out["hits"][300].tolist() == [2, 1, 0]
    np.testing.assert_allclose(out["recall"][2][:2], [0.5, 1.0])
    assert math.isnan(out["recall"][2][2])

    summary = summarize_recall(out)
    assert summary["mean_recall"] == {"recall@1": 0.5, "recall@2": 0.75, "recall@300": 1.0}
    assert summary["categories_per_image"] == {"num_categories": [0, 1, 2], "num_images": [1, 1, 1],
                                               "percent": pytest.approx([100 / 3] * 3)}
    assert summary["recall_by_num_categories"]["recall@1"] == [1.0, 0.0]
    with pytest.raises(ValueError, match="same CLIP model"):
        recall_at_k(images, torch.eye(5), gt)


def test_analyze_clip_recall_tool_writes_json_and_png(tmp_path, repo_root, embeddings_cache):
    root = tmp_path / "data"
    json_file, annotations = _write_lvis_dataset(str(root), with_images=True)
    tool = _load_tool(repo_root, "analyze_clip_recall")
    out = tmp_path / "recall"
    assert tool.main(["--json", json_file, "--image-root", str(root / "images"), "--clip-model", TINY_TEACHER_CLIP,
                      "--pretrained", "", "--templates", "single", "--ks", "1", "10", "100", "--cpu",
                      "--output", str(out)]) == 0

    result = json.load(open(out / f"clip_recall_{TINY_TEACHER_CLIP}.json"))
    assert result["num_images"] == NUM_IMAGES and result["num_classes"] == NUM_CATEGORIES
    assert result["k_effective"] == [1, 10, 30]
    per_image_gt = {i: len({a["category_id"] for a in annotations if a["image_id"] == i}) for i in range(1, NUM_IMAGES + 1)}
    assert {r["image_id"]: r["num_categories"] for r in result["per_image"]} == per_image_gt
    assert result["mean_recall"]["recall@100"] == 1.0  # k capped at 30 = every category
    assert all(0.0 <= r["recall@10"] <= 1.0 for r in result["per_image"])
    assert sum(result["categories_per_image"]["num_images"]) == NUM_IMAGES
    _assert_png(out / "clip_recall.png")
    # The text embeddings were built through the (private) cache.
    assert any(embeddings_cache.rglob("*.safetensors"))
