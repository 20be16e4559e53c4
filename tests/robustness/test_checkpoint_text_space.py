"""
Checkpoints know their class-embedding space: weights trained with one text tower (a pretrained CLIP file)
loaded where the config builds another (a random text tower, other templates) are an error naming both,
with an explicit opt-out; the same space loads, whether the model has the recorded names or not and
wherever the weights file lies. open_clip's "No pretrained weights loaded" is not printed when a local
file is loaded right after.
"""
import logging
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

import gridclip
from gridclip.checkpoint import TEXT_SPACE_KEY, GridCLIPCheckpointer, TextSpaceMismatchError
from gridclip.modeling.clip_loading import create_clip_model
from gridclip.modeling.meta_arch import GridCLIP

from .conftest import load_tiny_cfg, write_tiny_config

NAMES = ["red striped circle", "blue dotted square", "green solid star", "yellow plain heart", "purple striped moon"]
OTHER_NAMES = ["orange dotted circle", "pink solid square"]


@pytest.fixture
def world(tmp_path, embeddings_cache):
    """A 'pretrained' tiny CLIP file, and config factories: with that file, and with a random text tower."""
    torch.manual_seed(1)
    clip = create_clip_model("GridCLIP-Tiny-RN", "")
    with torch.no_grad():  # other weights than the seeded random init
        for p in clip.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    weights = str(tmp_path / "tiny_clip_pretrained.safetensors")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, weights)
    yaml = write_tiny_config(tmp_path / "tiny.yaml", "unused_train", "unused_test", tmp_path / "out")

    def cfg(*opts):
        return load_tiny_cfg(yaml, *opts)

    def model(config, names=NAMES):
        return GridCLIP(config, train_class_names=names, test_class_names=names).eval()

    def trained_checkpoint():
        path = tmp_path / "trained" / "model_final.pth"
        GridCLIPCheckpointer(model(cfg("MODEL.CLIP.PRETRAINED", weights)), str(path.parent)).save("model_final")
        return str(path)

    return dict(cfg=cfg, model=model, weights=weights, yaml=yaml, checkpoint=trained_checkpoint(), tmp=tmp_path)


def test_checkpoint_records_its_text_space(world):
    record = torch.load(world["checkpoint"], map_location="cpu", weights_only=True)[TEXT_SPACE_KEY]
    assert record["names"] == NAMES and record["embeddings"].shape == (len(NAMES), 64)
    assert record["identity"]["model_name"] == "GridCLIP-Tiny-RN"
    assert world["weights"] in record["identity"]["weights"]


def test_random_text_tower_config_refuses_weights_trained_with_the_pretrained_one(world):
    # The reported case: the model-zoo config without MODEL.CLIP.PRETRAINED rebuilds the class embeddings
    # with a random text tower; loading used to "work" and give a fraction of the AP.
    model = world["model"](world["cfg"]())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TextSpaceMismatchError) as error:
        GridCLIPCheckpointer(model).load(world["checkpoint"])
    message = str(error.value)
    assert world["checkpoint"] in message
    assert f"weights {world['weights']}" in message and "random-init weights" in message
    assert "MODEL.GRIDCLIP.ALLOW_TEXT_SPACE_MISMATCH" in message and "MODEL.CLIP.PRETRAINED" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded


def test_same_config_loads(world):
    model = world["model"](world["cfg"]("MODEL.CLIP.PRETRAINED", world["weights"]))
    GridCLIPCheckpointer(model, require_complete=True).load(world["checkpoint"])
    saved = torch.load(world["checkpoint"], map_location="cpu", weights_only=True)["model"]
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_other_vocabulary_same_space_loads_and_a_copied_weights_file_is_the_same_space(world):
    # No recorded name in the model's vocabulary: equal identities need no embedding ...
    model = world["model"](world["cfg"]("MODEL.CLIP.PRETRAINED", world["weights"]), OTHER_NAMES)
    GridCLIPCheckpointer(model).load(world["checkpoint"])
    # ... and the same weights at another path are recognised by the recorded names' embeddings.
    copy = str(world["tmp"] / "elsewhere.safetensors")
    shutil.copyfile(world["weights"], copy)
    model = world["model"](world["cfg"]("MODEL.CLIP.PRETRAINED", copy), OTHER_NAMES)
    GridCLIPCheckpointer(model).load(world["checkpoint"])


def test_other_vocabulary_other_space_is_refused(world):
    model = world["model"](world["cfg"](), OTHER_NAMES)
    with pytest.raises(TextSpaceMismatchError, match="random-init weights"):
        GridCLIPCheckpointer(model).load(world["checkpoint"])


