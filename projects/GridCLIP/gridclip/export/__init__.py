"""
TorchScript / ONNX export of GridCLIP with the vocabulary as a graph input (or baked in), dynamic
batch, image size and vocabulary size, and the text tower on its own (guide: docs/EXPORT.md).

- :mod:`.contract`: the input contract both formats state and enforce;
- :mod:`.detector`: the traceable detector graph (backbone, head, cosine classifier, batched decoding, NMS);
- :mod:`.runtime_checks`: the contract enforced inside the TorchScript and ONNX files;
- :mod:`.text_tower`: token ids -> normalised text embeddings;
- :mod:`.checks`: PyTorch reference, comparison, latency;
- :mod:`.exporter`: :func:`export_model` (``tools/export_model.py``).
"""
from .contract import InputContract, padded_size, resized_size
from .detector import BakedVocabulary, ExportableGridCLIP
from .exporter import FORMATS, INPUT_NAMES, OUTPUT_NAMES, describe_export, export_model, make_batch, output_files
from .text_tower import ExportableTextTower

__all__ = [
    "InputContract", "padded_size", "resized_size", "BakedVocabulary", "ExportableGridCLIP", "ExportableTextTower",
    "FORMATS", "INPUT_NAMES", "OUTPUT_NAMES", "describe_export", "export_model", "make_batch", "output_files",
]
