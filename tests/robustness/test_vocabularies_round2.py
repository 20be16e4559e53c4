"""
One vocabulary validation for every source: invisible characters and '#' comment lines never become
class names, None / non-strings / case-only duplicates are refused for lists as for the CLI, a spec that
looks like a path but does not exist is an error (not a one-class vocabulary named after the path), and
names longer than the text encoder's context are named in a warning, or refused when two become identical.
"""
import logging

import open_clip
import pytest

from gridclip import vocabulary as V
from gridclip.data.datasets import register_custom_coco_dataset
from gridclip.modeling.text.cache import load_text_embeddings
from gridclip.modeling.text.prompts import check_prompt_context


def test_vocabulary_file_bom_invisible_characters_and_comments(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("\ufeffzebra\n# animals above, objects below\n\n  red\u00a0umbrella \ntraffic\u200b cone\n",
                    encoding="utf-8")
    assert V.resolve_vocabulary(str(path)) == ["zebra", "red umbrella", "traffic cone"]
    assert V.parse_custom_vocabulary(str(path)) == ["zebra", "red umbrella", "traffic cone"]


def test_invisible_duplicates_and_non_utf8_file(tmp_path):
    with pytest.raises(ValueError, match="duplicate category names: 'cat'"):
        V.resolve_vocabulary(["cat", "c\u200bat"])  # a zero-width space hides a duplicate
    binary = tmp_path / "names.txt"
    binary.write_bytes(b"cat\n\xff\xfe dog\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        V.resolve_vocabulary(str(binary))
    with pytest.raises(IsADirectoryError, match="is a folder"):
        V.parse_custom_vocabulary(str(tmp_path))


@pytest.mark.parametrize("names, error, match", [
    (["cat", None], TypeError, "not strings .*1: None"),
    (["cat", 3], TypeError, "not strings .*1: 3"),
    (["Cat", "cat "], ValueError, "duplicate"),
    (["cat", "\u200b"], ValueError, r"empty category names at positions \[1\]"),
    ([], ValueError, "is empty"),
])
def test_python_lists_get_the_cli_checks(names, error, match):
    with pytest.raises(error, match=match):
        V.validate_vocabulary(names, "GridCLIPPredictor(vocabulary=...)")


@pytest.mark.parametrize("spec", ["my_names.json", "vocab/names", "./names", "~/gridclip_missing_names"])
def test_path_like_specs_that_do_not_exist_are_errors(spec):
    with pytest.raises(FileNotFoundError, match="Vocabulary file not found"):
        V.parse_custom_vocabulary(spec)
    with pytest.raises(FileNotFoundError):
        V.resolve_vocabulary(spec)


def test_bare_string_is_not_a_list():
    with pytest.raises(TypeError, match="got the string 'cat,dog'"):
        V.validate_vocabulary("cat,dog")


def test_custom_coco_dataset_names_go_through_the_same_check(tmp_path):
    import json

    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [], "annotations": [],
                                "categories": [{"id": 1, "name": "Forklift"}, {"id": 2, "name": "forklift\u200b"}]}))
    with pytest.raises(ValueError, match="duplicate category names"):
        register_custom_coco_dataset("pytest_round2_invisible_dup", str(path), str(tmp_path))


def test_names_over_the_context_are_named_or_refused(caplog):
    tokenizer = open_clip.get_tokenizer("GridCLIP-Tiny-RN")
    long_a = "very " * 80 + "red cat"
    long_b = "very " * 80 + "blue dog"
    with caplog.at_level(logging.WARNING, logger="gridclip.modeling.text.prompts"):
        check_prompt_context(["cat", long_a], ["a photo of a {}."], tokenizer)
    assert "1 category name(s)" in caplog.text and "77-token context" in caplog.text and "red cat" in caplog.text
    with pytest.raises(ValueError, match="become identical after truncation"):
        check_prompt_context([long_a, long_b], ["a photo of a {}."], tokenizer)
    # The same check runs before any embedding is built (no model is created for a refused vocabulary).
    with pytest.raises(ValueError, match="become identical"):
        load_text_embeddings([long_a, long_b], "GridCLIP-Tiny-RN", "", templates="single", use_cache=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gridclip.modeling.text.prompts"):
        check_prompt_context(V.coco_class_names(), ["a photo of a {}."], tokenizer)
    assert "context" not in caplog.text  # ordinary names: no warning
