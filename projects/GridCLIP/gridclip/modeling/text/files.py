"""
Text-embedding files: the [K, D] matrix check, the safetensors format GridCLIP writes (names and
CLIP model in its metadata), and the readers of user files (.safetensors, .pt/.pth with
``weights_only=True``, .npy without pickle). Nothing is unpickled.
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ...file_io import atomic_write, safe_torch_load

__all__ = ["check_text_embeddings", "save_text_embeddings", "load_text_embeddings_file"]

FILE_FORMAT = "gridclip-text-embeddings"
_TENSOR_KEY = "text_embeddings"


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
    Write text embeddings as a safetensors file (atomically, :func:`gridclip.file_io.atomic_write`), recording the
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
        "format": FILE_FORMAT,
        "model_name": model_name,
        "class_names": json.dumps(list(class_names)),
    }
    metadata.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda tmp_path: save_file({_TENSOR_KEY: embeddings}, tmp_path, metadata=metadata))
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
    obj = safe_torch_load(
        path, "text embeddings",
        advice="Save a plain tensor (or a dict with a 'text_embeddings' tensor), or use .safetensors.",
    )
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
