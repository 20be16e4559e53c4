"""
GridCLIP's data loaders: Detectron2's ``build_detection_{train,test}_loader`` with
:class:`~gridclip.data.mapper.GridCLIPDatasetMapper`.

The training loader puts every annotation in the TRAINING-vocabulary index space
(``MODEL.GRIDCLIP.TRAIN_VOCABULARY``; ``""`` = the first training dataset's classes): each dataset's
classes are matched to the vocabulary by name (compared as the text prompts see them,
:func:`gridclip.vocabulary.clean_category_name`; LVIS synonyms accepted). A category absent from
the vocabulary is an error naming the dataset, the category id and its name, raised when the
loader is built rather than hours into training. Boxes that are
degenerate, non-finite or outside their image are dropped (with one summary warning per dataset)
before images without annotations are filtered (``DATALOADER.FILTER_EMPTY_ANNOTATIONS``).
"""
import logging

from detectron2.data import MetadataCatalog
from detectron2.data.build import (
    build_detection_test_loader,
    build_detection_train_loader,
    filter_images_with_only_crowd_annotations,
    get_detection_dataset_dicts,
)
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler

from ..vocabulary import clean_category_name, resolve_train_vocabulary
from .mapper import GridCLIPDatasetMapper, is_valid_box

__all__ = [
    "build_gridclip_train_loader",
    "build_gridclip_test_loader",
    "get_gridclip_train_dataset_dicts",
    "remap_to_vocabulary",
    "drop_invalid_boxes",
    "build_train_sampler",
]

logger = logging.getLogger(__name__)


def remap_to_vocabulary(dataset_dicts, dataset_name, vocabulary):
    """
    Re-index every annotation's ``category_id`` (the dataset's class index) into ``vocabulary``.

    Args:
        dataset_dicts (list[dict]): dicts of the dataset ``dataset_name``; modified in place (only
            when every annotation maps).
        dataset_name (str): a registered dataset with ``thing_classes`` metadata.
        vocabulary (list[str]): the training vocabulary.

    Returns:
        list[dict]: ``dataset_dicts``.

    Raises:
        ValueError: a category id outside the dataset's classes, or a category whose name is not in
            the vocabulary (the message names the dataset, the ids and their names).
    """
    metadata = MetadataCatalog.get(dataset_name)
    classes = list(metadata.thing_classes)
    synonyms = metadata.get("class_synonyms") or [[] for _ in classes]
    vocabulary_index = {}
    for i, name in enumerate(vocabulary):
        vocabulary_index.setdefault(clean_category_name(str(name)), i)
    index_map = []
    for name, alternatives in zip(classes, synonyms):
        match = None
        for candidate in [name] + list(alternatives):
            match = vocabulary_index.get(clean_category_name(str(candidate)))
            if match is not None:
                break
        index_map.append(match)

    out_of_range, absent = set(), {}
    for record in dataset_dicts:
        for obj in record.get("annotations", []):
            category_id = obj["category_id"]
            if not 0 <= category_id < len(classes):
                out_of_range.add(category_id)
            elif index_map[category_id] is None:
                absent[category_id] = classes[category_id]
    if out_of_range:
        raise ValueError(
            f"Dataset '{dataset_name}' has annotations with category ids {sorted(out_of_range)}, but its "
            f"metadata lists {len(classes)} classes (ids 0..{len(classes) - 1})."
        )
    if absent:
        shown = ", ".join(f"{i} ({absent[i]!r})" for i in sorted(absent)[:20])
        more = f" and {len(absent) - 20} more" if len(absent) > 20 else ""
        raise ValueError(
            f"Dataset '{dataset_name}' has annotations of categories absent from the training vocabulary "
            f"({len(vocabulary)} names): category ids {shown}{more}. Use a vocabulary that contains them "
            "(MODEL.GRIDCLIP.TRAIN_VOCABULARY) or a dataset without them (e.g. the '_base' split)."
        )
    for record in dataset_dicts:  # only once everything is known to map
        for obj in record.get("annotations", []):
            obj["category_id"] = index_map[obj["category_id"]]
    return dataset_dicts


