"""
gridclip.tool_errors.run_tool: an expected failure is one line on stderr and exit status 1; Ctrl-C is one line
and 130; --debug / GRIDCLIP_DEBUG keep the traceback; bugs keep theirs; a full disk names ENOSPC and the
file even when torch wraps it; a --num-gpus worker's expected failure is one line in the launcher.
"""
import errno

import pytest

from gridclip.tool_errors import ToolError, check_writable_dir, format_error, run_tool


def _fail(exc):
    def main(argv):
        raise exc

    return main


def test_expected_failure_is_one_line_and_exit_1(capsys, monkeypatch):
    monkeypatch.delenv("GRIDCLIP_DEBUG", raising=False)
    assert run_tool(_fail(ValueError("MODEL.WEIGHTS 'x.pth' does not exist.\n  second line")), [], prog="t") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("t: error: MODEL.WEIGHTS 'x.pth' does not exist. second line")
    assert "Traceback" not in err


def test_debug_flag_and_env_keep_the_traceback(monkeypatch):
    monkeypatch.delenv("GRIDCLIP_DEBUG", raising=False)
    seen = []

    def main(argv):
        seen.append(argv)
        raise ValueError("bad")

    with pytest.raises(ValueError):
        run_tool(main, ["--debug", "--x"], prog="t")
    assert seen == [["--x"]]  # --debug is removed before main sees it
    monkeypatch.setenv("GRIDCLIP_DEBUG", "1")
    with pytest.raises(ValueError):
        run_tool(main, [], prog="t")


def test_bugs_keep_their_traceback(monkeypatch):
    monkeypatch.delenv("GRIDCLIP_DEBUG", raising=False)
    with pytest.raises(ZeroDivisionError):
        run_tool(_fail(ZeroDivisionError("a bug")), [], prog="t")


def test_ctrl_c_is_one_line_and_130(capsys):
    assert run_tool(_fail(KeyboardInterrupt("training stopped at iteration 7")), [], prog="t") == 130
    assert capsys.readouterr().err == "t: interrupted: training stopped at iteration 7\n"


def test_full_disk_wrapped_by_torch_names_enospc_and_file(capsys, monkeypatch):
    monkeypatch.delenv("GRIDCLIP_DEBUG", raising=False)

    def main(argv):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/out/metrics.json")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    assert run_tool(main, [], prog="t") == 1
    err = capsys.readouterr().err
    assert "ENOSPC" in err and "/out/metrics.json" in err and "inline_container" not in err


def test_worker_failure_is_one_line(capsys, monkeypatch):
    monkeypatch.delenv("GRIDCLIP_DEBUG", raising=False)

    class ProcessRaisedException(Exception):  # the name torch.multiprocessing uses
        pass

    text = ("\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
            '  File "x.py", line 3, in main\nFileNotFoundError: Dataset my_train: annotation file missing')
    assert run_tool(_fail(ProcessRaisedException(text)), [], prog="t") == 1
    err = capsys.readouterr().err
    assert err.startswith("t: error: Process 1 failed: Dataset my_train: annotation file missing")
    with pytest.raises(ProcessRaisedException):  # a bug in a worker keeps its traceback
        run_tool(_fail(ProcessRaisedException(text.replace("FileNotFoundError", "ZeroDivisionError"))), [], prog="t")


def test_check_writable_dir(tmp_path):
    assert check_writable_dir(tmp_path / "new" / "dir") == str(tmp_path / "new" / "dir")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ToolError, match="Cannot write to the OUTPUT_DIR .*file.txt"):
        check_writable_dir(blocker / "out", "OUTPUT_DIR")
    with pytest.raises(ToolError, match="not a folder"):
        check_writable_dir(blocker, "output folder")


def test_format_error_os_error_and_key_error():
    assert format_error(PermissionError(errno.EACCES, "Permission denied", "/ro/log.txt")) == (
        "Permission denied (EACCES): /ro/log.txt"
    )
    assert format_error(KeyError("Non-existent key: A.B")) == "Non-existent key: A.B"
