"""
Exemplar boxes as the web page gives them: strokes drawn on an image (Gradio's ``ImageEditor``), or
typed coordinates; turned into :class:`gridclip.Exemplar` entries.

Drawing: every separate stroke (a rough outline or a scribble over the object; connected painted
pixels) is one box, its painted pixels' bounding box. Typing: ``x0,y0,x1,y1`` boxes separated by ``;``
or new lines, in the exemplar image's pixels. Names: one per box, comma-separated, or one for all
(the exemplars of one name are averaged); none = "exemplar 0", "exemplar 1", ...
"""
import re
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..exemplars import Exemplar

__all__ = ["editor_background", "editor_boxes", "parse_boxes", "parse_exemplar_names", "exemplars_from_input"]

Box = Tuple[float, float, float, float]
#: strokes whose painted bounding box is smaller than this (pixels per side) are ignored as stray clicks
MIN_STROKE_SIDE = 3


def editor_background(value) -> Optional[np.ndarray]:
    """The image under the strokes of an ImageEditor value (dict with "background"), or None."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("background")
    return None if value is None else np.asarray(value)


def _painted(layer: np.ndarray) -> np.ndarray:
    layer = np.asarray(layer)
    if layer.ndim == 3 and layer.shape[2] == 4:
        return layer[:, :, 3] > 0
    if layer.ndim == 3:
        return layer.max(axis=2) > 0
    return layer > 0


def editor_boxes(value) -> List[Box]:
    """XYXY boxes of the strokes of an ImageEditor value (its "layers": RGBA arrays), largest stroke first."""
    if not isinstance(value, dict):
        return []
    boxes = []
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        mask = _painted(layer).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for x, y, w, h, _area in stats[1:count].tolist():
            if w >= MIN_STROKE_SIDE and h >= MIN_STROKE_SIDE:
                boxes.append((w * h, (float(x), float(y), float(x + w), float(y + h))))
    return [box for _, box in sorted(boxes, key=lambda item: -item[0])]


def parse_boxes(text: Optional[str]) -> List[Box]:
    """``"10,20,90,80; 5,5,40,40"`` -> XYXY boxes; ValueError naming the entry that is not 4 numbers."""
    boxes = []
    for entry in (e.strip() for e in re.split(r"[;\n]", text or "")):
        if not entry:
            continue
        try:
            values = [float(v) for v in re.split(r"[,\s]+", entry.strip("()[] ")) if v]
        except ValueError:
            values = []
        if len(values) != 4 or values[2] <= values[0] or values[3] <= values[1]:
            raise ValueError(
                f"Exemplar box {entry!r}: write x0,y0,x1,y1 (pixels of the exemplar image, x1 > x0, y1 > y0), "
                "boxes separated by ';'."
            )
        boxes.append(tuple(values))
    return boxes


def parse_exemplar_names(text: Optional[str], count: int) -> List[Optional[str]]:
    """Names for ``count`` boxes: one per box, one for all, or none (unnamed)."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if not names:
        return [None] * count
    if len(names) == 1:
        return names * count
    if len(names) != count:
        raise ValueError(
            f"{len(names)} exemplar names for {count} exemplar box(es): give one name per box, or one name for all."
        )
    return names


def exemplars_from_input(editor_value, boxes_text: str, names_text: str,
                         fallback_image_rgb: Optional[np.ndarray] = None) -> List[Exemplar]:
    """
    Exemplars of the page's exemplar inputs: drawn strokes, then typed boxes, on the editor's image
    (or, with no image there, on ``fallback_image_rgb``, the image being searched).
    """
    boxes: Sequence[Box] = editor_boxes(editor_value) + parse_boxes(boxes_text)
    if not boxes:
        if (names_text or "").strip():
            raise ValueError("Exemplar names given but no exemplar box: draw a box on the exemplar image or type x0,y0,x1,y1.")
        return []
    image = editor_background(editor_value)
    if image is None:
        image = fallback_image_rgb
    if image is None:
        raise ValueError("Exemplar boxes given but no image to take them from: upload an exemplar image (or the image).")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image_bgr = np.ascontiguousarray(image[:, :, 2::-1]).astype(np.uint8, copy=False)
    names = parse_exemplar_names(names_text, len(boxes))
    return [Exemplar(image_bgr, box, name) for box, name in zip(boxes, names)]
