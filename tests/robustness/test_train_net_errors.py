"""
tools/train_net.py's expected failures, run in-process through its command line (``cli_main``): each
ends with one line on stderr naming the problem and a non-zero exit status, before any process or
dataset work starts; Ctrl-C during training is one line naming the last checkpoint; weights of another
config are refused for --eval-only.
"""
import importlib.util
import os

import pytest

from .conftest import REPO_ROOT, write_tiny_config


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"gridclip_tool_{name}", os.path.join(REPO_ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_net = _load_tool("train_net")


@pytest.fixture(autouse=True)
def fresh_loggers():
    """
    Detectron2's ``setup_logger`` is cached and its handlers keep the stream they were made with: in
    one pytest process that is an earlier test's (closed) capture stream, and logging would print
    "--- Logging error ---" tracebacks that a real ``train_net.py`` process never shows. Give every
    in-process run the fresh loggers a new process has.
    """
    import logging

    from detectron2.utils import logger as d2_logger

    def reset():
        getattr(d2_logger.setup_logger, "cache_clear", lambda: None)()
        for name in ("detectron2", "d2", "fvcore", "gridclip"):
            log = logging.getLogger(name)
            for handler in list(log.handlers):
                log.removeHandler(handler)

    reset()
    yield
    reset()


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.delenv("GRIDCLIP_DEBUG", raising=False)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "no_datasets"))
    return write_tiny_config(tmp_path / "tiny.yaml", "unregistered_train", "unregistered_val", tmp_path / "out")


def _run(capsys, *argv):
    code = train_net.cli_main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.mark.parametrize(
    "opts, expected",
    [
        (["SOLVER.MAX_ITERS", "3"], "Unknown config key SOLVER.MAX_ITERS .* Did you mean SOLVER.MAX_ITER"),
        (["SOLVER.MAX_ITER", "many"], "Wrongly typed config value: .*SOLVER.MAX_ITER"),
        (["--eval-only"], "--eval-only needs trained weights: add MODEL.WEIGHTS"),
        (["MODEL.WEIGHTS", "missing/model_final.pth"], "MODEL.WEIGHTS 'missing/model_final.pth' does not exist"),
        (["OUTPUT_DIR", "/sys/gridclip_read_only_out"], "Cannot write to the OUTPUT_DIR '/sys/gridclip_read_only_out'"),
    ],
    ids=["unknown-key", "wrong-type", "eval-only-without-weights", "missing-weights", "read-only-output-dir"],
)
def test_bad_command_lines_are_one_line(capsys, config, opts, expected):
    code, line = _run(capsys, "--config-file", config, *opts)
    assert code == 1
    assert line.startswith("train_net.py: error: ")
    assert pytest.importorskip("re").search(expected, line), line


def test_bad_yaml_and_output_dir_under_a_file(capsys, config, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("MODEL: [unclosed\n")
    code, line = _run(capsys, "--config-file", str(broken))
    assert code == 1 and "Cannot load config" in line and "broken.yaml" in line
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, line = _run(capsys, "--config-file", config, "OUTPUT_DIR", str(blocker / "out"))
    assert code == 1 and "Cannot write to the OUTPUT_DIR" in line


def test_ctrl_c_names_the_last_checkpoint_and_other_config_weights_are_refused(
    capsys, tmp_path, world_dataset, embeddings_cache, monkeypatch
):
    from gridclip.engine.trainer import GridCLIPTrainer

    monkeypatch.delenv("GRIDCLIP_DEBUG", raising=False)
    output_dir = tmp_path / "out"
    config = write_tiny_config(tmp_path / "tiny.yaml", world_dataset.train_base, world_dataset.val, output_dir)
    run_step = GridCLIPTrainer.run_step

    def interrupted_run_step(self):
        if self.iter == 1:  # after the checkpoint of iteration 0 (CHECKPOINT_PERIOD 1)
            raise KeyboardInterrupt
        return run_step(self)

    monkeypatch.setattr(GridCLIPTrainer, "run_step", interrupted_run_step)
    code = train_net.cli_main(["--config-file", config, "SOLVER.CHECKPOINT_PERIOD", "1", "MODEL.GRIDCLIP.IMAGE_ALIGN",
                               "False", "TEST.EVAL_PERIOD", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130
    assert err[-1] == (
        f"train_net.py: interrupted: training stopped at iteration 1; the last checkpoint is "
        f"{output_dir / 'model_0000000.pth'}: continue with --resume."
    )
    assert "Traceback" not in "\n".join(err)
    monkeypatch.setattr(GridCLIPTrainer, "run_step", run_step)

    # The checkpoint of this config, evaluated with another adapter width: an error listing the parameters.
    code, line = _run(capsys, "--config-file", config, "--eval-only", "MODEL.WEIGHTS",
                      str(output_dir / "model_0000000.pth"), "MODEL.GRIDCLIP.IMAGE_ALIGN", "False",
                      "MODEL.GRIDCLIP.ADAPTER_CHANNELS", "16")
    assert code == 1
    assert "does not fit this model" in line and "grid_adapter" in line and "ALLOW_PARTIAL_WEIGHTS" in line
