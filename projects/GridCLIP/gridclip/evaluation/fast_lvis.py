"""
LVIS box AP from :class:`CompactDetections`, with faster-coco-eval's C++ matching, in category chunks.

The numbers are lvis-api's (``lvis.LVISEval``, iou_type "bbox"), bit for bit: the same precision
[T, R, K, A] and recall [T, K, A] arrays, summarised by the same expressions. What differs is how:

1. detections stay numpy arrays; lvis-api's per-image limit (the ``max_dets`` best scores of each image,
   ties kept in input order), its federated filter (a detection is evaluated only where its category
   is in the image's ground truth or its ``neg_category_ids``) and its area filter (boxes and ground
   truth with area 0 are dropped) are array operations;
2. LVIS AP is computed per category, so categories are evaluated in chunks of bounded size: only one
   chunk's detections and ground truth are ever Python dicts, handed to faster-coco-eval's
   ``COCOeval_faster(lvis_style=True)`` (not-exhaustive categories: unmatched detections ignored);
3. each chunk evaluates only the images that hold its categories (an image without ground truth or
   detections of a category adds nothing to that category's curve).

Ordering is what makes ties exact: within an image and category, detections sort by score with
input order breaking ties; across images, by score then image id, as lvis-api's stable sorts do.

The result object mimics the parts of ``LVISEval`` its users read (``eval["precision"]``, ``params``,
``lvis_gt``, ``results``, ``get_results()``, ``print_results()``), so :func:`per_category_ap` and the
evaluator treat both backends alike.
"""
import datetime
import logging
from collections import OrderedDict

import numpy as np

__all__ = ["FastLVISEval", "evaluate_lvis_boxes", "select_lvis_detections", "lvis_summary"]

logger = logging.getLogger(__name__)

#: detections + ground-truth boxes per chunk (bounds the dicts alive at once)
DEFAULT_CHUNK_BOXES = 400_000
#: images x categories per chunk (faster-coco-eval's dense tables: time and memory grow with it)
DEFAULT_CHUNK_PAIRS = 2_000
#: at most this many categories per chunk
DEFAULT_CHUNK_CATEGORIES = 256


def _lvis_params(lvis_gt, cat_ids):
    """``LVISEval``'s params (its ``max_dets`` stays 300, a label only: the limit is ``LVISResults``')."""
    from lvis.eval import Params

    params = Params(iou_type="bbox")
    params.img_ids = sorted(lvis_gt.get_img_ids())
    params.cat_ids = sorted(cat_ids) if cat_ids is not None else sorted(lvis_gt.get_cat_ids())
    return params


def _ground_truth_arrays(lvis_gt, img_ids, cat_ids):
    """[M] image index, category index, json order of the GT annotations of the evaluated categories."""
    img_pos = {img_id: i for i, img_id in enumerate(img_ids)}
    cat_pos = {cat_id: k for k, cat_id in enumerate(cat_ids)}
    # lvis-api's get_ann_ids keeps 0 < area < inf only (strict): a zero-area box is not ground truth
    anns = [
        a for a in lvis_gt.dataset["annotations"]
        if a["category_id"] in cat_pos and a["image_id"] in img_pos and 0 < a["area"] < float("inf")
    ]
    if any(a.get("ignore", 0) for a in anns):
        raise ValueError("ground truth with 'ignore' set is not supported by the faster backend; use lvis")
    image_index = np.array([img_pos[a["image_id"]] for a in anns], np.int64)
    category_index = np.array([cat_pos[a["category_id"]] for a in anns], np.int64)
    return anns, image_index, category_index


