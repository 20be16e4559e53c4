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

from detectron2.layers import batched_nms  # noqa: E402
from detectron2.modeling.meta_arch.fcos import FCOS  # noqa: E402
from detectron2.modeling.postprocessing import detector_postprocess  # noqa: E402

from gridclip.engine.teacher_hook import TeacherEmbeddingHook  # noqa: E402
from gridclip.modeling.bn_folding import enable_bn_folding, set_bn_folding  # noqa: E402
from gridclip.modeling.decoding import DECODERS  # noqa: E402
from gridclip.modeling.head import TextEmbeddingClassifier  # noqa: E402
from gridclip.modeling.meta_arch import GridCLIP  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from count_parameters import parameter_breakdown, random_weights_config  # noqa: E402

__all__ = [
    "build_gridclip",
    "build_fcos_peer",
    "FCOSWithGridCLIPDecoder",
    "count_flops",
    "measure_speedups",
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
#: The fair peer: Detectron2's FCOS-R50 with a head over GridCLIP's test vocabulary, decoding with
#: GridCLIP's decoder (Detectron2's own decoding sorts all R x K pairs: 8.6 M for 1203 classes).
SAME_VOCAB_PEER_NAME = "FCOS-R50, same vocabulary (Detectron2)"
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


class FCOSWithGridCLIPDecoder(FCOS):
    """
    Detectron2's FCOS with GridCLIP's inference path: the same candidate selection (``decoder``, exact:
    the pairs of Detectron2's dense decoding), fp32 decoding and NMS, and the same exact speed-ups
    (BN folding in the trunk, channels_last), so the two detectors are timed on equal terms.
    """

    decoder = "bound"
    channels_last = True

    def configure_inference(self, *, fold_bn=None, channels_last=None, decoder=None, compile_inference=None):
        if fold_bn is not None:
            set_bn_folding(self.backbone, fold_bn)
        if channels_last is not None:
            self.channels_last = bool(channels_last)
        if decoder is not None:
            self.decoder = decoder
        return self

    def forward(self, batched_inputs):
        if self.training:
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        tensor = images.tensor
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        features = self.backbone(tensor)
        features = [features[f] for f in self.head_in_features]
        predictions = self.head(features)
        results = self.forward_inference(images, features, predictions)
        return [{"instances": detector_postprocess(r, x.get("height", s[0]), x.get("width", s[1]))}
                for r, x, s in zip(results, batched_inputs, images.image_sizes)]

    def forward_inference(self, images, features, predictions):
        pred_logits, pred_deltas, pred_centerness = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1])
        anchors = self.anchor_generator(features)
        select = DECODERS[self.decoder]
        results = []
        for img_idx, image_size in enumerate(images.image_sizes):
            per_level = []
            for level, anchors_level in enumerate(anchors):
                scores, anchor_idxs, classes = select(
                    pred_logits[level][img_idx], pred_centerness[level][img_idx].float(), self.test_score_thresh,
                    self.test_topk_candidates, "sqrt")
                boxes = self.box2box_transform.apply_deltas(
                    pred_deltas[level][img_idx][anchor_idxs].float(), anchors_level.tensor[anchor_idxs].float())
                per_level.append(Instances(image_size, pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes))
            pred = Instances.cat(per_level)
            keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh)
            results.append(pred[keep[: self.max_detections_per_image]])
        return results


def build_fcos_peer(device: str, seed: int = 0, postprocess: dict = None, num_classes: int = COCO_CLASSES,
                    gridclip_decoder: bool = False):
    """
    Detectron2's FCOS-R50-FPN (LazyConfig COCO-Detection/fcos_R_50_FPN_1x.py), GN head, ``num_classes``
    classes; ``postprocess`` overrides its inference settings (see :func:`peer_postprocess`);
    ``gridclip_decoder``: :class:`FCOSWithGridCLIPDecoder` (GridCLIP's decoder and speed-ups).
    """
    cfg = model_zoo.get_config(PEER_CONFIG)
    cfg.model.head.norm = "GN"
    cfg.model.num_classes = num_classes
    cfg.model.head.num_classes = num_classes
    for key, value in (postprocess or {}).items():
        setattr(cfg.model, key, value)
    if gridclip_decoder:
        cfg.model._target_ = FCOSWithGridCLIPDecoder
    torch.manual_seed(seed)
    model = instantiate(cfg.model).to(torch.device(device))
    if gridclip_decoder:
        enable_bn_folding(model.backbone)
    return model


