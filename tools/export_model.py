#!/usr/bin/env python
"""
Export GridCLIP to TorchScript and/or ONNX with the vocabulary as a graph input (or baked in with
--bake-vocabulary), dynamic batch, image size and vocabulary size, plus the text tower as its own ONNX
file; every file is checked against PyTorch (the export is ``gridclip.export``, the guide docs/EXPORT.md).

Input contract (both formats enforce it; export_info.json states it): images uint8 [B, 3, H, W] in the
config's INPUT.FORMAT, each already resized by the config's test resize (ResizeShortestEdge(
INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)) and placed top-left; image_sizes int64 [B, 2] (each image's
height, width); H, W = the largest height / width rounded up to a multiple of 32; class_embeddings
float32 [K, D]. Outputs: boxes [N, 4] (resized-image pixels), scores [N], classes [N], batch_index [N].

    python tools/export_model.py --config-file configs/GridCLIP-R50-FPN-2x.yaml --vocabulary coco \\
        --output export/ MODEL.WEIGHTS output/model_final.pth
    python tools/export_model.py --config-file configs/GridCLIP-Tiny-Synthetic.yaml --bake-vocabulary \\
        --format torchscript --output export_baked/

Nothing is overwritten: an existing output file is an error. ONNX needs ``onnx`` and ``onnxruntime``.
"""
import argparse
import os
import sys

from gridclip.export import FORMATS, describe_export, export_model, output_files
from gridclip.tool_errors import run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="GridCLIP config")
    parser.add_argument("--vocabulary", default=None,
                        help="the exported vocabulary (class_embeddings.npy; baked with --bake-vocabulary): lvis, "
                             "lvis_base, coco, voc, 'a,b,c', a file (default: the config's test vocabulary)")
    parser.add_argument("--format", nargs="+", choices=FORMATS + ("folder",), default=list(FORMATS),
                        help="'folder': a self-describing weights folder at --output (gridclip.pretrained), alone")
    parser.add_argument("--output", required=True,
                        help="output folder (model.ts, model.onnx, text_encoder.onnx, class_embeddings.npy, "
                             "export_info.json)")
    parser.add_argument("--bake-vocabulary", action="store_true",
                        help="class embeddings as constants of the graphs (inputs: images, image_sizes only)")
    parser.add_argument("--no-text-encoder", action="store_true", help="do not export the text tower")
    parser.add_argument("--sample-image", default=None, help="an image to check the export on (besides random ones)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default %(default)s)")
    parser.add_argument("--no-check", action="store_true", help="do not compare the exported models with PyTorch")
    parser.add_argument("--benchmark", type=int, default=0, metavar="N",
                        help="time onnxruntime vs PyTorch, N interleaved runs each (min reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch (and onnxruntime) CPU threads")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config_file):
        parser.error(f"config file not found: {args.config_file}")
    if args.sample_image and not os.path.isfile(args.sample_image):
        parser.error(f"--sample-image not found: {args.sample_image}")
    if args.benchmark < 0 or (args.threads is not None and args.threads < 1):
        parser.error("--benchmark and --threads must be positive")
    if len(args.opts) % 2:
        parser.error(f"config overrides come in KEY VALUE pairs, got {len(args.opts)} words")
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch

    if "folder" in args.format:  # the weights folder (config, safetensors, CLIP files, card): no graph export
        if len(args.format) > 1:
            raise ValueError("--format folder is written alone (run the tool again for torchscript/onnx).")
        from gridclip.pretrained import export_weights_folder

        print(f"Weights folder: {export_weights_folder(args.config_file, args.output, args.vocabulary, args.opts)}")
        return None
    output_files(args.output, args.format, not args.no_text_encoder)  # before anything slow
    if args.threads:
        torch.set_num_threads(args.threads)
    report = export_model(args.config_file, args.output, formats=args.format, vocabulary=args.vocabulary,
                          bake_vocabulary=args.bake_vocabulary, text_encoder=not args.no_text_encoder,
                          sample_image=args.sample_image, opset=args.opset, check=not args.no_check,
                          benchmark_repeats=args.benchmark, opts=args.opts)
    for line in describe_export(report):
        print(line)
    return report


def cli_main(argv=None):
    main(argv)


if __name__ == "__main__":
    sys.exit(run_tool(cli_main, sys.argv[1:], prog="export_model.py"))
