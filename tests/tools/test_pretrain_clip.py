"""tools/pretrain_clip.py: bad arguments are one line; its table, options and copies (gridclip.world.pretraining)."""
import json
import os
import subprocess
import sys

from gridclip.world.pretraining import (
    BACKBONE_CLIP,
    TEACHER_CLIP,
    copy_world_clips,
    world_clip_config_opts,
    world_clips_table,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "pretrain_clip.py")


def test_non_positive_arguments_are_one_line_errors(tmp_path):
    proc = subprocess.run([sys.executable, TOOL, "--steps", "0", "--cache-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "must be positive" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.listdir(tmp_path)  # nothing trained


def test_table_options_and_copy_of_the_results(tmp_path):
    results = {}
    for name, top1 in ((BACKBONE_CLIP, 0.5), (TEACHER_CLIP, None)):
        path = tmp_path / f"{name}-0123.safetensors"
        path.write_bytes(b"weights")
        stats = {"zero_shot": {"top1": top1, "colour": 1.0}} if top1 is not None else None
        results[name] = {"path": str(path), "stats": stats, "cached": top1 is None, "seconds": 12.3}
    table = world_clips_table(results).splitlines()
    assert table[2].startswith(f"| {BACKBONE_CLIP} | 50.0 % | 100.0 % | - | - | 12 |")
    assert table[3].startswith(f"| {TEACHER_CLIP} | - | - | - | - | cached |")
    opts = world_clip_config_opts(results)
    assert opts[opts.index("MODEL.CLIP.PRETRAINED") + 1] == results[BACKBONE_CLIP]["path"]
    assert opts[opts.index("MODEL.GRIDCLIP.TEACHER.PRETRAINED") + 1] == results[TEACHER_CLIP]["path"]
    copy_world_clips(results, str(tmp_path / "out"))
    summary = json.loads((tmp_path / "out" / "pretrain_summary.json").read_text())
    assert set(summary) == {BACKBONE_CLIP, TEACHER_CLIP}
    assert (tmp_path / "out" / f"{BACKBONE_CLIP}-0123.safetensors").read_bytes() == b"weights"