def count_flops(model, test_input) -> dict:
    """
    fvcore FLOPs of one batch-1 inference (Detectron2's ``FlopCountAnalysis``: one multiply-add = one
    flop; convs, matmuls, norms and the attention; decoding and NMS are not counted): total and per
    top-level part.
    """
    from detectron2.utils.analysis import FlopCountAnalysis

    model.eval()
    with torch.no_grad(), contextlib.redirect_stderr(open(os.devnull, "w")):
        analysis = FlopCountAnalysis(model, [test_input])
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        total = analysis.total()
        by_module = analysis.by_module()
    # Detectron2's analysis wraps the model (module names start with "model."): top-level parts.
    parts = {k[len("model."):]: v for k, v in by_module.items() if k.startswith("model.") and k.count(".") == 1 and v}
    parts["(not in a submodule: e.g. the cosine classifier matmul)"] = total - sum(parts.values())
    return {"total": total, "parts": parts}


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


def _inference_entry(times, peak_mb, outputs, cpu_times=None):
    summary = _summary(times)
    cpu = {} if not cpu_times else {"cpu_ms_min": 1e3 * min(cpu_times), "cpu_ms_median": 1e3 * statistics.median(cpu_times)}
    return cpu | {
        "latency_ms": summary["mean_ms"],
        "latency_ms_median": summary["median_ms"],
        "latency_ms_min": summary["min_ms"],
        "fps": 1e3 / summary["mean_ms"],
        "peak_memory_mb": peak_mb,
        "num_detections": len(outputs[0]["instances"]),
    }


def measure_inference(model, test_input, device, precision, amp_dtype, iters, warmup, memory):
    """Batch-1 end-to-end inference: latency (ms), FPS, peak memory, number of detections."""
    return measure_inference_interleaved({"model": model}, test_input, device, precision, amp_dtype, iters,
                                         warmup, memory)["model"]


def measure_inference_interleaved(models: dict, test_input, device, precision, amp_dtype, iters, warmup, memory):
    """
    :func:`measure_inference` of several models, one iteration of each in turn, so that the load of
    a shared machine hits them alike and their ratios are fair. Peak memory: per model, its first pass
    after a reset. Returns {name: entry}.
    """
    times = {name: [] for name in models}
    cpu_times = {name: [] for name in models}
    peaks, outputs = {}, {}
    with torch.no_grad():
        for name, model in models.items():  # warm-up, and the peak memory of one pass on its own
            model.eval()
            memory.reset()
            for _ in range(max(warmup, 1)):
                with _autocast(device, precision, amp_dtype):
                    outputs[name] = model([test_input])
            peaks[name] = memory.peak_mb()
        for _ in range(iters):
            for name, model in models.items():
                _sync(device)
                start, cpu_start = time.perf_counter(), time.thread_time()
                with _autocast(device, precision, amp_dtype):
                    outputs[name] = model([test_input])
                _sync(device)
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.thread_time() - cpu_start)
    cpu_ok = device.type == "cpu" and torch.get_num_threads() == 1
    return {name: _inference_entry(times[name], peaks[name], outputs[name], cpu_times[name] if cpu_ok else None)
            for name in models}


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


