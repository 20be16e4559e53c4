"""
Detectron2 (the v0.6 sdist or a compiled build of main) on today's stack: torch 2.11-2.14, numpy 2,
Pillow >= 10, Python 3.11, setuptools 80.

Every fix is applied from our side, on import of :mod:`gridclip`; no installed file is edited.

- :mod:`.fixes`: one probe + fix pair per upstream problem (:class:`CompatFix`, :data:`FIXES`); each
  probe checks the installed behaviour, never a version string, so the same code is right on
  Detectron2 v0.6 and on main, with any numpy/Pillow/torch.
- :mod:`.apply`: :func:`apply_all` probes every fix once and applies the needed ones
  (:data:`APPLIED`, :data:`STATUS`); ``GRIDCLIP_DISABLE_COMPAT=1`` (or a comma-separated list of fix
  names) switches fixes off.
- :mod:`.capabilities`: Detectron2 features GridCLIP adapts to (compiled ops, CPU launch, trainer state).
- :mod:`.reporting`: ``python -m gridclip.compat`` prints which fixes are active and why (``--json`` for
  a machine-readable form), plus those capabilities.

Tests: ``tests/test_compat.py`` reproduces each upstream problem with its fix disabled where the
problem exists, and checks that the fix is not applied where it does not.
"""
from .apply import APPLIED, STATUS, apply_all
from .capabilities import default_trainer_restores_inner_state, detectron2_compiled_ops, detectron2_launch_supports_cpu
from .fixes import FIXES, CompatFix
from .reporting import report

__all__ = [
    "apply_all",
    "APPLIED",
    "FIXES",
    "STATUS",
    "CompatFix",
    "detectron2_compiled_ops",
    "detectron2_launch_supports_cpu",
    "default_trainer_restores_inner_state",
    "report",
]
