"""Evaluation: LVIS evaluator with per-category AP export, paper-style tables, plots, CLIP recall analysis."""
from .lvis_evaluation import GridCLIPLVISEvaluator, per_category_ap
from .tables import format_paper_table, write_paper_table

__all__ = ["GridCLIPLVISEvaluator", "per_category_ap", "format_paper_table", "write_paper_table"]