def select_lvis_detections(detections, img_ids, cat_ids, max_dets, gt_pairs, neg_pairs):
    """
    lvis-api's selection of the detections it evaluates, as array operations: the per-image limit,
    the evaluated categories, the federated filter, and 0 < area < inf.

    Args:
        detections (CompactDetections): dataset category ids, in input order.
        img_ids, cat_ids (list[int]): the evaluated (sorted) image and category ids.
        max_dets (int): per-image limit over all categories (``LVISResults``); < 0: none.
        gt_pairs, neg_pairs (np.ndarray): [P] int64 keys ``image index * len(cat_ids) + category index``
            of the image's ground-truth categories and ``neg_category_ids``.

    Returns:
        (np.ndarray, np.ndarray, np.ndarray): kept detection indices (input order), their image index
        and category index.

    Raises:
        ValueError: a detection of an image outside the ground truth (lvis-api asserts the same).
    """
    n = len(detections)
    img_ids = np.asarray(img_ids, np.int64)
    image_index = np.searchsorted(img_ids, detections.image_id)
    image_index_clipped = np.minimum(image_index, max(len(img_ids) - 1, 0))
    if n and (len(img_ids) == 0 or (img_ids[image_index_clipped] != detections.image_id).any()):
        raise ValueError("Results do not correspond to current LVIS set: detections of images outside the ground truth.")
    keep = np.ones(n, bool)
    if max_dets >= 0 and n:
        # rank of each detection within its image by (score desc, input order): a stable sort
        order = np.lexsort((np.arange(n), -detections.score.astype(np.float64), image_index))
        sorted_images = image_index[order]
        starts = np.r_[0, np.flatnonzero(sorted_images[1:] != sorted_images[:-1]) + 1]
        group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n) - group_start
        keep &= rank < max_dets
    cat_ids = np.asarray(cat_ids, np.int64)
    category_index = np.searchsorted(cat_ids, detections.category_id)
    in_cats = category_index < len(cat_ids)
    in_cats[in_cats] = cat_ids[category_index[in_cats]] == detections.category_id[in_cats]
    keep &= in_cats
    allowed = np.union1d(gt_pairs, neg_pairs)
    keys = image_index * len(cat_ids) + np.where(in_cats, category_index, 0)
    pos = np.minimum(np.searchsorted(allowed, keys), max(len(allowed) - 1, 0))
    keep &= (allowed[pos] == keys) if len(allowed) else False
    # after the per-image limit, lvis-api's get_ann_ids drops boxes outside 0 < w * h < inf
    area = detections.bbox[:, 2].astype(np.float64) * detections.bbox[:, 3].astype(np.float64)
    keep &= (area > 0) & (area < np.inf)
    kept = np.flatnonzero(keep)
    return kept, image_index[kept], category_index[kept]


def _chunks(cat_images, cat_boxes, max_boxes, max_pairs, max_categories):
    """
    Consecutive category-index ranges [(k0, k1)] such that each chunk's boxes (detections + ground truth)
    stay <= ``max_boxes`` and its images x categories (faster-coco-eval's dense per-image, per-category
    tables) <= ``max_pairs``, or the chunk is a single category.

    Args:
        cat_images (list[np.ndarray]): per category, the indices of the images it has boxes in.
        cat_boxes (np.ndarray): [K] boxes per category.
    """
    chunks, start, images, boxes = [], 0, set(), 0
    for k, (img, count) in enumerate(zip(cat_images, cat_boxes)):
        grown = images.union(img.tolist()) if k > start else set(img.tolist())
        if k > start and (
            boxes + count > max_boxes or len(grown) * (k - start + 1) > max_pairs or k - start >= max_categories
        ):
            chunks.append((start, k))
            start, grown, boxes = k, set(img.tolist()), 0
        images = grown
        boxes += int(count)
    if len(cat_boxes):
        chunks.append((start, len(cat_boxes)))
    return chunks


#: recall thresholds 2^-k: for any n >= 1 exactly one lies in (1/n, 2/n] (see _lvis_first_precision)
_POW2_RECALLS = np.array([2.0 ** -k for k in range(40, -1, -1)])
#: lvis-api's precision at a first true positive: 1 / (1 + eps)
LVIS_FIRST_TP_PRECISION = 1.0 / (1.0 + np.spacing(1))


