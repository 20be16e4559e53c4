"""
Category text embeddings (the T_k of Eq. 3), one concept per module:

- :mod:`.prompts`: ViLD's prompt templates, template files, building the prompts of a vocabulary;
- :mod:`.encoding`: a CLIP text tower turns prompts into one L2-normalised embedding per category;
- :mod:`.files`: the [K, D] check, the safetensors format, readers of user files;
- :mod:`.cache`: cache keys and :func:`~gridclip.modeling.text.cache.load_text_embeddings` (cached
  or built), with the settings a config gives it (``text_encoder_settings``).
"""
