"""The ``world_dataset`` session fixture lives in tests/conftest.py (shared by every test folder)."""
from ..conftest import SMALL_WORLD_KWARGS, WorldDataset, make_world_dataset  # noqa: F401
