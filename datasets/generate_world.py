#!/usr/bin/env python
"""
Generate the world's long-tailed detection dataset in LVIS v1 format (the embedded default's data).

    python datasets/generate_world.py                   # $DETECTRON2_DATASETS/world (default ./datasets/world)
    python datasets/generate_world.py --root /tmp/world --num-train-images 200 --image-size 96 --seed 1

Same arguments -> byte-identical files. See datasets/README.md and gridclip/world/detection.py.
"""
import argparse
import sys

from gridclip.world import DEFAULT_GENERATOR_ARGS, ensure_world_dataset, generate_world_dataset, world_dataset_root


def parse_args(argv=None):
    d = DEFAULT_GENERATOR_ARGS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_root = world_dataset_root()
    parser.add_argument("--root", default=default_root, help=f"output folder (default: {default_root})")
    parser.add_argument("--num-train-images", type=int, default=d["num_train_images"])
    parser.add_argument("--num-val-images", type=int, default=d["num_val_images"])
    parser.add_argument("--image-size", type=int, nargs="+", default=list(d["image_size"]),
                        help="H W, or one number for square images")
    parser.add_argument("--num-categories", type=int, default=d["num_categories"])
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--num-rare", type=int, default=None,
                        help="designed rare (novel) categories (default: 12 of the default 48, else a quarter)")
    parser.add_argument("--num-frequent", type=int, default=None,
                        help="designed frequent categories (default: 6 of the default 48, else an eighth)")
    parser.add_argument("--rare-max-train-images", type=int, default=d["rare_max_train_images"],
                        help="each rare category appears (unannotated for base training) in 1..N train images")
    parser.add_argument("--novel-only-shapes", nargs="*", default=list(d["novel_only_shapes"]),
                        help="shapes only rare (novel) categories wear (none: give the flag alone)")
    parser.add_argument("--unannotated-novel-share", type=float, default=d["unannotated_novel_share"],
                        help="share of train images that also show one unannotated novel object")
    parser.add_argument("--if-missing", action="store_true",
                        help="do nothing when the same dataset is already under --root")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if len(args.image_size) not in (1, 2):
        raise SystemExit("--image-size takes H W or a single size.")
    size = tuple(args.image_size) if len(args.image_size) == 2 else (args.image_size[0],) * 2
    kwargs = dict(num_train_images=args.num_train_images, num_val_images=args.num_val_images, image_size=size,
                  num_categories=args.num_categories, seed=args.seed, num_rare=args.num_rare,
                  num_frequent=args.num_frequent, rare_max_train_images=args.rare_max_train_images,
                  novel_only_shapes=tuple(args.novel_only_shapes),
                  unannotated_novel_share=args.unannotated_novel_share)
    d = DEFAULT_GENERATOR_ARGS
    if args.num_categories == d["num_categories"]:  # the default world split unless told otherwise
        kwargs["num_rare"] = d["num_rare"] if args.num_rare is None else args.num_rare
        kwargs["num_frequent"] = d["num_frequent"] if args.num_frequent is None else args.num_frequent
    try:
        result = (ensure_world_dataset if args.if_missing else generate_world_dataset)(args.root, **kwargs)
    except (ValueError, RuntimeError) as e:
        raise SystemExit(f"error: {e}")
    groups = {g: result["frequencies"].count(g) for g in "rcf"}
    print(f"World detection dataset at {result['root']}")
    print(f"  train: {result['train_json']} ({args.num_train_images} images)")
    print(f"  val:   {result['val_json']} ({args.num_val_images} images)")
    print(f"  {len(result['class_names'])} categories: {groups['r']} rare, {groups['c']} common, {groups['f']} frequent"
          f" (every rare colour/texture/shape also among base categories: {result['attribute_coverage']};"
          f" novel-only shapes: {', '.join(result['novel_only_shapes']) or 'none'})")
    print(f"  {result['unannotated_novel_images']} train images also show an unannotated novel object")
    for name, freq, count in zip(result["class_names"], result["frequencies"], result["train_image_counts"]):
        print(f"    {freq}  {count:4d} train images  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
