"""tools/benchmark.py (gridclip.analysis): GridCLIP vs Detectron2's FCOS-R50 on the same inputs, on CPU at a small size."""
import importlib.util
import json
import os
import textwrap

import pytest
import torch

from gridclip.analysis.benchmark import build_gridclip
from gridclip.analysis.fcos_peer import PEER_NAME, SAME_VOCAB_PEER_NAME
from gridclip.analysis.flops import count_flops
from gridclip.analysis.parameters import random_weights_config
from gridclip.analysis.speedups import speedup_steps
from gridclip.analysis.timing import amp_support, make_inputs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY_CONFIG = textwrap.dedent(
    """
    _BASE_: "{repo}/configs/Base-GridCLIP.yaml"
    MODEL:
      DEVICE: "cpu"
      CLIP:
        MODEL_NAME: "GridCLIP-Tiny-RN"
        PRETRAINED: "openai"  # the benchmark must force random weights (no download)
      GRIDCLIP:
        IMAGE_HEAD_HIDDEN_DIMS: [32, 32]
        TEACHER:
          MODEL_NAME: "GridCLIP-Tiny-ViT"
          PRETRAINED: "openai"
      FPN:
        OUT_CHANNELS: 64
      FCOS:
        NUM_CONVS: 2
    """
)


@pytest.fixture(scope="module")
def benchmark_module():
    spec = importlib.util.spec_from_file_location("gridclip_tools_benchmark", os.path.join(REPO_ROOT, "tools", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG.format(repo=REPO_ROOT))
    return str(path)


def test_benchmark_cpu_small_size_emits_every_field(benchmark_module, tiny_config, tmp_path):
    prefix = tmp_path / "out" / "bench"
    results = benchmark_module.main([
        "--config-file", tiny_config, "--size", "128", "160", "--iters", "1", "--warmup", "0",
        "--train-batch", "2", "--num-train-classes", "5", "--num-test-classes", "9", "--speedups",
        "--precisions", "fp32", "--no-flops",
        "--output", str(prefix),
    ])
    written = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert written == json.loads(json.dumps(results))

    machine = written["machine"]
    assert {"cpu_model", "cpu_cores", "torch_threads", "torch", "torchvision", "device", "gpu_name"} <= set(machine)
    assert machine["device"] == "cpu" and machine["gpu_name"] is None and machine["cpu_cores"] >= 1
    settings = written["settings"]
    assert settings["input_size"] == [128, 160] and settings["train_batch"] == 2
    assert settings["gridclip_classes"] == {"train": 5, "test": 9}
    # The peer decodes with GridCLIP's inference protocol (Base-GridCLIP.yaml), not its own defaults.
    assert settings["peer_postprocess"] == {"test_score_thresh": 0.05, "test_topk_candidates": 1000,
                                            "test_nms_thresh": 0.5, "max_detections_per_image": 300}

    gridclip_name, peer_name, same_name = "tiny", PEER_NAME, SAME_VOCAB_PEER_NAME
    # The fair peer (FCOS-R50 scoring GridCLIP's test vocabulary) comes first after GridCLIP.
    assert list(written["models"]) == [gridclip_name, same_name, peer_name]
    gridclip, peer, same = (written["models"][n] for n in (gridclip_name, peer_name, same_name))
    assert (gridclip["num_train_classes"], gridclip["num_test_classes"]) == (5, 9)
    assert peer["num_train_classes"] == 80 and same["num_test_classes"] == 9
    assert written["flops"] == {} and "flops_vs_fcos_same_vocab" not in written["ratios"]  # --no-flops

    for entry, trained in ((gridclip, True), (same, True), (peer, False)):
        params = entry["parameters"]
        assert params["inference_total"] == sum(p["parameters"] for p in params["parts"] if not p["training_only"])
        fp32 = entry["fp32"]
        inference, train = fp32["inference"], fp32["train"]
        assert inference["latency_ms"] > 0 and inference["fps"] == pytest.approx(1e3 / inference["latency_ms"])
        assert inference["peak_memory_mb"] > 0 and inference["num_detections"] >= 0
        if not trained:  # the 80-class reference row: inference only
            assert "same-vocabulary peer" in train["skipped"]
            continue
        assert train["step_time_s"] > 0 and train["images_per_s"] == pytest.approx(2 / train["step_time_s"])
        assert train["peak_memory_mb"] > 0
        # (AMP inference is not timed here to keep the test short; tests/modeling/test_inference_speedups.py
        # checks its detections. The speed-up ladder below includes it where the CPU supports it.)
        assert "amp" not in entry
    # The teacher hook ran inside GridCLIP's training step and is a share of it.
    train = gridclip["fp32"]["train"]
    assert 0 < train["teacher_time_s"] < train["step_time_s"]
    assert train["teacher_share"] == pytest.approx(train["teacher_time_s"] / train["step_time_s"])
    assert "teacher_share" not in same["fp32"]["train"]
    # The image head is trained, not used at inference: listed, not counted.
    assert [p["part"] for p in gridclip["parameters"]["parts"] if p["training_only"]] == ["image head"]

    ratios = written["ratios"]
    assert ratios["parameters"] == pytest.approx(
        gridclip["parameters"]["inference_total"] / same["parameters"]["inference_total"])
    assert ratios["parameters_vs_fcos_80"] == pytest.approx(
        gridclip["parameters"]["inference_total"] / peer["parameters"]["inference_total"])
    # Ratios are against the fair peer; the 80-class peer's are kept under "fcos_80".
    assert ratios["fp32"]["inference_latency"] == pytest.approx(
        gridclip["fp32"]["inference"]["latency_ms"] / same["fp32"]["inference"]["latency_ms"])
    assert ratios["fp32"]["inference_latency_min"] == pytest.approx(
        gridclip["fp32"]["inference"]["latency_ms_min"] / same["fp32"]["inference"]["latency_ms_min"])
    assert ratios["fcos_80"]["fp32"]["inference_latency"] == pytest.approx(
        gridclip["fp32"]["inference"]["latency_ms"] / peer["fp32"]["inference"]["latency_ms"])
    assert ratios["fp32"]["train_step_time"] == pytest.approx(
        gridclip["fp32"]["train"]["step_time_s"] / same["fp32"]["train"]["step_time_s"])
    assert ratios["latency_vs_fcos_same_vocab"] == ratios["fp32"]["inference_latency"]

    markdown = (tmp_path / "out" / "bench.md").read_text()
    assert machine["cpu_model"] in markdown and "128×160" in markdown
    for row in ("inference latency, mean (ms)", "inference latency, min (ms)", "inference FPS", "train step time (s)", "train images/s",
                "teacher hook share of step", "peak memory", "GridCLIP / FCOS same vocab.", "inference total"):
        assert row in markdown, row
    assert f"{ratios['fp32']['inference_latency']:.2f}×" in markdown

    # --speedups: the cumulative ladder of exact speed-ups keeps the detections of the first step.
    rows = written["speedups"]
    amp_ok = amp_support(torch.device("cpu"), torch.bfloat16) is None
    steps = speedup_steps(False, amp_ok)
    assert [r["step"] for r in rows] == [step[0] for step in steps]
    for row in rows:
        d = row["detections_vs_before"]
        if row["settings"]["autocast"] is None:  # fp32 steps: exact speed-ups, the same detections
            assert d["same_count"] and d["same_classes"] and d["max_box_diff_px"] < 1e-2, row
        assert row["latency_ms_min"] > 0 and row["cpu_ms_min"] > 0 and row["speedup_vs_before_min"] > 0
    assert rows[-1]["settings"]["decoder"] == "bound" and rows[-1]["settings"]["fold_bn"]
    assert "Exact inference speed-ups" in markdown


def test_benchmark_params_only_prints_both_breakdowns(benchmark_module, tiny_config, tmp_path, capsys):
    results = benchmark_module.main(["--config-file", tiny_config, "--params", "--output", str(tmp_path / "p")])
    out = capsys.readouterr().out
    assert "### Parameters: tiny" in out and f"### Parameters: {PEER_NAME}" in out
    assert "Inference parameters ratio (GridCLIP / FCOS same vocabulary)" in out
    # Detectron2's FCOS-R50 with an 80-class GN head: ResNet-50 + FPN + head, about 32 M parameters.
    assert 31e6 < results["models"][PEER_NAME]["parameters"]["inference_total"] < 33e6
    assert "fp32" not in results["models"]["tiny"]
    assert not list(tmp_path.glob("p.*")), "--params writes no files"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--size", "16", "160"], "--size 16 160"),
        (["--config-file", "missing.yaml"], "config file not found: missing.yaml"),
        (["--iters", "0"], "--iters"),
    ],
)
def test_benchmark_rejects_bad_arguments(benchmark_module, tiny_config, capsys, argv, message):
    with pytest.raises(SystemExit):
        benchmark_module.parse_args(["--config-file", tiny_config, *argv])
    assert message in capsys.readouterr().err


