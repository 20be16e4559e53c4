"""
A self-describing weights folder, laid out like a model-hub repository, and its hub-id resolution.

    predictor.save_pretrained("gridclip-world")                   # or tools/export_model.py --format folder
    predictor = GridCLIPPredictor.from_pretrained("gridclip-world")           # a folder
    predictor = GridCLIPPredictor.from_pretrained("org/gridclip-r50")         # a hub id (huggingface_hub)

Layout (everything inference needs; nothing outside the folder is read)::

    README.md                     model card (hub front matter, usage, text encoder, classes, numbers)
    config.yaml                   the Detectron2/GridCLIP config; its file paths are relative to the folder
    model.safetensors             the detector's weights (metadata: training and default class names)
    class_names.json              {"class_names": [...] (the default vocabulary), "train_class_names": [...]}
    class_embeddings.safetensors  text embeddings of class_names (so loading builds none)
    clip/<file>.safetensors       the CLIP weights the backbone and the text encoder are built from
    clip/<model>.json             their open_clip model config (registered when open_clip lacks it)
    manifest.json                 manifest: format version, text-encoder identity, sha256 of every file

Loading verifies the manifest: every file's sha256, the text encoder's identity (open_clip model name,
its model config, the sha256 of its weights) and the class names (those of ``class_names.json``, the
weights' metadata and the embeddings file agree). A hub id ("owner/name", optionally "@revision") goes
through ``huggingface_hub.snapshot_download``; with ``HF_HUB_OFFLINE=1`` only the local hub cache is read.
The image teacher is a training-time component and is not shipped.
"""
import json
import logging
import os
import re
import shutil
from typing import List, Optional

import torch

from .checkpoint import TEST_VOCABULARY_KEY, VOCABULARY_KEY
from .file_io import atomic_write, atomic_write_json, atomic_write_text, read_json, sha256_file

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "read_weights",
    "save_weights_safetensors",
    "save_pretrained",
    "resolve_pretrained_folder",
    "read_manifest",
    "load_pretrained",
    "export_weights_folder",
]

logger = logging.getLogger(__name__)

FORMAT = "gridclip-weights-folder"
FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
CLASS_NAMES_FILE = "class_names.json"
EMBEDDINGS_FILE = "class_embeddings.safetensors"
MANIFEST_FILE = "manifest.json"
MODEL_CARD_FILE = "README.md"
CLIP_DIR = "clip"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


# ---------------------------------------------------------------------------------------------- weights
def save_weights_safetensors(path, state_dict, train_class_names=None, test_class_names=None) -> str:
    """Write a model state dict as safetensors (atomic), the class names in its metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    metadata = {"format": "gridclip"}
    if train_class_names is not None:
        metadata[VOCABULARY_KEY] = json.dumps(list(train_class_names))
    if test_class_names is not None:
        metadata[TEST_VOCABULARY_KEY] = json.dumps(list(test_class_names))
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def read_weights(checkpointer, path) -> dict:
    """
    The checkpoint dict of ``path`` as ``GridCLIPCheckpointer.read`` returns it; a ``.safetensors``
    file (:func:`save_weights_safetensors`) is read without pickle, its class names from its metadata.
    """
    if not str(path).endswith(".safetensors"):
        return checkpointer.read(path)
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint {path} not found (MODEL.WEIGHTS).")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types on a truncated or foreign file
        raise ValueError(f"Checkpoint {path} is not a readable safetensors file ({type(e).__name__}: {e}).") from None
    checkpoint = {"model": state}
    for key in (VOCABULARY_KEY, TEST_VOCABULARY_KEY):
        if key in metadata:
            checkpoint[key] = json.loads(metadata[key])
    return checkpoint


# ---------------------------------------------------------------------------------------------- saving
def _copy_file(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _clip_entry(folder, model_name, pretrained, files):
    """Ship one CLIP's weights (a local file) and open_clip config; returns (config value, manifest entry)."""
    import open_clip

    entry = {"model_name": model_name, "pretrained": pretrained, "model_config": None}
    if model_name in open_clip.list_models():
        entry["model_config"] = open_clip.get_model_config(model_name)
        config_rel = f"{CLIP_DIR}/{re.sub(r'[^A-Za-z0-9._-]+', '_', model_name)}.json"
        if config_rel not in files:
            atomic_write_json(os.path.join(folder, config_rel), entry["model_config"])
            files[config_rel] = None
        entry["model_config_file"] = config_rel
    if pretrained and os.path.isfile(pretrained):
        rel = f"{CLIP_DIR}/{os.path.basename(pretrained)}"
        if rel not in files:
            _copy_file(pretrained, os.path.join(folder, rel))
            files[rel] = None
        entry["pretrained"] = rel
    elif pretrained:
        logger.warning("CLIP weights %r of %s are not a local file: the folder needs them from open_clip's cache.",
                       pretrained, model_name)
    return entry["pretrained"], entry


