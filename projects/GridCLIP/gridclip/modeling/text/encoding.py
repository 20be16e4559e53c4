"""
Encoding prompts with a CLIP text tower: tokens -> L2-normalised embeddings, and ViLD's recipe for
a category's embedding (per-prompt L2-normalise -> mean over templates -> L2-normalise).
"""
import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool

from .prompts import build_prompts

__all__ = [
    "clip_text_embed_dim",
    "clip_text_output_dim",
    "resolve_device",
    "needed_context_lengths",
    "encode_text_tokens",
    "encode_text_embeddings",
]

_ENCODE_BATCH_SIZE = 256


def clip_text_embed_dim(clip_model_name):
    """Embedding dim of an open_clip model's text tower, from its config (no model is built)."""
    config = open_clip.get_model_config(clip_model_name)
    if config is None:
        raise ValueError(f"Unknown open_clip model {clip_model_name!r} (not in open_clip.list_models()).")
    return int(config["embed_dim"])


def resolve_device(device):
    """Where to run the text tower: ``device``, or CUDA when there is one and ``device`` is None / ""."""
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
