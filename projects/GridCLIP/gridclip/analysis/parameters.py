"""
Inference parameter counts with a per-part breakdown, for GridCLIP and Detectron2's FCOS, and the
paper-config variants compared with the paper's 56.4 M (GridCLIP-R50, Table 2).

The paper's 56.4 M (identical for the ViT-B/32 and RN50x64 teachers: the teacher is not part of the
model) is matched within 0.2 % only by P6/P7 from [z', C5] with a 512-d class-embedding output
(configs/GridCLIP-R50-FPN-2x-512d.yaml); no 1024-d variant comes within 2 %.

With grid alignment the text embeddings are buffers, not parameters, so the vocabulary does not
change the count (:func:`random_weights_config` scores a 2-name vocabulary with one template to
skip encoding the real vocabularies). The image head is trained but not used at inference: listed,
not counted.
"""
import os

from detectron2.modeling import build_model
from fvcore.nn import parameter_count

from ..config import get_gridclip_cfg

__all__ = [
    "PAPER_INFERENCE_PARAMETERS",
    "PAPER_VARIANTS",
    "MATCH_TOLERANCE",
    "parameter_breakdown",
    "fcos_parameter_breakdown",
    "parameters_entry",
    "inference_count",
    "frozen_bn_affine_count",
    "random_weights_config",
    "build_random_model",
    "count_paper_variants",
    "format_breakdown",
    "format_paper_variants",
]

PAPER_INFERENCE_PARAMETERS = 56.4e6

#: (label, config file relative to the repository, overrides): the architecture choices the paper leaves
#: open (where P6/P7 come from; which CLIP's text space the class embeddings live in)
PAPER_VARIANTS = [
    ("P6/P7 from P5, 1024-d class embeddings (RN50 text)", "configs/GridCLIP-R50-FPN-2x.yaml",
     ["MODEL.FPN.TOP_BLOCK_IN", "p5"]),
    ("P6/P7 from [z', C5], 1024-d (RN50 text): GridCLIP-R50-FPN-2x.yaml", "configs/GridCLIP-R50-FPN-2x.yaml", []),
    ("P6/P7 from P5, 512-d (ViT-B/32 text)", "configs/GridCLIP-R50-FPN-2x-512d.yaml",
     ["MODEL.FPN.TOP_BLOCK_IN", "p5"]),
    ("P6/P7 from [z', C5], 512-d (ViT-B/32 text): GridCLIP-R50-FPN-2x-512d.yaml",
     "configs/GridCLIP-R50-FPN-2x-512d.yaml", []),
    ("GridCLIP-R50-RN (RN50x64 teacher, training only): GridCLIP-R50-RN-FPN-2x.yaml",
     "configs/GridCLIP-R50-RN-FPN-2x.yaml", []),
]
#: a count "matches" the paper when within this fraction of 56.4 M
MATCH_TOLERANCE = 0.002

# (part, parameter-name prefixes, prefixes to subtract, training only)
_PARTS = [
    ("bottom-up trunk", ["backbone.bottom_up"], ["backbone.bottom_up.attnpool", "backbone.bottom_up.grid_adapter"], False),
    ("attention pool", ["backbone.bottom_up.attnpool"], [], False),
    ("grid adapter", ["backbone.bottom_up.grid_adapter"], [], False),
    ("FPN (lateral + output convs)", ["backbone"], ["backbone.bottom_up", "backbone.top_block"], False),
    ("FPN P6/P7 top block", ["backbone.top_block"], [], False),
    ("head towers", ["head.cls_subnet", "head.bbox_subnet"], [], False),
    ("cls output (embedding/logit conv)", ["head.cls_score"], [], False),
    ("box output", ["head.bbox_pred", "head.reg_scales"], [], False),
    ("centerness output", ["head.ctrness"], [], False),
    ("cosine classifier (scale, bias)", ["classifier"], [], False),
    ("image head", ["image_head"], [], True),
]


def parameter_breakdown(model):
    """
    Returns:
        list of (part name, parameter count, training_only) for the parts a GridCLIP model has; the
        inference parts add up to every parameter outside the image head.
    """
    counts = parameter_count(model)
    rows = []
    for name, prefixes, minus, training_only in _PARTS:
        n = sum(counts.get(p, 0) for p in prefixes) - sum(counts.get(p, 0) for p in minus)
        if n:
            rows.append((name, n, training_only))
    total = counts[""]
    inference = sum(n for _, n, t in rows if not t)
    training = sum(n for _, n, t in rows if t)
    if inference + training != total:
        raise RuntimeError(f"Parameter breakdown misses {total - inference - training} parameters of the model.")
    return rows


