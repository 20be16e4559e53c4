"""
The paper's ablations (Table 4's CLIP rows, Table 5) in the generated world, with the world's
pretrained mini-CLIPs, several seeds per row; mean ± std per metric beside the paper's numbers and
Fig. 3 (AP over categories sorted by training frequency) per table. ``tools/run_ablations.py`` is the
command line.

Every training run is the base config (configs/world/GridCLIP-World-Pretrained.yaml) plus its switches,
trained on the base classes (rare annotations removed) without multi-scale or crop, as the paper's
ablations. Runs are tested on the world's large evaluation split (``test_split`` :data:`.evaluation_split.EVAL_SPLIT`,
1,200 images: the 120-image val split of ``make demo`` cannot resolve a 2-point AP_r difference; docs/WORLD.md
"Statistical power"), or on the val split (``test_split="val"``). A table row is one run read under one protocol:

- Table 4, closed set (:data:`CLOSED`): the test split with the base classes (``world_v1_val_large_base``):
  ``T4-wo-align`` (plain FCOS classifier, no image head), ``T4-R50star-wo-align`` (no attention pool),
  ``T4-grid-align``, ``T4-image-align``, ``T4-both`` (GridCLIP);
- Table 5, open set (:data:`OPEN`): the test split with all classes (``world_v1_val_large``): ``T5-grid-align``, ``T5-both`` — the
  same two trainings as T4-grid-align / T4-both ("two models from Table 4", paper §4.3), each
  evaluated once per protocol. So the 7 rows are 5 trainings per seed.
- opt-in, when the config has MODEL.GRIDCLIP.TEACHER.INPUT: ``T5-both-letterbox`` /
  ``T5-both-center-crop`` on a world of 4:3 images (``world_wide``), where CLIP's centre crop drops
  part of each image (on the default square images both views are identical);
- opt-in, what decides Table 5 (:data:`EVIDENCE_ROWS`, each against ``T5-grid-align``):
  ``T5-both-paper-strength`` (the image loss at the paper's per-image strength at any embedding size,
  MODEL.GRIDCLIP.IMAGE_LOSS_REFERENCE_DIM 512), ``T5-both-vit-teacher`` (the ViT teacher of the paper's
  main row instead of the default RN teacher) and ``T5-both-self-teacher`` (the backbone's own CLIP as
  teacher: a teacher that knows no more than its student) and ``T5-both-crops-teacher`` (the default
  teacher also embedding a 2 × 2 grid of crops at its own 64 px, MODEL.GRIDCLIP.TEACHER.CROPS 2: the
  teacher view that ranks a training image's categories better than the student's z̄).

Each training run is a separate process (``python -m gridclip.world.ablations``, ``jobs`` at a time,
each with cores / jobs torch threads) writing ``<output>/<run>/seed<k>/run_record.json`` (the metrics of
each test set and the key of its settings, :func:`settings_key`); a run/seed whose metrics exist with the
same settings is not rerun, one made with other settings (other ``--opts``, another config or world) is
refused (:class:`StaleRunError`) before any training: never reused. :func:`summarize` writes
``<output>/ablations.md`` / ``ablations.json`` and ``<output>/fig3_<table>.png``. Beside mean ± std, each
row with a reference (:data:`REFERENCES`: Table 4's rows against "w/o align", Table 5's "both" against
"grid-only") is reported as a paired difference over the seeds both have, with its per-seed values and
a Student-t 95 % CI (:mod:`gridclip.evaluation.paired_stats`): resolved, or inside the noise.
"""
import os
import subprocess
import sys
import time

from ..file_io import atomic_write_json, atomic_write_text, digest_json, read_json
from .datasets import WORLD_DATASET_NAME, register_world_datasets, world_dataset_root
from .detection import DEFAULT_GENERATOR_ARGS, ensure_world_dataset
from .evaluation_split import EVAL_SPLIT, EVAL_SPLIT_IMAGES, ensure_eval_split
from .pretraining import BACKBONE_CLIP, TEACHER_CLIP, TEACHER_INPUT_SIZE, VIT_TEACHER_CLIP, ensure_world_clips

__all__ = ["StaleRunError", "run_settings", "settings_key", "RUNS", "ROWS", "TEACHER_INPUT_ROWS", "EVIDENCE_ROWS",
           "RUN_TEACHERS", "TEST_SPLITS", "all_rows", "describe_rows", "run_ablations", "summarize"]

