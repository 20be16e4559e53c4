#!/usr/bin/env python
"""
The paper's ablations (Table 4's CLIP rows, Table 5) in the generated vision-language world, with the
world's pretrained mini-CLIPs, several seeds per row; mean ± std per metric beside the paper's numbers
and Fig. 3 (AP over categories sorted by training frequency) per table.

    python tools/run_ablations.py                                  # all rows, seeds 0 1 2 -> output/world_ablations
    python tools/run_ablations.py --rows T5-grid-align T5-both --seeds 0 --output-dir out/abl
    python tools/run_ablations.py --rows T5-both --opts SOLVER.MAX_ITER 300 SOLVER.STEPS "(240,)"
    python tools/run_ablations.py --list

Rows (configs/world/GridCLIP-World-Pretrained.yaml + the row's options; both tables train on the base
classes, rare annotations removed, without multi-scale or crop as the paper's ablations):

- Table 4, closed set: evaluated on ``synthetic_lvis_v1_val_base`` (val, base classes);
  ``T4-wo-align`` (plain FCOS classifier, no image head), ``T4-R50star-wo-align`` (no attention pool),
  ``T4-grid-align``, ``T4-image-align``, ``T4-both`` (GridCLIP);
- Table 5, open set: evaluated on ``synthetic_lvis_v1_val`` with all classes: ``T5-grid-align``,
  ``T5-both``; and, when the config has MODEL.GRIDCLIP.TEACHER.INPUT, ``T5-both-letterbox`` /
  ``T5-both-center-crop`` on a world of 4:3 images (``--wide``), where CLIP's centre crop drops part
  of each image (on the default square images both views are identical).

Each run is a separate process (``--single-run``) writing ``<output>/<row>/seed<k>/metrics.json``; a
row/seed whose metrics exist is not rerun. Writes ``<output>/ablations.md`` / ``ablations.json`` and
``<output>/fig3_<table>.png``.
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(REPO_ROOT, "configs", "world", "GridCLIP-World-Pretrained.yaml")
METRICS = ("AP", "APr", "APc", "APf")
_CLOSED = ["DATASETS.TEST", "('synthetic_lvis_v1_val_base',)"]
_OFF = ["MODEL.GRIDCLIP.GRID_ALIGN", "False", "MODEL.GRIDCLIP.IMAGE_ALIGN", "False"]

#: row -> (table, options over BASE_CONFIG, the paper's numbers {metric: value})
ROWS = {
    "T4-wo-align": ("T4", _CLOSED + _OFF, {"APc": 19.4, "APf": 29.7, "AP": 20.1}),
    "T4-R50star-wo-align": ("T4", _CLOSED + _OFF + ["MODEL.CLIP.USE_MHSA", "False"], {"APc": 20.2, "APf": 30.3, "AP": 20.7}),
    "T4-grid-align": ("T4", _CLOSED + ["MODEL.GRIDCLIP.IMAGE_ALIGN", "False"], {"APc": 21.7, "APf": 30.0, "AP": 21.2}),
    "T4-image-align": ("T4", _CLOSED + ["MODEL.GRIDCLIP.GRID_ALIGN", "False"], {"APc": 19.4, "APf": 30.1, "AP": 20.2}),
    "T4-both": ("T4", _CLOSED, {"APc": 21.2, "APf": 30.0, "AP": 21.0}),
    "T5-grid-align": ("T5", ["MODEL.GRIDCLIP.IMAGE_ALIGN", "False"], {"APr": 10.1, "APc": 21.0, "APf": 29.6, "AP": 22.5}),
    "T5-both": ("T5", [], {"APr": 12.7, "APc": 20.6, "APf": 29.7, "AP": 22.8}),
}
TEACHER_INPUT_ROWS = {
    "T5-both-center-crop": ("teacher-input", ["MODEL.GRIDCLIP.TEACHER.INPUT", "center_crop"], {}),
    "T5-both-letterbox": ("teacher-input", ["MODEL.GRIDCLIP.TEACHER.INPUT", "letterbox"], {}),
}
#: the 4:3 world of the teacher-input rows (height, width)
WIDE_IMAGE_SIZE = (96, 128)


def _has_teacher_input_key():
    import gridclip

    return hasattr(gridclip.get_gridclip_cfg().MODEL.GRIDCLIP.TEACHER, "INPUT")


def all_rows():
    rows = dict(ROWS)
    if _has_teacher_input_key():
        rows.update(TEACHER_INPUT_ROWS)
    return rows


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=None, help="rows to run (default: all; see --list)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output-dir", default=os.path.join("output", "world_ablations"))
    parser.add_argument("--config-file", default=BASE_CONFIG)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each gets cores / jobs threads)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--single-run", nargs=2, metavar=("ROW", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides for every run")
    return parser


def _world_setup(wide, need_teacher=True):
    """Generate/register the world's detection data and pretrain/load the mini-CLIPs; returns weight options."""
    import gridclip  # noqa: F401
    from gridclip.data.datasets import dataset_root, register_synthetic_lvis
    from gridclip.data.world import DEFAULT_GENERATOR_ARGS, ensure_synthetic_lvis
    from gridclip.data.world.pretraining import BACKBONE_CLIP, TEACHER_CLIP, ensure_world_clips

    if wide:
        root = os.path.join(dataset_root(), "synthetic_lvis_wide")
        ensure_synthetic_lvis(root, **dict(DEFAULT_GENERATOR_ARGS, image_size=WIDE_IMAGE_SIZE))
        names = register_synthetic_lvis(root, prefix="synthetic_lvis_wide")
    else:
        root = os.path.join(dataset_root(), "synthetic_lvis")
        ensure_synthetic_lvis(root, **DEFAULT_GENERATOR_ARGS)
        names = register_synthetic_lvis(root, prefix="synthetic_lvis")
    models = (BACKBONE_CLIP, TEACHER_CLIP) if need_teacher else (BACKBONE_CLIP,)
    clips = ensure_world_clips(models, progress=False)
    opts = ["MODEL.CLIP.PRETRAINED", clips[BACKBONE_CLIP]["path"]]
    if need_teacher:
        opts += ["MODEL.GRIDCLIP.TEACHER.PRETRAINED", clips[TEACHER_CLIP]["path"]]
    return names, opts


