"""GridCLIP data: dataset registrations, the dataset mapper, loaders (vocabularies: gridclip.vocabulary)."""
from . import datasets  # noqa: F401  (registers the LVIS open-vocabulary datasets; reads no file)
