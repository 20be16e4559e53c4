"""tools/install_detectron2.py: the sdist is installed only if its sha256 matches the audited one."""
import hashlib
import importlib.util
import io
import os
import tarfile

import pytest

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "install_detectron2.py")


@pytest.fixture(scope="module")
def installer():
    spec = importlib.util.spec_from_file_location("install_detectron2", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_existing_detectron2_is_kept(installer, monkeypatch):
    monkeypatch.setattr(installer, "installed_detectron2_version", lambda python: "0.6+cu121")
    assert installer.install("unused", force=False) is False


def test_staging_refuses_paths_outside_target(installer, tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        data = b"x"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(RuntimeError, match="outside the target folder"):
        installer.stage_package(evil, tmp_path / "stage")