def test_flops_and_the_time_over_flop_ratio():
    """fvcore FLOPs (per part, summing to the total) and the ratio fields computed from them."""
    cfg = random_weights_config(os.path.join(REPO_ROOT, "configs", "Base-GridCLIP.yaml"), [
        "MODEL.CLIP.MODEL_NAME", "GridCLIP-Tiny-RN", "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.FCOS.NUM_CONVS", "2",
        "MODEL.GRIDCLIP.IMAGE_HEAD_HIDDEN_DIMS", "[32, 32]", "MODEL.GRIDCLIP.TEACHER.MODEL_NAME", "GridCLIP-Tiny-ViT"])
    test_input, _ = make_inputs(128, 160, 1)
    small = count_flops(build_gridclip(cfg, 5, 9), test_input)
    large = count_flops(build_gridclip(cfg, 5, 90), test_input)
    assert small["total"] == pytest.approx(sum(small["parts"].values())) and small["parts"]["backbone"] > 0
    # The cosine classifier (one addmm per level, not a submodule) grows with the test vocabulary by
    # R x D multiply-adds per class: R = 320 + 80 + 20 + 6 + 2 locations of p3..p7 at 128x160.
    from gridclip.modeling.text.encoding import clip_text_embed_dim

    assert large["total"] - small["total"] == 428 * clip_text_embed_dim("GridCLIP-Tiny-RN") * (90 - 9)
