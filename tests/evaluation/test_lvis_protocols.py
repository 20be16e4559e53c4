"""
The two closed-set LVIS protocols on generated data (tests/conftest.py's ``world_dataset``):

- the paper's ("all-categories"): the c+f model evaluated on the full val set, rare categories scored 0;
- "restricted": the same detections evaluated on a c+f-only val dataset (like ``lvis_v1_val_cf``).

They must relate as AP_all = (n_c·AP_c + n_f·AP_f) / (n_r + n_c + n_f) and AP_restricted =
(n_c·AP_c + n_f·AP_f) / (n_c + n_f), with the same AP_c and AP_f.
"""
import json

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

from gridclip.evaluation import GridCLIPLVISEvaluator
from gridclip.evaluation.lvis_evaluation import PROTOCOL_ALL_CATEGORIES, PROTOCOL_RESTRICTED, vocabulary_to_dataset_index


@pytest.fixture(scope="module")
def closed_set(world_dataset):
    """(val json dict, base category ids, a registered c+f-only val dataset name)."""
    with open(world_dataset.paths["val_json"]) as f:
        val = json.load(f)
    categories = sorted(val["categories"], key=lambda c: c["id"])
    base = [c for c in categories if c["frequency"] != "r"]
    name = world_dataset.val + "_cf_protocol_test"
    MetadataCatalog.get(name).set(
        json_file=world_dataset.paths["val_json"], evaluator_type="lvis",
        thing_classes=[c["name"] for c in base],
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(base)},
    )
    yield val, [c["id"] for c in base], name
    MetadataCatalog.remove(name)


def _closed_set_detections(val, base_ids, seed=0):
    """Noisy detections of the c+f objects only (a closed-set model never outputs a rare class),
    with ``pred_classes`` = index in the c+f vocabulary; plus a few wrong-class false positives."""
    generator = torch.Generator().manual_seed(seed)
    base_index = {cid: i for i, cid in enumerate(base_ids)}
    by_image = {image["id"]: [] for image in val["images"]}
    for ann in val["annotations"]:
        by_image[ann["image_id"]].append(ann)
    inputs, outputs = [], []
    for image in val["images"]:
        boxes, scores, classes = [], [], []
        for ann in by_image[image["id"]]:
            x, y, w, h = ann["bbox"]
            jitter = (torch.rand(4, generator=generator) - 0.5) * 0.3 * torch.tensor([w, h, w, h])
            box = torch.tensor([x, y, x + w, y + h]) + jitter
            if ann["category_id"] in base_index:
                boxes.append(box)
                scores.append(float(torch.rand(1, generator=generator)) * 0.8 + 0.2)
                classes.append(base_index[ann["category_id"]])
            # a wrong-class detection on every object, rare ones included
            boxes.append(box)
            scores.append(float(torch.rand(1, generator=generator)) * 0.5)
            classes.append(int(torch.randint(len(base_ids), (1,), generator=generator)))
        instances = Instances((image["height"], image["width"]))
        instances.pred_boxes = Boxes(torch.stack(boxes) if boxes else torch.zeros(0, 4))
        instances.scores = torch.tensor(scores)
        instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
        inputs.append({"image_id": image["id"]})
        outputs.append({"instances": instances})
    return inputs, outputs


def _evaluate(evaluator, inputs, outputs):
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()["bbox"]


