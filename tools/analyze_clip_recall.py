#!/usr/bin/env python
"""
The paper's §4.4 / Fig. 4 analysis: how many of an image's categories does CLIP's image-level
embedding rank among its top k (k = 10, 100, 300) when matched against the text embeddings of all
categories of an LVIS-format dataset.

For each ``--clip-model`` (with the ``--pretrained`` at the same position) writes
``<output>/clip_recall_<model>.json`` (summary, histogram of categories per image, recall by number of
categories, per-image numbers), and one ``<output>/clip_recall.png`` comparing the models.

Examples (real LVIS v1 val; the paper compares RN50, RN101, RN50x64 and ViT-B/32):
    python tools/analyze_clip_recall.py --dataset lvis_v1_val \\
        --clip-model ViT-B-32-quickgelu --pretrained openai \\
        --clip-model RN50x64-quickgelu --pretrained openai --output out/clip_recall

    # any LVIS-format json + image folder, tiny random CLIP (no download)
    python tools/analyze_clip_recall.py --json datasets/world/annotations/lvis_v1_val.json \\
        --image-root datasets/world/images --clip-model GridCLIP-Tiny-ViT --pretrained "" --output out/recall
"""
import argparse
import os
import re
import sys

import gridclip  # noqa: F401  (first: compat fixes; registers datasets and tiny CLIP configs)
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger
from gridclip.evaluation.plots import plot_clip_recall
from gridclip.evaluation.recall_analysis import DEFAULT_KS, analyze_clip_recall
from gridclip.file_io import atomic_write_json


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("dataset (either --dataset, or --json and --image-root)")
    source.add_argument("--dataset", default=None, help="a registered LVIS-format dataset name, e.g. lvis_v1_val")
    source.add_argument("--json", default=None, help="LVIS-format annotation file")
    source.add_argument("--image-root", default=None, help="image folder as for Detectron2's load_lvis_json: image_root + <split folder of coco_url>/<file> (LVIS: datasets/coco/)")
    parser.add_argument("--clip-model", action="append", required=True, help="open_clip model name (repeatable)")
    parser.add_argument(
        "--pretrained", action="append", default=None,
        help='weights for the --clip-model at the same position: "openai", a local file, or "" (random)',
    )
    parser.add_argument(
        "--label", action="append", default=None,
        help="legend label (and JSON file name) for the --clip-model at the same position (default: model + weights)",
    )
    parser.add_argument("--ks", nargs="+", type=int, default=list(DEFAULT_KS), help="k of recall@k")
    parser.add_argument("--templates", default="vild", help='prompt templates: "vild", "single" or a file')
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-images", type=int, default=None, help="analyse only the first N images")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is available")
    parser.add_argument("--output", default="clip_recall", help="output folder")
    return parser


def _dataset_files(args, parser):
    if args.dataset:
        if args.json or args.image_root:
            parser.error("give either --dataset or --json/--image-root, not both")
        if args.dataset not in MetadataCatalog.list():
            parser.error(f"dataset {args.dataset!r} is not registered")
        metadata = MetadataCatalog.get(args.dataset)
        if not hasattr(metadata, "json_file") or not hasattr(metadata, "image_root"):
            parser.error(f"dataset {args.dataset!r} has no json_file/image_root metadata (not LVIS-format)")
        return metadata.json_file, metadata.image_root
    if not (args.json and args.image_root):
        parser.error("give --dataset, or both --json and --image-root")
    return args.json, args.image_root


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    pretrained = args.pretrained if args.pretrained is not None else ["openai"] * len(args.clip_model)
    if len(pretrained) != len(args.clip_model):
        parser.error(f"{len(args.clip_model)} --clip-model but {len(pretrained)} --pretrained (give one per model)")
    if args.label is not None and len(args.label) != len(args.clip_model):
        parser.error(f"{len(args.clip_model)} --clip-model but {len(args.label)} --label (give one per model)")
    labels = args.label or [None] * len(args.clip_model)
    json_file, image_root = _dataset_files(args, parser)
    setup_logger(name="gridclip")
    os.makedirs(args.output, exist_ok=True)

    results = []
    for model_name, weights, label in zip(args.clip_model, pretrained, labels):
        try:
            result = analyze_clip_recall(
                json_file, image_root, model_name, weights, ks=args.ks, templates=args.templates,
                batch_size=args.batch_size, device="cpu" if args.cpu else None, max_images=args.max_images,
                progress=True,
            )
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        path = os.path.join(args.output, f"clip_recall_{re.sub(r'[^A-Za-z0-9_.-]+', '_', label or model_name)}.json")
        atomic_write_json(path, result, indent=1)
        print(f"{model_name}: " + ", ".join(
            f"{key} {100 * value:.1f}%" for key, value in result["mean_recall"].items() if value is not None
        ) + f" ({result['num_images_with_categories']} images) -> {path}")
        results.append(result)
    png = plot_clip_recall(results, os.path.join(args.output, "clip_recall.png"),
                           labels=args.label if args.label is not None else None)
    print(f"Wrote {png}")
    return 0


if __name__ == "__main__":
    from gridclip.tool_errors import run_tool  # expected failures: one line, exit 1 (--debug: the traceback)

    sys.exit(run_tool(main, sys.argv[1:], prog="analyze_clip_recall.py"))
