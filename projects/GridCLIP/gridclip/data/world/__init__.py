"""
The generated vision-language world of the embedded default (DESIGN §9).

- :mod:`.attributes`: the 6 colours x 4 textures x 8 shapes = 192 object names;
- :mod:`.render`: objects on cluttered backgrounds;
- :mod:`.detection`: long-tailed LVIS v1-format detection splits (rare = novel categories);
- :mod:`.captions`: the caption corpus (all 192 objects) and held-out zero-shot images;
- :mod:`.pretraining`: contrastive pretraining of mini-CLIPs on the corpus (open_clip's ``ClipLoss``),
  zero-shot evaluation, and the weight cache (``tools/pretrain_clip.py``).
"""
from .attributes import COLOURS, SHAPES, TEXTURE_PHRASES, TEXTURES, WORLD_OBJECTS, object_name, parse_object_name
from .captions import generate_caption_corpus, make_caption, zero_shot_split
from .detection import (
    DEFAULT_GENERATOR_ARGS,
    MIN_TRAIN_IMAGES,
    ensure_synthetic_lvis,
    frequency_from_image_count,
    generate_synthetic_lvis,
    rare_attribute_coverage,
    synthetic_categories,
    synthetic_lvis_paths,
)
