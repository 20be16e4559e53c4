"""
Prompts of the category text embeddings: ViLD's 63 detection templates (or CLIP's single one),
template files, ViLD's "This is " option, and the check that prompts fit the text encoder's context.

A name is cleaned (:func:`gridclip.vocabulary.clean_category_name`) and put into every template
(``{}`` = the name, ``{article}`` = "a"/"an").
"""
import logging
import os

from ...vocabulary.names import clean_category_name

__all__ = [
    "VILD_TEMPLATES",
    "SINGLE_TEMPLATE",
    "article_for",
    "resolve_templates",
    "add_this_is_prefix",
    "build_prompts",
    "check_prompt_context",
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
