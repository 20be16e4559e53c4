"""
gridclip.data.mapper.read_image decodes every mode and bit depth faithfully (Detectron2's read_image
turns a 16-bit PNG almost all white and a [0, 1] float TIFF black), applies EXIF orientation, and refuses
what has no faithful 8-bit form or is truncated (never grey garbage from a partial decode).
"""
import numpy as np
import pytest
from PIL import Image

from gridclip.data.mapper import GridCLIPDatasetMapper, read_image


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return str(path)


def test_16_bit_grey_is_scaled_not_saturated(tmp_path):
    levels = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    rgb = read_image(_save(tmp_path, "depth.png", Image.fromarray(levels)))
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    np.testing.assert_array_equal(rgb[..., 0], np.round(levels / 257.0).astype(np.uint8))
    assert abs(rgb.mean() - 127.5) < 1


def test_float_image_in_unit_range_is_scaled(tmp_path):
    values = np.linspace(0, 1, 16 * 16).reshape(16, 16).astype(np.float32)
    rgb = read_image(_save(tmp_path, "f.tif", Image.fromarray(values, mode="F")))
    assert rgb.min() == 0 and rgb.max() == 255


def test_alpha_palette_cmyk_bilevel_modes(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:4, :, 3] = 255  # top half opaque red, bottom half transparent
    out = read_image(_save(tmp_path, "rgba.png", Image.fromarray(rgba)))
    assert out[0, 0].tolist() == [255, 0, 0] and out[7, 7].tolist() == [255, 255, 255]  # composited over white
    assert read_image(_save(tmp_path, "la.png", Image.new("LA", (4, 4), (100, 255))))[0, 0].tolist() == [100] * 3
    assert read_image(_save(tmp_path, "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 0, 0))))[0, 0].tolist() == [255, 0, 255]
    assert read_image(_save(tmp_path, "b.png", Image.new("1", (4, 4), 1)))[0, 0].tolist() == [255] * 3
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30] + [0] * 765)
    assert read_image(_save(tmp_path, "p.png", palette))[0, 0].tolist() == [10, 20, 30]
    assert read_image(_save(tmp_path, "p2.png", palette), format="BGR")[0, 0].tolist() == [30, 20, 10]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    assert read_image(_save(tmp_path, "rot.jpg", image, exif=exif)).shape == (20, 10, 3)


def test_values_without_an_8_bit_form_and_truncated_files_are_refused(tmp_path):
    big = _save(tmp_path, "i32.tif", Image.fromarray(np.full((4, 4), 70000, np.int32), mode="I"))
    with pytest.raises(ValueError, match=r"i32.tif.*mode I.*\[70000, 70000\]"):
        read_image(big)
    wide = _save(tmp_path, "wide.tif", Image.fromarray(np.full((4, 4), 300.0, np.float32), mode="F"))
    with pytest.raises(ValueError, match=r"float values in \[300, 300\]"):
        read_image(wide)
    good = _save(tmp_path, "good.jpg", Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(good, "rb").read()[:300])
    with pytest.raises(ValueError, match="Cannot decode image .*truncated.jpg"):
        read_image(str(truncated))
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        read_image(str(tmp_path / "folder.jpg"))


def test_mapper_uses_the_faithful_decoder(tmp_path):
    levels = np.full((24, 32), 65535 // 2, np.uint16)
    path = _save(tmp_path, "half.png", Image.fromarray(levels))
    mapper = GridCLIPDatasetMapper(False, augmentations=[], image_format="RGB")
    out = mapper({"file_name": path, "height": 24, "width": 32, "image_id": 0})
    assert out["image"].shape == (3, 24, 32) and int(out["image"].float().mean().round()) == 127
