"""
The generated world's vocabulary: every object is a (colour, texture, shape) combination.

6 colours x 4 textures x 8 shapes = 192 names such as "red striped circle". The detection splits
(:mod:`.detection`) use a subset of them as their categories; the caption corpus (:mod:`.captions`)
shows all of them, so CLIPs pretrained on it know the names the detector never sees annotated.
"""
import itertools

__all__ = [
    "SHAPES",
    "COLOURS",
    "TEXTURES",
    "TEXTURE_PHRASES",
    "WORLD_OBJECTS",
    "object_name",
    "object_synonym",
    "parse_object_name",
]

SHAPES = ["circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon"]
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "purple": (145, 60, 185),
    "orange": (245, 140, 30),
}
TEXTURES = ["solid", "striped", "checkered", "dotted"]
#: how a caption may say a texture after the shape ("a red circle with stripes")
TEXTURE_PHRASES = {
    "solid": "in solid colour",
    "striped": "with stripes",
    "checkered": "with a checkered pattern",
    "dotted": "with dots",
}

#: all 192 (colour, texture, shape) triples, in a fixed order (colour-major)
WORLD_OBJECTS = [(c, t, s) for c, t, s in itertools.product(COLOURS, TEXTURES, SHAPES)]


def object_name(triple):
    """The category name of a (colour, texture, shape) triple: ``"red striped circle"``."""
    colour, texture, shape = triple
    return f"{colour} {texture} {shape}"


def object_synonym(triple):
    """The other phrasing of the same object: ``"red circle with stripes"``."""
    colour, texture, shape = triple
    return f"{colour} {shape} {TEXTURE_PHRASES[texture]}"


def parse_object_name(name):
    """Inverse of :func:`object_name`; raises ValueError for a name outside the world."""
    words = name.split()
    if len(words) != 3 or words[0] not in COLOURS or words[1] not in TEXTURES or words[2] not in SHAPES:
        raise ValueError(f"{name!r} is not a '<colour> <texture> <shape>' name of the generated world")
    return tuple(words)
