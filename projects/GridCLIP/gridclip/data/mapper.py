"""
``GridCLIPDatasetMapper``: one Detectron2 dataset dict -> one model input dict.

Training: read the image (RGB), multi-scale ``ResizeShortestEdge`` -> optional ``RandomCrop`` ->
``RandomFlip``; boxes follow the transforms, are clipped to the image, and degenerate ones are
dropped. The output carries ``"flipped"`` (whether a flip was applied; the teacher-embedding cache
keys on it). Test: ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``, annotations removed.

Images are decoded by :func:`read_image` faithfully for every mode and bit depth Pillow (or, as a
fallback, OpenCV) reads: 16-bit and 32-bit grey levels are scaled to 8 bits instead of saturating to
white, float images in [0, 1] are scaled instead of turning black, transparent pixels are composited
over white, palette/CMYK/YCbCr images are converted; EXIF orientation is applied. Images whose values
cannot be mapped to 8 bits unambiguously are refused with a message naming the file and the mode.

Corrupt or unreadable images: with ``DATALOADER.SKIP_CORRUPT_IMAGES`` (training only) the mapper logs
a warning naming the file, counts it (:func:`corrupt_image_count`) and returns ``None``, so
Detectron2's ``MapDataset`` loads another image instead; otherwise it raises
:class:`CorruptImageError` naming the file.
"""
import copy
import logging
import multiprocessing
import os
from typing import List, Optional, Union

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

__all__ = [
    "GridCLIPDatasetMapper",
    "CorruptImageError",
    "read_image",
    "build_gridclip_augmentation",
    "corrupt_image_count",
    "corrupt_image_files",
    "reset_corrupt_image_count",
    "is_valid_box",
]

logger = logging.getLogger(__name__)

# Shared with forked DataLoader workers, so the main process sees images skipped in workers.
try:
    _CORRUPT_COUNT = multiprocessing.Value("q", 0)
except (OSError, PermissionError):  # no shared memory (some sandboxes): count per process
    _CORRUPT_COUNT = None
_LOCAL_CORRUPT_COUNT = [0]
_CORRUPT_FILES = []  # files skipped by this process


class CorruptImageError(OSError):
    """An image listed in the dataset could not be read or does not match its annotation."""


def corrupt_image_count():
    """Number of training images skipped as corrupt/unreadable (this process and its forked workers)."""
    if _CORRUPT_COUNT is not None:
        return int(_CORRUPT_COUNT.value)
    return _LOCAL_CORRUPT_COUNT[0]


def corrupt_image_files():
    """The files skipped as corrupt by this process (not its workers), in order."""
    return list(_CORRUPT_FILES)


def reset_corrupt_image_count():
    """Set the corrupt-image counter to zero and forget the skipped files."""
    if _CORRUPT_COUNT is not None:
        with _CORRUPT_COUNT.get_lock():
            _CORRUPT_COUNT.value = 0
    _LOCAL_CORRUPT_COUNT[0] = 0
    del _CORRUPT_FILES[:]


def _count_corrupt(file_name):
    if _CORRUPT_COUNT is not None:
        with _CORRUPT_COUNT.get_lock():
            _CORRUPT_COUNT.value += 1
    _LOCAL_CORRUPT_COUNT[0] += 1
    _CORRUPT_FILES.append(file_name)


# ---------------------------------------------------------------------------------------- decoding
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16BS", "I;16LS")


class UnsupportedImageError(ValueError):
    """An image that decodes but whose pixel values have no faithful 8-bit RGB form."""


