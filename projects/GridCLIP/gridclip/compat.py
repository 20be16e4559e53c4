"""
Detectron2 (the v0.6 sdist or a compiled build of main) on today's stack: torch 2.11-2.14, numpy 2,
Pillow >= 10, Python 3.11, setuptools 80.

Every fix here is applied from our side, on import of :mod:`gridclip`; no installed file is edited.
Each fix is a :class:`CompatFix`: a one-line description of the upstream problem, a *probe* that
checks whether the installed packages actually have that problem (by running the affected code on a
tiny input where that is cheap and side-effect free, otherwise by reading the installed code), and
the fix itself, applied only when the probe finds the problem. No decision depends on a version
string, so the same code is right on Detectron2 v0.6 and on main, with any numpy/Pillow/torch.

``python -m gridclip.compat`` prints which fixes are active and why (``--json`` for a machine-readable
form), plus the Detectron2 capabilities GridCLIP adapts to (compiled ops, CPU launch, trainer state).
Tests: ``tests/test_compat.py`` reproduces each upstream problem with its fix disabled where the
problem exists, and checks that the fix is not applied where it does not.

Set ``GRIDCLIP_DISABLE_COMPAT=1`` to import gridclip without applying any fix, or to a comma-separated
list of fix names (see ``FIXES``) to skip just those.
"""
import functools
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
import types
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Tuple

import numpy as np
import PIL.Image

__all__ = [
    "apply_all",
    "APPLIED",
    "FIXES",
    "STATUS",
    "CompatFix",
    "detectron2_compiled_ops",
    "detectron2_launch_supports_cpu",
    "default_trainer_restores_inner_state",
    "report",
]

logger = logging.getLogger(__name__)

#: names of the fixes that were applied in this process
APPLIED = []
#: name -> {"state": "active" | "not needed" | "disabled", "reason": str}, filled by apply_all()
STATUS = OrderedDict()


@dataclass(frozen=True)
class CompatFix:
    """One upstream problem: ``probe() -> (problem_exists, why)``; ``apply()`` fixes it from our side."""

    name: str
    problem: str
    probe: Callable[[], Tuple[bool, str]]
    apply: Callable[[], None]


# ---------------------------------------------------------------------------------------- helpers
_NUMPY_ALIASES = ("float", "int", "bool", "str", "object")
_NUMPY_ALIAS_USE = re.compile(rb"\bnp\.(float|int|bool|str|object)\b")


def _package_dir(name):
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _python_files(package):
    root = _package_dir(package)
    if root is None:
        return
    for folder, _, files in os.walk(root):
        for file in sorted(files):
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                yield os.path.join(package, os.path.relpath(path, root)), path


def _files_matching(packages, pattern):
    """Relative paths of the installed .py files of ``packages`` whose source matches ``pattern``."""
    found = []
    for package in packages:
        for relpath, path in _python_files(package):
            with open(path, "rb") as f:
                if pattern.search(f.read()):
                    found.append(relpath)
    return found


def _short_list(items, limit=3):
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


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
    users = _files_matching(("lvis", "detectron2"), _NUMPY_ALIAS_USE)
    if not users:
        return False, "numpy has no np.float etc., and no installed lvis/detectron2 code uses them"
    return True, "numpy has no np." + "/np.".join(missing) + "; used by " + _short_list(users)


def fix_numpy_aliases():
    """numpy >= 1.24 removed ``np.float/int/bool/str/object``: LVISEval.accumulate (and v0.6's VOC code) crash."""
    # Restored as the builtins they always aliased; only the missing ones are set.
    for name, builtin in (("float", float), ("int", int), ("bool", bool), ("str", str), ("object", object)):
        if name not in np.__dict__:
            setattr(np, name, builtin)


# ---------------------------------------------------------------------------------------- setuptools
_PKG_RESOURCES_WARNING = "pkg_resources is deprecated"


