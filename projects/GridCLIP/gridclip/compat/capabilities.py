"""
Detectron2 features GridCLIP adapts to (not problems to fix): each probed on the installed build, never
from a version string, and cached for the process.

- :func:`detectron2_compiled_ops`: a compiled ``detectron2._C`` (fast COCO evaluator) or the placeholder;
- :func:`detectron2_launch_supports_cpu`: whether ``detectron2.engine.launch`` starts gloo workers without CUDA;
- :func:`default_trainer_restores_inner_state`: whether ``DefaultTrainer`` checkpoints its inner trainer.
"""
import functools
import importlib
import types

__all__ = ["detectron2_compiled_ops", "detectron2_launch_supports_cpu", "default_trainer_restores_inner_state"]


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