METRICS = ("AP", "APr", "APc", "APf")
_OFF = ["MODEL.GRIDCLIP.GRID_ALIGN", "False", "MODEL.GRIDCLIP.IMAGE_ALIGN", "False"]
#: the two test protocols (the keys of a run's metrics): closed set = the test split with the base classes;
#: open set = the test split with all classes
CLOSED, OPEN = "val_base", "val"
#: the splits runs can be tested on: the large evaluation split (default) or make demo's val split
TEST_SPLITS = (EVAL_SPLIT, "val")
_CHILD_MODULE = "gridclip.world.ablations"  # run with -m for one training run
#: a finished run's record (its metrics per test set and the key of its settings), beside the training outputs
RECORD_FILE = "run_record.json"
#: where runs made before 2026-12-03 kept their record: the name of Detectron2's own training-curve file
#: (JSONWriter appends to it during training; the record replaced it at the end, and a run trained again
#: in that folder appended to the record). Read when no RECORD_FILE exists; never written.
_LEGACY_RECORD_FILE = "metrics.json"

#: training run -> (options over the base config, test sets it is evaluated on, world). Every run trains
#: on the base classes (rare annotations removed). Only grid-aligned models can name novel classes, so
#: only they are also evaluated open-set: Table 5 compares "two models from Table 4" (paper §4.3).
RUNS = {
    "wo-align": (_OFF, (CLOSED,), "square"),
    "R50star-wo-align": (_OFF + ["MODEL.CLIP.USE_MHSA", "False"], (CLOSED,), "square"),
    "grid-align": (["MODEL.GRIDCLIP.IMAGE_ALIGN", "False"], (CLOSED, OPEN), "square"),
    "image-align": (["MODEL.GRIDCLIP.GRID_ALIGN", "False"], (CLOSED,), "square"),
    "both": ([], (CLOSED, OPEN), "square"),
    "both-center-crop-wide": (["MODEL.GRIDCLIP.TEACHER.INPUT", "center_crop"], (OPEN,), "wide"),
    "both-letterbox-wide": (["MODEL.GRIDCLIP.TEACHER.INPUT", "letterbox"], (OPEN,), "wide"),
    "both-paper-strength": (["MODEL.GRIDCLIP.IMAGE_LOSS_REFERENCE_DIM", "512"], (OPEN,), "square"),
    "both-vit-teacher": ([], (OPEN,), "square"),
    "both-self-teacher": ([], (OPEN,), "square"),
    "both-crops-teacher": (["MODEL.GRIDCLIP.TEACHER.CROPS", "2"], (OPEN,), "square"),
}
#: training run -> the world CLIP it uses as teacher instead of the config's (its weights pretrained/cached as
#: the default ones; seen at :data:`TEACHER_INPUT_SIZE`): the ViT row, and the backbone's own CLIP
RUN_TEACHERS = {"both-vit-teacher": VIT_TEACHER_CLIP, "both-self-teacher": BACKBONE_CLIP}
#: table row -> (table, training run, test set, the paper's numbers {metric: value})
ROWS = {
    "T4-wo-align": ("T4", "wo-align", CLOSED, {"APc": 19.4, "APf": 29.7, "AP": 20.1}),
    "T4-R50star-wo-align": ("T4", "R50star-wo-align", CLOSED, {"APc": 20.2, "APf": 30.3, "AP": 20.7}),
    "T4-grid-align": ("T4", "grid-align", CLOSED, {"APc": 21.7, "APf": 30.0, "AP": 21.2}),
    "T4-image-align": ("T4", "image-align", CLOSED, {"APc": 19.4, "APf": 30.1, "AP": 20.2}),
    "T4-both": ("T4", "both", CLOSED, {"APc": 21.2, "APf": 30.0, "AP": 21.0}),
    "T5-grid-align": ("T5", "grid-align", OPEN, {"APr": 10.1, "APc": 21.0, "APf": 29.6, "AP": 22.5}),
    "T5-both": ("T5", "both", OPEN, {"APr": 12.7, "APc": 20.6, "APf": 29.7, "AP": 22.8}),
}
#: not in the paper (the fidelity question of CLIP's centre crop): opt-in
TEACHER_INPUT_ROWS = {
    "T5-both-center-crop": ("teacher-input", "both-center-crop-wide", OPEN, {}),
    "T5-both-letterbox": ("teacher-input", "both-letterbox-wide", OPEN, {}),
}
#: opt-in rows that decide Table 5's image-level claim, each against T5-grid-align (the paper's numbers: none)
EVIDENCE_ROWS = {
    "T5-both-paper-strength": ("T5-evidence", "both-paper-strength", OPEN, {}),
    "T5-both-vit-teacher": ("T5-evidence", "both-vit-teacher", OPEN, {}),
    "T5-both-self-teacher": ("T5-evidence", "both-self-teacher", OPEN, {}),
    "T5-both-crops-teacher": ("T5-evidence", "both-crops-teacher", OPEN, {}),
}
#: version of :func:`settings_key` (bump when what a run's numbers depend on changes)
_SETTINGS_VERSION = 2  # 2: the test split is part of the key
#: config keys added after :data:`_SETTINGS_VERSION` 2, with the value that does what the config did before
#: the key existed: left out of the settings key at that value, so runs made before it was added are still
#: found (at another value it is in the key, as any setting)
_KEYS_ADDED_SINCE = {("MODEL", "GRIDCLIP", "TEACHER", "CROPS"): 0,
                     ("MODEL", "GRIDCLIP", "INFERENCE", "UNSEEN_CLASS_LOGIT_OFFSET"): 0.0}


