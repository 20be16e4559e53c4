"""Naming accuracy (gridclip.evaluation.naming) on hand-made images whose answer is known."""
import json

import pytest

from gridclip.evaluation.naming import format_naming_accuracy, naming_accuracy, naming_accuracy_of_lvis_results

NOVEL = {7}


def _run(gt, dets, threshold=0.3, **kwargs):
    """gt: per image [(box, class)]; dets: per image [(box, score, class)]."""
    return naming_accuracy(
        [[b for b, _ in image] for image in gt], [[c for _, c in image] for image in gt],
        [[b for b, _, _ in image] for image in dets], [[s for _, s, _ in image] for image in dets],
        [[c for _, _, c in image] for image in dets],
        score_threshold=threshold, novel_classes=NOVEL, **kwargs)


def test_right_name_wrong_name_and_missed_objects_counted_per_group():
    gt = [[([0, 0, 10, 10], 1), ([20, 20, 30, 30], 7)],  # base named right, novel named wrong
          [([0, 0, 10, 10], 7), ([50, 50, 60, 60], 2)]]  # novel named right, base missed
    dets = [[([0, 0, 10, 10], 0.9, 1), ([20, 20, 30, 30], 0.8, 1)],
            [([1, 1, 10, 10], 0.5, 7)]]
    r = _run(gt, dets)
    assert r["base"] == {"accuracy": 0.5, "named": 1, "localised": 1, "objects": 2}
    assert r["novel"] == {"accuracy": 0.5, "named": 1, "localised": 2, "objects": 2}
    assert r["all"]["accuracy"] == 0.5 and r["all"]["objects"] == 4
    assert r["iou_min"] == 0.5 and r["score_threshold"] == 0.3


def test_only_detections_above_the_visualisation_threshold_count():
    gt = [[([0, 0, 10, 10], 1)]]
    # the right name below the threshold, a wrong one above it: the picture shows the wrong name
    dets = [[([0, 0, 10, 10], 0.2, 1), ([0, 0, 10, 10], 0.4, 3)]]
    assert _run(gt, dets, threshold=0.3)["all"]["named"] == 0
    assert _run(gt, dets, threshold=0.1)["all"]["named"] == 0  # both shown: equal IoU -> the higher score (wrong)
    assert _run(gt, dets, threshold=0.5)["all"]["localised"] == 0  # nothing shown


def test_the_best_overlapping_detection_decides_not_the_best_scoring():
    gt = [[([0, 0, 10, 10], 1)]]
    dets = [[([0, 0, 10, 10], 0.4, 1), ([0, 0, 10, 14], 0.95, 2)]]  # exact box right; looser, higher-scored wrong
    assert _run(gt, dets)["all"]["accuracy"] == 1.0


def test_a_detection_below_iou_min_is_not_on_the_object():
    gt = [[([0, 0, 10, 10], 1)]]
    dets = [[([5, 0, 15, 10], 0.9, 1)]]  # IoU 1/3
    assert _run(gt, dets)["all"] == {"accuracy": 0.0, "named": 0, "localised": 0, "objects": 1}
    assert _run(gt, dets, iou_min=0.3)["all"]["accuracy"] == 1.0


def test_empty_groups_report_none_and_bad_inputs_are_refused():
    r = _run([[([0, 0, 10, 10], 1)]], [[]])
    assert r["novel"]["accuracy"] is None and r["base"]["accuracy"] == 0.0
    assert "novel - (0/0)" in format_naming_accuracy(r)
    with pytest.raises(ValueError, match="same images"):
        naming_accuracy([[]], [[]], [], [], [], score_threshold=0.3)
    with pytest.raises(ValueError, match="iou_min"):
        _run([[]], [[]], iou_min=0.0)


