"""The detectron2._C placeholder installed by dev/install_detectron2.py."""
import pytest
import torch

import detectron2._C as C


def _is_placeholder():
    return getattr(C, "IS_GRIDCLIP_PLACEHOLDER", False)


@pytest.mark.skipif(not _is_placeholder(), reason="a real compiled Detectron2 is installed")
def test_compiled_op_raises_clear_message():
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[10.0, 10.0, 4.0, 4.0, 0.0]])
    with pytest.raises(ImportError) as info:
        pairwise_iou_rotated(boxes, boxes)
    message = str(info.value)
    assert "detectron2._C.box_iou_rotated" in message
    assert "Build Detectron2 from source" in message


@pytest.mark.skipif(not _is_placeholder(), reason="a real compiled Detectron2 is installed")
def test_fast_coco_eval_names_the_workaround():
    with pytest.raises(ImportError, match="use_fast_impl=False"):
        C.COCOevalAccumulate


def test_version_helpers_exist():
    assert isinstance(C.get_compiler_version(), str)
    assert isinstance(C.get_cuda_version(), str)
    assert C.has_cuda() in (True, False)
