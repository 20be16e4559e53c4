"""
The class-embedding space (MODEL.GRIDCLIP.TEXT_ENCODER: which CLIP's text tower embeds the class names;
the head's embedding conv follows its dim) and ViLD's "This is " prompt prefix (PROMPT_THIS_IS).
"""
import torch
from detectron2.modeling import build_model

from gridclip.modeling.clip_configs import TINY_BACKBONE_CLIP, TINY_TEACHER_CLIP
from gridclip.modeling.text.cache import load_text_embeddings, text_embeddings_cache_path, text_encoder_settings
from gridclip.modeling.text.encoding import clip_text_embed_dim
from gridclip.modeling.text.prompts import VILD_TEMPLATES, build_prompts

NAMES = ["cat", "dog", "red umbrella"]


def test_default_text_encoder_is_the_backbone_clip(tiny_cfg):
    cfg = tiny_cfg()
    settings = text_encoder_settings(cfg)
    assert (settings["clip_model_name"], settings["pretrained"]) == (TINY_BACKBONE_CLIP, "")
    assert "this_is" not in settings
    model = build_model(cfg)
    assert model.head.cls_score.out_channels == clip_text_embed_dim(TINY_BACKBONE_CLIP)


def test_other_text_encoder_sets_the_embedding_space_and_head_width(tiny_cfg):
    assert clip_text_embed_dim(TINY_TEACHER_CLIP) != clip_text_embed_dim(TINY_BACKBONE_CLIP)
    cfg = tiny_cfg(**{
        "MODEL.GRIDCLIP.TEXT_ENCODER.MODEL_NAME": TINY_TEACHER_CLIP,
        "MODEL.GRIDCLIP.TEXT_ENCODER.PRETRAINED": "",
    })
    model = build_model(cfg)
    dim = clip_text_embed_dim(TINY_TEACHER_CLIP)
    assert model.head.cls_score.out_channels == dim == model.classifier.embed_dim
    expected = load_text_embeddings(NAMES, TINY_TEACHER_CLIP, "", templates="single")
    assert torch.allclose(model.classifier.train_embeddings, expected, atol=1e-6)
    # the vocabulary swap embeds new names with the same text tower
    model.set_vocabulary(["blue circle"])
    assert torch.allclose(
        model.classifier.test_embeddings, load_text_embeddings(["blue circle"], TINY_TEACHER_CLIP, "", "single"),
        atol=1e-6,
    )
    model.eval()
    image = torch.randint(0, 255, (3, 160, 160), dtype=torch.uint8)
    with torch.no_grad():
        out = model([{"image": image}])[0]["instances"]
    assert len(out) == 0 or int(out.pred_classes.max()) == 0


def test_this_is_prefix_follows_vild_rule():
    plain = build_prompts(["cat"], VILD_TEMPLATES)
    prefixed = build_prompts(["cat"], VILD_TEMPLATES, this_is=True)
    assert len(plain) == len(prefixed) == 63
    for p, q in zip(plain, prefixed):
        starts = p.startswith("a") or p.startswith("the")
        assert q == ("This is " + p if starts else p)
    assert "This is a photo of a cat." in build_prompts(["cat"], ["a photo of a {}."], this_is=True)
    assert build_prompts(["cat"], ["There is the {} in the scene."], this_is=True) == ["There is the cat in the scene."]
    assert build_prompts(["apple"], ["the {}."], this_is=True) == ["This is the apple."]
    # ViLD tests the raw string, so a name starting with "a" in a "{}"-first template is prefixed too
    assert build_prompts(["apple"], ["{} on a table."], this_is=True) == ["This is apple on a table."]


def test_this_is_option_changes_embeddings_and_cache_key(tiny_cfg, embeddings_cache):
    cfg = tiny_cfg(**{"MODEL.GRIDCLIP.PROMPT_THIS_IS": True})
    settings = text_encoder_settings(cfg)
    assert settings["this_is"] is True
    plain_path = text_embeddings_cache_path(NAMES, TINY_BACKBONE_CLIP, "", "single")
    assert text_embeddings_cache_path(NAMES, TINY_BACKBONE_CLIP, "", "single", this_is=True) != plain_path
    plain = load_text_embeddings(NAMES, TINY_BACKBONE_CLIP, "", "single")
    prefixed = load_text_embeddings(NAMES, **settings)
    assert not torch.allclose(plain, prefixed, atol=1e-4)
    model = build_model(cfg)
    assert torch.allclose(model.classifier.train_embeddings, prefixed, atol=1e-6)
