"""
The text tower on its own, for a deployment that embeds new class names without PyTorch:
token ids [N, 77] (int64; 77 = the CLIP context length, N dynamic) -> L2-normalised embeddings [N, D].

It is the CLIP that built the model's class embeddings (``MODEL.GRIDCLIP.TEXT_ENCODER`` or the
backbone's CLIP, :func:`gridclip.modeling.text.cache.text_encoder_settings`). Tokens come from that
model's open_clip tokenizer (``open_clip.get_tokenizer(name)``: CLIP's byte-pair encoding, start token
49406, end token 49407, zero padding to 77 tokens: what the tokenizer returns). A class's embedding is ViLD's recipe over the templates in ``export_info.json``: embed each
``template.format(name)`` prompt, average the T unit vectors, L2-normalise
(:func:`gridclip.modeling.text.encoding.encode_text_embeddings`).
"""
from torch import Tensor, nn

__all__ = ["ExportableTextTower"]


class ExportableTextTower(nn.Module):
    """``forward(tokens [N, 77] int64) -> [N, D] float32``, unit rows (an open_clip ``CLIP``'s text tower)."""

    def __init__(self, clip_model):
        super().__init__()
        needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
        if not all(getattr(clip_model, n, None) is not None for n in needed):
            raise ValueError(f"{type(clip_model).__name__} is not an open_clip CLIP with a causal text transformer.")
        self.clip = clip_model
        self.eval()

    @property
    def context_length(self) -> int:
        return int(self.clip.positional_embedding.shape[0])

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [N, context_length] int64 -> [N, D] unit rows (``CLIP.encode_text(tokens, normalize=True)``)."""
        return self.clip.encode_text(tokens, normalize=True).float()
