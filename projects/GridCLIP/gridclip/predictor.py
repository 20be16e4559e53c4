"""
``GridCLIPPredictor``: the Python API for open-vocabulary detection with a trained GridCLIP model.

    from gridclip import GridCLIPPredictor
    predictor = GridCLIPPredictor("configs/GridCLIP-R50-FPN-2x.yaml", "model_final.pth",
                                  vocabulary=["zebra", "red umbrella"])
    result = predictor("street.jpg")           # or a numpy HWC BGR image (cv2.imread)
    result.boxes, result.scores, result.class_names, result.grid_embeddings
    predictor.set_vocabulary("lvis")            # swap the classifier at run time
    results = predictor.predict(["a.jpg", "b.jpg"], batch_size=8)
    rescored = predictor.rescore(result, ["bicycle", "tricycle"])   # no model re-run

One predictor can be shared between threads: each call reads the current vocabulary once, as one
immutable (names, embeddings) :class:`VocabularySnapshot`, and ``set_vocabulary`` replaces that
snapshot whole (one attribute assignment), so every result's class ids and names come from one
vocabulary, whatever other threads swap meanwhile; inference holds no lock.

Like Detectron2's ``DefaultPredictor``: images given as arrays are HWC uint8 in **BGR** order (what
``cv2.imread`` returns); paths are decoded by :func:`gridclip.data.mapper.read_image` (every mode and
bit depth, EXIF orientation applied). Each image is resized with the config's test-time resize
(``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``) and boxes are returned in the original image's
coordinates.

Inference needs no dataset: the model is built for the vocabulary it will score (text embeddings of
that vocabulary only), and when none is given the class names come from the config's test
vocabulary, a registered test dataset, or the checkpoint (GridCLIP checkpoints store them). Every
vocabulary goes through :func:`gridclip.vocabulary.validate_vocabulary`, once, where it enters.
"""
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances

from .checkpoint import TEST_VOCABULARY_KEY, VOCABULARY_KEY, GridCLIPCheckpointer
from .config import get_gridclip_cfg
from .config_checks import check_config
from .data.mapper import read_image as decode_image
from .exemplars import has_exemplars, split_vocabulary, vocabulary_embeddings
from .pretrained import read_weights
from .modeling.meta_arch import GridCLIP
from .modeling.text import cache as text_cache
from .text_queries import TextQueries
from .vocabulary import resolve_vocabulary, validate_vocabulary

__all__ = ["Detections", "GridCLIPPredictor", "VocabularySnapshot", "load_predictor_config"]

logger = logging.getLogger(__name__)

ImageInput = Union[str, os.PathLike, np.ndarray]


