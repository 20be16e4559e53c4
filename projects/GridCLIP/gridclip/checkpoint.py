"""
``GridCLIPCheckpointer``: Detectron2's ``DetectionCheckpointer`` made safe for long runs.

- Atomic writes: a checkpoint is written to a temporary file in the same folder, flushed, fsync'ed
  and ``os.replace``'d onto its name; ``last_checkpoint`` is replaced the same way, after the
  checkpoint it names is complete. A kill (even ``kill -9``) during saving leaves the previous
  checkpoint and ``last_checkpoint`` intact.
- Nothing unsafe is unpickled: ``.pth`` files load with ``torch.load(weights_only=True)``; Detectron2
  model-zoo ``.pkl`` files (pickled numpy arrays) load through an unpickler that only admits numpy
  arrays, numpy dtypes and plain containers.
- Vocabulary-size-aware loading: checkpoints record the training vocabulary; loading one trained with
  another vocabulary size loads every vocabulary-free weight and logs one line naming the skipped
  (vocabulary-sized) keys and both sizes.
- Truncated / corrupt files raise :class:`CorruptCheckpointError` naming the file; when it is the one
  ``last_checkpoint`` points to during ``--resume``, the message names the newest intact checkpoint
  and how to resume from it.
"""
import glob
import logging
import os
import pickle
import tempfile
import zipfile
from typing import List, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer

from .utils import unwrap_model

__all__ = ["CorruptCheckpointError", "GridCLIPCheckpointer", "is_intact_checkpoint", "safe_load_pickle"]

#: extra checkpoint entry holding the model's training vocabulary (a list of str)
VOCABULARY_KEY = "gridclip_train_class_names"
#: prefix of the temporary files written during an atomic save (not ``*.pth``: never listed as checkpoints)
TEMP_PREFIX = ".tmp-gridclip-"

logger = logging.getLogger(__name__)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, empty, not a checkpoint)."""


# ---------------------------------------------------------------------------------------- file helpers
def _fsync_dir(path: str) -> None:
    """Persist a rename in ``path`` (best effort: not every filesystem / OS supports it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str, write_fn) -> None:
    """Call ``write_fn(binary_file)`` on a temp file next to ``path``, fsync it, then rename onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=TEMP_PREFIX + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    _fsync_dir(folder)


def is_intact_checkpoint(path: str) -> bool:
    """Cheap integrity check of a torch zip checkpoint: the archive opens and its entries pass CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for Detectron2 model-zoo ``.pkl`` files: numpy arrays/scalars and builtin containers only."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            if module.startswith("numpy.core"):
                module = module.replace("numpy.core", "numpy._core", 1)
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def safe_load_pickle(path: str):
    """Load a pickle that may only contain numpy arrays and plain containers (Detectron2 ``.pkl`` weights)."""
    with open(path, "rb") as f:
        try:
            return _NumpyOnlyUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as e:
            raise pickle.UnpicklingError(
                f"Refusing to unpickle {path}: {e}. Only numpy arrays and plain containers are read from "
                ".pkl weight files. If you trust this file, convert it once to a tensor-only checkpoint "
                "(torch.save({'model': state_dict}, 'weights.pth')) and load that."
            ) from None
        except (EOFError, ValueError, TypeError, IndexError) as e:
            raise CorruptCheckpointError(
                f"Checkpoint {path} ({os.path.getsize(path)} bytes) is truncated or not a pickle file: {e}"
            ) from None


