"""Shared test set-up: no network, deterministic CPU, gridclip imported (compat applied)."""
import os

# Nothing in the tests may reach a model hub; open_clip's "openai" path must fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import gridclip  # noqa: E402,F401  (applies compat, registers the project)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo_root():
    return REPO_ROOT


@pytest.fixture
def embeddings_cache(tmp_path, monkeypatch):
    """A private text-embedding cache folder for one test."""
    path = tmp_path / "gridclip_cache"
    monkeypatch.setenv("GRIDCLIP_CACHE", str(path))
    return path
