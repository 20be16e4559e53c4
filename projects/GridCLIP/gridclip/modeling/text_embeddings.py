"""
Category text embeddings: prompt templates, name cleaning, building, caching and loading.

GridCLIP scores each grid embedding against one text embedding per category (Eq. 3). As in ViLD,
a category's embedding is built from 63 detection prompt templates with the text tower of the same
CLIP as the backbone:

1. the name is cleaned (:func:`clean_category_name`) and put into every template
   (``{}`` = the name, ``{article}`` = "a"/"an");
2. every prompt is encoded and L2-normalised;
3. the T normalised prompt embeddings of a category are averaged and the mean is L2-normalised.

Encoding the LVIS vocabulary with the RN50 text tower takes about two hours on a CPU (a few
minutes on a GPU), so embeddings are cached as safetensors files (no pickle) keyed by the CLIP
model, its weights, the templates and the names; ``tools/build_text_embeddings.py`` fills the cache
ahead of training. Every file read is validated (:func:`check_text_embeddings`): the number of rows
must equal the vocabulary size, the width must equal the CLIP model's embedding dim, values must be
finite, and the file's recorded model and names must match.
"""
import hashlib
import json
import logging
import os
import re
import tempfile

import numpy as np
import open_clip
from open_clip.transformer import text_global_pool
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..vocabulary.names import clean_category_name
from .clip_loading import create_clip_model, model_config_identity, pretrained_identity

__all__ = [
    "VILD_TEMPLATES",
    "SINGLE_TEMPLATE",
    "article_for",
    "resolve_templates",
    "build_prompts",
    "add_this_is_prefix",
    "text_encoder_settings",
    "clip_text_embed_dim",
    "encode_text_embeddings",
    "text_embeddings_cache_path",
    "default_cache_dir",
    "load_text_embeddings",
    "save_text_embeddings",
    "load_text_embeddings_file",
    "check_text_embeddings",
]

logger = logging.getLogger(__name__)

# ViLD's detection prompt templates (Gu et al., "Open-vocabulary Object Detection via Vision and
# Language Knowledge Distillation", colab "multiple_templates"): "{}" takes the cleaned category
# name, "{article}" the matching indefinite article. ("itap" = "I took a picture".)
VILD_TEMPLATES = [
    "There is {article} {} in the scene.",
    "There is the {} in the scene.",
    "a photo of {article} {} in the scene.",
    "a photo of the {} in the scene.",
    "a photo of one {} in the scene.",
    "itap of {article} {}.",
    "itap of my {}.",
    "itap of the {}.",
    "a photo of {article} {}.",
    "a photo of my {}.",
    "a photo of the {}.",
    "a photo of one {}.",
    "a photo of many {}.",
    "a good photo of {article} {}.",
    "a good photo of the {}.",
    "a bad photo of {article} {}.",
    "a bad photo of the {}.",
    "a photo of a nice {}.",
    "a photo of the nice {}.",
    "a photo of a cool {}.",
    "a photo of the cool {}.",
    "a photo of a weird {}.",
    "a photo of the weird {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of a clean {}.",
    "a photo of the clean {}.",
    "a photo of a dirty {}.",
    "a photo of the dirty {}.",
    "a bright photo of {article} {}.",
    "a bright photo of the {}.",
    "a dark photo of {article} {}.",
    "a dark photo of the {}.",
    "a photo of a hard to see {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of {article} {}.",
    "a low resolution photo of the {}.",
    "a cropped photo of {article} {}.",
    "a cropped photo of the {}.",
    "a close-up photo of {article} {}.",
    "a close-up photo of the {}.",
    "a jpeg corrupted photo of {article} {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of {article} {}.",
    "a blurry photo of the {}.",
    "a pixelated photo of {article} {}.",
    "a pixelated photo of the {}.",
    "a black and white photo of the {}.",
    "a black and white photo of {article} {}.",
    "a plastic {}.",
    "the plastic {}.",
    "a toy {}.",
    "the toy {}.",
    "a plushie {}.",
    "the plushie {}.",
    "a cartoon {}.",
    "the cartoon {}.",
    "an embroidered {}.",
    "the embroidered {}.",
    "a painting of the {}.",
    "a painting of a {}.",
]

