"""
What the demo reads and writes: input expansion (files, glob patterns, folders) and the output plan
(one output per input, checked before any work; outputs never overwrite an input or each other).
Both are linear in the number of inputs (20,000 inputs plan in about a second) and show a progress
bar from ``PROGRESS_MIN_INPUTS`` inputs.
"""
import collections
import glob
import logging
import os
import sys

import tqdm

from ..tool_errors import ToolError, check_writable_dir

__all__ = [
    "IMAGE_EXTENSIONS", "INPUT_IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "VIS_SUFFIX", "PROGRESS_MIN_INPUTS",
    "expand_inputs", "output_is_file", "plan_outputs", "plan_run",
]

logger = logging.getLogger(__name__)

#: formats the demo writes (and reads)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: formats a folder input is searched for: what ``gridclip.data.mapper.read_image`` decodes (a .gif's
#: visualisation is written as PNG), the same files an explicit name or a glob pattern accepts
INPUT_IMAGE_EXTENSIONS = IMAGE_EXTENSIONS + (".gif", ".jfif", ".ppm", ".pgm", ".pbm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv")
VIS_SUFFIX = "_vis"
#: expansion and planning show a progress bar (stderr) from this many inputs
PROGRESS_MIN_INPUTS = 2000


def _progress(items, description, total=None):
    total = len(items) if total is None else total
    return tqdm.tqdm(items, total=total, desc=description, unit="input", file=sys.stderr,
                     disable=total < PROGRESS_MIN_INPUTS, leave=False)


def expand_inputs(patterns):
    """
    Image files from file names, glob patterns and folders (a folder: its files with an extension of
    ``INPUT_IMAGE_EXTENSIONS``, sorted; subfolders are not entered, also when named like an image).
    Each file once, in order.
    """
    paths, seen = [], set()

    def add(path, key=None):
        key = key or os.path.realpath(path)
        if key in seen:
            logger.warning("'%s' is given more than once; processing it once.", path)
            return
        seen.add(key)
        paths.append(path)

    for pattern in patterns:
        if os.path.isdir(pattern):
            folder_real = os.path.realpath(pattern)
            with os.scandir(pattern) as entries:  # one directory read, file types without a stat per file
                found = sorted(
                    (entry.name, entry.is_symlink()) for entry in entries
                    if entry.name.lower().endswith(INPUT_IMAGE_EXTENSIONS) and entry.is_file()
                )
            if not found:
                logger.warning("Folder '%s' has no image files (%s).", pattern, ", ".join(INPUT_IMAGE_EXTENSIONS))
            for name, is_link in _progress(found, "listing inputs"):
                path = os.path.join(pattern, name)
                add(path, None if is_link else os.path.join(folder_real, name))
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
    input_dirs = {os.path.dirname(os.path.abspath(p)) for p in inputs}
    real = _RealPaths()
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
    collide = {b for b, count in collections.Counter(basenames).items() if count > 1}
    planned, used = {}, set()
    input_real = {real(p) for p in inputs if os.path.lexists(p)}
    output_real = os.path.realpath(output)
    for path, base in _progress(list(zip(inputs, basenames)), "planning outputs"):
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
        while real.target(target, output_real) in used or real.target(target, output_real) in input_real:
            counter += 1
            target = os.path.join(output, f"{stem}_{counter}{extension}")
        used.add(real.target(target, output_real))
        planned[path] = target
    if collide:
        logger.warning("Inputs share file names (%s): their outputs are named <folder>__<name>.",
                       ", ".join(sorted(collide)))
    check_writable_dir(output, "output folder")
    return planned


class _RealPaths:
    """``os.path.realpath`` with each folder resolved once (a realpath per file costs a stat per path part)."""

    def __init__(self):
        self._folders = {}

    def __call__(self, path):
        if os.path.islink(path):
            return os.path.realpath(path)
        folder, name = os.path.split(os.path.abspath(path))
        if folder not in self._folders:
            self._folders[folder] = os.path.realpath(folder)
        return os.path.join(self._folders[folder], name)

    def target(self, target, output_real):
        """The real path of ``target`` (a name inside the output folder, whose real path is ``output_real``)."""
        if os.path.islink(target):
            return os.path.realpath(target)
        return os.path.join(output_real, os.path.basename(target))


def plan_run(args):
    """(image targets {input: output or None}, video target or None) after all checks; raises ToolError."""
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