class StaleRunError(ValueError):
    """A finished run's record was made with other settings than the ones asked for now."""


#: table row -> the row it is compared with, paired over seeds (row - reference)
REFERENCES = {
    "T4-R50star-wo-align": "T4-wo-align",
    "T4-grid-align": "T4-wo-align",
    "T4-image-align": "T4-wo-align",
    "T4-both": "T4-wo-align",
    "T5-both": "T5-grid-align",
    "T5-both-letterbox": "T5-both-center-crop",
    "T5-both-paper-strength": "T5-grid-align",
    "T5-both-vit-teacher": "T5-grid-align",
    "T5-both-self-teacher": "T5-grid-align",
    "T5-both-crops-teacher": "T5-grid-align",
}
#: the 4:3 world of the teacher-input rows (height, width)
WIDE_IMAGE_SIZE = (96, 128)


def _has_teacher_input_key():
    from ..config import get_gridclip_cfg

    return hasattr(get_gridclip_cfg().MODEL.GRIDCLIP.TEACHER, "INPUT")


def all_rows():
    """Every known row: the paper's (run by default) and, where the config has the key, teacher-input."""
    rows = dict(ROWS)
    if _has_teacher_input_key():
        rows.update(TEACHER_INPUT_ROWS)
    rows.update(EVIDENCE_ROWS)
    return rows


def describe_rows():
    """One line per known row: table, training run, test set, switches; opt-in rows marked."""
    lines = []
    for name, (table, run, test_set, _) in all_rows().items():
        default = "" if name in ROWS else "  (opt-in)"
        switches = list(RUNS[run][0]) + ([f"teacher {RUN_TEACHERS[run]}"] if run in RUN_TEACHERS else [])
        lines.append(f"{name:22s} {table:14s} run {run:22s} test {test_set:9s} "
                     f"{' '.join(switches) or '(base config)'}{default}")
    return lines


def prepare_world(world, need_teacher=True, teacher=None):
    """
    Generate/register the world's detection data ("square": ``world``, "wide": the 4:3 ``world_wide``)
    with its large evaluation split, and pretrain/load the mini-CLIPs.

    Args:
        teacher (str or None): a world CLIP to use as teacher instead of the config's (:data:`RUN_TEACHERS`).

    Returns:
        (dict, list[str]): the registered dataset names, and the config options loading the CLIP weights.
    """
    prefix = f"{WORLD_DATASET_NAME}_wide" if world == "wide" else WORLD_DATASET_NAME
    generator_args = dict(DEFAULT_GENERATOR_ARGS, image_size=WIDE_IMAGE_SIZE) if world == "wide" else DEFAULT_GENERATOR_ARGS
    root = world_dataset_root(prefix)
    ensure_world_dataset(root, **generator_args)
    ensure_eval_split(root)
    names = register_world_datasets(root, prefix=prefix)
    teacher_name = teacher or TEACHER_CLIP
    models = tuple(dict.fromkeys((BACKBONE_CLIP, teacher_name) if need_teacher else (BACKBONE_CLIP,)))
    clips = ensure_world_clips(models, progress=False, parallel=True)
    opts = ["MODEL.CLIP.PRETRAINED", clips[BACKBONE_CLIP]["path"]]
    if need_teacher:
        if teacher is not None:
            opts += ["MODEL.GRIDCLIP.TEACHER.MODEL_NAME", teacher,
                     "MODEL.GRIDCLIP.TEACHER.INPUT_SIZE", str(TEACHER_INPUT_SIZE)]
        opts += ["MODEL.GRIDCLIP.TEACHER.PRETRAINED", clips[teacher_name]["path"]]
    return names, opts


