"""GridCLIP meta-architecture: Detectron2 FCOS parity, Eq. 4 switches, vocabulary swap, inference, overfit."""
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.fcos import FCOS
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from gridclip.modeling.meta_arch import GridCLIP
from gridclip.modeling.text.files import save_text_embeddings

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _losses(model, batch):
    model.train()
    with EventStorage():
        return {k: v.detach() for k, v in model(batch).items()}


def _copy_matching_weights(source, target):
    """Load every parameter/buffer of ``source`` whose name and shape exist in ``target``."""
    target_state = target.state_dict()
    state = {k: v for k, v in source.state_dict().items() if k in target_state and target_state[k].shape == v.shape}
    target.load_state_dict(state, strict=False)
    return target


def test_grid_align_off_equals_detectron2_fcos(tiny_cfg, tiny_batch):
    cfg = tiny_cfg(**{"MODEL.GRIDCLIP.GRID_ALIGN": False, "MODEL.GRIDCLIP.IMAGE_ALIGN": False})
    model = build_model(cfg)
    assert isinstance(model, GridCLIP) and model.classifier is None and model.image_head is None
    reference = FCOS(
        backbone=model.backbone, head=model.head, head_in_features=cfg.MODEL.FCOS.IN_FEATURES, num_classes=3,
        center_sampling_radius=1.5, focal_loss_alpha=0.25, focal_loss_gamma=2.0, test_score_thresh=0.05,
        test_topk_candidates=1000, test_nms_thresh=0.5, max_detections_per_image=300,
        pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD,
    )
    batch = tiny_batch()
    ours, theirs = _losses(model, batch), _losses(reference, batch)
    assert set(ours) == {"loss_grid", "loss_box_reg", "loss_centerness"}
    assert theirs["loss_fcos_loc"] > 0 and theirs["loss_fcos_ctr"] > 0  # positives were matched
    assert torch.allclose(ours["loss_grid"], theirs["loss_fcos_cls"], atol=1e-5)
    assert torch.allclose(ours["loss_box_reg"], theirs["loss_fcos_loc"], atol=1e-5)
    assert torch.allclose(ours["loss_centerness"], theirs["loss_fcos_ctr"], atol=1e-5)

    # Inference (our logit pre-filter + decoding) gives Detectron2 FCOS's detections.
    model.eval(), reference.eval()
    with torch.no_grad():
        ours, theirs = model(batch), reference(batch)
    for a, b in zip(ours, theirs):
        a, b = a["instances"], b["instances"]
        assert len(a) == len(b) > 0
        assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-5)
        assert torch.allclose(a.scores, b.scores, atol=1e-6)
        assert torch.equal(a.pred_classes, b.pred_classes)


def test_box_losses_with_grid_alignment_equal_detectron2_fcos(tiny_cfg, tiny_batch):
    cfg = tiny_cfg(**{"MODEL.GRIDCLIP.IMAGE_ALIGN": False})
    model = build_model(cfg)
    # Detectron2's FCOS on the same head reads the D=64 embeddings as 64 "classes": its matching,
    # regression and centerness do not depend on the classifier and must equal ours.
    reference = FCOS(
        backbone=model.backbone, head=model.head, head_in_features=cfg.MODEL.FCOS.IN_FEATURES, num_classes=64,
        pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD,
    )
    batch = tiny_batch()
    ours, theirs = _losses(model, batch), _losses(reference, batch)
    assert torch.allclose(ours["loss_box_reg"], theirs["loss_fcos_loc"], atol=1e-5)
    assert torch.allclose(ours["loss_centerness"], theirs["loss_fcos_ctr"], atol=1e-5)


