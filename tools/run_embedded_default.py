#!/usr/bin/env python
"""
The embedded default (what ``make demo`` runs): GridCLIP trained and evaluated end to end on CPU in
the generated vision-language world, with pretrained mini-CLIPs and, side by side, random-init ones.

Phases (each one's time is printed and written to ``summary.json``):

1. ``data``: the long-tailed LVIS-format detection dataset under $DETECTRON2_DATASETS/synthetic_lvis
   (default ./datasets), generated if missing or made with other generator arguments;
2. ``pretrain_clip``: the world's mini-CLIPs (GridCLIP-World-RN: backbone + text tower;
   GridCLIP-World-ViT: teacher), pretrained contrastively on the caption corpus if not cached
   ($GRIDCLIP_CACHE/world_clip, see tools/pretrain_clip.py), both at once, one thread each;
3. ``train_random_init``, in a child process started as soon as the (shorter) teacher pretraining is
   done, on the core it frees: configs/GridCLIP-Tiny-Synthetic.yaml (same world, same schedule,
   random-init CLIPs with trainable BN), read from its cache ($GRIDCLIP_CACHE/embedded_default) when
   the same settings ran before;
4. ``train_pretrained``: configs/world/GridCLIP-World-Pretrained.yaml with those weights, trained on the
   base classes (rare annotations removed: the open-vocabulary protocol) and evaluated on val with all
   classes (Detectron2's LVISEvaluator; paper-style table); then ``wait_random_init``, the wait for 3;
5. ``visualise``: ground truth | detections of val images holding novel (rare) categories, novel
   detections listed, into OUTPUT_DIR/vis/.

Every job runs with a fixed number of torch threads (1 in the parallel phases, ``--num-threads`` for
4), never chosen from the machine's load, so the same settings give the same numbers. An earlier run's
outputs are never overwritten: an explicit ``--output-dir`` must be empty or new; the config's default
OUTPUT_DIR, once filled, becomes ``<OUTPUT_DIR>_run2``, ``_run3``, ...

    python tools/run_embedded_default.py [--output-dir DIR] [--num-vis 8] [--opts KEY VALUE ...]

``--opts`` apply to both runs (e.g. a shorter schedule). ``OUTPUT_DIR/summary.json`` holds
``pretrained`` and ``random_init`` ({AP, APr, APc, APf, ...}), ``zero_shot_top1`` ({backbone_clip,
teacher_clip}) and ``timings_s`` ({phase: seconds}).
"""
import argparse
import hashlib
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time

_START = time.perf_counter()

import gridclip  # first: applies the Detectron2 compatibility fixes before detectron2 is imported
import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.utils.visualizer import ColorMode, Visualizer
from gridclip.tool_errors import ToolError, check_writable_dir, run_tool
from gridclip.data.datasets import dataset_root
from gridclip.data.world import DEFAULT_GENERATOR_ARGS, ensure_synthetic_lvis
from gridclip.data.world.pretraining import BACKBONE_CLIP, TEACHER_CLIP, ensure_world_clips
from gridclip.engine.defaults import load_config, setup
from gridclip.engine.trainer import GridCLIPTrainer, register_generated_datasets
from gridclip.evaluation import format_paper_table
from gridclip.modeling.clip_loading import model_config_identity
from gridclip.modeling.text_embeddings import default_cache_dir
from gridclip.predictor import GridCLIPPredictor


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED_CONFIG = os.path.join(REPO_ROOT, "configs", "world", "GridCLIP-World-Pretrained.yaml")
RANDOM_INIT_CONFIG = os.path.join(REPO_ROOT, "configs", "GridCLIP-Tiny-Synthetic.yaml")
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
_RANDOM_CACHE_VERSION = 2  # 2: trained with one torch thread (its numbers depend on it)

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
        "--num-threads", type=int, default=1,
        help="torch threads of the pretrained detector's training and of the visualisation (default 1). "
        "Measured on the 2-core machine: its training step takes 0.17 s with 1 thread and 0.13-0.16 s with 2 "
        "when idle, but 2 threads are many times slower when other jobs keep a core busy. The parallel phases "
        "(both CLIP pretrainings, the random-init run) always use one thread per job. Never chosen from the "
        "load: the same settings give the same numbers.",
    )
    parser.add_argument("--random-init-child", default="", metavar="RESULT_JSON", help=argparse.SUPPRESS)
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def _occupied(path):
    return os.path.exists(path) and (not os.path.isdir(path) or bool(os.listdir(path)))


