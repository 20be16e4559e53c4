"""GridCLIPDatasetMapper and loaders: augmentation, bad data, samplers."""
import copy
import logging

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.data.detection_utils import read_image
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.structures import BoxMode

import gridclip
from gridclip.data.build import (
    build_gridclip_test_loader,
    build_gridclip_train_loader,
    build_train_sampler,
    get_gridclip_train_dataset_dicts,
    remap_to_vocabulary,
)
from gridclip.data.mapper import (
    CorruptImageError,
    GridCLIPDatasetMapper,
    corrupt_image_count,
    corrupt_image_files,
    reset_corrupt_image_count,
)

from .conftest import SMALL_WORLD_KWARGS


@pytest.fixture
def cfg(world_dataset):
    cfg = get_cfg()
    gridclip.add_gridclip_config(cfg)
    cfg.DATASETS.TRAIN = (world_dataset.train_base,)
    cfg.DATASETS.TEST = (world_dataset.val,)
    cfg.INPUT.MIN_SIZE_TRAIN = (80, 96, 112)
    cfg.INPUT.MAX_SIZE_TRAIN = 160
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 128
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    return cfg


def _record(world_dataset, index=0, dataset=None):
    return copy.deepcopy(DatasetCatalog.get(dataset or world_dataset.train_base)[index])


def _xyxy(annotations):
    return np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations], np.float32)


def test_training_output_is_rgb_uint8_chw_with_boxes_and_flip_flag(cfg, world_dataset):
    mapper = GridCLIPDatasetMapper(cfg, is_train=True)
    record = _record(world_dataset)
    np.random.seed(0)  # Detectron2's augmentations draw from numpy's global generator
    seen_flips = set()
    for _ in range(12):
        out = mapper(record)
        image = out["image"]
        assert image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3
        assert min(image.shape[1:]) in (80, 96, 112)
        assert (out["height"], out["width"]) == (record["height"], record["width"])
        assert isinstance(out["flipped"], bool)
        seen_flips.add(out["flipped"])
        boxes = out["instances"].gt_boxes.tensor
        assert len(boxes) == len(record["annotations"])
        scale = image.shape[2] / record["width"]
        expected = torch.from_numpy(_xyxy(record["annotations"])) * scale
        if out["flipped"]:
            expected = torch.stack([image.shape[2] - expected[:, 2], expected[:, 1],
                                    image.shape[2] - expected[:, 0], expected[:, 3]], dim=1)
        assert torch.allclose(boxes, expected, atol=1e-3)
        assert out["instances"].gt_classes.tolist() == [a["category_id"] for a in record["annotations"]]
    assert seen_flips == {True, False}

    # channel order is RGB: the image equals detectron2's RGB read (resized), not BGR
    plain = GridCLIPDatasetMapper(True, augmentations=[], image_format="RGB")(record)
    rgb = read_image(record["file_name"], format="RGB")
    assert np.array_equal(plain["image"].permute(1, 2, 0).numpy(), rgb) and plain["flipped"] is False


def test_flip_mirrors_image_and_boxes(cfg, world_dataset):
    record = _record(world_dataset, index=1)
    plain = GridCLIPDatasetMapper(True, augmentations=[])(record)
    flipped = GridCLIPDatasetMapper(True, augmentations=[T.RandomFlip(prob=1.0)])(record)
    assert flipped["flipped"] is True
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    width = record["width"]
    b = plain["instances"].gt_boxes.tensor
    mirrored = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1)
    assert torch.allclose(flipped["instances"].gt_boxes.tensor, mirrored)


def test_crop_clips_boxes_and_drops_the_ones_outside(world_dataset):
    record = _record(world_dataset, index=2)
    x0, y0, w, h = 20, 10, 48, 40
    out = GridCLIPDatasetMapper(True, augmentations=[T.CropTransform(x0, y0, w, h)])(record)
    assert tuple(out["image"].shape) == (3, h, w)
    boxes = _xyxy(record["annotations"])
    clipped = np.stack([np.clip(boxes[:, 0] - x0, 0, w), np.clip(boxes[:, 1] - y0, 0, h),
                        np.clip(boxes[:, 2] - x0, 0, w), np.clip(boxes[:, 3] - y0, 0, h)], axis=1)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    assert np.allclose(out["instances"].gt_boxes.tensor.numpy(), clipped[keep], atol=1e-4)
    labels = np.array([a["category_id"] for a in record["annotations"]])[keep]
    assert out["instances"].gt_classes.tolist() == labels.tolist()


def test_random_crop_from_config_keeps_only_valid_boxes(cfg, world_dataset):
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = [56, 56]
    mapper = GridCLIPDatasetMapper(cfg, is_train=True)
    for index in range(8):
        out = mapper(_record(world_dataset, index=index))
        assert tuple(out["image"].shape[1:]) == (56, 56)
        boxes = out["instances"].gt_boxes.tensor
        assert ((boxes >= 0) & (boxes <= 56)).all()
        assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()


