"""
The Detectron2 compatibility fixes: one probe + fix pair per upstream problem.

Each fix is a :class:`CompatFix`: a one-line description of the upstream problem (the fix's docstring),
a *probe* ``() -> (problem_exists, why)`` that checks whether the installed packages actually have
that problem (by running the affected code on a tiny input where that is cheap and side-effect free,
otherwise by reading the installed code), and the fix itself, applied from our side (no installed file
is edited) only when the probe finds the problem. No decision depends on a version string.
:func:`gridclip.compat.apply.apply_all` probes and applies them in the order of :data:`FIXES`.
"""
import functools
import importlib.util
import logging
import os
import re
import sys
import tempfile
import types
import warnings
from dataclasses import dataclass
from typing import Callable, Tuple

import numpy as np
import PIL.Image

from .installed_code import files_matching, short_list

__all__ = ["CompatFix", "FIXES"]


@dataclass(frozen=True)
class CompatFix:
    """One upstream problem: ``probe() -> (problem_exists, why)``; ``apply()`` fixes it from our side."""

    name: str
    problem: str
    probe: Callable[[], Tuple[bool, str]]
    apply: Callable[[], None]


_NUMPY_ALIASES = ("float", "int", "bool", "str", "object")
NUMPY_ALIAS_USE = re.compile(rb"\bnp\.(float|int|bool|str|object)\b")


# ---------------------------------------------------------------------------------------- Pillow
def probe_pillow_constants():
    if hasattr(PIL.Image, "LINEAR"):
        return False, "Pillow still provides Image.LINEAR"
    try:
        import detectron2.data.transforms  # noqa: F401
    except AttributeError as e:
        if "LINEAR" not in str(e):
            raise
        return True, f"Pillow has no Image.LINEAR and detectron2.data.transforms fails to import ({e})"
    return False, "Pillow has no Image.LINEAR, but detectron2.data.transforms imports without it"


def fix_pillow_constants():
    """Pillow >= 10 removed ``Image.LINEAR``: ``detectron2.data.transforms`` fails to import."""
    PIL.Image.LINEAR = PIL.Image.Resampling.BILINEAR


# ---------------------------------------------------------------------------------------- numpy
def probe_numpy_aliases():
    missing = [name for name in _NUMPY_ALIASES if name not in np.__dict__]
    if not missing:
        return False, "numpy still provides np.float/np.int/np.bool/np.str/np.object"
    users = files_matching(("lvis", "detectron2"), NUMPY_ALIAS_USE)
    if not users:
        return False, "numpy has no np.float etc., and no installed lvis/detectron2 code uses them"
    return True, "numpy has no np." + "/np.".join(missing) + "; used by " + short_list(users)


def fix_numpy_aliases():
    """numpy >= 1.24 removed ``np.float/int/bool/str/object``: LVISEval.accumulate (and v0.6's VOC code) crash."""
    # Restored as the builtins they always aliased; only the missing ones are set.
    for name, builtin in (("float", float), ("int", int), ("bool", bool), ("str", str), ("object", object)):
        if name not in np.__dict__:
            setattr(np, name, builtin)


# ---------------------------------------------------------------------------------------- setuptools
_PKG_RESOURCES_WARNING = "pkg_resources is deprecated"


def probe_pkg_resources_warning():
    users = files_matching(("detectron2",), re.compile(rb"^\s*import pkg_resources", re.M))
    if not users:
        return False, "Detectron2 does not import pkg_resources"
    spec = importlib.util.find_spec("pkg_resources")
    if spec is None:
        return True, f"{short_list(users)} imports pkg_resources, which this setuptools no longer has"
    with open(spec.origin, "rb") as f:
        warns = _PKG_RESOURCES_WARNING.encode() in f.read()
    if not warns:
        return False, f"{short_list(users)} imports pkg_resources, which imports without a warning"
    return True, f"{short_list(users)} imports pkg_resources, which warns '{_PKG_RESOURCES_WARNING}' on import"


def fix_pkg_resources_warning():
    """setuptools >= 67 warns on every ``import pkg_resources`` (model_zoo); setuptools 81 removes it."""
    if importlib.util.find_spec("pkg_resources") is None:
        raise ImportError(
            "detectron2.model_zoo needs pkg_resources, which setuptools >= 81 removed. "
            "Install setuptools<81 (make setup pins it)."
        )
    warnings.filterwarnings("ignore", message=_PKG_RESOURCES_WARNING, category=UserWarning)


# ---------------------------------------------------------------------------------------- MapDataset
def probe_map_dataset_fallback():
    from detectron2.data.common import MapDataset

    dataset = MapDataset([0, 1], lambda x: x if x else None)  # item 0 "fails to load"
    try:
        dataset[0]
    except TypeError as e:
        return True, f"MapDataset's retry path raises TypeError when an item fails to load ({e})"
    return False, "MapDataset's retry path serves another item when one fails to load"


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


