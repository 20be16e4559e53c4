"""
The web demo (gridclip.web_demo, tools/web_demo.py) on a tiny weights folder written here: the page
served on 127.0.0.1 and driven with gradio_client (detections for typed names, presets, exemplars,
the threshold, clear errors), exemplar strokes and typed boxes, the drawing, the tool's one-line
errors, and a headless-Chromium screenshot of the page showing a detection (skipped without Chromium).
"""
import importlib.util
import os

import cv2
import numpy as np
import pytest

pytest.importorskip("gradio", reason="the web demo needs gradio (requirements.txt)")
pytest.importorskip("gradio_client", reason="the web demo's tests drive it with gradio_client (requirements.txt)")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "configs", "GridCLIP-Tiny-Predictor.yaml")
SIZE_OPTS = ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160", "MODEL.GRIDCLIP.PROMPT_TEMPLATES", "single"]
FOLDER_NAMES = ["red solid circle", "blue checkered triangle", "orange solid star", "green striped square"]
TYPED = "zebra, red umbrella"


@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory):
    """A weights folder of the tiny predictor config (random init: its scores sit just above 0.05)."""
    from gridclip import GridCLIPPredictor

    root = tmp_path_factory.mktemp("web_demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDCLIP_CACHE", str(root / "cache"))
        predictor = GridCLIPPredictor(TINY_CONFIG, weights="", vocabulary=FOLDER_NAMES, opts=SIZE_OPTS,
                                      device="cpu", confidence_threshold=0.05)
        return predictor.save_pretrained(str(root / "weights"))


@pytest.fixture(scope="module")
def session(weights_folder, tmp_path_factory):
    from gridclip.web_demo.launcher import load_session

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDCLIP_CACHE", str(tmp_path_factory.mktemp("web_demo_cache")))
        yield load_session(weights_folder, device="cpu")


@pytest.fixture(scope="module")
def example_png(tmp_path_factory):
    from gridclip.web_demo import world_example

    path = str(tmp_path_factory.mktemp("web_demo_images") / "world.png")
    cv2.imwrite(path, world_example().image_rgb[:, :, ::-1])
    return path


@pytest.fixture(scope="module")
def client(session, tmp_path_factory):
    """gradio_client on the page served on 127.0.0.1 (a free port); the server closes after the module."""
    from gradio_client import Client

    from gridclip.web_demo.app import serve

    with serve(session, host="127.0.0.1") as url:
        assert url.startswith("http://127.0.0.1:")
        yield Client(url, verbose=False, analytics_enabled=False,
                     download_files=str(tmp_path_factory.mktemp("web_demo_downloads")))


def detect(client, image, names="", preset="none", threshold=0.05, boxes="", exemplar_names=""):
    from gradio_client import handle_file

    drawing, table, status = client.predict(
        handle_file(image) if image else None, names, preset, threshold, None, boxes, exemplar_names,
        api_name="/detect",
    )
    assert table["headers"] == ["name", "score", "x0", "y0", "x1", "y1"]
    return drawing, table["data"], status


def test_client_gets_detections_of_typed_names(client, example_png):
    drawing, rows, status = detect(client, example_png, names=TYPED)
    assert rows, status
    height, width = cv2.imread(example_png).shape[:2]
    for name, score, x0, y0, x1, y1 in rows:
        assert name in ("zebra", "red umbrella")
        assert score >= 0.05
        assert 0 <= x0 <= x1 <= width + 0.5 and 0 <= y0 <= y1 <= height + 0.5  # an untrained model: thin boxes
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    picture = cv2.imread(drawing)
    assert picture is not None and min(picture.shape[:2]) >= 640, "small images are enlarged to be legible"
    assert f"{len(rows)} detection(s)" in status and "vocabulary of 2" in status


def test_threshold_filters_without_running_the_model_again(client, example_png):
    _, low, _ = detect(client, example_png, names=TYPED, threshold=0.05)
    scores = sorted({r[1] for r in low})  # rounded to 0.001: cut between two of them
    assert len(scores) >= 2, low
    cut = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    _, high, status = detect(client, example_png, names=TYPED, threshold=cut)
    assert high and all(r[1] > cut for r in high)
    assert high == [r for r in low if r[1] > cut]
    assert "cached model output" in status
    _, none, status = detect(client, example_png, names=TYPED, threshold=1.0)
    assert none == [] and status.startswith("0 detection(s)")


