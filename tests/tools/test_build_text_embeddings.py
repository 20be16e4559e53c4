"""tools/build_text_embeddings.py: builds, caches and writes loadable embeddings for custom,
built-in and config vocabularies (tiny CLIP text tower, CPU)."""
import importlib.util
import os
import subprocess
import sys

import pytest

from gridclip.modeling.clip_configs import TINY_BACKBONE_CLIP, TINY_TEACHER_CLIP
from gridclip.modeling.text.cache import text_embeddings_cache_path
from gridclip.modeling.text.files import load_text_embeddings_file

TINY = ["--clip-model", TINY_BACKBONE_CLIP, "--pretrained", "", "--device", "cpu", "--no-progress"]


@pytest.fixture
def tool(repo_root):
    path = os.path.join(repo_root, "tools", "build_text_embeddings.py")
    spec = importlib.util.spec_from_file_location("build_text_embeddings_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_vocabulary_written_to_output_and_cache(tool, tmp_path, capsys):
    output = tmp_path / "out" / "custom.safetensors"
    written = tool.main(
        ["--vocabulary", "custom", "--custom-vocabulary", "cat, red umbrella", "--templates", "vild",
         "--cache-dir", str(tmp_path / "cache"), "--output", str(output)] + TINY
    )
    names = ["cat", "red umbrella"]
    cache = text_embeddings_cache_path(names, TINY_BACKBONE_CLIP, "", "vild", str(tmp_path / "cache"))
    assert written == [cache, str(output)]
    for path in written:
        emb = load_text_embeddings_file(path, expected_names=names, expected_model=TINY_BACKBONE_CLIP,
                                        expected_dim=64)
        assert emb.shape == (2, 64)
    printed = capsys.readouterr().out
    assert cache in printed and str(output) in printed


def test_builtin_vocabulary(tool, tmp_path):
    (path,) = tool.main(["--vocabulary", "voc", "--templates", "single", "--cache-dir", str(tmp_path)] + TINY)
    emb = load_text_embeddings_file(path, expected_model=TINY_BACKBONE_CLIP)
    assert emb.shape == (20, 64)


def test_config_vocabularies(tool, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "VERSION: 2\nMODEL:\n"
        f"  CLIP:\n    MODEL_NAME: {TINY_BACKBONE_CLIP}\n    PRETRAINED: ''\n"
        f"  GRIDCLIP:\n    TRAIN_VOCABULARY: voc\n    PROMPT_TEMPLATES: single\n"
        f"    EMBEDDINGS_CACHE_DIR: {tmp_path / 'cache'}\n"
    )
    written = tool.main(["--config-file", str(config), "--no-progress", "--device", "cpu",
                         "--opts", "MODEL.GRIDCLIP.TEST_VOCABULARY", "cat,dog,bird"])
    assert len(written) == 2
    assert all(p.startswith(str(tmp_path / "cache")) for p in written)
    assert load_text_embeddings_file(written[0]).shape == (20, 64)
    assert load_text_embeddings_file(written[1], expected_names=["cat", "dog", "bird"]).shape == (3, 64)
    # --output takes a single vocabulary.
    with pytest.raises(SystemExit):
        tool.main(["--config-file", str(config), "--output", str(tmp_path / "x.safetensors"),
                   "--opts", "MODEL.GRIDCLIP.TEST_VOCABULARY", "cat,dog,bird"])


def test_config_text_encoder_and_this_is_build_the_files_training_reads(tool, tmp_path):
    """MODEL.GRIDCLIP.TEXT_ENCODER (another CLIP's text tower, here 32-d) and PROMPT_THIS_IS decide the
    embeddings the model loads; the tool must build exactly those, not the backbone CLIP's."""
    from gridclip.config import get_gridclip_cfg
    from gridclip.modeling.text.cache import text_encoder_settings

    config = tmp_path / "text_encoder.yaml"
    config.write_text(
        "VERSION: 2\nMODEL:\n"
        f"  CLIP:\n    MODEL_NAME: {TINY_BACKBONE_CLIP}\n    PRETRAINED: ''\n"
        f"  GRIDCLIP:\n    TRAIN_VOCABULARY: voc\n    PROMPT_TEMPLATES: single\n    PROMPT_THIS_IS: True\n"
        f"    TEXT_ENCODER:\n      MODEL_NAME: {TINY_TEACHER_CLIP}\n      PRETRAINED: ''\n"
        f"    EMBEDDINGS_CACHE_DIR: {tmp_path / 'cache'}\n"
    )
    (path,) = tool.main(["--config-file", str(config), "--which", "train", "--no-progress", "--device", "cpu"])
    settings = text_encoder_settings(get_gridclip_cfg(str(config)))
    assert settings["clip_model_name"] == TINY_TEACHER_CLIP and settings["this_is"]
    from gridclip.vocabulary import resolve_vocabulary

    names = resolve_vocabulary("voc")
    expected = text_embeddings_cache_path(
        names, settings["clip_model_name"], settings["pretrained"], settings["templates"], settings["cache_dir"],
        this_is=True,
    )
    assert path == expected
    assert load_text_embeddings_file(path, expected_model=TINY_TEACHER_CLIP).shape == (20, 32)


def test_argument_errors(tool, tmp_path):
    with pytest.raises(SystemExit):
        tool.main(["--vocabulary", "custom"] + TINY)  # names missing
    with pytest.raises(SystemExit):
        tool.main(TINY)  # no vocabulary and no config


def test_command_line_run(repo_root, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRIDCLIP_CACHE=str(tmp_path / "cache"))
    script = os.path.join(repo_root, "tools", "build_text_embeddings.py")
    output = tmp_path / "cli.safetensors"
    run = subprocess.run(
        [sys.executable, script, "--custom-vocabulary", "zebra,traffic_light", "--templates", "single",
         "--output", str(output)] + TINY,
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert f"Wrote {output}" in run.stdout
    assert str(tmp_path / "cache") in run.stdout  # $GRIDCLIP_CACHE used
    emb = load_text_embeddings_file(str(output), expected_names=["zebra", "traffic_light"],
                                    expected_model=TINY_BACKBONE_CLIP)
    assert emb.shape == (2, 64)

    bad = subprocess.run(
        [sys.executable, script, "--vocabulary", "cat,,dog"] + TINY,
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert bad.returncode == 1
    assert "empty category names at positions [1]" in bad.stderr and "Traceback" not in bad.stderr
