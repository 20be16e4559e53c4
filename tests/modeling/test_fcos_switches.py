"""
MMDetection FCOS details as switches (MODEL.FCOS.REG_SCALE, MODEL.FCOS.BOX_REG_WEIGHTING), each checked
against a small reference computation written from MMDetection's FCOSHead formulas:

- forward_single: ``bbox_pred = relu(scale_l(conv(x)))`` (norm_on_bbox), ``× stride`` at test time,
  ``distance2bbox(points, bbox_pred)``;
- loss: ``loss_bbox = Σ c_i · GIoULoss_i / Σ c_i`` with c_i the centerness target of positive i.
"""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes

from gridclip.modeling.head import ClassifierFCOSHead, GridCLIPHead
from gridclip.modeling.losses import centerness_weighted_box_reg_loss


# ----------------------------------------------------------------------------- MMDetection reference
def _distance2bbox(points, distances):
    """mmdet.core.distance2bbox: (x - l, y - t, x + r, y + b)."""
    return torch.stack(
        [points[:, 0] - distances[:, 0], points[:, 1] - distances[:, 1],
         points[:, 0] + distances[:, 2], points[:, 1] + distances[:, 3]], dim=1
    )


def _mmdet_giou_loss(pred, target, eps=1e-6):
    """mmdet GIoULoss per box: 1 - (IoU - (enclose - union) / enclose)."""
    lt, rb = torch.max(pred[:, :2], target[:, :2]), torch.min(pred[:, 2:], target[:, 2:])
    overlap = (rb - lt).clamp(min=0).prod(dim=1)
    area_p = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(dim=1)
    area_t = (target[:, 2:] - target[:, :2]).clamp(min=0).prod(dim=1)
    union = area_p + area_t - overlap + eps
    enclose = (torch.max(pred[:, 2:], target[:, 2:]) - torch.min(pred[:, :2], target[:, :2])).clamp(min=0).prod(dim=1)
    return 1 - (overlap / union - (enclose + eps - union) / (enclose + eps))


def _mmdet_centerness_target(ltrb):
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    return torch.sqrt((lr.min(-1)[0] / lr.max(-1)[0]) * (tb.min(-1)[0] / tb.max(-1)[0]))


def _mmdet_centerness_weighted_loss(points, strides, deltas, gt_boxes):
    """Positives only: points [P, 2], strides [P], raw deltas [P, 4] (norm_on_bbox units), gt [P, 4]."""
    pred = _distance2bbox(points, deltas.relu() * strides[:, None])
    target_ltrb = torch.cat([points - gt_boxes[:, :2], gt_boxes[:, 2:] - points], dim=1)
    weights = _mmdet_centerness_target(target_ltrb)
    return (_mmdet_giou_loss(pred, gt_boxes) * weights).sum() / weights.sum()


# ----------------------------------------------------------------------------- tests
def _fcos_locations(strides=(8, 16), sizes=((6, 5), (3, 3))):
    """FCOS anchors as Detectron2 builds them: stride-sized boxes centred on (i·s, j·s)."""
    anchors, points, point_strides = [], [], []
    for s, (h, w) in zip(strides, sizes):
        ys, xs = torch.meshgrid(torch.arange(h) * float(s), torch.arange(w) * float(s), indexing="ij")
        p = torch.stack([xs.flatten(), ys.flatten()], dim=1)
        anchors.append(Boxes(torch.cat([p - s / 2, p + s / 2], dim=1)))
        points.append(p)
        point_strides.append(torch.full((len(p),), float(s)))
    return anchors, torch.cat(points), torch.cat(point_strides)


