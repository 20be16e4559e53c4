"""
Drawing and showing the demo's detections: Detectron2's Visualizer with metadata made from the
vocabulary (``Metadata(thing_classes=names)``: nothing is registered in a catalog), atomic image
writes, video writers and the display window.
"""
import os
import sys

import cv2
from detectron2.data.catalog import Metadata
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..file_io import atomic_write_bytes
from ..tool_errors import ToolError, check_writable_dir

__all__ = [
    "WINDOW_NAME", "display_available", "vocabulary_metadata", "describe", "printable", "draw", "write_image", "show",
    "video_writer_for",
]

WINDOW_NAME = "GridCLIP detections"


def display_available():
    """
    Whether OpenCV windows can open. On Linux: a Wayland display, or an X11 display whose server can be
    reached (a local ``:N`` needs its socket, ``host:N`` a TCP connection): OpenCV's Qt backend aborts
    the process (SIGABRT, uncatchable) when it cannot connect, so this is checked first.
    """
    if not sys.platform.startswith("linux"):
        return True
    if os.environ.get("WAYLAND_DISPLAY"):
        return True
    display = os.environ.get("DISPLAY", "")
    host, _, number = display.rpartition(":")
    number = number.split(".")[0]
    if not number.isdigit():
        return False
    if host in ("", "unix"):
        return os.path.exists(f"/tmp/.X11-unix/X{number}")
    import socket  # only for a remote X11 display

    try:
        with socket.create_connection((host, 6000 + int(number)), timeout=0.5):
            return True
    except OSError:
        return False


def vocabulary_metadata(names):
    """Visualizer metadata whose thing_classes are ``names`` (nothing is registered in a catalog)."""
    return Metadata(thing_classes=list(names))


def describe(detections):
    """``name (score), ...`` of a :class:`gridclip.predictor.Detections`, as the demo prints them."""
    return ", ".join(f"{name} ({score:.2f})" for name, score in zip(detections.class_names, detections.scores.tolist()))


def printable(text):
    """``text`` (a file name) for one output line: newlines, tabs and other non-printable characters are
    escaped as Python writes them (``\\n``), so a name cannot break or forge the demo's per-image lines."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def draw(image_bgr, detections, metadata):
    """Visualizer drawing of ``detections`` on the image; returns an HWC uint8 BGR array."""
    visualizer = Visualizer(image_bgr[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE)
    return visualizer.draw_instance_predictions(detections.to_instances()).get_image()[:, :, ::-1]


def write_image(path, image_bgr):
    """Encode by extension and write atomically (:func:`gridclip.file_io.atomic_write_bytes`): no partial file."""
    extension = os.path.splitext(path)[1].lower()
    try:
        ok, encoded = cv2.imencode(extension, image_bgr)
    except cv2.error:
        ok = False
    if not ok:
        raise ValueError(f"OpenCV cannot encode '{extension}' images (for '{path}').")
    atomic_write_bytes(path, encoded.tobytes())


def show(vis, wait_ms):
    """Show one visualisation in the demo window; True when the user pressed Esc (stop)."""
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
        cv2.imshow(WINDOW_NAME, vis)
        return cv2.waitKey(wait_ms) == 27
    except cv2.error as e:
        raise ToolError(f"Cannot open a window ({str(e).strip().splitlines()[-1]}); give --output FOLDER.") from None


def video_writer_for(path, fps, width, height):
    """cv2.VideoWriter for ``path`` (.avi: MJPG; .mkv: x264 if available; else mp4v)."""
    check_writable_dir(os.path.dirname(path) or ".", "output folder")
    extension = os.path.splitext(path)[1].lower()
    codecs = {".avi": ["MJPG"], ".mkv": ["x264", "mp4v"]}.get(extension, ["mp4v"])
    for codec in codecs:
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), float(fps), (width, height), True)
        if writer.isOpened():
            return writer
    raise ToolError(
        f"OpenCV cannot open a video writer for '{path}' with codec(s) {', '.join(codecs)} (the folder is "
        "writable); try another extension (.avi uses MJPG, available in every OpenCV build)."
    )
