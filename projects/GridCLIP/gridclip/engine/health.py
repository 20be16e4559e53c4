"""
Training health: stop at the first non-finite loss with a message that names the loss term(s) and
the iteration, before the optimizer applies the broken gradients; and, opt-in, how hard the image-level
loss pulls on the shared layers compared with the detection losses (:class:`GradientRatioHook`).

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

from ..utils import unwrap_model

__all__ = [
    "FiniteLossHook", "NonFiniteLossError", "check_losses_finite", "GradientRatioHook", "gradient_ratio_groups",
    "image_vs_detection_gradients", "GRADIENT_RATIO_GROUPS",
]

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


#: parameter groups the image/detection gradient ratio is measured on: name -> module path suffix. Both
#: losses reach them: the attention pool (k, v, c_proj and the positional embedding are shared by z̄ and
#: the grid tokens) and the last ResNet stage.
GRADIENT_RATIO_GROUPS = {"attnpool": "bottom_up.attnpool", "res5": "bottom_up.res5"}
#: the image-level loss term (already weighted: what is back-propagated)
IMAGE_LOSS_KEY = "loss_image"


def gradient_ratio_groups(model: torch.nn.Module, groups: Mapping[str, str] = GRADIENT_RATIO_GROUPS):
    """
    {group name: trainable parameters of the module whose path ends with the group's suffix}; groups
    without trainable parameters (absent, frozen) are left out.
    """
    modules = dict(unwrap_model(model).named_modules())
    found = {}
    for name, suffix in groups.items():
        matches = [m for path, m in modules.items() if path == suffix or path.endswith("." + suffix)]
        params = [p for m in matches[:1] for p in m.parameters() if p.requires_grad]
        if params:
            found[name] = params
    return found


def image_vs_detection_gradients(loss_dict: Mapping[str, torch.Tensor], groups, image_key: str = IMAGE_LOSS_KEY):
    """
    Per parameter group, the gradient of the image-level loss against that of the detection losses (the
    sum of every other term), from one forward pass, without touching ``.grad`` (``torch.autograd.grad``
    with the graph retained, so the training step's own backward still runs on it).

    Args:
        loss_dict: the model's training output ({term: weighted scalar loss}; Eq. 4's terms).
        groups: {name: list of parameters} (:func:`gradient_ratio_groups`).

    Returns:
        {name: {"ratio": |g_image| / |g_detection|, "cosine": cos(g_image, g_detection),
        "image_norm", "detection_norm"}} (floats; ratio inf and cosine nan when a norm is 0).
    """
    image = loss_dict[image_key]
    detection = sum(v for k, v in loss_dict.items() if k != image_key)
    names = list(groups)
    params = [p for n in names for p in groups[n]]
    if not params:
        return {}
    grads = []
    for loss in (image, detection):
        grads.append(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))
    result, start = {}, 0
    for name in names:
        stop = start + len(groups[name])
        g_image, g_detection = (
            torch.cat([(g if g is not None else torch.zeros_like(p)).detach().float().reshape(-1)
                       for g, p in zip(gs[start:stop], params[start:stop])])
            for gs in grads
        )
        image_norm, detection_norm = float(g_image.norm()), float(g_detection.norm())
        dot = float(g_image @ g_detection)
        result[name] = {
            "ratio": image_norm / detection_norm if detection_norm > 0 else math.inf,
            "cosine": dot / (image_norm * detection_norm) if image_norm > 0 and detection_norm > 0 else math.nan,
            "image_norm": image_norm,
            "detection_norm": detection_norm,
        }
        start = stop
    return result


class GradientRatioHook(HookBase):
    """
    Every ``period`` iterations, logs to the event storage (so to metrics.json and the console writer)
    ``health/grad_ratio_image_vs_detection/<group>`` and ``health/grad_cos_image_vs_detection/<group>``
    for the attention pool and res5: how many times stronger the (weighted) image-level loss pulls on
    those shared parameters than the detection losses, and whether the two agree in direction. A ratio
    far above 1 once detection has converged means the image loss dominates the shared layers.
    Detectron2's writers record each key's latest value every 20 iterations, so with a period that is a
    multiple of 20 every measurement reaches metrics.json (a shorter one: the latest before each write).

    It wraps the model's ``forward`` (the module inside DDP) and, on due iterations, takes the two
    gradients from that forward's own loss terms with ``torch.autograd.grad`` (no ``.grad`` written, no
    second forward, no buffer updated): training numbers are unchanged; the cost is two extra partial
    backward passes on those iterations. Nothing is logged without an image loss (IMAGE_ALIGN off).
    """

    def __init__(self, period: int, groups: Mapping[str, str] = GRADIENT_RATIO_GROUPS):
        if int(period) < 1:
            raise ValueError(f"MODEL.GRIDCLIP.GRADIENT_RATIO_PERIOD must be 0 (off) or positive, got {period}.")
        self.period = int(period)
        self._group_paths = dict(groups)
        self._wrapped = None

    def before_train(self):
        model = unwrap_model(self.trainer.model)
        self._groups = gradient_ratio_groups(model, self._group_paths)
        if not self._groups:
            logger.warning("GradientRatioHook: no trainable %s in the model; nothing will be logged.",
                           " / ".join(self._group_paths.values()))
            return
        original = model.forward
        hook = self

        def forward(*args, **kwargs):
            output = original(*args, **kwargs)
            if model.training and isinstance(output, dict) and IMAGE_LOSS_KEY in output and hook._due():
                hook._log(output)
            return output

        model.forward = forward
        self._wrapped = (model, forward)

    def after_train(self):
        if self._wrapped is not None:
            model, forward = self._wrapped
            if model.__dict__.get("forward") is forward:
                del model.forward  # back to the class's forward
            self._wrapped = None

    def _due(self) -> bool:
        return (self.trainer.iter + 1) % self.period == 0

    def _log(self, loss_dict):
        storage = self.trainer.storage
        for name, values in image_vs_detection_gradients(loss_dict, self._groups).items():
            storage.put_scalar(f"health/grad_ratio_image_vs_detection/{name}", values["ratio"], smoothing_hint=False)
            storage.put_scalar(f"health/grad_cos_image_vs_detection/{name}", values["cosine"], smoothing_hint=False)