def test_degenerate_negative_and_out_of_image_boxes_are_dropped(world_dataset):
    record = _record(world_dataset)
    xywh = BoxMode.XYWH_ABS
    record["annotations"] = [
        {"bbox": [10, 10, 20, 20], "bbox_mode": xywh, "category_id": 0},          # valid
        {"bbox": [5, 5, 0, 10], "bbox_mode": xywh, "category_id": 0},             # zero width
        {"bbox": [40, 40, -10, 10], "bbox_mode": xywh, "category_id": 0},         # negative width
        {"bbox": [500, 500, 10, 10], "bbox_mode": xywh, "category_id": 0},        # outside the image
        {"bbox": [float("nan"), 1, 5, 5], "bbox_mode": xywh, "category_id": 0},   # not finite
        {"bbox": [80, -5, 40, 20], "bbox_mode": xywh, "category_id": 1},          # partly outside: clipped
        {"bbox": [1, 1, 5, 5], "bbox_mode": xywh, "category_id": 0, "iscrowd": 1},  # crowd: ignored
    ]
    out = GridCLIPDatasetMapper(True, augmentations=[])(record)
    width = record["width"]
    expected = torch.tensor([[10.0, 10.0, 30.0, 30.0], [80.0, 0.0, float(min(120, width)), 15.0]])
    assert torch.allclose(out["instances"].gt_boxes.tensor, expected)
    assert out["instances"].gt_classes.tolist() == [0, 1]


def test_category_id_outside_the_vocabulary_is_a_clear_error(world_dataset):
    record = _record(world_dataset)
    record["annotations"][0]["category_id"] = 99
    with pytest.raises(ValueError, match="category_id 99.*3 classes"):
        GridCLIPDatasetMapper(True, augmentations=[], num_classes=3)(record)


def test_loader_rejects_categories_absent_from_the_training_vocabulary(world_dataset):
    full = DatasetCatalog.get(world_dataset.train)
    base_vocabulary = MetadataCatalog.get(world_dataset.train_base).thing_classes
    rare = [i for i, f in enumerate(world_dataset.frequencies) if f == "r"]
    with pytest.raises(ValueError) as error:
        remap_to_vocabulary(full, world_dataset.train, base_vocabulary)
    message = str(error.value)
    assert world_dataset.train in message
    for i in rare:
        assert f"{i} ({world_dataset.class_names[i]!r})" in message

    # names match regardless of order, case and underscores
    vocabulary = [n.upper().replace(" ", "_") for n in reversed(world_dataset.class_names)]
    remapped = remap_to_vocabulary(DatasetCatalog.get(world_dataset.train), world_dataset.train, vocabulary)
    k = world_dataset.num_categories
    for before, after in zip(full, remapped):
        assert [k - 1 - a["category_id"] for a in before["annotations"]] == [a["category_id"] for a in after["annotations"]]


@pytest.fixture
def corrupt_dataset(world_dataset, tmp_path):
    """A registered 3-image dataset whose second image is not an image."""
    records = [_record(world_dataset, index=i) for i in range(3)]
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"this is not a jpeg")
    records[1]["file_name"] = str(bad)
    name = "pytest_corrupt_dataset"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: copy.deepcopy(records))
    MetadataCatalog.get(name).set(thing_classes=MetadataCatalog.get(world_dataset.train_base).thing_classes)
    reset_corrupt_image_count()
    yield name, records, str(bad)
    reset_corrupt_image_count()


def test_corrupt_image_is_skipped_counted_and_named(corrupt_dataset, caplog):
    name, records, bad = corrupt_dataset
    mapper = GridCLIPDatasetMapper(True, augmentations=[], skip_corrupt_images=True)
    with caplog.at_level(logging.WARNING, logger="gridclip.data.mapper"):
        assert mapper(records[1]) is None
    assert corrupt_image_count() == 1 and corrupt_image_files() == [bad]
    assert any(bad in r.getMessage() and "Skipping" in r.getMessage() for r in caplog.records)

    # Detectron2's MapDataset (retry path fixed by gridclip.compat) serves another image instead
    dataset = MapDataset(DatasetFromList(records, copy=True), mapper)
    for index in range(3):
        assert dataset[index]["file_name"] != bad
    assert corrupt_image_count() >= 2


def test_corrupt_images_skipped_in_loader_workers_are_counted(cfg, corrupt_dataset):
    name, records, bad = corrupt_dataset
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATALOADER.NUM_WORKERS = 1
    loader = iter(build_gridclip_train_loader(cfg))
    for _ in range(3):
        batch = next(loader)
        assert all(item["file_name"] != bad for item in batch)
    assert corrupt_image_count() >= 1  # counted in the worker process, visible here
    del loader


