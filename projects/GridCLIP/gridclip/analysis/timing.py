"""
Timing and peak memory of inference and training steps, on the same synthetic inputs for every model.

Inference is timed end to end at batch 1 (preprocessing, backbone, head, decoding, NMS); a training
step is Detectron2's SimpleTrainer / AMPTrainer ``run_step`` (forward, losses, backward, optimizer
step), with hooks (e.g. GridCLIP's ``TeacherEmbeddingHook``) wrapping it as in training. Peak memory
is CUDA's max allocated on a GPU, the process's RSS high-water mark on a CPU.
"""
import contextlib
import ctypes
import gc
import statistics
import time

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

__all__ = [
    "PeakMemory",
    "make_inputs",
    "with_classes",
    "autocast",
    "sync",
    "time_summary",
    "amp_support",
    "measure_inference",
    "measure_inference_interleaved",
    "measure_train_step",
    "RepeatBatch",
]


def make_inputs(height: int, width: int, train_batch: int, num_boxes: int = 8, seed: int = 0):
    """
    The same inputs for every model: one test image (dict with "image" uint8 [3, H, W], "height",
    "width") and a training batch of ``train_batch`` images with ``num_boxes`` boxes each. gt classes
    are stored as a fraction in [0, 1) ("class_fraction" [num_boxes]) and mapped to each model's
    vocabulary by :func:`with_classes`.
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


def with_classes(train, num_classes):
    """The training batch of :func:`make_inputs` with "instances" (gt boxes, gt classes in [0, num_classes))."""
    batch = []
    for d in train:
        h, w = d["height"], d["width"]
        classes = (d["class_fraction"] * num_classes).long().clamp_(max=num_classes - 1)
        instances = Instances((h, w), gt_boxes=Boxes(d["gt_boxes"].clone()), gt_classes=classes)
        batch.append({k: v for k, v in d.items() if k not in ("gt_boxes", "class_fraction")} | {"instances": instances})
    return batch


class PeakMemory:
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


def sync(device: torch.device):
    """Wait for the device's queued work (CUDA), so wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str, amp_dtype):
    """``torch.autocast`` to ``amp_dtype`` for precision "amp", nothing for "fp32"."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def time_summary(times):
    """Mean, median and min of times in seconds, in ms."""
    mean = statistics.fmean(times)
    return {"mean_ms": mean * 1e3, "median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3}


def amp_support(device: torch.device, amp_dtype):
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


def _inference_entry(times, peak_mb, outputs, cpu_times=None):
    summary = time_summary(times)
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
    after a reset. CPU (thread) times are reported on a CPU with one torch thread. Returns {name: entry}.
    """
    times = {name: [] for name in models}
    cpu_times = {name: [] for name in models}
    peaks, outputs = {}, {}
    with torch.no_grad():
        for name, model in models.items():  # warm-up, and the peak memory of one pass on its own
            model.eval()
            memory.reset()
            for _ in range(max(warmup, 1)):
                with autocast(device, precision, amp_dtype):
                    outputs[name] = model([test_input])
            peaks[name] = memory.peak_mb()
        for _ in range(iters):
            for name, model in models.items():
                sync(device)
                start, cpu_start = time.perf_counter(), time.thread_time()
                with autocast(device, precision, amp_dtype):
                    outputs[name] = model([test_input])
                sync(device)
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.thread_time() - cpu_start)
    cpu_ok = device.type == "cpu" and torch.get_num_threads() == 1
    return {name: _inference_entry(times[name], peaks[name], outputs[name], cpu_times[name] if cpu_ok else None)
            for name in models}


class RepeatBatch:
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
    loader = RepeatBatch(batch)
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
                sync(device)
                start = time.perf_counter()
                trainer.run_step()
                sync(device)
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
