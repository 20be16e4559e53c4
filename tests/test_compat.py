"""
Each fix in gridclip.compat: the upstream failure reproduces with that fix disabled (in a fresh
interpreter), and the same code works with gridclip's fixes applied.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from gridclip import compat

PYTHON = sys.executable


def run_snippet(code, disable="", tmp_path=None):
    """Run ``code`` after ``import gridclip`` in a fresh interpreter; return (returncode, output)."""
    env = dict(os.environ)
    env["GRIDCLIP_DISABLE_COMPAT"] = disable
    env["PYTHONWARNINGS"] = "default"
    script = "import gridclip\n" + textwrap.dedent(code)
    result = subprocess.run(
        [PYTHON, "-c", script], env=env, capture_output=True, text=True, timeout=240,
        cwd=str(tmp_path) if tmp_path else None,
    )
    return result.returncode, result.stdout + result.stderr


def test_every_fix_is_applied_on_import():
    assert compat.APPLIED == [name for name, _ in compat.FIXES]


def test_unknown_fix_name_is_refused():
    code, out = run_snippet("", disable="no_such_fix")
    assert code != 0
    assert "unknown fixes ['no_such_fix']" in out


IMPORT_TRANSFORMS = "import detectron2.data.transforms as T; print('imported', T.ExtentTransform.__name__)"


def test_pillow_linear_fix():
    code, out = run_snippet(IMPORT_TRANSFORMS, disable="pillow_constants")
    assert code != 0 and "LINEAR" in out
    code, out = run_snippet(IMPORT_TRANSFORMS)
    assert code == 0 and "imported ExtentTransform" in out, out


LVIS_ACCUMULATE = """
import json, sys
from lvis import LVIS, LVISEval, LVISResults
gt = {
    "images": [{"id": 1, "height": 100, "width": 100, "neg_category_ids": [], "not_exhaustive_category_ids": []}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500,
                     "segmentation": [[10, 10, 60, 10, 60, 60, 10, 60]]}],
    "categories": [{"id": 1, "name": "cat", "frequency": "f", "image_count": 1, "instance_count": 1}],
}
json.dump(gt, open("gt.json", "w"))
lvis_gt = LVIS("gt.json")
dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9}]
ev = LVISEval(lvis_gt, LVISResults(lvis_gt, dets), "bbox")
ev.run()
print("AP", round(ev.results["AP"], 6))
"""


def test_numpy_alias_fix_lvis_eval(tmp_path):
    code, out = run_snippet(LVIS_ACCUMULATE, disable="numpy_aliases", tmp_path=tmp_path)
    assert code != 0 and "has no attribute 'float'" in out
    code, out = run_snippet(LVIS_ACCUMULATE, tmp_path=tmp_path)
    assert code == 0, out
    assert "AP 1.0" in out


HISTOGRAM = """
import logging
from detectron2.data.build import print_instances_class_histogram
print_instances_class_histogram([{"annotations": [{"category_id": 0, "iscrowd": 0}]}], ["cat"])
print("histogram ok")
"""


def test_numpy_alias_fix_class_histogram():
    code, out = run_snippet(HISTOGRAM, disable="numpy_aliases")
    assert code != 0 and "has no attribute 'int'" in out
    code, out = run_snippet(HISTOGRAM)
    assert code == 0 and "histogram ok" in out, out


MODEL_ZOO_IMPORT = "import detectron2.model_zoo; print('model_zoo ok')"


def test_pkg_resources_warning_fix():
    code, out = run_snippet(MODEL_ZOO_IMPORT, disable="pkg_resources_warning")
    assert code == 0 and "pkg_resources is deprecated" in out
    code, out = run_snippet(MODEL_ZOO_IMPORT)
    assert code == 0 and "model_zoo ok" in out and "pkg_resources is deprecated" not in out


MAP_DATASET_RETRY = """
from detectron2.data.common import MapDataset
ds = MapDataset(list(range(5)), lambda x: None if x == 0 else x * 10)
print("value", ds[0])
"""


def test_map_dataset_fallback_fix():
    code, out = run_snippet(MAP_DATASET_RETRY, disable="map_dataset_fallback")
    assert code != 0 and "must be a sequence" in out
    code, out = run_snippet(MAP_DATASET_RETRY)
    assert code == 0 and any(f"value {v}" in out for v in (10, 20, 30, 40)), out


def test_map_dataset_all_failing_gives_clear_error():
    from detectron2.data.common import MapDataset

    ds = MapDataset(list(range(3)), lambda x: None)
    with pytest.raises(RuntimeError, match="Every element of the dataset failed to load"):
        ds[0]


LR_HOOK_STATE = """
import torch
from detectron2.engine import hooks
opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
opt.step(); sched.step()
print("state", sorted(hooks.LRScheduler(opt, sched).state_dict().keys()))
"""


def test_lr_scheduler_hook_state_fix():
    code, out = run_snippet(LR_HOOK_STATE, disable="lr_scheduler_hook_state")
    assert code == 0 and "state []" in out
    code, out = run_snippet(LR_HOOK_STATE)
    assert code == 0 and "'last_epoch'" in out, out


def test_lr_scheduler_hook_restores_state():
    import torch
    from detectron2.engine import hooks

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        opt.step()
        sched.step()
    saved = hooks.LRScheduler(opt, sched).state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    hooks.LRScheduler(opt2, sched2).load_state_dict(saved)
    assert sched2.last_epoch == 3


GN_HEAD = """
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.fcos import FCOSHead
head = FCOSHead(input_shape=[ShapeSpec(channels=64)] * 3, conv_dims=[64, 64], num_classes=3, norm="GN")
print("groupnorms", sum(type(m).__name__ == "GroupNorm" for m in head.modules()))
"""


def test_group_norm_head_fix():
    code, out = run_snippet(GN_HEAD, disable="group_norm_head_probe")
    assert code != 0 and "divisible" in out
    code, out = run_snippet(GN_HEAD)
    assert code == 0 and "groupnorms 4" in out, out


ANALYSIS = """
import torch
from detectron2.utils.analysis import parameter_count
print("params", parameter_count(torch.nn.Linear(3, 2))[""])
"""


def test_export_without_caffe2_fix():
    code, out = run_snippet(ANALYSIS, disable="export_without_caffe2")
    assert code != 0 and "caffe2" in out
    code, out = run_snippet(ANALYSIS)
    assert code == 0 and "params 8" in out, out


NUMPY_CHECKPOINT = """
import numpy as np, torch, pickle
from detectron2.checkpoint import DetectionCheckpointer
torch.save({"model": {"w": torch.zeros(1)}, "extra": np.arange(3)}, "legacy.pth")
try:
    DetectionCheckpointer(torch.nn.Linear(1, 1)).load("legacy.pth")
except pickle.UnpicklingError as e:
    print("ERROR:", str(e).splitlines()[0])
"""


def test_checkpointer_weights_only_message(tmp_path):
    code, out = run_snippet(NUMPY_CHECKPOINT, disable="checkpointer_weights_only_message", tmp_path=tmp_path)
    assert "ERROR:" in out and "Refusing to unpickle" not in out
    code, out = run_snippet(NUMPY_CHECKPOINT, tmp_path=tmp_path)
    assert "ERROR: Refusing to unpickle legacy.pth" in out, out
    assert "weights_only=True" in out


def test_collect_env_and_default_setup_with_placeholder(tmp_path):
    """default_setup() calls collect_env_info(), which reads detectron2._C's version helpers."""
    from detectron2.config import get_cfg
    from detectron2.engine import default_setup
    from detectron2.utils.collect_env import collect_env_info

    info = collect_env_info()
    assert "detectron2" in info
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.MODEL.DEVICE = "cpu"
    default_setup(cfg, type("Args", (), {"config_file": "", "eval_only": False})())
    assert (tmp_path / "config.yaml").is_file()
    assert json.loads(json.dumps({"ok": True}))["ok"]
