"""
Build an open_clip CLIP model from ``(model_name, pretrained)`` as GridCLIP's configs name it.

``pretrained`` is one of:

- ``""``: random initialisation, seeded (``RANDOM_INIT_SEED``) so that the backbone, the text tower
  used for text embeddings and any cache built from them agree across processes and runs;
- an open_clip pretrained tag such as ``"openai"``: open_clip's own download/cache path, unchanged;
- a local file: a plain state dict (``.pt/.pth/.bin``, loaded with ``weights_only=True``, optionally
  under a ``"state_dict"`` key and with a DDP ``module.`` prefix), a ``.safetensors`` file, or an
  OpenAI TorchScript archive (loaded only through open_clip's ``load_openai_model``).
"""
import contextlib
import logging
import os
import zipfile

import open_clip
import torch

from ..file_io import safe_torch_load
from . import clip_configs  # noqa: F401  (registers the tiny configs)

__all__ = ["create_clip_model", "RANDOM_INIT_SEED", "is_torchscript_archive", "pretrained_identity"]

RANDOM_INIT_SEED = 0


def is_torchscript_archive(path):
    """True if ``path`` is a TorchScript zip archive (OpenAI's original CLIP release format)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def pretrained_identity(pretrained):
    """A string identifying the weights, for cache keys: the tag, or the file's path, size and mtime."""
    if pretrained and os.path.isfile(pretrained):
        stat = os.stat(pretrained)
        return f"file:{os.path.abspath(pretrained)}:{stat.st_size}:{int(stat.st_mtime)}"
    return f"tag:{pretrained or 'random-init'}"


def model_config_identity(model_name):
    """The open_clip config of a registered model, for cache keys (None for other names): a registered
    config edited in place (the world CLIPs' text context went 48 -> 40) changes the key, which the name
    alone and a random init's "tag" cannot."""
    return open_clip.get_model_config(model_name) if model_name in open_clip.list_models() else None


def _check_model_name(model_name):
    if model_name not in open_clip.list_models():
        raise ValueError(
            f"Unknown open_clip model {model_name!r}. Use a name from open_clip.list_models() "
            "(e.g. 'RN50-quickgelu', 'ViT-B-32-quickgelu') or a GridCLIP tiny config "
            f"({clip_configs.TINY_BACKBONE_CLIP!r}, {clip_configs.TINY_TEACHER_CLIP!r})."
        )


def _load_state_dict_file(path):
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as e:  # truncated / not safetensors: name the file, not just the parser's error
            raise ValueError(
                f"Cannot read CLIP weights from {path}: {e}. The file is truncated or corrupt; copy it again "
                "(a world CLIP: run tools/pretrain_clip.py, which pretrains a damaged cache entry again)."
            ) from None
    state = safe_torch_load(path, what="CLIP weights", advice=(
        "Expected a state dict saved with torch.save (tensors only), a .safetensors file, or an OpenAI "
        "TorchScript archive."))
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise RuntimeError(f"{path} does not hold a state dict (found {type(state).__name__}).")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


class _NoRandomInitWarning(logging.Filter):
    def filter(self, record):
        return not record.getMessage().startswith("No pretrained weights loaded for model")


@contextlib.contextmanager
def _no_random_init_warning():
    """Silence open_clip's "No pretrained weights loaded ... initialized randomly" (root logger) meanwhile."""
    root, quiet = logging.getLogger(), _NoRandomInitWarning()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def create_clip_model(model_name, pretrained="", device="cpu", cache_dir=""):
    """
    Args:
        model_name (str): open_clip model name, e.g. "RN50-quickgelu".
        pretrained (str): "", an open_clip tag ("openai"), or a local file (see module doc).
        device: where to put the model.
        cache_dir (str): open_clip download cache ("" = open_clip's default).

    Returns:
        open_clip ``CLIP`` model in eval mode, fp32.
    """
    _check_model_name(model_name)
    if not pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    elif os.path.isfile(pretrained):
        if is_torchscript_archive(pretrained):
            model = open_clip.load_openai_model(pretrained, device="cpu", precision="fp32")
        else:
            with _no_random_init_warning():  # the local file's weights are loaded right below
                model = open_clip.create_model(model_name, pretrained=None, device="cpu")
            state = _load_state_dict_file(pretrained)
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise RuntimeError(
                    f"The CLIP weights in {pretrained} do not fit open_clip model {model_name!r}: {e}"
                ) from e
    elif os.path.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise FileNotFoundError(f"CLIP weights file not found: {pretrained}")
    else:
        try:
            model = open_clip.create_model(
                model_name, pretrained=pretrained, device="cpu", cache_dir=cache_dir or None,
                require_pretrained=True,
            )
        except Exception as e:
            raise RuntimeError(
                f"Could not load pretrained weights {pretrained!r} for {model_name!r}: {e}. Without network "
                "access, download the weights on another machine (open_clip caches them under HF_HOME) or "
                "set the config's PRETRAINED to a local file."
            ) from e
    return model.to(device).eval().float()