def _inference_ratios(g, f):
    return {
        "inference_cpu_time_min": _ratio(g.get("cpu_ms_min"), f.get("cpu_ms_min")),
        "inference_cpu_time_median": _ratio(g.get("cpu_ms_median"), f.get("cpu_ms_median")),
        "inference_latency": _ratio(g.get("latency_ms"), f.get("latency_ms")),
        "inference_latency_min": _ratio(g.get("latency_ms_min"), f.get("latency_ms_min")),
        "inference_peak_memory": _ratio(g.get("peak_memory_mb"), f.get("peak_memory_mb")),
    }


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
    postprocess = peer_postprocess(cfg)

    # The fair peer first: FCOS-R50 scoring GridCLIP's test vocabulary, with GridCLIP's decoder.
    specs = [
        (gridclip_name, lambda: build_gridclip(cfg, num_train, num_test, seed=args.seed), parameter_breakdown,
         lambda m: m.num_classes),
    ]
    if not args.no_peer:
        specs.append((SAME_VOCAB_PEER_NAME, lambda: build_fcos_peer(args.device, args.seed, postprocess, num_test,
                                                                     gridclip_decoder=True),
                      fcos_parameter_breakdown, lambda m: m.num_classes))
        specs.append((PEER_NAME, lambda: build_fcos_peer(args.device, args.seed, postprocess), fcos_parameter_breakdown,
                      lambda m: m.num_classes))

    results = {
        "machine": machine_info(args.device),
        "settings": {
            "config_file": args.config_file,
            "opts": list(args.opts),
            "peer": f"detectron2 model_zoo {PEER_CONFIG} (GN head, {COCO_CLASSES} classes)",
            "same_vocab_peer": None if args.no_peer else (
                f"detectron2 model_zoo {PEER_CONFIG} (GN head, {num_test} classes = GridCLIP's test vocabulary; "
                "GridCLIP's decoder, BN folding and channels_last)"),
            "peer_postprocess": None if args.no_peer else postprocess,
            "input_size": [height, width],
            "train_batch": args.train_batch,
            "iters": args.iters,
            "warmup": args.warmup,
            "precisions": list(args.precisions),
            "amp_dtype": str(amp_dtype).replace("torch.", ""),
            "gridclip_classes": {"train": num_train, "test": num_test},
            "weights": "random (MODEL.CLIP.PRETRAINED and TEACHER.PRETRAINED forced to '')",
            "memory_measure": memory.kind,
            "inference_timing": "models interleaved: one iteration of each in turn",
            "flops": "fvcore via detectron2.utils.analysis.FlopCountAnalysis, batch-1 inference, 1 multiply-add = 1 flop",
        },
        "models": {},
        "flops": {},
        "ratios": {},
    }
    amp_skip = _amp_support(device, amp_dtype)
    models, entries = {}, {}
    for name, build, breakdown, num_classes_of in specs:
        model = build()
        models[name] = model
        entry = {"parameters": _parameters_entry(breakdown(model)), "num_train_classes": int(num_classes_of(model))}
        if isinstance(model, GridCLIP):
            entry["num_test_classes"] = model.num_test_classes
        elif name == SAME_VOCAB_PEER_NAME:
            entry["num_test_classes"] = int(num_classes_of(model))
        entries[name] = entry
    results["models"] = entries

    if not args.params and not args.no_flops:
        for name, model in models.items():
            logger.info("%s: FLOPs", name)
            entries[name]["flops"] = count_flops(model, test_input)
        results["flops"]["gridclip"] = entries[gridclip_name]["flops"]["total"]
        if not args.no_peer:
            results["flops"]["fcos_same_vocab"] = entries[SAME_VOCAB_PEER_NAME]["flops"]["total"]
            results["flops"]["fcos_80"] = entries[PEER_NAME]["flops"]["total"]

    for precision in ([] if args.params else args.precisions):
        if precision == "amp" and amp_skip:
            for name in models:
                entries[name][precision] = {"skipped": amp_skip}
            continue
        logger.info("inference %s (interleaved): %s", precision, ", ".join(models))
        inference = measure_inference_interleaved(models, test_input, device, precision, amp_dtype, args.iters,
                                                  args.warmup, memory)
        for name in models:
            entries[name][precision] = {"inference": inference[name]}

    if args.speedups and not args.params:
        logger.info("%s: exact inference speed-ups, one by one", gridclip_name)
        results["speedups"] = measure_speedups(models[gridclip_name], test_input, device, amp_dtype, args.iters,
                                               args.warmup, with_compile=args.compile)

    for name, model in models.items():
        is_gridclip = isinstance(model, GridCLIP)
        teacher_hook = None
        if is_gridclip and model.image_align and not (args.params or args.no_train):
            teacher_hook = TeacherEmbeddingHook(cfg)
        batch = _with_classes(train, entries[name]["num_train_classes"])
        for precision in ([] if args.params else args.precisions):
            if "skipped" in entries[name][precision]:
                continue
            if args.no_train:
                train_result = {"skipped": "--no-train"}
            elif name == PEER_NAME and SAME_VOCAB_PEER_NAME in models:
                train_result = {"skipped": "reference row: training is compared with the same-vocabulary peer"}
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
            entries[name][precision]["train"] = train_result
    models.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    if not args.no_peer:
        g, same, f80 = (entries[n] for n in (gridclip_name, SAME_VOCAB_PEER_NAME, PEER_NAME))
        ratios = results["ratios"]
        ratios["parameters"] = g["parameters"]["inference_total"] / same["parameters"]["inference_total"]
        ratios["parameters_vs_fcos_80"] = g["parameters"]["inference_total"] / f80["parameters"]["inference_total"]
        if results["flops"]:
            ratios["flops_vs_fcos_same_vocab"] = results["flops"]["gridclip"] / results["flops"]["fcos_same_vocab"]
            ratios["flops_vs_fcos_80"] = results["flops"]["gridclip"] / results["flops"]["fcos_80"]
        ratios["fcos_80"] = {}
        for precision in ([] if args.params else args.precisions):
            gi, si, fi = (e[precision].get("inference", {}) for e in (g, same, f80))
            gt, st = g[precision].get("train", {}), same[precision].get("train", {})
            ratios[precision] = _inference_ratios(gi, si) | {
                "train_step_time": _ratio(gt.get("step_time_s"), st.get("step_time_s")),
                "train_peak_memory": _ratio(gt.get("peak_memory_mb"), st.get("peak_memory_mb")),
            }
            ratios["fcos_80"][precision] = _inference_ratios(gi, fi)
        if "fp32" in ratios and ratios["fp32"]["inference_latency"] is not None:
            ratios["latency_vs_fcos_same_vocab"] = ratios["fp32"]["inference_latency"]
            ratios["latency_min_vs_fcos_same_vocab"] = ratios["fp32"]["inference_latency_min"]
            if ratios["fp32"]["inference_cpu_time_min"] is not None:
                ratios["cpu_time_vs_fcos_same_vocab"] = ratios["fp32"]["inference_cpu_time_min"]
            if "flops_vs_fcos_same_vocab" in ratios:
                # <= 1.05 means GridCLIP's time over the fair peer is within 5 % of its FLOP ratio.
                ratios["latency_ratio_over_flop_ratio"] = (ratios["latency_vs_fcos_same_vocab"]
                                                           / ratios["flops_vs_fcos_same_vocab"])
                if "cpu_time_vs_fcos_same_vocab" in ratios:
                    ratios["cpu_time_ratio_over_flop_ratio"] = (ratios["cpu_time_vs_fcos_same_vocab"]
                                                                / ratios["flops_vs_fcos_same_vocab"])
    results["settings"]["memory_reset_per_phase"] = memory.reset_ok
    return results


