"""
The generated world's renderer: (colour, texture, shape) objects drawn on cluttered backgrounds.

Backgrounds are smooth low-saturation noise with random blurred blobs and lines in muted colours;
objects are filled shapes whose texture (solid, stripes, checks, dots) alternates the object's colour
with a light grey. Boxes are tight around the drawn pixels. Everything is drawn from one
``np.random.Generator``: the same generator state gives the same pixels. Both the LVIS-format
detection splits (:mod:`.detection`) and the caption corpus (:mod:`.captions`) draw with it.
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .attributes import COLOURS, SHAPES, TEXTURES

__all__ = ["render_scene", "cluttered_background", "place_boxes", "shape_mask", "shape_polygons", "texture_pattern"]


def shape_polygons(shape, x0, y0, w, h):
    """Outline polygon(s) of a shape inscribed in the box (x0, y0, w, h), as lists of (x, y)."""
    cx, cy, rx, ry = x0 + w / 2.0, y0 + h / 2.0, w / 2.0, h / 2.0

    def regular(n, start_deg, radius_scale=1.0):
        angles = np.deg2rad(start_deg + 360.0 * np.arange(n) / n)
        return [(cx + rx * radius_scale * np.cos(a), cy + ry * radius_scale * np.sin(a)) for a in angles]

    if shape in ("circle", "ring"):
        return [regular(24, 0.0)]
    if shape == "square":
        return [[(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]]
    if shape == "triangle":
        return [[(cx, y0), (x0 + w, y0 + h), (x0, y0 + h)]]
    if shape == "diamond":
        return [[(cx, y0), (x0 + w, cy), (cx, y0 + h), (x0, cy)]]
    if shape == "hexagon":
        return [regular(6, 0.0)]
    if shape == "star":
        angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return [[(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii)]]
    if shape == "cross":
        ax, ay = 0.18 * w, 0.18 * h
        return [[
            (cx - ax, y0), (cx + ax, y0), (cx + ax, cy - ay), (x0 + w, cy - ay), (x0 + w, cy + ay),
            (cx + ax, cy + ay), (cx + ax, y0 + h), (cx - ax, y0 + h), (cx - ax, cy + ay), (x0, cy + ay),
            (x0, cy - ay), (cx - ax, cy - ay),
        ]]
    raise ValueError(f"Unknown shape {shape!r}; known: {SHAPES}")


def shape_mask(shape, x0, y0, w, h, height, width):
    """Boolean [height, width] mask of the shape drawn in the box (x0, y0, w, h)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if shape in ("circle", "ring"):
        draw.ellipse([x0, y0, x0 + w - 1, y0 + h - 1], fill=255)
        if shape == "ring":
            iw, ih = 0.5 * w, 0.5 * h
            ix, iy = x0 + (w - iw) / 2.0, y0 + (h - ih) / 2.0
            draw.ellipse([ix, iy, ix + iw - 1, iy + ih - 1], fill=0)
    else:
        for polygon in shape_polygons(shape, x0, y0, w - 1, h - 1):
            draw.polygon(polygon, fill=255)
    return np.asarray(canvas) > 0


def texture_pattern(texture, height, width, rng):
    """Boolean [height, width]: True where the object shows its colour, False its secondary tone."""
    yy, xx = np.mgrid[0:height, 0:width]
    if texture == "solid":
        return np.ones((height, width), dtype=bool)
    if texture == "striped":
        angle = np.deg2rad(rng.choice([0.0, 45.0, 90.0, 135.0]))
        period = int(rng.integers(5, 8))
        phase = rng.uniform(0, period)
        t = xx * np.cos(angle) + yy * np.sin(angle) + phase
        return np.mod(t, period) < period / 2.0
    if texture == "checkered":
        cell = int(rng.integers(3, 5))
        ox, oy = rng.integers(0, cell, size=2)
        return ((xx + ox) // cell + (yy + oy) // cell) % 2 == 0
    if texture == "dotted":
        period = int(rng.integers(5, 7))
        ox, oy = rng.uniform(0, period, size=2)
        dx = np.mod(xx + ox, period) - period / 2.0
        dy = np.mod(yy + oy, period) - period / 2.0
        return dx * dx + dy * dy > 1.6 ** 2
    raise ValueError(f"Unknown texture {texture!r}; known: {TEXTURES}")


def cluttered_background(height, width, rng):
    """An RGB uint8 background: smooth low-saturation noise, random lines and blurred blobs."""
    base = rng.uniform(70, 190)
    tint = rng.uniform(-20, 20, size=3)
    coarse = rng.normal(0.0, 28.0, size=(max(2, height // 16), max(2, width // 16), 3))
    coarse_img = Image.fromarray(np.clip(coarse + 128.0, 0, 255).astype(np.uint8))
    smooth = np.asarray(coarse_img.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32) - 128.0
    grey_noise = smooth.mean(axis=2, keepdims=True) * 0.7 + smooth * 0.3  # mostly desaturated
    background = np.clip(base + tint + grey_noise, 0, 255).astype(np.uint8)

    canvas = Image.fromarray(background)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 6))):  # blobs
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.2) * min(height, width)
        grey = rng.uniform(40, 220)
        colour = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.uniform(-25, 25, size=3))
        draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r], fill=colour)
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=1.5))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(3, 9))):  # lines
        points = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(2)]
        grey = rng.uniform(20, 235)
        colour = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.uniform(-30, 30, size=3))
        draw.line(points, fill=colour, width=int(rng.integers(1, 3)))
    return np.asarray(canvas).copy()


