"""
The exported graphs' input contract: the Python rules (run compiled inside the TorchScript file) and the
tensor-operation rules (traced into the ONNX graph) accept and refuse exactly the same inputs, and the
accepted sizes are what Detectron2's test resize and batching produce.
"""
import itertools

import pytest
import torch

from gridclip.export.contract import InputContract, contract_ok, padded_size, resized_size

CONTRACT = InputContract(min_size=128, max_size=213, size_divisibility=32, embed_dim=8)


def _inputs(sizes, canvas=None, embeddings=(5, 8)):
    height, width = canvas or padded_size(sizes, 32)
    return (torch.zeros(len(sizes), 3, height, width, dtype=torch.uint8), torch.tensor(sizes, dtype=torch.long),
            torch.zeros(*embeddings))


CASES = {
    "one landscape": ([(128, 171)], None),
    "max-size clipped": ([(43, 213)], None),
    "mixed batch": ([(128, 171), (171, 128), (43, 213)], None),
    "square": ([(128, 128)], None),
    "not resized": ([(120, 171)], None),
    "longer side too long": ([(128, 230)], None),
    "one bad image in a batch": ([(128, 171), (100, 100)], None),
    "canvas too large": ([(128, 171)], (160, 192)),
    "canvas too small": ([(128, 171)], (128, 160)),
    "canvas not padded to 32": ([(128, 171)], (128, 171)),
    "zero size": ([(0, 171)], None),
    "embedding dim": ([(128, 171)], None, (5, 7)),
    "no classes": ([(128, 171)], None, (0, 8)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_python_and_graph_rules_agree(case):
    images, sizes, embeddings = _inputs(*CASES[case][:2], *CASES[case][2:])
    problem = CONTRACT.broken_rule(images, sizes, embeddings)
    valid = case in ("one landscape", "max-size clipped", "mixed batch", "square")
    assert (problem == "") == valid, (case, problem)
    assert bool(contract_ok(CONTRACT, images, sizes, embeddings)) == valid, case
    if not valid:
        with pytest.raises(ValueError, match=r"^Input contract of the exported GridCLIP broken: .*ResizeShortestEdge\(128, 213\)"):
            CONTRACT.check(images, sizes, embeddings)


def test_detectron2_resized_sizes_keep_the_contract():
    for h, w in itertools.product([1, 50, 127, 128, 129, 300, 480, 640, 1000, 4000], repeat=2):
        size = resized_size(h, w, CONTRACT.min_size, CONTRACT.max_size)
        images, sizes, embeddings = _inputs([size])
        valid = min(size) >= 1  # a 1x480 image resizes to 0 rows: nothing to detect on, refused
        assert (CONTRACT.broken_rule(images, sizes, embeddings) == "") == valid, (h, w, size)
        assert bool(contract_ok(CONTRACT, images, sizes, embeddings)) == valid, (h, w, size)
