"""
The image-vs-detection gradient ratio (gridclip.engine.health.GradientRatioHook): right values on a
model whose gradients are known, written to metrics.json every N iterations, and no change to training.
"""
import json
import math

import pytest
import torch
from detectron2.engine import SimpleTrainer, hooks
from detectron2.utils.events import JSONWriter

from gridclip.engine.health import GradientRatioHook, gradient_ratio_groups, image_vs_detection_gradients


class _Stage(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, n))


class ToyDetector(torch.nn.Module):
    """backbone.bottom_up.{attnpool, res5} as GridCLIP names them; image loss 3× the detection pull on attnpool."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Module()
        self.backbone.bottom_up = torch.nn.Module()
        self.backbone.bottom_up.attnpool = _Stage(4)
        self.backbone.bottom_up.res5 = _Stage(3)
        self.head = _Stage(2)

    def forward(self, batch):
        x = torch.stack(batch).mean(0)  # [4]
        pool, res5, head = self.backbone.bottom_up.attnpool.weight, self.backbone.bottom_up.res5.weight, self.head.weight
        detection = ((pool * x).sum() - 1) ** 2 + (res5.sum() - 1) ** 2 + (head.sum() - 2) ** 2
        return {"loss_image": 3 * ((pool * x).sum() - 1) ** 2, "loss_grid": detection}


def test_ratio_and_cosine_on_known_gradients():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    v = torch.nn.Parameter(torch.tensor([0.5]))
    losses = {"loss_image": (w * torch.tensor([3.0, 4.0])).sum(),  # grad (3, 4): norm 5
              "loss_grid": (w * torch.tensor([4.0, -3.0])).sum(),  # grad (4, -3): norm 5, orthogonal
              "loss_box_reg": 2 * v.sum()}  # also detection; no image gradient on v
    r = image_vs_detection_gradients(losses, {"both": [w, v], "w": [w], "v": [v]})
    assert r["w"]["ratio"] == pytest.approx(1.0) and r["w"]["cosine"] == pytest.approx(0.0, abs=1e-7)
    assert r["both"]["ratio"] == pytest.approx(5 / math.sqrt(29)) and r["both"]["detection_norm"] == pytest.approx(math.sqrt(29))
    assert r["v"]["ratio"] == 0.0 and r["v"]["image_norm"] == 0.0 and math.isnan(r["v"]["cosine"])
    assert w.grad is None and v.grad is None  # nothing accumulated: the training step's backward is unaffected
    losses["loss_image"].backward()  # the graph was retained
    assert w.grad is not None


def _train(period, tmp_path=None, iters=6):
    torch.manual_seed(0)
    model = ToyDetector()
    data = [[torch.rand(4), torch.rand(4)] for _ in range(iters)]
    trainer = SimpleTrainer(model, iter(data), torch.optim.SGD(model.parameters(), lr=0.05))
    registered = []
    if period:
        registered.append(GradientRatioHook(period))
    if tmp_path is not None:
        registered.append(hooks.PeriodicWriter([JSONWriter(str(tmp_path / "metrics.json"))], period=1))
    trainer.register_hooks(registered)
    trainer.train(0, iters)
    return model, trainer


def test_logged_every_period_to_metrics_json_without_changing_training(tmp_path):
    model, trainer = _train(period=2, tmp_path=tmp_path)
    history = trainer.storage.history("health/grad_ratio_image_vs_detection/attnpool")
    assert [it for _, it in history.values()] == [1, 3, 5]
    # attnpool: the image term is 3x the detection term with the same gradient direction
    assert all(v == pytest.approx(3.0) for v, _ in history.values())
    cosines = trainer.storage.history("health/grad_cos_image_vs_detection/attnpool").values()
    assert all(v == pytest.approx(1.0) for v, _ in cosines)
    assert all(v == 0.0 for v, _ in trainer.storage.history("health/grad_ratio_image_vs_detection/res5").values())
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    logged = [r["iteration"] for r in records if "health/grad_ratio_image_vs_detection/attnpool" in r]
    assert logged == [1, 3, 5]
    assert "forward" not in model.__dict__  # the wrapper is removed after training
    reference, _ = _train(period=0)
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b)  # same weights as a run without the hook


def test_groups_found_by_module_path_and_bad_period_refused():
    model = ToyDetector()
    groups = gradient_ratio_groups(model)
    assert set(groups) == {"attnpool", "res5"} and groups["res5"][0] is model.backbone.bottom_up.res5.weight
    model.backbone.bottom_up.res5.weight.requires_grad_(False)
    assert set(gradient_ratio_groups(model)) == {"attnpool"}  # frozen: nothing to measure
    with pytest.raises(ValueError, match="GRADIENT_RATIO_PERIOD"):
        GradientRatioHook(0)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread (two spin-wait on the shared 2-core machine), restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_gridclip_trainer_logs_the_ratio_when_the_config_key_is_set(tmp_path, world_dataset, embeddings_cache,
                                                                    one_torch_thread):
    import gridclip
    from gridclip.engine.trainer import GridCLIPTrainer

    from ..robustness.conftest import write_tiny_config

    path = write_tiny_config(tmp_path / "tiny.yaml", world_dataset.train_base, world_dataset.val, tmp_path / "run")
    cfg = gridclip.get_gridclip_cfg(path, ["MODEL.GRIDCLIP.GRADIENT_RATIO_PERIOD", 2, "SOLVER.MAX_ITER", 2,
                                           "SOLVER.CHECKPOINT_PERIOD", 100, "DATASETS.TEST", "()"])
    trainer = GridCLIPTrainer(cfg)
    assert sum(isinstance(h, GradientRatioHook) for h in trainer._hooks) == 1
    trainer.resume_or_load(resume=False)
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.json").read_text().splitlines()]
    for group in ("attnpool", "res5"):
        values = [r[f"health/grad_ratio_image_vs_detection/{group}"] for r in records
                  if f"health/grad_ratio_image_vs_detection/{group}" in r]
        assert len(values) == 1 and 0 < values[0] < math.inf, (group, values)
    default = gridclip.get_gridclip_cfg(path)
    assert default.MODEL.GRIDCLIP.GRADIENT_RATIO_PERIOD == 0  # off by default: no hook, no extra backward
