"""
GridCLIPCheckpointer: atomic saves (also under kill -9), truncated / corrupt files named, resume
advice naming the previous intact checkpoint, no unsafe unpickling, vocabulary-size-aware loading.
"""
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from torch import nn

from gridclip.checkpoint import CorruptCheckpointError, GridCLIPCheckpointer, is_intact_checkpoint
from gridclip.file_io import TEMP_PREFIX
from gridclip.engine.trainer import GridCLIPTrainer


class TinyNet(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)


def _equal_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def records():
    handler = _Records()
    log = logging.getLogger("fvcore.common.checkpoint")
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield handler.messages
    log.removeHandler(handler)
    log.setLevel(old_level)


# ----------------------------------------------------------------------------------------- atomic saves
def test_failed_save_keeps_the_previous_checkpoint_and_tag(tmp_path, monkeypatch):
    model = TinyNet()
    ckpt = GridCLIPCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000003", iteration=3)
    good = {k: v.clone() for k, v in model.state_dict().items()}

    real_save = torch.save

    def interrupted_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # a partial write, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000007", iteration=7)
    monkeypatch.setattr(torch, "save", real_save)

    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    assert not (tmp_path / "model_0000007.pth").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(TEMP_PREFIX)]
    restored = TinyNet(seed=1)
    extra = GridCLIPCheckpointer(restored, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 3 and _equal_state(restored.state_dict(), good)


def test_stale_temp_file_of_a_killed_save_is_removed_and_never_listed(tmp_path):
    stale = tmp_path / (TEMP_PREFIX + "model_0000007.pth.abc123")
    stale.write_bytes(b"PK\x03\x04 partial")
    ckpt = GridCLIPCheckpointer(TinyNet(), str(tmp_path))
    assert ckpt.get_all_checkpoint_files() == []
    ckpt.save("model_0000009")
    assert not stale.exists()
    assert [os.path.basename(p) for p in ckpt.get_all_checkpoint_files()] == ["model_0000009.pth"]


KILL_SAVER = textwrap.dedent(
    """
    import sys, torch
    import gridclip
    from gridclip.checkpoint import GridCLIPCheckpointer
    torch.manual_seed(0)
    model = torch.nn.Linear(1500, 1500)  # ~9 MB per checkpoint: saves take a while
    ckpt = GridCLIPCheckpointer(model, sys.argv[1])
    i = 0
    while True:
        with torch.no_grad():
            model.bias.fill_(i)
        ckpt.save(f"model_{i:07d}", iteration=i)
        i += 1
    """
)


def test_kill_9_while_saving_never_leaves_a_corrupt_last_checkpoint(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(KILL_SAVER)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    for delay in (0.0, 0.13):
        proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 120
            while not (out / "last_checkpoint").exists():
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.time() < deadline, "the saver never wrote a checkpoint"
                time.sleep(0.02)
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)  # most of its time is spent inside save()
        finally:
            proc.kill()
            proc.wait()
        last = (out / "last_checkpoint").read_text()
        path = out / last
        assert is_intact_checkpoint(str(path)), f"{last} is corrupt after kill -9"
        model = torch.nn.Linear(1500, 1500)
        extra = GridCLIPCheckpointer(model, str(out)).resume_or_load("", resume=True)
        assert model.bias[0].item() == extra["iteration"] == int(last[len("model_"):-len(".pth")])


# ----------------------------------------------------------------------------------------- corrupt files
@pytest.mark.parametrize("keep", [0, 30, 0.5, -100])
def test_truncated_checkpoint_error_names_the_file(tmp_path, keep):
    model = TinyNet()
    ckpt = GridCLIPCheckpointer(model, str(tmp_path))
    ckpt.save("model_final")
    path = tmp_path / "model_final.pth"
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    path.write_bytes(data[:n])
    with pytest.raises(CorruptCheckpointError, match=rf"{path}.*\({n} bytes\).*(truncated|corrupt)"):
        GridCLIPCheckpointer(TinyNet(), "").load(str(path))


def test_garbage_and_missing_files_are_named(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"this is not a checkpoint\n" * 10)
    with pytest.raises(CorruptCheckpointError, match="weights.pth.*not a PyTorch checkpoint or is corrupt"):
        GridCLIPCheckpointer(TinyNet(), "").load(str(path))
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        GridCLIPCheckpointer(TinyNet(), "").load(str(tmp_path / "nowhere.pth"))


def test_resume_from_a_corrupt_last_checkpoint_names_the_previous_one(tmp_path):
    model = TinyNet()
    ckpt = GridCLIPCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000003", iteration=3)
    time.sleep(0.01)
    ckpt.save("model_0000007", iteration=7)
    last = tmp_path / "model_0000007.pth"
    last.write_bytes(last.read_bytes()[:100])  # e.g. a disk-full copy of the output folder

    with pytest.raises(CorruptCheckpointError) as info:
        GridCLIPCheckpointer(TinyNet(), str(tmp_path)).resume_or_load("", resume=True)
    message = str(info.value)
    assert "model_0000007.pth" in message and "truncated or corrupt" in message
    assert f"newest intact checkpoint is {tmp_path / 'model_0000003.pth'}" in message
    assert f"echo model_0000003.pth > {tmp_path / 'last_checkpoint'}" in message

    # Following the advice resumes from iteration 3 with everything.
    (tmp_path / "last_checkpoint").write_text("model_0000003.pth\n")
    assert GridCLIPCheckpointer(TinyNet(), str(tmp_path)).resume_or_load("", resume=True)["iteration"] == 3

    # last_checkpoint naming a deleted file, and no intact checkpoint left.
    os.remove(tmp_path / "model_0000003.pth")
    with pytest.raises(CorruptCheckpointError, match="model_0000003.pth, which does not exist.*No other intact"):
        GridCLIPCheckpointer(TinyNet(), str(tmp_path)).resume_or_load("", resume=True)


# ----------------------------------------------------------------------------------------- no unsafe pickles
class _NotATensor:
    pass


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "untrusted.pth"
    torch.save({"model": TinyNet().state_dict(), "extra": _NotATensor()}, path)
    with pytest.raises(pickle.UnpicklingError, match="Refusing to unpickle .*untrusted.pth.*weights_only=True"):
        GridCLIPCheckpointer(TinyNet(), "").load(str(path))


def test_pkl_weights_load_only_numpy_arrays(tmp_path):
    model = TinyNet()
    zoo = tmp_path / "zoo.pkl"
    with open(zoo, "wb") as f:  # Detectron2 model-zoo format: numpy arrays + author
        pickle.dump({"model": {k: v.numpy() for k, v in model.state_dict().items()}, "__author__": "test"}, f)
    loaded = TinyNet(seed=5)
    GridCLIPCheckpointer(loaded, "").load(str(zoo))
    assert _equal_state(loaded.state_dict(), model.state_dict())

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"model": {"fc.weight": np.zeros((2, 4))}, "__author__": _Exploit(marker)}, f)
    with pytest.raises(pickle.UnpicklingError, match=r"Refusing to unpickle .*evil.pkl.*posix.system|os.system"):
        GridCLIPCheckpointer(TinyNet(), "").load(str(evil))
    assert not marker.exists()