def test_paper_protocol_scores_rare_as_zero_and_relates_to_restricted(world_dataset, closed_set, tmp_path):
    val, base_ids, restricted_name = closed_set
    vocabulary = MetadataCatalog.get(restricted_name).thing_classes
    paper = GridCLIPLVISEvaluator(
        world_dataset.val, distributed=False, output_dir=str(tmp_path / "paper"), vocabulary=vocabulary
    )
    restricted = GridCLIPLVISEvaluator(restricted_name, distributed=False, output_dir=str(tmp_path / "restricted"))
    assert paper.protocol["name"] == PROTOCOL_ALL_CATEGORIES and paper.protocol["unpredictable"] > 0
    assert restricted.protocol["name"] == PROTOCOL_RESTRICTED
    ap_paper = _evaluate(paper, *_closed_set_detections(val, base_ids))
    ap_restricted = _evaluate(restricted, *_closed_set_detections(val, base_ids))

    per_category = json.loads((tmp_path / "paper" / "per_category_ap.json").read_text())
    with_gt = [c for c in per_category if c["ap"] is not None]
    n = {g: sum(c["frequency"] == g for c in with_gt) for g in "rcf"}
    assert n["r"] > 0 and n["c"] > 0 and n["f"] > 0
    assert all(c["ap"] == 0.0 for c in with_gt if c["frequency"] == "r")
    assert 5 < ap_restricted["AP"] < 95  # a non-trivial model

    assert ap_paper["APr"] == 0.0
    assert ap_paper["APc"] == pytest.approx(ap_restricted["APc"], abs=1e-6)
    assert ap_paper["APf"] == pytest.approx(ap_restricted["APf"], abs=1e-6)
    weighted = n["c"] * ap_paper["APc"] + n["f"] * ap_paper["APf"]
    assert ap_paper["AP"] == pytest.approx(weighted / (n["r"] + n["c"] + n["f"]), abs=1e-6)
    assert ap_restricted["AP"] == pytest.approx(weighted / (n["c"] + n["f"]), abs=1e-6)
    assert ap_paper["AP"] < ap_restricted["AP"]

    # every paper table names its protocol
    paper_table = (tmp_path / "paper" / "paper_table.md").read_text()
    assert "outside the model's vocabulary score AP 0 (the paper's closed-set protocol)" in paper_table
    assert f"{n['r']} (r)" in paper_table
    assert "restricted" in (tmp_path / "restricted" / "paper_table.md").read_text()


def test_vocabulary_mapping_equals_detections_in_dataset_index(world_dataset, closed_set):
    """Mapping the c+f vocabulary's classes by name == giving the dataset's own class indices."""
    val, base_ids, restricted_name = closed_set
    vocabulary = MetadataCatalog.get(restricted_name).thing_classes
    mapped = GridCLIPLVISEvaluator(world_dataset.val, distributed=False, vocabulary=vocabulary)
    ap_mapped = _evaluate(mapped, *_closed_set_detections(val, base_ids, seed=1))
    inputs, outputs = _closed_set_detections(val, base_ids, seed=1)
    to_full = torch.tensor([cid - 1 for cid in base_ids])  # the generated ids are 1..K: index = id - 1
    for out in outputs:
        out["instances"].pred_classes = to_full[out["instances"].pred_classes]
    direct = GridCLIPLVISEvaluator(world_dataset.val, distributed=False)
    assert direct.protocol["unpredictable"] == 0
    assert _evaluate(direct, inputs, outputs) == ap_mapped


def test_vocabulary_outside_the_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="not classes of lvis_test.*zebra"):
        vocabulary_to_dataset_index(["cat", "zebra"], ["cat", "dog"], "lvis_test")
    assert vocabulary_to_dataset_index(["cat", "dog"], ["cat", "dog"]) is None
    assert vocabulary_to_dataset_index(["Dog", "cat"], ["cat", "dog"]).tolist() == [1, 0]


def test_trainer_builds_the_paper_protocol_evaluator_from_the_config(world_dataset, tmp_path):
    """Closed-set config on generated data: test on val with the base classes as the test vocabulary."""
    import gridclip
    from gridclip.engine.trainer import build_evaluator

    cfg = gridclip.get_gridclip_cfg(opts=[
        "DATASETS.TRAIN", f"('{world_dataset.train_base}',)", "DATASETS.TEST", f"('{world_dataset.val}',)",
        "MODEL.GRIDCLIP.TEST_VOCABULARY", world_dataset.train_base, "OUTPUT_DIR", str(tmp_path),
    ])
    evaluator = build_evaluator(cfg, world_dataset.val)
    n_rare = world_dataset.frequencies.count("r")
    assert evaluator.protocol["name"] == PROTOCOL_ALL_CATEGORIES
    assert evaluator.protocol["unpredictable"] == n_rare
    assert "the paper's closed-set protocol" in evaluator.paper_table_title
    cfg.MODEL.GRIDCLIP.TEST_VOCABULARY = ""
    assert build_evaluator(cfg, world_dataset.val).protocol["unpredictable"] == 0
