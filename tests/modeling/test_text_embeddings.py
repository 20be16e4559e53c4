"""Text embeddings (gridclip.modeling.text): ViLD templates and name cleaning, the normalise→mean→normalise recipe, the
safetensors cache, and refusal of mismatched / corrupt embedding files."""
import argparse
import json
import os

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from gridclip import vocabulary
from gridclip.modeling.text import cache as text_cache
from gridclip.modeling.text import encoding as text_encoding
from gridclip.modeling.text import files as text_files
from gridclip.modeling.text import prompts as text_prompts
from gridclip.modeling.clip_configs import TINY_BACKBONE_CLIP, TINY_TEACHER_CLIP
from gridclip.modeling.clip_loading import create_clip_model

TINY_DIM = 64  # embed dim of GridCLIP-Tiny-RN
NAMES = ["aerosol_can", "Red Umbrella", "bat_(animal)"]


# ----------------------------------------------------------------------------- templates / names
def test_vild_has_63_distinct_templates_that_all_format():
    assert len(text_prompts.VILD_TEMPLATES) == 63
    assert len(set(text_prompts.VILD_TEMPLATES)) == 63
    for template in text_prompts.VILD_TEMPLATES:
        prompt = template.format("umbrella", article="an")
        assert "umbrella" in prompt and "{" not in prompt and "}" not in prompt
    # The article placeholder is used by ViLD's "a/an" templates.
    assert sum("{article}" in t for t in text_prompts.VILD_TEMPLATES) == 15
    assert text_prompts.VILD_TEMPLATES[0] == "There is {article} {} in the scene."
    assert text_prompts.VILD_TEMPLATES[-1] == "a painting of a {}."


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("aerosol_can", "aerosol can"),
        ("bat_(animal)", "bat (animal)"),
        ("Cow/Sheep", "cow or sheep"),
        ("  Red   Umbrella. ", "red umbrella"),
        ("person", "person"),
    ],
)
def test_clean_category_name_follows_vild(raw, cleaned):
    assert vocabulary.clean_category_name(raw) == cleaned


def test_prompts_use_cleaned_name_and_article():
    prompts = text_prompts.build_prompts(["aerosol_can", "dog"], ["There is {article} {} in the scene.", "a toy {}."])
    assert prompts == [
        "There is an aerosol can in the scene.",
        "a toy aerosol can.",
        "There is a dog in the scene.",
        "a toy dog.",
    ]


def test_resolve_templates_specs(tmp_path):
    assert text_prompts.resolve_templates("vild") == text_prompts.VILD_TEMPLATES
    assert text_prompts.resolve_templates("single") == ["a photo of a {}."]
    path = tmp_path / "templates.txt"
    path.write_text("a sketch of a {}.\n\nthe {} in a box.\n")
    assert text_prompts.resolve_templates(str(path)) == ["a sketch of a {}.", "the {} in a box."]
    assert text_prompts.resolve_templates(["a {}."]) == ["a {}."]
    path.write_text("a sketch of a {}.\na sketch without placeholder\n")
    with pytest.raises(ValueError, match=r"templates.txt line 2.*no '\{\}' placeholder"):
        text_prompts.resolve_templates(str(path))
    with pytest.raises(FileNotFoundError, match="missing_templates.txt"):
        text_prompts.resolve_templates(str(tmp_path / "missing_templates.txt"))


# ----------------------------------------------------------------------------- building
def _manual_embeddings(names, templates):
    """Reference: one template at a time, normalise each, mean, normalise."""
    model = create_clip_model(TINY_BACKBONE_CLIP, "")
    tokenizer = open_clip.get_tokenizer(TINY_BACKBONE_CLIP)
    rows, rows_unnormalised_mean = [], []
    with torch.no_grad():
        for name in names:
            cleaned = vocabulary.clean_category_name(name)
            per_template = [
                model.encode_text(tokenizer([t.format(cleaned, article=text_prompts.article_for(cleaned))]))[0]
                for t in templates
            ]
            stacked = torch.stack(per_template)
            rows.append(F.normalize(F.normalize(stacked, dim=-1).mean(0), dim=-1))
            rows_unnormalised_mean.append(F.normalize(stacked.mean(0), dim=-1))
    return torch.stack(rows), torch.stack(rows_unnormalised_mean)