# ---------------------------------------------------------------------------------------- checkpointer
class GridCLIPCheckpointer(DetectionCheckpointer):
    """
    ``DetectionCheckpointer`` with atomic saves, pickle-free loading, vocabulary-size-aware loading and
    clear errors for corrupt files (see the module docstring). Same constructor and API.
    """

    @classmethod
    def from_checkpointer(cls, checkpointer: DetectionCheckpointer) -> "GridCLIPCheckpointer":
        """The same model, folder, save_to_disk and checkpointables, as a ``GridCLIPCheckpointer``."""
        return cls(
            checkpointer.model,
            checkpointer.save_dir,
            save_to_disk=checkpointer.save_to_disk,
            **checkpointer.checkpointables,
        )

    # ------------------------------------------------------------------------------------ saving
    def _is_local_dir(self) -> bool:
        return bool(self.save_dir) and "://" not in self.save_dir

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._is_local_dir():  # remote storage: no rename semantics; Detectron2's path
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        names = getattr(unwrap_model(self.model), "train_class_names", None)
        if names is not None:
            data[VOCABULARY_KEY] = [str(n) for n in names]
        data.update(kwargs)

        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"Checkpoint name {name!r} must not contain a folder")
        os.makedirs(self.save_dir, exist_ok=True)
        self._remove_stale_temp_files()
        self.logger.info(f"Saving checkpoint to {save_file}")
        _atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local_dir():
            return super().tag_last_checkpoint(last_filename_basename)
        _atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename.encode())
        )

    def _remove_stale_temp_files(self) -> None:
        """Temp files left by a process killed while saving (only the main process saves)."""
        for path in glob.glob(os.path.join(self.save_dir, TEMP_PREFIX + "*")):
            self.logger.warning(f"Removing {path}: a partial checkpoint left by an interrupted save.")
            try:
                os.remove(path)
            except OSError:
                pass

    # ------------------------------------------------------------------------------------ loading
    def resume_or_load(self, path: str, *, resume: bool = True):
        if resume and self.has_checkpoint():
            last = self.get_checkpoint_file()
            if not os.path.isfile(last) or (last.endswith(".pth") and not is_intact_checkpoint(last)):
                problem = "does not exist" if not os.path.isfile(last) else "is truncated or corrupt"
                raise CorruptCheckpointError(self._resume_advice(last, problem))
            return self.load(last)
        return self.load(path, checkpointables=[])

    def _intact_checkpoints(self, exclude: str) -> List[str]:
        """Intact ``*.pth`` files in save_dir other than ``exclude``, newest first."""
        files = [f for f in self.get_all_checkpoint_files() if os.path.abspath(f) != os.path.abspath(exclude)]
        files.sort(key=lambda f: (os.path.getmtime(f), f), reverse=True)
        return [f for f in files if is_intact_checkpoint(f)]

    def _resume_advice(self, last: str, problem: str) -> str:
        tag = os.path.join(self.save_dir, "last_checkpoint")
        message = f"Cannot resume: {tag} names {last}, which {problem}."
        candidates = self._intact_checkpoints(exclude=last)
        if candidates:
            previous = candidates[0]
            message += (
                f" The newest intact checkpoint is {previous}. To resume from it (iteration counter, "
                f"optimizer and LR schedule included), run\n    echo {os.path.basename(previous)} > {tag}\n"
                "and start again with --resume."
            )
        else:
            message += (
                f" No other intact checkpoint is in {self.save_dir}: remove {tag} to start training "
                "from MODEL.WEIGHTS."
            )
        return message

    def load(self, path: str, checkpointables: Optional[List[str]] = None):
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(
                f"Checkpoint {path} not found (MODEL.WEIGHTS or the file named in last_checkpoint)."
            )
        self._loading_path = path
        try:
            return super().load(path, checkpointables=checkpointables)
        finally:
            self._loading_path = None

    def _load_file(self, filename: str):
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"Checkpoint {filename} not found.")
        if filename.endswith(".pkl"):
            data = safe_load_pickle(filename)
            if not isinstance(data, dict):
                raise CorruptCheckpointError(f"{filename} holds a {type(data).__name__}, not a dict of weights.")
            if "model" in data and "__author__" in data:
                return data  # Detectron2 model-zoo format
            if "blobs" in data:
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        loaded = self._torch_load(filename)
        if filename.endswith(".pyth"):  # pycls
            if "model_state" not in loaded:
                raise CorruptCheckpointError(
                    f"Cannot load .pyth file {filename}: pycls checkpoints contain 'model_state'."
                )
            state = {k: v for k, v in loaded["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        if not isinstance(loaded, dict):
            raise CorruptCheckpointError(f"{filename} holds a {type(loaded).__name__}, not a checkpoint dict.")
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded

    @staticmethod
    def _torch_load(filename: str):
        size = os.path.getsize(filename)
        try:
            return torch.load(filename, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if zipfile.is_zipfile(filename) and "weights only" in str(e).lower():
                raise pickle.UnpicklingError(
                    f"Refusing to unpickle {filename}: it holds objects other than tensors and plain "
                    "containers, and GridCLIP loads checkpoints with weights_only=True. If you trust this "
                    "file, re-save its tensors once: `sd = torch.load(path, weights_only=False)['model']` "
                    "then `torch.save({'model': sd}, new_path)`."
                ) from None
            raise CorruptCheckpointError(
                f"Checkpoint {filename} ({size} bytes) is not a PyTorch checkpoint or is corrupt: {e}"
            ) from None
        except Exception as e:  # torch raises EOFError, RuntimeError, OSError, IndexError, ... on broken files
            if not zipfile.is_zipfile(filename) and not isinstance(e, EOFError):
                raise CorruptCheckpointError(
                    f"Checkpoint {filename} ({size} bytes) is not a PyTorch checkpoint or is corrupt "
                    f"({type(e).__name__}: {e})."
                ) from None
            raise CorruptCheckpointError(
                f"Checkpoint {filename} ({size} bytes) is truncated or corrupt and cannot be read "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unexpected end of file'}). "
                "Use an earlier checkpoint of the same run or copy the file again."
            ) from None

    def _load_model(self, checkpoint):
        checkpoint_names = checkpoint.pop(VOCABULARY_KEY, None)
        incompatible = super()._load_model(checkpoint)
        model_names = getattr(unwrap_model(self.model), "train_class_names", None)
        if model_names is None:
            return incompatible
        num_model = len(model_names)
        num_checkpoint = len(checkpoint_names) if checkpoint_names is not None else None

        def vocabulary_sized(shape_checkpoint, shape_model):
            return (
                len(shape_model) >= 1
                and len(shape_checkpoint) == len(shape_model)
                and shape_model[0] == num_model
                and shape_checkpoint[1:] == shape_model[1:]
                and (num_checkpoint is None or shape_checkpoint[0] == num_checkpoint)
            )

        skipped = [item for item in incompatible.incorrect_shapes if vocabulary_sized(item[1], item[2])]
        if skipped and num_checkpoint is None:
            num_checkpoint = skipped[0][1][0]
        source = getattr(self, "_loading_path", None) or "the checkpoint"
        if skipped:
            for item in skipped:
                incompatible.incorrect_shapes.remove(item)
            keys = ", ".join(f"{k} {tuple(s_ckpt)} -> {tuple(s_model)}" for k, s_ckpt, s_model in skipped)
            self.logger.warning(
                f"{source} was trained with a vocabulary of {num_checkpoint} classes; this model's training "
                f"vocabulary has {num_model}. Loaded every vocabulary-free weight; these vocabulary-sized "
                f"weights keep their fresh initialisation: {keys}."
            )
        elif num_checkpoint is not None and num_checkpoint != num_model:
            self.logger.info(
                f"{source} was trained with a vocabulary of {num_checkpoint} classes; this model's training "
                f"vocabulary has {num_model}. Its classifier scores classes by text embeddings, so every "
                "weight loaded."
            )
        return incompatible
