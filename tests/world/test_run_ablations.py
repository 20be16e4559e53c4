"""tools/run_ablations.py / gridclip.world.ablations: the rows it knows, and mean ± std beside the paper's numbers."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "run_ablations.py")


def test_lists_table4_and_table5_rows():
    proc = subprocess.run([sys.executable, TOOL, "--list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for row in ("T4-wo-align", "T4-R50star-wo-align", "T4-grid-align", "T4-image-align", "T4-both",
                "T5-grid-align", "T5-both"):
        assert row in proc.stdout
    assert "USE_MHSA False" in proc.stdout and "val_base" in proc.stdout


def test_table5_rows_reuse_the_table4_trainings():
    """The paper's Table 5 compares two models of Table 4: one training each, evaluated closed and open set."""
    from gridclip.world import ablations

    rows = ablations.ROWS
    assert rows["T5-both"][1] == rows["T4-both"][1] and rows["T5-grid-align"][1] == rows["T4-grid-align"][1]
    assert {rows[r][2] for r in rows if r.startswith("T4")} == {ablations.CLOSED}
    assert {rows[r][2] for r in rows if r.startswith("T5")} == {ablations.OPEN}
    trainings = {run for _, run, _, _ in rows.values()}
    assert len(trainings) == 5  # 7 rows, 5 trainings per seed
    for run in trainings:  # only grid-aligned models can name novel classes: only they are tested open-set
        opts, test_sets, _ = ablations.RUNS[run]
        grid_off = "MODEL.GRIDCLIP.GRID_ALIGN" in opts and opts[opts.index("MODEL.GRIDCLIP.GRID_ALIGN") + 1] == "False"
        assert (ablations.OPEN in test_sets) == (not grid_off)


def _fake_world(monkeypatch, ablations):
    """Registered-dataset names of a world that is never generated (prepare_world replaced); the world config."""
    names = {"train_base": "w_train_base", "val": "w_val", "val_base": "w_val_base",
             "val_large": "w_val_large", "val_large_base": "w_val_large_base"}
    monkeypatch.setattr(ablations, "prepare_world", lambda world, need_teacher=True, teacher=None: (names, []))
    return os.path.join(REPO, "configs", "world", "GridCLIP-World-Pretrained.yaml")


def _write_run(root, run, seed, metrics_by_test_set):
    out = root / run / f"seed{seed}"
    out.mkdir(parents=True)
    (out / "run_record.json").write_text(json.dumps({
        "run": run, "seed": seed, "metrics": metrics_by_test_set,
        "per_category_ap": {k: str(out / "missing.json") for k in metrics_by_test_set},
    }))


def test_summary_is_mean_and_std_over_seeds_beside_the_paper(tmp_path):
    from gridclip.world import ablations

    for seed, apr in ((0, 10.0), (1, 14.0)):
        _write_run(tmp_path, "both", seed, {
            "val": {"AP": 30.0 + seed, "APr": apr, "APc": 20.0, "APf": 40.0},
            "val_base": {"AP": 35.0, "APr": -1.0, "APc": 21.0 + 2 * seed, "APf": 41.0},
        })
    markdown, figures = ablations.summarize(str(tmp_path), ["T5-both", "T4-both", "T5-grid-align"], [0, 1, 2])
    open_line = next(l for l in markdown.splitlines() if "T5-both" in l)
    assert "| 2 |" in open_line and "12.0 ± 2.0" in open_line and "30.5 ± 0.5" in open_line and "APr 12.7" in open_line
    closed_line = next(l for l in markdown.splitlines() if "T4-both" in l)
    assert "22.0 ± 1.0" in closed_line and "35.0 ± 0.0" in closed_line  # the same runs' closed-set numbers
    assert "T5-grid-align" not in markdown  # no runs: no row
    summary = json.loads((tmp_path / "ablations.json").read_text())
    assert summary["T5-both"]["APr"]["values"] == [10.0, 14.0] and figures == []
    assert "APr" not in summary["T4-both"]  # -1 (no rare class in the closed-set vocabulary) is not a value


