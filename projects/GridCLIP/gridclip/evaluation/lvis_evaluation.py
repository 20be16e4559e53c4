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
- ``paper_table.md``: :func:`gridclip.evaluation.tables.format_paper_table` of the results, titled
  with the evaluation protocol.

Evaluation protocols (:func:`lvis_protocol`; every table states which one it used):

- ``"all-categories"`` (the paper's, Tables 1, 4, 5): LVISEval over every category of the GT json.
  A model whose vocabulary lacks some of them (the closed-set c+f model of Table 4, evaluated on
  ``lvis_v1_val`` with ``TEST_VOCABULARY`` = its 866 training classes) never predicts them, and they
  count as AP 0: AP = (n_c·AP_c + n_f·AP_f) / (n_r + n_c + n_f), AP_r = 0.
- ``"restricted"``: a test dataset over a subset of the json's categories (``lvis_v1_val_cf``): only
  those are evaluated, so the same closed-set model reads AP = (n_c·AP_c + n_f·AP_f) / (n_c + n_f)
  (about 4 AP higher on LVIS) and AP_r is empty (-1).

``vocabulary`` (the names the model's ``pred_classes`` index; default the dataset's classes) may be a
subset of the dataset's classes, matched by name; its predictions are mapped to the dataset's ids.

The returned results are Detectron2's, unchanged: ``{"bbox": {AP, AP50, AP75, APs, APm, APl, APr, APc, APf}}``.

Backends (``backend``, config ``TEST.LVIS_EVAL_BACKEND``), the same numbers bit for bit:

- ``"faster"`` (default): detections are kept as arrays (:class:`CompactDetections`, 28 bytes each
  instead of a ~0.5 kB dict), ranks send arrays to rank 0, and :func:`evaluate_lvis_boxes` computes
  lvis-api's AP with faster-coco-eval's C++ matching, in category chunks. Box tasks only: with masks
  (a "segm" task) the evaluator uses lvis-api. ``lvis_instances_results.json`` is written byte for
  byte as Detectron2 writes it; instead of Detectron2's ``instances_predictions.pth`` (a pickled list
  of dicts) the arrays go to ``lvis_detections.npz``.
