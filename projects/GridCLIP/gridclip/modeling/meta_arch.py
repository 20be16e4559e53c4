"""
``GridCLIP``: the meta-architecture (paper §3), a Detectron2 ``FCOS`` whose classifier is either the
grid-level alignment (cosine to CLIP text embeddings, Eq. 3) or, with GRID_ALIGN off, FCOS's plain
learned classifier; plus the image-level alignment branch and the Eq. 4 loss.

Matching (center sampling), Box2BoxTransformLinear, GIoU, centerness and the sigmoid focal loss are
Detectron2's FCOS code, called unchanged.
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.modeling.meta_arch.fcos import FCOS
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn

from .bn_folding import enable_bn_folding, set_bn_folding
from .clip_backbone import IMAGE_EMBEDDING_KEY
from .decoding import DECODERS, SCORE_MODES, decode_dense_predictions, decode_level
from .head import ClassifierFCOSHead, GridCLIPHead, TextEmbeddingClassifier
from .image_head import ImageEmbeddingHead, teacher_embed_dim
from .losses import BOX_REG_WEIGHTINGS, centerness_weighted_box_reg_loss, gridclip_loss, image_alignment_loss
from .text import cache as text_cache
from ..config_checks import check_config
from ..vocabulary import (
    resolve_train_test_vocabularies,
    resolve_train_vocabulary,
    unseen_class_mask,
    validate_vocabulary,
)

__all__ = ["GridCLIP"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class GridCLIP(FCOS):
    """
    GridCLIP (one-stage open-vocabulary detector).

    Training input: list of dicts with "image" (uint8 [3, H, W] in ``input_format``), "instances"
    (gt_boxes, gt_classes indexing the training vocabulary) and, with image alignment on,
    "teacher_embedding" ([D_teacher], from ``TeacherEmbeddingHook``). Training output: the Eq. 4 loss
    terms ``loss_grid``, ``loss_image`` (image alignment only), ``loss_box_reg``, ``loss_centerness``.

    Inference output: ``[{"instances": Instances(pred_boxes, scores, pred_classes[,
    pred_grid_embeddings [N, D] (L2-normalised G at each box's location)])}]``, classes indexing the
    test vocabulary (``test_class_names``), swappable with ``set_vocabulary``.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone,
        head: nn.Module,
        head_in_features: Optional[List[str]] = None,
        train_class_names: Sequence[str],
        test_class_names: Optional[Sequence[str]] = None,
        classifier: Optional[TextEmbeddingClassifier] = None,
        image_head: Optional[ImageEmbeddingHead] = None,
        grid_loss_weight: float = 1.0,
        image_loss_weight: float = 10.0,
        image_loss_reference_dim: int = 0,
        center_sampling_radius: float = 1.5,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        box_reg_weighting: str = "none",
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.5,
        max_detections_per_image: int = 300,
        score_mode: str = "sqrt",
        return_grid_embeddings: bool = False,
        text_encoder: Optional[Dict] = None,
        fold_bn: bool = True,
        channels_last: bool = True,
        decoder: str = "bound",
        compile_inference: bool = False,
        unseen_class_logit_offset: float = 0.0,
        lazy_test_vocabulary: bool = False,
        pixel_mean,
        pixel_std,
        input_format: str = "RGB",
    ):
        """
        Args:
            backbone: a Detectron2 backbone; its output dict may carry ``IMAGE_EMBEDDING_KEY`` (z̄).
            head: ``GridCLIPHead`` (grid alignment; cls branch -> D-dim embeddings) or Detectron2's
                ``FCOSHead`` with num_classes = len(train_class_names) (GRID_ALIGN off).
            train_class_names / test_class_names: the vocabularies (test defaults to training).
            classifier: ``TextEmbeddingClassifier`` with the text embeddings of both vocabularies;
                None = GRID_ALIGN off (the head's logits are the class scores).
            image_head: ``ImageEmbeddingHead`` z̄ -> z̄'; None = IMAGE_ALIGN off.
            grid_loss_weight, image_loss_weight: w_grid, w_image of Eq. 4.
            image_loss_reference_dim: 0, or the embedding size at whose strength L_image is kept at any
                teacher dim (``image_alignment_loss``; MODEL.GRIDCLIP.IMAGE_LOSS_REFERENCE_DIM).
            box_reg_weighting: "none" (Detectron2's L_R) or "centerness" (MMDetection's,
                ``centerness_weighted_box_reg_loss``); MODEL.FCOS.BOX_REG_WEIGHTING.
            score_mode: "sqrt" = sqrt(sigmoid(cls)·sigmoid(ctr)) (Detectron2's FCOS), "product" =
                sigmoid(cls)·sigmoid(ctr), "mmdet" = MMDetection's rule (threshold and top-k on
                sigmoid(cls), then × sigmoid(ctr)); see ``gridclip.modeling.decoding``.
            return_grid_embeddings: attach ``pred_grid_embeddings`` to the output instances.
            text_encoder: kwargs of ``load_text_embeddings`` besides the names (clip_model_name,
                pretrained, templates, cache_dir, clip_cache_dir) so ``set_vocabulary(names)`` can
                build embeddings; None = ``set_vocabulary`` needs explicit embeddings.
            fold_bn, channels_last, decoder, compile_inference: exact inference speed-ups
                (MODEL.GRIDCLIP.INFERENCE.*): BatchNorm folding (``bn_folding``), channels_last
                backbone/head, the candidate selection ("bound", "threshold", "dense"; same pairs),
                torch.compile of backbone + head. They change no result and no parameter; each can
                be switched at any time with ``configure_inference``.
            unseen_class_logit_offset: added at inference to the logits of test classes outside the
                training vocabulary of the weights (``seen_class_names``; ``unseen_logit_offsets``).
                0 = the paper; MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET.
            lazy_test_vocabulary: the classifier holds only the training vocabulary's embeddings; the
                test vocabulary's (``test_class_names``) are built with ``text_encoder`` at the first
                inference or ``set_vocabulary`` call.
            Other arguments are Detectron2 FCOS's.
        """
        train_class_names = list(train_class_names)
        test_class_names = list(train_class_names if test_class_names is None else test_class_names)
        super().__init__(
            backbone=backbone,
            head=head,
            head_in_features=head_in_features,
            num_classes=len(train_class_names),
            center_sampling_radius=center_sampling_radius,
            focal_loss_alpha=focal_loss_alpha,
            focal_loss_gamma=focal_loss_gamma,
            test_score_thresh=test_score_thresh,
            test_topk_candidates=test_topk_candidates,
            test_nms_thresh=test_nms_thresh,
            max_detections_per_image=max_detections_per_image,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
        )
        if score_mode not in SCORE_MODES:
            raise ValueError(f"MODEL.FCOS.SCORE_MODE must be one of {SCORE_MODES}, got {score_mode!r}.")
        if box_reg_weighting not in BOX_REG_WEIGHTINGS:
            raise ValueError(
                f"MODEL.FCOS.BOX_REG_WEIGHTING must be one of {BOX_REG_WEIGHTINGS}, got {box_reg_weighting!r}."
            )
        self.box_reg_weighting = box_reg_weighting
        self.classifier = classifier
        self.image_head = image_head
        self.grid_loss_weight = grid_loss_weight
        self.image_loss_weight = image_loss_weight
        self.image_loss_reference_dim = image_loss_reference_dim
        self.score_mode = score_mode
        self.return_grid_embeddings = return_grid_embeddings
        self.text_encoder = dict(text_encoder) if text_encoder else None
        self.input_format = input_format
        self.train_class_names = train_class_names
        self.test_class_names = test_class_names
        self.unseen_class_logit_offset = float(unseen_class_logit_offset)
        #: the classes the weights were trained on (``set_seen_class_names``; default the training vocabulary)
        self.seen_class_names = list(train_class_names)
        #: test classes queried by image exemplars instead of text (``set_vocabulary``): no unseen offset
        self.test_image_queried_names: Tuple[str, ...] = ()
        #: the test vocabulary's text embeddings are still to be built (at the first inference)
        self._test_vocabulary_pending = bool(lazy_test_vocabulary) and classifier is not None
        self._check_components()
        enable_bn_folding(self.backbone)
        self._compiled_backbone_head = None
        self.configure_inference(fold_bn=fold_bn, channels_last=channels_last, decoder=decoder,
                                 compile_inference=compile_inference)
        self._refresh_test_logit_offsets()

    # ------------------------------------------------------------------ construction
    def _check_components(self):
        num_train, num_test = len(self.train_class_names), len(self.test_class_names)
        if self.grid_align:
            if getattr(self.head, "embed_dim", None) != self.classifier.embed_dim:
                raise ValueError(
                    f"The head outputs {getattr(self.head, 'embed_dim', None)}-dim grid embeddings but the "
                    f"text embeddings are {self.classifier.embed_dim}-dim."
                )
            expected_test = self.classifier.num_test_classes if self._test_vocabulary_pending else num_test
            if self.classifier.num_train_classes != num_train or self.classifier.num_test_classes != expected_test:
                raise ValueError(
                    f"Text embeddings cover {self.classifier.num_train_classes} training / "
                    f"{self.classifier.num_test_classes} test classes, but the vocabularies have "
                    f"{num_train} / {num_test} names."
                )
        else:
            if self.return_grid_embeddings:
                raise ValueError("Grid embeddings exist only with MODEL.GRIDCLIP.GRID_ALIGN True.")
            if self.head.cls_score.out_channels != num_train:
                raise ValueError(
                    f"The head scores {self.head.cls_score.out_channels} classes but the training vocabulary "
                    f"has {num_train}."
                )
            self._check_closed_vocabulary(self.test_class_names)
        if self.image_align:
            backbone_dim = getattr(self.backbone, "image_embedding_dim", None)
            if backbone_dim is None:
                raise ValueError(
                    "MODEL.GRIDCLIP.IMAGE_ALIGN needs the image embedding z̄ of CLIP's attention pool: use "
                    "MODEL.BACKBONE.NAME 'build_clip_resnet_fpn_backbone' with MODEL.CLIP.USE_MHSA True, or "
                    "set IMAGE_ALIGN False."
                )
            if backbone_dim != self.image_head.in_dim:
                raise ValueError(
                    f"The image head takes {self.image_head.in_dim}-dim inputs but z̄ is {backbone_dim}-dim."
                )

    def _check_closed_vocabulary(self, names):
        if list(names) != self.train_class_names:
            raise ValueError(
                "With MODEL.GRIDCLIP.GRID_ALIGN False the classifier is a learned conv over the "
                f"{len(self.train_class_names)} training classes, so the test vocabulary must be the "
                f"training one; got a different vocabulary of {len(names)} names. Use a model with grid "
                "alignment for other vocabularies."
            )

    @classmethod
    def from_config(cls, cfg, train_class_names: Optional[Sequence[str]] = None,
                    test_class_names: Optional[Sequence[str]] = None):
        """
        Args:
            train_class_names, test_class_names: names already validated where they entered
                (``gridclip.vocabulary``), e.g. ``GridCLIP(cfg, train_class_names=names,
                test_class_names=names)`` for inference on ``names`` alone (no dataset is read and
                only their text embeddings are built). Both None = the config's vocabularies
                (``gridclip.vocabulary.resolve_train_test_vocabularies``); training names None =
                the config's training vocabulary; test names None = the training names.
        """
        check_config(cfg, training=False)  # thresholds, top-k, sizes: one line naming the key
        backbone = build_backbone(cfg)
        backbone_shapes = backbone.output_shape()
        head_in_features = list(cfg.MODEL.FCOS.IN_FEATURES)
        missing = [f for f in head_in_features if f not in backbone_shapes]
        if missing:
            raise ValueError(
                f"MODEL.FCOS.IN_FEATURES {head_in_features}: the backbone outputs {sorted(backbone_shapes)}, "
                f"not {missing}."
            )
        feature_shapes = [backbone_shapes[f] for f in head_in_features]
        if train_class_names is None and test_class_names is None:
            train_names, test_names = resolve_train_test_vocabularies(cfg)
        else:
            train_names = list(resolve_train_vocabulary(cfg) if train_class_names is None else train_class_names)
            test_names = list(train_names if test_class_names is None else test_class_names)

        gc = cfg.MODEL.GRIDCLIP
        classifier, text_encoder = None, None
        if gc.GRID_ALIGN:
            # The class-embedding CLIP: MODEL.GRIDCLIP.TEXT_ENCODER ("" = the backbone's); the head's
            # embedding conv follows its dimension (classifier.embed_dim).
            text_encoder = text_cache.text_encoder_settings(cfg)
            train_embeddings = text_cache.load_text_embeddings(train_names, **text_encoder)
            # A different test vocabulary is built (or read from the cache) when it is first needed:
            # at the first inference (e.g. the evaluation after training), not at construction.
            test_embeddings = None
            classifier = TextEmbeddingClassifier(
                train_embeddings,
                test_embeddings,
                logit_scale_init=gc.LOGIT_SCALE_INIT,
                learn_logit_scale=gc.LEARN_LOGIT_SCALE,
                prior_prob=cfg.MODEL.FCOS.PRIOR_PROB,
            )
            head = GridCLIPHead(cfg, feature_shapes, embed_dim=classifier.embed_dim)
        else:
            head = ClassifierFCOSHead(cfg, feature_shapes, num_classes=len(train_names))

        image_head = None
        if gc.IMAGE_ALIGN:
            in_dim = getattr(backbone, "image_embedding_dim", None)
            if in_dim is None:
                raise ValueError(
                    "MODEL.GRIDCLIP.IMAGE_ALIGN needs the image embedding z̄ of CLIP's attention pool: use "
                    "MODEL.BACKBONE.NAME 'build_clip_resnet_fpn_backbone' with MODEL.CLIP.USE_MHSA True, or "
                    "set IMAGE_ALIGN False."
                )
            image_head = ImageEmbeddingHead(
                in_dim, gc.IMAGE_HEAD_HIDDEN_DIMS, teacher_embed_dim(gc.TEACHER.MODEL_NAME)
            )

        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": head_in_features,
            "train_class_names": train_names,
            "test_class_names": test_names,
            "classifier": classifier,
            "image_head": image_head,
            "grid_loss_weight": gc.GRID_LOSS_WEIGHT,
            "image_loss_weight": gc.IMAGE_LOSS_WEIGHT,
            "image_loss_reference_dim": gc.IMAGE_LOSS_REFERENCE_DIM,
            "center_sampling_radius": cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS,
            "focal_loss_alpha": cfg.MODEL.FCOS.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": cfg.MODEL.FCOS.FOCAL_LOSS_GAMMA,
            "box_reg_weighting": cfg.MODEL.FCOS.BOX_REG_WEIGHTING,
            "test_score_thresh": cfg.MODEL.FCOS.SCORE_THRESH_TEST,
            "test_topk_candidates": cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": cfg.MODEL.FCOS.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "score_mode": cfg.MODEL.FCOS.SCORE_MODE,
            "return_grid_embeddings": gc.RETURN_GRID_EMBEDDINGS,
            "text_encoder": text_encoder,
            "fold_bn": cfg.MODEL.GRIDCLIP.INFERENCE.FOLD_BN,
            "channels_last": cfg.MODEL.GRIDCLIP.INFERENCE.CHANNELS_LAST,
            "decoder": cfg.MODEL.GRIDCLIP.INFERENCE.DECODER,
            "compile_inference": cfg.MODEL.GRIDCLIP.INFERENCE.COMPILE,
            "unseen_class_logit_offset": cfg.MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET,
            "lazy_test_vocabulary": bool(gc.GRID_ALIGN) and test_names != train_names,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
        }

    # ------------------------------------------------------------------ public properties / vocabulary
    @property
    def grid_align(self) -> bool:
        return self.classifier is not None

    @property
    def image_align(self) -> bool:
        return self.image_head is not None

    @property
    def teacher_dim(self) -> Optional[int]:
        """Output size of the image head (the teacher's embedding dim), None without image alignment."""
        return self.image_head.out_dim if self.image_head is not None else None

    @property
    def num_test_classes(self) -> int:
        return len(self.test_class_names)

    def configure_inference(self, *, fold_bn: Optional[bool] = None, channels_last: Optional[bool] = None,
                            decoder: Optional[str] = None, compile_inference: Optional[bool] = None):
        """
        Switch the exact inference speed-ups (None = keep the current setting). Training is unaffected.

        Args:
            fold_bn: fold BatchNorms into convs in eval mode under no_grad.
            channels_last: run backbone and head on channels_last tensors at inference.
            decoder: candidate selection, a key of ``gridclip.modeling.decoding.DECODERS``.
            compile_inference: ``torch.compile`` the backbone + head forward used at inference.
        """
        if decoder is not None:
            if decoder not in DECODERS:
                raise ValueError(f"MODEL.GRIDCLIP.INFERENCE.DECODER must be one of {sorted(DECODERS)}, got {decoder!r}.")
            self.decoder = decoder
        if fold_bn is not None:
            set_bn_folding(self.backbone, fold_bn)
            self.fold_bn = bool(fold_bn)
        if channels_last is not None:
            self.channels_last = bool(channels_last)
        if compile_inference is not None:
            # The compiled module (built at the first compiled inference) is kept: switching back is free.
            self.compile_inference = bool(compile_inference)
        return self

    def set_vocabulary(self, names: Sequence[str], text_embeddings: Union[Tensor, str, None] = None,
                       image_queried_names: Sequence[str] = ()):
        """
        Swap the test vocabulary (the classes scored at inference) without retraining.

        Args:
            names: the class names; output ``pred_classes`` index this list.
            text_embeddings: [K, D] tensor, a file (``gridclip.modeling.text.files.load_text_embeddings_file``
                formats), or None to build them with the text encoder's CLIP
                (``gridclip.modeling.text.cache.load_text_embeddings``, cached).
            image_queried_names: those of ``names`` whose rows of ``text_embeddings`` are image
                exemplars' grid embeddings (:mod:`gridclip.exemplars`), not text: they get no
                unseen-class offset (:meth:`unseen_logit_offsets`).
        """
        names = validate_vocabulary(names, "set_vocabulary")  # the one check of every vocabulary source
        if not self.grid_align:
            self._check_closed_vocabulary(names)
            return
        embeddings, source = text_cache.vocabulary_text_embeddings(
            names, text_embeddings, self.text_encoder, self.classifier.embed_dim
        )
        self.classifier.set_test_embeddings(embeddings, source, self.unseen_logit_offsets(names, image_queried_names))
        self.test_class_names = names
        self.test_image_queried_names = tuple(image_queried_names)
        self._test_vocabulary_pending = False

    def unseen_logit_offsets(self, names: Sequence[str], image_queried_names: Sequence[str] = ()) -> Tensor:
        """
        [K] the inference logit offset of each of ``names``: ``unseen_class_logit_offset`` for a name
        outside ``seen_class_names`` (compared as the text encoder sees them), 0 for the others and for
        ``image_queried_names`` (classes queried by image exemplars).

        The project's unseen-class calibration (not in the paper; docs/WORLD.md "Naming"): the
        classifier's bias is learned against the training classes only, and the *text* embedding of a
        class never seen in training, positive or negative, can outscore a base object's own name. An
        exemplar's row is the detector's own grid embedding, which that argument does not cover.
        """
        unseen = unseen_class_mask(names, self.seen_class_names)
        image_queried = set(image_queried_names)
        return torch.tensor([self.unseen_class_logit_offset if u and name not in image_queried else 0.0
                             for name, u in zip(names, unseen)])

    def set_seen_class_names(self, names: Sequence[str]):
        """The classes the loaded weights were trained on (e.g. a checkpoint's record); refreshes the offsets."""
        self.seen_class_names = list(names)
        self._refresh_test_logit_offsets()

    def _refresh_test_logit_offsets(self):
        if self.grid_align and not self._test_vocabulary_pending:
            self.classifier.test_logit_offsets = self.unseen_logit_offsets(
                self.test_class_names, self.test_image_queried_names).to(
                self.classifier.test_embeddings.device)

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict[str, Tensor]], return_grid_embeddings: Optional[bool] = None,
                test_embeddings: Optional[Tensor] = None, test_logit_offsets: Optional[Tensor] = None):
        """
        Args:
            batched_inputs: see the class docstring.
            return_grid_embeddings: inference only; overrides the configured RETURN_GRID_EMBEDDINGS.
            test_embeddings: inference only; [K, D] L2-normalised class embeddings on the model's device
                to score instead of the stored test vocabulary's (one consistent vocabulary per call,
                whatever another thread's ``set_vocabulary`` does meanwhile: ``GridCLIPPredictor``).
            test_logit_offsets: inference only, with ``test_embeddings``: their [K] logit offsets
                (``unseen_logit_offsets``; None = zeros).
        """
        images = self.preprocess_image(batched_inputs)
        if not self.training:
            return self._forward_inference(batched_inputs, images, return_grid_embeddings, test_embeddings,
                                           test_logit_offsets)
        features = self.backbone(images.tensor)
        image_embedding = features.get(IMAGE_EMBEDDING_KEY)
        features = [features[f] for f in self.head_in_features]
        predictions = self.head(features)

        if self.training:
            missing = [i for i, x in enumerate(batched_inputs) if "instances" not in x]
            if missing:
                raise ValueError(f"GridCLIP training needs 'instances' in every input dict; inputs {missing} lack it.")
            # Checked before the move to the device: on the loader's CPU tensors it costs no host-device sync.
            self._check_gt_classes([x["instances"] for x in batched_inputs])
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            detection = self.forward_training(images, features, predictions, gt_instances)
            loss_image = None
            if self.image_align:
                teacher = self._teacher_embeddings(batched_inputs)
                loss_image = image_alignment_loss(self.image_head(image_embedding), teacher,
                                                  reference_dim=self.image_loss_reference_dim)
            return gridclip_loss(
                loss_grid=detection["loss_fcos_cls"],
                loss_image=loss_image,
                loss_box_reg=detection["loss_fcos_loc"],
                loss_centerness=detection["loss_fcos_ctr"],
                grid_weight=self.grid_loss_weight,
                image_weight=self.image_loss_weight,
            )

    def _ensure_test_vocabulary(self):
        """Build the test vocabulary's text embeddings if still pending (``lazy_test_vocabulary``)."""
        if self._test_vocabulary_pending:
            logger.info("Text embeddings of the test vocabulary (%d classes), at the first inference",
                        len(self.test_class_names))
            self.set_vocabulary(self.test_class_names)

    def _backbone_head(self, tensor: Tensor):
        """Eval-mode backbone + head: (head input features, head predictions)."""
        features = self.backbone(tensor)
        features = [features[f] for f in self.head_in_features]
        return features, self.head(features)

    def _forward_inference(self, batched_inputs, images, return_grid_embeddings: Optional[bool], test_embeddings=None,
                           test_logit_offsets=None):
        self._ensure_test_vocabulary()
        if return_grid_embeddings is None:
            return_grid_embeddings = self.return_grid_embeddings
        if return_grid_embeddings and not self.grid_align:
            raise ValueError("Grid embeddings exist only with MODEL.GRIDCLIP.GRID_ALIGN True.")
        tensor = images.tensor
        if self.channels_last and not torch.jit.is_tracing():
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        run = self._backbone_head
        if self.compile_inference and not torch.jit.is_tracing():
            if self._compiled_backbone_head is None:
                self._compiled_backbone_head = torch.compile(self._backbone_head, dynamic=False)
            run = self._compiled_backbone_head
        features, predictions = run(tensor)
        results = self.forward_inference(images, features, predictions, return_grid_embeddings, test_embeddings,
                                         test_logit_offsets)
        processed_results = []
        for results_per_image, input_per_image, image_size in zip(results, batched_inputs, images.image_sizes):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            processed_results.append({"instances": detector_postprocess(results_per_image, height, width)})
        return processed_results

    def _check_gt_classes(self, gt_instances: List[Instances]):
        for i, instances in enumerate(gt_instances):
            classes = instances.gt_classes
            if len(classes) and (int(classes.min()) < 0 or int(classes.max()) >= self.num_classes):
                raise ValueError(
                    f"Image {i} has gt_classes in [{int(classes.min())}, {int(classes.max())}], but the "
                    f"training vocabulary has {self.num_classes} classes (indices 0..{self.num_classes - 1}). "
                    "The dataset and MODEL.GRIDCLIP.TRAIN_VOCABULARY disagree."
                )

    def _teacher_embeddings(self, batched_inputs) -> Tensor:
        """[B, D_teacher] from each input's "teacher_embedding", with clear errors when absent or mis-sized."""
        missing = [i for i, x in enumerate(batched_inputs) if x.get("teacher_embedding") is None]
        if missing:
            raise KeyError(
                f"MODEL.GRIDCLIP.IMAGE_ALIGN is on but input dicts {missing} have no 'teacher_embedding'. "
                "Train with TeacherEmbeddingHook (gridclip.engine.teacher_hook), which fills it, or set "
                "MODEL.GRIDCLIP.IMAGE_ALIGN False."
            )
        embeddings = []
        for i, x in enumerate(batched_inputs):
            embedding = torch.as_tensor(x["teacher_embedding"]).reshape(-1)
            if embedding.numel() != self.teacher_dim:
                raise ValueError(
                    f"teacher_embedding of input {i} has dim {embedding.numel()}, but the image head outputs "
                    f"{self.teacher_dim} (MODEL.GRIDCLIP.TEACHER.MODEL_NAME must name the teacher that "
                    "produced the embeddings)."
                )
            embeddings.append(embedding)
        return torch.stack(embeddings).to(device=self.device, dtype=torch.float32)

    def dense_predictions(self, predictions):
        """
        Head outputs -> per-level lists of class logits [N, Ri, K], box deltas [N, Ri, 4], centerness
        [N, Ri, 1] and grid embeddings [N, Ri, D] (None without grid alignment). With grid alignment
        the logits of all levels come from one ``classifier`` matmul.
        """
        if not self.training:
            self._ensure_test_vocabulary()
        cls_out, box_deltas, centerness = predictions
        box_deltas = [permute_to_N_HWA_K(x, 4) for x in box_deltas]
        centerness = [permute_to_N_HWA_K(x, 1) for x in centerness]
        if not self.grid_align:
            return [permute_to_N_HWA_K(x, self.num_classes) for x in cls_out], box_deltas, centerness, None
        grid_embeddings = [permute_to_N_HWA_K(x, self.classifier.embed_dim) for x in cls_out]
        sizes = [x.shape[1] for x in grid_embeddings]
        logits = list(self.classifier(torch.cat(grid_embeddings, dim=1)).split(sizes, dim=1))
        return logits, box_deltas, centerness, grid_embeddings

    def forward_training(self, images, features, predictions, gt_instances):
        """Detectron2 FCOS's matching and losses on GridCLIP's logits: loss_fcos_{cls,loc,ctr} (unweighted)."""
        pred_logits, pred_deltas, pred_centerness, _ = self.dense_predictions(predictions)
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        losses = self.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes, pred_centerness)
        if self.box_reg_weighting == "centerness":
            pos_mask = (torch.stack(gt_labels) >= 0) & (torch.stack(gt_labels) != self.num_classes)
            losses["loss_fcos_loc"] = centerness_weighted_box_reg_loss(
                anchors, self.box2box_transform, pred_deltas, gt_boxes, pos_mask
            )
        return losses

    def inference_predictions(self, predictions, test_embeddings: Optional[Tensor] = None,
                              test_logit_offsets: Optional[Tensor] = None):
        """
        Head outputs -> per-level class logits [N, Ri, K] (the test vocabulary), box deltas [N, Ri, 4]
        and centerness [N, Ri, 1] (both fp32, also under autocast) and grid embeddings [N, Ri, D] (None
        without grid alignment).

        The cosine classifier runs in its inference form (``TextEmbeddingClassifier.inference_logits``:
        one ``addmm`` per level, scale folded into the text embeddings, each class's logit offset
        in the bias).
        """
        cls_out, box_deltas, centerness = predictions
        box_deltas = [permute_to_N_HWA_K(x, 4).float() for x in box_deltas]
        centerness = [permute_to_N_HWA_K(x, 1).float() for x in centerness]
        if not self.grid_align:
            return [permute_to_N_HWA_K(x, self.num_classes) for x in cls_out], box_deltas, centerness, None
        grid_embeddings = [permute_to_N_HWA_K(x, self.classifier.embed_dim) for x in cls_out]
        logits = self.classifier.inference_logits(grid_embeddings, test_embeddings, test_logit_offsets)
        return logits, box_deltas, centerness, grid_embeddings

    def forward_inference(self, images, features, predictions, return_grid_embeddings: bool = False,
                          test_embeddings: Optional[Tensor] = None, test_logit_offsets: Optional[Tensor] = None):
        """
        Decoding + class-wise NMS per image (:func:`gridclip.modeling.decoding.decode_dense_predictions`,
        the decoder the FCOS peer of ``gridclip.analysis`` shares). Anchors, boxes and scores are fp32
        whatever the autocast dtype of the network.
        """
        pred_logits, pred_deltas, pred_centerness, grid_embeddings = self.inference_predictions(
            predictions, test_embeddings, test_logit_offsets)
        anchors = [a.tensor.float() for a in self.anchor_generator(features)]
        return decode_dense_predictions(
            images.image_sizes, anchors, pred_logits, pred_deltas, pred_centerness,
            grid_embeddings=grid_embeddings if return_grid_embeddings else None,
            box2box_transform=self.box2box_transform, decoder=self.decoder, score_thresh=self.test_score_thresh,
            topk=self.test_topk_candidates, score_mode=self.score_mode, nms_thresh=self.test_nms_thresh,
            max_detections=self.max_detections_per_image,
        )

    def decode_level(self, anchors: Boxes, logits: Tensor, deltas: Tensor, centerness: Tensor,
                     grid_embeddings: Optional[Tensor], image_size) -> Instances:
        """
        Candidates of one level of one image (``MODEL.FCOS.SCORE_MODE``'s rule with SCORE_THRESH_TEST
        and TOPK_CANDIDATES_TEST, selected by ``self.decoder``), decoded to fp32 boxes: see
        :func:`gridclip.modeling.decoding.decode_level`.

        Args:
            logits [R, K], deltas [R, 4], centerness [R, 1], grid_embeddings [R, D] or None.
        """
        return decode_level(
            anchors.tensor, logits, deltas, centerness, image_size, grid_embeddings=grid_embeddings,
            box2box_transform=self.box2box_transform, decoder=self.decoder, score_thresh=self.test_score_thresh,
            topk=self.test_topk_candidates, score_mode=self.score_mode,
        )
