"""
Command-line error handling shared by GridCLIP's tools: an expected failure (a bad argument, a
missing or unreadable file, a wrong config key, a full disk, Ctrl-C) ends with ONE clear line on
stderr and a non-zero exit status instead of a Python traceback. Bugs (any other exception) still
show their traceback.

    from gridclip.tool_errors import run_tool

    def main(argv=None):
        ...

    if __name__ == "__main__":
        sys.exit(run_tool(main, sys.argv[1:], prog="demo.py"))

``--debug`` on the command line (removed before ``main`` sees it) or ``GRIDCLIP_DEBUG=1`` in the
environment re-raises expected failures too, with their full traceback.

This module imports nothing heavy (no torch, no detectron2), so a tool can use it before its lazy
imports and ``--help`` stays fast.
"""
import errno
import os
import pickle
import sys

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "ToolError",
    "debug_enabled",
    "expected_error",
    "format_error",
    "run_tool",
    "check_writable_dir",
]

EXIT_FAILURE = 1
#: 128 + SIGINT, what a shell reports for a process stopped with Ctrl-C
EXIT_INTERRUPTED = 130

DEBUG_FLAG = "--debug"
DEBUG_ENV = "GRIDCLIP_DEBUG"


class ToolError(Exception):
    """An expected failure whose message is already the one line to show (no type name added)."""


def debug_enabled(argv=()) -> bool:
    """True when ``--debug`` is in ``argv`` or ``GRIDCLIP_DEBUG`` is set to something other than 0/false."""
    value = os.environ.get(DEBUG_ENV, "").strip().lower()
    return DEBUG_FLAG in list(argv or ()) or value not in ("", "0", "false", "no", "off")


def _expected_types():
    types = [ToolError, ValueError, KeyError, OSError, FloatingPointError, pickle.UnpicklingError]
    try:  # YAML syntax errors of config files
        import yaml

        types.append(yaml.YAMLError)
    except ImportError:  # pragma: no cover - yaml comes with Detectron2's dependencies
        pass
    # Only when the module is already loaded: importing it here would defeat lazy imports.
    checkpoint = sys.modules.get("gridclip.checkpoint")
    if checkpoint is not None:
        types.append(checkpoint.CorruptCheckpointError)
        types.append(checkpoint.CheckpointMismatchError)
    return tuple(types)


def _os_error_in_chain(exc):
    """The first OSError with an errno in ``exc``'s cause/context chain (torch wraps ENOSPC in RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _worker_error(exc):
    """An expected failure inside a ``--num-gpus`` worker: torch.multiprocessing re-raises it in the
    launcher as ProcessRaisedException whose text ends with the worker's ``Type: message`` line."""
    if type(exc).__name__ != "ProcessRaisedException":
        return None
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1].strip()
    type_name, _, message = last.partition(": ")
    expected = {t.__name__ for t in _expected_types()} | {
        "FileNotFoundError", "PermissionError", "NotADirectoryError", "IsADirectoryError", "NonFiniteLossError",
        "CorruptImageError",
    }
    if type_name.rsplit(".", 1)[-1] not in expected:
        return None
    process = next((line.strip(" -") for line in lines if "terminated with the following error" in line),
                   "a worker process")
    return ToolError(f"{process.replace(' terminated with the following error:', '')} failed: {message or last}")


def expected_error(exc):
    """The exception to report in one line, or None when ``exc`` is a bug (show its traceback)."""
    if isinstance(exc, _expected_types()):
        return exc
    return _worker_error(exc) or _os_error_in_chain(exc)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def format_error(exc) -> str:
    """One line for an expected failure: the message, with the errno name and the file for OS errors."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        code = errno.errorcode.get(exc.errno, str(exc.errno))
        message = f"{exc.strerror} ({code})"
        if exc.filename is not None:
            message += f": {exc.filename}"
        if exc.filename2 is not None:
            message += f" -> {exc.filename2}"
        return _one_line(message)
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return _one_line(exc.args[0])  # str(KeyError) would add quotes
    message = _one_line(str(exc)) or type(exc).__name__
    return message


def run_tool(main, argv=None, prog=None, expected=()) -> int:
    """
    Run ``main(argv)`` and turn expected failures into one line on stderr.

    ``expected``: more exception types that are expected failures of this tool (e.g. RuntimeError
    for open_clip's "model config not found").

    Returns:
        int: ``main``'s return value (None -> 0), 1 after an expected failure, 130 after Ctrl-C.
        ``SystemExit`` (argparse errors, ``--help``) passes through unchanged.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    prog = prog or os.path.basename(sys.argv[0] or "gridclip")
    try:
        result = main(argv)
    except KeyboardInterrupt as e:
        if debug:
            raise
        detail = _one_line(str(e))
        print(f"{prog}: interrupted{': ' + detail if detail else ''}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except BaseException as e:  # noqa: B902 - sorted into expected failures and bugs below
        reported = e if expected and isinstance(e, tuple(expected)) else expected_error(e)
        if reported is None or debug:
            raise
        print(f"{prog}: error: {format_error(reported)} (run with {DEBUG_FLAG} or {DEBUG_ENV}=1 for the "
              "traceback)", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    return 0 if result is None else int(result)


def check_writable_dir(path, what="output folder") -> str:
    """
    Create ``path`` if needed and check that a file can be written there (a real write, so read-only
    file systems and permission problems are found before hours of work, also for root).

    Raises:
        ToolError: naming ``what``, the path and the reason.
    """
    import tempfile

    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".gridclip-write-test-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        reason = e.strerror or str(e)
        if isinstance(e, FileExistsError) or (os.path.exists(path) and not os.path.isdir(path)):
            reason = "it exists and is not a folder"
        raise ToolError(f"Cannot write to the {what} '{path}': {reason}. Choose a folder you can write to.") from None
    return path
