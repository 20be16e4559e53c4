"""
One GridCLIPPredictor shared between threads: while threads swap vocabularies, every result of the
threads that predict comes from one vocabulary (its class ids, names, scores and boxes equal the
single-threaded result with that vocabulary), and ``rescore`` keeps its text tower loaded and its
query embeddings in memory (bounded), writing no cache file and loading CLIP once.
"""
import os
import threading

import numpy as np
import pytest
import torch

from gridclip import GridCLIPPredictor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "configs", "GridCLIP-Tiny-Predictor.yaml")
OPTS = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64", "MODEL.GRIDCLIP.PROMPT_TEMPLATES", "single",
        "TEST.DETECTIONS_PER_IMAGE", "30"]
VOCABULARY_A = ["red circle", "blue square", "green star"]
VOCABULARY_B = ["yellow striped triangle", "purple dotted cross", "orange solid heart", "white ring", "black bar"]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    cache = tmp_path_factory.mktemp("threads_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDCLIP_CACHE", str(cache))
        torch.manual_seed(0)
        predictor = GridCLIPPredictor(TINY_CONFIG, weights="", vocabulary=VOCABULARY_A, opts=OPTS,
                                      device="cpu", confidence_threshold=0.0)
        predictor.set_vocabulary(VOCABULARY_B)  # both vocabularies' embeddings cached on disk and in memory
        predictor.set_vocabulary(VOCABULARY_A)
        yield predictor


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def _same(result, reference):
    """The same detections: vocabulary, class ids and names exactly; scores and boxes up to float rounding
    (a batch of two and a single image differ in the last bits)."""
    return (result.vocabulary == reference.vocabulary and torch.equal(result.class_ids, reference.class_ids)
            and result.class_names == reference.class_names
            and torch.allclose(result.scores, reference.scores, atol=1e-5)
            and torch.allclose(result.boxes, reference.boxes, atol=1e-3))


def test_results_stay_consistent_while_other_threads_swap_vocabularies(predictor, image):
    reference = {}
    for names in (VOCABULARY_A, VOCABULARY_B):
        predictor.set_vocabulary(names)
        result = predictor(image)
        assert len(result) > 0 and result.vocabulary == names
        reference[tuple(names)] = result
    a, b = reference[tuple(VOCABULARY_A)], reference[tuple(VOCABULARY_B)]
    assert not torch.equal(a.class_ids, b.class_ids) or not torch.allclose(a.scores, b.scores)

    stop = threading.Event()
    results, errors = [], []

    def swap():
        try:
            while not stop.is_set():
                for names in (VOCABULARY_A, VOCABULARY_B):
                    predictor.set_vocabulary(names)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def predict():
        try:
            for _ in range(8):
                results.append(predictor(image))
                results.extend(predictor.predict([image, image], batch_size=2))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    swappers = [threading.Thread(target=swap) for _ in range(2)]
    predictors = [threading.Thread(target=predict) for _ in range(3)]
    for t in swappers + predictors:
        t.start()
    for t in predictors:
        t.join(timeout=120)
    stop.set()
    for t in swappers:
        t.join(timeout=60)
    assert not errors, errors
    assert len(results) == 3 * 8 * 3
    seen = {tuple(r.vocabulary) for r in results}
    assert seen == {tuple(VOCABULARY_A), tuple(VOCABULARY_B)}, "the swaps did not interleave with predictions"
    mixed = [r for r in results if not _same(r, reference[tuple(r.vocabulary)])]
    assert not mixed, f"{len(mixed)} of {len(results)} results mix two vocabularies"
    for r in results:
        assert r.class_names == [r.vocabulary[i] for i in r.class_ids.tolist()]
    # the model's own vocabulary (read by export and save_pretrained) is the last snapshot's
    assert list(predictor.model.test_class_names) == predictor.vocabulary


def test_a_failed_swap_keeps_the_snapshot(predictor, image):
    predictor.set_vocabulary(VOCABULARY_A)
    before = predictor.vocabulary_snapshot
    with pytest.raises(ValueError):
        predictor.set_vocabulary(VOCABULARY_B, text_embeddings=torch.full((5, predictor.embed_dim), float("nan")))
    assert predictor.vocabulary_snapshot is before and predictor.vocabulary == VOCABULARY_A


def test_rescore_keeps_its_text_tower_and_queries_in_memory(predictor, image, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRIDCLIP_CACHE", str(cache))
    result = predictor(image)
    queries = predictor.text_queries
    loads = queries.loads
    for i in range(20):  # a new query list on every call
        rescored = predictor.rescore(result, [f"query {i}", f"other {i}"])
        assert rescored.vocabulary == [f"query {i}", f"other {i}"] and rescored.text_scores.shape == (len(result), 2)
    assert queries.loads - loads <= 1, "the text tower was loaded more than once"
    assert not cache.exists() or not list(cache.rglob("*.safetensors")), "rescore wrote cache files"
    encodes = queries.encodes
    again = predictor.rescore(result, ["query 3", "other 3"])  # in memory: no text-tower pass
    assert queries.encodes == encodes
    assert torch.equal(again.text_scores, predictor.rescore(result, ["query 3", "other 3"]).text_scores)
    # the same embeddings as the cached builder of set_vocabulary (one recipe)
    from gridclip.modeling.text.cache import load_text_embeddings

    built = load_text_embeddings(["query 3", "other 3"], **predictor.model.text_encoder, use_cache=False)
    assert torch.allclose(queries.cached(["query 3", "other 3"]), built, atol=1e-6)


def test_the_query_memory_is_bounded():
    from gridclip.text_queries import TextQueries

    queries = TextQueries({"clip_model_name": "unused", "pretrained": ""}, max_entries=3, max_rows=5)
    for i in range(6):
        queries.remember([f"name {i}"], torch.zeros(1, 4))
    assert len(queries) == 3 and queries.cached(["name 0"]) is None and queries.cached(["name 5"]) is not None
    queries.remember(["a", "b", "c", "d"], torch.zeros(4, 4))  # 4 rows + 1 kept = 5 rows
    assert len(queries) == 2 and queries.cached(["name 5"]) is not None


def test_read_only_cache_computes_warns_once_and_continues(predictor, image, monkeypatch, caplog):
    import logging
    import uuid

    folder = f"/proc/gridclip_read_only_cache_{uuid.uuid4().hex[:8]}"  # cannot be created, also as root
    monkeypatch.setenv("GRIDCLIP_CACHE", folder)
    names = ["cyan zigzag", "magenta blob"]
    with caplog.at_level(logging.WARNING):
        assert predictor.set_vocabulary(names) == names
        predictor.set_vocabulary(["cyan zigzag", "magenta blob", "grey wave"])
        rescored = predictor.rescore(predictor(image), ["teal knot"])
        rebuilt = GridCLIPPredictor(TINY_CONFIG, weights="", vocabulary=["teal knot", "navy dot"], opts=OPTS,
                                    device="cpu", confidence_threshold=0.0)  # building the model too
    assert predictor.vocabulary == ["cyan zigzag", "magenta blob", "grey wave"] and rescored.vocabulary == ["teal knot"]
    assert len(rebuilt(image).vocabulary) == 2
    warnings = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1 and folder in warnings[0], warnings
    predictor.set_vocabulary(VOCABULARY_A)
