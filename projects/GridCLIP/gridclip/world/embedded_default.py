"""
The embedded default (what ``make demo`` runs, through ``tools/run_embedded_default.py``): GridCLIP
trained and evaluated end to end on CPU in the generated world, with pretrained mini-CLIPs and, side
by side, random-init ones.

Phases (each one's time is printed and written to ``summary.json``):

1. ``data``: the world's long-tailed LVIS-format detection dataset under $DETECTRON2_DATASETS/world
   (default ./datasets/world), generated if missing or made with other generator arguments;
2. ``pretrain_clip``: the world's mini-CLIPs (GridCLIP-World-RN: backbone + text tower;
   GridCLIP-World-RN-Teacher: teacher), pretrained contrastively on the caption corpus if not cached
   ($GRIDCLIP_CACHE/world_clip, see :mod:`.pretraining`), both at once, one thread each;
3. ``train_random_init``, in a child process started as soon as the first (shorter) pretraining is
   done, on the core it frees: the random-init config (configs/GridCLIP-Tiny-Synthetic.yaml: same
   world, same schedule, random-init CLIPs with trainable BN), read from its cache
   ($GRIDCLIP_CACHE/embedded_default) when the same settings ran before;
4. ``train_pretrained``: the pretrained config (configs/world/GridCLIP-World-Pretrained.yaml) with those
   weights, trained on the base classes (rare annotations removed: the open-vocabulary protocol) and
   evaluated on val with all classes (Detectron2's LVISEvaluator; paper-style table); then
   ``wait_random_init``, the wait for 3;
5. ``visualise``: ground truth | detections of val images holding novel (rare) categories, novel
   detections listed, into OUTPUT_DIR/vis/.

Every job runs with a fixed number of torch threads (1 in the parallel phases, ``num_threads`` for
4), never chosen from the machine's load, so the same settings give the same numbers. An earlier run's
outputs are never overwritten: an explicit output folder must be empty or new; the config's default
OUTPUT_DIR, once filled (or claimed by a run started at the same time), becomes ``<OUTPUT_DIR>_run2``,
``_run3``, ...; a folder is claimed atomically (:func:`gridclip.run_lock.claim_dir`), never just checked.

``OUTPUT_DIR/summary.json`` holds ``pretrained`` and ``random_init`` ({AP, APr, APc, APf, ...}),
``zero_shot_top1`` ({backbone_clip, teacher_clip}), ``timings_s`` ({phase: seconds}) and ``naming_accuracy``
({pretrained, random_init: {base, novel, all}}: the share of val objects whose best-overlapping detection
above the visualisation threshold, one name per object as the pictures draw them, carries their name,
:mod:`gridclip.evaluation.naming`; ``pretrained_all_names``: the same with every class-wise NMS name).
"""
import itertools
import json
import os
import subprocess
import sys
import threading
import time

import torch

from ..evaluation import format_paper_table
from ..evaluation.naming import (
    DEFAULT_IOU_MIN, format_naming_accuracy, naming_accuracy_of_evaluation, naming_accuracy_values,
)
from ..file_io import atomic_write_json, atomic_write_text, digest_json, read_json
from ..modeling.clip_loading import model_config_identity
from ..modeling.text.cache import default_cache_dir
from ..run_lock import claim_dir
from ..tool_errors import ToolError, check_writable_dir
from .datasets import register_config_world_datasets, world_dataset_root
from .detection import DEFAULT_GENERATOR_ARGS, ensure_world_dataset
from ..pretrained import export_weights_folder
from .pretraining import BACKBONE_CLIP, TEACHER_CLIP, ensure_world_clips
from .training import load_run_config, lvis_metrics, train_and_evaluate
from .visualization import visualize_novel_detections

__all__ = [
    "run_embedded_default",
    "fresh_output_dir",
    "PhaseTimer",
    "RandomInitRun",
    "random_init_cache_path",
    "read_random_init_cache",
    "side_by_side",
]

_RANDOM_CACHE_VERSION = 4  # 2: trained with one torch thread (its numbers depend on it); 3: + naming accuracy; 4: one name per object
#: the pictures draw one name per object (class-agnostic NMS at this IoU over the shown detections), and
#: naming accuracy is measured on what they show (:mod:`gridclip.evaluation.naming`)
ONE_NAME_IOU = 0.5
_CHILD_MODULE = "gridclip.world.embedded_default"  # run with -m as the random-init child


