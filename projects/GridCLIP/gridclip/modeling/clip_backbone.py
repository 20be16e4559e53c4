"""
GridCLIP's backbone: CLIP ResNet trunk + dense attention pool (Eq. 1) + grid adapter fused into C5,
then Detectron2's FPN over C3, C4, [z', C5] giving P3..P7 (Eq. 2).

Backbone output (a dict, as every Detectron2 backbone):

- ``"p3"`` .. ``"p7"``: [B, 256, H/s, W/s] FPN features (the only keys in ``output_shape()``);
- ``"clip_image_embedding"`` (``IMAGE_EMBEDDING_KEY``): z̄, [B, D] (only with the attention pool);
- ``"clip_grid_embedding"`` (``GRID_EMBEDDING_KEY``): z, [B, D, H/32, W/32] (only with the pool).

Also registered: ``build_resnet_fcos_fpn_backbone``, Detectron2's own ResNet with the same FPN/P6-P7
layout (Table 4's ImageNet-R50 row).
"""
import math
from typing import Dict, Optional

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from open_clip.modified_resnet import ModifiedResNet
from torch import nn
from torch.nn import functional as F

from .clip_loading import create_clip_model
from .dense_attention_pool import DenseAttentionPool

__all__ = [
    "IMAGE_EMBEDDING_KEY",
    "GRID_EMBEDDING_KEY",
    "CLIPResNet",
    "GridAdapter",
    "GridCLIPFPN",
    "build_clip_resnet_backbone",
    "build_clip_resnet_fpn_backbone",
    "build_resnet_fcos_fpn_backbone",
]

IMAGE_EMBEDDING_KEY = "clip_image_embedding"
GRID_EMBEDDING_KEY = "clip_grid_embedding"
_PASS_THROUGH_KEYS = (IMAGE_EMBEDDING_KEY, GRID_EMBEDDING_KEY)