def _model_card(name, manifest, class_names, metrics):
    text = manifest["text_encoder"]
    lines = [
        "---", "library_name: gridclip", "pipeline_tag: zero-shot-object-detection",
        "tags:", "- object-detection", "- open-vocabulary", "- detectron2", "- gridclip", "---", "",
        f"# {name}", "",
        "A GridCLIP open-vocabulary detector (one-stage FCOS detector whose classifier is a cosine against CLIP "
        "text embeddings, so the vocabulary is chosen at run time), saved as a self-describing weights folder.",
        "", "## Use", "", "```python", "from gridclip import GridCLIPPredictor, Exemplar",
        f'predictor = GridCLIPPredictor.from_pretrained("{name}")',
        'result = predictor("image.jpg")            # the default vocabulary below',
        'predictor.set_vocabulary(["red striped circle", Exemplar("other.jpg", (10, 10, 60, 60), "that")])',
        "```", "", f"`python tools/demo.py --weights-folder {name} --input image.jpg --output vis/`", "",
        "## Text encoder", "",
        f"open_clip `{text['model_name']}`, weights `{text['pretrained']}` (sha256 `{text.get('sha256') or '-'}`), "
        f"prompt templates `{text['templates']}`; embedding dim {manifest['embed_dim']}.", "",
        f"## Classes ({len(class_names)} by default; any names or image exemplars at run time)", "",
        ", ".join(class_names[:60]) + (f", ... ({len(class_names) - 60} more)" if len(class_names) > 60 else ""), "",
    ]
    if metrics:
        lines += ["## Evaluation", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    lines += ["## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| `{f}` | `{h[:16]}…` |" for f, h in sorted(manifest["files"].items())]
    return "\n".join(lines) + "\n"


def save_pretrained(source, folder, weights=None, class_names=None, metrics=None, name=None,
                    overwrite=False) -> str:
    """
    Write a weights folder (layout in the module doc).

    Args:
        source: a :class:`gridclip.GridCLIPPredictor` (its config, model and vocabulary), or a GridCLIP
            config (CfgNode, or a YAML path) together with ``weights`` (a checkpoint file).
        folder: the output folder (created; must be empty or new unless ``overwrite``).
        class_names: the folder's default vocabulary (default: the predictor's, else the checkpoint's
            test then training names); text names only.
        metrics: optional {name: value} shown in the model card (e.g. the embedded default's AP).
        name: the model card's title / usage id (default: the folder's name).

    Returns:
        The folder's path.
    """
    from .config import get_gridclip_cfg
    from .modeling.text import cache as text_cache
    from .modeling.text.files import save_text_embeddings
    from .predictor import GridCLIPPredictor

    if isinstance(source, GridCLIPPredictor):
        predictor = source
    else:
        if weights is None:
            raise ValueError("save_pretrained(config, folder, weights=...): a config needs its checkpoint file.")
        cfg = source if not isinstance(source, (str, os.PathLike)) else get_gridclip_cfg(os.fspath(source))
        config_path = os.path.join(os.fspath(folder) + ".config.tmp.yaml")
        atomic_write_text(config_path, cfg.dump())
        try:
            predictor = GridCLIPPredictor(config_path, weights, vocabulary=class_names, device="cpu")
        finally:
            os.remove(config_path)
    folder = os.path.abspath(os.fspath(folder))
    if os.path.isdir(folder) and os.listdir(folder) and not overwrite:
        raise FileExistsError(f"{folder} exists and is not empty: choose a new folder (or pass overwrite=True).")
    os.makedirs(os.path.join(folder, CLIP_DIR), exist_ok=True)
    names = list(class_names) if class_names is not None else predictor.vocabulary
    if any(not isinstance(n, str) for n in names):
        raise TypeError("save_pretrained: class_names are text names (exemplars are a run-time vocabulary).")
    model = predictor.model
    cfg = predictor.cfg.clone()
    cfg.defrost()
    files = {}
    clip_pretrained, backbone = _clip_entry(folder, cfg.MODEL.CLIP.MODEL_NAME, cfg.MODEL.CLIP.PRETRAINED, files)
    cfg.MODEL.CLIP.PRETRAINED = clip_pretrained
    gc = cfg.MODEL.GRIDCLIP
    if gc.TEXT_ENCODER.MODEL_NAME:
        gc.TEXT_ENCODER.PRETRAINED, text = _clip_entry(folder, gc.TEXT_ENCODER.MODEL_NAME, gc.TEXT_ENCODER.PRETRAINED, files)
    else:
        text = dict(backbone)
    text["is_backbone_clip"] = not gc.TEXT_ENCODER.MODEL_NAME
    teacher = {"model_name": gc.TEACHER.MODEL_NAME, "pretrained": os.path.basename(gc.TEACHER.PRETRAINED),
               "shipped": False}
    gc.TEACHER.PRETRAINED = ""  # training only
    cfg.MODEL.WEIGHTS = WEIGHTS_FILE
    gc.TEST_VOCABULARY = ""
    cfg.OUTPUT_DIR = "./output"
    atomic_write_text(os.path.join(folder, CONFIG_FILE), cfg.dump())
    files[CONFIG_FILE] = None
    save_weights_safetensors(os.path.join(folder, WEIGHTS_FILE), model.state_dict(),
                             getattr(model, "train_class_names", None), names)
    files[WEIGHTS_FILE] = None
    atomic_write_json(os.path.join(folder, CLASS_NAMES_FILE),
                      {"class_names": names, "train_class_names": list(getattr(model, "train_class_names", []))})
    files[CLASS_NAMES_FILE] = None
    save_text_embeddings(os.path.join(folder, EMBEDDINGS_FILE), predictor.text_embeddings(names), names,
                         text["model_name"], extra_metadata={"templates": json.dumps(gc.PROMPT_TEMPLATES)})
    files[EMBEDDINGS_FILE] = None
    for rel in files:
        files[rel] = sha256_file(os.path.join(folder, rel))
    text.update(templates=gc.PROMPT_TEMPLATES, this_is=bool(gc.PROMPT_THIS_IS),
                sha256=files.get(text["pretrained"]))
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "gridclip_version": __import__("gridclip").__version__,
        "embed_dim": int(predictor.embed_dim), "num_classes": len(names),
        "text_encoder": text, "backbone_clip": backbone, "teacher": teacher, "files": files,
    }
    atomic_write_json(os.path.join(folder, MANIFEST_FILE), manifest)
    card = _model_card(name or os.path.basename(folder), manifest, names, metrics)
    atomic_write_text(os.path.join(folder, MODEL_CARD_FILE), card)
    logger.info("Wrote the weights folder %s (%d files)", folder, len(files) + 2)
    return folder


