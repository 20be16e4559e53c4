#!/usr/bin/env python3
"""
The GPU check kit's run script: ONE call on the lent GPU machine validates every CUDA path.

On the GPU machine (its own Python 3.12 + torch, no network), from the repository root:

    python3 dev/gpu_check/run.py                 # results into $OUT (the device tool returns them)

On a CPU development machine, after ``make setup`` (no network, CUDA tests skipped):

    .venv/bin/python dev/gpu_check/run.py --dry-run --out /tmp/gpu_check_out

Steps (each timed, logged, and recorded in ``summary.json``):

1. probe: which of ``manifest.CARRIED`` the machine lacks (by importable module; a distribution the
   machine has is never shadowed) and that ``manifest.MACHINE_MODULES`` are there;
2. install the missing ones from the wheel folder (``prepare.py``) into a temporary site folder
   (``pip install --no-index --no-deps --target``), then Detectron2 v0.6's Python package from the
   hash-checked sdist with the ``_C`` placeholder (dev/install_detectron2.py's staging) unless the
   machine has a Detectron2; gridclip is imported from the working tree (PYTHONPATH);
3. smoke: import the stack and Detectron2's model zoo; CUDA, GPU name, ``gridclip.compat``'s report;
4. ``pytest -m cuda`` (JUnit XML; the tests write their measurements to ``cuda_report.json``);
5. ``tools/benchmark.py`` on CUDA: GridCLIP-R50 vs Detectron2's FCOS-R50, 800×1333, fp32 and AMP
   (JSON + markdown), checked against the speed targets in ``TARGETS``.

``$OUT`` then holds at most 6 files: gpu_check.log, summary.json, junit.xml, cuda_report.json,
benchmark.json, benchmark.md. The whole run keeps within ``--budget`` seconds (default 480): the
tests get what the benchmark's reserve leaves, and a step past its share is stopped and reported.

``--dry-run`` runs the same steps on this machine's CPU inside a simulated bare GPU machine: a
throw-away virtual environment that sees this interpreter's packages EXCEPT the carried ones,
Detectron2 and gridclip, so the install step really installs everything from wheels. Without
``--wheels`` it repacks this interpreter's own copies (``prepare.py --from-installed``): no network.
The benchmark runs the tiny config at a small size.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # dev/: install_detectron2 (the sdist hash, its staging)
import install_detectron2  # noqa: E402
import manifest  # noqa: E402

REPO = manifest.REPO_ROOT
SIMULATED_ENV = "GRIDCLIP_GPU_CHECK_SIMULATED"
REPORT_ENV = "GRIDCLIP_GPU_REPORT"
#: the project's GPU speed targets (AMP, GridCLIP-R50, 800×1333, batch 2 per GPU)
TARGETS = (
    ("inference FPS, AMP, batch 1", ("amp", "inference", "fps"), ">=", 40.0),
    ("training images/s per GPU, AMP, teacher hook on", ("amp", "train", "images_per_s"), ">=", 25.0),
    ("teacher share of a training step, AMP", ("amp", "train", "teacher_share"), "<=", 0.05),
)
GPU_BENCHMARK = ["--size", "800", "1333", "--iters", "10", "--warmup", "3", "--train-batch", "2"]
DRY_RUN_BENCHMARK = [
    "--config-file", os.path.join(REPO, "configs", "GridCLIP-Tiny-Synthetic.yaml"), "--size", "64", "96",
    "--iters", "1", "--warmup", "0", "--train-batch", "2", "--precisions", "fp32", "--threads", "1",
    "--num-train-classes", "5", "--num-test-classes", "9", "--device", "cpu", "--no-flops", "--no-peer",
]
BENCHMARK_RESERVE_S = 200  # of the budget, kept for the benchmark after the tests (3 models, FLOP counts: ~2-3 min expected on an H200)
OUT_FILES = ("gpu_check.log", "summary.json", "junit.xml", "cuda_report.json", "benchmark.json", "benchmark.md")


class KitError(RuntimeError):
    """A set-up problem the user must fix; the message says what to do."""


class Run:
    """The log file, the step records and the deadline of one kit run."""

    def __init__(self, out, budget_s, mode):
        self.out = out
        self.start = time.monotonic()
        self.deadline = self.start + budget_s
        self.log_path = os.path.join(out, "gpu_check.log")
        self.log_file = open(self.log_path, "a", buffering=1)
        self.summary = {"mode": mode, "budget_s": budget_s, "steps": [], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def say(self, message):
        line = f"[gpu_check {time.monotonic() - self.start:6.1f}s] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def left(self):
        return self.deadline - time.monotonic()

    def record(self, name, status, seconds, **detail):
        self.summary["steps"].append({"name": name, "status": status, "seconds": round(seconds, 2), **detail})
        self.say(f"{name}: {status} in {seconds:.1f} s" + (f" ({detail['detail']})" if "detail" in detail else ""))

    def command(self, name, cmd, env, timeout, cwd=REPO, shown=None):
        """Run ``cmd`` with its output appended to the log; returns (status, returncode, seconds, tail)."""
        timeout = max(1.0, timeout)
        self.say(f"{name}: $ {shown or ' '.join(cmd)}  (limit {timeout:.0f} s)")
        self.log_file.flush()
        start = time.monotonic()
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
                status = "ok" if code == 0 else "failed"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
                status = "timeout"
        seconds = time.monotonic() - start
        tail = _tail(self.log_path, 40)
        if status != "ok":
            print(tail, flush=True)
        return status, code, seconds, tail

    def write_summary(self):
        self.summary["total_seconds"] = round(time.monotonic() - self.start, 1)
        with open(os.path.join(self.out, "summary.json"), "w") as f:
            json.dump(self.summary, f, indent=2)


def _tail(path, lines):
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 20000))
        return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])


# ------------------------------------------------------------------------------------ probe + install
def probe(items=None):
    """(missing [(Carried, version)], present {name: version}) on this interpreter, by importable module."""
    missing, present = [], {}
    for item, version in items or manifest.pinned_versions():
        if importlib.util.find_spec(item.probe) is None:
            missing.append((item, version))
        else:
            try:
                present[item.name] = importlib.metadata.version(item.name)
            except importlib.metadata.PackageNotFoundError:
                present[item.name] = "importable (no distribution metadata)"
    return missing, present


def machine_modules():
    """{module: version or None (missing)} of ``manifest.MACHINE_MODULES``."""
    found = {}
    for module in manifest.MACHINE_MODULES:
        if importlib.util.find_spec(module) is None:
            found[module] = None
            continue
        dist = {"PIL": "pillow", "cv2": None}.get(module, module)
        version = None
        for name in ([dist] if dist else []) + (["opencv-python-headless", "opencv-python"] if module == "cv2" else []):
            try:
                version = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        found[module] = version or "present"
    return found


def check_wheel_folder(wheels):
    """The folder's manifest.json, after checking it was prepared for this interpreter."""
    path = os.path.join(wheels, manifest.WHEELS_MANIFEST)
    if not os.path.isfile(path):
        raise KitError(
            f"{path} not found: prepare the wheel folder on a development machine first "
            "(python dev/gpu_check/prepare.py) and name it in the device call's carry."
        )
    with open(path) as f:
        data = json.load(f)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if data.get("python") != here:
        raise KitError(
            f"{wheels} holds wheels for Python {data.get('python')}, this is Python {here}: on this machine use "
            "--dry-run (it repacks this interpreter's own copies), or prepare.py --python-version " + here
        )
    return data


