#!/usr/bin/env python
"""
The embedded default (what ``make demo`` runs): GridCLIP trained and evaluated end to end on CPU in
the generated vision-language world, with pretrained mini-CLIPs and, side by side, random-init ones.

Phases (each one's time is printed and written to ``summary.json``):

1. ``data``: the long-tailed LVIS-format detection dataset under $DETECTRON2_DATASETS/synthetic_lvis
   (default ./datasets), generated if missing or made with other generator arguments;
2. ``pretrain_clip``: the world's mini-CLIPs (GridCLIP-World-RN: backbone + text tower;
   GridCLIP-World-ViT: teacher), pretrained contrastively on the caption corpus if not cached
   ($GRIDCLIP_CACHE/world_clip, see tools/pretrain_clip.py);
3. ``train_pretrained``: configs/world/GridCLIP-World-Pretrained.yaml with those weights, trained on the
   base classes (rare annotations removed: the open-vocabulary protocol) and evaluated on val with all
   classes (Detectron2's LVISEvaluator; paper-style table);
4. ``train_random_init``: configs/GridCLIP-Tiny-Synthetic.yaml (same world, same schedule, random-init
   CLIPs with trainable BN), read from its cache ($GRIDCLIP_CACHE/embedded_default) when the same
   settings ran before;
5. ``visualise``: ground truth | detections of val images holding novel (rare) categories, novel
   detections listed, into OUTPUT_DIR/vis/.

    python tools/run_embedded_default.py [--output-dir DIR] [--num-vis 8] [--opts KEY VALUE ...]

``--opts`` apply to both runs (e.g. a shorter schedule). ``OUTPUT_DIR/summary.json`` holds
``pretrained`` and ``random_init`` ({AP, APr, APc, APf, ...}), ``zero_shot_top1`` ({backbone_clip,
teacher_clip}) and ``timings_s`` ({phase: seconds}).
"""
import argparse
import hashlib
import json
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
from gridclip.data.datasets import dataset_root
from gridclip.data.world import DEFAULT_GENERATOR_ARGS, ensure_synthetic_lvis
from gridclip.data.world.pretraining import BACKBONE_CLIP, TEACHER_CLIP, ensure_world_clips
from gridclip.engine.trainer import GridCLIPTrainer
from gridclip.evaluation import format_paper_table
from gridclip.modeling.text_embeddings import default_cache_dir
from gridclip.predictor import GridCLIPPredictor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_net  # noqa: E402  (tools/train_net.py: config loading, dataset registration, training)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED_CONFIG = os.path.join(REPO_ROOT, "configs", "world", "GridCLIP-World-Pretrained.yaml")
RANDOM_INIT_CONFIG = os.path.join(REPO_ROOT, "configs", "GridCLIP-Tiny-Synthetic.yaml")
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
_RANDOM_CACHE_VERSION = 1

logger = logging.getLogger("gridclip.embedded_default")


def get_parser():
    parser = argparse.ArgumentParser(description="Train + evaluate + visualise GridCLIP's embedded default on CPU")
    parser.add_argument("--config-file", default=PRETRAINED_CONFIG, metavar="FILE", help="the pretrained run's config")
    parser.add_argument("--random-init-config-file", default=RANDOM_INIT_CONFIG, metavar="FILE")
    parser.add_argument("--output-dir", default="", help="overrides the config's OUTPUT_DIR")
    parser.add_argument("--num-vis", type=int, default=8, help="number of val images to visualise")
    parser.add_argument("--vis-threshold", type=float, default=0.3, help="score threshold of drawn detections")
    parser.add_argument("--skip-random-init", action="store_true", help="do not train/read the random-init run")
    parser.add_argument("--no-random-init-cache", action="store_true", help="retrain the random-init run")
    parser.add_argument("--corpus-images", type=int, default=None,
                        help="caption-corpus size of the CLIP pretraining (default: tools/pretrain_clip.py's)")
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help="CLIP pretraining steps of each mini-CLIP (default: tools/pretrain_clip.py's)")
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


class PhaseTimer:
    """Times named phases; prints each as it ends."""

    def __init__(self):
        self.seconds = {}

    def __call__(self, name):
        timer = self

        class _Phase:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = round(time.perf_counter() - self.start, 1)
                if exc[0] is None:
                    print(f"[phase] {name}: {timer.seconds[name]:.1f} s", flush=True)

        return _Phase()


def train_args(config_file, opts):
    return default_argument_parser().parse_args(["--config-file", config_file] + list(opts))


