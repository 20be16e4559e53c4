"""
The demo's checks of its command line, made before the (slow) model is built, and its vocabulary
(``--vocabulary`` / ``--custom-vocabulary`` -> names).
"""
import os

from ..tool_errors import ToolError
from ..vocabulary import parse_custom_vocabulary, resolve_vocabulary
from .visualization import display_available

__all__ = ["check_arguments", "resolve_demo_vocabulary", "add_demo_exemplars"]


def check_arguments(args):
    """Everything that can be checked before the (slow) model is built; raises ToolError."""
    sources = sum([bool(args.input), bool(args.video_input), bool(args.webcam)])
    if sources != 1:
        raise ToolError("Give exactly one of --input, --video-input, --webcam.")
    if len(args.opts) % 2:
        raise ToolError(f"--opts takes KEY VALUE pairs, got an odd number of items: {args.opts}")
    if not 0.0 <= args.confidence_threshold < 1.0:
        raise ToolError(f"--confidence-threshold must be in [0, 1), got {args.confidence_threshold}.")
    folder = getattr(args, "weights_folder", None)
    if bool(args.config_file) == bool(folder):
        raise ToolError("Give exactly one of --config-file (with MODEL.WEIGHTS) and --weights-folder.")
    if args.config_file and not os.path.isfile(args.config_file):
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


def resolve_demo_vocabulary(args):
    """The class names of --vocabulary / --custom-vocabulary (None = the config's / checkpoint's)."""
    if args.vocabulary is None:
        return None
    if args.vocabulary == "custom":
        try:
            return parse_custom_vocabulary(args.custom_vocabulary)
        except (ValueError, TypeError, OSError) as e:
            raise ToolError(f"--custom-vocabulary: {e}") from None
    return resolve_vocabulary(args.vocabulary)


def add_demo_exemplars(args, vocabulary):
    """``--exemplar NAME=IMAGE:x0,y0,x1,y1`` entries (gridclip.Exemplar) after ``vocabulary``'s names; with no
    --vocabulary the exemplars alone are the vocabulary. Bad specs are one ToolError line."""
    specs = getattr(args, "exemplar", None) or []
    if not specs:
        return vocabulary
    from ..exemplars import parse_exemplar

    try:
        exemplars = [parse_exemplar(spec) for spec in specs]
    except (ValueError, OSError) as e:
        raise ToolError(f"--exemplar: {e}") from None
    return list(vocabulary or []) + exemplars