def _run_dir(output_dir, run, seed):
    return os.path.join(output_dir, run, f"seed{seed}")


def _test_dataset(names, protocol, test_split):
    """The registered dataset of ``protocol`` (:data:`CLOSED` / :data:`OPEN`) on ``test_split``."""
    if test_split not in TEST_SPLITS:
        raise ValueError(f"test split must be one of {TEST_SPLITS}, got {test_split!r}")
    return names[test_split + ("_base" if protocol == CLOSED else "")]


def run_settings(output_dir, config_file, run, seed, opts=(), prepared=None, test_split=EVAL_SPLIT, protocols=None):
    """
    Everything one (run, seed) trains with: the option list, its test sets, and the key of its settings.

    Args:
        prepared (dict or None): a memo of :func:`prepare_world` results {(world, need_teacher, teacher): result}.
        test_split (str): one of :data:`TEST_SPLITS`.
        protocols (Iterable[str] or None): evaluate only these of the run's protocols (the ones the requested
            rows read: each costs an inference pass over the test split); None: all of them. The settings key
            does not depend on it (it is the key of the run with all its protocols).

    Returns:
        (list[str], dict, str): the options over ``config_file`` (OUTPUT_DIR last), {test set key: dataset
        name}, and :func:`settings_key` of the resulting config.
    """
    run_opts, all_test_sets, world = RUNS[run]
    test_sets = [p for p in all_test_sets if protocols is None or p in protocols]
    if not test_sets:
        raise ValueError(f"run {run} has none of the protocols {list(protocols)}; its protocols: {list(all_test_sets)}")
    all_opts = list(run_opts) + list(opts)
    image_align = "True"
    for i in range(len(all_opts) - 1):
        if all_opts[i] == "MODEL.GRIDCLIP.IMAGE_ALIGN":
            image_align = all_opts[i + 1]
    need_teacher = image_align != "False"
    teacher = RUN_TEACHERS.get(run) if need_teacher else None
    if prepared is None:
        names, weight_opts = prepare_world(world, need_teacher=need_teacher, teacher=teacher)
    else:
        if (world, need_teacher, teacher) not in prepared:
            prepared[(world, need_teacher, teacher)] = prepare_world(world, need_teacher=need_teacher, teacher=teacher)
        names, weight_opts = prepared[(world, need_teacher, teacher)]
    out = _run_dir(output_dir, run, seed)
    every_dataset = {key: _test_dataset(names, key, test_split) for key in all_test_sets}

    def options(datasets):
        run_all = list(weight_opts) + list(run_opts) + ["DATASETS.TRAIN", f"('{names['train_base']}',)",
                                                        "DATASETS.TEST", repr(tuple(datasets.values()))]
        if world == "wide":
            h, w = WIDE_IMAGE_SIZE
            run_all += ["INPUT.MIN_SIZE_TRAIN", f"({h},)", "INPUT.MAX_SIZE_TRAIN", str(w),
                        "INPUT.MIN_SIZE_TEST", str(h), "INPUT.MAX_SIZE_TEST", str(w)]
        return run_all + list(opts) + ["SEED", str(seed), "OUTPUT_DIR", out]

    datasets = {key: every_dataset[key] for key in test_sets}
    return options(datasets), datasets, settings_key(config_file, options(every_dataset), world, test_split)


def settings_key(config_file, run_opts, world, test_split=EVAL_SPLIT):
    """
    A hash of the settings a training run's metrics depend on: its full config (``config_file`` +
    ``run_opts``, OUTPUT_DIR left out; CLIP weights files are named by paths that hash their training
    arguments), the generated world's arguments and the test split (with its size). Finished runs are
    reused only under the same key.
    """
    from .training import load_run_config

    cfg = load_run_config(config_file, run_opts)
    cfg.OUTPUT_DIR = ""
    for path, earlier_behaviour in _KEYS_ADDED_SINCE.items():
        node = cfg
        for name in path[:-1]:
            node = node[name]
        if node.get(path[-1]) == earlier_behaviour:
            del node[path[-1]]
    generator_args = dict(DEFAULT_GENERATOR_ARGS, image_size=WIDE_IMAGE_SIZE) if world == "wide" else DEFAULT_GENERATOR_ARGS
    split = [test_split, EVAL_SPLIT_IMAGES if test_split == EVAL_SPLIT else DEFAULT_GENERATOR_ARGS["num_val_images"]]
    return digest_json([_SETTINGS_VERSION, cfg.dump(), world, generator_args, split], length=16)