def fresh_output_dir(output_dir, explicit):
    """
    The folder this run writes to; an earlier run's outputs are never overwritten. An explicit
    ``--output-dir`` must be empty or new (ToolError otherwise); the config's default folder, when an
    earlier run filled it, becomes the first free ``<folder>_run2``, ``<folder>_run3``, ...
    """
    if not _occupied(output_dir):
        return output_dir
    if explicit:
        raise ToolError(f"--output-dir {output_dir} is not empty (an earlier run's outputs are never overwritten): "
                        "choose a new folder or remove that one.")
    base = output_dir.rstrip(os.sep) or output_dir
    for k in itertools.count(2):
        candidate = f"{base}_run{k}"
        if not _occupied(candidate):
            print(f"[output] {output_dir} holds an earlier run (kept); this run writes to {candidate}", flush=True)
            return candidate


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


def train_and_evaluate_all(config_file, opts):
    """
    Train ``config_file`` + ``opts`` with GridCLIPTrainer; returns (cfg, {test dataset name: its LVIS
    bbox results}) for every dataset of ``cfg.DATASETS.TEST``, each evaluated with its own vocabulary.
    """
    cfg = setup(train_args(config_file, opts))  # default_setup: logging, OUTPUT_DIR, config dump, seed
    trainer = GridCLIPTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    # DefaultTrainer's final EvalHook stores the results of the evaluation at the end of training.
    results = getattr(trainer, "_last_eval_results", None)
    if not results:
        raise SystemExit("Training finished without evaluation results (is DATASETS.TEST empty?).")
    if len(cfg.DATASETS.TEST) == 1 and cfg.DATASETS.TEST[0] not in results:  # one dataset: not keyed by name
        results = {cfg.DATASETS.TEST[0]: results}
    return cfg, {name: results[name].get("bbox", results[name]) for name in cfg.DATASETS.TEST}


def train_and_evaluate(config_file, opts):
    """Train ``config_file`` + ``opts`` with GridCLIPTrainer; returns (cfg, LVIS results of the first test set)."""
    cfg, results = train_and_evaluate_all(config_file, opts)
    return cfg, results[cfg.DATASETS.TEST[0]]


def _metrics(results):
    return {k: round(float(results[k]), 3) for k in SUMMARY_KEYS if k in results}