def train_and_evaluate(config_file, opts):
    """Train ``config_file`` + ``opts`` with GridCLIPTrainer; returns (cfg, LVIS results of the test set)."""
    cfg = train_net.setup(train_args(config_file, opts))  # default_setup: logging, OUTPUT_DIR, config dump, seed
    trainer = GridCLIPTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    # DefaultTrainer's final EvalHook stores the results of the evaluation at the end of training.
    results = getattr(trainer, "_last_eval_results", None)
    if not results:
        raise SystemExit("Training finished without evaluation results (is DATASETS.TEST empty?).")
    dataset_name = cfg.DATASETS.TEST[0]
    return cfg, results.get(dataset_name, results).get("bbox", results.get(dataset_name, results))


def _metrics(results):
    return {k: round(float(results[k]), 3) for k in SUMMARY_KEYS if k in results}


def random_init_cache_path(config_file, opts, data_json):
    """Cache file of the random-init run: keyed by its full config and the generated dataset's arguments."""
    cfg = train_net.load_config(train_args(config_file, opts))
    cfg.OUTPUT_DIR = ""
    with open(data_json) as f:
        generator = json.load(f)["info"]["generator"]
    key = hashlib.sha256(
        json.dumps([_RANDOM_CACHE_VERSION, cfg.dump(), generator], sort_keys=True).encode()
    ).hexdigest()[:16]
    return os.path.join(default_cache_dir(cfg.MODEL.GRIDCLIP.EMBEDDINGS_CACHE_DIR), "embedded_default", f"random_init-{key}.json")


def novel_first(dataset_dicts, metadata):
    """Val records ordered so that images holding rare (novel) categories come first."""
    frequencies = metadata.get("class_frequencies", None) or ["c"] * len(metadata.thing_classes)
    def num_novel(record):
        return sum(frequencies[a["category_id"]] == "r" for a in record.get("annotations", []))
    return sorted(dataset_dicts, key=lambda r: -num_novel(r))


def visualize(cfg, config_file, opts, weights, output_dir, num_images, threshold):
    """
    Side-by-side ground truth | detections of ``num_images`` val images (those with novel categories
    first). Returns (written paths, {image: novel class names detected}).
    """
    dataset_name = cfg.DATASETS.TEST[0]
    predictor = GridCLIPPredictor(
        config_file, weights=weights, opts=list(opts) + ["OUTPUT_DIR", cfg.OUTPUT_DIR],
        device=cfg.MODEL.DEVICE, confidence_threshold=threshold,
    )
    metadata = MetadataCatalog.get(dataset_name)
    predictor.set_vocabulary(list(metadata.thing_classes))
    novel_names = {n for n, f in zip(metadata.thing_classes, metadata.class_frequencies) if f == "r"}
    os.makedirs(output_dir, exist_ok=True)
    dataset_dicts = novel_first(DatasetCatalog.get(dataset_name), metadata)[:num_images]
    results = predictor.predict([d["file_name"] for d in dataset_dicts], batch_size=8)
    written, novel_found = [], {}
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
        name = os.path.basename(record["file_name"]).rsplit(".", 1)[0]
        path = os.path.join(output_dir, name + ".png")
        cv2.imwrite(path, np.concatenate([truth, separator, predicted], axis=1)[:, :, ::-1])
        written.append(path)
        found = sorted({n for n in detections.class_names if n in novel_names})
        novel_found[name] = found
        logger.info("%s: %s%s", name, ", ".join(detections.class_names) or "-",
                    f"  [novel: {', '.join(found)}]" if found else "")
    return written, novel_found


