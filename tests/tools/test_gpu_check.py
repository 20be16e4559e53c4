"""
The GPU check kit (dev/gpu_check/) on this CPU machine, no network:

- ``run.py --dry-run`` once for the module: inside a simulated bare GPU machine (this interpreter's
  packages minus the carried ones, Detectron2 and gridclip) it installs every carried distribution
  from wheels repacked from this venv, Detectron2 from the hash-checked sdist of ``make setup``'s
  cache, imports the stack, runs the ``cuda``-marked tests (all skipped here, with a reason), the
  small benchmark, and leaves at most 8 files in --out;
- the manifest's pins follow requirements.txt; what a device call carries stays under 64 MiB;
- the run refuses wheels for another Python, a tampered Detectron2 sdist and an --out holding an
  earlier run's files, each with one clear line.

The download mode of prepare.py needs the package registry and is not run here (CI on a fresh clone
has no downloaded wheels, and tests must not need the network); the dry run installs the same
distributions, repacked from the venv that ``make setup`` built with the same pins.
"""
import importlib.util
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KIT = os.path.join(REPO, "dev", "gpu_check")
SDIST_CACHE = os.path.join(REPO, ".venv", "cache", "pb1-detectron2-0.6.tar.gz")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"gridclip_gpu_check_{name}", os.path.join(KIT, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kit():
    return _load("run")


@pytest.fixture(scope="module")
def manifest():
    return _load("manifest")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """(exit code, output, out folder) of one ``run.py --dry-run`` (tests collected from tests/cuda)."""
    if not os.path.isfile(SDIST_CACHE):
        pytest.skip(f"{SDIST_CACHE} is missing (Detectron2 not installed by `make setup` here): the dry run "
                    "installs Detectron2 from that verified sdist")
    out = tmp_path_factory.mktemp("gpu_check_out")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("OUT", None)
    cmd = [sys.executable, os.path.join(KIT, "run.py"), "--dry-run", "--out", str(out), "--tests", "tests/cuda"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    return proc.returncode, proc.stdout + proc.stderr, out


def test_dry_run_installs_everything_from_wheels_and_runs_each_step(dry_run, manifest):
    code, output, out = dry_run
    assert code == 0, output[-6000:]
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["name"]: s["status"] for s in summary["steps"]}
    assert steps == {"probe": "ok", "install wheels": "ok", "install detectron2": "ok", "smoke": "ok",
                     "cuda tests": "ok", "benchmark": "ok"}, summary["steps"]
    # The simulated machine had none of the carried distributions: all came from the wheel folder.
    assert sorted(summary["to_install"]) == sorted(f"{i.name}=={v}" for i, v in manifest.pinned_versions())
    assert summary["machine_provided"] == {}
    smoke = summary["smoke"]
    assert smoke["detectron2"] == "0.6" and not smoke["cuda_available"]
    site_folder = os.sep + "site" + os.sep
    assert site_folder in smoke["detectron2_file"], smoke  # the staged sdist, not this venv's copy
    assert smoke["gridclip_file"].startswith(os.path.join(REPO, "projects", "GridCLIP"))
    assert isinstance(smoke["compat"], dict), smoke["compat"]  # gridclip.compat's report on that stack


def test_dry_run_skips_every_cuda_test_with_a_reason(dry_run):
    _, output, out = dry_run
    cases = list(ET.parse(out / "junit.xml").getroot().iter("testcase"))
    names = {c.get("name").split("[")[0] for c in cases}
    assert {"test_fp16_autocast_teacher_matches_fp32_and_cpu", "test_amp_training_lowers_finite_losses",
            "test_train_net_trains_checkpoints_and_evaluates_on_cuda", "test_predictor_on_cuda_equals_cpu",
            "test_nccl_ddp_amp_steps_with_teacher_hook",
            "test_teacher_hook_times_the_teacher_with_cuda_events_under_amp"} <= names
    for case in cases:
        skipped = case.find("skipped")
        assert skipped is not None and "CUDA" in skipped.get("message", ""), ET.tostring(case)[:300]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pytest"]["skipped"] == len(cases) and summary["pytest"]["failures"] == 0


def test_dry_run_writes_the_benchmark_and_at_most_eight_files(dry_run, kit):
    _, _, out = dry_run
    files = sorted(p.name for p in out.iterdir())
    assert set(files) <= set(kit.OUT_FILES) and len(files) <= 8, files
    assert {"gpu_check.log", "summary.json", "junit.xml", "benchmark.json", "benchmark.md"} <= set(files)
    benchmark = json.loads((out / "benchmark.json").read_text())
    # The dry run measures GridCLIP only (--no-peer: the FCOS peers are R50s, slow on this CPU; the smoke
    # step loads their model-zoo LazyConfig, tests/tools/test_benchmark.py runs them).
    entry = benchmark["models"]["GridCLIP-Tiny-Synthetic"]
    assert entry["fp32"]["inference"]["fps"] > 0 and entry["fp32"]["train"]["images_per_s"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["targets"] is None  # speed targets are only judged on CUDA
    assert summary["total_seconds"] <= summary["budget_s"]


def test_manifest_pins_follow_requirements(manifest):
    pins = manifest.requirement_pins()
    pinned = manifest.pinned_versions()
    assert len(pinned) == len(manifest.CARRIED) and len({i.normalized for i, _ in pinned}) == len(pinned)
    for item, version in pinned:
        if item.normalized in pins:
            assert version == pins[item.normalized], item.name
    # Detectron2 v0.6 needs iopath < 0.1.10 and the pkg_resources of setuptools < 81.
    versions = {i.name: v for i, v in pinned}
    assert tuple(map(int, versions["iopath"].split("."))) < (0, 1, 10)
    assert int(versions["setuptools"].split(".")[0]) < 81


def test_what_a_device_call_carries_stays_under_the_limit(manifest):
    prepare = _load("prepare")
    wheels = manifest.DEFAULT_WHEELS_DIR
    if os.path.isdir(wheels):
        assert prepare.folder_size(wheels) <= manifest.WHEELS_BUDGET_MB * 2**20
    tree = prepare.travel_size()
    if tree is None:
        pytest.skip("not a git checkout: cannot list what a device call would carry")
    # The working tree (tracked + untracked-not-ignored files) plus the wheel folder's budget.
    assert tree + manifest.WHEELS_BUDGET_MB * 2**20 < 0.75 * manifest.DEVICE_CARRY_LIMIT_MB * 2**20, tree / 2**20


def test_wheels_for_another_python_are_refused(kit, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"python": "2.7", "mode": "download"}))
    with pytest.raises(kit.KitError, match="wheels for Python 2.7"):
        kit.check_wheel_folder(str(tmp_path))
    with pytest.raises(kit.KitError, match="prepare the wheel folder"):
        kit.check_wheel_folder(str(tmp_path / "missing"))


