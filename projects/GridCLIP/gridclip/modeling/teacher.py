"""
The frozen CLIP image teacher of GridCLIP's image-level alignment (paper §3.3, Eq. 4).

:class:`CLIPImageTeacher` keeps only the image tower of an open_clip CLIP model (ViT-B/32 by default,
RN50x64 for GridCLIP-R50-RN) and embeds the images the training loader already produced: uint8 CHW
tensors of any size, preprocessed on the teacher's device exactly as CLIP's own inference transform
does (shortest side → input size, bicubic with antialiasing, center crop, /255, CLIP mean/std).

What the teacher sees (``input_mode``, MODEL.GRIDCLIP.TEACHER.INPUT):

- ``"center_crop"`` (default; CLIP's transform): the centre square of the image, so a 4:3 image
  loses 25 % of its width and a 16:9 one 44 %;
- ``"letterbox"``: the whole image, longest side → input size (same resize), centred on a square
  canvas filled with CLIP's mean colour (0 after normalisation), as the student's z̄ sees the whole
  image. The paper does not say which; ``tools`` / the ablation runner measure both.

At another resolution (``input_size``, MODEL.GRIDCLIP.TEACHER.INPUT_SIZE): the image tower's
positional embedding (a ViT's, or a ModifiedResNet attention pool's) is resized bicubically to the
larger (or smaller) grid once, at construction, as a detector runs CLIP's attention pool densely at its
own resolution (:func:`.dense_attention_pool.interpolate_positional_embedding`). A teacher trained at
64 px then sees a 128-px training image at its native pixel size, where its 64-px view would halve every
object (the generated world's teacher: ``configs/world``).

Crops (``crops``, MODEL.GRIDCLIP.TEACHER.CROPS = k ≥ 2): besides the whole image, the teacher embeds a
k × k grid of crops of it, each preprocessed as above at the model's *own* input size (the scale its
objects had in pretraining); its embedding is the L2-normalised mean of the k² + 1 normalised embeddings.
One image embedding of a many-object scene represents few of its objects (the paper's Fig. 4); the crops
show each part of the scene at CLIP's scale. Not in the paper (its teacher embeds the whole image once):
a project option, measured in ``docs/WORLD.md`` (the world's teacher ranks a training image's categories
better than the student's z̄ only with it).

Parity with open_clip: CLIP's transform resizes a PIL image (uint8, Pillow's bicubic); here the
resize runs on tensors (torchvision bicubic with antialiasing, rounded back to 0..255). The two differ by
a few grey levels on some pixels (measured: mean |diff| ≈ 0.003, max ≈ 0.04 in normalised units, i.e.
about 3/255 before normalising; identical when no resize is needed). ``tests/modeling/test_teacher.py``
asserts mean |diff| < 0.01 and max |diff| < 0.1 on the preprocessed pixels, and cosine similarity
> 0.9999 between ``encode`` and ``model.encode_image(preprocess(pil_image))``.
"""
import copy
import math

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn
from torchvision.transforms import InterpolationMode

from open_clip import get_model_preprocess_cfg

from .clip_loading import create_clip_model
from .dense_attention_pool import interpolate_positional_embedding

__all__ = ["CLIPImageTeacher", "INPUT_MODES", "grid_crops", "resize_image_tower"]

_SUPPORTED_FORMATS = ("RGB", "BGR")
#: MODEL.GRIDCLIP.TEACHER.INPUT values
INPUT_MODES = ("center_crop", "letterbox")


def _as_pair(size):
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"Expected an image size (h, w), got {size!r}")
        return int(size[0]), int(size[1])
    return int(size), int(size)


