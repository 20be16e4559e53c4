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

:func:`contract_errors` is the check in Python (eager runs and the TorchScript wrapper use the same
rules), :func:`contract_ok` the same rules as tensor operations, traced into the ONNX graph.
"""
import dataclasses
import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["InputContract", "contract_ok", "resized_size", "padded_size"]


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

    def errors(self, images: Tensor, image_sizes: Tensor, class_embeddings: Tensor = None) -> List[str]:
        """What ``images`` / ``image_sizes`` / ``class_embeddings`` break, as short phrases (empty: none)."""
        if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            return [f"images must be uint8 [B,3,H,W], got {str(images.dtype).replace('torch.', '')} "
                    f"{list(images.shape)}"]
        batch, _, height, width = images.shape
        if batch < 1:
            return ["the batch is empty"]
        if image_sizes.dim() != 2 or list(image_sizes.shape) != [batch, 2] or image_sizes.dtype != torch.int64:
            return [f"image_sizes must be int64 [{batch},2], got {str(image_sizes.dtype).replace('torch.', '')} "
                    f"{list(image_sizes.shape)}"]
        problems = []
        sizes = [tuple(int(v) for v in row) for row in image_sizes.tolist()]
        for i, (h, w) in enumerate(sizes):
            if not _valid_resized(h, w, self.min_size, self.max_size):
                problems.append(f"image {i} has size {h}x{w}, not an output of the test resize")
        expected = padded_size(sizes, self.size_divisibility)
        if (height, width) != expected:
            problems.append(f"H, W are {height}x{width}, the image sizes need {expected[0]}x{expected[1]}")
        if class_embeddings is not None:
            if class_embeddings.dim() != 2 or class_embeddings.shape[0] < 1 or \
                    class_embeddings.shape[1] != self.embed_dim or class_embeddings.dtype != torch.float32:
                problems.append(f"class_embeddings must be float32 [K,{self.embed_dim}] with K >= 1, got "
                                f"{str(class_embeddings.dtype).replace('torch.', '')} {list(class_embeddings.shape)}")
        return problems

    def check(self, images: Tensor, image_sizes: Tensor, class_embeddings: Tensor = None):
        """ValueError (one line: what is wrong, then the contract) unless the inputs keep the contract."""
        problems = self.errors(images, image_sizes, class_embeddings)
        if problems:
            raise ValueError(f"Input contract of the exported GridCLIP broken: {'; '.join(problems)}. "
                             f"Expected: {self.describe()}.")


def _valid_resized(h: int, w: int, min_size: int, max_size: int) -> bool:
    if h < 1 or w < 1:
        return False
    if min_size <= 0:
        return True
    short, long = min(h, w), max(h, w)
    return (short == min_size and long <= max_size) or (long == max_size and short <= min_size)


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
