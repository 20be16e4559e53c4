"""
``GridCLIPCheckpointer``: Detectron2's ``DetectionCheckpointer`` made safe for long runs.

- Atomic writes (:func:`gridclip.file_io.atomic_write`): a checkpoint is written to a temporary file
  in the same folder, fsync'ed and ``os.replace``'d onto its name; ``last_checkpoint`` is replaced the
  same way, after the checkpoint it names is complete. A kill (even ``kill -9``) during saving leaves
  the previous checkpoint and ``last_checkpoint`` intact.
- Nothing unsafe is unpickled: ``.pth`` files load with ``torch.load(weights_only=True)``; Detectron2
  model-zoo ``.pkl`` files (pickled numpy arrays) load through an unpickler that only admits numpy
  arrays, numpy dtypes and plain containers.
- Vocabulary-size-aware loading: checkpoints record the training vocabulary; loading one trained with
  another vocabulary size loads every vocabulary-free weight and logs one line naming the skipped
  (vocabulary-sized) keys and both sizes.
- Shapes must fit: a checkpoint whose (vocabulary-free) parameter shapes differ from the model's — a
  checkpoint of another config — raises :class:`CheckpointMismatchError` listing the parameters,
  instead of fvcore's "Skip loading parameter" warnings and a partly random model. ``allow_partial``
  (``MODEL.GRIDCLIP.ALLOW_PARTIAL_WEIGHTS``) opts in to loading only what fits. ``require_complete``
  (inference) also refuses checkpoints that lack model weights or carry weights the model does not have.
- Checkpoints record the training and test vocabularies, so inference needs no dataset to know the
  class names (:data:`VOCABULARY_KEY`, :data:`TEST_VOCABULARY_KEY`).
- Checkpoints of grid-aligned models record their class-embedding space (:data:`TEXT_SPACE_KEY`: the
  text encoder's identity and the embeddings of a few training names). Loading one into a model whose
  text encoder builds another space (another CLIP, other weights, e.g. random init instead of the
  pretrained file, other templates) raises :class:`TextSpaceMismatchError` naming both, unless
  ``allow_text_space_mismatch`` (``MODEL.GRIDCLIP.ALLOW_TEXT_SPACE_MISMATCH``). The recorded names'
  embeddings decide: the model's own rows where it has those names, else its text encoder embeds them
  (unless both identities are equal); so a copy of the same weights elsewhere is the same space.
- A full disk while saving raises an ``OSError`` with ``ENOSPC`` naming the checkpoint file (the
  previous checkpoint stays intact).
- Truncated / corrupt files raise :class:`CorruptCheckpointError` naming the file; when it is the one
  ``last_checkpoint`` points to during ``--resume``, the message names the newest intact checkpoint
  and how to resume from it.
"""
import errno
import functools
import glob
import logging
import os
import pickle
import zipfile
from typing import List, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer

from .file_io import TEMP_PREFIX, atomic_write, atomic_write_bytes
from .utils import unwrap_model

__all__ = [
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "GridCLIPCheckpointer",
    "TextSpaceMismatchError",
    "is_intact_checkpoint",
    "safe_load_pickle",
]

#: extra checkpoint entry holding the model's training vocabulary (a list of str)
VOCABULARY_KEY = "gridclip_train_class_names"
#: extra checkpoint entry holding the model's test vocabulary at saving time (a list of str)
TEST_VOCABULARY_KEY = "gridclip_test_class_names"
#: extra checkpoint entry: the class-embedding space ({"identity": dict, "names": [n], "embeddings": [n, D]})
TEXT_SPACE_KEY = "gridclip_text_space"
#: how many training names' embeddings a checkpoint records as the fingerprint of its text space
TEXT_SPACE_NAMES = 8
#: the smallest cosine similarity between recorded and rebuilt embeddings of one name in one space (float
#: rounding, CPU vs GPU: > 0.9999; another tower or other templates: far lower)
TEXT_SPACE_MIN_COSINE = 0.995
#: model weights inference never uses (the image-level alignment head): not required to be complete
INFERENCE_UNUSED_PREFIXES = ("image_head.",)
#: how many mismatched parameters an error lists
_MAX_LISTED = 8

