"""
LVIS-scale measurements on generated LVIS-v1-shaped data (:mod:`.lvis_shaped_data`): evaluation time
and peak RSS per backend and size, 2-process (gloo) evaluation's rank-0 peak, and full-size train
registration + loading with each data-loader worker's private memory.

Each measurement runs in a fresh child process (``python -m gridclip.evaluation.scale_benchmark
<spec json>``), so its peak RSS (``ru_maxrss``) is its own; the parent adds the machine's load
average. ``tools/benchmark_lvis_scale.py`` drives it and writes the results file.
"""
import gc
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

__all__ = [
    "run_scale_benchmark", "merge_reports", "format_scale_markdown",
    "prepare_val", "prepare_train", "run_child", "evaluate_in_process", "evaluate_distributed",
    "measure_train_loading", "register_lvis_shaped_val", "outputs_from_detections", "peak_rss_mb", "private_mb",
]


def peak_rss_mb():
    """This process's peak resident set size, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def private_mb():
    """Memory of this process not shared with any other (Private_Clean + Private_Dirty), MB."""
    total = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024.0


def prepare_val(root, num_images, seed=0, quality=0.5):
    """
    ``root/lvis_v1_val_shaped_<n>.json`` and its detections ``root/detections_<n>_q<quality>.npz``
    (:class:`CompactDetections` state, LVIS category ids), generated if missing.

    Returns:
        (str, str): json file, detections file.
    """
    from .lvis_shaped_data import lvis_shaped_detections, write_lvis_shaped_json

    os.makedirs(root, exist_ok=True)
    json_file = os.path.join(root, f"lvis_v1_val_shaped_{num_images}_s{seed}.json")
    dets_file = os.path.join(root, f"detections_{num_images}_s{seed}_q{quality}.npz")
    if not os.path.isfile(json_file):
        write_lvis_shaped_json(json_file, num_images, seed=seed, split="val")
    if not os.path.isfile(dets_file):
        dets = lvis_shaped_detections(num_images, seed=seed, quality=quality, split="val")
        np.savez(dets_file + ".tmp.npz", **dets.state())
        os.replace(dets_file + ".tmp.npz", dets_file)
    return json_file, dets_file


def prepare_train(root, num_images, seed=0):
    """``root/lvis/lvis_v1_train.json`` (generated train split) and an empty ``root/coco/`` image folder."""
    from .lvis_shaped_data import write_lvis_shaped_json

    json_file = os.path.join(root, "lvis", "lvis_v1_train.json")
    os.makedirs(os.path.dirname(json_file), exist_ok=True)
    os.makedirs(os.path.join(root, "coco"), exist_ok=True)
    info = {"json_file": json_file}
    if not os.path.isfile(json_file):
        start = time.perf_counter()
        info.update(write_lvis_shaped_json(json_file, num_images, seed=seed, split="train"))
        info["generate_s"] = round(time.perf_counter() - start, 1)
    info["bytes"] = os.path.getsize(json_file)
    return info


def register_lvis_shaped_val(name, json_file):
    """Register ``name`` for evaluation only (metadata as Detectron2's builtin LVIS v1: ids = index + 1)."""
    from detectron2.data import MetadataCatalog
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    classes = [c["name"] for c in sorted(LVIS_CATEGORIES, key=lambda c: c["id"])]
    MetadataCatalog.get(name).set(json_file=json_file, evaluator_type="lvis", thing_classes=classes)
    return name


def load_detections(dets_file):
    from .compact_detections import CompactDetections

    with np.load(dets_file, allow_pickle=False) as data:
        return CompactDetections.from_state({k: data[k] for k in data.files})


def outputs_from_detections(detections, image_ids=None):
    """
    Yield ``(inputs, outputs)`` for one image at a time, as a model would give the evaluator:
    ``Instances`` with XYXY float32 boxes and ``pred_classes`` = LVIS id - 1.
    """
    import torch
    from detectron2.structures import Boxes, Instances

    order = np.argsort(detections.image_id, kind="stable")
    ids = detections.image_id[order]
    unique, starts = np.unique(ids, return_index=True)
    ends = np.r_[starts[1:], len(ids)]
    wanted = None if image_ids is None else set(int(i) for i in image_ids)
    for image_id, s, e in zip(unique.tolist(), starts, ends):
        if wanted is not None and image_id not in wanted:
            continue
        rows = order[s:e]
        xywh = detections.bbox[rows]
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        instances = Instances((480, 640))
        instances.pred_boxes = Boxes(torch.from_numpy(xyxy))
        instances.scores = torch.from_numpy(detections.score[rows].copy())
        instances.pred_classes = torch.from_numpy(detections.category_id[rows] - 1)
        yield [{"image_id": image_id}], [{"instances": instances}]


def _evaluate(json_file, dets_file, backend, distributed, rank=0, world_size=1, output_dir=None):
    from detectron2.utils.logger import setup_logger

    from .lvis_evaluation import GridCLIPLVISEvaluator

    setup_logger(name="gridclip_scale_benchmark")  # quiet: no detectron2 logs to stdout
    timings = {}
    start = time.perf_counter()
    name = register_lvis_shaped_val("lvis_v1_val_shaped", json_file)
    evaluator = GridCLIPLVISEvaluator(name, tasks=("bbox",), distributed=distributed, output_dir=output_dir,
                                      max_dets_per_image=300, backend=backend)
    evaluator.reset()
    timings["load_gt_s"] = time.perf_counter() - start
    detections = load_detections(dets_file)
    image_ids = np.unique(detections.image_id)
    shard = np.array_split(image_ids, world_size)[rank]  # contiguous, as Detectron2's InferenceSampler
    t = time.perf_counter()
    for inputs, outputs in outputs_from_detections(detections, shard):
        evaluator.process(inputs, outputs)
    del detections
    gc.collect()
    timings["process_s"] = time.perf_counter() - t
    t = time.perf_counter()
    results = evaluator.evaluate()
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    stats = getattr(evaluator.last_evaluation, "stats", None)
    return {
        "rank": rank, "results": results, "timings": {k: round(v, 2) for k, v in timings.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1), "fast_stats": stats,
    }


def evaluate_in_process(json_file, dets_file, backend, output_dir=None):
    """One process: GridCLIPLVISEvaluator (``backend``) over every image's detections; results, timings, peak RSS."""
    return _evaluate(json_file, dets_file, backend, distributed=False, output_dir=output_dir)


def _distributed_worker(rank, world_size, port, json_file, dets_file, backend, result_file, output_dir):
    import torch.distributed as dist
    from detectron2.utils import comm

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    try:
        out = _evaluate(json_file, dets_file, backend, True, rank, world_size, output_dir if rank == 0 else None)
        comm.synchronize()
        reports = comm.gather(out, dst=0)
        if rank == 0:
            with open(result_file, "w") as f:
                json.dump(reports, f)
    finally:
        dist.destroy_process_group()


def evaluate_distributed(json_file, dets_file, backend, world_size=2, output_dir=None):
    """
    ``world_size`` gloo processes (spawned), each processing a contiguous shard of the images, the
    evaluator gathering to rank 0, as Detectron2's inference does.

    Returns:
        list[dict]: per rank ``{"rank", "results" (rank 0), "timings", "peak_rss_mb"}``.
    """
    import socket
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        result_file = os.path.join(tmp, "ranks.json")
        mp.spawn(_distributed_worker, nprocs=world_size,
                 args=(world_size, port, json_file, dets_file, backend, result_file, output_dir))
        with open(result_file) as f:
            return json.load(f)


class _MemoryProbeMapper:
    """A mapper that reads no image: returns the record's size fields and the worker's private memory."""

    def __call__(self, record):
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        return {
            "width": record["width"], "height": record["height"], "num_boxes": len(record["annotations"]),
            "worker": -1 if info is None else info.id, "private_mb": private_mb(), "rss_mb": rss_mb(),
        }


def measure_train_loading(root, workers=2, batches=200, batch_size=16):
    """
    ``lvis_v1_train_base`` from ``root`` (:func:`register_lvis_ov_datasets`) through GridCLIP's training
    loader (rare annotations removed, vocabulary remap, repeat-factor sampler, Detectron2's serialised
    dataset), with a mapper that reads no image; then ``batches`` batches from ``workers`` forked workers.

    Returns:
        dict: build time, RSS after build, peak RSS, and per worker the largest private memory seen.
    """
    from detectron2.utils.logger import setup_logger

    from .. import get_gridclip_cfg
    from ..data.build import build_gridclip_train_loader
    from ..data.datasets import register_lvis_ov_datasets

    setup_logger(name="gridclip_scale_benchmark")
    rss_start = rss_mb()
    register_lvis_ov_datasets(root)
    cfg = get_gridclip_cfg(opts=[
        "DATASETS.TRAIN", "('lvis_v1_train_base',)", "DATASETS.TEST", "()",
        "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler", "DATALOADER.REPEAT_THRESHOLD", "0.001",
        "DATALOADER.NUM_WORKERS", str(workers), "SOLVER.IMS_PER_BATCH", str(batch_size),
    ])
    start = time.perf_counter()
    loader = build_gridclip_train_loader(cfg, mapper=_MemoryProbeMapper())
    build_s = time.perf_counter() - start
    gc.collect()
    rss_after_build = rss_mb()
    peak_after_build = peak_rss_mb()
    worker_private, worker_rss, boxes = {}, {}, 0
    start = time.perf_counter()
    for i, batch in enumerate(loader):
        for d in batch:
            worker_private[d["worker"]] = max(worker_private.get(d["worker"], 0.0), d["private_mb"])
            worker_rss[d["worker"]] = max(worker_rss.get(d["worker"], 0.0), d["rss_mb"])
            boxes += d["num_boxes"]
        if i + 1 >= batches:
            break
    iterate_s = time.perf_counter() - start
    return {
        "build_loader_s": round(build_s, 1), "rss_before_mb": round(rss_start, 1),
        "rss_after_build_mb": round(rss_after_build, 1), "peak_rss_build_mb": round(peak_after_build, 1),
        "workers": workers, "batches": batches, "batch_size": batch_size, "boxes_seen": boxes,
        "iterate_s": round(iterate_s, 1),
        "worker_private_mb": {str(k): round(v, 1) for k, v in sorted(worker_private.items())},
        "worker_rss_mb": {str(k): round(v, 1) for k, v in sorted(worker_rss.items())},
    }


def _load_average():
    return [round(x, 2) for x in os.getloadavg()]


def run_child(spec):
    """
    Run one measurement (``spec["kind"]``: "evaluate", "distributed" or "train") in a fresh Python
    process; returns its report with ``wall_s``, ``process_tree_max_rss_mb`` (the largest RSS of the
    child or any of its processes, from ``wait4``) and the load average before and after.
    """
    load_before = _load_average()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridclip.evaluation.scale_benchmark", json.dumps(spec)],
        stdout=subprocess.PIPE, text=True,
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage: max RSS of it and its descendants
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed with exit code {proc.returncode}")
    report = json.loads(out.strip().splitlines()[-1])
    report.update({
        "spec": spec, "wall_s": round(wall, 1), "process_tree_max_rss_mb": round(usage.ru_maxrss / 1024.0, 1),
        "load_before": load_before, "load_after": _load_average(),
    })
    return report


def _evaluation_row(report, images, backend, world_size=1):
    row = {
        "kind": "evaluate" if world_size == 1 else "distributed", "images": images, "backend": backend,
        "world_size": world_size, "wall_s": report["wall_s"], "results": report["results"],
        "load_before": report["load_before"], "load_after": report["load_after"],
        "process_tree_max_rss_mb": report["process_tree_max_rss_mb"],
    }
    if world_size == 1:
        row.update(timings=report["timings"], peak_rss_mb=report["peak_rss_mb"], fast_stats=report.get("fast_stats"))
    else:
        row.update(
            peak_rss_mb=report["rank0_peak_rss_mb"],
            ranks=[{k: r[k] for k in ("rank", "timings", "peak_rss_mb")} for r in report["ranks"]],
        )
    return row


def run_scale_benchmark(root, val_sizes=(1000, 5000), lvis_api_max=5000, backends=("faster", "lvis"),
                        distributed_sizes=(), distributed_backends=("faster",), train_images=0, workers=2,
                        train_batches=200, seed=0, quality=0.5, log=print):
    """
    Run the measurements, each in a fresh process, one after the other.

    Args:
        root (str): where generated files go (reused when present).
        val_sizes: val images per evaluation measurement; lvis-api only up to ``lvis_api_max``.
        distributed_sizes, distributed_backends: 2-process gloo evaluations.
        train_images (int): generate and load a train split of this size (0 = skip).

    Returns:
        dict: ``{"rows": [...], "train": {...} or None}``.
    """
    rows, train = [], None
    for n in val_sizes:
        json_file, dets_file = prepare_val(root, n, seed=seed, quality=quality)
        for backend in backends:
            if backend == "lvis" and n > lvis_api_max:
                continue
            log(f"[lvis-scale] evaluate {n} images, backend {backend} ...")
            report = run_child({"kind": "evaluate", "json_file": json_file, "dets_file": dets_file, "backend": backend})
            rows.append(_evaluation_row(report, n, backend))
            log(f"[lvis-scale]   {report['wall_s']} s, peak RSS {report['peak_rss_mb']} MB, load {report['load_after']}")
    for n in distributed_sizes:
        json_file, dets_file = prepare_val(root, n, seed=seed, quality=quality)
        for backend in distributed_backends:
            if backend == "lvis" and n > lvis_api_max:
                continue
            log(f"[lvis-scale] 2 gloo processes, {n} images, backend {backend} ...")
            report = run_child({"kind": "distributed", "json_file": json_file, "dets_file": dets_file,
                                "backend": backend, "world_size": 2})
            rows.append(_evaluation_row(report, n, backend, world_size=2))
            log(f"[lvis-scale]   {report['wall_s']} s, rank-0 peak RSS {report['rank0_peak_rss_mb']} MB")
    if train_images:
        train_root = os.path.join(root, f"train_{train_images}_s{seed}")
        log(f"[lvis-scale] generate {train_images} train images ...")
        generated = prepare_train(train_root, train_images, seed=seed)
        log("[lvis-scale] register + load train, fork workers ...")
        report = run_child({"kind": "train", "root": train_root, "workers": workers, "batches": train_batches})
        train = dict(report, images=train_images, generated=generated)
        train.pop("spec", None)
        log(f"[lvis-scale]   build {report['build_loader_s']} s, workers {report['worker_private_mb']} MB private")
    return {"rows": rows, "train": train}


def merge_reports(old, new):
    """``new``'s rows replace ``old``'s of the same (kind, images, backend, world size); train likewise."""
    key = lambda r: (r["kind"], r["images"], r["backend"], r["world_size"])  # noqa: E731
    rows = {key(r): r for r in (old or {}).get("rows", [])}
    rows.update({key(r): r for r in new.get("rows", [])})
    merged = dict(old or {}, **{k: v for k, v in new.items() if k not in ("rows", "train")})
    merged["rows"] = sorted(rows.values(), key=lambda r: (r["kind"], r["images"], r["backend"]))
    merged["train"] = new.get("train") or (old or {}).get("train")
    return merged


def _fit(points):
    """Least-squares line (a + b x) through (x, y) points; None with fewer than 2."""
    if len(points) < 2:
        return None
    x, y = np.array(points, np.float64).T
    b, a = np.polyfit(x, y, 1)
    return a, b


def format_scale_markdown(report, full_images=19809):
    """The results file's markdown: evaluation table, speed-ups, extrapolation, distributed, train."""
    rows = [r for r in report["rows"] if r["kind"] == "evaluate"]
    by = {(r["images"], r["backend"]): r for r in rows}
    lines = [f"# LVIS-scale evaluation and data ({report.get('machine', {}).get('cpu_model', '?')}, "
             f"{report.get('machine', {}).get('cpu_cores', '?')} cores)", "",
             "Generated LVIS-v1-shaped val (1203 categories, 300 detections per image); one process per "
             "measurement; load = 1-minute load average before / after.", "",
             "| val images | detections | backend | wall (s) | evaluate (s) | peak RSS (MB) | AP | AP_r | AP_c | AP_f | "
             "same numbers as lvis-api | load |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in sorted(rows, key=lambda r: (r["images"], r["backend"])):
        b = r["results"].get("bbox", {})
        ref = by.get((r["images"], "lvis"))
        same = "reference" if r["backend"] == "lvis" else ("yes" if ref and ref["results"] == r["results"] else
                                                        ("not run" if ref is None else "NO"))
        lines.append(
            f"| {r['images']:,} | {r['images'] * 300:,} | {r['backend']} | {r['wall_s']:.1f} | "
            f"{r['timings']['evaluate_s']:.1f} | {r['peak_rss_mb']:,.0f} | {b.get('AP', float('nan')):.2f} | "
            f"{b.get('APr', float('nan')):.2f} | {b.get('APc', float('nan')):.2f} | {b.get('APf', float('nan')):.2f} | "
            f"{same} | {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |"
        )
    lines.append("")
    speedups = [
        (n, by[(n, "lvis")]["wall_s"] / by[(n, "faster")]["wall_s"])
        for n, backend in sorted(by) if backend == "lvis" and (n, "faster") in by
    ]
    if speedups:
        lines.append("Speed-up of the faster backend, wall time of the whole process (interpreter start and "
                     "imports included): " + ", ".join(f"{n:,} images {s:.1f}x" for n, s in speedups) + ".")
        evaluation = [
            (n, by[(n, "lvis")]["timings"]["total_s"] / by[(n, "faster")]["timings"]["total_s"])
            for n, _ in speedups
        ]
        lines.append("Speed-up of the evaluation itself (ground-truth loading, `process`, `evaluate`): " + ", ".join(
            f"{n:,} images {s:.1f}x" for n, s in evaluation) + ".")
    for backend in ("lvis", "faster"):
        t = _fit([(n, by[(n, b)]["wall_s"]) for n, b in by if b == backend])
        m = _fit([(n, by[(n, b)]["peak_rss_mb"]) for n, b in by if b == backend])
        if t and m:
            measured_full = (full_images, backend) in by
            lines.append(
                f"{backend}: linear fit time = {t[0]:.1f} s + {t[1] * 1000:.2f} s per 1,000 images, peak RSS = "
                f"{m[0]:.0f} MB + {m[1] * 1000:.0f} MB per 1,000 images; at {full_images:,} images: "
                f"{t[0] + t[1] * full_images:.0f} s, {(m[0] + m[1] * full_images) / 1024:.1f} GB"
                + (" (extrapolated)" if not measured_full else " (fit; measured above)") + "."
            )
    dist = [r for r in report["rows"] if r["kind"] == "distributed"]
    if dist:
        lines += ["", "## 2 gloo processes (rank 0 gathers and evaluates)", "",
                  "| val images | backend | wall (s) | rank-0 peak RSS (MB) | rank-1 peak RSS (MB) | equal to 1 process | load |",
                  "|---:|---|---:|---:|---:|---|---|"]
        for r in sorted(dist, key=lambda r: (r["images"], r["backend"])):
            single = by.get((r["images"], r["backend"]))
            same = "not run" if single is None else ("yes" if single["results"] == r["results"] else "NO")
            rank1 = next((x["peak_rss_mb"] for x in r["ranks"] if x["rank"] == 1), float("nan"))
            lines.append(f"| {r['images']:,} | {r['backend']} | {r['wall_s']:.1f} | {r['peak_rss_mb']:,.0f} | "
                         f"{rank1:,.0f} | {same} | {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |")
    train = report.get("train")
    if train:
        lines += ["", "## Full-size train: registration and loading", "",
                  f"{train['images']:,} generated images, {train['generated'].get('annotations', '?')} boxes, json "
                  f"{train['generated']['bytes'] / 1e6:.0f} MB. `build_gridclip_train_loader` on `lvis_v1_train_base` "
                  "(Detectron2's `load_lvis_json`, rare annotations removed, vocabulary remap, repeat-factor sampler, "
                  "serialised dataset) with a mapper that reads no image:", "",
                  f"- build: {train['build_loader_s']} s; RSS after build {train['rss_after_build_mb']:.0f} MB "
                  f"(before {train['rss_before_mb']:.0f} MB), peak {train['peak_rss_build_mb']:.0f} MB;",
                  f"- {train['workers']} forked workers, {train['batches']} batches of {train['batch_size']}: private "
                  f"(unshared) memory per worker {train['worker_private_mb']} MB, RSS incl. shared "
                  f"{train['worker_rss_mb']} MB; load {train['load_before'][0]:.1f} / {train['load_after'][0]:.1f}."]
    return "\n".join(lines) + "\n"


def _main(spec):
    kind = spec["kind"]
    if kind == "evaluate":
        report = evaluate_in_process(spec["json_file"], spec["dets_file"], spec["backend"], spec.get("output_dir"))
    elif kind == "distributed":
        ranks = evaluate_distributed(spec["json_file"], spec["dets_file"], spec["backend"], spec.get("world_size", 2),
                                     spec.get("output_dir"))
        report = {"ranks": ranks, "results": ranks[0]["results"], "rank0_peak_rss_mb": ranks[0]["peak_rss_mb"]}
    elif kind == "train":
        report = measure_train_loading(spec["root"], spec.get("workers", 2), spec.get("batches", 200))
    else:
        raise ValueError(f"unknown measurement kind {kind!r}")
    report["peak_rss_mb_self"] = round(peak_rss_mb(), 1)
    print(json.dumps(report))


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
