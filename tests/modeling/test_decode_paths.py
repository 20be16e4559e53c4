"""GridCLIP.decode_level gives Detectron2 FCOS's candidates whether few or most (location, class) pairs pass."""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes

from gridclip.modeling import meta_arch


# Sparse: a trained model (few pairs above the bound); dense: an untrained one (almost all pairs).
@pytest.mark.parametrize("background_logit, dense_path", [(-12.0, False), (0.0, True)])
@pytest.mark.parametrize("score_mode", ["sqrt", "product"])
def test_sparse_and_dense_decoding_match_detectron2(tiny_cfg, background_logit, dense_path, score_mode):
    topk = 20
    model = build_model(tiny_cfg(**{"MODEL.FCOS.SCORE_THRESH_TEST": 0.05, "MODEL.FCOS.TOPK_CANDIDATES_TEST": topk,
                                    "MODEL.FCOS.SCORE_MODE": score_mode}))
    generator = torch.Generator().manual_seed(1)
    num_locations, num_classes = 600, 9
    logits = torch.randn(num_locations, num_classes, generator=generator) + background_logit
    logits[:40, :3] = torch.randn(40, 3, generator=generator) * 2  # objects
    centerness = torch.randn(num_locations, 1, generator=generator)
    deltas = torch.rand(num_locations, 4, generator=generator)
    anchors = Boxes(torch.rand(num_locations, 2, generator=generator).repeat(1, 2) * 100 + torch.tensor([0, 0, 8, 8]))
    bound = meta_arch._logit((0.05 ** 2 if score_mode == "sqrt" else 0.05) * (1 - 1e-4))
    passing = int((logits > bound).sum())
    assert (passing > meta_arch.DENSE_DECODE_FACTOR * topk) == dense_path

    ours = model.decode_level(anchors, logits, deltas, centerness, None, (120, 120))
    dense_scores = logits.sigmoid() * centerness.sigmoid()
    if score_mode == "sqrt":
        dense_scores = dense_scores.sqrt()
    reference = model._decode_per_level_predictions(anchors, dense_scores, deltas, 0.05, topk, (120, 120))
    assert len(ours) == len(reference) > 0
    assert torch.allclose(ours.scores, reference.scores, atol=1e-6)
    assert torch.equal(ours.pred_classes, reference.pred_classes)
    assert torch.allclose(ours.pred_boxes.tensor, reference.pred_boxes.tensor)