def drop_invalid_boxes(dataset_dicts, dataset_name):
    """
    Remove annotations whose box is degenerate (width/height <= 0), non-finite or entirely outside
    its image; logs one warning per dataset with the count and an example. In place.

    Returns:
        list[dict]: ``dataset_dicts``.
    """
    dropped, example = 0, None
    for record in dataset_dicts:
        annotations = record.get("annotations")
        if not annotations:
            continue
        kept = []
        for obj in annotations:
            if is_valid_box(obj["bbox"], obj["bbox_mode"], record.get("height"), record.get("width")):
                kept.append(obj)
            else:
                dropped += 1
                example = example or (record.get("file_name"), list(obj["bbox"]))
        record["annotations"] = kept
    if dropped:
        logger.warning(
            f"Dataset '{dataset_name}': dropped {dropped} degenerate or out-of-image box(es), "
            f"e.g. {example[1]} in '{example[0]}'."
        )
    return dataset_dicts


def get_gridclip_train_dataset_dicts(cfg, vocabulary=None):
    """
    The training dataset dicts of ``cfg.DATASETS.TRAIN``: invalid boxes dropped, classes in the
    training-vocabulary index space, images without annotations removed when
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``.

    Returns:
        (list[dict], list[str]): the dicts and the training vocabulary.
    """
    per_dataset = []
    for name in cfg.DATASETS.TRAIN:
        dicts = get_detection_dataset_dicts([name], filter_empty=False)
        per_dataset.append((name, drop_invalid_boxes(dicts, name)))
    if vocabulary is None:
        vocabulary = resolve_train_vocabulary(cfg)
    dataset_dicts = []
    for name, dicts in per_dataset:
        dataset_dicts.extend(remap_to_vocabulary(dicts, name, vocabulary))
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        dataset_dicts = filter_images_with_only_crowd_annotations(dataset_dicts)
    if not dataset_dicts:
        raise ValueError(
            f"No training image with annotations in {list(cfg.DATASETS.TRAIN)} "
            "(DATALOADER.FILTER_EMPTY_ANNOTATIONS=True removed every image)."
        )
    return dataset_dicts, vocabulary


def build_train_sampler(cfg, dataset_dicts):
    """``DATALOADER.SAMPLER_TRAIN``: TrainingSampler or RepeatFactorTrainingSampler (LVIS's repeat
    factor sampling with ``DATALOADER.REPEAT_THRESHOLD``, computed in the vocabulary's class space)."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    logger.info(f"Using training sampler {name}")
    if name == "TrainingSampler":
        return TrainingSampler(len(dataset_dicts))
    if name == "RepeatFactorTrainingSampler":
        repeat_factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD
        )
        return RepeatFactorTrainingSampler(repeat_factors)
    raise ValueError(
        f"Unknown DATALOADER.SAMPLER_TRAIN {name!r}; use TrainingSampler or RepeatFactorTrainingSampler."
    )


def build_gridclip_train_loader(cfg, mapper=None):
    """
    Detectron2's training loader over ``cfg.DATASETS.TRAIN`` (see the module docstring) with
    ``GridCLIPDatasetMapper(cfg, is_train=True)`` unless ``mapper`` is given.

    Returns:
        an infinite iterable of lists (``SOLVER.IMS_PER_BATCH`` / world size) of mapped dicts.
    """
    dataset_dicts, vocabulary = get_gridclip_train_dataset_dicts(cfg)
    if mapper is None:
        mapper = GridCLIPDatasetMapper(cfg, is_train=True, num_classes=len(vocabulary))
    return build_detection_train_loader(
        dataset_dicts,
        mapper=mapper,
        sampler=build_train_sampler(cfg, dataset_dicts),
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


def build_gridclip_test_loader(cfg, dataset_name, mapper=None):
    """
    Detectron2's inference loader (batch size 1, every image in order) over ``dataset_name`` with
    ``GridCLIPDatasetMapper(cfg, is_train=False)`` unless ``mapper`` is given.
    """
    dataset_dicts = get_detection_dataset_dicts([dataset_name], filter_empty=False)
    if mapper is None:
        mapper = GridCLIPDatasetMapper(cfg, is_train=False)
    return build_detection_test_loader(dataset_dicts, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS)