def test_bad_rows_and_jobs_are_one_line_errors():
    for args, message in ((["--rows", "T9-nothing"], "unknown rows"), (["--jobs", "-1"], "--jobs must be")):
        proc = subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_evidence_rows_are_opt_in_and_compared_with_grid_only(monkeypatch, tmp_path):
    """The rows that decide Table 5's image-level claim: opt-in, each paired against T5-grid-align; the teacher
    rows swap the config's teacher for another world CLIP (ViT, or the backbone's own) seen at 128 px."""
    from gridclip.world import ablations

    evidence = ("T5-both-paper-strength", "T5-both-vit-teacher", "T5-both-self-teacher")
    assert not set(evidence) & set(ablations.ROWS) and set(evidence) <= set(ablations.all_rows())
    assert all(ablations.REFERENCES[row] == "T5-grid-align" for row in evidence)
    assert ablations.RUNS["both-paper-strength"][0] == ["MODEL.GRIDCLIP.IMAGE_LOSS_REFERENCE_DIM", "512"]

    calls = []

    def fake_prepare(world, need_teacher=True, teacher=None):
        calls.append((world, need_teacher, teacher))
        opts = ["MODEL.CLIP.PRETRAINED", "rn.safetensors"]
        if need_teacher and teacher:
            opts += ["MODEL.GRIDCLIP.TEACHER.MODEL_NAME", teacher, "MODEL.GRIDCLIP.TEACHER.INPUT_SIZE", "128"]
        if need_teacher:
            opts += ["MODEL.GRIDCLIP.TEACHER.PRETRAINED", f"{teacher or 'default'}.safetensors"]
        return {"train_base": "w_train_base", "val": "w_val", "val_base": "w_val_base",
                "val_large": "w_val_large", "val_large_base": "w_val_large_base"}, opts

    monkeypatch.setattr(ablations, "prepare_world", fake_prepare)
    monkeypatch.setattr(ablations, "settings_key", lambda *a: "key")
    prepared = {}
    vit, _, _ = ablations.run_settings(str(tmp_path), "cfg.yaml", "both-vit-teacher", 0, prepared=prepared)
    grid, _, _ = ablations.run_settings(str(tmp_path), "cfg.yaml", "grid-align", 0, prepared=prepared)
    both, _, _ = ablations.run_settings(str(tmp_path), "cfg.yaml", "both", 0, prepared=prepared)
    assert vit[vit.index("MODEL.GRIDCLIP.TEACHER.MODEL_NAME") + 1] == "GridCLIP-World-ViT"
    assert vit[vit.index("MODEL.GRIDCLIP.TEACHER.PRETRAINED") + 1] == "GridCLIP-World-ViT.safetensors"
    assert "MODEL.GRIDCLIP.TEACHER.PRETRAINED" not in grid  # grid-only trains no teacher
    assert both[both.index("MODEL.GRIDCLIP.TEACHER.PRETRAINED") + 1] == "default.safetensors"
    assert set(calls) == {("square", True, "GridCLIP-World-ViT"), ("square", False, None), ("square", True, None)}


