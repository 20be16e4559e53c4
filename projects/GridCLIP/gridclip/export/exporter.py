"""
Export of GridCLIP to TorchScript and ONNX with the vocabulary as a graph input (or baked in) and
dynamic batch, image size and vocabulary size, plus the text tower on its own; every written file is
checked against PyTorch (``tools/export_model.py`` is its command line, ``docs/EXPORT.md`` the guide).

Files written into the output folder (nothing is overwritten: an existing file is an error):
``model.ts`` / ``model.onnx`` (the detector, input contract in :mod:`.contract`), ``text_encoder.onnx``
(token ids -> unit embeddings, :mod:`.text_tower`), ``class_embeddings.npy`` (the exported vocabulary's
[K, D] embeddings, float32) and ``export_info.json`` (class names, the contract, input and output names,
the text encoder's identity and prompt templates, checks, timings).
"""
import json
import os
import time
import warnings

import numpy as np
import torch
from torch.nn import functional as F

from ..tool_errors import ToolError, check_writable_dir
from .checks import compare_outputs, load_torchscript, measure_latency, onnx_session, pytorch_detections, run_onnx
from .contract import InputContract, padded_size, resized_size
from .detector import BakedVocabulary, ExportableGridCLIP
from .runtime_checks import checked_torchscript, name_onnx_contract_node
from .text_tower import ExportableTextTower

__all__ = ["FORMATS", "INPUT_NAMES", "OUTPUT_NAMES", "output_files", "make_batch", "export_model", "describe_export"]

FORMATS = ("torchscript", "onnx")
INPUT_NAMES = ("images", "image_sizes", "class_embeddings")
OUTPUT_NAMES = ("boxes", "scores", "classes", "batch_index")
#: original (height, width) of the random check images, resized by the config's test resize
CHECK_SHAPES = ((480, 640), (640, 480), (300, 900))


def output_files(output, formats, text_encoder: bool = True) -> dict:
    """The files an export of ``formats`` into folder ``output`` writes; ToolError if any exists already."""
    output = check_writable_dir(output)
    names = {"torchscript": "model.ts", "onnx": "model.onnx", "info": "export_info.json",
             "class_embeddings": "class_embeddings.npy"}
    if text_encoder and "onnx" in formats:
        names["text_encoder"] = "text_encoder.onnx"
    targets = {key: os.path.join(output, name) for key, name in names.items()
               if key not in FORMATS or key in formats}
    for path in targets.values():
        if os.path.exists(path):
            raise ToolError(f"{path} exists; choose another --output (nothing is overwritten).")
    return targets


