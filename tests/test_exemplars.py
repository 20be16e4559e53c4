"""
Image exemplars as vocabulary entries (gridclip.exemplars) on a tiny untrained predictor: an exemplar is
the detector's own grid embedding at its box, several of one name are averaged, names and exemplars mix,
and bad exemplars fail with one clear message. Whether exemplars *find* novel objects is measured on a
trained model in tests/world/test_transfer.py.
"""
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gridclip import Exemplar
from gridclip.exemplars import exemplar_grid_embedding, parse_exemplar, read_exemplars_file, split_vocabulary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "configs", "GridCLIP-Tiny-Predictor.yaml")
OPTS = ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96", "MODEL.GRIDCLIP.PROMPT_TEMPLATES", "single"]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (80, 112, 3), dtype=np.uint8)
    cv2.rectangle(image, (20, 10), (60, 50), (0, 0, 255), -1)
    path = str(tmp_path_factory.mktemp("exemplars") / "scene.png")
    cv2.imwrite(path, image)
    return path


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from gridclip import GridCLIPPredictor

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDCLIP_CACHE", str(tmp_path_factory.mktemp("exemplar_cache")))
        torch.manual_seed(0)
        yield GridCLIPPredictor(TINY_CONFIG, "", vocabulary=["zebra", "red square"], opts=OPTS, device="cpu",
                                confidence_threshold=0.0)