def test_embeddings_match_per_template_normalise_mean_normalise(embeddings_cache):
    names = ["aerosol_can", "red umbrella"]
    built = text_cache.load_text_embeddings(names, TINY_BACKBONE_CLIP, "", templates="vild", device="cpu")
    expected, mean_first = _manual_embeddings(names, text_prompts.VILD_TEMPLATES)
    assert built.shape == (2, TINY_DIM) and built.dtype == torch.float32
    torch.testing.assert_close(built, expected, atol=1e-5, rtol=0)
    # The order matters: averaging unnormalised prompt embeddings gives a different result.
    assert (built - mean_first).abs().max() > 1e-3


def test_embeddings_unit_norm_shape_deterministic(tmp_path):
    a = text_cache.load_text_embeddings(NAMES, TINY_BACKBONE_CLIP, "", cache_dir=str(tmp_path / "a"))
    b = text_cache.load_text_embeddings(NAMES, TINY_BACKBONE_CLIP, "", cache_dir=str(tmp_path / "b"))
    assert a.shape == (3, TINY_DIM) and a.device.type == "cpu"
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    assert torch.equal(a, b)
    # Different categories get different embeddings.
    assert (a[0] - a[1]).abs().max() > 1e-3


def test_building_leaves_the_global_rng_as_a_cache_hit_does(tmp_path):
    """A training must give the same numbers whether its text embeddings were cached (make demo, run 2)."""
    torch.manual_seed(123)
    text_cache.load_text_embeddings(NAMES, TINY_BACKBONE_CLIP, "", templates="single", cache_dir=str(tmp_path))  # builds
    after_build = torch.rand(4)
    torch.manual_seed(123)
    text_cache.load_text_embeddings(NAMES, TINY_BACKBONE_CLIP, "", templates="single", cache_dir=str(tmp_path))  # cache hit
    after_hit = torch.rand(4)
    torch.manual_seed(123)
    assert torch.equal(after_build, after_hit) and torch.equal(after_hit, torch.rand(4))


def test_uncached_build_writes_nothing(tmp_path):
    text_cache.load_text_embeddings(["cat"], TINY_BACKBONE_CLIP, "", templates="single", cache_dir=str(tmp_path),
                            use_cache=False)
    assert not (tmp_path / "text_embeddings").exists()


def test_cuda_request_without_cuda_is_explained(embeddings_cache):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        text_cache.load_text_embeddings(["cat"], TINY_BACKBONE_CLIP, "", templates="single", device="cuda")


# ----------------------------------------------------------------------------- cache
def test_cache_hit_does_not_rebuild(embeddings_cache, monkeypatch):
    first = text_cache.load_text_embeddings(NAMES, TINY_BACKBONE_CLIP, "", templates="single")
    path = text_cache.text_embeddings_cache_path(NAMES, TINY_BACKBONE_CLIP, "", "single")
    assert os.path.dirname(os.path.dirname(path)) == str(embeddings_cache)  # $GRIDCLIP_CACHE honoured
    assert os.path.isfile(path)

    def fail(*args, **kwargs):
        raise AssertionError("the text encoder ran although the cache had the embeddings")

    monkeypatch.setattr(text_cache, "encode_text_embeddings", fail)
    monkeypatch.setattr(text_cache, "create_clip_model", fail)
    second = text_cache.load_text_embeddings(NAMES, TINY_BACKBONE_CLIP, "", templates="single")
    assert torch.equal(first, second)


def test_cache_file_is_plain_safetensors_with_metadata(embeddings_cache):
    built = text_cache.load_text_embeddings(NAMES, TINY_BACKBONE_CLIP, "", templates="single")
    path = text_cache.text_embeddings_cache_path(NAMES, TINY_BACKBONE_CLIP, "", "single")
    with safe_open(path, framework="pt") as f:
        assert list(f.keys()) == ["text_embeddings"]
        torch.testing.assert_close(f.get_tensor("text_embeddings"), built, atol=0, rtol=0)
        metadata = f.metadata()
    assert json.loads(metadata["class_names"]) == NAMES
    assert metadata["model_name"] == TINY_BACKBONE_CLIP
    assert json.loads(metadata["templates"]) == ["a photo of a {}."]
    assert metadata["pretrained"] == "tag:random-init"