def test_runs_are_tested_on_the_large_evaluation_split_unless_asked_otherwise(monkeypatch, tmp_path):
    """Table rows read the 1,200-image evaluation split by default (the power to resolve 2 AP_r points);
    --test-split val gives make demo's val split; the split is part of the settings key."""
    from gridclip.world import ablations

    config = _fake_world(monkeypatch, ablations)
    opts, datasets, key = ablations.run_settings(str(tmp_path), config, "both", 0)
    assert datasets == {ablations.CLOSED: "w_val_large_base", ablations.OPEN: "w_val_large"}
    assert opts[opts.index("DATASETS.TEST") + 1] == "('w_val_large_base', 'w_val_large')"
    _, small, small_key = ablations.run_settings(str(tmp_path), config, "both", 0, test_split="val")
    assert small == {ablations.CLOSED: "w_val_base", ablations.OPEN: "w_val"} and small_key != key
    proc = subprocess.run([sys.executable, TOOL, "--test-split", "test"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--test-split" in proc.stderr and "Traceback" not in proc.stderr


def test_each_run_is_evaluated_only_on_the_protocols_its_rows_read(monkeypatch, tmp_path):
    """T5 rows alone: the shared trainings are evaluated open set only (one inference pass over the 1,200
    images, not two) under the same settings key; asking for T4 later trains it again with both protocols."""
    from gridclip.world import ablations

    config = _fake_world(monkeypatch, ablations)
    out = str(tmp_path)
    opts, datasets, key = ablations.run_settings(out, config, "both", 0, protocols=(ablations.OPEN,))
    _, _, full_key = ablations.run_settings(out, config, "both", 0)
    assert datasets == {ablations.OPEN: "w_val_large"} and key == full_key
    assert opts[opts.index("DATASETS.TEST") + 1] == "('w_val_large',)"

    launched = []

    class Finished:
        returncode = 0

        def poll(self):
            return 0

    class Log:
        name = "run.log"

        def close(self):
            pass

    def fake_launch(output_dir, config_file, run, seed, threads, opts, test_split, protocols):
        launched.append((run, tuple(protocols)))
        run_key = ablations.run_settings(output_dir, config_file, run, seed, opts)[2]
        metrics = {p: {"AP": 50.0, "APr": 30.0, "APc": 50.0, "APf": 60.0} for p in protocols}
        folder = tmp_path / run / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run_record.json").write_text(json.dumps({
            "run": run, "seed": seed, "settings_key": run_key, "metrics": metrics, "train_eval_seconds": 1.0,
            "per_category_ap": {p: str(folder / "missing.json") for p in protocols}}))
        return Finished(), Log()

    monkeypatch.setattr(ablations, "_launch", fake_launch)
    monkeypatch.setattr(ablations.time, "sleep", lambda s: None)
    assert ablations.run_ablations(["T5-grid-align", "T5-both"], [0], out, config, jobs=1) == 0
    assert sorted(launched) == [("both", (ablations.OPEN,)), ("grid-align", (ablations.OPEN,))]
    launched.clear()
    assert ablations.run_ablations(["T5-both"], [0], out, config, jobs=1) == 0 and launched == []  # reused
    assert ablations.run_ablations(["T4-both", "T5-both"], [0], out, config, jobs=1) == 0
    assert launched == [("both", (ablations.CLOSED, ablations.OPEN))]


