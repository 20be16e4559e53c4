"""Small helpers shared by the engine and the checkpointer."""
from torch import nn

__all__ = ["unwrap_model"]


def unwrap_model(model):
    """The module inside a DistributedDataParallel / DataParallel wrapper (``model`` otherwise)."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model