# CLIP's single zero-shot prompt (templates="single").
SINGLE_TEMPLATE = "a photo of a {}."

# Bump when the embedding recipe changes, so old cache files are not reused.
_RECIPE_VERSION = "1"
_FILE_FORMAT = "gridclip-text-embeddings"
_TENSOR_KEY = "text_embeddings"
_ENCODE_BATCH_SIZE = 256


def article_for(cleaned_name):
    """The indefinite article ViLD puts before a name: "an" before a vowel letter, else "a"."""
    return "an" if cleaned_name[:1] in ("a", "e", "i", "o", "u") else "a"


def _check_template(template, source):
    if not isinstance(template, str) or "{}" not in template:
        raise ValueError(
            f"Prompt template {template!r} from {source} has no '{{}}' placeholder for the category "
            "name (e.g. 'a photo of a {}.'; '{article}' may stand for 'a'/'an')."
        )
    try:
        template.format("object", article="an")
    except (IndexError, KeyError, ValueError) as e:
        raise ValueError(
            f"Prompt template {template!r} from {source} cannot be filled: {e!r}. Only '{{}}' (the "
            "name) and '{article}' may appear in braces."
        ) from None
    return template


def resolve_templates(templates="vild"):
    """
    Args:
        templates: ``"vild"`` (ViLD's 63 templates), ``"single"`` (``"a photo of a {}."``), a path
            to a text file with one template per line (blank lines ignored), a single template
            string containing ``{}``, or a list of template strings.

    Returns:
        list[str]: the templates, each containing ``{}``.
    """
    if isinstance(templates, (list, tuple)):
        if not templates:
            raise ValueError("The list of prompt templates is empty.")
        return [_check_template(t, "the template list") for t in templates]
    if not isinstance(templates, str):
        raise TypeError(f"templates must be a string or a list of strings, got {type(templates).__name__}.")
    spec = templates.strip()
    if spec.lower() == "vild":
        return list(VILD_TEMPLATES)
    if spec.lower() == "single":
        return [SINGLE_TEMPLATE]
    path = os.path.expanduser(spec)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            lines = [(i + 1, line.strip()) for i, line in enumerate(f)]
        result = [_check_template(t, f"{path} line {n}") for n, t in lines if t]
        if not result:
            raise ValueError(f"The prompt template file {path} has no templates.")
        return result
    if "{}" in spec:
        return [_check_template(spec, "the templates argument")]
    raise FileNotFoundError(
        f"Prompt templates {templates!r}: not 'vild', 'single', an existing file, nor a template "
        "containing '{}'."
    )


def add_this_is_prefix(prompt):
    """ViLD's notebook (``FLAGS.this_is``): "This is " before a prompt that starts with "a" or "the"."""
    return "This is " + prompt if prompt.startswith("a") or prompt.startswith("the") else prompt


def build_prompts(class_names, templates, this_is=False):
    """
    All prompts, class-major: ``K * T`` strings, prompt ``k * T + t`` = template t for class k.
    ``this_is``: apply :func:`add_this_is_prefix` to each prompt (MODEL.GRIDCLIP.PROMPT_THIS_IS).
    """
    prompts = []
    for name in class_names:
        cleaned = clean_category_name(name)
        art = article_for(cleaned)
        prompts.extend(template.format(cleaned, article=art) for template in templates)
    return [add_this_is_prefix(p) for p in prompts] if this_is else prompts


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


def _check_class_names(class_names):
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
        raise TypeError("class_names must be a list of category-name strings.")
    if len(class_names) == 0:
        raise ValueError("Cannot build text embeddings for an empty vocabulary.")
    empty = [i for i, n in enumerate(class_names) if not clean_category_name(n)]
    if empty:
        raise ValueError(f"Category names at positions {empty} are empty after cleaning.")