def test_alignment_switches_change_exactly_their_terms_and_total_is_eq4(tiny_cfg, tiny_batch):
    batch = tiny_batch()
    full = build_model(tiny_cfg())
    assert full.teacher_dim == 32 and full.grid_align and full.image_align
    base = _losses(full, batch)
    assert set(base) == {"loss_grid", "loss_image", "loss_box_reg", "loss_centerness"}

    no_image = _copy_matching_weights(full, build_model(tiny_cfg(**{"MODEL.GRIDCLIP.IMAGE_ALIGN": False})))
    losses = _losses(no_image, batch)
    assert set(losses) == {"loss_grid", "loss_box_reg", "loss_centerness"}
    for key in losses:
        assert torch.allclose(losses[key], base[key], atol=1e-6), key

    no_grid = _copy_matching_weights(full, build_model(tiny_cfg(**{"MODEL.GRIDCLIP.GRID_ALIGN": False})))
    losses = _losses(no_grid, batch)
    assert set(losses) == set(base)
    for key in ("loss_image", "loss_box_reg", "loss_centerness"):
        assert torch.allclose(losses[key], base[key], atol=1e-6), key
    assert not torch.allclose(losses["loss_grid"], base["loss_grid"])

    reweighted = _copy_matching_weights(full, build_model(tiny_cfg(**{
        "MODEL.GRIDCLIP.GRID_LOSS_WEIGHT": 1.0 * 2, "MODEL.GRIDCLIP.IMAGE_LOSS_WEIGHT": 1.0})))
    losses = _losses(reweighted, batch)
    raw_grid, raw_image = losses["loss_grid"] / 2, losses["loss_image"]
    assert torch.allclose(raw_grid, base["loss_grid"], atol=1e-6)
    # Eq. 4 with the default weights: L = 1 * L_grid + 10 * L_image + L_R + L_C
    total = sum(base.values())
    eq4 = 1.0 * raw_grid + 10.0 * raw_image + base["loss_box_reg"] + base["loss_centerness"]
    assert torch.allclose(total, eq4, atol=1e-5)
    assert base["loss_image"] > 0


def test_training_input_errors(tiny_cfg, tiny_batch):
    model = build_model(tiny_cfg()).train()
    batch = tiny_batch()
    del batch[1]["teacher_embedding"]
    with EventStorage(), pytest.raises(KeyError, match=r"\[1\].*teacher_embedding.*TeacherEmbeddingHook"):
        model(batch)
    with EventStorage(), pytest.raises(ValueError, match=r"dim 512.*outputs 32"):
        model(tiny_batch(teacher_dim=512))
    batch = tiny_batch()
    batch[0]["instances"].gt_classes = torch.tensor([3])
    with EventStorage(), pytest.raises(ValueError, match="3 classes"):
        model(batch)
    with pytest.raises(ValueError, match="USE_MHSA"):
        build_model(tiny_cfg(**{"MODEL.CLIP.USE_MHSA": False}))
    without_mhsa = build_model(tiny_cfg(**{"MODEL.CLIP.USE_MHSA": False, "MODEL.GRIDCLIP.IMAGE_ALIGN": False}))
    assert set(_losses(without_mhsa, tiny_batch())) == {"loss_grid", "loss_box_reg", "loss_centerness"}
    with pytest.raises(ValueError, match="test vocabulary must be the training one"):
        build_model(tiny_cfg(**{"MODEL.GRIDCLIP.GRID_ALIGN": False, "MODEL.GRIDCLIP.TEST_VOCABULARY": "cat,dog"}))


