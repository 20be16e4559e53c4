#!/usr/bin/env python
"""
LVIS evaluation and data at real LVIS scale, on generated LVIS-v1-shaped files (no images, no download):
wall time and peak RSS of the LVIS evaluation with each backend ("faster": arrays + faster-coco-eval,
the default; "lvis": Detectron2's LVISEvaluator path with lvis-api) at several val sizes, the same
with 2 gloo processes, and full-size train registration + loading with each data-loader worker's
private memory. Every measurement runs in a fresh process; the logic is ``gridclip.evaluation.scale_benchmark``.

Results are merged into ``benchmarks/lvis-scale-<machine>.json`` (a rerun replaces the rows it measures)
and the table is rewritten to the ``.md`` beside it.

    python tools/benchmark_lvis_scale.py --val-sizes 1000 2000 5000                 # both backends
    python tools/benchmark_lvis_scale.py --val-sizes 19809 --backends faster        # full LVIS val
    python tools/benchmark_lvis_scale.py --val-sizes --distributed-sizes 19809      # 2 gloo processes
    python tools/benchmark_lvis_scale.py --val-sizes --train-images 100170          # full LVIS train
"""
import argparse
import os

from gridclip.analysis.machine import machine_info, machine_slug
from gridclip.evaluation.lvis_evaluation import LVIS_EVAL_BACKENDS
from gridclip.evaluation.scale_benchmark import format_scale_markdown, merge_reports, run_scale_benchmark
from gridclip.file_io import atomic_write_json, atomic_write_text, read_json


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.join("output", "lvis_scale"),
                        help="folder for the generated json / detection files (reused; default: %(default)s)")
    parser.add_argument("--val-sizes", nargs="*", type=int, default=[1000, 5000],
                        help="val images per evaluation measurement (default: 1000 5000; none: skip)")
    parser.add_argument("--backends", nargs="+", choices=LVIS_EVAL_BACKENDS, default=list(LVIS_EVAL_BACKENDS))
    parser.add_argument("--lvis-api-max", type=int, default=5000,
                        help="largest val size measured with lvis-api (its memory grows ~1.2 GB per 1,000 images)")
    parser.add_argument("--distributed-sizes", nargs="*", type=int, default=[],
                        help="val sizes evaluated by 2 gloo processes")
    parser.add_argument("--distributed-backends", nargs="+", choices=LVIS_EVAL_BACKENDS, default=["faster"])
    parser.add_argument("--train-images", type=int, default=0, help="train images to generate and load (0: skip)")
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers for the train measurement")
    parser.add_argument("--train-batches", type=int, default=200, help="batches read through the workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", type=float, default=0.5, help="generated detections' quality, 0..1")
    parser.add_argument("--output", default=None,
                        help="results json (default: benchmarks/lvis-scale-<machine>.json; .md beside it)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    machine = machine_info("cpu")
    output = args.output or os.path.join("benchmarks", f"lvis-scale-{machine_slug(machine)}.json")
    new = run_scale_benchmark(
        args.root, val_sizes=args.val_sizes, lvis_api_max=args.lvis_api_max, backends=args.backends,
        distributed_sizes=args.distributed_sizes, distributed_backends=args.distributed_backends,
        train_images=args.train_images, workers=args.workers, train_batches=args.train_batches,
        seed=args.seed, quality=args.quality,
    )
    old = read_json(output) if os.path.isfile(output) else None
    report = merge_reports(old, dict(new, machine=machine))
    atomic_write_json(output, report, indent=1)
    atomic_write_text(os.path.splitext(output)[0] + ".md", format_scale_markdown(report))
    print(f"wrote {output} and its .md")


if __name__ == "__main__":
    main()