#: load_text_embeddings shows a progress bar by default from this many prompts (K names x T templates)
_PROGRESS_MIN_PROMPTS = 512


def _shorten(name, limit=60):
    return name if len(name) <= limit else f"{name[:limit // 2]}...{name[-limit // 2:]}"


def check_prompt_context(class_names, templates, tokenizer):
    """
    Names whose prompts exceed the text encoder's context (77 tokens for CLIP) are truncated by the
    tokenizer, so the end of the name is never seen: log one warning naming them, and raise a
    ValueError when two different names become identical after truncation (they would get the
    same embedding). Tokenizers without ``encode`` / ``context_length`` are not checked.
    """
    encode = getattr(tokenizer, "encode", None)
    context_length = getattr(tokenizer, "context_length", None)
    if encode is None or not context_length:
        return
    budget = int(context_length) - 2  # start and end tokens
    try:
        overhead = max(len(encode(t.format("", article="an"))) for t in templates)
        name_tokens = [len(encode(clean_category_name(n))) for n in class_names]
    except Exception:  # a tokenizer with another encode() signature: nothing to check
        return
    # Exact prompt tokens only for names near or over the budget (BPE merges at the boundary).
    suspects = [i for i, n in enumerate(name_tokens) if n + overhead + 2 > budget]
    truncated, signatures = [], {}
    for i in suspects:
        prompts = build_prompts([class_names[i]], templates)
        tokens = [encode(p) for p in prompts]
        if max(len(t) for t in tokens) <= budget:
            continue
        truncated.append((class_names[i], max(len(t) for t in tokens) + 2))
        signature = tuple(tuple(t[:budget]) for t in tokens)
        if signature in signatures:
            raise ValueError(
                f"Category names {_shorten(signatures[signature])!r} and {_shorten(class_names[i])!r} become "
                "identical after "
                f"truncation to the text encoder's {context_length}-token context, so they would get the same "
                "text embedding. Shorten them so that they differ within the first words."
            )
        signatures[signature] = class_names[i]
    if truncated:
        listed = ", ".join(f"{_shorten(name)!r} ({count} tokens)" for name, count in truncated[:10])
        logger.warning(
            f"{len(truncated)} category name(s) make prompts longer than the text encoder's "
            f"{context_length}-token context and are truncated (the end of the name is not seen): {listed}"
            f"{' ...' if len(truncated) > 10 else ''}. Shorter names embed faithfully."
        )


def clip_text_embed_dim(clip_model_name):
    """Embedding dim of an open_clip model's text tower, from its config (no model is built)."""
    config = open_clip.get_model_config(clip_model_name)
    if config is None:
        raise ValueError(f"Unknown open_clip model {clip_model_name!r} (not in open_clip.list_models()).")
    return int(config["embed_dim"])


def _resolve_device(device):
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"Text embeddings were requested on {device}, but CUDA is not available here; use "
            "device='cpu' (or leave it unset to use a GPU only when there is one)."
        )
    return device


def _short_context_supported(clip_model) -> bool:
    """open_clip ``CLIP`` with a causal text transformer pooled at the EOT token (OpenAI CLIP, RN and ViT)."""
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
    return (all(getattr(clip_model, name, None) is not None for name in needed)
            and getattr(clip_model, "text_pool_type", None) in ("argmax", "eos"))


def needed_context_lengths(clip_model, tokens):
    """
    [B] tokens each prompt needs: up to and including its EOT token (the one the text tower reads),
    or None when the model's text tower cannot run on a shorter context (then the full one is used).
    """
    if not _short_context_supported(clip_model):
        return None
    if clip_model.text_pool_type == "argmax":
        eot = tokens.argmax(dim=-1)  # OpenAI CLIP: the EOT token has the highest id
    else:
        eot = (tokens == clip_model.text_eos_id).int().argmax(dim=-1)
    return eot + 1


