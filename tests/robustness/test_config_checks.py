"""
Config values are range-checked where a model or a run is built, in one line naming the key: for
tools/train_net.py (in-process, ``cli_main``), the predictor, tools/demo.py and ``GridCLIP`` itself;
a ``_BASE_`` cycle or a missing base file is one line, not a RecursionError.
"""
import importlib.util
import os

import pytest

from gridclip.config import get_gridclip_cfg
from gridclip.config_checks import ConfigValueError, check_base_chain, check_config

from .conftest import REPO_ROOT, write_tiny_config


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"gridclip_tool_{name}_checks",
                                                  os.path.join(REPO_ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def config(tmp_path, monkeypatch, embeddings_cache):
    monkeypatch.delenv("GRIDCLIP_DEBUG", raising=False)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "no_datasets"))
    return write_tiny_config(tmp_path / "tiny.yaml", "unregistered_train", "unregistered_val", tmp_path / "out")


BAD_MODEL_VALUES = [
    ("MODEL.FCOS.SCORE_THRESH_TEST", "-0.1", r"a score threshold in \[0, 1\)"),
    ("MODEL.FCOS.SCORE_THRESH_TEST", "1.0", r"a score threshold in \[0, 1\)"),
    ("MODEL.FCOS.NMS_THRESH_TEST", "-0.5", r"an NMS IoU threshold in \(0, 1\]"),
    ("MODEL.FCOS.NMS_THRESH_TEST", "1.5", r"an NMS IoU threshold in \(0, 1\]"),
    ("MODEL.FCOS.TOPK_CANDIDATES_TEST", "0", "an integer >= 1"),
    ("TEST.DETECTIONS_PER_IMAGE", "0", "an integer >= 1"),
    ("MODEL.FCOS.PRIOR_PROB", "1.0", r"a probability in \(0, 1\)"),
    ("INPUT.MIN_SIZE_TEST", "-1", "an integer >= 0"),  # 0 is Detectron2's "no resize"
    ("MODEL.GRIDCLIP.IMAGE_LOSS_WEIGHT", "-1.0", "a number >= 0"),
]
BAD_RUN_VALUES = [
    ("SOLVER.IMS_PER_BATCH", "0", "an integer >= 1"),
    ("SOLVER.BASE_LR", "-0.01", "a finite number > 0"),
    ("SOLVER.MAX_ITER", "0", "an integer >= 1"),
    ("DATALOADER.NUM_WORKERS", "-1", "an integer >= 0"),
    ("SOLVER.CHECKPOINT_PERIOD", "0", "an integer >= 1"),
    ("MODEL.GRIDCLIP.TEACHER.INPUT_SIZE", "-64", "an integer >= 0"),
    ("MODEL.GRIDCLIP.TEACHER.CROPS", "1", r"0 \(the teacher embeds the whole image only\) or an integer >= 2"),
]


@pytest.mark.parametrize("key, value, expected", BAD_MODEL_VALUES + BAD_RUN_VALUES)
def test_each_value_out_of_range_is_one_line_naming_the_key(config, key, value, expected):
    cfg = get_gridclip_cfg(config, [key, value])
    with pytest.raises(ConfigValueError, match=rf"^Config value {key} = .* is out of range: it must be {expected}"):
        check_config(cfg)
    model_only = (key, value, expected) in BAD_MODEL_VALUES
    if not model_only:  # a run's key: the predictor and the demo do not care
        check_config(cfg, training=False)


def test_nan_from_yaml_is_refused(config):
    cfg = get_gridclip_cfg(config)
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = float("nan")  # what `SCORE_THRESH_TEST: .nan` in a YAML file gives
    with pytest.raises(ConfigValueError, match="MODEL.FCOS.SCORE_THRESH_TEST = nan is out of range"):
        check_config(cfg, training=False)


def test_detectron2s_no_resize_setting_stays_valid(config):
    check_config(get_gridclip_cfg(config, ["INPUT.MIN_SIZE_TEST", "0"]))  # Detectron2: 0 disables the resize