def single_run(output_dir, config_file, run, seed, opts=(), test_split=EVAL_SPLIT, protocols=None):
    """
    Train one run with one seed in this process, evaluate it on each of its test sets (``protocols``: only
    those); writes :data:`RECORD_FILE` (Detectron2's ``metrics.json`` training curve stays). A finished run
    of the same settings that lacks some of ``protocols`` and kept its ``model_final.pth`` is not trained
    again: the checkpoint is evaluated on what it lacks (outputs under ``<run>/seed<k>/evaluation_<protocols>/``)
    and the metrics are added to its record (``evaluation_seconds``: {protocols of one pass: seconds}).
    """
    from .training import evaluate_all, train_and_evaluate_all  # the engine: only the training process needs it

    run_all, datasets, key = run_settings(output_dir, config_file, run, seed, opts, test_split=test_split,
                                          protocols=protocols)
    out = _run_dir(output_dir, run, seed)
    earlier = _evaluable_run(output_dir, run, seed, key)
    if earlier is not None:
        missing = [name for name in datasets if name not in earlier["metrics"]]
        if not missing:
            return 0
        eval_opts, missing_sets, _ = run_settings(output_dir, config_file, run, seed, opts, test_split=test_split,
                                                  protocols=missing)
        eval_dir = os.path.join(out, "evaluation_" + "_".join(missing))
        eval_opts = eval_opts[:-2] + ["OUTPUT_DIR", eval_dir]  # run_settings puts OUTPUT_DIR last
        start = time.perf_counter()
        _, results = evaluate_all(config_file, eval_opts, os.path.join(out, "model_final.pth"))
        record = dict(earlier)
        record["evaluation_seconds"] = dict(record.get("evaluation_seconds", {}),
                                            **{",".join(missing): round(time.perf_counter() - start, 1)})
        record["test_datasets"] = dict(record.get("test_datasets", {}), **missing_sets)
        _add_metrics(record, missing_sets, results, eval_dir)
    else:
        start = time.perf_counter()
        _, results = train_and_evaluate_all(config_file, run_all)
        seconds = round(time.perf_counter() - start, 1)
        record = {"run": run, "seed": seed, "opts": run_all, "user_opts": list(opts), "settings_key": key,
                  "test_split": test_split, "test_datasets": datasets,
                  "train_eval_seconds": seconds, "metrics": {}, "per_category_ap": {}}
        _add_metrics(record, datasets, results, out)
    atomic_write_json(os.path.join(out, RECORD_FILE), record, indent=1)  # last: a run with a record is complete
    return 0


def _add_metrics(record, datasets, results, out):
    """Put the LVIS numbers of ``results`` {dataset name: results} for each test set of ``datasets``
    {test set key: dataset name} into ``record``, with the path of its per-category AP under ``out``."""
    for name, dataset_name in datasets.items():
        record["metrics"][name] = {k: float(v) for k, v in results[dataset_name].items() if isinstance(v, (int, float))}
        record["per_category_ap"][name] = os.path.join(out, "inference", dataset_name, "per_category_ap.json")


def _evaluable_run(output_dir, run, seed, key):
    """The record of a finished (run, seed) made with settings ``key`` whose model_final.pth is kept, or None
    (then the run is trained)."""
    try:
        record = _read_run(output_dir, run, seed, key)
    except StaleRunError:  # refused by the parent before launching; a child never reuses other settings
        return None
    return record if record is not None and _kept_checkpoint(output_dir, run, seed) else None


def _kept_checkpoint(output_dir, run, seed):
    """True when the (run, seed) folder holds the final checkpoint of its training."""
    return os.path.isfile(os.path.join(_run_dir(output_dir, run, seed), "model_final.pth"))


def _launch(output_dir, config_file, run, seed, threads, opts, test_split, protocols):
    out = _run_dir(output_dir, run, seed)
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, "-m", _CHILD_MODULE, run, str(seed), output_dir, config_file, test_split,
           ",".join(protocols), *opts]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log = open(os.path.join(out, "run.log"), "a")  # a finished run evaluated on another protocol keeps its log
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log


