"""GridCLIP head (Eq. 3), image-level head and the Eq. 4 loss function."""
import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from torch.nn import functional as F

from gridclip.modeling.head import GridCLIPHead, TextEmbeddingClassifier
from gridclip.modeling.image_head import ImageEmbeddingHead, teacher_embed_dim
from gridclip.modeling.losses import gridclip_loss, image_alignment_loss


def _levels(channels=32, sizes=((12, 16), (6, 8), (3, 4))):
    return [torch.randn(2, channels, h, w) for h, w in sizes]


def test_head_outputs_grid_embeddings_box_deltas_and_centerness(tiny_cfg):
    shapes = [ShapeSpec(channels=32, stride=s) for s in (8, 16, 32)]
    head = GridCLIPHead(tiny_cfg(), shapes, embed_dim=64)
    # NUM_CONVS (2) x conv3x3 + GN + ReLU per tower
    assert [type(m).__name__ for m in head.cls_subnet] == ["Conv2d", "GroupNorm", "ReLU"] * 2
    assert [type(m).__name__ for m in head.bbox_subnet] == ["Conv2d", "GroupNorm", "ReLU"] * 2
    assert head.cls_score.out_channels == 64 and torch.all(head.cls_score.bias == 0)
    features = _levels()
    embeddings, deltas, centerness = head(features)
    for f, e, d, c in zip(features, embeddings, deltas, centerness):
        assert e.shape == (2, 64) + f.shape[2:]
        assert d.shape == (2, 4) + f.shape[2:]
        assert c.shape == (2, 1) + f.shape[2:]


def test_cosine_logits_equal_scaled_cosine_plus_bias():
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(5, 16, generator=generator) * 3  # unnormalised on purpose
    classifier = TextEmbeddingClassifier(text, logit_scale_init=20.0, prior_prob=0.01)
    assert classifier.logit_scale.item() == pytest.approx(20.0, rel=1e-6)
    assert classifier.bias.item() == pytest.approx(-math.log(0.99 / 0.01), rel=1e-6)
    grid = torch.randn(2, 7, 16, generator=generator)
    logits = classifier(grid)
    assert logits.shape == (2, 7, 5)
    for k in range(5):
        cos = F.cosine_similarity(grid, text[k].expand_as(grid), dim=-1)
        assert torch.allclose(logits[..., k], 20.0 * cos + classifier.bias, atol=1e-4)
    # scale and bias are learned
    logits.sum().backward()
    assert classifier.log_logit_scale.grad is not None and classifier.bias.grad is not None
    fixed = TextEmbeddingClassifier(text, learn_logit_scale=False)
    assert [n for n, _ in fixed.named_parameters()] == ["bias"]


def test_inference_form_equals_eq3_per_level():
    """``inference_logits`` (scale folded into T, one addmm per level) gives ``forward``'s test-vocabulary logits."""
    torch.manual_seed(0)
    classifier = TextEmbeddingClassifier(torch.randn(5, 16), torch.randn(7, 16), logit_scale_init=20.0).eval()
    levels = [torch.randn(2, r, 16) for r in (30, 12, 3)]
    folded = classifier.inference_logits(levels)
    reference = classifier(torch.cat(levels, dim=1)).split([30, 12, 3], dim=1)
    for got, expected in zip(folded, reference):
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_training_and_test_vocabularies_are_separate_and_not_checkpointed():
    train, test = torch.randn(3, 16), torch.randn(8, 16)
    classifier = TextEmbeddingClassifier(train, test)
    assert torch.allclose(classifier.train_embeddings.norm(dim=1), torch.ones(3))
    grid = torch.randn(1, 4, 16)
    assert classifier.train()(grid).shape[-1] == 3
    assert classifier.eval()(grid).shape[-1] == 8
    assert set(classifier.state_dict()) == {"log_logit_scale", "bias"}
    classifier.set_test_embeddings(torch.randn(11, 16))
    assert classifier(grid).shape[-1] == 11 and classifier.num_test_classes == 11


def test_mismatched_or_broken_embeddings_are_refused():
    classifier = TextEmbeddingClassifier(torch.randn(3, 16))
    with pytest.raises(ValueError, match=r"dimension 32.*dimension 16"):
        classifier.set_test_embeddings(torch.randn(4, 32), source="my_vocab.safetensors")
    with pytest.raises(ValueError, match="my_vocab.safetensors"):
        classifier.set_test_embeddings(torch.randn(4, 32), source="my_vocab.safetensors")
    bad = torch.randn(4, 16)
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        classifier.set_test_embeddings(bad)
    with pytest.raises(ValueError, match="2-D"):
        TextEmbeddingClassifier(torch.randn(16))
    assert classifier.num_test_classes == 3  # unchanged after the refusals


def test_image_head_is_three_linear_layers_to_teacher_dim():
    head = ImageEmbeddingHead(64, [48, 40], 32)
    assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert [m.out_features for m in head if isinstance(m, torch.nn.Linear)] == [48, 40, 32]
    assert head(torch.randn(5, 64)).shape == (5, 32)
    with pytest.raises(ValueError, match="IMAGE_HEAD_HIDDEN_DIMS"):
        ImageEmbeddingHead(64, [48], 32)
    assert teacher_embed_dim("ViT-B-32-quickgelu") == 512
    assert teacher_embed_dim("RN50x64-quickgelu") == 1024
    with pytest.raises(ValueError, match="TEACHER.MODEL_NAME"):
        teacher_embed_dim("ViT-nonexistent")


def test_image_alignment_loss_is_elementwise_mean_l1_of_normalised_embeddings():
    student = torch.randn(3, 8) * 5
    teacher = F.normalize(torch.randn(3, 8), dim=1)
    expected = (F.normalize(student, dim=1) - teacher).abs().mean()
    assert torch.allclose(image_alignment_loss(student, teacher), expected)
    assert image_alignment_loss(teacher * 7, teacher).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match=r"\(3, 8\).*\(3, 4\)"):
        image_alignment_loss(student, torch.randn(3, 4))


def test_eq4_total_is_weighted_sum():
    grid, image, reg, ctr = (torch.tensor(v) for v in (0.7, 0.05, 0.4, 0.6))
    losses = gridclip_loss(loss_grid=grid, loss_image=image, loss_box_reg=reg, loss_centerness=ctr)
    assert set(losses) == {"loss_grid", "loss_image", "loss_box_reg", "loss_centerness"}
    assert sum(losses.values()).item() == pytest.approx(1 * 0.7 + 10 * 0.05 + 0.4 + 0.6)
    no_image = gridclip_loss(loss_grid=grid, loss_box_reg=reg, loss_centerness=ctr, grid_weight=2.0)
    assert set(no_image) == {"loss_grid", "loss_box_reg", "loss_centerness"}
    assert sum(no_image.values()).item() == pytest.approx(2 * 0.7 + 0.4 + 0.6)
