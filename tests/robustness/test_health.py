"""
Training health: a NaN/Inf loss stops training with a message naming the loss term(s) and the
iteration, before the optimizer applies the broken step.
"""
import math

import pytest
import torch
from detectron2.engine import HookBase, SimpleTrainer
from torch import nn

from gridclip.engine.health import FiniteLossHook, NonFiniteLossError, check_losses_finite
from gridclip.engine.trainer import GridCLIPTrainer


class TwoTermModel(nn.Module):
    """loss_box = (w·x)², loss_cls = |w|·scale; a batch {"x", "scale"} controls where NaN/Inf appears."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, batch):
        return {"loss_box": (self.w * batch["x"]).sum() ** 2, "loss_cls": self.w.abs().sum() * batch["scale"]}


def _batches(bad_iteration, bad_value):
    i = 0
    while True:
        scale = bad_value if i == bad_iteration else 1.0
        yield {"x": torch.full((3,), 0.1), "scale": torch.tensor(scale)}
        i += 1


class _Snapshots(HookBase):
    def __init__(self):
        self.weights = {}

    def after_step(self):
        self.weights[self.trainer.iter] = self.trainer.model.w.detach().clone()


@pytest.mark.parametrize("bad_value", [math.nan, math.inf])
def test_non_finite_term_and_iteration_are_named_and_the_step_is_not_applied(bad_value):
    model = TwoTermModel()
    trainer = SimpleTrainer(model, _batches(3, bad_value), torch.optim.SGD(model.parameters(), lr=0.1))
    snapshots = _Snapshots()
    trainer.register_hooks([FiniteLossHook(), snapshots])
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train(0, 10)
    message = str(info.value)
    assert "iteration 3" in message
    assert f"loss_cls={bad_value}" in message
    assert "loss_box=" in message.split("finite terms:")[1]  # the finite term is shown as context
    assert isinstance(info.value, FloatingPointError)  # callers catching Detectron2's error still work
    assert sorted(snapshots.weights) == [0, 1, 2]
    assert torch.equal(model.w.detach(), snapshots.weights[2])  # the broken step was not applied
    assert torch.isfinite(model.w).all()


def test_several_bad_terms_are_all_named():
    with pytest.raises(NonFiniteLossError, match=r"iteration 17: loss term\(s\) a=nan, c=-inf not finite"):
        check_losses_finite({"a": torch.tensor(math.nan), "b": torch.tensor(1.0), "c": -math.inf}, 17)
    check_losses_finite({"a": torch.tensor(0.5)}, 0)  # finite: no error


def test_gridclip_trainer_stops_naming_loss_image_and_the_last_checkpoint(tiny_cfg, tmp_path):
    cfg = tiny_cfg("SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 1)
    cfg.OUTPUT_DIR = str(tmp_path / "run")
    trainer = GridCLIPTrainer(cfg)
    assert any(isinstance(h, FiniteLossHook) for h in trainer._hooks)
    trainer.resume_or_load(resume=False)

    calls = []

    def nan_after_first_step(module, inputs, output):
        calls.append(1)
        return output * math.nan if len(calls) == 2 else output

    trainer.model.image_head.register_forward_hook(nan_after_first_step)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    message = str(info.value)
    assert "iteration 1" in message and "loss_image=nan" in message
    assert "loss_grid" in message.split("finite terms:")[1]
    checkpoint = str(tmp_path / "run" / "model_0000000.pth")
    assert f"The last checkpoint is {checkpoint}" in message
    saved = torch.load(checkpoint, weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
