"""
gridclip.GridCLIPPredictor on a small checkpoint trained once for this module (tools/train_net.py,
configs/GridCLIP-Tiny-Synthetic.yaml with a tiny schedule): batched == one by one, paths == BGR
arrays, run-time vocabularies, grid embeddings and re-scoring, clear errors on bad input.
"""
import os
import subprocess
import sys
import uuid

import cv2
import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "configs", "GridCLIP-Tiny-Predictor.yaml")
SIZE_OPTS = [
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96",
    "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96",
    "MODEL.GRIDCLIP.PROMPT_TEMPLATES", "single",
]
TRAIN_OPTS = SIZE_OPTS + [
    "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "8", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(6,)",
    "DATASETS.TEST", "()", "SEED", "3",
]
CUSTOM = ["zebra", "red umbrella", "traffic cone"]


def train_tiny_checkpoint(workdir):
    """
    Train the tiny config for a few iterations on the generated dataset (its default size, as
    tools/train_net.py generates it) under ``workdir/datasets``; returns (weights, env, dataset root).
    """
    from gridclip.world import ensure_world_dataset

    root = str(workdir / "datasets" / "world")
    ensure_world_dataset(root)
    env = dict(os.environ, DETECTRON2_DATASETS=str(workdir / "datasets"), GRIDCLIP_CACHE=str(workdir / "cache"))
    output_dir = workdir / "output"
    cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", TINY_CONFIG,
           *TRAIN_OPTS, "OUTPUT_DIR", str(output_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=str(workdir))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    weights = output_dir / "model_final.pth"
    assert weights.is_file()
    return str(weights), env, root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(weights, registered dataset names, class names) of one tiny training run."""
    from detectron2.data import MetadataCatalog
    from gridclip.world import register_world_datasets

    workdir = tmp_path_factory.mktemp("predictor")
    weights, _, root = train_tiny_checkpoint(workdir)
    names = register_world_datasets(root, prefix=f"pytest_{uuid.uuid4().hex[:8]}_predictor")
    return weights, names, list(MetadataCatalog.get(names["val"]).thing_classes), workdir


def predictor_opts(names):
    return SIZE_OPTS + ["DATASETS.TRAIN", f"('{names['train_base']}',)", "DATASETS.TEST", f"('{names['val']}',)"]


@pytest.fixture(scope="module")
def predictor(dataset):
    from gridclip import GridCLIPPredictor

    weights, names, _, workdir = dataset
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDCLIP_CACHE", str(workdir / "cache"))
        yield GridCLIPPredictor(
            TINY_CONFIG, weights, opts=predictor_opts(names), device="cpu", confidence_threshold=0.05
        )


@pytest.fixture(scope="module")
def val_paths(dataset):
    from detectron2.data import DatasetCatalog

    return [d["file_name"] for d in DatasetCatalog.get(dataset[1]["val"])[:5]]


def assert_same(a, b, atol=0.0):
    """Identical detections, in the same order."""
    assert a.class_names == b.class_names
    assert torch.equal(a.class_ids, b.class_ids)
    torch.testing.assert_close(a.boxes, b.boxes, atol=atol, rtol=0)
    torch.testing.assert_close(a.scores, b.scores, atol=atol, rtol=0)
    torch.testing.assert_close(a.grid_embeddings, b.grid_embeddings, atol=atol, rtol=0)


def assert_same_up_to_float_noise(a, b, threshold, atol=1e-4):
    """
    The same detections up to float noise: a batched convolution may differ from a single-image one in
    the last bits, which can swap detections of (nearly) equal score or move one across the score
    threshold. Every detection scoring above threshold + atol must have a twin (same class, score within
    atol, box within 0.01 px, same grid embedding) in the other result.
    """
    assert a.image_size == b.image_size
    for x, y in ((a, b), (b, a)):
        same = (
            (x.class_ids[:, None] == y.class_ids[None, :])
            & ((x.scores[:, None] - y.scores[None, :]).abs() <= atol)
            & ((x.boxes[:, None, :] - y.boxes[None, :, :]).abs().amax(dim=2) <= 0.01)
            & ((x.grid_embeddings[:, None, :] - y.grid_embeddings[None, :, :]).abs().amax(dim=2) <= 1e-3)
        )
        clear = x.scores > threshold + atol
        unmatched = torch.nonzero(clear & ~same.any(dim=1)).flatten().tolist()
        assert not unmatched, [(x.class_names[i], float(x.scores[i]), x.boxes[i].tolist()) for i in unmatched]


def test_batched_equals_one_by_one_on_mixed_sizes(predictor, val_paths):
    images = [cv2.imread(p) for p in val_paths]
    images.append(cv2.resize(images[0], (120, 80)))  # another test-time size in the same call
    batched = predictor.predict(images, batch_size=3)
    single = [predictor(image) for image in images]
    assert len(batched) == len(images)
    assert sum(len(r) for r in single) > 0, "the checkpoint detects nothing; the comparison would be empty"
    for b, s in zip(batched, single):
        assert_same_up_to_float_noise(b, s, threshold=predictor.cfg.MODEL.FCOS.SCORE_THRESH_TEST)


def test_paths_equal_bgr_arrays_and_boxes_are_in_original_coordinates(predictor, val_paths):
    from_paths = predictor.predict(val_paths[:2])
    from_arrays = predictor.predict([cv2.imread(p) for p in val_paths[:2]])
    for a, b in zip(from_paths, from_arrays):
        assert_same(a, b)
    # A 2x larger image is resized to the test size (96) and boxes come back in its own coordinates.
    big = cv2.resize(cv2.imread(val_paths[0]), (192, 192), interpolation=cv2.INTER_NEAREST)
    result = predictor(big)
    assert result.image_size == (192, 192)
    assert len(result) > 0
    assert float(result.boxes.min()) >= 0 and float(result.boxes.max()) <= 192
    assert float(result.boxes[:, 2:].max()) > 96  # not left in the 96-px network input's coordinates


def test_set_vocabulary_changes_class_names(predictor, val_paths, dataset):
    class_names = dataset[2]
    try:
        names = predictor.set_vocabulary(CUSTOM)
        assert names == CUSTOM and predictor.vocabulary == CUSTOM
        results = predictor.predict(val_paths)
        assert sum(len(r) for r in results) > 0
        for r in results:
            assert set(r.class_names) <= set(CUSTOM)
            assert all(0 <= i < len(CUSTOM) for i in r.class_ids.tolist())
            assert r.vocabulary == CUSTOM
        predictor.set_vocabulary("cat,dog")  # a vocabulary spec string works too
        assert predictor.vocabulary == ["cat", "dog"]
    finally:
        predictor.set_vocabulary(class_names)
    assert set(predictor(val_paths[0]).class_names) <= set(class_names)


def test_grid_embeddings_have_the_clip_dim_and_rescore_without_the_model(predictor, val_paths):
    result = predictor(val_paths[0])
    assert len(result) > 0
    dim = predictor.text_embeddings(["cat"]).shape[1]
    assert predictor.embed_dim == dim == 64  # GridCLIP-Tiny-RN's CLIP embedding size
    assert result.grid_embeddings.shape == (len(result), dim)
    torch.testing.assert_close(result.grid_embeddings.norm(dim=1), torch.ones(len(result)))

    # Against the predictor's own vocabulary: score² = p(class) · p(centerness) <= p(class).
    same = predictor.rescore(result, predictor.vocabulary)
    assert same.text_scores.shape == (len(result), len(predictor.vocabulary))
    class_probability = same.text_scores[torch.arange(len(result)), result.class_ids]
    assert torch.all(result.scores**2 <= class_probability + 1e-5)

    other = predictor.rescore(result, CUSTOM)
    assert other.text_scores.shape == (len(result), len(CUSTOM))
    assert set(other.class_names) <= set(CUSTOM)
    torch.testing.assert_close(other.scores, other.text_scores.max(dim=1).values)
    torch.testing.assert_close(other.boxes, result.boxes)
    with pytest.raises(ValueError, match=r"\(2, 64\)"):
        predictor.rescore(result, ["a", "b"], text_embeddings=torch.zeros(2, 10))


def test_rescore_applies_the_unseen_class_offset_to_unseen_names_only(predictor, val_paths):
    result = predictor(val_paths[0])
    names = list(predictor.model.seen_class_names[:3]) + CUSTOM[:2]  # 3 trained classes, 2 never trained
    plain = predictor.rescore(result, names).text_scores
    predictor.model.unseen_class_logit_offset = -1.0  # MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET
    try:
        calibrated = predictor.rescore(result, names).text_scores
    finally:
        predictor.model.unseen_class_logit_offset = 0.0
    logit = lambda p: torch.log(p / (1 - p))  # noqa: E731
    torch.testing.assert_close(calibrated[:, :3], plain[:, :3])  # the weights' training classes
    torch.testing.assert_close(logit(calibrated[:, 3:]), logit(plain[:, 3:]) - 1.0, rtol=0, atol=1e-4)


def test_bad_inputs_name_the_problem(predictor, dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        predictor(str(tmp_path / "missing.jpg"))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not a JPEG")
    with pytest.raises(ValueError, match="corrupt.jpg"):
        predictor(str(corrupt))
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        predictor(np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        predictor(np.zeros((32, 32, 3), dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        type(predictor)("nope.yaml")
    with pytest.raises(FileNotFoundError, match="missing_weights.pth"):
        type(predictor)(TINY_CONFIG, str(tmp_path / "missing_weights.pth"), opts=predictor_opts(dataset[1]))


def test_detections_one_name_per_object_keeps_the_top_name_of_overlapping_boxes():
    from gridclip.predictor import Detections

    detections = Detections(
        boxes=torch.tensor([[0, 0, 10, 10], [0, 0, 10, 9.5], [20, 20, 30, 30]], dtype=torch.float32),
        scores=torch.tensor([0.4, 0.9, 0.8]), class_ids=torch.tensor([2, 0, 1]),
        class_names=["c", "a", "b"], grid_embeddings=torch.eye(3), image_size=(40, 40),
        vocabulary=["a", "b", "c"], text_scores=torch.rand(3, 3),
    )
    one = detections.one_name_per_object(0.5)
    assert one.class_names == ["a", "b"] and one.scores.tolist() == pytest.approx([0.9, 0.8])
    assert torch.equal(one.grid_embeddings, detections.grid_embeddings[[1, 2]])
    assert torch.equal(one.text_scores, detections.text_scores[[1, 2]])
    assert len(detections) == 3  # the original is unchanged
    assert len(one.to_instances()) == 2
