"""
GridCLIP as one traceable function of (images, image sizes, class embeddings), for TorchScript and ONNX
export with dynamic batch, image size and vocabulary size (the input contract: :mod:`.contract`).

:class:`ExportableGridCLIP` runs the model's own backbone, head and cosine classifier and a decoder
written for a graph: every (image, level) keeps its ``TOPK_CANDIDATES_TEST`` best pairs above the score
threshold (the dense reference of :mod:`gridclip.modeling.decoding`, vectorised over the batch), then
class-wise NMS per image (:class:`ClassWiseNMS`: one ``torchvision::nms`` call in PyTorch and
TorchScript, ONNX's ``NonMaxSuppression`` with the classes as its class axis), the
``TEST.DETECTIONS_PER_IMAGE`` best, boxes clipped to each image. Its detections equal the PyTorch model's
on the same resized images (tested with onnxruntime and TorchScript).
"""
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..modeling.decoding import candidate_scores
from ..modeling.head import fold_logit_scale
from .contract import InputContract, contract_ok

__all__ = ["class_wise_nms", "ClassWiseNMS", "ExportableGridCLIP", "BakedVocabulary", "contract_gate"]


def class_wise_nms(boxes: Tensor, scores: Tensor, classes: Tensor, class_range: Tensor, iou_threshold: float) -> Tensor:
    """PyTorch / TorchScript side of :class:`ClassWiseNMS` (traced as one ``torchvision::nms``)."""
    from torchvision.ops import nms

    valid = scores >= 0
    batch_ids = torch.ones_like(classes).cumsum(0) - 1  # [B, N]: the image of each entry
    groups = (batch_ids * torch._shape_as_tensor(class_range)[0] + classes).double()
    boxes64 = boxes.double()
    low = boxes64.min()
    spread = boxes64.max() - low + 1
    shifted = (boxes64 - low) + (groups * spread)[..., None]
    keep_idx = nms(shifted.reshape(-1, 4), scores.double().reshape(-1), iou_threshold)
    keep = torch.zeros_like(scores).reshape(-1).index_fill(0, keep_idx, 1.0).reshape(scores.shape) > 0
    return keep & valid


class ClassWiseNMS(torch.autograd.Function):
    """
    keep [B, N] (bool) = class-wise NMS within each image of ``boxes`` [B, N, 4] (XYXY, fp32) scored by
    ``scores`` [B, N] (entries < 0 are not candidates) with classes ``classes`` [B, N] in
    ``range(len(class_range))`` (``class_range`` [K] = arange(K), carries K into the ONNX graph).

    PyTorch / TorchScript: one ``torchvision.ops.nms`` over all images and classes, kept apart by
    offsets computed in float64 (exact enough that no IoU changes at float32 precision).
    ONNX: ``NonMaxSuppression`` with boxes [B, N, 4] and per-class scores [B, K, N].
    """

    @staticmethod
    def forward(ctx, boxes, scores, classes, class_range, iou_threshold: float):
        return class_wise_nms(boxes, scores, classes, class_range, iou_threshold)

    @staticmethod
    def symbolic(g, boxes, scores, classes, class_range, iou_threshold):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))

        per_class = g.op("Where",
                         g.op("Equal", g.op("Unsqueeze", classes, const([1], torch.long)),
                              g.op("Unsqueeze", class_range, const([0, 2], torch.long))),
                         g.op("Unsqueeze", scores, const([1], torch.long)), const(-1.0, torch.float))  # [B, K, N]
        selected = g.op("NonMaxSuppression", boxes, per_class, const([2 ** 31 - 1], torch.long),
                        const([iou_threshold], torch.float), const([0.0], torch.float))  # [M, 3]: (b, k, i)
        batch_box = g.op("Gather", selected, const([0, 2], torch.long), axis_i=1)  # [M, 2]
        ones = g.op("Expand", const([1.0], torch.float), g.op("Slice", g.op("Shape", selected), const([0], torch.long),
                                                                 const([1], torch.long)))
        zeros = g.op("ConstantOfShape", g.op("Shape", scores), value_t=torch.tensor([0.0]))
        kept = g.op("ScatterND", zeros, batch_box, ones)
        return g.op("And", g.op("Greater", kept, const(0.5, torch.float)),
                    g.op("Not", g.op("Less", scores, const(0.0, torch.float))))


