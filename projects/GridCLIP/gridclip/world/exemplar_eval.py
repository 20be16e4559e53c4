"""
Image-exemplar queries against text queries in the generated world.

Protocol: for every never-annotated (rare, novel) category, one exemplar is taken from one val image
(the first val image, by id, that shows the category; its largest box of it). Those exemplar images are
removed from the evaluation; on the other val images the detector is evaluated (LVIS AP, lvis-api) with

- ``text``: every category named by text (the ordinary open-vocabulary evaluation);
- ``exemplars``: the base (common + frequent) categories by text, each novel category by its exemplar
  (:mod:`gridclip.exemplars`: the detector's own grid embedding at the exemplar box);

and ``novel_top1``: over the novel objects of the evaluated images, the fraction whose best-scoring
detection overlapping it (IoU >= 0.5, whole vocabulary) carries its name (chance: 1 / K).

    python -m gridclip.world.exemplar_eval --pretrained output/gridclip_world_pretrained/pretrained \\
        --random-init output/gridclip_world_pretrained/random_init --dataset-root datasets/world
"""
import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from typing import Dict, List, Optional

import numpy as np
import torch

__all__ = ["choose_exemplars", "evaluate_queries", "evaluate_run", "exemplar_table", "main"]

MODES = ("text", "exemplars")


def _image_path(root, image):
    return os.path.join(root, image["coco_url"]) if "coco_url" in image else os.path.join(root, image["file_name"])


def choose_exemplars(gt: dict, root: str, frequencies=("r",)):
    """
    One exemplar per category of ``frequencies`` (default: the rare ones) from ``gt`` (an LVIS-format
    dict): {category_id: Exemplar}, from the first image (by id) showing it, its largest box.
    """
    from ..exemplars import Exemplar

    images = {im["id"]: im for im in gt["images"]}
    chosen = {}
    for cat in sorted(gt["categories"], key=lambda c: c["id"]):
        if cat.get("frequency") not in frequencies:
            continue
        anns = [a for a in gt["annotations"] if a["category_id"] == cat["id"]]
        if not anns:
            continue
        first = min(a["image_id"] for a in anns)
        x, y, w, h = max((a for a in anns if a["image_id"] == first), key=lambda a: a["bbox"][2] * a["bbox"][3])["bbox"]
        chosen[cat["id"]] = (first, Exemplar(_image_path(root, images[first]), (x, y, x + w, y + h), cat["name"]))
    return chosen


def _subset(gt, image_ids):
    keep = set(image_ids)
    subset = dict(gt)
    subset["images"] = [im for im in gt["images"] if im["id"] in keep]
    subset["annotations"] = [a for a in gt["annotations"] if a["image_id"] in keep]
    return subset


def _lvis_metrics(gt_subset, results):
    from lvis import LVIS, LVISEval, LVISResults

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gt.json")
        with open(path, "w") as f:
            json.dump(gt_subset, f)
        with contextlib.redirect_stdout(io.StringIO()):
            lvis_gt = LVIS(path)
            if not results:
                return {k: 0.0 for k in ("AP", "APr", "APc", "APf")}
            evaluator = LVISEval(lvis_gt, LVISResults(lvis_gt, results, max_dets=300), "bbox")
            evaluator.run()
    return {k: round(100 * float(v), 2) for k, v in evaluator.get_results().items() if k in ("AP", "APr", "APc", "APf")}