- ``"lvis"``: Detectron2's own path (dicts, ``comm.gather`` of them, ``lvis.LVISEval``), the reference.
"""
import copy
import itertools
import json
import logging
import os
from collections import OrderedDict

import numpy as np
from detectron2.evaluation import LVISEvaluator
from detectron2.structures import Instances
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from .compact_detections import CompactDetections
from .fast_lvis import evaluate_lvis_boxes
from .tables import format_paper_table
from ..file_io import atomic_write_text

__all__ = [
    "GridCLIPLVISEvaluator", "per_category_ap", "lvis_protocol", "vocabulary_to_dataset_index",
    "LVIS_METRICS", "PER_CATEGORY_AP_FILE", "PAPER_TABLE_FILE", "PROTOCOL_ALL_CATEGORIES", "PROTOCOL_RESTRICTED",
    "LVIS_EVAL_BACKENDS", "COMPACT_DETECTIONS_FILE",
]

LVIS_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]
PER_CATEGORY_AP_FILE = "per_category_ap.json"
PAPER_TABLE_FILE = "paper_table.md"
#: the "faster" backend's detections (arrays of CompactDetections.state()), instead of instances_predictions.pth
COMPACT_DETECTIONS_FILE = "lvis_detections.npz"
#: "faster": arrays + faster-coco-eval in category chunks; "lvis": Detectron2's dicts + lvis-api (the reference)
LVIS_EVAL_BACKENDS = ("faster", "lvis")
#: LVISEval over all categories of the GT json; those outside the model's vocabulary score AP 0 (the paper's)
PROTOCOL_ALL_CATEGORIES = "all-categories"
#: LVISEval over the test dataset's categories only (a subset of the json's, e.g. lvis_v1_val_cf)
PROTOCOL_RESTRICTED = "restricted"

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


def _normalise_name(name):
    return " ".join(str(name).replace("_", " ").lower().split())


def vocabulary_to_dataset_index(vocabulary, dataset_classes, dataset_name="the test dataset", class_synonyms=None):
    """
    [len(vocabulary)] int64 tensor: the dataset class index of each vocabulary name (case, ``_`` and
    spacing ignored; a name may also match one of the class's ``class_synonyms``, since Detectron2's
    builtin LVIS names each class by its first synonym, e.g. "bull" -> "horned_cow"), or None when the
    vocabulary is the dataset's classes in order.

    Raises:
        ValueError: a vocabulary name that is not a class of the dataset (its detections could not be
            scored), naming the first few.
    """
    import torch

    vocabulary, dataset_classes = list(vocabulary), list(dataset_classes)
    if vocabulary == dataset_classes:
        return None
    index = {}
    for i, name in enumerate(dataset_classes):
        index.setdefault(_normalise_name(name), i)
    for i, synonyms in enumerate(class_synonyms or []):
        for name in synonyms or []:
            index.setdefault(_normalise_name(name), i)
    mapped = [index.get(_normalise_name(name)) for name in vocabulary]
    missing = [name for name, i in zip(vocabulary, mapped) if i is None]
    if missing:
        raise ValueError(
            f"The model's test vocabulary has {len(missing)} name(s) that are not classes of {dataset_name} "
            f"(e.g. {missing[:5]}), so their detections cannot be evaluated on it. Use a vocabulary within the "
            "dataset's classes (MODEL.GRIDCLIP.TEST_VOCABULARY)."
        )
    return torch.tensor(mapped, dtype=torch.int64)


def lvis_protocol(gt_category_ids, evaluated_category_ids, predictable_category_ids, frequencies=None):
    """
    Name and one-line description of the LVIS evaluation protocol (see the module doc).

    Args:
        gt_category_ids: category ids of the GT json.
        evaluated_category_ids: the ids LVISEval scores (all of them, or the test dataset's subset).
        predictable_category_ids: the ids the model's vocabulary covers.
        frequencies (dict id -> "r"/"c"/"f" or None): to name the groups left out.

    Returns:
        dict: ``{"name": PROTOCOL_ALL_CATEGORIES | PROTOCOL_RESTRICTED, "evaluated": n,
        "unpredictable": n, "description": str}``.
    """
    gt_ids, evaluated, predictable = set(gt_category_ids), set(evaluated_category_ids), set(predictable_category_ids)
    frequencies = frequencies or {}

    def groups(ids):
        present = sorted({frequencies.get(i) for i in ids} - {None}, key="rcf".find)
        return f" ({'+'.join(present)})" if present else ""

    unpredictable = evaluated - predictable
    if evaluated < gt_ids:
        name = PROTOCOL_RESTRICTED
        description = (
            f"AP over the test dataset's {len(evaluated)} categories{groups(evaluated)} only; "
            f"the json's other {len(gt_ids - evaluated)}{groups(gt_ids - evaluated)} are not evaluated"
        )
    else:
        name = PROTOCOL_ALL_CATEGORIES
        description = f"all {len(evaluated)} categories evaluated"
        if unpredictable:
            description += (
                f"; {len(unpredictable)}{groups(unpredictable)} outside the model's vocabulary score AP 0 "
                "(the paper's closed-set protocol)"
            )
        else:
            description += ", all in the model's vocabulary"
    description = f"protocol {name}: {description}"
    return {"name": name, "evaluated": len(evaluated), "unpredictable": len(unpredictable), "description": description}


def _write_text(path, text):
    """Local files atomically (a reader never sees half of one); other storage through PathManager."""
    if "://" not in path:
        atomic_write_text(path, text)
        return
    with PathManager.open(path, "w") as f:
        f.write(text)


class GridCLIPLVISEvaluator(LVISEvaluator):
    """
    LVISEvaluator with 300 max detections per image that also writes ``per_category_ap.json`` and
    ``paper_table.md`` to ``output_dir`` and names its protocol (see module doc). Same arguments as
    Detectron2's, plus ``vocabulary``: the class names the model's ``pred_classes`` index (None = the
    dataset's ``thing_classes``); it may be a subset of the dataset's classes; and ``backend``
    ("faster" or "lvis", see the module doc).

    Attributes:
        protocol (dict): :func:`lvis_protocol` of this evaluation.
        paper_table_title (str): "<dataset> (LVISEvaluator; <protocol description>)".
        backend (str): the backend in use ("lvis" when masks are evaluated).
        last_evaluation: the last task's ``lvis.LVISEval`` or :class:`FastLVISEval` (rank 0).
    """

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, *, max_dets_per_image=300,
                 vocabulary=None, backend="faster"):
        if backend not in LVIS_EVAL_BACKENDS:
            raise ValueError(f"Unknown LVIS evaluation backend {backend!r}; expected one of {LVIS_EVAL_BACKENDS}")
        self.backend = "lvis" if tasks is not None and set(tasks) - {"bbox"} else backend
        self.last_evaluation = None
        super().__init__(
            dataset_name, tasks=tasks, distributed=distributed, output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
        )
        self._dataset_name = dataset_name
        self._compact, self._images = [], 0
        self.per_category_results = OrderedDict()
        classes = list(self._metadata.get("thing_classes", []) or [])
        self._vocabulary_to_dataset = (
            vocabulary_to_dataset_index(vocabulary, classes, dataset_name, self._class_synonyms(classes))
            if vocabulary is not None and classes
            else None
        )
        self.protocol = self._protocol(vocabulary, classes)
        self.paper_table_title = f"{dataset_name} (LVISEvaluator; {self.protocol['description']})"
        self._logger.info(f"LVIS evaluation protocol for {dataset_name}: {self.protocol['description']}")

    def _dataset_index_to_category_id(self, num_classes):
        id_map = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if id_map:
            return {v: int(k) for k, v in id_map.items()}
        return {i: i + 1 for i in range(num_classes)}  # Detectron2's LVIS convention: id = index + 1

    def _class_synonyms(self, classes):
        """Per dataset class: the metadata's ``class_synonyms`` and the GT json category's name + synonyms."""
        synonyms = list(self._metadata.get("class_synonyms", None) or [[] for _ in classes])
        to_id = self._dataset_index_to_category_id(len(classes))
        cats = self._lvis_api.cats
        for i in range(len(classes)):
            cat = cats.get(to_id.get(i))
            if cat is not None:
                synonyms[i] = list(synonyms[i]) + [cat["name"]] + list(cat.get("synonyms", []))
        return synonyms

    def _protocol(self, vocabulary, classes):
        gt_ids = list(self._lvis_api.get_cat_ids())
        evaluated = self._evaluated_category_ids() or gt_ids
        to_id = self._dataset_index_to_category_id(len(classes))
        if self._vocabulary_to_dataset is not None:
            predictable = {to_id.get(int(i)) for i in self._vocabulary_to_dataset}
        else:
            predictable = {to_id.get(i) for i in range(len(classes))} if classes else set(gt_ids)
        frequencies = {c["id"]: c.get("frequency") for c in self._lvis_api.cats.values()}
        return lvis_protocol(gt_ids, evaluated, predictable, frequencies)

    def reset(self):
        super().reset()
        self._compact = []  # per image CompactDetections ("faster" backend)
        self._images = 0

    def process(self, inputs, outputs):
        """
        Detectron2's, after mapping ``pred_classes`` from the vocabulary to the dataset's classes; the
        "faster" backend keeps each image's boxes as arrays instead of dicts.
        """
        if self._vocabulary_to_dataset is not None:
            outputs = [self._to_dataset_classes(output) for output in outputs]
        if self.backend == "faster" and any(self._needs_lvis_api(output) for output in outputs):
            if self._compact or self._images:
                raise ValueError("The 'faster' LVIS backend got masks or proposals after box-only outputs.")
            self._logger.info("Masks or proposals in the outputs: evaluating with lvis-api (backend 'lvis').")
            self.backend = "lvis"
        if self.backend == "lvis":
            super().process(inputs, outputs)
            return
        for input, output in zip(inputs, outputs):
            self._images += 1
            if "instances" in output:
                instances = output["instances"].to(self._cpu_device)
                self._compact.append(CompactDetections.from_instances(instances, input["image_id"]))

    @staticmethod
    def _needs_lvis_api(output):
        return "proposals" in output or ("instances" in output and output["instances"].has("pred_masks"))

    def evaluate(self):
        """Detectron2's ``evaluate``; the "faster" backend gathers arrays, not lists of dicts."""
        if self.backend == "lvis":
            return super().evaluate()
        detections = CompactDetections.concatenate(self._compact)
        images = self._images
        if self._distributed:
            comm.synchronize()
            # rank order = dataset order (InferenceSampler shards are contiguous), as Detectron2's gather
            parts = comm.gather((images, detections.state()), dst=0)
            if not comm.is_main_process():
                return
            images = sum(n for n, _ in parts)
            detections = CompactDetections.concatenate([CompactDetections.from_state(state) for _, state in parts])
            del parts
        if images == 0:
            self._logger.warning("[LVISEvaluator] Did not receive valid predictions.")
            return {}
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with PathManager.open(os.path.join(self._output_dir, COMPACT_DETECTIONS_FILE), "wb") as f:
                np.savez(f, **detections.state())
        self._results = OrderedDict()
        self._eval_compact_predictions(detections)
        return copy.deepcopy(self._results)

    def _to_dataset_category_ids(self, detections):
        """``category_id`` from the model's class index to dataset category ids, as Detectron2 maps them."""
        if hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            reverse_id_mapping = {v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()}
            return detections.with_category_ids(reverse_id_mapping)
        # unmap the category ids for LVIS (from 0-indexed to 1-indexed)
        return CompactDetections(detections.image_id, detections.category_id + 1, detections.bbox, detections.score)

    def _eval_compact_predictions(self, detections):
        """:meth:`_eval_predictions` for the "faster" backend (box task only)."""
        self._logger.info("Preparing results in the LVIS format ...")
        detections = self._to_dataset_category_ids(detections)
        if self._output_dir:
            file_path = os.path.join(self._output_dir, "lvis_instances_results.json")
            self._logger.info("Saving results to {}".format(file_path))
            with PathManager.open(file_path, "w") as f:
                detections.write_json(f)
                f.flush()
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        self._logger.info("Evaluating predictions ...")
        metrics, categories = self._evaluate_task(detections, "bbox")
        self._results["bbox"] = metrics
        self.per_category_results["bbox"] = categories
        self._write_outputs()

    def _to_dataset_classes(self, output):
        if "instances" not in output:
            return output
        instances = output["instances"].to(self._cpu_device)
        remapped = Instances(instances.image_size, **instances.get_fields())
        remapped.pred_classes = self._vocabulary_to_dataset[instances.pred_classes.long()]
        return dict(output, instances=remapped)

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
        """
        Detectron2's ``_evaluate_predictions_on_lvis`` + per-category AP from the same LVISEval;
        ``lvis_results`` is a list of dicts ("lvis" backend) or :class:`CompactDetections` ("faster").
        """
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
        # A dataset over a subset of the json's categories (closed-set "lvis_v1_val_cf"): score only
        # those, or the others would count as AP 0 (and rare categories would fill AP_r).
        evaluated_ids = self._evaluated_category_ids()
        if isinstance(lvis_results, CompactDetections):
            lvis_eval = evaluate_lvis_boxes(
                self._lvis_api, lvis_results, max_dets=self._max_dets_per_image, cat_ids=evaluated_ids
            )
        else:
            results = LVISResults(self._lvis_api, lvis_results, max_dets=self._max_dets_per_image)
            lvis_eval = LVISEval(self._lvis_api, results, iou_type)
            if evaluated_ids is not None:
                lvis_eval.params.cat_ids = evaluated_ids
            lvis_eval.run()
        self.last_evaluation = lvis_eval
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
        table = format_paper_table(dict(self._results), title=self.paper_table_title)
        PathManager.mkdirs(self._output_dir)
        for task, categories in self.per_category_results.items():
            name = PER_CATEGORY_AP_FILE if task == "bbox" else PER_CATEGORY_AP_FILE.replace(".json", f"_{task}.json")
            _write_text(os.path.join(self._output_dir, name), json.dumps(categories, indent=1))
        _write_text(os.path.join(self._output_dir, PAPER_TABLE_FILE), table)
        self._logger.info(f"Wrote {PER_CATEGORY_AP_FILE} and {PAPER_TABLE_FILE} to {self._output_dir}")

