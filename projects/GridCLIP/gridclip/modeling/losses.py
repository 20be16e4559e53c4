"""
GridCLIP's training objective (paper Eq. 4):

    L = w_grid · L_grid + w_image · L_image + L_R + L_C

L_grid, L_R and L_C are Detectron2's FCOS losses (sigmoid focal loss over the training vocabulary,
GIoU box loss, centerness BCE), each normalised by the EMA of the number of positive locations.
L_image is ``image_alignment_loss``.
"""
from typing import Dict, Optional

import torch
from torch.nn import functional as F

__all__ = ["image_alignment_loss", "gridclip_loss"]


def image_alignment_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """
    L1 between the L2-normalised student image embedding z̄' and the teacher's embedding.

    Reduction: element-wise mean over batch × dim. The paper's implementation is MMDetection, whose
    ``L1Loss`` averages over all elements by default, and w_image = 10 only makes the image term
    comparable to the FCOS losses with that reduction (a per-image L1 sum over 512 dims is ~D times
    larger and would dominate Eq. 4).

    Args:
        student: [B, D] (normalised here).
        teacher: [B, D] teacher embeddings (normalised here too; a no-op for the hook's output).
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"Image alignment: student embeddings {tuple(student.shape)} and teacher embeddings "
            f"{tuple(teacher.shape)} differ in shape."
        )
    return F.l1_loss(F.normalize(student, dim=-1), F.normalize(teacher.to(student.dtype), dim=-1), reduction="mean")


def gridclip_loss(
    *,
    loss_grid: torch.Tensor,
    loss_box_reg: torch.Tensor,
    loss_centerness: torch.Tensor,
    loss_image: Optional[torch.Tensor] = None,
    grid_weight: float = 1.0,
    image_weight: float = 10.0,
) -> Dict[str, torch.Tensor]:
    """
    Eq. 4 as Detectron2 loss terms: returns ``{"loss_grid": w_grid·L_grid, "loss_image":
    w_image·L_image (only if given), "loss_box_reg": L_R, "loss_centerness": L_C}``; the total loss
    (what Detectron2's trainers back-propagate) is the sum of the values.
    """
    losses = {"loss_grid": grid_weight * loss_grid}
    if loss_image is not None:
        losses["loss_image"] = image_weight * loss_image
    losses["loss_box_reg"] = loss_box_reg
    losses["loss_centerness"] = loss_centerness
    return losses
