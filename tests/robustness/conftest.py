"""
Shared set-up of the robustness tests: a tiny GridCLIP config (tiny CLIP RN backbone, tiny ViT
teacher, random init: no network) written as a YAML file, as a user would.
"""
import os

import pytest

import gridclip

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE_CONFIG = os.path.join(REPO_ROOT, "configs", "Base-GridCLIP.yaml")

TINY_YAML = """_BASE_: "{base}"
MODEL:
  DEVICE: "cpu"
  CLIP:
    MODEL_NAME: "GridCLIP-Tiny-RN"
    PRETRAINED: ""
  GRIDCLIP:
    IMAGE_HEAD_HIDDEN_DIMS: [32, 32]
    PROMPT_TEMPLATES: "single"
    ADAPTER_CHANNELS: 32
    TEACHER:
      MODEL_NAME: "GridCLIP-Tiny-ViT"
      PRETRAINED: ""
  FPN:
    OUT_CHANNELS: 64  # GN(32 groups) needs > 1 value per group on the 1x1 P7 map of a 64 px image
  FCOS:
    NUM_CONVS: 1
DATASETS:
  TRAIN: ("{train}",)
  TEST: ("{test}",)
INPUT:
  MIN_SIZE_TRAIN: (64,)
  MAX_SIZE_TRAIN: 64
  MIN_SIZE_TEST: 64
  MAX_SIZE_TEST: 64
SOLVER:
  IMS_PER_BATCH: 2
  MAX_ITER: 12
  BASE_LR: 0.01
  WARMUP_ITERS: 4
  STEPS: (8,)
  CHECKPOINT_PERIOD: 4
DATALOADER:
  NUM_WORKERS: 0
TEST:
  EVAL_PERIOD: 0
SEED: 3
OUTPUT_DIR: "{output_dir}"
"""


def write_tiny_config(path, train, test, output_dir):
    """Write the tiny config YAML to ``path`` and return the path."""
    with open(path, "w") as f:
        f.write(TINY_YAML.format(base=BASE_CONFIG, train=train, test=test, output_dir=output_dir))
    return str(path)


def load_tiny_cfg(path, *opts):
    return gridclip.get_gridclip_cfg(path, opts)


@pytest.fixture
def tiny_cfg(tmp_path, world_dataset, embeddings_cache):
    """cfg factory: ``tiny_cfg(*opts)``; trains on the base split, tests on all classes."""

    def make(*opts):
        path = write_tiny_config(
            tmp_path / "tiny.yaml", world_dataset.train_base, world_dataset.val, tmp_path / "output"
        )
        return load_tiny_cfg(path, *opts)

    return make


@pytest.fixture(scope="session")
def tiny_config_writer():
    """``write_tiny_config(path, train, test, output_dir)`` for tests that run tools/train_net.py."""
    return write_tiny_config