logger = logging.getLogger(__name__)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, empty, not a checkpoint)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose weights do not fit the model (other shapes, or missing/extra weights)."""


class TextSpaceMismatchError(CheckpointMismatchError):
    """A checkpoint trained with class embeddings of another text encoder than the model builds."""


_PARTIAL_HINT = (
    "To load only the weights that fit anyway (the others keep their random initialisation), opt in "
    "with MODEL.GRIDCLIP.ALLOW_PARTIAL_WEIGHTS True (GridCLIPPredictor(allow_partial_weights=True), "
    "tools/demo.py --allow-partial-weights)."
)


def _listed(items):
    text = ", ".join(items[:_MAX_LISTED])
    return text + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def _errno_in_chain(exc, code):
    """The OSError with ``errno == code`` in ``exc``'s cause/context chain (torch wraps it), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == code:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _torch_save_to_file(data, path: str) -> None:
    """
    ``torch.save(data)`` into ``path`` through an open file object: the archive's inner folder is then
    always "archive" (given a path, torch names it after the file, here the temporary one), so a
    checkpoint's bytes do not depend on the temporary name.
    """
    with open(path, "wb") as f:
        torch.save(data, f)


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


# ---------------------------------------------------------------------------------------- text space
def text_space_record(model) -> Optional[dict]:
    """
    The :data:`TEXT_SPACE_KEY` entry of a grid-aligned model's checkpoint (None for other models):
    ``identity`` (:func:`gridclip.modeling.text.cache.text_space_identity` of its text encoder),
    ``names`` (up to :data:`TEXT_SPACE_NAMES` training names, evenly spaced) and ``embeddings``
    ([n, D] float32, their L2-normalised class embeddings).
    """
    from .modeling.text.cache import text_space_identity

    model = unwrap_model(model)
    classifier, encoder = getattr(model, "classifier", None), getattr(model, "text_encoder", None)
    names = list(getattr(model, "train_class_names", None) or [])
    if classifier is None or not encoder or not names:
        return None
    count = min(TEXT_SPACE_NAMES, len(names))
    index = sorted({round(i * (len(names) - 1) / max(1, count - 1)) for i in range(count)})
    return {
        "identity": text_space_identity(encoder),
        "names": [str(names[i]) for i in index],
        "embeddings": classifier.train_embeddings[index].detach().float().cpu().clone(),
    }


def _model_rows(model, names):
    """([m] names, [m, D] rows) of ``names`` the model already has embeddings of (m may be 0)."""
    classifier = model.classifier
    tables = [(model.train_class_names, classifier.train_embeddings)]
    if not getattr(model, "_test_vocabulary_pending", False):
        tables.append((model.test_class_names, classifier.test_embeddings))
    found, rows = [], []
    for name in names:
        for table_names, table in tables:
            if name in table_names:
                found.append(name)
                rows.append(table[list(table_names).index(name)].detach().float().cpu())
                break
    return found, (torch.stack(rows) if rows else None)