def contract_gate(ok: Tensor, x: Tensor) -> Tensor:
    """
    ``x`` unchanged when ``ok``; otherwise an index error in every runtime (PyTorch, TorchScript,
    onnxruntime): the ONNX export names that ``GatherElements`` node after the contract, so a broken
    contract fails with it in the message instead of running on wrong inputs.
    """
    gate = torch.ones(1, dtype=x.dtype, device=x.device).gather(0, (~ok).long().reshape(1))
    return x * gate


class ExportableGridCLIP(nn.Module):
    """
    ``forward(images [B,3,H,W] uint8, image_sizes [B,2] int64, class_embeddings [K,D] float32[,
    class_logit_offsets [K] float32])`` -> ``(boxes [N,4], scores [N], classes [N], batch_index [N])``:
    see :mod:`.contract`. The offsets (the model's unseen-class calibration) are a constant of a baked
    vocabulary (:class:`BakedVocabulary`), never a graph input.
    Holds (does not copy) a GridCLIP model in eval mode with grid alignment.
    """

    def __init__(self, model, contract: InputContract):
        super().__init__()
        if not model.grid_align:
            raise ValueError("Export with the vocabulary as an input needs MODEL.GRIDCLIP.GRID_ALIGN True.")
        self.model = model.eval()
        self.contract = contract
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone(), persistent=False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone(), persistent=False)
        self.eval()  # an export restores this mode afterwards: it must not switch the model to training

    def forward(self, images: Tensor, image_sizes: Tensor, class_embeddings: Tensor,
                class_logit_offsets: Optional[Tensor] = None):
        if not torch.jit.is_tracing():
            self.contract.check(images, image_sizes, class_embeddings)
        model = self.model
        ok = contract_ok(self.contract, images, image_sizes, class_embeddings)
        x = contract_gate(ok, (images.float() - self.pixel_mean) / self.pixel_std)
        # Detectron2's batching pads with zeros after normalisation: zero everything outside each image.
        rows = torch.ones_like(x[:, :1, :, :1]).cumsum(2) <= image_sizes[:, 0, None, None, None]
        cols = torch.ones_like(x[:, :1, :1, :]).cumsum(3) <= image_sizes[:, 1, None, None, None]
        x = torch.where(rows & cols, x, torch.zeros_like(x))
        features = model.backbone(x)
        features = [features[f] for f in model.head_in_features]
        cls_out, box_deltas, centerness = model.head(features)
        text = F.normalize(class_embeddings.float(), dim=1)
        scaled_text = fold_logit_scale(text, model.classifier.logit_scale)  # [D, K], as at inference
        bias = model.classifier.bias if class_logit_offsets is None else model.classifier.bias + class_logit_offsets
        num_classes = class_embeddings.shape[0]
        class_range = torch.ones_like(class_embeddings[:, 0], dtype=torch.long).cumsum(0) - 1  # [K]
        level_boxes, level_scores, level_classes = [], [], []
        for level, (emb, deltas, ctr) in enumerate(zip(cls_out, box_deltas, centerness)):
            batch, dim = emb.shape[0], emb.shape[1]
            emb = emb.permute(0, 2, 3, 1).reshape(batch, -1, dim)  # [B, R, D]
            deltas = deltas.permute(0, 2, 3, 1).reshape(batch, -1, 4).float()
            ctr = ctr.permute(0, 2, 3, 1).reshape(batch, -1, 1).float()
            flat = F.normalize(emb.reshape(-1, dim), dim=-1)
            logits = torch.addmm(bias, flat, scaled_text).reshape(batch, -1, num_classes)  # [B, R, K]
            keys, scores = candidate_scores(logits, ctr, model.score_mode)
            keys, scores = keys.flatten(1), scores.flatten(1)
            keys = torch.where(keys > model.test_score_thresh, keys, torch.full_like(keys, -1.0))
            k = torch.clamp(torch._shape_as_tensor(keys)[1], max=model.test_topk_candidates)
            top_keys, pair_idx = keys.topk(k, dim=1)  # [B, k]
            anchor_idx, class_idx = pair_idx // num_classes, pair_idx % num_classes
            anchors = self._level_anchors(emb_hw=cls_out[level], level=level)  # [R, 4]
            deltas = deltas.gather(1, anchor_idx[..., None].expand(-1, -1, 4))
            boxes = model.box2box_transform.apply_deltas(deltas.reshape(-1, 4), anchors[anchor_idx].reshape(-1, 4))
            level_boxes.append(boxes.reshape(batch, -1, 4))
            level_scores.append(torch.where(top_keys > model.test_score_thresh, scores.gather(1, pair_idx),
                                            torch.full_like(top_keys, -1.0)))
            level_classes.append(class_idx)
        boxes, scores, classes = torch.cat(level_boxes, 1), torch.cat(level_scores, 1), torch.cat(level_classes, 1)
        # The autograd Function carries the ONNX symbolic; TorchScript records torchvision::nms itself.
        nms = ClassWiseNMS.apply if torch.onnx.is_in_onnx_export() else class_wise_nms
        keep = nms(boxes, scores, classes, class_range, float(model.test_nms_thresh))
        kept_scores = torch.where(keep, scores, torch.full_like(scores, -1.0))
        k = torch.clamp(torch._shape_as_tensor(kept_scores)[1], max=model.max_detections_per_image)
        top_scores, order = kept_scores.topk(k, dim=1)
        boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4))
        classes = classes.gather(1, order)
        # detector_postprocess at scale 1: clip to each image, drop empty boxes.
        limits = image_sizes.flip(1).repeat(1, 2)[:, None, :].float()  # [B, 1, 4] = (w, h, w, h)
        boxes = torch.minimum(torch.maximum(boxes, torch.zeros_like(boxes)), limits)
        valid = (top_scores >= 0) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        batch_index, slot = valid.nonzero().unbind(1)
        return boxes[batch_index, slot], top_scores[batch_index, slot], classes[batch_index, slot], batch_index

    def _level_anchors(self, emb_hw: Tensor, level: int) -> Tensor:
        """[R, 4] the anchor boxes of ``level`` (Detectron2's DefaultAnchorGenerator), sizes read at run time."""
        generator = self.model.anchor_generator
        stride = generator.strides[level]
        cell = list(generator.cell_anchors)[level]  # [1, 4]
        plane = torch.ones_like(emb_hw[0, 0])  # [Hl, Wl]
        shift_y = ((plane.cumsum(0) - 1) + generator.offset) * stride
        shift_x = ((plane.cumsum(1) - 1) + generator.offset) * stride
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=-1).reshape(-1, 1, 4)
        return (shifts + cell.view(1, -1, 4)).reshape(-1, 4)


class BakedVocabulary(nn.Module):
    """
    ``forward(images, image_sizes)``: :class:`ExportableGridCLIP` with its class embeddings [K, D] and
    their logit offsets [K] (None = none) as constants.
    """

    def __init__(self, exportable: ExportableGridCLIP, class_embeddings: Tensor,
                 class_logit_offsets: Optional[Tensor] = None):
        super().__init__()
        self.exportable = exportable
        self.register_buffer("class_embeddings", class_embeddings.detach().float().clone())
        offsets = None if class_logit_offsets is None or not bool(class_logit_offsets.any()) else \
            class_logit_offsets.detach().float().clone()
        self.register_buffer("class_logit_offsets", offsets)
        self.eval()

    def forward(self, images: Tensor, image_sizes: Tensor):
        if self.class_logit_offsets is None:
            return self.exportable(images, image_sizes, self.class_embeddings)
        return self.exportable(images, image_sizes, self.class_embeddings, self.class_logit_offsets)
