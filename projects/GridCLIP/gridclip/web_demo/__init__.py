"""
The web demo (Gradio): upload an image, type names or pick a preset (the weights' classes, the world,
LVIS, COCO, VOC), draw exemplar boxes, move a score threshold; see the image with its boxes and a
table of detections. Started by ``tools/web_demo.py --weights FOLDER`` (docs/WEB_DEMO.md).

- :mod:`.session`: one request without Gradio (vocabulary, model run, threshold, table);
- :mod:`.exemplar_input`: exemplar boxes from drawn strokes or typed coordinates;
- :mod:`.drawing`: legible boxes and labels, one fixed colour per class;
- :mod:`.example`: the page's opening example, a scene of the generated world;
- :mod:`.app`: the Gradio page, its launch options and a background server for tests;
- :mod:`.screenshot`: a headless-Chromium screenshot of a page.

Gradio is imported only when the page is built, so the rest imports without it.
"""
from .example import DemoExample, world_example
from .session import PRESETS, TABLE_HEADERS, DemoResult, DetectionSession, parse_names

__all__ = ["PRESETS", "TABLE_HEADERS", "DemoExample", "DemoResult", "DetectionSession", "parse_names", "world_example"]