def find_wheel(wheels, item, version):
    candidates = [f for f in os.listdir(wheels) if f.endswith(".whl") and manifest.wheel_distribution(f)[0] == item.normalized]
    exact = [f for f in candidates if manifest.wheel_distribution(f)[1] == version]
    chosen = exact or candidates
    if not chosen:
        raise KitError(f"no wheel of {item.name} in {wheels}: run dev/gpu_check/prepare.py again")
    if len(chosen) > 1:
        raise KitError(f"several wheels of {item.name} in {wheels} ({chosen}): keep one (prepare.py empties the folder)")
    return os.path.join(wheels, chosen[0])


def pip_install_command(site, targets, build_isolation=False):
    """pip with no index, no dependencies, no byte-code, ignoring the machine's pip config (--isolated)."""
    cmd = [sys.executable, "-m", "pip", "--isolated", "install", "--no-index", "--no-deps", "--no-compile",
           "--disable-pip-version-check", "--no-warn-script-location", "-q", "--target", site]
    if not build_isolation:
        cmd.append("--no-build-isolation")
    return cmd + list(targets)


def stage_detectron2(wheels, stage_dir):
    """The verified Detectron2 sdist of ``wheels`` staged with the ``_C`` placeholder (install_detectron2)."""
    sdist = os.path.join(wheels, install_detectron2.SDIST_FILENAME)
    if not os.path.isfile(sdist):
        raise KitError(f"{sdist} not found: the machine has no Detectron2 and the wheel folder has no sdist "
                       "(run dev/gpu_check/prepare.py)")
    install_detectron2.verify_sha256(sdist)  # HashMismatchError: refuse anything but the audited file
    return install_detectron2.stage_package(sdist, stage_dir)


