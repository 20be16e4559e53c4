"""
docs/GETTING_STARTED.md's "Tutorial: detect your own categories", run as written: its config block becomes
configs/my.yaml (only ``_BASE_`` points to a tiny CPU config instead of GridCLIP-R50-FPN-2x.yaml), a
generated COCO-format dataset sits at data/my/, and its commands run in that working directory:
training with ``--num-gpus 2`` (two CPU processes, each registering the datasets from the config),
``--eval-only`` (COCOEvaluator, paper table and per_category_ap.json), the Python block and the demo
(names from the checkpoint, no dataset registered). Only a tiny schedule is appended to the training
command.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["red square", "blue circle"]
TINY_BASE = """_BASE_: "{base}"
MODEL:
  DEVICE: "cpu"
  CLIP:
    MODEL_NAME: "GridCLIP-Tiny-RN"
    PRETRAINED: ""
  GRIDCLIP:
    IMAGE_ALIGN: False
    PROMPT_TEMPLATES: "single"
    ADAPTER_CHANNELS: 32
  FPN:
    OUT_CHANNELS: 64
  FCOS:
    NUM_CONVS: 1
INPUT:
  MIN_SIZE_TRAIN: (64,)
  MAX_SIZE_TRAIN: 64
  MIN_SIZE_TEST: 64
  MAX_SIZE_TEST: 64
DATALOADER:
  NUM_WORKERS: 0
TEST:
  EVAL_PERIOD: 0
"""
TINY_SCHEDULE = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)",
                 "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "1000"]


def tutorial_blocks():
    """{language: [code blocks]} of the tutorial section of docs/GETTING_STARTED.md."""
    with open(os.path.join(REPO, "docs", "GETTING_STARTED.md"), encoding="utf-8") as f:
        page = f.read()
    section = page.split("## Tutorial: detect your own categories", 1)[1].split("\n## ", 1)[0]
    blocks = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S):
        blocks.setdefault(language, []).append("\n".join(line[3:] if line.startswith("   ") else line
                                                          for line in body.splitlines()))
    return blocks


def commands(block):
    """The shell commands of a bash block, continuation lines joined, split into argv."""
    import shlex

    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def write_coco_split(root, split, count, rng):
    images, annotations = [], []
    for i in range(count):
        image = np.full((64, 64, 3), 235, np.uint8)
        x, y = rng.integers(4, 28, size=2)
        cv2.rectangle(image, (int(x), int(y)), (int(x) + 20, int(y) + 20), (0, 0, 255), -1)  # red square (BGR)
        cv2.circle(image, (48, 48), 10, (255, 0, 0), -1)  # blue circle
        name = f"{split}_{i}.jpg"
        cv2.imwrite(os.path.join(root, "images", name), image)
        image_id = len(images) + 1 + (1000 if split == "val" else 0)
        images.append({"id": image_id, "file_name": name, "height": 64, "width": 64})
        for category_id, bbox in ((1, [float(x), float(y), 21.0, 21.0]), (2, [38.0, 38.0, 21.0, 21.0])):
            annotations.append({"id": len(annotations) + 1, "image_id": images[-1]["id"], "category_id": category_id,
                                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    with open(os.path.join(root, f"{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"gridclip_tutorial_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tutorial_runs_as_written(tmp_path, monkeypatch):
    blocks = tutorial_blocks()
    assert len(blocks["yaml"]) == 1 and len(blocks["bash"]) == 2 and len(blocks["python"]) == 1
    work = tmp_path / "project"
    (work / "configs").mkdir(parents=True)
    (work / "data" / "my" / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_coco_split(str(work / "data" / "my"), "train", 6, rng)
    write_coco_split(str(work / "data" / "my"), "val", 2, rng)
    base = os.path.join(REPO, "configs", "Base-GridCLIP.yaml")
    (work / "configs" / "tiny_base.yaml").write_text(TINY_BASE.format(base=base))
    config = blocks["yaml"][0]
    assert '_BASE_: "GridCLIP-R50-FPN-2x.yaml"' in config
    (work / "configs" / "my.yaml").write_text(config.replace("GridCLIP-R50-FPN-2x.yaml", "tiny_base.yaml"))
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "no_datasets"), GRIDCLIP_CACHE=str(tmp_path / "cache"))
    monkeypatch.setenv("DETECTRON2_DATASETS", env["DETECTRON2_DATASETS"])
    monkeypatch.setenv("GRIDCLIP_CACHE", env["GRIDCLIP_CACHE"])
    monkeypatch.chdir(work)

    train, evaluate = commands(blocks["bash"][0])
    assert train[:2] == ["python", "tools/train_net.py"]
    assert "--num-gpus" in train and train[train.index("--num-gpus") + 1] == "2"
    proc = subprocess.run([sys.executable, os.path.join(REPO, train[1]), *train[2:], *TINY_SCHEDULE], env=env,
                          cwd=str(work), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (work / "output" / "my" / "model_final.pth").is_file()

    assert evaluate[:2] == ["python", "tools/train_net.py"] and "--eval-only" in evaluate
    assert _load_tool("train_net").cli_main(evaluate[2:]) == 0
    inference = work / "output" / "my" / "inference" / "my_val"
    assert (inference / "paper_table.md").is_file()
    records = json.loads((inference / "per_category_ap.json").read_text())
    assert [r["name"] for r in records] == CLASSES

    namespace = {}
    exec(compile(blocks["python"][0], "tutorial step 4", "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["predictor"].vocabulary == CLASSES  # from the checkpoint: no dataset registered here
    assert set(namespace["result"].class_names) <= set(CLASSES)

    (demo_command,) = commands(blocks["bash"][1])
    assert demo_command[:2] == ["python", "tools/demo.py"]
    assert _load_tool("demo").cli_main(demo_command[2:]) == 0
    assert cv2.imread(str(work / "vis" / "val_0.jpg")).shape == (64, 64, 3)
