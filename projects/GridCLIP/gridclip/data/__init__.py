"""GridCLIP data: dataset registrations, vocabularies, the dataset mapper, loaders."""
from . import datasets  # noqa: F401  (registers the LVIS open-vocabulary datasets; reads no file)
