"""
Contrastive pretraining of the world's mini-CLIPs on the caption corpus, their zero-shot benchmark
and their weight cache (``tools/pretrain_clip.py`` is the command line).

Everything is open_clip's: ``open_clip.create_model`` builds the model from its registered config
(``GridCLIP-World-RN``: the backbone + text tower CLIP; ``GridCLIP-World-RN-Teacher``: the default
image teacher, the same architecture pretrained longer from another seed and run at the detection
images' 128 px; ``GridCLIP-World-ViT``: the ViT teacher of the paper's main row, opt-in),
``open_clip.get_tokenizer`` tokenizes the captions, ``open_clip.loss.ClipLoss`` is the symmetric
InfoNCE loss with the model's learnable logit scale. AdamW (no weight decay on gains, biases,
embeddings and the logit scale) with linear warm-up and cosine decay; a fixed seed.

The weights are saved as a plain safetensors state dict, which GridCLIP loads through its ordinary
local-file path (``MODEL.CLIP.PRETRAINED <file>``, ``MODEL.GRIDCLIP.TEACHER.PRETRAINED <file>``).
:func:`ensure_world_clip` caches them under ``<cache>/world_clip/`` (``$GRIDCLIP_CACHE`` or
~/.cache/gridclip), keyed by a hash of the corpus arguments, the training arguments and the model
config, and trains only when the file is missing or fails :func:`check_cached_world_clip` (a truncated
or changed file is pretrained again with one warning naming it, never reported as cached).

Zero-shot benchmark ("zero-shot ImageNet" of this world): held-out single-object images
(:func:`.captions.zero_shot_split`) classified among all 192 names by cosine similarity to the
names' text embeddings (prompt ensemble :data:`.captions.ZERO_SHOT_TEMPLATES`); top-1 over 192
names (chance 0.52 %) and, separately, whether the predicted name has the right colour (chance 1/6),
texture (1/4) and shape (1/8).
"""
import hashlib
import logging
import math
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from ..file_io import atomic_write, atomic_write_bytes, atomic_write_json, digest_json, read_json, sha256_file
from .attributes import WORLD_OBJECTS, object_name
from .captions import DEFAULT_CORPUS_ARGS, ZERO_SHOT_TEMPLATES, generate_caption_corpus, zero_shot_split

__all__ = [
    "BACKBONE_CLIP",
    "TEACHER_CLIP",
    "VIT_TEACHER_CLIP",
    "TEACHER_INPUT_SIZE",
    "DEFAULT_TRAIN_ARGS",
    "pretrain_clip",
    "zero_shot_accuracy",
    "world_clip_cache_key",
    "world_clip_path",
    "check_cached_world_clip",
    "ensure_world_clip",
    "ensure_world_clips",
    "world_clips_table",
    "world_clip_config_opts",
    "copy_world_clips",
]

logger = logging.getLogger(__name__)

#: the ResNet CLIP (GridCLIP's backbone incl. attention pool, and its text tower)
BACKBONE_CLIP = "GridCLIP-World-RN"
#: the default image teacher: a ResNet CLIP that knows more than the backbone (the paper's teachers are
#: at least as strong as its RN50; ViT-B/32 names 3.4 points more of ImageNet zero-shot than RN50): the
#: same architecture and length from another seed, the one of the two that names more of the world
#: (zero-shot 89.3 % against the backbone's 88.3 %), run at :data:`TEACHER_INPUT_SIZE` (the training
#: images' size; it was pretrained at 64). A 1000-step teacher (96.6 %) does not fit the first
#: ``make demo``'s 6 minutes (385 s measured); a 900-step one named 88.0 % (docs/WORLD.md).
TEACHER_CLIP = "GridCLIP-World-RN-Teacher"
#: the ViT teacher (the paper's GridCLIP-R50 row): in this world it does not learn shapes in any budget
#: tried (docs/WORLD.md), so it is opt-in
VIT_TEACHER_CLIP = "GridCLIP-World-ViT"
#: MODEL.GRIDCLIP.TEACHER.INPUT_SIZE of the world's teachers: they see the 128-px training images at their
#: native pixel size (their 64-px view would halve every object below the sizes of the caption corpus)
TEACHER_INPUT_SIZE = 128

