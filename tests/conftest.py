"""
Shared test set-up: no network, deterministic CPU, gridclip imported (compat applied), and the
session fixture ``world_dataset``: a SMALL generated LVIS-format dataset registered once per session
under a unique prefix.
"""
import dataclasses
import os
import uuid

# Nothing in the tests may reach a model hub; open_clip's "openai" path must fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import gridclip  # noqa: E402,F401  (applies compat, registers the project)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def set_cfg_values(cfg, overrides):
    """Set ``{"MODEL.FPN.OUT_CHANNELS": 32, ...}`` (dotted keys, Python values as given) on ``cfg``."""
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return cfg


@pytest.fixture
def repo_root():
    return REPO_ROOT


@pytest.fixture
def embeddings_cache(tmp_path, monkeypatch):
    """A private text-embedding cache folder for one test."""
    path = tmp_path / "gridclip_cache"
    monkeypatch.setenv("GRIDCLIP_CACHE", str(path))
    return path


from gridclip.world import generate_world_dataset, register_world_datasets  # noqa: E402

#: small enough to generate in about a second, large enough for all three LVIS frequency groups
SMALL_WORLD_KWARGS = dict(
    num_train_images=120, num_val_images=16, image_size=(96, 96), num_categories=8, seed=0
)


@dataclasses.dataclass
class WorldDataset:
    root: str
    train: str  # dataset name, all classes
    train_base: str  # dataset name, rare annotations removed, base classes only
    val: str  # dataset name, all classes, evaluator_type "lvis"
    num_categories: int
    num_base_categories: int
    class_names: list
    frequencies: list  # "r"/"c"/"f" per category
    paths: dict  # generate_world_dataset's return value (train_json, val_json, image_root, ...)


def make_world_dataset(root, prefix=None, **kwargs):
    """Generate the small dataset under ``root`` and register it; returns a :class:`WorldDataset`."""
    prefix = prefix or f"pytest_{uuid.uuid4().hex[:8]}_world"
    paths = generate_world_dataset(os.fspath(root), **dict(SMALL_WORLD_KWARGS, **kwargs))
    names = register_world_datasets(paths["root"], prefix=prefix)
    return WorldDataset(
        root=paths["root"],
        train=names["train"],
        train_base=names["train_base"],
        val=names["val"],
        num_categories=len(paths["class_names"]),
        num_base_categories=sum(f != "r" for f in paths["frequencies"]),
        class_names=list(paths["class_names"]),
        frequencies=list(paths["frequencies"]),
        paths=paths,
    )


@pytest.fixture(scope="session")
def world_dataset(tmp_path_factory):
    return make_world_dataset(tmp_path_factory.mktemp("world_dataset"))
