#!/usr/bin/env python
"""
Pretrain the generated world's mini-CLIPs contrastively on its caption corpus (open_clip's model,
tokenizer and ClipLoss; AdamW, warm-up + cosine, fixed seed) and report their zero-shot accuracy on
held-out single-object images over all 192 names.

    python tools/pretrain_clip.py                      # backbone + teacher, cached under $GRIDCLIP_CACHE/world_clip
    python tools/pretrain_clip.py --model GridCLIP-World-ViT                  # the opt-in ViT teacher
    python tools/pretrain_clip.py --model GridCLIP-World-RN --steps 800 --force
    python tools/pretrain_clip.py --corpus-images 4000 --output-dir out/clip   # a copy of the weights there

The weights are plain safetensors state dicts: train GridCLIP with them through the ordinary
local-file path, e.g. ``MODEL.CLIP.PRETRAINED <rn file> MODEL.GRIDCLIP.TEACHER.PRETRAINED <teacher file>``
(the command prints these options). Models: GridCLIP-World-RN (the backbone incl. its attention
pool, and the text tower), GridCLIP-World-RN-Teacher (the default image teacher: the same architecture
pretrained longer) and GridCLIP-World-ViT (the ViT teacher, opt-in).
"""
import argparse
import logging
import os
import sys
import time

import gridclip  # noqa: F401  (first: compat fixes; registers the world's CLIP configs)
import torch
from gridclip.world.captions import DEFAULT_CORPUS_ARGS
from gridclip.world.pretraining import (
    BACKBONE_CLIP,
    TEACHER_CLIP,
    VIT_TEACHER_CLIP,
    copy_world_clips,
    ensure_world_clips,
    world_clip_config_opts,
    world_clips_table,
)


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", choices=[BACKBONE_CLIP, TEACHER_CLIP, VIT_TEACHER_CLIP],
                        help="model to pretrain (repeatable; default: the backbone and the default teacher)")
    parser.add_argument("--corpus-images", type=int, default=DEFAULT_CORPUS_ARGS["num_images"])
    parser.add_argument("--image-size", type=int, default=DEFAULT_CORPUS_ARGS["image_size"])
    parser.add_argument("--seed", type=int, default=0, help="corpus and training seed")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: per model)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--zero-shot-per-object", type=int, default=2, help="held-out images per world object")
    parser.add_argument("--cache-dir", default="", help='weights cache ("" = $GRIDCLIP_CACHE or ~/.cache/gridclip)')
    parser.add_argument("--output-dir", default="", help="also copy the weights and a summary JSON here")
    parser.add_argument("--force", action="store_true", help="retrain even if cached")
    parser.add_argument("--num-threads", type=int, default=1,
                        help="torch threads per model (default 1, as make demo: the models train at the same "
                        "time, one Python thread each; the weights depend on the thread count)")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    if min(args.corpus_images, args.zero_shot_per_object, args.num_threads) < 1 or (args.steps is not None and args.steps < 1):
        print("error: --corpus-images, --steps, --zero-shot-per-object and --num-threads must be positive", file=sys.stderr)
        return 2
    torch.set_num_threads(args.num_threads)
    if args.output_dir and os.path.exists(args.output_dir) and os.listdir(args.output_dir):
        print(f"error: --output-dir {args.output_dir} exists and is not empty (nothing is overwritten)", file=sys.stderr)
        return 2
    models = args.model or [BACKBONE_CLIP, TEACHER_CLIP]
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                   ("seed", args.seed)) if v is not None}
    corpus_args = dict(num_images=args.corpus_images, image_size=args.image_size, seed=args.seed)
    start = time.perf_counter()
    try:
        results = ensure_world_clips(models, corpus_args=corpus_args, train_args={m: overrides for m in models},
                                     cache_dir=args.cache_dir, zero_shot_per_object=args.zero_shot_per_object,
                                     force=args.force, parallel=True)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n" + world_clips_table(results))
    if args.output_dir:
        copy_world_clips(results, args.output_dir)
    opts = world_clip_config_opts(results)
    print(f"\nTrain GridCLIP with them: tools/train_net.py --config-file configs/world/GridCLIP-World-Pretrained.yaml {' '.join(opts)}")
    print(f"Total time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
