"""
The input contract of an exported GridCLIP detector, the same for TorchScript and ONNX.

The exported graph does not resize: it takes a batch of images already resized by the config's test
resize (Detectron2's ``ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)``, what
``GridCLIPPredictor`` applies), each placed at the top left of a common canvas:

- ``images``: uint8 [B, 3, H, W] in the config's INPUT.FORMAT channel order. The pixels outside an
  image's own size are ignored (the graph zeroes them after normalisation, as Detectron2's batching
  does), so any padding value works.
- ``image_sizes``: int64 [B, 2], each image's (height, width) after the test resize: the shorter side
  equals MIN_SIZE_TEST and the longer is <= MAX_SIZE_TEST, or the longer side equals MAX_SIZE_TEST
  and the shorter is <= MIN_SIZE_TEST (no condition when MIN_SIZE_TEST is 0: no resize).
- H and W: the batch's largest height and width rounded up to the backbone's size divisibility (32),
  exactly the size Detectron2's ``ImageList`` pads the batch to.
- ``class_embeddings`` (unless the vocabulary is baked in): float32 [K, D], K >= 1 rows (any length;
  the graph L2-normalises them), D the model's embedding dim.

Outputs (flat over the batch, each image's detections in decreasing score):
``boxes`` [N, 4] (x0, y0, x1, y1 in the resized image's pixels, clipped to its size), ``scores`` [N],
``classes`` [N] (rows of ``class_embeddings``), ``batch_index`` [N] (which image). Divide the boxes by
the resize scale (new size / original size) to get original-image pixels.

:func:`first_broken_rule` is the check in Python (eager runs, and the TorchScript file runs it compiled),
:func:`contract_ok` the same rules as tensor operations, traced into the ONNX graph.
"""
import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["InputContract", "first_broken_rule", "contract_ok", "resized_size", "padded_size"]


@dataclasses.dataclass(frozen=True)
class InputContract:
    """The numbers of the contract (see the module docstring); ``describe()`` is its one-line statement."""

    min_size: int
    max_size: int
    size_divisibility: int
    embed_dim: int
    input_format: str = "RGB"

    @classmethod
    def from_model(cls, cfg, model) -> "InputContract":
        return cls(int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST),
                   int(model.backbone.size_divisibility), int(model.classifier.embed_dim), cfg.INPUT.FORMAT)

    def describe(self) -> str:
        resize = ("each image resized so that its shorter side is {0} and its longer side <= {1}, or its longer "
                  "side is {1} and its shorter <= {0} (Detectron2's ResizeShortestEdge({0}, {1}))"
                  .format(self.min_size, self.max_size) if self.min_size > 0 else "images not resized")
        return (f"images uint8 [B,3,H,W] ({self.input_format}), {resize}, placed top-left; image_sizes int64 "
                f"[B,2] = each image's (height, width); H, W = the largest height and width rounded up to a "
                f"multiple of {self.size_divisibility}; class_embeddings float32 [K,{self.embed_dim}], K >= 1")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"statement": self.describe()}

    def broken_rule(self, images: Tensor, image_sizes: Tensor, class_embeddings: Optional[Tensor] = None) -> str:
        """The first rule ``images`` / ``image_sizes`` / ``class_embeddings`` break, "" when none."""
        return first_broken_rule(images, image_sizes, images if class_embeddings is None else class_embeddings,
                                 class_embeddings is not None, self.min_size, self.max_size, self.size_divisibility,
                                 self.embed_dim)

    def check(self, images: Tensor, image_sizes: Tensor, class_embeddings: Optional[Tensor] = None):
        """ValueError (one line: what is wrong, then the contract) unless the inputs keep the contract."""
        problem = self.broken_rule(images, image_sizes, class_embeddings)
        if problem:
            raise ValueError(f"Input contract of the exported GridCLIP broken: {problem}. Expected: {self.describe()}.")


