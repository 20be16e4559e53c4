"""
gridclip.file_io: atomic writes (a failure leaves the target untouched and no temporary file; the
umask decides the permissions, as for a plain open(); temporary names are unique), content hashes,
JSON reading with a message that names the file, and weights_only loading.
"""
import hashlib
import json
import os
import stat
import threading

import pytest
import torch

from gridclip.file_io import (
    TEMP_PREFIX,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    current_umask,
    digest_json,
    read_json,
    safe_torch_load,
    sha256_file,
)


def _temp_files(folder):
    return [name for name in os.listdir(folder) if name.startswith(TEMP_PREFIX)]


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    assert atomic_write_bytes(str(target), b"new content") == str(target)
    assert target.read_bytes() == b"new content"
    assert _temp_files(tmp_path) == []


@pytest.mark.parametrize("failure", [OSError("disk gone"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_target_untouched_and_no_temporary(tmp_path, failure):
    target = tmp_path / "model.pth"
    target.write_bytes(b"previous checkpoint")

    def write_half_then_fail(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise failure

    with pytest.raises(type(failure)):
        atomic_write(str(target), write_half_then_fail)
    assert target.read_bytes() == b"previous checkpoint"
    assert _temp_files(tmp_path) == []


def test_a_failed_first_write_creates_nothing(tmp_path):
    def fail(tmp):
        raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):
        atomic_write(str(tmp_path / "new.json"), fail)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_permissions_follow_the_umask_like_open(tmp_path, umask, mask, expected):
    umask(mask)
    assert current_umask() == mask
    target = tmp_path / "summary.json"
    atomic_write_json(str(target), {"AP": 1.0})
    assert stat.S_IMODE(os.stat(target).st_mode) == expected
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as f:  # what a plain open() gives under the same umask
        f.write("x")
    assert stat.S_IMODE(os.stat(plain).st_mode) == expected


def test_explicit_mode_is_masked_too(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "run.sh"
    atomic_write(str(target), lambda tmp: open(tmp, "w").close(), mode=0o777)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755


def test_temporary_names_are_unique_and_next_to_the_target(tmp_path):
    seen = []

    def record(tmp):
        seen.append(tmp)
        assert os.path.dirname(tmp) == str(tmp_path)
        assert os.path.basename(tmp).startswith(TEMP_PREFIX + "out.txt.")
        assert os.path.exists(tmp)  # created empty, exclusively, before write_fn runs

    for _ in range(5):
        atomic_write(str(tmp_path / "out.txt"), record)
    assert len(set(seen)) == 5


def test_concurrent_writers_never_share_a_temporary_file(tmp_path):
    target = str(tmp_path / "shared.txt")
    contents = [f"writer {i}\n" * 2000 for i in range(8)]
    errors = []

    def write(text):
        try:
            atomic_write_text(target, text)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(text,)) for text in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert open(target).read() in contents  # one writer's complete content, never a mix
    assert _temp_files(tmp_path) == []


def test_long_names_still_get_a_valid_temporary_name(tmp_path):
    name = "x" * 200 + ".json"
    atomic_write_json(str(tmp_path / name), [1, 2])
    assert json.loads((tmp_path / name).read_text()) == [1, 2]


def test_atomic_write_json_format(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(str(target), {"b": 1, "a": [1, 2]})
    assert target.read_text() == json.dumps({"b": 1, "a": [1, 2]}, indent=2) + "\n"
    atomic_write_json(str(target), {"b": 1, "a": 2}, indent=None, sort_keys=True)
    assert target.read_text() == '{"a": 2, "b": 1}\n'


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * 1024 + 7)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(str(path)) == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path), chunk_size=100) == hashlib.sha256(data).hexdigest()


def test_digest_json_is_canonical():
    a = digest_json({"x": 1, "y": [1, 2]})
    assert a == digest_json({"y": [1, 2], "x": 1})
    assert a == hashlib.sha256(json.dumps({"x": 1, "y": [1, 2]}, sort_keys=True).encode()).hexdigest()
    assert digest_json({"x": 1}, length=12) == digest_json({"x": 1})[:12]
    assert digest_json({"x": 1}) != digest_json({"x": 2})


def test_read_json_names_the_corrupt_file(tmp_path):
    path = tmp_path / "cache.json"
    path.write_text('{"truncated": ')
    with pytest.raises(ValueError) as info:
        read_json(str(path), what="world cache")
    message = str(info.value)
    assert message.startswith(f"world cache {path} is not valid JSON")
    assert "corrupt or truncated" in message
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_json(str(path))
    atomic_write_json(str(path), {"ok": True})
    assert read_json(str(path)) == {"ok": True}


def test_safe_torch_load_reads_tensors_and_refuses_pickled_objects(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3)}, good)
    assert torch.equal(safe_torch_load(str(good))["w"], torch.arange(3))

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"w": torch.zeros(1), "obj": threading.Lock}, unsafe)  # a class: not weights-only loadable
    with pytest.raises(ValueError) as info:
        safe_torch_load(str(unsafe), what="CLIP weights", advice="Use a state dict.")
    message = str(info.value)
    assert message.startswith(f"Cannot read CLIP weights from {unsafe} with torch.load(weights_only=True): ")
    assert message.endswith("Use a state dict.")

    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pt with torch.load"):
        safe_torch_load(str(broken))
