"""
Ground truth | detections of a trained detector on the world's val images, those holding novel (rare)
categories first: the embedded default's pictures.
"""
import logging
import os

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..predictor import GridCLIPPredictor

__all__ = ["novel_first", "with_label_margin", "visualize_novel_detections"]

#: the drawings' scale and the white margin (in image pixels: right, bottom) that keeps every label whole
#: (Detectron2's Visualizer writes a box's name rightwards from its corner and clips it at the image edge)
DRAW_SCALE = 3.0
LABEL_MARGIN = (80, 12)

logger = logging.getLogger("gridclip.embedded_default")


def novel_first(dataset_dicts, metadata):
    """Val records ordered so that images holding rare (novel) categories come first."""
    frequencies = metadata.get("class_frequencies", None) or ["c"] * len(metadata.thing_classes)

    def num_novel(record):
        return sum(frequencies[a["category_id"]] == "r" for a in record.get("annotations", []))

    return sorted(dataset_dicts, key=lambda r: -num_novel(r))


def with_label_margin(image_rgb, margin=LABEL_MARGIN):
    """``image_rgb`` (H, W, 3 uint8) on a white canvas ``margin`` = (right, bottom) pixels larger: the boxes keep
    their coordinates, and a label that runs past the image stays legible instead of being cut."""
    right, bottom = margin
    canvas = np.full((image_rgb.shape[0] + bottom, image_rgb.shape[1] + right, 3), 255, dtype=np.uint8)
    canvas[: image_rgb.shape[0], : image_rgb.shape[1]] = image_rgb
    return canvas


def visualize_novel_detections(cfg, config_file, opts, weights, output_dir, num_images, threshold,
                               one_name_iou=None):
    """
    Side-by-side ground truth | detections of ``num_images`` images of ``cfg.DATASETS.TEST[0]`` (those
    with novel categories first), drawn by a :class:`GridCLIPPredictor` of ``config_file`` + ``opts``
    with ``weights``, into ``output_dir/<image>.png``; with ``one_name_iou``, one name per object
    (:meth:`gridclip.predictor.Detections.one_name_per_object` at that IoU).

    Returns:
        (list[str], dict): the written paths, and {image name: novel class names detected}.
    """
    dataset_name = cfg.DATASETS.TEST[0]
    predictor = GridCLIPPredictor(
        config_file, weights=weights, opts=list(opts) + ["OUTPUT_DIR", cfg.OUTPUT_DIR],
        device=cfg.MODEL.DEVICE, confidence_threshold=threshold,
    )
    metadata = MetadataCatalog.get(dataset_name)
    predictor.set_vocabulary(list(metadata.thing_classes))
    novel_names = {n for n, f in zip(metadata.thing_classes, metadata.class_frequencies) if f == "r"}
    os.makedirs(output_dir, exist_ok=True)
    dataset_dicts = novel_first(DatasetCatalog.get(dataset_name), metadata)[:num_images]
    results = predictor.predict([d["file_name"] for d in dataset_dicts], batch_size=8)
    if one_name_iou is not None:
        results = [detections.one_name_per_object(one_name_iou) for detections in results]
    written, novel_found = [], {}
    for record, detections in zip(dataset_dicts, results):
        image_rgb = with_label_margin(cv2.imread(record["file_name"])[:, :, ::-1])
        # Boxes and names only: the generated annotations' polygons would repaint the objects.
        boxes_only = dict(record, annotations=[
            {k: v for k, v in a.items() if k != "segmentation"} for a in record.get("annotations", [])
        ])
        truth = Visualizer(image_rgb, metadata, scale=DRAW_SCALE).draw_dataset_dict(boxes_only).get_image()
        predicted = Visualizer(image_rgb, metadata, scale=DRAW_SCALE, instance_mode=ColorMode.IMAGE)
        predicted = predicted.draw_instance_predictions(detections.to_instances()).get_image()
        separator = np.full((truth.shape[0], 4, 3), 255, dtype=np.uint8)
        name = os.path.basename(record["file_name"]).rsplit(".", 1)[0]
        path = os.path.join(output_dir, name + ".png")
        cv2.imwrite(path, np.concatenate([truth, separator, predicted], axis=1)[:, :, ::-1])
        written.append(path)
        found = sorted({n for n in detections.class_names if n in novel_names})
        novel_found[name] = found
        logger.info("%s: %s%s", name, ", ".join(detections.class_names) or "-",
                    f"  [novel: {', '.join(found)}]" if found else "")
    return written, novel_found
