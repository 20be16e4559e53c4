"""
GridCLIP for Detectron2.

Importing this package applies the Detectron2 v0.6 compatibility fixes (:mod:`gridclip.compat`)
and registers everything GridCLIP adds to Detectron2's registries.
"""
import warnings

# Detectron2 modules loaded before the compatibility fixes can keep the old behaviour (on v0.6 with
# Pillow >= 10, `import detectron2.modeling` before gridclip fails: "module 'PIL.Image' has no
# attribute 'LINEAR'"): say so, with the fix.
_EARLY = [m for m in ("detectron2.data", "detectron2.modeling", "detectron2.engine") if m in __import__("sys").modules]
if _EARLY:
    warnings.warn(
        f"{', '.join(_EARLY)} was imported before gridclip: put `import gridclip` before any detectron2 "
        "import so that GridCLIP's Detectron2 compatibility fixes apply first.", stacklevel=2,
    )
# fvcore and Detectron2 call torch.jit.script when imported; torch's FutureWarning about it (twice per
# run) is noise to GridCLIP users: nothing they can act on. Silenced by its message.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

from . import compat  # noqa: E402

compat.apply_all()

from .config import add_gridclip_config, get_gridclip_cfg  # noqa: E402
from .modeling import clip_configs  # noqa: E402,F401  (registers the tiny open_clip configs)
from .data import datasets  # noqa: E402,F401  (registers the LVIS open-vocabulary datasets)
from .modeling import meta_arch  # noqa: E402,F401  (registers GridCLIP and its backbones)
from .predictor import GridCLIPPredictor  # noqa: E402  (the Python inference API)
from .exemplars import Exemplar  # noqa: E402  (image exemplars as vocabulary entries)
from .pretrained import save_pretrained  # noqa: E402  (self-describing weights folders)

__version__ = "0.1.0"