def random_init_cache_path(config_file, opts, data_json):
    """Cache file of the random-init run: keyed by its full config and the generated dataset's arguments."""
    cfg = load_config(train_args(config_file, opts))
    cfg.OUTPUT_DIR = ""
    with open(data_json) as f:
        generator = json.load(f)["info"]["generator"]
    # the CLIP architectures too: a registered config edited in place leaves cfg.dump() unchanged
    architectures = [model_config_identity(name)
                     for name in (cfg.MODEL.CLIP.MODEL_NAME, cfg.MODEL.GRIDCLIP.TEACHER.MODEL_NAME)]
    key = hashlib.sha256(
        json.dumps([_RANDOM_CACHE_VERSION, cfg.dump(), generator, architectures], sort_keys=True).encode()
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


def _train_random_init_child(args):
    """The hidden ``--random-init-child`` mode: the random-init run in its own process (one torch thread)."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    _, results = train_and_evaluate(args.random_init_config_file, args.opts)
    tmp = args.random_init_child + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"metrics": _metrics(results), "seconds": round(time.perf_counter() - start, 1)}, f)
    os.replace(tmp, args.random_init_child)
    return {}


class RandomInitRun:
    """
    The random-init run of the embedded default, trained in a child process (one torch thread) on the
    core the pretrained CLIPs leave free: :meth:`start` is called once the teacher CLIP is ready (the
    shorter pretraining), so it runs beside the rest of the backbone CLIP's pretraining and the pretrained
    run; its metrics are cached by :func:`random_init_cache_path`.
    """

    def __init__(self, args, output_dir, data_json):
        self.cache_path = random_init_cache_path(args.random_init_config_file, args.opts, data_json)
        self.result, self.source, self.process, self.seconds = None, None, None, 0.0
        self.cached = os.path.isfile(self.cache_path) and not args.no_random_init_cache
        if self.cached:
            with open(self.cache_path) as f:
                self.result = json.load(f)
            self.source = f"cached run {self.cache_path}"
            return
        self.run_dir = os.path.join(output_dir, "random_init")
        self.result_json = os.path.join(self.run_dir, "random_init_metrics.json")
        self.log_path = os.path.join(self.run_dir, "console.log")
        self.cmd = [sys.executable, os.path.abspath(__file__), "--random-init-child", self.result_json,
                    "--random-init-config-file", args.random_init_config_file,
                    "--opts", *args.opts, "OUTPUT_DIR", self.run_dir]
        self._lock = threading.Lock()

    def start(self):
        """Launch the child process (once; nothing to do when the result is cached)."""
        if self.cached:
            return
        with self._lock:
            if self.process is not None:
                return
            os.makedirs(self.run_dir, exist_ok=True)
            env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            self._log = open(self.log_path, "w")
            self.process = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        print(f"[phase] train_random_init: started in parallel (log: {self.log_path})", flush=True)

    def wait(self):
        """Block until the run is done; returns its metrics (ToolError naming its log if it failed)."""
        if self.cached:
            return self.result
        self.start()
        returncode = self.process.wait()
        self._log.close()
        self.process = None
        if returncode != 0 or not os.path.isfile(self.result_json):
            with open(self.log_path) as f:
                lines = [line.strip() for line in f if line.strip()]
            last = lines[-1] if lines else "no output"
            raise ToolError(f"the random-init run failed (exit {returncode}): {last} (full log: {self.log_path})")
        with open(self.result_json) as f:
            record = json.load(f)
        self.result, self.seconds = record["metrics"], record["seconds"]
        os.makedirs(os.path.dirname(self.cache_path), exist_ok=True)
        with open(self.cache_path, "w") as f:
            json.dump(self.result, f)
        self.source = f"trained now (cached as {self.cache_path})"
        print(f"[phase] train_random_init: {self.seconds:.1f} s (in parallel)", flush=True)
        return self.result

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self._log.close()


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.random_init_child:
        return _train_random_init_child(args)
    if args.num_threads < 1:
        raise ToolError(f"--num-threads must be at least 1, got {args.num_threads}.")
    threads = args.num_threads
    torch.set_num_threads(1)  # the parallel phases: one thread per job (the pretrained run gets `threads`)
    phase = PhaseTimer()
    base_cfg = load_config(train_args(args.config_file, args.opts))
    output_dir = fresh_output_dir(args.output_dir or base_cfg.OUTPUT_DIR, explicit=bool(args.output_dir))
    check_writable_dir(output_dir, "output folder")

    with phase("data"):
        paths = ensure_synthetic_lvis(os.path.join(dataset_root(), "synthetic_lvis"), **DEFAULT_GENERATOR_ARGS)
        register_generated_datasets(base_cfg, generate=False)
    random_run = None if args.skip_random_init else RandomInitRun(args, output_dir, paths["train_json"])

    def on_ready(name, entry):  # the teacher CLIP, the shorter pretraining, frees a core first
        if name == TEACHER_CLIP and random_run is not None:
            random_run.start()

    try:
        with phase("pretrain_clip"):
            corpus_args = {} if args.corpus_images is None else {"num_images": args.corpus_images}
            steps = {} if args.pretrain_steps is None else {"steps": args.pretrain_steps}
            clips = ensure_world_clips((BACKBONE_CLIP, TEACHER_CLIP), corpus_args=corpus_args,
                                       train_args={BACKBONE_CLIP: steps, TEACHER_CLIP: steps}, parallel=True,
                                       on_ready=on_ready)
        pretrained_opts = list(args.opts) + [
            "MODEL.CLIP.PRETRAINED", clips[BACKBONE_CLIP]["path"],
            "MODEL.GRIDCLIP.TEACHER.PRETRAINED", clips[TEACHER_CLIP]["path"],
            "OUTPUT_DIR", os.path.join(output_dir, "pretrained"),
        ]
        torch.set_num_threads(threads)
        with phase("train_pretrained"):
            cfg, results = train_and_evaluate(args.config_file, pretrained_opts)
        random_init = None
        if random_run is not None:
            with phase("wait_random_init"):
                random_init = random_run.wait()
    finally:
        if random_run is not None:
            random_run.stop()
    zero_shot = {
        key: (clips[name]["stats"] or {}).get("zero_shot", {}).get("top1")
        for key, name in (("backbone_clip", BACKBONE_CLIP), ("teacher_clip", TEACHER_CLIP))
    }
    pretrained = _metrics(results)
    table = format_paper_table(results, title=f"GridCLIP-Tiny-World (pretrained mini-CLIPs) on {cfg.DATASETS.TEST[0]}")

    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    vis_dir = os.path.join(output_dir, "vis")
    with phase("visualise"):
        vis_paths, novel_found = (
            visualize(cfg, args.config_file, pretrained_opts, weights, vis_dir, args.num_vis, args.vis_threshold)
            if args.num_vis > 0 else ([], {})
        )
    timings = dict(phase.seconds, total=round(time.perf_counter() - _START, 1))
    if random_run is not None:
        timings["train_random_init"] = random_run.seconds  # 0 when cached; overlaps pretrain_clip and train_pretrained
    summary = {
        "pretrained": pretrained,
        "random_init": random_init,
        "zero_shot_top1": zero_shot,
        "timings_s": timings,
        "torch_threads": {"pretrained_run": threads, "parallel_phases": 1},
        "clip_weights": {BACKBONE_CLIP: clips[BACKBONE_CLIP]["path"], TEACHER_CLIP: clips[TEACHER_CLIP]["path"]},
        "random_init_source": random_run.source if random_run is not None else None,
        "novel_categories_detected_in_vis": novel_found,
    }
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)

    print("\n" + table)
    print("\n" + side_by_side(pretrained, random_init))
    if summary["random_init_source"]:
        print(f"(random init: {summary['random_init_source']})")
    print("Zero-shot top-1 over the 192 world names: " + ", ".join(
        f"{k} {100 * v:.1f} %" for k, v in zero_shot.items() if v is not None))
    print(f"Trained weights:       {weights}")
    print(f"Evaluation outputs:    {os.path.join(cfg.OUTPUT_DIR, 'inference', cfg.DATASETS.TEST[0])}")
    print(f"Visualisations:        {vis_dir} ({len(vis_paths)} images: ground truth | detections)")
    print(f"Summary:               {os.path.join(output_dir, 'summary.json')}")
    print("Phase times (s):       " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"Total time:            {time.perf_counter() - _START:.1f} s (pretrained run: {threads} torch threads; "
          "parallel phases: 1 per job)")
    return summary


def _cli(argv):
    main(argv)  # returns the summary; the exit status is 0
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(_cli, sys.argv[1:], prog="run_embedded_default.py"))
