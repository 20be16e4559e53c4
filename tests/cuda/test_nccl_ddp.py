"""
NCCL + DistributedDataParallel on CUDA, the path of ``train_net.py --num-gpus 8``: one process
(world size 1: the lent machine has one GPU; Detectron2's launch runs ``--num-gpus 1`` without a
process group) joins an NCCL group, wraps GridCLIP in DDP as Detectron2's ``create_ddp_model`` does for
several GPUs, and trains AMP steps with the teacher hook: DDP's reducer must see a gradient for
every trainable parameter (else it raises on the second step), and an NCCL all-reduce runs.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here); "
                       "dev/gpu_check/run.py runs it on the lent GPU"),
]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent(
    """
    import math, os, sys
    import torch
    import torch.distributed as dist
    import gridclip
    from detectron2.engine import AMPTrainer
    from detectron2.engine.launch import _find_free_port
    from detectron2.structures import Boxes, Instances
    from torch.nn.parallel import DistributedDataParallel
    from gridclip.engine.teacher_hook import TeacherEmbeddingHook
    from gridclip.engine.trainer import GridCLIPTrainer

    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_find_free_port()}", world_size=1, rank=0)
    cfg = gridclip.get_gridclip_cfg(sys.argv[1], [
        "MODEL.DEVICE", "cuda", "MODEL.GRIDCLIP.TRAIN_VOCABULARY", "cat,dog,red umbrella",
        "MODEL.GRIDCLIP.TEST_VOCABULARY", "cat,dog,red umbrella", "MODEL.GRIDCLIP.PROMPT_TEMPLATES", "single",
        "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])
    model = GridCLIPTrainer.build_model(cfg)
    ddp = DistributedDataParallel(model, device_ids=[0], broadcast_buffers=False)
    generator = torch.Generator().manual_seed(0)
    batch = []
    for i, (h, w) in enumerate([(256, 320), (256, 320)]):
        image = torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8)
        boxes = torch.tensor([[20.0, 30.0, 150.0, 200.0], [160.0, 40.0, 300.0, 230.0]])
        batch.append({"image": image, "height": h, "width": w, "image_id": i, "flipped": False,
                      "instances": Instances((h, w), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, 2]))})

    def loader():
        while True:
            yield [dict(d) for d in batch]

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    trainer = AMPTrainer(ddp, loader(), optimizer)
    trainer.register_hooks([TeacherEmbeddingHook(cfg)])
    trainer.train(0, 4)
    totals = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(totals) == 4 and all(math.isfinite(v) for v in totals), totals
    value = torch.ones(1, device="cuda") * 3
    dist.all_reduce(value)
    print("NCCL_DDP_OK", dist.get_backend(), value.item(), " ".join(f"{v:.4f}" for v in totals))
    dist.destroy_process_group()
    """
)


def test_nccl_ddp_amp_steps_with_teacher_hook(tmp_path, cuda_report):
    env = dict(os.environ, GRIDCLIP_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    config = os.path.join(REPO, "configs", "GridCLIP-Tiny-Synthetic.yaml")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, config], env=env, capture_output=True, text=True,
                          timeout=240, cwd=str(tmp_path))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("NCCL_DDP_OK"))
    _, backend, reduced, *losses = line.split()
    assert backend == "nccl" and float(reduced) == 3.0
    cuda_report("nccl_ddp", backend=backend, losses=" ".join(losses))