def place_boxes(num_objects, height, width, rng, min_frac=0.14, max_frac=0.34):
    """Non-overlapping (x0, y0, w, h) integer boxes, one per object (shrinking when crowded)."""
    short = min(height, width)
    min_side = max(8, int(round(min_frac * short)))
    boxes = []
    for _ in range(num_objects):
        side = rng.uniform(min_frac, max_frac) * short
        aspect = rng.uniform(0.8, 1.25)
        placed = None
        while placed is None:
            w = int(np.clip(round(side * np.sqrt(aspect)), min_side, width - 2))
            h = int(np.clip(round(side / np.sqrt(aspect)), min_side, height - 2))
            for _attempt in range(60):
                x0 = int(rng.integers(1, width - w))
                y0 = int(rng.integers(1, height - h))
                if all(
                    x0 + w + 1 <= bx or bx + bw + 1 <= x0 or y0 + h + 1 <= by or by + bh + 1 <= y0
                    for bx, by, bw, bh in boxes
                ):
                    placed = (x0, y0, w, h)
                    break
            if placed is None:
                if side <= min_side:
                    raise RuntimeError(
                        f"Cannot place {num_objects} non-overlapping objects in a {width}x{height} image; "
                        "use larger images (--image-size) or more images so each holds fewer objects."
                    )
                side = max(min_side, side * 0.85)
        boxes.append(placed)
    return boxes


def render_scene(objects, height, width, rng, min_frac=0.14, max_frac=0.34):
    """
    Draw ``objects`` (list of (colour, texture, shape) triples) on a cluttered background.

    Args:
        objects (list[tuple[str, str, str]]): what to draw, in drawing order.
        height, width (int): image size.
        rng (np.random.Generator): the only source of randomness.
        min_frac, max_frac (float): object side range as a fraction of the image's short side.

    Returns:
        image (ndarray[H, W, 3] uint8), and per object a dict with the tight ``bbox`` (XYWH, in
        Detectron2's continuous pixel coordinates), ``segmentation`` (polygons) and ``area``.
    """
    image = cluttered_background(height, width, rng).astype(np.float32)
    boxes = place_boxes(len(objects), height, width, rng, min_frac=min_frac, max_frac=max_frac)
    drawn = []
    for (colour_name, texture, shape), (x0, y0, w, h) in zip(objects, boxes):
        mask = shape_mask(shape, x0, y0, w, h, height, width)
        colour = np.clip(np.array(COLOURS[colour_name], np.float32) + rng.uniform(-12, 12, size=3), 0, 255)
        secondary = np.array([238.0, 238.0, 238.0], np.float32) if texture != "solid" else colour
        pattern = texture_pattern(texture, height, width, rng)
        fill = np.where(pattern[..., None], colour, secondary)
        image[mask] = fill[mask]
        ys, xs = np.nonzero(mask)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
        polygons = [
            [round(float(v), 2) for point in polygon for v in point]
            for polygon in shape_polygons(shape, x0, y0, w - 1, h - 1)
        ]
        # keep the outline inside the tight box (the rasteriser rounds inwards at the edges)
        bx0, by0, bw, bh = bbox
        polygons = [
            [round(min(max(v, (bx0, by0)[i % 2]), (bx0 + bw, by0 + bh)[i % 2]), 2) for i, v in enumerate(p)]
            for p in polygons
        ]
        drawn.append({"bbox": bbox, "segmentation": polygons, "area": float(mask.sum())})
    image += rng.normal(0.0, 5.0, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), drawn
