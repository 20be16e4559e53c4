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
"""
import logging
import sys

import torch

import gridclip  # first: applies the Detectron2 compatibility fixes before detectron2 is imported
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from gridclip.checkpoint import GridCLIPCheckpointer
from gridclip.engine import launch
from gridclip.engine.trainer import GridCLIPTrainer, register_generated_datasets

logger = logging.getLogger("gridclip.train_net")


def load_config(args):
    """GridCLIP config from ``--config-file`` and the command-line overrides (not frozen)."""
    if not args.config_file:
        raise SystemExit("--config-file is required (e.g. configs/GridCLIP-R50-FPN-2x.yaml)")
    try:
        cfg = gridclip.get_gridclip_cfg(args.config_file, args.opts)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE.startswith("cuda"):
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def setup(args):
    """Config + Detectron2's default_setup (logging, output dir, seed) in each process."""
    cfg = load_config(args)
    register_generated_datasets(cfg, generate=False)
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup configures the "detectron2" and "fvcore" loggers; ours log tables, teacher and data warnings.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="gridclip")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = GridCLIPTrainer.build_model(cfg)
        GridCLIPCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return GridCLIPTrainer.test(cfg, model)
    trainer = GridCLIPTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main(argv=None):
    args = default_argument_parser().parse_args(argv)
    logger.info("Command Line Args: %s", args)
    # Generate the embedded dataset once, here, before any worker process starts (no race).
    register_generated_datasets(load_config(args), generate=True)
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main(sys.argv[1:])
