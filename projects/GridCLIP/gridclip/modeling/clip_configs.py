"""
Small open_clip model configs shipped with GridCLIP, registered with open_clip on import.

They build in milliseconds and run exactly the code paths of the real models, so the tests and the
embedded default (``configs/GridCLIP-Tiny-Synthetic.yaml``) work without any download:

- ``GridCLIP-Tiny-RN``: ModifiedResNet, layers [1,1,1,1], width 16 (C2..C5 = 64/128/256/512
  channels, attention pool 8 heads), embedding dim 64; the backbone CLIP.
- ``GridCLIP-Tiny-ViT``: ViT with 16-px patches at 64×64, embedding dim 32; the image teacher.
"""
import os

import open_clip

__all__ = ["TINY_BACKBONE_CLIP", "TINY_TEACHER_CLIP", "register_model_configs"]

TINY_BACKBONE_CLIP = "GridCLIP-Tiny-RN"
TINY_TEACHER_CLIP = "GridCLIP-Tiny-ViT"
_CONFIG_DIR = os.path.join(os.path.dirname(__file__), "model_configs")


def register_model_configs():
    """Register the JSON configs in ``model_configs/`` with open_clip (idempotent)."""
    if TINY_BACKBONE_CLIP not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


register_model_configs()