def _lvis_first_precision(precision, precision_pow2, num_gt):
    """
    Make faster-coco-eval's interpolated precision equal to lvis-api's where they differ.

    lvis-api computes precision as tp / (tp + fp + eps), the C++ accumulate as tp / (tp + fp). In double
    precision n + eps == n for every n >= 2, so the two differ only at the state tp = 1, fp = 0:
    1 / (1 + eps) = 1 - 2^-52 instead of 1.0. An interpolated value of 1.0 comes from a state with no
    false positive; it is lvis-api's 1 - 2^-52 exactly when the leading run of true positives (among
    the non-ignored detections) is 1 long. That run is >= 2 iff precision at some recall threshold in
    (1/num_gt, 2/num_gt] is 1.0, which ``precision_pow2`` (accumulated at recall thresholds 2^-k,
    one of which always lies in that interval) tells.

    Args:
        precision (np.ndarray): [T, R, K, A] faster-coco-eval's, changed in place.
        precision_pow2 (np.ndarray): [T, len(_POW2_RECALLS), K, A] the same accumulation at 2^-k.
        num_gt (np.ndarray): [K, A] non-ignored ground truth per category and area range.
    """
    ones = (precision == 1.0).any(axis=1)  # [T, K, A]
    if not ones.any():
        return
    with np.errstate(divide="ignore"):
        probe = np.searchsorted(_POW2_RECALLS, 1.0 / np.maximum(num_gt, 1), side="right")  # first 2^-k > 1/n
    has_probe = probe < len(_POW2_RECALLS)  # n = 1: no tp = 2 state, no probe
    K, A = num_gt.shape
    k_index, a_index = np.meshgrid(np.arange(K), np.arange(A), indexing="ij")
    at_probe = precision_pow2[:, np.minimum(probe, len(_POW2_RECALLS) - 1), k_index, a_index]  # [T, K, A]
    run_of_one = ones & ~(has_probe[None] & (at_probe == 1.0))
    fix = run_of_one[:, None, :, :] & (precision == 1.0)
    precision[fix] = LVIS_FIRST_TP_PRECISION


def _evaluate_chunk(params, images, gt_anns, dets, categories, num_gt, max_dets):
    """faster-coco-eval (lvis_style) on one chunk: ([T, R, K, A] precision, [T, K, A] recall), lvis-api's values."""
    from faster_coco_eval import COCO
    from faster_coco_eval.core.faster_eval_api import COCOeval_faster

    cat_ids = [c["id"] for c in categories]
    coco_gt = COCO({"images": images, "annotations": gt_anns, "categories": categories})
    coco_dt = COCO({"images": images, "annotations": dets, "categories": categories})
    evaluator = COCOeval_faster(
        coco_gt, coco_dt, "bbox", lvis_style=True, separate_eval=True, print_function=lambda *a: None
    )
    p = evaluator.params
    p.imgIds = sorted(img["id"] for img in images)
    p.catIds = [int(c) for c in cat_ids]
    p.iouThrs = params.iou_thrs
    p.recThrs = params.rec_thrs
    p.maxDets = [max_dets if max_dets >= 0 else 10 ** 9]  # a per-image limit is also one per image and category
    p.areaRng = [list(r) for r in params.area_rng]
    p.areaRngLbl = list(params.area_rng_lbl)
    evaluator.evaluate()
    evaluator.accumulate()
    precision, recall = evaluator.eval["precision"][..., -1], evaluator.eval["recall"][..., -1]
    if (precision == 1.0).any():
        evaluator._paramsEval.recThrs = _POW2_RECALLS
        evaluator.accumulate()
        _lvis_first_precision(precision, evaluator.eval["precision"][..., -1], num_gt)
    return precision, recall


class FastLVISEval:
    """
    The parts of an accumulated + summarised ``lvis.LVISEval`` (bbox) that its readers use.

    Attributes:
        lvis_gt: the ground truth (``lvis.LVIS``).
        params: ``lvis.eval.Params`` (``cat_ids``, ``img_ids``, ``iou_thrs``, ``area_rng_lbl``, ...).
        eval (dict): ``precision`` [T, R, K, A] and ``recall`` [T, K, A] (-1 where undefined).
        freq_groups (list[list[int]]): category indices of the r, c, f groups.
        results (OrderedDict): AP, AP50, AP75, APs, APm, APl, APr, APc, APf, AR@max_dets, ARs/m/l@max_dets.
        stats (dict): sizes and timings of the run.
    """

    def __init__(self, lvis_gt, params, precision, recall, stats):
        self.lvis_gt = lvis_gt
        self.params = params
        self.eval = {
            "params": params, "counts": list(precision.shape),
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "precision": precision, "recall": recall,
        }
        cats = lvis_gt.load_cats(params.cat_ids)
        self.freq_groups = [[] for _ in params.img_count_lbl]
        for idx, cat in enumerate(cats):
            self.freq_groups[params.img_count_lbl.index(cat["frequency"])].append(idx)
        self.results = lvis_summary(precision, recall, params, self.freq_groups)
        self.stats = stats

    def get_results(self):
        return self.results

    def print_results(self):
        """lvis-api's ``print_results`` lines, to stdout."""
        template = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} catIds={:>3s}] = {:0.3f}"
        for key, value in self.results.items():
            title, kind = ("Average Precision", "(AP)") if "AP" in key else ("Average Recall", "(AR)")
            if len(key) > 2 and key[2].isdigit():
                iou = "{:0.2f}".format(float(key[2:]) / 100)
            else:
                iou = "{:0.2f}:{:0.2f}".format(self.params.iou_thrs[0], self.params.iou_thrs[-1])
            group = key[2] if len(key) > 2 and key[2] in ["r", "c", "f"] else "all"
            area = key[2] if len(key) > 2 and key[2] in ["s", "m", "l"] else "all"
            print(template.format(title, kind, iou, area, self.params.max_dets, group, value))