# ----------------------------------------------------------------------------------------- vocabulary size
def _closed_set_model(tiny_cfg, dataset):
    cfg = tiny_cfg("MODEL.GRIDCLIP.GRID_ALIGN", False, "MODEL.GRIDCLIP.IMAGE_ALIGN", False,
                   "DATASETS.TRAIN", (dataset,), "DATASETS.TEST", (dataset,))
    return GridCLIPTrainer.build_model(cfg)


def test_checkpoint_of_another_vocabulary_size_loads_vocabulary_free_weights(
        tiny_cfg, world_dataset, tmp_path, records):
    all_classes = _closed_set_model(tiny_cfg, world_dataset.train)
    base = _closed_set_model(tiny_cfg, world_dataset.train_base)
    num_all, num_base = world_dataset.num_categories, world_dataset.num_base_categories
    assert num_all != num_base
    with torch.no_grad():
        for p in all_classes.parameters():
            p.add_(0.5)
    GridCLIPCheckpointer(all_classes, str(tmp_path)).save("model_final")
    fresh_cls = {k: v.clone() for k, v in base.state_dict().items() if "cls_score" in k}

    GridCLIPCheckpointer(base, "").load(str(tmp_path / "model_final.pth"))

    trained, loaded = all_classes.state_dict(), base.state_dict()
    vocabulary_keys = sorted(k for k in loaded if trained[k].shape != loaded[k].shape)
    assert vocabulary_keys == ["head.cls_score.bias", "head.cls_score.weight"]
    assert all(torch.equal(loaded[k], trained[k]) for k in loaded if k not in vocabulary_keys)
    assert all(torch.equal(loaded[k], fresh_cls[k]) for k in vocabulary_keys)
    line = [m for m in records if "vocabulary of" in m]
    assert len(line) == 1, records
    assert f"vocabulary of {num_all} classes" in line[0] and f"has {num_base}" in line[0]
    assert "head.cls_score.weight" in line[0] and "head.cls_score.bias" in line[0]
    assert not [m for m in records if "Skip loading parameter" in m]  # explained once, not as generic noise


def test_grid_aligned_checkpoint_of_another_vocabulary_loads_every_weight(
        tiny_cfg, world_dataset, tmp_path, records):
    cfg_all = tiny_cfg("DATASETS.TRAIN", (world_dataset.train,))
    trained = GridCLIPTrainer.build_model(cfg_all)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.25)
    GridCLIPCheckpointer(trained, str(tmp_path)).save("model_final")
    base = GridCLIPTrainer.build_model(tiny_cfg())
    GridCLIPCheckpointer(base, "").load(str(tmp_path / "model_final.pth"))
    assert _equal_state(base.state_dict(), trained.state_dict())
    assert len(base.train_class_names) == world_dataset.num_base_categories
    assert any(f"vocabulary of {world_dataset.num_categories} classes" in m and "every weight loaded" in m
               for m in records), records
