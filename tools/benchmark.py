#!/usr/bin/env python
"""
Speed, memory and size of GridCLIP side by side with Detectron2's own FCOS-R50 (the peer), measured in
one run on the same inputs and the same machine.

For each model and precision (fp32, AMP) it measures:
- inference latency / FPS at batch 1 (end to end: preprocessing, backbone, head, decoding, NMS);
- a training step (Detectron2's SimpleTrainer / AMPTrainer ``run_step``: forward, losses, backward,
  optimizer step) on a training batch, as time and images/s; for GridCLIP the step includes the
  ``TeacherEmbeddingHook`` (CLIP teacher on the same device), and its share of the step is reported;
- peak memory of each phase (CUDA max allocated on a GPU, the process's RSS high-water mark on CPU);
- the inference parameter count with a per-part breakdown (``tools/count_parameters.py``).

Both models have random weights (no download): MODEL.CLIP.PRETRAINED and the teacher's PRETRAINED are
forced to "". The text embeddings of GridCLIP's vocabularies are random unit vectors of the LVIS
open-vocabulary sizes (866 training / 1203 test classes by default): they are data for the cosine
classifier, their values do not change the cost. Random weights score every location near the prior,
so decoding keeps the full top-k candidates per level (a worst case, for both models alike).

    python tools/benchmark.py                                  # R50 configs, 800x1333, writes benchmarks/<machine>.{json,md}
    python tools/benchmark.py --size 512 672 --iters 5 --warmup 2 --train-batch 2
    python tools/benchmark.py --params                        # parameter tables only
    python tools/benchmark.py --config-file <tiny cfg> --size 128 160 --opts MODEL.FPN.OUT_CHANNELS 64
"""
import argparse
import contextlib
import ctypes
import gc
import json
import logging
import os
import platform
import re
import statistics
import sys
import time

import torch

import gridclip  # noqa: F401  (first: applies the Detectron2 compatibility fixes, registers GridCLIP)
import torchvision  # noqa: E402
from detectron2 import model_zoo  # noqa: E402
from detectron2.config import instantiate  # noqa: E402
from detectron2.engine import AMPTrainer, SimpleTrainer  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from fvcore.nn import parameter_count  # noqa: E402

from gridclip.engine.teacher_hook import TeacherEmbeddingHook  # noqa: E402
from gridclip.modeling.head import TextEmbeddingClassifier  # noqa: E402
from gridclip.modeling.meta_arch import GridCLIP  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from count_parameters import parameter_breakdown, random_weights_config  # noqa: E402

__all__ = [
    "build_gridclip",
    "build_fcos_peer",
    "peer_postprocess",
    "fcos_parameter_breakdown",
    "machine_info",
    "make_inputs",
    "measure_inference",
    "measure_train_step",
    "run_benchmark",
    "format_markdown",
    "main",
]

logger = logging.getLogger("gridclip.benchmark")

DEFAULT_CONFIG = "configs/GridCLIP-R50-FPN-2x.yaml"
PEER_CONFIG = "COCO-Detection/fcos_R_50_FPN_1x.py"
PEER_NAME = "FCOS-R50 (Detectron2)"
PRECISIONS = ("fp32", "amp")
#: LVIS v1 open-vocabulary protocol: 866 base classes for training, all 1203 for testing.
LVIS_BASE_CLASSES, LVIS_CLASSES = 866, 1203
COCO_CLASSES = 80


# ---------------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info(device: str) -> dict:
    """What the numbers were measured on: CPU model, cores, threads, torch/torchvision, GPU name."""
    flags = _cpu_flags()
    on_cuda = device.startswith("cuda")
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": device,
        "gpu_name": torch.cuda.get_device_name(torch.device(device)) if on_cuda else None,
        "cuda": torch.version.cuda if on_cuda else None,
    }


def machine_slug(info: dict) -> str:
    """File-name form of the machine: the GPU name on CUDA, else ``cpu-<model>-<cores>c``."""
    name = info["gpu_name"] or f"cpu-{info['cpu_model']}-{info['cpu_cores']}c"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ---------------------------------------------------------------------------------------- models
