"""
MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET: at inference, a test class the weights were never
trained on gets the offset added to its logits; the training classes' detections and scores do not
move, 0 (the paper) changes nothing, and which classes are unseen follows the names as the text
encoder sees them and the training vocabulary of the weights (``set_seen_class_names``).
"""
import pytest
import torch
from detectron2.modeling import build_model

from gridclip.vocabulary import unseen_class_mask

UNSEEN = ["zebra", "teapot"]


def test_unseen_class_mask_compares_names_as_the_text_encoder_sees_them():
    assert unseen_class_mask(["Red_Umbrella", "cat.", "zebra", "ＤＯＧ"], ["cat", "dog", "red umbrella"]) == [
        False, False, True, False]


def _detections(model, images, names):
    model.set_vocabulary(names)
    with torch.no_grad():
        return [r["instances"] for r in model([{"image": image} for image in images])]


def test_the_offset_moves_unseen_classes_alone(tiny_cfg, randomise_bn):
    names = ["cat", "dog", "red umbrella"] + UNSEEN  # the training vocabulary first
    caps = {"MODEL.FCOS.SCORE_THRESH_TEST": 0.2, "MODEL.FCOS.TOPK_CANDIDATES_TEST": 100000,
            "TEST.DETECTIONS_PER_IMAGE": 100000}
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 128, 160), generator=generator, dtype=torch.uint8)]
    results = {}
    for offset in (0.0, -1.0):
        torch.manual_seed(0)
        model = randomise_bn(build_model(tiny_cfg(**caps, **{
            "MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET": offset}))).eval()
        results[offset] = _detections(model, images, names)[0]
        assert model.classifier.test_logit_offsets.tolist() == [0.0] * 3 + [offset] * 2
    paper, calibrated = results[0.0], results[-1.0]
    seen = lambda r: r[r.pred_classes < 3]  # noqa: E731
    unseen = lambda r: r[r.pred_classes >= 3]  # noqa: E731
    assert len(seen(paper)) > 0 and len(unseen(paper)) > len(unseen(calibrated))  # not vacuous; it acts
    torch.testing.assert_close(seen(calibrated).scores, seen(paper).scores, rtol=0, atol=1e-6)
    assert torch.equal(seen(calibrated).pred_boxes.tensor, seen(paper).pred_boxes.tensor)
    # sqrt(sigmoid(cls) * sigmoid(ctr)): the same box scores lower with its class logit lowered
    assert unseen(calibrated).scores.max() < unseen(paper).scores.max()


def test_seen_classes_follow_the_weights_training_vocabulary(tiny_cfg):
    model = build_model(tiny_cfg(**{"MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET": -2.0})).eval()
    model.set_vocabulary(["cat", "zebra"])
    assert model.classifier.test_logit_offsets.tolist() == [0.0, -2.0]
    model.set_seen_class_names(["cat", "dog", "red umbrella", "zebra"])  # e.g. a checkpoint's record
    assert model.classifier.test_logit_offsets.tolist() == [0.0, 0.0]


def test_a_non_finite_offset_is_refused_naming_the_key(tiny_cfg):
    with pytest.raises(ValueError, match="UNSEEN_CLASS_LOGIT_OFFSET.*finite number"):
        build_model(tiny_cfg(**{"MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET": float("inf")}))
