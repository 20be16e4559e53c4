#!/usr/bin/env python
"""
Speed, memory, FLOPs and size of GridCLIP side by side with Detectron2's own FCOS-R50 (the peer), measured
in one run on the same inputs and machine. What is measured, and why random weights suffice: the
docstring of ``gridclip.analysis.benchmark``, which holds the measuring code.

    python tools/benchmark.py                                  # R50 configs, 800x1333, writes benchmarks/<machine>.{json,md}
    python tools/benchmark.py --size 512 672 --iters 5 --warmup 2 --train-batch 2
    python tools/benchmark.py --params                        # parameter tables only
    python tools/benchmark.py --config-file <tiny cfg> --size 128 160 --opts MODEL.FPN.OUT_CHANNELS 64
"""
import argparse
import logging
import os
import sys

import torch

import gridclip  # noqa: F401  (first: applies the Detectron2 compatibility fixes, registers GridCLIP)
from gridclip.analysis.benchmark import LVIS_BASE_CLASSES, LVIS_CLASSES, PRECISIONS, run_benchmark
from gridclip.analysis.machine import machine_slug
from gridclip.analysis.report import format_markdown, format_parameter_tables, format_parameters_ratio
from gridclip.file_io import atomic_write_json, atomic_write_text

DEFAULT_CONFIG = "configs/GridCLIP-R50-FPN-2x.yaml"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help="GridCLIP config (default: %(default)s)")
    parser.add_argument("--size", nargs=2, type=int, default=[800, 1333], metavar=("H", "W"),
                        help="input height and width of every image (default: 800 1333)")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations before each measurement")
    parser.add_argument("--train-batch", type=int, default=2,
                        help="images per training step on this device (default 2: the paper's 16 over 8 GPUs)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--amp-dtype", choices=("fp16", "bf16"), default=None,
                        help="AMP dtype (default: fp16 on CUDA, bf16 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-train-classes", type=int, default=LVIS_BASE_CLASSES)
    parser.add_argument("--num-test-classes", type=int, default=LVIS_CLASSES)
    parser.add_argument("--no-peer", action="store_true", help="measure GridCLIP only")
    parser.add_argument("--no-train", action="store_true", help="measure inference only")
    parser.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP count")
    parser.add_argument("--speedups", action="store_true",
                        help="also measure GridCLIP's exact inference speed-ups one by one (cumulative, interleaved)")
    parser.add_argument("--compile", action="store_true",
                        help="with --speedups: include torch.compile (about a minute of compiling at R50 size on a CPU)")
    parser.add_argument("--params", action="store_true", help="print the parameter tables only (no timing)")
    parser.add_argument("--output", default=None,
                        help="output path prefix: writes PREFIX.json and PREFIX.md (default benchmarks/<machine>)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 gives steadier numbers on a shared CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="GridCLIP config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.train_batch < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--iters, --train-batch and --threads must be >= 1, --warmup >= 0")
    if min(args.size) < 32:
        parser.error(f"--size {args.size[0]} {args.size[1]}: both sides must be >= 32 pixels")
    if not os.path.isfile(args.config_file):
        parser.error(f"config file not found: {args.config_file}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results = run_benchmark(
        args.config_file, args.opts, device=args.device, size=args.size, iters=args.iters, warmup=args.warmup,
        train_batch=args.train_batch, precisions=args.precisions, amp_dtype=args.amp_dtype,
        num_train_classes=args.num_train_classes, num_test_classes=args.num_test_classes,
        with_peer=not args.no_peer, with_train=not args.no_train, with_flops=not args.no_flops,
        with_speedups=args.speedups, with_compile=args.compile, params_only=args.params, seed=args.seed,
    )
    if args.params:
        print(format_parameter_tables(results))
        if "parameters" in results["ratios"]:
            print(format_parameters_ratio(results["ratios"]))
        return results
    markdown = format_markdown(results)
    prefix = args.output or os.path.join("benchmarks", machine_slug(results["machine"]))
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    atomic_write_json(prefix + ".json", results)
    atomic_write_text(prefix + ".md", markdown + "\n")
    print(markdown)
    print(f"\nWrote {prefix}.json and {prefix}.md")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
