"""
Checks of exported files against PyTorch: the reference detections (the GridCLIP model itself, with a
vocabulary given as embeddings), an order-free comparison of detections, running the written
TorchScript / ONNX files, and single-thread latency of onnxruntime vs PyTorch.
"""
import contextlib
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "vocabulary_as",
    "pytorch_detections",
    "compare_outputs",
    "onnx_session",
    "run_onnx",
    "load_torchscript",
    "measure_latency",
]


@contextlib.contextmanager
def vocabulary_as(model, class_embeddings: Tensor, logit_offsets: Optional[Tensor] = None):
    """
    The model scores ``class_embeddings`` [K, D] (rows = classes) with ``logit_offsets`` [K] (None =
    zeros) inside the block; restored after.
    """
    classifier = model.classifier
    saved = (classifier.test_embeddings, classifier.test_logit_offsets, model.test_class_names,
             model._test_vocabulary_pending)
    classifier.set_test_embeddings(class_embeddings, "the checked class embeddings", logit_offsets)
    model.test_class_names = [f"class {i}" for i in range(len(class_embeddings))]
    model._test_vocabulary_pending = False
    try:
        yield model
    finally:
        (classifier.test_embeddings, classifier.test_logit_offsets, model.test_class_names,
         model._test_vocabulary_pending) = saved


def pytorch_detections(model, images: Tensor, image_sizes: Tensor, class_embeddings: Tensor,
                       logit_offsets: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
    """
    The GridCLIP model's own detections (its inference path, exact bound decoder) on the exported graph's
    inputs, in its output layout: boxes [N, 4], scores [N], classes [N], batch_index [N].
    """
    inputs = [{"image": images[i, :, :h, :w]} for i, (h, w) in enumerate(image_sizes.tolist())]
    with torch.no_grad(), vocabulary_as(model, class_embeddings, logit_offsets):
        results = [r["instances"] for r in model(inputs)]
    return (torch.cat([r.pred_boxes.tensor for r in results]), torch.cat([r.scores for r in results]),
            torch.cat([r.pred_classes for r in results]),
            torch.cat([torch.full((len(r),), i, dtype=torch.long) for i, r in enumerate(results)]))


def compare_outputs(reference: Sequence, outputs: Sequence) -> dict:
    """
    Detections of an exported model vs PyTorch, both (boxes, scores, classes, batch_index): counts,
    and order-free matching (equal scores may come in another order): the share of PyTorch's detections
    that the export has in the same image with the same class, a box within 0.01 px and a score within
    1e-5, and the largest box / score differences of those nearest matches.
    """
    ref_boxes, ref_scores, ref_classes, ref_batch = (torch.as_tensor(np.asarray(x)) for x in reference[:4])
    boxes, scores, classes, batch = (torch.as_tensor(np.asarray(x)) for x in outputs[:4])
    result = {"num_detections": int(len(scores)), "reference_num_detections": int(len(ref_scores)),
              "same_count": len(scores) == len(ref_scores)}
    if len(scores) and len(ref_scores):
        dist = torch.cdist(ref_boxes.double(), boxes.double(), p=float("inf"))
        dist += (ref_scores.double()[:, None] - scores.double()[None, :]).abs() * 1e3  # prefer equal scores
        other = (ref_classes.long()[:, None] != classes.long()[None, :]) | (ref_batch.long()[:, None] != batch.long()[None, :])
        dist[other] = float("inf")
        nearest, idx = dist.min(dim=1)
        found = torch.isfinite(nearest)
        box_diff = (ref_boxes - boxes[idx]).abs().max(dim=1).values
        score_diff = (ref_scores - scores[idx]).abs()
        matched = found & (box_diff <= 1e-2) & (score_diff <= 1e-5)
        result["matched"] = float(matched.float().mean())
        result["max_box_diff_px"] = float(box_diff[found].max()) if bool(found.any()) else None
        result["max_score_diff"] = float(score_diff[found].max()) if bool(found.any()) else None
        result["same_detections"] = bool(result["same_count"] and matched.all())
    else:
        result["matched"] = 1.0 if len(scores) == len(ref_scores) else 0.0
        result["same_detections"] = result["same_count"]
    return result


def onnx_session(path: str, threads: int = 1):
    """An onnxruntime CPU session of ``path`` with ``threads`` intra-op threads (one inter-op thread)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # a refused input is raised to the caller: no duplicate log line
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_onnx(session, *inputs: Tensor) -> List[np.ndarray]:
    """``session`` on torch tensors given in the order of its inputs."""
    feed = {arg.name: torch.as_tensor(x).numpy() for arg, x in zip(session.get_inputs(), inputs)}
    return session.run(None, feed)


def load_torchscript(path: str):
    """Reload a TorchScript file this process has just written into its own fresh output folder."""
    return torch.jit.load(path)


def measure_latency(model, session, images: Tensor, image_sizes: Tensor, class_embeddings: Tensor,
                    repeats: int = 5, baked: bool = False) -> Dict[str, float]:
    """
    Wall-clock ms per batch, PyTorch (the model's own inference) vs onnxruntime (``session``), runs
    interleaved (one of each per round, so load changes hit both alike), min and median of ``repeats``.
    """
    onnx_inputs = (images, image_sizes) if baked else (images, image_sizes, class_embeddings)
    pytorch_detections(model, images, image_sizes, class_embeddings)  # warm-up
    run_onnx(session, *onnx_inputs)
    times = {"pytorch": [], "onnxruntime": []}
    for _ in range(repeats):
        start = time.perf_counter()
        pytorch_detections(model, images, image_sizes, class_embeddings)
        times["pytorch"].append(time.perf_counter() - start)
        start = time.perf_counter()
        run_onnx(session, *onnx_inputs)
        times["onnxruntime"].append(time.perf_counter() - start)
    return {f"{name}_ms_{stat}": 1e3 * float(fn(values)) for name, values in times.items()
            for stat, fn in (("min", np.min), ("median", np.median))}