def _read_run(output_dir, run, seed, key=None):
    """
    The record of a finished (run, seed) (:data:`RECORD_FILE`, else a legacy record in ``metrics.json``), or
    None. With ``key``: a record made with other settings (another key, or none recorded) raises
    :class:`StaleRunError`, never counts as finished.
    """
    folder = _run_dir(output_dir, run, seed)
    path = os.path.join(folder, RECORD_FILE)
    if not os.path.isfile(path):
        return _read_legacy_run(os.path.join(folder, _LEGACY_RECORD_FILE), key)
    try:
        record = read_json(path, "ablation run record")
    except ValueError as e:  # damaged: not a finished run
        print(f"[ablations] warning: {e}; training {run} seed {seed} again.", flush=True)
        return None
    return _checked_record(path, record, key)


def _read_legacy_run(path, key):
    """A record of the runner's earlier versions in ``metrics.json``, or None: that name is Detectron2's
    training curve (one JSON object per line), which is no record."""
    if not os.path.isfile(path):
        return None
    try:
        record = read_json(path, "ablation run record")
    except ValueError:  # Detectron2's JSON lines (a run that never finished), or a record training appended to
        return None
    if not isinstance(record, dict) or "settings_key" not in record:
        return None
    return _checked_record(path, record, key)


def _checked_record(path, record, key):
    if key is not None and (not isinstance(record, dict) or record.get("settings_key") != key):
        made_with = record.get("user_opts", "unrecorded settings") if isinstance(record, dict) else "?"
        raise StaleRunError(
            f"{path} holds a finished run made with other settings (--opts {made_with}, settings key "
            f"{record.get('settings_key') if isinstance(record, dict) else None} vs {key} now): its numbers are "
            "not reused. Use another --output-dir, or delete that run folder to train it again."
        )
    return record


def _has_protocols(record, protocols):
    """True if a finished run's record has the metrics of every one of ``protocols`` (a run made for other rows
    that lacks one: its kept checkpoint is evaluated on it, or it is trained again; :func:`single_run`)."""
    return record is not None and all(p in record.get("metrics", {}) for p in protocols)


def _row_result(output_dir, row, seed, keys=None):
    """(metrics, per-category AP path) of a table row for one seed, or None when its run has not finished
    (with ``keys`` {(run, seed): settings key}: or was made with other settings)."""
    _, run, test_set, _ = all_rows()[row]
    try:
        record = _read_run(output_dir, run, seed, None if keys is None else keys.get((run, seed)))
    except StaleRunError:
        return None
    if record is None or test_set not in record["metrics"]:
        return None
    return record["metrics"][test_set], record["per_category_ap"][test_set]


def summarize(output_dir, rows, seeds, keys=None):
    """
    Mean ± std per row and metric over the finished seeds, beside the paper's numbers (with ``keys``
    {(run, seed): settings key}: only runs made with those settings).

    Writes ``output_dir/ablations.md``, ``ablations.json`` and Fig. 3 per table.

    Returns:
        (str, list[str]): the markdown table and the written figure paths.
    """
    import numpy as np

    summary, lines = {}, []
    lines.append("| table | row | seeds | " + " | ".join(f"{m} (world)" for m in METRICS) + " | paper |")
    lines.append("|---|---|---:|" + "---:|" * len(METRICS) + "---|")
    defs = all_rows()
    for row in rows:
        found = [(s, r) for s, r in ((s, _row_result(output_dir, row, s, keys)) for s in seeds) if r]
        if not found:
            continue
        table, run, test_set, paper = defs[row]
        entry = {"table": table, "run": run, "test_set": test_set, "seeds": [s for s, _ in found], "paper": paper}
        entry["per_seed"] = {s: dict(metrics) for s, (metrics, _) in found}
        cells = []
        for m in METRICS:
            values = [metrics[m] for _, (metrics, _) in found if m in metrics and metrics[m] >= 0]
            if values:
                entry[m] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}
                cells.append(f"{np.mean(values):.1f} ± {np.std(values):.1f}")
            else:
                cells.append("-")
        paper_cell = ", ".join(f"{k} {v}" for k, v in paper.items()) or "-"
        lines.append(f"| {table} | {row} | {len(found)} | " + " | ".join(cells) + f" | {paper_cell} |")
        summary[row] = entry
    lines += _paired_difference_table(summary)  # adds each row's "vs_reference" to the summary
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_json(os.path.join(output_dir, "ablations.json"), summary, indent=1)
    markdown = "\n".join(lines)
    atomic_write_text(os.path.join(output_dir, "ablations.md"), markdown + "\n")
    figures = _plot_fig3(output_dir, rows, seeds, keys)
    return markdown, figures


