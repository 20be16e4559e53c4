"""
Naming accuracy: does the detection a user sees on an object carry the object's name?

AP counts a detection at any score, so a detector whose drawn (above-threshold) boxes mostly carry
wrong names can still reach a high AP. Naming accuracy measures what a picture shows: for every
ground-truth object, take the detection above ``score_threshold`` that overlaps it best (any class;
highest IoU, ties to the higher score); the object is *named* when that IoU is at least ``iou_min``
(default 0.5, the IoU of AP50) and the detection's class is the object's. An object without such a
detection counts as not named (and not localised). Reported over base and novel (rare) objects
separately and together:

    accuracy = named objects / objects;  localised = objects with a detection at IoU >= iou_min

``match="score"`` instead takes, among the shown detections at IoU >= ``iou_min``, the highest-scored
one (ties to the higher IoU): the name a reader takes from overlapping labels. The two differ where
class-wise NMS leaves several names on one object (duplicates with slightly different boxes).

``one_name_per_object_iou`` (e.g. 0.5) first keeps one name per object among the shown detections
(:func:`one_name_per_object`: class-agnostic NMS, the highest-scored name wins), as a picture drawn with
:meth:`gridclip.predictor.Detections.one_name_per_object` shows them (the embedded default's pictures):
then "best-overlapping" and "highest-scored" agree on what the picture shows. Class-wise NMS (the
evaluator's, what AP needs) keeps several names on one object; measured on the embedded default
(docs/WORLD.md), most "wrong names" of the raw rule are such duplicates beside the right name.

Ground-truth boxes with zero area are left out, as LVIS's evaluation leaves them out.
"""
import json
import os
from collections import defaultdict
from typing import Dict, Iterable, Optional, Sequence

import numpy as np

__all__ = [
    "DEFAULT_IOU_MIN", "MATCH_RULES", "one_name_per_object", "naming_accuracy", "naming_accuracy_of_lvis_results", "naming_accuracy_of_evaluation",
    "naming_accuracy_values", "format_naming_accuracy",
]

#: IoU a detection needs with an object to be "on" it (AP50's)
DEFAULT_IOU_MIN = 0.5
#: which shown detection on an object names it: the best-overlapping one, or the highest-scored at IoU >= iou_min
MATCH_RULES = ("iou", "score")
_GROUPS = ("base", "novel", "all")


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[G, 4] x [D, 4] XYXY boxes -> [G, D] IoU."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _as_boxes(boxes) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def one_name_per_object(boxes, scores, iou_threshold: float) -> np.ndarray:
    """
    Class-agnostic NMS (torchvision's): of detections overlapping at IoU > ``iou_threshold``, whatever
    their names, only the highest-scored stays.

    Args:
        boxes: [D, 4] XYXY; scores: [D].
        iou_threshold: in (0, 1].

    Returns:
        int64 ndarray: indices of the kept detections, highest score first.
    """
    import torch
    from torchvision.ops import nms

    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"one-name-per-object IoU must be in (0, 1], got {iou_threshold}")
    boxes = torch.as_tensor(_as_boxes(boxes), dtype=torch.float32)
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float64).reshape(-1), dtype=torch.float32)
    return nms(boxes, scores, float(iou_threshold)).numpy().astype(np.int64)


