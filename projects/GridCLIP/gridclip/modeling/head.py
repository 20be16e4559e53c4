"""
GridCLIP's dense head (paper Eq. 3).

- ``GridCLIPHead``: Detectron2's ``FCOSHead`` (cls and box towers of NUM_CONVS × conv3×3 + GN + ReLU
  shared over levels, ltrb box deltas, centerness on the box branch) whose classification output
  conv produces D-dim grid embeddings G_i instead of class logits.
- ``TextEmbeddingClassifier``: class logits ``scale · cos(G, T_k) + bias`` against L2-normalised
  text embeddings T (a training and a test vocabulary), one matmul over all levels; at inference
  the same logits with the scale folded into T (``inference_logits``, ``fold_logit_scale``).
- ``ClassifierFCOSHead``: Detectron2's ``FCOSHead`` with learned class logits (GRID_ALIGN off).

Both heads can multiply each level's box-regression output by a learnable scalar
(``MODEL.FCOS.REG_SCALE``; MMDetection's ``FCOSHead.scales``, ``Scale(1.0)`` per level): with
Detectron2's stride-normalised ``Box2BoxTransformLinear`` the decoded distances are then
``relu(s_l · conv(x)) · stride_l``, MMDetection's ``norm_on_bbox`` formula.
"""
import math
from typing import List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.fcos import FCOSHead
from torch import nn
from torch.nn import functional as F

from .text.files import check_text_embeddings

__all__ = ["GridCLIPHead", "ClassifierFCOSHead", "TextEmbeddingClassifier", "fold_logit_scale"]


def fold_logit_scale(text_embeddings: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """[D, K] = (scale · T)ᵀ: the cosine classifier's scale folded into its (normalised) text embeddings."""
    return (text_embeddings.float() * logit_scale.float()).t().contiguous()


class _RegressionScales:
    """Mixin for FCOSHead subclasses: optional learnable per-level scalars on the box deltas."""

    def _init_regression_scales(self, enabled: bool, num_levels: int):
        if enabled:
            # [L] one scalar per level, 1.0 at the start (MMDetection's Scale(1.0)).
            self.reg_scales = nn.Parameter(torch.ones(num_levels))
        else:
            self.register_parameter("reg_scales", None)

    def _scale_box_deltas(self, box_deltas: List[torch.Tensor]) -> List[torch.Tensor]:
        if self.reg_scales is None:
            return box_deltas
        return [deltas * scale for deltas, scale in zip(box_deltas, self.reg_scales.unbind(0))]

    def forward(self, features):
        logits, box_deltas, centerness = super().forward(features)
        return logits, self._scale_box_deltas(box_deltas), centerness


class GridCLIPHead(_RegressionScales, FCOSHead):
    """
    ``forward(features)`` with features a list over levels of [N, C, Hi, Wi] returns
    ``(grid_embeddings, box_deltas, centerness)``: lists over levels of [N, D, Hi, Wi],
    [N, 4, Hi, Wi] and [N, 1, Hi, Wi]. ``cls_score`` is the conv producing the D-dim embeddings.
    """

    @configurable
    def __init__(self, *, input_shape: List[ShapeSpec], conv_dims: List[int], embed_dim: int, norm="GN",
                 reg_scale: bool = False):
        """
        Args:
            input_shape: shapes of the FPN levels the head reads (same channels on every level).
            conv_dims: channels of each tower conv (its length is the number of tower convs).
            embed_dim: D, the dim of the class (text) embeddings the grid embeddings live in.
            norm: tower normalisation ("GN" in FCOS and the paper).
            reg_scale: learnable per-level scalar on the box deltas (MODEL.FCOS.REG_SCALE).
        """
        super().__init__(input_shape=input_shape, conv_dims=conv_dims, num_classes=embed_dim, norm=norm)
        # FCOSHead sets a prior-probability bias on cls_score; here it outputs embeddings, not logits.
        nn.init.constant_(self.cls_score.bias, 0.0)
        self.embed_dim = embed_dim
        self._init_regression_scales(reg_scale, len(input_shape))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec], embed_dim: int):
        return {
            "input_shape": input_shape,
            "conv_dims": [input_shape[0].channels] * cfg.MODEL.FCOS.NUM_CONVS,
            "embed_dim": embed_dim,
            "norm": cfg.MODEL.FCOS.NORM,
            "reg_scale": cfg.MODEL.FCOS.REG_SCALE,
        }


class ClassifierFCOSHead(_RegressionScales, FCOSHead):
    """
    Detectron2's ``FCOSHead`` (learned class logits over the training vocabulary: GRID_ALIGN off)
    with the optional per-level regression scales. ``forward`` returns FCOSHead's
    ``(logits, box_deltas, centerness)``; without ``reg_scale`` it is FCOSHead, parameter for parameter.
    """

    @configurable
    def __init__(self, *, input_shape: List[ShapeSpec], conv_dims: List[int], num_classes: int, norm="GN",
                 prior_prob: float = 0.01, reg_scale: bool = False):
        super().__init__(
            input_shape=input_shape, conv_dims=conv_dims, num_classes=num_classes, norm=norm, prior_prob=prior_prob
        )
        self._init_regression_scales(reg_scale, len(input_shape))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec], num_classes: int):
        return {
            "input_shape": input_shape,
            "conv_dims": [input_shape[0].channels] * cfg.MODEL.FCOS.NUM_CONVS,
            "num_classes": num_classes,
            "norm": cfg.MODEL.FCOS.NORM,
            "prior_prob": cfg.MODEL.FCOS.PRIOR_PROB,
            "reg_scale": cfg.MODEL.FCOS.REG_SCALE,
        }


