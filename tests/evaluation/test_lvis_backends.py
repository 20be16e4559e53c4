"""
GridCLIPLVISEvaluator's "faster" backend (the default) against its "lvis" backend (Detectron2 +
lvis-api): the same results, per-category AP JSON, paper table and results json, in one process,
with a vocabulary subset (the closed-set protocol), and with 2 gloo processes.
"""
import json

import numpy as np
import pytest
import torch

from gridclip.evaluation import GridCLIPLVISEvaluator
from gridclip.evaluation.compact_detections import CompactDetections
from gridclip.evaluation.lvis_evaluation import COMPACT_DETECTIONS_FILE, PAPER_TABLE_FILE, PER_CATEGORY_AP_FILE
from gridclip.evaluation.scale_benchmark import (
    evaluate_distributed, evaluate_in_process, load_detections, outputs_from_detections, prepare_val,
    register_lvis_shaped_val,
)

NUM_IMAGES = 40


@pytest.fixture(scope="module")
def val_files(tmp_path_factory):
    """(json file, detections file) of 40 generated LVIS-v1-shaped val images, 300 detections each."""
    return prepare_val(str(tmp_path_factory.mktemp("lvis_backends")), NUM_IMAGES, seed=2, quality=0.7)


def _run(dataset_name, detections, backend, output_dir=None, vocabulary=None, remap=None):
    evaluator = GridCLIPLVISEvaluator(dataset_name, tasks=("bbox",), distributed=False, output_dir=output_dir,
                                      backend=backend, vocabulary=vocabulary)
    evaluator.reset()
    for inputs, outputs in outputs_from_detections(detections):
        if remap is not None:
            instances = outputs[0]["instances"]
            keep = torch.from_numpy(np.isin(instances.pred_classes.numpy(), list(remap)))
            instances = instances[keep]
            instances.pred_classes = torch.tensor([remap[int(c)] for c in instances.pred_classes], dtype=torch.int64)
            outputs = [{"instances": instances}]
        evaluator.process(inputs, outputs)
    return evaluator.evaluate(), evaluator


def test_faster_backend_equals_lvis_backend_with_every_output_file(val_files, tmp_path):
    json_file, dets_file = val_files
    name = register_lvis_shaped_val("lvis_v1_val_shaped_backend_test", json_file)
    detections = load_detections(dets_file)
    faster, evaluator = _run(name, detections, "faster", str(tmp_path / "faster"))
    lvis, _ = _run(name, detections, "lvis", str(tmp_path / "lvis"))
    assert faster == lvis and 0 < faster["bbox"]["AP"] < 100
    assert evaluator.backend == "faster" and evaluator.last_evaluation.stats["chunks"] >= 1
    for file in (PER_CATEGORY_AP_FILE, PAPER_TABLE_FILE, "lvis_instances_results.json"):
        assert (tmp_path / "faster" / file).read_bytes() == (tmp_path / "lvis" / file).read_bytes(), file
    saved = np.load(tmp_path / "faster" / COMPACT_DETECTIONS_FILE)
    assert len(saved["score"]) == len(detections)


def test_closed_set_vocabulary_equal_on_both_backends(val_files, tmp_path):
    """A c+f vocabulary (the paper's closed-set protocol: rare categories score AP 0) on both backends."""
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

    json_file, dets_file = val_files
    name = register_lvis_shaped_val("lvis_v1_val_shaped_closed_set_test", json_file)
    cats = sorted(LVIS_CATEGORIES, key=lambda c: c["id"])
    base = [i for i, c in enumerate(cats) if c["frequency"] != "r"]
    vocabulary = [cats[i]["name"] for i in base]
    remap = {full: i for i, full in enumerate(base)}  # the model predicts in its own vocabulary's index
    detections = load_detections(dets_file)
    faster, evaluator = _run(name, detections, "faster", str(tmp_path / "f"), vocabulary, remap)
    lvis, _ = _run(name, detections, "lvis", str(tmp_path / "l"), vocabulary, remap)
    assert faster == lvis
    # rare categories are outside the vocabulary: AP 0 where they have GT (-1 x 100 if none has here)
    assert faster["bbox"]["APr"] in (0.0, -100.0) and evaluator.protocol["unpredictable"] == 337
    assert (tmp_path / "f" / PER_CATEGORY_AP_FILE).read_bytes() == (tmp_path / "l" / PER_CATEGORY_AP_FILE).read_bytes()


def test_no_detections_and_unknown_backend(val_files):
    json_file, _ = val_files
    name = register_lvis_shaped_val("lvis_v1_val_shaped_empty_test", json_file)
    empty = CompactDetections.empty()
    results, _ = _run(name, empty, "faster")
    assert results == {}  # no image processed: Detectron2's "Did not receive valid predictions"
    with pytest.raises(ValueError, match="backend"):
        GridCLIPLVISEvaluator(name, backend="pycocotools")


def test_two_gloo_processes_equal_one_process(val_files):
    json_file, dets_file = val_files
    single = evaluate_in_process(json_file, dets_file, "faster")
    ranks = evaluate_distributed(json_file, dets_file, "faster", world_size=2)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["results"] == single["results"]
    assert ranks[1]["results"] is None  # only rank 0 evaluates
    reference = evaluate_in_process(json_file, dets_file, "lvis")
    assert single["results"] == reference["results"]
