"""
Shared set-up of the CUDA tests (marker ``cuda``; every module skips itself without a CUDA device).

- ``cuda_report``: records a measurement (teacher time, peak memory, ...) of a test: printed, attached
  to the JUnit XML as a property, and written at the end of the session to the JSON file named by
  ``$GRIDCLIP_GPU_REPORT`` (dev/gpu_check/run.py points it into ``$OUT``).
- ``repeat_dataset``: two generated 800×1333 training images with boxes of three classes, registered
  in Detectron2's catalog: with batch 2 and no augmentation every training batch is the same two
  images, so a few steps must lower the loss.
- ``cuda_cfg``: a GridCLIP config on CUDA with AMP, random weights, trained on ``repeat_dataset``.
"""
import json
import os
import uuid

import numpy as np
import pytest
import torch

import gridclip

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs")
REPORT_ENV = "GRIDCLIP_GPU_REPORT"
REPEAT_CLASSES = ["cat", "dog", "red umbrella"]
IMAGE_SIZE = (800, 1333)  # (height, width): the paper's test size, Detectron2's default

_measurements = {}


class CudaReport:
    """``cuda_report(test_name, **values)``: print, attach to JUnit, keep for the JSON report."""

    def __init__(self, record_property=None):
        self._record_property = record_property

    def __call__(self, name, **values):
        _measurements.setdefault(name, {}).update(values)
        print(f"[cuda_report] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        if self._record_property is not None:
            for key, value in values.items():
                self._record_property(f"{name}.{key}", value)


def _write_report():
    path = os.environ.get(REPORT_ENV)
    if not path or not _measurements:
        return
    machine = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(0)
    with open(path, "w") as f:
        json.dump({"machine": machine, "measurements": _measurements}, f, indent=2, default=str)


def pytest_sessionfinish(session, exitstatus):
    _write_report()


@pytest.fixture
def cuda_report(record_property):
    return CudaReport(record_property)


def _write_repeat_images(root):
    """Two RGB images (distinct background, noise, one flat-coloured patch per object) and their dicts."""
    import cv2
    from detectron2.structures import BoxMode

    rng = np.random.default_rng(0)
    h, w = IMAGE_SIZE
    objects = [
        [((120, 100, 620, 560), 0), ((700, 300, 1200, 760), 2)],
        [((80, 420, 480, 780), 1), ((560, 60, 1100, 400), 0)],
    ]
    dicts = []
    for index, boxes in enumerate(objects):
        background = rng.integers(0, 256, 3)
        image = np.clip(background + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
        annotations = []
        for (x0, y0, x1, y1), category in boxes:
            image[y0:y1, x0:x1] = rng.integers(0, 256, 3)
            annotations.append({"bbox": [x0, y0, x1, y1], "bbox_mode": BoxMode.XYXY_ABS, "category_id": category})
        path = os.path.join(root, f"repeat_{index}.png")
        cv2.imwrite(path, image[:, :, ::-1])  # RGB → BGR for OpenCV
        dicts.append({"file_name": path, "height": h, "width": w, "image_id": index, "annotations": annotations})
    return dicts


@pytest.fixture(scope="session")
def repeat_dataset(tmp_path_factory):
    """Name of a registered 2-image 800×1333 training dataset (classes ``REPEAT_CLASSES``)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    dicts = _write_repeat_images(str(tmp_path_factory.mktemp("repeat_dataset")))
    name = f"pytest_cuda_repeat_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
    MetadataCatalog.get(name).set(thing_classes=list(REPEAT_CLASSES))
    return name


@pytest.fixture
def cuda_cfg(repeat_dataset, tmp_path, monkeypatch):
    """
    cuda_cfg(config_name, *opts) -> frozen config: ``configs/<config_name>`` on CUDA with
    SOLVER.AMP.ENABLED, random weights (CLIP and teacher), batch 2 of ``repeat_dataset`` at 800×1333
    without flip/crop/multi-scale, the dataset's 3 classes with one prompt template, no evaluation.
    """
    monkeypatch.setenv("GRIDCLIP_CACHE", str(tmp_path / "gridclip_cache"))

    def make(config_name, *opts):
        base = [
            "MODEL.DEVICE", "cuda",
            "MODEL.CLIP.PRETRAINED", "",
            "MODEL.GRIDCLIP.TEACHER.PRETRAINED", "",
            "MODEL.GRIDCLIP.TRAIN_VOCABULARY", "",
            "MODEL.GRIDCLIP.TEST_VOCABULARY", "",
            "MODEL.GRIDCLIP.PROMPT_TEMPLATES", "single",
            "DATASETS.TRAIN", f"('{repeat_dataset}',)",
            "DATASETS.TEST", "()",
            "INPUT.MIN_SIZE_TRAIN", f"({IMAGE_SIZE[0]},)",
            "INPUT.MAX_SIZE_TRAIN", str(IMAGE_SIZE[1]),
            "INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice",
            "INPUT.CROP.ENABLED", "False",
            "INPUT.RANDOM_FLIP", "none",
            "SOLVER.AMP.ENABLED", "True",
            "SOLVER.IMS_PER_BATCH", "2",
            "SOLVER.CHECKPOINT_PERIOD", "100000",
            "DATALOADER.NUM_WORKERS", "0",
            "TEST.EVAL_PERIOD", "0",
            "OUTPUT_DIR", str(tmp_path / "output"),
            "SEED", "0",
        ]
        cfg = gridclip.get_gridclip_cfg(os.path.join(CONFIGS, config_name), base + list(opts))
        cfg.freeze()
        return cfg

    return make