def clip_text_output_dim(clip_model) -> int:
    """Width of ``encode_text``'s output (the CLIP embedding dim)."""
    projection = getattr(clip_model, "text_projection", None)
    if isinstance(projection, torch.nn.Linear):
        return projection.out_features
    if projection is not None:
        return projection.shape[1]
    return int(getattr(clip_model, "embed_dim", 0)) or clip_model.transformer.width


def encode_text_tokens(clip_model, tokens, length=None):
    """
    ``clip_model.encode_text(tokens, normalize=True)`` computed on the first ``length`` positions only.

    CLIP's text transformer is causal (position i attends to positions <= i) and the embedding is read
    at the EOT token, so positions after the longest prompt's EOT cannot change the result: running on
    ``length`` = that prompt's EOT position + 1 instead of the full 77 is exact (same values up to float
    rounding, tested <= 1e-5) and costs length/77 of the compute. ``length`` None or a model without a
    causal EOT-pooled tower: the full ``encode_text``.
    """
    if length is None or not _short_context_supported(clip_model) or length >= tokens.shape[1]:
        return clip_model.encode_text(tokens, normalize=True)
    tokens = tokens[:, :length]
    cast_dtype = clip_model.transformer.get_cast_dtype()
    x = clip_model.token_embedding(tokens).to(cast_dtype)
    x = x + clip_model.positional_embedding[:length].to(cast_dtype)
    x = clip_model.transformer(x, attn_mask=clip_model.attn_mask[:length, :length])
    x = clip_model.ln_final(x)
    pooled = text_global_pool(x, tokens, clip_model.text_pool_type, eos_token_id=getattr(clip_model, "text_eos_id", None))
    projection = clip_model.text_projection
    if projection is not None:
        pooled = projection(pooled) if isinstance(projection, torch.nn.Linear) else pooled @ projection
    return F.normalize(pooled, dim=-1)


@torch.no_grad()
def encode_text_embeddings(clip_model, tokenizer, class_names, templates, batch_size=_ENCODE_BATCH_SIZE,
                           progress=False, this_is=False):
    """
    Encode a vocabulary with a CLIP text tower (ViLD's recipe: per-prompt L2-normalise → mean over
    templates → L2-normalise).

    Args:
        clip_model: open_clip ``CLIP`` (its text tower, see :func:`encode_text_tokens`), on the device to run on.
        tokenizer: open_clip tokenizer of that model.
        class_names (list[str]): K raw category names (cleaned here).
        templates (list[str]): T templates (see :func:`resolve_templates`).
        batch_size (int): prompts per forward pass (prompts of all classes, sorted by token length).
        progress (bool): show a tqdm progress bar over prompts.
        this_is (bool): ViLD's "This is " prefix (:func:`add_this_is_prefix`).

    Returns:
        Tensor [K, D] float32 on CPU, rows L2-normalised.
    """
    from tqdm import tqdm

    prompts = build_prompts(class_names, templates, this_is=this_is)
    device = next(clip_model.parameters()).device
    tokens = tokenizer(prompts)  # [K*T, context] (77 for CLIP)
    # Prompts of all classes together, shortest first: each batch runs on its own needed length.
    lengths = needed_context_lengths(clip_model, tokens)
    order = torch.argsort(lengths, stable=True) if lengths is not None else torch.arange(len(prompts))
    per_prompt = torch.empty(len(prompts), clip_text_output_dim(clip_model))
    with tqdm(total=len(prompts), desc="text embeddings", unit="prompt", disable=not progress) as bar:
        for start in range(0, len(prompts), batch_size):
            idx = order[start:start + batch_size]
            batch = tokens[idx].to(device)
            length = int(lengths[idx].max()) if lengths is not None else None
            per_prompt[idx] = encode_text_tokens(clip_model, batch, length).float().cpu()
            bar.update(len(idx))
    per_prompt = per_prompt.view(len(class_names), len(templates), -1)  # [K, T, D], unit rows
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


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
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    safe_model = re.sub(r"[^A-Za-z0-9._-]+", "_", clip_model_name)
    filename = f"{safe_model}_{len(class_names)}cls_{len(templates)}tpl_{digest}.safetensors"
    return os.path.join(default_cache_dir(cache_dir), "text_embeddings", filename)