def side_by_side(pretrained, random_init):
    keys = ("AP", "AP50", "APr", "APc", "APf")
    lines = ["| CLIPs | " + " | ".join(k.replace("APr", "AP_r").replace("APc", "AP_c").replace("APf", "AP_f") for k in keys) + " |",
             "|---|" + "---:|" * len(keys)]
    for name, row in (("pretrained (world)", pretrained), ("random init", random_init)):
        if row:
            lines.append(f"| {name} | " + " | ".join(f"{row.get(k, float('nan')):.1f}" for k in keys) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = get_parser().parse_args(argv)
    torch.set_num_threads(args.num_threads if args.num_threads > 0 else idle_cores())
    phase = PhaseTimer()
    base_cfg = train_net.load_config(train_args(args.config_file, args.opts))
    output_dir = args.output_dir or base_cfg.OUTPUT_DIR
    if os.path.isfile(os.path.join(output_dir, "summary.json")):
        logger.warning("%s exists from an earlier run; this run replaces its outputs.", output_dir)

    with phase("data"):
        paths = ensure_synthetic_lvis(os.path.join(dataset_root(), "synthetic_lvis"), **DEFAULT_GENERATOR_ARGS)
        train_net.register_generated_datasets(base_cfg, generate=False)
    with phase("pretrain_clip"):
        corpus_args = {} if args.corpus_images is None else {"num_images": args.corpus_images}
        steps = {} if args.pretrain_steps is None else {"steps": args.pretrain_steps}
        clips = ensure_world_clips((BACKBONE_CLIP, TEACHER_CLIP), corpus_args=corpus_args,
                                   train_args={BACKBONE_CLIP: steps, TEACHER_CLIP: steps})
    zero_shot = {
        key: (clips[name]["stats"] or {}).get("zero_shot", {}).get("top1")
        for key, name in (("backbone_clip", BACKBONE_CLIP), ("teacher_clip", TEACHER_CLIP))
    }
    weights_opts = [
        "MODEL.CLIP.PRETRAINED", clips[BACKBONE_CLIP]["path"],
        "MODEL.GRIDCLIP.TEACHER.PRETRAINED", clips[TEACHER_CLIP]["path"],
    ]
    pretrained_opts = list(args.opts) + weights_opts + ["OUTPUT_DIR", os.path.join(output_dir, "pretrained")]
    with phase("train_pretrained"):
        cfg, results = train_and_evaluate(args.config_file, pretrained_opts)
    pretrained = _metrics(results)
    table = format_paper_table(results, title=f"GridCLIP-Tiny-World (pretrained mini-CLIPs) on {cfg.DATASETS.TEST[0]}")

    random_init, random_source = None, None
    if not args.skip_random_init:
        random_opts = list(args.opts) + ["OUTPUT_DIR", os.path.join(output_dir, "random_init")]
        cache_path = random_init_cache_path(args.random_init_config_file, args.opts, paths["train_json"])
        with phase("train_random_init"):
            if os.path.isfile(cache_path) and not args.no_random_init_cache:
                with open(cache_path) as f:
                    random_init = json.load(f)
                random_source = f"cached run {cache_path}"
            else:
                _, random_results = train_and_evaluate(args.random_init_config_file, random_opts)
                random_init = _metrics(random_results)
                os.makedirs(os.path.dirname(cache_path), exist_ok=True)
                with open(cache_path, "w") as f:
                    json.dump(random_init, f)
                random_source = f"trained now (cached as {cache_path})"

    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    vis_dir = os.path.join(output_dir, "vis")
    with phase("visualise"):
        vis_paths, novel_found = (
            visualize(cfg, args.config_file, pretrained_opts, weights, vis_dir, args.num_vis, args.vis_threshold)
            if args.num_vis > 0 else ([], {})
        )
    summary = {
        "pretrained": pretrained,
        "random_init": random_init,
        "zero_shot_top1": zero_shot,
        "timings_s": dict(phase.seconds, total=round(time.perf_counter() - _START, 1)),
        "torch_threads": torch.get_num_threads(),
        "clip_weights": {BACKBONE_CLIP: clips[BACKBONE_CLIP]["path"], TEACHER_CLIP: clips[TEACHER_CLIP]["path"]},
        "random_init_source": random_source,
        "novel_categories_detected_in_vis": novel_found,
    }
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)

    print("\n" + table)
    print("\n" + side_by_side(pretrained, random_init))
    if random_source:
        print(f"(random init: {random_source})")
    print("Zero-shot top-1 over the 192 world names: " + ", ".join(
        f"{k} {100 * v:.1f} %" for k, v in zero_shot.items() if v is not None))
    print(f"Trained weights:       {weights}")
    print(f"Evaluation outputs:    {os.path.join(cfg.OUTPUT_DIR, 'inference', cfg.DATASETS.TEST[0])}")
    print(f"Visualisations:        {vis_dir} ({len(vis_paths)} images: ground truth | detections)")
    print(f"Summary:               {os.path.join(output_dir, 'summary.json')}")
    print("Phase times (s):       " + ", ".join(f"{k} {v:.1f}" for k, v in summary["timings_s"].items()))
    print(f"Total time:            {time.perf_counter() - _START:.1f} s ({torch.get_num_threads()} torch threads)")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