# ---------------------------------------------------------------------------------------------- loading
def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def resolve_pretrained_folder(folder_or_hub_id, cache_dir=None) -> str:
    """
    A local folder as is; a hub id ``owner/name[@revision]`` → its snapshot folder via
    ``huggingface_hub.snapshot_download`` (``HF_HUB_OFFLINE=1``: the local hub cache only, no network).
    """
    spec = os.fspath(folder_or_hub_id)
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        return os.path.abspath(path)
    if os.path.exists(path):
        raise NotADirectoryError(f"{spec} is a file; from_pretrained takes a weights folder or a hub id (owner/name).")
    if not _HUB_ID.match(spec):
        raise FileNotFoundError(f"{spec!r} is neither an existing weights folder nor a model-hub id (owner/name).")
    from huggingface_hub import snapshot_download

    repo_id, _, revision = spec.partition("@")
    offline = _hub_offline()
    try:
        return snapshot_download(repo_id, revision=revision or None, cache_dir=cache_dir, local_files_only=offline)
    except Exception as e:  # huggingface_hub's errors: not cached, offline, not found, no network
        where = "in the local hub cache (HF_HUB_OFFLINE=1: no download tried)" if offline else "on the hub or in its cache"
        raise FileNotFoundError(
            f"Weights {spec!r}: no folder of that name, and hub repository {repo_id!r} was not found {where} "
            f"({type(e).__name__}). Download it once with network (huggingface-cli download {repo_id}) or pass a folder."
        ) from None


def read_manifest(folder) -> dict:
    """The folder's ``manifest.json``, its files checked against their sha256."""
    path = os.path.join(folder, MANIFEST_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{folder} is not a GridCLIP weights folder: {MANIFEST_FILE} is missing (write one with "
            "save_pretrained or tools/export_model.py --format folder)."
        )
    manifest = read_json(path, "weights-folder manifest")
    if manifest.get("format") != FORMAT or int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')} is not a "
                         f"{FORMAT} this gridclip reads (v{FORMAT_VERSION}).")
    for rel, digest in manifest["files"].items():
        file = os.path.join(folder, rel)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"Weights folder {folder}: {rel} is missing (listed in {MANIFEST_FILE}).")
        if sha256_file(file) != digest:
            raise ValueError(f"Weights folder {folder}: {rel} does not match its sha256 in {MANIFEST_FILE} "
                             "(changed or corrupt): copy the folder again.")
    return manifest


