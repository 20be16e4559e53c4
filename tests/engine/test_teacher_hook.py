"""TeacherEmbeddingHook in a real Detectron2 SimpleTrainer loop with a dummy model and a list-based loader."""
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import SimpleTrainer, TrainerBase

from gridclip import add_gridclip_config
from gridclip.engine.teacher_hook import TeacherEmbeddingHook
from gridclip.modeling.clip_configs import TINY_TEACHER_CLIP
from gridclip.modeling.teacher import CLIPImageTeacher

TEACHER_DIM = 32  # GridCLIP-Tiny-ViT


class RecordingModel(torch.nn.Module):
    """Stands in for GridCLIP: needs 'teacher_embedding' in every dict, records what it saw."""

    def __init__(self, teacher_dim=TEACHER_DIM):
        super().__init__()
        self.teacher_dim = teacher_dim
        self.image_head = torch.nn.Linear(teacher_dim, teacher_dim)
        self.seen = []

    def forward(self, batched_inputs):
        targets = torch.stack([d["teacher_embedding"] for d in batched_inputs])
        self.seen.append([(d.get("image_id"), d.get("flipped"), d["image"], d["teacher_embedding"]) for d in batched_inputs])
        return {"loss_image": (self.image_head(targets) - targets).abs().mean()}


def _image(seed, h, w):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def _batches(num_batches, batch_size=2, with_keys=True, image_ids=None, flips=None):
    """Fresh dicts per batch, as Detectron2's mapper produces; sizes differ within a batch."""
    batches = []
    for b in range(num_batches):
        batch = []
        for j in range(batch_size):
            k = b * batch_size + j
            image_id = image_ids[k] if image_ids else k
            flipped = flips[k] if flips else False
            d = {"image": _image(image_id * 2 + int(flipped), 40 + 8 * j, 56 - 4 * j)}
            if with_keys:
                d.update(image_id=image_id, flipped=flipped)
            batch.append(d)
        batches.append(batch)
    return batches


@pytest.fixture(scope="module")
def teacher_weights():
    return {k: v.clone() for k, v in CLIPImageTeacher(TINY_TEACHER_CLIP, "").state_dict().items()}


def _trainer(model, batches, hook):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = SimpleTrainer(model, batches, optimizer)
    trainer.register_hooks([hook])
    return trainer


def test_hook_fills_every_dict_logs_time_and_keeps_teacher_out_of_the_model(tmp_path, teacher_weights):
    teacher = CLIPImageTeacher(TINY_TEACHER_CLIP, "")
    reference = CLIPImageTeacher(TINY_TEACHER_CLIP, "")
    calls = []
    encode = teacher.encode
    teacher.encode = lambda images, fmt: calls.append(len(images)) or encode(images, fmt)
    hook = TeacherEmbeddingHook(teacher)
    model = RecordingModel()
    trainer = _trainer(model, _batches(3, batch_size=3), hook)
    original_iterator = trainer._data_loader_iter
    trainer.train(0, 3)

    assert calls == [3, 3, 3]  # one batched call per batch
    assert len(model.seen) == 3
    for batch in model.seen:
        for _, _, image, embedding in batch:
            assert embedding.shape == (TEACHER_DIM,) and embedding.dtype == torch.float32
            assert abs(float(embedding.norm()) - 1.0) < 1e-5
            torch.testing.assert_close(embedding, reference.encode([image])[0], atol=1e-5, rtol=1e-5)

    times = trainer.storage.history("time/teacher").values()
    assert len(times) == 3 and all(t > 0 for t, _ in times)

    # The teacher is in no checkpoint / optimizer; its weights did not change; it is released.
    assert not any("visual" in k for k in model.state_dict())
    assert sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters()
    )
    checkpointer = DetectionCheckpointer(model, save_dir=str(tmp_path), trainer=trainer, optimizer=trainer.optimizer)
    checkpointer.save("model_final")
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert set(saved["model"]) == set(model.state_dict())
    assert "hooks" not in saved.get("trainer", {})
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_weights[k]), k
    assert hook.teacher is None
    assert trainer._data_loader_iter is original_iterator  # unwrapped again


class DelegatingTrainer(TrainerBase):
    """DefaultTrainer's structure: hooks on the outer trainer, the loop step in `_trainer`."""

    def __init__(self, inner):
        super().__init__()
        self._trainer = inner

    def run_step(self):
        self._trainer.iter = self.iter
        self._trainer.run_step()


