"""
``TeacherEmbeddingHook``: computes the frozen CLIP teacher's image embedding of every training image
on the fly (paper §3.3) and hands it to the model as ``"teacher_embedding"``.

The hook wraps the trainer's data iterator, so each batch is embedded in ONE batched call on the
model's device right after the loader produced it and before the model sees it; the images are the
augmented ones the model trains on. The teacher lives in the hook, not in the model: it is in no
checkpoint, no DDP wrapper and no optimizer, and it is released when training ends (before the final
evaluation). The time it takes is logged per iteration as ``time/teacher`` in Detectron2's event
storage (metrics.json, TensorBoard). Note that Detectron2's ``data_time`` measures the iterator and
therefore includes ``time/teacher``.

Optional cache: with ``cache_embeddings=True`` the embedding of ``(image_id, flipped)`` is computed
once and reused, which skips the teacher entirely after the first epoch. That is only correct when
the teacher's input is the same each epoch, i.e. without random crop and multi-scale resizing;
:meth:`TeacherEmbeddingHook.from_config` refuses such configs.
"""
import inspect
import logging
import time

import torch
from detectron2.config import configurable
from detectron2.engine import HookBase
from detectron2.utils.events import get_event_storage

from ..modeling.teacher import CLIPImageTeacher
from ..utils import unwrap_model

__all__ = ["TeacherEmbeddingHook", "check_teacher_cache_allowed"]

logger = logging.getLogger(__name__)


def check_teacher_cache_allowed(cfg):
    """
    Raise ValueError if ``cfg``'s training augmentation makes cached teacher embeddings wrong:
    random crop (``INPUT.CROP.ENABLED``) or multi-scale resizing (several ``INPUT.MIN_SIZE_TRAIN``
    values, or ``INPUT.MIN_SIZE_TRAIN_SAMPLING == "range"``). Flips are fine: they are part of the key.
    """
    problems = []
    if cfg.INPUT.CROP.ENABLED:
        problems.append("INPUT.CROP.ENABLED is True (random crop)")
    min_sizes = tuple(cfg.INPUT.MIN_SIZE_TRAIN) if isinstance(cfg.INPUT.MIN_SIZE_TRAIN, (list, tuple)) else (
        cfg.INPUT.MIN_SIZE_TRAIN,
    )
    if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range":
        problems.append(f"INPUT.MIN_SIZE_TRAIN_SAMPLING is 'range' (multi-scale {min_sizes})")
    elif len(set(min_sizes)) > 1:
        problems.append(f"INPUT.MIN_SIZE_TRAIN has several sizes {min_sizes} (multi-scale)")
    if problems:
        raise ValueError(
            "MODEL.GRIDCLIP.TEACHER.CACHE_EMBEDDINGS caches one teacher embedding per (image id, flip), which "
            "is only valid when every epoch shows the teacher the same image, but " + " and ".join(problems)
            + ". Set MODEL.GRIDCLIP.TEACHER.CACHE_EMBEDDINGS False, or train with a single MIN_SIZE_TRAIN "
            "and no crop."
        )


def _module_device(module):
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


