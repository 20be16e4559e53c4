"""
L_image's strength independent of the embedding size (MODEL.GRIDCLIP.IMAGE_LOSS_REFERENCE_DIM) and the
image-vs-detection gradient ratio on the real model's attention pool and res5.
"""
import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from gridclip.engine.health import gradient_ratio_groups, image_vs_detection_gradients
from gridclip.modeling.losses import image_alignment_loss


def _unit(b, d, seed):
    return F.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_default_is_the_mean_over_batch_and_dim_bit_for_bit():
    student, teacher = torch.randn(4, 64), _unit(4, 64, 1)
    expected = (F.normalize(student, dim=-1) - teacher).abs().mean()
    assert torch.equal(image_alignment_loss(student, teacher), expected)
    assert torch.equal(image_alignment_loss(student, teacher, reference_dim=0), expected)
    with pytest.raises(ValueError, match="IMAGE_LOSS_REFERENCE_DIM"):
        image_alignment_loss(student, teacher, reference_dim=-1)


def _per_image_gradient_norm(dim, reference_dim, b=256):
    student = _unit(b, dim, 2).requires_grad_(True)
    image_alignment_loss(student, _unit(b, dim, 3), reference_dim=reference_dim).backward()
    return float(student.grad.norm(dim=-1).mean()) * b  # per image, batch size factored out


def test_reference_dim_makes_the_per_image_pull_independent_of_the_embedding_size():
    # unscaled: the gradient at D = 64 is ~sqrt(512 / 64) = 2.8x the one at D = 512
    plain = _per_image_gradient_norm(64, 0) / _per_image_gradient_norm(512, 0)
    assert plain == pytest.approx(math.sqrt(8), rel=0.1)
    scaled = _per_image_gradient_norm(64, 512) / _per_image_gradient_norm(512, 512)
    assert scaled == pytest.approx(1.0, rel=0.1)
    # and at D = 512 the scaled loss is the paper's as written
    s, t = _unit(8, 512, 4), _unit(8, 512, 5)
    assert torch.equal(image_alignment_loss(s, t, reference_dim=512), image_alignment_loss(s, t))


def test_config_key_scales_the_model_loss_and_the_ratio_is_measured_on_the_real_model(tiny_cfg, tiny_batch):
    batch = tiny_batch()  # teacher dim 32 (GridCLIP-Tiny-ViT)
    model = build_model(tiny_cfg())
    assert model.image_loss_reference_dim == 0
    model.train()
    with EventStorage():
        plain = model(batch)
        model.image_loss_reference_dim = 512
        scaled = model(batch)
    assert torch.allclose(scaled["loss_image"], plain["loss_image"] * math.sqrt(32 / 512), rtol=1e-5)
    assert build_model(tiny_cfg(**{"MODEL.GRIDCLIP.IMAGE_LOSS_REFERENCE_DIM": 512})).image_loss_reference_dim == 512

    groups = gradient_ratio_groups(model)
    assert set(groups) == {"attnpool", "res5"}
    ratios = image_vs_detection_gradients(plain, groups)
    for name in ("attnpool", "res5"):
        assert ratios[name]["image_norm"] > 0 and ratios[name]["detection_norm"] > 0
        assert math.isfinite(ratios[name]["ratio"]) and -1 <= ratios[name]["cosine"] <= 1
    assert all(p.grad is None for p in model.parameters())
