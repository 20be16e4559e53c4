"""What a measurement ran on: CPU model and flags, cores, threads, library versions, GPU."""
import os
import platform
import re

import torch
import torchvision

__all__ = ["machine_info", "machine_slug"]


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
