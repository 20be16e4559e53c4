"""
tools/demo.py end to end (subprocess, CPU) with a small checkpoint trained once for this module:
images with a custom vocabulary (names only from it, a written visualisation), a video (a written
video), and a corrupt input among good ones (named error, the rest processed, exit status 1).
"""
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "tools", "demo.py")
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
TINY_CONFIG = os.path.join(REPO, "configs", "GridCLIP-Tiny-Synthetic.yaml")
SIZE_OPTS = [
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96",
    "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96",
    "MODEL.GRIDCLIP.PROMPT_TEMPLATES", "single",
]
CUSTOM = ["red circle", "blue dotted star", "green umbrella"]
DETECTION_LINE = re.compile(r"^(?P<source>.+?): (?P<count>\d+) detections: (?P<names>.*)$", re.M)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(workdir, env, weights, val image paths) of a few iterations of the tiny config."""
    import json

    from gridclip.world import ensure_world_dataset

    workdir = tmp_path_factory.mktemp("demo")
    paths = ensure_world_dataset(str(workdir / "datasets" / "world"))  # train_net's default size
    env = dict(os.environ, DETECTRON2_DATASETS=str(workdir / "datasets"), GRIDCLIP_CACHE=str(workdir / "cache"))
    output_dir = workdir / "output"
    cmd = [sys.executable, TRAIN_NET, "--config-file", TINY_CONFIG, *SIZE_OPTS,
           "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "8", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(6,)",
           "DATASETS.TEST", "()", "OUTPUT_DIR", str(output_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=str(workdir))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    with open(paths["val_json"]) as f:
        val_files = [img["file_name"] for img in json.load(f)["images"]][:3]
    images = [os.path.join(paths["val_images"], name) for name in val_files]
    return workdir, env, str(output_dir / "model_final.pth"), images


def run_demo(trained, *args):
    workdir, env, weights, _ = trained
    # A few iterations leave scores near the prior: a low threshold, at most 20 boxes per image.
    cmd = [sys.executable, DEMO, "--config-file", TINY_CONFIG, "--confidence-threshold", "0.0", "--cpu", *args,
           "--opts", "MODEL.WEIGHTS", weights, "TEST.DETECTIONS_PER_IMAGE", "20", *SIZE_OPTS]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=str(workdir))


def detection_lines(stdout):
    return [(m["source"], int(m["count"]), m["names"]) for m in DETECTION_LINE.finditer(stdout)]


def printed_names(names_field):
    return [re.sub(r" \(\d\.\d\d\)$", "", item) for item in names_field.split(", ") if item]


def test_custom_vocabulary_image_writes_visualisation_and_prints_only_its_names(trained, tmp_path):
    image = trained[3][0]
    output = tmp_path / "vis.jpg"
    proc = run_demo(trained, "--input", image, "--output", str(output),
                    "--vocabulary", "custom", "--custom-vocabulary", ",".join(CUSTOM))
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = detection_lines(proc.stdout)
    assert [source for source, _, _ in lines] == [image]
    _, count, names_field = lines[0]
    names = printed_names(names_field)
    assert count == len(names) > 0
    assert set(names) <= set(CUSTOM), names
    vis = cv2.imread(str(output))
    assert vis is not None and vis.shape == cv2.imread(image).shape
    assert re.search(r"detected \d+ instances in [0-9.]+s", proc.stdout + proc.stderr)  # time per image logged


def test_vocabulary_file_folder_and_corrupt_input(trained, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    good = [str(folder / f"good_{i}.jpg") for i in range(2)]
    for src, dst in zip(trained[3], good):
        cv2.imwrite(dst, cv2.imread(src))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    vocabulary_file = tmp_path / "names.txt"
    vocabulary_file.write_text("\n".join(CUSTOM) + "\n")
    out_dir = tmp_path / "out"
    proc = run_demo(trained, "--input", str(folder), "--output", str(out_dir),
                    "--vocabulary", "custom", "--custom-vocabulary", str(vocabulary_file))
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert re.search(r"Failed on '.*broken\.jpg'", proc.stdout + proc.stderr)  # the failing file is named
    printed = {os.path.basename(source) for source, _, _ in detection_lines(proc.stdout)}
    assert printed == {"good_0.jpg", "good_1.jpg"}  # the other inputs are still processed
    for _, _, names_field in detection_lines(proc.stdout):
        assert set(printed_names(names_field)) <= set(CUSTOM)
    assert sorted(os.listdir(out_dir)) == ["good_0.jpg", "good_1.jpg"]


def test_video_input_writes_a_video(trained, tmp_path):
    video = str(tmp_path / "clip.avi")
    frames = [cv2.imread(p) for p in trained[3]]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (width, height))
    assert writer.isOpened()
    for frame in frames + frames[::-1]:
        writer.write(frame)
    writer.release()
    output = tmp_path / "clip_vis.mp4"
    proc = run_demo(trained, "--video-input", video, "--output", str(output), "--vocabulary", "voc")
    assert proc.returncode == 0, proc.stderr[-4000:]
    capture = cv2.VideoCapture(str(output))
    assert capture.isOpened()
    decoded = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape[:2] == (height, width)
        decoded += 1
    capture.release()
    assert decoded == 6
    from gridclip.vocabulary import voc_class_names

    lines = detection_lines(proc.stdout)
    assert len(lines) == 6
    for _, _, names_field in lines:
        assert set(printed_names(names_field)) <= set(voc_class_names())


def test_missing_video_and_bad_arguments_fail_clearly(trained, tmp_path):
    proc = run_demo(trained, "--video-input", str(tmp_path / "nope.mp4"), "--output", str(tmp_path / "vis"))
    assert proc.returncode == 1 and "Failed on" in proc.stdout + proc.stderr and "nope.mp4" in proc.stdout + proc.stderr
    proc = run_demo(trained, "--input", trained[3][0], "--vocabulary", "custom")
    assert proc.returncode != 0 and "--custom-vocabulary" in proc.stderr