def test_other_templates_are_another_space(world):
    model = world["model"](world["cfg"]("MODEL.CLIP.PRETRAINED", world["weights"],
                                        "MODEL.GRIDCLIP.PROMPT_TEMPLATES", "vild"))
    with pytest.raises(TextSpaceMismatchError, match="63 template"):
        GridCLIPCheckpointer(model).load(world["checkpoint"])


def test_opt_out_loads_with_one_warning(world, caplog):
    cfg = world["cfg"]("MODEL.GRIDCLIP.ALLOW_TEXT_SPACE_MISMATCH", "True")
    model = world["model"](cfg)
    with caplog.at_level(logging.WARNING, logger="gridclip.checkpoint"):
        GridCLIPCheckpointer(model, allow_text_space_mismatch=cfg.MODEL.GRIDCLIP.ALLOW_TEXT_SPACE_MISMATCH).load(
            world["checkpoint"])
    warnings = [r.getMessage() for r in caplog.records if "Loading it anyway" in r.getMessage()]
    assert len(warnings) == 1 and "random-init weights" in warnings[0]


def test_predictor_refuses_and_opts_out(world):
    with pytest.raises(TextSpaceMismatchError, match="random-init weights"):
        gridclip.GridCLIPPredictor(world["yaml"], weights=world["checkpoint"], vocabulary=OTHER_NAMES)
    predictor = gridclip.GridCLIPPredictor(world["yaml"], weights=world["checkpoint"], vocabulary=OTHER_NAMES,
                                           opts=["MODEL.GRIDCLIP.ALLOW_TEXT_SPACE_MISMATCH", "True"])
    assert predictor.vocabulary == OTHER_NAMES
    predictor = gridclip.GridCLIPPredictor(world["yaml"], weights=world["checkpoint"],
                                           opts=["MODEL.CLIP.PRETRAINED", world["weights"]])
    assert predictor.vocabulary == NAMES  # the checkpoint's names, same space


def test_checkpoints_without_a_record_still_load(world):
    old = torch.load(world["checkpoint"], map_location="cpu", weights_only=True)
    del old[TEXT_SPACE_KEY]
    path = str(world["tmp"] / "older.pth")
    torch.save(old, path)
    GridCLIPCheckpointer(world["model"](world["cfg"]())).load(path)


def test_open_clip_random_init_warning_only_without_a_weights_file(world, caplog):
    with caplog.at_level(logging.WARNING):
        create_clip_model("GridCLIP-Tiny-RN", world["weights"])
    assert not [r for r in caplog.records if "No pretrained weights loaded" in r.getMessage()]
    with caplog.at_level(logging.WARNING):
        create_clip_model("GridCLIP-Tiny-RN", "")
    assert [r for r in caplog.records if "No pretrained weights loaded" in r.getMessage()]
    assert not os.path.exists(os.path.join(world["tmp"], "out"))  # loading wrote nothing into OUTPUT_DIR


def test_train_net_eval_only_is_one_line(world, world_dataset, capsys, monkeypatch):
    """The reported command: ``train_net.py --eval-only MODEL.WEIGHTS <weights>`` with the config that builds
    a random text tower ends with one line naming both spaces and exit status 1, not a wrong AP."""
    import importlib.util

    from detectron2.utils import logger as d2_logger

    from .conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("gridclip_tool_train_net_text_space",
                                                  os.path.join(REPO_ROOT, "tools", "train_net.py"))
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    monkeypatch.delenv("GRIDCLIP_DEBUG", raising=False)
    config = write_tiny_config(world["tmp"] / "eval.yaml", world_dataset.train_base, world_dataset.val,
                               world["tmp"] / "eval_out")
    names = world_dataset.class_names
    trained = world["model"](load_tiny_cfg(config, "MODEL.CLIP.PRETRAINED", world["weights"]), names)
    GridCLIPCheckpointer(trained, str(world["tmp"] / "synthetic")).save("model_final")
    getattr(d2_logger.setup_logger, "cache_clear", lambda: None)()  # fresh log handlers, as a new process has
    try:
        code = train_net.cli_main(["--config-file", config, "--eval-only",
                                   "MODEL.WEIGHTS", str(world["tmp"] / "synthetic" / "model_final.pth")])
    finally:
        getattr(d2_logger.setup_logger, "cache_clear", lambda: None)()
        for name in ("detectron2", "d2", "fvcore", "gridclip"):
            for handler in list(logging.getLogger(name).handlers):
                logging.getLogger(name).removeHandler(handler)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and line.startswith("train_net.py: error: ")
    assert "random-init weights" in line and world["weights"] in line and "ALLOW_TEXT_SPACE_MISMATCH" in line
