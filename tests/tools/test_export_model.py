"""tools/export_model.py: TorchScript and ONNX exports of a tiny GridCLIP reproduce the PyTorch detections."""
import importlib.util
import os
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY_CONFIG = textwrap.dedent(
    """
    _BASE_: "{repo}/configs/Base-GridCLIP.yaml"
    MODEL:
      DEVICE: "cpu"
      WEIGHTS: ""
      CLIP:
        MODEL_NAME: "GridCLIP-Tiny-RN"
        PRETRAINED: ""
      GRIDCLIP:
        TRAIN_VOCABULARY: "cat,dog,red umbrella"
        PROMPT_TEMPLATES: "single"
        ADAPTER_CHANNELS: 32
        IMAGE_HEAD_HIDDEN_DIMS: [32, 32]
        EMBEDDINGS_CACHE_DIR: "{cache}"
        TEACHER:
          MODEL_NAME: "GridCLIP-Tiny-ViT"
          PRETRAINED: ""
      FPN:
        OUT_CHANNELS: 32
      FCOS:
        NUM_CONVS: 2
    DATASETS:
      TRAIN: ()
      TEST: ()
    """
)


@pytest.fixture(scope="module")
def export_tool():
    spec = importlib.util.spec_from_file_location("gridclip_tools_export", os.path.join(REPO_ROOT, "tools", "export_model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG.format(repo=REPO_ROOT, cache=tmp_path / "cache"))
    return str(path)


def test_torchscript_and_onnx_reproduce_pytorch_detections(export_tool, tiny_config, tmp_path):
    import torch

    formats = ["torchscript"]
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        formats.append("onnx")
    torch.manual_seed(0)
    report = export_tool.main(["--config-file", tiny_config, "--size", "128", "160", "--format", *formats,
                               "--output", str(tmp_path / "export"), "--vocabulary", "cat,dog,umbrella,kite"])
    assert report["class_names"] == ["cat", "dog", "umbrella", "kite"] and report["input"]["shape"] == [3, 128, 160]
    for fmt in formats:
        check = report["checks"][fmt]
        assert os.path.isfile(report["files"][fmt])
        assert check["num_detections"] > 0 and check["same_detections"] and check["matched"] == 1.0, check
        assert check["max_box_diff_px"] < 1e-2 and check["max_score_diff"] < 1e-5, check
    # The TorchScript file is self-contained: a fresh load runs without GridCLIP's Python code.
    loaded = torch.jit.load(report["files"]["torchscript"])
    boxes, classes, scores, _ = loaded(torch.zeros(3, 128, 160, dtype=torch.uint8))
    assert boxes.shape[1] == 4 and len(classes) == len(scores)
    if "onnx" not in formats:
        pytest.skip("onnx / onnxruntime not installed (optional, requirements.txt): ONNX export not checked")


def test_existing_outputs_are_never_overwritten(export_tool, tiny_config, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.ts").write_text("keep me")
    argv = ["--config-file", tiny_config, "--size", "64", "64", "--format", "torchscript", "--output", str(out)]
    assert export_tool.run_tool(export_tool.cli_main, argv, prog="export_model.py") == 1  # the command line's exit status
    err = capsys.readouterr().err
    assert "model.ts exists" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (out / "model.ts").read_text() == "keep me"
