"""
GridCLIP's optimizer: Detectron2's ``build_optimizer`` (SGD, param groups from
``get_default_optimizer_params``) plus global-norm gradient clipping.

``SOLVER.CLIP_GRADIENTS.CLIP_TYPE``:

- ``"value"`` / ``"norm"``: Detectron2's clippers, applied to EACH parameter's gradient separately
  (``"norm"`` with CLIP_VALUE 35 bounds every tensor's gradient norm by 35, not their joint norm);
- ``"full_model"``: one ``torch.nn.utils.clip_grad_norm_`` over all parameters' gradients together,
  i.e. MMDetection's ``optimizer_config = dict(grad_clip=dict(max_norm=35, norm_type=2))`` (mmcv's
  ``OptimizerHook.clip_grads``), which the FCOS configs of MMDetection 2.x use.

The clipping runs inside ``optimizer.step()``, so with AMP it sees the gradients after the grad
scaler's ``unscale_`` (``GradScaler.step`` unscales before calling ``step``).

Warm-up needs nothing here: Detectron2's ``SOLVER.WARMUP_METHOD`` "constant" and "linear" are
MMDetection's ``warmup='constant'`` (lr · ratio for the first WARMUP_ITERS iterations) and
``warmup='linear'`` (lr · (1 - (1 - i / WARMUP_ITERS) · (1 - ratio))), with WARMUP_FACTOR = ratio.
"""
from typing import Type

import torch
from detectron2.solver import build_optimizer as d2_build_optimizer

__all__ = ["build_optimizer", "add_global_norm_clipping", "GLOBAL_NORM_CLIP_TYPE"]

GLOBAL_NORM_CLIP_TYPE = "full_model"
_CLIP_TYPES = ("value", "norm", GLOBAL_NORM_CLIP_TYPE)


def add_global_norm_clipping(optimizer: torch.optim.Optimizer, max_norm: float, norm_type: float = 2.0):
    """
    Make ``optimizer.step()`` first clip the global ``norm_type``-norm of the gradients of all its
    parameters to ``max_norm`` (``torch.nn.utils.clip_grad_norm_``). Changes ``optimizer``'s class in
    place (as Detectron2's ``maybe_add_gradient_clipping`` does); its state dict is unchanged.

    Returns:
        the same optimizer.
    """
    if max_norm <= 0:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0 for global-norm clipping, got {max_norm}.")
    base: Type[torch.optim.Optimizer] = type(optimizer)

    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm, norm_type=norm_type)
        return base.step(self, closure)

    optimizer.__class__ = type(base.__name__ + "WithGlobalNormClipping", (base,), {"step": step})
    return optimizer


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """
    Detectron2's optimizer for ``model``; with SOLVER.CLIP_GRADIENTS.ENABLED and CLIP_TYPE
    "full_model", global-norm clipping at CLIP_VALUE (NORM_TYPE) instead of Detectron2's per-parameter
    clipping.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE not in _CLIP_TYPES:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be one of {_CLIP_TYPES}, got {clip.CLIP_TYPE!r}.")
    if not (clip.ENABLED and clip.CLIP_TYPE == GLOBAL_NORM_CLIP_TYPE):
        return d2_build_optimizer(cfg, model)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    return add_global_norm_clipping(d2_build_optimizer(cfg, model), clip.CLIP_VALUE, clip.NORM_TYPE)