def probe_pkg_resources_warning():
    users = _files_matching(("detectron2",), re.compile(rb"^\s*import pkg_resources", re.M))
    if not users:
        return False, "Detectron2 does not import pkg_resources"
    spec = importlib.util.find_spec("pkg_resources")
    if spec is None:
        return True, f"{_short_list(users)} imports pkg_resources, which this setuptools no longer has"
    with open(spec.origin, "rb") as f:
        warns = _PKG_RESOURCES_WARNING.encode() in f.read()
    if not warns:
        return False, f"{_short_list(users)} imports pkg_resources, which imports without a warning"
    return True, f"{_short_list(users)} imports pkg_resources, which warns '{_PKG_RESOURCES_WARNING}' on import"


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
                return True, "DetectionCheckpointer refuses a .pth holding numpy objects with torch's weights_only message"
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


def apply_all():
    """Probe every fix once and apply those whose problem exists (idempotent). Returns APPLIED."""
    disabled = {n.strip() for n in os.environ.get("GRIDCLIP_DISABLE_COMPAT", "").split(",") if n.strip()}
    if "1" in disabled:
        for fix in FIXES:
            STATUS.setdefault(fix.name, {"state": "disabled", "reason": "GRIDCLIP_DISABLE_COMPAT=1"})
        return APPLIED
    unknown = disabled - {fix.name for fix in FIXES}
    if unknown:
        raise ValueError(
            f"GRIDCLIP_DISABLE_COMPAT names unknown fixes {sorted(unknown)}; known: {[f.name for f in FIXES]}"
        )
    for fix in FIXES:
        if fix.name in STATUS:
            continue
        if fix.name in disabled:
            STATUS[fix.name] = {"state": "disabled", "reason": "named in GRIDCLIP_DISABLE_COMPAT"}
            continue
        needed, why = fix.probe()
        if needed:
            fix.apply()
            APPLIED.append(fix.name)
        STATUS[fix.name] = {"state": "active" if needed else "not needed", "reason": why}
    return APPLIED


# ---------------------------------------------------------------------------------------- capabilities
@functools.lru_cache(maxsize=None)
def detectron2_compiled_ops():
    """
    ``(True, where)`` when ``detectron2._C`` is a compiled extension that has the fast COCO
    evaluator's op, ``(False, why)`` for GridCLIP's placeholder or a build without it.
    """
    try:
        from detectron2 import _C
    except ImportError as e:
        return False, f"detectron2._C does not import ({e})"
    if getattr(_C, "IS_GRIDCLIP_PLACEHOLDER", False):
        return False, f"detectron2._C is GridCLIP's placeholder ({_C.__file__})"
    try:
        getattr(_C, "COCOevalAccumulate")
    except (AttributeError, ImportError):
        return False, f"detectron2._C ({_C.__file__}) has no COCOevalAccumulate"
    return True, f"compiled detectron2._C at {_C.__file__}"


class _ProbeBackend(BaseException):
    """Raised by the recording init_process_group; a BaseException so Detectron2's handler lets it pass."""

    def __init__(self, backend):
        super().__init__(backend)
        self.backend = backend


class _RecordingDist(types.ModuleType):
    def __init__(self, real):
        super().__init__("torch.distributed")
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def init_process_group(self, backend=None, **kwargs):
        raise _ProbeBackend(backend)


@functools.lru_cache(maxsize=None)
def detectron2_launch_supports_cpu():
    """
    ``(True, why)`` when Detectron2's launch worker starts a process group without CUDA (gloo),
    ``(False, why)`` when it requires CUDA. Probed by running the worker's set-up with a recording
    ``init_process_group`` (no process group is created, nothing is spawned). Only meaningful on a
    machine without CUDA.
    """
    # `detectron2.engine.launch` as an attribute is the function (engine/__init__ re-exports it).
    launch_module = importlib.import_module("detectron2.engine.launch")
    worker = getattr(launch_module, "_distributed_worker", None)
    if worker is None:
        return False, "detectron2.engine.launch has no _distributed_worker to probe"
    real = launch_module.dist
    launch_module.dist = _RecordingDist(real)
    try:
        worker(0, lambda: None, 2, 2, 0, "tcp://127.0.0.1:1", ())
    except _ProbeBackend as recorded:
        backend = str(recorded.backend).lower()
        if backend == "gloo":
            return True, "Detectron2's launch uses gloo when there is no CUDA"
        return False, f"Detectron2's launch starts backend {recorded.backend!r} without CUDA"
    except AssertionError as e:
        return False, f"Detectron2's launch requires CUDA ({e})"
    finally:
        launch_module.dist = real
    return False, "Detectron2's launch worker returned without starting a process group"