def test_set_vocabulary_swaps_test_classes_only(tiny_cfg, tiny_batch, tmp_path):
    cfg = tiny_cfg(**{"MODEL.GRIDCLIP.TEST_VOCABULARY": "cat,dog,red umbrella,bus,kite"})
    model = build_model(cfg).eval()
    assert model.train_class_names == ["cat", "dog", "red umbrella"] and model.num_test_classes == 5
    batch = tiny_batch()

    def scored_classes():
        with torch.no_grad():
            images = model.preprocess_image(batch)
            features = model.backbone(images.tensor)
            predictions = model.head([features[f] for f in model.head_in_features])
            return model.dense_predictions(predictions)[0][0].shape[-1]

    assert scored_classes() == 5
    model.set_vocabulary(["zebra", "umbrella"])  # built with the backbone CLIP's text tower
    assert model.test_class_names == ["zebra", "umbrella"] and scored_classes() == 2
    model.test_score_thresh = 0.0
    with torch.no_grad():
        instances = model(batch)[0]["instances"]
    assert len(instances) > 0 and int(instances.pred_classes.max()) <= 1
    assert set(_losses(model, batch)) == {"loss_grid", "loss_image", "loss_box_reg", "loss_centerness"}
    model.eval()

    model.set_vocabulary(["a", "b", "c"], torch.randn(3, 64))
    assert scored_classes() == 3
    with pytest.raises(ValueError, match=r"dimension 32.*dimension 64"):
        model.set_vocabulary(["a", "b"], torch.randn(2, 32))
    with pytest.raises(ValueError, match=r"2 rows.*3 classes"):
        model.set_vocabulary(["a", "b", "c"], torch.randn(2, 64))
    wrong_file = str(tmp_path / "vit_vocab.safetensors")
    save_text_embeddings(wrong_file, torch.randn(2, 32), ["a", "b"], "GridCLIP-Tiny-RN")
    with pytest.raises(ValueError, match=r"vit_vocab.safetensors.*dimension 32.*dimension 64"):
        model.set_vocabulary(["a", "b"], wrong_file)
    assert scored_classes() == 3 and model.test_class_names == ["a", "b", "c"]  # refusals change nothing
    good_file = str(tmp_path / "vocab.safetensors")
    save_text_embeddings(good_file, torch.randn(4, 64), list("wxyz"), "GridCLIP-Tiny-RN")
    model.set_vocabulary(list("wxyz"), good_file)
    assert scored_classes() == 4

    closed = build_model(tiny_cfg(**{"MODEL.GRIDCLIP.GRID_ALIGN": False, "MODEL.GRIDCLIP.IMAGE_ALIGN": False}))
    closed.set_vocabulary(["cat", "dog", "red umbrella"])
    with pytest.raises(ValueError, match="GRID_ALIGN False"):
        closed.set_vocabulary(["zebra"])


def test_inference_outputs_thresholds_and_grid_embeddings(tiny_cfg, tiny_batch):
    cfg = tiny_cfg(**{"TEST.DETECTIONS_PER_IMAGE": 7, "MODEL.GRIDCLIP.RETURN_GRID_EMBEDDINGS": True})
    torch.manual_seed(0)  # the head's random init must not depend on which tests ran before
    model = build_model(cfg).eval()
    # An untrained box branch predicts ~zero-size boxes, which postprocessing drops as empty;
    # start it at ltrb = 1 stride so the detections are real boxes.
    torch.nn.init.constant_(model.head.bbox_pred.bias, 1.0)
    # Untrained scores sit at the prior (sqrt(0.01 * 0.5) ~ 0.07, next to the 0.05 threshold); a confident
    # centerness branch puts them clearly above it, so the threshold and top-k are what is tested.
    torch.nn.init.constant_(model.head.ctrness.bias, 4.0)
    batch = tiny_batch()
    batch[1]["height"], batch[1]["width"] = 192, 256  # outputs are rescaled to the requested size
    with torch.no_grad():
        outputs = model(batch)
    for output, (h, w) in zip(outputs, [(96, 96), (192, 256)]):
        instances = output["instances"]
        assert instances.image_size == (h, w)
        assert 0 < len(instances) <= 7
        assert bool((instances.scores > 0.05).all())
        assert instances.pred_grid_embeddings.shape == (len(instances), 64)
        assert torch.allclose(instances.pred_grid_embeddings.norm(dim=1), torch.ones(len(instances)), atol=1e-5)
        assert int(instances.pred_classes.max()) < 3
    with torch.no_grad():
        plain = model(batch, return_grid_embeddings=False)[0]["instances"]
    assert not plain.has("pred_grid_embeddings")
    assert torch.equal(plain.pred_boxes.tensor, outputs[0]["instances"].pred_boxes.tensor)