def _compare_detections(reference, ours):
    """How ``ours`` (Instances) differs from ``reference``: counts, same classes, box / score differences."""
    same_count = len(reference) == len(ours)
    result = {"num_detections": len(ours), "same_count": same_count}
    if same_count and len(ours):
        result["same_classes"] = bool(torch.equal(reference.pred_classes, ours.pred_classes))
        result["max_box_diff_px"] = float((reference.pred_boxes.tensor - ours.pred_boxes.tensor).abs().max())
        result["max_score_diff"] = float((reference.scores - ours.scores).abs().max())
    # Matched view (order-free): each reference detection's nearest same-class box.
    if len(reference) and len(ours):
        dist = torch.cdist(reference.pred_boxes.tensor, ours.pred_boxes.tensor, p=float("inf"))
        dist[reference.pred_classes[:, None] != ours.pred_classes[None, :]] = float("inf")
        nearest = dist.min(dim=1).values
        confident = reference.scores > 0.3
        result["matched_within_1px"] = float((nearest <= 1.0).float().mean())
        if bool(confident.any()):
            result["confident_matched_within_1px"] = float((nearest[confident] <= 1.0).float().mean())
    return result


def speedup_steps(with_compile: bool, with_amp: bool):
    """(label, configure_inference kwargs, today's classifier, autocast) of the cumulative speed-up ladder."""
    steps = [
        ("before (threshold decoder, classifier as in training, no BN folding, NCHW)",
         dict(decoder="threshold", fold_bn=False, channels_last=False, compile_inference=False), True, False),
        ("+ bound decoder", dict(decoder="bound"), True, False),
        ("+ folded classifier (one addmm per level)", {}, False, False),
        ("+ BN folding", dict(fold_bn=True), False, False),
        ("+ channels_last (= the default)", dict(channels_last=True), False, False),
    ]
    if with_compile:
        steps.append(("+ torch.compile (opt-in)", dict(compile_inference=True), False, False))
    if with_amp:
        steps.append(("+ bf16/fp16 autocast (--amp)", {}, False, True))
    return steps