def _paired_difference_table(summary):
    """
    Markdown lines: each row of ``summary`` against its :data:`REFERENCES` row, per metric the paired
    difference over their common seeds with its 95 % CI and verdict, and the per-seed differences of the
    row's key metric (AP_r open set, AP closed set), and how many seeds a 95 % CI of +-1 point on that
    metric takes at the measured sd of its differences (:func:`seeds_for_half_width`: what it takes to
    resolve a 2-point effect). Stores them as ``summary[row]["vs_reference"]``.
    """
    from ..evaluation.paired_stats import format_paired_difference, paired_difference, seeds_for_half_width

    lines = []
    for row, entry in summary.items():
        reference = REFERENCES.get(row)
        if reference not in summary:
            continue
        key_metric = "APr" if entry["test_set"] == OPEN else "AP"
        paired = {}
        for m in METRICS:
            values, ref_values = ({s: v[m] for s, v in e["per_seed"].items() if v.get(m, -1) >= 0}
                                  for e in (entry, summary[reference]))
            if values and ref_values:
                paired[m] = paired_difference(values, ref_values)
        key = paired.get(key_metric)
        needed = None
        if key and key["sd"] is not None:
            try:
                needed = seeds_for_half_width(key["sd"], 1.0)
            except ValueError:  # an sd so large (a collapsed run) that no practical seed count reaches +-1
                pass
        entry["vs_reference"] = dict(reference=reference, seeds_for_half_width_1=needed, **paired)
        per_seed = ", ".join(f"s{s} {d:+.1f}" for s, d in zip(key["seeds"], key["differences"])) if key else "-"
        n = max((p["n"] for p in paired.values()), default=0)
        needed_cell = f"{needed} (sd {key['sd']:.2f})" if needed is not None else "-"
        lines.append(f"| {entry['table']} | {row} | {reference} | {n} | "
                     + " | ".join(format_paired_difference(paired.get(m)) for m in METRICS)
                     + f" | {needed_cell} | {per_seed} |")
    if not lines:
        return []
    return ["", "Paired differences row - reference over common seeds: mean [95 % CI, Student t with n-1 dof]; "
            "resolved when the CI excludes 0.", "",
            "| table | row | reference | seeds | " + " | ".join(f"Δ{m}" for m in METRICS)
            + " | seeds for a ±1 CI (key metric) | per-seed Δ (AP_r open set, AP closed) |",
            "|---|---|---|---:|" + "---|" * len(METRICS) + "---:|---|"] + lines


def _plot_fig3(output_dir, rows, seeds, keys=None):
    """Fig. 3 per table: AP over categories sorted by training frequency, one curve per row (first seed)."""
    from ..evaluation.plots import plot_ap_by_frequency

    defs, figures = all_rows(), []
    for table in sorted({defs[r][0] for r in rows}):
        runs, labels = [], []
        for row in rows:
            if defs[row][0] != table:
                continue
            for seed in seeds:
                result = _row_result(output_dir, row, seed, keys)
                if result and os.path.isfile(result[1]):
                    runs.append(result[1])
                    labels.append(f"{row} (seed {seed})")
                    break
        if runs:
            path = os.path.join(output_dir, f"fig3_{table}.png")
            plot_ap_by_frequency(runs, path, labels=labels, window=(-3, 3), title=f"{table} in the generated world")
            figures.append(path)
    return figures


