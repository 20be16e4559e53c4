#!/usr/bin/env python
"""
The embedded default (what ``make demo`` runs): GridCLIP trained and evaluated end to end on CPU.

1. generates the long-tailed LVIS-format dataset under $DETECTRON2_DATASETS/synthetic_lvis (default
   ./datasets) if it is missing (deterministic; gridclip.data.world);
2. trains configs/GridCLIP-Tiny-Synthetic.yaml with tools/train_net.py's machinery (GridCLIPTrainer:
   tiny random-init CLIP RN backbone, frozen tiny CLIP ViT teacher for image-level alignment) on the
   base classes (rare categories' annotations removed: the open-vocabulary protocol);
3. evaluates on the val split with all classes (Detectron2's LVISEvaluator) and prints the
   paper-style table (AP, AP50, AP75, APs/m/l, AP_r, AP_c, AP_f);
4. draws ground truth | detections of some val images with Detectron2's Visualizer into OUTPUT_DIR/vis/.

    python tools/run_embedded_default.py [--output-dir DIR] [--num-vis 8] [--opts KEY VALUE ...]
"""
import argparse
import logging
import os
import sys
import time

_START = time.perf_counter()

import gridclip  # first: applies the Detectron2 compatibility fixes before detectron2 is imported
import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.utils.visualizer import ColorMode, Visualizer
from gridclip.engine.trainer import GridCLIPTrainer
from gridclip.evaluation import format_paper_table
from gridclip.predictor import GridCLIPPredictor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_net  # noqa: E402  (tools/train_net.py: config loading, dataset generation, training)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs", "GridCLIP-Tiny-Synthetic.yaml")

logger = logging.getLogger("gridclip.embedded_default")


def get_parser():
    parser = argparse.ArgumentParser(description="Train + evaluate + visualise GridCLIP's embedded default on CPU")
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE")
    parser.add_argument("--output-dir", default="", help="overrides the config's OUTPUT_DIR")
    parser.add_argument("--num-vis", type=int, default=8, help="number of val images to visualise")
    parser.add_argument("--vis-threshold", type=float, default=0.3, help="score threshold of drawn detections")
    parser.add_argument(
        "--num-threads", type=int, default=0,
        help="torch intra-op threads; 0 (default) = the CPU cores that are idle now (at least 1). On a 2-core "
        "machine 2 threads were 1.6x faster than 1 when it was idle, but several times slower when other "
        "jobs kept it busy.",
    )
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def idle_cores():
    """CPU cores not busy with other work now (1-minute load average), at least 1."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


def train_args(args):
    """tools/train_net.py's arguments for this run."""
    opts = list(args.opts)
    if args.output_dir:
        opts += ["OUTPUT_DIR", args.output_dir]
    return default_argument_parser().parse_args(["--config-file", args.config_file] + opts)


def visualize(cfg, config_file, opts, weights, output_dir, num_images, threshold):
    """Side-by-side ground truth | detections of the first ``num_images`` test images; returns the written paths."""
    dataset_name = cfg.DATASETS.TEST[0]
    predictor = GridCLIPPredictor(
        config_file, weights=weights, opts=list(opts) + ["OUTPUT_DIR", cfg.OUTPUT_DIR],
        device=cfg.MODEL.DEVICE, confidence_threshold=threshold,
    )
    metadata = MetadataCatalog.get(dataset_name)
    predictor.set_vocabulary(list(metadata.thing_classes))
    os.makedirs(output_dir, exist_ok=True)
    dataset_dicts = DatasetCatalog.get(dataset_name)[:num_images]
    results = predictor.predict([d["file_name"] for d in dataset_dicts], batch_size=8)
    written = []
    for record, detections in zip(dataset_dicts, results):
        image_rgb = cv2.imread(record["file_name"])[:, :, ::-1]
        # Boxes and names only: the generated annotations' polygons would repaint the objects.
        boxes_only = dict(record, annotations=[
            {k: v for k, v in a.items() if k != "segmentation"} for a in record.get("annotations", [])
        ])
        truth = Visualizer(image_rgb, metadata, scale=2.0).draw_dataset_dict(boxes_only).get_image()
        predicted = Visualizer(image_rgb, metadata, scale=2.0, instance_mode=ColorMode.IMAGE)
        predicted = predicted.draw_instance_predictions(detections.to_instances()).get_image()
        separator = np.full((truth.shape[0], 4, 3), 255, dtype=np.uint8)
        path = os.path.join(output_dir, os.path.basename(record["file_name"]).rsplit(".", 1)[0] + ".png")
        cv2.imwrite(path, np.concatenate([truth, separator, predicted], axis=1)[:, :, ::-1])
        written.append(path)
        logger.info("%s: %s", os.path.basename(record["file_name"]), ", ".join(detections.class_names) or "-")
    return written


def main(argv=None):
    args = get_parser().parse_args(argv)
    torch.set_num_threads(args.num_threads if args.num_threads > 0 else idle_cores())
    targs = train_args(args)
    # Generate the dataset if missing (deterministic), register it, then train + evaluate at the end.
    train_net.register_generated_datasets(train_net.load_config(targs), generate=True)
    cfg = train_net.setup(targs)  # Detectron2's default_setup: logging, OUTPUT_DIR, config dump, seed
    trainer = GridCLIPTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    # DefaultTrainer's final EvalHook stores the results of the evaluation at the end of training.
    results = getattr(trainer, "_last_eval_results", None)

    if not results:
        raise SystemExit("Training finished without evaluation results (is DATASETS.TEST empty?).")
    dataset_name = cfg.DATASETS.TEST[0]
    dataset_results = results.get(dataset_name, results)
    table = format_paper_table(dataset_results, title=f"GridCLIP-Tiny-Synthetic on {dataset_name}")
    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    vis_dir = os.path.join(cfg.OUTPUT_DIR, "vis")
    vis_paths = (
        visualize(cfg, args.config_file, args.opts, weights, vis_dir, args.num_vis, args.vis_threshold)
        if args.num_vis > 0 else []
    )

    inference_dir = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    print("\n" + table)
    print(f"Trained weights:       {weights}")
    print(f"Evaluation outputs:    {inference_dir} (paper_table.md, per-category AP JSON, lvis_instances_results.json)")
    print(f"Visualisations:        {vis_dir} ({len(vis_paths)} images: ground truth | detections)")
    print(f"Training log:          {os.path.join(cfg.OUTPUT_DIR, 'log.txt')}")
    print(f"Total time:            {time.perf_counter() - _START:.1f} s ({torch.get_num_threads()} torch threads)")
    return dataset_results


if __name__ == "__main__":
    main(sys.argv[1:])
