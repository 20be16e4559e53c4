"""
The text-embedding cache: one safetensors file per (names, CLIP model, its weights, templates)
under ``<cache dir>/text_embeddings/``, and :func:`load_text_embeddings`, which reads a vocabulary's
embeddings from it or builds and caches them.

Encoding the LVIS vocabulary with the RN50 text tower takes about two hours on a CPU (a few
minutes on a GPU), so ``tools/build_text_embeddings.py`` fills the cache ahead of training. Every
file read is validated (:func:`~gridclip.modeling.text.files.check_text_embeddings`): the number of
rows must equal the vocabulary size, the width must equal the CLIP model's embedding dim, values
must be finite, and the file's recorded model and names must match. A cache file that fails
these checks is rebuilt (one warning naming it); a cache folder that cannot be written means the
embeddings are computed, one warning per folder is logged, and the run continues uncached.

:func:`text_space_identity` / :func:`describe_text_space` name the embedding space a text-encoder
setting builds (model, its weights, templates): checkpoints record it (:mod:`gridclip.checkpoint`).
"""
import json
import logging
import os
import re

import open_clip
import torch

from ...file_io import digest_json
from ...vocabulary.names import clean_category_name
from ..clip_loading import create_clip_model, model_config_identity, pretrained_identity
from .encoding import clip_text_embed_dim, encode_text_embeddings, resolve_device
from .files import check_text_embeddings, load_text_embeddings_file, save_text_embeddings
from .prompts import check_prompt_context, resolve_templates

__all__ = [
    "text_encoder_settings",
    "text_space_identity",
    "describe_text_space",
    "default_cache_dir",
    "text_embeddings_cache_path",
    "load_text_embeddings",
    "vocabulary_text_embeddings",
]

logger = logging.getLogger(__name__)

# Bump when the embedding recipe changes, so old cache files are not reused.
_RECIPE_VERSION = "1"
#: load_text_embeddings shows a progress bar by default from this many prompts (K names x T templates)
_PROGRESS_MIN_PROMPTS = 512
#: cache folders already warned about (unwritable): one warning per folder and process
_WARNED_UNWRITABLE = set()


def text_encoder_settings(cfg):
    """
    ``load_text_embeddings`` keyword arguments (besides the names) of a config: the CLIP whose text
    tower embeds the class names (MODEL.GRIDCLIP.TEXT_ENCODER.MODEL_NAME, "" = the backbone CLIP with
    MODEL.CLIP.PRETRAINED), the templates, the "This is " option and the cache folders.
    """
    gc = cfg.MODEL.GRIDCLIP
    if gc.TEXT_ENCODER.MODEL_NAME:
        model_name, pretrained = gc.TEXT_ENCODER.MODEL_NAME, gc.TEXT_ENCODER.PRETRAINED
    else:
        model_name, pretrained = cfg.MODEL.CLIP.MODEL_NAME, cfg.MODEL.CLIP.PRETRAINED
    settings = {
        "clip_model_name": model_name,
        "pretrained": pretrained,
        "templates": gc.PROMPT_TEMPLATES,
        "cache_dir": gc.EMBEDDINGS_CACHE_DIR,
        "clip_cache_dir": cfg.MODEL.CLIP.CACHE_DIR,
    }
    if gc.PROMPT_THIS_IS:
        settings["this_is"] = True
    return settings


def default_cache_dir(cache_dir=""):
    """The text-embedding cache folder: ``cache_dir``, else ``$GRIDCLIP_CACHE``, else ~/.cache/gridclip."""
    return os.path.expanduser(cache_dir or os.environ.get("GRIDCLIP_CACHE") or "~/.cache/gridclip")


def _cache_identity(class_names, clip_model_name, pretrained, templates, this_is=False):
    identity = {
        "recipe": _RECIPE_VERSION,
        "model_name": clip_model_name,
        "model_config": model_config_identity(clip_model_name),
        "pretrained": pretrained_identity(pretrained),
        "templates": list(templates),
        "class_names": list(class_names),
    }
    if this_is:  # only when on, so caches built without the option keep their names
        identity["this_is"] = True
    return identity


