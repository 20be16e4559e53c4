"""
Vocabularies: the ordered lists of category names a GridCLIP classifier scores, end to end.

The bottom of the package: nothing here imports ``gridclip.modeling`` or ``gridclip.data``.

- :mod:`.names`: the one name normaliser (``clean_category_name``, the form the text prompts see),
  ``text_encoder_form`` (the form the tokenizer finally sees, by which duplicates are found),
  ``clean_name`` and ``validate_vocabulary`` (the one check of every vocabulary, duplicates included);
- :mod:`.builtin`: the LVIS v1, LVIS base, COCO and VOC lists;
- :mod:`.files`: custom vocabularies (a regular text file under a size cap, or comma-separated names);
- :mod:`.resolve`: spec -> names (``resolve_vocabulary``) and a config's training and test
  vocabularies.
"""
from .builtin import (
    BUILTIN_VOCABULARIES,
    coco_class_names,
    lvis_v1_base_class_names,
    lvis_v1_class_frequencies,
    lvis_v1_class_names,
    voc_class_names,
)
from .files import parse_custom_vocabulary, read_vocabulary_file
from .names import clean_category_name, clean_name, text_encoder_form, unseen_class_mask, validate_vocabulary
from .resolve import resolve_train_test_vocabularies, resolve_train_vocabulary, resolve_vocabulary

__all__ = [
    "BUILTIN_VOCABULARIES",
    "clean_category_name",
    "clean_name",
    "text_encoder_form",
    "unseen_class_mask",
    "validate_vocabulary",
    "resolve_vocabulary",
    "resolve_train_vocabulary",
    "resolve_train_test_vocabularies",
    "parse_custom_vocabulary",
    "read_vocabulary_file",
    "lvis_v1_class_names",
    "lvis_v1_class_frequencies",
    "lvis_v1_base_class_names",
    "coco_class_names",
    "voc_class_names",
]
