"""
What the web demo does with one request, without Gradio: the vocabulary a request asks for (typed
names, a preset, image exemplars), the detections above the score threshold, the drawing and the table.

Typed names are split on commas and new lines and validated like every vocabulary
(:func:`gridclip.vocabulary.validate_vocabulary`); they are never read as a file path or a registered
dataset (a web user must not make the server open files). The model runs once per (image, vocabulary):
moving the threshold re-filters the last result.
"""
import hashlib
import re
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..exemplars import Exemplar
from ..vocabulary import BUILTIN_VOCABULARIES, validate_vocabulary
from .drawing import draw_detections

__all__ = ["PRESETS", "TABLE_HEADERS", "DemoResult", "DetectionSession", "parse_names", "world_class_names"]

#: preset id -> label shown in the dropdown ("weights": the weights folder's own class names)
PRESETS = {
    "weights": "the weights' classes",
    "world": "world (the generated world's 48)",
    "lvis": "LVIS (1203)",
    "coco": "COCO (80)",
    "voc": "VOC (20)",
    "none": "none (typed names / exemplars only)",
}
TABLE_HEADERS = ["name", "score", "x0", "y0", "x1", "y1"]
_SPLIT = re.compile(r"[,\n]")


def parse_names(text: Optional[str]) -> List[str]:
    """``"cat, red umbrella\\ndog"`` -> validated names (empty entries dropped; never a file or dataset)."""
    names = [n.strip() for n in _SPLIT.split(text or "") if n.strip()]
    return validate_vocabulary(names, "the typed names") if names else []


def world_class_names() -> List[str]:
    """The class names of the generated world ``make demo`` trains on (its default generator arguments)."""
    from ..world.attributes import object_name
    from ..world.detection import DEFAULT_GENERATOR_ARGS, world_categories

    return [object_name(t) for t in world_categories(DEFAULT_GENERATOR_ARGS["num_categories"])]


@dataclass
class DemoResult:
    """One answer: the drawing (HWC uint8 RGB), the table rows (``TABLE_HEADERS``), a status line."""

    image_rgb: np.ndarray
    rows: List[list]
    status: str


def _digest(array: np.ndarray) -> str:
    h = hashlib.sha256(str((array.shape, array.dtype.str)).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


class DetectionSession:
    """
    A :class:`gridclip.GridCLIPPredictor` behind the web demo (one lock: Gradio calls from threads).

    Args:
        predictor: the predictor; its confidence threshold is the slider's minimum.
        max_detections_shown: at most this many rows/boxes (highest scores first).
    """

    def __init__(self, predictor, max_detections_shown: int = 100):
        self.predictor = predictor
        self.weights_class_names = list(predictor.vocabulary)
        self.min_threshold = float(predictor.cfg.MODEL.FCOS.SCORE_THRESH_TEST)
        self.max_detections_shown = int(max_detections_shown)
        self._lock = threading.Lock()
        self._vocabulary_key = tuple(self.weights_class_names)  # what the predictor holds now
        self._last = None  # (image digest, vocabulary key, Detections)

    # ------------------------------------------------------------------ vocabulary
    def preset_names(self, preset: str) -> List[str]:
        """The names of a preset id of :data:`PRESETS`."""
        preset = (preset or "none").strip().lower()
        if preset == "none":
            return []
        if preset == "weights":
            return list(self.weights_class_names)
        if preset == "world":
            return world_class_names()
        if preset in BUILTIN_VOCABULARIES and preset in PRESETS:
            return BUILTIN_VOCABULARIES[preset]()
        raise ValueError(f"Unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}.")

    def vocabulary(self, names_text: str, preset: str, exemplars: Sequence[Exemplar] = ()) -> list:
        """Preset names, then typed names not already in it, then the exemplars; a clear error when empty."""
        entries = self.preset_names(preset)
        known = set(entries)
        entries += [n for n in parse_names(names_text) if n not in known]
        entries += list(exemplars)
        if not entries:
            raise ValueError("Nothing to detect: type names, pick a preset or draw an exemplar box.")
        return entries

    @staticmethod
    def _key(entries) -> tuple:
        return tuple(
            ("exemplar", e.name, _digest(np.asarray(e.image)) if isinstance(e.image, np.ndarray) else str(e.image), e.box)
            if isinstance(e, Exemplar) else e
            for e in entries
        )

    # ------------------------------------------------------------------ requests
    def detect(self, image_rgb, names_text="", preset="weights", threshold=0.3, exemplars=()) -> DemoResult:
        """
        Detections of ``image_rgb`` (HWC uint8 RGB, as Gradio gives it) for the requested vocabulary,
        those scoring at least ``threshold`` drawn and listed. Bad input raises ValueError with one
        sentence a user can act on.
        """
        if image_rgb is None:
            raise ValueError("No image: upload an image (or pick an example) first.")
        image_rgb = np.asarray(image_rgb)
        if image_rgb.ndim == 2:
            image_rgb = np.repeat(image_rgb[:, :, None], 3, axis=2)
        if image_rgb.ndim != 3 or image_rgb.shape[2] not in (3, 4) or min(image_rgb.shape[:2]) < 1:
            raise ValueError(f"The image must be an RGB picture; got an array of shape {image_rgb.shape}.")
        image_bgr = np.ascontiguousarray(image_rgb[:, :, 2::-1]).astype(np.uint8, copy=False)
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise ValueError(f"The score threshold must be a number, got {threshold!r}.") from None
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"The score threshold must be between 0 and 1, got {threshold}.")
        entries = self.vocabulary(names_text, preset, exemplars)
        key = self._key(entries)
        start = time.perf_counter()
        with self._lock:
            digest = _digest(image_bgr)
            if self._last is not None and self._last[:2] == (digest, key):
                detections, ran = self._last[2], False
            else:
                if key != self._vocabulary_key:
                    self.predictor.set_vocabulary(entries)
                    self._vocabulary_key = key
                detections, ran = self.predictor(image_bgr), True
                self._last = (digest, key, detections)
        keep = torch.nonzero(detections.scores >= max(threshold, self.min_threshold)).flatten()
        keep = keep[detections.scores[keep].argsort(descending=True)][: self.max_detections_shown]
        boxes = detections.boxes[keep]
        scores = detections.scores[keep]
        names = [detections.class_names[i] for i in keep.tolist()]
        class_ids = detections.class_ids[keep]
        drawing = draw_detections(image_bgr, boxes, scores, names, class_ids)
        rows = [[n, round(float(s), 3), *[round(float(v), 1) for v in b]] for n, s, b in zip(names, scores, boxes)]
        status = (
            f"{len(rows)} detection(s) with score >= {max(threshold, self.min_threshold):.2f} "
            f"({len(detections)} >= {self.min_threshold:.2f}); vocabulary of {len(detections.vocabulary)} "
            f"{'(model run' if ran else '(cached model output'}, {time.perf_counter() - start:.2f} s)."
        )
        return DemoResult(drawing[:, :, ::-1].copy(), rows, status)
