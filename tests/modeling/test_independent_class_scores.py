"""
Independent class scores: GridCLIP scores each class with its own sigmoid of cos(grid, text), so
adding names to a vocabulary leaves every existing class's detections (same boxes, same classes,
same order) and scores (equal up to float32 rounding of the wider matmul) unchanged (unlike
detectors that fuse the whole prompt into the image features). The only coupling is through the
shared caps (per-level TOPK_CANDIDATES_TEST, DETECTIONS_PER_IMAGE), which this test keeps unreached
and checks so.
"""
import torch
from detectron2.modeling import build_model

VOCABULARY = ["cat", "dog", "red umbrella"]
EXTRA = ["kite", "zebra", "traffic cone", "blue striped square", "teapot", "violin", "green circle",
         "bicycle", "lamp post", "sofa", "orange", "sailboat"]


def _detections(model, images, names):
    model.set_vocabulary(names)
    with torch.no_grad():
        return [r["instances"] for r in model([{"image": image} for image in images])]


def test_adding_names_leaves_existing_classes_detections_and_scores_unchanged(tiny_cfg, randomise_bn):
    cfg = tiny_cfg(**{"MODEL.FCOS.SCORE_THRESH_TEST": 0.3, "MODEL.FCOS.TOPK_CANDIDATES_TEST": 100000,
                      "TEST.DETECTIONS_PER_IMAGE": 100000})
    torch.manual_seed(0)
    model = randomise_bn(build_model(cfg)).eval()
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 128, 160), generator=generator, dtype=torch.uint8),
              torch.randint(0, 256, (3, 96, 128), generator=generator, dtype=torch.uint8)]
    small = _detections(model, images, VOCABULARY)
    # The extra names go first and last, so the original classes also change their indices.
    large_names = EXTRA[:6] + VOCABULARY + EXTRA[6:]
    large = _detections(model, images, large_names)
    offset = 6
    for before, after in zip(small, large):
        assert 0 < len(before) < len(after)  # not vacuous: the extra names add detections
        # Caps unreached (per level and per image), so only the scores decide what is kept.
        assert len(after) < 100000
        mine = (after.pred_classes >= offset) & (after.pred_classes < offset + len(VOCABULARY))
        kept = after[mine]
        assert torch.equal(kept.pred_classes - offset, before.pred_classes)
        assert torch.equal(kept.pred_boxes.tensor, before.pred_boxes.tensor)
        # Equal scores: the cosine logits of a class come from its own column of one matmul; a wider
        # matrix may change the BLAS summation order, i.e. the last bits of a float32 (seen: <= 3e-7).
        torch.testing.assert_close(kept.scores, before.scores, rtol=0, atol=1e-6)
