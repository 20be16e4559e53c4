"""FLOPs of one batch-1 inference, total and per top-level part (fvcore, through Detectron2)."""
import contextlib
import os

import torch

__all__ = ["count_flops"]


def count_flops(model, test_input) -> dict:
    """
    fvcore FLOPs of one batch-1 inference (Detectron2's ``FlopCountAnalysis``: one multiply-add = one
    flop; convs, matmuls, norms and the attention; decoding and NMS are not counted): total and per
    top-level part.

    Args:
        model: a Detectron2 meta-architecture.
        test_input: one input dict ({"image": uint8 [3, H, W], "height", "width"}).

    Returns:
        {"total": flops, "parts": {top-level module name: flops, ...}}; the parts add up to the total.
    """
    from detectron2.utils.analysis import FlopCountAnalysis

    model.eval()
    with torch.no_grad(), open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        analysis = FlopCountAnalysis(model, [test_input])
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        total = analysis.total()
        by_module = analysis.by_module()
    # Detectron2's analysis wraps the model (module names start with "model."): top-level parts.
    parts = {k[len("model."):]: v for k, v in by_module.items() if k.startswith("model.") and k.count(".") == 1 and v}
    parts["(not in a submodule: e.g. the cosine classifier matmul)"] = total - sum(parts.values())
    return {"total": total, "parts": parts}