def fresh_output_dir(output_dir, explicit):
    """
    The folder this run writes to, claimed for it (:func:`gridclip.run_lock.claim_dir`: atomically, so
    runs started together get distinct folders); an earlier run's outputs are never overwritten. An
    explicit output folder must be empty or new (ToolError otherwise); the config's default folder, when
    an earlier (or a parallel) run holds it, becomes the first free ``<folder>_run2``, ``<folder>_run3``, ...
    """
    if claim_dir(output_dir):
        return output_dir
    if explicit:
        raise ToolError(f"--output-dir {output_dir} is not empty (an earlier run's outputs are never overwritten): "
                        "choose a new folder or remove that one.")
    base = output_dir.rstrip(os.sep) or output_dir
    for k in itertools.count(2):
        candidate = f"{base}_run{k}"
        if claim_dir(candidate):
            print(f"[output] {output_dir} holds an earlier run (kept); this run writes to {candidate}", flush=True)
            return candidate


class PhaseTimer:
    """Times named phases (``with timer("name"): ...``); prints each as it ends; ``seconds`` holds them."""

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


def random_init_cache_path(config_file, opts, data_json, naming_threshold=None):
    """
    Cache file of the random-init run: keyed by its full config, the generated dataset's arguments and the
    settings of the naming accuracy it stores (score threshold, IoU).
    """
    cfg = load_run_config(config_file, opts)
    cfg.OUTPUT_DIR = ""
    generator = read_json(data_json, "world dataset annotations")["info"]["generator"]
    # the CLIP architectures too: a registered config edited in place leaves cfg.dump() unchanged
    architectures = [model_config_identity(name)
                     for name in (cfg.MODEL.CLIP.MODEL_NAME, cfg.MODEL.GRIDCLIP.TEACHER.MODEL_NAME)]
    naming = {"score_threshold": naming_threshold, "iou_min": DEFAULT_IOU_MIN, "one_name_iou": ONE_NAME_IOU}
    key = digest_json([_RANDOM_CACHE_VERSION, cfg.dump(), generator, architectures, naming], length=16)
    cache_dir = default_cache_dir(cfg.MODEL.GRIDCLIP.EMBEDDINGS_CACHE_DIR)
    return os.path.join(cache_dir, "embedded_default", f"random_init-{key}.json")


def read_random_init_cache(path):
    """
    The metrics cached at ``path`` ({metric: number} with at least "AP"), or None when there are none. A
    file that is unreadable, corrupt or not such a dict is never used: one warning naming it, and the
    run is trained again (its result then replaces the file).
    """
    if not os.path.isfile(path):
        return None
    try:
        result = read_json(path, "random-init cache")
        if not (isinstance(result, dict) and "AP" in result
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in result.values())):
            raise ValueError("it does not hold the run's metrics")
    except (ValueError, OSError) as e:
        print(f"[warning] random-init cache {path} cannot be used ({e}); training the random-init run again.",
              flush=True)
        return None
    return result


