#!/usr/bin/env python
"""Installs the ``gridclip`` package (projects/GridCLIP/gridclip); `pip install -e .`."""
from setuptools import find_packages, setup

setup(
    name="gridclip",
    version="0.1.0",
    description="GridCLIP: one-stage open-vocabulary detection with grid-level CLIP alignment, for Detectron2",
    package_dir={"": "projects/GridCLIP"},
    packages=find_packages("projects/GridCLIP", include=["gridclip", "gridclip.*"]),
    python_requires=">=3.9",
    # Runtime stack is pinned in requirements.txt; Detectron2 comes from tools/install_detectron2.py
    # (or an existing real build), so it is deliberately not listed here.
    install_requires=["open_clip_torch>=3.0", "lvis", "pycocotools", "fvcore", "safetensors"],
)
