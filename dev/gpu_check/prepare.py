#!/usr/bin/env python
"""
Prepare the GPU check kit's wheel folder on a development machine (needs the package registry).

    python dev/gpu_check/prepare.py                     # Python 3.12 x86-64 wheels -> dev/gpu_check/wheels/
    python dev/gpu_check/prepare.py --from-installed --dest DIR   # offline: repack this interpreter's copies

Default mode downloads, for the GPU machine's Python 3.12 on manylinux x86-64, every distribution of
``manifest.CARRIED`` at its pinned version (``pip download --only-binary=:all: --no-deps``), builds
the pure-Python wheels of the two that ship as sdists only (fvcore, antlr4-python3-runtime), and
downloads the pb1-detectron2 0.6 sdist, refused unless its sha256 is the audited one
(dev/install_detectron2.py). It writes ``manifest.json`` (target interpreter, files, sizes,
sha256s) and fails if the folder exceeds ``WHEELS_BUDGET_MB``; it prints what one device call would
carry in all (tracked + untracked-not-ignored files + this folder; the limit is 64 MiB).

``--from-installed`` needs no network: it repacks the carried distributions installed in the
running interpreter into wheels (same files, the interpreter's own wheel tags) and copies the
Detectron2 sdist from ``make setup``'s cache (.venv/cache). That is what ``run.py --dry-run`` uses on
a CPU machine, where the 3.12 wheels would not install into Python 3.11.
"""
import argparse
import base64
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # dev/: install_detectron2 (the sdist hash, its staging)
import install_detectron2  # noqa: E402
import manifest  # noqa: E402

#: where ``make setup`` keeps the verified Detectron2 sdist
SETUP_SDIST_CACHE = os.path.join(manifest.REPO_ROOT, ".venv", "cache")


class PrepareError(RuntimeError):
    """A step of the preparation failed; the message says which and what to do."""


def _mb(n_bytes):
    return n_bytes / 2**20