def check_text_space(model, record, source: str, allow_mismatch: bool = False) -> None:
    """
    Refuse a checkpoint whose class-embedding space (``record``, :func:`text_space_record`) is not the
    one ``model``'s text encoder builds: :class:`TextSpaceMismatchError` naming both, or with
    ``allow_mismatch`` one warning. Nothing to check for checkpoints without a record (older ones) and
    models without grid alignment.
    """
    from .modeling.text.cache import describe_text_space, load_text_embeddings, text_space_identity

    model = unwrap_model(model)
    if not isinstance(record, dict) or getattr(model, "classifier", None) is None:
        return
    names, recorded = list(record.get("names") or []), record.get("embeddings")
    if not names or not isinstance(recorded, torch.Tensor) or recorded.dim() != 2 or len(recorded) != len(names):
        logger.warning(f"{source}: its text-space record is malformed; the text encoder is not checked.")
        return
    encoder = getattr(model, "text_encoder", None)
    ours = text_space_identity(encoder) if encoder else None
    theirs = record.get("identity") or {}
    found, current = _model_rows(model, names)
    if current is None:
        if encoder is None or ours == theirs:
            return  # nothing to embed the names with / the same encoder, weights and templates
        found, current = names, load_text_embeddings(names, **encoder)
    recorded = recorded[[names.index(n) for n in found]].float()
    if recorded.shape[1] == current.shape[1]:
        cosine = torch.nn.functional.cosine_similarity(recorded, current, dim=1)
        if float(cosine.min()) >= TEXT_SPACE_MIN_COSINE:
            return
        worst = int(cosine.argmin())
        detail = f"the embedding of {found[worst]!r} differs (cosine {float(cosine[worst]):.3f} between the two)"
    else:
        detail = f"{recorded.shape[1]}-dim vs {current.shape[1]}-dim embeddings"
    ours_text = describe_text_space(ours) if ours else "embeddings given explicitly"
    message = (
        f"{source} was trained with class embeddings from {describe_text_space(theirs)}, but this model "
        f"builds them with {ours_text}: another embedding space ({detail}), so its classifier would score "
        "every class wrongly."
    )
    if allow_mismatch:
        logger.warning(message + " Loading it anyway (MODEL.GRIDCLIP.ALLOW_TEXT_SPACE_MISMATCH).")
        return
    raise TextSpaceMismatchError(
        message + " Use the config it was trained with (MODEL.CLIP.PRETRAINED, MODEL.GRIDCLIP.TEXT_ENCODER.*, "
        "MODEL.GRIDCLIP.PROMPT_TEMPLATES), or set MODEL.GRIDCLIP.ALLOW_TEXT_SPACE_MISMATCH True to load it anyway."
    )