def _to_uint8_levels(values, file_name, mode):
    """Grey levels of any integer/float array -> uint8, by their bit depth (never by clipping)."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == bool:
        return values.astype(np.uint8) * 255
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)):
            raise UnsupportedImageError(f"Image '{file_name}' (mode {mode}) has NaN or infinite pixel values.")
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            return np.round(values * 255.0).astype(np.uint8)
        if low >= 0.0 and high <= 255.0:
            return np.round(values).astype(np.uint8)
        raise UnsupportedImageError(
            f"Image '{file_name}' (mode {mode}) holds float values in [{low:g}, {high:g}]; only [0, 1] or "
            "[0, 255] map to 8-bit colours unambiguously. Convert it to an 8-bit image first."
        )
    info = np.iinfo(values.dtype)
    low, high = int(values.min()), int(values.max())
    if values.dtype == np.uint16 or (low >= 0 and high <= 65535 and high > 255):
        return np.round(values.astype(np.float64) / 257.0).astype(np.uint8)  # 16-bit: 65535 -> 255
    if low >= 0 and high <= 255:
        return values.astype(np.uint8)
    raise UnsupportedImageError(
        f"Image '{file_name}' (mode {mode}, {info.bits}-bit) holds values in [{low}, {high}], outside the 8- or "
        "16-bit range; convert it to an 8-bit image first."
    )


def _pil_to_rgb(image, file_name):
    """A PIL image of any mode -> HWC uint8 RGB array."""
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        return _pil_to_rgb(image, file_name)
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode in ("1", "L"):
        grey = np.asarray(image.convert("L"))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        values = np.asarray(image)
        if mode in _SIXTEEN_BIT_MODES:
            values = values.astype(np.uint16)
        grey = _to_uint8_levels(values, file_name, mode)
        return np.repeat(grey[:, :, None], 3, axis=2)
    try:  # CMYK, YCbCr, LAB, HSV, ...
        return np.asarray(image.convert("RGB"))
    except (ValueError, OSError) as e:
        raise UnsupportedImageError(f"Image '{file_name}' has mode {mode}, which cannot be converted to RGB: {e}") from None


def _cv2_to_rgb(array, file_name):
    """An array from cv2.imdecode(IMREAD_UNCHANGED) -> HWC uint8 RGB (OpenCV orders channels BGR)."""
    mode = f"OpenCV {array.dtype}"
    if array.ndim == 2:
        grey = _to_uint8_levels(array, file_name, mode)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise UnsupportedImageError(f"Image '{file_name}' has {array.shape} pixels; expected 1, 3 or 4 channels.")
    channels = _to_uint8_levels(array, file_name, mode)
    if channels.shape[2] == 1:
        return np.repeat(channels, 3, axis=2)
    rgb = channels[:, :, 2::-1].astype(np.float64)
    if channels.shape[2] == 4:  # composite over white, as for Pillow
        alpha = channels[:, :, 3:4].astype(np.float64) / 255.0
        rgb = rgb * alpha + 255.0 * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)


def read_image(file_name, format="RGB"):
    """
    Decode an image file faithfully (see the module doc).

    Args:
        file_name (str): the image file.
        format (str): "RGB", "BGR" or "L" (grey).

    Returns:
        np.ndarray: HWC uint8 (HW1 for "L"), EXIF orientation applied.

    Raises:
        FileNotFoundError: no such file. ValueError: not an image either library can decode, or
        pixel values without a faithful 8-bit form (the message names the file and the mode).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if format not in ("RGB", "BGR", "L"):
        raise ValueError(f"read_image: format must be 'RGB', 'BGR' or 'L', got {format!r}.")
    file_name = os.fspath(file_name)
    if not os.path.isfile(file_name):
        if os.path.isdir(file_name):
            raise IsADirectoryError(f"Image '{file_name}' is a folder, not an image file.")
        raise FileNotFoundError(f"Image file '{file_name}' does not exist.")
    rgb = None
    try:
        with Image.open(file_name) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _pil_to_rgb(image, file_name)
    except UnsupportedImageError:
        raise
    except UnidentifiedImageError as pil_error:  # a format Pillow does not know: OpenCV may (never for
        import cv2  # a known format Pillow failed on: OpenCV decodes truncated files into grey garbage)

        data = np.fromfile(file_name, dtype=np.uint8)
        array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if array is None:
            raise ValueError(f"Cannot decode image '{file_name}': not an image file Pillow or OpenCV can read "
                             f"({pil_error}).") from None
        rgb = _cv2_to_rgb(array, file_name)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as pil_error:
        raise ValueError(f"Cannot decode image '{file_name}': {type(pil_error).__name__}: {pil_error}") from None
    if format == "BGR":
        return np.ascontiguousarray(rgb[:, :, ::-1])
    if format == "L":
        grey = np.round(rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        return grey[:, :, None]
    return rgb


def is_valid_box(bbox, bbox_mode, height=None, width=None):
    """
    Whether a box has positive width/height, finite coordinates and (when the image size is given)
    overlaps the image. Such boxes survive clipping; others are dropped by the mapper.
    """
    values = np.asarray(bbox, dtype=np.float64).reshape(-1)
    if values.shape[0] != 4 or not np.all(np.isfinite(values)):
        return False
    if bbox_mode == BoxMode.XYWH_ABS:
        x0, y0, w, h = values
        x1, y1 = x0 + w, y0 + h
    elif bbox_mode == BoxMode.XYXY_ABS:
        x0, y0, x1, y1 = values
    else:
        raise ValueError(f"Unsupported bbox_mode {bbox_mode}; GridCLIP reads XYWH_ABS or XYXY_ABS boxes.")
    if not (x1 > x0 and y1 > y0):
        return False
    if width is not None and height is not None:
        return x1 > 0 and y1 > 0 and x0 < width and y0 < height
    return True


def build_gridclip_augmentation(cfg, is_train):
    """
    Train: ResizeShortestEdge(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN, MIN_SIZE_TRAIN_SAMPLING), then
    RandomCrop(INPUT.CROP.TYPE, INPUT.CROP.SIZE) when INPUT.CROP.ENABLED, then RandomFlip
    (INPUT.RANDOM_FLIP). Test: ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST).

    Returns:
        list[Augmentation]
    """
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    augmentations = [
        T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
    ]
    if cfg.INPUT.CROP.ENABLED:
        augmentations.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    flip = cfg.INPUT.RANDOM_FLIP
    if flip not in ("horizontal", "vertical", "none"):
        raise ValueError(f"INPUT.RANDOM_FLIP must be 'horizontal', 'vertical' or 'none', got {flip!r}.")
    if flip != "none":
        augmentations.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    return augmentations


class GridCLIPDatasetMapper:
    """
    Map a Detectron2 dataset dict to GridCLIP's input dict.

    Output keys: ``"image"`` (uint8 tensor [3, H, W], ``image_format`` channel order),
    ``"height"``/``"width"`` (original size, for postprocessing), ``"file_name"``, ``"image_id"``,
    and in training ``"instances"`` (``gt_boxes`` [N, 4] XYXY in the transformed image,
    ``gt_classes`` [N] int64) and ``"flipped"`` (bool).
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[Union[T.Augmentation, T.Transform]],
        image_format: str = "RGB",
        skip_corrupt_images: bool = True,
        num_classes: Optional[int] = None,
    ):
        """
        Args:
            is_train: training (annotations transformed, ``flipped`` added) or inference.
            augmentations: applied in order (see :func:`build_gridclip_augmentation`).
            image_format: format for ``read_image`` ("RGB" for CLIP).
            skip_corrupt_images: in training, return None (skip) for unreadable images instead of
                raising. Never skipped at inference (every test image must be evaluated).
            num_classes: when given, a ``category_id`` outside [0, num_classes) raises a ValueError.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.skip_corrupt_images = skip_corrupt_images
        self.num_classes = num_classes
        mode = "training" if is_train else "inference"
        logger.info(f"[GridCLIPDatasetMapper] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_gridclip_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "skip_corrupt_images": cfg.DATALOADER.SKIP_CORRUPT_IMAGES,
        }

    def _read_image(self, dataset_dict):
        file_name = dataset_dict["file_name"]
        try:
            image = read_image(file_name, format=self.image_format)
            utils.check_image_size(dataset_dict, image)
        except Exception as e:  # PIL/OS errors, truncated files, size mismatch with the annotation
            message = f"Cannot use image '{file_name}': {type(e).__name__}: {e}"
            if self.is_train and self.skip_corrupt_images:
                _count_corrupt(file_name)
                logger.warning(f"{message}. Skipping it (DATALOADER.SKIP_CORRUPT_IMAGES=True); "
                               f"{corrupt_image_count()} image(s) skipped so far.")
                return None
            hint = (" Set DATALOADER.SKIP_CORRUPT_IMAGES=True to skip such images in training."
                    if self.is_train else " Fix or remove the file from the dataset.")
            raise CorruptImageError(message + "." + hint) from e
        return image

    def _valid_annotations(self, dataset_dict):
        """Non-crowd annotations whose box is finite, non-degenerate and overlaps the image."""
        height, width = dataset_dict.get("height"), dataset_dict.get("width")
        annos = []
        for obj in dataset_dict.get("annotations", []):
            if obj.get("iscrowd", 0) != 0:
                continue
            category_id = obj["category_id"]
            if self.num_classes is not None and not 0 <= category_id < self.num_classes:
                raise ValueError(
                    f"Annotation of '{dataset_dict.get('file_name')}' has category_id {category_id}, outside the "
                    f"vocabulary of {self.num_classes} classes."
                )
            if is_valid_box(obj["bbox"], obj["bbox_mode"], height, width):
                annos.append({"bbox": obj["bbox"], "bbox_mode": obj["bbox_mode"], "category_id": category_id})
        return annos

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one image's metadata in Detectron2 dataset format.

        Returns:
            dict or None: the model input (None: a corrupt training image to skip).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read_image(dataset_dict)
        if image is None:
            return None

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]  # h, w
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict

        dataset_dict["flipped"] = any(
            isinstance(t, (T.HFlipTransform, T.VFlipTransform)) for t in transforms.transforms
        )
        annos = [
            utils.transform_instance_annotations(obj, transforms, image_shape)
            for obj in self._valid_annotations(dataset_dict)
        ]
        dataset_dict.pop("annotations", None)
        instances = utils.annotations_to_instances(annos, image_shape)
        instances.gt_boxes.clip(image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict
