"""
What a trained detector knows about the world's novel categories, apart from its boxes and scores: the
measurements behind the Table 5 verdict in docs/WORLD.md (what the image-level path does to novel objects).

- **grid-embedding accuracy at ground-truth boxes**: for every val object, the detector's own grid
  embedding G at the location whose regressed box overlaps the object best
  (:func:`gridclip.exemplars.exemplar_grid_embedding`, without the contrast step) is scored against the
  text embeddings of all the split's names; top-1 right, and right shape, per base / novel / novel-only
  shape group;
- **the attention pool's knowledge**: the image embedding z̄ of the trained backbone (paper Eq. 1, before
  the image head; the attention pool is shared with the grid tokens) on rendered single-object images of
  every category, at the detection images' size and object sizes, scored against the same text
  embeddings: how much of its CLIP's zero-shot knowledge the backbone kept. With no weights (``""``) it
  is the pretrained CLIP's own attention pool, the starting point.

    python -m gridclip.world.novel_knowledge --config output/world_evidence/both/seed0/config.yaml \\
        --weights output/world_evidence/both/seed0/model_final.pth
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["grid_embedding_accuracy", "attention_pool_accuracy", "novel_knowledge"]

def _groups_of(category, frequencies, novel_only_shapes):
    """The groups a category (``name``) counts in: base or novel, and novel-only shape."""
    groups = ["novel" if frequencies[category["name"]] == "r" else "base"]
    if category["name"].split()[-1] in novel_only_shapes:
        groups.append("novel_only_shape")
    return groups


def _tally(results, groups, right, right_shape):
    for group in groups:
        entry = results.setdefault(group, {"objects": 0, "top1": 0, "shape": 0})
        entry["objects"] += 1
        entry["top1"] += int(right)
        entry["shape"] += int(right_shape)


def _rates(results):
    return {g: {"objects": r["objects"], "top1": r["top1"] / r["objects"], "shape": r["shape"] / r["objects"]}
            for g, r in results.items() if r["objects"]}


@torch.no_grad()
def grid_embedding_accuracy(predictor, gt, image_root, novel_only_shapes=("cross",)):
    """
    Args:
        predictor: a :class:`gridclip.predictor.GridCLIPPredictor` whose vocabulary is the split's names,
            in category-id order.
        gt (dict): the LVIS-format val json; ``image_root``: the folder of its ``file_name`` s.

    Returns:
        dict: {group: {"objects", "top1", "shape"}} (fractions) for base, novel and novel-only-shape objects.
    """
    from ..exemplars import Exemplar, exemplar_grid_embedding

    categories = sorted(gt["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in categories]
    frequencies = {c["name"]: c["frequency"] for c in categories}
    text = F.normalize(predictor.model.classifier.test_embeddings.float().cpu(), dim=-1)
    images = {im["id"]: im for im in gt["images"]}
    results = {}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        image = os.path.join(image_root, images[a["image_id"]]["file_name"])
        embedding = exemplar_grid_embedding(predictor, Exemplar(image, (x, y, x + w, y + h)), contrast=False)
        guess = names[int((text @ embedding).argmax())]
        truth = categories[a["category_id"] - 1]
        _tally(results, _groups_of(truth, frequencies, novel_only_shapes), guess == truth["name"],
               guess.split()[-1] == truth["name"].split()[-1])
    return _rates(results)


@torch.no_grad()
def attention_pool_accuracy(predictor, gt, per_category=4, image_size=128, seed=0, novel_only_shapes=("cross",)):
    """
    z̄ (the backbone's image embedding) of single-object images of each category (drawn as the detection
    split draws objects), scored against the predictor's text embeddings of the split's names.

    Returns:
        dict: {group: {"objects", "top1", "shape"}} as :func:`grid_embedding_accuracy`.
    """
    from ..modeling.clip_backbone import IMAGE_EMBEDDING_KEY
    from .render import render_scene

    model = predictor.model
    categories = sorted(gt["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in categories]
    frequencies = {c["name"]: c["frequency"] for c in categories}
    text = F.normalize(model.classifier.test_embeddings.float().cpu(), dim=-1)
    rng = np.random.default_rng([int(seed), 0x9001])
    results = {}
    for category in categories:
        triple = tuple(category["name"].split())
        batch = []
        for _ in range(per_category):
            pixels, _ = render_scene([triple], image_size, image_size, rng)
            batch.append({"image": torch.from_numpy(np.ascontiguousarray(pixels[:, :, ::-1] if predictor.input_format == "BGR"
                                                                        else pixels)).permute(2, 0, 1)})
        images = model.preprocess_image(batch)
        z_bar = F.normalize(model.backbone(images.tensor)[IMAGE_EMBEDDING_KEY].float().cpu(), dim=-1)
        for guess_index in (z_bar @ text.T).argmax(dim=1).tolist():
            guess = names[guess_index]
            _tally(results, _groups_of(category, frequencies, novel_only_shapes), guess == category["name"],
                   guess.split()[-1] == triple[-1])
    return _rates(results)


def novel_knowledge(config_file, weights, val_json, image_root, opts=(), novel_only_shapes=("cross",)):
    """Both measurements of one detector (``weights`` "" = the untrained detector: its CLIP's own pool)."""
    from ..file_io import read_json
    from ..predictor import GridCLIPPredictor

    gt = read_json(val_json, "val annotations")
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    predictor = GridCLIPPredictor(config_file, weights=weights or None, vocabulary=names,
                                  opts=list(opts) + ["MODEL.DEVICE", "cpu"], confidence_threshold=0.05)
    return {
        "grid_embedding_at_gt_boxes": (grid_embedding_accuracy(predictor, gt, image_root, novel_only_shapes)
                                       if weights else None),
        "attention_pool": attention_pool_accuracy(predictor, gt, novel_only_shapes=novel_only_shapes),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a run's config.yaml")
    parser.add_argument("--weights", default="", help='its model_final.pth ("": the untrained detector)')
    parser.add_argument("--val-json", default=None, help="default: $DETECTRON2_DATASETS/world/annotations/lvis_v1_val.json")
    parser.add_argument("--image-root", default=None, help="default: $DETECTRON2_DATASETS/world/images/val")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args(argv)
    from .datasets import world_dataset_root
    from .detection import world_dataset_paths

    paths = world_dataset_paths(world_dataset_root())
    torch.set_num_threads(1)
    result = novel_knowledge(args.config, args.weights, args.val_json or paths["val_json"],
                             args.image_root or paths["val_images"], opts=args.opts)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