#: training arguments of :func:`pretrain_clip` per model (the embedded default's pretraining). Shape is
#: what the world's CLIPs learn last: zero-shot top-1 over the 192 names (colour and texture ~100 %) was
#: 49.5 % after 350 steps, 75.0 % after 600, 82.3 % after 700, 88-89 % after 800 and 95.8-96.6 % after
#: 1000 (docs/WORLD.md). Backbone and teacher pretrain side by side, one core each, so the pair costs
#: the wall time of the longer one.
DEFAULT_TRAIN_ARGS = {
    BACKBONE_CLIP: dict(steps=800, batch_size=128, lr=3e-3, weight_decay=0.1, warmup_steps=40, seed=1),
    TEACHER_CLIP: dict(steps=800, batch_size=128, lr=3e-3, weight_decay=0.1, warmup_steps=40, seed=0),
    VIT_TEACHER_CLIP: dict(steps=700, batch_size=128, lr=2e-3, weight_decay=0.1, warmup_steps=40, seed=0),
}
_RECIPE_VERSION = 2  # 2: fused AdamW, channels-last visual tower
_INIT_LOCK = threading.Lock()
_CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
_CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def _to_model_input(images_uint8, size):
    """uint8 [N, H, W, 3] → float [N, 3, size, size] with CLIP's normalisation."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
    return (x - _CLIP_MEAN) / _CLIP_STD


def _image_size(model):
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # open_clip's own rule: no decay on gains/biases (1-d), embeddings and the logit scale
        if p.ndim < 2 or "embedding" in name or "logit_scale" in name or name.endswith("bn"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step, steps, warmup_steps, lr):
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * lr * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, images_uint8, labels, batch_size=256):
    """
    Zero-shot classification of ``images_uint8`` (uint8 [N, H, W, 3]) among the 192 world names.

    Returns:
        dict: ``top1`` (fraction), ``colour``, ``texture``, ``shape`` (fraction of predictions with the
        right attribute), ``num_images``, ``num_classes``.
    """
    from ..modeling.text.encoding import encode_text_embeddings

    was_training = model.training
    model.eval()
    names = [object_name(t) for t in WORLD_OBJECTS]
    text = encode_text_embeddings(model, tokenizer, names, ZERO_SHOT_TEMPLATES)  # [192, D]
    size = _image_size(model)
    features = []
    for start in range(0, len(images_uint8), batch_size):
        x = _to_model_input(images_uint8[start:start + batch_size], size)
        features.append(model.encode_image(x, normalize=True).float())
    predicted = (torch.cat(features) @ text.T).argmax(dim=1).numpy()
    model.train(was_training)
    labels = np.asarray(labels)
    truth = [WORLD_OBJECTS[i] for i in labels]
    guess = [WORLD_OBJECTS[i] for i in predicted]
    result = {"top1": float((predicted == labels).mean()), "num_images": int(len(labels)), "num_classes": len(names)}
    for k, key in enumerate(("colour", "texture", "shape")):
        result[key] = float(np.mean([t[k] == g[k] for t, g in zip(truth, guess)]))
    return result


def pretrain_clip(model_name, corpus, steps=500, batch_size=128, lr=2e-3, weight_decay=0.1, warmup_steps=40,
                  seed=0, progress=True, eval_split=None, progress_position=None):
    """
    Train an open_clip model from scratch on ``corpus`` (:func:`.captions.generate_caption_corpus`).

    Args:
        model_name (str): a registered open_clip model (e.g. :data:`BACKBONE_CLIP`).
        corpus (dict): ``images`` uint8 [N, S, S, 3] and ``captions`` list[str].
        steps, batch_size, lr, weight_decay, warmup_steps: AdamW with warm-up + cosine decay.
        seed (int): model init, batch order.
        progress (bool): tqdm bar with loss and logit scale.
        progress_position (int): the bar's line (models pretrained in parallel each get their own).
        eval_split: optional (images, labels) evaluated with :func:`zero_shot_accuracy` at the end.

    Returns:
        (model in eval mode, dict of training statistics: final loss, logit scale, seconds, zero-shot)
    """
    import open_clip
    from open_clip.loss import ClipLoss
    from tqdm import tqdm

    from ..modeling import clip_configs  # noqa: F401  (registers the world configs)

    with _INIT_LOCK:  # the global torch RNG: models pretrained in parallel threads get their own init
        torch.manual_seed(seed)
        model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    tokenizer = open_clip.get_tokenizer(model_name)
    model.train()
    # channels-last convolutions (oneDNN's fast path on CPU: -15 % per RN step); the saved state dict is
    # made contiguous again
    model.visual.to(memory_format=torch.channels_last)
    loss_fn = ClipLoss()
    # fused AdamW: one kernel per parameter group, not a dozen elementwise passes over the 3.2M-entry
    # token embedding each step
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    size = _image_size(model)
    images, captions = corpus["images"], corpus["captions"]
    tokens = tokenizer(list(captions))  # [N, context_length], once
    generator = np.random.default_rng(seed)
    order, cursor = generator.permutation(len(images)), 0
    start, losses = time.perf_counter(), []
    bar = tqdm(range(steps), desc=f"pretrain {model_name}", unit="step", disable=not progress, mininterval=2.0,
               position=progress_position)
    for step in bar:
        if cursor + batch_size > len(order):
            order, cursor = generator.permutation(len(images)), 0
        batch = np.sort(order[cursor:cursor + batch_size])
        cursor += batch_size
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, warmup_steps, lr)
        pixels = _to_model_input(images[batch], size).contiguous(memory_format=torch.channels_last)
        image_features = model.encode_image(pixels, normalize=True)
        text_features = model.encode_text(tokens[batch], normalize=True)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # as open_clip's training loop: logit scale at most 100
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    model.eval()
    stats = {
        "model_name": model_name,
        "steps": steps,
        "final_loss": float(np.mean(losses[-20:])),
        "logit_scale": float(model.logit_scale.detach().exp()),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    if eval_split is not None:
        stats["zero_shot"] = zero_shot_accuracy(model, tokenizer, *eval_split)
    return model, stats


def world_clip_cache_key(model_name, corpus_args, train_args):
    """A short hash of everything the weights depend on (recipe, model config, corpus and training args)."""
    import open_clip

    identity = {
        "recipe": _RECIPE_VERSION,
        "model": model_name,
        "model_config": open_clip.get_model_config(model_name),
        "corpus": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(corpus_args.items())},
        "train": dict(sorted(train_args.items())),
    }
    return digest_json(identity, length=16)


def world_clip_path(model_name, corpus_args=None, train_args=None, cache_dir=""):
    """Where :func:`ensure_world_clip` keeps the weights: ``<cache>/world_clip/<model>-<key>.safetensors``."""
    from ..modeling.text.cache import default_cache_dir

    corpus_args = dict(DEFAULT_CORPUS_ARGS, **(corpus_args or {}))
    train_args = dict(DEFAULT_TRAIN_ARGS.get(model_name, DEFAULT_TRAIN_ARGS[BACKBONE_CLIP]), **(train_args or {}))
    key = world_clip_cache_key(model_name, corpus_args, train_args)
    return os.path.join(default_cache_dir(cache_dir), "world_clip", f"{model_name}-{key}.safetensors")


def _stats_path(path):
    return path[: -len(".safetensors")] + ".json"


def _save(model, stats, path):
    """Weights (safetensors) and their statistics, each written atomically; the statistics record the
    weights' sha256 and are written first, so weights that exist are complete and can be verified."""
    from safetensors.torch import save

    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = save({k: v.detach().contiguous() for k, v in model.state_dict().items()})
    stats["weights_sha256"] = hashlib.sha256(data).hexdigest()
    atomic_write_json(_stats_path(path), stats, indent=1)
    atomic_write_bytes(path, data)  # weights last: a file that exists is complete