def _summarize(precision, recall, params, freq_groups, summary_type, iou_thr=None, area_rng="all", freq_group_idx=None):
    """``lvis.LVISEval._summarize``, the same expressions (so the same float results)."""
    aidx = [idx for idx, _area_rng in enumerate(params.area_rng_lbl) if _area_rng == area_rng]
    if summary_type == "ap":
        s = precision
        if iou_thr is not None:
            tidx = np.where(iou_thr == params.iou_thrs)[0]
            s = s[tidx]
        if freq_group_idx is not None:
            s = s[:, :, freq_groups[freq_group_idx], aidx]
        else:
            s = s[:, :, :, aidx]
    else:
        s = recall
        if iou_thr is not None:
            tidx = np.where(iou_thr == params.iou_thrs)[0]
            s = s[tidx]
        s = s[:, :, aidx]
    if len(s[s > -1]) == 0:
        return -1
    return np.mean(s[s > -1])


def lvis_summary(precision, recall, params, freq_groups):
    """``lvis.LVISEval.summarize``'s results dict from accumulated arrays."""
    args = (precision, recall, params, freq_groups)
    results = OrderedDict()
    results["AP"] = _summarize(*args, "ap")
    results["AP50"] = _summarize(*args, "ap", iou_thr=0.50)
    results["AP75"] = _summarize(*args, "ap", iou_thr=0.75)
    results["APs"] = _summarize(*args, "ap", area_rng="small")
    results["APm"] = _summarize(*args, "ap", area_rng="medium")
    results["APl"] = _summarize(*args, "ap", area_rng="large")
    results["APr"] = _summarize(*args, "ap", freq_group_idx=0)
    results["APc"] = _summarize(*args, "ap", freq_group_idx=1)
    results["APf"] = _summarize(*args, "ap", freq_group_idx=2)
    results["AR@{}".format(params.max_dets)] = _summarize(*args, "ar")
    for area_rng in ["small", "medium", "large"]:
        results["AR{}@{}".format(area_rng[0], params.max_dets)] = _summarize(*args, "ar", area_rng=area_rng)
    return results