def test_score_modes_sqrt_and_product(tiny_cfg, tiny_batch):
    overrides = {"MODEL.FCOS.SCORE_THRESH_TEST": 0.0, "TEST.DETECTIONS_PER_IMAGE": 1000}
    sqrt_model = build_model(tiny_cfg(**overrides)).eval()
    product_model = _copy_matching_weights(
        sqrt_model, build_model(tiny_cfg(**overrides, **{"MODEL.FCOS.SCORE_MODE": "product"}))).eval()
    batch = tiny_batch()
    with torch.no_grad():
        a, b = sqrt_model(batch)[0]["instances"], product_model(batch)[0]["instances"]
    assert len(a) == len(b) > 0
    assert torch.allclose(a.scores ** 2, b.scores, atol=1e-6)
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
    with pytest.raises(ValueError, match="SCORE_MODE"):
        build_model(tiny_cfg(**{"MODEL.FCOS.SCORE_MODE": "max"}))


def test_logit_prefilter_keeps_exactly_the_dense_candidates(tiny_cfg):
    model = build_model(tiny_cfg(**{"MODEL.FCOS.SCORE_THRESH_TEST": 0.3, "MODEL.FCOS.TOPK_CANDIDATES_TEST": 50}))
    generator = torch.Generator().manual_seed(0)
    logits, centerness = torch.randn(400, 7, generator=generator) * 3, torch.randn(400, 1, generator=generator)
    deltas = torch.rand(400, 4, generator=generator)
    anchors = Boxes(torch.rand(400, 2, generator=generator).repeat(1, 2) * 100 + torch.tensor([0, 0, 8, 8]))
    ours = model.decode_level(anchors, logits, deltas, centerness, None, (120, 120))
    dense_scores = torch.sqrt(logits.sigmoid() * centerness.sigmoid())
    reference = model._decode_per_level_predictions(anchors, dense_scores, deltas, 0.3, 50, (120, 120))
    assert len(ours) == 50
    assert torch.allclose(ours.scores, reference.scores, atol=1e-6)
    assert torch.equal(ours.pred_classes, reference.pred_classes)
    assert torch.allclose(ours.pred_boxes.tensor, reference.pred_boxes.tensor)


def _centerness_floor(model, batch):
    """The centerness BCE's minimum (entropy of its targets), in the loss's normalisation."""
    with torch.no_grad():
        images = model.preprocess_image(batch)
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.head_in_features]
        anchors = model.anchor_generator(features)
        gt_labels, gt_boxes = model.label_anchors(anchors, [x["instances"] for x in batch])
        targets = model.compute_ctrness_targets(anchors, gt_boxes)[torch.stack(gt_labels) < model.num_classes]
        return F.binary_cross_entropy(targets, targets, reduction="sum").item() / model.loss_normalizer


