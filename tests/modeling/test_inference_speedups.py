"""
Exact inference speed-ups (MODEL.GRIDCLIP.INFERENCE.*) and fp32 decoding under AMP, on a briefly
trained tiny GridCLIP: BN folding, channels_last, the bound decoder and the folded classifier give the
detections of the plain model; bf16 autocast keeps fp32 boxes, anchors and scores and the fp32
detections (matched boxes within 1 px, same classes).
"""
import copy

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch import nn

from gridclip.modeling.bn_folding import enable_bn_folding, folded_conv_bn_params, num_folded_pairs

from .conftest import _tiny_batch, randomise_batchnorm

TRAIN_STEPS = 80
PLAIN = dict(fold_bn=False, channels_last=False, decoder="dense")
FAST = dict(fold_bn=True, channels_last=True, decoder="bound")


@pytest.fixture(scope="module")
def trained_model(embeddings_cache_module):
    """A tiny GridCLIP (frozen random BN statistics) trained 40 Adam steps on the tiny batch: confident, sparse scores."""
    cfg = embeddings_cache_module(**{"MODEL.FCOS.SCORE_THRESH_TEST": 0.05})
    torch.manual_seed(0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    model = build_model(cfg)
    randomise_batchnorm(model.backbone.bottom_up, seed=3)
    model.train()
    batch = _tiny_batch()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    with EventStorage():
        for _ in range(TRAIN_STEPS):
            losses = model(batch)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    torch.set_num_threads(previous)
    return model.eval()


@pytest.fixture(scope="module")
def embeddings_cache_module(tmp_path_factory):
    """tiny_cfg (tests/modeling/conftest.py) for module-scoped fixtures, with a private embeddings cache."""
    from . import conftest

    cache = str(tmp_path_factory.mktemp("text_embeddings"))

    def make(**overrides):
        cfg = conftest._load_config("Base-GridCLIP.yaml")
        cfg.MODEL.DEVICE = "cpu"
        cfg.MODEL.CLIP.MODEL_NAME = conftest.TINY_BACKBONE_CLIP
        cfg.MODEL.CLIP.PRETRAINED = ""
        cfg.MODEL.GRIDCLIP.TEACHER.MODEL_NAME = conftest.TINY_TEACHER_CLIP
        cfg.MODEL.GRIDCLIP.TEACHER.PRETRAINED = ""
        cfg.MODEL.GRIDCLIP.TRAIN_VOCABULARY = conftest.TINY_VOCABULARY
        cfg.MODEL.GRIDCLIP.PROMPT_TEMPLATES = "single"
        cfg.MODEL.GRIDCLIP.ADAPTER_CHANNELS = 32
        cfg.MODEL.GRIDCLIP.IMAGE_HEAD_HIDDEN_DIMS = [32, 32]
        cfg.MODEL.GRIDCLIP.EMBEDDINGS_CACHE_DIR = cache
        cfg.MODEL.FPN.OUT_CHANNELS = 32
        cfg.MODEL.FCOS.NUM_CONVS = 2
        cfg.DATASETS.TRAIN = ()
        cfg.DATASETS.TEST = ()
        return conftest.set_cfg_values(cfg, overrides)

    return make


def _detect(model, batch, **settings):
    model.configure_inference(**settings)
    with torch.no_grad():
        return [out["instances"] for out in model(batch)]


def _test_inputs():
    return [{k: v for k, v in x.items() if k in ("image", "height", "width")} for x in _tiny_batch(seed=0)]


def test_speedups_give_the_plain_models_detections(trained_model):
    batch = _test_inputs()
    plain = _detect(trained_model, batch, **PLAIN)
    assert num_folded_pairs(trained_model) > 0
    for settings in (FAST, dict(PLAIN, decoder="threshold"), dict(PLAIN, fold_bn=True), dict(PLAIN, channels_last=True)):
        fast = _detect(trained_model, batch, **settings)
        for a, b in zip(plain, fast):
            assert 0 < len(a) == len(b), settings
            assert torch.equal(a.pred_classes, b.pred_classes), settings
            assert torch.allclose(a.scores, b.scores, atol=1e-5), settings
            assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3), settings
    trained_model.configure_inference(**FAST)


def test_bf16_autocast_decodes_in_fp32_and_keeps_the_fp32_detections(trained_model):
    batch = _test_inputs()
    reference = _detect(trained_model, batch, **FAST)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = _detect(trained_model, batch, **FAST)
    for ref, ours in zip(reference, amp):
        assert ours.pred_boxes.tensor.dtype == torch.float32 and ours.scores.dtype == torch.float32
        confident = ref[ref.scores > 0.3]
        assert len(confident) > 0
        # Every confident fp32 detection has a bf16 detection of the same class within 1 px.
        for box, cls in zip(confident.pred_boxes.tensor, confident.pred_classes):
            same_class = ours.pred_boxes.tensor[ours.pred_classes == cls]
            assert len(same_class) and float((same_class - box).abs().max(dim=1).values.min()) <= 1.0