def test_cache_key_depends_on_model_templates_names_and_weights(tmp_path, embeddings_cache):
    weights = tmp_path / "tiny.pt"
    torch.save(create_clip_model(TINY_BACKBONE_CLIP, "").state_dict(), weights)
    key = text_cache.text_embeddings_cache_path
    base = key(NAMES, TINY_BACKBONE_CLIP, "", "vild")
    others = {
        key(NAMES, TINY_BACKBONE_CLIP, "", "single"),
        key(NAMES, TINY_TEACHER_CLIP, "", "vild"),
        key(NAMES[:2], TINY_BACKBONE_CLIP, "", "vild"),
        key(list(reversed(NAMES)), TINY_BACKBONE_CLIP, "", "vild"),
        key(NAMES, TINY_BACKBONE_CLIP, str(weights), "vild"),
    }
    assert base not in others and len(others) == 5
    # The same resolved templates share a cache file however they are named.
    assert key(NAMES, TINY_BACKBONE_CLIP, "", list(text_prompts.VILD_TEMPLATES)) == base
    # An explicit folder wins over $GRIDCLIP_CACHE.
    assert key(NAMES, TINY_BACKBONE_CLIP, "", "vild", cache_dir=str(tmp_path / "x")).startswith(str(tmp_path / "x"))


def test_cache_key_changes_when_a_registered_model_config_is_edited(monkeypatch, embeddings_cache):
    # Random-init weights have no file whose size and mtime could tell an edited architecture apart
    # (the world CLIPs' text context went 48 -> 40): the config itself is part of the key.
    import open_clip.factory

    base = text_cache.text_embeddings_cache_path(NAMES, TINY_BACKBONE_CLIP, "", "single")
    edited = open_clip.get_model_config(TINY_BACKBONE_CLIP)
    edited["text_cfg"]["context_length"] = edited["text_cfg"].get("context_length", 77) - 8
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, TINY_BACKBONE_CLIP, edited)
    assert text_cache.text_embeddings_cache_path(NAMES, TINY_BACKBONE_CLIP, "", "single") != base


def test_different_template_sets_give_different_embeddings(embeddings_cache):
    vild = text_cache.load_text_embeddings(["cat", "dog"], TINY_BACKBONE_CLIP, "", templates="vild")
    single = text_cache.load_text_embeddings(["cat", "dog"], TINY_BACKBONE_CLIP, "", templates="single")
    assert (vild - single).abs().max() > 1e-3


def test_local_weights_file_is_used_for_the_text_tower(tmp_path, embeddings_cache):
    model = create_clip_model(TINY_BACKBONE_CLIP, "")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    weights = tmp_path / "perturbed.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    random_init = text_cache.load_text_embeddings(["cat"], TINY_BACKBONE_CLIP, "", templates="single")
    from_file = text_cache.load_text_embeddings(["cat"], TINY_BACKBONE_CLIP, str(weights), templates="single")
    tokenizer = open_clip.get_tokenizer(TINY_BACKBONE_CLIP)
    with torch.no_grad():
        expected = model.encode_text(tokenizer(["a photo of a cat."]), normalize=True)
    torch.testing.assert_close(from_file, expected, atol=1e-5, rtol=0)
    assert (from_file - random_init).abs().max() > 1e-3


# ----------------------------------------------------------------------------- validation of files
def _write(tmp_path, name, tensor, names, model=TINY_BACKBONE_CLIP):
    path = str(tmp_path / name)
    metadata = {"class_names": json.dumps(names), "model_name": model}
    save_file({"text_embeddings": tensor.contiguous()}, path, metadata=metadata)
    return path


def test_save_and_load_roundtrip(tmp_path):
    emb = F.normalize(torch.randn(3, TINY_DIM), dim=-1)
    path = text_files.save_text_embeddings(str(tmp_path / "sub" / "vocab.safetensors"), emb, NAMES, TINY_BACKBONE_CLIP)
    loaded = text_files.load_text_embeddings_file(path, expected_names=NAMES, expected_model=TINY_BACKBONE_CLIP,
                                          expected_dim=TINY_DIM)
    assert torch.equal(loaded, emb)
    assert [f for f in os.listdir(tmp_path / "sub")] == ["vocab.safetensors"]  # no temp file left behind


