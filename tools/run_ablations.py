#!/usr/bin/env python
"""
The paper's ablations (Table 4's CLIP rows, Table 5) in the generated world, with the world's
pretrained mini-CLIPs, several seeds per row; mean ± std per metric beside the paper's numbers and
Fig. 3 per table. Rows, protocols and outputs: :mod:`gridclip.world.ablations`.

    python tools/run_ablations.py                                  # the 7 paper rows, seeds 0 1 2 -> output/world_ablations
    python tools/run_ablations.py --rows T5-grid-align T5-both --seeds 0 --output-dir out/abl
    python tools/run_ablations.py --rows T5-both --opts SOLVER.MAX_ITER 300 SOLVER.STEPS "(240,)"
    python tools/run_ablations.py --rows T5-grid-align T5-both --seeds 0 --test-split val   # make demo's 120 val images
    python tools/run_ablations.py --list
    python tools/run_ablations.py --rows T5-grid-align T5-both --seeds $(seq -s ' ' 0 31) --jobs 2 --opts DATALOADER.NUM_WORKERS 0
                                                  # Table 5 to +-1 AP_r on 2 cores (docs/WORLD.md "Statistical power")

Runs are tested on the world's large evaluation split (1,200 images, generated once beside the world;
``--test-split val``: the 120-image val split, which cannot resolve a 2-point AP_r difference).

Writes ``<output>/<run>/seed<k>/run_record.json`` per training run (a run/seed whose metrics exist is not
rerun), ``<output>/ablations.md`` / ``ablations.json`` and ``<output>/fig3_<table>.png``. The summary gives
each row against its reference as a paired difference over seeds with a 95 % CI, and how many seeds a
+-1-point CI takes at the sd measured. With as many jobs as cores no core is left for a data-loader
process: ``--opts DATALOADER.NUM_WORKERS 0`` trains ~10 % faster there (other numbers per seed, since the
augmentation draws then come from the training process; the runs are keyed by it).
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(REPO_ROOT, "configs", "world", "GridCLIP-World-Pretrained.yaml")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=None, help="rows to run (default: the paper's; see --list)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output-dir", default=os.path.join("output", "world_ablations"))
    parser.add_argument("--config-file", default=BASE_CONFIG)
    parser.add_argument("--jobs", type=int, default=0,
                        help="training runs in parallel, each with cores / jobs torch threads (0 = one per core)")
    parser.add_argument("--test-split", default="val_large", choices=["val_large", "val"],
                        help="test data: the large evaluation split (default) or the val split of make demo")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides for every run")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    import gridclip  # noqa: F401  (first: applies the Detectron2 compatibility fixes)
    from gridclip.world.ablations import describe_rows, run_ablations

    if args.list:
        print("\n".join(describe_rows()))
        return 0
    try:
        return run_ablations(args.rows, args.seeds, args.output_dir, args.config_file, jobs=args.jobs, opts=args.opts,
                             test_split=args.test_split)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
