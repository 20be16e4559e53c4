"""
Session fixture ``world_clips``: the generated world's two mini-CLIPs (GridCLIP-World-RN: backbone +
text tower; GridCLIP-World-RN-Teacher: teacher), pretrained once per session on a small caption corpus with
tools/pretrain_clip.py's code (open_clip's ClipLoss), into a private cache folder. Small enough for
the suite (well under 90 s on a 2-core CPU); far weaker than the embedded default's (make demo's) CLIPs.
"""
import dataclasses
import time

import pytest
import torch

from gridclip.world.pretraining import BACKBONE_CLIP, TEACHER_CLIP, ensure_world_clips

#: caption corpus and training schedule of the test CLIPs (more multi-object images than make demo's
#: 30 %: with its 70 % single objects the small fixture CLIP transferred less to the 96-px test world's
#: novel objects, 0.49 vs 0.37 novel recall for random CLIPs, against 0.60 vs 0.31 with 40 %)
TEST_CORPUS_ARGS = dict(num_images=3000, single_object_fraction=0.4)
#: (seeds fixed here: the embedded default's are chosen for its own 800-step models)
TEST_TRAIN_ARGS = {
    BACKBONE_CLIP: dict(steps=320, batch_size=64, lr=3e-3, warmup_steps=20, seed=0),
    TEACHER_CLIP: dict(steps=120, batch_size=64, lr=3e-3, warmup_steps=15, seed=1),
}


@dataclasses.dataclass
class WorldCLIPs:
    backbone_path: str  # safetensors state dict of GridCLIP-World-RN
    teacher_path: str  # safetensors state dict of GridCLIP-World-RN-Teacher
    backbone_stats: dict  # training statistics incl. "zero_shot"
    teacher_stats: dict
    seconds: float  # wall time of the pretraining
    cache_dir: str

    def opts(self):
        """Config options that load them through the ordinary local-file path."""
        return ["MODEL.CLIP.PRETRAINED", self.backbone_path, "MODEL.GRIDCLIP.TEACHER.PRETRAINED", self.teacher_path]


@pytest.fixture(scope="session")
def world_clips(tmp_path_factory):
    cache_dir = str(tmp_path_factory.mktemp("world_clip_cache"))
    start = time.perf_counter()
    # One torch thread, both models at once (one Python thread each): small batches gain little from two
    # torch threads, and two on a CPU that other jobs keep busy were 5x slower per step (5.4 vs 1.1 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clips = ensure_world_clips(
            (BACKBONE_CLIP, TEACHER_CLIP), corpus_args=TEST_CORPUS_ARGS, train_args=TEST_TRAIN_ARGS,
            cache_dir=cache_dir, progress=False, zero_shot_per_object=1, parallel=True,
        )
    finally:
        torch.set_num_threads(threads)
    return WorldCLIPs(
        backbone_path=clips[BACKBONE_CLIP]["path"], teacher_path=clips[TEACHER_CLIP]["path"],
        backbone_stats=clips[BACKBONE_CLIP]["stats"], teacher_stats=clips[TEACHER_CLIP]["stats"],
        seconds=time.perf_counter() - start, cache_dir=cache_dir,
    )
