#!/usr/bin/env python
"""
Open-vocabulary detection demo for GridCLIP, in the style of Detectron2's ``demo/demo.py``.

Images (files, globs or folders), written with Detectron2's Visualizer to --output:
    python tools/demo.py --config-file configs/GridCLIP-R50-FPN-2x.yaml --input photos/ "*.jpg" \\
        --output vis/ --vocabulary lvis --opts MODEL.WEIGHTS model_final.pth
Your own classes (comma-separated, or a text file with one name per line):
    python tools/demo.py --config-file ... --input street.jpg --output out.jpg \\
        --vocabulary custom --custom-vocabulary "zebra,red umbrella,traffic cone" --opts MODEL.WEIGHTS ...
A video (VideoVisualizer) or the webcam:
    python tools/demo.py --config-file ... --video-input clip.mp4 --output clip_vis.mp4 --opts MODEL.WEIGHTS ...
    python tools/demo.py --config-file ... --webcam --opts MODEL.WEIGHTS ...

For every image it prints ``<input>: <N> detections: name, name, ...`` and logs the time it took.
An unreadable input is reported by name, the other inputs are still processed, and the exit status
is 1 at the end if any input failed.
"""
import argparse
import glob
import hashlib
import logging
import os
import sys
import time

import gridclip  # first: applies the Detectron2 compatibility fixes before detectron2 is imported
import cv2
import numpy as np
import tqdm
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, Visualizer
from gridclip.data.vocabularies import parse_custom_vocabulary, resolve_vocabulary
from gridclip.predictor import GridCLIPPredictor

logger = logging.getLogger("gridclip.demo")

VOCABULARIES = ("lvis", "lvis_base", "coco", "voc", "custom")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
WINDOW_NAME = "GridCLIP detections"


def get_parser():
    parser = argparse.ArgumentParser(description="GridCLIP open-vocabulary detection demo")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a GridCLIP config file")
    parser.add_argument("--input", nargs="+", help="image files, glob patterns ('imgs/*.jpg') or folders")
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument("--webcam", action="store_true", help="take frames from the webcam (Esc quits)")
    parser.add_argument(
        "--output",
        help="where to write visualisations: a folder, or a file name when there is one input "
        "(images: .jpg/.png; video: .mp4/.avi/.mkv). Without it, images are shown in a window.",
    )
    parser.add_argument(
        "--vocabulary", choices=VOCABULARIES, default=None,
        help="class names to detect: LVIS (1203), LVIS base (866), COCO (80), VOC (20) or custom "
        "(--custom-vocabulary). Default: the config's test vocabulary.",
    )
    parser.add_argument(
        "--custom-vocabulary", default="",
        help="with --vocabulary custom: comma-separated names ('cat,red umbrella') or a text file, one name per line",
    )
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score of shown detections")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even if CUDA is available")
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth",
    )
    return parser


def resolve_demo_vocabulary(args):
    """The class names of --vocabulary / --custom-vocabulary (None = the config's test vocabulary)."""
    if args.vocabulary is None:
        if args.custom_vocabulary:
            raise SystemExit("--custom-vocabulary needs --vocabulary custom.")
        return None
    if args.vocabulary == "custom":
        if not args.custom_vocabulary:
            raise SystemExit("--vocabulary custom needs --custom-vocabulary 'name1,name2' or a file of names.")
        try:
            return parse_custom_vocabulary(args.custom_vocabulary)
        except (ValueError, OSError) as e:
            raise SystemExit(f"--custom-vocabulary: {e}")
    return resolve_vocabulary(args.vocabulary)


def vocabulary_metadata(names, label):
    """A MetadataCatalog entry whose thing_classes are ``names`` (for the Visualizers)."""
    digest = hashlib.sha1("\n".join(names).encode("utf-8")).hexdigest()[:10]
    metadata = MetadataCatalog.get(f"__gridclip_demo_{label}_{digest}")
    if not metadata.get("thing_classes", None):
        metadata.set(thing_classes=list(names))
    return metadata


