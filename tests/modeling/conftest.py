"""Fixtures for the GridCLIP model tests: tiny configs, BN randomisation, tiny training batches."""
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.structures import Boxes, Instances

from gridclip import add_gridclip_config
from gridclip.modeling.clip_configs import TINY_BACKBONE_CLIP, TINY_TEACHER_CLIP

from ..conftest import set_cfg_values

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
TINY_VOCABULARY = "cat,dog,red umbrella"


@pytest.fixture(autouse=True)
def single_torch_thread():
    """
    One intra-op thread per test here: on the shared 2-core machine, two OpenMP threads competing
    with other processes spin-wait and made the training tests ~30x slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _load_config(name):
    cfg = get_cfg()
    add_gridclip_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, name))
    return cfg


@pytest.fixture
def load_config():
    """load_config("GridCLIP-R50-FPN-2x.yaml") -> cfg exactly as a user loads it (no overrides)."""
    return _load_config


@pytest.fixture
def tiny_cfg(embeddings_cache):
    """
    tiny_cfg(**dotted_overrides) -> Base-GridCLIP.yaml with the tiny CLIP backbone/teacher, random
    weights, a 3-class vocabulary, small FPN/head; text embeddings cached in a private folder.
    """

    def make(config_file="Base-GridCLIP.yaml", **overrides):
        cfg = _load_config(config_file)
        cfg.MODEL.DEVICE = "cpu"
        cfg.MODEL.CLIP.MODEL_NAME = TINY_BACKBONE_CLIP
        cfg.MODEL.CLIP.PRETRAINED = ""
        cfg.MODEL.GRIDCLIP.TEACHER.MODEL_NAME = TINY_TEACHER_CLIP
        cfg.MODEL.GRIDCLIP.TEACHER.PRETRAINED = ""
        cfg.MODEL.GRIDCLIP.TRAIN_VOCABULARY = TINY_VOCABULARY
        cfg.MODEL.GRIDCLIP.TEST_VOCABULARY = ""
        cfg.MODEL.GRIDCLIP.PROMPT_TEMPLATES = "single"
        cfg.MODEL.GRIDCLIP.ADAPTER_CHANNELS = 32
        cfg.MODEL.GRIDCLIP.IMAGE_HEAD_HIDDEN_DIMS = [32, 32]
        cfg.MODEL.FPN.OUT_CHANNELS = 32
        cfg.MODEL.FCOS.NUM_CONVS = 2
        cfg.DATASETS.TRAIN = ()
        cfg.DATASETS.TEST = ()
        return set_cfg_values(cfg, overrides)

    return make


def randomise_batchnorm(module, seed=0):
    """
    Random BN statistics and affine parameters, for BatchNorm2d and FrozenBatchNorm2d (open_clip
    zero-initialises every bn3.weight, and random-init statistics make z̄ nearly image-independent).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return module


@pytest.fixture(scope="session")
def randomise_bn():
    return randomise_batchnorm


def _tiny_batch(teacher_dim=32, seed=0, sizes=((96, 96), (96, 128))):
    """Two images (uint8 RGB, ~96 px) with 1–2 boxes each, classes in 0..2, fake teacher embeddings."""
    generator = torch.Generator().manual_seed(seed)
    boxes = [[[10.0, 12.0, 70.0, 80.0]], [[8.0, 6.0, 40.0, 44.0], [50.0, 30.0, 120.0, 90.0]]]
    classes = [[0], [1, 2]]
    batch = []
    for (h, w), b, c in zip(sizes, boxes, classes):
        # a distinct background colour per image (so the image-level embedding can tell them apart)
        # with mild noise, and a flat patch per object so the boxes can be fitted
        background = torch.randint(0, 256, (3, 1, 1), generator=generator)
        noise = torch.randint(-20, 21, (3, h, w), generator=generator)
        image = (background + noise).clamp(0, 255).to(torch.uint8)
        for x0, y0, x1, y1 in b:
            image[:, int(y0):int(y1), int(x0):int(x1)] = torch.randint(0, 256, (3, 1, 1), generator=generator)
        instances = Instances((h, w))
        instances.gt_boxes = Boxes(torch.tensor(b))
        instances.gt_classes = torch.tensor(c, dtype=torch.int64)
        teacher = torch.nn.functional.normalize(torch.randn(teacher_dim, generator=generator), dim=0)
        batch.append({"image": image, "instances": instances, "teacher_embedding": teacher, "height": h, "width": w})
    return batch


@pytest.fixture
def tiny_batch():
    """tiny_batch(teacher_dim=32, seed=0) -> list of 2 training dicts."""
    return _tiny_batch
