"""
build_evaluator uses Detectron2's compiled ops where the installed Detectron2 has them: the fast COCO
evaluator with a compiled build (same numbers as pycocotools), pycocotools with the v0.6 placeholder.
"""
import json

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances

from gridclip import add_gridclip_config
from gridclip.compat import detectron2_compiled_ops
from gridclip.engine.trainer import build_evaluator

COMPILED, WHY = detectron2_compiled_ops()


@pytest.fixture(scope="module")
def coco_dataset(tmp_path_factory):
    """3 images, 2 categories, a few boxes each; registered as a COCO dataset."""
    root = tmp_path_factory.mktemp("coco")
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 120} for i in (1, 2, 3)]
    boxes = {1: [[10, 10, 30, 40, 1], [50, 20, 40, 30, 2]], 2: [[5, 5, 60, 60, 1]], 3: [[20, 30, 20, 20, 2], [70, 40, 30, 50, 1]]}
    annotations = [
        {"id": 10 * i + k, "image_id": i, "category_id": c, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
        for i, rows in boxes.items() for k, (x, y, w, h, c) in enumerate(rows)
    ]
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    json_file = root / "instances.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    name = "pytest_build_evaluator_coco"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(json_file), str(root))
    DatasetCatalog.get(name)  # loading fills the metadata's category-id mapping the evaluator uses
    assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {1: 0, 2: 1}
    return name, boxes


def _predictions(boxes):
    """Per image: every ground-truth box slightly shifted (score 0.9) plus one false positive (0.3)."""
    inputs, outputs = [], []
    for image_id, rows in boxes.items():
        xyxy = [[x + 2, y + 1, x + w + 1, y + h + 2] for x, y, w, h, _ in rows] + [[0, 0, 15, 15]]
        instances = Instances((100, 120))
        instances.pred_boxes = Boxes(torch.tensor(xyxy, dtype=torch.float32))
        instances.scores = torch.tensor([0.9] * len(rows) + [0.3])
        instances.pred_classes = torch.tensor([c - 1 for *_, c in rows] + [0])
        inputs.append({"image_id": image_id})
        outputs.append({"instances": instances})
    return inputs, outputs


def test_coco_evaluator_uses_the_fast_implementation_exactly_when_compiled(coco_dataset, tmp_path):
    cfg = get_cfg()
    add_gridclip_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    evaluator = build_evaluator(cfg, coco_dataset[0])
    assert isinstance(evaluator, COCOEvaluator)
    assert evaluator._use_fast_impl is COMPILED, WHY


@pytest.mark.skipif(not COMPILED, reason=f"needs a compiled Detectron2: {WHY}")
def test_fast_coco_evaluator_gives_the_same_numbers_as_pycocotools(coco_dataset, tmp_path):
    name, boxes = coco_dataset
    results = {}
    for fast in (True, False):
        evaluator = COCOEvaluator(name, tasks=("bbox",), output_dir=str(tmp_path / str(fast)), use_fast_impl=fast)
        evaluator.reset()
        evaluator.process(*_predictions(boxes))
        results[fast] = evaluator.evaluate()["bbox"]
    assert 50 < results[False]["AP"] < 100  # a real, imperfect score
    for key, value in results[False].items():
        assert results[True][key] == pytest.approx(value, abs=1e-6, nan_ok=True), key  # APl: no large boxes
