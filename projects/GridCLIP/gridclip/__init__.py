"""
GridCLIP for Detectron2.

Importing this package applies the Detectron2 v0.6 compatibility fixes (:mod:`gridclip.compat`)
and registers everything GridCLIP adds to Detectron2's registries.
"""
from . import compat

compat.apply_all()

from .config import add_gridclip_config, get_gridclip_cfg  # noqa: E402
from .modeling import clip_configs  # noqa: E402,F401  (registers the tiny open_clip configs)
from .data import datasets  # noqa: E402,F401  (registers the LVIS open-vocabulary datasets)
from .modeling import meta_arch  # noqa: E402,F401  (registers GridCLIP and its backbones)
from .predictor import GridCLIPPredictor  # noqa: E402  (the Python inference API)

__version__ = "0.1.0"
