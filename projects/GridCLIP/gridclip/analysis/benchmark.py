"""
Speed, memory, FLOPs and size of GridCLIP side by side with Detectron2's own FCOS-R50 (the peer),
measured in one run on the same inputs and the same machine (``tools/benchmark.py`` is its command
line).

For each model and precision (fp32, AMP) it measures:
- inference latency / FPS at batch 1 (end to end: preprocessing, backbone, head, decoding, NMS);
- a training step (Detectron2's SimpleTrainer / AMPTrainer ``run_step``: forward, losses, backward,
  optimizer step) on a training batch, as time and images/s; for GridCLIP the step includes the
  ``TeacherEmbeddingHook`` (CLIP teacher on the same device), and its share of the step is reported;
- peak memory of each phase (CUDA max allocated on a GPU, the process's RSS high-water mark on CPU);
- the inference parameter count with a per-part breakdown (:mod:`gridclip.analysis.parameters`).

Both models have random weights (no download): MODEL.CLIP.PRETRAINED and the teacher's PRETRAINED are
forced to "". The text embeddings of GridCLIP's vocabularies are random unit vectors of the LVIS
open-vocabulary sizes (866 training / 1203 test classes by default): they are data for the cosine
classifier, their values do not change the cost. Random weights score every location near the prior,
so decoding keeps the full top-k candidates per level (a worst case, for both models alike).
"""
import logging
import os

import torch
from detectron2.modeling import build_model

from ..engine.teacher_hook import TeacherEmbeddingHook
from ..modeling.head import TextEmbeddingClassifier
from ..modeling.meta_arch import GridCLIP
from .flops import count_flops
from .fcos_peer import COCO_CLASSES, PEER_CONFIG, PEER_NAME, SAME_VOCAB_PEER_NAME, build_fcos_peer, peer_postprocess
from .machine import machine_info
from .parameters import fcos_parameter_breakdown, parameter_breakdown, parameters_entry, random_weights_config
from .speedups import measure_speedups
from .timing import PeakMemory, amp_support, make_inputs, measure_inference_interleaved, measure_train_step, with_classes

__all__ = ["PRECISIONS", "LVIS_BASE_CLASSES", "LVIS_CLASSES", "build_gridclip", "run_benchmark"]

logger = logging.getLogger("gridclip.benchmark")

PRECISIONS = ("fp32", "amp")
#: LVIS v1 open-vocabulary protocol: 866 base classes for training, all 1203 for testing.
LVIS_BASE_CLASSES, LVIS_CLASSES = 866, 1203


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