# ---------------------------------------------------------------------------------------- checkpointer
class GridCLIPCheckpointer(DetectionCheckpointer):
    """
    ``DetectionCheckpointer`` with atomic saves, pickle-free loading, vocabulary-size-aware loading and
    clear errors for corrupt files and checkpoints that do not fit (see the module docstring).

    Same constructor and API as ``DetectionCheckpointer``, plus two keyword-only switches:
    ``allow_partial`` (load only the weights that fit; default False = error) and
    ``require_complete`` (also refuse missing / unexpected model weights, for inference), and
    ``allow_text_space_mismatch`` (load a checkpoint of another class-embedding space with a warning;
    default False = :class:`TextSpaceMismatchError`).
    """

    def __init__(self, model, save_dir="", *, save_to_disk=None, allow_partial=False, require_complete=False,
                 allow_text_space_mismatch=False, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.allow_partial = bool(allow_partial)
        self.require_complete = bool(require_complete)
        self.allow_text_space_mismatch = bool(allow_text_space_mismatch)

    @classmethod
    def from_checkpointer(cls, checkpointer: DetectionCheckpointer, allow_partial=None,
                          allow_text_space_mismatch=None) -> "GridCLIPCheckpointer":
        """The same model, folder, save_to_disk and checkpointables, as a ``GridCLIPCheckpointer``."""
        if allow_partial is None:
            allow_partial = getattr(checkpointer, "allow_partial", False)
        if allow_text_space_mismatch is None:
            allow_text_space_mismatch = getattr(checkpointer, "allow_text_space_mismatch", False)
        return cls(
            checkpointer.model,
            checkpointer.save_dir,
            save_to_disk=checkpointer.save_to_disk,
            allow_partial=allow_partial,
            allow_text_space_mismatch=allow_text_space_mismatch,
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
        test_names = getattr(unwrap_model(self.model), "test_class_names", None)
        if test_names is not None:
            data[TEST_VOCABULARY_KEY] = [str(n) for n in test_names]
        text_space = text_space_record(self.model)
        if text_space is not None:
            data[TEXT_SPACE_KEY] = text_space
        data.update(kwargs)

        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"Checkpoint name {name!r} must not contain a folder")
        os.makedirs(self.save_dir, exist_ok=True)
        self._remove_stale_temp_files()
        self.logger.info(f"Saving checkpoint to {save_file}")
        try:
            atomic_write(save_file, functools.partial(_torch_save_to_file, data))
            self.tag_last_checkpoint(basename)
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as "enforce fail at inline_container"
            full = _errno_in_chain(e, errno.ENOSPC)
            if full is None:
                raise
            previous = os.path.join(self.save_dir, "last_checkpoint")
            kept = f"the previous checkpoint named in {previous} is intact" if os.path.isfile(previous) else (
                "no earlier checkpoint exists")
            raise OSError(
                errno.ENOSPC,
                f"No space left on device while writing checkpoint {save_file} (the partial file was removed; {kept}). "
                "Free space there or set OUTPUT_DIR to another disk, then continue with --resume",
                save_file,
            ) from None

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local_dir():
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write_bytes(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename.encode())

    def _remove_stale_temp_files(self) -> None:
        """Temp files left by a process killed while saving (only the main process saves).

        Their names start with ``TEMP_PREFIX`` (never ``*.pth``: they are never listed as checkpoints).
        """
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

    def read(self, path: str) -> dict:
        """The checkpoint dict of ``path`` (safe loading, clear errors), without loading it into the model."""
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Checkpoint {path} not found (MODEL.WEIGHTS or the file named in last_checkpoint)."
            )
        return self._load_file(path)

    def load_checkpoint_dict(self, checkpoint: dict, path: str) -> dict:
        """Load a dict returned by :meth:`read` into the model (same checks as :meth:`load`); returns the rest."""
        self._loading_path = path
        try:
            incompatible = self._load_model(checkpoint)
            if incompatible is not None:
                self._log_incompatible_keys(incompatible)
        finally:
            self._loading_path = None
        return checkpoint

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
        checkpoint.pop(TEST_VOCABULARY_KEY, None)
        source = getattr(self, "_loading_path", None) or "the checkpoint"
        check_text_space(self.model, checkpoint.pop(TEXT_SPACE_KEY, None), source, self.allow_text_space_mismatch)
        incompatible = self._load_model_with_vocabulary(checkpoint, checkpoint_names)
        self._check_fit(incompatible)
        return incompatible

    def _check_fit(self, incompatible):
        """Raise :class:`CheckpointMismatchError` for weights that do not fit (unless ``allow_partial``)."""
        if incompatible is None or self.allow_partial:
            return
        source = getattr(self, "_loading_path", None) or "the checkpoint"
        if incompatible.incorrect_shapes:
            shapes = [f"{k} {tuple(s_ckpt)} vs {tuple(s_model)}" for k, s_ckpt, s_model in incompatible.incorrect_shapes]
            raise CheckpointMismatchError(
                f"{source} does not fit this model: {len(shapes)} parameter(s) have other shapes (checkpoint vs "
                f"model): {_listed(shapes)}. It was trained with another config (e.g. MODEL.CLIP.MODEL_NAME, "
                "FPN.OUT_CHANNELS, GRIDCLIP.ADAPTER_CHANNELS): use that config. " + _PARTIAL_HINT
            )
        if not self.require_complete:
            return

        def used(key):
            return not key.startswith(INFERENCE_UNUSED_PREFIXES)

        missing = [k for k in incompatible.missing_keys if used(k)]
        unexpected = [k for k in incompatible.unexpected_keys if used(k)]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"{len(missing)} weight(s) of the model are not in it ({_listed(missing)})")
            if unexpected:
                parts.append(f"it has {len(unexpected)} weight(s) the model lacks ({_listed(unexpected)})")
            raise CheckpointMismatchError(
                f"{source} does not fit this model: {'; '.join(parts)}. It was trained with another config "
                "(e.g. MODEL.FCOS.NUM_CONVS, MODEL.CLIP.USE_MHSA): use that config. " + _PARTIAL_HINT
            )

    def _load_model_with_vocabulary(self, checkpoint, checkpoint_names):
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