def measure_speedups(model, test_input, device, amp_dtype, iters, warmup, with_compile=False):
    """
    The effect of each exact inference speed-up on GridCLIP (cumulative, interleaved: one iteration of
    every step in turn), with each step's detections compared with the first step's.
    """
    amp_ok = _amp_support(device, amp_dtype) is None
    steps = speedup_steps(with_compile, amp_ok)
    configs, settings = [], {}
    for label, change, today_classifier, amp in steps:
        settings = {**settings, **change}
        configs.append((label, dict(settings), today_classifier, amp))
    model.eval()

    def run(settings, today_classifier, amp):
        model.configure_inference(**settings)
        if today_classifier:
            model.inference_predictions = model.dense_predictions  # the code before: classifier module, no casts
        try:
            with torch.no_grad(), _autocast(device, "amp" if amp else "fp32", amp_dtype):
                return model([test_input])[0]["instances"]
        finally:
            model.__dict__.pop("inference_predictions", None)

    times = {label: [] for label, *_ in configs}
    cpu_times = {label: [] for label, *_ in configs}
    outputs = {}
    for label, settings, today_classifier, amp in configs:  # warm-up (and the compile, once)
        start = time.perf_counter()
        for _ in range(max(warmup, 1)):
            outputs[label] = run(settings, today_classifier, amp)
        if settings.get("compile_inference"):
            logger.info("torch.compile warm-up: %.1f s", time.perf_counter() - start)
    for _ in range(iters):
        for label, settings, today_classifier, amp in configs:
            _sync(device)
            start, cpu_start = time.perf_counter(), time.thread_time()
            outputs[label] = run(settings, today_classifier, amp)
            _sync(device)
            times[label].append(time.perf_counter() - start)
            cpu_times[label].append(time.thread_time() - cpu_start)
    model.configure_inference(**{**configs[-1][1], "compile_inference": False})
    first = configs[0][0]
    rows = []
    for label, settings, _, amp in configs:
        summary = _summary(times[label])
        rows.append({
            "step": label,
            "settings": settings | {"autocast": str(amp_dtype).replace("torch.", "") if amp else None},
            "latency_ms_min": summary["min_ms"],
            "latency_ms_median": summary["median_ms"],
            "speedup_vs_before_min": min(times[first]) / min(times[label]),
            "speedup_vs_before_median": statistics.median(times[first]) / statistics.median(times[label]),
            "cpu_ms_min": 1e3 * min(cpu_times[label]),
            "cpu_ms_median": 1e3 * statistics.median(cpu_times[label]),
            "cpu_speedup_vs_before_min": min(cpu_times[first]) / min(cpu_times[label]),
            "cpu_speedup_vs_before_median": statistics.median(cpu_times[first]) / statistics.median(cpu_times[label]),
            "detections_vs_before": _compare_detections(outputs[first], outputs[label]),
        })
    return rows