def test_overfits_a_tiny_batch(tiny_cfg, tiny_batch):
    # Trainable BN: with batch statistics the random-init tiny CLIP's z̄ differs between images.
    cfg = tiny_cfg(**{"MODEL.CLIP.NORM": "BN", "MODEL.BACKBONE.FREEZE_AT": 0})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = tiny_batch()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    with EventStorage() as storage:
        with torch.no_grad():
            model(batch)
        # Detectron2's loss normaliser is an EMA of the positives count starting at 300 (batch 16);
        # pin it to this batch's count so the loss values are comparable from step to step.
        model.loss_normalizer = storage.history("num_pos_anchors").latest() * len(batch)
        for _ in range(60):
            losses = model(batch)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            history.append({k: v.item() for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert last["loss_grid"] < 0.1 * first["loss_grid"]
    assert last["loss_box_reg"] < 0.2 * first["loss_box_reg"]
    assert last["loss_image"] < 0.2 * first["loss_image"]
    floor = _centerness_floor(model, batch)
    assert last["loss_centerness"] - floor < 0.5 * (first["loss_centerness"] - floor)


def test_yaml_configs_load_and_build(load_config, tiny_cfg, tiny_batch):
    base = load_config("Base-GridCLIP.yaml")
    assert base.MODEL.META_ARCHITECTURE == "GridCLIP"
    assert base.MODEL.BACKBONE.NAME == "build_clip_resnet_fpn_backbone"
    assert (base.MODEL.CLIP.MODEL_NAME, base.MODEL.CLIP.PRETRAINED) == ("RN50-quickgelu", "openai")
    assert (base.MODEL.GRIDCLIP.GRID_LOSS_WEIGHT, base.MODEL.GRIDCLIP.IMAGE_LOSS_WEIGHT) == (1.0, 10.0)
    assert base.MODEL.GRIDCLIP.TEACHER.MODEL_NAME == "ViT-B-32-quickgelu"
    assert (base.MODEL.FCOS.SCORE_THRESH_TEST, base.MODEL.FCOS.NMS_THRESH_TEST) == (0.05, 0.5)
    assert (base.MODEL.FCOS.TOPK_CANDIDATES_TEST, base.TEST.DETECTIONS_PER_IMAGE) == (1000, 300)

    paper = load_config("GridCLIP-R50-FPN-2x.yaml")
    assert paper.DATASETS.TRAIN == ("lvis_v1_train_base",) and paper.DATASETS.TEST == ("lvis_v1_val",)
    assert paper.SOLVER.IMS_PER_BATCH == 16 and paper.SOLVER.BASE_LR == 0.01
    assert paper.SOLVER.MAX_ITER == 24 * 6261 and paper.SOLVER.STEPS == (16 * 6261, 22 * 6261)
    assert paper.INPUT.MIN_SIZE_TRAIN == (640, 672, 704, 736, 768, 800) and paper.INPUT.CROP.ENABLED

    # Both build with random weights (tiny CLIP); the paper config with the real LVIS vocabularies.
    model = build_model(tiny_cfg("GridCLIP-R50-FPN-2x.yaml", **{
        "MODEL.GRIDCLIP.TRAIN_VOCABULARY": "lvis_base", "MODEL.GRIDCLIP.TEST_VOCABULARY": "lvis"}))
    assert (len(model.train_class_names), model.num_test_classes) == (866, 1203)
    assert set(_losses(model, tiny_batch())) == {"loss_grid", "loss_image", "loss_box_reg", "loss_centerness"}
    assert isinstance(build_model(tiny_cfg("Base-GridCLIP.yaml")), GridCLIP)


def test_rn50_base_config_builds_and_runs(tiny_cfg):
    cfg = tiny_cfg(**{"MODEL.CLIP.MODEL_NAME": "RN50-quickgelu", "MODEL.GRIDCLIP.TRAIN_VOCABULARY": "cat,dog",
                      "MODEL.GRIDCLIP.ADAPTER_CHANNELS": 256, "MODEL.FPN.OUT_CHANNELS": 256,
                      "MODEL.GRIDCLIP.IMAGE_HEAD_HIDDEN_DIMS": [1024, 1024],
                      "MODEL.GRIDCLIP.TEACHER.MODEL_NAME": "ViT-B-32-quickgelu"})
    model = build_model(cfg).eval()
    assert model.backbone.image_embedding_dim == 1024 and model.classifier.embed_dim == 1024
    assert model.teacher_dim == 512
    assert model.backbone.bottom_up.output_shape()["res5"].channels == 2048 + 256
    with torch.no_grad():
        instances = model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}], return_grid_embeddings=True)
    assert instances[0]["instances"].pred_grid_embeddings.shape[1] == 1024


def test_parameter_breakdown(tiny_cfg):
    from gridclip.analysis.parameters import parameter_breakdown

    model = build_model(tiny_cfg())
    rows = parameter_breakdown(model)
    inference = {name: n for name, n, training_only in rows if not training_only}
    assert sum(inference.values()) == sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in model.image_head.parameters())
    assert inference["attention pool"] == sum(p.numel() for p in model.backbone.bottom_up.attnpool.parameters())
    assert inference["grid adapter"] == sum(p.numel() for p in model.backbone.bottom_up.grid_adapter.parameters())
    assert [n for name, n, training_only in rows if training_only] == [
        sum(p.numel() for p in model.image_head.parameters())]
    assert all(n > 0 for n in inference.values())
