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
import logging
import sys

# Heavy imports (torch, Detectron2, OpenCV, gridclip) happen after argument parsing, so `--help` and
# usage errors are instant; `import gridclip` still comes before any Detectron2 import. The demo's
# logic lives in gridclip.demo; the choices and extensions below are checked against it by the tests.

logger = logging.getLogger("gridclip.demo")

#: --vocabulary choices: gridclip.vocabulary.BUILTIN_VOCABULARIES, and "custom" (--custom-vocabulary)
VOCABULARIES = ("lvis", "lvis_base", "coco", "voc", "custom")
#: gridclip.demo.outputs.IMAGE_EXTENSIONS / INPUT_IMAGE_EXTENSIONS / VIDEO_EXTENSIONS, for the help text
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
INPUT_IMAGE_EXTENSIONS = IMAGE_EXTENSIONS + (".gif", ".jfif", ".ppm", ".pgm", ".pbm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv")


def get_parser():
    parser = argparse.ArgumentParser(description="GridCLIP open-vocabulary detection demo")
    parser.add_argument("--config-file", metavar="FILE", help="path to a GridCLIP config file (or --weights-folder)")
    parser.add_argument("--weights-folder", metavar="FOLDER_OR_HUB_ID",
                        help="a weights folder (GridCLIPPredictor.from_pretrained: config, weights, CLIP files, "
                        "class names) or a model-hub id, instead of --config-file + MODEL.WEIGHTS")
    parser.add_argument("--exemplar", action="append", metavar="NAME=IMAGE:x0,y0,x1,y1",
                        help="an image exemplar as a class (repeatable; one NAME for several = their average): "
                        "added to --vocabulary's names, or alone the vocabulary")
    parser.add_argument(
        "--input", nargs="+",
        help=f"image files, glob patterns ('imgs/*.jpg') or folders (their {'/'.join(INPUT_IMAGE_EXTENSIONS)} files)",
    )
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



def main(argv=None):
    """The demo; returns the exit status (expected failures raise, see :func:`cli_main`)."""
    args = get_parser().parse_args(argv)
    import gridclip  # noqa: F401  (first: applies the Detectron2 compatibility fixes)
    from detectron2.utils.logger import setup_logger
    from gridclip.demo.arguments import add_demo_exemplars, check_arguments, resolve_demo_vocabulary
    from gridclip.demo.outputs import plan_run
    from gridclip.demo.runs import run_images, run_video, run_webcam
    from gridclip.demo.visualization import printable, vocabulary_metadata
    from gridclip.predictor import GridCLIPPredictor

    setup_logger(name="fvcore")
    setup_logger(name="gridclip")
    logger.info("Arguments: %s", args)
    check_arguments(args)
    image_targets, video_target = plan_run(args)
    vocabulary = add_demo_exemplars(args, resolve_demo_vocabulary(args))
    predictor = GridCLIPPredictor.from_pretrained(
        args.weights_folder, vocabulary=vocabulary, opts=args.opts, device="cpu" if args.cpu else None,
        confidence_threshold=args.confidence_threshold,
    ) if args.weights_folder else GridCLIPPredictor(
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
        logger.error("%d input(s) failed: %s", len(failed), ", ".join(printable(path) for path in failed))
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
