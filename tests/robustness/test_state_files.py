"""
State that cannot clobber or lie: run folders claimed atomically (parallel runs get distinct folders), a
training's lock on its OUTPUT_DIR (naming the holder, stale locks taken over), state files written
atomically with the umask's permissions, every cache read validated (corrupt entries rebuilt with one
warning naming the file, unwritable caches computed and warned about once), and finished runs reused
only under the settings that made them.
"""
import json
import logging
import os
import subprocess
import sys
import threading

import pytest
import torch

from gridclip.checkpoint import GridCLIPCheckpointer
from gridclip.engine.defaults import argument_parser, check_run
from gridclip.engine.trainer import GridCLIPTrainer
from gridclip.file_io import atomic_write_json
from gridclip.modeling.text.cache import load_text_embeddings, text_embeddings_cache_path
from gridclip.modeling.text.files import load_text_embeddings_file
from gridclip.run_lock import CLAIM_FILE, LOCK_FILE, OutputDirLock, OutputDirLockedError, claim_dir
from gridclip.tool_errors import ToolError
from gridclip.world import ablations, pretraining
from gridclip.world.detection import ensure_world_dataset
from gridclip.world.embedded_default import fresh_output_dir, read_random_init_cache

from .conftest import REPO_ROOT

TINY_TEXT = dict(clip_model_name="GridCLIP-Tiny-RN", pretrained="", templates="single")


def _record(pid, command="python tools/train_net.py"):
    import socket

    return {"host": socket.gethostname(), "pid": pid, "start_ticks": None, "started": "earlier", "command": command}