def single_run(args, row, seed):
    """Train + evaluate one row with one seed in this process; writes metrics.json."""
    import gridclip
    from detectron2.engine import default_argument_parser

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import run_embedded_default as embedded

    table, row_opts, _ = all_rows()[row]
    wide = table == "teacher-input"
    all_opts = list(row_opts) + list(args.opts)
    image_align = "True"
    for i in range(len(all_opts) - 1):
        if all_opts[i] == "MODEL.GRIDCLIP.IMAGE_ALIGN":
            image_align = all_opts[i + 1]
    names, weight_opts = _world_setup(wide, need_teacher=image_align != "False")
    out = os.path.join(args.output_dir, row, f"seed{seed}")
    opts = list(weight_opts) + list(row_opts) + list(args.opts) + ["SEED", str(seed), "OUTPUT_DIR", out]
    if wide:
        h, w = WIDE_IMAGE_SIZE
        opts += ["DATASETS.TRAIN", f"('{names['train_base']}',)", "DATASETS.TEST", f"('{names['val']}',)",
                 "INPUT.MIN_SIZE_TRAIN", f"({h},)", "INPUT.MAX_SIZE_TRAIN", str(w),
                 "INPUT.MIN_SIZE_TEST", str(h), "INPUT.MAX_SIZE_TEST", str(w)]
    start = time.perf_counter()
    cfg, results = embedded.train_and_evaluate(args.config_file, opts)
    metrics = {k: float(v) for k, v in results.items() if isinstance(v, (int, float))}
    metrics["train_eval_seconds"] = round(time.perf_counter() - start, 1)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"row": row, "seed": seed, "opts": opts, "metrics": metrics,
                   "per_category_ap": os.path.join(out, "inference", cfg.DATASETS.TEST[0], "per_category_ap.json")}, f,
                  indent=1)
    return 0


