"""
GridCLIPTrainer with SOLVER.AMP.ENABLED on CUDA (Detectron2's AMPTrainer: fp16 autocast + GradScaler,
teacher hook on the GPU): the tiny config and the paper's R50 config, random weights, batch 2 at
800×1333, a repeated batch: every loss finite, the total loss falls, the weights move; the peak GPU
memory and step time of the R50 run are reported.
"""
import math

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here); "
                       "tools/gpu_check/run.py runs it on the lent GPU"),
]

ITERATIONS = 20
WINDOW = 5  # mean of the first / last WINDOW total losses


def _train(cfg):
    from detectron2.engine import AMPTrainer

    from gridclip.engine.trainer import GridCLIPTrainer
    from gridclip.utils import unwrap_model

    trainer = GridCLIPTrainer(cfg)
    assert isinstance(trainer._trainer, AMPTrainer), type(trainer._trainer)
    model = unwrap_model(trainer.model)
    assert next(model.parameters()).device.type == "cuda"
    watched = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and n.startswith("head.")}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    torch.cuda.synchronize()
    history = trainer.storage.history
    totals = [v for v, _ in history("total_loss").values()]
    losses = {k: [v for v, _ in h.values()] for k, h in trainer.storage.histories().items() if k.startswith("loss_")}
    moved = [n for n, p in model.named_parameters() if n in watched and not torch.equal(p.detach(), watched[n])]
    step_times = sorted(v for v, _ in history("time").values()) if "time" in trainer.storage.histories() else []
    return {
        "totals": totals,
        "losses": losses,
        "moved": moved,
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
        "step_s_median": step_times[len(step_times) // 2] if step_times else None,
        "scale": trainer._trainer.grad_scaler.get_scale(),
    }


def _check(result):
    totals = result["totals"]
    assert len(totals) == ITERATIONS
    assert all(math.isfinite(v) for v in totals), totals
    for name, values in result["losses"].items():
        assert values and all(math.isfinite(v) for v in values), (name, values)
    assert {"loss_grid", "loss_image", "loss_box_reg", "loss_centerness"} <= set(result["losses"])
    first, last = sum(totals[:WINDOW]) / WINDOW, sum(totals[-WINDOW:]) / WINDOW
    assert last < first, f"total loss did not fall on a repeated batch: first {first:.4f}, last {last:.4f}: {totals}"
    assert result["moved"], "no head parameter changed: every AMP step was skipped (inf/NaN gradients)"
    assert math.isfinite(result["scale"]) and result["scale"] > 0
    return first, last


@pytest.mark.parametrize("config_name", ["GridCLIP-Tiny-Synthetic.yaml", "GridCLIP-R50-FPN-2x.yaml"])
def test_amp_training_lowers_finite_losses(cuda_cfg, cuda_report, config_name):
    cfg = cuda_cfg(config_name, "SOLVER.MAX_ITER", str(ITERATIONS), "SOLVER.STEPS", "()",
                   "SOLVER.WARMUP_ITERS", "2", "SOLVER.BASE_LR", "0.01")
    result = _train(cfg)
    first, last = _check(result)
    cuda_report(f"amp_training[{config_name}]", loss_first=round(first, 4), loss_last=round(last, 4),
                peak_memory_mb=round(result["peak_mb"]), step_s_median=result["step_s_median"],
                grad_scale=result["scale"], batch=2, image_size="800x1333", iterations=ITERATIONS)