def test_hook_wraps_the_inner_trainer_of_a_default_trainer_like_wrapper():
    model = RecordingModel()
    inner = SimpleTrainer(model, _batches(2), torch.optim.SGD(model.parameters(), lr=0.1))
    outer = DelegatingTrainer(inner)
    outer.register_hooks([TeacherEmbeddingHook(CLIPImageTeacher(TINY_TEACHER_CLIP, ""))])
    outer.train(0, 2)
    assert [len(b) for b in model.seen] == [2, 2]
    assert all(e.shape == (TEACHER_DIM,) for b in model.seen for *_, e in b)
    assert len(outer.storage.history("time/teacher").values()) == 2


def test_cache_reuses_embeddings_by_image_id_and_flip():
    teacher = CLIPImageTeacher(TINY_TEACHER_CLIP, "")
    calls = []
    encode = teacher.encode
    teacher.encode = lambda images, fmt: calls.append(len(images)) or encode(images, fmt)
    hook = TeacherEmbeddingHook(teacher, cache_embeddings=True)
    # Epoch 1: images 0,1 | 2,3 ; epoch 2: same images (same pixels) | image 0 flipped + image 1.
    ids = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    flips = [False] * 8 + [True, False]
    model = RecordingModel()
    trainer = _trainer(model, _batches(5, image_ids=ids, flips=flips), hook)
    trainer.train(0, 5)

    assert calls == [2, 2, 1]  # epoch 2 all cached; only (0, flipped) is new in the last batch
    first = {(i, f): e for b in model.seen[:2] for i, f, _, e in b}
    for i, f, _, e in model.seen[2] + model.seen[3]:
        torch.testing.assert_close(e, first[(i, f)])
    flipped_0 = [e for i, f, _, e in model.seen[4] if f][0]
    assert not torch.allclose(flipped_0, first[(0, False)])
    hit_rates = [v for v, _ in trainer.storage.history("teacher/cache_hit_rate").values()]
    assert hit_rates == [0.0, 0.0, 1.0, 1.0, 0.5]


def test_cache_needs_image_id_and_flipped():
    hook = TeacherEmbeddingHook(CLIPImageTeacher(TINY_TEACHER_CLIP, ""), cache_embeddings=True)
    with pytest.raises(KeyError, match="'image_id' and 'flipped'"):
        hook.add_teacher_embeddings(_batches(1, with_keys=False)[0])


def _cfg(**input_overrides):
    cfg = get_cfg()
    add_gridclip_config(cfg)
    cfg.MODEL.GRIDCLIP.TEACHER.MODEL_NAME = TINY_TEACHER_CLIP
    cfg.MODEL.GRIDCLIP.TEACHER.PRETRAINED = ""
    cfg.MODEL.GRIDCLIP.TEACHER.CACHE_EMBEDDINGS = True
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)
    for key, value in input_overrides.items():
        if key == "CROP":
            cfg.INPUT.CROP.ENABLED = value
        else:
            setattr(cfg.INPUT, key, value)
    return cfg


def test_from_config_builds_the_teacher_and_validates_the_cache_setting():
    hook = TeacherEmbeddingHook(_cfg())
    assert hook.cache_embeddings and hook.input_format == "RGB"
    assert hook.teacher.model_name == TINY_TEACHER_CLIP and hook.teacher.embed_dim == TEACHER_DIM
    assert set(TeacherEmbeddingHook.from_config(_cfg(FORMAT="BGR"))) == {"teacher", "input_format", "cache_embeddings"}

    with pytest.raises(ValueError, match="CROP.ENABLED"):
        TeacherEmbeddingHook(_cfg(CROP=True))
    with pytest.raises(ValueError, match="several sizes"):
        TeacherEmbeddingHook(_cfg(MIN_SIZE_TRAIN=(80, 96, 112)))
    with pytest.raises(ValueError, match="'range'"):
        TeacherEmbeddingHook(_cfg(MIN_SIZE_TRAIN=(80, 112), MIN_SIZE_TRAIN_SAMPLING="range"))
    # Without the cache, crop and multi-scale are fine.
    cfg = _cfg(CROP=True, MIN_SIZE_TRAIN=(80, 96))
    cfg.MODEL.GRIDCLIP.TEACHER.CACHE_EMBEDDINGS = False
    assert not TeacherEmbeddingHook(cfg).cache_embeddings


def test_teacher_dim_mismatch_is_reported_before_training():
    model = RecordingModel(teacher_dim=512)
    trainer = _trainer(model, _batches(1), TeacherEmbeddingHook(CLIPImageTeacher(TINY_TEACHER_CLIP, "")))
    with pytest.raises(ValueError, match="outputs 512 dims.*32-dim"):
        trainer.train(0, 1)
