"""
The web demo's drawing: Detectron2's ``Visualizer`` boxes and "name score" labels, legible on small
images and with one fixed colour per class (so a page, or a screenshot of it, can be checked).

Small images (the generated world's are 128 px) are enlarged to ``min_side`` before drawing, and the
label font follows the drawing's size: Detectron2's default (about 1/90 of the image's side, labels at
half to all of it) is unreadable there.
"""
from typing import Sequence

import cv2
import numpy as np
import torch
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..demo.visualization import vocabulary_metadata

__all__ = ["BOX_COLOURS_RGB", "class_colour", "draw_detections"]

#: box colours (RGB 0-255), class id modulo their number; none is a colour of the generated world's objects
BOX_COLOURS_RGB = [
    (0, 229, 255), (255, 0, 200), (57, 255, 20), (255, 214, 0),
    (0, 120, 255), (255, 90, 90), (170, 0, 255), (0, 255, 170),
]


def class_colour(class_id: int):
    """The RGB colour (0-255) class ``class_id``'s boxes are drawn in."""
    return BOX_COLOURS_RGB[int(class_id) % len(BOX_COLOURS_RGB)]


def draw_detections(image_bgr: np.ndarray, boxes: torch.Tensor, scores: torch.Tensor, names: Sequence[str],
                    class_ids: torch.Tensor, min_side: int = 640, max_side: int = 1600) -> np.ndarray:
    """
    Draw boxes with "name score" labels.

    Args:
        image_bgr: HWC uint8 BGR image.
        boxes: [N, 4] XYXY in ``image_bgr``'s pixels; scores: [N]; names: N labels; class_ids: [N] (colours).
        min_side: images whose short side is smaller are enlarged to it (at most ``max_side`` long).

    Returns:
        HWC uint8 BGR drawing, enlarged by the same factor as the boxes.
    """
    height, width = image_bgr.shape[:2]
    factor = max(1.0, min(min_side / min(height, width), max_side / max(height, width)))
    if factor > 1.0:
        size = (round(width * factor), round(height * factor))
        image_bgr = cv2.resize(image_bgr, size, interpolation=cv2.INTER_LINEAR)
    visualizer = Visualizer(image_bgr[:, :, ::-1], vocabulary_metadata(sorted(set(names))), instance_mode=ColorMode.IMAGE)
    short_side = min(image_bgr.shape[:2])
    # Detectron2 draws box lines _default_font_size / 4 wide (its default: sqrt(H*W) // 90 points).
    visualizer._default_font_size = max(8.0, short_side / 26.0)
    font_size = max(11.0, short_side / 40.0)  # points; Visualizer's canvas has 100/72 pixels per point
    char_width, text_height = 0.64 * font_size * 100 / 72, 1.7 * font_size * 100 / 72
    out_height, out_width = image_bgr.shape[:2]
    boxes = [[float(v) * factor for v in box] for box in boxes.tolist()]
    colours = [tuple(c / 255.0 for c in class_colour(int(k))) for k in class_ids.tolist()]
    for i in np.argsort([-(b[2] - b[0]) * (b[3] - b[1]) for b in boxes], kind="stable").tolist():  # small on top
        visualizer.draw_box(boxes[i], alpha=1.0, edge_color=colours[i])
    placed = []  # label rectangles (x0, y0, x1, y1) already drawn: labels never cover each other
    for i in np.argsort([-float(v) for v in scores], kind="stable").tolist():  # best score: best place
        x0, y0 = boxes[i][:2]
        label = f"{names[i]} {float(scores[i]):.2f}"
        width = char_width * len(label)
        x = max(0.0, min(x0, out_width - width))  # never past the right edge
        # Above the box's top-left corner when that row is free, else the next free row above or below.
        rows = [y0 - text_height * (1 + k) for k in range(8)] + [y0 + text_height * k for k in range(8)]
        rows = [y for y in rows if 0 <= y <= out_height - text_height] or [0.0]
        y = next((y for y in rows if not any(x < r[2] and r[0] < x + width and y < r[3] and r[1] < y + text_height
                                              for r in placed)), rows[0])
        placed.append((x, y, x + width, y + text_height))
        visualizer.draw_text(label, (x, y), color=colours[i], font_size=font_size, horizontal_alignment="left")
    return np.ascontiguousarray(visualizer.output.get_image()[:, :, ::-1])
