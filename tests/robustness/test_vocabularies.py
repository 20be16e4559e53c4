"""
Vocabularies and embeddings at the model / trainer level: a test vocabulary larger than the training
vocabulary works end to end (train on base, evaluate on all classes); broken text embeddings (NaN,
another CLIP model's file) are refused and the model keeps its working vocabulary.
"""
import json
import os

import pytest
import torch

from gridclip.engine.trainer import GridCLIPTrainer
from gridclip.modeling.text.files import save_text_embeddings


def test_train_on_base_classes_then_evaluate_on_all_classes(tiny_cfg, world_dataset, tmp_path):
    cfg = tiny_cfg("SOLVER.MAX_ITER", 2, "MODEL.FCOS.SCORE_THRESH_TEST", 0.0)
    cfg.OUTPUT_DIR = str(tmp_path / "run")
    trainer = GridCLIPTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # ends with the evaluation on DATASETS.TEST (all classes)
    results = trainer._last_eval_results
    model = trainer.model
    num_base, num_all = world_dataset.num_base_categories, world_dataset.num_categories
    assert len(model.train_class_names) == num_base < num_all

    assert model.test_class_names == world_dataset.class_names  # all classes, in category order
    assert "AP" in results["bbox"] and "APr" in results["bbox"]
    out_dir = os.path.join(cfg.OUTPUT_DIR, "inference", world_dataset.val)
    with open(os.path.join(out_dir, "per_category_ap.json")) as f:
        per_category = json.load(f)
    assert len(per_category) == num_all
    with open(os.path.join(out_dir, "lvis_instances_results.json")) as f:
        detections = json.load(f)
    rare_ids = {i + 1 for i, freq in enumerate(world_dataset.frequencies) if freq == "r"}
    predicted_ids = {d["category_id"] for d in detections}
    assert predicted_ids <= set(range(1, num_all + 1))
    assert predicted_ids & rare_ids, "no detection of a class outside the training vocabulary"


@pytest.fixture
def model(tiny_cfg):
    return GridCLIPTrainer.build_model(tiny_cfg()).eval()


def _detect(model, seed=0):
    torch.manual_seed(seed)
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        return model([{"image": image}])[0]["instances"]


def test_nan_text_embeddings_are_refused_and_the_vocabulary_is_kept(model, world_dataset):
    names = world_dataset.class_names
    before = list(model.test_class_names)
    scores_before = _detect(model).scores
    bad = torch.nn.functional.normalize(torch.randn(len(names), model.classifier.embed_dim), dim=-1)
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match=r"NaN"):
        model.set_vocabulary(names, text_embeddings=bad)
    assert model.test_class_names == before
    assert torch.equal(_detect(model).scores, scores_before)


def test_embedding_file_of_another_clip_model_is_refused(model, world_dataset, tmp_path):
    names = world_dataset.class_names
    path = save_text_embeddings(
        str(tmp_path / "vit_b32_names.safetensors"),
        torch.nn.functional.normalize(torch.randn(len(names), model.classifier.embed_dim), dim=-1),
        names, model_name="ViT-B-32-quickgelu",
    )
    before = list(model.test_class_names)
    with pytest.raises(ValueError, match=r"vit_b32_names.safetensors.*ViT-B-32-quickgelu.*GridCLIP-Tiny-RN"):
        model.set_vocabulary(names, text_embeddings=path)
    assert model.test_class_names == before