@pytest.fixture
def other_process():
    """A live process of this host that is not this one (a run holding a folder)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------------------- run folders
def test_runs_started_together_claim_distinct_folders(tmp_path, capsys):
    base = tmp_path / "output" / "gridclip_world_pretrained"
    base.mkdir(parents=True)
    (base / "summary.json").write_text("{}")  # an earlier run's folder
    barrier, chosen = threading.Barrier(6), []

    def run():
        barrier.wait()
        chosen.append(fresh_output_dir(str(base), explicit=False))

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(chosen) == sorted(f"{base}_run{k}" for k in range(2, 8))  # six runs, six folders
    assert (base / "summary.json").read_text() == "{}"
    with pytest.raises(ToolError, match="is not empty"):  # an explicit folder another run claimed
        fresh_output_dir(f"{base}_run2", explicit=True)


def test_folder_claimed_by_a_run_that_died_before_writing_is_free_again(tmp_path):
    dead, alive = tmp_path / "dead", tmp_path / "alive"
    for folder, pid in ((dead, _dead_pid()), (alive, 1)):
        folder.mkdir()
        (folder / CLAIM_FILE).write_text(json.dumps(_record(pid)))
    assert claim_dir(str(dead)) and json.loads((dead / CLAIM_FILE).read_text())["pid"] == os.getpid()
    assert not claim_dir(str(alive))  # pid 1 lives: its folder
    assert not claim_dir(str(dead))  # now ours


# ---------------------------------------------------------------------------------------- OUTPUT_DIR lock
def test_lock_names_a_live_holder_and_takes_over_a_stale_one(tmp_path, other_process, caplog):
    lock_file = tmp_path / LOCK_FILE
    lock_file.write_text(json.dumps(_record(other_process.pid, "train_net.py --config-file a.yaml")))
    with pytest.raises(OutputDirLockedError) as error:
        OutputDirLock(str(tmp_path)).acquire()
    message = str(error.value)
    assert f"pid {other_process.pid}" in message and "train_net.py --config-file a.yaml" in message
    assert str(lock_file) in message and isinstance(error.value, ToolError)  # one line from the tools

    lock_file.write_text(json.dumps(_record(_dead_pid())))  # killed with -9: nothing removed it
    with caplog.at_level(logging.WARNING, logger="gridclip.run_lock"):
        lock = OutputDirLock(str(tmp_path)).acquire()
    assert [r for r in caplog.records if "stale" in r.getMessage() and str(lock_file) in r.getMessage()]
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_file.exists()


def test_training_holds_the_lock_on_its_output_dir(tiny_cfg, other_process):
    cfg = tiny_cfg("SOLVER.MAX_ITER", "1", "SOLVER.CHECKPOINT_PERIOD", "100", "DATASETS.TEST", "()")
    lock_file = os.path.join(cfg.OUTPUT_DIR, LOCK_FILE)
    os.makedirs(cfg.OUTPUT_DIR)
    with open(lock_file, "w") as f:
        json.dump(_record(other_process.pid), f)
    with pytest.raises(OutputDirLockedError, match=f"pid {other_process.pid}"):
        GridCLIPTrainer(cfg)
    with pytest.raises(OutputDirLockedError, match=f"pid {other_process.pid}"):  # train_net: before anything
        check_run(cfg, argument_parser().parse_args(["--config-file", "unused.yaml"]))
    assert not os.path.exists(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    os.remove(lock_file)
    trainer = GridCLIPTrainer(cfg)
    assert json.loads(open(lock_file).read())["pid"] == os.getpid()
    trainer.train()
    assert not os.path.exists(lock_file)  # released when training ends
    assert os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))


# ----------------------------------------------------------------------------------------- permissions
@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_state_files_honour_the_umask(tmp_path, embeddings_cache, umask_027):
    GridCLIPCheckpointer(torch.nn.Linear(2, 2), str(tmp_path / "ckpt")).save("model_final")
    load_text_embeddings(["red circle", "blue square"], **TINY_TEXT)
    atomic_write_json(str(tmp_path / "summary.json"), {"AP": 1.0})
    files = [tmp_path / "ckpt" / "model_final.pth", tmp_path / "ckpt" / "last_checkpoint", tmp_path / "summary.json",
             *embeddings_cache.rglob("*.safetensors")]
    assert len(files) == 4
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o640"}  # not 0o600: a shared cache stays readable


# ----------------------------------------------------------------------------------------- caches
def test_corrupt_text_embedding_cache_is_rebuilt_with_one_warning(embeddings_cache, caplog):
    names = ["red circle", "blue square"]
    fresh = load_text_embeddings(names, **TINY_TEXT)
    path = text_embeddings_cache_path(names, **{k: TINY_TEXT[k] for k in ("clip_model_name", "pretrained")},
                                      templates="single")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # truncated
    with caplog.at_level(logging.WARNING, logger="gridclip.modeling.text.cache"):
        rebuilt = load_text_embeddings(names, **TINY_TEXT)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "gridclip.modeling.text.cache"]
    assert len(warnings) == 1 and path in warnings[0] and "rebuilding" in warnings[0]
    assert torch.allclose(rebuilt, fresh, atol=1e-6)
    assert torch.allclose(load_text_embeddings_file(path, names), fresh, atol=1e-6)  # the entry is whole again


def test_unwritable_text_embedding_cache_computes_and_warns_once(tmp_path, caplog):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    settings = dict(TINY_TEXT, cache_dir=str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="gridclip.modeling.text.cache"):
        first = load_text_embeddings(["red circle", "blue square"], **settings)
        second = load_text_embeddings(["green star"], **settings)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "gridclip.modeling.text.cache"]
    assert len(warnings) == 1 and "continuing without caching" in warnings[0]
    assert first.shape == (2, 64) and second.shape == (1, 64)


def _fake_pretraining(monkeypatch):
    """ensure_world_clips' training replaced by a tiny model (the cache logic is under test, not training)."""
    calls = []

    def pretrain(model_name, corpus, **kwargs):
        calls.append(model_name)
        torch.manual_seed(0)
        return torch.nn.Linear(4, 3), {"model_name": model_name, "zero_shot": {
            "top1": 0.5, "colour": 1.0, "texture": 1.0, "shape": 0.5, "num_classes": 192}}

    monkeypatch.setattr(pretraining, "pretrain_clip", pretrain)
    monkeypatch.setattr(pretraining, "generate_caption_corpus", lambda **kwargs: {})
    monkeypatch.setattr(pretraining, "zero_shot_split", lambda **kwargs: None)
    return calls


def test_truncated_world_clip_is_pretrained_again_never_reported_as_cached(tmp_path, monkeypatch, caplog):
    calls = _fake_pretraining(monkeypatch)
    first = pretraining.ensure_world_clip(pretraining.BACKBONE_CLIP, cache_dir=str(tmp_path), progress=False)
    assert not first["cached"] and first["stats"]["weights_sha256"]
    assert pretraining.ensure_world_clip(pretraining.BACKBONE_CLIP, cache_dir=str(tmp_path))["cached"]
    path = first["path"]
    data = open(path, "rb").read()
    for damage in (data[: len(data) - 7], data[:-4] + b"\0\0\0\0"):  # truncated; same size, other bytes
        with open(path, "wb") as f:
            f.write(damage)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gridclip.world.pretraining"):
            again = pretraining.ensure_world_clip(pretraining.BACKBONE_CLIP, cache_dir=str(tmp_path), progress=False)
        assert not again["cached"] and open(path, "rb").read() == data
        assert [r for r in caplog.records if path in r.getMessage() and "pretraining it again" in r.getMessage()]
    assert calls == [pretraining.BACKBONE_CLIP] * 3


