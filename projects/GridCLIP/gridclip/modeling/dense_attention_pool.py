"""
CLIP's attention pool run densely over C5 (paper Eq. 1, as in DenseCLIP).

``[z̄, z] = MHSA([mean(C5), C5])``: the mean token is prepended to the flattened C5 tokens, the
positional embedding is interpolated (bicubic) to the actual H×W (the class token's embedding is
kept), and every token attends to every token with the pool's own q/k/v/c projections. Token 0 is
the image embedding z̄ (identical to ``CLIP.encode_image`` at the CLIP input size); tokens 1.. are
the grid embeddings z.
"""
import math
from typing import Tuple

import torch
from open_clip.modified_resnet import AttentionPool2d
from torch import nn
from torch.nn import functional as F

__all__ = ["DenseAttentionPool", "interpolate_positional_embedding"]


def interpolate_positional_embedding(positional_embedding: torch.Tensor, height: int, width: int):
    """
    Args:
        positional_embedding: [1 + S*S, C], CLIP's class-token embedding followed by an S×S grid.
        height, width: the C5 grid to cover.

    Returns:
        [1 + height*width, C]: class-token embedding unchanged, grid resized bicubically
        (returned as is when the grid already is height×width).
    """
    # A parameter's shape is fixed: read it as Python ints, also under torch.jit.trace (where sizes are
    # traced tensors and round() of one fails). height/width may be traced: no Python test on them then
    # (bicubic resizing to the same size is the identity).
    num_grid = int(positional_embedding.shape[0]) - 1
    side = math.isqrt(num_grid)
    if side * side != num_grid:
        raise ValueError(
            f"CLIP positional embedding has {num_grid} grid tokens, which is not a square grid."
        )
    if not torch.jit.is_tracing() and (side, side) == (height, width):
        return positional_embedding
    cls_pos, grid_pos = positional_embedding[:1], positional_embedding[1:]
    channels = grid_pos.shape[1]
    grid_pos = grid_pos.reshape(1, side, side, channels).permute(0, 3, 1, 2)
    grid_pos = F.interpolate(grid_pos, size=(height, width), mode="bicubic", align_corners=False)
    grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(height * width, channels)
    return torch.cat([cls_pos, grid_pos], dim=0)


class DenseAttentionPool(AttentionPool2d):
    """
    open_clip's ``AttentionPool2d`` (same parameters and names, so CLIP weights load unchanged) whose
    forward returns the image embedding and the dense grid embeddings for any input size.
    """

    @classmethod
    def from_attention_pool(cls, pool: AttentionPool2d) -> "DenseAttentionPool":
        """A DenseAttentionPool holding (a copy of) the weights of an open_clip attention pool."""
        num_grid = pool.positional_embedding.shape[0] - 1
        dense = cls(
            spacial_dim=int(round(num_grid ** 0.5)),
            embed_dim=pool.q_proj.in_features,
            num_heads=pool.num_heads,
            output_dim=pool.c_proj.out_features,
        )
        dense.load_state_dict(pool.state_dict())
        return dense.to(pool.positional_embedding.device)

    @property
    def input_dim(self) -> int:
        """Channels of C5 (2048 for RN50)."""
        return self.q_proj.in_features

    @property
    def output_dim(self) -> int:
        """CLIP embedding dim D (1024 for RN50)."""
        return self.c_proj.out_features

    def forward(self, c5: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            c5: [B, C5, H, W]

        Returns:
            image_embedding z̄: [B, D]
            grid_embedding z: [B, D, H, W]
        """
        if c5.dim() != 4 or c5.shape[1] != self.input_dim:
            raise ValueError(
                f"DenseAttentionPool expects C5 features [B, {self.input_dim}, H, W], got {tuple(c5.shape)}."
            )
        batch, _, height, width = c5.shape
        tokens = c5.flatten(2).permute(2, 0, 1)  # (HW)BC
        tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)  # (1+HW)BC
        pos = interpolate_positional_embedding(self.positional_embedding, height, width)
        tokens = tokens + pos[:, None, :].to(tokens.dtype)
        out, _ = F.multi_head_attention_forward(
            query=tokens,
            key=tokens,
            value=tokens,
            embed_dim_to_check=tokens.shape[-1],
            num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight,
            k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0.0,
            out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True,
            training=self.training,
            need_weights=False,
        )  # (1+HW)BD
        image_embedding = out[0]
        grid_embedding = out[1:].permute(1, 2, 0).reshape(batch, -1, height, width)
        return image_embedding, grid_embedding
