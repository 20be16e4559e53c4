"""
The paper's analysis plots, as PNG files (matplotlib's Agg canvas; pyplot and the global backend are
left alone).

- :func:`plot_ap_by_frequency` (Fig. 3): AP over categories sorted by training frequency
  (``image_count`` ascending), smoothed by a moving average over the window [-10, 10], one line per
  run, from ``per_category_ap.json`` files written by
  :class:`gridclip.evaluation.GridCLIPLVISEvaluator`.
- :func:`plot_clip_recall` (Fig. 4): (a) percent of images by number of categories per image,
  (b)-(d) mean recall@k of CLIP image embeddings by number of categories, one line per CLIP model,
  from :func:`gridclip.evaluation.recall_analysis.analyze_clip_recall` results.
"""
import json
import math
import os

import numpy as np

from .lvis_evaluation import PER_CATEGORY_AP_FILE

__all__ = [
    "PAPER_WINDOW",
    "moving_average",
    "load_per_category_ap",
    "ap_by_frequency_curve",
    "plot_ap_by_frequency",
    "plot_clip_recall",
]

#: the paper's moving-average window (Fig. 3): 10 categories before to 10 after.
PAPER_WINDOW = (-10, 10)


def moving_average(values, window=PAPER_WINDOW):
    """
    Centered moving average: out[i] = mean(values[i + window[0] : i + window[1] + 1]), the window
    truncated at both ends; NaN entries are ignored (NaN only where the whole window is NaN).

    Args:
        values (array-like): [N] floats.
        window (tuple[int, int]): (before, after) offsets, e.g. (-10, 10).
    """
    before, after = int(window[0]), int(window[1])
    if before > 0 or after < 0:
        raise ValueError(f"moving_average: window must contain 0, e.g. (-10, 10); got {window}")
    values = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(values)
    # Prefix sums make every window O(1).
    sums = np.concatenate([[0.0], np.cumsum(np.where(valid, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(valid)])
    index = np.arange(len(values))
    lo = np.clip(index + before, 0, len(values))
    hi = np.clip(index + after + 1, 0, len(values))
    count = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (sums[hi] - sums[lo]) / np.maximum(count, 1), np.nan)


def load_per_category_ap(path):
    """
    Read a ``per_category_ap.json`` (or a folder holding one).

    Returns:
        list[dict]: ``{"id", "name", "frequency", "image_count", "ap"}`` records.
    """
    if os.path.isdir(path):
        path = os.path.join(path, PER_CATEGORY_AP_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: give a per_category_ap.json written by GridCLIPLVISEvaluator (in the "
            "evaluation's output folder, e.g. OUTPUT_DIR/inference/<dataset>/) or that folder."
        )
    with open(path) as f:
        try:
            records = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(records, list) or not all(isinstance(r, dict) and "ap" in r and "id" in r for r in records):
        raise ValueError(f"{path} is not a per-category AP list ([{{id, name, frequency, image_count, ap}}, ...])")
    return records


def ap_by_frequency_curve(records, window=PAPER_WINDOW):
    """
    Categories with an AP (not null) sorted by ``image_count`` ascending (ties: id), and their AP
    smoothed with :func:`moving_average`.

    Returns:
        dict with ``"image_count"``, ``"frequency"``, ``"ap"`` (raw) and ``"smoothed"`` arrays [M], and
        ``"ids"``.
    """
    evaluated = [r for r in records if r.get("ap") is not None and not math.isnan(float(r["ap"]))]
    missing = [r for r in evaluated if r.get("image_count") is None]
    if missing:
        raise ValueError(
            f"{len(missing)} categories (e.g. id {missing[0]['id']}, {missing[0].get('name')!r}) have no image_count; "
            "the GT json's categories must carry LVIS's image_count (training images per category)."
        )
    if not evaluated:
        raise ValueError("No category has an AP (every 'ap' is null): nothing to plot.")
    evaluated.sort(key=lambda r: (int(r["image_count"]), int(r["id"])))
    ap = np.array([float(r["ap"]) for r in evaluated])
    return {
        "ids": [int(r["id"]) for r in evaluated],
        "image_count": np.array([int(r["image_count"]) for r in evaluated]),
        "frequency": [r.get("frequency") for r in evaluated],
        "ap": ap,
        "smoothed": moving_average(ap, window),
    }


def _new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, output_path):
    folder = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(folder, exist_ok=True)
    figure.tight_layout()
    figure.savefig(output_path, format="png", bbox_inches="tight")
    return output_path


def plot_ap_by_frequency(runs, output_path, labels=None, window=PAPER_WINDOW, title=None):
    """
    Fig. 3: AP over categories sorted by training frequency, moving-averaged.

    Args:
        runs (list): per run, a path to ``per_category_ap.json`` (or its folder) or a list of records.
        output_path (str): PNG file to write.
        labels (list[str] or None): legend label per run (default: the file's folder name, or "run i").
        window (tuple[int, int]): moving-average window (paper: (-10, 10)).
        title (str or None): figure title.

    Returns:
        str: ``output_path``.
    """
    if not runs:
        raise ValueError("plot_ap_by_frequency: give at least one per_category_ap.json")
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"plot_ap_by_frequency: {len(runs)} runs but {len(labels)} labels")
    curves, names = [], []
    for i, run in enumerate(runs):
        if isinstance(run, (str, os.PathLike)):
            records = load_per_category_ap(str(run))
            folder = str(run) if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))
            default = os.path.basename(os.path.normpath(folder)) or f"run {i + 1}"
        else:
            records, default = run, f"run {i + 1}"
        curves.append(ap_by_frequency_curve(records, window))
        names.append(labels[i] if labels is not None else default)

    figure = _new_figure((9, 4.5))
    axes = figure.add_subplot(1, 1, 1)
    for curve, name in zip(curves, names):
        x = np.arange(1, len(curve["smoothed"]) + 1)
        axes.plot(x, curve["smoothed"], linewidth=1.5, label=name)
    # Mark where the LVIS frequency groups change (rare | common | frequent) along the first run's axis.
    reference = curves[0]["frequency"]
    top = axes.get_ylim()[1]
    for j in range(len(reference)):
        if reference[j] is not None and (j == 0 or reference[j] != reference[j - 1]):
            if j > 0:
                axes.axvline(j + 0.5, color="0.6", linestyle=":", linewidth=1)
            axes.text(j + 1, top, f" {reference[j]}", va="top", color="0.4", fontsize=8)
    axes.set_xlabel("categories sorted by training images (ascending)")
    axes.set_ylabel(f"AP (moving average, window [{window[0]}, {window[1]}])")
    axes.set_xlim(1, max(len(c["smoothed"]) for c in curves))
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=9)
    if title:
        axes.set_title(title)
    return _save(figure, output_path)