def child_env(site, work, out):
    env = dict(os.environ)
    env.pop(SIMULATED_ENV, None)
    paths = [site, os.path.join(REPO, "projects", "GridCLIP")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        MPLBACKEND="Agg",
        GRIDCLIP_CACHE=os.path.join(work, "gridclip_cache"),
        DETECTRON2_DATASETS=os.path.join(work, "datasets"),
        # The machine's own pytest plugins (xdist, cov, benchmark, ...) stay out: same run here and there.
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    env[REPORT_ENV] = os.path.join(out, "cuda_report.json")
    return env


SMOKE = r"""
import io, json, sys
import torch
import gridclip, detectron2, open_clip, fvcore, lvis, pycocotools, cv2
from detectron2 import model_zoo
model_zoo.get_config("COCO-Detection/fcos_R_50_FPN_1x.py")  # LazyConfig: omegaconf, hydra, antlr4, pkg_resources
from gridclip.engine.trainer import GridCLIPTrainer
info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_count": torch.cuda.device_count(), "detectron2": detectron2.__version__, "detectron2_file": detectron2.__file__,
        "gridclip_file": gridclip.__file__, "open_clip": open_clip.__version__}
try:  # what `python -m gridclip.compat --json` reports: the compatibility fixes active on this stack
    from gridclip import compat
    buffer = io.StringIO()
    compat.report(as_json=True, file=buffer)
    info["compat"] = json.loads(buffer.getvalue())
except Exception as e:  # reported, not hidden
    info["compat"] = f"gridclip.compat.report failed: {type(e).__name__}: {e}"
print("GPU_CHECK_SMOKE " + json.dumps(info))
"""


# ------------------------------------------------------------------------------------ results
def junit_counts(path):
    if not os.path.isfile(path):
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    cases = []
    for case in root.iter("testcase"):
        outcome = "passed"
        message = None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, message = tag, (node.get("message") or "")[:300]
                break
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time", 0)), **({"message": message} if message else {})})
    counts["cases"] = cases
    return counts


def _lookup(entry, path):
    for key in path:
        if not isinstance(entry, dict) or key not in entry:
            return None
        entry = entry[key]
    return entry


def check_targets(benchmark):
    """[{target, value, met}] for the GridCLIP model of a CUDA benchmark JSON (None off CUDA)."""
    if not benchmark or not (benchmark.get("machine") or {}).get("gpu_name"):
        return None
    name = os.path.splitext(os.path.basename((benchmark.get("settings") or {}).get("config_file", "")))[0]
    gridclip_entry = benchmark["models"].get(name) or next(
        (v for k, v in benchmark["models"].items() if not k.startswith("FCOS")), None)
    rows = []
    for label, path, op, bound in TARGETS:
        value = _lookup(gridclip_entry, path)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        rows.append({"target": f"{label} {op} {bound:g}", "value": value, "met": met})
    return rows


# ------------------------------------------------------------------------------------ the run
def run_kit(args):
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    stale = [f for f in OUT_FILES if os.path.exists(os.path.join(out, f))]
    if stale and not args.overwrite:
        raise KitError(f"{out} already holds {', '.join(stale)}: choose an empty --out or pass --overwrite")
    for name in stale:
        os.remove(os.path.join(out, name))
    run = Run(out, args.budget, "dry-run" if args.dry_run else "gpu")
    work = tempfile.mkdtemp(prefix="gridclip_gpu_check_")
    site = os.path.join(work, "site")
    os.makedirs(site)
    exit_code = 0
    try:
        run.say(f"python {sys.version.split()[0]} at {sys.executable}; repo {REPO}; out {out}; work {work}")
        # 1. probe
        start = time.monotonic()
        missing, present = probe()
        machine = machine_modules()
        run.summary.update(machine_provided=present, machine_modules=machine,
                           to_install=[f"{item.name}=={version}" for item, version in missing])
        absent = [m for m, v in machine.items() if v is None]
        run.record("probe", "ok" if not absent else "failed", time.monotonic() - start,
                   detail=f"{len(missing)} to install, {len(present)} already on the machine"
                   + (f"; MISSING from the machine: {', '.join(absent)}" if absent else ""))
        if absent:
            raise KitError(f"the machine lacks {', '.join(absent)}, which the kit does not carry (too large); "
                           "carry their wheels too (prepare.py downloads only manifest.CARRIED)")
        # 2. install
        start = time.monotonic()
        if missing:
            wheels_info = check_wheel_folder(args.wheels)
            files = [find_wheel(args.wheels, item, version) for item, version in missing]
            status, code, seconds, _ = run.command("install wheels", pip_install_command(site, files), dict(os.environ), run.left())
            run.record("install wheels", status, seconds, detail=f"{len(files)} wheels from {wheels_info['mode']} folder")
            if status != "ok":
                raise KitError("pip could not install the wheels; see gpu_check.log")
        else:
            run.record("install wheels", "skipped", 0.0, detail="the machine has every carried distribution")
        if importlib.util.find_spec("detectron2") is None:
            stage = stage_detectron2(args.wheels, os.path.join(work, "detectron2_stage"))
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([site] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
            status, code, seconds, _ = run.command("install detectron2", pip_install_command(site, [str(stage)]), env, run.left())
            run.record("install detectron2", status, seconds,
                       detail=f"pb1-detectron2 0.6 sdist, sha256 {install_detectron2.SDIST_SHA256[:12]}…, _C placeholder")
            if status != "ok":
                raise KitError("pip could not install Detectron2's staged package; see gpu_check.log")
        else:
            run.record("install detectron2", "skipped", 0.0, detail="the machine has a Detectron2")
        run.summary["install_seconds"] = round(time.monotonic() - start, 1)
        env = child_env(site, work, out)
        # 3. smoke
        status, code, seconds, tail = run.command("smoke", [sys.executable, "-c", SMOKE], env, min(120, run.left()),
                                                 shown=f"{sys.executable} -c <run.SMOKE: import the stack>")
        smoke = next((json.loads(line.split(" ", 1)[1]) for line in reversed(_tail(run.log_path, 400).splitlines())
                      if line.startswith("GPU_CHECK_SMOKE ")), None)
        run.summary["smoke"] = smoke
        if smoke is None:
            status = "failed"
        run.record("smoke", status, seconds, detail=(f"GPU {smoke['gpu']}, torch {smoke['torch']}, CUDA {smoke['cuda']}"
                                                     if smoke and smoke["gpu"] else "no CUDA device"))
        if status != "ok":
            raise KitError("the installed stack does not import; see gpu_check.log")
        if not args.dry_run and not smoke["cuda_available"]:
            raise KitError("torch sees no CUDA device: this is not the GPU machine (use --dry-run on a CPU machine)")
        # 4. tests
        junit = os.path.join(out, "junit.xml")
        # A test module that fails to import on that machine must not stop the cuda tests from running.
        cmd = [sys.executable, "-m", "pytest", *args.tests, "-m", "cuda", "-rA", "-q", "--continue-on-collection-errors",
               f"--junitxml={junit}",
               f"--basetemp={os.path.join(work, 'pytest')}"]
        test_limit = run.left() - (0 if args.no_benchmark else min(BENCHMARK_RESERVE_S, run.left() / 3))
        status, code, seconds, _ = run.command("cuda tests", cmd, env, test_limit)
        counts = junit_counts(junit)
        run.summary["pytest"] = counts
        detail = (f"{counts['passed']} passed, {counts['failures']} failed, {counts['errors']} errors, "
                  f"{counts['skipped']} skipped" if counts else "no JUnit XML written")
        # exit 5 = no test selected; on a CPU machine every cuda test is skipped (exit 0)
        run.record("cuda tests", status, seconds, detail=detail)
        if status != "ok":
            exit_code = 1
        # 5. benchmark
        if args.no_benchmark:
            run.record("benchmark", "skipped", 0.0, detail="--no-benchmark")
        else:
            prefix = os.path.join(out, "benchmark")
            bench_args = DRY_RUN_BENCHMARK if args.dry_run else GPU_BENCHMARK
            cmd = [sys.executable, os.path.join(REPO, "tools", "benchmark.py"), *bench_args, "--output", prefix]
            status, code, seconds, _ = run.command("benchmark", cmd, env, run.left() - 5)
            benchmark = None
            if os.path.isfile(prefix + ".json"):
                with open(prefix + ".json") as f:
                    benchmark = json.load(f)
            run.summary["benchmark"] = _benchmark_digest(benchmark)
            run.summary["targets"] = check_targets(benchmark)
            run.record("benchmark", status, seconds, detail=", ".join(
                f"{t['target']}: {t['value']:.3g} {'met' if t['met'] else 'NOT met'}"
                for t in run.summary["targets"] or [] if t["value"] is not None) or None)
            if status != "ok":
                exit_code = 1
    except (KitError, install_detectron2.HashMismatchError) as e:
        run.summary["error"] = str(e)
        run.say(f"ERROR: {e}")
        exit_code = 2
    finally:
        run.summary["exit_code"] = exit_code
        run.write_summary()
        run.say(f"done in {time.monotonic() - run.start:.0f} s, exit {exit_code}; files in {out}: "
                + ", ".join(sorted(f for f in os.listdir(out) if f in OUT_FILES)))
        run.log_file.close()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    return exit_code


def _benchmark_digest(benchmark):
    """The headline numbers of a benchmark JSON (per model and precision)."""
    if not benchmark:
        return None
    digest = {"machine": benchmark.get("machine"), "ratios": benchmark.get("ratios")}
    for name, entry in benchmark.get("models", {}).items():
        digest[name] = {
            precision: {
                "inference_fps": _lookup(entry, (precision, "inference", "fps")),
                "inference_peak_memory_mb": _lookup(entry, (precision, "inference", "peak_memory_mb")),
                "train_images_per_s": _lookup(entry, (precision, "train", "images_per_s")),
                "train_step_time_s": _lookup(entry, (precision, "train", "step_time_s")),
                "teacher_share": _lookup(entry, (precision, "train", "teacher_share")),
                "train_peak_memory_mb": _lookup(entry, (precision, "train", "peak_memory_mb")),
            }
            for precision in ("fp32", "amp") if precision in entry
        }
    return digest


# ------------------------------------------------------------------------------------ dry run
def hidden_distributions():
    """What a bare GPU machine lacks and the kit provides: the carried distributions, Detectron2, gridclip."""
    return [item.name for item in manifest.CARRIED] + ["detectron2", "gridclip"]


def build_machine_view(view_dir, hidden=None):
    """
    A folder of symbolic links to every entry of this interpreter's site-packages except the files of
    the ``hidden`` distributions (their top-level packages, modules, .pth files and dist-info).
    Returns the list of hidden entries.
    """
    hidden_entries = set()
    for name in hidden or hidden_distributions():
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for rel in dist.files or []:
            top = rel.as_posix().split("/", 1)[0]
            if top not in ("..", "") and top != "__pycache__":
                hidden_entries.add(top)
    os.makedirs(view_dir, exist_ok=True)
    site_dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    for site_dir in dict.fromkeys(site_dirs):
        for entry in os.listdir(site_dir):
            if entry in hidden_entries or entry == "__pycache__" or os.path.exists(os.path.join(view_dir, entry)):
                continue
            os.symlink(os.path.join(site_dir, entry), os.path.join(view_dir, entry))
    return sorted(hidden_entries)


def simulate_bare_machine(args):
    """Re-run this script inside a throw-away venv that sees this interpreter's packages minus the kit's."""
    sim = tempfile.mkdtemp(prefix="gridclip_gpu_check_machine_")
    try:
        start = time.monotonic()
        wheels = args.wheels_given
        if wheels is None:
            import prepare  # noqa: E402  (same folder)

            wheels = os.path.join(sim, "wheels")
            prepare.prepare(wheels, from_installed=True)
        venv = os.path.join(sim, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
        python = os.path.join(venv, "bin", "python")
        venv_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip()
        view = os.path.join(sim, "machine_site")
        hidden = build_machine_view(view)
        with open(os.path.join(venv_site, "_gridclip_machine_view.pth"), "w") as f:
            f.write(f"import site; site.addsitedir({view!r})\n")
        print(f"[gpu_check] dry run: simulated machine {venv} (hides {len(hidden)} entries of "
              f"{len(hidden_distributions())} distributions), wheels {wheels}, prepared in {time.monotonic() - start:.1f} s",
              flush=True)
        env = dict(os.environ, **{SIMULATED_ENV: "1"})
        env.pop("PYTHONPATH", None)
        child = [python, os.path.abspath(__file__), "--dry-run", "--out", os.path.abspath(args.out), "--wheels", wheels,
                 "--budget", str(max(60.0, args.budget - (time.monotonic() - start))), "--tests", *args.tests]
        child += [flag for flag, on in (("--no-benchmark", args.no_benchmark), ("--overwrite", args.overwrite),
                                        ("--keep-work", args.keep_work)) if on]
        return subprocess.run(child, env=env, cwd=REPO).returncode
    finally:
        shutil.rmtree(sim, ignore_errors=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", default=os.environ.get("OUT"), help="results folder (default: $OUT)")
    parser.add_argument("--wheels", default=None, help=f"wheel folder (default: {manifest.DEFAULT_WHEELS_DIR}; "
                        "--dry-run: repack this interpreter's copies)")
    parser.add_argument("--dry-run", action="store_true", help="CPU machine: simulated bare machine, CUDA tests skipped")
    parser.add_argument("--tests", nargs="+", default=["tests"], help="where pytest collects (default: tests)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run (default 480)")
    parser.add_argument("--no-benchmark", action="store_true", help="skip tools/benchmark.py")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier kit files in --out")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary site/work folder")
    args = parser.parse_args(argv)
    if not args.out:
        parser.error("--out is required when $OUT is not set")
    args.wheels_given = os.path.abspath(args.wheels) if args.wheels else None
    args.wheels = args.wheels_given or manifest.DEFAULT_WHEELS_DIR
    args.tests = [t if os.path.isabs(t) else os.path.join(REPO, t) for t in args.tests]
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.dry_run and not os.environ.get(SIMULATED_ENV):
        return simulate_bare_machine(args)
    try:
        return run_kit(args)
    except KitError as e:
        print(f"[gpu_check] ERROR: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
