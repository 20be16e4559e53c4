"""
Training health: stop at the first non-finite loss with a message that names the loss term(s) and
the iteration, before the optimizer applies the broken gradients.

Detectron2's ``SimpleTrainer`` raises ``FloatingPointError("Loss became infinite or NaN ...")`` from
``_write_metrics`` after averaging over processes. :class:`FiniteLossHook` checks each process's own
loss terms first (``_write_metrics`` runs after ``backward`` and before ``optimizer.step``, so the
weights are never updated with NaN/Inf gradients and no checkpoint of the broken step is written).
"""
import logging
import math
from typing import Mapping, Optional

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["FiniteLossHook", "NonFiniteLossError", "check_losses_finite"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or Inf (a ``FloatingPointError``, like Detectron2's)."""


def _as_float(value) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().cpu().reshape(-1)[0]) if value.numel() == 1 else math.nan
    return float(value)


def check_losses_finite(loss_dict: Mapping[str, "torch.Tensor"], iteration: int, hint: str = "") -> None:
    """
    Raise :class:`NonFiniteLossError` naming every NaN/Inf term of ``loss_dict`` and the iteration.

    Args:
        loss_dict: {term name: scalar tensor or float}.
        iteration: the training iteration the losses belong to.
        hint: appended to the message (e.g. the last checkpoint to resume from).
    """
    values = {name: _as_float(v) for name, v in loss_dict.items()}
    bad = {name: v for name, v in values.items() if not math.isfinite(v)}
    if not bad:
        return
    finite = {name: v for name, v in values.items() if name not in bad}
    rank = comm.get_rank()
    where = f" on process {rank}" if comm.get_world_size() > 1 else ""
    message = (
        f"Training stopped at iteration {iteration}{where}: loss term(s) "
        + ", ".join(f"{name}={v}" for name, v in bad.items())
        + " not finite"
        + (f" (finite terms: {', '.join(f'{n}={v:.4g}' for n, v in finite.items())})" if finite else "")
        + ". The optimizer did not apply this step. Common causes: a learning rate too high for the batch "
        "size (SOLVER.BASE_LR, SOLVER.WARMUP_ITERS), fp16 overflow (SOLVER.AMP.ENABLED), or bad inputs "
        "(non-finite teacher / text embeddings, degenerate boxes)."
    )
    if hint:
        message += " " + hint
    raise NonFiniteLossError(message)


class FiniteLossHook(HookBase):
    """
    Checks every iteration's loss terms before the optimizer step and raises
    :class:`NonFiniteLossError` naming the non-finite term(s) and the iteration.

    Works with a ``SimpleTrainer``/``AMPTrainer`` or a ``DefaultTrainer``-like wrapper (``._trainer``):
    it wraps the inner trainer's ``_write_metrics`` (called between ``backward`` and ``step``).
    """

    def __init__(self, checkpointer=None):
        """
        Args:
            checkpointer: optional fvcore ``Checkpointer``; its last checkpoint is named in the error.
        """
        self._checkpointer = checkpointer

    def _inner_trainer(self):
        inner = getattr(self.trainer, "_trainer", self.trainer)
        if not hasattr(inner, "_write_metrics"):
            raise TypeError(
                f"FiniteLossHook needs a Detectron2 SimpleTrainer (with _write_metrics); got {type(inner).__name__}."
            )
        return inner

    def _hint(self) -> str:
        if self._checkpointer is None or not self._checkpointer.has_checkpoint():
            return ""
        return f"The last checkpoint is {self._checkpointer.get_checkpoint_file()}."

    def before_train(self):
        inner = self._inner_trainer()
        original = inner._write_metrics
        if getattr(original, "_finite_loss_checked", False):
            return

        def _write_metrics(loss_dict, data_time, *args, **kwargs):
            check_losses_finite(loss_dict, self.trainer.iter, hint=self._hint())
            try:
                return original(loss_dict, data_time, *args, **kwargs)
            except FloatingPointError as e:
                if isinstance(e, NonFiniteLossError):
                    raise
                # This process's terms were finite: another process produced the NaN/Inf.
                raise NonFiniteLossError(
                    f"Training stopped at iteration {self.trainer.iter}: the loss averaged over processes is "
                    f"not finite although this process's terms are; see the other processes' logs for the "
                    f"term. Detectron2 reported: {e}"
                ) from None

        _write_metrics._finite_loss_checked = True
        inner._write_metrics = _write_metrics