def resize_image_tower(visual, size):
    """
    Make an open_clip image tower take ``size`` × ``size`` inputs: its positional embedding (a
    VisionTransformer's, or a ModifiedResNet attention pool's) resized bicubically to the new grid, in place.

    Args:
        visual: ``model.visual`` of an open_clip CLIP (VisionTransformer or ModifiedResNet).
        size (int): the new input side; a multiple of the tower's stride (ViT patch, 32 for a ResNet).

    Returns:
        the same ``visual``.
    """
    if hasattr(visual, "attnpool"):
        holder, stride = visual.attnpool, 32
    elif hasattr(visual, "positional_embedding") and hasattr(visual, "patch_size"):
        holder, stride = visual, int(_as_pair(visual.patch_size)[0])
    else:
        raise ValueError(
            f"MODEL.GRIDCLIP.TEACHER.INPUT_SIZE: cannot resize a {type(visual).__name__} image tower (only open_clip's "
            "VisionTransformer and ModifiedResNet); set INPUT_SIZE to 0 (the model's own size)."
        )
    if size % stride:
        raise ValueError(
            f"MODEL.GRIDCLIP.TEACHER.INPUT_SIZE {size} is not a multiple of the image tower's stride {stride}."
        )
    grid = size // stride
    with torch.no_grad():
        resized = interpolate_positional_embedding(holder.positional_embedding.detach(), grid, grid).clone()
    holder.positional_embedding = nn.Parameter(resized, requires_grad=holder.positional_embedding.requires_grad)
    if hasattr(visual, "grid_size"):
        visual.grid_size = (grid, grid)
    visual.image_size = (size, size)
    return visual


def grid_crops(image, k):
    """
    The k × k grid of crops of ``image`` (C, H, W), row by row; cell borders at round(i · H / k) and
    round(j · W / k), so the crops tile the image (sizes differ by at most one pixel).
    """
    h, w = image.shape[-2:]
    if h < k or w < k:
        raise ValueError(f"MODEL.GRIDCLIP.TEACHER.CROPS {k}: image of {h}x{w} pixels is smaller than the crop grid.")
    rows = [round(i * h / k) for i in range(k + 1)]
    cols = [round(j * w / k) for j in range(k + 1)]
    return [image[..., rows[i]:rows[i + 1], cols[j]:cols[j + 1]] for i in range(k) for j in range(k)]


