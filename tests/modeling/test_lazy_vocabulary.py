"""The test vocabulary's text embeddings are built when a run first needs them (the first inference), not at construction."""
import torch
from detectron2.modeling import build_model

from gridclip.modeling.text import cache as text_cache


def test_test_vocabulary_is_embedded_at_the_first_inference(tiny_cfg, monkeypatch):
    built = []
    real = text_cache.load_text_embeddings

    def counting(names, *args, **kwargs):
        built.append(list(names))
        return real(names, *args, **kwargs)

    monkeypatch.setattr(text_cache, "load_text_embeddings", counting)
    model = build_model(tiny_cfg(**{"MODEL.GRIDCLIP.TRAIN_VOCABULARY": "cat,dog,red umbrella",
                                    "MODEL.GRIDCLIP.TEST_VOCABULARY": "kite,cat"}))
    assert built == [["cat", "dog", "red umbrella"]]  # training only: no test vocabulary yet
    assert model.num_test_classes == 2 and model.test_class_names == ["kite", "cat"]
    model.eval()
    image = torch.randint(0, 255, (3, 160, 160), dtype=torch.uint8)
    with torch.no_grad():
        first = model([{"image": image}, {"image": image}])[0]["instances"]
        again = model([{"image": image}, {"image": image}])[0]["instances"]
    assert built == [["cat", "dog", "red umbrella"], ["kite", "cat"]]  # built once, at the first inference
    assert model.classifier.num_test_classes == 2 and int(first.pred_classes.max()) <= 1
    assert torch.equal(first.pred_classes, again.pred_classes)
    expected = real(["kite", "cat"], *[model.text_encoder[k] for k in ("clip_model_name", "pretrained")],
                    **{k: v for k, v in model.text_encoder.items() if k not in ("clip_model_name", "pretrained")})
    assert torch.allclose(model.classifier.test_embeddings, expected, atol=1e-6)
    # Same vocabulary for training and test: one build, nothing pending.
    built.clear()
    model = build_model(tiny_cfg())
    assert len(built) == 1 and not model._test_vocabulary_pending
