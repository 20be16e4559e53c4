"""
A predictor's text-embedding source: the CLIP text tower kept loaded and a bounded in-memory cache
of the vocabularies and queries it embedded, so ``GridCLIPPredictor.rescore`` with a new query list
costs one text-tower pass (no CLIP reload, no new cache file).

The disk cache (:mod:`gridclip.modeling.text.cache`) is still read when it holds a vocabulary, and
written for vocabularies set with ``set_vocabulary`` (``persist=True``, through
:func:`~gridclip.modeling.text.cache.load_text_embeddings`: a cache folder that cannot be written
means compute, one warning per folder, continue uncached).
"""
import logging
import os
import threading
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import open_clip
import torch

from .modeling.clip_loading import create_clip_model
from .modeling.text import cache as text_cache
from .modeling.text.encoding import clip_text_embed_dim, encode_text_embeddings, resolve_device
from .modeling.text.files import check_text_embeddings, load_text_embeddings_file
from .modeling.text.prompts import check_prompt_context, resolve_templates

__all__ = ["TextQueries", "DEFAULT_MAX_ENTRIES", "DEFAULT_MAX_ROWS"]

logger = logging.getLogger(__name__)

#: vocabularies / query lists kept in memory (least recently used dropped first)
DEFAULT_MAX_ENTRIES = 256
#: and at most this many embedding rows in all (1024-dim float32: 4 KB a row, 64K rows = 256 MB)
DEFAULT_MAX_ROWS = 65536


class TextQueries:
    """
    Text embeddings for a model's text encoder settings, kept in memory.

    Thread-safe: lookups and inserts hold a small lock; the text tower is loaded once (under the
    lock) and encoding runs outside it.

    Args:
        text_encoder: ``load_text_embeddings`` keyword arguments besides the names
            (:func:`gridclip.modeling.text.cache.text_encoder_settings`: clip_model_name, pretrained,
            templates, cache_dir, clip_cache_dir, this_is).
        max_entries, max_rows: the memory bound (vocabularies, embedding rows in all).
        device: where the text tower runs (None: CUDA if available, else CPU).
    """

    def __init__(self, text_encoder: Dict, max_entries: int = DEFAULT_MAX_ENTRIES, max_rows: int = DEFAULT_MAX_ROWS,
                 device=None):
        if max_entries < 1 or max_rows < 1:
            raise ValueError(f"TextQueries: max_entries and max_rows must be >= 1, got {max_entries}, {max_rows}.")
        self.text_encoder = dict(text_encoder)
        self.max_entries, self.max_rows = int(max_entries), int(max_rows)
        self.device = device
        self._entries: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()
        self._model = None
        self._tokenizer = None
        #: how often the text tower was loaded and run (for tests and logs)
        self.loads = 0
        self.encodes = 0

    # ------------------------------------------------------------------ memory
    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, names: Sequence[str]) -> Optional[torch.Tensor]:
        """The [K, D] embeddings of ``names`` if in memory (marks them recently used), else None."""
        with self._lock:
            hit = self._entries.get(tuple(names))
            if hit is not None:
                self._entries.move_to_end(tuple(names))
            return hit

    def remember(self, names: Sequence[str], embeddings: torch.Tensor):
        """Keep ``embeddings`` of ``names`` (dropping the least recently used beyond the bound)."""
        key = tuple(names)
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._rows -= len(previous)
            self._entries[key] = embeddings
            self._rows += len(embeddings)
            while len(self._entries) > 1 and (len(self._entries) > self.max_entries or self._rows > self.max_rows):
                _, dropped = self._entries.popitem(last=False)
                self._rows -= len(dropped)

    # ------------------------------------------------------------------ embeddings
    def embeddings(self, names: Sequence[str], persist: bool = False) -> torch.Tensor:
        """
        [K, D] L2-normalised embeddings of ``names`` (already validated): from memory, else the disk
        cache if it holds them, else built — with the resident text tower, writing no file
        (``persist=False``: ``rescore``'s queries), or through
        :func:`gridclip.modeling.text.cache.load_text_embeddings`, which writes the cache where it can
        (``persist=True``: ``set_vocabulary``).
        """
        names = list(names)
        hit = self.cached(names)
        if hit is not None:
            return hit
        settings = self.text_encoder
        dim = clip_text_embed_dim(settings["clip_model_name"])
        path = text_cache.text_embeddings_cache_path(
            names, settings["clip_model_name"], settings["pretrained"], settings.get("templates", "vild"),
            settings.get("cache_dir", ""), settings.get("this_is", False),
        )
        if persist:  # reads the cache, or builds and writes it (unwritable: one warning, continues)
            embeddings = text_cache.load_text_embeddings(names, **settings)
        elif os.path.isfile(path):
            try:
                embeddings = load_text_embeddings_file(path, names, settings["clip_model_name"], dim)
            except (ValueError, OSError) as e:  # a corrupt cache entry is never used
                logger.warning("Text-embedding cache file %s cannot be used (%s); embedding the names again.", path, e)
                embeddings = self.encode(names)
        else:
            embeddings = self.encode(names)
        self.remember(names, embeddings)
        return embeddings

    def encode(self, names: Sequence[str]) -> torch.Tensor:
        """[K, D] embeddings of ``names`` with the resident text tower (loaded at the first call); no file written."""
        settings = self.text_encoder
        templates = resolve_templates(settings.get("templates", "vild"))
        model, tokenizer = self._text_tower()
        check_prompt_context(list(names), templates, tokenizer)
        embeddings = encode_text_embeddings(model, tokenizer, list(names), templates,
                                            this_is=settings.get("this_is", False))
        self.encodes += 1
        check_text_embeddings(embeddings, len(names), clip_text_embed_dim(settings["clip_model_name"]),
                              f"{settings['clip_model_name']} text tower")
        return embeddings

    def _text_tower(self):
        with self._lock:
            if self._model is None:
                settings = self.text_encoder
                # Same RNG fork as load_text_embeddings: building the tower leaves the global RNG untouched.
                with torch.random.fork_rng(devices=[]):
                    model = create_clip_model(settings["clip_model_name"], settings["pretrained"],
                                              device=resolve_device(self.device),
                                              cache_dir=settings.get("clip_cache_dir", ""))
                model.visual = None  # only the text tower is kept in memory
                model.eval()
                self._tokenizer = open_clip.get_tokenizer(settings["clip_model_name"])
                self._model = model
                self.loads += 1
            return self._model, self._tokenizer
