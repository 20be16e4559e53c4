"""
Each fix in gridclip.compat.fixes, on whichever Detectron2 is installed (v0.6 sdist or compiled main):
where the fix's probe found the upstream problem, the failure reproduces with that fix disabled (in a
fresh interpreter) and the same code works with the fix; where the probe found no problem, the fix
is not applied and the same code works without it.
"""
import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

from gridclip import compat
from gridclip.compat import fixes, installed_code

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


_RUNNER = """
import contextlib, io, json, sys, traceback
import gridclip
results = {}
for name, code in json.loads(sys.argv[1]).items():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            exec(compile(code, "<" + name + ">", "exec"), {"__name__": "__snippet__"})
            ok = True
        except BaseException:
            ok = False
            traceback.print_exc()
    results[name] = {"ok": ok, "output": out.getvalue()}
sys.stdout.write("@@RESULTS@@" + json.dumps(results))
"""


def run_snippets(snippets, disable, cwd):
    """
    Run each snippet (name -> code) in its own namespace in ONE fresh interpreter that imported
    gridclip with the fixes ``disable`` switched off (the snippets are independent of each other).
    Returns name -> (ok, output).
    """
    env = dict(os.environ, GRIDCLIP_DISABLE_COMPAT=",".join(disable), PYTHONWARNINGS="default")
    result = subprocess.run([PYTHON, "-c", _RUNNER, json.dumps(snippets)], env=env, capture_output=True,
                            text=True, timeout=300, cwd=str(cwd))
    assert "@@RESULTS@@" in result.stdout, result.stdout + result.stderr
    parsed = json.loads(result.stdout.split("@@RESULTS@@", 1)[1])
    return {name: (r["ok"], r["output"]) for name, r in parsed.items()}


def is_active(name):
    return compat.STATUS[name]["state"] == "active"


#: snippet name -> the fix whose upstream problem it shows (filled below, next to each snippet)
SNIPPETS = {}


@pytest.fixture(scope="module")
def snippet_runs(tmp_path_factory):
    """Every snippet with all fixes, and with every fix disabled except the Pillow one (needed to import)."""
    snippets = {name: textwrap.dedent(code) for name, code in SNIPPETS.items()}
    with_fixes = run_snippets(snippets, (), tmp_path_factory.mktemp("with_fixes"))
    others = [fix.name for fix in compat.FIXES if fix.name != "pillow_constants"]
    without_fixes = run_snippets(snippets, others, tmp_path_factory.mktemp("without_fixes"))
    return {"with": with_fixes, "without": without_fixes}


def check_fix(snippet_runs, name, snippet, failure, success, fails_with_error=True):
    """The problem reproduces without the fix where it exists; else the fix is absent and not needed."""
    ok, out = snippet_runs["without"][snippet]
    if is_active(name):
        assert failure in out, out
        assert ok != fails_with_error, out
    else:
        assert name not in compat.APPLIED
        assert ok and success in out and failure not in out, out  # upstream works without the fix
    ok, out = snippet_runs["with"][snippet]
    assert ok and success in out, out
    assert failure not in out


def test_every_fix_was_probed_on_import_and_only_needed_ones_applied():
    assert list(compat.STATUS) == [fix.name for fix in compat.FIXES]
    assert compat.APPLIED == [name for name, status in compat.STATUS.items() if status["state"] == "active"]
    assert all(status["state"] in ("active", "not needed") and status["reason"] for status in compat.STATUS.values())
    # Present on every Detectron2 we support with today's numpy/torch: lvis uses np.float, and
    # DetectionCheckpointer loads with torch's weights_only default.
    assert {"numpy_aliases", "checkpointer_weights_only_message"} <= set(compat.APPLIED)