def text_embeddings_cache_path(class_names, clip_model_name, pretrained, templates="vild", cache_dir="",
                               this_is=False):
    """
    The cache file of a (names, CLIP model, weights, templates) combination: ``<cache dir>/
    text_embeddings/<model>_<K>cls_<T>tpl_<sha256 prefix>.safetensors``.
    """
    templates = resolve_templates(templates)
    identity = _cache_identity(class_names, clip_model_name, pretrained, templates, this_is)
    digest = digest_json(identity, length=20)
    safe_model = re.sub(r"[^A-Za-z0-9._-]+", "_", clip_model_name)
    filename = f"{safe_model}_{len(class_names)}cls_{len(templates)}tpl_{digest}.safetensors"
    return os.path.join(default_cache_dir(cache_dir), "text_embeddings", filename)


def text_space_identity(text_encoder):
    """
    The identity of the class-embedding space a text-encoder setting builds: the CLIP model (name and
    registered config), its weights (:func:`~gridclip.modeling.clip_loading.pretrained_identity`: a tag,
    "random-init", or a file's path, size and mtime), the templates (count and digest) and the
    "This is " option. Two equal identities build the same embeddings for every name.

    Args:
        text_encoder (dict): :func:`text_encoder_settings` of a config (``GridCLIP.text_encoder``).

    Returns:
        dict of JSON values.
    """
    templates = resolve_templates(text_encoder.get("templates", "vild"))
    return {
        "recipe": _RECIPE_VERSION,
        "model_name": text_encoder["clip_model_name"],
        "model_config": digest_json(model_config_identity(text_encoder["clip_model_name"]), length=16),
        "weights": pretrained_identity(text_encoder.get("pretrained", "")),
        "num_templates": len(templates),
        "templates": digest_json(list(templates), length=16),
        "this_is": bool(text_encoder.get("this_is", False)),
    }


def describe_text_space(identity):
    """One phrase naming a :func:`text_space_identity`: model, weights, templates."""
    if not identity:
        return "an unrecorded text encoder"
    weights = str(identity.get("weights", "?"))
    if weights.startswith("file:"):
        weights = "weights " + weights[len("file:"):].rsplit(":", 2)[0]
    elif weights == "tag:random-init":
        weights = "random-init weights"
    else:
        weights = "weights " + weights[len("tag:"):] if weights.startswith("tag:") else weights
    templates = f"{identity.get('num_templates', '?')} template(s) {identity.get('templates', '?')}"
    if identity.get("this_is"):
        templates += " with 'This is '"
    return f"the {identity.get('model_name', '?')} text tower ({weights}; {templates})"


def _check_class_names(class_names):
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
        raise TypeError("class_names must be a list of category-name strings.")
    if len(class_names) == 0:
        raise ValueError("Cannot build text embeddings for an empty vocabulary.")
    empty = [i for i, n in enumerate(class_names) if not clean_category_name(n)]
    if empty:
        raise ValueError(f"Category names at positions {empty} are empty after cleaning.")



