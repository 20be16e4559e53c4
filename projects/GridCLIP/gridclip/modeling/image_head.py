"""
GridCLIP's image-level branch (paper §3.3): z̄ -> three linear layers with ReLU between -> z̄'
in the teacher's embedding space. Used only for the training loss (not at inference).
"""
from typing import Sequence

import open_clip
import torch
from torch import nn

__all__ = ["ImageEmbeddingHead", "teacher_embed_dim"]


def teacher_embed_dim(teacher_model_name: str) -> int:
    """The teacher CLIP's embedding dim from its open_clip config (the teacher itself is not built)."""
    config = open_clip.get_model_config(teacher_model_name)
    if config is None:
        raise ValueError(
            f"Unknown teacher CLIP {teacher_model_name!r} (MODEL.GRIDCLIP.TEACHER.MODEL_NAME); use a name "
            "from open_clip.list_models(), e.g. 'ViT-B-32-quickgelu'."
        )
    return int(config["embed_dim"])


class ImageEmbeddingHead(nn.Sequential):
    """[B, D] -> [B, D_teacher]: Linear, ReLU, Linear, ReLU, Linear (paper: 1024 -> 1024 -> 1024 -> 512)."""

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int):
        hidden_dims = list(hidden_dims)
        if len(hidden_dims) != 2:
            raise ValueError(
                "MODEL.GRIDCLIP.IMAGE_HEAD_HIDDEN_DIMS must list the 2 hidden widths of the 3 linear "
                f"layers, got {hidden_dims}."
            )
        dims = [in_dim] + hidden_dims + [out_dim]
        layers = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < len(dims) - 2:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """[B, in_dim] -> [B, out_dim] (not normalised; the loss normalises)."""
        return super().forward(image_embedding)
