"""With gridclip imported, Detectron2's own FCOS (LazyConfig, GN head) trains and infers on CPU."""
import torch
from detectron2 import model_zoo
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage


def test_fcos_r50_gn_train_step_and_inference():
    cfg = model_zoo.get_config("COCO-Detection/fcos_R_50_FPN_1x.py")
    cfg.model.head.norm = "GN"
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    image = torch.randint(0, 255, (3, 192, 256), dtype=torch.uint8)
    gt = Instances((192, 256), gt_boxes=Boxes(torch.tensor([[20.0, 30.0, 150.0, 170.0]])),
                   gt_classes=torch.tensor([5]))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    with EventStorage(0):
        losses = model([{"image": image, "instances": gt}])
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    before = model.head.cls_score.weight.detach().clone()
    total.backward()
    optimizer.step()
    assert not torch.equal(before, model.head.cls_score.weight)

    model.eval()
    with torch.no_grad():
        outputs = model([{"image": image, "height": 384, "width": 512}])
    instances = outputs[0]["instances"]
    assert instances.image_size == (384, 512)
    assert {"pred_boxes", "scores", "pred_classes"} <= set(instances.get_fields())
