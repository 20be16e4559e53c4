"""
Detectron2 v0.6 on today's stack (torch >= 2.6, numpy 2, Pillow >= 10, Python 3.11, setuptools 80).

Every fix here is applied from our side, on import of :mod:`gridclip`; no installed file is edited.
Each function fixes one upstream behaviour, named in its one-line docstring, and has a test in
``tests/test_compat.py`` that reproduces the upstream failure with the fix disabled.

Set ``GRIDCLIP_DISABLE_COMPAT=1`` to import gridclip without applying any fix, or to a comma-separated
list of fix names (see ``FIXES``) to skip just those (used by those tests).
"""
import functools
import importlib.util
import logging
import os
import random
import sys
import types
import warnings

import numpy as np
import PIL.Image

__all__ = ["apply_all", "APPLIED", "FIXES"]

logger = logging.getLogger(__name__)

#: names of the fixes that were applied in this process
APPLIED = []


def fix_pillow_constants():
    """Pillow >= 10 removed ``Image.LINEAR``: ``detectron2.data.transforms`` fails to import."""
    if not hasattr(PIL.Image, "LINEAR"):
        PIL.Image.LINEAR = PIL.Image.Resampling.BILINEAR


def fix_numpy_aliases():
    """numpy >= 1.24 removed ``np.float/int/bool/str/object``: LVISEval.accumulate, VOC loading crash."""
    # Restored as the builtins they always aliased; only set when missing (numpy < 1.24 untouched).
    for name, builtin in (("float", float), ("int", int), ("bool", bool), ("str", str), ("object", object)):
        if name not in np.__dict__:
            setattr(np, name, builtin)


def fix_pkg_resources_warning():
    """setuptools >= 67 warns on every ``import pkg_resources`` (model_zoo); setuptools 81 removes it."""
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    if importlib.util.find_spec("pkg_resources") is None:
        raise ImportError(
            "detectron2.model_zoo needs pkg_resources, which setuptools >= 81 removed. "
            "Install setuptools<81 (make setup pins it)."
        )


def fix_map_dataset_fallback():
    """Python 3.11 ``random.sample`` rejects sets: MapDataset crashes when a mapper returns None."""
    from detectron2.data import common

    def __getitem__(self, idx):
        retry_count = 0
        cur_idx = int(idx)
        while True:
            data = self._map_func(self._dataset[cur_idx])
            if data is not None:
                self._fallback_candidates.add(cur_idx)
                return data
            retry_count += 1
            self._fallback_candidates.discard(cur_idx)
            if not self._fallback_candidates:
                raise RuntimeError("Every element of the dataset failed to load; see warnings above.")
            cur_idx = self._rng.choice(sorted(self._fallback_candidates))
            if retry_count >= 3:
                logging.getLogger(common.__name__).warning(
                    "Failed to apply `_map_func` for idx: {}, retry count: {}".format(idx, retry_count)
                )

    __getitem__.__doc__ = common.MapDataset.__getitem__.__doc__
    common.MapDataset.__getitem__ = __getitem__


def fix_lr_scheduler_hook_state():
    """torch >= 2.0 renamed ``_LRScheduler``: hooks.LRScheduler silently drops scheduler state on save."""
    import torch
    from detectron2.engine import hooks

    base = getattr(torch.optim.lr_scheduler, "LRScheduler", torch.optim.lr_scheduler._LRScheduler)

    def state_dict(self):
        if isinstance(self.scheduler, base):
            return self.scheduler.state_dict()
        return {}

    def load_state_dict(self, state_dict):
        if isinstance(self.scheduler, base):
            logging.getLogger(hooks.__name__).info("Loading scheduler from state_dict ...")
            self.scheduler.load_state_dict(state_dict)

    hooks.LRScheduler.state_dict = state_dict
    hooks.LRScheduler.load_state_dict = load_state_dict


def fix_group_norm_head_probe():
    """RetinaNetHead/FCOSHead with norm="GN" crash in ``__init__`` on ``get_norm(norm, 1)``."""
    from torch import nn
    from detectron2.layers import get_norm
    from detectron2.modeling.meta_arch import retinanet

    if getattr(retinanet.get_norm, "_gridclip_patched", False):
        return

    @functools.wraps(get_norm)
    def get_norm_with_probe(norm, out_channels):
        # The head only calls get_norm(norm, 1) to read the norm's type name; GN needs >= 32 channels.
        if out_channels == 1 and norm == "GN":
            return nn.GroupNorm(1, 1)
        return get_norm(norm, out_channels)

    get_norm_with_probe._gridclip_patched = True
    retinanet.get_norm = get_norm_with_probe


