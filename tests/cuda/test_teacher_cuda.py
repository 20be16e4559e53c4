"""
The CLIP image teacher on CUDA: fp16 autocast gives the fp32 embeddings (cosine >= 0.999), CUDA fp32
gives the CPU's, and TeacherEmbeddingHook times the teacher with CUDA events inside AMP training.
"""
import math
import time

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here); "
                       "dev/gpu_check/run.py runs it on the lent GPU"),
]

TEACHER = "ViT-B-32-quickgelu"  # the paper's teacher, random weights (no download)


def _images(seed=0):
    """Four uint8 CHW images of the sizes a training batch holds (smooth colour fields + noise)."""
    rng = np.random.default_rng(seed)
    images = []
    for h, w in [(800, 1333), (800, 1067), (640, 960), (800, 1333)]:
        coarse = torch.from_numpy(rng.random((1, 3, h // 32, w // 32)).astype(np.float32) * 255)
        smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
        noise = torch.from_numpy(rng.integers(-25, 26, (3, h, w)).astype(np.float32))
        images.append((smooth + noise).clamp(0, 255).to(torch.uint8))
    return images


@pytest.fixture(scope="module")
def teacher():
    from gridclip.modeling.teacher import CLIPImageTeacher

    torch.manual_seed(0)
    return CLIPImageTeacher(TEACHER, "", device="cuda", amp=True)


def test_fp16_autocast_teacher_matches_fp32_and_cpu(teacher, cuda_report):
    images = _images()
    assert teacher.device.type == "cuda" and teacher.amp
    fp16 = teacher.encode(images)
    teacher.amp = False
    try:
        fp32 = teacher.encode(images)
    finally:
        teacher.amp = True
    assert fp16.dtype == fp32.dtype == torch.float32 and fp16.device.type == "cuda"
    assert torch.isfinite(fp16).all()
    torch.testing.assert_close(fp16.norm(dim=1), torch.ones(len(images), device="cuda"))
    cosine = (fp16 * fp32).sum(dim=1)
    assert cosine.min().item() >= 0.999, cosine.tolist()

    # The same weights and preprocessing on the CPU (fp32) give the CUDA fp32 embeddings.
    teacher.to("cpu")
    try:
        cpu = teacher.encode(images)
    finally:
        teacher.to("cuda")
    cpu_cosine = (cpu * fp32.cpu()).sum(dim=1)
    assert cpu_cosine.min().item() >= 0.9999, cpu_cosine.tolist()
    cuda_report("teacher_fp16_vs_fp32", min_cosine=round(cosine.min().item(), 6),
                cuda_vs_cpu_min_cosine=round(cpu_cosine.min().item(), 6))


def test_teacher_hook_times_the_teacher_with_cuda_events_under_amp(cuda_cfg, cuda_report):
    """AMPTrainer + TeacherEmbeddingHook on CUDA: time/teacher from CUDA events, positive, below the step."""
    from detectron2.data import DatasetCatalog
    from detectron2.engine import AMPTrainer
    from detectron2.structures import Boxes, Instances

    from gridclip.analysis.timing import RepeatBatch
    from gridclip.engine.teacher_hook import TeacherEmbeddingHook
    from gridclip.engine.trainer import GridCLIPTrainer

    cfg = cuda_cfg("GridCLIP-R50-FPN-2x.yaml")
    model = GridCLIPTrainer.build_model(cfg)
    assert next(model.parameters()).device.type == "cuda"
    import detectron2.data.detection_utils as utils

    batch = []
    for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0]):
        image = utils.read_image(d["file_name"], format="RGB")
        boxes = torch.tensor([a["bbox"] for a in d["annotations"]], dtype=torch.float32)
        classes = torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.int64)
        batch.append({"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
                      "height": d["height"], "width": d["width"], "image_id": d["image_id"], "flipped": False,
                      "instances": Instances(image.shape[:2], gt_boxes=Boxes(boxes), gt_classes=classes)})
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    trainer = AMPTrainer(model, RepeatBatch(batch), optimizer)
    hook = TeacherEmbeddingHook(cfg)
    trainer.register_hooks([hook])
    iterations = 8
    torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train(0, iterations)
    torch.cuda.synchronize()
    step_s = (time.perf_counter() - start) / iterations
    teacher_s = [v for v, _ in trainer.storage.history("time/teacher").values()]
    assert len(teacher_s) == iterations
    assert all(math.isfinite(t) and t > 0 for t in teacher_s), teacher_s
    steady = sorted(teacher_s[2:])  # the first calls include cuDNN autotuning
    median = steady[len(steady) // 2]
    assert median < step_s, (median, step_s)
    assert hook.teacher is None  # released after training
    cuda_report("teacher_cuda_event_timing", teacher_ms_median=round(median * 1e3, 2),
                step_ms_mean=round(step_s * 1e3, 1), teacher_share=round(median / step_s, 4),
                batch=len(batch), image_size="800x1333", teacher=cfg.MODEL.GRIDCLIP.TEACHER.MODEL_NAME)
