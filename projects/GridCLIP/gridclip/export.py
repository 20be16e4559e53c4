"""
Export of GridCLIP with a fixed vocabulary to TorchScript and/or ONNX, through Detectron2's
``TracingAdapter`` (``torch.jit.trace``), checked against PyTorch (``tools/export_model.py`` is its
command line).

The exported model takes one image, a uint8 tensor [3, H, W] in the config's INPUT.FORMAT (RGB), of the
export size, and returns Detectron2's flattened Instances: boxes [N, 4] (x0, y0, x1, y1 in input
pixels), scores [N], classes [N] (indices into the vocabulary written to ``export_info.json``). The
vocabulary's text embeddings are constants inside the exported graph. Decoding in the exported graph is
the dense reference decoder (same detections as the PyTorch model's exact bound decoder; its control
flow does not depend on the data). Nothing is overwritten: an existing output file is an error.
"""
import json
import os
import time
import warnings

import torch

from .tool_errors import ToolError, check_writable_dir

__all__ = [
    "FORMATS",
    "OUTPUT_NAMES",
    "ExportableGridCLIP",
    "sample_input",
    "output_files",
    "export_model",
    "compare_outputs",
    "check_onnx",
    "describe_export",
]

FORMATS = ("torchscript", "onnx")
OUTPUT_NAMES = ("boxes", "classes", "scores", "image_size")
DEFAULT_SIZE = (800, 1333)


def sample_input(cfg, size=None, sample_image=None):
    """
    The image to trace with, uint8 [3, H, W]: ``sample_image`` (a path; resized as the config's test
    transform, then to ``size`` if given) or a random one of ``size`` (default 800 x 1333).
    """
    if sample_image:
        from detectron2.data import detection_utils
        from detectron2.data import transforms as T

        image = detection_utils.read_image(sample_image, format=cfg.INPUT.FORMAT)
        resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        image = resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(image.transpose(2, 0, 1).copy())
        if size and tuple(size) != tuple(tensor.shape[1:]):
            tensor = torch.nn.functional.interpolate(tensor[None].float(), size=tuple(size), mode="bilinear",
                                                     align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        return tensor
    height, width = size or DEFAULT_SIZE
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)


class ExportableGridCLIP:
    """``TracingAdapter`` over a GridCLIP model: image tensor [3, H, W] -> (boxes, classes, scores, image size)."""

    def __init__(self, model, image):
        from detectron2.export import TracingAdapter

        self.model = model.eval()
        self.adapter = TracingAdapter(self.model, [{"image": image}], inference_func=self._inference)
        self.adapter.eval()

    @staticmethod
    def _inference(model, inputs):
        return [model(inputs)[0]["instances"]]

    def pytorch_outputs(self, image):
        with torch.no_grad():
            return self.adapter(image)

    def trace(self):
        with torch.no_grad():
            return torch.jit.trace(self.adapter, self.adapter.flattened_inputs, check_trace=False)


def output_files(output, formats) -> dict:
    """The files an export of ``formats`` into folder ``output`` writes; ToolError if any exists already."""
    output = check_writable_dir(output)
    targets = {"torchscript": os.path.join(output, "model.ts"), "onnx": os.path.join(output, "model.onnx"),
               "info": os.path.join(output, "export_info.json")}
    for fmt in [*formats, "info"]:
        if os.path.exists(targets[fmt]):
            raise ToolError(f"{targets[fmt]} exists; choose another --output (nothing is overwritten).")
    return targets


