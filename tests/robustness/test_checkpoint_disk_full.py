"""
A full disk while saving a checkpoint: torch.save reports it as "RuntimeError: [enforce fail at
inline_container.cc]"; GridCLIPCheckpointer turns it into an OSError with ENOSPC that names the file,
removes the partial file and leaves the previous checkpoint and last_checkpoint intact.
"""
import errno
import os

import pytest
import torch
from torch import nn

from gridclip.checkpoint import GridCLIPCheckpointer, is_intact_checkpoint
from gridclip.file_io import TEMP_PREFIX


class _FullDisk:
    """A binary file that accepts ``room`` bytes, then fails like a full disk."""

    def __init__(self, raw, room):
        self._raw, self._room = raw, room

    def write(self, data):
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._raw.write(data)

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._raw.close()


def test_disk_full_names_enospc_and_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = nn.Linear(64, 64)
    checkpointer = GridCLIPCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000009")
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: real_save(obj, _FullDisk(f, 4096), *a, **k))
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError) as info:
        checkpointer.save("model_0000019")
    monkeypatch.setattr(torch, "save", real_save)
    error = info.value
    assert error.errno == errno.ENOSPC and error.filename == str(tmp_path / "model_0000019.pth")
    assert "inline_container" not in str(error) and "--resume" in str(error)
    assert not (tmp_path / "model_0000019.pth").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(TEMP_PREFIX)]  # no partial file left
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert is_intact_checkpoint(str(tmp_path / "model_0000009.pth"))