def test_unwritable_world_clip_cache_keeps_the_weights_for_the_run(tmp_path, monkeypatch, caplog):
    _fake_pretraining(monkeypatch)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="gridclip.world.pretraining"):
        entry = pretraining.ensure_world_clip(pretraining.BACKBONE_CLIP, cache_dir=str(blocker), progress=False)
    assert [r for r in caplog.records if "continuing uncached" in r.getMessage()]
    stats, problem = pretraining.check_cached_world_clip(entry["path"])  # complete weights, outside the cache
    assert not entry["cached"] and problem is None and not entry["path"].startswith(str(blocker))
    assert stats["weights_sha256"] == entry["stats"]["weights_sha256"]


def test_truncated_clip_weights_file_is_named(tmp_path):
    from safetensors.torch import save_file

    from gridclip.modeling.clip_loading import create_clip_model

    path = str(tmp_path / "clip.safetensors")
    save_file({k: v.contiguous() for k, v in create_clip_model("GridCLIP-Tiny-RN", "").state_dict().items()}, path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])
    with pytest.raises(ValueError, match="truncated or corrupt") as error:  # was a SafetensorError naming no file
        create_clip_model("GridCLIP-Tiny-RN", path)
    assert path in str(error.value)


def test_corrupt_random_init_cache_is_not_used(tmp_path, capsys):
    path = tmp_path / "random_init-0123.json"
    assert read_random_init_cache(str(path)) is None  # none yet
    atomic_write_json(str(path), {"AP": 26.5, "APr": 8.3})
    assert read_random_init_cache(str(path)) == {"AP": 26.5, "APr": 8.3}
    for bad in ('{"AP": 26.5, "APr"', '{"AP": "26.5"}', '["AP", 26.5]'):
        path.write_text(bad)
        assert read_random_init_cache(str(path)) is None
        assert str(path) in capsys.readouterr().out


def test_corrupt_world_dataset_annotations_are_generated_again(tmp_path, caplog):
    args = dict(num_train_images=120, num_val_images=8, image_size=(64, 64), num_categories=6)
    paths = ensure_world_dataset(str(tmp_path / "world"), **args)
    good = open(paths["val_json"], "rb").read()
    with open(paths["val_json"], "w") as f:
        f.write(good.decode()[:100])
    with caplog.at_level(logging.WARNING, logger="gridclip.world.detection"):
        ensure_world_dataset(str(tmp_path / "world"), **args)
    assert [r for r in caplog.records if "generating it again" in r.getMessage()]
    assert open(paths["val_json"], "rb").read() == good
    assert not [p for p in os.listdir(paths["train_images"]) if not p.endswith(".jpg")]  # no temporaries left


# ----------------------------------------------------------------------------------------- keyed reuse
def test_ablation_runs_are_reused_only_with_the_settings_that_made_them(tmp_path, monkeypatch):
    config = os.path.join(REPO_ROOT, "configs", "world", "GridCLIP-World-Pretrained.yaml")
    names = {"train_base": "w_train_base", "val": "w_val", "val_base": "w_val_base",
                "val_large": "w_val_large", "val_large_base": "w_val_large_base"}
    monkeypatch.setattr(ablations, "prepare_world", lambda world, need_teacher=True, teacher=None: (names, []))
    monkeypatch.setattr(ablations, "_launch", lambda *a: pytest.fail("a finished run was trained again"))
    out = str(tmp_path)
    _, _, key = ablations.run_settings(out, config, "both", 0, ["SOLVER.MAX_ITER", "300"])
    _, _, default_key = ablations.run_settings(out, config, "both", 0)
    assert key != default_key
    run_dir = tmp_path / "both" / "seed0"
    run_dir.mkdir(parents=True)
    record = {"run": "both", "seed": 0, "user_opts": ["SOLVER.MAX_ITER", "300"], "settings_key": key,
              "train_eval_seconds": 1.0, "metrics": {"val": {"AP": 30.0, "APr": 9.0, "APc": 30.0, "APf": 40.0}},
              "per_category_ap": {"val": str(run_dir / "missing.json")}}
    (run_dir / "metrics.json").write_text(json.dumps(record))

    # Other --opts than the finished run's: refused before any training, naming the file.
    with pytest.raises(ablations.StaleRunError, match="other settings") as error:
        ablations.run_ablations(["T5-both"], [0], out, config, jobs=1)
    assert str(run_dir / "metrics.json") in str(error.value) and "SOLVER.MAX_ITER" in str(error.value)
    assert not (tmp_path / "ablations.md").exists()
    # The same settings: reused.
    assert ablations.run_ablations(["T5-both"], [0], out, config, jobs=1, opts=["SOLVER.MAX_ITER", "300"]) == 0
    assert "30.0 ± 0.0" in (tmp_path / "ablations.md").read_text()
