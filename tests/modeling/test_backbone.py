"""CLIP ResNet backbone: dense attention pool (Eq. 1), grid adapter + FPN (Eq. 2), switches."""
import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.fpn import FPN

from gridclip.modeling.clip_backbone import (
    GRID_EMBEDDING_KEY,
    IMAGE_EMBEDDING_KEY,
    CLIPResNet,
    build_clip_resnet_fpn_backbone,
)
from gridclip.modeling.clip_loading import create_clip_model
from gridclip.modeling.dense_attention_pool import interpolate_positional_embedding


@pytest.fixture(scope="module")
def rn50_clip(randomise_bn):
    """Random-init RN50-quickgelu with random BN statistics/affine (bn3 weights are zero otherwise)."""
    model = create_clip_model("RN50-quickgelu", "")
    randomise_bn(model.visual, seed=1)
    return model


def test_rn50_image_embedding_equals_encode_image_at_224(rn50_clip):
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = rn50_clip.encode_image(image)
        # CLIPResNet takes over the visual tower's modules; build it after computing the reference.
        backbone = CLIPResNet(rn50_clip.visual, freeze_at=0, norm="FrozenBN").eval()
        outputs = backbone(image)
    assert expected.abs().max() > 0.1  # a degenerate (all-zero) embedding would prove nothing
    assert outputs[IMAGE_EMBEDDING_KEY].shape == (1, 1024)
    assert (outputs[IMAGE_EMBEDDING_KEY] - expected).abs().max().item() <= 1e-5

    # Non-square, non-224 input: z covers the H/32 x W/32 grid; [z', C5] replaces C5.
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, 160, 224))
    assert outputs[GRID_EMBEDDING_KEY].shape == (1, 1024, 5, 7)
    assert outputs[IMAGE_EMBEDDING_KEY].shape == (1, 1024)
    assert outputs["res5"].shape == (1, 2048 + 256, 5, 7)
    assert outputs["res3"].shape == (1, 512, 20, 28) and outputs["res4"].shape == (1, 1024, 10, 14)
    assert backbone.output_shape()["res5"].channels == 2048 + 256


def test_positional_embedding_interpolation_keeps_class_token():
    pos = torch.randn(1 + 7 * 7, 16)
    assert interpolate_positional_embedding(pos, 7, 7) is pos
    resized = interpolate_positional_embedding(pos, 5, 9)
    assert resized.shape == (1 + 45, 16)
    assert torch.equal(resized[0], pos[0])
    constant = torch.ones(1 + 49, 4) * 3.0
    assert torch.allclose(interpolate_positional_embedding(constant, 4, 6), torch.full((25, 4), 3.0), atol=1e-5)
    with pytest.raises(ValueError, match="not a square"):
        interpolate_positional_embedding(torch.randn(1 + 10, 4), 2, 5)


def test_fpn_backbone_outputs_p3_to_p7_and_clip_embeddings(tiny_cfg):
    cfg = tiny_cfg()
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    assert backbone.image_embedding_dim == 64
    # the tiny CLIP has C5 = 512 channels; the adapter adds ADAPTER_CHANNELS (32)
    assert backbone.bottom_up.output_shape()["res5"].channels == 512 + 32
    with torch.no_grad():
        outputs = backbone(torch.randn(2, 3, 96, 128))
    assert outputs["p3"].shape == (2, 32, 12, 16)
    assert outputs["p7"].shape == (2, 32, 1, 1)
    assert outputs[IMAGE_EMBEDDING_KEY].shape == (2, 64)
    assert outputs[GRID_EMBEDDING_KEY].shape == (2, 64, 3, 4)

    # The pyramid is exactly Detectron2's FPN.forward on the same bottom-up.
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = backbone(image)
        reference = FPN.forward(backbone, image)
    assert set(reference) == set(shapes)
    for name in shapes:
        assert torch.equal(ours[name], reference[name])


def test_adapter_relu_switch(tiny_cfg):
    with_relu = build_backbone(tiny_cfg()).bottom_up.grid_adapter
    without = build_backbone(tiny_cfg(**{"MODEL.GRIDCLIP.ADAPTER_FINAL_RELU": False})).bottom_up.grid_adapter
    assert [type(m).__name__ for m in with_relu] == ["Conv2d", "ReLU"] * 3
    assert [type(m).__name__ for m in without] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d"]
    assert with_relu[0].in_channels == 64 and with_relu[-2].out_channels == 32