def read_world_clip_stats(path):
    """The training statistics written next to cached weights (``<file>.json``), or None."""
    stats_path = _stats_path(path)
    if not os.path.isfile(stats_path):
        return None
    return read_json(stats_path, "world CLIP statistics")


def check_cached_world_clip(path):
    """
    Validate a cached world CLIP: the safetensors file opens (a truncated one does not), its statistics
    file reads and, where it records one, the weights' sha256 matches.

    Returns:
        (dict or None, str or None): the statistics, and None or what is wrong (for one warning).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            if not list(f.keys()):
                return None, "holds no tensors"
    except (SafetensorError, OSError) as e:
        return None, f"is truncated or corrupt ({e})"
    try:
        stats = read_world_clip_stats(path)
    except (ValueError, OSError) as e:
        return None, f"has an unreadable statistics file ({e})"
    if stats is None:
        return None, f"has no statistics file {_stats_path(path)} (an interrupted pretraining)"
    recorded = stats.get("weights_sha256") if isinstance(stats, dict) else None
    if recorded is not None and recorded != sha256_file(path):
        return None, f"does not match the sha256 recorded in {_stats_path(path)} (changed or damaged)"
    return stats, None


def ensure_world_clips(model_names=(BACKBONE_CLIP, TEACHER_CLIP), corpus_args=None, train_args=None,
                       cache_dir="", progress=True, zero_shot_per_object=2, force=False, parallel=False,
                       on_ready=None):
    """
    The cached weights of each model in ``model_names``, pretrained now where missing.

    Args:
        model_names: open_clip model names.
        corpus_args (dict): overrides of :data:`.captions.DEFAULT_CORPUS_ARGS` (one corpus for all).
        train_args (dict): {model_name: overrides of its :data:`DEFAULT_TRAIN_ARGS`}.
        cache_dir (str): "" = $GRIDCLIP_CACHE or ~/.cache/gridclip.
        progress (bool): progress bars.
        zero_shot_per_object (int): held-out images per world object of the zero-shot benchmark.
        force (bool): retrain even if cached.
        parallel (bool): pretrain the missing models at the same time, one Python thread each, on the
            one rendered corpus (torch ops release the GIL; with one torch thread per model this uses
            one core per model, and the weights do not depend on it: each model has its own seeded
            init and batch order).
        on_ready (callable): ``on_ready(model_name, entry)`` as soon as a model's weights are there
            (cached ones at once, trained ones when saved; from the training thread when ``parallel``).

    Returns:
        dict: {model_name: {"path", "stats" (incl. "zero_shot"), "cached" (bool), "seconds"}}.
    """
    corpus_args = dict(DEFAULT_CORPUS_ARGS, **(corpus_args or {}))
    train_args = train_args or {}
    results, missing = {}, []
    for name in model_names:
        args = dict(DEFAULT_TRAIN_ARGS.get(name, DEFAULT_TRAIN_ARGS[BACKBONE_CLIP]), **train_args.get(name, {}))
        path = world_clip_path(name, corpus_args, args, cache_dir)
        stats, problem = check_cached_world_clip(path) if os.path.isfile(path) and not force else (None, "")
        if problem is None:
            results[name] = {"path": path, "stats": stats, "cached": True, "seconds": 0.0}
            if on_ready is not None:
                on_ready(name, results[name])
        else:
            if problem:  # a cache entry that cannot be trusted is never reported as cached
                logger.warning("Cached world CLIP %s %s: pretraining it again.", path, problem)
            missing.append((name, args, path))
    if not missing:
        return results
    start = time.perf_counter()
    logger.info("Rendering the caption corpus (%d images) ...", corpus_args["num_images"])
    # one renderer per core (nothing else runs yet; the corpus does not depend on the count)
    corpus = generate_caption_corpus(**corpus_args, progress=progress, workers=os.cpu_count() or 1)
    eval_split = zero_shot_split(
        per_object=zero_shot_per_object, image_size=corpus_args["image_size"],
        object_frac=corpus_args["single_object_frac"], seed=corpus_args["seed"],
    )
    corpus_seconds = time.perf_counter() - start

    def train(position, name, args, path):
        model_start = time.perf_counter()
        model, stats = pretrain_clip(name, corpus, **args, progress=progress, eval_split=eval_split,
                                     progress_position=position if parallel else None)
        stats.update(corpus_args=corpus_args, train_args=args)
        try:
            _save(model, stats, path)
        except OSError as e:  # an unwritable cache: keep the weights for this run only, and go on
            fallback = os.path.join(tempfile.mkdtemp(prefix="gridclip-world-clip-"), os.path.basename(path))
            logger.warning("World CLIP cache folder %s cannot be written (%s); continuing uncached: the weights "
                           "are kept in %s for this run only.", os.path.dirname(path), e.strerror or e, fallback)
            _save(model, stats, fallback)
            path = fallback
        zs = stats["zero_shot"]
        logger.info(
            "%s: zero-shot top-1 %.1f%% over %d names (colour %.1f%%, texture %.1f%%, shape %.1f%%) -> %s",
            name, 100 * zs["top1"], zs["num_classes"], 100 * zs["colour"], 100 * zs["texture"], 100 * zs["shape"], path,
        )
        entry = {"path": path, "stats": stats, "cached": False, "seconds": time.perf_counter() - model_start}
        if on_ready is not None:
            on_ready(name, entry)
        return name, entry

    if parallel and len(missing) > 1:
        with ThreadPoolExecutor(max_workers=len(missing), thread_name_prefix="pretrain_clip") as pool:
            trained = [f.result() for f in [pool.submit(train, i, *m) for i, m in enumerate(missing)]]
    else:
        trained = [train(i, *m) for i, m in enumerate(missing)]
    for name, entry in trained:
        entry["seconds"] = round(entry["seconds"] + corpus_seconds / len(missing), 1)  # the corpus, shared
        results[name] = entry
    return {name: results[name] for name in model_names}


def ensure_world_clip(model_name, **kwargs):
    """:func:`ensure_world_clips` for one model; returns its entry."""
    return ensure_world_clips((model_name,), **kwargs)[model_name]


def world_clips_table(results):
    """Markdown table of :func:`ensure_world_clips`'s results: zero-shot accuracies, training time, weights."""
    lines = ["| model | zero-shot top-1 (192 names) | colour | texture | shape | train s | weights |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, entry in results.items():
        zs = (entry["stats"] or {}).get("zero_shot", {})
        cells = [f"{100 * zs[key]:.1f} %" if key in zs else "-" for key in ("top1", "colour", "texture", "shape")]
        seconds = "cached" if entry["cached"] else f"{entry['seconds']:.0f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {seconds} | {entry['path']} |")
    return "\n".join(lines)


