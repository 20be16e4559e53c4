"""
Paper-style markdown tables from Detectron2 evaluator results.

Accepted inputs (what Detectron2's evaluators and ``DefaultTrainer.test`` return):

- one evaluator's results: ``{"bbox": {"AP": ..., "AP50": ..., ...}}`` (``"segm"`` rows are added
  when present), or a bare metric dict ``{"AP": ..., ...}``;
- several datasets: ``{dataset_name: {"bbox": {...}}, ...}`` (one row per dataset and task).

The columns follow the flavour of each row's metrics, as the paper reports them:

- LVIS (``LVISEvaluator``; has ``APr``): AP, AP50, AP75, APs, APm, APl, AP_r, AP_c, AP_f (Tables 1, 4, 5);
- COCO (``COCOEvaluator``; has ``APs`` but no ``APr``): AP, AP50, AP75 (Table 3);
- VOC (``PascalVOCDetectionEvaluator``; only AP/AP50/AP75): AP50, AP75 (Table 3).

Rows of different flavours go to separate tables. Values are in percent with one decimal; a missing
or NaN value prints as "-". ``protocol`` (e.g. ``GridCLIPLVISEvaluator.protocol["description"]``)
adds a "Protocol: ..." line under the title, so a table says how its AP was computed.
"""
import math
import os
from collections import OrderedDict

from ..file_io import atomic_write_text

__all__ = ["format_paper_table", "write_paper_table", "table_flavour", "PAPER_COLUMNS"]

#: flavour → [(metric key in Detectron2's results, column header)]
PAPER_COLUMNS = OrderedDict(
    lvis=[
        ("AP", "AP"), ("AP50", "AP50"), ("AP75", "AP75"), ("APs", "APs"), ("APm", "APm"), ("APl", "APl"),
        ("APr", "AP_r"), ("APc", "AP_c"), ("APf", "AP_f"),
    ],
    coco=[("AP", "AP"), ("AP50", "AP50"), ("AP75", "AP75")],
    voc=[("AP50", "AP50"), ("AP75", "AP75")],
)
_FLAVOUR_NAMES = {"lvis": "LVIS", "coco": "COCO", "voc": "PASCAL VOC"}
_TASKS = ("bbox", "segm")


def table_flavour(metrics):
    """"lvis", "coco" or "voc" for one task's metric dict (see module doc)."""
    if not isinstance(metrics, dict) or not any(k in metrics for k in ("AP", "AP50")):
        raise ValueError(
            f"Not a Detectron2 detection metric dict (expected keys such as 'AP', 'AP50'): {sorted(metrics)[:10]}"
        )
    if "APr" in metrics:
        return "lvis"
    if "APs" in metrics:
        return "coco"
    return "voc"


def _is_metric_dict(d):
    return isinstance(d, dict) and any(k in d for k in ("AP", "AP50")) and all(
        not isinstance(v, dict) for v in d.values()
    )


def _rows(results, row_label):
    """[(label, task, metrics)] from any of the accepted inputs."""
    if not isinstance(results, dict) or not results:
        raise ValueError(f"Expected Detectron2 evaluation results (a non-empty dict), got {results!r}")
    if _is_metric_dict(results):
        return [(row_label, "bbox", results)]
    if any(task in results for task in _TASKS):
        return [(row_label, task, results[task]) for task in _TASKS if _is_metric_dict(results.get(task))]
    rows = []
    for name, per_dataset in results.items():
        if not isinstance(per_dataset, dict):
            raise ValueError(f"Results for {name!r} are not a dict: {per_dataset!r}")
        rows += [(str(name), task, metrics) for _, task, metrics in _rows(per_dataset, str(name))]
    return rows


def _format_value(value):
    if value is None:
        return "-"
    value = float(value)
    # LVIS/COCO report -1 (x100 in Detectron2) for a group with no ground truth (e.g. APl without large objects).
    return "-" if math.isnan(value) or value < 0 else f"{value:.1f}"


def format_paper_table(results, title=None, row_label="GridCLIP", protocol=None):
    """
    Args:
        results (dict): evaluator results (see module doc).
        title (str or None): a "### title" line above the table(s).
        row_label (str): first-column label for single-dataset results.
        protocol (str or None): the evaluation protocol, printed as "Protocol: ..." under the title.

    Returns:
        str: markdown, one table per flavour (LVIS / COCO / VOC) present in ``results``.
    """
    rows = _rows(results, row_label)
    if not rows:
        raise ValueError(f"No 'bbox'/'segm' metrics in the results: keys {sorted(results)}")
    by_flavour = OrderedDict()
    for label, task, metrics in rows:
        by_flavour.setdefault(table_flavour(metrics), []).append((label, task, metrics))

    lines = []
    if title:
        lines += [f"### {title}", ""]
    if protocol:
        lines += [f"Protocol: {protocol}", ""]
    for flavour, flavour_rows in by_flavour.items():
        if len(by_flavour) > 1:
            lines += [f"**{_FLAVOUR_NAMES[flavour]}**", ""]
        columns = PAPER_COLUMNS[flavour]
        lines.append("| | " + " | ".join(header for _, header in columns) + " |")
        lines.append("|---|" + "|".join("---:" for _ in columns) + "|")
        for label, task, metrics in flavour_rows:
            name = label if task == "bbox" else f"{label} ({task})"
            lines.append(f"| {name} | " + " | ".join(_format_value(metrics.get(key)) for key, _ in columns) + " |")
        lines.append("")
    return "\n".join(lines)


def write_paper_table(results, path, title=None, row_label="GridCLIP", protocol=None):
    """Write :func:`format_paper_table` to ``path`` (folders created); returns the markdown."""
    text = format_paper_table(results, title=title, row_label=row_label, protocol=protocol)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    atomic_write_text(path, text)  # a reader never sees half a table
    return text
