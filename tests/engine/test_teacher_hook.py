"""
TeacherEmbeddingHook in real Detectron2 trainers (SimpleTrainer, AMPTrainer, DefaultTrainer; given
the trainer as the weakref.proxy register_hooks makes or as the object itself) with a dummy model and
a list-based loader, on whichever Detectron2 is installed (v0.6 or main).
"""
import warnings

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import HookBase, SimpleTrainer, TrainerBase

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


# ------------------------------------------------------------------ every trainer the hook meets
def _assert_every_step_had_embeddings(model, num_steps, batch_size=2):
    assert [len(b) for b in model.seen] == [batch_size] * num_steps
    assert all(e.shape == (TEACHER_DIM,) for b in model.seen for *_, e in b)


def test_hook_given_the_real_trainer_instead_of_a_proxy():
    """register_hooks hands hooks a weakref.proxy; code that sets hook.trainer itself may not."""
    model = RecordingModel()
    trainer = SimpleTrainer(model, _batches(2), torch.optim.SGD(model.parameters(), lr=0.1))
    hook = TeacherEmbeddingHook(CLIPImageTeacher(TINY_TEACHER_CLIP, ""))
    hook.trainer = trainer
    original = trainer._data_loader_iter
    hook.before_train()
    batch = next(trainer._data_loader_iter)
    assert all(d["teacher_embedding"].shape == (TEACHER_DIM,) for d in batch)
    hook.after_train()
    assert trainer._data_loader_iter is original


def test_hook_through_a_proxy_wraps_the_iterator_of_this_detectron2():
    """Detectron2 main's `_data_loader_iter` is a read-only property; v0.6's a plain attribute."""
    import weakref

    model = RecordingModel()
    trainer = SimpleTrainer(model, _batches(1), torch.optim.SGD(model.parameters(), lr=0.1))
    hook = TeacherEmbeddingHook(CLIPImageTeacher(TINY_TEACHER_CLIP, ""))
    trainer.register_hooks([hook])
    assert isinstance(hook.trainer, weakref.ProxyType)
    hook.before_train()
    read_only = isinstance(getattr(SimpleTrainer, "_data_loader_iter", None), property)
    assert hook._wrapped_trainer[1] == ("_data_loader_iter_obj" if read_only else "_data_loader_iter")
    assert "teacher_embedding" in next(trainer._data_loader_iter)[0]
    hook.after_train()


def test_hook_with_amp_trainer_wraps_and_restores_the_iterator_on_cpu():
    """AMPTrainer's step needs CUDA (see the cuda test below); its iterator handling is the same on CPU."""
    from detectron2.engine import AMPTrainer

    model = RecordingModel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's GradScaler warns that it is disabled without CUDA
        trainer = AMPTrainer(model, _batches(2), torch.optim.SGD(model.parameters(), lr=0.1))
    hook = TeacherEmbeddingHook(CLIPImageTeacher(TINY_TEACHER_CLIP, ""))
    trainer.register_hooks([hook])
    original = trainer._data_loader_iter
    hook.before_train()
    for _ in range(2):
        assert all(d["teacher_embedding"].shape == (TEACHER_DIM,) for d in next(trainer._data_loader_iter))
    hook.after_train()
    assert trainer._data_loader_iter is original and hook.teacher is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="AMPTrainer's training step requires CUDA")
def test_hook_in_an_amp_trainer_loop_on_cuda():
    from detectron2.engine import AMPTrainer

    model = RecordingModel().cuda()
    batches = [[dict(d, image=d["image"].cuda()) for d in b] for b in _batches(2)]
    trainer = AMPTrainer(model, batches, torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.register_hooks([TeacherEmbeddingHook(CLIPImageTeacher(TINY_TEACHER_CLIP, ""))])
    trainer.train(0, 2)
    _assert_every_step_had_embeddings(model, 2)
    assert all(e.device.type == "cuda" for b in model.seen for *_, e in b)
    assert len(trainer.storage.history("time/teacher").values()) == 2


def test_hook_follows_a_data_loader_replaced_during_training():
    model = RecordingModel()
    trainer = SimpleTrainer(model, _batches(1), torch.optim.SGD(model.parameters(), lr=0.1))
    replacement = _batches(3)

    class ReplaceLoader(HookBase):
        def after_step(self):
            if self.trainer.iter == 0:
                if hasattr(self.trainer, "reset_data_loader"):  # Detectron2 main
                    self.trainer.reset_data_loader(lambda: replacement)
                else:  # v0.6: the iterator is a plain attribute
                    self.trainer.data_loader = replacement
                    self.trainer._data_loader_iter = iter(replacement)

    trainer.register_hooks([TeacherEmbeddingHook(CLIPImageTeacher(TINY_TEACHER_CLIP, "")), ReplaceLoader()])
    trainer.train(0, 3)
    _assert_every_step_had_embeddings(model, 3)


@pytest.fixture
def detectron2_logger_at_info():
    """DefaultTrainer sets up Detectron2's logger unless INFO is enabled: keep the test's logging as it is."""
    import logging

    d2_logger = logging.getLogger("detectron2")
    level = d2_logger.level
    d2_logger.setLevel(logging.INFO)
    yield
    d2_logger.setLevel(level)


def test_hook_in_a_real_default_trainer(tmp_path, detectron2_logger_at_info):
    from detectron2.engine import DefaultTrainer

    model = RecordingModel()

    class Trainer(DefaultTrainer):
        @classmethod
        def build_model(cls, cfg):
            return model

        @classmethod
        def build_train_loader(cls, cfg):
            return _batches(3)

        def build_hooks(self):
            return [TeacherEmbeddingHook(CLIPImageTeacher(TINY_TEACHER_CLIP, ""))] + super().build_hooks()

    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = 3, (), 0
    cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.CHECKPOINT_PERIOD = 0.01, 2, 1000
    trainer = Trainer(cfg)
    original = trainer._trainer._data_loader_iter
    trainer.train()
    _assert_every_step_had_embeddings(model, 3)
    assert len(trainer.storage.history("time/teacher").values()) == 3
    assert trainer._trainer._data_loader_iter is original
    assert (tmp_path / "model_final.pth").is_file()
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert set(saved["model"]) == set(model.state_dict())  # no teacher weights
