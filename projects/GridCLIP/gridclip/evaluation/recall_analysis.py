"""
How many of an image's categories does CLIP's image-level embedding "see"? (paper §4.4, Fig. 4)

For each image of an LVIS-format dataset, the CLIP image embedding (image tower + projection, the
same computation as the GridCLIP teacher) is matched by cosine similarity against the text
embeddings of ALL categories; recall@k of the image is the fraction of its ground-truth categories
(categories with at least one annotation in the image) among the k best-scoring categories. k is
capped at the number of categories. Images without annotations count in the histogram of
categories per image (Fig. 4a) but not in the recall averages.

Library: :func:`recall_at_k` (pure tensor computation), :func:`summarize_recall`,
:func:`analyze_clip_recall` (reads the dataset, encodes the images, builds/loads the text
embeddings). Tool: ``tools/analyze_clip_recall.py``; plot: :func:`gridclip.evaluation.plots.plot_clip_recall`.
"""
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_KS", "recall_at_k", "summarize_recall", "load_lvis_image_categories", "analyze_clip_recall"]

DEFAULT_KS = (10, 100, 300)

logger = logging.getLogger(__name__)


def recall_at_k(image_embeddings, text_embeddings, gt_categories, ks=DEFAULT_KS):
    """
    Args:
        image_embeddings (Tensor): [N, D] image embeddings (normalised here).
        text_embeddings (Tensor): [K, D] category text embeddings (normalised here).
        gt_categories (list[Iterable[int]]): for each of the N images, its ground-truth category
            indices in 0..K-1.
        ks (Iterable[int]): the k of recall@k; each is capped at K.

    Returns:
        dict with
        - ``"ks"``: list[int], the requested k; ``"k_effective"``: list[int], min(k, K);
        - ``"num_categories"``: np.ndarray [N] int, #GT categories per image;
        - ``"hits"``: {k: np.ndarray [N] int}, #GT categories among the top-k;
        - ``"recall"``: {k: np.ndarray [N] float}, hits / #GT categories (NaN for images without any).
    """
    image_embeddings = torch.as_tensor(image_embeddings, dtype=torch.float32)
    text_embeddings = torch.as_tensor(text_embeddings, dtype=torch.float32)
    if image_embeddings.dim() != 2 or text_embeddings.dim() != 2:
        raise ValueError(
            f"recall_at_k: expected [N, D] image and [K, D] text embeddings, got {tuple(image_embeddings.shape)} "
            f"and {tuple(text_embeddings.shape)}"
        )
    if image_embeddings.shape[1] != text_embeddings.shape[1]:
        raise ValueError(
            f"recall_at_k: image embeddings have {image_embeddings.shape[1]} dims but text embeddings "
            f"{text_embeddings.shape[1]}; they must come from the same CLIP model."
        )
    num_images, num_classes = image_embeddings.shape[0], text_embeddings.shape[0]
    if len(gt_categories) != num_images:
        raise ValueError(f"recall_at_k: {num_images} image embeddings but {len(gt_categories)} ground-truth lists")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"recall_at_k: ks must be positive integers, got {ks}")
    k_effective = [min(k, num_classes) for k in ks]

    scores = F.normalize(image_embeddings, dim=-1) @ F.normalize(text_embeddings, dim=-1).T  # [N, K]
    # rank[i, c] = position of category c in image i's ranking (0 = best).
    order = scores.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(num_classes).expand(num_images, -1).contiguous())

    num_categories = np.zeros(num_images, dtype=np.int64)
    hits = {k: np.zeros(num_images, dtype=np.int64) for k in ks}
    for i, categories in enumerate(gt_categories):
        categories = sorted({int(c) for c in categories})
        if categories and (categories[0] < 0 or categories[-1] >= num_classes):
            raise ValueError(f"recall_at_k: image {i} has category index {categories} outside 0..{num_classes - 1}")
        num_categories[i] = len(categories)
        if categories:
            ranks = rank[i, categories]
            for k, k_eff in zip(ks, k_effective):
                hits[k][i] = int((ranks < k_eff).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = {k: np.where(num_categories > 0, hits[k] / np.maximum(num_categories, 1), np.nan) for k in ks}
    return {"ks": ks, "k_effective": k_effective, "num_categories": num_categories, "hits": hits, "recall": recall}


def summarize_recall(per_image):
    """
    Aggregate :func:`recall_at_k`'s output into JSON-ready numbers.

    Returns:
        dict with ``ks``, ``k_effective``, ``num_images``, ``num_images_with_categories``,
        ``mean_recall`` {"recall@k": mean over images with ≥ 1 category}, ``mean_hits``,
        ``categories_per_image`` {"num_categories", "num_images", "percent"} (Fig. 4a) and
        ``recall_by_num_categories`` {"num_categories", "num_images", "recall@k": [...]} (Fig. 4b-d).
    """
    n = per_image["num_categories"]
    has_gt = n > 0
    summary = {
        "ks": list(per_image["ks"]),
        "k_effective": list(per_image["k_effective"]),
        "num_images": int(len(n)),
        "num_images_with_categories": int(has_gt.sum()),
        "mean_recall": {},
        "mean_hits": {},
    }
    for k in per_image["ks"]:
        summary["mean_recall"][f"recall@{k}"] = float(per_image["recall"][k][has_gt].mean()) if has_gt.any() else None
        summary["mean_hits"][f"hits@{k}"] = float(per_image["hits"][k][has_gt].mean()) if has_gt.any() else None
    values, counts = np.unique(n, return_counts=True)
    summary["categories_per_image"] = {
        "num_categories": values.tolist(),
        "num_images": counts.tolist(),
        "percent": (100.0 * counts / max(len(n), 1)).tolist(),
    }
    buckets = [int(v) for v in values if v > 0]
    by_bucket = {"num_categories": buckets, "num_images": [int((n == v).sum()) for v in buckets]}
    for k in per_image["ks"]:
        by_bucket[f"recall@{k}"] = [float(per_image["recall"][k][n == v].mean()) for v in buckets]
    summary["recall_by_num_categories"] = by_bucket
    return summary


def load_lvis_image_categories(json_file, image_root):
    """
    Read an LVIS-format dataset with Detectron2's ``load_lvis_json``.

    Returns:
        (class_names, category_ids, records): names and LVIS ids of the K categories in id order, and
        per image ``{"image_id", "file_name", "categories": sorted category indices 0..K-1}``.
    """
    from detectron2.data.datasets.lvis import load_lvis_json
    from lvis import LVIS

    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"LVIS-format annotation file not found: {json_file}")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"Image folder not found: {image_root}")
    categories = sorted(LVIS(json_file).dataset["categories"], key=lambda c: c["id"])
    category_ids = [c["id"] for c in categories]
    index_of = {cat_id: i for i, cat_id in enumerate(category_ids)}
    # load_lvis_json builds paths as image_root + <split folder of coco_url>: the root needs its "/".
    dicts = load_lvis_json(json_file, os.path.join(image_root, ""), dataset_name=None)
    records = []
    for d in dicts:
        # load_lvis_json makes category ids 0-based (LVIS id - 1).
        cats = sorted({index_of[obj["category_id"] + 1] for obj in d.get("annotations", [])})
        records.append({"image_id": d["image_id"], "file_name": d["file_name"], "categories": cats})
    return [c["name"] for c in categories], category_ids, records