def build_gridclip(cfg, num_train_classes: int, num_test_classes: int, seed: int = 0):
    """
    GridCLIP with random weights whose cosine classifier scores ``num_train_classes`` (training) and
    ``num_test_classes`` (inference) random unit text embeddings. Without grid alignment the model's
    classifier is its learned conv over the configured vocabulary (the counts are ignored).
    """
    torch.manual_seed(seed)
    if not cfg.MODEL.GRIDCLIP.GRID_ALIGN:
        return build_model(cfg)
    kwargs = GridCLIP.from_config(cfg)
    old = kwargs["classifier"]
    generator = torch.Generator().manual_seed(seed)
    dim = old.embed_dim
    kwargs["classifier"] = TextEmbeddingClassifier(
        torch.randn(num_train_classes, dim, generator=generator),
        torch.randn(num_test_classes, dim, generator=generator),
        logit_scale_init=cfg.MODEL.GRIDCLIP.LOGIT_SCALE_INIT,
        learn_logit_scale=cfg.MODEL.GRIDCLIP.LEARN_LOGIT_SCALE,
        prior_prob=cfg.MODEL.FCOS.PRIOR_PROB,
    )
    kwargs["train_class_names"] = [f"class_{i}" for i in range(num_train_classes)]
    kwargs["test_class_names"] = [f"class_{i}" for i in range(num_test_classes)]
    model = GridCLIP(**kwargs)
    return model.to(torch.device(cfg.MODEL.DEVICE))


def peer_postprocess(gridclip_cfg) -> dict:
    """GridCLIP's inference protocol (score threshold, top-k, NMS, detections), applied to the peer too."""
    return {
        "test_score_thresh": gridclip_cfg.MODEL.FCOS.SCORE_THRESH_TEST,
        "test_topk_candidates": gridclip_cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST,
        "test_nms_thresh": gridclip_cfg.MODEL.FCOS.NMS_THRESH_TEST,
        "max_detections_per_image": gridclip_cfg.TEST.DETECTIONS_PER_IMAGE,
    }


def build_fcos_peer(device: str, seed: int = 0, postprocess: dict = None):
    """
    Detectron2's FCOS-R50-FPN (LazyConfig COCO-Detection/fcos_R_50_FPN_1x.py), GN head, 80 classes;
    ``postprocess`` overrides its inference settings (see :func:`peer_postprocess`).
    """
    cfg = model_zoo.get_config(PEER_CONFIG)
    cfg.model.head.norm = "GN"
    cfg.model.num_classes = COCO_CLASSES
    for key, value in (postprocess or {}).items():
        setattr(cfg.model, key, value)
    torch.manual_seed(seed)
    return instantiate(cfg.model).to(torch.device(device))


def fcos_parameter_breakdown(model):
    """(part, parameters, training_only) rows for Detectron2's FCOS, in count_parameters' format."""
    counts = parameter_count(model)
    parts = [
        ("bottom-up trunk", counts.get("backbone.bottom_up", 0)),
        ("FPN (lateral + output convs + P6/P7)", counts.get("backbone", 0) - counts.get("backbone.bottom_up", 0)),
        ("head towers", counts.get("head.cls_subnet", 0) + counts.get("head.bbox_subnet", 0)),
        ("cls output (logit conv)", counts.get("head.cls_score", 0)),
        ("box output", counts.get("head.bbox_pred", 0)),
        ("centerness output", counts.get("head.ctrness", 0)),
    ]
    rows = [(name, n, False) for name, n in parts if n]
    if sum(n for _, n, _ in rows) != counts[""]:
        raise RuntimeError("FCOS parameter breakdown does not add up to the model's parameter count.")
    return rows


def _parameters_entry(rows):
    return {
        "inference_total": sum(n for _, n, t in rows if not t),
        "parts": [{"part": name, "parameters": n, "training_only": t} for name, n, t in rows],
    }


