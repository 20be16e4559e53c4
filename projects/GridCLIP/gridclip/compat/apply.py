"""
Probing and applying the fixes of :mod:`gridclip.compat.fixes` (once per process, on ``import gridclip``).

``GRIDCLIP_DISABLE_COMPAT=1`` imports gridclip without applying any fix; a comma-separated list of fix
names skips just those.
"""
import os
from collections import OrderedDict

from .fixes import FIXES

__all__ = ["APPLIED", "STATUS", "apply_all"]

#: names of the fixes that were applied in this process
APPLIED = []
#: name -> {"state": "active" | "not needed" | "disabled", "reason": str}, filled by apply_all()
STATUS = OrderedDict()


def apply_all():
    """Probe every fix once and apply those whose problem exists (idempotent). Returns APPLIED."""
    disabled = {n.strip() for n in os.environ.get("GRIDCLIP_DISABLE_COMPAT", "").split(",") if n.strip()}
    if "1" in disabled:
        for fix in FIXES:
            STATUS.setdefault(fix.name, {"state": "disabled", "reason": "GRIDCLIP_DISABLE_COMPAT=1"})
        return APPLIED
    unknown = disabled - {fix.name for fix in FIXES}
    if unknown:
        raise ValueError(
            f"GRIDCLIP_DISABLE_COMPAT names unknown fixes {sorted(unknown)}; known: {[f.name for f in FIXES]}"
        )
    for fix in FIXES:
        if fix.name in STATUS:
            continue
        if fix.name in disabled:
            STATUS[fix.name] = {"state": "disabled", "reason": "named in GRIDCLIP_DISABLE_COMPAT"}
            continue
        needed, why = fix.probe()
        if needed:
            fix.apply()
            APPLIED.append(fix.name)
        STATUS[fix.name] = {"state": "active" if needed else "not needed", "reason": why}
    return APPLIED
