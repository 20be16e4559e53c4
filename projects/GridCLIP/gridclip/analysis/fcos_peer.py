"""
The peer GridCLIP is measured against: Detectron2's own FCOS-R50-FPN (model zoo LazyConfig
``COCO-Detection/fcos_R_50_FPN_1x.py``, GN head), and :class:`FCOSWithGridCLIPDecoder`, the same
detector decoding with GridCLIP's decoder (:func:`gridclip.modeling.decoding.decode_dense_predictions`)
and speed-ups, so the two are timed on equal terms.
"""
import torch
from detectron2 import model_zoo
from detectron2.config import instantiate
from detectron2.modeling.meta_arch.fcos import FCOS
from detectron2.modeling.postprocessing import detector_postprocess

from ..modeling.bn_folding import enable_bn_folding, set_bn_folding
from ..modeling.decoding import decode_dense_predictions

__all__ = [
    "PEER_CONFIG",
    "PEER_NAME",
    "SAME_VOCAB_PEER_NAME",
    "COCO_CLASSES",
    "FCOSWithGridCLIPDecoder",
    "peer_postprocess",
    "build_fcos_peer",
]

PEER_CONFIG = "COCO-Detection/fcos_R_50_FPN_1x.py"
PEER_NAME = "FCOS-R50 (Detectron2)"
#: The fair peer: Detectron2's FCOS-R50 with a head over GridCLIP's test vocabulary, decoding with
#: GridCLIP's decoder (Detectron2's own decoding sorts all R x K pairs: 8.6 M for 1203 classes).
SAME_VOCAB_PEER_NAME = "FCOS-R50, same vocabulary (Detectron2)"
COCO_CLASSES = 80


def peer_postprocess(gridclip_cfg) -> dict:
    """GridCLIP's inference protocol (score threshold, top-k, NMS, detections), applied to the peer too."""
    return {
        "test_score_thresh": gridclip_cfg.MODEL.FCOS.SCORE_THRESH_TEST,
        "test_topk_candidates": gridclip_cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST,
        "test_nms_thresh": gridclip_cfg.MODEL.FCOS.NMS_THRESH_TEST,
        "max_detections_per_image": gridclip_cfg.TEST.DETECTIONS_PER_IMAGE,
    }


class FCOSWithGridCLIPDecoder(FCOS):
    """
    Detectron2's FCOS with GridCLIP's inference path: the same candidate selection (``decoder``, exact:
    the pairs of Detectron2's dense decoding; Detectron2's "sqrt" score), fp32 decoding and NMS, all in
    GridCLIP's shared :func:`~gridclip.modeling.decoding.decode_dense_predictions`, and the same exact
    speed-ups (BN folding in the trunk, channels_last).
    """

    decoder = "bound"
    channels_last = True

    def configure_inference(self, *, fold_bn=None, channels_last=None, decoder=None, compile_inference=None):
        """As ``GridCLIP.configure_inference`` (``compile_inference`` is accepted and ignored)."""
        if fold_bn is not None:
            set_bn_folding(self.backbone, fold_bn)
        if channels_last is not None:
            self.channels_last = bool(channels_last)
        if decoder is not None:
            self.decoder = decoder
        return self

    def forward(self, batched_inputs):
        if self.training:
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        tensor = images.tensor
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        features = self.backbone(tensor)
        features = [features[f] for f in self.head_in_features]
        predictions = self.head(features)
        results = self.forward_inference(images, features, predictions)
        return [{"instances": detector_postprocess(r, x.get("height", s[0]), x.get("width", s[1]))}
                for r, x, s in zip(results, batched_inputs, images.image_sizes)]

    def forward_inference(self, images, features, predictions):
        """
        Args:
            predictions: the head's per-level (logits [N, K, Hi, Wi], deltas [N, 4, Hi, Wi],
                centerness [N, 1, Hi, Wi]).

        Returns:
            N Instances (before :func:`detector_postprocess`).
        """
        pred_logits, pred_deltas, pred_centerness = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1])
        anchors = [a.tensor for a in self.anchor_generator(features)]
        return decode_dense_predictions(
            images.image_sizes, anchors, pred_logits, pred_deltas, pred_centerness,
            box2box_transform=self.box2box_transform, decoder=self.decoder, score_thresh=self.test_score_thresh,
            topk=self.test_topk_candidates, score_mode="sqrt", nms_thresh=self.test_nms_thresh,
            max_detections=self.max_detections_per_image,
        )


def build_fcos_peer(device: str, seed: int = 0, postprocess: dict = None, num_classes: int = COCO_CLASSES,
                    gridclip_decoder: bool = False):
    """
    Detectron2's FCOS-R50-FPN (LazyConfig :data:`PEER_CONFIG`), GN head, ``num_classes`` classes,
    random weights (seeded); ``postprocess`` overrides its inference settings (see
    :func:`peer_postprocess`); ``gridclip_decoder``: :class:`FCOSWithGridCLIPDecoder` (GridCLIP's
    decoder and speed-ups).
    """
    cfg = model_zoo.get_config(PEER_CONFIG)
    cfg.model.head.norm = "GN"
    cfg.model.num_classes = num_classes
    cfg.model.head.num_classes = num_classes
    for key, value in (postprocess or {}).items():
        setattr(cfg.model, key, value)
    if gridclip_decoder:
        cfg.model._target_ = FCOSWithGridCLIPDecoder
    torch.manual_seed(seed)
    model = instantiate(cfg.model).to(torch.device(device))
    if gridclip_decoder:
        enable_bn_folding(model.backbone)
    return model