# ---------------------------------------------------------------------------------------- inputs
def make_inputs(height: int, width: int, train_batch: int, num_boxes: int = 8, seed: int = 0):
    """
    The same inputs for every model: one test image (dict with "image", "height", "width") and a
    training batch of ``train_batch`` images with ``num_boxes`` boxes each. gt classes are stored
    as a fraction in [0, 1) and mapped to each model's vocabulary by :func:`_with_classes`.
    """
    generator = torch.Generator().manual_seed(seed)

    def image():
        return torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)

    def boxes():
        xy = torch.rand(num_boxes, 2, generator=generator) * torch.tensor([width * 0.7, height * 0.7])
        wh = (0.1 + 0.2 * torch.rand(num_boxes, 2, generator=generator)) * torch.tensor([width, height])
        return torch.cat([xy, xy + wh], dim=1)

    test = {"image": image(), "height": height, "width": width, "image_id": 0}
    train = [
        {"image": image(), "height": height, "width": width, "image_id": i + 1, "flipped": False,
         "gt_boxes": boxes(), "class_fraction": torch.rand(num_boxes, generator=generator)}
        for i in range(train_batch)
    ]
    return test, train


def _with_classes(train, num_classes):
    batch = []
    for d in train:
        h, w = d["height"], d["width"]
        classes = (d["class_fraction"] * num_classes).long().clamp_(max=num_classes - 1)
        instances = Instances((h, w), gt_boxes=Boxes(d["gt_boxes"].clone()), gt_classes=classes)
        batch.append({k: v for k, v in d.items() if k not in ("gt_boxes", "class_fraction")} | {"instances": instances})
    return batch


# ---------------------------------------------------------------------------------------- measuring
class _PeakMemory:
    """Peak memory of a phase: CUDA max allocated, or the process RSS high-water mark (VmHWM) on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss_high_water"
        self.reset_ok = True

    def reset(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        # Give freed heap memory back first, so an earlier phase's peak does not carry over.
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:  # Linux: "5" resets the high-water mark of this process to its current RSS.
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.reset_ok = False

    def peak_mb(self):
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str, amp_dtype):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _summary(times):
    mean = statistics.fmean(times)
    return {"mean_ms": mean * 1e3, "median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3}


def measure_inference(model, test_input, device, precision, amp_dtype, iters, warmup, memory):
    """Batch-1 end-to-end inference: latency (ms), FPS, peak memory, number of detections."""
    model.eval()
    times = []
    memory.reset()
    with torch.no_grad():
        for i in range(warmup + iters):
            _sync(device)
            start = time.perf_counter()
            with _autocast(device, precision, amp_dtype):
                outputs = model([test_input])
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    summary = _summary(times)
    return {
        "latency_ms": summary["mean_ms"],
        "latency_ms_median": summary["median_ms"],
        "latency_ms_min": summary["min_ms"],
        "fps": 1e3 / summary["mean_ms"],
        "peak_memory_mb": memory.peak_mb(),
        "num_detections": len(outputs[0]["instances"]),
    }


class _RepeatBatch:
    """An endless data loader giving the same training batch (fresh dicts each time)."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        while True:
            yield [dict(d) for d in self.batch]


def measure_train_step(model, batch, device, precision, amp_dtype, iters, warmup, memory, teacher_hook=None):
    """
    Training steps through Detectron2's SimpleTrainer (fp32) / AMPTrainer (AMP, CUDA only), with the
    teacher hook wrapping the trainer's data iterator as in GridCLIPTrainer. Returns step time,
    images/s, teacher time and share of the step, peak memory.
    """
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    loader = _RepeatBatch(batch)
    if precision == "fp32":
        trainer = SimpleTrainer(model, loader, optimizer)
    else:
        # Detectron2's AMP training (as DefaultTrainer with SOLVER.AMP.ENABLED): fp16 autocast + GradScaler.
        trainer = AMPTrainer(model, loader, optimizer)
    hooks = [teacher_hook] if teacher_hook is not None else []
    trainer.register_hooks(hooks)
    step_times, teacher_times = [], []
    memory.reset()
    with EventStorage(0) as storage:
        trainer.storage = storage
        for hook in hooks:
            hook.before_train()
        try:
            for i in range(warmup + iters):
                trainer.iter = storage.iter = i
                _sync(device)
                start = time.perf_counter()
                trainer.run_step()
                _sync(device)
                elapsed = time.perf_counter() - start
                for hook in hooks:  # as Detectron2's training loop (the teacher hook logs CUDA timings here)
                    hook.after_step()
                if i >= warmup:
                    step_times.append(elapsed)
                    if teacher_hook is not None:
                        teacher_times.append(storage.history("time/teacher").latest())
        finally:
            for hook in hooks:
                hook.after_train()
    step = statistics.fmean(step_times)
    result = {
        "step_time_s": step,
        "step_time_s_median": statistics.median(step_times),
        "images_per_s": len(batch) / step,
        "peak_memory_mb": memory.peak_mb(),
    }
    if precision != "fp32":
        result["autocast_dtype"] = "float16"
    if teacher_hook is not None:
        teacher = statistics.fmean(teacher_times)
        result.update(teacher_time_s=teacher, teacher_share=teacher / step)
    return result