class CLIPImageTeacher(nn.Module):
    """
    A frozen CLIP image encoder that turns training images into L2-normalised embeddings.

    It has no trainable parameters (``requires_grad`` is False everywhere) and stays in eval mode
    even if ``.train()`` is called on it. It is meant to be held by
    :class:`gridclip.engine.teacher_hook.TeacherEmbeddingHook`, never by the detector, so it is in
    no checkpoint, optimizer or DDP wrapper.

    Attributes:
        embed_dim (int): D, the size of the embeddings ``encode`` returns (512 for ViT-B/32).
        input_size (tuple[int, int]): (h, w) the images are resized/cropped to (224×224 for
            ViT-B/32, 448×448 for RN50x64).
        model_name, pretrained (str): what it was built from.
    """

    def __init__(self, model_name, pretrained, device="cpu", amp=True, input_mode="center_crop", input_size=0,
                 crops=0):
        """
        Args:
            model_name (str): open_clip model name, e.g. "ViT-B-32-quickgelu", "RN50x64-quickgelu".
            pretrained (str): "openai", a local weights file, or "" for seeded random weights
                (see :func:`gridclip.modeling.clip_loading.create_clip_model`).
            device: where the teacher runs; move it later with ``.to(device)``.
            amp (bool): run the image tower under fp16 autocast when on CUDA.
            input_mode (str): "center_crop" (CLIP's) or "letterbox" (the whole image; module doc).
            input_size (int): 0 = the model's own input size; else the side the teacher sees, its
                positional embedding resized to match (:func:`resize_image_tower`).
            crops (int): 0 = the whole image only; k ≥ 2: also a k × k grid of crops, each at the model's
                own input size, averaged with it (module doc).
        """
        if input_mode not in INPUT_MODES:
            raise ValueError(f"MODEL.GRIDCLIP.TEACHER.INPUT must be one of {INPUT_MODES}, got {input_mode!r}.")
        if int(crops) < 0 or int(crops) == 1:
            raise ValueError(f"MODEL.GRIDCLIP.TEACHER.CROPS must be 0 (the whole image only) or >= 2 (a k x k grid "
                             f"of crops besides it), got {crops}.")
        super().__init__()
        self.input_mode = input_mode
        clip_model = create_clip_model(model_name, pretrained, device="cpu")
        preprocess_cfg = get_model_preprocess_cfg(clip_model)
        self.visual = clip_model.visual
        del clip_model  # the text tower is not needed

        self.model_name = model_name
        self.pretrained = pretrained
        self.amp = bool(amp)
        self.input_size = _as_pair(preprocess_cfg.get("size", self.visual.image_size))
        if int(input_size) < 0:
            raise ValueError(f"MODEL.GRIDCLIP.TEACHER.INPUT_SIZE must be 0 (the model's own) or positive, got {input_size}.")
        self.crops = int(crops)
        #: (h, w) each crop is seen at: the model's own input size
        self.crop_input_size = self.input_size
        #: the image tower the crops go through: the model's own when the whole image is seen at another size
        self.crop_visual = None
        if int(input_size) and (int(input_size), int(input_size)) != self.input_size:
            if self.crops:
                self.crop_visual = copy.deepcopy(self.visual)
            resize_image_tower(self.visual, int(input_size))
            self.input_size = (int(input_size), int(input_size))
        self.interpolation = (
            InterpolationMode.BILINEAR
            if preprocess_cfg.get("interpolation") == "bilinear"
            else InterpolationMode.BICUBIC
        )
        self.embed_dim = int(self.visual.output_dim)
        mean = torch.tensor(preprocess_cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(preprocess_cfg["std"], dtype=torch.float32).view(1, 3, 1, 1)
        # Buffers so that .to(device) moves them; not persistent, so a state_dict holds only weights.
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

        for p in self.parameters():
            p.requires_grad_(False)
        self.to(device)
        super().train(False)

    def train(self, mode=True):
        """The teacher is frozen: it stays in eval mode whatever ``mode`` is."""
        return super().train(False)

    @property
    def device(self):
        return self.pixel_mean.device

    def _check_image(self, index, image):
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                f"CLIPImageTeacher.encode: image {index} is a {type(image).__name__}; expected a uint8 "
                "CHW torch.Tensor (the 'image' field of a Detectron2 dataset dict)."
            )
        if image.dim() != 3 or image.shape[0] not in (1, 3) or image.shape[1] < 1 or image.shape[2] < 1:
            raise ValueError(
                f"CLIPImageTeacher.encode: image {index} has shape {tuple(image.shape)}; expected (C, H, W) "
                "with C = 3 (or 1 for grayscale) and H, W > 0."
            )
        if image.is_floating_point() and image.numel() and float(image.max()) <= 1.0 and float(image.min()) >= 0:
            # Not an error per se, but almost certainly a 0..1 tensor where 0..255 is expected.
            if float(image.max()) > 0:
                raise ValueError(
                    f"CLIPImageTeacher.encode: image {index} is a float tensor with values in [0, 1]; "
                    "expected pixel values in [0, 255] (uint8 as Detectron2's mappers produce)."
                )

    def _resize_and_crop(self, images, size):
        """B same-size uint8/float (C, H, W) images in 0..255 → float (B, 3, h, w) in 0..255 at ``size`` (h, w)."""
        out_h, out_w = size
        batch = torch.stack([image.to(self.device, non_blocking=True).float() for image in images])
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        h, w = batch.shape[-2:]
        if self.input_mode == "letterbox":
            return self._letterbox(batch, size)
        if out_h == out_w:
            # torchvision's shortest-edge rule (what open_clip's Resize(int) uses).
            size = [out_h]
        else:
            scale = max(out_h / h, out_w / w)
            size = [max(out_h, int(math.floor(h * scale + 0.5))), max(out_w, int(math.floor(w * scale + 0.5)))]
        batch = TF.resize(batch, size, interpolation=self.interpolation, antialias=True)
        # Pillow resizes uint8 images: round and clamp the same way.
        batch = batch.round_().clamp_(0, 255)
        return TF.center_crop(batch, [out_h, out_w])

    def _letterbox(self, batch, size):
        """
        float (B, 3, H, W) 0..255 → (B, 3, h, w) at ``size``: longest side fitted, centred; the padding is NaN
        here and becomes 0 (CLIP's mean colour) after normalisation in :meth:`preprocess`, whatever the
        channel order.
        """
        out_h, out_w = size
        h, w = batch.shape[-2:]
        scale = min(out_h / h, out_w / w)
        new_h, new_w = max(1, min(out_h, int(math.floor(h * scale + 0.5)))), max(1, min(out_w, int(math.floor(w * scale + 0.5))))
        if (new_h, new_w) != (h, w):
            batch = TF.resize(batch, [new_h, new_w], interpolation=self.interpolation, antialias=True)
            batch = batch.round_().clamp_(0, 255)
        canvas = batch.new_full((batch.shape[0], 3, out_h, out_w), float("nan"))
        top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
        canvas[:, :, top:top + new_h, left:left + new_w] = batch
        return canvas

    def preprocess(self, images, input_format="RGB", size=None):
        """
        CLIP's inference preprocessing, on the teacher's device.

        Args:
            images (list[Tensor]): B uint8 tensors (C, H_i, W_i), values 0..255, sizes may differ.
            input_format (str): "RGB" or "BGR" (Detectron2's cfg.INPUT.FORMAT of those images).
            size (tuple[int, int] or None): (h, w) to preprocess to; None = ``input_size``.

        Returns:
            Tensor: (B, 3, h, w) float32, CLIP-normalised, RGB, h × w = ``size``.
        """
        size = self.input_size if size is None else size
        if input_format not in _SUPPORTED_FORMATS:
            raise ValueError(
                f"CLIPImageTeacher: input_format {input_format!r} is not supported; use one of "
                f"{_SUPPORTED_FORMATS} (cfg.INPUT.FORMAT)."
            )
        if len(images) == 0:
            raise ValueError("CLIPImageTeacher.encode: got an empty list of images.")
        for i, image in enumerate(images):
            self._check_image(i, image)
        # Images of the same size are resized together; the results are stacked in input order.
        groups = {}
        for i, image in enumerate(images):
            groups.setdefault((image.shape[0],) + tuple(image.shape[-2:]), []).append(i)
        batch = torch.empty((len(images), 3) + tuple(size), device=self.device)
        for indices in groups.values():
            batch[indices] = self._resize_and_crop([images[i] for i in indices], size)
        if input_format == "BGR":
            batch = batch.flip(1)
        pixels = (batch / 255.0 - self.pixel_mean) / self.pixel_std
        if self.input_mode == "letterbox":
            pixels = torch.nan_to_num_(pixels, nan=0.0)  # the padding: CLIP's mean colour
        return pixels

    @torch.no_grad()
    def encode(self, images, input_format="RGB"):
        """
        Args:
            images (list[Tensor]): B uint8 tensors (C, H_i, W_i) in ``input_format`` channel order.
            input_format (str): "RGB" or "BGR".

        Returns:
            Tensor: (B, embed_dim) float32 on the teacher's device, rows L2-normalised (with ``crops``: the
            normalised mean of the whole image's and its k × k crops' normalised embeddings).
        """
        features = self._embed(self.visual, self.preprocess(images, input_format))  # [B, D]
        if not self.crops:
            return features
        crops = [crop for image in images for crop in grid_crops(image, self.crops)]
        crop_features = self._embed(self.crop_visual or self.visual,
                                    self.preprocess(crops, input_format, self.crop_input_size))  # [B * k * k, D]
        crop_features = crop_features.view(len(images), self.crops * self.crops, -1)
        return F.normalize(features + crop_features.sum(dim=1), dim=-1)

    def _embed(self, visual, pixels):
        """(N, 3, h, w) preprocessed pixels → (N, embed_dim) L2-normalised embeddings of ``visual``."""
        use_amp = self.amp and self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=use_amp):
            features = visual(pixels)
        return F.normalize(features.float(), dim=-1)

    def forward(self, images, input_format="RGB"):
        """Same as :meth:`encode`."""
        return self.encode(images, input_format)

    def extra_repr(self):
        return (
            f"model_name={self.model_name!r}, pretrained={self.pretrained!r}, input_size={self.input_size}, "
            f"input_mode={self.input_mode!r}, crops={self.crops}, "
            f"embed_dim={self.embed_dim}, amp={self.amp}"
        )
