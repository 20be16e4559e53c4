"""
The Gradio page: an image, typed names and/or a preset vocabulary, image exemplars drawn as boxes,
a score threshold; out come the image with its boxes and a table of detections.

    session = DetectionSession(GridCLIPPredictor.from_pretrained(folder))
    with serve(session, port=0) as url:        # 127.0.0.1, a free port; closed on exit
        gradio_client.Client(url).predict(..., api_name="/detect")

Local only by design: no share link, no analytics (``GRADIO_ANALYTICS_ENABLED=False`` unless set),
no server-side rendering (no Node.js), the theme's bundled fonts: the page needs no network.
The API endpoint ``/detect`` takes (image, names, preset, threshold, exemplar editor, exemplar boxes,
exemplar names) and returns (drawing, table, status); bad input answers one sentence (``gr.Error``).
"""
import contextlib
import os
import socket

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from .example import DemoExample  # noqa: E402
from .exemplar_input import exemplars_from_input  # noqa: E402
from .session import PRESETS, TABLE_HEADERS, DetectionSession  # noqa: E402

__all__ = ["TITLE", "build_app", "launch_options", "free_port", "serve"]

TITLE = "GridCLIP: open-vocabulary detection"
DEFAULT_THRESHOLD = 0.3
_EXPECTED = (ValueError, TypeError, FileNotFoundError)


def _table(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=TABLE_HEADERS)


def build_app(session: DetectionSession, example: DemoExample = None, title: str = TITLE):
    """
    The ``gr.Blocks`` page for ``session``. With ``example``, the page opens with its inputs filled
    in and its detections (computed here, once) already shown.
    """
    import gradio as gr

    def detect(image, names, preset, threshold, editor, boxes_text, exemplar_names):
        try:
            exemplars = exemplars_from_input(editor, boxes_text, exemplar_names, fallback_image_rgb=image)
            result = session.detect(image, names, preset, threshold, exemplars)
        except _EXPECTED as e:
            raise gr.Error(str(e), print_exception=False) from None
        return result.image_rgb, _table(result.rows), result.status

    initial = None
    if example is not None:
        initial = session.detect(example.image_rgb, example.names, example.preset, example.threshold)
    presets = [(label if key != "weights" else f"{label} ({len(session.weights_class_names)})", key)
               for key, label in PRESETS.items()]
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"## {title}\nType the names to find (or pick a preset vocabulary), or show an object with an "
            "exemplar box; every name is scored independently, so adding names never changes another's score."
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Image", type="numpy", image_mode="RGB", sources=["upload", "clipboard"],
                                 value=example.image_rgb if example else None, height=320, elem_id="image")
                names = gr.Textbox(label="Names (comma-separated; added to the preset)", lines=2,
                                   value=example.names if example else "", elem_id="names")
                preset = gr.Dropdown(choices=presets, value=example.preset if example else "weights",
                                     label="Preset vocabulary", elem_id="preset")
                threshold = gr.Slider(minimum=round(session.min_threshold, 2), maximum=1.0, step=0.01,
                                      value=example.threshold if example else DEFAULT_THRESHOLD,
                                      label="Score threshold", elem_id="threshold")
                with gr.Accordion("Image exemplars: find more of this", open=False):
                    editor = gr.ImageEditor(
                        label="Exemplar image (empty: the image above). Draw around each object: one stroke = one box",
                        type="numpy", image_mode="RGB", sources=["upload", "clipboard"], transforms=(),
                        brush=gr.Brush(colors=["#ff00c8"], default_size=3, color_mode="fixed"), layers=False,
                        height=320, elem_id="exemplar-editor",
                    )
                    boxes_text = gr.Textbox(label="... or type boxes x0,y0,x1,y1 (pixels; ';' between boxes)",
                                            elem_id="exemplar-boxes")
                    exemplar_names = gr.Textbox(label="Exemplar names (one per box, or one for all)",
                                                elem_id="exemplar-names")
                run = gr.Button("Detect", variant="primary", elem_id="detect")
            with gr.Column(scale=1):
                drawing = gr.Image(label="Detections", type="numpy", format="png", interactive=False,
                                   value=initial.image_rgb if initial else None, elem_id="detections")
                table = gr.Dataframe(headers=TABLE_HEADERS, value=_table(initial.rows if initial else []),
                                     label="Detections (highest score first)", interactive=False, elem_id="table")
                status = gr.Markdown(initial.status if initial else "", elem_id="status")
        inputs = [image, names, preset, threshold, editor, boxes_text, exemplar_names]
        outputs = [drawing, table, status]
        run.click(detect, inputs, outputs, api_name="detect")
        # Same call; the model output of an unchanged (image, vocabulary) is reused, so this only re-filters.
        threshold.release(detect, inputs, outputs, api_visibility="private")
    return demo


def launch_options(host="127.0.0.1", port=7860, block=True, quiet=False):
    """``Blocks.launch`` keyword arguments: local, no share link, no SSR, no telemetry, no MCP."""
    return dict(
        server_name=host, server_port=int(port), share=False, inbrowser=False, prevent_thread_lock=not block,
        show_error=True, quiet=quiet, ssr_mode=False, mcp_server=False, pwa=False, enable_monitoring=False,
    )


def free_port(host="127.0.0.1") -> int:
    """A TCP port free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(session: DetectionSession, host="127.0.0.1", port=0, example: DemoExample = None):
    """Run the page in this process's background threads; yields its URL; closes the server on exit."""
    demo = build_app(session, example)
    demo.queue(default_concurrency_limit=1)
    for attempt in range(3):  # a free port can be taken by another process before the server binds it
        try:
            demo.launch(**launch_options(host, port or free_port(host), block=False, quiet=True))
            break
        except OSError:
            if port or attempt == 2:
                raise
    try:
        yield demo.local_url
    finally:
        demo.close()
