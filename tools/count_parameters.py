#!/usr/bin/env python
"""
Inference parameter count of a GridCLIP config, with a per-part breakdown, compared with the paper's
56.4 M (GridCLIP-R50, Table 2). The model is built with random weights (no download).

    python tools/count_parameters.py --config-file configs/GridCLIP-R50-FPN-2x.yaml [KEY VALUE ...]

With grid alignment the text embeddings are buffers, not parameters, so the vocabulary does not
change the count; the tool then scores a 2-name vocabulary with one template to skip encoding the
real vocabularies. The image head is trained but not used at inference: listed, not counted.
"""
import argparse
import sys

import gridclip  # noqa: F401  (first: applies the Detectron2 compatibility fixes, registers GridCLIP)
from detectron2.modeling import build_model  # noqa: E402
from fvcore.nn import parameter_count  # noqa: E402

from gridclip import get_gridclip_cfg  # noqa: E402

PAPER_INFERENCE_PARAMETERS = 56.4e6

# (part, parameter-name prefixes, prefixes to subtract, training only)
_PARTS = [
    ("bottom-up trunk", ["backbone.bottom_up"], ["backbone.bottom_up.attnpool", "backbone.bottom_up.grid_adapter"], False),
    ("attention pool", ["backbone.bottom_up.attnpool"], [], False),
    ("grid adapter", ["backbone.bottom_up.grid_adapter"], [], False),
    ("FPN (lateral + output convs)", ["backbone"], ["backbone.bottom_up", "backbone.top_block"], False),
    ("FPN P6/P7 top block", ["backbone.top_block"], [], False),
    ("head towers", ["head.cls_subnet", "head.bbox_subnet"], [], False),
    ("cls output (embedding/logit conv)", ["head.cls_score"], [], False),
    ("box output", ["head.bbox_pred"], [], False),
    ("centerness output", ["head.ctrness"], [], False),
    ("cosine classifier (scale, bias)", ["classifier"], [], False),
    ("image head", ["image_head"], [], True),
]


def parameter_breakdown(model):
    """
    Returns:
        list of (part name, parameter count, training_only) for the parts the model has; the
        inference parts add up to every parameter outside the image head.
    """
    counts = parameter_count(model)
    rows = []
    for name, prefixes, minus, training_only in _PARTS:
        n = sum(counts.get(p, 0) for p in prefixes) - sum(counts.get(p, 0) for p in minus)
        if n:
            rows.append((name, n, training_only))
    total = counts[""]
    inference = sum(n for _, n, t in rows if not t)
    training = sum(n for _, n, t in rows if t)
    if inference + training != total:
        raise RuntimeError(f"Parameter breakdown misses {total - inference - training} parameters of the model.")
    return rows


def format_breakdown(rows, title):
    inference = sum(n for _, n, t in rows if not t)
    lines = [f"## {title}", "", "| part | parameters |", "|---|---:|"]
    for name, n, training_only in rows:
        label = f"{name} (training only, not counted)" if training_only else name
        lines.append(f"| {label} | {n / 1e6:.2f} M |")
    lines.append(f"| **inference total** | **{inference / 1e6:.2f} M** |")
    lines.append(f"| paper (GridCLIP-R50) | {PAPER_INFERENCE_PARAMETERS / 1e6:.1f} M |")
    lines.append(f"| difference | {(inference - PAPER_INFERENCE_PARAMETERS) / 1e6:+.2f} M |")
    return "\n".join(lines)


def random_weights_config(config_file, opts=(), device="cpu"):
    """
    The config's architecture with random weights (backbone CLIP, teacher, MODEL.WEIGHTS) on
    ``device``, frozen. With grid alignment the vocabularies become two names and one template:
    text embeddings are buffers, so they change no parameter count, and encoding LVIS's real
    vocabularies would take hours on a CPU.
    """
    cfg = get_gridclip_cfg(config_file, opts)
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.CLIP.PRETRAINED = ""
    cfg.MODEL.GRIDCLIP.TEACHER.PRETRAINED = ""
    if cfg.MODEL.GRIDCLIP.GRID_ALIGN:
        cfg.MODEL.GRIDCLIP.TRAIN_VOCABULARY = "object,thing"
        cfg.MODEL.GRIDCLIP.TEST_VOCABULARY = "object,thing"
        cfg.MODEL.GRIDCLIP.PROMPT_TEMPLATES = "single"
    cfg.freeze()
    return cfg


def build_random_model(config_file, opts):
    return build_model(random_weights_config(config_file, opts))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument(
        "--both-top-blocks", action="store_true", help="also count with MODEL.FPN.TOP_BLOCK_IN p5 and c5"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    variants = [("", [])]
    if args.both_top_blocks:
        variants = [("TOP_BLOCK_IN p5", ["MODEL.FPN.TOP_BLOCK_IN", "p5"]),
                    ("TOP_BLOCK_IN c5", ["MODEL.FPN.TOP_BLOCK_IN", "c5"])]
    for label, extra in variants:
        model = build_random_model(args.config_file, list(args.opts) + extra)
        title = f"{args.config_file}" + (f" ({label})" if label else "")
        print(format_breakdown(parameter_breakdown(model), title))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
