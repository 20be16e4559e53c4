"""
GridCLIPTrainer's checkpointed trainer state on the installed Detectron2: the inner trainer's state
("_trainer": optimizer, AMP grad scaler) is saved exactly once, whether Detectron2's DefaultTrainer
saves it itself (main) or not (v0.6), and a checkpoint without it (an older run) still resumes.
"""
import logging

import torch
from detectron2.engine import DefaultTrainer, SimpleTrainer

from gridclip.compat import default_trainer_restores_inner_state
from gridclip.engine.trainer import GridCLIPTrainer


class CountingSimpleTrainer(SimpleTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.saves = self.loads = 0

    def state_dict(self):
        self.saves += 1
        return super().state_dict()

    def load_state_dict(self, state_dict):
        self.loads += 1
        super().load_state_dict(state_dict)


def _bare_gridclip_trainer(lr=0.1):
    """A GridCLIPTrainer with only what its state methods use (no model/data building)."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()  # momentum buffers exist
    trainer = GridCLIPTrainer.__new__(GridCLIPTrainer)
    trainer._hooks, trainer.iter = [], 7
    trainer.__dict__["_trainer"] = CountingSimpleTrainer(model, [], optimizer)
    return trainer


def test_inner_trainer_state_saved_once():
    trainer = _bare_gridclip_trainer()
    state = trainer.state_dict()
    assert state["iteration"] == 7
    assert trainer._trainer.saves == 1  # not once by DefaultTrainer and again by us
    assert "momentum_buffer" in str(state["_trainer"]["optimizer"]["state"])
    upstream = DefaultTrainer.state_dict(trainer)
    assert ("_trainer" in upstream) == default_trainer_restores_inner_state()


def test_inner_trainer_state_restored_once():
    saved = _bare_gridclip_trainer().state_dict()
    trainer = _bare_gridclip_trainer(lr=0.5)
    trainer.load_state_dict(saved)
    assert trainer.iter == 7 and trainer._trainer.loads == 1
    optimizer_state = trainer._trainer.optimizer.state_dict()
    assert optimizer_state["param_groups"][0]["lr"] == 0.1
    assert len(optimizer_state["state"]) == 2  # both parameters' momentum buffers restored


def test_checkpoint_of_an_older_run_without_trainer_state_resumes_with_a_warning(caplog):
    trainer = _bare_gridclip_trainer(lr=0.5)
    with caplog.at_level(logging.WARNING, logger="gridclip.engine.trainer"):
        trainer.load_state_dict({"iteration": 3})  # what Detectron2 v0.6's DefaultTrainer saved
    assert trainer.iter == 3 and trainer._trainer.loads == 0
    assert "no optimizer state (older run)" in caplog.text
    assert trainer._trainer.optimizer.state_dict()["param_groups"][0]["lr"] == 0.5