def make_batch(contract: InputContract, shapes, images=(), seed=0):
    """
    (images uint8 [B,3,H,W], image_sizes int64 [B,2]) keeping ``contract``: ``images`` (uint8 [3, h, w]
    already resized) first, then random images of original ``shapes`` resized by the test resize.
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = list(images) + [
        torch.randint(0, 256, (3, *resized_size(h, w, contract.min_size, contract.max_size)), generator=generator,
                      dtype=torch.uint8) for h, w in shapes]
    sizes = [tuple(t.shape[1:]) for t in tensors]
    height, width = padded_size(sizes, contract.size_divisibility)
    batch = torch.zeros(len(tensors), 3, height, width, dtype=torch.uint8)
    for i, t in enumerate(tensors):
        batch[i, :, :t.shape[1], :t.shape[2]] = t
    return batch, torch.tensor(sizes, dtype=torch.long)


def _read_sample_image(cfg, path):
    from detectron2.data import detection_utils
    from detectron2.data import transforms as T

    image = detection_utils.read_image(path, format=cfg.INPUT.FORMAT)
    if cfg.INPUT.MIN_SIZE_TEST > 0:
        image = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST).get_transform(image).apply_image(image)
    return torch.as_tensor(image.transpose(2, 0, 1).copy())


def _random_embeddings(num, dim, seed=0):
    return F.normalize(torch.randn(num, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def _export_onnx(module, args, path, input_names, dynamic_axes, opset, contract=None):
    import onnx

    with torch.no_grad():
        torch.onnx.export(module, args, path, dynamo=False, opset_version=opset, input_names=list(input_names),
                          output_names=list(dynamic_axes)[len(input_names):], dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
    proto = onnx.load(path)
    if contract is not None:
        name_onnx_contract_node(proto, contract)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)


def export_model(config_file, output, *, formats=FORMATS, vocabulary=None, bake_vocabulary=False,
                 text_encoder=True, sample_image=None, opset=17, check=True, benchmark_repeats=0, opts=()):
    """
    Export ``config_file`` + ``opts`` (MODEL.WEIGHTS among them, if any) with ``vocabulary`` (None: the
    config's test vocabulary, as the predictor resolves it) into folder ``output`` (see the module
    docstring). ``bake_vocabulary``: the vocabulary's embeddings become constants and the graphs take
    (images, image_sizes) only. Returns the report also written to ``export_info.json``.
    """
    from ..modeling.clip_loading import create_clip_model, pretrained_identity
    from ..modeling.text.cache import text_encoder_settings
    from ..modeling.text.prompts import build_prompts, resolve_templates
    from ..predictor import GridCLIPPredictor, load_predictor_config

    # Tracing warns about every Python-level shape use; the exported graphs are checked at other sizes.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*torch.onnx.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export.*")
    warnings.filterwarnings("ignore", message=".*ONNX export mode is set to TrainingMode.*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx\..*")
    formats = list(formats)
    targets = output_files(output, formats, text_encoder)
    if "onnx" in formats:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ToolError("ONNX export needs the 'onnx' and 'onnxruntime' packages (pinned in requirements.txt).") from None
    opts = list(opts)
    weights = opts[opts[::2].index("MODEL.WEIGHTS") * 2 + 1] if "MODEL.WEIGHTS" in opts[::2] else None
    if not bake_vocabulary:  # checked before any work: the graph would score any embeddings it is given alike
        offset = load_predictor_config(config_file, weights, opts, device="cpu").MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET
        if offset:
            raise ToolError(
                f"MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET is {offset}, but a graph that takes the class "
                "embeddings as input cannot know which classes are unseen: bake the vocabulary (--bake-vocabulary) "
                "or export with --opts MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET 0.")
    predictor = GridCLIPPredictor(config_file, weights=weights, vocabulary=vocabulary, opts=opts, device="cpu")
    cfg, model = predictor.cfg, predictor.model.eval()
    model._ensure_test_vocabulary()
    names = list(model.test_class_names)
    embeddings = model.classifier.test_embeddings.detach().clone()  # [K, D], unit rows
    logit_offsets = model.classifier.test_logit_offsets.detach().clone()  # [K], zeros unless calibrated
    contract = InputContract.from_model(cfg, model)
    exportable = ExportableGridCLIP(model, contract)
    module = BakedVocabulary(exportable, embeddings, logit_offsets) if bake_vocabulary else exportable
    # Traced with two images and 7 classes: no dimension of size 1 that a tracer could specialise.
    trace_images, trace_sizes = make_batch(contract, CHECK_SHAPES[:2], seed=1)
    trace_args = (trace_images, trace_sizes) if bake_vocabulary else (trace_images, trace_sizes,
                                                                      _random_embeddings(7, contract.embed_dim))
    input_names = INPUT_NAMES[:2] if bake_vocabulary else INPUT_NAMES
    dynamic_axes = {"images": {0: "batch", 2: "height", 3: "width"}, "image_sizes": {0: "batch"}}
    if not bake_vocabulary:
        dynamic_axes["class_embeddings"] = {0: "num_classes"}
    dynamic_axes.update({name: {0: "num_detections"} for name in OUTPUT_NAMES})

    settings = text_encoder_settings(cfg)
    templates = resolve_templates(settings["templates"])
    report = {
        "input_contract": contract.as_dict(), "inputs": list(input_names), "outputs": list(OUTPUT_NAMES),
        "vocabulary_baked": bool(bake_vocabulary), "class_names": names,
        "class_logit_offsets": [float(v) for v in logit_offsets],
        "class_embeddings_file": os.path.basename(targets["class_embeddings"]),
        "text_encoder": {"clip_model_name": settings["clip_model_name"],
                         "pretrained": pretrained_identity(settings["pretrained"]),
                         "templates": list(templates), "this_is": bool(settings.get("this_is", False)),
                         "recipe": "embed every template.format(name) prompt, average the unit vectors over the "
                                   "templates, L2-normalise"},
        "config_file": os.path.abspath(config_file), "opts": opts, "files": {}, "checks": {},
        "torch_threads": torch.get_num_threads(), "versions": {"torch": torch.__version__},
    }
    timings = report["timings_s"] = {}
    with open(targets["class_embeddings"], "xb") as f:
        np.save(f, embeddings.numpy().astype(np.float32), allow_pickle=False)
    report["files"]["class_embeddings"] = targets["class_embeddings"]
    if "torchscript" in formats:
        start = time.perf_counter()
        with torch.no_grad():
            traced = torch.jit.trace(module, trace_args, check_trace=False)
        checked_torchscript(traced, contract, bake_vocabulary).save(targets["torchscript"])
        report["files"]["torchscript"] = targets["torchscript"]
        timings["torchscript"] = time.perf_counter() - start
    if "onnx" in formats:
        import onnx
        import onnxruntime

        report["versions"].update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
        start = time.perf_counter()
        _export_onnx(module, trace_args, targets["onnx"], input_names, dynamic_axes, opset, contract)
        report["files"]["onnx"] = targets["onnx"]
        timings["onnx"] = time.perf_counter() - start
        if "text_encoder" in targets:
            import open_clip

            start = time.perf_counter()
            clip = create_clip_model(settings["clip_model_name"], settings["pretrained"],
                                     cache_dir=settings.get("clip_cache_dir", ""))
            tower = ExportableTextTower(clip)
            tokenizer = open_clip.get_tokenizer(settings["clip_model_name"])
            _export_onnx(tower, (tokenizer(["a photo of a cat", "a red umbrella"]),), targets["text_encoder"],
                         ["tokens"], {"tokens": {0: "num_prompts"}, "embeddings": {0: "num_prompts"}}, opset)
            report["files"]["text_encoder"] = targets["text_encoder"]
            report["text_encoder"].update(file=os.path.basename(targets["text_encoder"]), input="tokens",
                                          output="embeddings", context_length=tower.context_length,
                                          tokenizer=f"open_clip.get_tokenizer({settings['clip_model_name']!r})")
            timings["text_encoder"] = time.perf_counter() - start
            if check:
                report["checks"]["text_encoder"] = _check_text_encoder(
                    targets["text_encoder"], tower, tokenizer, names[:16], embeddings[:16], templates,
                    report["text_encoder"]["this_is"], build_prompts)
    if check:
        start = time.perf_counter()
        report["checks"].update(_check_detectors(model, contract, targets, formats, bake_vocabulary, embeddings,
                                                 cfg, sample_image, logit_offsets))
        timings["checks"] = time.perf_counter() - start
    if benchmark_repeats and "onnx" in formats:
        images, sizes = make_batch(contract, CHECK_SHAPES[:1], seed=3)
        session = onnx_session(targets["onnx"], threads=torch.get_num_threads())
        report["benchmark"] = {"image_size": sizes[0].tolist(), "num_classes": len(names), "repeats": benchmark_repeats,
                               "threads": torch.get_num_threads(),
                               **measure_latency(model, session, images, sizes, embeddings, benchmark_repeats,
                                                 baked=bake_vocabulary)}
    with open(targets["info"], "x") as f:  # "x": never overwrite (checked above, enforced here)
        json.dump(report, f, indent=2)
    report["files"]["info"] = targets["info"]
    return report


def _check_text_encoder(path, tower, tokenizer, names, embeddings, templates, this_is, build_prompts) -> dict:
    """ONNX text tower vs PyTorch on the vocabulary's prompts, and the class embeddings rebuilt from it."""
    session = onnx_session(path)
    prompts = build_prompts(names, templates, this_is=this_is)
    tokens = tokenizer(prompts)
    onnx_out = torch.from_numpy(run_onnx(session, tokens)[0])
    with torch.no_grad():
        torch_out = tower(tokens)
    rebuilt = F.normalize(onnx_out.view(len(names), len(templates), -1).mean(1), dim=-1)
    return {"prompts": len(prompts), "max_abs_diff_vs_pytorch": float((onnx_out - torch_out).abs().max()),
            "max_abs_diff_class_embeddings": float((rebuilt - embeddings).abs().max())}