# ---------------------------------------------------------------------------------------- LR scheduler
def _lr_scheduler_hook_state_keys():
    import torch
    from detectron2.engine import hooks

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    return sorted(hooks.LRScheduler(optimizer, scheduler).state_dict())


def probe_lr_scheduler_hook_state():
    keys = _lr_scheduler_hook_state_keys()
    if keys:
        return False, "hooks.LRScheduler checkpoints a torch StepLR's state"
    return True, "hooks.LRScheduler returns {} as the state of a torch StepLR (lost on resume)"


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


# ---------------------------------------------------------------------------------------- GN head
def probe_group_norm_head_probe():
    import torch
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.meta_arch.retinanet import RetinaNetHead

    # The head's weight init draws from torch's global RNG: keep the caller's random state untouched.
    with torch.random.fork_rng(devices=[]):
        try:
            RetinaNetHead(input_shape=[ShapeSpec(channels=32)], num_classes=1, num_anchors=1,
                          conv_dims=[32], norm="GN")
        except ValueError as e:
            return True, f"RetinaNetHead/FCOSHead(norm='GN') fail in __init__ ({e})"
    return False, "RetinaNetHead(norm='GN') builds"


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


# ---------------------------------------------------------------------------------------- caffe2
def probe_export_without_caffe2():
    try:
        import detectron2.export  # noqa: F401
    except ImportError as e:
        if "caffe2" not in str(e):
            raise
        return True, f"import detectron2.export fails ({e}), and with it detectron2.utils.analysis"
    return False, "detectron2.export imports"


def fix_export_without_caffe2():
    """torch no longer ships caffe2: ``import detectron2.export`` fails, breaking utils.analysis."""
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


# ---------------------------------------------------------------------------------------- CPU DDP
class _RecordedDDP:
    def __init__(self, module, **kwargs):
        self.module, self.kwargs = module, kwargs


def _ddp_kwargs_for_cpu_model():
    """The kwargs ``create_ddp_model`` gives DDP for a CPU model in a 2-process job (DDP recorded, not built)."""
    import torch
    from detectron2.engine import defaults

    saved = defaults.DistributedDataParallel, defaults.comm.get_world_size
    defaults.DistributedDataParallel, defaults.comm.get_world_size = _RecordedDDP, lambda: 2
    try:
        wrapped = defaults.create_ddp_model(torch.nn.Linear(1, 1))
    finally:
        defaults.DistributedDataParallel, defaults.comm.get_world_size = saved
    return getattr(wrapped, "kwargs", {})


def probe_cpu_ddp_device_ids():
    device_ids = _ddp_kwargs_for_cpu_model().get("device_ids")
    if device_ids is None:
        return False, "create_ddp_model gives CPU models device_ids=None"
    return True, f"create_ddp_model passes device_ids={device_ids} for a CPU model, which DDP rejects"


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


# ---------------------------------------------------------------------------------------- weights_only
def probe_checkpointer_weights_only_message():
    import pickle

    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    model = torch.nn.Linear(1, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.pth")
        torch.save({"model": model.state_dict(), "extra": np.arange(2)}, path)
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)  # the checkpointer's "Loading from ..." lines
        try:
            DetectionCheckpointer(model).load(path)
        except pickle.UnpicklingError as e:
            if "weights_only" in str(e):
                return True, ("DetectionCheckpointer refuses a .pth holding numpy objects with torch's "
                              "weights_only message")
            raise
        finally:
            logging.disable(previous)
    return False, "DetectionCheckpointer loads a .pth holding numpy objects"


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


def _fix(name, probe, apply):
    return CompatFix(name, apply.__doc__.strip().splitlines()[0], probe, apply)


#: in the order they are probed and applied; pure-Python fixes first so detectron2 imports.
FIXES = [
    _fix("pillow_constants", probe_pillow_constants, fix_pillow_constants),
    _fix("numpy_aliases", probe_numpy_aliases, fix_numpy_aliases),
    _fix("pkg_resources_warning", probe_pkg_resources_warning, fix_pkg_resources_warning),
    _fix("map_dataset_fallback", probe_map_dataset_fallback, fix_map_dataset_fallback),
    _fix("lr_scheduler_hook_state", probe_lr_scheduler_hook_state, fix_lr_scheduler_hook_state),
    _fix("group_norm_head_probe", probe_group_norm_head_probe, fix_group_norm_head_probe),
    _fix("export_without_caffe2", probe_export_without_caffe2, fix_export_without_caffe2),
    _fix("cpu_ddp_device_ids", probe_cpu_ddp_device_ids, fix_cpu_ddp_device_ids),
    _fix("checkpointer_weights_only_message", probe_checkpointer_weights_only_message,
         fix_checkpointer_weights_only_message),
]
