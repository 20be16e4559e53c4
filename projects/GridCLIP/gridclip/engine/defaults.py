"""
The reusable set-up of ``tools/train_net.py``, as :mod:`detectron2.engine.defaults` is Detectron2's:
the argument parser, config loading with one-line errors, the checks run before any process starts,
the per-process set-up, and training/evaluation from parsed arguments.

Expected failures raise :class:`gridclip.tool_errors.ToolError` with one line (a missing config, an
unknown config key with the closest existing keys, a wrongly typed value, ``--eval-only`` without weights, an
OUTPUT_DIR that cannot be written or that another live run holds, :mod:`gridclip.run_lock`); Ctrl-C raises
``KeyboardInterrupt`` with one line naming the iteration and the last checkpoint to ``--resume`` from.
"""
import difflib
import logging
import os

import torch
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import GridCLIPCheckpointer
from ..run_lock import OutputDirLock
from ..tool_errors import ToolError, check_writable_dir
from ..config import get_gridclip_cfg
from ..config_checks import ConfigValueError, check_config
from ..data.datasets import register_config_datasets
from ..exemplars import set_test_exemplars
from .launch import launch
from .trainer import GridCLIPTrainer, lock_output_dir, register_generated_datasets

__all__ = [
    "argument_parser",
    "load_config",
    "check_run",
    "setup",
    "last_checkpoint",
    "train_or_evaluate",
    "launch_from_args",
]

logger = logging.getLogger("gridclip.train_net")


def argument_parser():
    """Detectron2's default argument parser plus ``--debug`` (keep the traceback of a failure)."""
    parser = default_argument_parser()
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a failure")
    return parser


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
        close = difflib.get_close_matches(key, list(_all_keys(get_gridclip_cfg())), n=3, cutoff=0.6)
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
        cfg = get_gridclip_cfg(args.config_file, args.opts)
    except FileNotFoundError as e:
        raise ToolError(str(e)) from None
    except (KeyError, ValueError, AssertionError, TypeError, yaml.YAMLError) as e:
        raise _config_error(args, e) from None
    try:
        check_config(cfg, training=not getattr(args, "eval_only", False))
    except ConfigValueError as e:
        raise ToolError(str(e)) from None
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
    if "://" not in cfg.OUTPUT_DIR:
        OutputDirLock(cfg.OUTPUT_DIR).check()  # another live run writes there: refused before anything starts


def setup(args):
    """Config + Detectron2's default_setup (logging, output dir, seed) in each process; the frozen config."""
    cfg = load_config(args)
    register_config_datasets(cfg)  # in every process, also the --num-gpus workers
    register_generated_datasets(cfg, generate=False)
    cfg.freeze()
    if comm.is_main_process() and cfg.OUTPUT_DIR and "://" not in cfg.OUTPUT_DIR:
        # Refused before default_setup writes config.yaml and log.txt into a folder another run uses
        # (GridCLIPTrainer / --eval-only then take the lock itself).
        OutputDirLock(cfg.OUTPUT_DIR).check()
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


def train_or_evaluate(args):
    """
    One process's work: train (or, with ``--eval-only``, evaluate MODEL.WEIGHTS). Returns the
    evaluation results (an OrderedDict of dataset name -> metrics) as DefaultTrainer does.
    """
    cfg = setup(args)
    allow_partial = cfg.MODEL.GRIDCLIP.ALLOW_PARTIAL_WEIGHTS
    if args.eval_only:
        lock = lock_output_dir(cfg.OUTPUT_DIR)  # its inference/ outputs are not shared with a training
        try:
            model = GridCLIPTrainer.build_model(cfg)
            GridCLIPCheckpointer(
                model, save_dir=cfg.OUTPUT_DIR, allow_partial=allow_partial, require_complete=True,
                allow_text_space_mismatch=cfg.MODEL.GRIDCLIP.ALLOW_TEXT_SPACE_MISMATCH,
            ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
            set_test_exemplars(model, cfg)  # MODEL.GRIDCLIP.TEST_EXEMPLARS: classes queried by image exemplars
            return GridCLIPTrainer.test(cfg, model)
        finally:
            lock.release()
    trainer = GridCLIPTrainer(cfg)
    trainer.checkpointer.allow_partial = allow_partial
    trainer.resume_or_load(resume=args.resume)
    try:
        return trainer.train()
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(trainer.iter, cfg.OUTPUT_DIR)) from None


def launch_from_args(args):
    """
    Check the run, generate the embedded dataset once (before any worker process starts, so there is
    no race), then run :func:`train_or_evaluate` in ``args.num_gpus`` processes per machine.
    """
    logger.info("Command Line Args: %s", args)
    cfg = load_config(args)
    register_config_datasets(cfg)
    check_run(cfg, args)
    register_generated_datasets(cfg, generate=True)
    try:
        return launch(
            train_or_evaluate,
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