def evaluate_lvis_boxes(lvis_gt, detections, max_dets=300, cat_ids=None, chunk_boxes=DEFAULT_CHUNK_BOXES,
                        chunk_categories=DEFAULT_CHUNK_CATEGORIES, chunk_pairs=DEFAULT_CHUNK_PAIRS):
    """
    lvis-api's bbox evaluation (``LVISResults(gt, dets, max_dets)`` + ``LVISEval(...).run()``) of
    array detections.

    Args:
        lvis_gt (lvis.LVIS): ground truth.
        detections (CompactDetections): ``category_id`` = dataset category ids.
        max_dets (int): detections kept per image (LVIS: 300).
        cat_ids (list[int] or None): evaluated categories (``params.cat_ids``); None = all of the GT's.
        chunk_boxes, chunk_categories, chunk_pairs: chunk size bounds (time, memory); the numbers do not
            depend on them.

    Returns:
        FastLVISEval
    """
    import time

    start = time.perf_counter()
    params = _lvis_params(lvis_gt, cat_ids)
    img_ids, cat_ids = params.img_ids, params.cat_ids
    num_cats = len(cat_ids)
    gt_anns, gt_image, gt_cat = _ground_truth_arrays(lvis_gt, img_ids, cat_ids)
    gt_pairs = np.unique(gt_image * num_cats + gt_cat)
    cat_pos = {c: k for k, c in enumerate(cat_ids)}
    neg = [
        i * num_cats + cat_pos[c]
        for i, img_id in enumerate(img_ids)
        for c in lvis_gt.imgs[img_id].get("neg_category_ids", [])
        if c in cat_pos
    ]
    neg_pairs = np.unique(np.array(neg, np.int64))
    kept, det_image, det_cat = select_lvis_detections(detections, img_ids, cat_ids, max_dets, gt_pairs, neg_pairs)
    t_select = time.perf_counter() - start

    T, R, A = len(params.iou_thrs), len(params.rec_thrs), len(params.area_rng)
    precision = -np.ones((T, R, num_cats, A))
    recall = -np.ones((T, num_cats, A))

    det_order = kept[np.argsort(det_cat, kind="stable")]  # by category, input order within
    det_cat_sorted = np.sort(det_cat, kind="stable")
    gt_order = np.argsort(gt_cat, kind="stable")  # json order within a category
    gt_cat_sorted = gt_cat[gt_order]
    det_bounds = np.searchsorted(det_cat_sorted, np.arange(num_cats + 1))
    gt_bounds = np.searchsorted(gt_cat_sorted, np.arange(num_cats + 1))
    boxes_per_cat = np.diff(det_bounds) + np.diff(gt_bounds)
    det_image_sorted = det_image[np.argsort(det_cat, kind="stable")]
    gt_image_sorted = gt_image[gt_order]
    cat_images = [
        np.unique(np.concatenate([det_image_sorted[det_bounds[k]:det_bounds[k + 1]], gt_image_sorted[gt_bounds[k]:gt_bounds[k + 1]]]))
        for k in range(num_cats)
    ]
    chunks = _chunks(cat_images, boxes_per_cat, chunk_boxes, chunk_pairs, chunk_categories)
    del cat_images

    # non-ignored ground truth per category and area range (lvis-api: ignored = area outside the range)
    gt_area = np.array([a["area"] for a in gt_anns], np.float64)
    num_gt = np.stack([
        np.bincount(gt_cat[(gt_area >= lo) & (gt_area <= hi)], minlength=num_cats) for lo, hi in params.area_rng
    ], 1)
    bbox64 = detections.bbox
    for k0, k1 in chunks:
        d = det_order[det_bounds[k0]:det_bounds[k1]]
        g = np.sort(gt_order[gt_bounds[k0]:gt_bounds[k1]])  # json order across the chunk
        if len(d) == 0 and len(g) == 0:
            continue
        images_in_chunk = np.unique(np.concatenate([np.searchsorted(img_ids, detections.image_id[d]), gt_image[g]]))
        images = [lvis_gt.imgs[img_ids[i]] for i in images_in_chunk]
        chunk_gt = [
            {"id": a["id"], "image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "area": a["area"]}
            for a in (gt_anns[i] for i in g)
        ]
        d = np.sort(d)  # input order (by image, then as produced) for faster-coco-eval's stable sorts
        boxes = bbox64[d].astype(np.float64)
        areas = (boxes[:, 2] * boxes[:, 3]).tolist()
        chunk_dt = [
            {"id": j + 1, "image_id": i, "category_id": c, "bbox": b, "score": s, "area": area}
            for j, (i, c, b, s, area) in enumerate(zip(
                detections.image_id[d].tolist(), detections.category_id[d].tolist(), boxes.tolist(),
                detections.score[d].tolist(), areas,
            ))
        ]
        categories = [{"id": c, "frequency": lvis_gt.cats[c]["frequency"]} for c in cat_ids[k0:k1]]
        p, r = _evaluate_chunk(params, images, chunk_gt, chunk_dt, categories, num_gt[k0:k1], max_dets)
        precision[:, :, k0:k1, :] = p
        recall[:, k0:k1, :] = r
        del chunk_gt, chunk_dt

    stats = {
        "detections": len(detections), "evaluated_detections": int(len(kept)), "ground_truth": len(gt_anns),
        "images": len(img_ids), "categories": num_cats, "chunks": len(chunks),
        "select_s": round(t_select, 3), "total_s": round(time.perf_counter() - start, 3),
    }
    logger.info("faster LVIS evaluation: %s", stats)
    return FastLVISEval(lvis_gt, params, precision, recall, stats)
