"""
The exemplar-vs-text protocol of gridclip.world.exemplar_eval on a small generated world: one exemplar
per never-annotated category, taken from one val image and its largest box of it; those images are left
out of the evaluation; the exemplars vocabulary names base categories by text and novel ones by exemplar.
(The trained-model result, exemplars finding novel objects far above chance, is in test_transfer.py,
which owns the trained fixture runs.)
"""
import os

import pytest

from gridclip.file_io import read_json
from gridclip.world import generate_world_dataset
from gridclip.world.exemplar_eval import MODES, choose_exemplars, evaluate_queries, exemplar_table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO, "tests", "configs", "GridCLIP-Tiny-Predictor.yaml")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    paths = generate_world_dataset(str(tmp_path_factory.mktemp("exemplar_world")), num_train_images=120,
                                   num_val_images=24, image_size=(96, 96), num_categories=8, num_rare=2, seed=1)
    return paths, read_json(paths["val_json"])


def test_one_exemplar_per_novel_category_from_one_val_image(world):
    paths, gt = world
    chosen = choose_exemplars(gt, paths["root"])
    rare = [c for c in gt["categories"] if c["frequency"] == "r"]
    assert sorted(chosen) == sorted(c["id"] for c in rare if any(a["category_id"] == c["id"] for a in gt["annotations"]))
    for category_id, (image_id, exemplar) in chosen.items():
        anns = [a for a in gt["annotations"] if a["category_id"] == category_id]
        assert image_id == min(a["image_id"] for a in anns)  # the first val image showing it
        assert os.path.isfile(exemplar.image)
        assert exemplar.name == next(c["name"] for c in rare if c["id"] == category_id)


def test_evaluation_leaves_the_exemplar_images_out(world, tmp_path, monkeypatch):
    from gridclip import GridCLIPPredictor

    paths, gt = world
    monkeypatch.setenv("GRIDCLIP_CACHE", str(tmp_path / "cache"))
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    predictor = GridCLIPPredictor(TINY_CONFIG, "", vocabulary=names, device="cpu", opts=[
        "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96", "MODEL.GRIDCLIP.PROMPT_TEMPLATES", "single"])
    result = evaluate_queries(predictor, gt, paths["root"])
    protocol = result["protocol"]
    assert protocol["evaluated_images"] == len(gt["images"]) - len(protocol["exemplar_images"])
    assert protocol["novel_categories"] == 2 and protocol["vocabulary_size"] == 8
    # exemplars replace only the novel names: the vocabulary keeps its names and order
    assert predictor.vocabulary == names
    for mode in MODES:
        assert set(result[mode]) >= {"AP", "APr", "APc", "APf", "novel_top1", "novel_objects"}
    assert "one image exemplar each" in exemplar_table({"untrained": result})
