#!/usr/bin/env python
"""
Export GridCLIP with a fixed vocabulary to TorchScript and/or ONNX, through Detectron2's
``TracingAdapter`` (``torch.jit.trace``), and check the exported model against PyTorch.

The exported model takes one image, a uint8 tensor [3, H, W] in the config's INPUT.FORMAT (RGB), of the
export size (``--size``, or the size of ``--sample-image`` after the config's test resize), and returns
Detectron2's flattened Instances: boxes [N, 4] (x0, y0, x1, y1 in input pixels), scores [N], classes [N]
(indices into the vocabulary written to ``export_info.json``). The vocabulary's text embeddings are
constants inside the exported graph. Decoding in the exported graph is the dense reference decoder (same
detections as the PyTorch model's exact bound decoder; its control flow does not depend on the data).

    python tools/export_model.py --config-file configs/GridCLIP-R50-FPN-2x.yaml --vocabulary coco \\
        --format torchscript onnx --output export/ MODEL.WEIGHTS output/model_final.pth
    python tools/export_model.py --config-file configs/GridCLIP-Tiny-Synthetic.yaml --size 256 256 --output export/

Nothing is overwritten: an existing output file is an error. ONNX needs the ``onnx`` package;
checking it needs ``onnxruntime`` (both optional, see requirements.txt).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gridclip.tool_errors import ToolError, check_writable_dir, run_tool  # noqa: E402

FORMATS = ("torchscript", "onnx")
OUTPUT_NAMES = ("boxes", "classes", "scores", "image_size")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="GridCLIP config")
    parser.add_argument("--vocabulary", default=None,
                        help="vocabulary baked into the export: lvis, lvis_base, coco, voc, 'a,b,c', a file "
                             "(default: the config's test vocabulary, as the predictor resolves it)")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--output", required=True, help="output folder (model.ts / model.onnx / export_info.json)")
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="input size of the exported model (default: --sample-image's size, else 800 1333)")
    parser.add_argument("--sample-image", default=None, help="an image to trace with and to check the export on")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default %(default)s)")
    parser.add_argument("--no-check", action="store_true", help="do not compare the exported models with PyTorch")
    parser.add_argument("--threads", type=int, default=None, help="torch (and onnxruntime) CPU threads")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.size is not None and min(args.size) < 32:
        parser.error(f"--size {args.size[0]} {args.size[1]}: both sides must be >= 32 pixels")
    if not os.path.isfile(args.config_file):
        parser.error(f"config file not found: {args.config_file}")
    if args.sample_image and not os.path.isfile(args.sample_image):
        parser.error(f"--sample-image not found: {args.sample_image}")
    return args


def sample_input(args, cfg):
    """The image dict to trace with: --sample-image (resized as the config's test transform) or a random one."""
    import torch

    if args.sample_image:
        from detectron2.data import detection_utils
        from detectron2.data import transforms as T

        image = detection_utils.read_image(args.sample_image, format=cfg.INPUT.FORMAT)
        resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        image = resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(image.transpose(2, 0, 1).copy())
        if args.size and tuple(args.size) != tuple(tensor.shape[1:]):
            tensor = torch.nn.functional.interpolate(tensor[None].float(), size=tuple(args.size), mode="bilinear",
                                                     align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        return tensor
    height, width = args.size or (800, 1333)
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
        import torch

        with torch.no_grad():
            return self.adapter(image)

    def trace(self):
        import torch

        with torch.no_grad():
            return torch.jit.trace(self.adapter, self.adapter.flattened_inputs, check_trace=False)


def output_files(args) -> dict:
    """The files the export writes; an error if any exists already (checked before anything slow)."""
    output = check_writable_dir(args.output)
    targets = {"torchscript": os.path.join(output, "model.ts"), "onnx": os.path.join(output, "model.onnx"),
               "info": os.path.join(output, "export_info.json")}
    for fmt in [*args.format, "info"]:
        if os.path.exists(targets[fmt]):
            raise ToolError(f"{targets[fmt]} exists; choose another --output (nothing is overwritten).")
    return targets


def export(args):
    import warnings

    import torch

    # Tracing warns about every Python-level shape use (they are constants of the fixed export size).
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*torch.onnx.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export.*")

    import gridclip  # noqa: F401  (Detectron2 compatibility fixes, registrations)
    from gridclip.predictor import GridCLIPPredictor

    targets = output_files(args)
    weights = None
    opts = list(args.opts)
    if "MODEL.WEIGHTS" in opts[::2]:
        weights = opts[opts[::2].index("MODEL.WEIGHTS") * 2 + 1]
    predictor = GridCLIPPredictor(args.config_file, weights=weights, vocabulary=args.vocabulary, opts=opts,
                                  device="cpu")
    model = predictor.model.eval()
    image = sample_input(args, predictor.cfg)
    exportable = ExportableGridCLIP(model, image)
    reference = exportable.pytorch_outputs(image)
    pytorch_times = []
    for _ in range(2):
        start = time.perf_counter()
        exportable.pytorch_outputs(image)
        pytorch_times.append(time.perf_counter() - start)
    report = {"input": {"shape": list(image.shape), "dtype": "uint8", "format": predictor.cfg.INPUT.FORMAT},
              "outputs": list(OUTPUT_NAMES), "class_names": list(model.test_class_names),
              "config_file": os.path.abspath(args.config_file), "opts": opts, "files": {}, "checks": {},
              "pytorch_latency_ms_min": 1e3 * min(pytorch_times), "torch_threads": torch.get_num_threads()}
    timings = report["timings_s"] = {}
    start = time.perf_counter()
    traced = exportable.trace()
    timings["trace"] = time.perf_counter() - start
    if "torchscript" in args.format:
        start = time.perf_counter()
        traced.save(targets["torchscript"])
        report["files"]["torchscript"] = targets["torchscript"]
        if not args.no_check:
            loaded = torch.jit.load(targets["torchscript"])
            with torch.no_grad():
                report["checks"]["torchscript"] = compare_outputs(reference, loaded(image))
        timings["torchscript"] = time.perf_counter() - start
    if "onnx" in args.format:
        start = time.perf_counter()
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ToolError("ONNX export needs the 'onnx' package: pip install onnx (see requirements.txt).") from None
        with torch.no_grad():
            torch.onnx.export(traced, (image,), targets["onnx"], dynamo=False, opset_version=args.opset,
                              input_names=["image"], output_names=list(OUTPUT_NAMES), do_constant_folding=True)
        report["files"]["onnx"] = targets["onnx"]
        timings["onnx_export"] = time.perf_counter() - start
        if not args.no_check:
            start = time.perf_counter()
            report["checks"]["onnx"] = check_onnx(targets["onnx"], image, reference)
            timings["onnx_check"] = time.perf_counter() - start
    with open(targets["info"], "x") as f:
        json.dump(report, f, indent=2)
    return report


def compare_outputs(reference, outputs) -> dict:
    """
    Detections of an exported model vs PyTorch: counts, and order-free matching (detections with equal
    scores may come in another order): the share of PyTorch's detections that the export has with the
    same class, a box within 0.01 px and a score within 1e-5, and the largest box / score differences
    of those nearest matches.
    """
    import torch

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
    import torch

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


def main(argv=None):
    args = parse_args(argv)
    output_files(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = export(args)
    for fmt, path in report["files"].items():
        check = report["checks"].get(fmt, {})
        detail = ("" if not check else f"; {check['skipped']}" if "skipped" in check else
                  f"; {check['num_detections']} detections, PyTorch {check['reference_num_detections']}"
                  + (f", {check['matched']:.0%} matched (same class, box ±{check['max_box_diff_px']:.1e} px, "
                     f"score ±{check['max_score_diff']:.1e})" if check.get("max_box_diff_px") is not None else "")
                  + (f", onnxruntime {check['onnxruntime_latency_ms_min']:.0f} ms (PyTorch "
                     f"{report['pytorch_latency_ms_min']:.0f} ms, {report['torch_threads']} threads)"
                     if "onnxruntime_latency_ms_min" in check else ""))
        print(f"{fmt}: {path}{detail}")
    return report


def cli_main(argv=None):
    main(argv)


if __name__ == "__main__":
    sys.exit(run_tool(cli_main, sys.argv[1:], prog="export_model.py"))
