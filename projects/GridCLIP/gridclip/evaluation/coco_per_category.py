"""
``per_category_ap.json`` for COCO-format evaluations (Detectron2's ``COCOEvaluator``), in the format
``GridCLIPLVISEvaluator`` writes, so the per-category tools and plots read LVIS and COCO runs alike.

``COCOEvaluator`` already reports each class's AP as ``results["bbox"]["AP-<class name>"]``
(pycocotools' precision averaged over IoU .5:.95 and recall, area "all", in percent; NaN when the
class has no ground truth); this module writes those numbers, it computes nothing new.
"""
import json
import math
import os

from detectron2.data import MetadataCatalog

from ..file_io import atomic_write_text

__all__ = ["coco_per_category_ap", "write_coco_per_category_ap"]

PER_CATEGORY_AP_FILE = "per_category_ap.json"


def coco_per_category_ap(results, dataset_name):
    """
    Args:
        results (dict): ``COCOEvaluator.evaluate()``'s output ({"bbox": {"AP": ..., "AP-<name>": ...}}).
        dataset_name (str): the evaluated dataset (its metadata maps classes to category ids).

    Returns:
        list[dict] or None: ``{"id", "name", "frequency", "image_count", "ap"}`` per class in contiguous-id
        order (``ap`` None without ground truth); None when ``results`` has no per-class AP.
    """
    bbox = (results or {}).get("bbox") or {}
    metadata = MetadataCatalog.get(dataset_name)
    classes = list(metadata.get("thing_classes", []) or [])
    if not classes or not any(f"AP-{name}" in bbox for name in classes):
        return None
    contiguous_to_id = {v: k for k, v in (metadata.get("thing_dataset_id_to_contiguous_id", {}) or {}).items()}
    records = []
    for index, name in enumerate(classes):
        ap = bbox.get(f"AP-{name}")
        ap = None if ap is None or (isinstance(ap, float) and math.isnan(ap)) else float(ap)
        records.append({"id": int(contiguous_to_id.get(index, index + 1)), "name": name, "frequency": None,
                        "image_count": None, "ap": ap})
    return records


def write_coco_per_category_ap(results, dataset_name, output_dir):
    """Write ``output_dir/per_category_ap.json`` (see :func:`coco_per_category_ap`); returns its path or None."""
    records = coco_per_category_ap(results, dataset_name)
    if records is None:
        return None
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, PER_CATEGORY_AP_FILE)
    atomic_write_text(path, json.dumps(records, indent=1))  # a reader never sees half a file
    return path