def _amp_support(device: torch.device, amp_dtype):
    """None if AMP can run on ``device``, else the reason it is skipped."""
    if device.type == "cuda":
        return None
    if amp_dtype != torch.bfloat16:
        return "CPU autocast supports bfloat16 only"
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.conv2d(torch.ones(1, 3, 8, 8), torch.ones(4, 3, 3, 3))
    except Exception as e:  # noqa: BLE001  (reported, not hidden)
        return f"CPU bfloat16 autocast unavailable: {e}"
    return None


# ---------------------------------------------------------------------------------------- the run
def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def run_benchmark(args):
    """Everything :func:`main` measures, as the JSON-ready dict."""
    device = torch.device(args.device)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.amp_dtype or ("fp16" if device.type == "cuda" else "bf16")]
    memory = _PeakMemory(device)
    height, width = args.size
    # Real vocabularies are replaced by random embeddings in build_gridclip: skip encoding them.
    cfg = random_weights_config(args.config_file, args.opts, args.device)
    test_input, train = make_inputs(height, width, args.train_batch, seed=args.seed)
    gridclip_name = os.path.splitext(os.path.basename(args.config_file))[0]
    num_train = args.num_train_classes
    num_test = args.num_test_classes

    specs = [
        (gridclip_name, lambda: build_gridclip(cfg, num_train, num_test, seed=args.seed), parameter_breakdown,
         lambda m: m.num_classes),
    ]
    if not args.no_peer:
        postprocess = peer_postprocess(cfg)
        specs.append((PEER_NAME, lambda: build_fcos_peer(args.device, args.seed, postprocess), fcos_parameter_breakdown,
                      lambda m: m.num_classes))

    results = {
        "machine": machine_info(args.device),
        "settings": {
            "config_file": args.config_file,
            "opts": list(args.opts),
            "peer": f"detectron2 model_zoo {PEER_CONFIG} (GN head, {COCO_CLASSES} classes)",
            "peer_postprocess": None if args.no_peer else peer_postprocess(cfg),
            "input_size": [height, width],
            "train_batch": args.train_batch,
            "iters": args.iters,
            "warmup": args.warmup,
            "precisions": list(args.precisions),
            "amp_dtype": str(amp_dtype).replace("torch.", ""),
            "gridclip_classes": {"train": num_train, "test": num_test},
            "weights": "random (MODEL.CLIP.PRETRAINED and TEACHER.PRETRAINED forced to '')",
            "memory_measure": memory.kind,
        },
        "models": {},
        "ratios": {},
    }
    amp_skip = _amp_support(device, amp_dtype)
    for name, build, breakdown, num_classes_of in specs:
        model = build()
        entry = {"parameters": _parameters_entry(breakdown(model)), "num_train_classes": int(num_classes_of(model))}
        is_gridclip = isinstance(model, GridCLIP)
        if is_gridclip:
            entry["num_test_classes"] = model.num_test_classes
        teacher_hook = None
        if is_gridclip and model.image_align and not (args.params or args.no_train):
            teacher_hook = TeacherEmbeddingHook(cfg)
        batch = _with_classes(train, int(num_classes_of(model)))
        for precision in ([] if args.params else args.precisions):
            if precision == "amp" and amp_skip:
                entry[precision] = {"skipped": amp_skip}
                continue
            logger.info("%s %s: inference", name, precision)
            inference = measure_inference(model, test_input, device, precision, amp_dtype, args.iters,
                                          args.warmup, memory)
            if args.no_train:
                train_result = {"skipped": "--no-train"}
            elif precision == "amp" and device.type != "cuda":
                train_result = {"skipped": "AMPTrainer requires CUDA (GridCLIPTrainer trains in fp32 on CPU)"}
            else:
                logger.info("%s %s: training step", name, precision)
                hook = None
                if teacher_hook is not None:
                    # A hook releases its teacher after training: one per measured run, same weights.
                    hook = teacher_hook if precision == args.precisions[0] else TeacherEmbeddingHook(cfg)
                train_result = measure_train_step(model, batch, device, precision, amp_dtype, args.iters,
                                                  args.warmup, memory, hook)
            entry[precision] = {"inference": inference, "train": train_result}
        results["models"][name] = entry
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if len(results["models"]) == 2:
        g, f = (results["models"][n] for n in (gridclip_name, PEER_NAME))
        results["ratios"]["parameters"] = g["parameters"]["inference_total"] / f["parameters"]["inference_total"]
        for precision in ([] if args.params else args.precisions):
            gi, fi = g[precision].get("inference", {}), f[precision].get("inference", {})
            gt, ft = g[precision].get("train", {}), f[precision].get("train", {})
            results["ratios"][precision] = {
                "inference_latency": _ratio(gi.get("latency_ms"), fi.get("latency_ms")),
                "inference_latency_min": _ratio(gi.get("latency_ms_min"), fi.get("latency_ms_min")),
                "inference_peak_memory": _ratio(gi.get("peak_memory_mb"), fi.get("peak_memory_mb")),
                "train_step_time": _ratio(gt.get("step_time_s"), ft.get("step_time_s")),
                "train_peak_memory": _ratio(gt.get("peak_memory_mb"), ft.get("peak_memory_mb")),
            }
    results["settings"]["memory_reset_per_phase"] = memory.reset_ok
    return results


