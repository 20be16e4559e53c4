"""
Self-describing weights folders (gridclip.pretrained): a folder written by save_pretrained works alone
after being moved (its CLIP weights inside it), gives the saving predictor's detections, refuses edited
files, resolves hub ids from the local huggingface_hub cache with HF_HUB_OFFLINE=1, and
tools/export_model.py --format folder writes one.
"""
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "configs", "GridCLIP-Tiny-Predictor.yaml")
OPTS = ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96", "MODEL.GRIDCLIP.PROMPT_TEMPLATES", "single"]
NAMES = ["zebra", "red square", "blue circle"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(predictor, its folder, an image): a tiny predictor whose backbone/text CLIP is a local file, saved."""
    from safetensors.torch import save_file

    from gridclip import GridCLIPPredictor
    from gridclip.modeling.clip_loading import create_clip_model

    tmp = tmp_path_factory.mktemp("pretrained")
    clip_file = str(tmp / "clip_source" / "tiny_rn.safetensors")
    os.makedirs(os.path.dirname(clip_file))
    torch.manual_seed(1)
    clip = create_clip_model("GridCLIP-Tiny-RN", "")
    for p in clip.parameters():
        p.data.add_(0.01 * torch.randn_like(p))  # not the seeded random init: the file must really be used
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, clip_file)
    image = np.random.default_rng(0).integers(0, 255, (72, 100, 3), dtype=np.uint8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDCLIP_CACHE", str(tmp / "cache"))
        torch.manual_seed(0)
        predictor = GridCLIPPredictor(TINY_CONFIG, "", vocabulary=NAMES, opts=OPTS + ["MODEL.CLIP.PRETRAINED", clip_file],
                                      device="cpu", confidence_threshold=0.0)
        folder = predictor.save_pretrained(str(tmp / "folder"))
        expected = predictor(image)
    shutil.rmtree(os.path.dirname(clip_file))  # the folder must not need it
    return predictor, folder, image, expected


def _same(a, b):
    assert a.class_names == b.class_names
    torch.testing.assert_close(a.boxes, b.boxes, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)


def test_folder_is_hub_shaped_and_works_alone_after_moving(saved, tmp_path, monkeypatch):
    from gridclip import GridCLIPPredictor

    _, folder, image, expected = saved
    files = sorted(os.listdir(folder))
    assert files == ["README.md", "class_embeddings.safetensors", "class_names.json", "clip", "config.yaml",
                     "manifest.json", "model.safetensors"]
    assert os.listdir(os.path.join(folder, "clip")) and "tiny_rn.safetensors" in os.listdir(os.path.join(folder, "clip"))
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    assert manifest["text_encoder"]["model_name"] == "GridCLIP-Tiny-RN"
    assert manifest["text_encoder"]["pretrained"] == "clip/tiny_rn.safetensors"
    assert "from_pretrained" in open(os.path.join(folder, "README.md")).read()
    moved = str(tmp_path / "elsewhere")
    shutil.copytree(folder, moved)
    monkeypatch.setenv("GRIDCLIP_CACHE", str(tmp_path / "fresh_cache"))  # nothing cached: all from the folder
    loaded = GridCLIPPredictor.from_pretrained(moved, confidence_threshold=0.0)
    assert loaded.vocabulary == NAMES
    _same(loaded(image), expected)
    other = GridCLIPPredictor.from_pretrained(moved, vocabulary=["zebra"], confidence_threshold=0.0)
    assert set(other(image).class_names) <= {"zebra"}


def test_edited_or_incomplete_folder_is_refused(saved, tmp_path):
    from gridclip import GridCLIPPredictor

    _, folder, _, _ = saved
    broken = str(tmp_path / "broken")
    shutil.copytree(folder, broken)
    with open(os.path.join(broken, "class_names.json"), "a") as f:
        f.write(" ")
    with pytest.raises(ValueError, match="class_names.json does not match its sha256"):
        GridCLIPPredictor.from_pretrained(broken)
    os.remove(os.path.join(broken, "manifest.json"))
    with pytest.raises(FileNotFoundError, match="not a GridCLIP weights folder"):
        GridCLIPPredictor.from_pretrained(broken)
    with pytest.raises(FileNotFoundError, match="neither an existing weights folder nor a model-hub id"):
        GridCLIPPredictor.from_pretrained(str(tmp_path / "no" / "such" / "folder"))


def test_hub_id_from_the_local_cache_offline(saved, tmp_path, monkeypatch):
    from gridclip import GridCLIPPredictor

    _, folder, image, expected = saved
    # huggingface_hub's cache layout: models--<org>--<name>/{refs/main, snapshots/<commit>/...}
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--gridclip--tiny-test"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GRIDCLIP_CACHE", str(tmp_path / "cache"))
    loaded = GridCLIPPredictor.from_pretrained("gridclip/tiny-test", confidence_threshold=0.0,
                                               cache_dir=str(tmp_path / "hub"))
    _same(loaded(image), expected)
    with pytest.raises(FileNotFoundError, match="not found in the local hub cache"):
        GridCLIPPredictor.from_pretrained("gridclip/not-there", cache_dir=str(tmp_path / "hub"))


def test_export_tool_writes_a_folder(tmp_path, monkeypatch):
    import runpy

    monkeypatch.setenv("GRIDCLIP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "weights"
    tool = runpy.run_path(os.path.join(REPO, "tools", "export_model.py"), run_name="export_tool")
    tool["main"](["--config-file", TINY_CONFIG, "--format", "folder", "--vocabulary", "cat,dog", "--output", str(out),
                  *OPTS, "MODEL.WEIGHTS", ""])
    assert json.load(open(out / "class_names.json"))["class_names"] == ["cat", "dog"]
    from gridclip.pretrained import export_weights_folder

    with pytest.raises(FileExistsError, match="not empty"):  # checked before any model is built
        export_weights_folder(TINY_CONFIG, str(out))


def test_demo_runs_from_the_folder_with_an_exemplar(saved, tmp_path, monkeypatch, capsys):
    import runpy

    import cv2

    _, folder, image, _ = saved
    monkeypatch.setenv("GRIDCLIP_CACHE", str(tmp_path / "cache"))
    path = str(tmp_path / "in.png")
    cv2.imwrite(path, image)
    demo = runpy.run_path(os.path.join(REPO, "tools", "demo.py"), run_name="demo_tool")
    status = demo["cli_main"](["--weights-folder", folder, "--input", path, "--output", str(tmp_path / "vis"), "--cpu",
                               "--confidence-threshold", "0.0", "--vocabulary", "custom", "--custom-vocabulary", "zebra",
                               "--exemplar", f"that={path}:10,10,50,40"])
    assert status == 0 and os.path.isfile(tmp_path / "vis" / "in.png")
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith(f"{path}: "))
    assert "that (" in line and set(re.findall(r"([A-Za-z][A-Za-z ]*) \(\d\.\d\d\)", line)) <= {"zebra", "that"}, line
    bad = demo["cli_main"](["--weights-folder", folder, "--input", path, "--output", str(tmp_path / "vis2"),
                            "--exemplar", f"that={path}:1,2,3"])
    assert bad == 1 and "--exemplar" in capsys.readouterr().err