class CLIPStem(nn.Module):
    """open_clip ModifiedResNet's stem: 3 × (conv3×3 + BN + ReLU) then 2×2 avg pool (stride 4)."""

    def __init__(self, visual: ModifiedResNet):
        super().__init__()
        for name in ("conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "bn3", "act3", "avgpool"):
            setattr(self, name, getattr(visual, name))
        self.out_channels = visual.conv3.out_channels
        self.stride = 4

    def forward(self, x):
        """[B, 3, H, W] -> [B, width, H/4, W/4]"""
        return ModifiedResNet.stem(self, x)


class GridAdapter(nn.Sequential):
    """
    z -> z' (Eq. 2): 3 × conv3×3 (D -> C -> C -> C), ReLU after each (after the last one only if
    ``final_relu``). [B, D, H, W] -> [B, C, H, W].
    """

    def __init__(self, in_channels: int, out_channels: int = 256, final_relu: bool = True):
        layers = []
        for i, channels_in in enumerate([in_channels, out_channels, out_channels]):
            conv = nn.Conv2d(channels_in, out_channels, kernel_size=3, padding=1)
            weight_init.c2_msra_fill(conv)
            layers.append(conv)
            if i < 2 or final_relu:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


def _convert_norm(module: nn.Module, norm: str) -> nn.Module:
    if norm == "FrozenBN":
        return FrozenBatchNorm2d.convert_frozen_batchnorm(module)
    if norm == "SyncBN":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if norm == "BN":
        return module
    raise ValueError(f"MODEL.CLIP.NORM must be 'FrozenBN', 'BN' or 'SyncBN', got {norm!r}.")


class CLIPResNet(Backbone):
    """
    Bottom-up network: CLIP's ModifiedResNet trunk (stem, res2..res5 = layer1..layer4), optionally its
    attention pool run densely (``DenseAttentionPool``) and the grid adapter whose output z' is
    concatenated to C5.

    ``forward(x)`` with x [B, 3, H, W] (H, W multiples of 32) returns
    ``res2..res5`` (as requested by ``out_features``; with the pool, "res5" is [z', C5] with
    C5 + adapter channels), plus ``IMAGE_EMBEDDING_KEY`` z̄ [B, D] and ``GRID_EMBEDDING_KEY``
    z [B, D, H/32, W/32] when the pool is used.
    """

    def __init__(
        self,
        visual: ModifiedResNet,
        *,
        out_features=("res3", "res4", "res5"),
        use_mhsa: bool = True,
        adapter_channels: int = 256,
        adapter_final_relu: bool = True,
        freeze_at: int = 0,
        norm: str = "FrozenBN",
    ):
        super().__init__()
        if not isinstance(visual, ModifiedResNet):
            raise TypeError(
                f"The CLIP backbone needs an open_clip ResNet CLIP (ModifiedResNet visual tower), got "
                f"{type(visual).__name__}; use a model such as 'RN50-quickgelu' for MODEL.CLIP.MODEL_NAME."
            )
        self.stem = CLIPStem(visual)
        self.stage_names = ["res2", "res3", "res4", "res5"]
        for name, layer in zip(self.stage_names, [visual.layer1, visual.layer2, visual.layer3, visual.layer4]):
            self.add_module(name, layer)
        unknown = [f for f in out_features if f not in self.stage_names]
        if unknown:
            raise ValueError(f"CLIPResNet outputs {self.stage_names}; cannot output {unknown}.")
        self._out_features = list(out_features)

        self.attnpool: Optional[DenseAttentionPool] = None
        self.grid_adapter: Optional[GridAdapter] = None
        if use_mhsa:
            self.attnpool = DenseAttentionPool.from_attention_pool(visual.attnpool)
            self.grid_adapter = GridAdapter(self.attnpool.output_dim, adapter_channels, adapter_final_relu)

        channels = {"res2": visual.layer1[-1].bn3.num_features, "res3": visual.layer2[-1].bn3.num_features,
                    "res4": visual.layer3[-1].bn3.num_features, "res5": visual.layer4[-1].bn3.num_features}
        self.c5_channels = channels["res5"]
        if self.grid_adapter is not None:
            channels["res5"] += self.grid_adapter.out_channels
        self._out_feature_channels = channels
        self._out_feature_strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}

        for name in ["stem"] + self.stage_names:
            setattr(self, name, _convert_norm(getattr(self, name), norm))
        self.freeze(freeze_at)

    @property
    def image_embedding_dim(self) -> Optional[int]:
        """D of z̄ / z (CLIP embedding dim), or None without the attention pool."""
        return None if self.attnpool is None else self.attnpool.output_dim

    @property
    def size_divisibility(self) -> int:
        return 32

    def freeze(self, freeze_at: int = 0):
        """
        Freeze the first ``freeze_at`` stages (1 = stem, 2 = stem + res2, ..., 5 = whole trunk):
        parameters get requires_grad False and their BatchNorms become FrozenBatchNorm2d.
        The attention pool and adapter are never frozen by this.
        """
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"MODEL.BACKBONE.FREEZE_AT must be in 0..5 for the CLIP ResNet, got {freeze_at}.")
        for idx, name in enumerate(["stem"] + self.stage_names, start=1):
            if freeze_at >= idx:
                module = FrozenBatchNorm2d.convert_frozen_batchnorm(getattr(self, name))
                for p in module.parameters():
                    p.requires_grad_(False)
                setattr(self, name, module)
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"CLIPResNet expects images [B, 3, H, W], got {tuple(x.shape)}.")
        outputs = {}
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outputs[name] = x
        if self.attnpool is not None:
            image_embedding, grid_embedding = self.attnpool(outputs["res5"])
            outputs[IMAGE_EMBEDDING_KEY] = image_embedding
            outputs[GRID_EMBEDDING_KEY] = grid_embedding
            outputs["res5"] = torch.cat([self.grid_adapter(grid_embedding), outputs["res5"]], dim=1)
        keep = set(self._out_features) | set(_PASS_THROUGH_KEYS)
        return {k: v for k, v in outputs.items() if k in keep}


