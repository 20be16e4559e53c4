"""
The report of ``python -m gridclip.compat``: which fixes are active and why (the probe's reason), and
the Detectron2 features GridCLIP adapts to; ``--json`` for a machine-readable form.
"""
import os
import sys

import numpy as np
import PIL

from .apply import APPLIED, STATUS
from .capabilities import default_trainer_restores_inner_state, detectron2_compiled_ops, detectron2_launch_supports_cpu
from .fixes import FIXES

__all__ = ["capability_rows", "environment", "report", "main"]


def capability_rows():
    """``(feature, probe result, what GridCLIP uses)`` for each Detectron2 feature GridCLIP adapts to."""
    import torch

    compiled, where = detectron2_compiled_ops()
    rows = [
        ("compiled ops", where, "COCOEvaluator(use_fast_impl=True)" if compiled else
         "COCOEvaluator(use_fast_impl=False) (pycocotools; same numbers)"),
    ]
    if torch.cuda.is_available():
        rows.append(("launch", "CUDA available", "detectron2.engine.launch (NCCL)"))
    else:
        cpu, why = detectron2_launch_supports_cpu()
        rows.append(("launch", why, "detectron2.engine.launch (gloo) + thread split" if cpu else
                     "gridclip.engine.launch's gloo workers"))
    restores = default_trainer_restores_inner_state()
    rows.append((
        "trainer state",
        "DefaultTrainer checkpoints the inner trainer ('_trainer')" if restores
        else "DefaultTrainer checkpoints only the iteration and hooks",
        "GridCLIPTrainer adds nothing" if restores else "GridCLIPTrainer adds '_trainer' (optimizer, grad scaler)",
    ))
    return rows


def environment():
    """One line: the Detectron2 in use (version, folder) and the versions of torch, numpy, Pillow, Python."""
    import detectron2
    import torch

    return (f"Detectron2 {detectron2.__version__} ({os.path.dirname(detectron2.__file__)}), torch {torch.__version__}, "
            f"numpy {np.__version__}, Pillow {PIL.__version__}, Python {sys.version.split()[0]}")


def report(as_json=False, file=None):
    """Print the fixes (active / not needed / disabled, with the probe's reason) and the capabilities."""
    import json

    file = file or sys.stdout
    capabilities = capability_rows()
    if as_json:
        json.dump({
            "environment": environment(),
            "fixes": [{"name": f.name, "problem": f.problem, **STATUS.get(f.name, {"state": "not probed"})}
                      for f in FIXES],
            "capabilities": [{"feature": a, "probe": b, "used": c} for a, b, c in capabilities],
        }, file, indent=2)
        file.write("\n")
        return
    print(f"GridCLIP compatibility fixes (gridclip.compat) for {environment()}:", file=file)
    width = max(len(f.name) for f in FIXES)
    for fix in FIXES:
        status = STATUS.get(fix.name, {"state": "not probed", "reason": ""})
        print(f"  {status['state'].upper():<10} {fix.name:<{width}}  {status['reason']}", file=file)
    print(f"{len(APPLIED)} of {len(FIXES)} fixes active.", file=file)
    print("Detectron2 features GridCLIP adapts to:", file=file)
    for feature, why, used in capabilities:
        print(f"  {feature:<13} {why} -> {used}", file=file)


def main(argv=None):
    """``python -m gridclip.compat [--json]``: print :func:`report`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gridclip.compat",
                                     description="List GridCLIP's active Detectron2 compatibility fixes.")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    report(as_json=args.json)
    return 0
