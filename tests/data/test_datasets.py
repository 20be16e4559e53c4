"""Dataset registrations: the generated world's splits, the real-LVIS open-vocabulary protocol, custom COCO."""
import json
import os

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES
from detectron2.evaluation import LVISEvaluator
from detectron2.structures import Boxes, BoxMode, Instances
from lvis import LVIS

from gridclip.data.datasets import register_custom_coco_dataset, register_lvis_ov_datasets


def test_base_train_split_has_no_rare_annotation_and_only_base_classes(world_dataset):
    meta = MetadataCatalog.get(world_dataset.train_base)
    base_names = [n for n, f in zip(world_dataset.class_names, world_dataset.frequencies) if f != "r"]
    assert meta.thing_classes == base_names
    assert meta.class_frequencies == [f for f in world_dataset.frequencies if f != "r"]
    assert "r" not in meta.class_frequencies and len(base_names) == world_dataset.num_base_categories

    full = DatasetCatalog.get(world_dataset.train)
    base = DatasetCatalog.get(world_dataset.train_base)
    assert [r["image_id"] for r in full] == [r["image_id"] for r in base]
    full_names = MetadataCatalog.get(world_dataset.train).thing_classes
    for full_record, base_record in zip(full, base):
        expected = [full_names[a["category_id"]] for a in full_record["annotations"]
                    if world_dataset.frequencies[a["category_id"]] != "r"]
        got = [base_names[a["category_id"]] for a in base_record["annotations"]]
        assert got == expected
        assert all(0 <= a["category_id"] < len(base_names) for a in base_record["annotations"])
    num_rare = sum(world_dataset.frequencies[a["category_id"]] == "r" for r in full for a in r["annotations"])
    assert num_rare > 0
    assert sum(len(r["annotations"]) for r in base) == sum(len(r["annotations"]) for r in full) - num_rare
    # metadata keeps the full -> base map
    for full_index, base_index in meta.full_to_base_class_index.items():
        assert full_names[full_index] == base_names[base_index]


def test_full_val_has_all_classes_and_metadata(world_dataset):
    meta = MetadataCatalog.get(world_dataset.val)
    assert meta.thing_classes == world_dataset.class_names
    assert meta.evaluator_type == "lvis"
    assert meta.class_frequencies == world_dataset.frequencies
    assert meta.class_image_counts == world_dataset.paths["train_image_counts"]
    assert os.path.isfile(meta.json_file) and meta.image_root.endswith(os.sep)
    dicts = DatasetCatalog.get(world_dataset.val)
    assert {a["category_id"] for r in dicts for a in r["annotations"]} == set(range(world_dataset.num_categories))
    for r in dicts:
        assert os.path.isfile(r["file_name"])
        assert r["neg_category_ids"] and r["not_exhaustive_category_ids"] == []
        assert all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in r["annotations"])


def test_lvis_api_and_lvis_evaluator_accept_the_generated_json(world_dataset):
    lvis = LVIS(world_dataset.paths["val_json"])
    assert len(lvis.get_cat_ids()) == world_dataset.num_categories

    # Detectron2's LVISEvaluator scores ground truth given as predictions perfectly, for r, c and f.
    evaluator = LVISEvaluator(world_dataset.val, tasks=("bbox",), distributed=False)
    evaluator.reset()
    for record in DatasetCatalog.get(world_dataset.val):
        h, w = record["height"], record["width"]
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"]]
        instances = Instances((h, w))
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        instances.scores = torch.ones(len(boxes))
        instances.pred_classes = torch.tensor([a["category_id"] for a in record["annotations"]], dtype=torch.int64)
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": instances}])
    results = evaluator.evaluate()["bbox"]
    for key in ("AP", "APr", "APc", "APf"):
        assert results[key] == pytest.approx(100.0, abs=1e-6), (key, results)


def _write_fake_lvis_root(root, rare_id, frequent_id):
    """A DETECTRON2_DATASETS folder with a one-image lvis_v1_train.json (real LVIS categories)."""
    os.makedirs(os.path.join(root, "lvis"))
    os.makedirs(os.path.join(root, "coco", "train2017"))
    data = {
        "images": [{"id": 9, "height": 40, "width": 50, "coco_url": "http://images.cocodataset.org/train2017/9.jpg",
                    "neg_category_ids": [], "not_exhaustive_category_ids": []}],
        "annotations": [
            {"id": 1, "image_id": 9, "category_id": rare_id, "bbox": [1, 2, 10, 10], "area": 100,
             "segmentation": [[1, 2, 11, 2, 11, 12, 1, 12]]},
            {"id": 2, "image_id": 9, "category_id": frequent_id, "bbox": [20, 5, 10, 20], "area": 200,
             "segmentation": [[20, 5, 30, 5, 30, 25, 20, 25]]},
        ],
        "categories": [dict(c, image_count=1, instance_count=1) for c in LVIS_CATEGORIES],
    }
    with open(os.path.join(root, "lvis", "lvis_v1_train.json"), "w") as f:
        json.dump(data, f)


@pytest.fixture
def restore_lvis_ov_registrations():
    yield
    register_lvis_ov_datasets()


