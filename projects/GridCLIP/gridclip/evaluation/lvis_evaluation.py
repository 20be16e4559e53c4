"""
``GridCLIPLVISEvaluator``: Detectron2's LVISEvaluator (300 detections per image) that also exports
per-category AP with each category's training frequency, and the paper-style table.

It runs LVIS's ``LVISEval`` once per task, exactly as Detectron2 does, and reads the per-category AP
from the same ``LVISEval`` object (no second evaluation). Files written to ``output_dir`` besides
Detectron2's ``instances_predictions.pth`` / ``lvis_instances_results.json``:

- ``per_category_ap.json`` (bbox; ``per_category_ap_segm.json`` for masks): a list of
  ``{"id", "name", "frequency", "image_count", "ap"}`` in category-id order; ``ap`` is AP over IoU
  .5:.95 in percent (the scale of Detectron2's results), ``null`` for categories without ground truth
  in the evaluated set; ``frequency`` ("r"/"c"/"f") and ``image_count`` (training images) come from
  the GT json's categories. Input of ``tools/plot_ap_by_frequency.py``.
- ``paper_table.md``: :func:`gridclip.evaluation.tables.format_paper_table` of the results.

The returned results are Detectron2's, unchanged: ``{"bbox": {AP, AP50, AP75, APs, APm, APl, APr, APc, APf}}``.
"""
import copy
import itertools
import json
import logging
import os
from collections import OrderedDict

import numpy as np
from detectron2.evaluation import LVISEvaluator
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from .tables import format_paper_table

__all__ = ["GridCLIPLVISEvaluator", "per_category_ap", "LVIS_METRICS", "PER_CATEGORY_AP_FILE", "PAPER_TABLE_FILE"]

LVIS_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]
PER_CATEGORY_AP_FILE = "per_category_ap.json"
PAPER_TABLE_FILE = "paper_table.md"

logger = logging.getLogger(__name__)


def _category_record(category, ap):
    return {
        "id": int(category["id"]),
        "name": category.get("name", str(category["id"])),
        "frequency": category.get("frequency"),
        "image_count": category.get("image_count"),
        "ap": ap,
    }


def per_category_ap(lvis_eval):
    """
    Per-category AP from an accumulated ``lvis.LVISEval``.

    AP of category k = mean of ``eval["precision"][:, :, k, area "all"]`` over entries > -1 (IoU
    .5:.95, 101 recall points), in percent; None when the category has no ground truth (all -1).

    Returns:
        list[dict]: ``{"id", "name", "frequency", "image_count", "ap"}`` in ``params.cat_ids`` order.
    """
    precision = lvis_eval.eval["precision"]  # [T IoU thresholds, R recall points, K categories, A areas]
    area_all = lvis_eval.params.area_rng_lbl.index("all")
    records = []
    for k, cat_id in enumerate(lvis_eval.params.cat_ids):
        p = precision[:, :, k, area_all]
        valid = p[p > -1]
        ap = float(np.mean(valid) * 100) if valid.size else None
        records.append(_category_record(lvis_eval.lvis_gt.cats[cat_id], ap))
    return records


def _per_category_ap_without_predictions(lvis_gt):
    """No detections at all: AP 0 for every category with ground truth, None for the others."""
    with_gt = {ann["category_id"] for ann in lvis_gt.anns.values()}
    return [
        _category_record(lvis_gt.cats[cat_id], 0.0 if cat_id in with_gt else None)
        for cat_id in sorted(lvis_gt.get_cat_ids())
    ]


class GridCLIPLVISEvaluator(LVISEvaluator):
    """
    LVISEvaluator with 300 max detections per image that also writes ``per_category_ap.json`` and
    ``paper_table.md`` to ``output_dir`` (see module doc). Same arguments as Detectron2's.
    """

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, *, max_dets_per_image=300):
        super().__init__(
            dataset_name, tasks=tasks, distributed=distributed, output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
        )
        self._dataset_name = dataset_name
        self.per_category_results = OrderedDict()

    def _eval_predictions(self, predictions):
        """Detectron2's LVISEvaluator._eval_predictions, keeping each task's LVISEval for per-category AP."""
        self._logger.info("Preparing results in the LVIS format ...")
        lvis_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(lvis_results)

        if hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            reverse_id_mapping = {v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()}
            for result in lvis_results:
                result["category_id"] = reverse_id_mapping[result["category_id"]]
        else:
            # unmap the category ids for LVIS (from 0-indexed to 1-indexed)
            for result in lvis_results:
                result["category_id"] += 1

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "lvis_instances_results.json")
            self._logger.info("Saving results to {}".format(file_path))
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(lvis_results))
                f.flush()

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        self._logger.info("Evaluating predictions ...")
        for task in sorted(tasks):
            metrics, categories = self._evaluate_task(lvis_results, task)
            self._results[task] = metrics
            self.per_category_results[task] = categories
        self._write_outputs()

    def _evaluate_task(self, lvis_results, iou_type):
        """Detectron2's ``_evaluate_predictions_on_lvis`` + per-category AP from the same LVISEval."""
        if len(lvis_results) == 0:
            self._logger.warning("No predictions from the model!")
            return {m: float("nan") for m in LVIS_METRICS}, _per_category_ap_without_predictions(self._lvis_api)

        if iou_type == "segm":
            lvis_results = copy.deepcopy(lvis_results)
            # Mask AP uses the mask area for small/medium/large (as Detectron2 does).
            for c in lvis_results:
                c.pop("bbox", None)

        from lvis import LVISEval, LVISResults

        self._logger.info(f"Evaluating with max detections per image = {self._max_dets_per_image}")
        results = LVISResults(self._lvis_api, lvis_results, max_dets=self._max_dets_per_image)
        lvis_eval = LVISEval(self._lvis_api, results, iou_type)
        evaluated_ids = self._evaluated_category_ids()
        if evaluated_ids is not None:
            # A dataset over a subset of the json's categories (closed-set "lvis_v1_val_cf"): score only
            # those, or the others would count as AP 0 (and rare categories would fill AP_r).
            lvis_eval.params.cat_ids = evaluated_ids
        lvis_eval.run()
        lvis_eval.print_results()
        summary = lvis_eval.get_results()
        metrics = {m: float(summary[m] * 100) for m in LVIS_METRICS}
        self._logger.info("Evaluation results for {}: \n".format(iou_type) + create_small_table(metrics))
        return metrics, per_category_ap(lvis_eval)

    def _evaluated_category_ids(self):
        """The dataset's category ids if they are a strict subset of the GT json's, else None."""
        id_map = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if not id_map:
            return None
        dataset_ids = sorted(int(i) for i in id_map)
        return dataset_ids if set(dataset_ids) < set(self._lvis_api.get_cat_ids()) else None

    def _write_outputs(self):
        if not self._output_dir:
            return
        table = format_paper_table(dict(self._results), title=f"{self._dataset_name} (LVISEvaluator)")
        PathManager.mkdirs(self._output_dir)
        for task, categories in self.per_category_results.items():
            name = PER_CATEGORY_AP_FILE if task == "bbox" else PER_CATEGORY_AP_FILE.replace(".json", f"_{task}.json")
            with PathManager.open(os.path.join(self._output_dir, name), "w") as f:
                json.dump(categories, f, indent=1)
        with PathManager.open(os.path.join(self._output_dir, PAPER_TABLE_FILE), "w") as f:
            f.write(table)
        self._logger.info(f"Wrote {PER_CATEGORY_AP_FILE} and {PAPER_TABLE_FILE} to {self._output_dir}")