def plot_clip_recall(analyses, output_path, labels=None, title=None):
    """
    Fig. 4: (a) percent of images by #categories per image; (b)-(d) mean recall@k by #categories.

    Args:
        analyses (list): per CLIP model, a result dict of ``analyze_clip_recall`` or a path to its JSON.
        output_path (str): PNG file to write.
        labels (list[str] or None): legend labels (default: "<clip_model> (<pretrained>)").
        title (str or None): figure title.

    Returns:
        str: ``output_path``.
    """
    if not analyses:
        raise ValueError("plot_clip_recall: give at least one analysis")
    loaded = []
    for analysis in analyses:
        if isinstance(analysis, (str, os.PathLike)):
            with open(analysis) as f:
                analysis = json.load(f)
        for key in ("ks", "categories_per_image", "recall_by_num_categories"):
            if key not in analysis:
                raise ValueError(f"plot_clip_recall: not an analyze_clip_recall result (no {key!r})")
        loaded.append(analysis)
    if labels is None:
        labels = [f"{a.get('clip_model', 'CLIP')} ({a.get('pretrained') or 'random init'})" for a in loaded]
    elif len(labels) != len(loaded):
        raise ValueError(f"plot_clip_recall: {len(loaded)} analyses but {len(labels)} labels")

    from matplotlib.ticker import MaxNLocator

    ks = loaded[0]["ks"]
    k_effective = loaded[0].get("k_effective", ks)
    figure = _new_figure((4.2 * (1 + len(ks)), 3.8))
    histogram = loaded[0]["categories_per_image"]
    axes = figure.add_subplot(1, 1 + len(ks), 1)
    axes.bar(histogram["num_categories"], histogram["percent"], color="tab:gray")
    axes.set_xlabel("categories per image")
    axes.set_ylabel("% of images")
    axes.set_title("(a) categories per image")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for j, k in enumerate(ks):
        axes = figure.add_subplot(1, 1 + len(ks), 2 + j)
        for analysis, label in zip(loaded, labels):
            by_bucket = analysis["recall_by_num_categories"]
            key = f"recall@{k}"
            if key not in by_bucket:
                raise ValueError(f"plot_clip_recall: {label} has no {key} (its ks are {analysis['ks']})")
            mean = analysis["mean_recall"].get(key)
            legend = label if mean is None else f"{label}: {100 * mean:.1f}%"
            axes.plot(by_bucket["num_categories"], [100 * v for v in by_bucket[key]], marker="o", markersize=3,
                      label=legend)
        axes.set_xlabel("categories per image")
        axes.set_ylabel(f"recall@{k} (%)")
        axes.set_ylim(0, 105)
        capped = f" (capped at {k_effective[j]} categories)" if k_effective[j] != k else ""
        axes.set_title(f"({chr(ord('b') + j)}) top {k}{capped}", fontsize=10)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    return _save(figure, output_path)