def test_a_tampered_detectron2_sdist_is_refused(kit, tmp_path):
    sdist = tmp_path / "pb1-detectron2-0.6.tar.gz"
    sdist.write_bytes(b"not the audited file")
    with pytest.raises(kit.install_detectron2.HashMismatchError, match="sha256"):
        kit.stage_detectron2(str(tmp_path), str(tmp_path / "stage"))
    assert not (tmp_path / "stage").exists()


def test_an_earlier_run_is_not_overwritten(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    proc = subprocess.run([sys.executable, os.path.join(KIT, "run.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2
    assert "already holds summary.json" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "summary.json").read_text() == "{}"


def test_speed_targets_are_judged_on_cuda_results_only(kit):
    def benchmark(gpu, fps, images_per_s, share):
        return {
            "machine": {"gpu_name": gpu},
            "settings": {"config_file": "configs/GridCLIP-R50-FPN-2x.yaml"},
            "models": {
                "GridCLIP-R50-FPN-2x": {"amp": {"inference": {"fps": fps},
                                                "train": {"images_per_s": images_per_s, "teacher_share": share}}},
                "FCOS-R50 (Detectron2)": {"amp": {"inference": {"fps": 500.0}, "train": {"images_per_s": 90.0}}},
            },
        }

    rows = kit.check_targets(benchmark("NVIDIA H200", 52.0, 20.0, 0.03))
    assert [r["met"] for r in rows] == [True, False, True]  # 40 FPS, 25 images/s, teacher <= 5 %
    assert rows[1]["value"] == 20.0 and "25" in rows[1]["target"]
    assert kit.check_targets(benchmark(None, 52.0, 30.0, 0.03)) is None  # a CPU run judges nothing
    missing = kit.check_targets({"machine": {"gpu_name": "H200"}, "settings": {}, "models": {"X": {"amp": {"skipped": "no"}}}})
    assert all(r["met"] is None for r in missing)