def folder_size(path):
    """Bytes of the regular files under ``path`` (0 if it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if os.path.isfile(full) and not os.path.islink(full):
                total += os.path.getsize(full)
    return total


def travel_size(repo=manifest.REPO_ROOT, carry=()):
    """
    Bytes one device call would carry: tracked and untracked-not-ignored files of the checkout plus
    the ``carry`` paths (the device tool's rule). None if ``repo`` is not a git checkout.
    """
    try:
        listed = subprocess.run(
            ["git", "-C", repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    total = 0
    for rel in filter(None, listed.decode("utf-8", "surrogateescape").split("\0")):
        path = os.path.join(repo, rel)
        if os.path.isfile(path) and not os.path.islink(path):
            total += os.path.getsize(path)
    return total + sum(folder_size(os.path.join(repo, c)) for c in carry)


def _pip(args, **kwargs):
    cmd = [sys.executable, "-m", "pip", *args]
    print("[prepare] $", " ".join(cmd), flush=True)
    result = subprocess.run(cmd, **kwargs)
    if result.returncode != 0:
        raise PrepareError(f"pip {args[0]} failed (exit {result.returncode}); see its output above.")
    return result


# ------------------------------------------------------------------------------------ download mode
def download_wheels(dest, python_version=manifest.TARGET_PYTHON, platforms=manifest.TARGET_PLATFORMS):
    """Binary wheels of the non-sdist entries for ``python_version``/``platforms``, sdist-only ones built."""
    pinned = manifest.pinned_versions()
    binary = [f"{item.name}=={version}" for item, version in pinned if not item.build_from_sdist]
    platform_args = [arg for p in platforms for arg in ("--platform", p)]
    _pip(["download", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
          "--implementation", "cp", *platform_args, "-d", dest, *binary])
    sdist_only = [f"{item.name}=={version}" for item, version in pinned if item.build_from_sdist]
    if sdist_only:
        _pip(["wheel", "--no-deps", "--no-binary", ":all:", "-w", dest, *sdist_only])
        for item, version in pinned:
            if item.build_from_sdist:
                built = [f for f in os.listdir(dest) if f.endswith(".whl")
                         and manifest.wheel_distribution(f)[0] == item.normalized]
                if not built or not all(f.endswith("-py3-none-any.whl") for f in built):
                    raise PrepareError(f"{item.name}: expected a pure-Python wheel (py3-none-any), got {built}")


def fetch_detectron2_sdist(dest, cache=SETUP_SDIST_CACHE, allow_download=True):
    """The hash-verified pb1-detectron2 0.6 sdist in ``dest`` (copied from ``cache`` or downloaded)."""
    target = os.path.join(dest, install_detectron2.SDIST_FILENAME)
    cached = os.path.join(cache, install_detectron2.SDIST_FILENAME)
    if not os.path.isfile(target) and os.path.isfile(cached):
        shutil.copyfile(cached, target)
    if not os.path.isfile(target):
        if not allow_download:
            return None
        install_detectron2.download_sdist(dest)
    try:
        install_detectron2.verify_sha256(target)
    except install_detectron2.HashMismatchError as e:
        os.remove(target)
        raise PrepareError(str(e)) from None
    return target


# ------------------------------------------------------------------------------------ repack mode
def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def repack_installed(name, dest):
    """
    A wheel of the installed distribution ``name`` (its RECORD's files inside the site folder, its
    dist-info without the installer's files, a fresh RECORD), tagged with the first tag of its
    WHEEL file. Returns the wheel's path.
    """
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise PrepareError(f"{name} is not installed in {sys.executable}; run `make setup` first.") from None
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")]
    if not tags or not dist.files:
        raise PrepareError(f"{name}: installed without WHEEL tags or RECORD; cannot repack it.")
    version = dist.version
    normalized = manifest.Carried(name, "").normalized
    info_dir = None
    records, entries = [], []
    for rel in dist.files:
        arcname = rel.as_posix()
        if arcname.startswith("..") or "__pycache__" in arcname or arcname.endswith(".pyc"):
            continue  # scripts outside site-packages, byte code
        top = arcname.split("/", 1)[0]
        if top.endswith(".dist-info"):
            info_dir = top
            if arcname.rsplit("/", 1)[-1] in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
                continue
        path = dist.locate_file(rel)
        if not os.path.isfile(path):
            continue
        entries.append((arcname, path))
    if info_dir is None:
        raise PrepareError(f"{name}: no .dist-info folder in its RECORD; cannot repack it.")
    filename = f"{normalized}-{version}-{tags[0]}.whl"
    out = os.path.join(dest, filename)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as wheel:
        for arcname, path in entries:
            with open(path, "rb") as f:
                data = f.read()
            wheel.writestr(arcname, data)
            records.append(_record_line(arcname, data))
        records.append(f"{info_dir}/RECORD,,")
        wheel.writestr(f"{info_dir}/RECORD", "\n".join(records) + "\n")
    return out


def repack_wheels(dest):
    for item, version in manifest.pinned_versions():
        installed = importlib.metadata.version(item.name) if _installed(item.name) else None
        if installed and installed != version:
            print(f"[prepare] note: {item.name} {installed} installed here, pinned {version}; repacking {installed}")
        repack_installed(item.name, dest)


def _installed(name):
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


# ------------------------------------------------------------------------------------ manifest
def write_manifest(dest, mode, python_version, platforms, sdist):
    files = []
    for name in sorted(os.listdir(dest)):
        path = os.path.join(dest, name)
        if name == manifest.WHEELS_MANIFEST or not os.path.isfile(path):
            continue
        files.append({"file": name, "bytes": os.path.getsize(path), "sha256": install_detectron2.sha256_file(path)})
    data = {
        "mode": mode,
        "python": python_version,
        "platforms": list(platforms),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "detectron2_sdist": os.path.basename(sdist) if sdist else None,
        "detectron2_sdist_sha256": install_detectron2.SDIST_SHA256 if sdist else None,
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files),
    }
    with open(os.path.join(dest, manifest.WHEELS_MANIFEST), "w") as f:
        json.dump(data, f, indent=2)
    return data


def prepare(dest, from_installed=False, python_version=manifest.TARGET_PYTHON, clean=True):
    """Fill ``dest`` (emptied first when ``clean``) and return its manifest dict."""
    if clean and os.path.isdir(dest):
        for name in os.listdir(dest):
            if name.endswith((".whl", ".tar.gz", ".json")):
                os.remove(os.path.join(dest, name))
    os.makedirs(dest, exist_ok=True)
    start = time.perf_counter()
    if from_installed:
        repack_wheels(dest)
        python_version = platform.python_version().rsplit(".", 1)[0]
        platforms = ["this interpreter's own tags"]
        sdist = fetch_detectron2_sdist(dest, allow_download=False)
    else:
        download_wheels(dest, python_version)
        platforms = manifest.TARGET_PLATFORMS
        sdist = fetch_detectron2_sdist(dest)
    data = write_manifest(dest, "from-installed" if from_installed else "download", python_version, platforms, sdist)
    data["seconds"] = time.perf_counter() - start
    size_mb = _mb(folder_size(dest))
    if size_mb > manifest.WHEELS_BUDGET_MB:
        raise PrepareError(
            f"{dest} holds {size_mb:.1f} MiB, over the kit's budget of {manifest.WHEELS_BUDGET_MB} MiB "
            f"(one device call carries {manifest.DEVICE_CARRY_LIMIT_MB} MiB in all)."
        )
    return data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dest", default=manifest.DEFAULT_WHEELS_DIR, help="wheel folder (default: %(default)s)")
    parser.add_argument("--from-installed", action="store_true",
                        help="offline: repack this interpreter's installed copies (for --dry-run on this machine)")
    parser.add_argument("--python-version", default=manifest.TARGET_PYTHON,
                        help="interpreter the downloaded wheels are for (default %(default)s, the GPU machine's)")
    args = parser.parse_args(argv)
    try:
        data = prepare(os.path.abspath(args.dest), args.from_installed, args.python_version)
    except (PrepareError, install_detectron2.HashMismatchError, FileNotFoundError) as e:
        print(f"[prepare] ERROR: {e}", file=sys.stderr)
        return 2
    print(f"[prepare] {len(data['files'])} files, {_mb(data['total_bytes']):.2f} MiB in {args.dest} "
          f"(Python {data['python']}, {data['mode']}) in {data['seconds']:.0f} s")
    rel = os.path.relpath(os.path.abspath(args.dest), manifest.REPO_ROOT)
    carried = travel_size(carry=[rel] if not rel.startswith("..") else [])
    if carried is not None:
        print(f"[prepare] one device call would carry {_mb(carried):.1f} MiB (limit {manifest.DEVICE_CARRY_LIMIT_MB} MiB)")
        if _mb(carried) > manifest.DEVICE_CARRY_LIMIT_MB:
            print("[prepare] ERROR: over the device tool's limit: ignore or remove large untracked files",
                  file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