class GridCLIPFPN(FPN):
    """
    Detectron2's FPN that also passes the bottom-up's ``IMAGE_EMBEDDING_KEY`` / ``GRID_EMBEDDING_KEY``
    through to its output dict. The pyramid computation is FPN.forward's, split out so the bottom-up
    runs once.
    """

    @property
    def image_embedding_dim(self) -> Optional[int]:
        return getattr(self.bottom_up, "image_embedding_dim", None)

    def forward(self, x):
        bottom_up_features = self.bottom_up(x)
        outputs = self.pyramid(bottom_up_features)
        outputs.update({k: bottom_up_features[k] for k in _PASS_THROUGH_KEYS if k in bottom_up_features})
        return outputs

    def pyramid(self, bottom_up_features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The top-down + lateral + top-block computation of ``FPN.forward`` on given bottom-up features."""
        results = []
        prev_features = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results.append(self.output_convs[0](prev_features))
        for idx, (lateral_conv, output_conv) in enumerate(zip(self.lateral_convs, self.output_convs)):
            if idx > 0:
                features = bottom_up_features[self.in_features[-idx - 1]]
                top_down_features = F.interpolate(prev_features, scale_factor=2.0, mode="nearest")
                prev_features = lateral_conv(features) + top_down_features
                if self._fuse_type == "avg":
                    prev_features /= 2
                results.insert(0, output_conv(prev_features))
        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_block_in_feature = bottom_up_features[self.top_block.in_feature]
            else:
                top_block_in_feature = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_block_in_feature))
        assert len(self._out_features) == len(results)
        return dict(zip(self._out_features, results))


def _build_fcos_fpn(cfg, bottom_up: Backbone) -> GridCLIPFPN:
    """FPN over MODEL.FPN.IN_FEATURES plus P6/P7 from P5 or from the last bottom-up feature (TOP_BLOCK_IN)."""
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    top_block_in = cfg.MODEL.FPN.TOP_BLOCK_IN.lower()
    last = in_features[-1]
    if top_block_in == "p5":
        top_block = LastLevelP6P7(out_channels, out_channels, in_feature="p" + str(int(math.log2(
            bottom_up.output_shape()[last].stride))))
    elif top_block_in == "c5":
        top_block = LastLevelP6P7(bottom_up.output_shape()[last].channels, out_channels, in_feature=last)
    else:
        raise ValueError(f"MODEL.FPN.TOP_BLOCK_IN must be 'p5' or 'c5', got {cfg.MODEL.FPN.TOP_BLOCK_IN!r}.")
    return GridCLIPFPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


def build_clip_resnet_backbone(cfg, input_shape: ShapeSpec) -> CLIPResNet:
    """The bottom-up ``CLIPResNet`` from MODEL.CLIP.* (weights via ``create_clip_model``; only ``.visual`` is kept)."""
    if input_shape.channels != 3:
        raise ValueError(f"The CLIP backbone takes 3-channel RGB images, got {input_shape.channels} channels.")
    clip_model = create_clip_model(
        cfg.MODEL.CLIP.MODEL_NAME, cfg.MODEL.CLIP.PRETRAINED, cache_dir=cfg.MODEL.CLIP.CACHE_DIR
    )
    if not cfg.MODEL.CLIP.PRETRAINED:
        # open_clip zero-initialises every bottleneck's last BN weight (bn3); with frozen BN (the
        # default) that would switch every residual branch off for good when training from random
        # weights, so random-init trunks start from unit BN weights instead.
        for name, module in clip_model.visual.named_modules():
            if name.endswith("bn3") and isinstance(module, nn.BatchNorm2d) and "layer" in name:
                nn.init.ones_(module.weight)
    return CLIPResNet(
        clip_model.visual,
        out_features=cfg.MODEL.FPN.IN_FEATURES,
        use_mhsa=cfg.MODEL.CLIP.USE_MHSA,
        adapter_channels=cfg.MODEL.GRIDCLIP.ADAPTER_CHANNELS,
        adapter_final_relu=cfg.MODEL.GRIDCLIP.ADAPTER_FINAL_RELU,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        norm=cfg.MODEL.CLIP.NORM,
    )


@BACKBONE_REGISTRY.register()
def build_clip_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> GridCLIPFPN:
    """
    GridCLIP's backbone (Eq. 1, 2): ``CLIPResNet`` (trunk + dense attention pool + grid adapter)
    and an FPN producing p3..p7 (see the module docstring for the output dict).
    """
    return _build_fcos_fpn(cfg, build_clip_resnet_backbone(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_resnet_fcos_fpn_backbone(cfg, input_shape: ShapeSpec) -> GridCLIPFPN:
    """
    Detectron2's own ResNet (MODEL.RESNETS.*, e.g. ImageNet R50 weights via MODEL.WEIGHTS) with the
    same FPN and P6/P7 layout (MODEL.FPN.TOP_BLOCK_IN): Table 4's "ImageNet R50" row. No z̄ / z.
    """
    cfg = cfg.clone()
    cfg.defrost()
    # The ResNet must output every feature the FPN reads.
    cfg.MODEL.RESNETS.OUT_FEATURES = list(cfg.MODEL.FPN.IN_FEATURES)
    return _build_fcos_fpn(cfg, build_resnet_backbone(cfg, input_shape))