def test_lvis_files_xywh_boxes_and_rare_categories_are_novel(tmp_path):
    gt = {"images": [{"id": 1}, {"id": 2}],
          "categories": [{"id": 1, "frequency": "f"}, {"id": 2, "frequency": "r"}],
          "annotations": [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                          {"image_id": 2, "category_id": 2, "bbox": [0, 0, 30, 10]},
                          {"image_id": 2, "category_id": 1, "bbox": [5, 5, 0, 0]}]}  # zero area: left out
    results = [{"image_id": 1, "category_id": 1, "bbox": [11, 10, 20, 20], "score": 0.7},
               {"image_id": 2, "category_id": 1, "bbox": [0, 0, 30, 10], "score": 0.9}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    r = naming_accuracy_of_lvis_results(str(tmp_path / "gt.json"), str(tmp_path / "results.json"), score_threshold=0.3)
    assert r["base"] == {"accuracy": 1.0, "named": 1, "localised": 1, "objects": 1}
    assert r["novel"] == {"accuracy": 0.0, "named": 0, "localised": 1, "objects": 1}


def test_from_a_runs_evaluation_folder_and_the_registered_dataset(tmp_path):
    from detectron2.data import MetadataCatalog

    from gridclip.evaluation.naming import naming_accuracy_of_evaluation, naming_accuracy_values

    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "frequency": "c"}, {"id": 2, "frequency": "r"}],
          "annotations": [{"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10]}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    folder = tmp_path / "run" / "inference" / "naming_test_val"
    folder.mkdir(parents=True)
    (folder / "lvis_instances_results.json").write_text(json.dumps(
        [{"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.5}]))
    MetadataCatalog.get("naming_test_val").set(json_file=str(tmp_path / "gt.json"))
    r = naming_accuracy_of_evaluation(str(tmp_path / "run"), "naming_test_val", score_threshold=0.3)
    assert naming_accuracy_values(r) == {"novel": 1.0, "all": 1.0}  # no base object: left out
    with pytest.raises(FileNotFoundError, match="was the run evaluated"):
        naming_accuracy_of_evaluation(str(tmp_path / "other"), "naming_test_val", score_threshold=0.3)


def test_embedded_default_stores_the_random_init_runs_naming_accuracy_keyed_by_threshold(tmp_path, embeddings_cache):
    """The random-init run's cache holds its naming accuracy, under a key that changes with the threshold."""
    import os
    import sys

    from detectron2.data import MetadataCatalog

    from gridclip.world import embedded_default as runner

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    config = os.path.join(repo, "configs", "GridCLIP-Tiny-Synthetic.yaml")
    data_json = tmp_path / "train.json"
    data_json.write_text(json.dumps({"info": {"generator": {"seed": 0}}}))
    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "frequency": "f"}, {"id": 2, "frequency": "r"}],
          "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                          {"image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10]}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    MetadataCatalog.get("naming_fake_world_val").set(json_file=str(tmp_path / "gt.json"))

    run = runner.RandomInitRun(config, [], str(tmp_path / "out"), str(data_json), naming_threshold=0.3)
    assert not run.cached
    inference = tmp_path / "out" / "random_init" / "inference" / "naming_fake_world_val"
    inference.mkdir(parents=True)
    (inference / "lvis_instances_results.json").write_text(json.dumps(
        [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
         {"image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 10], "score": 0.8}]))  # novel object misnamed
    (tmp_path / "out" / "random_init" / "random_init_metrics.json").write_text(json.dumps(
        {"metrics": {"AP": 3.2, "APr": 0.5}, "seconds": 1.0, "test_dataset": "naming_fake_world_val"}))
    run.cmd = [sys.executable, "-c", "pass"]  # stands in for the training child (its outputs are written above)
    result = run.wait()
    assert result == {"AP": 3.2, "APr": 0.5, "naming_base": 1.0, "naming_novel": 0.0, "naming_all": 0.5}

    again = runner.RandomInitRun(config, [], str(tmp_path / "out2"), str(data_json), naming_threshold=0.3)
    assert again.cached and again.wait() == result
    assert runner.random_init_cache_path(config, [], str(data_json), 0.5) != again.cache_path
    assert "| named base % | named novel % |" in runner.side_by_side(
        {"AP": 48.0}, {"AP": 3.2}, {"pretrained": {"base": 0.8, "novel": 0.5}, "random_init": {"base": 0.1}})


def test_score_rule_names_an_object_by_its_most_confident_label():
    gt = [[([0, 0, 10, 10], 1)]]
    # class-wise NMS left two names on the object: the right one scored higher, the wrong one fits the box better
    dets = [[([0, 0, 10, 11], 0.9, 1), ([0, 0, 10, 10], 0.4, 2), ([20, 20, 30, 30], 0.99, 3)]]
    assert _run(gt, dets)["all"]["named"] == 0  # the issue's rule: the best-overlapping detection
    r = _run(gt, dets, match="score")
    assert r["all"]["named"] == 1 and r["match"] == "score"  # the far-away 0.99 detection is not on the object
    assert _run(gt, [[([5, 0, 15, 10], 0.9, 1)]], match="score")["all"]["localised"] == 0  # IoU 1/3 < 0.5
    with pytest.raises(ValueError, match="match"):
        _run(gt, dets, match="area")


def test_one_name_per_object_keeps_the_most_confident_name_of_overlapping_boxes():
    # Class-wise NMS leaves two names on one object: a wrong one whose box fits slightly better (0.4) and
    # the right one (0.9). A picture drawn with one name per object shows only the right one.
    gt = [[([0, 0, 10, 10], 1)], [([0, 0, 10, 10], 2)]]
    dets = [[([0, 0, 10, 10], 0.4, 3), ([0, 0, 10, 9.5], 0.9, 1)],
            [([0, 0, 10, 10], 0.9, 3), ([0, 0, 10, 9.5], 0.4, 2), ([20, 20, 30, 30], 0.8, 2)]]
    raw = _run(gt, dets)
    one = _run(gt, dets, one_name_per_object_iou=0.5)
    assert raw["base"]["named"] == 0  # best-overlapping: the wrong name both times
    assert one["base"]["named"] == 1 and one["base"]["localised"] == 2  # the right name wins where it scores higher
    assert one["one_name_per_object_iou"] == 0.5 and raw["one_name_per_object_iou"] is None
    # a separate object keeps its own box (IoU 0 with the others): only overlapping names compete
    from gridclip.evaluation.naming import one_name_per_object

    kept = one_name_per_object([[0, 0, 10, 10], [0, 0, 10, 9.5], [20, 20, 30, 30]], [0.9, 0.4, 0.8], 0.5)
    assert kept.tolist() == [0, 2]
    with pytest.raises(ValueError, match="IoU must be in"):
        one_name_per_object([[0, 0, 1, 1]], [0.5], 0.0)