def test_lvis_ov_datasets_are_registered_lazily_with_base_metadata():
    for name in ("lvis_v1_train_base", "lvis_v1_train_cf", "lvis_v1_val_cf"):
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert len(meta.thing_classes) == 866 and set(meta.class_frequencies) == {"c", "f"}
        assert meta.evaluator_type == "lvis" and len(meta.full_to_base_class_index) == 866
        assert len(meta.full_thing_classes) == 1203
    # builtin LVIS datasets get the frequency groups too (ViLD's 337 rare / 461 common / 405 frequent)
    frequencies = MetadataCatalog.get("lvis_v1_val").class_frequencies
    assert [frequencies.count(g) for g in "rcf"] == [337, 461, 405]


def test_missing_lvis_root_and_json_name_detectron2_datasets(tmp_path, restore_lvis_ov_registrations):
    missing_root = tmp_path / "no_such_root"
    register_lvis_ov_datasets(str(missing_root))  # reads no file: registration succeeds
    with pytest.raises(FileNotFoundError) as error:
        DatasetCatalog.get("lvis_v1_train_base")
    message = str(error.value)
    assert "DETECTRON2_DATASETS" in message
    assert os.path.join(str(missing_root), "lvis", "lvis_v1_train.json") in message

    os.makedirs(tmp_path / "only_lvis" / "lvis")
    register_lvis_ov_datasets(str(tmp_path / "only_lvis"))
    with pytest.raises(FileNotFoundError, match="DETECTRON2_DATASETS.*|lvis_v1_val.json") as error:
        DatasetCatalog.get("lvis_v1_val_cf")
    assert "lvis_v1_val.json" in str(error.value) and "DETECTRON2_DATASETS" in str(error.value)


def test_builtin_datasets_name_detectron2_datasets_when_missing():
    for name in ("lvis_v1_val", "coco_2017_val", "voc_2007_test"):
        meta = MetadataCatalog.get(name)
        expected = meta.get("json_file") or meta.get("dirname")
        if os.path.exists(expected):
            continue  # real data installed on this machine: nothing to check for this one
        with pytest.raises(FileNotFoundError) as error:
            DatasetCatalog.get(name)
        assert "DETECTRON2_DATASETS" in str(error.value) and os.path.abspath(expected) in str(error.value)


def test_lvis_v1_train_base_removes_rare_annotations_and_remaps_ids(tmp_path, restore_lvis_ov_registrations):
    by_id = sorted(LVIS_CATEGORIES, key=lambda c: c["id"])
    rare = next(c for c in by_id if c["frequency"] == "r")
    frequent = next(c for c in reversed(by_id) if c["frequency"] == "f")
    _write_fake_lvis_root(str(tmp_path), rare["id"], frequent["id"])
    register_lvis_ov_datasets(str(tmp_path))
    dicts = DatasetCatalog.get("lvis_v1_train_base")
    assert len(dicts) == 1
    assert dicts[0]["file_name"] == os.path.join(str(tmp_path), "coco", "train2017", "9.jpg")
    (annotation,) = dicts[0]["annotations"]
    meta = MetadataCatalog.get("lvis_v1_train_base")
    assert meta.thing_classes[annotation["category_id"]] == frequent["name"]
    assert annotation["category_id"] == meta.thing_dataset_id_to_contiguous_id[frequent["id"]]
    assert annotation["category_id"] == meta.full_to_base_class_index[frequent["id"] - 1]


def _write_coco(path, categories):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 32, "width": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": categories[0]["id"], "bbox": [2, 2, 10, 10],
                         "area": 100, "iscrowd": 0}],
        "categories": categories,
    }
    with open(path, "w") as f:
        json.dump(data, f)


def test_custom_coco_dataset_registers_and_returns_its_vocabulary(tmp_path):
    json_file = tmp_path / "instances.json"
    _write_coco(json_file, [{"id": 7, "name": "red umbrella"}, {"id": 3, "name": "cat"}])
    names = register_custom_coco_dataset("pytest_custom_coco", str(json_file), str(tmp_path))
    assert names == ["cat", "red umbrella"]  # category-id order
    meta = MetadataCatalog.get("pytest_custom_coco")
    assert meta.thing_classes == names and meta.evaluator_type == "coco"
    (record,) = DatasetCatalog.get("pytest_custom_coco")
    assert record["annotations"][0]["category_id"] == 1  # id 7 -> "red umbrella"
    # registering the same file again is fine; another file under the same name is not
    assert register_custom_coco_dataset("pytest_custom_coco", str(json_file), str(tmp_path)) == names
    other = tmp_path / "other.json"
    _write_coco(other, [{"id": 1, "name": "dog"}])
    with pytest.raises(ValueError, match="already registered"):
        register_custom_coco_dataset("pytest_custom_coco", str(other), str(tmp_path))


def test_custom_coco_dataset_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        register_custom_coco_dataset("pytest_custom_missing", str(tmp_path / "missing.json"), str(tmp_path))
    duplicated = tmp_path / "dup.json"
    _write_coco(duplicated, [{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}])
    with pytest.raises(ValueError, match="duplicates \\['cat'\\]"):
        register_custom_coco_dataset("pytest_custom_dup", str(duplicated), str(tmp_path))
    assert "pytest_custom_dup" not in DatasetCatalog.list()
