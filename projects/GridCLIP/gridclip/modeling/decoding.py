"""
Dense decoding at inference: which (location, class) pairs of each FPN level become boxes
(:func:`select_candidates` and its references), and the per-image / per-level loop that turns a
dense detector's predictions into detections (:func:`decode_level`, :func:`decode_dense_predictions`),
shared by GridCLIP and the FCOS peer of :mod:`gridclip.analysis.fcos_peer`.

Three score rules (``MODEL.FCOS.SCORE_MODE``), each with a score threshold t and a per-level top-k:

- ``"sqrt"`` (Detectron2's FCOS, the default): score = sqrt(sigmoid(cls) · sigmoid(ctr)); keep
  score > t; the k best scores.
- ``"product"``: score = sigmoid(cls) · sigmoid(ctr); keep score > t; the k best scores.
- ``"mmdet"`` (MMDetection's FCOS, ``BaseDenseHead._predict_by_feat_single`` +
  ``filter_scores_and_topk``): keep sigmoid(cls) > t; the k best by sigmoid(cls) alone; the final
  score is sigmoid(cls) · sigmoid(ctr) (no square root, no second threshold).

:func:`select_candidates` returns exactly the pairs of the dense reference (:func:`dense_candidates`:
score every pair, threshold, sort) without scoring every pair. With R locations and K classes the
dense way computes R·K sigmoids and sorts them (8.6 M pairs per image for LVIS's 1203 classes at
512×672). The exact shortcut: let m_r be location r's best pair (its largest logit, combined with its
centerness). The k best pairs overall score at least as high as the k-th largest m_r, because the k
locations with the largest m_r each contribute a pair scoring >= that value. So only locations with
m_r >= that bound can hold a top-k pair, and within them only logits above a per-location bound
(found in logit space, no sigmoid). The exact scores, threshold and top-k are then computed on those
few candidates, with the same formulas as the dense way. Bounds carry a small slack, so the
candidates are a superset of the answer and float rounding cannot drop a pair.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "SCORE_MODES", "DECODERS", "candidate_scores", "dense_candidates", "select_candidates", "threshold_candidates",
    "decode_level", "decode_dense_predictions",
]

SCORE_MODES = ("sqrt", "product", "mmdet")
#: Relative slack on probability bounds and absolute slack on logit bounds (superset guarantee).
_PROB_SLACK = 1e-5
_LOGIT_SLACK = 1e-4


def _check_mode(score_mode: str):
    if score_mode not in SCORE_MODES:
        raise ValueError(f"MODEL.FCOS.SCORE_MODE must be one of {SCORE_MODES}, got {score_mode!r}.")


def candidate_scores(cls_logits: Tensor, ctr_logits: Tensor, score_mode: str) -> Tuple[Tensor, Tensor]:
    """
    (rank key, final score) of pairs, elementwise; fp32.

    Args:
        cls_logits: class logits of the pairs, any shape.
        ctr_logits: centerness logits of the pairs' locations, broadcastable to ``cls_logits``.

    The rank key is what the threshold and the top-k compare: the final score for "sqrt" and
    "product", sigmoid(cls) for "mmdet".
    """
    cls_prob = cls_logits.float().sigmoid()
    product = cls_prob * ctr_logits.float().sigmoid()
    if score_mode == "sqrt":
        score = product.sqrt()
        return score, score
    if score_mode == "product":
        return product, product
    return cls_prob, product


def _topk_of(keys: Tensor, topk: int) -> Tuple[Tensor, Tensor]:
    """(values, indices) of the ``topk`` largest entries of a 1-D tensor, largest first (trace-safe k)."""
    if torch.jit.is_tracing():
        k = torch.clamp(torch.scalar_tensor(topk, dtype=torch.long), max=keys.shape[0])
        return keys.topk(k)
    return keys.topk(min(topk, keys.numel()))


def dense_candidates(logits: Tensor, centerness: Tensor, score_thresh: float, topk: int, score_mode: str):
    """
    The reference: score every pair, keep rank key > ``score_thresh``, the ``topk`` best.

    Args:
        logits: [R, K] class logits of one level of one image.
        centerness: [R, 1] centerness logits.

    Returns:
        scores [n] (fp32, final scores in rank order), anchor_idxs [n], class_idxs [n], n <= topk.
    """
    _check_mode(score_mode)
    keys, scores = candidate_scores(logits, centerness, score_mode)
    keep = keys > score_thresh
    pair_idxs = torch.nonzero(keep)
    keys, scores = keys[keep], scores[keep]
    keys, order = _topk_of(keys, topk)
    anchor_idxs, class_idxs = pair_idxs[order].unbind(dim=1)
    return scores[order], anchor_idxs, class_idxs


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(0.0, 1.0)
    return torch.log(p) - torch.log1p(-p)


def select_candidates(logits: Tensor, centerness: Tensor, score_thresh: float, topk: int, score_mode: str):
    """
    The pairs of :func:`dense_candidates`, found without scoring every pair (see the module docstring).

    Args / returns: as :func:`dense_candidates`. Under ``torch.jit.trace`` (export) the dense reference
    runs instead: its control flow does not depend on the data.
    """
    _check_mode(score_mode)
    if torch.jit.is_tracing() or logits.numel() == 0:
        return dense_candidates(logits, centerness, score_thresh, topk, score_mode)
    num_locations = logits.shape[0]
    ctr_prob = centerness[:, 0].float().sigmoid()
    max_logits = logits.max(dim=1).values.float()
    # Best rank key per location, and the lowest key a top-k pair can have: the threshold, raised to
    # the k-th best location key when there are more than k locations.
    location_keys = max_logits.sigmoid() if score_mode == "mmdet" else max_logits.sigmoid() * ctr_prob
    if score_mode == "sqrt":
        location_keys = location_keys.sqrt()
    bound = torch.tensor(score_thresh, dtype=torch.float32, device=logits.device)
    if num_locations > topk:
        bound = torch.maximum(bound, location_keys.kthvalue(num_locations - topk + 1).values)
    bound = bound * (1 - _PROB_SLACK)
    rows = torch.nonzero(location_keys >= bound).squeeze(1)
    # Per-location logit bound: sigmoid(l) >= bound (mmdet), sigmoid(l)·σ(c) >= bound (product),
    # sqrt(sigmoid(l)·σ(c)) >= bound (sqrt).
    if score_mode == "mmdet":
        row_bound = _logit(bound).expand(rows.shape[0])
    else:
        prob_bound = bound * bound if score_mode == "sqrt" else bound
        row_bound = _logit(prob_bound / ctr_prob[rows])
    sub_logits = logits[rows]
    row_idxs, class_idxs = torch.nonzero(sub_logits.float() >= (row_bound - _LOGIT_SLACK)[:, None]).unbind(dim=1)
    anchor_idxs = rows[row_idxs]
    keys, scores = candidate_scores(sub_logits[row_idxs, class_idxs], centerness[anchor_idxs, 0], score_mode)
    keep = keys > score_thresh
    keys, scores, anchor_idxs, class_idxs = keys[keep], scores[keep], anchor_idxs[keep], class_idxs[keep]
    keys, order = _topk_of(keys, topk)
    return scores[order], anchor_idxs[order], class_idxs[order]


def threshold_candidates(logits: Tensor, centerness: Tensor, score_thresh: float, topk: int, score_mode: str,
                         dense_factor: int = 16):
    """
    The pairs of :func:`dense_candidates` by a threshold bound only (the decoder before
    :func:`select_candidates`; kept as ``MODEL.GRIDCLIP.INFERENCE.DECODER "threshold"``): since
    sigmoid(ctr) <= 1, a pair needs sigmoid(cls) > t² ("sqrt") or > t, so logits are filtered first;
    when more than ``dense_factor`` × ``topk`` pairs pass (an untrained model, a huge vocabulary), a
    dense top-k is used instead.
    """
    _check_mode(score_mode)
    if torch.jit.is_tracing():
        return dense_candidates(logits, centerness, score_thresh, topk, score_mode)
    min_cls_prob = (score_thresh * score_thresh if score_mode == "sqrt" else score_thresh) * (1 - 1e-4)
    passing = logits > math.log(min_cls_prob / (1 - min_cls_prob))
    if int(passing.sum()) > dense_factor * topk:
        keys, scores = candidate_scores(logits, centerness, score_mode)
        keys, flat_idxs = _topk_of(keys.flatten(), topk)
        keep = keys > score_thresh
        flat_idxs = flat_idxs[keep]
        return scores.flatten()[flat_idxs], flat_idxs // logits.shape[1], flat_idxs % logits.shape[1]
    anchor_idxs, class_idxs = torch.nonzero(passing).unbind(dim=1)
    keys, scores = candidate_scores(logits[anchor_idxs, class_idxs], centerness[anchor_idxs, 0], score_mode)
    keep = keys > score_thresh
    keys, scores, anchor_idxs, class_idxs = keys[keep], scores[keep], anchor_idxs[keep], class_idxs[keep]
    keys, order = _topk_of(keys, topk)
    return scores[order], anchor_idxs[order], class_idxs[order]


#: MODEL.GRIDCLIP.INFERENCE.DECODER -> candidate selection (all three return the same pairs).
DECODERS = {"bound": select_candidates, "threshold": threshold_candidates, "dense": dense_candidates}


def decode_level(
    anchors: Tensor,
    logits: Tensor,
    deltas: Tensor,
    centerness: Tensor,
    image_size: Tuple[int, int],
    *,
    box2box_transform,
    decoder: str,
    score_thresh: float,
    topk: int,
    score_mode: str,
    grid_embeddings: Optional[Tensor] = None,
) -> Instances:
    """
    Candidates of one level of one image (``score_mode``'s rule with ``score_thresh`` and ``topk``,
    selected by ``DECODERS[decoder]``), decoded to fp32 boxes.

    Args:
        anchors: [R, 4] anchor boxes (XYXY) of the level.
        logits: [R, K] class logits; deltas: [R, 4] box deltas; centerness: [R, 1] centerness logits.
        image_size: (height, width) of the image the boxes belong to.
        box2box_transform: the detector's transform (``apply_deltas(deltas [n, 4], boxes [n, 4])``).
        grid_embeddings: [R, D] or None; when given, the kept candidates' L2-normalised embeddings
            become the ``pred_grid_embeddings`` field.

    Returns:
        Instances with ``pred_boxes`` (fp32), ``scores`` [n] (fp32), ``pred_classes`` [n], n <= topk.
    """
    scores, anchor_idxs, class_idxs = DECODERS[decoder](logits, centerness, score_thresh, topk, score_mode)
    boxes = box2box_transform.apply_deltas(deltas[anchor_idxs].float(), anchors[anchor_idxs].float())
    instances = Instances(image_size, pred_boxes=Boxes(boxes), scores=scores, pred_classes=class_idxs)
    if grid_embeddings is not None:
        instances.pred_grid_embeddings = F.normalize(grid_embeddings[anchor_idxs].float(), dim=-1)
    return instances


def decode_dense_predictions(
    image_sizes: Sequence[Tuple[int, int]],
    anchors: List[Tensor],
    pred_logits: List[Tensor],
    pred_deltas: List[Tensor],
    pred_centerness: List[Tensor],
    *,
    box2box_transform,
    decoder: str,
    score_thresh: float,
    topk: int,
    score_mode: str,
    nms_thresh: float,
    max_detections: int,
    grid_embeddings: Optional[List[Tensor]] = None,
) -> List[Instances]:
    """
    Per image: :func:`decode_level` on every level, class-wise NMS (``nms_thresh``), the
    ``max_detections`` best. Runs with autocast off: anchors, boxes and scores are fp32 whatever the
    dtype of the network's outputs (Detectron2's ``apply_deltas`` casts anchors to the deltas' dtype,
    so bf16/fp16 deltas would quantise box coordinates to 2-4 px steps at 512-1024 px).

    Args:
        image_sizes: N (height, width) of the images.
        anchors: L tensors [Ri, 4], the anchors of each level.
        pred_logits: L tensors [N, Ri, K]; pred_deltas: L tensors [N, Ri, 4]; pred_centerness: L
            tensors [N, Ri, 1]; grid_embeddings: L tensors [N, Ri, D] or None (see :func:`decode_level`).
        other arguments: as :func:`decode_level`.

    Returns:
        N Instances, one per image.
    """
    settings = dict(box2box_transform=box2box_transform, decoder=decoder, score_thresh=score_thresh, topk=topk,
                    score_mode=score_mode)
    results: List[Instances] = []
    with torch.autocast(device_type=pred_deltas[0].device.type, enabled=False):
        for img_idx, image_size in enumerate(image_sizes):
            per_level = [
                decode_level(
                    anchors[level],
                    pred_logits[level][img_idx],
                    pred_deltas[level][img_idx],
                    pred_centerness[level][img_idx],
                    image_size,
                    grid_embeddings=None if grid_embeddings is None else grid_embeddings[level][img_idx],
                    **settings,
                )
                for level in range(len(anchors))
            ]
            pred = Instances.cat(per_level)
            keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, nms_thresh)
            results.append(pred[keep[:max_detections]])
    return results