def naming_accuracy(
    gt_boxes: Sequence,
    gt_classes: Sequence,
    det_boxes: Sequence,
    det_scores: Sequence,
    det_classes: Sequence,
    *,
    score_threshold: float,
    iou_min: float = DEFAULT_IOU_MIN,
    novel_classes: Iterable[int] = (),
    match: str = "iou",
    one_name_per_object_iou: Optional[float] = None,
) -> Dict:
    """
    Naming accuracy over images (see the module docstring).

    Args:
        gt_boxes: per image, [G_i, 4] ground-truth boxes, XYXY absolute.
        gt_classes: per image, [G_i] class ids.
        det_boxes: per image, [D_i, 4] detection boxes, XYXY absolute (same images, same order).
        det_scores: per image, [D_i] scores; only those >= ``score_threshold`` count.
        det_classes: per image, [D_i] class ids (the same id space as ``gt_classes``).
        score_threshold: the visualisation threshold (what a drawn picture shows).
        iou_min: IoU the best-overlapping detection needs to be on the object; default 0.5.
        novel_classes: ids of the novel (rare, never annotated in training) classes.
        match: "iou" (default: the best-overlapping detection) or "score" (the highest-scored one at
            IoU >= ``iou_min``).
        one_name_per_object_iou: None (default: every shown detection) or the IoU of
            :func:`one_name_per_object` applied to the shown detections first (what a picture drawn
            with one name per object shows).

    Returns:
        dict: ``{"base" | "novel" | "all": {"accuracy": float or None (no objects), "named": int,
        "localised": int, "objects": int}, "score_threshold": float, "iou_min": float, "match": str,
        "one_name_per_object_iou": float or None}``.
    """
    if match not in MATCH_RULES:
        raise ValueError(f"match must be one of {MATCH_RULES}, got {match!r}")
    if not 0.0 < iou_min <= 1.0:
        raise ValueError(f"iou_min must be in (0, 1], got {iou_min}")
    lengths = {len(gt_boxes), len(gt_classes), len(det_boxes), len(det_scores), len(det_classes)}
    if len(lengths) != 1:
        raise ValueError("naming_accuracy: ground truth and detections must list the same images "
                         f"(got {len(gt_boxes)}, {len(gt_classes)}, {len(det_boxes)}, {len(det_scores)}, "
                         f"{len(det_classes)} entries)")
    novel = {int(c) for c in novel_classes}
    counts = {g: {"named": 0, "localised": 0, "objects": 0} for g in _GROUPS}
    for boxes, classes, d_boxes, d_scores, d_classes in zip(gt_boxes, gt_classes, det_boxes, det_scores, det_classes):
        boxes, classes = _as_boxes(boxes), np.asarray(classes, dtype=np.int64).reshape(-1)
        d_boxes, d_scores = _as_boxes(d_boxes), np.asarray(d_scores, dtype=np.float64).reshape(-1)
        d_classes = np.asarray(d_classes, dtype=np.int64).reshape(-1)
        if not (len(boxes) == len(classes) and len(d_boxes) == len(d_scores) == len(d_classes)):
            raise ValueError("naming_accuracy: boxes, scores and classes of one image differ in length")
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, classes = boxes[valid], classes[valid]
        keep = d_scores >= score_threshold
        d_boxes, d_scores, d_classes = d_boxes[keep], d_scores[keep], d_classes[keep]
        if one_name_per_object_iou is not None and len(d_boxes):
            keep = one_name_per_object(d_boxes, d_scores, one_name_per_object_iou)
            d_boxes, d_scores, d_classes = d_boxes[keep], d_scores[keep], d_classes[keep]
        if len(boxes) == 0:
            continue
        if len(d_boxes):
            iou = _pairwise_iou(boxes, d_boxes)  # [G, D]
            scores = d_scores[None, :].repeat(len(boxes), 0)
            if match == "iou":  # best IoU; among equal IoUs the higher score (lexsort: last key is primary)
                order = np.lexsort((-scores, -iou), axis=1)
            else:  # highest score among those on the object (IoU >= iou_min); ties to the higher IoU
                order = np.lexsort((-iou, -np.where(iou >= iou_min, scores, -np.inf)), axis=1)
            best = order[:, 0]
            best_iou = iou[np.arange(len(boxes)), best]
            localised = best_iou >= iou_min
            named = localised & (d_classes[best] == classes)
        else:
            localised = named = np.zeros(len(boxes), dtype=bool)
        is_novel = np.array([int(c) in novel for c in classes], dtype=bool)
        for group, mask in (("base", ~is_novel), ("novel", is_novel), ("all", np.ones_like(is_novel))):
            counts[group]["objects"] += int(mask.sum())
            counts[group]["localised"] += int((localised & mask).sum())
            counts[group]["named"] += int((named & mask).sum())
    result = {}
    for group, c in counts.items():
        result[group] = dict(accuracy=(c["named"] / c["objects"]) if c["objects"] else None, **c)
    result["score_threshold"] = float(score_threshold)
    result["iou_min"] = float(iou_min)
    result["match"] = match
    result["one_name_per_object_iou"] = None if one_name_per_object_iou is None else float(one_name_per_object_iou)
    return result


def _xywh_to_xyxy(box):
    x, y, w, h = box
    return [x, y, x + w, y + h]


