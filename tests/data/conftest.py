"""The ``synthetic_lvis`` session fixture lives in tests/conftest.py (shared by every test folder)."""
from ..conftest import SMALL_SYNTHETIC_LVIS_KWARGS, SyntheticLVIS, make_synthetic_lvis  # noqa: F401