def fix_export_without_caffe2():
    """torch no longer ships caffe2: ``import detectron2.export`` fails, breaking utils.analysis."""
    try:
        import detectron2.export  # noqa: F401  (a torch that still has caffe2: nothing to do)
        return
    except ImportError:
        pass
    for name in [m for m in sys.modules if m == "detectron2.export" or m.startswith("detectron2.export.")]:
        del sys.modules[name]
    spec = importlib.util.find_spec("detectron2.export")
    package = types.ModuleType("detectron2.export", "Detectron2 export (caffe2-free subset; see gridclip.compat)")
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    package.__package__ = "detectron2.export"
    sys.modules["detectron2.export"] = package
    import detectron2

    detectron2.export = package
    from detectron2.export.flatten import TracingAdapter
    from detectron2.export.torchscript import dump_torchscript_IR, scripting_with_instances

    package.TracingAdapter = TracingAdapter
    package.scripting_with_instances = scripting_with_instances
    package.dump_torchscript_IR = dump_torchscript_IR
    package.__all__ = ["TracingAdapter", "scripting_with_instances", "dump_torchscript_IR"]


def fix_cpu_ddp_device_ids():
    """create_ddp_model passes ``device_ids=[local_rank]``, which DDP rejects for CPU models."""
    from detectron2.engine import defaults
    from detectron2.utils import comm

    original = defaults.create_ddp_model
    if getattr(original, "_gridclip_patched", False):
        return

    @functools.wraps(original)
    def create_ddp_model(model, *, fp16_compression=False, **kwargs):
        if comm.get_world_size() > 1 and "device_ids" not in kwargs:
            first = next(model.parameters(), None)
            if first is None or first.device.type == "cpu":
                kwargs["device_ids"] = None
        return original(model, fp16_compression=fp16_compression, **kwargs)

    create_ddp_model._gridclip_patched = True
    defaults.create_ddp_model = create_ddp_model
    import detectron2.engine as engine

    engine.create_ddp_model = create_ddp_model


def fix_checkpointer_weights_only_message():
    """torch >= 2.6 loads with ``weights_only=True``: a .pth holding numpy objects fails obscurely."""
    from detectron2.checkpoint import DetectionCheckpointer

    original = DetectionCheckpointer._load_file
    if getattr(original, "_gridclip_patched", False):
        return

    @functools.wraps(original)
    def _load_file(self, filename):
        import pickle

        try:
            return original(self, filename)
        except pickle.UnpicklingError as e:
            if "weights_only" not in str(e):
                raise
            raise pickle.UnpicklingError(
                f"Refusing to unpickle {filename}: it holds objects other than tensors, and torch loads "
                "checkpoints with weights_only=True. If you trust this file, re-save its tensors once: "
                "`sd = torch.load(path, weights_only=False)['model']` then `torch.save({'model': sd}, new_path)`."
            ) from e

    _load_file._gridclip_patched = True
    DetectionCheckpointer._load_file = _load_file


#: (name, function) in the order they are applied; pure-Python fixes first so detectron2 imports.
FIXES = [
    ("pillow_constants", fix_pillow_constants),
    ("numpy_aliases", fix_numpy_aliases),
    ("pkg_resources_warning", fix_pkg_resources_warning),
    ("map_dataset_fallback", fix_map_dataset_fallback),
    ("lr_scheduler_hook_state", fix_lr_scheduler_hook_state),
    ("group_norm_head_probe", fix_group_norm_head_probe),
    ("export_without_caffe2", fix_export_without_caffe2),
    ("cpu_ddp_device_ids", fix_cpu_ddp_device_ids),
    ("checkpointer_weights_only_message", fix_checkpointer_weights_only_message),
]


def apply_all():
    """Apply every fix once (idempotent). Returns the names applied in this process."""
    disabled = {n.strip() for n in os.environ.get("GRIDCLIP_DISABLE_COMPAT", "").split(",") if n.strip()}
    if "1" in disabled:
        return APPLIED
    unknown = disabled - {name for name, _ in FIXES}
    if unknown:
        raise ValueError(f"GRIDCLIP_DISABLE_COMPAT names unknown fixes {sorted(unknown)}; known: {[n for n, _ in FIXES]}")
    for name, fix in FIXES:
        if name not in APPLIED and name not in disabled:
            fix()
            APPLIED.append(name)
    return APPLIED
