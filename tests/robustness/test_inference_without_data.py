"""
GridCLIPPredictor needs neither the training dataset nor the embeddings of vocabularies it does not
use: with datasets that are registered nowhere and an empty DETECTRON2_DATASETS, it builds text
embeddings for the requested names only, takes the class names from the checkpoint when none are
given, validates every vocabulary (set_vocabulary, rescore), and refuses weights of another config
with the list of mismatched parameters unless partial loading is asked for.
"""
import numpy as np
import pytest
import torch

from gridclip import GridCLIPPredictor
from gridclip.checkpoint import CheckpointMismatchError, GridCLIPCheckpointer
from gridclip.modeling.text import cache as text_cache

from .conftest import write_tiny_config

NAMES = ["zebra", "red umbrella", "traffic cone"]


@pytest.fixture
def setup(tmp_path, monkeypatch, embeddings_cache):
    """(config path, checkpoint path, list of the name lists text embeddings were built or loaded for)."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "empty"))
    config = write_tiny_config(tmp_path / "tiny.yaml", "lvis_like_train_nowhere", "lvis_like_val_nowhere", tmp_path / "out")
    embedded = []
    original = text_cache.load_text_embeddings

    def recording(class_names, *args, **kwargs):
        embedded.append(list(class_names))
        return original(class_names, *args, **kwargs)

    monkeypatch.setattr(text_cache, "load_text_embeddings", recording)
    torch.manual_seed(0)
    model = GridCLIPPredictor(config, "", vocabulary=NAMES).model
    GridCLIPCheckpointer(model, str(tmp_path / "ckpt")).save("model_final")
    embedded.clear()
    return config, str(tmp_path / "ckpt" / "model_final.pth"), embedded


def test_names_from_the_checkpoint_and_embeddings_only_for_them(setup):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    config, weights, embedded = setup
    catalog_before = (set(DatasetCatalog.list()), set(MetadataCatalog.list()))
    predictor = GridCLIPPredictor(config, weights, confidence_threshold=0.0)
    assert (set(DatasetCatalog.list()), set(MetadataCatalog.list())) == catalog_before  # no stand-in dataset
    assert predictor.vocabulary == NAMES and predictor.checkpoint_train_class_names == NAMES
    assert embedded and all(names == NAMES for names in embedded)
    result = predictor(np.zeros((40, 56, 3), np.uint8))
    assert set(result.class_names) <= set(NAMES)
    embedded.clear()
    zebra = GridCLIPPredictor(config, weights, vocabulary=["zebra"])
    assert zebra.vocabulary == ["zebra"] and embedded and all(names == ["zebra"] for names in embedded)


def test_no_vocabulary_anywhere_is_one_clear_error(setup):
    config, _, _ = setup
    with pytest.raises(ValueError, match="no vocabulary given and none is known without a dataset"):
        GridCLIPPredictor(config, "")


def test_set_vocabulary_and_rescore_validate_like_the_cli(setup):
    config, weights, _ = setup
    predictor = GridCLIPPredictor(config, weights, confidence_threshold=0.0)
    for bad in (["cat", "Cat"], ["cat", None], []):
        with pytest.raises((ValueError, TypeError)):
            predictor.set_vocabulary(bad)
        assert predictor.vocabulary == NAMES  # kept
    result = predictor(np.full((40, 56, 3), 128, np.uint8))
    assert len(result) > 0
    rescored = predictor.rescore(result, "cat,dog")  # a spec string, not the characters c, a, t, ...
    assert rescored.vocabulary == ["cat", "dog"] and rescored.text_scores.shape == (len(result), 2)
    with pytest.raises(ValueError, match="duplicate"):
        predictor.rescore(result, ["dog", "Dog"])


def test_weights_of_another_config_are_an_error_listing_parameters(setup):
    config, weights, _ = setup
    with pytest.raises(CheckpointMismatchError, match=r"7 parameter\(s\) have other shapes.*fpn_lateral5.*grid_adapter"):
        GridCLIPPredictor(config, weights, vocabulary=NAMES, opts=["MODEL.GRIDCLIP.ADAPTER_CHANNELS", "16",
                                                                    "MODEL.FPN.OUT_CHANNELS", "64"])
    with pytest.raises(CheckpointMismatchError, match=r"\d+ weight\(s\) of the model are not in it .*cls_subnet"):
        GridCLIPPredictor(config, weights, vocabulary=NAMES, opts=["MODEL.FCOS.NUM_CONVS", "2"])
    partial = GridCLIPPredictor(config, weights, vocabulary=NAMES, opts=["MODEL.FCOS.NUM_CONVS", "2"],
                                allow_partial_weights=True)
    assert partial.vocabulary == NAMES