def expand_inputs(patterns):
    """Files from file names, glob patterns and folders (folders: their image files, sorted)."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(
                os.path.join(pattern, f) for f in os.listdir(pattern) if f.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                logger.warning("Folder '%s' has no image files (%s).", pattern, ", ".join(IMAGE_EXTENSIONS))
            paths.extend(found)
        elif glob.has_magic(pattern):
            found = sorted(glob.glob(os.path.expanduser(pattern)))
            if not found:
                logger.warning("Pattern '%s' matches no file.", pattern)
            paths.extend(found)
        else:
            paths.append(pattern)  # a missing file is reported when it is read
    return paths


def output_path_for(output, input_path, num_inputs):
    """``output`` itself when it names a file and there is one input, else ``output/<input basename>``."""
    is_file = os.path.splitext(output)[1] != "" and not os.path.isdir(output)
    if is_file:
        if num_inputs != 1:
            raise SystemExit(f"--output '{output}' is a file name but there are {num_inputs} inputs; give a folder.")
        parent = os.path.dirname(output)
        if parent:
            os.makedirs(parent, exist_ok=True)
        return output
    os.makedirs(output, exist_ok=True)
    return os.path.join(output, os.path.basename(input_path))


def describe(detections):
    return ", ".join(f"{name} ({score:.2f})" for name, score in zip(detections.class_names, detections.scores.tolist()))


def draw(image_bgr, detections, metadata):
    """Visualizer drawing of ``detections`` on the image; returns an HWC uint8 BGR array."""
    visualizer = Visualizer(image_bgr[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE)
    return visualizer.draw_instance_predictions(detections.to_instances()).get_image()[:, :, ::-1]


def run_images(predictor, paths, metadata, output):
    """Detect, print, visualise each image; returns the paths that failed."""
    failed = []
    for path in tqdm.tqdm(paths, disable=len(paths) < 2, desc="images", file=sys.stderr):
        start = time.perf_counter()
        try:
            image = predictor.read_image(path)
            detections = predictor(image)
        except (OSError, ValueError) as e:
            logger.error("Failed on '%s': %s", path, e)
            failed.append(path)
            continue
        elapsed = time.perf_counter() - start
        logger.info("%s: detected %d instances in %.3fs", path, len(detections), elapsed)
        print(f"{path}: {len(detections)} detections: {describe(detections)}", flush=True)
        vis = draw(image, detections, metadata)
        if output:
            target = output_path_for(output, path, len(paths))
            if not cv2.imwrite(target, vis):
                logger.error("Could not write '%s' (is the extension an image format?).", target)
                failed.append(path)
        else:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, vis)
            if cv2.waitKey(0) == 27:  # Esc
                break
    return failed


def video_writer_for(path, fps, width, height):
    """cv2.VideoWriter for ``path`` (.avi: MJPG; .mkv: x264 if available; else mp4v)."""
    extension = os.path.splitext(path)[1].lower()
    codecs = {".avi": ["MJPG"], ".mkv": ["x264", "mp4v"]}.get(extension, ["mp4v"])
    for codec in codecs:
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), float(fps), (width, height), True)
        if writer.isOpened():
            return writer
    raise SystemExit(f"Cannot open a video writer for '{path}' (tried codecs {codecs}); use .mp4 or .avi.")


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


def run_video(predictor, video_path, metadata, output):
    """Visualise every frame of ``video_path``; returns the failed inputs (the video, if unreadable)."""
    capture = cv2.VideoCapture(video_path)
    if not os.path.isfile(video_path) or not capture.isOpened():
        logger.error("Failed on '%s': cannot open the video (missing file or unsupported format).", video_path)
        return [video_path]
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    if output:
        base = os.path.splitext(os.path.basename(video_path))[0] + ".mp4"
        target = output if os.path.splitext(output)[1] and not os.path.isdir(output) else os.path.join(output, base)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        writer = video_writer_for(target, fps, width, height)
    start, count, names = time.perf_counter(), 0, set()
    try:
        frames = tqdm.tqdm(read_frames(capture), total=num_frames, desc="frames", file=sys.stderr)
        for index, vis, detections in process_frames(predictor, frames, metadata):
            count += 1
            names.update(detections.class_names)
            print(f"{video_path} frame {index}: {len(detections)} detections: {describe(detections)}", flush=True)
            if writer is not None:
                writer.write(vis)
            elif show_frame(vis):
                break
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if count == 0:
        logger.error("Failed on '%s': no frame could be decoded.", video_path)
        return [video_path]
    elapsed = time.perf_counter() - start
    logger.info("%s: %d frames in %.2fs (%.3fs per frame)%s", video_path, count, elapsed, elapsed / count,
                f", written to {target}" if writer is not None else "")
    return []


def show_frame(vis):
    """Show one visualised frame in the demo window; True when the user pressed Esc (stop)."""
    cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    cv2.imshow(WINDOW_NAME, vis)
    return cv2.waitKey(1) == 27


def run_webcam(predictor, metadata, output):
    capture = cv2.VideoCapture(0)
    if not capture.isOpened():
        logger.error("Cannot open the webcam (device 0).")
        return ["webcam"]
    writer = None
    try:
        for index, vis, detections in process_frames(predictor, read_frames(capture), metadata):
            print(f"webcam frame {index}: {len(detections)} detections: {describe(detections)}", flush=True)
            if output:
                if writer is None:
                    target = output if os.path.splitext(output)[1] else os.path.join(output, "webcam.mp4")
                    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
                    writer = video_writer_for(target, 15, vis.shape[1], vis.shape[0])
                writer.write(vis)
            if show_frame(vis):
                break
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        cv2.destroyAllWindows()
    return []


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="gridclip")
    logger.info("Arguments: %s", args)
    sources = sum([bool(args.input), bool(args.video_input), bool(args.webcam)])
    if sources != 1:
        raise SystemExit("Give exactly one of --input, --video-input, --webcam.")
    if len(args.opts) % 2:
        raise SystemExit(f"--opts takes KEY VALUE pairs, got an odd number of items: {args.opts}")
    vocabulary = resolve_demo_vocabulary(args)
    predictor = GridCLIPPredictor(
        args.config_file,
        vocabulary=vocabulary,
        opts=args.opts,
        device="cpu" if args.cpu else None,
        confidence_threshold=args.confidence_threshold,
    )
    metadata = vocabulary_metadata(predictor.vocabulary, args.vocabulary or "config")
    logger.info("Vocabulary: %d classes (%s%s)", len(predictor.vocabulary), ", ".join(predictor.vocabulary[:10]),
                ", ..." if len(predictor.vocabulary) > 10 else "")

    if args.input:
        paths = expand_inputs(args.input)
        if not paths:
            raise SystemExit(f"--input {args.input}: no image found.")
        failed = run_images(predictor, paths, metadata, args.output)
    elif args.video_input:
        failed = run_video(predictor, args.video_input, metadata, args.output)
    else:
        failed = run_webcam(predictor, metadata, args.output)
    if failed:
        logger.error("%d input(s) failed: %s", len(failed), ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