def test_top_block_input_p5_or_c5(tiny_cfg):
    counts = {}
    for source in ("p5", "c5"):
        backbone = build_backbone(tiny_cfg(**{"MODEL.FPN.TOP_BLOCK_IN": source}))
        assert backbone.top_block.in_feature == {"p5": "p5", "c5": "res5"}[source]
        with torch.no_grad():
            outputs = backbone(torch.randn(1, 3, 64, 64))
        assert outputs["p6"].shape == (1, 32, 1, 1) and outputs["p7"].shape == (1, 32, 1, 1)
        counts[source] = sum(p.numel() for p in backbone.top_block.parameters())
    assert backbone.top_block.p6.in_channels == 512 + 32
    # the P6 conv reads the fused [z', C5] (544 channels) instead of P5 (32 channels)
    assert counts["c5"] - counts["p5"] == (544 - 32) * 32 * 9
    with pytest.raises(ValueError, match="TOP_BLOCK_IN"):
        build_backbone(tiny_cfg(**{"MODEL.FPN.TOP_BLOCK_IN": "p4"}))


def test_without_mhsa_is_plain_c5(tiny_cfg):
    backbone = build_backbone(tiny_cfg(**{"MODEL.CLIP.USE_MHSA": False}))
    assert backbone.bottom_up.attnpool is None and backbone.bottom_up.grid_adapter is None
    assert backbone.image_embedding_dim is None
    assert backbone.bottom_up.output_shape()["res5"].channels == 512
    assert not any("attnpool" in n or "grid_adapter" in n for n, _ in backbone.named_parameters())
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, 64, 64))
    assert IMAGE_EMBEDDING_KEY not in outputs and GRID_EMBEDDING_KEY not in outputs
    assert outputs["p3"].shape == (1, 32, 8, 8)


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 5])
def test_freeze_at(tiny_cfg, freeze_at):
    cfg = tiny_cfg(**{"MODEL.BACKBONE.FREEZE_AT": freeze_at, "MODEL.CLIP.NORM": "BN"})
    bottom_up = build_backbone(cfg).bottom_up
    for idx, name in enumerate(["stem", "res2", "res3", "res4", "res5"], start=1):
        module = getattr(bottom_up, name)
        frozen = freeze_at >= idx
        assert all(p.requires_grad != frozen for p in module.parameters()), name
        norms = [m for m in module.modules() if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d))]
        assert norms and all(isinstance(m, FrozenBatchNorm2d) == frozen for m in norms), name
    assert all(p.requires_grad for p in bottom_up.attnpool.parameters())
    assert all(p.requires_grad for p in bottom_up.grid_adapter.parameters())
    # Frozen statistics do not move in training mode.
    bottom_up.train()
    stem_stats = [b.clone() for b in bottom_up.stem.buffers()]
    bottom_up(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(a, b) for a, b in zip(stem_stats, bottom_up.stem.buffers())) == (freeze_at >= 1)


def test_default_norm_freezes_every_batchnorm(tiny_cfg):
    bottom_up = build_backbone(tiny_cfg()).bottom_up
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bottom_up.modules())
    assert any(p.requires_grad for p in bottom_up.res3.parameters())  # FREEZE_AT 2: res3.. train
    with pytest.raises(ValueError, match="FREEZE_AT"):
        build_backbone(tiny_cfg(**{"MODEL.BACKBONE.FREEZE_AT": 6}))


def test_imagenet_resnet50_fcos_fpn_option(tiny_cfg):
    cfg = tiny_cfg(**{"MODEL.BACKBONE.NAME": "build_resnet_fcos_fpn_backbone", "MODEL.RESNETS.DEPTH": 50})
    backbone = build_backbone(cfg)
    assert backbone.image_embedding_dim is None
    assert backbone.bottom_up.output_shape()["res5"].channels == 2048
    assert backbone.top_block.in_feature == "p5"
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, 64, 64))
    assert sorted(outputs) == ["p3", "p4", "p5", "p6", "p7"]
    cfg.MODEL.FPN.TOP_BLOCK_IN = "c5"
    assert build_backbone(cfg).top_block.p6.in_channels == 2048


def test_non_resnet_clip_is_refused(tiny_cfg):
    cfg = tiny_cfg(**{"MODEL.CLIP.MODEL_NAME": "GridCLIP-Tiny-ViT"})
    with pytest.raises(TypeError, match="ResNet CLIP"):
        build_clip_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    with pytest.raises(ValueError, match="3-channel"):
        build_clip_resnet_fpn_backbone(tiny_cfg(), ShapeSpec(channels=1))
