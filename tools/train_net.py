#!/usr/bin/env python
"""
GridCLIP training and evaluation script, in the style of Detectron2's ``tools/train_net.py``.

Train (8 GPUs):
    python tools/train_net.py --config-file configs/GridCLIP-R50-FPN-2x.yaml --num-gpus 8
Evaluate a checkpoint (paper table + per-category AP JSON under OUTPUT_DIR/inference/<dataset>/):
    python tools/train_net.py --config-file configs/GridCLIP-R50-FPN-2x.yaml --eval-only \\
        MODEL.WEIGHTS output/gridclip_r50_fpn_2x/model_final.pth
Resume a stopped run from OUTPUT_DIR/last_checkpoint:
    python tools/train_net.py --config-file ... --resume
Without CUDA, ``--num-gpus N`` starts N CPU processes with the gloo backend.

Expected failures end with one line and a non-zero exit status (``--debug`` or ``GRIDCLIP_DEBUG=1``
keep the traceback): a missing config, an unknown config key (with the closest existing keys) or a
wrongly typed value, ``--eval-only`` without weights, an OUTPUT_DIR that cannot be written, weights
that do not fit the config, a full disk (``ENOSPC`` and the file). Ctrl-C stops training with one
line naming the iteration and the last checkpoint to ``--resume`` from.
"""
import sys

import gridclip  # noqa: F401  (first: applies the Detectron2 compatibility fixes before detectron2 is imported)
from gridclip.tool_errors import run_tool
from gridclip.engine.defaults import argument_parser, launch_from_args


def invoke_main(argv=None):
    """Parse ``argv`` and train or evaluate (:func:`gridclip.engine.defaults.launch_from_args`)."""
    return launch_from_args(argument_parser().parse_args(argv))


def cli_main(argv=None):
    """The command line: expected failures end with one line and exit status 1; Ctrl-C with 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_tool(lambda a: (invoke_main(a), 0)[1], argv, prog="train_net.py")


if __name__ == "__main__":
    sys.exit(cli_main())
