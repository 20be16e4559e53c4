"""GridCLIPLVISEvaluator on a tiny LVIS-format json: per-category AP JSON, paper table, unchanged results."""
import json
import math

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import LVISEvaluator
from detectron2.structures import Boxes, Instances

from gridclip.evaluation import GridCLIPLVISEvaluator

# id, name, frequency, image_count (training images)
CATEGORIES = [(1, "aardvark", "r", 3), (2, "bagpipe", "c", 40), (3, "cat", "f", 900), (4, "dog", "f", 700)]
# image id → [(category id, xywh box)]
GROUND_TRUTH = {
    1: [(1, [4, 4, 20, 20]), (3, [30, 30, 24, 20])],
    2: [(2, [10, 8, 30, 30]), (3, [2, 40, 16, 16])],
    3: [(1, [20, 20, 40, 36])],
}


def _write_lvis_json(path):
    images, annotations = [], []
    for image_id, objects in GROUND_TRUTH.items():
        images.append({
            "id": image_id, "height": 64, "width": 64, "file_name": f"{image_id:012d}.jpg",
            "coco_url": f"http://images.cocodataset.org/val2017/{image_id:012d}.jpg",
            "neg_category_ids": [4] if image_id == 1 else [], "not_exhaustive_category_ids": [],
        })
        for category_id, (x, y, w, h) in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                "bbox": [x, y, w, h], "area": w * h,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            })
    categories = [
        {"id": i, "name": n, "frequency": f, "image_count": c, "instance_count": c, "synonyms": [n], "def": n}
        for i, n, f, c in CATEGORIES
    ]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


@pytest.fixture
def dataset_name(tmp_path, request):
    json_file = tmp_path / "lvis_v1_tiny_val.json"
    _write_lvis_json(json_file)
    name = f"gridclip_test_lvis_{request.node.name}"
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(
        json_file=str(json_file), thing_classes=[n for _, n, _, _ in CATEGORIES], evaluator_type="lvis"
    )
    yield name
    MetadataCatalog.remove(name)


def _outputs(skip_category=None, extra=()):
    """Perfect detections of every GT object except those of ``skip_category``, plus ``extra``."""
    inputs, outputs = [], []
    for image_id, objects in GROUND_TRUTH.items():
        dets = [(c, box, 0.9) for c, box in objects if c != skip_category]
        dets += [(c, box, s) for i, c, box, s in extra if i == image_id]
        instances = Instances((64, 64))
        instances.pred_boxes = Boxes(torch.tensor([[x, y, x + w, y + h] for _, (x, y, w, h), _ in dets], dtype=torch.float32).reshape(-1, 4))
        instances.scores = torch.tensor([s for *_, s in dets], dtype=torch.float32)
        instances.pred_classes = torch.tensor([c - 1 for c, *_ in dets], dtype=torch.int64)  # contiguous index
        inputs.append({"image_id": image_id})
        outputs.append({"instances": instances})
    return inputs, outputs


def _evaluate(evaluator, inputs, outputs):
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()