def test_presets(client, example_png):
    from gridclip.vocabulary import voc_class_names

    _, rows, status = detect(client, example_png, preset="voc", threshold=0.05)
    assert rows and {r[0] for r in rows} <= set(voc_class_names()) and "vocabulary of 20" in status
    _, rows, status = detect(client, example_png, names="zebra", preset="weights", threshold=0.05)
    assert rows and {r[0] for r in rows} <= set(FOLDER_NAMES) | {"zebra"} and "vocabulary of 5" in status


def test_typed_exemplar_box_is_a_class(client, example_png):
    _, rows, status = detect(client, example_png, names="zebra", boxes="44,49,82,89", exemplar_names="that star")
    assert "vocabulary of 2" in status
    assert rows and {r[0] for r in rows} <= {"zebra", "that star"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(names="", preset="none"), "Nothing to detect"),
    (dict(names=TYPED, boxes="1,2,3"), "write x0,y0,x1,y1"),
    (dict(names=TYPED, exemplar_names="cat"), "no exemplar box"),
    (dict(names="zebra, Zebra"), "zebra"),
    (dict(names=TYPED, preset="imagenet"), "not in the list of choices"),  # Gradio checks the dropdown
])
def test_bad_input_gets_one_clear_message(client, example_png, kwargs, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message) as info:
        detect(client, example_png, **kwargs)
    assert "Traceback" not in str(info.value)


def test_no_image_is_a_clear_message(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="No image: upload an image"):
        detect(client, None, names=TYPED)


def test_typed_names_are_never_read_as_a_file(tmp_path):
    from gridclip.web_demo import parse_names

    secret = tmp_path / "names.txt"
    secret.write_text("secret one\nsecret two\n")
    try:
        names = parse_names(str(secret))
    except ValueError:
        names = []
    assert "secret one" not in names
    assert parse_names("cat,\n red umbrella ,, ") == ["cat", "red umbrella"]


def test_exemplar_strokes_become_boxes():
    from gridclip.web_demo.exemplar_input import editor_boxes, exemplars_from_input, parse_boxes

    layer = np.zeros((100, 120, 4), np.uint8)
    cv2.rectangle(layer, (10, 20), (50, 70), (255, 0, 200, 255), 2)  # an outline
    cv2.line(layer, (80, 30), (110, 60), (255, 0, 200, 255), 3)  # a scribble
    layer[5, 5, 3] = 255  # a stray click: ignored
    value = {"background": np.full((100, 120, 3), 90, np.uint8), "layers": [layer], "composite": None}
    assert editor_boxes(value) == [(9.0, 19.0, 52.0, 72.0), (78.0, 28.0, 113.0, 63.0)]
    assert parse_boxes("1,2,30,40; (5 5 9 9)") == [(1.0, 2.0, 30.0, 40.0), (5.0, 5.0, 9.0, 9.0)]
    exemplars = exemplars_from_input(value, "0,0,8,8", "a, b, c")
    assert [e.name for e in exemplars] == ["a", "b", "c"] and exemplars[2].box == (0.0, 0.0, 8.0, 8.0)
    assert exemplars[0].image.shape == (100, 120, 3)
    with pytest.raises(ValueError, match="2 exemplar names for 3"):
        exemplars_from_input(value, "0,0,8,8", "a, b")


def test_drawing_uses_the_class_colour_inside_the_image():
    import torch

    from gridclip.web_demo.drawing import class_colour, draw_detections

    image = np.full((128, 160, 3), 128, np.uint8)
    boxes = torch.tensor([[100.0, 5.0, 159.0, 60.0]])  # near the top-right corner: the label must stay inside
    drawing = draw_detections(image, boxes, torch.tensor([0.9]), ["a long class name here"], torch.tensor([3]))
    assert drawing.shape == (640, 800, 3)
    colour_bgr = np.array(class_colour(3)[::-1])
    hits = np.all(np.abs(drawing.astype(int) - colour_bgr) <= 8, axis=2)
    assert hits.sum() > 1000  # the box outline (and the label) in the class colour
    ys, xs = np.nonzero(hits)
    assert xs.max() < 800 and ys.min() >= 0


