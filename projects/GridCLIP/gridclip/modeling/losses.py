"""
GridCLIP's training objective (paper Eq. 4):

    L = w_grid · L_grid + w_image · L_image + L_R + L_C

L_grid, L_R and L_C are Detectron2's FCOS losses (sigmoid focal loss over the training vocabulary,
GIoU box loss, centerness BCE), each normalised by the EMA of the number of positive locations.
With ``MODEL.FCOS.BOX_REG_WEIGHTING "centerness"`` L_R is MMDetection's instead
(``centerness_weighted_box_reg_loss``). L_image is ``image_alignment_loss`` (optionally scaled to
the paper's strength at any embedding size).
"""
import math
from typing import Dict, List, Optional

import torch
from detectron2.layers import cat
from detectron2.structures import Boxes
from detectron2.utils import comm
from fvcore.nn import giou_loss
from torch.nn import functional as F

__all__ = ["image_alignment_loss", "gridclip_loss", "fcos_centerness_targets", "centerness_weighted_box_reg_loss",
           "BOX_REG_WEIGHTINGS"]

#: MODEL.FCOS.BOX_REG_WEIGHTING values
BOX_REG_WEIGHTINGS = ("none", "centerness")


def fcos_centerness_targets(points: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """
    FCOS's centerness target ``sqrt(min(l, r) / max(l, r) · min(t, b) / max(t, b))``.

    Args:
        points: [..., 2] location (x, y); gt_boxes: [..., 4] its assigned box (x0, y0, x1, y1).

    Returns:
        [...] targets (meaningful for locations inside their box, i.e. the positives).
    """
    left, top = points[..., 0] - gt_boxes[..., 0], points[..., 1] - gt_boxes[..., 1]
    right, bottom = gt_boxes[..., 2] - points[..., 0], gt_boxes[..., 3] - points[..., 1]
    ratio = (torch.minimum(left, right) / torch.maximum(left, right)) * (
        torch.minimum(top, bottom) / torch.maximum(top, bottom)
    )
    return ratio.clamp(min=0).sqrt()


def centerness_weighted_box_reg_loss(
    anchors: List[Boxes],
    box2box_transform,
    pred_anchor_deltas: List[torch.Tensor],
    gt_boxes: List[torch.Tensor],
    pos_mask: torch.Tensor,
) -> torch.Tensor:
    """
    MMDetection ``FCOSHead.loss``'s box term: the GIoU loss of every positive location weighted by
    its centerness target c_i and normalised by the sum of those targets,
    ``L_R = Σ_i c_i · GIoU_loss_i / Σ_i c_i`` (the sum averaged over processes when distributed, as
    MMDetection's ``reduce_mean``). Detectron2's FCOS instead sums the unweighted GIoU losses and
    divides by the EMA of the number of positives.

    Args:
        anchors: per level, Boxes [Ri, 4] (FCOS's stride-sized boxes centred on the locations).
        box2box_transform: the detector's ``Box2BoxTransformLinear``.
        pred_anchor_deltas: per level, [N, Ri, 4] predicted deltas.
        gt_boxes: per image, the box matched to each location: Boxes or a [R, 4] tensor (R = Σ Ri).
        pos_mask: [N, R] bool, the positive locations.

    Returns:
        scalar loss (0 with a gradient path when there is no positive).
    """
    anchors = Boxes.cat(anchors).tensor  # [R, 4]
    deltas = cat(pred_anchor_deltas, dim=1)  # [N, R, 4]
    gt = torch.stack([b.tensor if isinstance(b, Boxes) else b for b in gt_boxes])  # [N, R, 4]
    anchors = anchors.unsqueeze(0).expand_as(gt)
    pos_anchors, pos_gt = anchors[pos_mask], gt[pos_mask]
    pred_boxes = box2box_transform.apply_deltas(deltas[pos_mask], pos_anchors)
    centers = (pos_anchors[:, :2] + pos_anchors[:, 2:]) / 2
    weights = fcos_centerness_targets(centers, pos_gt).detach()
    denominator = weights.sum()
    if comm.get_world_size() > 1:
        denominator = denominator.clone()
        torch.distributed.all_reduce(denominator)
        denominator = denominator / comm.get_world_size()
    losses = giou_loss(pred_boxes, pos_gt, reduction="none")
    return (losses * weights).sum() / denominator.clamp(min=1e-6)


def image_alignment_loss(student: torch.Tensor, teacher: torch.Tensor, reference_dim: int = 0) -> torch.Tensor:
    """
    L1 between the L2-normalised student image embedding z̄' and the teacher's embedding.

    Reduction: element-wise mean over batch × dim. The paper's implementation is MMDetection, whose
    ``L1Loss`` averages over all elements by default, and w_image = 10 only makes the image term
    comparable to the FCOS losses with that reduction (a per-image L1 sum over 512 dims is ~D times
    larger and would dominate Eq. 4).

    Strength against the embedding size D: for unit vectors each component is ~1/sqrt(D), and the mean's
    gradient with respect to one image's normalised embedding has norm sqrt(D) / (B·D) = 1 / (B·sqrt(D)):
    the same weight pulls sqrt(512 / D) times harder at D < 512 (2.8× at the generated world's D = 64)
    than at the paper's ViT-B/32 D = 512. ``reference_dim`` > 0 multiplies the loss by
    sqrt(D / reference_dim), which makes its value and that gradient norm independent of D, equal to
    their size at D = ``reference_dim`` (512: the paper's strength with weight 10 at any D;
    MODEL.GRIDCLIP.IMAGE_LOSS_REFERENCE_DIM). 0 (default): no factor, the paper's formula as written.

    Args:
        student: [B, D] (normalised here).
        teacher: [B, D] teacher embeddings (normalised here too; a no-op for the hook's output).
        reference_dim: 0, or the embedding size whose strength the loss keeps at any D.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"Image alignment: student embeddings {tuple(student.shape)} and teacher embeddings "
            f"{tuple(teacher.shape)} differ in shape."
        )
    if reference_dim < 0:
        raise ValueError(f"MODEL.GRIDCLIP.IMAGE_LOSS_REFERENCE_DIM must be 0 (off) or positive, got {reference_dim}.")
    loss = F.l1_loss(F.normalize(student, dim=-1), F.normalize(teacher.to(student.dtype), dim=-1), reduction="mean")
    if reference_dim:
        loss = loss * math.sqrt(student.shape[-1] / reference_dim)
    return loss


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