def side_by_side(pretrained, random_init, naming=None):
    """
    Markdown table: AP, AP50, AP_r, AP_c, AP_f of the pretrained and the random-init run; with ``naming``
    ({"pretrained" / "random_init": {"base", "novel"}} as in summary.json) their naming accuracy in %.
    """
    keys = ("AP", "AP50", "APr", "APc", "APf")
    groups = ("base", "novel") if naming else ()
    header = [k.replace("APr", "AP_r").replace("APc", "AP_c").replace("APf", "AP_f") for k in keys]
    header += [f"named {g} %" for g in groups]
    lines = ["| CLIPs | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for name, run, row in (("pretrained (world)", "pretrained", pretrained), ("random init", "random_init", random_init)):
        if row:
            named = (naming or {}).get(run) or {}
            cells = [f"{row.get(k, float('nan')):.1f}" for k in keys]
            cells += [f"{100 * named[g]:.1f}" if named.get(g) is not None else "-" for g in groups]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _train_random_init_child(result_json, config_file, opts):
    """The child process of :class:`RandomInitRun`: trains with one torch thread, writes its metrics."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    cfg, results = train_and_evaluate(config_file, opts)
    atomic_write_json(result_json, {"metrics": lvis_metrics(results), "seconds": round(time.perf_counter() - start, 1),
                                    "test_dataset": cfg.DATASETS.TEST[0]})
    return 0


class RandomInitRun:
    """
    The random-init run of the embedded default, trained in a child process (one torch thread) on the
    core the pretrained CLIPs leave free: :meth:`start` is called once the first CLIP is ready (the
    shorter pretraining, the backbone's), so it runs beside the rest of the teacher's pretraining and the
    pretrained run; its metrics are cached by :func:`random_init_cache_path`.
    """

    def __init__(self, config_file, opts, output_dir, data_json, use_cache=True, naming_threshold=None):
        self.naming_threshold = naming_threshold  # also store its naming accuracy at this score threshold
        self.cache_path = random_init_cache_path(config_file, opts, data_json, naming_threshold)
        self.result, self.source, self.process, self.seconds = None, None, None, 0.0
        self.result = read_random_init_cache(self.cache_path) if use_cache else None
        self.cached = self.result is not None
        if self.cached:
            self.source = f"cached run {self.cache_path}"
            return
        self.run_dir = os.path.join(output_dir, "random_init")
        self.result_json = os.path.join(self.run_dir, "random_init_metrics.json")
        self.log_path = os.path.join(self.run_dir, "console.log")
        self.cmd = [sys.executable, "-m", _CHILD_MODULE, self.result_json, config_file,
                    *opts, "OUTPUT_DIR", self.run_dir]
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
        record = read_json(self.result_json, "random-init metrics")
        self.result, self.seconds = record["metrics"], record["seconds"]
        if self.naming_threshold is not None:  # numbers beside the AP metrics: "naming_<group>"
            naming = naming_accuracy_of_evaluation(self.run_dir, record["test_dataset"],
                                                   score_threshold=self.naming_threshold,
                                                   one_name_per_object_iou=ONE_NAME_IOU)
            self.result.update({f"naming_{k}": round(v, 4) for k, v in naming_accuracy_values(naming).items()})
        try:
            os.makedirs(os.path.dirname(self.cache_path), exist_ok=True)
            atomic_write_json(self.cache_path, self.result)
            self.source = f"trained now (cached as {self.cache_path})"
        except OSError as e:  # an unwritable cache: the result is still good
            print(f"[warning] cannot write the random-init cache {self.cache_path} ({e.strerror or e}); "
                  "continuing uncached.", flush=True)
            self.source = "trained now (not cached: the cache folder cannot be written)"
        print(f"[phase] train_random_init: {self.seconds:.1f} s (in parallel)", flush=True)
        return self.result

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self._log.close()


def run_embedded_default(config_file, random_init_config_file, output_dir="", num_vis=8, vis_threshold=0.3,
                         skip_random_init=False, random_init_cache=True, corpus_images=None, pretrain_steps=None,
                         num_threads=1, opts=(), start_time=None):
    """
    Run the embedded default (the phases of the module docstring) and print its tables.

    Args:
        config_file (str): the pretrained run's config (configs/world/GridCLIP-World-Pretrained.yaml).
        random_init_config_file (str): the random-init run's config (configs/GridCLIP-Tiny-Synthetic.yaml).
        output_dir (str): overrides the config's OUTPUT_DIR (must then be empty or new).
        num_vis (int): val images to visualise (0: none); ``vis_threshold``: score of drawn detections.
        skip_random_init (bool): neither train nor read the random-init run.
        random_init_cache (bool): read the random-init run's metrics from its cache when there.
        corpus_images, pretrain_steps (int or None): CLIP pretraining overrides (None: the defaults).
        num_threads (int): torch threads of the pretrained run and the visualisation.
        opts (list[str]): config overrides for both runs.
        start_time (float): ``time.perf_counter()`` at the start of the command (the ``total`` timing).

    Returns:
        dict: the summary written to ``OUTPUT_DIR/summary.json``.
    """
    start_time = time.perf_counter() if start_time is None else start_time
    opts = list(opts)
    if num_threads < 1:
        raise ToolError(f"--num-threads must be at least 1, got {num_threads}.")
    threads = num_threads
    torch.set_num_threads(1)  # the parallel phases: one thread per job (the pretrained run gets `threads`)
    phase = PhaseTimer()
    base_cfg = load_run_config(config_file, opts)
    output_dir = fresh_output_dir(output_dir or base_cfg.OUTPUT_DIR, explicit=bool(output_dir))
    check_writable_dir(output_dir, "output folder")

    with phase("data"):
        paths = ensure_world_dataset(world_dataset_root(), **DEFAULT_GENERATOR_ARGS)
        register_config_world_datasets(base_cfg, generate=False)
    random_run = None if skip_random_init else RandomInitRun(
        random_init_config_file, opts, output_dir, paths["train_json"], use_cache=random_init_cache,
        naming_threshold=vis_threshold)

    def on_ready(name, entry):  # the first (shorter: the backbone's) pretraining frees a core; start() runs once
        if random_run is not None:
            random_run.start()

    try:
        with phase("pretrain_clip"):
            corpus_args = {} if corpus_images is None else {"num_images": corpus_images}
            steps = {} if pretrain_steps is None else {"steps": int(pretrain_steps)}
            clips = ensure_world_clips((BACKBONE_CLIP, TEACHER_CLIP), corpus_args=corpus_args,
                                       train_args={BACKBONE_CLIP: steps, TEACHER_CLIP: steps}, parallel=True,
                                       on_ready=on_ready)
        pretrained_opts = opts + [
            "MODEL.CLIP.PRETRAINED", clips[BACKBONE_CLIP]["path"],
            "MODEL.GRIDCLIP.TEACHER.PRETRAINED", clips[TEACHER_CLIP]["path"],
            "OUTPUT_DIR", os.path.join(output_dir, "pretrained"),
        ]
        torch.set_num_threads(threads)
        with phase("train_pretrained"):
            cfg, results = train_and_evaluate(config_file, pretrained_opts)
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
    pretrained = lvis_metrics(results)
    # Naming accuracy at the visualisation threshold: the pretrained run's from its evaluation's saved
    # detections; the random-init run's as stored with its metrics ("naming_<group>", kept out of its AP dict).
    naming_detail = naming_accuracy_of_evaluation(cfg.OUTPUT_DIR, cfg.DATASETS.TEST[0], score_threshold=vis_threshold,
                                                  one_name_per_object_iou=ONE_NAME_IOU)
    # the same detections before one name per object is kept (class-wise NMS only: several names per object)
    naming_all_names = naming_accuracy_of_evaluation(cfg.OUTPUT_DIR, cfg.DATASETS.TEST[0], score_threshold=vis_threshold)
    random_naming = None
    if random_init is not None:
        random_init = dict(random_init)
        random_naming = {k[len("naming_"):]: random_init.pop(k) for k in list(random_init) if k.startswith("naming_")}
    naming = {"score_threshold": vis_threshold, "iou_min": DEFAULT_IOU_MIN, "one_name_per_object_iou": ONE_NAME_IOU,
              "pretrained": naming_accuracy_values(naming_detail), "random_init": random_naming,
              "pretrained_counts": {g: naming_detail[g] for g in ("base", "novel", "all")},
              "pretrained_all_names": naming_accuracy_values(naming_all_names)}
    table = format_paper_table(results, title=f"GridCLIP-Tiny-World (pretrained mini-CLIPs) on {cfg.DATASETS.TEST[0]}")

    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    vis_dir = os.path.join(output_dir, "vis")
    with phase("visualise"):
        vis_paths, novel_found = (
            visualize_novel_detections(cfg, config_file, pretrained_opts, weights, vis_dir, num_vis, vis_threshold,
                                       one_name_iou=ONE_NAME_IOU)
            if num_vis > 0 else ([], {})
        )
    weights_folder = export_weights_folder(  # the trained model as a self-describing folder (gridclip.pretrained)
        os.path.join(cfg.OUTPUT_DIR, "config.yaml"), os.path.join(output_dir, "weights"),
        opts=["MODEL.WEIGHTS", weights], metrics={f"{k} ({cfg.DATASETS.TEST[0]})": v for k, v in pretrained.items()})
    timings = dict(phase.seconds, total=round(time.perf_counter() - start_time, 1))
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
        "weights_folder": weights_folder,
        "naming_accuracy": naming,
    }
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_text(os.path.join(output_dir, "summary.json"), json.dumps(summary, indent=1))

    print("\n" + table)
    print("\n" + side_by_side(pretrained, random_init, naming))
    if summary["random_init_source"]:
        print(f"(random init: {summary['random_init_source']})")
    print("Zero-shot top-1 over the 192 world names: " + ", ".join(
        f"{k} {100 * v:.1f} %" for k, v in zero_shot.items() if v is not None))
    print(f"Naming accuracy (val objects whose best-overlapping drawn detection - score >= {vis_threshold}, one name per "
          f"object - at IoU >= {DEFAULT_IOU_MIN} carries their name), pretrained: {format_naming_accuracy(naming_detail)}")
    print(f"  (every class-wise NMS name drawn, several per object: {format_naming_accuracy(naming_all_names)})")
    print(f"Trained weights:       {weights}")
    print(f"Weights folder:        {weights_folder} (GridCLIPPredictor.from_pretrained, tools/demo.py --weights-folder)")
    print(f"Evaluation outputs:    {os.path.join(cfg.OUTPUT_DIR, 'inference', cfg.DATASETS.TEST[0])}")
    print(f"Visualisations:        {vis_dir} ({len(vis_paths)} images: ground truth | detections)")
    print(f"Summary:               {os.path.join(output_dir, 'summary.json')}")
    print("Phase times (s):       " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"Total time:            {time.perf_counter() - start_time:.1f} s (pretrained run: {threads} torch threads; "
          "parallel phases: 1 per job)")
    return summary


if __name__ == "__main__":
    # The random-init child of RandomInitRun: RESULT_JSON CONFIG_FILE [KEY VALUE ...]
    sys.exit(_train_random_init_child(sys.argv[1], sys.argv[2], sys.argv[3:]))