def naming_accuracy_of_lvis_results(gt_json: str, results, *, score_threshold: float,
                                    iou_min: float = DEFAULT_IOU_MIN, novel_frequencies=("r",), match: str = "iou",
                                    one_name_per_object_iou: Optional[float] = None) -> Dict:
    """
    :func:`naming_accuracy` of an LVIS evaluation's saved detections.

    Args:
        gt_json: the LVIS-format ground-truth json (``images``, ``annotations`` with XYWH ``bbox``,
            ``categories`` with ``frequency``).
        results: the evaluator's ``lvis_instances_results.json`` (a path), or its list of
            ``{"image_id", "category_id", "bbox" (XYWH), "score"}`` dicts, category ids of ``gt_json``.
        score_threshold, iou_min, match, one_name_per_object_iou: as :func:`naming_accuracy`.
        novel_frequencies: categories whose ``frequency`` is one of these are novel; default rare ("r"),
            the open-vocabulary protocol's novel classes.
    """
    with open(gt_json) as f:
        gt = json.load(f)
    if isinstance(results, str):
        with open(results) as f:
            results = json.load(f)
    novel = [c["id"] for c in gt.get("categories", []) if c.get("frequency") in novel_frequencies]
    truth, found = defaultdict(list), defaultdict(list)
    for a in gt.get("annotations", []):
        truth[a["image_id"]].append((_xywh_to_xyxy(a["bbox"]), a["category_id"]))
    for r in results:
        found[r["image_id"]].append((_xywh_to_xyxy(r["bbox"]), r["category_id"], r["score"]))
    image_ids = [image["id"] for image in gt.get("images", [])]
    gt_boxes = [[b for b, _ in truth[i]] for i in image_ids]
    gt_classes = [[c for _, c in truth[i]] for i in image_ids]
    det_boxes = [[b for b, _, _ in found[i]] for i in image_ids]
    det_classes = [[c for _, c, _ in found[i]] for i in image_ids]
    det_scores = [[s for _, _, s in found[i]] for i in image_ids]
    return naming_accuracy(gt_boxes, gt_classes, det_boxes, det_scores, det_classes,
                           score_threshold=score_threshold, iou_min=iou_min, novel_classes=novel, match=match,
                           one_name_per_object_iou=one_name_per_object_iou)


def naming_accuracy_of_evaluation(output_dir: str, dataset_name: str, *, score_threshold: float,
                                   iou_min: float = DEFAULT_IOU_MIN, one_name_per_object_iou: Optional[float] = None) -> Dict:
    """
    :func:`naming_accuracy_of_lvis_results` of a training run's final evaluation: the detections the
    LVIS evaluator saved under ``<output_dir>/inference/<dataset_name>/lvis_instances_results.json``
    against the registered dataset's ground-truth json (its metadata's ``json_file``).
    """
    from detectron2.data import MetadataCatalog

    results = os.path.join(output_dir, "inference", dataset_name, "lvis_instances_results.json")
    if not os.path.isfile(results):
        raise FileNotFoundError(f"no saved detections of {dataset_name} at {results} (was the run evaluated?)")
    gt_json = MetadataCatalog.get(dataset_name).get("json_file", None)
    if not gt_json:
        raise ValueError(f"dataset {dataset_name!r} has no ground-truth json_file in its metadata")
    return naming_accuracy_of_lvis_results(gt_json, results, score_threshold=score_threshold, iou_min=iou_min,
                                           one_name_per_object_iou=one_name_per_object_iou)


def naming_accuracy_values(result: Dict) -> Dict[str, float]:
    """``{"base": accuracy, "novel": ..., "all": ...}`` of a :func:`naming_accuracy` result (empty groups left out)."""
    return {g: result[g]["accuracy"] for g in _GROUPS if result[g]["accuracy"] is not None}


def format_naming_accuracy(result: Optional[Dict]) -> str:
    """One line: ``base 62.0 % (124/200), novel 31.7 % (32/101), all ...`` (``-`` for an empty group)."""
    if not result:
        return "-"
    parts = []
    for group in _GROUPS:
        c = result[group]
        value = "-" if c["accuracy"] is None else f"{100 * c['accuracy']:.1f} %"
        parts.append(f"{group} {value} ({c['named']}/{c['objects']})")
    return ", ".join(parts)
