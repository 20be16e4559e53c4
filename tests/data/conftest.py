"""
Session fixture ``synthetic_lvis``: a SMALL generated LVIS-format dataset, registered once per test
session under a unique prefix. Other test folders can reuse it: move/import ``make_synthetic_lvis``
(it depends only on the package) into ``tests/conftest.py``.
"""
import dataclasses
import os
import uuid

import pytest

from gridclip.data.datasets import register_synthetic_lvis
from gridclip.data.synthetic import generate_synthetic_lvis

#: small enough to generate in about a second, large enough for all three LVIS frequency groups
SMALL_SYNTHETIC_LVIS_KWARGS = dict(
    num_train_images=120, num_val_images=16, image_size=(96, 96), num_categories=8, seed=0
)


@dataclasses.dataclass
class SyntheticLVIS:
    root: str
    train: str  # dataset name, all classes
    train_base: str  # dataset name, rare annotations removed, base classes only
    val: str  # dataset name, all classes, evaluator_type "lvis"
    num_categories: int
    num_base_categories: int
    class_names: list
    frequencies: list  # "r"/"c"/"f" per category
    paths: dict  # generate_synthetic_lvis's return value (train_json, val_json, image_root, ...)


def make_synthetic_lvis(root, prefix=None, **kwargs):
    """Generate the small dataset under ``root`` and register it; returns a :class:`SyntheticLVIS`."""
    prefix = prefix or f"pytest_{uuid.uuid4().hex[:8]}_synthetic_lvis"
    paths = generate_synthetic_lvis(os.fspath(root), **dict(SMALL_SYNTHETIC_LVIS_KWARGS, **kwargs))
    names = register_synthetic_lvis(paths["root"], prefix=prefix)
    return SyntheticLVIS(
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
def synthetic_lvis(tmp_path_factory):
    return make_synthetic_lvis(tmp_path_factory.mktemp("synthetic_lvis"))