def test_module_cli_lists_every_fix_with_its_state_and_reason():
    result = subprocess.run([PYTHON, "-m", "gridclip.compat"], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name, status in compat.STATUS.items():
        row = [line for line in lines if f" {name} " in line]
        assert len(row) == 1, result.stdout
        assert row[0].split()[0] == status["state"].split()[0].upper()
        assert status["reason"] in row[0]
    assert f"{len(compat.APPLIED)} of {len(compat.FIXES)} fixes active." in result.stdout
    assert "RuntimeWarning" not in result.stderr
    for feature in ("compiled ops", "launch", "trainer state"):
        assert any(line.strip().startswith(feature) for line in lines), result.stdout


def test_json_report_matches_the_probes():
    buffer = io.StringIO()
    compat.report(as_json=True, file=buffer)
    report = json.loads(buffer.getvalue())
    assert [f["name"] for f in report["fixes"]] == list(compat.STATUS)
    assert all(f["state"] == compat.STATUS[f["name"]]["state"] for f in report["fixes"])
    assert all(f["problem"] for f in report["fixes"])
    compiled = compat.detectron2_compiled_ops()[0]
    assert any(("use_fast_impl=True" if compiled else "use_fast_impl=False") in c["used"]
               for c in report["capabilities"])


def test_unknown_fix_name_is_refused(monkeypatch):
    monkeypatch.setenv("GRIDCLIP_DISABLE_COMPAT", "no_such_fix")
    with pytest.raises(ValueError, match=r"unknown fixes \['no_such_fix'\]"):
        compat.apply_all()


IMPORT_TRANSFORMS = "import detectron2.data.transforms as T; print('imported', T.ExtentTransform.__name__)"


def test_pillow_linear_fix():
    import PIL.Image

    if is_active("pillow_constants"):  # without it gridclip itself cannot import: its own interpreter
        code, out = run_snippet(IMPORT_TRANSFORMS, disable="pillow_constants")
        assert code != 0 and "LINEAR" in out
    else:
        assert "pillow_constants" not in compat.APPLIED
        if "Pillow has no Image.LINEAR" in compat.STATUS["pillow_constants"]["reason"]:
            assert not hasattr(PIL.Image, "LINEAR")  # not put back where Detectron2 does not need it
    import detectron2.data.transforms as T

    assert T.ExtentTransform.__name__ == "ExtentTransform"


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


SNIPPETS["lvis_accumulate"] = LVIS_ACCUMULATE


def test_numpy_alias_fix_lvis_eval(snippet_runs):
    check_fix(snippet_runs, "numpy_aliases", "lvis_accumulate", "has no attribute 'float'", "AP 1.0")


HISTOGRAM = """
import logging
from detectron2.data.build import print_instances_class_histogram
print_instances_class_histogram([{"annotations": [{"category_id": 0, "iscrowd": 0}]}], ["cat"])
print("histogram ok")
"""


SNIPPETS["histogram"] = HISTOGRAM


def test_numpy_alias_fix_class_histogram(snippet_runs):
    """Detectron2 v0.6's class histogram uses np.int; main's does not (and needs no alias for it)."""
    uses_alias = "detectron2/data/build.py" in installed_code.files_matching(("detectron2",), fixes.NUMPY_ALIAS_USE)
    ok, out = snippet_runs["without"]["histogram"]
    if uses_alias and is_active("numpy_aliases"):
        assert not ok and "has no attribute 'int'" in out
    else:
        assert ok and "histogram ok" in out, out
    ok, out = snippet_runs["with"]["histogram"]
    assert ok and "histogram ok" in out, out


MODEL_ZOO_IMPORT = "import detectron2.model_zoo; print('model_zoo ok')"


SNIPPETS["model_zoo_import"] = MODEL_ZOO_IMPORT


def test_pkg_resources_warning_fix(snippet_runs):
    check_fix(snippet_runs, "pkg_resources_warning", "model_zoo_import", "pkg_resources is deprecated",
              "model_zoo ok", fails_with_error=False)  # upstream "only" warns on every import


MAP_DATASET_RETRY = """
from detectron2.data.common import MapDataset
ds = MapDataset(list(range(5)), lambda x: None if x == 0 else x * 10)
print("value", ds[0])
"""


SNIPPETS["map_dataset_retry"] = MAP_DATASET_RETRY


def test_map_dataset_fallback_fix(snippet_runs):
    check_fix(snippet_runs, "map_dataset_fallback", "map_dataset_retry", "must be a sequence", "value ")
    assert any(f"value {v}" in snippet_runs["with"]["map_dataset_retry"][1] for v in (10, 20, 30, 40))


def test_map_dataset_all_failing_stops_with_an_error():
    from detectron2.data.common import MapDataset

    ds = MapDataset(list(range(3)), lambda x: None)
    if is_active("map_dataset_fallback"):
        with pytest.raises(RuntimeError, match="Every element of the dataset failed to load"):
            ds[0]
    else:  # upstream's own retry path: an error once no candidate is left, not an endless loop
        with pytest.raises(ValueError):
            ds[0]


LR_HOOK_STATE = """
import torch
from detectron2.engine import hooks
opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
opt.step(); sched.step()
print("state", sorted(hooks.LRScheduler(opt, sched).state_dict().keys()))
"""


SNIPPETS["lr_hook_state"] = LR_HOOK_STATE


def test_lr_scheduler_hook_state_fix(snippet_runs):
    check_fix(snippet_runs, "lr_scheduler_hook_state", "lr_hook_state", "state []", "'last_epoch'",
              fails_with_error=False)  # upstream silently returns no state


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


SNIPPETS["gn_head"] = GN_HEAD


def test_group_norm_head_fix(snippet_runs):
    check_fix(snippet_runs, "group_norm_head_probe", "gn_head", "divisible", "groupnorms 4")


def test_group_norm_probe_leaves_the_random_state_alone():
    import torch

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    fixes.probe_group_norm_head_probe()
    assert torch.equal(torch.rand(3), expected)


ANALYSIS = """
import torch
from detectron2.utils.analysis import parameter_count
print("params", parameter_count(torch.nn.Linear(3, 2))[""])
"""


SNIPPETS["analysis"] = ANALYSIS


def test_export_without_caffe2_fix(snippet_runs):
    check_fix(snippet_runs, "export_without_caffe2", "analysis", "caffe2", "params 8")


NUMPY_CHECKPOINT = """
import numpy as np, torch, pickle
from detectron2.checkpoint import DetectionCheckpointer
torch.save({"model": {"w": torch.zeros(1)}, "extra": np.arange(3)}, "legacy.pth")
try:
    DetectionCheckpointer(torch.nn.Linear(1, 1)).load("legacy.pth")
except pickle.UnpicklingError as e:
    print("ERROR:", str(e).splitlines()[0])
"""


SNIPPETS["numpy_checkpoint"] = NUMPY_CHECKPOINT


def test_checkpointer_weights_only_message(snippet_runs):
    assert is_active("checkpointer_weights_only_message")  # torch >= 2.6 everywhere we support
    ok, out = snippet_runs["without"]["numpy_checkpoint"]
    assert "ERROR:" in out and "Refusing to unpickle" not in out, out
    ok, out = snippet_runs["with"]["numpy_checkpoint"]
    assert "ERROR: Refusing to unpickle legacy.pth" in out, out
    assert "weights_only=True" in out


CPU_DDP_KWARGS = ("from gridclip.compat import fixes; "
                  "print('device_ids', fixes._ddp_kwargs_for_cpu_model().get('device_ids'))")


SNIPPETS["cpu_ddp_kwargs"] = CPU_DDP_KWARGS


def test_cpu_ddp_device_ids_fix(snippet_runs):
    check_fix(snippet_runs, "cpu_ddp_device_ids", "cpu_ddp_kwargs", "device_ids [0]", "device_ids None",
              fails_with_error=False)  # shown by the kwargs DDP would get (DDP needs a process group)


def test_collect_env_and_default_setup_with_the_installed_C(tmp_path):
    """default_setup() calls collect_env_info(), which reads detectron2._C's version helpers (placeholder too)."""
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