def run_ablations(rows, seeds, output_dir, config_file, jobs=0, opts=(), test_split=EVAL_SPLIT):
    """
    Train every (run, seed) the ``rows`` need that has no metrics yet, ``jobs`` processes at a time
    (0: one per core), each with cores / jobs torch threads, each tested on ``test_split`` (one of
    :data:`TEST_SPLITS`) under the protocols the ``rows`` read of it; then print and write the summary.

    Returns:
        int: 0, or 1 when a training run failed (its log is named). ValueError for unknown rows, jobs < 0
        or an unknown test split.
    """
    defs = all_rows()
    rows = list(rows or ROWS)
    unknown = [r for r in rows if r not in defs]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; known: {list(defs)}")
    if jobs < 0:
        raise ValueError(f"--jobs must be 0 (one per core) or positive, got {jobs}")
    if test_split not in TEST_SPLITS:
        raise ValueError(f"--test-split must be one of {list(TEST_SPLITS)}, got {test_split!r}")
    # Prepare data + pretrained CLIPs once, before parallel runs (no race on the caches); CLIPs missing
    # from the cache are pretrained both at once, one torch thread each (as make demo does).
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    runs = list(dict.fromkeys(defs[r][1] for r in rows))  # each training run once, in row order
    # each run is evaluated only on the protocols the requested rows read (one inference pass each)
    protocols = {run: tuple(p for p in RUNS[run][1] if any(defs[r][1:3] == (run, p) for r in rows)) for run in runs}
    prepared = {}
    for world, teacher in sorted({(RUNS[run][2], RUN_TEACHERS.get(run) or "") for run in runs}):
        prepared[(world, True, teacher or None)] = prepare_world(world, teacher=teacher or None)
    # Finished runs count only when made with these settings (a mismatch is refused before any training).
    keys = {(run, s): run_settings(output_dir, config_file, run, s, opts, prepared, test_split)[2]
            for s in seeds for run in runs}
    todo, evaluate, only_evaluated = [], {}, 0
    for s in seeds:
        for run in runs:
            record = _read_run(output_dir, run, s, keys[(run, s)])
            if not _has_protocols(record, protocols[run]):
                # its checkpoint is evaluated on what the rows need (trained again when none was kept)
                todo.append((run, s))
                had = record["metrics"] if record else {}
                evaluate[(run, s)] = tuple(p for p in RUNS[run][1] if p in protocols[run] or p in had)
                only_evaluated += record is not None and _kept_checkpoint(output_dir, run, s)
    cores = os.cpu_count() or 1
    jobs = jobs or cores
    threads = max(1, cores // jobs)
    print(f"[ablations] {len(todo)} runs to do ({len(runs)} runs x {len(seeds)} seeds, "
          f"{len(runs) * len(seeds) - len(todo)} done before; {only_evaluated} of them finished runs whose kept "
          f"checkpoint is only evaluated on a protocol it lacks); {jobs} at a time, {threads} thread(s) each", flush=True)
    running, failed = [], []
    while todo or running:
        while todo and len(running) < jobs:
            run, seed = todo.pop(0)
            proc, log = _launch(output_dir, config_file, run, seed, threads, opts, test_split, evaluate[(run, seed)])
            running.append((run, seed, proc, log))
            print(f"[ablations] started {run} seed {seed}", flush=True)
        time.sleep(2)
        for item in list(running):
            run, seed, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                try:
                    record = _read_run(output_dir, run, seed, keys[(run, seed)])
                except StaleRunError:  # the child recorded other settings than planned: a bug, not a result
                    record = None
                if proc.returncode != 0 or not _has_protocols(record, protocols[run]):
                    failed.append((run, seed))
                    print(f"[ablations] FAILED {run} seed {seed}: see {log.name}", flush=True)
                else:
                    summary = "; ".join(f"{key}: " + ", ".join(f"{k} {m.get(k, -1):.1f}" for k in METRICS)
                                        for key, m in record["metrics"].items())
                    added = sum(record.get("evaluation_seconds", {}).values())
                    took = f"{record['train_eval_seconds']:.0f} s" + (f" + {added:.0f} s evaluated later" if added else "")
                    print(f"[ablations] {run} seed {seed}: {summary} ({took})", flush=True)
    markdown, figures = summarize(output_dir, rows, seeds, keys)
    print("\n" + markdown)
    for path in figures:
        print(f"Fig. 3: {path}")
    print(f"Total time: {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


def _child_main(argv):
    """One training run: RUN SEED OUTPUT_DIR CONFIG_FILE TEST_SPLIT PROTOCOLS [KEY VALUE ...], PROTOCOLS
    comma-separated (started by :func:`run_ablations`)."""
    run, seed, output_dir, config_file, test_split = argv[0], int(argv[1]), argv[2], argv[3], argv[4]
    protocols, opts = argv[5].split(","), argv[6:]
    if run not in RUNS:
        print(f"error: unknown run {run!r}; known: {list(RUNS)}", file=sys.stderr)
        return 2
    return single_run(output_dir, config_file, run, seed, opts, test_split, protocols)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
