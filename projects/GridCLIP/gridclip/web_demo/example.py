"""
The web demo's example: a scene of the generated world drawn by its own renderer (no file, no
dataset needed), searched for typed names, one of them a category ``make demo`` never annotates.
"""
from dataclasses import dataclass, field
from typing import List

import numpy as np

__all__ = ["DemoExample", "world_example"]

#: drawn in the scene (the first is one of the world's 12 never-annotated, novel categories)
WORLD_EXAMPLE_OBJECTS = ["orange solid star", "red solid circle", "blue checkered triangle"]
#: typed in the names box: the drawn objects and one that is not there
WORLD_EXAMPLE_NAMES = WORLD_EXAMPLE_OBJECTS + ["green striped square"]
WORLD_EXAMPLE_SIZE = (128, 160)  # height, width: the world's image height
WORLD_EXAMPLE_SEED = 0


@dataclass
class DemoExample:
    """Inputs the page opens with: an image (HWC uint8 RGB), names, a preset, a threshold."""

    image_rgb: np.ndarray
    names: str
    preset: str = "none"
    threshold: float = 0.5
    objects: List[str] = field(default_factory=list)  # what the image shows (for tests and docs)


def world_example() -> DemoExample:
    """The world example: the same pixels every call (one seeded generator)."""
    from ..world.attributes import parse_object_name
    from ..world.render import render_scene

    height, width = WORLD_EXAMPLE_SIZE
    objects = [parse_object_name(name) for name in WORLD_EXAMPLE_OBJECTS]
    image, _ = render_scene(objects, height, width, np.random.default_rng(WORLD_EXAMPLE_SEED))
    return DemoExample(image, ", ".join(WORLD_EXAMPLE_NAMES), objects=list(WORLD_EXAMPLE_OBJECTS))
