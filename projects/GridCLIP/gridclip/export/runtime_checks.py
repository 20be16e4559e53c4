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
from typing import Tuple

import torch
from torch import Tensor, nn

from .contract import InputContract, first_broken_rule

__all__ = ["checked_torchscript", "name_onnx_contract_node", "CONTRACT_NODE_PREFIX"]

CONTRACT_NODE_PREFIX = "INPUT CONTRACT BROKEN, expected: "


class _Checked(nn.Module):
    def __init__(self, graph, contract: InputContract):
        super().__init__()
        self.graph = graph
        self.min_size, self.max_size = contract.min_size, contract.max_size
        self.divisibility, self.embed_dim = contract.size_divisibility, contract.embed_dim
        self.statement = contract.describe()

    def _raise_if_broken(self, images: Tensor, image_sizes: Tensor, class_embeddings: Tensor, check_embeddings: bool):
        problem = first_broken_rule(images, image_sizes, class_embeddings, check_embeddings, self.min_size,
                                    self.max_size, self.divisibility, self.embed_dim)
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
