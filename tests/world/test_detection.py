"""The world's long-tailed LVIS-format detection data: determinism, LVIS rule, geometry, the generator script."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gridclip.world import (
    COLOURS,
    ensure_world_dataset,
    frequency_from_image_count,
    generate_world_dataset,
)

from ..conftest import SMALL_WORLD_KWARGS


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, world_dataset):
    again = generate_world_dataset(str(tmp_path / "again"), **SMALL_WORLD_KWARGS)
    first = world_dataset.paths
    for key in ("train_json", "val_json"):
        assert _read_bytes(first[key]) == _read_bytes(again[key])
    for split in ("train_images", "val_images"):
        names = sorted(os.listdir(first[split]))
        assert names == sorted(os.listdir(again[split])) and names
        for name in names[:10]:
            assert _read_bytes(os.path.join(first[split], name)) == _read_bytes(os.path.join(again[split], name))

    other = generate_world_dataset(str(tmp_path / "other"), **dict(SMALL_WORLD_KWARGS, seed=1))
    assert _read_bytes(first["train_json"]) != _read_bytes(other["train_json"])
    first_image = os.path.join(first["train_images"], sorted(os.listdir(first["train_images"]))[0])
    other_image = os.path.join(other["train_images"], sorted(os.listdir(other["train_images"]))[0])
    assert _read_bytes(first_image) != _read_bytes(other_image)


@pytest.mark.parametrize("count, expected", [(1, "r"), (10, "r"), (11, "c"), (100, "c"), (101, "f")])
def test_lvis_frequency_rule(count, expected):
    assert frequency_from_image_count(count) == expected


def test_frequency_field_follows_lvis_rule_on_train_image_counts(world_dataset):
    train = _load(world_dataset.paths["train_json"])
    images_per_category = {c["id"]: set() for c in train["categories"]}
    instances_per_category = {c["id"]: 0 for c in train["categories"]}
    for a in train["annotations"]:
        images_per_category[a["category_id"]].add(a["image_id"])
        instances_per_category[a["category_id"]] += 1
    for c in train["categories"]:
        n = len(images_per_category[c["id"]])
        assert c["image_count"] == n
        assert c["instance_count"] == instances_per_category[c["id"]]
        expected = "r" if n <= 10 else ("c" if n <= 100 else "f")
        assert c["frequency"] == expected, (c["name"], n, c["frequency"])
    assert {c["frequency"] for c in train["categories"]} == {"r", "c", "f"}
    # the val json states the same (train-based) frequencies and its own counts
    val = _load(world_dataset.paths["val_json"])
    assert [c["frequency"] for c in val["categories"]] == [c["frequency"] for c in train["categories"]]


def test_default_world_split_has_12_rare_categories_made_of_base_attributes(tmp_path):
    # the embedded default (make demo): 48 world objects, 12 of them rare (novel: never annotated in
    # training), each rare one in at most 3 training images and a new combination of base attributes
    paths = generate_world_dataset(str(tmp_path / "default"), num_val_images=40)
    counts = {g: paths["frequencies"].count(g) for g in "rcf"}
    assert len(paths["class_names"]) == 48
    assert counts["r"] >= 12 and counts["c"] >= 12 and counts["f"] >= 4, counts
    assert max(paths["train_image_counts"]) > 100
    rare = [t for t, f in zip(paths["categories"], paths["frequencies"]) if f == "r"]
    base = [t for t, f in zip(paths["categories"], paths["frequencies"]) if f != "r"]
    assert all(n <= 3 for n, f in zip(paths["train_image_counts"], paths["frequencies"]) if f == "r")
    for colour, texture, shape in rare:
        assert any(b[0] == colour for b in base) and any(b[1] == texture for b in base)
        # a novel-only shape is worn by no base category; every other shape of a rare one is
        assert any(b[2] == shape for b in base) != (shape in paths["novel_only_shapes"])
    assert paths["novel_only_shapes"] == ("cross",)
    # every cross is rare (4 of the 12 novel categories): they cannot be named by recombining base attributes
    crosses = [f for t, f in zip(paths["categories"], paths["frequencies"]) if t[2] == "cross"]
    assert len(crosses) == 4 and set(crosses) == {"r"}
    assert paths["attribute_coverage"] is True


def test_default_world_shows_unannotated_novel_objects_in_a_quarter_of_training_images(tmp_path):
    """LVIS-like: novel objects are in training images without annotation (the grid loss sees background,
    the image-level teacher sees them): 120 of 480 images, one object each, in neither json, no negative."""
    paths = generate_world_dataset(str(tmp_path / "default"), num_val_images=40)
    train = _load(paths["train_json"])
    assert paths["unannotated_novel_images"] == train["info"]["unannotated_novel_images"] == 120
    rare_ids = {c["id"] for c in train["categories"] if c["frequency"] == "r"}
    annotated = {}
    for a in train["annotations"]:
        annotated.setdefault(a["image_id"], set()).add(a["category_id"])
    num_categories = len(train["categories"])
    unverified = {
        img["id"]: set(range(1, num_categories + 1)) - annotated.get(img["id"], set()) - set(img["neg_category_ids"])
        for img in train["images"]
    }
    with_unannotated = {i: u for i, u in unverified.items() if u}
    assert len(with_unannotated) == 120 and all(len(u) == 1 and u <= rare_ids for u in with_unannotated.values())
    # every novel category is among them, novel-only shapes included
    assert set().union(*with_unannotated.values()) == rare_ids
    # the object is drawn: such an image holds more coloured shapes than it annotates (its colour's pixels
    # outside every annotated box)
    images = {img["id"]: img for img in train["images"]}
    names = {c["id"]: c["name"] for c in train["categories"]}
    boxes = {}
    for a in train["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a["bbox"])
    for image_id, (category,) in list(with_unannotated.items())[:10]:
        pixels = np.asarray(Image.open(os.path.join(paths["train_images"], images[image_id]["file_name"])), np.float32)
        outside = np.ones(pixels.shape[:2], bool)
        for x, y, w, h in boxes.get(image_id, []):
            outside[int(y):int(np.ceil(y + h)), int(x):int(np.ceil(x + w))] = False
        colour = np.array(COLOURS[names[category].split()[0]], np.float32)
        assert (np.linalg.norm(pixels - colour, axis=2)[outside] < 40).sum() >= 20, (image_id, names[category])
    # val stays exhaustively annotated
    val = _load(paths["val_json"])
    assert val["info"]["unannotated_novel_images"] == 0


def test_world_design_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="novel_only_shapes"):
        generate_world_dataset(str(tmp_path), novel_only_shapes=("pentagon",))
    with pytest.raises(ValueError, match="num_rare"):  # 8 squares/diamonds cannot all be among 12 rare + ...
        generate_world_dataset(str(tmp_path), novel_only_shapes=("square", "diamond"))
    with pytest.raises(ValueError, match="unannotated_novel_share"):
        generate_world_dataset(str(tmp_path), unannotated_novel_share=1.5)


def test_lvis_fields_and_category_names(world_dataset):
    train = _load(world_dataset.paths["train_json"])
    for c in train["categories"]:
        assert set(c) >= {"id", "name", "synonyms", "frequency", "image_count", "instance_count", "def", "synset"}
        assert c["synonyms"][0] == c["name"]
        words = c["name"].split()
        # "<colour> <texture> <shape>": plain English words usable as a text prompt
        assert len(words) == 3 and words[0] in COLOURS and all(w.isalpha() for w in words)
    assert len({c["name"] for c in train["categories"]}) == len(train["categories"])
    num_categories = len(train["categories"])
    image_ids = [img["id"] for img in train["images"]]
    assert len(set(image_ids)) == len(image_ids)
    rare_ids = {c["id"] for c in train["categories"] if c["frequency"] == "r"}
    positives = {}
    for a in train["annotations"]:
        positives.setdefault(a["image_id"], set()).add(a["category_id"])
    for img in train["images"]:
        assert {"id", "coco_url", "file_name", "height", "width", "neg_category_ids",
                "not_exhaustive_category_ids"} <= set(img)
        # every absent category is a verified negative; a category the image shows without annotation
        # (at most one unannotated novel object per training image) is neither positive nor negative
        present = positives.get(img["id"], set())
        unverified = set(range(1, num_categories + 1)) - present - set(img["neg_category_ids"])
        assert set(img["neg_category_ids"]) <= set(range(1, num_categories + 1)) - present
        assert len(unverified) <= 1 and unverified <= rare_ids, (img["id"], unverified)
        assert img["coco_url"].split("/")[-2:] == ["train", img["file_name"]]


def test_every_category_has_val_instances(world_dataset):
    val = _load(world_dataset.paths["val_json"])
    per_category = {c["id"]: 0 for c in val["categories"]}
    for a in val["annotations"]:
        per_category[a["category_id"]] += 1
    assert min(per_category.values()) >= 1, per_category


def test_boxes_inside_images_and_tight_around_the_drawn_shape(world_dataset):
    for split in ("train", "val"):
        data = _load(world_dataset.paths[f"{split}_json"])
        images = {img["id"]: img for img in data["images"]}
        colours = {c["id"]: np.array(COLOURS[c["name"].split()[0]], np.float32) for c in data["categories"]}
        for a in data["annotations"][:150]:
            img = images[a["image_id"]]
            x, y, w, h = a["bbox"]
            assert w >= 8 and h >= 8
            assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]
            # the outline polygon spans the box (within one pixel of rasterisation)
            poly = np.array(a["segmentation"][0]).reshape(-1, 2)
            assert np.all(poly >= [x - 1e-6, y - 1e-6]) and np.all(poly <= [x + w + 1e-6, y + h + 1e-6])
            assert abs(poly[:, 0].min() - x) <= 1 and abs(poly[:, 0].max() - (x + w)) <= 1.5
            assert abs(poly[:, 1].min() - y) <= 1 and abs(poly[:, 1].max() - (y + h)) <= 1.5
            assert 0 < a["area"] <= w * h
        # pixels: each inner edge of a box touches the object (its colour or its white pattern)
        for a in data["annotations"][:40]:
            img = images[a["image_id"]]
            pixels = np.asarray(
                Image.open(os.path.join(world_dataset.paths[f"{split}_images"], img["file_name"])), np.float32
            )
            x, y, w, h = (int(round(v)) for v in a["bbox"])
            edges = [pixels[y, x:x + w], pixels[y + h - 1, x:x + w], pixels[y:y + h, x], pixels[y:y + h, x + w - 1]]
            for edge in edges:
                near_colour = np.linalg.norm(edge - colours[a["category_id"]], axis=1) < 60
                near_white = np.linalg.norm(edge - 238.0, axis=1) < 40
                assert (near_colour | near_white).any(), (img["file_name"], a["bbox"])


def test_too_few_train_images_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="frequent"):
        generate_world_dataset(str(tmp_path), num_train_images=50)
    with pytest.raises(ValueError, match="num_categories"):
        generate_world_dataset(str(tmp_path), num_categories=193)


def test_ensure_reuses_matching_data_and_regenerates_otherwise(tmp_path):
    root = str(tmp_path / "data")
    kwargs = dict(SMALL_WORLD_KWARGS, num_val_images=4)
    first = ensure_world_dataset(root, **kwargs)
    mtime = os.path.getmtime(first["train_json"])
    again = ensure_world_dataset(root, **kwargs)
    assert os.path.getmtime(again["train_json"]) == mtime
    assert again["frequencies"] == first["frequencies"] and again["class_names"] == first["class_names"]
    changed = ensure_world_dataset(root, **dict(kwargs, seed=3))
    assert _load(changed["train_json"])["info"]["generator"]["seed"] == 3


def test_cli_writes_the_dataset(tmp_path, repo_root):
    root = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, os.path.join(repo_root, "datasets", "generate_world.py"), "--root", str(root),
         "--num-train-images", "120", "--num-val-images", "4", "--image-size", "64", "--num-categories", "6",
         "--seed", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    train = _load(root / "annotations" / "lvis_v1_train.json")
    assert len(train["images"]) == 120 and len(train["categories"]) == 6
    assert train["info"]["generator"]["image_size"] == [64, 64]
    assert "rare" in result.stdout and str(root) in result.stdout
    assert train["info"]["generator"]["novel_only_shapes"] == ["cross"] and "novel-only shapes: cross" in result.stdout
    # world v2's design from the command line: no novel-only shape, no unannotated novel objects
    plain = subprocess.run(
        [sys.executable, os.path.join(repo_root, "datasets", "generate_world.py"), "--root", str(tmp_path / "plain"),
         "--num-train-images", "120", "--num-val-images", "4", "--image-size", "64", "--num-categories", "6",
         "--novel-only-shapes", "--unannotated-novel-share", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert plain.returncode == 0, plain.stderr
    info = _load(tmp_path / "plain" / "annotations" / "lvis_v1_train.json")["info"]
    assert info["generator"]["novel_only_shapes"] == [] and info["unannotated_novel_images"] == 0
    assert "0 train images also show an unannotated novel object" in plain.stdout


def test_val_categories_carry_training_statistics(world_dataset):
    """As in LVIS v1: frequency, image_count and instance_count in the val json are the train split's."""
    import json

    with open(world_dataset.paths["train_json"]) as f:
        train = json.load(f)
    with open(world_dataset.paths["val_json"]) as f:
        val = json.load(f)
    assert val["categories"] == train["categories"]
    images_per_category = {}
    for a in train["annotations"]:
        images_per_category.setdefault(a["category_id"], set()).add(a["image_id"])
    assert [c["image_count"] for c in val["categories"]] == [
        len(images_per_category[c["id"]]) for c in val["categories"]
    ]