def first_broken_rule(images: Tensor, image_sizes: Tensor, class_embeddings: Tensor, check_embeddings: bool,
                      min_size: int, max_size: int, divisibility: int, embed_dim: int) -> str:
    """
    The first broken rule of the contract, "" when none. TorchScript-compatible: the TorchScript file
    runs this very function (:mod:`.runtime_checks`) before its graph.
    """
    if images.dim() != 4 or images.size(1) != 3 or images.dtype != torch.uint8:
        return "images must be uint8 [B,3,H,W]"
    batch = images.size(0)
    if batch < 1:
        return "the batch is empty"
    if image_sizes.dim() != 2 or image_sizes.size(0) != batch or image_sizes.size(1) != 2 \
            or image_sizes.dtype != torch.int64:
        return "image_sizes must be int64 [B,2] with B = images' batch size " + str(batch)
    sizes: List[List[int]] = image_sizes.tolist()
    max_h, max_w = 0, 0
    for i in range(batch):
        h, w = sizes[i][0], sizes[i][1]
        max_h, max_w = max(max_h, h), max(max_w, w)
        short, long = min(h, w), max(h, w)
        if short < 1 or (min_size > 0 and not ((short == min_size and long <= max_size)
                                                or (long == max_size and short <= min_size))):
            return "image " + str(i) + " has size " + str(h) + "x" + str(w) + ", not an output of the test resize"
    need_h = (max_h + divisibility - 1) // divisibility * divisibility
    need_w = (max_w + divisibility - 1) // divisibility * divisibility
    if images.size(2) != need_h or images.size(3) != need_w:
        return ("H, W are " + str(images.size(2)) + "x" + str(images.size(3)) + ", the image sizes need "
                + str(need_h) + "x" + str(need_w))
    if check_embeddings and (class_embeddings.dim() != 2 or class_embeddings.size(0) < 1
                             or class_embeddings.size(1) != embed_dim or class_embeddings.dtype != torch.float32):
        return "class_embeddings must be float32 [K," + str(embed_dim) + "] with K >= 1"
    return ""


def resized_size(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """(height, width) after Detectron2's ``ResizeShortestEdge(min_size, max_size)`` (its own formula)."""
    if min_size <= 0:
        return height, width
    from detectron2.data.transforms import ResizeShortestEdge

    return tuple(ResizeShortestEdge.get_output_shape(height, width, min_size, max_size))


def padded_size(sizes: Sequence[Tuple[int, int]], divisibility: int) -> Tuple[int, int]:
    """The canvas (H, W) Detectron2's ``ImageList`` pads a batch of ``sizes`` to."""
    def up(v):
        return int(math.ceil(v / divisibility) * divisibility) if divisibility > 1 else v

    return up(max(h for h, _ in sizes)), up(max(w for _, w in sizes))


def contract_ok(contract: InputContract, images: Tensor, image_sizes: Tensor, class_embeddings: Tensor) -> Tensor:
    """
    The contract as tensor operations (traceable, every size read from the tensors at run time):
    a 0-dim bool tensor, True when ``images`` [B,3,H,W], ``image_sizes`` [B,2] and
    ``class_embeddings`` [K,D] keep it (dtypes and ranks are fixed by the graph's signature).
    """
    shape = torch._shape_as_tensor(images)  # [4]
    heights, widths = image_sizes[:, 0], image_sizes[:, 1]
    div = contract.size_divisibility
    ok = (torch._shape_as_tensor(image_sizes)[0] == shape[0]) & (shape[1] == 3)
    ok = ok & ((heights.max() + (div - 1)) // div * div == shape[2]) & ((widths.max() + (div - 1)) // div * div == shape[3])
    ok = ok & (heights.min() >= 1) & (widths.min() >= 1)
    if contract.min_size > 0:
        short, long = torch.minimum(heights, widths), torch.maximum(heights, widths)
        resized = ((short == contract.min_size) & (long <= contract.max_size)) | \
                  ((long == contract.max_size) & (short <= contract.min_size))
        ok = ok & (resized.long().min() == 1)
    embed_shape = torch._shape_as_tensor(class_embeddings)
    return ok & (embed_shape[0] >= 1) & (embed_shape[1] == contract.embed_dim)