def load_text_embeddings(class_names, clip_model_name, pretrained, templates="vild", cache_dir="", device=None,
                         progress=None, clip_cache_dir="", use_cache=True, this_is=False):
    """
    Text embeddings of a vocabulary, from the cache or built (and cached) with the text tower of
    ``create_clip_model(clip_model_name, pretrained)``.

    Args:
        class_names (list[str]): K category names (raw; cleaned before prompting).
        clip_model_name (str): open_clip model name (the backbone's CLIP).
        pretrained (str): "", an open_clip tag ("openai") or a local weights file.
        templates: see :func:`resolve_templates` ("vild" = ViLD's 63 templates).
        cache_dir (str): cache folder ("" = $GRIDCLIP_CACHE or ~/.cache/gridclip).
        device: where to run the text tower when building (None = CUDA if available, else CPU).
        progress (bool or None): progress bar while building (None = when there are at least
            ``_PROGRESS_MIN_PROMPTS`` prompts).
        clip_cache_dir (str): open_clip's download cache for pretrained tags ("" = default).
        use_cache (bool): False = always build and never write the cache.
        this_is (bool): ViLD's "This is " prefix on prompts starting with "a"/"the" (part of the cache key).

    Returns:
        Tensor [K, D] float32 on CPU, rows L2-normalised (D = the CLIP embedding dim).
    """
    _check_class_names(class_names)
    templates = resolve_templates(templates)
    dim = clip_text_embed_dim(clip_model_name)
    path = text_embeddings_cache_path(class_names, clip_model_name, pretrained, templates, cache_dir, this_is)
    if use_cache and os.path.isfile(path):
        logger.info(f"Loading cached text embeddings for {len(class_names)} classes from {path}")
        try:
            return load_text_embeddings_file(path, class_names, clip_model_name, dim)
        except (ValueError, OSError) as e:  # truncated, corrupt, unreadable: never used, rebuilt
            logger.warning(f"Text-embedding cache file {path} cannot be used ({e}); rebuilding it.")

    device = resolve_device(device)
    logger.info(
        f"Building text embeddings: {len(class_names)} classes x {len(templates)} templates with "
        f"{clip_model_name} ({pretrained_identity(pretrained)}) on {device}"
    )
    tokenizer = open_clip.get_tokenizer(clip_model_name)
    check_prompt_context(class_names, templates, tokenizer)  # before the (slow) model is built
    if progress is None:  # long builds show progress
        progress = len(class_names) * len(templates) >= _PROGRESS_MIN_PROMPTS
    # Building the text tower draws its (overwritten) random init from the global RNG; fork it, so that a
    # training leaves the same RNG state, and gives the same numbers, whether the embeddings were cached.
    with torch.random.fork_rng(devices=[]):
        clip_model = create_clip_model(clip_model_name, pretrained, device=device, cache_dir=clip_cache_dir)
        embeddings = encode_text_embeddings(clip_model, tokenizer, class_names, templates, progress=progress,
                                            this_is=this_is)
    del clip_model
    check_text_embeddings(embeddings, len(class_names), dim, f"{clip_model_name} text tower")
    if use_cache:
        identity = _cache_identity(class_names, clip_model_name, pretrained, templates, this_is)
        try:
            save_text_embeddings(
                path, embeddings, class_names, clip_model_name,
                extra_metadata={
                    "pretrained": identity["pretrained"],
                    "templates": json.dumps(identity["templates"]),
                    "recipe": _RECIPE_VERSION,
                },
            )
        except OSError as e:  # read-only / full / not a folder: the embeddings are still good
            _warn_unwritable(os.path.dirname(path), e)
        else:
            logger.info(f"Cached text embeddings at {path}")
    return embeddings


def _warn_unwritable(folder, error):
    """One warning per cache folder and process: the run continues without caching there."""
    if folder in _WARNED_UNWRITABLE:
        return
    _WARNED_UNWRITABLE.add(folder)
    reason = error.strerror or str(error)
    logger.warning(
        f"Text-embedding cache folder {folder} cannot be written ({reason}); continuing without caching "
        "(embeddings are rebuilt when needed). Set $GRIDCLIP_CACHE or MODEL.GRIDCLIP.EMBEDDINGS_CACHE_DIR "
        "to a writable folder to cache them."
    )


def vocabulary_text_embeddings(class_names, text_embeddings=None, text_encoder=None, embed_dim=None):
    """
    The text embeddings of a vocabulary from any of their sources, checked against it.

    Args:
        class_names (list[str]): the K (validated) names.
        text_embeddings: a [K, D] tensor, a file (:func:`~gridclip.modeling.text.files.load_text_embeddings_file`
            formats: its recorded names and model must match), or None to build them (cached) with
            :func:`load_text_embeddings` and ``text_encoder``.
        text_encoder (dict or None): :func:`load_text_embeddings` keyword arguments besides the names
            (:func:`text_encoder_settings`); None = embeddings must be given.
        embed_dim (int or None): the required D.

    Returns:
        (Tensor [K, D], str): the embeddings and where they come from (for error messages).
    """
    clip_model_name = text_encoder["clip_model_name"] if text_encoder else None
    if text_embeddings is None:
        if text_encoder is None:
            raise ValueError(
                "set_vocabulary: this model was built without a CLIP text encoder setting; pass "
                "text_embeddings (a [K, D] tensor or a file)."
            )
        embeddings = load_text_embeddings(class_names, **text_encoder)
        source = f"{clip_model_name} text tower"
    elif isinstance(text_embeddings, str):
        embeddings = load_text_embeddings_file(
            text_embeddings, expected_names=class_names, expected_model=clip_model_name, expected_dim=embed_dim,
        )
        source = text_embeddings
    else:
        embeddings, source = text_embeddings, "set_vocabulary(text_embeddings=...)"
    check_text_embeddings(embeddings, len(class_names), embed_dim, source)
    return embeddings, source
