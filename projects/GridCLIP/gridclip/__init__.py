"""
GridCLIP for Detectron2.

Importing this package applies the Detectron2 v0.6 compatibility fixes (:mod:`gridclip.compat`)
and registers everything GridCLIP adds to Detectron2's registries.
"""
from . import compat

compat.apply_all()

__version__ = "0.1.0"
