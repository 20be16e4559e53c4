"""
The effect of each exact inference speed-up on GridCLIP, one by one (a cumulative ladder, timed
interleaved), with each step's detections compared with those of the first step.
"""
import logging
import statistics
import time

import torch

from .timing import amp_support, autocast, sync, time_summary

__all__ = ["speedup_steps", "measure_speedups", "compare_detections"]

logger = logging.getLogger("gridclip.benchmark")


def compare_detections(reference, ours):
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
    The effect of each exact inference speed-up on a GridCLIP ``model`` (cumulative, interleaved: one
    iteration of every step in turn), with each step's detections compared with the first step's.
    Returns one row (dict) per step of :func:`speedup_steps`.
    """
    amp_ok = amp_support(device, amp_dtype) is None
    steps = speedup_steps(with_compile, amp_ok)
    configs, settings = [], {}
    for label, change, today_classifier, amp in steps:
        settings = {**settings, **change}
        configs.append((label, dict(settings), today_classifier, amp))
    model.eval()

    def run(settings, today_classifier, amp):
        model.configure_inference(**settings)
        if today_classifier:
            # the code before: classifier module, no casts (the model's own vocabulary: no snapshot given)
            model.inference_predictions = lambda predictions, *vocabulary: model.dense_predictions(predictions)
        try:
            with torch.no_grad(), autocast(device, "amp" if amp else "fp32", amp_dtype):
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
            sync(device)
            start, cpu_start = time.perf_counter(), time.thread_time()
            outputs[label] = run(settings, today_classifier, amp)
            sync(device)
            times[label].append(time.perf_counter() - start)
            cpu_times[label].append(time.thread_time() - cpu_start)
    model.configure_inference(**{**configs[-1][1], "compile_inference": False})
    first = configs[0][0]
    rows = []
    for label, settings, _, amp in configs:
        summary = time_summary(times[label])
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
            "detections_vs_before": compare_detections(outputs[first], outputs[label]),
        })
    return rows