@dataclass
class Detections:
    """
    Detections of one image (all tensors on CPU).

    Attributes:
        boxes: [N, 4] float32, XYXY in the original image's pixel coordinates.
        scores: [N] float32 detection scores (class probability combined with centerness).
        class_ids: [N] int64, indices into ``vocabulary``.
        class_names: N names, ``vocabulary[class_ids[i]]``.
        grid_embeddings: [N, D] float32, L2-normalised grid embedding G at each box's location
            (the CLIP text space of the model's backbone CLIP); score them against any text.
        image_size: (height, width) of the original image.
        vocabulary: the class names ``class_ids`` index.
        text_scores: [N, K] per-box probabilities for every vocabulary name; set by
            :meth:`GridCLIPPredictor.rescore` only (None otherwise).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    class_ids: torch.Tensor
    class_names: List[str]
    grid_embeddings: torch.Tensor
    image_size: Tuple[int, int]
    vocabulary: List[str] = field(default_factory=list)
    text_scores: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.scores)

    def one_name_per_object(self, iou_threshold: float = 0.5) -> "Detections":
        """
        These detections with one name per object: of boxes overlapping at IoU > ``iou_threshold``, whatever
        their classes, only the highest-scored stays (class-agnostic NMS,
        :func:`gridclip.evaluation.naming.one_name_per_object`). The model's NMS is class-wise, as AP needs,
        so one object can carry several names; a picture for a reader should not. Highest score first.
        """
        from .evaluation.naming import one_name_per_object

        keep = torch.as_tensor(one_name_per_object(self.boxes, self.scores, iou_threshold), dtype=torch.long)
        return Detections(
            boxes=self.boxes[keep], scores=self.scores[keep], class_ids=self.class_ids[keep],
            class_names=[self.class_names[i] for i in keep.tolist()], grid_embeddings=self.grid_embeddings[keep],
            image_size=self.image_size, vocabulary=list(self.vocabulary),
            text_scores=None if self.text_scores is None else self.text_scores[keep],
        )

    def to_instances(self) -> Instances:
        """Detectron2 ``Instances`` (pred_boxes, scores, pred_classes) for ``Visualizer`` / evaluators."""
        return Instances(
            self.image_size,
            pred_boxes=Boxes(self.boxes.clone()),
            scores=self.scores.clone(),
            pred_classes=self.class_ids.clone(),
        )


@dataclass(frozen=True)
class VocabularySnapshot:
    """
    One vocabulary exactly as a predictor call uses it; never changed, only replaced whole.

    Attributes:
        names: the K class names ``class_ids`` index.
        embeddings: [K, D] L2-normalised class embeddings on the model's device.
        logit_offsets: [K] each class's inference logit offset (``GridCLIP.unseen_logit_offsets``:
            MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET for classes the weights were not trained on).
    """

    names: Tuple[str, ...]
    embeddings: torch.Tensor
    logit_offsets: torch.Tensor


def load_predictor_config(config_file, weights=None, opts=(), device=None, confidence_threshold=None):
    """
    A frozen GridCLIP config for inference: ``config_file`` + ``opts`` (a flat [key, value, ...]
    list), ``weights`` → MODEL.WEIGHTS, ``device`` → MODEL.DEVICE (CUDA falls back to CPU when not
    available), ``confidence_threshold`` → MODEL.FCOS.SCORE_THRESH_TEST; range-checked
    (:func:`gridclip.config_checks.check_config`: a ``ConfigValueError`` naming the key).
    """
    cfg = get_gridclip_cfg(config_file, opts)
    if weights is not None:
        cfg.MODEL.WEIGHTS = os.fspath(weights)
    if device is not None:
        cfg.MODEL.DEVICE = str(device)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %s but CUDA is not available: running on CPU.", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    if confidence_threshold is not None:
        if not 0.0 <= float(confidence_threshold) < 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1), got {confidence_threshold}.")
        cfg.MODEL.FCOS.SCORE_THRESH_TEST = float(confidence_threshold)
    check_config(cfg, training=False)  # before any weight is read: one line naming the key
    cfg.freeze()
    return cfg


def _registered_dataset_classes(dataset_name):
    """The classes of a dataset that is registered in this process (reading no file), else None."""
    if not dataset_name or dataset_name not in DatasetCatalog.list():
        return None
    try:
        return resolve_vocabulary("", dataset_name)
    except (KeyError, ValueError):
        return None


class GridCLIPPredictor:
    """
    Batched open-vocabulary inference with a GridCLIP model built from a config (+ weights).

    Args:
        config_file: a GridCLIP YAML config (e.g. configs/GridCLIP-R50-FPN-2x.yaml).
        weights: checkpoint loaded with ``GridCLIPCheckpointer`` (Detectron2's DetectionCheckpointer with
            safe loading and errors naming corrupt/missing files; None = the config's MODEL.WEIGHTS;
            "" = none, i.e. a randomly initialised detector).
        vocabulary: class names (list) or a vocabulary spec of
            :func:`gridclip.vocabulary.resolve_vocabulary` ("lvis", "coco", "voc",
            "a,b,c", a text file, a registered dataset); None = the config's test vocabulary.
        opts: config overrides, as Detectron2's ``--opts`` ([key, value, ...]).
        device: "cpu", "cuda", "cuda:1", ... (None = the config's MODEL.DEVICE).
        confidence_threshold: minimum score of returned detections (None = the config's
            MODEL.FCOS.SCORE_THRESH_TEST).
        allow_partial_weights: load a checkpoint whose weights do not all fit the model (the others stay
            randomly initialised); default False = a :class:`gridclip.checkpoint.CheckpointMismatchError`
            listing the parameters. Also ``MODEL.GRIDCLIP.ALLOW_PARTIAL_WEIGHTS``.

    Without ``vocabulary`` the class names are, in this order: the config's
    ``MODEL.GRIDCLIP.TEST_VOCABULARY``; the classes of ``DATASETS.TEST[0]`` if that dataset is
    registered in this process; the test vocabulary stored in the checkpoint; its training
    vocabulary. No dataset file is read.
    """

    def __init__(
        self,
        config_file,
        weights=None,
        vocabulary: Union[Sequence[str], str, None] = None,
        opts=(),
        device=None,
        confidence_threshold: Optional[float] = None,
        allow_partial_weights: bool = False,
    ):
        self.cfg = load_predictor_config(config_file, weights, opts, device, confidence_threshold)
        if not self.cfg.MODEL.GRIDCLIP.GRID_ALIGN:
            raise ValueError(
                "GridCLIPPredictor needs a model with grid-level alignment (MODEL.GRIDCLIP.GRID_ALIGN True): "
                "grid embeddings and run-time vocabularies exist only then."
            )
        checkpointer = GridCLIPCheckpointer(
            nn.Module(),
            allow_partial=allow_partial_weights or self.cfg.MODEL.GRIDCLIP.ALLOW_PARTIAL_WEIGHTS,
            allow_text_space_mismatch=self.cfg.MODEL.GRIDCLIP.ALLOW_TEXT_SPACE_MISMATCH,
            require_complete=True,
        )
        weights_path = self.cfg.MODEL.WEIGHTS
        checkpoint = read_weights(checkpointer, weights_path) if weights_path else None
        #: the training vocabulary stored in the checkpoint (None: not a GridCLIP checkpoint / no weights)
        self.checkpoint_train_class_names = (
            list(checkpoint[VOCABULARY_KEY]) if checkpoint and VOCABULARY_KEY in checkpoint else None
        )
        exemplar_vocabulary = vocabulary if has_exemplars(vocabulary) else None
        if exemplar_vocabulary is not None:  # built for its names; the exemplars are embedded by the model below
            vocabulary = split_vocabulary(exemplar_vocabulary)[0]
        names = self._initial_vocabulary(vocabulary, checkpoint)
        # Built for ``names`` alone (training and test vocabulary): no dataset is read and text embeddings
        # are built (or read from the cache) for these names only. With grid alignment no weight depends
        # on the vocabulary, so every checkpoint weight still loads.
        self.model = GridCLIP(self.cfg, train_class_names=names, test_class_names=names)
        self.model.to(torch.device(self.cfg.MODEL.DEVICE))
        self.model.eval()
        if checkpoint is not None:
            checkpointer.model = self.model
            checkpointer.load_checkpoint_dict(checkpoint, weights_path)
        else:
            logger.warning("GridCLIPPredictor: no weights given (MODEL.WEIGHTS is empty); the detector is untrained.")
        self._swap_lock = threading.Lock()  # serialises set_vocabulary calls only; inference never takes it
        if self.checkpoint_train_class_names is not None:  # unseen = not among the classes of the weights
            self.model.set_seen_class_names(self.checkpoint_train_class_names)
        elif self.model.unseen_class_logit_offset and checkpoint is not None:
            logger.warning("GridCLIPPredictor: %s records no training vocabulary, so no class is treated as unseen "
                           "(MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET has no effect).", weights_path)
        self._vocabulary = self._model_vocabulary()
        #: the text tower kept loaded and the embedded vocabularies / queries kept in memory (bounded)
        self.text_queries = TextQueries(self.model.text_encoder, device=self.cfg.MODEL.DEVICE)
        self.resize = T.ResizeShortestEdge(
            [self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MIN_SIZE_TEST], self.cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR' for GridCLIPPredictor, got {self.input_format!r}.")
        if exemplar_vocabulary is not None:
            self.set_vocabulary(exemplar_vocabulary)

    @classmethod
    def from_pretrained(cls, folder_or_hub_id, device=None, vocabulary=None, confidence_threshold=None, **kwargs):
        """A predictor from a weights folder or a model-hub id (:func:`gridclip.pretrained.load_pretrained`)."""
        from .pretrained import load_pretrained

        return load_pretrained(folder_or_hub_id, device=device, vocabulary=vocabulary,
                               confidence_threshold=confidence_threshold, predictor_class=cls, **kwargs)

    def save_pretrained(self, folder, **kwargs) -> str:
        """Write this predictor's model as a weights folder (:func:`gridclip.pretrained.save_pretrained`)."""
        from .pretrained import save_pretrained

        return save_pretrained(self, folder, **kwargs)

    def _initial_vocabulary(self, vocabulary, checkpoint) -> List[str]:
        """The validated class names to build the model for (see the class doc for the order)."""
        if vocabulary is not None:
            return resolve_vocabulary(vocabulary)
        gc = self.cfg.MODEL.GRIDCLIP
        if gc.TEST_VOCABULARY.strip():
            return resolve_vocabulary(gc.TEST_VOCABULARY)
        test_datasets = list(self.cfg.DATASETS.TEST)
        names = _registered_dataset_classes(test_datasets[0] if test_datasets else None)
        if names is not None:
            return names
        for key in (TEST_VOCABULARY_KEY, VOCABULARY_KEY):
            if checkpoint and checkpoint.get(key):
                names = validate_vocabulary(checkpoint[key], f"the checkpoint's {key}")
                logger.info("GridCLIPPredictor: using the %d class names stored in the checkpoint (%s).", len(names), key)
                return names
        train_datasets = list(self.cfg.DATASETS.TRAIN)
        if gc.TRAIN_VOCABULARY.strip():
            return resolve_vocabulary(gc.TRAIN_VOCABULARY)
        names = _registered_dataset_classes(train_datasets[0] if train_datasets else None)
        if names is not None:
            return names
        raise ValueError(
            "GridCLIPPredictor: no vocabulary given and none is known without a dataset: the config sets no "
            f"MODEL.GRIDCLIP.TEST_VOCABULARY, its datasets {test_datasets + train_datasets} are not registered in "
            "this process, and the weights store no class names. Pass vocabulary=[...] (tools/demo.py: "
            "--vocabulary lvis|coco|voc|custom)."
        )

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocabulary(self) -> List[str]:
        """The class names that ``class_ids`` of the results index."""
        return list(self._vocabulary.names)

    @property
    def vocabulary_snapshot(self) -> VocabularySnapshot:
        """The current (names, embeddings) snapshot; a call that reads it once sees one consistent vocabulary."""
        return self._vocabulary

    def _swap_vocabulary(self, names: Sequence[str], embeddings: torch.Tensor, image_queried_names=()):
        """Install (names, [K, D] embeddings) in the model and as the new snapshot, atomically for readers."""
        with self._swap_lock:  # the model's own vocabulary (read by export, save_pretrained) stays in step
            self.model.set_vocabulary(list(names), embeddings, image_queried_names=image_queried_names)
            self._vocabulary = self._model_vocabulary()

    def _model_vocabulary(self) -> VocabularySnapshot:
        classifier = self.model.classifier
        return VocabularySnapshot(tuple(self.model.test_class_names), classifier.test_embeddings,
                                  classifier.test_logit_offsets)

    @property
    def embed_dim(self) -> int:
        """Dimension D of the grid embeddings (the backbone CLIP's text/image embedding size)."""
        return self.model.classifier.embed_dim

    def set_vocabulary(self, vocabulary: Union[Sequence[str], str], text_embeddings=None) -> List[str]:
        """
        Use ``vocabulary`` (names or a spec string, see the class doc) from now on. Text embeddings
        are built with the model's CLIP text tower (cached) unless ``text_embeddings`` ([K, D] or a
        file) is given. Returns the resolved names. A list may mix names and
        :class:`gridclip.Exemplar` entries (:mod:`gridclip.exemplars`).
        """
        if has_exemplars(vocabulary):
            names, text_embeddings, image_queried = vocabulary_embeddings(self, vocabulary, text_embeddings)
            self._swap_vocabulary(names, text_embeddings, image_queried)
            return list(names)
        names = resolve_vocabulary(vocabulary)
        if text_embeddings is None:  # built (and cached on disk where it can be written) before the swap
            text_embeddings = self.text_queries.embeddings(names, persist=True)
        else:
            text_embeddings, _ = text_cache.vocabulary_text_embeddings(
                names, text_embeddings, self.model.text_encoder, self.embed_dim)
        self._swap_vocabulary(names, text_embeddings)
        return list(names)

    def text_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """[K, D] L2-normalised text embeddings of ``names`` from the model's CLIP (prompt templates as in training)."""
        return self.text_queries.embeddings(validate_vocabulary(names, "text_embeddings()"), persist=True)

    # ------------------------------------------------------------------ inference
    def read_image(self, image: ImageInput) -> np.ndarray:
        """A path or an HWC uint8 BGR array → HWC uint8 BGR array; clear errors naming the input."""
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            return decode_image(path, format="BGR")
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
                raise ValueError(
                    f"An image array must be HWC with 3 channels (BGR, like cv2.imread), got shape {image.shape}."
                )
            if image.dtype != np.uint8:
                raise ValueError(f"An image array must be uint8 (0-255, BGR), got dtype {image.dtype}.")
            return image
        raise TypeError(f"An image is a file path or an HWC uint8 BGR numpy array, got {type(image).__name__}.")

    def _resize_transform(self, image: np.ndarray) -> T.Transform:
        """
        The config's test-time resize (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``) of ``image``. A side
        it would round to 0 pixels (a very elongated image, e.g. 1 x 3000 with MAX_SIZE_TEST 1333) is
        kept at 1 pixel, so every image the decoder accepts can be detected on.
        """
        transform = self.resize.get_transform(image)
        if isinstance(transform, T.ResizeTransform) and min(transform.new_h, transform.new_w) < 1:
            transform = T.ResizeTransform(transform.h, transform.w, max(1, transform.new_h), max(1, transform.new_w),
                                          transform.interp)
        return transform

    def _model_input(self, image_bgr: np.ndarray) -> dict:
        height, width = image_bgr.shape[:2]
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        image = self._resize_transform(image).apply_image(np.ascontiguousarray(image))
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    def __call__(self, image: ImageInput) -> Detections:
        """Detections of one image (path or HWC uint8 BGR array)."""
        return self.predict([image], batch_size=1)[0]

    def predict(self, images: Sequence[ImageInput], batch_size: int = 8) -> List[Detections]:
        """
        Detections of each image, in input order.

        Images are batched up to ``batch_size`` among those with the same test-time size, so padding
        never changes a result: batched output equals one-by-one output.
        """
        if isinstance(images, (str, os.PathLike, np.ndarray)):
            raise TypeError("predict() takes a list of images; use predictor(image) for one image.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        inputs = [self._model_input(self.read_image(image)) for image in images]
        groups = {}
        for index, model_input in enumerate(inputs):
            groups.setdefault(tuple(model_input["image"].shape[1:]), []).append(index)
        results: List[Optional[Detections]] = [None] * len(inputs)
        snapshot = self._vocabulary  # read once: names and embeddings of one vocabulary for the whole call
        vocabulary = list(snapshot.names)
        embeddings = snapshot.embeddings.to(self.model.device)
        logit_offsets = snapshot.logit_offsets.to(self.model.device)
        with torch.no_grad():
            for indices in groups.values():
                for start in range(0, len(indices), batch_size):
                    chunk = indices[start : start + batch_size]
                    outputs = self.model([inputs[i] for i in chunk], return_grid_embeddings=True,
                                         test_embeddings=embeddings, test_logit_offsets=logit_offsets)
                    for i, output in zip(chunk, outputs):
                        results[i] = self._to_detections(output["instances"], vocabulary)
        return results

    @staticmethod
    def _to_detections(instances: Instances, vocabulary: List[str]) -> Detections:
        instances = instances.to("cpu")
        class_ids = instances.pred_classes.long()
        return Detections(
            boxes=instances.pred_boxes.tensor.float(),
            scores=instances.scores.float(),
            class_ids=class_ids,
            class_names=[vocabulary[i] for i in class_ids.tolist()],
            grid_embeddings=instances.pred_grid_embeddings.float(),
            image_size=tuple(instances.image_size),
            vocabulary=list(vocabulary),
        )

    # ------------------------------------------------------------------ re-scoring without the model
    def rescore(self, result: Detections, text_names: Sequence[str], text_embeddings=None) -> Detections:
        """
        Classify ``result``'s boxes against a new vocabulary from their grid embeddings alone.

        Each box gets ``text_scores`` [N, K] = sigmoid(logit_scale · cos(G, t_k) + bias + offset_k) with
        the model's learned classifier scale and bias and its unseen-class offset for names outside the
        weights' training vocabulary (``GridCLIP.unseen_logit_offsets``; 0 unless configured), and is
        relabelled with its best name; ``scores`` become that name's probability (the detector's
        centerness is not part of it).

        Args:
            result: a :class:`Detections` from this predictor.
            text_names: K names to score against: a list, or a vocabulary spec string ("cat,dog",
                "coco", a file), validated like every vocabulary.
            text_embeddings: optional [K, D] embeddings of ``text_names`` (default: built with the
                model's CLIP text tower, which stays loaded, and kept in memory, bounded:
                :attr:`text_queries`; no cache file is written per query list).
        """
        image_queried = []
        if has_exemplars(text_names):  # exemplar rows: the model's grid embeddings at their boxes
            text_names, text_embeddings, image_queried = vocabulary_embeddings(self, text_names, text_embeddings)
        names = resolve_vocabulary(text_names) if text_names is not None else validate_vocabulary([], "rescore")
        if text_embeddings is None:  # names validated above: no second check
            # the resident text tower and the in-memory query cache: no CLIP reload, no cache file per call
            embeddings = self.text_queries.embeddings(names)
        else:
            embeddings = torch.as_tensor(text_embeddings)
        if embeddings.shape != (len(names), self.embed_dim):
            raise ValueError(
                f"rescore: text embeddings have shape {tuple(embeddings.shape)}, expected "
                f"({len(names)}, {self.embed_dim}) for {len(names)} names and this model's "
                f"{self.embed_dim}-dim embeddings."
            )
        if result.grid_embeddings.shape[-1] != self.embed_dim:
            raise ValueError(
                f"rescore: the result's grid embeddings are {result.grid_embeddings.shape[-1]}-dim but this model's "
                f"are {self.embed_dim}-dim; rescore with the predictor that produced the result."
            )
        classifier = self.model.classifier
        with torch.no_grad():
            cosine = F.normalize(result.grid_embeddings.float(), dim=-1) @ F.normalize(embeddings.float(), dim=-1).T
            bias = classifier.bias.cpu() + self.model.unseen_logit_offsets(names, image_queried)  # [K]
            probabilities = torch.sigmoid(cosine * classifier.logit_scale.cpu() + bias)
        if len(result):
            scores, class_ids = probabilities.max(dim=1)
        else:
            scores, class_ids = probabilities.new_zeros(0), torch.zeros(0, dtype=torch.long)
        return Detections(
            boxes=result.boxes.clone(),
            scores=scores,
            class_ids=class_ids,
            class_names=[names[i] for i in class_ids.tolist()],
            grid_embeddings=result.grid_embeddings,
            image_size=result.image_size,
            vocabulary=names,
            text_scores=probabilities,
        )