def format_speedups(rows, results) -> str:
    s = results["settings"]
    lines = [
        f"### Exact inference speed-ups, GridCLIP ({s['input_size'][0]}×{s['input_size'][1]}, "
        f"{s['gridclip_classes']['test']} test classes, {results['machine']['torch_threads']} torch threads, "
        f"{s['iters']} interleaved iterations)",
        "",
        "| step (cumulative) | latency min / median (ms) | speed-up vs before (min / median) | CPU time min / median (ms) "
        "| CPU-time speed-up (min / median) | detections vs before |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        d = row["detections_vs_before"]
        if d.get("same_count") and d.get("same_classes"):
            same = f"{d['num_detections']}, same classes, boxes ±{d['max_box_diff_px']:.1e} px, scores ±{d['max_score_diff']:.1e}"
        else:
            same = (f"{d['num_detections']}; {d.get('matched_within_1px', 0):.0%} matched within 1 px (same class)"
                    + (f", confident ones {d['confident_matched_within_1px']:.0%}" if "confident_matched_within_1px" in d else ""))
        lines.append(f"| {row['step']} | {row['latency_ms_min']:.0f} / {row['latency_ms_median']:.0f} | "
                     f"{row['speedup_vs_before_min']:.2f}× / {row['speedup_vs_before_median']:.2f}× | "
                     f"{row['cpu_ms_min']:.0f} / {row['cpu_ms_median']:.0f} | "
                     f"{row['cpu_speedup_vs_before_min']:.2f}× / {row['cpu_speedup_vs_before_median']:.2f}× | {same} |")
    return "\n".join(lines) + "\n"


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
    """The benchmark as markdown: machine, settings, FLOPs, one table per precision, parameter breakdowns."""
    m, s = results["machine"], results["settings"]
    names = list(results["models"])
    device = m["gpu_name"] or (
        f"CPU only, no GPU: {m['cpu_model']} ({m['cpu_cores']} cores, {m['torch_threads']} torch threads)")
    lines = [
        f"## Benchmark: {' vs '.join(names)}",
        "",
        f"Machine: {device}; Python {m['python']}, torch {m['torch']}, torchvision {m['torchvision']}"
        + (f", CUDA {m['cuda']}" if m["cuda"] else "") + ".",
        f"Input {s['input_size'][0]}×{s['input_size'][1]}; inference batch 1 (models interleaved), training batch "
        f"{s['train_batch']}; {s['iters']} timed iterations after {s['warmup']} warm-up; random weights; GridCLIP "
        f"vocabularies {s['gridclip_classes']['train']} train / {s['gridclip_classes']['test']} test classes; "
        f"AMP = {s['amp_dtype']} autocast; peak memory = {s['memory_measure'].replace('_', ' ')}.",
        "",
    ]
    ratios = results["ratios"]
    with_peers = SAME_VOCAB_PEER_NAME in names and PEER_NAME in names
    ratio_header = " | GridCLIP / FCOS same vocab. | GridCLIP / FCOS 80 |" if with_peers else " |"
    ratio_cols = 2 if with_peers else 0

    if any("flops" in results["models"][n] for n in names):
        lines += ["| FLOPs (fvcore) | " + " | ".join(names) + ratio_header, "|---|" + "---:|" * (len(names) + ratio_cols)]
        cells = [_fmt(results["models"][n].get("flops", {}).get("total", 0) / 1e9, ".1f") + " G" for n in names]
        line = "| inference GFLOPs | " + " | ".join(cells)
        if with_peers:
            line += f" | {_fmt(ratios.get('flops_vs_fcos_same_vocab'), '.2f')}× | {_fmt(ratios.get('flops_vs_fcos_80'), '.2f')}× |"
        else:
            line += " |"
        lines += [line, ""]
        if ratios.get("latency_ratio_over_flop_ratio") is not None:
            lines += [
                f"Fair-peer ratio: time {ratios['latency_vs_fcos_same_vocab']:.2f}× (min {ratios['latency_min_vs_fcos_same_vocab']:.2f}×) "
                f"for {ratios['flops_vs_fcos_same_vocab']:.2f}× the FLOPs: time ratio / FLOP ratio = "
                f"{ratios['latency_ratio_over_flop_ratio']:.3f} (1 = GridCLIP costs exactly its extra FLOPs).",
                "",
            ]
            if "cpu_time_ratio_over_flop_ratio" in ratios:
                lines += [
                    f"On CPU time (the thread's, robust to other processes on a shared machine): "
                    f"{ratios['cpu_time_vs_fcos_same_vocab']:.2f}× for {ratios['flops_vs_fcos_same_vocab']:.2f}× the "
                    f"FLOPs: {ratios['cpu_time_ratio_over_flop_ratio']:.3f}.",
                    "",
                ]
    for precision in s["precisions"]:
        header = "| " + precision + " | " + " | ".join(names) + ratio_header
        lines += [header, "|---|" + "---:|" * (len(names) + ratio_cols)]
        precision_ratios = ratios.get(precision, {})
        rows = [
            ("inference latency, mean (ms)", "inference", "latency_ms", ".1f", "inference_latency"),
            ("inference latency, min (ms)", "inference", "latency_ms_min", ".1f", "inference_latency_min"),
            ("inference CPU time, min (ms)", "inference", "cpu_ms_min", ".1f", "inference_cpu_time_min"),
            ("inference CPU time, median (ms)", "inference", "cpu_ms_median", ".1f", "inference_cpu_time_median"),
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
                cells.append("skipped" if "skipped" in part or not part or key not in part
                             else _fmt(part.get(key), spec))
            if all(cell == "skipped" for cell in cells):
                continue  # the reason is listed under the table
            line = f"| {label} | " + " | ".join(cells)
            if with_peers:
                same = precision_ratios.get(ratio_key) if ratio_key else None
                f80 = (ratios.get("fcos_80", {}).get(precision) or {}).get(ratio_key) if ratio_key else None
                line += "".join(" | " + (_fmt(v, ".2f") + "×" if v else "") for v in (same, f80)) + " |"
            else:
                line += " |"
            lines.append(line)
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
    if "parameters" in ratios:
        lines += [f"Inference parameters ratio (GridCLIP / FCOS same vocabulary): {ratios['parameters']:.2f}× "
                  f"(/ FCOS 80 classes: {ratios['parameters_vs_fcos_80']:.2f}×)", ""]
    if results.get("speedups"):
        lines.append(format_speedups(results["speedups"], results))
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
    parser.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP count")
    parser.add_argument("--speedups", action="store_true",
                        help="also measure GridCLIP's exact inference speed-ups one by one (cumulative, interleaved)")
    parser.add_argument("--compile", action="store_true",
                        help="with --speedups: include torch.compile (about a minute of compiling at R50 size on a CPU)")
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
            print(f"Inference parameters ratio (GridCLIP / FCOS same vocabulary): {results['ratios']['parameters']:.2f}× "
                  f"(/ FCOS 80 classes: {results['ratios']['parameters_vs_fcos_80']:.2f}×)")
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
