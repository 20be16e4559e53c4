#!/usr/bin/env python
"""
Generate GridCLIP's long-tailed synthetic dataset in LVIS v1 format (the embedded default's data).

    python datasets/generate_synthetic_lvis.py --root datasets/synthetic_lvis
    python datasets/generate_synthetic_lvis.py --root /tmp/synth --num-train-images 200 --image-size 96 --seed 1

Same arguments -> byte-identical files. See datasets/README.md and gridclip/data/world/detection.py.
"""
import argparse
import os
import sys

from gridclip.data.world import DEFAULT_GENERATOR_ARGS, ensure_synthetic_lvis, generate_synthetic_lvis


def parse_args(argv=None):
    d = DEFAULT_GENERATOR_ARGS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_root = os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "synthetic_lvis")
    parser.add_argument("--root", default=default_root, help=f"output folder (default: {default_root})")
    parser.add_argument("--num-train-images", type=int, default=d["num_train_images"])
    parser.add_argument("--num-val-images", type=int, default=d["num_val_images"])
    parser.add_argument("--image-size", type=int, nargs="+", default=list(d["image_size"]),
                        help="H W, or one number for square images")
    parser.add_argument("--num-categories", type=int, default=d["num_categories"])
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--if-missing", action="store_true",
                        help="do nothing when the same dataset is already under --root")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if len(args.image_size) not in (1, 2):
        raise SystemExit("--image-size takes H W or a single size.")
    size = tuple(args.image_size) if len(args.image_size) == 2 else (args.image_size[0],) * 2
    kwargs = dict(num_train_images=args.num_train_images, num_val_images=args.num_val_images, image_size=size,
                  num_categories=args.num_categories, seed=args.seed)
    try:
        result = (ensure_synthetic_lvis if args.if_missing else generate_synthetic_lvis)(args.root, **kwargs)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    groups = {g: result["frequencies"].count(g) for g in "rcf"}
    print(f"Synthetic LVIS dataset at {result['root']}")
    print(f"  train: {result['train_json']} ({args.num_train_images} images)")
    print(f"  val:   {result['val_json']} ({args.num_val_images} images)")
    print(f"  {len(result['class_names'])} categories: {groups['r']} rare, {groups['c']} common, {groups['f']} frequent")
    for name, freq, count in zip(result["class_names"], result["frequencies"], result["train_image_counts"]):
        print(f"    {freq}  {count:4d} train images  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