def fcos_parameter_breakdown(model):
    """(part, parameters, training_only) rows for Detectron2's FCOS, in :func:`parameter_breakdown`'s format."""
    counts = parameter_count(model)
    parts = [
        ("bottom-up trunk", counts.get("backbone.bottom_up", 0)),
        ("FPN (lateral + output convs + P6/P7)", counts.get("backbone", 0) - counts.get("backbone.bottom_up", 0)),
        ("head towers", counts.get("head.cls_subnet", 0) + counts.get("head.bbox_subnet", 0)),
        ("cls output (logit conv)", counts.get("head.cls_score", 0)),
        ("box output", counts.get("head.bbox_pred", 0)),
        ("centerness output", counts.get("head.ctrness", 0)),
    ]
    rows = [(name, n, False) for name, n in parts if n]
    if sum(n for _, n, _ in rows) != counts[""]:
        raise RuntimeError("FCOS parameter breakdown does not add up to the model's parameter count.")
    return rows


def inference_count(rows):
    """The inference parameters of a breakdown (the training-only parts left out)."""
    return sum(n for _, n, training_only in rows if not training_only)


def parameters_entry(rows):
    """A breakdown as the benchmark's JSON entry: {"inference_total", "parts": [{part, parameters, training_only}]}."""
    return {
        "inference_total": inference_count(rows),
        "parts": [{"part": name, "parameters": n, "training_only": t} for name, n, t in rows],
    }


def frozen_bn_affine_count(model, exclude_prefixes=("image_head",)):
    """
    Weights + biases of the FrozenBatchNorm2d layers: buffers in Detectron2 (so not in
    ``parameter_count``), but parameters (with requires_grad False) in MMDetection's frozen BN, which
    its parameter counts include.
    """
    from detectron2.layers import FrozenBatchNorm2d

    return sum(
        m.weight.numel() + m.bias.numel()
        for name, m in model.named_modules()
        if isinstance(m, FrozenBatchNorm2d) and not name.startswith(exclude_prefixes)
    )


def random_weights_config(config_file, opts=(), device="cpu"):
    """
    The config's architecture with random weights (backbone CLIP, teacher, MODEL.WEIGHTS) on
    ``device``, frozen. With grid alignment the vocabularies become two names and one template:
    text embeddings are buffers, so they change no parameter count, and encoding LVIS's real
    vocabularies would take hours on a CPU.
    """
    cfg = get_gridclip_cfg(config_file, opts)
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.CLIP.PRETRAINED = ""
    cfg.MODEL.GRIDCLIP.TEACHER.PRETRAINED = ""
    cfg.MODEL.GRIDCLIP.TEXT_ENCODER.PRETRAINED = ""
    if cfg.MODEL.GRIDCLIP.GRID_ALIGN:
        cfg.MODEL.GRIDCLIP.TRAIN_VOCABULARY = "object,thing"
        cfg.MODEL.GRIDCLIP.TEST_VOCABULARY = "object,thing"
        cfg.MODEL.GRIDCLIP.PROMPT_TEMPLATES = "single"
    cfg.freeze()
    return cfg


def build_random_model(config_file, opts=()):
    """The model of :func:`random_weights_config` (CPU)."""
    return build_model(random_weights_config(config_file, opts))


def count_paper_variants(variants=PAPER_VARIANTS, repo_root="."):
    """
    [(label, config file, overrides, inference parameters, + frozen BN affine)] for each paper-config
    variant (config files relative to ``repo_root``): Detectron2's count, and the count as MMDetection
    reports it (BN affine included).
    """
    results = []
    for label, config_file, overrides in variants:
        model = build_random_model(os.path.join(repo_root, config_file), overrides)
        n = inference_count(parameter_breakdown(model))
        results.append((label, config_file, overrides, n, n + frozen_bn_affine_count(model)))
        del model
    return results


def format_breakdown(rows, title):
    """A breakdown as a markdown table, with the paper's 56.4 M and the difference."""
    inference = inference_count(rows)
    lines = [f"## {title}", "", "| part | parameters |", "|---|---:|"]
    for name, n, training_only in rows:
        label = f"{name} (training only, not counted)" if training_only else name
        lines.append(f"| {label} | {n / 1e6:.2f} M |")
    lines.append(f"| **inference total** | **{inference / 1e6:.2f} M** |")
    lines.append(f"| paper (GridCLIP-R50) | {PAPER_INFERENCE_PARAMETERS / 1e6:.1f} M |")
    lines.append(f"| difference | {(inference - PAPER_INFERENCE_PARAMETERS) / 1e6:+.2f} M |")
    return "\n".join(lines)


def _versus_paper(n):
    diff = (n - PAPER_INFERENCE_PARAMETERS) / PAPER_INFERENCE_PARAMETERS
    mark = " (within 0.2 %)" if abs(diff) <= MATCH_TOLERANCE else ""
    return f"{diff * 100:+.2f} %{mark}"


def format_paper_variants(results):
    """:func:`count_paper_variants`' results as a markdown table."""
    lines = [
        "## Inference parameters of the paper-config variants (paper Table 2: 56.4 M)", "",
        "| variant | parameters (Detectron2) | vs 56.4 M | + frozen BN affine (MMDetection's count) | vs 56.4 M |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, _, _, n, n_mmdet in results:
        lines.append(
            f"| {label} | {n / 1e6:.2f} M ({n:,}) | {_versus_paper(n)} | {n_mmdet / 1e6:.2f} M ({n_mmdet:,}) | "
            f"{_versus_paper(n_mmdet)} |"
        )
    return "\n".join(lines)
