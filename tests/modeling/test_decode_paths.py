"""
Candidate selection (gridclip.modeling.decoding): every decoder returns the dense reference's pairs, the
reference equals Detectron2's FCOS decoding ("sqrt"), and "mmdet" equals a reference computation written
from MMDetection's formulas (BaseDenseHead._predict_by_feat_single + filter_scores_and_topk).
"""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes

from gridclip.modeling import decoding


def _level(background_logit, num_locations=600, num_classes=9, seed=1):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_locations, num_classes, generator=generator) + background_logit
    logits[:40, :3] = torch.randn(40, 3, generator=generator) * 2  # objects
    centerness = torch.randn(num_locations, 1, generator=generator) * 2
    deltas = torch.rand(num_locations, 4, generator=generator)
    anchors = Boxes(torch.rand(num_locations, 2, generator=generator).repeat(1, 2) * 100 + torch.tensor([0, 0, 8, 8]))
    return logits, centerness, deltas, anchors


def _mmdet_reference(logits, centerness, score_thr, nms_pre):
    """MMDetection's FCOS per level: sigmoid(cls) > score_thr, the nms_pre best by it, score × sigmoid(ctr)."""
    scores = logits.sigmoid()
    valid_mask = scores > score_thr
    kept = scores[valid_mask]
    valid_idxs = torch.nonzero(valid_mask)
    num_topk = min(nms_pre, valid_idxs.size(0))
    kept, idxs = kept.sort(descending=True)
    keep_idxs, labels = valid_idxs[idxs[:num_topk]].unbind(dim=1)
    return kept[:num_topk] * centerness[keep_idxs, 0].sigmoid(), keep_idxs, labels


def _same_pairs(a, b):
    """Same (location, class) pairs with the same scores (order may differ only among equal scores)."""
    (sa, aa, ca), (sb, ab, cb) = a, b
    assert len(sa) == len(sb)
    key_a = sorted(zip(aa.tolist(), ca.tolist(), sa.tolist()))
    key_b = sorted(zip(ab.tolist(), cb.tolist(), sb.tolist()))
    assert [k[:2] for k in key_a] == [k[:2] for k in key_b]
    assert torch.allclose(torch.tensor([k[2] for k in key_a]), torch.tensor([k[2] for k in key_b]), atol=1e-7)


# Sparse: a trained model (few pairs above the threshold); dense: an untrained one (almost all pairs).
@pytest.mark.parametrize("background_logit", [-12.0, -4.0, 0.0])
@pytest.mark.parametrize("score_mode", decoding.SCORE_MODES)
@pytest.mark.parametrize("decoder", sorted(decoding.DECODERS))
def test_every_decoder_returns_the_dense_reference_pairs(background_logit, score_mode, decoder):
    logits, centerness, _, _ = _level(background_logit)
    for topk in (20, 1000):
        reference = decoding.dense_candidates(logits, centerness, 0.05, topk, score_mode)
        ours = decoding.DECODERS[decoder](logits, centerness, 0.05, topk, score_mode)
        assert 0 < len(ours[0]) <= topk
        _same_pairs(ours, reference)
        assert torch.all(ours[0][:-1] >= ours[0][1:]) or score_mode == "mmdet"  # sqrt/product: best first


def test_bound_decoder_with_more_classes_than_locations_and_ties():
    # 3 locations x 50 classes, many equal logits: the k-th best location bound must not drop a pair.
    logits = torch.zeros(3, 50)
    logits[1, :10] = 2.0
    centerness = torch.zeros(3, 1)
    for topk in (1, 5, 12, 200):
        for mode in decoding.SCORE_MODES:
            ours = decoding.select_candidates(logits, centerness, 0.05, topk, mode)
            reference = decoding.dense_candidates(logits, centerness, 0.05, topk, mode)
            assert len(ours[0]) == len(reference[0]) == min(topk, 150)
            assert torch.allclose(ours[0], reference[0])


@pytest.mark.parametrize("background_logit", [-12.0, 0.0])
def test_sqrt_reference_is_detectron2_fcos_decoding(tiny_cfg, background_logit):
    topk = 20
    model = build_model(tiny_cfg(**{"MODEL.FCOS.SCORE_THRESH_TEST": 0.05, "MODEL.FCOS.TOPK_CANDIDATES_TEST": topk}))
    logits, centerness, deltas, anchors = _level(background_logit)
    ours = model.decode_level(anchors, logits, deltas, centerness, None, (120, 120))
    dense_scores = torch.sqrt(logits.sigmoid() * centerness.sigmoid())
    reference = model._decode_per_level_predictions(anchors, dense_scores, deltas, 0.05, topk, (120, 120))
    assert len(ours) == len(reference) > 0
    assert torch.allclose(ours.scores, reference.scores, atol=1e-6)
    assert torch.equal(ours.pred_classes, reference.pred_classes)
    assert torch.allclose(ours.pred_boxes.tensor, reference.pred_boxes.tensor)


@pytest.mark.parametrize("background_logit", [-12.0, -4.0, 0.0])
def test_mmdet_score_rule_matches_mmdetection_formulas(tiny_cfg, background_logit):
    topk = 30
    logits, centerness, deltas, anchors = _level(background_logit)
    reference = _mmdet_reference(logits, centerness, 0.05, topk)
    for decoder in decoding.DECODERS.values():
        _same_pairs(decoder(logits, centerness, 0.05, topk, "mmdet"), reference)
    # Through the model: the same scores and classes, boxes decoded from the selected anchors.
    model = build_model(tiny_cfg(**{"MODEL.FCOS.SCORE_MODE": "mmdet", "MODEL.FCOS.TOPK_CANDIDATES_TEST": topk}))
    ours = model.decode_level(anchors, logits, deltas, centerness, None, (120, 120))
    scores, anchor_idxs, labels = reference
    order = scores.argsort(descending=True)
    ours_order = ours.scores.argsort(descending=True)
    assert torch.allclose(ours.scores[ours_order], scores[order])
    assert torch.equal(ours.pred_classes[ours_order], labels[order])
    boxes = model.box2box_transform.apply_deltas(deltas[anchor_idxs], anchors.tensor[anchor_idxs])
    assert torch.allclose(ours.pred_boxes.tensor[ours_order], boxes[order])
    # Not Detectron2's rule: no square root, and the threshold is on sigmoid(cls) alone.
    sqrt_scores = decoding.dense_candidates(logits, centerness, 0.05, topk, "sqrt")[0]
    assert not torch.allclose(scores.sort().values, sqrt_scores[: len(scores)].sort().values)
    assert bool((scores < 0.05).any())  # a product below the threshold is kept (it is not re-thresholded)


def test_unknown_score_mode_or_decoder_is_rejected(tiny_cfg):
    with pytest.raises(ValueError, match="SCORE_MODE"):
        build_model(tiny_cfg(**{"MODEL.FCOS.SCORE_MODE": "max"}))
    with pytest.raises(ValueError, match="INFERENCE.DECODER"):
        build_model(tiny_cfg(**{"MODEL.GRIDCLIP.INFERENCE.DECODER": "fast"}))
