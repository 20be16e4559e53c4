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
    # Runtime stack is pinned in requirements.txt; Detectron2 comes from dev/install_detectron2.py
    # (or an existing build: the v0.6 sdist or a compiled v0.6 / main), so it is deliberately not
    # listed here. Supported torch: 2.11-2.14 (tested with 2.14.1 on CPU; the lent GPU machines run
    # 2.11); nothing uses a torch-2.14-only API. torchvision: the releases that match those torches.
    install_requires=[
        "torch>=2.11,<2.15",
        "torchvision>=0.26,<0.30",
        "open_clip_torch>=3.0",
        "lvis",
        "pycocotools",
        "faster-coco-eval",
        "fvcore",
        "safetensors",
        "huggingface_hub",
        "ftfy",
    ],
    # tools/web_demo.py (gridclip.web_demo) and tools/export_model.py's ONNX files
    extras_require={"web": ["gradio", "gradio_client"], "export": ["onnx", "onnxruntime"]},
)
