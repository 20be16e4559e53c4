"""
Optimizer / schedule switches checked against MMDetection's (mmcv's) formulas:
global-norm gradient clipping (CLIP_TYPE "full_model") vs Detectron2's per-parameter "norm", and
constant vs linear warm-up.
"""
import pytest
import torch
from detectron2.solver import build_lr_scheduler

import gridclip
from gridclip.engine.solver import build_optimizer

from ..conftest import set_cfg_values


class _TwoTensors(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(3))
        self.b = torch.nn.Parameter(torch.zeros(2, 2))


def _cfg(**overrides):
    cfg = gridclip.get_gridclip_cfg()
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.MOMENTUM = 0.0
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.BIAS_LR_FACTOR = 1.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 35.0
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    return set_cfg_values(cfg, overrides)


def _step(cfg, grads):
    model = _TwoTensors()
    optimizer = build_optimizer(cfg, model)
    model.a.grad, model.b.grad = grads[0].clone(), grads[1].clone()
    optimizer.step()
    return [-model.a.detach(), -model.b.detach()]  # lr 1, no momentum: the applied gradient


def _mmcv_clip_grads(grads, max_norm=35.0, eps=1e-6):
    """mmcv OptimizerHook.clip_grads = torch clip_grad_norm_: one coefficient from the joint L2 norm."""
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    coefficient = min(1.0, max_norm / (float(total) + eps))
    return [g * coefficient for g in grads]


GRADS = [torch.tensor([30.0, 0.0, 10.0]), torch.tensor([[20.0, 5.0], [0.0, 1.0]])]  # norms 31.6, 20.6; joint 37.7


def test_full_model_clipping_is_mmdetection_global_norm_clipping():
    applied = _step(_cfg(**{"SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model"}), GRADS)
    expected = _mmcv_clip_grads(GRADS)
    for a, e in zip(applied, expected):
        assert torch.allclose(a, e, atol=1e-5)
    assert float(torch.sqrt(sum((a ** 2).sum() for a in applied))) == pytest.approx(35.0, rel=1e-4)


def test_detectron2_norm_clipping_is_per_parameter_and_differs():
    applied = _step(_cfg(**{"SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "norm"}), GRADS)
    # each tensor is below 35 on its own, so Detectron2's per-parameter clipping leaves both unchanged
    for a, g in zip(applied, GRADS):
        assert torch.allclose(a, g)
    assert not torch.allclose(applied[0], _mmcv_clip_grads(GRADS)[0])


def test_unknown_clip_type_is_a_clear_error():
    with pytest.raises(ValueError, match="CLIP_TYPE"):
        build_optimizer(_cfg(**{"SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "global"}), _TwoTensors())


def _mmcv_warmup_lr(iteration, base_lr, method, warmup_iters, ratio):
    """mmcv LrUpdaterHook.get_warmup_lr (regular lr = base_lr before the first step)."""
    if iteration >= warmup_iters:
        return base_lr
    if method == "constant":
        return base_lr * ratio
    k = (1 - iteration / warmup_iters) * (1 - ratio)
    return base_lr * (1 - k)


@pytest.mark.parametrize("method", ["constant", "linear"])
def test_warmup_matches_mmdetection(method):
    cfg = _cfg(**{
        "SOLVER.WARMUP_METHOD": method, "SOLVER.WARMUP_ITERS": 500, "SOLVER.WARMUP_FACTOR": 1.0 / 3,
        "SOLVER.BASE_LR": 0.01, "SOLVER.MAX_ITER": 1000, "SOLVER.STEPS": (800,),
        "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    })
    model = _TwoTensors()
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(600):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for it in (0, 1, 250, 499, 500, 599):
        assert lrs[it] == pytest.approx(_mmcv_warmup_lr(it, 0.01, method, 500, 1.0 / 3), rel=1e-6), it


def test_base_config_comments_state_the_recipe_that_runs(repo_root):
    """The comment above CLIP_GRADIENTS / WARMUP_METHOD in Base-GridCLIP.yaml describes what the code runs."""
    import os

    path = os.path.join(repo_root, "configs", "Base-GridCLIP.yaml")
    cfg = gridclip.get_gridclip_cfg(path)
    lines = open(path).read().splitlines()

    def comment_above(key):
        i = next(n for n, line in enumerate(lines) if line.strip().startswith(key + ":"))
        block = []
        while i > 0 and lines[i - 1].strip().startswith("#"):
            i -= 1
            block.insert(0, lines[i].strip("# "))
        return " ".join(block)

    clip_comment = comment_above("CLIP_GRADIENTS")
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE in ("norm", "full_model")
    if cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "norm":
        assert "EACH parameter" in clip_comment and '"full_model"' in clip_comment
    warmup_comment = comment_above("WARMUP_METHOD")
    assert cfg.SOLVER.WARMUP_METHOD.upper() in warmup_comment.split("(")[0]
