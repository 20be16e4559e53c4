"""
The input contract (:mod:`.contract`) enforced inside each exported file, so that a file refuses
inputs it would answer wrongly, whatever code calls it:

- TorchScript: :func:`checked_torchscript` wraps the traced graph in a scripted module whose
  ``forward`` checks the inputs first and raises one ``ValueError`` line (what is wrong, then the
  contract);
- ONNX: the graph computes the contract (:func:`gridclip.export.contract.contract_ok`) and gates the
  normalised images through a one-element ``GatherElements`` that indexes out of range when it is
  broken (:func:`gridclip.export.detector.contract_gate`); :func:`name_onnx_contract_node` names
  that node after the contract, so onnxruntime's error message states it.
"""
from typing import List, Tuple

import torch
from torch import Tensor, nn

from .contract import InputContract

__all__ = ["checked_torchscript", "name_onnx_contract_node", "CONTRACT_NODE_PREFIX"]

CONTRACT_NODE_PREFIX = "INPUT CONTRACT BROKEN, expected: "


def _problem(images: Tensor, image_sizes: Tensor, class_embeddings: Tensor, check_embeddings: bool,
             min_size: int, max_size: int, divisibility: int, embed_dim: int) -> str:
    """The first broken rule of the contract, "" when none (TorchScript-compatible)."""
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


class _Checked(nn.Module):
    def __init__(self, graph, contract: InputContract):
        super().__init__()
        self.graph = graph
        self.min_size, self.max_size = contract.min_size, contract.max_size
        self.divisibility, self.embed_dim = contract.size_divisibility, contract.embed_dim
        self.statement = contract.describe()

    def _raise_if_broken(self, images: Tensor, image_sizes: Tensor, class_embeddings: Tensor, check_embeddings: bool):
        problem = _problem(images, image_sizes, class_embeddings, check_embeddings, self.min_size, self.max_size,
                           self.divisibility, self.embed_dim)
        if problem != "":
            raise ValueError("Input contract of the exported GridCLIP broken: " + problem + ". Expected: "
                             + self.statement + ".")


class _CheckedWithVocabularyInput(_Checked):
    def forward(self, images: Tensor, image_sizes: Tensor,
                class_embeddings: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        self._raise_if_broken(images, image_sizes, class_embeddings, True)
        return self.graph(images, image_sizes, class_embeddings)


class _CheckedBakedVocabulary(_Checked):
    def forward(self, images: Tensor, image_sizes: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        self._raise_if_broken(images, image_sizes, images, False)
        return self.graph(images, image_sizes)


def checked_torchscript(traced, contract: InputContract, baked: bool):
    """The traced graph behind a scripted contract check (same inputs and outputs as ``traced``)."""
    wrapper = (_CheckedBakedVocabulary if baked else _CheckedWithVocabularyInput)(traced, contract)
    return torch.jit.script(wrapper)


def name_onnx_contract_node(model_proto, contract: InputContract):
    """Name the contract gate (the ``GatherElements`` reading the constant [1.0]) after the contract, in place."""
    from onnx import numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in model_proto.graph.initializer}
    for node in model_proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    gates = [node for node in model_proto.graph.node if node.op_type == "GatherElements"
             and node.input[0] in constants and constants[node.input[0]].shape == (1,)
             and float(constants[node.input[0]][0]) == 1.0]
    if len(gates) != 1:
        raise RuntimeError(f"Expected one contract gate in the ONNX graph, found {len(gates)}.")
    gates[0].name = CONTRACT_NODE_PREFIX + contract.describe()
    return model_proto