def run_benchmark(config_file, opts=(), *, device="cpu", size=(800, 1333), iters=10, warmup=3, train_batch=2,
                  precisions=PRECISIONS, amp_dtype=None, num_train_classes=LVIS_BASE_CLASSES,
                  num_test_classes=LVIS_CLASSES, with_peer=True, with_train=True, with_flops=True,
                  with_speedups=False, with_compile=False, params_only=False, seed=0):
    """
    GridCLIP (``config_file`` + ``opts``, random weights) and, ``with_peer``, the two FCOS peers,
    measured on the same inputs: parameters, FLOPs (``with_flops``), batch-1 inference per precision
    (interleaved), a training step per precision (``with_train``), GridCLIP's speed-up ladder
    (``with_speedups``; ``with_compile`` adds torch.compile), and the ratios to the fair peer.

    Args:
        size: (height, width) of every image. precisions: subset of :data:`PRECISIONS`.
        amp_dtype: "fp16" / "bf16" (None: fp16 on CUDA, bf16 on CPU).
        num_train_classes, num_test_classes: GridCLIP's vocabulary sizes (random text embeddings).
        params_only: parameter counts only (no FLOPs, no timing).

    Returns:
        the JSON-ready dict ("machine", "settings", "models", "flops", "ratios", optionally "speedups").
    """
    device_name, device = device, torch.device(device)  # the name (as given) and the torch.device
    precisions = list(precisions)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[amp_dtype or ("fp16" if device.type == "cuda" else "bf16")]
    memory = PeakMemory(device)
    height, width = size
    # Real vocabularies are replaced by random embeddings in build_gridclip: skip encoding them.
    cfg = random_weights_config(config_file, opts, device_name)
    test_input, train = make_inputs(height, width, train_batch, seed=seed)
    gridclip_name = os.path.splitext(os.path.basename(config_file))[0]
    num_train = num_train_classes
    num_test = num_test_classes
    postprocess = peer_postprocess(cfg)

    # The fair peer first: FCOS-R50 scoring GridCLIP's test vocabulary, with GridCLIP's decoder.
    specs = [
        (gridclip_name, lambda: build_gridclip(cfg, num_train, num_test, seed=seed), parameter_breakdown,
         lambda m: m.num_classes),
    ]
    if with_peer:
        specs.append((SAME_VOCAB_PEER_NAME, lambda: build_fcos_peer(device_name, seed, postprocess, num_test,
                                                                     gridclip_decoder=True),
                      fcos_parameter_breakdown, lambda m: m.num_classes))
        specs.append((PEER_NAME, lambda: build_fcos_peer(device_name, seed, postprocess), fcos_parameter_breakdown,
                      lambda m: m.num_classes))

    results = {
        "machine": machine_info(device_name),
        "settings": {
            "config_file": config_file,
            "opts": list(opts),
            "peer": f"detectron2 model_zoo {PEER_CONFIG} (GN head, {COCO_CLASSES} classes)",
            "same_vocab_peer": None if not with_peer else (
                f"detectron2 model_zoo {PEER_CONFIG} (GN head, {num_test} classes = GridCLIP's test vocabulary; "
                "GridCLIP's decoder, BN folding and channels_last)"),
            "peer_postprocess": None if not with_peer else postprocess,
            "input_size": [height, width],
            "train_batch": train_batch,
            "iters": iters,
            "warmup": warmup,
            "precisions": list(precisions),
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
    amp_skip = amp_support(device, amp_dtype)
    models, entries = {}, {}
    for name, build, breakdown, num_classes_of in specs:
        model = build()
        models[name] = model
        entry = {"parameters": parameters_entry(breakdown(model)), "num_train_classes": int(num_classes_of(model))}
        if isinstance(model, GridCLIP):
            entry["num_test_classes"] = model.num_test_classes
        elif name == SAME_VOCAB_PEER_NAME:
            entry["num_test_classes"] = int(num_classes_of(model))
        entries[name] = entry
    results["models"] = entries

    if not params_only and with_flops:
        for name, model in models.items():
            logger.info("%s: FLOPs", name)
            entries[name]["flops"] = count_flops(model, test_input)
        results["flops"]["gridclip"] = entries[gridclip_name]["flops"]["total"]
        if with_peer:
            results["flops"]["fcos_same_vocab"] = entries[SAME_VOCAB_PEER_NAME]["flops"]["total"]
            results["flops"]["fcos_80"] = entries[PEER_NAME]["flops"]["total"]

    for precision in ([] if params_only else precisions):
        if precision == "amp" and amp_skip:
            for name in models:
                entries[name][precision] = {"skipped": amp_skip}
            continue
        logger.info("inference %s (interleaved): %s", precision, ", ".join(models))
        inference = measure_inference_interleaved(models, test_input, device, precision, amp_dtype, iters,
                                                  warmup, memory)
        for name in models:
            entries[name][precision] = {"inference": inference[name]}

    if with_speedups and not params_only:
        logger.info("%s: exact inference speed-ups, one by one", gridclip_name)
        results["speedups"] = measure_speedups(models[gridclip_name], test_input, device, amp_dtype, iters,
                                               warmup, with_compile=with_compile)

    for name, model in models.items():
        is_gridclip = isinstance(model, GridCLIP)
        teacher_hook = None
        if is_gridclip and model.image_align and not params_only and with_train:
            teacher_hook = TeacherEmbeddingHook(cfg)
        batch = with_classes(train, entries[name]["num_train_classes"])
        for precision in ([] if params_only else precisions):
            if "skipped" in entries[name][precision]:
                continue
            if not with_train:
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
                    hook = teacher_hook if precision == precisions[0] else TeacherEmbeddingHook(cfg)
                train_result = measure_train_step(model, batch, device, precision, amp_dtype, iters,
                                                  warmup, memory, hook)
            entries[name][precision]["train"] = train_result
    models.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    if with_peer:
        g, same, f80 = (entries[n] for n in (gridclip_name, SAME_VOCAB_PEER_NAME, PEER_NAME))
        ratios = results["ratios"]
        ratios["parameters"] = g["parameters"]["inference_total"] / same["parameters"]["inference_total"]
        ratios["parameters_vs_fcos_80"] = g["parameters"]["inference_total"] / f80["parameters"]["inference_total"]
        if results["flops"]:
            ratios["flops_vs_fcos_same_vocab"] = results["flops"]["gridclip"] / results["flops"]["fcos_same_vocab"]
            ratios["flops_vs_fcos_80"] = results["flops"]["gridclip"] / results["flops"]["fcos_80"]
        ratios["fcos_80"] = {}
        for precision in ([] if params_only else precisions):
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
