"""
Candidate selection of one FPN level at inference: which (location, class) pairs become boxes.

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
from typing import Tuple

import torch
from torch import Tensor

__all__ = [
    "SCORE_MODES", "DECODERS", "candidate_scores", "dense_candidates", "select_candidates", "threshold_candidates",
    "fold_logit_scale",
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


def fold_logit_scale(text_embeddings: Tensor, logit_scale: Tensor) -> Tensor:
    """[D, K] = (scale · T)ᵀ: the cosine classifier's scale folded into its (normalised) text embeddings."""
    return (text_embeddings.float() * logit_scale.float()).t().contiguous()