# ---------------------------------------------------------------------------------------- reporting
def _fmt(value, spec):
    return "—" if value is None else format(value, spec)


def format_parameter_tables(results) -> str:
    lines = []
    for name, entry in results["models"].items():
        lines += [f"### Parameters: {name}", "", "| part | parameters |", "|---|---:|"]
        for part in entry["parameters"]["parts"]:
            label = part["part"] + (" (training only, not counted)" if part["training_only"] else "")
            lines.append(f"| {label} | {part['parameters'] / 1e6:.2f} M |")
        lines += [f"| **inference total** | **{entry['parameters']['inference_total'] / 1e6:.2f} M** |", ""]
    return "\n".join(lines)


def format_markdown(results) -> str:
    """The benchmark as markdown: machine, settings, one table per precision, parameter breakdowns."""
    m, s = results["machine"], results["settings"]
    names = list(results["models"])
    device = m["gpu_name"] or (
        f"CPU only, no GPU: {m['cpu_model']} ({m['cpu_cores']} cores, {m['torch_threads']} torch threads)")
    lines = [
        f"## Benchmark: {' vs '.join(names)}",
        "",
        f"Machine: {device}; Python {m['python']}, torch {m['torch']}, torchvision {m['torchvision']}"
        + (f", CUDA {m['cuda']}" if m["cuda"] else "") + ".",
        f"Input {s['input_size'][0]}×{s['input_size'][1]}; inference batch 1, training batch {s['train_batch']}; "
        f"{s['iters']} timed iterations after {s['warmup']} warm-up; random weights; GridCLIP vocabularies "
        f"{s['gridclip_classes']['train']} train / {s['gridclip_classes']['test']} test classes; "
        f"AMP = {s['amp_dtype']} autocast; peak memory = {s['memory_measure'].replace('_', ' ')}.",
        "",
    ]
    ratio_col = len(names) == 2
    for precision in s["precisions"]:
        header = "| " + precision + " | " + " | ".join(names) + (" | ratio (GridCLIP / FCOS) |" if ratio_col else " |")
        lines += [header, "|---|" + "---:|" * (len(names) + int(ratio_col))]
        ratios = results["ratios"].get(precision, {})
        rows = [
            ("inference latency, mean (ms)", "inference", "latency_ms", ".1f", "inference_latency"),
            ("inference latency, min (ms)", "inference", "latency_ms_min", ".1f", "inference_latency_min"),
            ("inference FPS", "inference", "fps", ".2f", None),
            ("inference peak memory (MB)", "inference", "peak_memory_mb", ".0f", "inference_peak_memory"),
            ("train step time (s)", "train", "step_time_s", ".3f", "train_step_time"),
            ("train images/s", "train", "images_per_s", ".2f", None),
            ("teacher hook share of step", "train", "teacher_share", ".1%", None),
            ("train peak memory (MB)", "train", "peak_memory_mb", ".0f", "train_peak_memory"),
        ]
        for label, phase, key, spec, ratio_key in rows:
            cells = []
            for name in names:
                entry = results["models"][name].get(precision, {})
                if "skipped" in entry:
                    cells.append("skipped")
                    continue
                part = entry.get(phase, {})
                cells.append("skipped" if "skipped" in part else _fmt(part.get(key), spec))
            if all(cell == "skipped" for cell in cells):
                continue  # the reason is listed under the table
            line = f"| {label} | " + " | ".join(cells)
            if ratio_col:
                line += " | " + (_fmt(ratios.get(ratio_key), ".2f") + "×" if ratio_key and ratios.get(ratio_key) else "")
            lines.append(line + " |")
        skipped = {
            f"{name} {phase}": part["skipped"]
            for name in names
            for phase, part in (
                [("", results["models"][name][precision])] if "skipped" in results["models"][name].get(precision, {})
                else results["models"][name].get(precision, {}).items()
            )
            if isinstance(part, dict) and "skipped" in part
        }
        if skipped:
            lines.append("")
        for what, reason in skipped.items():
            lines.append(f"- {precision} skipped ({what.strip()}): {reason}")
        lines.append("")
    if "parameters" in results["ratios"]:
        lines += [f"Inference parameters ratio (GridCLIP / FCOS): {results['ratios']['parameters']:.2f}×", ""]
    lines.append(format_parameter_tables(results))
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help="GridCLIP config (default: %(default)s)")
    parser.add_argument("--size", nargs=2, type=int, default=[800, 1333], metavar=("H", "W"),
                        help="input height and width of every image (default: 800 1333)")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations before each measurement")
    parser.add_argument("--train-batch", type=int, default=2,
                        help="images per training step on this device (default 2: the paper's 16 over 8 GPUs)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--amp-dtype", choices=("fp16", "bf16"), default=None,
                        help="AMP dtype (default: fp16 on CUDA, bf16 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-train-classes", type=int, default=LVIS_BASE_CLASSES)
    parser.add_argument("--num-test-classes", type=int, default=LVIS_CLASSES)
    parser.add_argument("--no-peer", action="store_true", help="measure GridCLIP only")
    parser.add_argument("--no-train", action="store_true", help="measure inference only")
    parser.add_argument("--params", action="store_true", help="print the parameter tables only (no timing)")
    parser.add_argument("--output", default=None,
                        help="output path prefix: writes PREFIX.json and PREFIX.md (default benchmarks/<machine>)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 gives steadier numbers on a shared CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="GridCLIP config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.train_batch < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--iters, --train-batch and --threads must be >= 1, --warmup >= 0")
    if min(args.size) < 32:
        parser.error(f"--size {args.size[0]} {args.size[1]}: both sides must be >= 32 pixels")
    if not os.path.isfile(args.config_file):
        parser.error(f"config file not found: {args.config_file}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results = run_benchmark(args)
    if args.params:
        print(format_parameter_tables(results))
        if "parameters" in results["ratios"]:
            print(f"Inference parameters ratio (GridCLIP / FCOS): {results['ratios']['parameters']:.2f}×")
        return results
    markdown = format_markdown(results)
    prefix = args.output or os.path.join("benchmarks", machine_slug(results["machine"]))
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + ".json", "w") as f:
        json.dump(results, f, indent=2)
    with open(prefix + ".md", "w") as f:
        f.write(markdown + "\n")
    print(markdown)
    print(f"\nWrote {prefix}.json and {prefix}.md")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
