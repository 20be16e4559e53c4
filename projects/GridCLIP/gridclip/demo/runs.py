"""
The demo's loops: images (detect, print, draw, write or show each; a failing input is reported and
the others still run), a video file and the webcam (VideoVisualizer, colours tracked over frames).
Each returns the inputs that failed. Input names are printed escaped (:func:`.visualization.printable`):
one line per image or frame, whatever the file name holds. A video's output file is created at its
first decoded frame: a video without frames leaves no (empty) output file.
"""
import logging
import os
import sys
import time

import cv2
import tqdm
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode

from .visualization import describe, display_available, draw, printable, show, video_writer_for, write_image

__all__ = ["run_images", "process_frames", "read_frames", "run_video", "run_webcam"]

logger = logging.getLogger(__name__)


def run_images(predictor, targets, metadata):
    """Detect, print, visualise each image (``targets``: {input: output or None}); returns the failed inputs."""
    failed = []
    paths = list(targets)
    for path in tqdm.tqdm(paths, disable=len(paths) < 2, desc="images", file=sys.stderr):
        start = time.perf_counter()
        try:
            image = predictor.read_image(path)
            detections = predictor(image)
        except (OSError, ValueError) as e:
            logger.error("Failed on '%s': %s", printable(path), printable(e))
            failed.append(path)
            continue
        elapsed = time.perf_counter() - start
        logger.info("%s: detected %d instances in %.3fs", printable(path), len(detections), elapsed)
        print(f"{printable(path)}: {len(detections)} detections: {describe(detections)}", flush=True)
        vis = draw(image, detections, metadata)
        target = targets[path]
        if target is None:
            if show(vis, 0):
                break
            continue
        try:
            write_image(target, vis)
        except (OSError, ValueError) as e:
            logger.error("Failed on '%s': could not write '%s': %s", printable(path), printable(target),
                         getattr(e, "strerror", None) or e)
            failed.append(path)
    return failed


def process_frames(predictor, frames, metadata):
    """Yield (frame_index, visualised BGR frame, detections) for BGR frames, tracking colours across frames."""
    visualizer = VideoVisualizer(metadata, ColorMode.IMAGE)
    for index, frame in enumerate(frames):
        start = time.perf_counter()
        detections = predictor(frame)
        logger.debug("frame %d: %d detections in %.3fs", index, len(detections), time.perf_counter() - start)
        vis = visualizer.draw_instance_predictions(frame[:, :, ::-1], detections.to_instances())
        yield index, vis.get_image()[:, :, ::-1], detections


def read_frames(capture):
    while capture.isOpened():
        ok, frame = capture.read()
        if not ok:
            break
        yield frame


def run_video(predictor, video_path, metadata, target):
    """Visualise every frame of ``video_path`` (to ``target`` or a window); returns the failed inputs."""
    name = printable(video_path)
    if not os.path.isfile(video_path):
        logger.error("Failed on '%s': no such video file.", name)
        return [video_path]
    capture = cv2.VideoCapture(video_path)
    if not capture.isOpened():
        logger.error("Failed on '%s': cannot open the video (not a video, or a format OpenCV cannot read).", name)
        return [video_path]
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None  # opened at the first frame, with its size: no empty output file for a video without frames
    start, count, stopped = time.perf_counter(), 0, False
    try:
        frames = tqdm.tqdm(read_frames(capture), total=num_frames, desc="frames", file=sys.stderr)
        for index, vis, detections in process_frames(predictor, frames, metadata):
            count += 1
            print(f"{name} frame {index}: {len(detections)} detections: {describe(detections)}", flush=True)
            if target and writer is None:
                writer = video_writer_for(target, fps, vis.shape[1], vis.shape[0])
            if writer is not None:
                writer.write(vis)
            elif show(vis, 1):
                stopped = True
                break
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if count == 0:
        logger.error("Failed on '%s': no frame could be decoded (an empty or unreadable video); nothing was written.",
                     name)
        return [video_path]
    elapsed = time.perf_counter() - start
    logger.info("%s: %d frames in %.2fs (%.3fs per frame)%s", name, count, elapsed, elapsed / count,
                f", written to {printable(target)}" if writer is not None else "")
    if num_frames and count < num_frames and not stopped:
        logger.error(
            "Failed on '%s': the video ended after %d of its %d frames (truncated or corrupt)%s.", name, count,
            num_frames, f"; the {count} decoded frames are in {target}" if writer is not None else "",
        )
        return [video_path]
    return []


def run_webcam(predictor, metadata, target):
    capture = cv2.VideoCapture(0)
    if not capture.isOpened():
        logger.error("Cannot open the webcam (device 0).")
        return ["webcam"]
    writer = None
    try:
        for index, vis, detections in process_frames(predictor, read_frames(capture), metadata):
            print(f"webcam frame {index}: {len(detections)} detections: {describe(detections)}", flush=True)
            if target:
                if writer is None:
                    writer = video_writer_for(target, 15, vis.shape[1], vis.shape[0])
                writer.write(vis)
            if display_available() and show(vis, 1):
                break
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if display_available():
            cv2.destroyAllWindows()
    return []
