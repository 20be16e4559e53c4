"""
Category names: the one normaliser and the one validation every vocabulary goes through.

Two views of a name:

- :func:`clean_name`: the name as typed, minus what the eye does not see (invisible characters,
  odd spaces). This is the name a vocabulary stores and a result prints.
- :func:`clean_category_name`: ViLD's cleaning, the form the text prompts see; a dataset's classes
  are matched to a vocabulary by it.
- :func:`text_encoder_form`: the name as the CLIP text encoder finally sees it (Unicode compatibility
  normalisation, ViLD's cleaning, then open_clip's tokenizer cleaning). Two names with the same form
  tokenise identically, so they are the same category: :func:`validate_vocabulary` refuses them as
  duplicates (``"ｒｅｄ solid circle"`` and ``"red solid circle"``).
"""
import html
import re
import unicodedata

import ftfy

__all__ = ["clean_name", "clean_category_name", "text_encoder_form", "unseen_class_mask", "validate_vocabulary"]

_PLAIN_ASCII = re.compile(r"[ -%'-~]*").fullmatch


def clean_name(name):
    """
    A category name as typed, minus what the eye does not see: Unicode NFC form, invisible format
    characters (byte-order marks, zero-width spaces and joiners, bidi marks) and control characters
    removed, every kind of space (no-break, ideographic, tabs) turned into one plain space, stripped.
    """
    name = unicodedata.normalize("NFC", name)
    kept = []
    for ch in name:
        category = unicodedata.category(ch)
        if category == "Cf" or (category == "Cc" and not ch.isspace()):
            continue  # invisible: BOM, ZWSP, ZWJ, LRM, soft hyphen, NUL, ...
        kept.append(" " if ch.isspace() else ch)
    return " ".join("".join(kept).split())


def clean_category_name(name):
    """
    ViLD's category-name cleaning, applied before a name enters a template and when names are
    compared.

    ``_`` → space (LVIS names such as ``aerosol_can``), ``/`` → ``" or "`` (Objects365 names such
    as ``cow/sheep``), lower-case, surrounding whitespace and trailing dots removed. Runs of
    whitespace are collapsed (CLIP's tokenizer does the same, so prompts are unchanged).

    Examples: ``"aerosol_can"`` → ``"aerosol can"``, ``"bat_(animal)"`` → ``"bat (animal)"``,
    ``"Cow/Sheep"`` → ``"cow or sheep"``, ``" Red Umbrella. "`` → ``"red umbrella"``.
    """
    cleaned = name.replace("_", " ").replace("/", " or ").lower()
    cleaned = " ".join(cleaned.split())
    return cleaned.rstrip(".").strip()


def text_encoder_form(name):
    """
    The name as CLIP's text encoder sees it: NFKC (compatibility) normalisation (full-width letters,
    ligatures, superscripts -> plain characters), ViLD's cleaning (:func:`clean_category_name`), then
    open_clip's tokenizer cleaning (``basic_clean``: ``ftfy.fix_text`` and HTML unescaping twice;
    ``whitespace_clean``; lower case), NFKC again. Names with the same form give the same tokens.

    Examples: ``"ｒｅｄ solid circle"`` -> ``"red solid circle"``, ``"Fish &amp; Chips"`` -> ``"fish & chips"``.
    """
    text = clean_category_name(unicodedata.normalize("NFKC", name))
    if not _PLAIN_ASCII(text):  # printable ASCII without '&' is what ftfy and unescaping leave unchanged
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()  # open_clip.tokenizer.basic_clean
    text = " ".join(text.split()).lower()  # open_clip.tokenizer.whitespace_clean + the "lower" clean_fn
    return unicodedata.normalize("NFKC", text).rstrip(".").strip()


def validate_vocabulary(names, source="the vocabulary"):
    """
    The one check every vocabulary goes through, whatever its source (CLI, file, config, Python
    API, ``set_vocabulary``, ``rescore``).

    Each name must be a string; invisible characters are removed and whitespace normalised
    (:func:`clean_name`). Refused, with a message naming ``source`` and the offending entries: an
    empty vocabulary, a bare string (a spec, not a list: use ``resolve_vocabulary``), ``None`` or
    other non-strings, names that are empty after cleaning, and duplicates (names compared as the
    text encoder sees them, :func:`text_encoder_form`: compatibility-normalised (full-width letters),
    stripped, lower-cased, ``_`` → space, trailing dots removed, the tokenizer's own cleaning).

    Returns:
        list[str]: the cleaned names, in order.
    """
    if isinstance(names, (str, bytes)):
        raise TypeError(
            f"{source}: expected a list of category names, got the string {names!r}; pass a list such as "
            "['cat', 'dog'] or resolve a spec string with resolve_vocabulary()."
        )
    try:
        names = list(names)
    except TypeError:
        raise TypeError(f"{source}: expected a list of category names, got {type(names).__name__}.") from None
    if not names:
        raise ValueError(f"The vocabulary from {source} is empty; give at least one category name.")
    not_strings = [f"{i}: {name!r}" for i, name in enumerate(names) if not isinstance(name, str)]
    if not_strings:
        raise TypeError(
            f"The vocabulary from {source} has entries that are not strings (position: value): "
            f"{', '.join(not_strings[:10])}{' ...' if len(not_strings) > 10 else ''}."
        )
    cleaned = [clean_name(name) for name in names]
    empty = [i for i, name in enumerate(cleaned) if not text_encoder_form(name)]
    if empty:
        raise ValueError(
            f"The vocabulary from {source} has empty category names at positions {empty} "
            "(0-based); remove the stray separators or blank entries."
        )
    first_seen = {}
    duplicates = []
    for name in cleaned:
        key = text_encoder_form(name)
        if key in first_seen:
            duplicates.append(
                repr(name) if first_seen[key] == name else f"{first_seen[key]!r} / {name!r}"
            )
        else:
            first_seen[key] = name
    if duplicates:
        raise ValueError(
            f"The vocabulary from {source} has duplicate category names: {', '.join(duplicates)}. "
            "Each category needs a distinct name (names are compared as the text encoder sees them: after "
            "Unicode compatibility normalisation such as full-width -> plain letters, stripping, lower-casing "
            "and '_' → ' ')."
        )
    return cleaned


def unseen_class_mask(names, seen_names):
    """
    ``[bool]``, one per name of ``names``: True where the name is not among ``seen_names`` (e.g. the
    classes a detector was trained on), names compared as the text encoder sees them
    (:func:`text_encoder_form`: ``"Red_Circle"`` is ``"red circle"``).
    """
    seen = {text_encoder_form(name) for name in seen_names}
    return [text_encoder_form(name) not in seen for name in names]