def test_per_category_ap_json_and_table_from_a_real_lvis_evaluation(tmp_path, dataset_name):
    output_dir = tmp_path / "eval"
    inputs, outputs = _outputs(skip_category=2)  # bagpipe is never detected
    results = _evaluate(GridCLIPLVISEvaluator(dataset_name, distributed=False, output_dir=str(output_dir)), inputs, outputs)

    per_category = json.loads((output_dir / "per_category_ap.json").read_text())
    assert [c["id"] for c in per_category] == [1, 2, 3, 4]
    by_name = {c["name"]: c for c in per_category}
    assert by_name["aardvark"]["ap"] == pytest.approx(100.0)
    assert by_name["cat"]["ap"] == pytest.approx(100.0)
    assert by_name["bagpipe"]["ap"] == 0.0  # has GT, missed
    assert by_name["dog"]["ap"] is None  # no GT in the evaluated set
    assert [(c["frequency"], c["image_count"]) for c in per_category] == [(f, n) for _, _, f, n in CATEGORIES]

    # Results format is Detectron2's, and the groups agree with the per-category numbers.
    assert list(results) == ["bbox"]
    assert set(results["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"}
    assert results["bbox"]["APr"] == pytest.approx(100.0)
    assert results["bbox"]["APc"] == pytest.approx(0.0)
    assert results["bbox"]["APf"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] == pytest.approx(200.0 / 3, abs=1e-4)

    table = (output_dir / "paper_table.md").read_text()
    assert "| AP | AP50 | AP75 | APs | APm | APl | AP_r | AP_c | AP_f |" in table
    assert "| 66.7 | 66.7 | 66.7 |" in table and "| 100.0 | 0.0 | 100.0 |" in table
    assert (output_dir / "lvis_instances_results.json").exists()


def test_results_identical_to_detectron2_lvis_evaluator(dataset_name):
    # Some false positives so that the numbers are not all 0/100: a wrong-box "cat" in image 2
    # with a high score, and a "dog" in image 1 where dog is a verified negative.
    extra = [(2, 3, [40, 0, 20, 20], 0.95), (1, 4, [4, 4, 20, 20], 0.8), (3, 1, [0, 0, 10, 10], 0.99)]
    inputs, outputs = _outputs(extra=extra)
    ours = _evaluate(GridCLIPLVISEvaluator(dataset_name, distributed=False), inputs, outputs)
    inputs, outputs = _outputs(extra=extra)
    theirs = _evaluate(LVISEvaluator(dataset_name, distributed=False, max_dets_per_image=300), inputs, outputs)
    assert ours == theirs
    assert 0 < ours["bbox"]["AP"] < 100


def test_no_predictions_gives_nan_metrics_and_zero_per_category_ap(tmp_path, dataset_name):
    evaluator = GridCLIPLVISEvaluator(dataset_name, distributed=False, output_dir=str(tmp_path))
    inputs = [{"image_id": i} for i in GROUND_TRUTH]
    empty = Instances((64, 64), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0), pred_classes=torch.zeros(0, dtype=torch.int64))
    results = _evaluate(evaluator, inputs, [{"instances": empty} for _ in inputs])
    assert all(math.isnan(v) for v in results["bbox"].values())
    per_category = json.loads((tmp_path / "per_category_ap.json").read_text())
    assert [c["ap"] for c in per_category] == [0.0, 0.0, 0.0, None]
    assert "| - | - |" in (tmp_path / "paper_table.md").read_text()


def test_closed_set_dataset_scores_only_its_own_categories(tmp_path, dataset_name):
    """A dataset over common+frequent categories (like lvis_v1_val_cf) must not score the json's rare ones."""
    common_frequent = {2: 0, 3: 1, 4: 2}
    MetadataCatalog.get(dataset_name).set(thing_dataset_id_to_contiguous_id=common_frequent)
    inputs, outputs = [], []
    for inp, out in zip(*_outputs(skip_category=1)):
        instances = out["instances"]
        # contiguous index of the closed-set vocabulary: LVIS id 2 → 0, 3 → 1, 4 → 2
        instances.pred_classes = instances.pred_classes - 1
        inputs.append(inp)
        outputs.append(out)
    evaluator = GridCLIPLVISEvaluator(dataset_name, tasks=("bbox",), distributed=False, output_dir=str(tmp_path))
    results = _evaluate(evaluator, inputs, outputs)["bbox"]
    assert results["AP"] == pytest.approx(100.0)
    # Without the restriction the rare category (GT, no detections) would pull AP to 75 and APr to 0;
    # with it no rare category is evaluated: LVIS reports -1 (x100) for an empty group.
    assert results["APr"] == pytest.approx(-100.0)
    scored = json.loads((tmp_path / "per_category_ap.json").read_text())
    assert [c["id"] for c in scored] == [2, 3, 4]
