"""The world's large evaluation split (the ablations' test data): deterministic, independent of train/val,
registered beside the world, regenerated only for another world or size."""
import json
import os

import pytest

from gridclip.world import generate_world_dataset, register_world_datasets
from gridclip.world.evaluation_split import ensure_eval_split, eval_split_paths, generate_eval_split

from ..conftest import SMALL_WORLD_KWARGS


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture()
def world(tmp_path):
    return generate_world_dataset(str(tmp_path / "world"), **SMALL_WORLD_KWARGS)


def test_the_split_is_val_shaped_deterministic_and_leaves_the_world_alone(world, tmp_path):
    before = {k: _read(world[k]) for k in ("train_json", "val_json")}
    split = generate_eval_split(world["root"], num_images=40)
    assert {k: _read(world[k]) for k in ("train_json", "val_json")} == before  # train and val unchanged
    data = json.loads(_read(split["json"]))
    train = json.loads(before["train_json"])
    assert data["categories"] == train["categories"]  # the training statistics, as every split of the world
    assert len(data["images"]) == 40 == split["num_images"]
    per_category = {}
    for a in data["annotations"]:
        per_category[a["category_id"]] = per_category.get(a["category_id"], 0) + 1
    assert set(per_category) == {c["id"] for c in train["categories"]} and min(per_category.values()) >= 2
    rare = {c["id"] for c in train["categories"] if c["frequency"] == "r"}
    assert split["num_novel_objects"] == sum(per_category[c] for c in rare) > 0
    for image in data["images"]:  # exhaustive: every absent category is a verified negative
        present = {a["category_id"] for a in data["annotations"] if a["image_id"] == image["id"]}
        assert set(image["neg_category_ids"]) == {c["id"] for c in train["categories"]} - present
        assert os.path.isfile(os.path.join(split["images"], image["file_name"]))
    # Another world with the same arguments gets the same split, byte for byte; its own val split differs.
    other = generate_world_dataset(str(tmp_path / "again"), **SMALL_WORLD_KWARGS)
    again = generate_eval_split(other["root"], num_images=40)
    assert _read(again["json"]) == _read(split["json"])
    first = sorted(os.listdir(split["images"]))[0]
    assert _read(os.path.join(again["images"], first)) == _read(os.path.join(split["images"], first))
    val_first = sorted(os.listdir(world["val_images"]))[0]
    assert _read(os.path.join(split["images"], first)) != _read(os.path.join(world["val_images"], val_first))


def test_registered_when_present_and_regenerated_only_when_it_does_not_fit(world):
    names = register_world_datasets(world["root"], prefix="splittest")
    assert "val_large" not in names  # not generated: not registered
    ensure_eval_split(world["root"], num_images=30)
    names = register_world_datasets(world["root"], prefix="splittest")
    assert names["val_large"] == "splittest_v1_val_large" and names["val_large_base"] == "splittest_v1_val_large_base"
    from detectron2.data import DatasetCatalog, MetadataCatalog

    dicts = DatasetCatalog.get(names["val_large_base"])
    assert len(dicts) == 30
    base = MetadataCatalog.get(names["val_large_base"]).thing_classes
    assert len(base) < len(MetadataCatalog.get(names["val_large"]).thing_classes)
    assert all(a["category_id"] < len(base) for d in dicts for a in d["annotations"])

    path = eval_split_paths(world["root"])["json"]
    stamp = os.stat(path).st_mtime_ns
    assert ensure_eval_split(world["root"], num_images=30)["num_images"] == 30 and os.stat(path).st_mtime_ns == stamp
    assert ensure_eval_split(world["root"], num_images=32)["num_images"] == 32  # another size: generated again
    with open(path, "w") as f:  # damaged: generated again, never used
        f.write("{")
    assert ensure_eval_split(world["root"], num_images=32)["num_images"] == 32
    assert json.loads(_read(path))["info"]["num_images"] == 32


def test_a_world_without_train_split_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="generate the world first"):
        generate_eval_split(str(tmp_path / "nothing"), num_images=10)
    with pytest.raises(ValueError, match="at least 2"):
        generate_eval_split(str(tmp_path / "nothing"), num_images=1)
