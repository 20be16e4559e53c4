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
import difflib
import logging
import os
import sys

import torch

import gridclip  # first: applies the Detectron2 compatibility fixes before detectron2 is imported
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from gridclip.checkpoint import GridCLIPCheckpointer
from gridclip.cli import ToolError, check_writable_dir, run_tool
from gridclip.data.datasets import register_config_datasets
from gridclip.engine import launch
from gridclip.engine.trainer import GridCLIPTrainer, register_generated_datasets

logger = logging.getLogger("gridclip.train_net")


def _all_keys(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _all_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _config_error(args, error):
    """One line for a config the YAML/--opts merge refused: unknown key (closest keys), wrong type, syntax."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    message = " ".join(str(message).split())
    if "Non-existent" in message:
        key = message.rsplit(":", 1)[-1].strip()
        close = difflib.get_close_matches(key, list(_all_keys(gridclip.get_gridclip_cfg())), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        return ToolError(f"Unknown config key {key} (in {args.config_file} or the command line).{hint}")
    if "Type mismatch" in message:
        return ToolError(f"Wrongly typed config value: {message}. Give a value of the key's type (see "
                         "projects/GridCLIP/gridclip/config.py or Detectron2's defaults).")
    return ToolError(f"Cannot load config {args.config_file} with overrides {args.opts}: {message}")


def load_config(args):
    """GridCLIP config from ``--config-file`` and the command-line overrides (not frozen); ToolError if bad."""
    import yaml

    if not args.config_file:
        raise ToolError("--config-file is required (e.g. configs/GridCLIP-R50-FPN-2x.yaml)")
    try:
        cfg = gridclip.get_gridclip_cfg(args.config_file, args.opts)
    except FileNotFoundError as e:
        raise ToolError(str(e)) from None
    except (KeyError, ValueError, AssertionError, TypeError, yaml.YAMLError) as e:
        raise _config_error(args, e) from None
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE.startswith("cuda"):
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def last_checkpoint(output_dir):
    """The checkpoint OUTPUT_DIR/last_checkpoint names (None if there is none)."""
    tag = os.path.join(output_dir, "last_checkpoint")
    try:
        with open(tag) as f:
            name = f.read().strip()
    except OSError:
        return None
    return os.path.join(output_dir, name) if name else None


def check_run(cfg, args):
    """Refuse, before any process starts, what would fail late or silently give wrong numbers."""
    weights = cfg.MODEL.WEIGHTS
    resumable = args.resume and last_checkpoint(cfg.OUTPUT_DIR) is not None
    if args.eval_only and not weights and not resumable:
        raise ToolError(
            "--eval-only needs trained weights: add MODEL.WEIGHTS path/to/model_final.pth (or --resume with "
            f"{os.path.join(cfg.OUTPUT_DIR, 'last_checkpoint')}); evaluating a randomly initialised detector "
            "only gives AP 0."
        )
    if weights and "://" not in weights and not resumable and not os.path.isfile(weights):
        raise ToolError(f"MODEL.WEIGHTS '{weights}' does not exist.")
    check_writable_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR")


def setup(args):
    """Config + Detectron2's default_setup (logging, output dir, seed) in each process."""
    cfg = load_config(args)
    register_config_datasets(cfg)  # in every process, also the --num-gpus workers
    register_generated_datasets(cfg, generate=False)
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup configures the "detectron2" and "fvcore" loggers; ours log tables, teacher and data warnings.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="gridclip")
    return cfg


def _interrupted(iteration, output_dir):
    checkpoint = last_checkpoint(output_dir)
    where = f" at iteration {iteration}" if iteration is not None else ""
    if checkpoint:
        return f"training stopped{where}; the last checkpoint is {checkpoint}: continue with --resume."
    return f"training stopped{where} before the first checkpoint was written; start again to train."


def main(args):
    cfg = setup(args)
    allow_partial = cfg.MODEL.GRIDCLIP.ALLOW_PARTIAL_WEIGHTS
    if args.eval_only:
        model = GridCLIPTrainer.build_model(cfg)
        GridCLIPCheckpointer(
            model, save_dir=cfg.OUTPUT_DIR, allow_partial=allow_partial, require_complete=True
        ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return GridCLIPTrainer.test(cfg, model)
    trainer = GridCLIPTrainer(cfg)
    trainer.checkpointer.allow_partial = allow_partial
    trainer.resume_or_load(resume=args.resume)
    try:
        return trainer.train()
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(trainer.iter, cfg.OUTPUT_DIR)) from None


def get_parser():
    parser = default_argument_parser()
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a failure")
    return parser


def invoke_main(argv=None):
    args = get_parser().parse_args(argv)
    logger.info("Command Line Args: %s", args)
    cfg = load_config(args)
    register_config_datasets(cfg)
    check_run(cfg, args)
    # Generate the embedded dataset once, here, before any worker process starts (no race).
    register_generated_datasets(cfg, generate=True)
    try:
        return launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except KeyboardInterrupt as e:
        if e.args:
            raise
        if args.eval_only:
            raise KeyboardInterrupt("evaluation stopped; nothing was written for the unfinished datasets.") from None
        raise KeyboardInterrupt(_interrupted(None, cfg.OUTPUT_DIR)) from None


def cli_main(argv=None):
    """The command line: expected failures end with one line and exit status 1; Ctrl-C with 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_tool(lambda a: (invoke_main(a), 0)[1], argv, prog="train_net.py")


if __name__ == "__main__":
    sys.exit(cli_main())
