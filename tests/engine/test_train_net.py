"""
tools/train_net.py end to end on the generated long-tail dataset with tiny CLIP models (CPU):
train with the teacher hook → checkpoint → --eval-only (twice, identical) → paper table; resume.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
# The shared base config plus explicit tiny settings below: independent of the embedded default's tuning.
BASE_CONFIG = os.path.join(REPO, "configs", "Base-GridCLIP.yaml")

# A tiny model and schedule for the tests; everything else comes from the config files.
TINY_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.CLIP.MODEL_NAME", "GridCLIP-Tiny-RN",
    "MODEL.CLIP.PRETRAINED", "",
    "MODEL.GRIDCLIP.TEACHER.MODEL_NAME", "GridCLIP-Tiny-ViT",
    "MODEL.GRIDCLIP.TEACHER.PRETRAINED", "",
    "MODEL.GRIDCLIP.IMAGE_HEAD_HIDDEN_DIMS", "[64, 64]",
    "MODEL.GRIDCLIP.PROMPT_TEMPLATES", "single",
    "MODEL.GRIDCLIP.ADAPTER_CHANNELS", "64",
    # Random-init tiny CLIP: train its BatchNorms (frozen random statistics carry no signal).
    "MODEL.CLIP.NORM", "BN",
    "MODEL.BACKBONE.FREEZE_AT", "0",
    "MODEL.FPN.OUT_CHANNELS", "64",
    "DATASETS.TRAIN", "('world_v1_train_base',)",
    "DATASETS.TEST", "('world_v1_val',)",
    "INPUT.MIN_SIZE_TRAIN", "(96,)",
    "INPUT.MAX_SIZE_TRAIN", "96",
    "INPUT.MIN_SIZE_TEST", "96",
    "INPUT.MAX_SIZE_TEST", "96",
    "INPUT.CROP.ENABLED", "False",
    "SOLVER.IMS_PER_BATCH", "4",
    "SOLVER.BASE_LR", "0.01",
    "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.MAX_ITER", "6",
    "SOLVER.STEPS", "(4,)",
    "SOLVER.CHECKPOINT_PERIOD", "3",
    "DATALOADER.NUM_WORKERS", "0",
    "TEST.EVAL_PERIOD", "0",
    # Six iterations leave every score near the prior; keep all candidates so the evaluation has boxes.
    "MODEL.FCOS.SCORE_THRESH_TEST", "0.0",
    "SEED", "7",
]
GENERATOR_SIZE = dict(num_train_images=120, num_val_images=16, image_size=(96, 96), num_categories=8)


def run_train_net(workdir, *args, opts=()):
    env = dict(os.environ)
    env["DETECTRON2_DATASETS"] = str(workdir / "datasets")
    env["GRIDCLIP_CACHE"] = str(workdir / "cache")
    env["HF_HUB_OFFLINE"] = "1"
    cmd = [sys.executable, TRAIN_NET, "--config-file", BASE_CONFIG, *args, *TINY_OPTS, *opts]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=str(workdir))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    return output


def copypaste_metrics(output):
    """The metric values of Detectron2's `copypaste:` lines (the last evaluation in the output)."""
    lines = re.findall(r"copypaste: ([-0-9.,na]+)\s*$", output, flags=re.M)
    assert lines, "no evaluation results printed"
    return [float(v) for v in lines[-1].split(",")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run shared by the tests below (generates the dataset under its own root)."""
    from gridclip.world import ensure_world_dataset

    workdir = tmp_path_factory.mktemp("train_net")
    ensure_world_dataset(str(workdir / "datasets" / "world"), **GENERATOR_SIZE)
    output_dir = workdir / "output"
    log = run_train_net(workdir, opts=["OUTPUT_DIR", str(output_dir)])
    return workdir, output_dir, log


def test_training_writes_checkpoints_and_logs_teacher_time(trained):
    _, output_dir, log = trained
    assert (output_dir / "model_final.pth").is_file()
    assert (output_dir / "model_0000002.pth").is_file()  # CHECKPOINT_PERIOD 3 → iteration index 2
    metrics = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    teacher_times = [m["time/teacher"] for m in metrics if "time/teacher" in m]
    assert teacher_times and all(t > 0 for t in teacher_times)
    losses = {k for m in metrics for k in m if k.startswith("loss_")}
    assert {"loss_grid", "loss_image", "loss_box_reg", "loss_centerness"} <= losses
    assert "AP_r" in log and "AP_c" in log and "AP_f" in log  # the paper-style table is printed


def test_checkpoint_holds_no_teacher_weights(trained):
    _, output_dir, _ = trained
    checkpoint = torch.load(output_dir / "model_final.pth", map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == 5
    keys = list(checkpoint["model"])
    assert keys and not any("teacher" in k for k in keys)
    # The image head (student side of image-level alignment) is trained and saved.
    assert any(k.startswith("image_head") or ".image_head." in k for k in keys), keys[:20]


def test_eval_only_writes_table_and_is_repeatable(trained):
    workdir, output_dir, _ = trained
    weights = str(output_dir / "model_final.pth")
    eval_dir = workdir / "eval"
    runs = [
        run_train_net(workdir, "--eval-only", opts=["MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(eval_dir)])
        for _ in range(2)
    ]
    first, second = (copypaste_metrics(r) for r in runs)
    assert first == second
    assert all(v == v for v in first), f"evaluation produced NaN metrics: {first}"
    assert len(first) == 9  # AP, AP50, AP75, APs, APm, APl, APr, APc, APf
    table_dir = eval_dir / "inference" / "world_v1_val"
    table = (table_dir / "paper_table.md").read_text()
    for column in ("AP_r", "AP_c", "AP_f", "AP50"):
        assert column in table
    per_category = json.loads((table_dir / "per_category_ap.json").read_text())
    val = json.loads((workdir / "datasets" / "world" / "annotations" / "lvis_v1_val.json").read_text())
    # Open-vocabulary protocol: evaluation scores every category, rare ones included.
    assert sorted(c["id"] for c in per_category) == sorted(c["id"] for c in val["categories"])
    assert {c["frequency"] for c in per_category} == {"r", "c", "f"}


def test_training_vocabulary_is_base_and_test_vocabulary_is_all(trained, monkeypatch):
    import gridclip  # noqa: F401
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from gridclip.engine.trainer import GridCLIPTrainer, register_generated_datasets

    workdir, _, _ = trained
    monkeypatch.setenv("DETECTRON2_DATASETS", str(workdir / "datasets"))
    monkeypatch.setenv("GRIDCLIP_CACHE", str(workdir / "cache"))
    cfg = gridclip.get_gridclip_cfg(BASE_CONFIG, TINY_OPTS)
    register_generated_datasets(cfg, generate=False)

    base_dicts = DatasetCatalog.get("world_v1_train_base")
    base_meta = MetadataCatalog.get("world_v1_train_base")
    assert "r" not in base_meta.class_frequencies
    base_ids = set(range(len(base_meta.thing_classes)))
    assert all(a["category_id"] in base_ids for d in base_dicts for a in d["annotations"])
    full_meta = MetadataCatalog.get("world_v1_val")
    rare = {n for n, f in zip(full_meta.thing_classes, full_meta.class_frequencies) if f == "r"}
    assert rare and not rare & set(base_meta.thing_classes)

    model = GridCLIPTrainer.build_model(cfg)
    assert model.train_class_names == list(base_meta.thing_classes)
    assert model.test_class_names == list(full_meta.thing_classes)
    assert len(model.test_class_names) > len(model.train_class_names)


def test_resume_continues_from_the_saved_iteration(trained):
    workdir, output_dir, _ = trained
    resumed = workdir / "resumed"
    shutil.copytree(output_dir, resumed)
    # A run stopped after its first checkpoint: last_checkpoint names model_0000002.pth.
    for name in ("model_final.pth", "model_0000005.pth"):
        if (resumed / name).exists():
            (resumed / name).unlink()
    (resumed / "last_checkpoint").write_text("model_0000002.pth")
    (resumed / "metrics.json").unlink()
    log = run_train_net(workdir, "--resume", opts=["OUTPUT_DIR", str(resumed)])
    assert "Starting training from iteration 3" in log
    records = [json.loads(line) for line in (resumed / "metrics.json").read_text().splitlines()]
    train_iterations = [r["iteration"] for r in records if "total_loss" in r]
    assert train_iterations and min(train_iterations) >= 3 and max(train_iterations) == 5
    assert torch.load(resumed / "model_final.pth", weights_only=True)["iteration"] == 5


def test_eval_only_with_image_exemplars(trained):
    """--eval-only with MODEL.GRIDCLIP.TEST_EXEMPLARS: the named val classes are queried by image
    exemplars (boxes from one val image), every category is still evaluated, and a name that is not a
    test class is one line with exit status 1."""
    workdir, output_dir, _ = trained
    root = workdir / "datasets" / "world"
    val = json.loads((root / "annotations" / "lvis_v1_val.json").read_text())
    names = {c["id"]: c["name"] for c in val["categories"]}
    images = {i["id"]: i for i in val["images"]}
    first = val["annotations"][0]
    x, y, w, h = first["bbox"]
    entry = {"name": names[first["category_id"]], "image": str(root / images[first["image_id"]]["coco_url"]),
             "box": [x, y, x + w, y + h]}
    exemplars = workdir / "exemplars.json"
    exemplars.write_text(json.dumps([entry]))
    eval_dir = workdir / "eval_exemplars"
    opts = ["MODEL.WEIGHTS", str(output_dir / "model_final.pth"), "OUTPUT_DIR", str(eval_dir),
            "MODEL.GRIDCLIP.TEST_EXEMPLARS", str(exemplars)]
    log = run_train_net(workdir, "--eval-only", opts=opts)
    assert f"Test classes queried by image exemplars ({exemplars}): {entry['name']}" in log
    assert len(copypaste_metrics(log)) == 9
    per_category = json.loads((eval_dir / "inference" / "world_v1_val" / "per_category_ap.json").read_text())
    assert sorted(c["id"] for c in per_category) == sorted(names)

    exemplars.write_text(json.dumps([dict(entry, name="no such category")]))
    env = dict(os.environ, DETECTRON2_DATASETS=str(workdir / "datasets"), GRIDCLIP_CACHE=str(workdir / "cache"),
               HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, TRAIN_NET, "--config-file", BASE_CONFIG, "--eval-only", *TINY_OPTS,
                           *opts[:2], "OUTPUT_DIR", str(workdir / "eval_bad"), *opts[4:]],
                          env=env, capture_output=True, text=True, timeout=600, cwd=str(workdir))
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if "'no such category' are not classes" in line]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