def _launch(args, row, seed, threads):
    out = os.path.join(args.output_dir, row, f"seed{seed}")
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--single-run", row, str(seed), "--output-dir", args.output_dir,
           "--config-file", args.config_file, "--opts", *args.opts]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    log = open(os.path.join(out, "run.log"), "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log


def _read_metrics(args, row, seed):
    path = os.path.join(args.output_dir, row, f"seed{seed}", "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def summarize(args, rows, seeds):
    """Mean ± std per row and metric; markdown table + JSON; Fig. 3 per table."""
    import numpy as np

    summary, lines = {}, []
    lines.append("| table | row | seeds | " + " | ".join(f"{m} (world)" for m in METRICS) + " | paper |")
    lines.append("|---|---|---:|" + "---:|" * len(METRICS) + "---|")
    defs = all_rows()
    for row in rows:
        runs = [r for r in (_read_metrics(args, row, s) for s in seeds) if r]
        if not runs:
            continue
        table, _, paper = defs[row]
        entry = {"table": table, "seeds": [r["seed"] for r in runs], "paper": paper}
        cells = []
        for m in METRICS:
            values = [r["metrics"][m] for r in runs if m in r["metrics"] and r["metrics"][m] >= 0]
            if values:
                entry[m] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}
                cells.append(f"{np.mean(values):.1f} ± {np.std(values):.1f}")
            else:
                cells.append("-")
        paper_cell = ", ".join(f"{k} {v}" for k, v in paper.items()) or "-"
        lines.append(f"| {table} | {row} | {len(runs)} | " + " | ".join(cells) + f" | {paper_cell} |")
        summary[row] = entry
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "ablations.json"), "w") as f:
        json.dump(summary, f, indent=1)
    markdown = "\n".join(lines)
    with open(os.path.join(args.output_dir, "ablations.md"), "w") as f:
        f.write(markdown + "\n")
    figures = _plot_fig3(args, rows, seeds)
    return markdown, figures


def _plot_fig3(args, rows, seeds):
    """Fig. 3 per table: AP over categories sorted by training frequency, one curve per row (first seed)."""
    from gridclip.evaluation.plots import plot_ap_by_frequency

    defs, figures = all_rows(), []
    for table in sorted({defs[r][0] for r in rows}):
        runs, labels = [], []
        for row in rows:
            if defs[row][0] != table:
                continue
            for seed in seeds:
                m = _read_metrics(args, row, seed)
                if m and os.path.isfile(m["per_category_ap"]):
                    runs.append(m["per_category_ap"])
                    labels.append(f"{row} (seed {seed})")
                    break
        if runs:
            path = os.path.join(args.output_dir, f"fig3_{table}.png")
            plot_ap_by_frequency(runs, path, labels=labels, window=(-3, 3), title=f"{table} in the generated world")
            figures.append(path)
    return figures


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.single_run:
        return single_run(args, args.single_run[0], int(args.single_run[1]))
    defs = all_rows()
    if args.list:
        for name, (table, opts, paper) in defs.items():
            print(f"{name:24s} {table:14s} {' '.join(opts) or '(base config)'}")
        return 0
    rows = args.rows or list(defs)
    unknown = [r for r in rows if r not in defs]
    if unknown:
        print(f"error: unknown rows {unknown}; known: {list(defs)}", file=sys.stderr)
        return 2
    # Prepare data + pretrained CLIPs once, before parallel runs (no race on the caches).
    start = time.perf_counter()
    _world_setup(wide=False)
    if any(defs[r][0] == "teacher-input" for r in rows):
        _world_setup(wide=True)
    todo = [(r, s) for r in rows for s in args.seeds if _read_metrics(args, r, s) is None]
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    running, failed = [], []
    while todo or running:
        while todo and len(running) < max(1, args.jobs):
            row, seed = todo.pop(0)
            proc, log = _launch(args, row, seed, threads)
            running.append((row, seed, proc, log))
            print(f"[ablations] started {row} seed {seed}", flush=True)
        time.sleep(2)
        for item in list(running):
            row, seed, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                metrics = _read_metrics(args, row, seed)
                if proc.returncode != 0 or metrics is None:
                    failed.append((row, seed))
                    print(f"[ablations] FAILED {row} seed {seed}: see {log.name}", flush=True)
                else:
                    m = metrics["metrics"]
                    print(f"[ablations] {row} seed {seed}: " + ", ".join(f"{k} {m.get(k, -1):.1f}" for k in METRICS)
                          + f" ({m['train_eval_seconds']:.0f} s)", flush=True)
    markdown, figures = summarize(args, rows, args.seeds)
    print("\n" + markdown)
    for path in figures:
        print(f"Fig. 3: {path}")
    print(f"Total time: {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
