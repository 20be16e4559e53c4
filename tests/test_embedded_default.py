"""
The embedded default (tools/run_embedded_default.py, i.e. gridclip.world.embedded_default; what
`make demo` runs) end to end on CPU with a small CLIP pretraining and a shorter schedule than
`make demo`: dataset generated when missing, mini-CLIPs pretrained and cached, the pretrained and the
random-init runs trained and evaluated, the paper-style table and the side-by-side table printed,
visualisations and summary.json written, and the random-init run read from its cache the second time.

Floors: chance on the generated val split is AP 0.00 (the untrained model, also with 300 boxes per
image). The AP floor (> 1 for the pretrained run, whose CLIPs get only 60 pretraining steps here) is far
above chance and leaves margin for noise; `make demo` reaches AP 60.4.
"""
import json
import os
import re
import subprocess
import sys

import cv2
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(REPO, "tools", "run_embedded_default.py")
AP_FLOOR = 1.0  # LVIS AP in percent on the generated val split (all classes); chance 0.0
PRETRAIN = ["--corpus-images", "1000", "--pretrain-steps", "60"]  # `make demo`: 12,000 images, 600 / 800 steps
SCHEDULE = ["--opts", "SOLVER.MAX_ITER", "150", "SOLVER.STEPS", "(120,)"]  # `make demo`: 500