def check_text_embeddings(embeddings, num_classes, dim, source):
    """
    Validate a text-embedding matrix.

    Args:
        embeddings: Tensor [K, D].
        num_classes (int or None): expected K (the vocabulary size); None skips the check.
        dim (int or None): expected D (the CLIP embedding dim); None skips the check.
        source (str): where the embeddings come from (a file path), named in every error.

    Raises:
        ValueError: not a 2-D tensor, K != num_classes, D != dim, non-finite values or all-zero rows.
    """
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
        shape = tuple(embeddings.shape) if hasattr(embeddings, "shape") else type(embeddings).__name__
        raise ValueError(
            f"Text embeddings from {source} must be a 2-D [num_classes, dim] tensor, got shape {shape}."
        )
    rows, width = embeddings.shape
    if num_classes is not None and rows != num_classes:
        raise ValueError(
            f"Text embeddings from {source} have {rows} rows (classes), but the vocabulary has "
            f"{num_classes} classes. Rebuild them for this vocabulary (tools/build_text_embeddings.py) "
            "or use the vocabulary they were built for."
        )
    if dim is not None and width != dim:
        raise ValueError(
            f"Text embeddings from {source} have dimension {width}, but the CLIP model's embeddings "
            f"have dimension {dim}. They were built with a different CLIP model; rebuild them with this one."
        )
    finite = torch.isfinite(embeddings)
    if not bool(finite.all()):
        bad_rows = torch.nonzero(~finite.all(dim=1)).flatten().tolist()
        raise ValueError(
            f"Text embeddings from {source} contain {int((~finite).sum())} NaN/Inf values "
            f"(rows {bad_rows[:10]}{' ...' if len(bad_rows) > 10 else ''}); rebuild them."
        )
    zero_rows = torch.nonzero(embeddings.abs().sum(dim=1) == 0).flatten().tolist()
    if zero_rows:
        raise ValueError(
            f"Text embeddings from {source} have all-zero rows {zero_rows[:10]}: a zero vector has no "
            "direction for cosine scoring; rebuild them."
        )


def save_text_embeddings(path, embeddings, class_names, model_name, extra_metadata=None):
    """
    Write text embeddings as a safetensors file (atomically: temp file + rename), recording the
    class names and the CLIP model name in the file's metadata.

    Args:
        path (str): output ``.safetensors`` file; parent folders are created.
        embeddings: Tensor [K, D].
        class_names (list[str]): the K names, in row order.
        model_name (str): open_clip model name that built them.
        extra_metadata (dict[str, str] or None): more metadata (e.g. weights, templates).
    """
    embeddings = embeddings.detach().float().cpu().contiguous()
    check_text_embeddings(embeddings, len(class_names), None, f"the tensor to save to {path}")
    metadata = {
        "format": _FILE_FORMAT,
        "model_name": model_name,
        "class_names": json.dumps(list(class_names)),
    }
    metadata.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".safetensors")
    os.close(fd)
    try:
        save_file({_TENSOR_KEY: embeddings}, tmp_path, metadata=metadata)
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    return path


def _read_safetensors(path):
    try:
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
            metadata = f.metadata() or {}
            if _TENSOR_KEY in keys:
                key = _TENSOR_KEY
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise ValueError(
                    f"{path} holds tensors {keys}; expected one named {_TENSOR_KEY!r} (or a single tensor)."
                )
            return f.get_tensor(key), metadata
    except SafetensorError as e:
        raise ValueError(
            f"Cannot read text embeddings from {path}: {e}. The file is not a valid safetensors file "
            "(truncated or corrupt?); delete it and rebuild with tools/build_text_embeddings.py."
        ) from None


