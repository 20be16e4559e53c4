#!/usr/bin/env python
"""
Export GridCLIP with a fixed vocabulary to TorchScript and/or ONNX, through Detectron2's
``TracingAdapter`` (``torch.jit.trace``), and check the exported model against PyTorch (the export
is ``gridclip.export``).

The exported model takes one image, a uint8 tensor [3, H, W] in the config's INPUT.FORMAT (RGB), of the
export size (``--size``, or the size of ``--sample-image`` after the config's test resize), and returns
Detectron2's flattened Instances: boxes [N, 4] (x0, y0, x1, y1 in input pixels), scores [N], classes [N]
(indices into the vocabulary written to ``export_info.json``). The vocabulary's text embeddings are
constants inside the exported graph. Decoding in the exported graph is the dense reference decoder (same
detections as the PyTorch model's exact bound decoder; its control flow does not depend on the data).

    python tools/export_model.py --config-file configs/GridCLIP-R50-FPN-2x.yaml --vocabulary coco \\
        --format torchscript onnx --output export/ MODEL.WEIGHTS output/model_final.pth
    python tools/export_model.py --config-file configs/GridCLIP-Tiny-Synthetic.yaml --size 256 256 --output export/

Nothing is overwritten: an existing output file is an error. ONNX needs the ``onnx`` package;
checking it needs ``onnxruntime`` (both optional, see requirements.txt).
"""
import argparse
import os
import sys

import torch

from gridclip.export import FORMATS, describe_export, export_model, output_files
from gridclip.tool_errors import run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="GridCLIP config")
    parser.add_argument("--vocabulary", default=None,
                        help="vocabulary baked into the export: lvis, lvis_base, coco, voc, 'a,b,c', a file "
                             "(default: the config's test vocabulary, as the predictor resolves it)")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--output", required=True, help="output folder (model.ts / model.onnx / export_info.json)")
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="input size of the exported model (default: --sample-image's size, else 800 1333)")
    parser.add_argument("--sample-image", default=None, help="an image to trace with and to check the export on")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default %(default)s)")
    parser.add_argument("--no-check", action="store_true", help="do not compare the exported models with PyTorch")
    parser.add_argument("--threads", type=int, default=None, help="torch (and onnxruntime) CPU threads")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.size is not None and min(args.size) < 32:
        parser.error(f"--size {args.size[0]} {args.size[1]}: both sides must be >= 32 pixels")
    if not os.path.isfile(args.config_file):
        parser.error(f"config file not found: {args.config_file}")
    if args.sample_image and not os.path.isfile(args.sample_image):
        parser.error(f"--sample-image not found: {args.sample_image}")
    return args


def main(argv=None):
    args = parse_args(argv)
    output_files(args.output, args.format)  # before anything slow
    if args.threads:
        torch.set_num_threads(args.threads)
    report = export_model(args.config_file, args.output, formats=args.format, vocabulary=args.vocabulary,
                          size=args.size, sample_image=args.sample_image, opset=args.opset, check=not args.no_check,
                          opts=args.opts)
    for line in describe_export(report):
        print(line)
    return report


def cli_main(argv=None):
    main(argv)


if __name__ == "__main__":
    sys.exit(run_tool(cli_main, sys.argv[1:], prog="export_model.py"))
