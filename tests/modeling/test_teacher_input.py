"""MODEL.GRIDCLIP.TEACHER.INPUT: the teacher sees CLIP's centre crop or the whole image letterboxed."""
import numpy as np
import pytest
import torch
from PIL import Image

from gridclip.modeling.clip_configs import TINY_TEACHER_CLIP
from gridclip.modeling.teacher import CLIPImageTeacher


@pytest.fixture(scope="module")
def teachers():
    return {mode: CLIPImageTeacher(TINY_TEACHER_CLIP, "", input_mode=mode) for mode in ("center_crop", "letterbox")}


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8))
    pixels = np.asarray(coarse.resize((w, h), Image.BILINEAR)).astype(np.uint8)
    return Image.fromarray(pixels), torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def _reference_letterbox(pil, size, mean, std):
    """Letterbox with PIL: longest side -> size (bicubic), centred on a CLIP-mean canvas, normalised."""
    w, h = pil.size
    scale = min(size / h, size / w)
    new_w, new_h = int(np.floor(w * scale + 0.5)), int(np.floor(h * scale + 0.5))
    canvas = Image.new("RGB", (size, size), tuple(int(round(m * 255)) for m in mean))
    canvas.paste(pil.resize((new_w, new_h), Image.BICUBIC), ((size - new_w) // 2, (size - new_h) // 2))
    x = torch.from_numpy(np.asarray(canvas).astype(np.float32) / 255).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1), (new_h, new_w)


def test_letterbox_keeps_the_whole_image_and_matches_a_pil_reference(teachers):
    teacher = teachers["letterbox"]
    size = teacher.input_size[0]
    pil, tensor = _image(96, 160)  # 5:3, a centre crop would drop 40 % of the width
    ours = teacher.preprocess([tensor])[0]
    mean, std = teacher.pixel_mean.flatten().tolist(), teacher.pixel_std.flatten().tolist()
    reference, (new_h, new_w) = _reference_letterbox(pil, size, mean, std)
    assert (new_h, new_w) == (38, 64)
    top = (size - new_h) // 2
    content = (slice(None), slice(top, top + new_h), slice(None))
    assert (ours[content] - reference[content]).abs().mean() < 0.01
    # padding = CLIP's mean colour = exactly 0 after normalisation (the reference rounds the mean to uint8)
    assert torch.all(ours[:, :top] == 0) and torch.all(ours[:, top + new_h:] == 0)
    assert (ours[:, :top] - reference[:, :top]).abs().max() < 0.01
    # the full width is seen: the leftmost / rightmost columns are the image's own edges
    for columns in (slice(0, 2), slice(size - 2, size)):
        assert (ours[:, top:top + new_h, columns] - reference[:, top:top + new_h, columns]).abs().mean() < 0.02
    assert ours[:, top:top + new_h, :2].abs().sum() > 0


def test_padding_is_mean_colour_in_bgr_too(teachers):
    _, tensor = _image(64, 128, seed=1)
    rgb = teachers["letterbox"].preprocess([tensor], "RGB")
    bgr = teachers["letterbox"].preprocess([tensor.flip(0)], "BGR")
    assert torch.allclose(rgb, bgr)
    assert torch.all(rgb[:, :, :16] == 0)


def test_modes_differ_only_for_non_square_images(teachers):
    _, square = _image(96, 96, seed=2)
    _, wide = _image(72, 128, seed=3)
    a = {m: t.encode([square, wide]) for m, t in teachers.items()}
    assert torch.allclose(a["center_crop"][0], a["letterbox"][0], atol=1e-5)
    assert not torch.allclose(a["center_crop"][1], a["letterbox"][1], atol=1e-3)


def test_unknown_input_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="TEACHER.INPUT"):
        CLIPImageTeacher(TINY_TEACHER_CLIP, "", input_mode="stretch")


def test_hook_builds_the_configured_teacher_view(tiny_cfg):
    from gridclip.engine.teacher_hook import TeacherEmbeddingHook

    assert tiny_cfg().MODEL.GRIDCLIP.TEACHER.INPUT == "center_crop"
    hook = TeacherEmbeddingHook(tiny_cfg(**{"MODEL.GRIDCLIP.TEACHER.INPUT": "letterbox"}))
    assert hook.teacher.input_mode == "letterbox"
