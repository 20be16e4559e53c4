"""
Exact BatchNorm folding at inference: conv → BN becomes one conv with scaled weights.

At inference a frozen (or eval-mode) BatchNorm is a per-channel affine map ``y = x · s + b`` with
``s = γ / sqrt(var + eps)`` and ``b = β - mean · s``, so ``BN(conv(x)) = conv'(x)`` with weights
``W · s`` and bias ``bias · s + b``. Folding saves the BN's two passes over every activation of the
trunk (about 10 % of a CLIP RN50 trunk on a CPU).

:func:`enable_bn_folding` finds the conv → BN pairs of a module (open_clip's ``ModifiedResNet``:
``convN``/``bnN`` siblings and ``downsample`` = [AvgPool, conv, BN]; Detectron2's ``Conv2d`` with a
``norm``) and switches the classes of both modules to folding-aware subclasses. The folded path runs
only in eval mode with autograd off (``torch.no_grad`` / ``inference_mode``, as every Detectron2
evaluator and predictor runs); training, eval forwards with gradients, parameters, ``state_dict`` keys
and checkpoints are untouched. Folded weights are cached and recomputed when any folded parameter or
buffer changes (``load_state_dict``, an optimizer step, ``.to()``).
"""
from typing import Optional, Tuple

import torch
from detectron2.layers import Conv2d as D2Conv2d
from detectron2.layers import FrozenBatchNorm2d
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["enable_bn_folding", "set_bn_folding", "folded_conv_bn_params", "num_folded_pairs"]


def _foldable_bn(module: nn.Module) -> bool:
    if isinstance(module, FrozenBatchNorm2d):
        return True
    # Eval-mode BatchNorm uses its running statistics: foldable (SyncBatchNorm too).
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats


def _bn_affine(bn: nn.Module) -> Tuple[Tensor, Tensor]:
    """(scale [C], shift [C]) of a BN at inference, fp32."""
    var, mean = bn.running_var.float(), bn.running_mean.float()
    weight = bn.weight.float() if bn.weight is not None else torch.ones_like(var)
    bias = bn.bias.float() if bn.bias is not None else torch.zeros_like(var)
    scale = weight * torch.rsqrt(var + bn.eps)
    return scale, bias - mean * scale


def folded_conv_bn_params(conv: nn.Conv2d, bn: nn.Module) -> Tuple[Tensor, Tensor]:
    """(weight, bias) of the single conv equal to ``bn(conv(x))`` at inference, in the conv's dtype."""
    scale, shift = _bn_affine(bn)
    weight = conv.weight.float() * scale.reshape(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias.float() * scale + shift
    return weight.to(conv.weight.dtype), bias.to(conv.weight.dtype)


def _folding_active(module: nn.Module) -> bool:
    return module._fold_enabled and not module.training and not torch.is_grad_enabled()


class _FoldingConvMixin:
    """
    Adds the cached folded (weight, bias) of the conv and its BN. ``self._fold_bn = [parent, name]``
    names where the BN lives, looked up on every call: if the BN was replaced since (e.g. converted
    to a new FrozenBatchNorm2d), the conv stops folding and the new BN applies itself.
    """

    def _live_bn(self) -> Optional[nn.Module]:
        parent, name = self._fold_bn
        bn = getattr(parent, name, None)
        return bn if isinstance(bn, _FoldedBNMixin) else None

    def _folded_params(self, bn: nn.Module) -> Tuple[Tensor, Tensor]:
        tensors = [self.weight, self.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var]
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors if t is not None)
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return folded_conv_bn_params(self, bn)
        cache = self.__dict__.get("_fold_cache")
        if cache is None or cache[0] != key:
            weight, bias = folded_conv_bn_params(self, bn)
            if self.weight.is_contiguous(memory_format=torch.channels_last):
                weight = weight.contiguous(memory_format=torch.channels_last)
            cache = (key, weight, bias)
            self.__dict__["_fold_cache"] = cache
        return cache[1], cache[2]


class FoldingConv2d(_FoldingConvMixin, nn.Conv2d):
    """``nn.Conv2d`` whose following BN (a sibling module) is folded into it at inference."""

    def forward(self, x):
        bn = self._live_bn() if _folding_active(self) else None
        if bn is not None and bn._fold_enabled:
            weight, bias = self._folded_params(bn)
            return self._conv_forward(x, weight, bias)
        return super().forward(x)