class _InnerStateRecorder:
    def __init__(self):
        self.loaded = None

    def state_dict(self):
        return {"probe": 1}

    def load_state_dict(self, state):
        self.loaded = state


def _bare_default_trainer():
    from detectron2.engine import DefaultTrainer

    trainer = DefaultTrainer.__new__(DefaultTrainer)  # no model/data: only the state methods are run
    trainer._hooks, trainer.iter = [], 0
    trainer.__dict__["_trainer"] = _InnerStateRecorder()
    return trainer


@functools.lru_cache(maxsize=None)
def default_trainer_restores_inner_state():
    """
    Whether Detectron2's ``DefaultTrainer.load_state_dict`` restores the inner SimpleTrainer/AMPTrainer
    state (``"_trainer"``: optimizer, grad scaler) itself. Probed on a bare DefaultTrainer.
    """
    from detectron2.engine import DefaultTrainer

    trainer = _bare_default_trainer()
    try:
        DefaultTrainer.load_state_dict(trainer, {"iteration": 0, "_trainer": {"probe": 1}})
    except KeyError:
        return False
    return trainer._trainer.loaded == {"probe": 1}


def _capabilities():
    import torch

    compiled, where = detectron2_compiled_ops()
    rows = [
        ("compiled ops", where, "COCOEvaluator(use_fast_impl=True)" if compiled else
         "COCOEvaluator(use_fast_impl=False) (pycocotools; same numbers)"),
    ]
    if torch.cuda.is_available():
        rows.append(("launch", "CUDA available", "detectron2.engine.launch (NCCL)"))
    else:
        cpu, why = detectron2_launch_supports_cpu()
        rows.append(("launch", why, "detectron2.engine.launch (gloo) + thread split" if cpu else
                     "gridclip.engine.launch's gloo workers"))
    restores = default_trainer_restores_inner_state()
    rows.append((
        "trainer state",
        "DefaultTrainer checkpoints the inner trainer ('_trainer')" if restores
        else "DefaultTrainer checkpoints only the iteration and hooks",
        "GridCLIPTrainer adds nothing" if restores else "GridCLIPTrainer adds '_trainer' (optimizer, grad scaler)",
    ))
    return rows


def _environment():
    import detectron2
    import torch

    return (f"Detectron2 {detectron2.__version__} ({os.path.dirname(detectron2.__file__)}), torch {torch.__version__}, "
            f"numpy {np.__version__}, Pillow {PIL.__version__}, Python {sys.version.split()[0]}")


def report(as_json=False, file=None):
    """Print the fixes (active / not needed / disabled, with the probe's reason) and the capabilities."""
    import json

    file = file or sys.stdout
    capabilities = _capabilities()
    if as_json:
        json.dump({
            "environment": _environment(),
            "fixes": [{"name": f.name, "problem": f.problem, **STATUS.get(f.name, {"state": "not probed"})}
                      for f in FIXES],
            "capabilities": [{"feature": a, "probe": b, "used": c} for a, b, c in capabilities],
        }, file, indent=2)
        file.write("\n")
        return
    print(f"GridCLIP compatibility fixes (gridclip.compat) for {_environment()}:", file=file)
    width = max(len(f.name) for f in FIXES)
    for fix in FIXES:
        status = STATUS.get(fix.name, {"state": "not probed", "reason": ""})
        print(f"  {status['state'].upper():<10} {fix.name:<{width}}  {status['reason']}", file=file)
    print(f"{len(APPLIED)} of {len(FIXES)} fixes active.", file=file)
    print("Detectron2 features GridCLIP adapts to:", file=file)
    for feature, why, used in capabilities:
        print(f"  {feature:<13} {why} -> {used}", file=file)


def _main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="List GridCLIP's active Detectron2 compatibility fixes.")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    # `python -m gridclip.compat` runs this file as __main__; the fixes live in the imported package.
    from gridclip import compat as installed

    installed.report(as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
