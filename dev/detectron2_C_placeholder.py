"""
Placeholder for Detectron2's compiled extension ``detectron2._C``.

Installed as ``detectron2/_C.py`` by GridCLIP's ``dev/install_detectron2.py``, which installs the
Python code of Detectron2 v0.6 without its C++/CUDA ops. GridCLIP does not use those ops; anything
that does (rotated boxes, deformable convolution, Detectron2's fast COCO evaluator) gets a clear
error instead of an obscure ``ImportError`` deep inside Detectron2.
"""

IS_GRIDCLIP_PLACEHOLDER = True

_HOW_TO_FIX = (
    "This Detectron2 was installed by GridCLIP without its compiled extension. "
    "Build Detectron2 from source (https://detectron2.readthedocs.io/tutorials/install.html) "
    "into this environment to use it; `make setup` keeps an existing real build. "
    "For COCO evaluation pass use_fast_impl=False (GridCLIP's tools already do)."
)


class CompiledOpUnavailable(ImportError):
    """Raised when code asks for a compiled Detectron2 op the placeholder cannot provide."""


def get_compiler_version():
    return "not compiled (GridCLIP placeholder for detectron2._C)"


def get_cuda_version():
    return "not compiled (GridCLIP placeholder for detectron2._C)"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise CompiledOpUnavailable(f"detectron2._C.{name} is a compiled op and is not available. {_HOW_TO_FIX}")
