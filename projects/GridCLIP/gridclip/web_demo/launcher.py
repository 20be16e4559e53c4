"""
What ``tools/web_demo.py`` does: load a weights folder, then serve the page (until Ctrl-C), or take a
headless-Chromium screenshot of it and stop.
"""
import glob
import logging
import os
import time

from ..tool_errors import ToolError

__all__ = ["EMBEDDED_DEFAULT_WEIGHTS", "default_weights_folder", "load_session", "run_web_demo", "take_screenshot"]

logger = logging.getLogger(__name__)

#: where ``make demo`` writes the embedded default's weights folder (its OUTPUT_DIR + "weights", relative to
#: the folder it runs in; an earlier run's folder is kept and the new run writes ``<OUTPUT_DIR>_run2``, ...)
EMBEDDED_DEFAULT_WEIGHTS = os.path.join("output", "gridclip_world_pretrained", "weights")


def default_weights_folder() -> str:
    """
    The embedded default's weights folder: of ``EMBEDDED_DEFAULT_WEIGHTS`` and its ``_runN`` siblings, the
    one written last; ``EMBEDDED_DEFAULT_WEIGHTS`` itself when none exists.
    """
    run_dir, leaf = os.path.split(EMBEDDED_DEFAULT_WEIGHTS)
    candidates = [EMBEDDED_DEFAULT_WEIGHTS] + glob.glob(os.path.join(glob.escape(run_dir) + "_run*", leaf))
    written = [c for c in candidates if os.path.isfile(os.path.join(c, "gridclip.json"))]
    return max(written, key=lambda c: os.path.getmtime(os.path.join(c, "gridclip.json"))) if written else candidates[0]


def load_session(weights: str, device=None, min_threshold=None, max_detections_shown=100):
    """A :class:`.session.DetectionSession` on the weights folder (or hub id) ``weights``."""
    from .. import GridCLIPPredictor
    from .session import DetectionSession

    local = os.path.expanduser(weights)
    if not os.path.exists(local) and os.path.normpath(local) == os.path.normpath(default_weights_folder()):
        raise ToolError(f"Weights folder {weights} not found: run `make demo` first (it writes the embedded "
                        "default's weights there), or pass --weights FOLDER.")
    try:
        predictor = GridCLIPPredictor.from_pretrained(weights, device=device, confidence_threshold=min_threshold)
    except FileNotFoundError as e:
        raise ToolError(str(e)) from None
    return DetectionSession(predictor, max_detections_shown=max_detections_shown)


def take_screenshot(session, path, window_size=(1280, 1000), example=None, host="127.0.0.1", wait_ms=8000,
                    palette_colours=0) -> str:
    """
    Serve the page on a free port, screenshot it with headless Chromium into ``path``, stop.
    ``palette_colours`` > 0: rewrite the PNG with that many colours (smaller, for the docs).
    """
    from .app import serve
    from .screenshot import screenshot, to_palette_png

    with serve(session, host=host, example=example) as url:
        start = time.perf_counter()
        try:
            screenshot(url, path, window_size=window_size, wait_ms=wait_ms)
        except (FileNotFoundError, RuntimeError) as e:  # no Chromium, or it failed: one line
            raise ToolError(str(e)) from None
    if palette_colours:
        to_palette_png(path, palette_colours)
        logger.info("Screenshot of %s in %.1f s: %s", url, time.perf_counter() - start, path)
    return path


def run_web_demo(weights, host="127.0.0.1", port=7860, device=None, min_threshold=None, example=True,
                 screenshot_path=None, window_size=(1280, 1000), palette_colours=256):
    """The tool's body: serve (blocking) or, with ``screenshot_path``, screenshot and return."""
    from .app import build_app, launch_options
    from .example import world_example

    session = load_session(weights, device=device, min_threshold=min_threshold)
    demo_example = world_example() if example else None
    if screenshot_path:
        print(take_screenshot(session, screenshot_path, window_size, demo_example, host=host,
                              palette_colours=palette_colours))
        return 0
    demo = build_app(session, demo_example)
    demo.queue(default_concurrency_limit=1)
    print(f"GridCLIP web demo of {weights} on http://{host}:{port} (Ctrl-C stops it)", flush=True)
    demo.launch(**launch_options(host, port, block=True, quiet=True))
    return 0
