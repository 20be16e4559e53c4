#!/usr/bin/env python
"""
The embedded default (what ``make demo`` runs): GridCLIP trained and evaluated end to end on CPU in
the generated world, with pretrained mini-CLIPs and, side by side, random-init ones. The phases, the
output folder and ``summary.json`` are described in :mod:`gridclip.world.embedded_default`.

    python tools/run_embedded_default.py [--output-dir DIR] [--num-vis 8] [--opts KEY VALUE ...]

``--opts`` apply to both runs (e.g. a shorter schedule). ``OUTPUT_DIR/summary.json`` holds
``pretrained`` and ``random_init`` ({AP, APr, APc, APf, ...}), ``zero_shot_top1`` ({backbone_clip,
teacher_clip}) and ``timings_s`` ({phase: seconds}).
"""
import argparse
import os
import sys
import time

_START = time.perf_counter()

import gridclip  # noqa: E402,F401  (first: applies the Detectron2 compatibility fixes)
from gridclip.tool_errors import run_tool  # noqa: E402
from gridclip.world.embedded_default import run_embedded_default  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED_CONFIG = os.path.join(REPO_ROOT, "configs", "world", "GridCLIP-World-Pretrained.yaml")
RANDOM_INIT_CONFIG = os.path.join(REPO_ROOT, "configs", "GridCLIP-Tiny-Synthetic.yaml")


def get_parser():
    parser = argparse.ArgumentParser(description="Train + evaluate + visualise GridCLIP's embedded default on CPU")
    parser.add_argument("--config-file", default=PRETRAINED_CONFIG, metavar="FILE", help="the pretrained run's config")
    parser.add_argument("--random-init-config-file", default=RANDOM_INIT_CONFIG, metavar="FILE")
    parser.add_argument("--output-dir", default="", help="overrides the config's OUTPUT_DIR")
    parser.add_argument("--num-vis", type=int, default=8, help="number of val images to visualise")
    parser.add_argument("--vis-threshold", type=float, default=0.3, help="score threshold of drawn detections")
    parser.add_argument("--skip-random-init", action="store_true", help="do not train/read the random-init run")
    parser.add_argument("--no-random-init-cache", action="store_true", help="retrain the random-init run")
    parser.add_argument("--corpus-images", type=int, default=None,
                        help="caption-corpus size of the CLIP pretraining (default: tools/pretrain_clip.py's)")
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help="CLIP pretraining steps of each mini-CLIP (default: tools/pretrain_clip.py's)")
    parser.add_argument(
        "--num-threads", type=int, default=1,
        help="torch threads of the pretrained detector's training and of the visualisation (default 1). "
        "Measured on the 2-core machine: its training step takes 0.17 s with 1 thread and 0.13-0.16 s with 2 "
        "when idle, but 2 threads are many times slower when other jobs keep a core busy. The parallel phases "
        "(both CLIP pretrainings, the random-init run) always use one thread per job. Never chosen from the "
        "load: the same settings give the same numbers.",
    )
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    return run_embedded_default(
        args.config_file, args.random_init_config_file, output_dir=args.output_dir, num_vis=args.num_vis,
        vis_threshold=args.vis_threshold, skip_random_init=args.skip_random_init,
        random_init_cache=not args.no_random_init_cache, corpus_images=args.corpus_images,
        pretrain_steps=args.pretrain_steps, num_threads=args.num_threads, opts=args.opts, start_time=_START,
    )


def _cli(argv):
    main(argv)  # returns the summary; the exit status is 0
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(_cli, sys.argv[1:], prog="run_embedded_default.py"))
