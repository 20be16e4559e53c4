"""dev/install_detectron2.py: hash-pinned v0.6 sdist install, hash-pinned source build, and which Detectron2 it reports."""
import hashlib
import importlib.util
import io
import json
import os
import sys
import tarfile

import pytest

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "dev", "install_detectron2.py")


def _load_tool():
    spec = importlib.util.spec_from_file_location("install_detectron2", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def installer():
    return _load_tool()


def test_pinned_hash_is_the_audited_sdist(installer):
    assert installer.SDIST_SHA256 == "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"


def test_mismatching_file_is_refused(installer, tmp_path):
    fake = tmp_path / installer.SDIST_FILENAME
    fake.write_bytes(b"not the detectron2 sdist")
    with pytest.raises(installer.HashMismatchError, match="Refusing to install pb1-detectron2-0.6.tar.gz"):
        installer.verify_sha256(fake)


def test_matching_file_is_accepted(installer, tmp_path):
    payload = tmp_path / "payload.tar.gz"
    payload.write_bytes(b"some bytes")
    expected = hashlib.sha256(b"some bytes").hexdigest()
    assert installer.verify_sha256(payload, expected) == payload


def test_missing_file_is_reported(installer, tmp_path):
    with pytest.raises(FileNotFoundError, match="Detectron2 sdist not found"):
        installer.verify_sha256(tmp_path / "absent.tar.gz")


def test_main_exits_nonzero_on_mismatch_without_installing(installer, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / installer.SDIST_FILENAME).write_bytes(b"tampered")
    monkeypatch.setattr(installer, "installed_detectron2_version", lambda python: None)
    installs = []
    monkeypatch.setattr(installer.subprocess, "run", lambda *a, **k: installs.append(a))
    assert installer.main(["--cache-dir", str(cache)]) == 2
    assert "sha256 is" in capsys.readouterr().err
    assert installs == []


def test_existing_detectron2_is_kept_and_named(installer, monkeypatch, capsys):
    monkeypatch.setattr(installer, "installed_detectron2_version", lambda python: "0.6+cu121")
    monkeypatch.setattr(installer, "describe_detectron2", lambda python: {
        "importable": True, "version": "0.6+cu121", "location": "/opt/d2/detectron2", "compiled": True,
        "placeholder": False, "C_file": "/opt/d2/detectron2/_C.so", "commit": None})
    monkeypatch.setattr(installer.subprocess, "run", lambda *a, **k: pytest.fail("nothing may be installed"))
    assert installer.install("unused", force=False) is False
    out = capsys.readouterr().out
    assert "found compiled Detectron2 0.6+cu121 at /opt/d2/detectron2" in out and "kept it" in out


def test_staging_refuses_paths_outside_target(installer, tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        data = b"x"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(RuntimeError, match="outside the target folder"):
        installer.stage_package(evil, tmp_path / "stage")


# ------------------------------------------------------------------ which Detectron2: found / installed
def test_summary_names_the_placeholder_install():
    from_tool = _load_tool()
    line = from_tool.summarize({"importable": True, "version": "0.6", "location": "/x/detectron2",
                                "placeholder": True, "compiled": False, "C_file": "/x/detectron2/_C.py"})
    assert "v0.6 sdist" in line and "_C placeholder" in line and "/x/detectron2" in line


def test_summary_of_a_compiled_build_has_location_and_commit():
    from_tool = _load_tool()
    info = {"importable": True, "version": "0.6", "location": "/src/detectron2", "placeholder": False,
            "compiled": True, "C_file": "/src/detectron2/_C.so", "commit": "02b5c4e2", "commit_source": "git checkout"}
    line = from_tool.summarize(info)
    assert line.startswith("compiled Detectron2 0.6 at /src/detectron2") and "git commit 02b5c4e2 (git checkout)" in line
    assert "git commit unknown" in from_tool.summarize(dict(info, commit=None))
    assert "no importable Detectron2" in from_tool.summarize({"importable": False, "error": "ModuleNotFoundError"})


def test_describe_matches_what_gridclip_detects_in_this_interpreter():
    from gridclip.compat import detectron2_compiled_ops

    import detectron2

    info = _load_tool().describe_detectron2(sys.executable)
    assert info["importable"] and info["location"] == os.path.dirname(detectron2.__file__)
    assert info["compiled"] == detectron2_compiled_ops()[0]
    assert info["placeholder"] == (not info["compiled"])
    if info.get("source_archive"):  # built by --from-source: the archive's commit is known
        assert info["commit"] == _load_tool().SOURCE_ARCHIVES[info["source_archive"]["archive"]][1]


def test_pinned_source_archive_hash_matches_third_party_readme():
    readme = os.path.join(os.path.dirname(TOOL), "..", "..", "shared", "third_party", "README.md")
    if not os.path.isfile(readme):
        pytest.skip("../shared/third_party/README.md is not beside this checkout")
    text = open(readme).read()
    for name, (sha, commit) in _load_tool().SOURCE_ARCHIVES.items():
        assert name in text and sha in text and commit in text


def _source_archive(path, top="detectron2-x", with_setup=True):
    with tarfile.open(path, "w:gz") as tar:
        files = {f"{top}/detectron2/__init__.py": b"__version__ = '0.6'\n"}
        if with_setup:
            files[f"{top}/setup.py"] = b"raise SystemExit('not built in tests')\n"
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_unknown_source_archive_needs_an_explicit_hash(installer, tmp_path, monkeypatch):
    archive = _source_archive(tmp_path / "detectron2-fork.tar.gz")
    monkeypatch.setattr(installer.subprocess, "run", lambda *a, **k: pytest.fail("nothing may run"))
    with pytest.raises(installer.HashMismatchError, match="not one of the verified archives"):
        installer.build_from_source(archive, tmp_path / "build")
    with pytest.raises(installer.HashMismatchError, match="sha256 is"):
        installer.build_from_source(archive, tmp_path / "build", sha256="0" * 64)
    assert not (tmp_path / "build").exists()


def test_source_build_is_a_no_op_when_that_build_is_installed(installer, tmp_path, monkeypatch):
    archive = _source_archive(tmp_path / "detectron2-main-test.tar.gz")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    build = tmp_path / "build"
    monkeypatch.setattr(installer, "describe_detectron2", lambda python: {
        "importable": True, "version": "0.6", "compiled": True, "placeholder": False,
        "location": str(build / "detectron2-main-test" / "detectron2"), "C_file": "_C.so",
        "commit": None, "source_archive": {"archive": archive.name, "sha256": sha}})
    monkeypatch.setattr(installer.subprocess, "run", lambda *a, **k: pytest.fail("nothing may be rebuilt"))
    assert installer.build_from_source(archive, build, sha256=sha) is False


def test_source_build_unpacks_under_the_build_dir_and_builds_there(installer, tmp_path, monkeypatch):
    archive = _source_archive(tmp_path / "detectron2-main-test.tar.gz")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    build = tmp_path / "build"
    described = iter([{"importable": False, "error": "none yet"},
                      {"importable": True, "version": "0.6", "compiled": True, "placeholder": False,
                       "location": "/somewhere", "C_file": "_C.so", "commit": None}])
    monkeypatch.setattr(installer, "describe_detectron2", lambda python: next(described))
    commands = []
    monkeypatch.setattr(installer.subprocess, "run", lambda cmd, **k: commands.append((cmd, k["env"])))
    assert installer.build_from_source(archive, build, python="py", sha256=sha) is True
    source = build / "detectron2-main-test"
    (cmd, env), = commands
    assert cmd[:3] == ["py", "-m", "pip"] and cmd[-2:] == ["-e", str(source)] and "--no-deps" in cmd
    assert env["MAX_JOBS"] == os.environ.get("MAX_JOBS", "2") and env["FORCE_CUDA"] == os.environ.get("FORCE_CUDA", "0")
    assert (source / "detectron2" / "__init__.py").is_file()
    assert json.loads((source / installer.SOURCE_STAMP).read_text())["sha256"] == sha
    assert sorted(p.name for p in build.iterdir()) == ["detectron2-main-test"]  # no unpack leftovers


def test_archive_without_a_source_tree_is_refused(installer, tmp_path):
    archive = _source_archive(tmp_path / "not-detectron2.tar.gz", with_setup=False)
    with pytest.raises(RuntimeError, match="not a Detectron2 source tree"):
        installer.unpack_source(archive, tmp_path / "build")


def test_main_reports_a_missing_archive_in_one_line(installer, tmp_path, capsys):
    missing = tmp_path / "detectron2-main-02b5c4e.tar.gz"
    assert installer.main(["--from-source", str(missing), "--build-dir", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "archive not found" in err