def test_centerness_weighted_box_loss_matches_mmdetection_formula():
    from detectron2.modeling.box_regression import Box2BoxTransformLinear

    generator = torch.Generator().manual_seed(0)
    anchors, points, strides = _fcos_locations()
    num_images, num_locations = 2, len(points)
    # every location gets a box around it (distances 2..40 px), about half of them are positives
    distances = torch.rand(num_images, num_locations, 4, generator=generator) * 38 + 2
    gt_boxes = [torch.cat([points - d[:, :2], points + d[:, 2:]], dim=1) for d in distances]
    pos_mask = torch.rand(num_images, num_locations, generator=generator) > 0.5
    per_level = [len(a) for a in anchors]
    deltas = torch.randn(num_images, num_locations, 4, generator=generator).abs() * 3
    loss = centerness_weighted_box_reg_loss(
        anchors, Box2BoxTransformLinear(normalize_by_size=True), list(deltas.split(per_level, dim=1)),
        gt_boxes, pos_mask,
    )
    expected = _mmdet_centerness_weighted_loss(
        points.expand(num_images, -1, -1)[pos_mask], strides.expand(num_images, -1)[pos_mask],
        deltas[pos_mask], torch.stack(gt_boxes)[pos_mask],
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # not Detectron2's rule (sum of GIoU losses / number of positives) on the same inputs
    unweighted = _mmdet_giou_loss(
        _distance2bbox(points.expand(num_images, -1, -1)[pos_mask],
                       deltas[pos_mask].relu() * strides.expand(num_images, -1)[pos_mask, None]),
        torch.stack(gt_boxes)[pos_mask],
    ).mean()
    assert abs(loss.item() - unweighted.item()) > 1e-3


def test_centerness_weighted_box_loss_without_positives_is_zero_with_gradient():
    from detectron2.modeling.box_regression import Box2BoxTransformLinear

    anchors, points, _ = _fcos_locations()
    deltas = torch.randn(1, len(points), 4, requires_grad=True)
    loss = centerness_weighted_box_reg_loss(
        anchors, Box2BoxTransformLinear(normalize_by_size=True), [deltas[:, :30], deltas[:, 30:]],
        [torch.zeros(len(points), 4)], torch.zeros(1, len(points), dtype=torch.bool),
    )
    loss.backward()
    assert loss.item() == 0.0 and deltas.grad is not None


@pytest.mark.parametrize("head_kind", ["grid", "classifier"])
def test_regression_scales_decode_as_mmdetection(tiny_cfg, head_kind):
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.box_regression import Box2BoxTransformLinear

    cfg = tiny_cfg(**{"MODEL.FCOS.REG_SCALE": True})
    shapes = [ShapeSpec(channels=32, stride=s) for s in (8, 16)]
    head = GridCLIPHead(cfg, shapes, embed_dim=16) if head_kind == "grid" else ClassifierFCOSHead(cfg, shapes, num_classes=3)
    assert torch.equal(head.reg_scales.detach(), torch.ones(2))  # MMDetection's Scale(1.0)
    with torch.no_grad():
        head.reg_scales.copy_(torch.tensor([0.5, 3.0]))
    anchors, points, strides = _fcos_locations()
    features = [torch.randn(1, 32, 6, 5), torch.randn(1, 32, 3, 3)]
    _, deltas, _ = head(features)
    raw = [head.bbox_pred(head.bbox_subnet(f)) for f in features]  # fcos_reg(reg_feat)
    flat = lambda xs: torch.cat([x[0].permute(1, 2, 0).reshape(-1, 4) for x in xs])  # noqa: E731
    scale_per_location = torch.cat([torch.full((30,), 0.5), torch.full((9,), 3.0)])
    expected = _distance2bbox(points, (flat(raw) * scale_per_location[:, None]).relu() * strides[:, None])
    decoded = Box2BoxTransformLinear(normalize_by_size=True).apply_deltas(flat(deltas), Boxes.cat(anchors).tensor)
    assert torch.allclose(decoded, expected, atol=1e-4)
    sum(d.sum() for d in deltas).backward()
    assert head.reg_scales.grad is not None and torch.all(head.reg_scales.grad != 0)


def test_switches_off_by_default_keep_detectron2_parameters(tiny_cfg):
    cfg = tiny_cfg()
    assert cfg.MODEL.FCOS.REG_SCALE is False and cfg.MODEL.FCOS.BOX_REG_WEIGHTING == "none"
    model = build_model(cfg)
    assert model.head.reg_scales is None and model.box_reg_weighting == "none"
    assert not any("reg_scales" in name for name, _ in model.named_parameters())


def test_box_reg_weighting_changes_only_the_box_loss(tiny_cfg, tiny_batch):
    losses = {}
    for weighting in ("none", "centerness"):
        torch.manual_seed(0)
        cfg = tiny_cfg(**{"MODEL.FCOS.BOX_REG_WEIGHTING": weighting, "MODEL.GRIDCLIP.IMAGE_ALIGN": False})
        model = build_model(cfg)
        model.train()
        from detectron2.utils.events import EventStorage

        with EventStorage():
            losses[weighting] = {k: v.item() for k, v in model(tiny_batch()).items()}
    assert losses["none"]["loss_grid"] == pytest.approx(losses["centerness"]["loss_grid"], rel=1e-6)
    assert losses["none"]["loss_centerness"] == pytest.approx(losses["centerness"]["loss_centerness"], rel=1e-6)
    assert losses["none"]["loss_box_reg"] != pytest.approx(losses["centerness"]["loss_box_reg"], rel=1e-3)


def test_unknown_box_reg_weighting_is_a_clear_error(tiny_cfg):
    with pytest.raises(ValueError, match="BOX_REG_WEIGHTING"):
        build_model(tiny_cfg(**{"MODEL.FCOS.BOX_REG_WEIGHTING": "iou"}))
