"""
What the GPU check kit carries to the lent GPU machine, and what it expects to find there.

The GPU machine (device tool, kind nvidia-h200) runs Python 3.12 with its own torch 2.11 +
torchvision 0.26 and has no network. It lacks Detectron2, open_clip, fvcore, iopath, yacs,
termcolor, lvis, pycocotools, omegaconf, hydra-core and antlr4.
:data:`CARRIED` lists every distribution GridCLIP needs beyond torch/torchvision and the machine's
large scientific stack (cv2, matplotlib, ...: :data:`MACHINE_MODULES`), each with the module whose
absence makes the run install it. A distribution the machine already has (tqdm, PyYAML, regex,
safetensors, ... on the H200 image) is left alone: the kit never shadows the machine's own copy, so
nothing the machine's torch was built against changes. ``setuptools`` is carried only for
``pkg_resources`` (Detectron2 v0.6's model zoo imports it; setuptools >= 81 removed it).

Versions are those of requirements.txt where it pins the distribution (the stack the suite runs on
here), else the pin below (requirements.txt leaves these to pip's resolver).
"""
import os
import re
from dataclasses import dataclass
from typing import Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIREMENTS = os.path.join(REPO_ROOT, "requirements.txt")

#: the interpreter and platform of the GPU machine; what prepare.py downloads for by default
TARGET_PYTHON = "3.12"
TARGET_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
#: what one device call may carry (working tree + carried paths), and the kit's own ceiling for its folder
DEVICE_CARRY_LIMIT_MB = 64
WHEELS_BUDGET_MB = 16
#: default location of the downloaded wheels (ignored by git; named in the device call's ``carry``)
DEFAULT_WHEELS_DIR = os.path.join(REPO_ROOT, "dev", "gpu_check", "wheels")
#: the file prepare.py writes beside the wheels: target python/platform, files, sizes, sha256s
WHEELS_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Carried:
    """One distribution the kit carries: its name, pinned version, probe module and how it is built."""

    name: str
    probe: str  # module whose absence on the machine means: install this distribution
    version: Optional[str] = None  # None = requirements.txt's pin
    build_from_sdist: bool = False  # published as an sdist only: prepare.py builds a wheel (pure Python)
    needed_for: str = ""

    @property
    def normalized(self):
        """PEP 503 name, as in wheel file names with '-' → '_'."""
        return re.sub(r"[-_.]+", "_", self.name).lower()


CARRIED = (
    Carried("open_clip_torch", "open_clip", needed_for="CLIP backbone, text tower, teacher"),
    Carried("ftfy", "ftfy", "6.3.1", needed_for="open_clip tokenizer"),
    Carried("wcwidth", "wcwidth", "0.9.4", needed_for="ftfy"),
    Carried("regex", "regex", "2026.11.19", needed_for="open_clip tokenizer"),
    Carried("safetensors", "safetensors", needed_for="text-embedding cache, open_clip"),
    Carried("fvcore", "fvcore", build_from_sdist=True, needed_for="Detectron2 (config, checkpointer, nn)"),
    Carried("iopath", "iopath", needed_for="fvcore, Detectron2 file I/O (v0.6 needs < 0.1.10)"),
    Carried("portalocker", "portalocker", "4.4.2", needed_for="iopath"),
    Carried("yacs", "yacs", needed_for="Detectron2 CfgNode"),
    Carried("termcolor", "termcolor", needed_for="Detectron2 logger"),
    Carried("tabulate", "tabulate", needed_for="Detectron2 tables"),
    Carried("cloudpickle", "cloudpickle", needed_for="Detectron2 data loader"),
    Carried("tqdm", "tqdm", needed_for="fvcore, iopath, open_clip"),
    Carried("PyYAML", "yaml", "6.0.4", needed_for="yacs, omegaconf"),
    Carried("lvis", "lvis", needed_for="LVISEvaluator"),
    Carried("pycocotools", "pycocotools", needed_for="Detectron2 datasets, COCOEvaluator"),
    Carried("omegaconf", "omegaconf", needed_for="Detectron2 LazyConfig (model zoo FCOS peer)"),
    Carried("hydra-core", "hydra", needed_for="Detectron2 LazyConfig overrides"),
    Carried("antlr4-python3-runtime", "antlr4", "4.9.3", build_from_sdist=True, needed_for="omegaconf, hydra"),
    Carried("setuptools", "pkg_resources", needed_for="pkg_resources for detectron2.model_zoo"),
)

#: modules the kit needs from the machine itself (too large to carry: the opencv-python-headless 5.0.0.93
#: wheel alone is 54-58 MiB of a call's 64; all are on the H200 image). ``lvis`` and Detectron2's transforms import cv2,
#: Detectron2's visualiser and lvis import matplotlib, DefaultTrainer's writers need tensorboard.
MACHINE_MODULES = ("torch", "torchvision", "numpy", "PIL", "cv2", "matplotlib", "tensorboard", "pytest")


def requirement_pins(path=REQUIREMENTS):
    """{normalized name: version} of the ``name==version`` lines of requirements.txt."""
    pins = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
            if match:
                pins[re.sub(r"[-_.]+", "_", match.group(1)).lower()] = match.group(2)
    return pins


def pinned_versions(path=REQUIREMENTS):
    """[(Carried, version)] for every carried distribution; requirements.txt's pin wins."""
    pins = requirement_pins(path)
    out = []
    for item in CARRIED:
        version = pins.get(item.normalized, item.version)
        if version is None:
            raise ValueError(f"{item.name}: no version pinned in requirements.txt nor in dev/gpu_check/manifest.py")
        out.append((item, version))
    return out


def wheel_distribution(filename):
    """(normalized name, version) of a wheel file name ``name-version(-build)?-py-abi-platform.whl``."""
    parts = os.path.basename(filename)[: -len(".whl")].split("-")
    if len(parts) < 5:
        raise ValueError(f"not a wheel file name: {filename}")
    return re.sub(r"[-_.]+", "_", parts[0]).lower(), parts[1]