class TeacherEmbeddingHook(HookBase):
    """
    Fills ``"teacher_embedding"`` (float32 tensor [D_teacher], L2-normalised, on the model's device)
    in every dataset dict of every training batch.

    Build it from a config with ``TeacherEmbeddingHook(cfg)`` (builds the teacher from
    ``MODEL.GRIDCLIP.TEACHER.*`` and validates the cache setting), or from parts with
    ``TeacherEmbeddingHook(teacher, input_format="RGB", cache_embeddings=False)``. Register it with
    a ``SimpleTrainer``/``AMPTrainer`` or a ``DefaultTrainer`` (whose inner trainer it wraps).
    """

    @configurable
    def __init__(self, teacher, input_format="RGB", cache_embeddings=False):
        """
        Args:
            teacher (CLIPImageTeacher): the frozen image encoder (moved to the model's device in
                ``before_train``).
            input_format (str): channel order of the loader's images (cfg.INPUT.FORMAT: "RGB"/"BGR").
            cache_embeddings (bool): reuse the embedding of each (image_id, flipped); only valid
                without random crop / multi-scale (see :func:`check_teacher_cache_allowed`).
        """
        if not isinstance(teacher, CLIPImageTeacher):
            raise TypeError(
                f"TeacherEmbeddingHook needs a CLIPImageTeacher, got {type(teacher).__name__}."
            )
        self.teacher = teacher
        self.input_format = input_format
        self.cache_embeddings = bool(cache_embeddings)
        self._cache = {}
        self._wrapped_trainer = None
        self._original_iterator = None
        self._wrapped_iterator = None
        self._pending_cuda_timing = None

    @classmethod
    def from_config(cls, cfg):
        """Detectron2 ``@configurable`` convention: returns the constructor's kwargs for ``cfg``."""
        teacher_cfg = cfg.MODEL.GRIDCLIP.TEACHER
        if teacher_cfg.CACHE_EMBEDDINGS:
            check_teacher_cache_allowed(cfg)
        teacher = CLIPImageTeacher(
            teacher_cfg.MODEL_NAME, teacher_cfg.PRETRAINED, device="cpu", amp=teacher_cfg.AMP,
            input_mode=teacher_cfg.INPUT, input_size=teacher_cfg.INPUT_SIZE, crops=teacher_cfg.CROPS,
        )
        return {
            "teacher": teacher,
            "input_format": cfg.INPUT.FORMAT,
            "cache_embeddings": teacher_cfg.CACHE_EMBEDDINGS,
        }

    # ------------------------------------------------------------------ trainer plumbing
    def _inner_trainer(self):
        """The SimpleTrainer/AMPTrainer that owns the data iterator (DefaultTrainer keeps it as ``_trainer``)."""
        inner = getattr(self.trainer, "_trainer", self.trainer)
        if not hasattr(inner, "data_loader") or not hasattr(inner, "model"):
            raise TypeError(
                f"TeacherEmbeddingHook works with Detectron2's SimpleTrainer/AMPTrainer or DefaultTrainer; "
                f"{type(inner).__name__} has no data_loader/model."
            )
        return inner

    @staticmethod
    def _iterator_attribute(inner):
        """
        The attribute of ``inner`` to assign the wrapped iterator to. Detectron2 v0.6 keeps the
        iterator in a plain ``_data_loader_iter``; main creates it lazily behind a read-only
        ``_data_loader_iter`` property backed by ``_data_loader_iter_obj``. Hooks get the trainer as
        a ``weakref.proxy``, whose ``type()`` is the proxy type, so the class is read through the
        proxy (``inner.__class__``).
        """
        descriptor = inspect.getattr_static(inner.__class__, "_data_loader_iter", None)
        if isinstance(descriptor, property):
            if descriptor.fset is not None:
                return "_data_loader_iter"
            if not hasattr(inner, "_data_loader_iter_obj"):
                raise TypeError(
                    f"TeacherEmbeddingHook cannot wrap the data iterator of {inner.__class__.__name__}: its "
                    "_data_loader_iter is a read-only property without a _data_loader_iter_obj attribute."
                )
            return "_data_loader_iter_obj"
        return "_data_loader_iter"

    def _wrap_iterator(self):
        """Put the teacher between the trainer's data iterator and its training step."""
        inner = self._inner_trainer()
        attribute = self._iterator_attribute(inner)
        current = inner._data_loader_iter  # on main this creates the iterator if needed
        self._original_iterator = current
        self._wrapped_iterator = self._iterate_with_teacher(current)
        setattr(inner, attribute, self._wrapped_iterator)
        self._wrapped_trainer = (inner, attribute)

    def before_train(self):
        if self.teacher is None:
            raise RuntimeError(
                "TeacherEmbeddingHook: the teacher was released at the end of a previous training run; "
                "build a new hook for a new run."
            )
        inner = self._inner_trainer()
        model = unwrap_model(inner.model)
        model_dim = getattr(model, "teacher_dim", None)
        if model_dim is not None and int(model_dim) != self.teacher.embed_dim:
            raise ValueError(
                f"The model's image head outputs {int(model_dim)} dims but the teacher "
                f"{self.teacher.model_name!r} gives {self.teacher.embed_dim}-dim embeddings. Make "
                "MODEL.GRIDCLIP.TEACHER.MODEL_NAME match the model (the image head's output size follows it)."
            )
        self.teacher.to(_module_device(model))
        self._wrap_iterator()
        logger.info(
            f"Teacher {self.teacher.model_name!r} ({self.teacher.pretrained or 'random init'}) on "
            f"{self.teacher.device}: {self.teacher.embed_dim}-dim embeddings at {self.teacher.input_size}"
            + (", cached by (image_id, flipped)" if self.cache_embeddings else "")
        )

    def before_step(self):
        # A data loader replaced during training (e.g. main's SimpleTrainer.reset_data_loader) drops the
        # wrapped iterator: wrap the new one so no batch reaches the model without its embeddings.
        if self._wrapped_trainer is not None:
            inner, attribute = self._wrapped_trainer
            if getattr(inner, attribute) is not self._wrapped_iterator:
                logger.info("The trainer's data iterator was replaced; putting the teacher in front of the new one.")
                self._wrap_iterator()

    def after_train(self):
        if self._wrapped_trainer is not None:
            inner, attribute = self._wrapped_trainer
            setattr(inner, attribute, self._original_iterator)
            self._wrapped_trainer = self._original_iterator = self._wrapped_iterator = None
        if self.teacher is not None:
            on_cuda = self.teacher.device.type == "cuda"
            self.teacher = None
            self._cache.clear()
            if on_cuda:
                torch.cuda.empty_cache()
            logger.info("Teacher released.")

    def after_step(self):
        if self._pending_cuda_timing is not None:
            cuda_start, cuda_end = self._pending_cuda_timing
            self._pending_cuda_timing = None
            cuda_end.synchronize()  # already complete after the step's loss logging: returns at once
            self.trainer.storage.put_scalar("time/teacher", cuda_start.elapsed_time(cuda_end) / 1000.0)

    def _iterate_with_teacher(self, iterator):
        for batch in iterator:
            self.add_teacher_embeddings(batch)
            yield batch

    # ------------------------------------------------------------------ the work
    def _cache_key(self, dataset_dict):
        try:
            return (dataset_dict["image_id"], bool(dataset_dict["flipped"]))
        except KeyError as e:
            raise KeyError(
                f"TeacherEmbeddingHook(cache_embeddings=True) needs 'image_id' and 'flipped' in every training "
                f"dict, but one has only {sorted(dataset_dict)}. Use gridclip's GridCLIPDatasetMapper, or turn "
                "MODEL.GRIDCLIP.TEACHER.CACHE_EMBEDDINGS off."
            ) from e

    def add_teacher_embeddings(self, batch):
        """
        Set ``d["teacher_embedding"]`` (Tensor [D], on the teacher's device) for every dict ``d`` of
        ``batch`` (list[dict] with ``"image"``: uint8 CHW tensor), with one ``teacher.encode`` call
        for the images not in the cache, and log the time as ``time/teacher`` when an event storage
        is open.

        Returns:
            ``batch`` (modified in place).
        """
        if self.teacher is None:
            raise RuntimeError("TeacherEmbeddingHook: the teacher has been released (training ended).")
        start = time.perf_counter()
        device = self.teacher.device
        if device.type == "cuda":
            cuda_start = torch.cuda.Event(enable_timing=True)
            cuda_start.record()
        if self.cache_embeddings:
            keys = [self._cache_key(d) for d in batch]
            todo = [i for i, key in enumerate(keys) if key not in self._cache]
        else:
            todo = list(range(len(batch)))
        if todo:
            missing = [i for i in todo if "image" not in batch[i]]
            if missing:
                raise KeyError(
                    f"TeacherEmbeddingHook: training dict {missing[0]} of the batch has no 'image' "
                    f"(keys: {sorted(batch[missing[0]])})."
                )
            embeddings = self.teacher.encode([batch[i]["image"] for i in todo], self.input_format)
            for row, i in enumerate(todo):
                batch[i]["teacher_embedding"] = embeddings[row]
                if self.cache_embeddings:
                    self._cache[keys[i]] = embeddings[row].detach().to("cpu", copy=True)
        if self.cache_embeddings:
            computed = set(todo)
            for i, d in enumerate(batch):
                if i not in computed:
                    d["teacher_embedding"] = self._cache[keys[i]].to(device, non_blocking=True)
        try:
            storage = get_event_storage()
        except AssertionError:  # no training loop open (e.g. called directly)
            return batch
        if device.type == "cuda":
            # Timed with CUDA events, read in after_step once Detectron2's loss logging has synchronised:
            # the hook adds no host-device sync to the training step.
            cuda_end = torch.cuda.Event(enable_timing=True)
            cuda_end.record()
            self._pending_cuda_timing = (cuda_start, cuda_end)
        else:
            storage.put_scalar("time/teacher", time.perf_counter() - start)
        if self.cache_embeddings and batch:
            storage.put_scalar("teacher/cache_hit_rate", 1.0 - len(todo) / len(batch))
        return batch

    @property
    def num_cached(self):
        """How many (image_id, flipped) embeddings the cache holds."""
        return len(self._cache)