def _read_torch_file(path):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"Cannot read text embeddings from {path} with torch.load(weights_only=True): {e}. "
            "Save a plain tensor (or a dict with a 'text_embeddings' tensor), or use .safetensors."
        ) from None
    if isinstance(obj, torch.Tensor):
        return obj, {}
    if isinstance(obj, dict):
        tensor = obj.get(_TENSOR_KEY, obj.get("embeddings"))
        if isinstance(tensor, torch.Tensor):
            metadata = {}
            if "class_names" in obj:
                metadata["class_names"] = json.dumps(list(obj["class_names"]))
            if "model_name" in obj:
                metadata["model_name"] = str(obj["model_name"])
            return tensor, metadata
    raise ValueError(
        f"{path} does not hold text embeddings: expected a tensor or a dict with a 'text_embeddings' "
        f"tensor, found {type(obj).__name__}."
    )


def _read_numpy_file(path):
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"Cannot read text embeddings from {path} (numpy, no pickle): {e}") from None
    return torch.from_numpy(np.ascontiguousarray(array)), {}


def load_text_embeddings_file(path, expected_names=None, expected_model=None, expected_dim=None):
    """
    Load and validate user-supplied (or cached) text embeddings. Nothing is unpickled.

    Args:
        path (str): ``.safetensors`` (as written by :func:`save_text_embeddings`), ``.pt``/``.pth``
            (a tensor or a dict with ``text_embeddings``; read with ``weights_only=True``) or
            ``.npy`` (read without pickle, e.g. Detic's CLIP embedding files).
        expected_names (list[str] or None): the vocabulary the rows must correspond to: the row
            count must match and, when the file records its names, the names too.
        expected_model (str or None): the open_clip model name the file must have been built with
            (checked when the file records one).
        expected_dim (int or None): the required embedding width.

    Returns:
        Tensor [K, D] float32 on CPU, rows L2-normalised.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Text-embedding file not found: {path}")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        embeddings, metadata = _read_safetensors(path)
    elif lower.endswith((".pt", ".pth")):
        embeddings, metadata = _read_torch_file(path)
    elif lower.endswith(".npy"):
        embeddings, metadata = _read_numpy_file(path)
    else:
        raise ValueError(
            f"Unsupported text-embedding file {path}: use .safetensors (recommended), .pt/.pth "
            "(tensor, loaded with weights_only=True) or .npy."
        )
    file_model = metadata.get("model_name")
    if expected_model is not None and file_model is not None and file_model != expected_model:
        raise ValueError(
            f"Text embeddings in {path} were built with CLIP model {file_model!r}, but this model uses "
            f"{expected_model!r}; their embedding spaces differ. Rebuild them with "
            f"tools/build_text_embeddings.py --clip-model {expected_model}."
        )
    if not embeddings.is_floating_point():
        raise ValueError(f"Text embeddings in {path} have dtype {embeddings.dtype}; expected floating point.")
    embeddings = embeddings.float()
    check_text_embeddings(
        embeddings, len(expected_names) if expected_names is not None else None, expected_dim, path
    )
    if expected_names is not None and "class_names" in metadata:
        file_names = json.loads(metadata["class_names"])
        if list(file_names) != list(expected_names):
            index = next(i for i, (a, b) in enumerate(zip(file_names, expected_names)) if a != b)
            raise ValueError(
                f"Text embeddings in {path} were built for a different vocabulary: row {index} is "
                f"{file_names[index]!r}, but the vocabulary has {expected_names[index]!r} there."
            )
    norms = embeddings.norm(dim=-1)
    if bool(((norms - 1).abs() > 1e-5).any()):  # user files (e.g. Detic's) may be unnormalised
        embeddings = F.normalize(embeddings, dim=-1)
    return embeddings


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
        return load_text_embeddings_file(path, class_names, clip_model_name, dim)

    device = _resolve_device(device)
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
        save_text_embeddings(
            path, embeddings, class_names, clip_model_name,
            extra_metadata={
                "pretrained": identity["pretrained"],
                "templates": json.dumps(identity["templates"]),
                "recipe": _RECIPE_VERSION,
            },
        )
        logger.info(f"Cached text embeddings at {path}")
    return embeddings
