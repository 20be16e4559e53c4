"""
tools/train_net.py --num-gpus 1 on CUDA with the embedded default (configs/GridCLIP-Tiny-Synthetic.yaml,
short schedule, AMP): trains with the teacher hook, checkpoints (AMP grad-scaler state included),
evaluates with LVISEvaluator; --eval-only of the checkpoint on CUDA gives the same AP; and
GridCLIPPredictor on CUDA returns the CPU's detections within tolerance.
"""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here); "
                       "dev/gpu_check/run.py runs it on the lent GPU"),
]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
EMBEDDED_DEFAULT = os.path.join(REPO, "configs", "GridCLIP-Tiny-Synthetic.yaml")
RANDOM_WEIGHTS = ["MODEL.CLIP.PRETRAINED", "", "MODEL.GRIDCLIP.TEACHER.PRETRAINED", ""]
SHORT_SCHEDULE = RANDOM_WEIGHTS + [
    "MODEL.DEVICE", "cuda",
    "SOLVER.AMP.ENABLED", "True",
    "SOLVER.MAX_ITER", "60",
    "SOLVER.STEPS", "(50,)",
    "SOLVER.WARMUP_ITERS", "10",
    "SOLVER.CHECKPOINT_PERIOD", "30",
    "DATALOADER.NUM_WORKERS", "2",
]
COPYPASTE = re.compile(r"copypaste: ([-0-9.,na]+)\s*$", flags=re.M)


def run_train_net(workdir, *args):
    env = dict(os.environ, DETECTRON2_DATASETS=str(workdir / "datasets"), GRIDCLIP_CACHE=str(workdir / "cache"),
               HF_HUB_OFFLINE="1")
    cmd = [sys.executable, TRAIN_NET, "--config-file", EMBEDDED_DEFAULT, "--num-gpus", "1", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=str(workdir))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    return output


def last_metrics(output):
    lines = COPYPASTE.findall(output)
    assert lines, "no evaluation results printed"
    return [float(v) for v in lines[-1].split(",")]


def _find_key(tree, key):
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("train_net_cuda")
    output_dir = workdir / "output"
    log = run_train_net(workdir, *SHORT_SCHEDULE, "OUTPUT_DIR", str(output_dir))
    return workdir, output_dir, log


def test_train_net_trains_checkpoints_and_evaluates_on_cuda(trained, cuda_report):
    workdir, output_dir, log = trained
    from gridclip.world import world_dataset_paths

    assert os.path.isfile(world_dataset_paths(workdir / "datasets" / "world")["val_json"])
    assert (output_dir / "model_0000029.pth").is_file() and (output_dir / "model_final.pth").is_file()
    checkpoint = torch.load(output_dir / "model_final.pth", map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == 59
    assert not any("teacher" in k for k in checkpoint["model"])
    scaler = _find_key(checkpoint, "grad_scaler")  # AMPTrainer's GradScaler state: AMP really trained
    assert scaler is not None, f"no AMP grad-scaler state in the checkpoint (keys {sorted(checkpoint)})"
    assert math.isfinite(float(scaler["scale"])) and scaler["scale"] > 0, scaler
    records = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    teacher = [r["time/teacher"] for r in records if "time/teacher" in r]
    totals = [r["total_loss"] for r in records if "total_loss" in r]
    assert teacher and all(t > 0 for t in teacher)
    assert totals and all(math.isfinite(v) for v in totals)
    metrics = last_metrics(log)
    assert len(metrics) == 9 and all(v == v for v in metrics), metrics  # AP .. APf, no NaN
    assert "AP_r" in log and "AP_c" in log
    cuda_report("train_net_cuda", ap=metrics[0], iterations=60, teacher_ms_last=round(teacher[-1] * 1e3, 2),
                loss_first=round(totals[0], 4), loss_last=round(totals[-1], 4))


def test_eval_only_on_cuda_reproduces_the_training_evaluation(trained):
    workdir, output_dir, log = trained
    evaluated = run_train_net(workdir, "--eval-only", *RANDOM_WEIGHTS, "MODEL.DEVICE", "cuda",
                              "MODEL.WEIGHTS", str(output_dir / "model_final.pth"), "OUTPUT_DIR", str(workdir / "eval"))
    after_training, eval_only = last_metrics(log), last_metrics(evaluated)
    for a, b in zip(after_training, eval_only):
        assert (a != a and b != b) or abs(a - b) <= 0.5, (after_training, eval_only)


def _matches(cpu, gpu, top=20):
    """Each of the CPU's ``top`` best detections has a CUDA detection of its class, box and score."""
    from detectron2.structures import Boxes, pairwise_iou

    assert len(cpu) > 0 and len(gpu) > 0
    order = torch.argsort(cpu.scores, descending=True)[:top]
    iou = pairwise_iou(Boxes(cpu.boxes[order]), Boxes(gpu.boxes))
    same_class = cpu.class_ids[order][:, None] == gpu.class_ids[None, :]
    close_score = (cpu.scores[order][:, None] - gpu.scores[None, :]).abs() <= 2e-3
    candidates = (iou >= 0.98) & same_class & close_score
    unmatched = (~candidates.any(dim=1)).nonzero().flatten().tolist()
    assert not unmatched, f"CPU detections {unmatched} of the top {top} have no CUDA counterpart"
    # Grid embeddings of the best match agree too.
    best = torch.where(candidates, iou, torch.zeros_like(iou)).argmax(dim=1)
    cosine = (cpu.grid_embeddings[order] * gpu.grid_embeddings[best]).sum(dim=1)
    assert cosine.min().item() >= 0.999, cosine.min().item()
    return len(order)


def test_predictor_on_cuda_equals_cpu(trained, monkeypatch, cuda_report):
    from gridclip import GridCLIPPredictor

    workdir, output_dir, _ = trained
    monkeypatch.setenv("DETECTRON2_DATASETS", str(workdir / "datasets"))
    monkeypatch.setenv("GRIDCLIP_CACHE", str(workdir / "cache"))
    from gridclip.world import world_dataset_paths

    val_images = world_dataset_paths(workdir / "datasets" / "world")["val_images"]
    paths = [os.path.join(val_images, name) for name in sorted(os.listdir(val_images))[:4]]
    assert len(paths) == 4
    weights = str(output_dir / "model_final.pth")
    # Threshold 0: 300 detections per image, so the compared top 20 sit far from the cut-off.
    results = {
        device: GridCLIPPredictor(EMBEDDED_DEFAULT, weights, opts=RANDOM_WEIGHTS, device=device,
                                  confidence_threshold=0.0).predict(paths)
        for device in ("cpu", "cuda")
    }
    compared = sum(_matches(c, g) for c, g in zip(results["cpu"], results["cuda"]))
    assert compared >= 4
    max_diff = max((c.scores.max() - g.scores.max()).abs().item() for c, g in zip(results["cpu"], results["cuda"]))
    cuda_report("predictor_cuda_vs_cpu", images=len(paths), compared_detections=compared,
                max_top_score_diff=round(max_diff, 6))