def test_a_finished_run_is_evaluated_not_trained_again_on_a_protocol_it_lacks(monkeypatch, tmp_path):
    """Asking for Table 4 after Table 5 evaluates each kept model_final.pth on the closed set (an inference
    pass, not a training); its open-set numbers and settings stay; without a kept checkpoint it is trained."""
    from gridclip.world import ablations, training

    config = _fake_world(monkeypatch, ablations)
    out = str(tmp_path)
    _, _, key = ablations.run_settings(out, config, "both", 0)
    folder = tmp_path / "both" / "seed0"
    folder.mkdir(parents=True)
    open_metrics = {"AP": 57.0, "APr": 33.0, "APc": 62.0, "APf": 78.0}
    (folder / "run_record.json").write_text(json.dumps({
        "run": "both", "seed": 0, "settings_key": key, "train_eval_seconds": 100.0, "test_split": "val_large",
        "test_datasets": {ablations.OPEN: "w_val_large"}, "metrics": {ablations.OPEN: open_metrics},
        "per_category_ap": {ablations.OPEN: str(folder / "inference" / "w_val_large" / "per_category_ap.json")}}))
    calls = []

    def fake_evaluate(config_file, opts, weights):
        calls.append(("evaluate", opts[opts.index("DATASETS.TEST") + 1], opts[opts.index("OUTPUT_DIR") + 1], weights))
        return None, {"w_val_large_base": {"AP": 65.0, "APr": -100.0, "APc": 62.0, "APf": 78.0}}

    def fake_train(config_file, opts):
        calls.append(("train", opts[opts.index("DATASETS.TEST") + 1]))
        return None, {"w_val_large_base": {"AP": 64.0}, "w_val_large": {"AP": 56.0}}

    monkeypatch.setattr(training, "evaluate_all", fake_evaluate)
    monkeypatch.setattr(training, "train_and_evaluate_all", fake_train)
    (folder / "model_final.pth").write_bytes(b"kept")
    assert ablations.single_run(out, config, "both", 0, protocols=(ablations.CLOSED, ablations.OPEN)) == 0
    assert calls == [("evaluate", "('w_val_large_base',)", str(folder / "evaluation_val_base"),
                      str(folder / "model_final.pth"))]
    record = json.loads((folder / "run_record.json").read_text())
    assert record["settings_key"] == key and record["train_eval_seconds"] == 100.0
    assert record["metrics"][ablations.OPEN] == open_metrics and record["metrics"][ablations.CLOSED]["AP"] == 65.0
    assert record["per_category_ap"][ablations.CLOSED].startswith(str(folder / "evaluation_val_base"))
    assert ablations._has_protocols(record, (ablations.CLOSED, ablations.OPEN))

    calls.clear()  # nothing lacking: nothing done
    assert ablations.single_run(out, config, "both", 0, protocols=(ablations.CLOSED,)) == 0 and calls == []
    record["metrics"].pop(ablations.CLOSED)
    (folder / "run_record.json").write_text(json.dumps(record))
    (folder / "model_final.pth").unlink()  # no kept checkpoint: trained again with both protocols
    assert ablations.single_run(out, config, "both", 0, protocols=(ablations.CLOSED, ablations.OPEN)) == 0
    assert calls == [("train", "('w_val_large_base', 'w_val_large')")]
    assert json.loads((folder / "run_record.json").read_text())["metrics"][ablations.OPEN]["AP"] == 56.0


def test_the_record_leaves_detectron2s_training_curve_alone_and_earlier_records_are_read(monkeypatch, tmp_path):
    """The runner's record is run_record.json: Detectron2's OUTPUT_DIR/metrics.json (the training curve its
    JSONWriter appends to) is not replaced, and one left by an unfinished training is no finished run; a
    record of the runner's earlier versions in metrics.json is still found, and its settings checked."""
    from gridclip.world import ablations, training

    config = _fake_world(monkeypatch, ablations)
    out = str(tmp_path)
    _, _, key = ablations.run_settings(out, config, "grid-align", 0)
    folder = tmp_path / "grid-align" / "seed0"
    folder.mkdir(parents=True)
    curve = '{"iteration": 19, "total_loss": 3.1}\n{"iteration": 39, "total_loss": 2.2}\n'

    def fake_train(config_file, opts):
        (folder / "metrics.json").write_text(curve)  # what Detectron2's JSONWriter leaves
        return None, {"w_val_large_base": {"AP": 64.0}, "w_val_large": {"AP": 56.0}}

    monkeypatch.setattr(training, "train_and_evaluate_all", fake_train)
    (folder / "metrics.json").write_text(curve[:40])  # an unfinished training's curve
    assert ablations._read_run(out, "grid-align", 0, key) is None
    assert ablations.single_run(out, config, "grid-align", 0) == 0
    assert (folder / "metrics.json").read_text() == curve
    assert ablations._read_run(out, "grid-align", 0, key)["metrics"][ablations.OPEN]["AP"] == 56.0

    legacy = tmp_path / "both" / "seed0"
    legacy.mkdir(parents=True)
    (legacy / "metrics.json").write_text(json.dumps({"run": "both", "seed": 0, "settings_key": "other",
                                                     "metrics": {ablations.OPEN: {"AP": 1.0}}}))
    with pytest.raises(ablations.StaleRunError, match="other settings"):
        ablations._read_run(out, "both", 0, key)
    assert ablations._read_run(out, "both", 0)["metrics"][ablations.OPEN]["AP"] == 1.0