def world_clip_config_opts(results):
    """Config options that train GridCLIP with the CLIPs of :func:`ensure_world_clips`'s results."""
    opts = []
    if BACKBONE_CLIP in results:
        opts += ["MODEL.CLIP.MODEL_NAME", BACKBONE_CLIP, "MODEL.CLIP.PRETRAINED", results[BACKBONE_CLIP]["path"]]
    for teacher in (TEACHER_CLIP, VIT_TEACHER_CLIP):
        if teacher in results:  # the first one present: the default teacher, else the ViT
            opts += ["MODEL.GRIDCLIP.TEACHER.MODEL_NAME", teacher,
                     "MODEL.GRIDCLIP.TEACHER.PRETRAINED", results[teacher]["path"],
                     "MODEL.GRIDCLIP.TEACHER.INPUT_SIZE", str(TEACHER_INPUT_SIZE)]
            break
    return opts


def copy_world_clips(results, output_dir):
    """Copy the weights of :func:`ensure_world_clips`'s results into ``output_dir``, with ``pretrain_summary.json``."""
    import shutil

    os.makedirs(output_dir, exist_ok=True)
    for entry in results.values():  # atomic copies: a reader never sees half a weights file
        target = os.path.join(output_dir, os.path.basename(entry["path"]))
        atomic_write(target, lambda tmp, src=entry["path"]: shutil.copyfile(src, tmp))
    summary = {n: {"path": e["path"], "stats": e["stats"]} for n, e in results.items()}
    atomic_write_json(os.path.join(output_dir, "pretrain_summary.json"), summary, indent=1)