class TextEmbeddingClassifier(nn.Module):
    """
    Grid-level alignment classifier (Eq. 3): ``logit[n, r, k] = scale · cos(G[n, r], T_k) + bias``.

    The scale is learnable (stored as its log, so it stays positive) and the bias starts at the
    focal-loss prior ``-log((1 - p) / p)``. Text embeddings are L2-normalised once when set and kept
    as non-persistent buffers: checkpoints do not depend on the vocabulary. In training mode the
    training vocabulary is scored, in eval mode the test vocabulary, each test class with its own
    logit offset added (``test_logit_offsets`` [K_test], zeros unless set: the project's
    unseen-class calibration, MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET; not in the paper).
    """

    def __init__(
        self,
        train_embeddings: torch.Tensor,
        test_embeddings: Optional[torch.Tensor] = None,
        *,
        logit_scale_init: float = 1.0 / 0.07,
        learn_logit_scale: bool = True,
        prior_prob: float = 0.01,
    ):
        """
        Args:
            train_embeddings: [K_train, D] text embeddings of the training vocabulary.
            test_embeddings: [K_test, D] of the test vocabulary (None = the training one).
        """
        super().__init__()
        if logit_scale_init <= 0:
            raise ValueError(f"MODEL.GRIDCLIP.LOGIT_SCALE_INIT must be > 0, got {logit_scale_init}.")
        check_text_embeddings(train_embeddings, None, None, "the training vocabulary's text embeddings")
        self.embed_dim = int(train_embeddings.shape[1])
        log_scale = torch.tensor(math.log(logit_scale_init))
        if learn_logit_scale:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)
        self.bias = nn.Parameter(torch.tensor(-math.log((1 - prior_prob) / prior_prob)))
        self.register_buffer("train_embeddings", self._normalise(train_embeddings), persistent=False)
        self.register_buffer("test_embeddings", self.train_embeddings.clone(), persistent=False)
        self.register_buffer("test_logit_offsets", self.train_embeddings.new_zeros(self.num_train_classes),
                             persistent=False)
        if test_embeddings is not None:
            self.set_test_embeddings(test_embeddings)

    @staticmethod
    def _normalise(embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(embeddings.detach().float(), dim=1)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp()

    @property
    def num_train_classes(self) -> int:
        return self.train_embeddings.shape[0]

    @property
    def num_test_classes(self) -> int:
        return self.test_embeddings.shape[0]

    def set_test_embeddings(self, embeddings: torch.Tensor, source: str = "the test vocabulary's text embeddings",
                            logit_offsets: Optional[torch.Tensor] = None):
        """
        Swap the test vocabulary: [K, D] (D must equal the model's embedding dim; ``source`` names them
        in errors) and its per-class logit offsets [K] (None = zeros).
        """
        check_text_embeddings(embeddings, None, self.embed_dim, source)
        device = self.train_embeddings.device
        offsets = torch.zeros(len(embeddings)) if logit_offsets is None else logit_offsets.detach().float().reshape(-1)
        if len(offsets) != len(embeddings):
            raise ValueError(f"{source}: {len(offsets)} logit offsets for {len(embeddings)} classes.")
        self.test_embeddings = self._normalise(embeddings).to(device)
        self.test_logit_offsets = offsets.to(device)

    def forward(self, grid_embeddings: torch.Tensor) -> torch.Tensor:
        """
        Args:
            grid_embeddings: [N, R, D] (R = locations of all levels, concatenated).

        Returns:
            logits: [N, R, K] over the training vocabulary (training mode) or the test one (eval).
        """
        text = self.train_embeddings if self.training else self.test_embeddings
        cosine = F.normalize(grid_embeddings, dim=-1) @ text.to(grid_embeddings.dtype).t()
        if self.training:
            return cosine * self.logit_scale + self.bias
        return cosine * self.logit_scale + (self.bias + self.test_logit_offsets).to(cosine.dtype)

    def inference_logits(self, grid_embeddings: List[torch.Tensor], test_embeddings: Optional[torch.Tensor] = None,
                         test_logit_offsets: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """
        Eq. 3's inference form: the test vocabulary's logits as one ``addmm`` per level with the scale
        folded into the text embeddings, ``logits = bias + normalize(G) @ (scale · T)ᵀ`` (``forward``'s
        ``normalize(G) @ Tᵀ · scale + bias`` without two passes over the [R, K] logits).

        Args:
            grid_embeddings: list over levels of [N, Ri, D]; under autocast their dtype is the autocast
                one, and the [D, K] matrix is cast to it once.
            test_embeddings: [K, D] L2-normalised embeddings to score instead of ``self.test_embeddings``.
            test_logit_offsets: [K] their per-class logit offsets (with ``test_embeddings``; None there =
                zeros); without ``test_embeddings``, ``self.test_logit_offsets``.

        Returns:
            list over levels of [N, Ri, K_test] logits.
        """
        dtype = grid_embeddings[0].dtype
        if test_embeddings is None:
            text, offsets = self.test_embeddings, self.test_logit_offsets
        else:  # a caller's snapshot
            text, offsets = test_embeddings, test_logit_offsets
        scaled_text = fold_logit_scale(text, self.logit_scale).to(dtype)  # [D, K]
        bias = (self.bias if offsets is None else self.bias + offsets.to(self.bias.device)).to(dtype)  # [] or [K]
        logits = []
        for embeddings in grid_embeddings:
            n, r, d = embeddings.shape
            flat = F.normalize(embeddings.reshape(n * r, d), dim=-1)
            logits.append(torch.addmm(bias, flat, scaled_text).view(n, r, -1))
        return logits
