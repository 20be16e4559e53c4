"""With gridclip imported, Detectron2's own FCOS (LazyConfig, GN head) trains and infers on CPU."""
import torch
from detectron2 import model_zoo
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage


def test_fcos_r50_gn_train_step_and_inference():
    cfg = model_zoo.get_config("COCO-Detection/fcos_R_50_FPN_1x.py")
    cfg.model.head.norm = "GN"
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    image = torch.randint(0, 255, (3, 192, 256), dtype=torch.uint8)
    gt = Instances((192, 256), gt_boxes=Boxes(torch.tensor([[20.0, 30.0, 150.0, 170.0]])),
                   gt_classes=torch.tensor([5]))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    with EventStorage(0):
        losses = model([{"image": image, "instances": gt}])
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    before = model.head.cls_score.weight.detach().clone()
    total.backward()
    optimizer.step()
    assert not torch.equal(before, model.head.cls_score.weight)

    model.eval()
    with torch.no_grad():
        outputs = model([{"image": image, "height": 384, "width": 512}])
    instances = outputs[0]["instances"]
    assert instances.image_size == (384, 512)
    assert {"pred_boxes", "scores", "pred_classes"} <= set(instances.get_fields())


def test_fcos_peer_with_gridclip_decoder_gives_detectron2s_detections():
    """
    gridclip.analysis.fcos_peer: Detectron2's FCOS decoding with GridCLIP's shared decoder
    (gridclip.modeling.decoding.decode_dense_predictions) returns the detections of Detectron2's own
    FCOS decoding (same boxes and classes, scores to a float32 ulp), with every candidate selection.
    """
    from detectron2.modeling.meta_arch.fcos import FCOS

    from gridclip.analysis.fcos_peer import build_fcos_peer

    postprocess = {"test_score_thresh": 0.05, "test_topk_candidates": 1000, "test_nms_thresh": 0.5,
                   "max_detections_per_image": 300}
    model = build_fcos_peer("cpu", seed=0, postprocess=postprocess, num_classes=9, gridclip_decoder=True).eval()
    model.configure_inference(fold_bn=False, channels_last=False)
    with torch.no_grad():  # spread the scores (the initial head scores every pair near the prior: ties)
        model.head.cls_score.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
    image = torch.randint(0, 256, (3, 128, 160), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.head_in_features]
        predictions = model.head(features)

        def copy(predictions):  # Detectron2's decoding applies sigmoid_ in place
            return [[x.clone() for x in level] for level in predictions]

        reference = FCOS.forward_inference(model, images, features, copy(predictions))[0]
        assert len(reference) > 0
        for decoder in ("bound", "threshold", "dense"):
            model.configure_inference(decoder=decoder)
            ours = model.forward_inference(images, features, copy(predictions))[0]
            assert torch.equal(ours.pred_boxes.tensor, reference.pred_boxes.tensor), decoder
            # Scores: the same formula, to a float32 ulp (vectorised sigmoid over all pairs vs. over the candidates).
            assert torch.allclose(ours.scores, reference.scores, rtol=0, atol=1e-6), decoder
            assert torch.equal(ours.pred_classes, reference.pred_classes), decoder