def _read_image(path):
    from detectron2.data.detection_utils import read_image

    try:
        array = read_image(path, format="RGB")
    except (OSError, ValueError) as e:
        raise RuntimeError(f"Could not read image {path}: {e}") from e
    return torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1)  # copy: writable


def analyze_clip_recall(
    json_file,
    image_root,
    clip_model_name,
    pretrained,
    ks=DEFAULT_KS,
    templates="vild",
    text_embeddings=None,
    batch_size=32,
    device=None,
    max_images=None,
    cache_dir="",
    progress=False,
):
    """
    Fig. 4 analysis of one CLIP model on one LVIS-format dataset.

    Args:
        json_file, image_root: the dataset (LVIS v1 val: ``lvis/lvis_v1_val.json`` and ``coco/``).
        clip_model_name, pretrained: the CLIP model (e.g. "ViT-B-32-quickgelu", "openai").
        ks: the k of recall@k (capped at the number of categories).
        templates: prompt templates for the text embeddings (see text_embeddings.resolve_templates).
        text_embeddings (Tensor or None): [K, D] precomputed category embeddings in category-id
            order; None = :func:`gridclip.modeling.text.cache.load_text_embeddings` (cached).
        batch_size (int): images per encoder call.
        device: None = CUDA when available, else CPU.
        max_images (int or None): analyse only the first images (quick looks).
        cache_dir (str): text-embedding cache folder ("" = default).
        progress (bool): show a progress bar.

    Returns:
        dict: :func:`summarize_recall` plus ``clip_model``, ``pretrained``, ``json_file``,
        ``num_classes`` and ``per_image`` (list of {"image_id", "num_categories", "hits@k", "recall@k"}).
    """
    from ..modeling.teacher import CLIPImageTeacher

    class_names, _, records = load_lvis_image_categories(json_file, image_root)
    if max_images is not None:
        records = records[: int(max_images)]
    if not records:
        raise ValueError(f"No images in {json_file}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"

    if text_embeddings is None:
        from ..modeling.text.cache import load_text_embeddings

        text_embeddings = load_text_embeddings(
            class_names, clip_model_name, pretrained, templates=templates, cache_dir=cache_dir, device=device,
            progress=progress,
        )
    text_embeddings = torch.as_tensor(text_embeddings, dtype=torch.float32)
    if text_embeddings.shape[0] != len(class_names):
        raise ValueError(
            f"text_embeddings has {text_embeddings.shape[0]} rows but {json_file} has {len(class_names)} categories"
        )

    encoder = CLIPImageTeacher(clip_model_name, pretrained, device=device)
    chunks = range(0, len(records), batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc=f"CLIP image embeddings ({clip_model_name})", unit="batch")
    embeddings = []
    for start in chunks:
        images = [_read_image(r["file_name"]) for r in records[start:start + batch_size]]
        embeddings.append(encoder.encode(images).cpu())
    del encoder
    image_embeddings = torch.cat(embeddings)

    per_image = recall_at_k(image_embeddings, text_embeddings, [r["categories"] for r in records], ks)
    result = {
        "clip_model": clip_model_name,
        "pretrained": pretrained,
        "json_file": os.path.abspath(json_file),
        "num_classes": len(class_names),
    }
    result.update(summarize_recall(per_image))
    result["per_image"] = [
        dict(
            {"image_id": r["image_id"], "num_categories": int(per_image["num_categories"][i])},
            **{f"hits@{k}": int(per_image["hits"][k][i]) for k in per_image["ks"]},
            **{
                f"recall@{k}": (None if np.isnan(per_image["recall"][k][i]) else float(per_image["recall"][k][i]))
                for k in per_image["ks"]
            },
        )
        for i, r in enumerate(records)
    ]
    logger.info(
        f"{clip_model_name} ({pretrained or 'random init'}): "
        + ", ".join(f"{key} {100 * v:.1f}%" for key, v in result["mean_recall"].items() if v is not None)
        + f" over {result['num_images_with_categories']} images"
    )
    return result