def test_exemplar_is_the_detectors_grid_embedding_at_its_box(predictor, image_path):
    result = predictor(image_path)
    sizes = result.boxes[:, 2:] - result.boxes[:, :2]
    large = torch.nonzero((sizes >= 4).all(dim=1)).flatten().tolist()
    assert len(large) >= 2
    for i in (large[0], large[len(large) // 2]):
        box = tuple(result.boxes[i].tolist())
        embedding = exemplar_grid_embedding(predictor, Exemplar(image_path, box), contrast=False)
        # the location that regressed exactly this box: its grid embedding is the detection's
        torch.testing.assert_close(embedding, result.grid_embeddings[i], atol=1e-4, rtol=0)
    contrasted = exemplar_grid_embedding(predictor, Exemplar(image_path, tuple(result.boxes[large[0]].tolist())))
    assert abs(float(contrasted.norm()) - 1) < 1e-5


def test_mixed_vocabulary_averages_exemplars_of_one_name(predictor, image_path):
    image = cv2.imread(image_path)
    a, b = Exemplar(image_path, (20, 10, 60, 50), "thing"), Exemplar(image, (0, 0, 40, 30), "thing")
    names = predictor.set_vocabulary(["zebra", a, Exemplar(image_path, (50, 40, 100, 75)), b])
    assert names == ["zebra", "thing", "exemplar 0"] == predictor.vocabulary
    rows = predictor.model.classifier.test_embeddings
    expected = F.normalize(exemplar_grid_embedding(predictor, a) + exemplar_grid_embedding(predictor, b), dim=0)
    torch.testing.assert_close(rows[1], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(rows[0], F.normalize(predictor.text_embeddings(["zebra"])[0], dim=0), atol=1e-5, rtol=0)
    result = predictor(image_path)
    assert set(result.class_names) <= {"zebra", "thing", "exemplar 0"}
    rescored = predictor.rescore(result, [a, "zebra"])
    assert rescored.vocabulary == ["thing", "zebra"] and rescored.text_scores.shape == (len(result), 2)


def test_predictor_built_with_exemplars_only(image_path, tmp_path, monkeypatch):
    from gridclip import GridCLIPPredictor

    monkeypatch.setenv("GRIDCLIP_CACHE", str(tmp_path / "cache"))
    p = GridCLIPPredictor(TINY_CONFIG, "", vocabulary=[Exemplar(image_path, (20, 10, 60, 50), "red box")], opts=OPTS,
                          device="cpu", confidence_threshold=0.0)
    assert p.vocabulary == ["red box"]
    assert set(p(image_path).class_names) == {"red box"}


def test_cli_and_json_forms(image_path, tmp_path):
    e = parse_exemplar(f"red box={image_path}:20,10,60,50")
    assert (e.name, e.image, e.box) == ("red box", image_path, (20.0, 10.0, 60.0, 50.0))
    assert parse_exemplar(f"{image_path}:1,2,3,4").name is None
    (tmp_path / "ex.json").write_text(
        '[{"name": "a", "image": "%s", "box": [1, 2, 30, 40]}, {"image": "%s", "box": [0, 0, 9, 9]}]'
        % (image_path, os.path.basename(image_path)))
    os.symlink(image_path, tmp_path / os.path.basename(image_path))
    names, entries = split_vocabulary(read_exemplars_file(str(tmp_path / "ex.json")))
    assert names == ["a", "exemplar 0"] and [k for k, _ in entries] == ["exemplars", "exemplars"]


@pytest.mark.parametrize("make, message", [
    (lambda p: Exemplar(p, (10, 10, 5, 20)), "x1 > x0"),
    (lambda p: Exemplar(p, (0, 0, 1)), "4 finite numbers"),
    (lambda p: Exemplar(p, (0, 0, float("nan"), 3)), "4 finite numbers"),
    (lambda p: parse_exemplar(f"cat={p}"), "NAME=IMAGE:x0,y0,x1,y1"),
    (lambda p: parse_exemplar(f"cat={p}:1,2,x,4"), "not 4 numbers"),
    (lambda p: parse_exemplar("cat=missing.jpg:1,2,3,4"), "not found"),
    (lambda p: split_vocabulary(["cat", Exemplar(p, (0, 0, 5, 5), "cat")]), "both a text entry and exemplars"),
    (lambda p: split_vocabulary(["cat", 3]), "name (str) or a gridclip.Exemplar"),
])
def test_bad_exemplars_say_what_is_wrong(image_path, make, message):
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=message.replace("(", r"\(").replace(")", r"\)")):
        make(image_path)


def test_box_outside_the_image_is_refused(predictor, image_path):
    with pytest.raises(ValueError, match="outside the 112x80 image"):
        exemplar_grid_embedding(predictor, Exemplar(image_path, (200, 200, 300, 300)))


def _exemplars_file(tmp_path, entries):
    import json

    path = tmp_path / "exemplars.json"
    path.write_text(json.dumps(entries))
    return str(path)


def test_eval_exemplars_replace_the_text_rows_of_their_classes_only(image_path, tmp_path, monkeypatch):
    """MODEL.GRIDCLIP.TEST_EXEMPLARS (train_net --eval-only): the named classes get the mean exemplar
    embedding, every other class keeps its text embedding, and no class changes its index."""
    from gridclip import GridCLIPPredictor
    from gridclip.exemplars import set_test_exemplars

    monkeypatch.setenv("GRIDCLIP_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    names = ["zebra", "red square", "blue circle"]
    predictor = GridCLIPPredictor(TINY_CONFIG, "", vocabulary=names, opts=OPTS, device="cpu")
    model, cfg = predictor.model, predictor.cfg.clone()
    text_rows = model.classifier.test_embeddings.clone()
    boxes = [(20, 10, 60, 50), (16, 8, 64, 54)]
    cfg.defrost()
    cfg.MODEL.GRIDCLIP.TEST_EXEMPLARS = _exemplars_file(
        tmp_path, [{"name": "red square", "image": image_path, "box": list(b)} for b in boxes])
    model.train()
    assert set_test_exemplars(model, cfg) == ["red square"]
    assert model.training  # restored
    assert list(model.test_class_names) == names
    rows = model.classifier.test_embeddings
    model.eval()
    expected = F.normalize(torch.stack([exemplar_grid_embedding(predictor, Exemplar(image_path, b)) for b in boxes])
                           .mean(dim=0), dim=0)
    torch.testing.assert_close(rows[1], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(rows[[0, 2]], text_rows[[0, 2]])
    assert float(rows[1] @ text_rows[1]) < 0.99  # the class is no longer queried by its text

    cfg.MODEL.GRIDCLIP.TEST_EXEMPLARS = _exemplars_file(
        tmp_path, [{"name": "red sqare", "image": image_path, "box": list(boxes[0])}])
    with pytest.raises(ValueError, match=r"'red sqare' are not classes of the test vocabulary"):
        set_test_exemplars(model, cfg)


def test_exemplar_classes_get_no_unseen_class_offset(image_path, tmp_path, monkeypatch):
    """The unseen-class offset calibrates *text* embeddings of names never trained on; an exemplar's row is
    the detector's own grid embedding, so a class queried by exemplars keeps offset 0 whatever its name."""
    from gridclip import GridCLIPPredictor

    monkeypatch.setenv("GRIDCLIP_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    p = GridCLIPPredictor(TINY_CONFIG, "", vocabulary=["zebra", "red square"], device="cpu", confidence_threshold=0.0,
                          opts=OPTS + ["MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET", "-1.0"])
    exemplar = Exemplar(image_path, (20, 10, 60, 50), "red box")  # a name outside the training vocabulary
    p.set_vocabulary(["zebra", "teapot", exemplar])
    assert p.vocabulary_snapshot.logit_offsets.tolist() == [0.0, -1.0, 0.0]
    p.set_vocabulary(["zebra", "teapot", "red box"])  # the same name as text is unseen: the offset returns
    assert p.vocabulary_snapshot.logit_offsets.tolist() == [0.0, -1.0, -1.0]

    result = p(image_path)
    rescored = p.rescore(result, [exemplar, "teapot"])
    classifier = p.model.classifier
    rows = torch.stack([exemplar_grid_embedding(p, exemplar), F.normalize(p.text_embeddings(["teapot"])[0], dim=0)])
    cosine = F.normalize(result.grid_embeddings, dim=-1) @ rows.T
    with torch.no_grad():
        expected = torch.sigmoid(cosine * classifier.logit_scale + classifier.bias + torch.tensor([0.0, -1.0]))
    torch.testing.assert_close(rescored.text_scores, expected, atol=1e-5, rtol=0)

    # MODEL.GRIDCLIP.TEST_EXEMPLARS (--eval-only): a novel class queried by exemplars loses its offset too
    from gridclip.exemplars import set_test_exemplars

    p.set_vocabulary(["zebra", "teapot"])
    cfg = p.cfg.clone()
    cfg.defrost()
    cfg.MODEL.GRIDCLIP.TEST_EXEMPLARS = _exemplars_file(tmp_path, [{"name": "teapot", "image": image_path,
                                                                    "box": [20, 10, 60, 50]}])
    assert set_test_exemplars(p.model, cfg) == ["teapot"]
    assert p.model.classifier.test_logit_offsets.tolist() == [0.0, 0.0]
    p.model.set_seen_class_names(["zebra"])  # a later refresh keeps the rule
    assert p.model.classifier.test_logit_offsets.tolist() == [0.0, 0.0]
