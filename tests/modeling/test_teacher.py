"""CLIPImageTeacher: frozen, right shape/norm, and the same embedding as open_clip's own preprocess + encode."""
import numpy as np
import pytest
import torch
from PIL import Image
from open_clip.transform import PreprocessCfg, image_transform_v2

from gridclip.modeling.clip_configs import TINY_TEACHER_CLIP
from gridclip.modeling.clip_loading import create_clip_model
from gridclip.modeling.teacher import CLIPImageTeacher


@pytest.fixture(scope="module")
def teacher():
    return CLIPImageTeacher(TINY_TEACHER_CLIP, "")


def _textured_image(h, w, seed):
    """A smooth random image plus noise (so resizing differences are visible), as PIL and uint8 CHW."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8))
    smooth = np.asarray(coarse.resize((w, h), Image.BILINEAR)).astype(np.int64)
    pixels = np.clip(smooth + rng.integers(-20, 20, smooth.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def test_teacher_is_frozen_and_stays_in_eval(teacher):
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    # Only the image tower is kept.
    assert not hasattr(teacher, "transformer") and hasattr(teacher, "visual")
    assert teacher.embed_dim == 32 and teacher.input_size == (64, 64)


def test_teacher_weights_unchanged_by_an_optimizer_step_on_something_else(teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = torch.nn.Linear(teacher.embed_dim, teacher.embed_dim)
    # Even if a caller hands every parameter to the optimizer by mistake, nothing of the teacher moves.
    optimizer = torch.optim.SGD(list(student.parameters()) + list(teacher.parameters()), lr=1.0)
    _, image = _textured_image(48, 40, seed=3)
    target = teacher.encode([image])
    assert not target.requires_grad
    loss = (student(target) - target).abs().sum()
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_encode_shape_dtype_norm_for_mixed_sizes(teacher):
    sizes = [(40, 70), (90, 50), (40, 70), (64, 64)]  # two of the same size are resized together
    images = [_textured_image(h, w, seed=i)[1] for i, (h, w) in enumerate(sizes)]
    out = teacher.encode(images)
    assert out.shape == (4, teacher.embed_dim) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    # Batched = one by one, in input order.
    one_by_one = torch.cat([teacher.encode([im]) for im in images])
    torch.testing.assert_close(out, one_by_one, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(96, 128), (120, 80), (37, 50), (64, 64)])
def test_parity_with_open_clip_preprocess_and_encode_image(teacher, size):
    clip_model = create_clip_model(TINY_TEACHER_CLIP, "")
    preprocess = image_transform_v2(PreprocessCfg(**clip_model.visual.preprocess_cfg), is_train=False)
    pil_image, tensor_image = _textured_image(*size, seed=sum(size))

    reference_pixels = preprocess(pil_image).unsqueeze(0)
    pixels = teacher.preprocess([tensor_image])
    assert pixels.shape == reference_pixels.shape
    diff = (pixels - reference_pixels).abs()
    # Tolerance of tensor-bicubic vs Pillow-bicubic resizing (documented in teacher.py).
    assert float(diff.mean()) < 0.01 and float(diff.max()) < 0.1
    if size == (64, 64):  # no resize: exact
        assert float(diff.max()) == 0.0

    with torch.no_grad():
        reference = torch.nn.functional.normalize(clip_model.encode_image(reference_pixels), dim=-1)
    assert float((teacher.encode([tensor_image]) * reference).sum()) > 0.9999


def test_bgr_input_is_converted(teacher):
    _, rgb = _textured_image(50, 60, seed=7)
    torch.testing.assert_close(teacher.encode([rgb.flip(0)], input_format="BGR"), teacher.encode([rgb]))
    # Swapping channels without saying so changes the embedding (the format matters).
    assert not torch.allclose(teacher.encode([rgb.flip(0)]), teacher.encode([rgb]))


def test_grayscale_single_channel_is_accepted(teacher):
    _, rgb = _textured_image(50, 60, seed=8)
    gray = rgb[:1]
    torch.testing.assert_close(teacher.encode([gray]), teacher.encode([gray.expand(3, -1, -1).clone()]))


@pytest.mark.parametrize(
    "images, fmt, message",
    [
        ([torch.zeros(50, 60, 3, dtype=torch.uint8)], "RGB", r"shape \(50, 60, 3\)"),
        ([torch.zeros(3, 50, 60, dtype=torch.uint8)], "YUV-BT.601", "input_format"),
        ([np.zeros((3, 50, 60), dtype=np.uint8)], "RGB", "ndarray"),
        ([torch.rand(3, 50, 60)], "RGB", r"\[0, 255\]"),
        ([], "RGB", "empty"),
    ],
)
def test_bad_input_gives_clear_errors(teacher, images, fmt, message):
    with pytest.raises((ValueError, TypeError), match=message):
        teacher.encode(images, input_format=fmt)


def test_teacher_state_dict_holds_only_the_image_tower(teacher):
    keys = list(teacher.state_dict())
    assert keys and all(k.startswith("visual.") for k in keys)


@pytest.mark.parametrize("model_name", [TINY_TEACHER_CLIP, "GridCLIP-Tiny-RN"])
def test_input_size_runs_the_tower_at_that_resolution(model_name):
    """INPUT_SIZE 128 (the ViT is a 64-px model, the RN a 224-px one): a 128-px image is seen at its native
    size (no resize), through the same weights with the positional embedding's grid resized bicubically;
    the model's own size is a no-op."""
    from gridclip.modeling.dense_attention_pool import interpolate_positional_embedding

    native = CLIPImageTeacher(model_name, "")
    big = CLIPImageTeacher(model_name, "", input_size=128)
    same = CLIPImageTeacher(model_name, "", input_size=native.input_size[0])
    assert big.input_size == (128, 128) and same.input_size == native.input_size != (128, 128)
    _, image = _textured_image(128, 128, seed=3)
    pixels = big.preprocess([image])
    assert pixels.shape == (1, 3, 128, 128)
    # no resampling: the pixels are the image's own, normalised
    expected = (image.float()[None] / 255.0 - big.pixel_mean) / big.pixel_std
    torch.testing.assert_close(pixels, expected)
    # the same computation by hand: the 64-px model's weights, its grid embedding resized to 128 / stride
    reference = create_clip_model(model_name, "").visual.eval()
    holder = reference.attnpool if hasattr(reference, "attnpool") else reference
    grid = 128 // (32 if hasattr(reference, "attnpool") else reference.patch_size[0])
    holder.positional_embedding = torch.nn.Parameter(
        interpolate_positional_embedding(holder.positional_embedding.detach(), grid, grid))
    if hasattr(reference, "grid_size"):
        reference.grid_size = (grid, grid)
    with torch.no_grad():
        want = torch.nn.functional.normalize(reference(expected), dim=-1)
    torch.testing.assert_close(big.encode([image]), want, atol=1e-5, rtol=1e-4)
    # and it differs from the model's own view, which resamples the image first
    assert float((big.encode([image]) * native.encode([image])).sum()) < 0.9999
    torch.testing.assert_close(same.encode([image]), native.encode([image]))