def load_tool():
    spec = importlib.util.spec_from_file_location("gridclip_tools_web_demo", os.path.join(REPO, "tools", "web_demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_missing_weights_folder_is_one_line(tmp_path, monkeypatch, capsys):
    from gridclip.tool_errors import run_tool
    from gridclip.web_demo import launcher

    tool = load_tool()
    missing = str(tmp_path / "output" / "weights")
    monkeypatch.setattr(launcher, "default_weights_folder", lambda: missing)
    assert run_tool(tool.main, [], prog="web_demo.py") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run `make demo` first" in err and missing in err
    assert run_tool(tool.main, ["--weights", str(tmp_path / "mine")], prog="web_demo.py") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "neither an existing weights folder" in err
    assert run_tool(tool.main, ["--window-size", "big"], prog="web_demo.py") == 1
    assert "--window-size must be W,H" in capsys.readouterr().err


def _colour_pixels(png, rgb, tolerance=10):
    image = cv2.imread(png)
    assert image is not None, f"{png} is not a PNG"
    return int(np.all(np.abs(image.astype(int) - np.array(rgb[::-1])) <= tolerance, axis=2).sum())


def test_chromium_screenshot_shows_a_detection(session, tmp_path):
    from gridclip.web_demo import DemoExample, world_example
    from gridclip.web_demo.drawing import class_colour
    from gridclip.web_demo.launcher import take_screenshot
    from gridclip.web_demo.screenshot import find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium binary on PATH (apt-get install chromium): the page screenshot is not taken")
    example = DemoExample(world_example().image_rgb, "zebra", threshold=0.05)
    expected = session.detect(example.image_rgb, example.names, example.preset, example.threshold)
    assert expected.rows, "the tiny model must detect something for this check"
    colour = class_colour(0)  # "zebra", the only class
    page = take_screenshot(session, str(tmp_path / "page.png"), (1280, 1000), example)
    empty = take_screenshot(session, str(tmp_path / "empty.png"), (1280, 1000), None)
    assert _colour_pixels(page, colour) > 300, "no box in the class colour on the page"
    assert _colour_pixels(empty, colour) < 20, "the page without detections already shows the box colour"


def test_exemplar_drawn_on_the_editor_via_the_client(client, example_png, tmp_path):
    from gradio_client import handle_file

    layer = np.zeros((128, 160, 4), np.uint8)
    cv2.rectangle(layer, (44, 49), (82, 89), (200, 0, 255, 255), 2)  # an outline around the star
    layer_png = str(tmp_path / "layer.png")
    cv2.imwrite(layer_png, layer)
    editor = {"background": handle_file(example_png), "layers": [handle_file(layer_png)], "composite": None}
    _, table, status = client.predict(handle_file(example_png), "zebra", "none", 0.05, editor, "", "drawn star",
                                      api_name="/detect")
    assert "vocabulary of 2" in status
    assert table["data"] and {r[0] for r in table["data"]} <= {"zebra", "drawn star"}


def test_default_weights_folder_is_the_last_make_demo_wrote(tmp_path, monkeypatch):
    from gridclip.web_demo.launcher import EMBEDDED_DEFAULT_WEIGHTS, default_weights_folder

    monkeypatch.chdir(tmp_path)
    assert default_weights_folder() == EMBEDDED_DEFAULT_WEIGHTS  # nothing written yet: named in the error
    first, second = EMBEDDED_DEFAULT_WEIGHTS, EMBEDDED_DEFAULT_WEIGHTS.replace("pretrained", "pretrained_run2")
    for age, folder in ((100, first), (0, second)):
        os.makedirs(folder)
        manifest = os.path.join(folder, "gridclip.json")
        open(manifest, "w").close()
        os.utime(manifest, (os.path.getmtime(manifest) - age,) * 2)
    assert default_weights_folder() == second