def test_wrong_row_count_is_refused_naming_sizes_and_file(tmp_path):
    path = _write(tmp_path, "four.safetensors", torch.randn(4, TINY_DIM), ["a", "b", "c", "d"])
    with pytest.raises(ValueError) as info:
        text_files.load_text_embeddings_file(path, expected_names=NAMES, expected_dim=TINY_DIM)
    message = str(info.value)
    assert "4 rows" in message and "3 classes" in message and "four.safetensors" in message


def test_wrong_dim_is_refused_naming_sizes_and_file(tmp_path):
    path = _write(tmp_path, "wide.safetensors", torch.randn(3, 1024), NAMES)
    with pytest.raises(ValueError) as info:
        text_files.load_text_embeddings_file(path, expected_names=NAMES, expected_dim=TINY_DIM)
    message = str(info.value)
    assert "dimension 1024" in message and f"dimension {TINY_DIM}" in message and "wide.safetensors" in message


def test_file_from_other_clip_model_is_refused(tmp_path):
    path = _write(tmp_path, "vit.safetensors", torch.randn(3, TINY_DIM), NAMES, model="ViT-B-32-quickgelu")
    with pytest.raises(ValueError, match=r"vit.safetensors.*'ViT-B-32-quickgelu'.*'GridCLIP-Tiny-RN'"):
        text_files.load_text_embeddings_file(path, expected_names=NAMES, expected_model=TINY_BACKBONE_CLIP)


def test_file_for_other_vocabulary_is_refused(tmp_path):
    path = _write(tmp_path, "other.safetensors", torch.randn(3, TINY_DIM), ["aerosol_can", "dog", "cat"])
    with pytest.raises(ValueError, match=r"other.safetensors.*row 1 is 'dog'.*'Red Umbrella'"):
        text_files.load_text_embeddings_file(path, expected_names=NAMES)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_embeddings_are_refused(tmp_path, bad_value):
    emb = torch.randn(3, TINY_DIM)
    emb[1, 5] = bad_value
    path = _write(tmp_path, "nan.safetensors", emb, NAMES)
    with pytest.raises(ValueError, match=r"nan.safetensors contain 1 NaN/Inf values \(rows \[1\]"):
        text_files.load_text_embeddings_file(path, expected_names=NAMES)


def test_check_text_embeddings_refuses_zero_rows_and_bad_rank():
    emb = torch.randn(3, 8)
    emb[2] = 0
    with pytest.raises(ValueError, match=r"my.file have all-zero rows \[2\]"):
        text_files.check_text_embeddings(emb, 3, 8, "my.file")
    with pytest.raises(ValueError, match=r"2-D.*shape \(8,\)"):
        text_files.check_text_embeddings(torch.randn(8), 1, 8, "my.file")
    text_files.check_text_embeddings(torch.randn(3, 8), 3, 8, "my.file")  # a valid matrix passes


def _cache_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == text_cache.logger.name and r.levelname == "WARNING"]


def test_corrupt_cache_file_is_rebuilt_with_one_warning_naming_it(embeddings_cache, caplog):
    path = text_cache.text_embeddings_cache_path(["cat"], TINY_BACKBONE_CLIP, "", "single")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"truncated")
    embeddings = text_cache.load_text_embeddings(["cat"], TINY_BACKBONE_CLIP, "", templates="single")
    (warning,) = _cache_warnings(caplog)
    assert path in warning and "not a valid safetensors file" in warning and "rebuilding it" in warning
    assert torch.equal(text_files.load_text_embeddings_file(path, ["cat"]), embeddings)  # valid again