def _novel_top1(gt_subset, detections, category_ids, novel_ids):
    from detectron2.structures import Boxes, pairwise_iou

    index = {c: i for i, c in enumerate(category_ids)}
    by_image = dict(detections)
    hits = []
    for ann in gt_subset["annotations"]:
        if ann["category_id"] not in novel_ids:
            continue
        det = by_image[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        if not len(det):
            hits.append(False)
            continue
        overlap = pairwise_iou(Boxes(torch.tensor([[x, y, x + w, y + h]])), Boxes(det.boxes))[0] >= 0.5
        if not overlap.any():
            hits.append(False)
            continue
        best = det.scores.masked_fill(~overlap, -1.0).argmax()
        hits.append(int(det.class_ids[best]) == index[ann["category_id"]])
    return (float(np.mean(hits)) if hits else float("nan")), len(hits)


def evaluate_queries(predictor, gt: dict, root: str, modes=MODES, exemplars=None) -> Dict[str, dict]:
    """
    The protocol of the module doc with one predictor: {mode: {AP, APr, APc, APf, novel_top1, ...}}.
    ``exemplars``: :func:`choose_exemplars`'s result (default: computed from ``gt``).
    """
    exemplars = choose_exemplars(gt, root) if exemplars is None else exemplars
    excluded = {image_id for image_id, _ in exemplars.values()}
    eval_ids = sorted(im["id"] for im in gt["images"] if im["id"] not in excluded)
    subset = _subset(gt, eval_ids)
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    category_ids = [c["id"] for c in cats]
    images = {im["id"]: im for im in gt["images"]}
    paths = [_image_path(root, images[i]) for i in eval_ids]
    results = {}
    for mode in modes:
        vocabulary = [exemplars[c["id"]][1] if mode == "exemplars" and c["id"] in exemplars else c["name"] for c in cats]
        predictor.set_vocabulary(vocabulary)
        detections = list(zip(eval_ids, predictor.predict(paths, batch_size=8)))
        coco = [
            {"image_id": image_id, "category_id": category_ids[int(c)], "score": float(s),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
            for image_id, det in detections for b, s, c in zip(det.boxes.tolist(), det.scores, det.class_ids)
        ]
        metrics = _lvis_metrics(subset, coco)
        metrics["novel_top1"], metrics["novel_objects"] = _novel_top1(subset, detections, category_ids, set(exemplars))
        metrics["novel_top1"] = round(metrics["novel_top1"], 3)
        results[mode] = metrics
    results["protocol"] = {"exemplar_images": sorted(excluded), "evaluated_images": len(eval_ids),
                           "novel_categories": len(exemplars), "vocabulary_size": len(cats)}
    return results


def evaluate_run(run_dir: str, gt: dict, root: str, device="cpu") -> Dict[str, dict]:
    """:func:`evaluate_queries` for a training output folder (its config.yaml + model_final.pth)."""
    from ..predictor import GridCLIPPredictor

    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    predictor = GridCLIPPredictor(os.path.join(run_dir, "config.yaml"), os.path.join(run_dir, "model_final.pth"),
                                  vocabulary=names, device=device)
    return evaluate_queries(predictor, gt, root)


def exemplar_table(rows: Dict[str, Dict[str, dict]]) -> str:
    """Markdown table: one row per (run, query mode)."""
    lines = ["| CLIPs | novel categories queried by | AP | AP_r | AP_c | AP_f | novel top-1 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for run, result in rows.items():
        for mode in MODES:
            m = result[mode]
            label = "text (their names)" if mode == "text" else "one image exemplar each"
            lines.append(f"| {run} | {label} | {m['AP']:.1f} | {m['APr']:.1f} | {m['APc']:.1f} | {m['APf']:.1f} | "
                         f"{m['novel_top1']:.2f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    from ..file_io import atomic_write_json, read_json
    from .datasets import world_dataset_root
    from .detection import world_dataset_paths

    parser = argparse.ArgumentParser(prog="python -m gridclip.world.exemplar_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", required=True, help="training output folder (config.yaml + model_final.pth)")
    parser.add_argument("--random-init", default="", help="the random-init CLIPs' output folder (optional)")
    parser.add_argument("--dataset-root", default="", help="the world's data (default $DETECTRON2_DATASETS/world)")
    parser.add_argument("--output", default="", help="write the results as JSON here")
    args = parser.parse_args(argv)
    paths = world_dataset_paths(args.dataset_root or world_dataset_root())
    gt = read_json(paths["val_json"], "world val annotations")
    torch.set_num_threads(1)
    rows = {"pretrained": evaluate_run(args.pretrained, gt, paths["root"])}
    if args.random_init:
        rows["random-init"] = evaluate_run(args.random_init, gt, paths["root"])
    print(exemplar_table(rows))
    print(json.dumps(rows["pretrained"]["protocol"]))
    if args.output:
        atomic_write_json(args.output, rows)
    return 0


if __name__ == "__main__":
    from ..tool_errors import run_tool

    sys.exit(run_tool(main, sys.argv[1:], prog="python -m gridclip.world.exemplar_eval"))
