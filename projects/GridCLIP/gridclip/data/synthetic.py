"""
Former home of the generated detection dataset; it now lives in :mod:`gridclip.data.world`
(renderer, LVIS-format detection splits, caption corpus, CLIP pretraining). This module re-exports
the detection-split API so that existing imports keep working; new code imports
``gridclip.data.world``.
"""
from .world.attributes import COLOURS, SHAPES, TEXTURES  # noqa: F401
from .world.detection import (  # noqa: F401
    DEFAULT_GENERATOR_ARGS,
    MIN_TRAIN_IMAGES,
    ensure_synthetic_lvis,
    frequency_from_image_count,
    generate_synthetic_lvis,
    synthetic_categories,
    synthetic_lvis_paths,
)

__all__ = [
    "SHAPES",
    "COLOURS",
    "TEXTURES",
    "MIN_TRAIN_IMAGES",
    "DEFAULT_GENERATOR_ARGS",
    "frequency_from_image_count",
    "synthetic_categories",
    "generate_synthetic_lvis",
    "ensure_synthetic_lvis",
    "synthetic_lvis_paths",
]