def test_corrupt_image_fails_with_the_file_name_when_not_skipping(corrupt_dataset):
    name, records, bad = corrupt_dataset
    with pytest.raises(CorruptImageError, match="corrupt.jpg.*SKIP_CORRUPT_IMAGES"):
        GridCLIPDatasetMapper(True, augmentations=[], skip_corrupt_images=False)(records[1])
    # never skipped at inference: every test image must be evaluated
    with pytest.raises(CorruptImageError, match="corrupt.jpg"):
        GridCLIPDatasetMapper(False, augmentations=[], skip_corrupt_images=True)(records[1])
    missing = dict(records[0], file_name=bad.replace("corrupt.jpg", "missing.jpg"))
    with pytest.raises(CorruptImageError, match="missing.jpg"):
        GridCLIPDatasetMapper(True, augmentations=[], skip_corrupt_images=False)(missing)
    assert corrupt_image_count() == 0


def test_size_mismatch_between_image_and_annotation_names_the_file(world_dataset):
    record = dict(_record(world_dataset), height=999)
    with pytest.raises(CorruptImageError, match=r"000000000001\.jpg.*Mismatched image shape"):
        GridCLIPDatasetMapper(True, augmentations=[], skip_corrupt_images=False)(record)


def test_empty_images_kept_only_when_filter_empty_annotations_is_off(cfg, world_dataset):
    records = [_record(world_dataset, index=i) for i in range(4)]
    records[1]["annotations"] = []  # a negative image
    records[2]["annotations"] = [{"bbox": [3, 3, 0, 0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}]
    name = "pytest_with_empty_images"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: copy.deepcopy(records))
        MetadataCatalog.get(name).set(thing_classes=MetadataCatalog.get(world_dataset.train_base).thing_classes)
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True
    kept, vocabulary = get_gridclip_train_dataset_dicts(cfg)
    assert [r["image_id"] for r in kept] == [records[0]["image_id"], records[3]["image_id"]]
    assert vocabulary == MetadataCatalog.get(world_dataset.train_base).thing_classes
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    kept, _ = get_gridclip_train_dataset_dicts(cfg)
    assert len(kept) == 4 and kept[2]["annotations"] == []  # the degenerate box is gone, the image stays
    out = GridCLIPDatasetMapper(cfg, is_train=True)(kept[1])
    assert len(out["instances"]) == 0 and out["image"].dtype == torch.uint8


def test_train_loader_batches_in_vocabulary_space(cfg, world_dataset):
    loader = build_gridclip_train_loader(cfg)
    batch = next(iter(loader))
    assert len(batch) == 2
    for item in batch:
        assert item["image"].dtype == torch.uint8 and isinstance(item["flipped"], bool)
        classes = item["instances"].gt_classes
        assert classes.dtype == torch.int64 and ((classes >= 0) & (classes < world_dataset.num_base_categories)).all()


def test_repeat_factor_sampler_builds_and_oversamples_rare_images(cfg, world_dataset):
    cfg.DATASETS.TRAIN = (world_dataset.train,)
    cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
    cfg.DATALOADER.REPEAT_THRESHOLD = 0.3
    dicts, _ = get_gridclip_train_dataset_dicts(cfg)
    sampler = build_train_sampler(cfg, dicts)
    assert isinstance(sampler, RepeatFactorTrainingSampler)
    factors = (sampler._int_part + sampler._frac_part).tolist()
    rare = {i for i, f in enumerate(world_dataset.frequencies) if f == "r"}
    with_rare = [f for f, r in zip(factors, dicts) if any(a["category_id"] in rare for a in r["annotations"])]
    others = [f for f, r in zip(factors, dicts) if not any(a["category_id"] in rare for a in r["annotations"])]
    assert with_rare and min(with_rare) > 1.0 and np.mean(with_rare) > np.mean(others)
    batch = next(iter(build_gridclip_train_loader(cfg)))
    assert len(batch) == 2 and all("instances" in item for item in batch)

    cfg.DATALOADER.SAMPLER_TRAIN = "NoSuchSampler"
    with pytest.raises(ValueError, match="NoSuchSampler"):
        build_train_sampler(cfg, dicts)


def test_test_loader_resizes_and_keeps_original_size(cfg, world_dataset):
    loader = build_gridclip_test_loader(cfg, world_dataset.val)
    items = [batch[0] for _, batch in zip(range(3), loader)]
    for item in items:
        assert "instances" not in item and "annotations" not in item and "flipped" not in item
        assert min(item["image"].shape[1:]) == 64
        assert [item["height"], item["width"]] == list(SMALL_WORLD_KWARGS["image_size"])
