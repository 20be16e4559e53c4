"""Evaluation: LVIS evaluator (lvis-api or array + faster-coco-eval backend) with per-category AP export, paper-style
tables, plots, CLIP recall analysis, LVIS-scale data and measurements."""
from .compact_detections import CompactDetections
from .fast_lvis import evaluate_lvis_boxes
from .lvis_evaluation import GridCLIPLVISEvaluator, per_category_ap
from .tables import format_paper_table, write_paper_table

__all__ = [
    "GridCLIPLVISEvaluator", "per_category_ap", "format_paper_table", "write_paper_table", "CompactDetections",
    "evaluate_lvis_boxes",
]