class FoldingD2Conv2d(_FoldingConvMixin, D2Conv2d):
    """Detectron2's ``Conv2d`` (conv → ``norm`` → activation) with ``norm`` folded in at inference."""

    def forward(self, x):
        bn = self._live_bn() if _folding_active(self) else None
        if bn is not None and bn._fold_enabled:
            weight, bias = self._folded_params(bn)
            x = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
            return self.activation(x) if self.activation is not None else x
        return super().forward(x)


class _FoldedBNMixin:
    def forward(self, x):
        if _folding_active(self):
            return x  # already applied by the preceding conv's folded weights
        return super().forward(x)


class FoldedFrozenBatchNorm2d(_FoldedBNMixin, FrozenBatchNorm2d):
    """A FrozenBatchNorm2d folded into the conv before it: identity while folding is active."""


class FoldedBatchNorm2d(_FoldedBNMixin, nn.BatchNorm2d):
    """An (eval-mode) BatchNorm2d folded into the conv before it: identity while folding is active."""


class FoldedSyncBatchNorm(_FoldedBNMixin, nn.SyncBatchNorm):
    """An (eval-mode) SyncBatchNorm folded into the conv before it: identity while folding is active."""


_FOLDED_BN_CLASS = {FrozenBatchNorm2d: FoldedFrozenBatchNorm2d, nn.BatchNorm2d: FoldedBatchNorm2d,
                    nn.SyncBatchNorm: FoldedSyncBatchNorm}


def _pair(parent: nn.Module, conv: nn.Module, bn_name: str) -> bool:
    bn = getattr(parent, bn_name)
    if type(conv) is not nn.Conv2d or type(bn) not in _FOLDED_BN_CLASS or not _foldable_bn(bn):
        return False
    if bn.num_features != conv.out_channels:
        return False
    conv.__class__ = FoldingConv2d
    bn.__class__ = _FOLDED_BN_CLASS[type(bn)]
    conv._fold_bn = [parent, bn_name]  # a plain list: not registered as a second parent of the BN
    conv._fold_enabled = bn._fold_enabled = True
    return True


def _conv_bn_pairs(parent: nn.Module):
    """(conv, name of its bn) sibling pairs whose BN directly follows the conv in ``parent.forward``."""
    children = dict(parent.named_children())
    for name, child in children.items():
        if name.startswith("conv") and ("bn" + name[4:]) in children:
            yield child, "bn" + name[4:]
    if isinstance(parent, nn.Sequential):
        names = list(children)
        for conv_name, bn_name in zip(names, names[1:]):
            yield children[conv_name], bn_name


def enable_bn_folding(module: nn.Module) -> int:
    """
    Make every foldable conv → BN pair of ``module`` fold at inference (see the module docstring).
    Call after the BNs have their final class (e.g. after freezing). Returns the number of pairs.
    """
    count = 0
    for parent in list(module.modules()):
        if type(parent) is D2Conv2d and parent.norm is not None and type(parent.norm) in _FOLDED_BN_CLASS \
                and _foldable_bn(parent.norm):
            parent.__class__ = FoldingD2Conv2d
            parent._fold_bn = [parent, "norm"]
            parent.norm.__class__ = _FOLDED_BN_CLASS[type(parent.norm)]
            parent.norm._fold_enabled = True
            parent._fold_enabled = True
            count += 1
            continue
        for conv, bn_name in list(_conv_bn_pairs(parent)):
            count += _pair(parent, conv, bn_name)
    return count


def set_bn_folding(module: nn.Module, enabled: bool) -> int:
    """Switch folding on or off for the pairs set up by :func:`enable_bn_folding`; returns how many."""
    count = 0
    for m in module.modules():
        if isinstance(m, (_FoldingConvMixin, _FoldedBNMixin)):
            m._fold_enabled = bool(enabled)
            count += isinstance(m, _FoldingConvMixin)
    return count


def num_folded_pairs(module: nn.Module) -> int:
    return sum(isinstance(m, _FoldingConvMixin) for m in module.modules())
