#!/usr/bin/env python
"""
Build (and cache) GridCLIP's category text embeddings ahead of training or inference.

Encoding LVIS's 1203 categories × 63 ViLD templates with the RN50 text tower takes about two hours
on a CPU and minutes on a GPU; training, evaluation and the demo then load the cached file.

Examples:
    # the vocabularies of a config (training and test), with its CLIP model and templates
    python tools/build_text_embeddings.py --config-file configs/GridCLIP-R50-FPN-2x.yaml

    # a built-in vocabulary
    python tools/build_text_embeddings.py --vocabulary lvis --clip-model RN50-quickgelu --pretrained openai

    # a custom vocabulary, also written to an explicit file
    python tools/build_text_embeddings.py --vocabulary custom --custom-vocabulary "cat,red umbrella" \\
        --output my_vocab.safetensors
"""
import argparse
import json
import sys

import torch

import gridclip  # first: applies the Detectron2 compatibility fixes
from detectron2.utils.logger import setup_logger
from gridclip.vocabulary import parse_custom_vocabulary, resolve_vocabulary
from gridclip.modeling.clip_loading import pretrained_identity
from gridclip.modeling.text.cache import load_text_embeddings, text_embeddings_cache_path, text_encoder_settings
from gridclip.modeling.text.files import save_text_embeddings
from gridclip.modeling.text.prompts import resolve_templates

DEFAULT_CLIP_MODEL = "RN50-quickgelu"
DEFAULT_PRETRAINED = "openai"


def get_parser():
    parser = argparse.ArgumentParser(
        description="Build and cache GridCLIP category text embeddings (CLIP text tower, ViLD templates).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--vocabulary",
        help="lvis | lvis_base | coco | voc | custom | a registered dataset name | a text file with one "
        "name per line | a comma-separated list. Default: the config's training and test vocabularies "
        "with --config-file, else required.",
    )
    parser.add_argument(
        "--custom-vocabulary",
        help='Comma-separated names (or a file) for --vocabulary custom, e.g. "cat,red umbrella".',
    )
    parser.add_argument(
        "--config-file",
        help="A GridCLIP config: its CLIP model, weights, templates, cache folder and vocabularies are used.",
    )
    parser.add_argument(
        "--which", choices=["train", "test", "both"], default="both",
        help="With --config-file and no --vocabulary: which of the config's vocabularies to build.",
    )
    parser.add_argument(
        "--clip-model",
        help=f"open_clip model name (default: the config's MODEL.GRIDCLIP.TEXT_ENCODER.MODEL_NAME, else its "
        f"MODEL.CLIP.MODEL_NAME; without a config {DEFAULT_CLIP_MODEL}).",
    )
    parser.add_argument(
        "--pretrained",
        help=f"'openai', a local weights file, or '' for random init (default: the config's, else "
        f"{DEFAULT_PRETRAINED}).",
    )
    parser.add_argument(
        "--templates",
        help="vild (63 ViLD templates) | single | a file with one template per line containing {} "
        "(default: the config's, else vild).",
    )
    parser.add_argument(
        "--cache-dir", help="Cache folder (default: the config's, else $GRIDCLIP_CACHE or ~/.cache/gridclip)."
    )
    parser.add_argument("--output", help="Also write the embeddings to this .safetensors file (one vocabulary only).")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available, else cpu).")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="Config overrides KEY VALUE ... (with --config-file; must come last).")
    return parser


def _load_config(args):
    cfg = gridclip.get_gridclip_cfg(args.config_file, args.opts)
    cfg.freeze()
    return cfg


def _vocabularies_to_build(args, cfg, parser):
    """[(label, class names)] from the command line or the config."""
    if args.vocabulary == "custom" or (args.vocabulary is None and args.custom_vocabulary):
        if not args.custom_vocabulary:
            parser.error('--vocabulary custom needs --custom-vocabulary "name1,name2,..." (or a file).')
        return [("custom", parse_custom_vocabulary(args.custom_vocabulary))]
    if args.vocabulary:
        return [(args.vocabulary, resolve_vocabulary(args.vocabulary))]
    if not args.config_file:
        parser.error("Give --vocabulary (or --custom-vocabulary), or --config-file to use a config's vocabularies.")
    wanted = []
    if args.which in ("train", "both"):
        dataset = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None
        spec = cfg.MODEL.GRIDCLIP.TRAIN_VOCABULARY
        wanted.append((f"train ({spec or dataset})", resolve_vocabulary(spec, dataset)))
    if args.which in ("test", "both"):
        dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
        spec = cfg.MODEL.GRIDCLIP.TEST_VOCABULARY
        names = resolve_vocabulary(spec, dataset)
        if not any(names == built for _, built in wanted):
            wanted.append((f"test ({spec or dataset})", names))
    return wanted


def main(argv=None):
    """Run the tool; returns the list of files written or found in the cache."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.opts and not args.config_file:
        parser.error("--opts overrides a config; give --config-file too.")
    cfg = _load_config(args)

    # With a config: the CLIP whose text tower the model uses for class names (MODEL.GRIDCLIP.TEXT_ENCODER,
    # else the backbone CLIP), and its "This is " option, so the files built are the ones training reads.
    encoder = text_encoder_settings(cfg) if args.config_file else {}
    clip_model = args.clip_model or encoder.get("clip_model_name", DEFAULT_CLIP_MODEL)
    if args.pretrained is not None:
        pretrained = args.pretrained
    else:
        pretrained = encoder.get("pretrained", DEFAULT_PRETRAINED)
    this_is = encoder.get("this_is", False)
    templates = args.templates or (cfg.MODEL.GRIDCLIP.PROMPT_TEMPLATES if args.config_file else "vild")
    cache_dir = args.cache_dir if args.cache_dir is not None else (
        cfg.MODEL.GRIDCLIP.EMBEDDINGS_CACHE_DIR if args.config_file else ""
    )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    vocabularies = _vocabularies_to_build(args, cfg, parser)
    if args.output and len(vocabularies) > 1:
        parser.error("--output takes one vocabulary; add --which train or --which test, or --vocabulary.")

    written = []
    for label, names in vocabularies:
        embeddings = load_text_embeddings(
            names, clip_model, pretrained, templates=templates, cache_dir=cache_dir, device=device,
            progress=not args.no_progress, clip_cache_dir=cfg.MODEL.CLIP.CACHE_DIR, this_is=this_is,
        )
        path = text_embeddings_cache_path(names, clip_model, pretrained, templates, cache_dir, this_is=this_is)
        print(f"Vocabulary {label}: {embeddings.shape[0]} classes x {embeddings.shape[1]} dims "
              f"({clip_model}, {pretrained_identity(pretrained)}), cached at {path}")
        written.append(path)
        if args.output:
            save_text_embeddings(
                args.output, embeddings, names, clip_model,
                extra_metadata={
                    "pretrained": pretrained_identity(pretrained),
                    "templates": json.dumps(resolve_templates(templates)),
                },
            )
            print(f"Wrote {args.output}")
            written.append(args.output)
    return written


if __name__ == "__main__":
    from gridclip.tool_errors import run_tool  # expected failures: one line, exit 1 (--debug: the traceback)

    setup_logger(name="gridclip")
    sys.exit(run_tool(lambda argv: (main(argv), 0)[1], sys.argv[1:], prog="build_text_embeddings.py",
                      expected=(RuntimeError,)))
