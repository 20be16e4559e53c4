"""
The generated vision-language world: the embedded default's data and "CLIP pretraining".

No pretrained CLIP can be downloaded on the development machines and random CLIPs carry no
knowledge, so the world pretrains tiny CLIPs itself on a caption corpus that names all 192 objects,
and GridCLIP is trained and evaluated on long-tailed LVIS-format detection data of the same objects.

- :mod:`.attributes`: the 6 colours x 4 textures x 8 shapes = 192 object names;
- :mod:`.render`: objects on cluttered backgrounds;
- :mod:`.detection`: long-tailed LVIS v1-format detection splits (rare = novel categories, a novel-only
  shape, unannotated novel objects in a quarter of the training images);
- :mod:`.evaluation_split`: the large held-out evaluation split the ablations are tested on;
- :mod:`.datasets`: their registration in Detectron2's catalogs (``world_v1_train_base``, ``world_v1_val``, ...);
- :mod:`.captions`: the caption corpus (all 192 objects) and held-out zero-shot images;
- :mod:`.pretraining`: contrastive pretraining of mini-CLIPs on the corpus (open_clip's ``ClipLoss``),
  zero-shot evaluation, and the weight cache (``tools/pretrain_clip.py``);
- :mod:`.embedded_default`: the embedded default (``make demo``, ``tools/run_embedded_default.py``);
- :mod:`.ablations`: the paper's ablation tables in the world (``tools/run_ablations.py``);
- :mod:`.novel_knowledge`: what a trained detector knows of the novel categories (grid embeddings at
  ground-truth boxes, the attention pool's z̄).

The embedded default and the ablations train detectors (they import :mod:`gridclip.engine`); importing this package does not
load them.
"""
from .attributes import COLOURS, SHAPES, TEXTURE_PHRASES, TEXTURES, WORLD_OBJECTS, object_name, parse_object_name
from .captions import generate_caption_corpus, make_caption, zero_shot_split
from .datasets import WORLD_DATASET_NAME, register_config_world_datasets, register_world_datasets, world_dataset_root
from .detection import (
    DEFAULT_GENERATOR_ARGS,
    MIN_TRAIN_IMAGES,
    ensure_world_dataset,
    frequency_from_image_count,
    generate_world_dataset,
    novel_only_shape_categories,
    rare_attribute_coverage,
    world_categories,
    world_dataset_paths,
)