def export_model(config_file, output, *, formats=FORMATS, vocabulary=None, size=None, sample_image=None,
                 opset=17, check=True, opts=()):
    """
    Export ``config_file`` + ``opts`` (MODEL.WEIGHTS among them, if any) with ``vocabulary`` (None:
    the config's test vocabulary) into folder ``output``: ``model.ts`` / ``model.onnx`` and
    ``export_info.json``, the returned report (input, class names, files, checks against PyTorch,
    timings).
    """
    from .predictor import GridCLIPPredictor

    # Tracing warns about every Python-level shape use (they are constants of the fixed export size).
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*torch.onnx.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export.*")

    targets = output_files(output, formats)
    weights = None
    opts = list(opts)
    if "MODEL.WEIGHTS" in opts[::2]:
        weights = opts[opts[::2].index("MODEL.WEIGHTS") * 2 + 1]
    predictor = GridCLIPPredictor(config_file, weights=weights, vocabulary=vocabulary, opts=opts, device="cpu")
    model = predictor.model.eval()
    image = sample_input(predictor.cfg, size, sample_image)
    exportable = ExportableGridCLIP(model, image)
    reference = exportable.pytorch_outputs(image)
    pytorch_times = []
    for _ in range(2):
        start = time.perf_counter()
        exportable.pytorch_outputs(image)
        pytorch_times.append(time.perf_counter() - start)
    report = {"input": {"shape": list(image.shape), "dtype": "uint8", "format": predictor.cfg.INPUT.FORMAT},
              "outputs": list(OUTPUT_NAMES), "class_names": list(model.test_class_names),
              "config_file": os.path.abspath(config_file), "opts": opts, "files": {}, "checks": {},
              "pytorch_latency_ms_min": 1e3 * min(pytorch_times), "torch_threads": torch.get_num_threads()}
    timings = report["timings_s"] = {}
    start = time.perf_counter()
    traced = exportable.trace()
    timings["trace"] = time.perf_counter() - start
    if "torchscript" in formats:
        start = time.perf_counter()
        traced.save(targets["torchscript"])
        report["files"]["torchscript"] = targets["torchscript"]
        if check:
            loaded = torch.jit.load(targets["torchscript"])
            with torch.no_grad():
                report["checks"]["torchscript"] = compare_outputs(reference, loaded(image))
        timings["torchscript"] = time.perf_counter() - start
    if "onnx" in formats:
        start = time.perf_counter()
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ToolError("ONNX export needs the 'onnx' package: pip install onnx (see requirements.txt).") from None
        with torch.no_grad():
            torch.onnx.export(traced, (image,), targets["onnx"], dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=list(OUTPUT_NAMES), do_constant_folding=True)
        report["files"]["onnx"] = targets["onnx"]
        timings["onnx_export"] = time.perf_counter() - start
        if check:
            start = time.perf_counter()
            report["checks"]["onnx"] = check_onnx(targets["onnx"], image, reference)
            timings["onnx_check"] = time.perf_counter() - start
    with open(targets["info"], "x") as f:  # "x": never overwrite (checked above, enforced here)
        json.dump(report, f, indent=2)
    return report


def compare_outputs(reference, outputs) -> dict:
    """
    Detections of an exported model vs PyTorch: counts, and order-free matching (detections with equal
    scores may come in another order): the share of PyTorch's detections that the export has with the
    same class, a box within 0.01 px and a score within 1e-5, and the largest box / score differences
    of those nearest matches.
    """
    ref_boxes, ref_classes, ref_scores = (torch.as_tensor(x) for x in reference[:3])
    boxes, classes, scores = (torch.as_tensor(x) for x in outputs[:3])
    result = {"num_detections": int(len(scores)), "reference_num_detections": int(len(ref_scores)),
              "same_count": len(scores) == len(ref_scores)}
    if len(scores) and len(ref_scores):
        dist = torch.cdist(ref_boxes.double(), boxes.double(), p=float("inf"))
        dist += (ref_scores.double()[:, None] - scores.double()[None, :]).abs() * 1e3  # prefer equal scores
        dist[ref_classes.long()[:, None] != classes.long()[None, :]] = float("inf")
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


def check_onnx(path, image, reference) -> dict:
    """Run the ONNX file with onnxruntime (CPU) on ``image``; compare with PyTorch and time it."""
    try:
        import onnxruntime
    except ImportError:
        return {"skipped": "onnxruntime is not installed (pip install onnxruntime, see requirements.txt)"}

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as PyTorch, for comparable timings
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image.numpy()}
    outputs = session.run(None, feed)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return compare_outputs(reference, outputs) | {"onnxruntime_latency_ms_min": 1e3 * min(times),
                                                  "onnxruntime": onnxruntime.__version__}


def describe_export(report):
    """One line per exported file: its path and the check against PyTorch."""
    lines = []
    for fmt, path in report["files"].items():
        check = report["checks"].get(fmt, {})
        detail = ("" if not check else f"; {check['skipped']}" if "skipped" in check else
                  f"; {check['num_detections']} detections, PyTorch {check['reference_num_detections']}"
                  + (f", {check['matched']:.0%} matched (same class, box ±{check['max_box_diff_px']:.1e} px, "
                     f"score ±{check['max_score_diff']:.1e})" if check.get("max_box_diff_px") is not None else "")
                  + (f", onnxruntime {check['onnxruntime_latency_ms_min']:.0f} ms (PyTorch "
                     f"{report['pytorch_latency_ms_min']:.0f} ms, {report['torch_threads']} threads)"
                     if "onnxruntime_latency_ms_min" in check else ""))
        lines.append(f"{fmt}: {path}{detail}")
    return lines