def test_input_size_must_fit_the_tower():
    with pytest.raises(ValueError, match="not a multiple of the image tower's stride 16"):
        CLIPImageTeacher(TINY_TEACHER_CLIP, "", input_size=100)
    with pytest.raises(ValueError, match="INPUT_SIZE must be 0"):
        CLIPImageTeacher(TINY_TEACHER_CLIP, "", input_size=-1)


def test_crops_average_the_whole_image_with_a_grid_of_crops_at_the_models_own_size():
    """TEACHER.CROPS 2 with INPUT_SIZE 128 (a 64-px model): the embedding is the normalised mean of the
    whole image seen at 128 px and its four 64-px quadrants seen at the model's own 64 px (no resampling)."""
    from gridclip.modeling.teacher import grid_crops

    whole = CLIPImageTeacher(TINY_TEACHER_CLIP, "", input_size=128)
    native = CLIPImageTeacher(TINY_TEACHER_CLIP, "")
    cropped = CLIPImageTeacher(TINY_TEACHER_CLIP, "", input_size=128, crops=2)
    images = [_textured_image(128, 128, seed=s)[1] for s in (5, 6)]
    quadrants = [[image[:, :64, :64], image[:, :64, 64:], image[:, 64:, :64], image[:, 64:, 64:]] for image in images]
    for image, parts in zip(images, quadrants):
        assert all(torch.equal(a, b) for a, b in zip(grid_crops(image, 2), parts))
    expected = torch.stack([
        torch.nn.functional.normalize(whole.encode([image])[0] + native.encode(parts).sum(dim=0), dim=-1)
        for image, parts in zip(images, quadrants)])
    got = cropped.encode(images)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert float((got[0] * whole.encode(images[:1])[0]).sum()) < 0.9999  # the crops change what it sees
    assert "crops=2" in repr(cropped)


def test_grid_crops_tile_any_image_and_bad_crops_are_clear_errors():
    from gridclip.modeling.teacher import grid_crops

    image = torch.arange(3 * 7 * 5).view(3, 7, 5)
    parts = grid_crops(image, 3)
    assert len(parts) == 9 and sum(p.shape[-2] * p.shape[-1] for p in parts) == 35
    rows = [torch.cat(parts[i * 3:(i + 1) * 3], dim=-1) for i in range(3)]
    assert torch.equal(torch.cat(rows, dim=-2), image)  # row by row, tiling the image exactly
    with pytest.raises(ValueError, match="smaller than the crop grid"):
        grid_crops(torch.zeros(3, 1, 8), 2)
    for bad in (1, -2):
        with pytest.raises(ValueError, match="TEACHER.CROPS must be 0"):
            CLIPImageTeacher(TINY_TEACHER_CLIP, "", crops=bad)