def _check_clip_config(folder, entry):
    """Register a shipped open_clip config open_clip lacks; refuse one that differs from the registered."""
    import open_clip

    name, config = entry["model_name"], entry.get("model_config")
    if config is None:
        return
    if name not in open_clip.list_models():
        open_clip.add_model_config(os.path.join(folder, entry["model_config_file"]))
    elif open_clip.get_model_config(name) != config:
        raise ValueError(f"The folder's text encoder {name!r} has another open_clip config than the one registered "
                         "in this process: a different model under the same name.")


def load_pretrained(folder_or_hub_id, device=None, vocabulary=None, confidence_threshold=None,
                    predictor_class=None, opts=(), cache_dir=None):
    """
    A :class:`gridclip.GridCLIPPredictor` from a weights folder or hub id (see the module doc); the
    folder is verified (:func:`read_manifest`, class names, text encoder) before the model is built.

    Args:
        vocabulary: run-time vocabulary (names, a spec, or names mixed with exemplars); None = the
            folder's class names (their shipped text embeddings: no text tower runs).
        opts: more config overrides; cache_dir: the hub cache (None = huggingface_hub's default).
    """
    from .modeling.text import cache as text_cache
    from .modeling.text.files import load_text_embeddings_file
    from .predictor import GridCLIPPredictor, load_predictor_config
    from .vocabulary import validate_vocabulary

    folder = resolve_pretrained_folder(folder_or_hub_id, cache_dir=cache_dir)
    manifest = read_manifest(folder)
    text = manifest["text_encoder"]
    for entry in (manifest["backbone_clip"], text):
        _check_clip_config(folder, entry)
    classes = read_json(os.path.join(folder, CLASS_NAMES_FILE), "class names")
    names = validate_vocabulary(classes["class_names"], f"{folder}/{CLASS_NAMES_FILE}")
    if len(names) != manifest["num_classes"]:
        raise ValueError(f"{folder}: {len(names)} class names but the manifest records {manifest['num_classes']}.")
    embeddings = load_text_embeddings_file(os.path.join(folder, EMBEDDINGS_FILE), expected_names=names,
                                           expected_model=text["model_name"], expected_dim=manifest["embed_dim"])

    def local(value):
        return os.path.join(folder, value) if value and os.path.isfile(os.path.join(folder, value)) else value

    folder_opts = ["MODEL.CLIP.PRETRAINED", local(manifest["backbone_clip"]["pretrained"])]
    if not text.get("is_backbone_clip", True):
        folder_opts += ["MODEL.GRIDCLIP.TEXT_ENCODER.PRETRAINED", local(text["pretrained"])]
    folder_opts += list(opts)
    config_file = os.path.join(folder, CONFIG_FILE)
    cfg = load_predictor_config(config_file, os.path.join(folder, WEIGHTS_FILE), folder_opts, device)
    settings = text_cache.text_encoder_settings(cfg)
    if settings["clip_model_name"] != text["model_name"]:
        raise ValueError(f"{config_file} names text encoder {settings['clip_model_name']!r}, the manifest "
                         f"{text['model_name']!r}: the folder was edited by hand; write it again.")
    _seed_text_cache(names, embeddings, settings)
    cls = predictor_class or GridCLIPPredictor
    return cls(config_file, os.path.join(folder, WEIGHTS_FILE), vocabulary=names if vocabulary is None else vocabulary,
               opts=folder_opts, device=device, confidence_threshold=confidence_threshold)


def _seed_text_cache(names: List[str], embeddings: torch.Tensor, settings: dict) -> Optional[str]:
    """Put the folder's class embeddings where ``load_text_embeddings`` looks, so no text tower runs for them."""
    from .modeling.text import cache as text_cache
    from .modeling.text.files import save_text_embeddings

    keys = {k: settings[k] for k in ("clip_model_name", "pretrained", "templates", "cache_dir") if k in settings}
    path = text_cache.text_embeddings_cache_path(names, this_is=settings.get("this_is", False), **keys)
    if os.path.isfile(path):
        return path
    try:
        save_text_embeddings(path, embeddings, names, settings["clip_model_name"])
    except OSError as e:  # a read-only cache: the text tower builds them instead
        logger.warning("Could not seed the text-embedding cache at %s (%s); building them instead.", path, e)
        return None
    return path


def export_weights_folder(config_file, output, vocabulary=None, opts=(), metrics=None) -> str:
    """``tools/export_model.py --format folder``: the config + MODEL.WEIGHTS (in ``opts`` or the config) as a
    weights folder at ``output`` (``vocabulary``: its default class names; None = the config's test vocabulary)."""
    from .predictor import GridCLIPPredictor

    output = os.path.abspath(os.fspath(output))
    if os.path.isdir(output) and os.listdir(output):
        raise FileExistsError(f"{output} exists and is not empty: choose a new folder for the weights folder.")
    predictor = GridCLIPPredictor(config_file, None, vocabulary=vocabulary, opts=list(opts), device="cpu")
    return save_pretrained(predictor, output, metrics=metrics)