@pytest.mark.slow
def test_embedded_default_pretrains_trains_both_evaluates_visualises_and_caches(tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), GRIDCLIP_CACHE=str(tmp_path / "cache"))
    output_dir = tmp_path / "run1"
    cmd = [sys.executable, RUNNER, "--output-dir", str(output_dir), *PRETRAIN]
    proc = subprocess.run(cmd + ["--num-vis", "3", *SCHEDULE], env=env, capture_output=True, text=True, timeout=900,
                          cwd=str(tmp_path))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]

    # The dataset was generated where $DETECTRON2_DATASETS points; the CLIPs cached under $GRIDCLIP_CACHE.
    assert (tmp_path / "datasets" / "world" / "annotations" / "lvis_v1_val.json").is_file()
    assert len(list((tmp_path / "cache" / "world_clip").glob("*.safetensors"))) == 2

    # The paper-style table is printed (stdout) with every column of the paper's LVIS tables.
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| |"))
    for column in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AP_r", "AP_c", "AP_f"):
        assert re.search(rf"\|\s*{column}\s*\|", header), (column, header)
    assert "| pretrained (world) |" in proc.stdout and "| random init |" in proc.stdout

    summary = json.loads((output_dir / "summary.json").read_text())
    for run in ("pretrained", "random_init"):
        assert set(summary[run]) >= {"AP", "APr", "APc", "APf"}, summary[run]
    assert summary["pretrained"]["AP"] > AP_FLOOR, summary
    assert set(summary["zero_shot_top1"]) == {"backbone_clip", "teacher_clip"}
    assert all(0 < v <= 1 for v in summary["zero_shot_top1"].values()), summary["zero_shot_top1"]
    assert {"data", "pretrain_clip", "train_pretrained", "train_random_init", "visualise"} <= set(summary["timings_s"])
    assert (output_dir / "pretrained" / "inference" / "world_v1_val" / "paper_table.md").is_file()
    # Naming accuracy beside AP: every val object counted once, named <= localised <= objects, per split.
    naming = summary["naming_accuracy"]
    val = json.loads((tmp_path / "datasets" / "world" / "annotations" / "lvis_v1_val.json").read_text())
    counts = naming["pretrained_counts"]
    assert counts["all"]["objects"] == sum(a["area"] > 0 for a in val["annotations"])
    assert counts["base"]["objects"] + counts["novel"]["objects"] == counts["all"]["objects"] and counts["novel"]["objects"] > 0
    for split in ("base", "novel", "all"):
        c = counts[split]
        assert 0 <= c["named"] <= c["localised"] <= c["objects"], c
        assert naming["pretrained"][split] == pytest.approx(c["named"] / c["objects"])
        assert 0 <= naming["random_init"][split] <= 1
    # measured on what the pictures show (one name per object); the raw class-wise-NMS rule beside it
    assert naming["one_name_per_object_iou"] == 0.5 and set(naming["pretrained_all_names"]) == {"base", "novel", "all"}
    # The self-describing weights folder: loads alone and names its classes.
    from gridclip import GridCLIPPredictor

    folder = summary["weights_folder"]
    assert os.path.isfile(os.path.join(folder, "manifest.json")) and os.path.isfile(os.path.join(folder, "model.safetensors"))
    predictor = GridCLIPPredictor.from_pretrained(folder, device="cpu")
    assert sorted(predictor.vocabulary) == sorted(c["name"] for c in val["categories"])

    # Visualisations: ground truth | detections, side by side (images with novel categories first).
    vis = sorted((output_dir / "vis").glob("*.png"))
    assert len(vis) == 3
    image = cv2.imread(str(vis[0]))
    assert image is not None and image.shape[1] > image.shape[0]
    assert "Total time:" in proc.stdout and "[phase] pretrain_clip" in proc.stdout

    # The same explicit --output-dir again: refused in one line before any work, the first run kept.
    first_summary = (output_dir / "summary.json").read_bytes()
    refused = subprocess.run(cmd + ["--num-vis", "0", *SCHEDULE], env=env, capture_output=True, text=True,
                             timeout=300, cwd=str(tmp_path))
    assert refused.returncode == 1 and "is not empty" in refused.stderr and "Traceback" not in refused.stderr
    assert (output_dir / "summary.json").read_bytes() == first_summary

    # Second run into the config's default OUTPUT_DIR, which an earlier run filled: it writes beside
    # it (<dir>_run2), keeps the earlier files, and reads the CLIPs and the random-init run from the caches.
    default_dir = tmp_path / "output" / "gridclip_world_pretrained"
    default_dir.mkdir(parents=True)
    (default_dir / "summary.json").write_text("{}")
    again = subprocess.run([sys.executable, RUNNER, *PRETRAIN, "--num-vis", "0", *SCHEDULE], env=env,
                           capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "random init: cached run" in again.stdout
    assert (default_dir / "summary.json").read_text() == "{}"
    second = json.loads((tmp_path / "output" / "gridclip_world_pretrained_run2" / "summary.json").read_text())
    assert second["random_init"] == summary["random_init"]
    assert second["timings_s"]["pretrain_clip"] < 5 and second["timings_s"]["train_random_init"] < 5
    # One torch thread per run whatever the load: the same settings give the same numbers.
    assert second["pretrained"] == summary["pretrained"], (second["pretrained"], summary["pretrained"])


def test_bad_thread_count_is_one_line_before_any_work(tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), GRIDCLIP_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, RUNNER, "--num-threads", "0", "--output-dir", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 1 and "--num-threads must be at least 1" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "datasets").exists()


def test_random_init_cache_is_keyed_by_the_clip_architectures(tmp_path, monkeypatch):
    # The random-init run's cached result must not survive an edit of a registered CLIP config (the
    # world CLIPs' text context went 48 -> 40): cfg.dump() only names the model.
    import open_clip.factory

    from gridclip.world import embedded_default as runner
    from gridclip.world.pretraining import BACKBONE_CLIP, TEACHER_CLIP

    data_json = tmp_path / "train.json"
    data_json.write_text(json.dumps({"info": {"generator": {"seed": 0}}}))
    config = os.path.join(REPO, "configs", "GridCLIP-Tiny-Synthetic.yaml")
    base = runner.random_init_cache_path(config, [], str(data_json))
    assert runner.random_init_cache_path(config, [], str(data_json)) == base
    assert runner.random_init_cache_path(config, ["SOLVER.MAX_ITER", "7"], str(data_json)) != base
    for name in (BACKBONE_CLIP, TEACHER_CLIP):
        edited = open_clip.get_model_config(name)
        edited["text_cfg"]["context_length"] -= 8
        with monkeypatch.context() as patch:
            patch.setitem(open_clip.factory._MODEL_CONFIGS, name, edited)
            assert runner.random_init_cache_path(config, [], str(data_json)) != base, name
