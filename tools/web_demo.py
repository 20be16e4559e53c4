#!/usr/bin/env python
"""
The GridCLIP web demo (Gradio) on a weights folder: upload an image, type names or pick a preset,
draw exemplar boxes, move the score threshold; boxes and a table of detections come back.

    python tools/web_demo.py                                  # the embedded default's folder (make demo)
    python tools/web_demo.py --weights my-weights-folder --port 7861 --device cuda
    python tools/web_demo.py --screenshot page.png            # headless Chromium screenshot, then stop

Serves on 127.0.0.1 by default, without share links or telemetry. The page opens on an example of
the generated world (--no-example: an empty page). The API endpoint is ``/detect`` (gradio_client);
docs/WEB_DEMO.md shows the page and the call. Expected failures end with one line (``--debug`` shows
the traceback).
"""
import argparse
import sys


def get_parser():
    parser = argparse.ArgumentParser(description="GridCLIP web demo (Gradio)")
    parser.add_argument("--weights", default=None, metavar="FOLDER",
                        help="a weights folder (GridCLIPPredictor.save_pretrained / tools/export_model.py --format "
                        "folder) or a model-hub id; default: the embedded default's, written by `make demo`")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the folder's config)")
    parser.add_argument("--min-threshold", type=float, default=None,
                        help="lowest score the model keeps, the slider's minimum (default: the folder's config, 0.05)")
    parser.add_argument("--no-example", action="store_true", help="open on an empty page instead of the world example")
    parser.add_argument("--screenshot", metavar="PNG", help="serve on a free port, take a headless Chromium "
                        "screenshot of the page into PNG, then stop")
    parser.add_argument("--window-size", default="1280,1000", metavar="W,H", help="screenshot window size")
    parser.add_argument("--screenshot-colours", type=int, default=256, metavar="N",
                        help="write the screenshot with an N-colour palette (smaller; 0 = full colour)")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    from gridclip.tool_errors import ToolError

    if not 0 <= args.port <= 65535:
        raise ToolError(f"--port must be between 0 and 65535, got {args.port}.")
    if args.min_threshold is not None and not 0.0 <= args.min_threshold < 1.0:
        raise ToolError(f"--min-threshold must be in [0, 1), got {args.min_threshold}.")
    try:
        window = tuple(int(v) for v in args.window_size.split(","))
        assert len(window) == 2 and min(window) > 0
    except (ValueError, AssertionError):
        raise ToolError(f"--window-size must be W,H in pixels (e.g. 1280,1000), got {args.window_size!r}.") from None
    if not 0 <= args.screenshot_colours <= 256:
        raise ToolError(f"--screenshot-colours must be 0 (full colour) to 256, got {args.screenshot_colours}.")

    import gridclip  # noqa: F401  (before any Detectron2 import)
    from gridclip.web_demo.launcher import default_weights_folder, run_web_demo

    return run_web_demo(args.weights or default_weights_folder(), host=args.host, port=args.port,
                        device=args.device, min_threshold=args.min_threshold, example=not args.no_example,
                        screenshot_path=args.screenshot, window_size=window, palette_colours=args.screenshot_colours)


if __name__ == "__main__":
    from gridclip.tool_errors import run_tool

    sys.exit(run_tool(main, sys.argv[1:], prog="web_demo.py"))