def test_tampered_cache_file_is_never_used(embeddings_cache, caplog):
    built = text_cache.load_text_embeddings(NAMES, TINY_BACKBONE_CLIP, "", templates="single")
    path = text_cache.text_embeddings_cache_path(NAMES, TINY_BACKBONE_CLIP, "", "single")
    _write(embeddings_cache, "x.safetensors", torch.randn(2, TINY_DIM), NAMES[:2])
    os.replace(embeddings_cache / "x.safetensors", path)
    again = text_cache.load_text_embeddings(NAMES, TINY_BACKBONE_CLIP, "", templates="single")
    (warning,) = _cache_warnings(caplog)
    assert path in warning and "2 rows" in warning and "3 classes" in warning
    assert torch.allclose(again, built, atol=1e-6)


def test_torch_and_numpy_files_load_without_pickle(tmp_path):
    emb = torch.randn(3, TINY_DIM)
    torch.save({"text_embeddings": emb, "class_names": NAMES, "model_name": TINY_BACKBONE_CLIP}, tmp_path / "e.pt")
    loaded = text_files.load_text_embeddings_file(str(tmp_path / "e.pt"), expected_names=NAMES,
                                          expected_model=TINY_BACKBONE_CLIP)
    torch.testing.assert_close(loaded, F.normalize(emb, dim=-1))  # user files are normalised on load

    np.save(tmp_path / "e.npy", emb.numpy())
    torch.testing.assert_close(text_files.load_text_embeddings_file(str(tmp_path / "e.npy")), F.normalize(emb, dim=-1))

    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="no pickle"):
        text_files.load_text_embeddings_file(str(tmp_path / "obj.npy"))

    torch.save({"text_embeddings": emb, "extra": argparse.Namespace(code="arbitrary")}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match=r"pickled.pt with torch.load\(weights_only=True\)"):
        text_files.load_text_embeddings_file(str(tmp_path / "pickled.pt"))


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        text_files.load_text_embeddings_file(str(tmp_path / "nowhere.safetensors"))
    (tmp_path / "emb.json").write_text("[]")
    with pytest.raises(ValueError, match=r"emb.json: use .safetensors"):
        text_files.load_text_embeddings_file(str(tmp_path / "emb.json"))


def test_bad_vocabulary_arguments():
    with pytest.raises(ValueError, match="empty vocabulary"):
        text_cache.load_text_embeddings([], TINY_BACKBONE_CLIP, "")
    with pytest.raises(ValueError, match=r"positions \[1\] are empty"):
        text_cache.load_text_embeddings(["cat", " _ "], TINY_BACKBONE_CLIP, "")
    with pytest.raises(ValueError, match="Unknown open_clip model 'NoSuchModel'"):
        text_cache.load_text_embeddings(["cat"], "NoSuchModel", "")


@pytest.mark.parametrize("model_name", [TINY_BACKBONE_CLIP, TINY_TEACHER_CLIP])
def test_needed_context_run_equals_the_full_77_token_run(model_name):
    torch.manual_seed(0)
    model = create_clip_model(model_name, "").eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    names = ["cat", "red striped umbrella", "aerosol_can", "bat_(animal)", "a very long category name " * 3]
    prompts = text_prompts.build_prompts(names, text_prompts.VILD_TEMPLATES[:7])
    tokens = tokenizer(prompts)
    lengths = text_encoding.needed_context_lengths(model, tokens)
    assert lengths is not None and int(lengths.max()) < tokens.shape[1] // 2  # the shortcut really is shorter
    with torch.no_grad():
        full = model.encode_text(tokens, normalize=True)
        short = text_encoding.encode_text_tokens(model, tokens, int(lengths.max()))
        # Each prompt alone on exactly its own length, too.
        single = torch.cat([text_encoding.encode_text_tokens(model, tokens[i:i + 1], int(lengths[i])) for i in range(0, len(tokens), 9)])
    assert (short - full).abs().max() <= 1e-5
    assert (single - full[::9]).abs().max() <= 1e-5
    # The batched, length-sorted vocabulary encoder gives ViLD's recipe on the full context.
    with torch.no_grad():
        embeddings = text_encoding.encode_text_embeddings(model, tokenizer, names, text_prompts.VILD_TEMPLATES[:7], batch_size=4)
    expected = F.normalize(full.view(len(names), 7, -1).mean(dim=1), dim=-1)
    assert (embeddings - expected).abs().max() <= 1e-5
