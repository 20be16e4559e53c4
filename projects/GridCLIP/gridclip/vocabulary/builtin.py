"""
The built-in vocabularies: LVIS v1 (all 1203 and the 866 base categories), COCO (80), VOC (20).

LVIS names are the ``name`` field of Detectron2's ``LVIS_CATEGORIES`` (as ViLD and Detic use them).
Detectron2's own LVIS metadata uses each category's first synonym instead; the two differ for one
category (id 139: name ``bull``, first synonym ``horned_cow``).
"""
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_CLASS_NAMES

__all__ = [
    "BUILTIN_VOCABULARIES",
    "lvis_v1_class_names",
    "lvis_v1_class_frequencies",
    "lvis_v1_base_class_names",
    "coco_class_names",
    "voc_class_names",
]


def _lvis_v1_categories_by_id():
    return sorted(LVIS_CATEGORIES, key=lambda c: c["id"])


def lvis_v1_class_names():
    """The 1203 LVIS v1 category names (``name`` field), in category-id order."""
    return [c["name"] for c in _lvis_v1_categories_by_id()]


def lvis_v1_class_frequencies():
    """LVIS v1 frequency group of each category (``"r"``, ``"c"`` or ``"f"``), aligned with
    :func:`lvis_v1_class_names`."""
    return [c["frequency"] for c in _lvis_v1_categories_by_id()]


def lvis_v1_base_class_names():
    """The 866 LVIS v1 base categories (common + frequent; the 337 rare ones are novel), in
    category-id order: the training vocabulary of the open-vocabulary protocol (ViLD)."""
    return [c["name"] for c in _lvis_v1_categories_by_id() if c["frequency"] in ("c", "f")]


def coco_class_names():
    """The 80 COCO thing classes, in Detectron2's contiguous-id order."""
    return [c["name"] for c in COCO_CATEGORIES if c["isthing"] == 1]


def voc_class_names():
    """The 20 PASCAL VOC classes, in Detectron2's order."""
    return list(VOC_CLASS_NAMES)


#: spec (lower case) -> function returning the names
BUILTIN_VOCABULARIES = {
    "lvis": lvis_v1_class_names,
    "lvis_base": lvis_v1_base_class_names,
    "coco": coco_class_names,
    "voc": voc_class_names,
}
