"""
``tools/train_net.py --num-gpus 2`` on a machine without CUDA: two gloo processes train GridCLIP
(DDP, distributed sampler, teacher hook in each rank), rank 0 alone writes the checkpoint, and the
2-process evaluation (evaluator gather over ranks) equals a 1-process evaluation of that checkpoint.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from gridclip.world import generate_world_dataset

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Registers the small generated dataset (already under $DETECTRON2_DATASETS/world) in the
# launching process, so train_net does not regenerate the default-size one, then runs train_net's
# launch (gridclip.engine.defaults) with the command-line arguments. Worker processes register it from the same files.
DRIVER = textwrap.dedent(
    """
    import os, sys
    import gridclip
    from gridclip.world import register_world_datasets

    if __name__ == "__main__":
        register_world_datasets(os.path.join(os.environ["DETECTRON2_DATASETS"], "world"))
        from gridclip.engine.defaults import argument_parser, launch_from_args
        launch_from_args(argument_parser().parse_args(sys.argv[1:]))
    """
)

TINY_CONFIG = textwrap.dedent(
    """
    _BASE_: "{repo}/configs/Base-GridCLIP.yaml"
    MODEL:
      DEVICE: "cpu"
      CLIP:
        MODEL_NAME: "GridCLIP-Tiny-RN"
        PRETRAINED: ""
      GRIDCLIP:
        IMAGE_ALIGN: True
        PROMPT_TEMPLATES: "single"
        IMAGE_HEAD_HIDDEN_DIMS: [32, 32]
        TEACHER:
          MODEL_NAME: "GridCLIP-Tiny-ViT"
          PRETRAINED: ""
      FPN:
        OUT_CHANNELS: 64
      FCOS:
        NUM_CONVS: 1
    DATASETS:
      TRAIN: ("world_v1_train_base",)
      TEST: ("world_v1_val",)
    INPUT:
      MIN_SIZE_TRAIN: (96,)
      MAX_SIZE_TRAIN: 96
      MIN_SIZE_TEST: 96
      MAX_SIZE_TEST: 96
    SOLVER:
      IMS_PER_BATCH: 4
      MAX_ITER: 4
      BASE_LR: 0.01
      WARMUP_ITERS: 2
      CHECKPOINT_PERIOD: 1000
    DATALOADER:
      NUM_WORKERS: 0
    TEST:
      EVAL_PERIOD: 0
    SEED: 7
    """
)


def _run_train_net(tmp_path, args, name):
    env = dict(
        os.environ,
        DETECTRON2_DATASETS=str(tmp_path / "datasets"),
        GRIDCLIP_CACHE=str(tmp_path / "cache"),
        HF_HUB_OFFLINE="1",
        # Two processes on a small shared CPU: one thread each, no oversubscription.
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), *args],
        capture_output=True, text=True, timeout=600, env=env, cwd=str(tmp_path),
    )
    (tmp_path / f"{name}.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"{name} failed:\n" + (proc.stdout + proc.stderr)[-6000:]
    return proc


def _detections(path):
    """LVIS-format detections, in an order independent of which rank produced them."""
    with open(path) as f:
        dets = json.load(f)
    return sorted(dets, key=lambda d: (d["image_id"], d["category_id"], -d["score"], d["bbox"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU/gloo path of train_net --num-gpus")
def test_two_process_cpu_training_and_evaluation_match_single_process(tmp_path):
    generate_world_dataset(
        tmp_path / "datasets" / "world", num_train_images=120, num_val_images=16,
        image_size=(96, 96), num_categories=8, seed=0,
    )
    (tmp_path / "driver.py").write_text(DRIVER.format(repo=REPO_ROOT))
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(repo=REPO_ROOT))
    train_dir, eval_dir = tmp_path / "train2", tmp_path / "eval1"
    # Low score threshold so the briefly trained model's detections are compared, not just zeros.
    common = ["MODEL.FCOS.SCORE_THRESH_TEST", "0.01"]

    _run_train_net(
        tmp_path, ["--config-file", str(config), "--num-gpus", "2", "OUTPUT_DIR", str(train_dir), *common],
        "train_2proc",
    )

    # Exactly one checkpoint, written once (rank 0 only); each rank logs to its own file.
    assert sorted(p.name for p in train_dir.glob("*.pth")) == ["model_final.pth"]
    assert (train_dir / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert (train_dir / "log.txt").is_file() and (train_dir / "log.txt.rank1").is_file()
    # The teacher hook ran in both processes (rank 1 would otherwise fail: no teacher_embedding).
    for log in ("log.txt", "log.txt.rank1"):
        assert "Teacher 'GridCLIP-Tiny-ViT'" in (train_dir / log).read_text(), log
    rank0 = (train_dir / "log.txt").read_text()
    assert "Rank of current process: 0. World size: 2" in rank0
    metrics = [json.loads(line) for line in (train_dir / "metrics.json").read_text().splitlines() if line.strip()]
    trained = [m for m in metrics if "loss_image" in m]
    assert trained and trained[-1]["iteration"] == 3
    assert all("time/teacher" in m for m in trained)

    _run_train_net(
        tmp_path,
        ["--config-file", str(config), "--num-gpus", "1", "--eval-only",
         "MODEL.WEIGHTS", str(train_dir / "model_final.pth"), "OUTPUT_DIR", str(eval_dir), *common],
        "eval_1proc",
    )

    inference2 = train_dir / "inference" / "world_v1_val"
    inference1 = eval_dir / "inference" / "world_v1_val"
    dets2 = _detections(inference2 / "lvis_instances_results.json")
    dets1 = _detections(inference1 / "lvis_instances_results.json")
    # The gather brought every validation image's detections to rank 0.
    assert len(dets1) > 0
    assert {d["image_id"] for d in dets2} == {d["image_id"] for d in dets1}
    assert len(dets2) == len(dets1)
    for a, b in zip(dets2, dets1):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)

    ap2 = json.loads((inference2 / "per_category_ap.json").read_text())
    ap1 = json.loads((inference1 / "per_category_ap.json").read_text())
    assert ap2 == ap1
    assert (inference2 / "paper_table.md").read_text() == (inference1 / "paper_table.md").read_text()
