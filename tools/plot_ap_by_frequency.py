#!/usr/bin/env python
"""
Fig. 3 of the paper: AP over categories sorted by training frequency (image_count ascending),
smoothed with a moving average over the window [-10, 10], one line per run.

Inputs are the ``per_category_ap.json`` files that GridCLIPLVISEvaluator writes next to its results
(``OUTPUT_DIR/inference/<dataset>/per_category_ap.json`` after ``tools/train_net.py --eval-only``),
or the folders holding them.

Examples:
    python tools/plot_ap_by_frequency.py out/gridclip/inference/lvis_v1_val --output ap_by_frequency.png

    python tools/plot_ap_by_frequency.py out/w_o_align/inference/lvis_v1_val_cf out/both/inference/lvis_v1_val_cf \\
        --labels "GridCLIP-R50 w/o align" "GridCLIP-R50" --title "LVIS v1 closed set" --output fig3a.png
"""
import argparse
import sys

from gridclip.evaluation.plots import PAPER_WINDOW, plot_ap_by_frequency


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="per_category_ap.json files or folders holding one (one per run)")
    parser.add_argument("--labels", nargs="+", default=None, help="legend label per input (default: folder names)")
    parser.add_argument("--output", default="ap_by_frequency.png", help="PNG file to write")
    parser.add_argument(
        "--window", nargs=2, type=int, default=list(PAPER_WINDOW), metavar=("BEFORE", "AFTER"),
        help="moving-average window offsets (paper: -10 10)",
    )
    parser.add_argument("--title", default=None, help="figure title")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.inputs):
        get_parser().error(f"{len(args.inputs)} inputs but {len(args.labels)} --labels")
    try:
        path = plot_ap_by_frequency(
            args.inputs, args.output, labels=args.labels, window=tuple(args.window), title=args.title
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    from gridclip.tool_errors import run_tool  # expected failures: one line, exit 1 (--debug: the traceback)

    sys.exit(run_tool(main, sys.argv[1:], prog="plot_ap_by_frequency.py"))
