"""
tools/demo.py never destroys data and fails in one line: run in-process through its command line
(``cli_main``) with the tiny config, random weights and datasets that are not registered anywhere
(inference needs none). Bad outputs are refused before the model is built; with
--allow-output-in-input the inputs stay byte-identical and every output gets its own name; a
truncated video fails with exit status 1 after writing what it decoded; --help is instant.
"""
import hashlib
import importlib.util
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from .conftest import REPO_ROOT, write_tiny_config

DEMO_PATH = os.path.join(REPO_ROOT, "tools", "demo.py")
_spec = importlib.util.spec_from_file_location("gridclip_tool_demo", DEMO_PATH)
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


@pytest.fixture
def env(tmp_path, monkeypatch, embeddings_cache):
    monkeypatch.delenv("GRIDCLIP_DEBUG", raising=False)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "no_datasets"))
    config = write_tiny_config(tmp_path / "tiny.yaml", "unregistered_train", "unregistered_val", tmp_path / "out")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png"):
        cv2.imwrite(str(photos / name), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return config, photos


def run(capsys, config, *args, weights=""):
    code = demo.cli_main(["--config-file", config, "--cpu", "--confidence-threshold", "0.0",
                          "--vocabulary", "custom", "--custom-vocabulary", "cat,red umbrella", *args,
                          "--opts", "MODEL.WEIGHTS", weights, "TEST.DETECTIONS_PER_IMAGE", "3"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("demo.py: ")]
    return code, err


def digests(folder):
    return {name: hashlib.sha1((folder / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(folder)) if (folder / name).is_file()}


@pytest.mark.parametrize(
    "case, expected",
    [
        ("same-folder", "is the input folder"),
        ("inside-input", "is inside the input folder"),
        ("bad-extension", "extension '.xyz', which is not one of"),
        ("file-for-two-inputs", "is a file name but there are 2 inputs"),
        ("output-is-the-input", "is the input itself"),
        ("output-under-a-file", "Cannot write to the output folder"),
        ("read-only-output", "Cannot write to the output folder '/sys/"),
        ("no-display", "No display"),
        ("unreachable-display", "DISPLAY=':97' cannot be reached"),
        ("video-into-its-folder", "is the input folder"),
        ("missing-vocabulary-file", "--custom-vocabulary: Vocabulary file not found: names.json"),
        ("empty-vocabulary-name", "empty category names at positions [1]"),
        ("threshold-out-of-range", "--confidence-threshold must be in [0, 1)"),
        ("only-a-subfolder-named-like-an-image", "no image file found"),
    ],
)
def test_bad_outputs_and_arguments_are_refused_before_any_work(capsys, env, tmp_path, monkeypatch, case, expected):
    config, photos = env
    before = digests(photos)
    images = [str(photos / "a.jpg"), str(photos / "b.png")]
    args = {
        "same-folder": ["--input", str(photos), "--output", str(photos)],
        "inside-input": ["--input", str(photos), "--output", str(photos / "vis")],
        "bad-extension": ["--input", images[0], "--output", str(tmp_path / "vis.xyz")],
        "file-for-two-inputs": ["--input", *images, "--output", str(tmp_path / "vis.jpg")],
        "output-is-the-input": ["--input", images[0], "--output", images[0]],
        "output-under-a-file": ["--input", images[0], "--output", str(tmp_path / "a_file" / "vis")],
        "read-only-output": ["--input", images[0], "--output", "/sys/gridclip_demo_vis"],
        "no-display": ["--input", images[0]],
        "unreachable-display": ["--input", images[0]],
        "video-into-its-folder": ["--video-input", str(photos / "clip.mp4"), "--output", str(photos)],
        "missing-vocabulary-file": ["--input", images[0], "--output", str(tmp_path / "vis"),
                                    "--custom-vocabulary", "names.json"],
        "empty-vocabulary-name": ["--input", images[0], "--output", str(tmp_path / "vis"),
                                  "--custom-vocabulary", "cat,,dog"],
        "threshold-out-of-range": ["--input", images[0], "--output", str(tmp_path / "vis"),
                                   "--confidence-threshold", "1.5"],
        "only-a-subfolder-named-like-an-image": ["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "vis")],
    }[case]
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if case == "no-display":
        monkeypatch.delenv("DISPLAY", raising=False)
    if case == "unreachable-display":  # OpenCV's Qt would abort the process (SIGABRT) on it
        monkeypatch.setenv("DISPLAY", ":97")
    (tmp_path / "a_file").write_text("not a folder")
    if case == "only-a-subfolder-named-like-an-image":
        (tmp_path / "empty" / "x.jpg").mkdir(parents=True)
    built = []
    monkeypatch.setattr("gridclip.predictor.GridCLIPPredictor.__init__", lambda *a, **k: built.append(1))
    code, err = run(capsys, config, *args)
    assert code == 1 and len(err) == 1, err
    assert expected in err[0], err[0]
    assert not built  # refused before the model is built
    assert digests(photos) == before  # nothing overwritten


def test_output_in_input_folder_when_allowed_never_overwrites_and_names_uniquely(capsys, env, tmp_path):
    config, photos = env
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "a.jpg"), np.full((40, 40, 3), 90, np.uint8))  # same name as photos/a.jpg
    (photos / "sub.jpg").mkdir()  # a folder named like an image: skipped, not an error
    grey16 = (np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(grey16).save(photos / "depth.png")  # 16-bit: must not decode all white
    Image.new("P", (40, 30), 3).save(other / "anim.gif")  # readable, but no writer for .gif: PNG output
    before = digests(photos)
    code, err = run(capsys, config, "--input", str(photos), str(other / "a.jpg"), str(other / "anim.gif"),
                    "--output", str(photos),
                    "--allow-output-in-input")
    assert code == 0, err
    after = digests(photos)
    assert {k: after[k] for k in before} == before  # every input byte-identical
    assert sorted(set(after) - set(before)) == [
        "anim_vis.png", "b_vis.png", "depth_vis.png", "other__a_vis.jpg", "photos__a_vis.jpg"]
    vis = cv2.imread(str(photos / "depth_vis.png"))
    assert 90 < vis.mean() < 165  # the 16-bit gradient (mean 127.5), not the all-white 255 of a clipped decode


def test_truncated_video_fails_and_keeps_the_decoded_frames(capsys, env, tmp_path):
    config, _ = env
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    rng = np.random.default_rng(1)
    for _ in range(10):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = video.read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[: len(data) // 2])
    output = tmp_path / "vis"
    code, err = run(capsys, config, "--video-input", str(truncated), "--output", str(output))
    assert code == 1, err
    capture = cv2.VideoCapture(str(output / "truncated.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert 0 < frames < 10


def test_gif_in_a_folder_newline_in_a_name_and_an_elongated_image(capsys, env, tmp_path):
    """A folder's .gif is an input like an explicit one; a file name holding a newline stays on its one
    output line (escaped); a 1 x 3000 image (its resize rounds a side to 0 pixels) is detected on."""
    config, _ = env
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("P", (40, 30), 3).save(folder / "anim.gif")
    cv2.imwrite(str(folder / "line\nbreak.png"), np.full((30, 40, 3), 60, np.uint8))
    cv2.imwrite(str(folder / "long.png"), np.full((1, 3000, 3), 200, np.uint8))
    output = tmp_path / "vis"
    code = demo.cli_main(["--config-file", config, "--cpu", "--confidence-threshold", "0.0", "--vocabulary", "custom",
                          "--custom-vocabulary", "cat,red umbrella", "--input", str(folder), "--output", str(output),
                          "--opts", "MODEL.WEIGHTS", "", "TEST.DETECTIONS_PER_IMAGE", "3"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err[-2000:]
    lines = [line for line in out.splitlines() if " detections: " in line or line.endswith(" detections: ")]
    sources = sorted(line.split(": ", 1)[0] for line in lines)
    assert sources == sorted([str(folder / "anim.gif"), str(folder) + "/line\\nbreak.png", str(folder / "long.png")])
    assert sorted(os.listdir(output)) == ["anim.png", "line\nbreak.png", "long.png"]
    assert cv2.imread(str(output / "long.png")).shape == (1, 3000, 3)


def test_zero_frame_video_fails_and_leaves_no_output_file(capsys, env, tmp_path):
    config, _ = env
    video = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    writer.release()  # a valid container without frames
    output = tmp_path / "vis"
    code, err = run(capsys, config, "--video-input", str(video), "--output", str(output))
    assert code == 1, err
    assert not (output / "empty.mp4").exists()  # no empty output file


def test_planning_20000_inputs_is_linear_and_shows_progress(tmp_path, capsys):
    from gridclip.demo.outputs import IMAGE_EXTENSIONS, PROGRESS_MIN_INPUTS, plan_outputs

    inputs = [f"{tmp_path}/cam{i % 2}/img_{i // 2:05d}.jpg" for i in range(20000)]  # every name twice
    start = time.perf_counter()
    planned = plan_outputs(inputs, str(tmp_path / "vis"), IMAGE_EXTENSIONS, False)
    elapsed = time.perf_counter() - start
    assert elapsed < 6.0, elapsed  # 14.4 s before (a count per name: quadratic); 0.6 s measured
    assert len(set(planned.values())) == 20000
    assert planned[inputs[0]].endswith("vis/cam0__img_00000.jpg")
    assert "planning outputs" in capsys.readouterr().err and len(inputs) >= PROGRESS_MIN_INPUTS


def test_help_is_instant_and_a_subprocess_failure_has_no_traceback(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, DEMO_PATH, "--help"], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0 and "--allow-output-in-input" in proc.stdout
    assert elapsed < 3.0, elapsed  # no torch / Detectron2 import (6 s before)


def test_the_tools_choices_and_extensions_are_the_packages():
    """tools/demo.py keeps its --help instant with its own copies of these; they must not drift."""
    from gridclip.demo.outputs import IMAGE_EXTENSIONS, INPUT_IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
    from gridclip.vocabulary import BUILTIN_VOCABULARIES

    assert demo.IMAGE_EXTENSIONS == IMAGE_EXTENSIONS and demo.VIDEO_EXTENSIONS == VIDEO_EXTENSIONS
    assert demo.INPUT_IMAGE_EXTENSIONS == INPUT_IMAGE_EXTENSIONS
    assert set(demo.VOCABULARIES) == set(BUILTIN_VOCABULARIES) | {"custom"}
