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

Safety: outputs never overwrite an input or another output of the same run. An output folder equal
to or inside an input folder is refused (``--allow-output-in-input`` permits it; outputs are then
named ``<name>_vis.<ext>``). Inputs with the same file name from different folders get distinct
output names. Arguments are checked before the model is built: a missing display without --output,
an output extension that is not an image/video format, an output folder that cannot be written.
An unreadable input is reported by name, the other inputs are still processed, and the exit status
is 1 at the end if anything failed. Expected failures end with one line (``--debug`` or
``GRIDCLIP_DEBUG=1`` shows the traceback).
"""
import argparse
import glob
import logging
import os
import sys
import tempfile
import time

# Heavy imports (torch, Detectron2, OpenCV, gridclip) happen after argument parsing, so `--help` and
# usage errors are instant; `import gridclip` still comes before any Detectron2 import.

logger = logging.getLogger("gridclip.demo")

VOCABULARIES = ("lvis", "lvis_base", "coco", "voc", "custom")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv")
VIS_SUFFIX = "_vis"
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
        f"(images: {'/'.join(IMAGE_EXTENSIONS)}; video: {'/'.join(VIDEO_EXTENSIONS)}). Without it, images "
        "are shown in a window (needs a display).",
    )
    parser.add_argument(
        "--allow-output-in-input", action="store_true",
        help="allow --output to be (inside) an input folder; outputs are then named <name>_vis.<ext> and "
        "never replace an input",
    )
    parser.add_argument(
        "--vocabulary", choices=VOCABULARIES, default=None,
        help="class names to detect: LVIS (1203), LVIS base (866), COCO (80), VOC (20) or custom "
        "(--custom-vocabulary). Default: the config's test vocabulary, else the names stored in the weights.",
    )
    parser.add_argument(
        "--custom-vocabulary", default="",
        help="with --vocabulary custom: comma-separated names ('cat,red umbrella') or a text file, one name "
        "per line ('#' lines are comments)",
    )
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score of shown detections")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even if CUDA is available")
    parser.add_argument(
        "--allow-partial-weights", action="store_true",
        help="load weights even if some do not fit the config (those stay random); default: an error",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a failure")
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth",
    )
    return parser


# ---------------------------------------------------------------------------------------- arguments
def check_arguments(args):
    """Everything that can be checked before the (slow) model is built; raises ToolError."""
    from gridclip.tool_errors import ToolError

    sources = sum([bool(args.input), bool(args.video_input), bool(args.webcam)])
    if sources != 1:
        raise ToolError("Give exactly one of --input, --video-input, --webcam.")
    if len(args.opts) % 2:
        raise ToolError(f"--opts takes KEY VALUE pairs, got an odd number of items: {args.opts}")
    if not 0.0 <= args.confidence_threshold < 1.0:
        raise ToolError(f"--confidence-threshold must be in [0, 1), got {args.confidence_threshold}.")
    if not os.path.isfile(args.config_file):
        raise ToolError(f"--config-file '{args.config_file}' does not exist.")
    if args.custom_vocabulary and args.vocabulary != "custom":
        raise ToolError("--custom-vocabulary needs --vocabulary custom.")
    if args.vocabulary == "custom" and not args.custom_vocabulary.strip():
        raise ToolError("--vocabulary custom needs --custom-vocabulary 'name1,name2' or a file of names.")
    if not args.output and (args.input or args.video_input or args.webcam) and not display_available():
        raise ToolError(
            f"No display to show the results in (DISPLAY={os.environ.get('DISPLAY', '')!r} cannot be reached, "
            "no WAYLAND_DISPLAY): give --output FOLDER to write the visualisations instead."
        )


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
    import socket

    try:
        with socket.create_connection((host, 6000 + int(number)), timeout=0.5):
            return True
    except OSError:
        return False


def resolve_demo_vocabulary(args):
    """The class names of --vocabulary / --custom-vocabulary (None = the config's / checkpoint's)."""
    from gridclip.tool_errors import ToolError
    from gridclip.vocabulary import parse_custom_vocabulary, resolve_vocabulary

    if args.vocabulary is None:
        return None
    if args.vocabulary == "custom":
        try:
            return parse_custom_vocabulary(args.custom_vocabulary)
        except (ValueError, TypeError, OSError) as e:
            raise ToolError(f"--custom-vocabulary: {e}") from None
    return resolve_vocabulary(args.vocabulary)


# ---------------------------------------------------------------------------------------- inputs
def expand_inputs(patterns):
    """
    Image files from file names, glob patterns and folders (a folder: its image files, sorted;
    subfolders are not entered, also when named like an image). Each file once, in order.
    """
    paths, seen = [], set()

    def add(path):
        key = os.path.realpath(path)
        if key in seen:
            logger.warning("'%s' is given more than once; processing it once.", path)
            return
        seen.add(key)
        paths.append(path)

    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(
                os.path.join(pattern, f) for f in os.listdir(pattern)
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(pattern, f))
            )
            if not found:
                logger.warning("Folder '%s' has no image files (%s).", pattern, ", ".join(IMAGE_EXTENSIONS))
            for path in found:
                add(path)
        elif glob.has_magic(pattern):
            matches = sorted(glob.glob(os.path.expanduser(pattern)))
            found = [m for m in matches if os.path.isfile(m)]
            if len(found) < len(matches):
                logger.warning("Pattern '%s': skipping %d folder(s) it matches.", pattern, len(matches) - len(found))
            if not found:
                logger.warning("Pattern '%s' matches no file.", pattern)
            for path in found:
                add(path)
        else:
            add(pattern)  # a missing file is reported when it is read
    return paths


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def output_is_file(output):
    """--output names a file (an extension, not an existing folder, no trailing separator)."""
    return (
        bool(os.path.splitext(output)[1])
        and not os.path.isdir(output)
        and not output.endswith((os.sep, "/"))
    )


def plan_outputs(inputs, output, extensions, allow_in_input, forced_extension=None, input_folders=()):
    """
    {input path: output path} for ``inputs`` written under ``output``, checked before any work:

    - ``output`` as a file name needs exactly one input and an extension of ``extensions``;
    - an output folder equal to or inside an input folder (``input_folders``), or equal to the folder
      of an input file, is refused unless ``allow_in_input`` (outputs are then named
      ``<name>_vis.<ext>``);
    - inputs with the same file name from different folders get distinct names
      (``<folder>__<name>``); no output may be an input or another input's output;
    - the output folder must be writable.
    """
    from gridclip.tool_errors import ToolError, check_writable_dir

    input_dirs = {os.path.dirname(os.path.abspath(p)) for p in inputs}
    if output_is_file(output):
        extension = os.path.splitext(output)[1].lower()
        if extension not in extensions:
            raise ToolError(
                f"--output '{output}' has the extension '{extension}', which is not one of "
                f"{', '.join(extensions)}; give such a file name, or a folder (add a trailing '/')."
            )
        if len(inputs) != 1:
            raise ToolError(f"--output '{output}' is a file name but there are {len(inputs)} inputs; give a folder.")
        if os.path.exists(inputs[0]) and os.path.realpath(output) == os.path.realpath(inputs[0]):
            raise ToolError(f"--output '{output}' is the input itself; it would be overwritten. Give another name.")
        check_writable_dir(os.path.dirname(output) or ".", "output folder")
        return {inputs[0]: output}

    inside = sorted({os.path.abspath(d) for d in input_folders if _inside(output, d)}
                    | {d for d in input_dirs if os.path.realpath(output) == os.path.realpath(d)})
    if inside and not allow_in_input:
        raise ToolError(
            f"--output '{output}' is "
            f"{'the' if os.path.realpath(output) == os.path.realpath(inside[0]) else 'inside the'} "
            f"input folder '{inside[0]}': the visualisations would mix with (or replace) the inputs. Give another "
            "folder, or --allow-output-in-input to write <name>_vis files there."
        )
    basenames = [os.path.basename(p) for p in inputs]
    collide = {b for b in basenames if basenames.count(b) > 1}
    planned, used = {}, set()
    input_real = {os.path.realpath(p) for p in inputs if os.path.exists(p)}
    for path, base in zip(inputs, basenames):
        stem, extension = os.path.splitext(base)
        if forced_extension:
            extension = forced_extension
        elif extension.lower() not in extensions:  # e.g. a .gif input: written as PNG
            extension = ".png"
        if base in collide:  # the parent folder's name makes it unique; a counter if that is not enough
            stem = f"{os.path.basename(os.path.dirname(os.path.abspath(path))) or 'root'}__{stem}"
        if inside:
            stem += VIS_SUFFIX
        target, counter = os.path.join(output, stem + extension), 1
        while os.path.realpath(target) in used or os.path.realpath(target) in input_real:
            counter += 1
            target = os.path.join(output, f"{stem}_{counter}{extension}")
        used.add(os.path.realpath(target))
        planned[path] = target
    if collide:
        logger.warning("Inputs share file names (%s): their outputs are named <folder>__<name>.",
                       ", ".join(sorted(collide)))
    check_writable_dir(output, "output folder")
    return planned


# ---------------------------------------------------------------------------------------- drawing
def vocabulary_metadata(names):
    """Visualizer metadata whose thing_classes are ``names`` (nothing is registered in a catalog)."""
    from detectron2.data.catalog import Metadata

    return Metadata(thing_classes=list(names))


def describe(detections):
    return ", ".join(f"{name} ({score:.2f})" for name, score in zip(detections.class_names, detections.scores.tolist()))


def draw(image_bgr, detections, metadata):
    """Visualizer drawing of ``detections`` on the image; returns an HWC uint8 BGR array."""
    from detectron2.utils.visualizer import ColorMode, Visualizer

    visualizer = Visualizer(image_bgr[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE)
    return visualizer.draw_instance_predictions(detections.to_instances()).get_image()[:, :, ::-1]


def write_image(path, image_bgr):
    """Encode by extension and write atomically (a temp file renamed onto ``path``): no partial file."""
    import cv2

    extension = os.path.splitext(path)[1].lower()
    try:
        ok, encoded = cv2.imencode(extension, image_bgr)
    except cv2.error:
        ok = False
    if not ok:
        raise ValueError(f"OpenCV cannot encode '{extension}' images (for '{path}').")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gridclip-demo-", suffix=extension, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encoded.tobytes())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def show(vis, wait_ms):
    """Show one visualisation in the demo window; True when the user pressed Esc (stop)."""
    import cv2
    from gridclip.tool_errors import ToolError

    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
        cv2.imshow(WINDOW_NAME, vis)
        return cv2.waitKey(wait_ms) == 27
    except cv2.error as e:
        raise ToolError(f"Cannot open a window ({str(e).strip().splitlines()[-1]}); give --output FOLDER.") from None


# ---------------------------------------------------------------------------------------- runs
def run_images(predictor, targets, metadata):
    """Detect, print, visualise each image (``targets``: {input: output or None}); returns the failed inputs."""
    import tqdm

    failed = []
    paths = list(targets)
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
        target = targets[path]
        if target is None:
            if show(vis, 0):
                break
            continue
        try:
            write_image(target, vis)
        except (OSError, ValueError) as e:
            logger.error("Failed on '%s': could not write '%s': %s", path, target, getattr(e, "strerror", None) or e)
            failed.append(path)
    return failed


def video_writer_for(path, fps, width, height):
    """cv2.VideoWriter for ``path`` (.avi: MJPG; .mkv: x264 if available; else mp4v)."""
    import cv2
    from gridclip.tool_errors import ToolError, check_writable_dir

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


def process_frames(predictor, frames, metadata):
    """Yield (frame_index, visualised BGR frame, detections) for BGR frames, tracking colours across frames."""
    from detectron2.utils.video_visualizer import VideoVisualizer
    from detectron2.utils.visualizer import ColorMode

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
    import cv2
    import tqdm

    if not os.path.isfile(video_path):
        logger.error("Failed on '%s': no such video file.", video_path)
        return [video_path]
    capture = cv2.VideoCapture(video_path)
    if not capture.isOpened():
        logger.error("Failed on '%s': cannot open the video (not a video, or a format OpenCV cannot read).", video_path)
        return [video_path]
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = video_writer_for(target, fps, width, height) if target else None
    start, count, stopped = time.perf_counter(), 0, False
    try:
        frames = tqdm.tqdm(read_frames(capture), total=num_frames, desc="frames", file=sys.stderr)
        for index, vis, detections in process_frames(predictor, frames, metadata):
            count += 1
            print(f"{video_path} frame {index}: {len(detections)} detections: {describe(detections)}", flush=True)
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
        logger.error("Failed on '%s': no frame could be decoded.", video_path)
        return [video_path]
    elapsed = time.perf_counter() - start
    logger.info("%s: %d frames in %.2fs (%.3fs per frame)%s", video_path, count, elapsed, elapsed / count,
                f", written to {target}" if writer is not None else "")
    if num_frames and count < num_frames and not stopped:
        logger.error(
            "Failed on '%s': the video ended after %d of its %d frames (truncated or corrupt)%s.", video_path, count,
            num_frames, f"; the {count} decoded frames are in {target}" if writer is not None else "",
        )
        return [video_path]
    return []


def run_webcam(predictor, metadata, target):
    import cv2

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


def plan_run(args):
    """(image targets {input: output or None}, video target or None) after all checks; raises ToolError."""
    from gridclip.tool_errors import ToolError, check_writable_dir

    if args.input:
        paths = expand_inputs(args.input)
        if not paths:
            raise ToolError(f"--input {' '.join(args.input)}: no image file found.")
        if not args.output:
            return {p: None for p in paths}, None
        folders = [p for p in args.input if os.path.isdir(p)]
        return plan_outputs(paths, args.output, IMAGE_EXTENSIONS, args.allow_output_in_input, input_folders=folders), None
    if not args.output:
        return None, None
    if args.video_input:
        planned = plan_outputs([args.video_input], args.output, VIDEO_EXTENSIONS, args.allow_output_in_input,
                               forced_extension=".mp4")
        return None, planned[args.video_input]
    if output_is_file(args.output):  # webcam
        return None, plan_outputs(["webcam"], args.output, VIDEO_EXTENSIONS, True)["webcam"]
    return None, os.path.join(check_writable_dir(args.output, "output folder"), "webcam.mp4")


def main(argv=None):
    """The demo; returns the exit status (expected failures raise, see :func:`cli_main`)."""
    args = get_parser().parse_args(argv)
    import gridclip  # noqa: F401  (first: applies the Detectron2 compatibility fixes)
    from detectron2.utils.logger import setup_logger
    from gridclip.predictor import GridCLIPPredictor

    setup_logger(name="fvcore")
    setup_logger(name="gridclip")
    logger.info("Arguments: %s", args)
    check_arguments(args)
    image_targets, video_target = plan_run(args)
    vocabulary = resolve_demo_vocabulary(args)
    predictor = GridCLIPPredictor(
        args.config_file,
        vocabulary=vocabulary,
        opts=args.opts,
        device="cpu" if args.cpu else None,
        confidence_threshold=args.confidence_threshold,
        allow_partial_weights=args.allow_partial_weights,
    )
    metadata = vocabulary_metadata(predictor.vocabulary)
    logger.info("Vocabulary: %d classes (%s%s)", len(predictor.vocabulary), ", ".join(predictor.vocabulary[:10]),
                ", ..." if len(predictor.vocabulary) > 10 else "")

    if args.input:
        failed = run_images(predictor, image_targets, metadata)
    elif args.video_input:
        failed = run_video(predictor, args.video_input, metadata, video_target)
    else:
        failed = run_webcam(predictor, metadata, video_target)
    if failed:
        logger.error("%d input(s) failed: %s", len(failed), ", ".join(failed))
        return 1
    return 0


def cli_main(argv=None):
    """The command line: ``--help`` and usage errors before any heavy import; expected failures end with
    one line and exit status 1 (``--debug`` / ``GRIDCLIP_DEBUG=1``: the traceback)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    get_parser().parse_args(argv)  # --help / usage errors exit here, in a fraction of a second
    from gridclip.tool_errors import run_tool

    return run_tool(main, argv, prog="demo.py")


if __name__ == "__main__":
    sys.exit(cli_main())
