"""Vocabularies: built-in LVIS/COCO/VOC lists, dataset vocabularies, custom lists and files, and
clear refusals of empty, duplicate and unknown vocabularies."""
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from gridclip import vocabulary as V


def test_builtin_vocabulary_sizes():
    assert len(V.resolve_vocabulary("lvis")) == 1203
    assert len(V.resolve_vocabulary("lvis_base")) == 866
    assert len(V.resolve_vocabulary("coco")) == 80
    assert len(V.resolve_vocabulary("voc")) == 20
    frequencies = V.lvis_v1_class_frequencies()
    assert len(frequencies) == 1203
    assert (frequencies.count("r"), frequencies.count("c"), frequencies.count("f")) == (337, 461, 405)


def test_lvis_order_and_base_split():
    lvis = V.resolve_vocabulary("lvis")
    frequencies = V.lvis_v1_class_frequencies()
    assert lvis[0] == "aerosol_can" and lvis[-1] == "zucchini"  # category ids 1 and 1203
    assert len(set(lvis)) == 1203
    base = V.resolve_vocabulary("lvis_base")
    # Base = common + frequent, in the same (category-id) order; the rest are the 337 rare classes.
    assert base == [n for n, f in zip(lvis, frequencies) if f != "r"]
    rare = set(lvis) - set(base)
    assert len(rare) == 337 and all(frequencies[lvis.index(n)] == "r" for n in rare)


def test_coco_and_voc_follow_detectron2_order():
    assert V.resolve_vocabulary("coco")[:3] == ["person", "bicycle", "car"]
    assert V.resolve_vocabulary("coco")[-1] == "toothbrush"
    assert V.resolve_vocabulary("voc") == list(MetadataCatalog.get("voc_2007_test").thing_classes)
    assert V.resolve_vocabulary("COCO") == V.resolve_vocabulary("coco")


def test_registered_dataset_and_empty_spec():
    assert V.resolve_vocabulary("coco_2017_val") == list(MetadataCatalog.get("coco_2017_val").thing_classes)
    assert V.resolve_vocabulary("", "lvis_v1_val") == list(MetadataCatalog.get("lvis_v1_val").thing_classes)
    name = "gridclip_test_vocab_dataset"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(thing_classes=["widget", "gadget"])
    try:
        assert V.resolve_vocabulary(name) == ["widget", "gadget"]
        assert V.resolve_vocabulary("", name) == ["widget", "gadget"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_empty_spec_needs_a_known_dataset():
    with pytest.raises(ValueError, match="no dataset was given"):
        V.resolve_vocabulary("")
    with pytest.raises(KeyError, match="'not_a_dataset' is not registered"):
        V.resolve_vocabulary("", "not_a_dataset")


def test_dataset_without_classes_is_explained():
    name = "gridclip_test_vocab_no_classes"
    DatasetCatalog.register(name, lambda: [])
    try:
        with pytest.raises(ValueError, match=f"{name}.*no thing_classes"):
            V.resolve_vocabulary(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_custom_comma_list_strips_whitespace():
    assert V.resolve_vocabulary("cat, red umbrella ,dog") == ["cat", "red umbrella", "dog"]
    assert V.parse_custom_vocabulary("  cat  ") == ["cat"]
    assert V.parse_custom_vocabulary("traffic_light,bat_(animal)") == ["traffic_light", "bat_(animal)"]


def test_custom_vocabulary_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("  cat\nred umbrella  \n\ndog\n")
    assert V.parse_custom_vocabulary(str(path)) == ["cat", "red umbrella", "dog"]
    assert V.resolve_vocabulary(str(path)) == ["cat", "red umbrella", "dog"]
    # Names in a file may contain commas; one name per line.
    path.write_text("cat\nsalt, pepper shaker\n")
    assert V.resolve_vocabulary(str(path)) == ["cat", "salt, pepper shaker"]


def test_missing_vocabulary_file_is_named(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        V.resolve_vocabulary(missing)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        V.parse_custom_vocabulary(missing)


@pytest.mark.parametrize("text", ["", "   ", ",", " , "])
def test_empty_custom_vocabulary_refused(text):
    with pytest.raises(ValueError, match="empty"):
        V.parse_custom_vocabulary(text)


def test_empty_file_refused(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n  \n")
    with pytest.raises(ValueError, match=r"blank.txt is empty"):
        V.parse_custom_vocabulary(str(path))


def test_empty_names_refused_with_positions():
    with pytest.raises(ValueError, match=r"empty category names at positions \[1\]"):
        V.parse_custom_vocabulary("cat,,dog")
    with pytest.raises(ValueError, match=r"positions \[2\]"):
        V.resolve_vocabulary("cat,dog,")


def test_duplicates_refused_and_named(tmp_path):
    with pytest.raises(ValueError, match=r"duplicate category names: 'cat'"):
        V.parse_custom_vocabulary("cat, dog, cat ")
    # Names that give the same prompts are duplicates too.
    with pytest.raises(ValueError, match=r"'traffic_light' / 'Traffic Light'"):
        V.parse_custom_vocabulary("traffic_light,Traffic Light")
    path = tmp_path / "dup.txt"
    path.write_text("dog\ncat\ndog\n")
    with pytest.raises(ValueError, match=r"dup.txt has duplicate category names: 'dog'"):
        V.resolve_vocabulary(str(path))


def test_unknown_spec_lists_accepted_specs():
    with pytest.raises(ValueError) as info:
        V.resolve_vocabulary("imagenet21k")
    message = str(info.value)
    assert "'imagenet21k'" in message
    for accepted in ("'lvis'", "'lvis_base'", "'coco'", "'voc'", "registered dataset", "comma-separated"):
        assert accepted in message


def test_non_string_spec_refused_and_lists_validated():
    with pytest.raises(TypeError, match="string"):
        V.resolve_vocabulary(42)
    assert V.resolve_vocabulary(["cat", " dog "]) == ["cat", "dog"]  # a list goes through the same check
    with pytest.raises(ValueError, match="duplicate"):
        V.resolve_vocabulary(["cat", "Cat"])


def test_vocabulary_is_the_bottom_and_modeling_never_imports_data():
    """gridclip.vocabulary imports nothing from gridclip.modeling or gridclip.data; gridclip.modeling
    nothing from gridclip.data (every import statement, at any depth in the file)."""
    import ast
    import os

    import gridclip

    package = os.path.dirname(gridclip.__file__)

    def imported_subpackages(folder):
        found = set()
        for root, _, files in os.walk(os.path.join(package, folder)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(root, name)
                here = os.path.relpath(root, package).split(os.sep)  # the module's package, under gridclip
                for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                    if isinstance(node, ast.ImportFrom) and node.level:
                        base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                        target = base + (node.module.split(".") if node.module else [])
                    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gridclip."):
                        target = node.module.split(".")[1:]
                    elif isinstance(node, ast.Import):
                        target = next((a.name.split(".")[1:] for a in node.names if a.name.startswith("gridclip.")), [])
                    else:
                        continue
                    if target:
                        found.add((target[0], os.path.relpath(path, package)))
        return found

    assert {f for top, f in imported_subpackages("vocabulary") if top in ("modeling", "data")} == set()
    assert {f for top, f in imported_subpackages("modeling") if top == "data"} == set()