def _check_detectors(model, contract, targets, formats, baked, embeddings, cfg, sample_image,
                     logit_offsets=None) -> dict:
    """Each written detector vs the PyTorch model on two batches (and vocabularies), and a refused input."""
    # A batch of 1 (the sample image, else a random one) with the vocabulary; a mixed batch of 3 sizes
    # with another vocabulary (5 random classes) unless the vocabulary is baked in.
    single = make_batch(contract, (), [_read_sample_image(cfg, sample_image)]) if sample_image else \
        make_batch(contract, CHECK_SHAPES[:1], seed=2)
    mixed = make_batch(contract, CHECK_SHAPES, seed=4)
    batches = [single + (embeddings,), mixed + (embeddings if baked else _random_embeddings(5, contract.embed_dim, 1),)]
    runners = {}
    if "torchscript" in formats:
        loaded = load_torchscript(targets["torchscript"])

        def run_torchscript(*args):
            with torch.no_grad():
                return loaded(*args)

        runners["torchscript"] = run_torchscript
    if "onnx" in formats:
        session = onnx_session(targets["onnx"], threads=torch.get_num_threads())
        runners["onnx"] = lambda *args: run_onnx(session, *args)
    checks = {fmt: {"batches": []} for fmt in runners}
    for images, sizes, class_embeddings in batches:
        reference = pytorch_detections(model, images, sizes, class_embeddings, logit_offsets if baked else None)
        args = (images, sizes) if baked else (images, sizes, class_embeddings)
        for fmt, run in runners.items():
            checks[fmt]["batches"].append({"batch": len(sizes), "image_sizes": sizes.tolist(),
                                           "num_classes": len(class_embeddings), **compare_outputs(reference, run(*args))})
    images, sizes = batches[0][0], batches[0][1]
    broken = torch.cat([images, torch.zeros_like(images[:, :, :contract.size_divisibility])], dim=2)  # H too large
    for fmt, run in runners.items():
        try:
            run(*((broken, sizes) if baked else (broken, sizes, batches[0][2])))
            checks[fmt]["refuses_broken_contract"] = False
        except Exception as e:  # noqa: BLE001  (the runtimes raise their own error types)
            checks[fmt]["refuses_broken_contract"] = "INPUT CONTRACT" in str(e).upper()
        batch_checks = checks[fmt]["batches"]
        checks[fmt]["same_detections"] = all(b["same_detections"] for b in batch_checks)
        diffs = [b["max_box_diff_px"] for b in batch_checks if b.get("max_box_diff_px") is not None]
        checks[fmt]["max_box_diff_px"] = max(diffs) if diffs else None
        diffs = [b["max_score_diff"] for b in batch_checks if b.get("max_score_diff") is not None]
        checks[fmt]["max_score_diff"] = max(diffs) if diffs else None
        checks[fmt]["num_detections"] = sum(b["num_detections"] for b in batch_checks)
    return checks