def test_every_shipped_config_passes():
    import glob

    configs = glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)
    configs += glob.glob(os.path.join(REPO_ROOT, "tests", "configs", "*.yaml"))
    assert len(configs) > 10
    for path in configs:
        check_config(get_gridclip_cfg(path))


def test_train_net_refuses_in_one_line(config, capsys):
    train_net = _load_tool("train_net")
    for key, value, expected in [("SOLVER.IMS_PER_BATCH", "0", "an integer >= 1"),
                                 ("MODEL.FCOS.TOPK_CANDIDATES_TEST", "0", "an integer >= 1")]:
        code = train_net.cli_main(["--config-file", config, key, value])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 1
        assert err[-1].startswith(f"train_net.py: error: Config value {key} = {value} is out of range: it must be "
                                  f"{expected}"), err
        assert "Traceback" not in "\n".join(err)


def test_predictor_demo_and_model_refuse_before_building(config, capsys, tmp_path):
    from gridclip import GridCLIPPredictor
    from gridclip.modeling.meta_arch import GridCLIP

    with pytest.raises(ConfigValueError, match="MODEL.FCOS.NMS_THRESH_TEST = 1.5"):
        GridCLIPPredictor(config, weights="", vocabulary=["cat"], opts=["MODEL.FCOS.NMS_THRESH_TEST", "1.5"])
    cfg = get_gridclip_cfg(config, ["MODEL.FCOS.TOPK_CANDIDATES_TEST", "0"])
    with pytest.raises(ConfigValueError, match="MODEL.FCOS.TOPK_CANDIDATES_TEST = 0"):
        GridCLIP(cfg, train_class_names=["cat"], test_class_names=["cat"])

    demo = _load_tool("demo")
    image = tmp_path / "a.png"
    image.write_bytes(b"")  # never read: the config is refused first
    code = demo.cli_main(["--config-file", config, "--cpu", "--input", str(image), "--output", str(tmp_path / "vis"),
                          "--vocabulary", "custom", "--custom-vocabulary", "cat,dog",
                          "--opts", "MODEL.WEIGHTS", "", "MODEL.FCOS.NMS_THRESH_TEST", "-0.5"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("demo.py: ")]
    assert code == 1 and len(err) == 1
    assert "Config value MODEL.FCOS.NMS_THRESH_TEST = -0.5 is out of range" in err[0]


def _write(path, base=None, extra="MODEL:\n  DEVICE: cpu\n"):
    path.write_text((f'_BASE_: "{base}"\n' if base else "") + extra)
    return str(path)


def test_base_cycles_and_missing_bases_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = _write(tmp_path / "a.yaml", base="b.yaml")
    _write(tmp_path / "b.yaml", base="a.yaml")
    with pytest.raises(ConfigValueError, match=r"_BASE_ cycle: a.yaml -> b.yaml -> a.yaml"):
        get_gridclip_cfg(a)
    itself = _write(tmp_path / "self.yaml", base="self.yaml")
    with pytest.raises(ConfigValueError, match=r"_BASE_ cycle: self.yaml -> self.yaml"):
        check_base_chain(itself)
    missing = _write(tmp_path / "m.yaml", base="nowhere/base.yaml")
    with pytest.raises(FileNotFoundError, match=r"m.yaml names _BASE_ .*nowhere/base.yaml, which does not exist"):
        get_gridclip_cfg(missing)
    # a diamond (two bases sharing one) is no cycle
    _write(tmp_path / "root.yaml")
    _write(tmp_path / "left.yaml", base="root.yaml")
    _write(tmp_path / "right.yaml", base="root.yaml")
    (tmp_path / "top.yaml").write_text('_BASE_: ["left.yaml", "right.yaml"]\n')
    assert get_gridclip_cfg(str(tmp_path / "top.yaml")).MODEL.DEVICE == "cpu"


def test_train_net_base_cycle_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GRIDCLIP_DEBUG", raising=False)
    a = _write(tmp_path / "a.yaml", base="b.yaml")
    _write(tmp_path / "b.yaml", base="a.yaml")
    code = _load_tool("train_net").cli_main(["--config-file", a])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and "_BASE_ cycle" in err[-1] and "RecursionError" not in "\n".join(err)