def test_anchors_and_boxes_stay_fp32_when_deltas_are_bf16(trained_model):
    model = trained_model
    batch = _test_inputs()
    with torch.no_grad():
        images = model.preprocess_image(batch)
        features, predictions = model._backbone_head(images.tensor)
        cls_out, deltas, ctr = predictions
        bf16 = ([x.bfloat16() for x in cls_out], [x.bfloat16() for x in deltas], [x.bfloat16() for x in ctr])
        fp32_result = model.forward_inference(images, features, predictions)[0]
        bf16_result = model.forward_inference(images, features, bf16)[0]
    assert bf16_result.pred_boxes.tensor.dtype == torch.float32 and bf16_result.scores.dtype == torch.float32
    # bf16 deltas on fp32 anchors: box error well under a pixel (bf16 anchors would move by 0.5-4 px).
    matched = min(len(fp32_result), len(bf16_result), 5)
    assert matched > 0
    assert torch.allclose(fp32_result.pred_boxes.tensor[:matched], bf16_result.pred_boxes.tensor[:matched], atol=1.0)


class _ConvBN(nn.Module):
    def __init__(self, bn):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn1 = bn
        self.downsample = nn.Sequential(nn.AvgPool2d(1), nn.Conv2d(6, 6, 1), bn.__class__(6))

    def forward(self, x):
        return self.downsample(self.bn1(self.conv1(x)))


@pytest.mark.parametrize("bn_class", [nn.BatchNorm2d, FrozenBatchNorm2d])
def test_bn_folding_is_exact_and_only_active_in_eval_no_grad(bn_class):
    torch.manual_seed(0)
    module = _ConvBN(bn_class(6))
    randomise_batchnorm(module, seed=1)
    reference = copy.deepcopy(module).eval()
    keys = list(module.state_dict())
    assert enable_bn_folding(module) == 2
    assert list(module.state_dict()) == keys  # checkpoints unchanged
    module.eval()
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        expected = reference(x)
        assert torch.allclose(module(x), expected, atol=1e-5)
        weight, bias = folded_conv_bn_params(module.conv1, module.bn1)
        assert torch.allclose(torch.nn.functional.conv2d(x, weight, bias, padding=1), reference.bn1(reference.conv1(x)),
                              atol=1e-5)
    # With gradients the plain path runs (the conv weight still gets its gradient through the BN).
    out = module(x)
    out.sum().backward()
    assert module.conv1.weight.grad is not None and torch.allclose(out, expected, atol=1e-5)
    # Weights changed after the first folded call: the cache is refreshed.
    with torch.no_grad():
        module.conv1.weight.mul_(2)
        reference.conv1.weight.mul_(2)
        assert torch.allclose(module(x), reference(x), atol=1e-5)
    # A BN replaced after folding was set up (e.g. converted to a new FrozenBatchNorm2d) applies itself.
    module.bn1 = FrozenBatchNorm2d.convert_frozen_batchnorm(copy.deepcopy(reference.bn1))
    with torch.no_grad():
        assert torch.allclose(module(x), reference(x), atol=1e-5)


def test_decode_level_keeps_large_coordinates_exact_with_bf16_deltas(trained_model):
    # Anchors at 600-1000 px, as in an 800x1333 image: bf16 has a 4 px step there.
    generator = torch.Generator().manual_seed(0)
    centers = 600 + 400 * torch.rand(50, 2, generator=generator)
    from detectron2.structures import Boxes

    anchors = Boxes(torch.cat([centers, centers], dim=1))
    deltas = (torch.rand(50, 4, generator=generator) * 3).bfloat16()
    logits, centerness = torch.full((50, 3), 3.0), torch.full((50, 1), 3.0)
    ours = trained_model.decode_level(anchors, logits.bfloat16(), deltas, centerness.bfloat16(), None, (1400, 1400))
    exact = trained_model.box2box_transform.apply_deltas(deltas.float(), anchors.tensor)
    assert ours.pred_boxes.tensor.dtype == torch.float32 and ours.scores.dtype == torch.float32
    assert torch.allclose(ours.pred_boxes.tensor, exact[ours_anchor_order(ours, exact)], atol=1e-3)
    # What Detectron2's apply_deltas alone does with bf16 deltas (anchors cast to bf16): pixels off.
    naive = trained_model.box2box_transform.apply_deltas(deltas, anchors.tensor).float()
    assert float((naive - exact).abs().max()) > 1.0


def ours_anchor_order(instances, exact_boxes):
    """Index of the exact box each decoded box equals (nearest)."""
    return torch.cdist(instances.pred_boxes.tensor, exact_boxes).argmin(dim=1)