def describe_export(report):
    """One line per written file: its path and its check against PyTorch."""
    lines = []
    for key, path in report["files"].items():
        check = report["checks"].get(key)
        detail = ""
        if key in FORMATS and check:
            detail = (f"; {check['num_detections']} detections on {len(check['batches'])} batches: "
                      f"{'same as PyTorch' if check['same_detections'] else 'DIFFERENT from PyTorch'}"
                      + (f" (boxes ±{check['max_box_diff_px']:.1e} px, scores ±{check['max_score_diff']:.1e})"
                         if check["max_box_diff_px"] is not None else "")
                      + f"; broken input contract {'refused' if check['refuses_broken_contract'] else 'NOT refused'}")
        elif key == "text_encoder" and check:
            detail = (f"; {check['prompts']} prompts, ±{check['max_abs_diff_vs_pytorch']:.1e} vs PyTorch, class "
                      f"embeddings rebuilt ±{check['max_abs_diff_class_embeddings']:.1e}")
        lines.append(f"{key}: {path}{detail}")
    bench = report.get("benchmark")
    if bench:
        lines.append(f"latency at {bench['image_size'][0]}x{bench['image_size'][1]}, {bench['num_classes']} classes, "
                     f"{bench['threads']} thread(s), min of {bench['repeats']}: onnxruntime "
                     f"{bench['onnxruntime_ms_min']:.1f} ms, PyTorch {bench['pytorch_ms_min']:.1f} ms")
    return lines
