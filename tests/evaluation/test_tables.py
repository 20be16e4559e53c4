"""Paper-style markdown tables from Detectron2 evaluator result dicts (LVIS / COCO / VOC flavours)."""
import pytest

from gridclip.evaluation.tables import format_paper_table, table_flavour, write_paper_table

LVIS = {"bbox": {"AP": 25.24, "AP50": 40.0, "AP75": 26.66, "APs": 17.0, "APm": 33.0, "APl": 40.05,
                 "APr": 15.0, "APc": 22.7, "APf": 32.5}}
# COCOEvaluator adds per-category "AP-<name>" entries; they must not become columns.
COCO = {"bbox": {"AP": 34.7, "AP50": 52.2, "AP75": 37.1, "APs": 20.0, "APm": 38.0, "APl": 45.0, "AP-person": 50.0}}
VOC = {"bbox": {"AP": 50.0, "AP50": 70.94, "AP75": 55.4}}


def _data_rows(markdown):
    return [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]


def test_lvis_table_has_the_paper_columns_in_order():
    text = format_paper_table(LVIS, title="GridCLIP-R50 on LVIS v1 val")
    assert text.startswith("### GridCLIP-R50 on LVIS v1 val")
    header, row = _data_rows(text)
    assert header == "| | AP | AP50 | AP75 | APs | APm | APl | AP_r | AP_c | AP_f |"
    assert row == "| GridCLIP | 25.2 | 40.0 | 26.7 | 17.0 | 33.0 | 40.0 | 15.0 | 22.7 | 32.5 |"


@pytest.mark.parametrize(
    "results, header, row",
    [
        (COCO, "| | AP | AP50 | AP75 |", "| GridCLIP | 34.7 | 52.2 | 37.1 |"),
        (VOC, "| | AP50 | AP75 |", "| GridCLIP | 70.9 | 55.4 |"),
    ],
)
def test_transfer_tables_follow_table_3(results, header, row):
    assert _data_rows(format_paper_table(results)) == [header, row]


def test_several_datasets_give_one_table_per_flavour_with_dataset_rows():
    text = format_paper_table({"lvis_v1_val": LVIS, "coco_2017_val": COCO, "voc_2007_test": VOC})
    assert text.index("**LVIS**") < text.index("**COCO**") < text.index("**PASCAL VOC**")
    rows = _data_rows(text)
    assert rows[1].startswith("| lvis_v1_val | 25.2") and rows[3].startswith("| coco_2017_val | 34.7")
    assert rows[5] == "| voc_2007_test | 70.9 | 55.4 |"


def test_segm_rows_bare_metric_dicts_and_missing_values():
    with_masks = {"bbox": LVIS["bbox"], "segm": dict(LVIS["bbox"], AP=float("nan"))}
    rows = _data_rows(format_paper_table(with_masks, row_label="run-1"))
    assert rows[1].startswith("| run-1 | 25.2") and rows[2].startswith("| run-1 (segm) | - |")
    assert _data_rows(format_paper_table(VOC["bbox"]))[1] == "| GridCLIP | 70.9 | 55.4 |"


def test_flavour_detection_and_bad_input():
    assert [table_flavour(r["bbox"]) for r in (LVIS, COCO, VOC)] == ["lvis", "coco", "voc"]
    with pytest.raises(ValueError, match="non-empty dict"):
        format_paper_table({})
    with pytest.raises(ValueError, match="not a dict"):
        format_paper_table({"lvis_v1_val": 3.0})


def test_write_paper_table_creates_folders(tmp_path):
    path = tmp_path / "out" / "eval" / "paper_table.md"
    text = write_paper_table(LVIS, str(path), title="t")
    assert path.read_text() == text and "| 15.0 | 22.7 | 32.5 |" in text


def test_not_evaluated_groups_print_as_dash():
    """LVIS/COCO return -1 (x100) for a group without ground truth, e.g. APl when no object is large."""
    from gridclip.evaluation.tables import format_paper_table

    metrics = {"AP": 26.0, "AP50": 33.6, "AP75": 29.7, "APs": 35.2, "APm": 40.1, "APl": -100.0,
               "APr": 9.6, "APc": 22.6, "APf": 49.2}
    row = format_paper_table({"bbox": metrics}).splitlines()[-1]
    assert row == "| GridCLIP | 26.0 | 33.6 | 29.7 | 35.2 | 40.1 | - | 9.6 | 22.6 | 49.2 |"


def test_protocol_line_under_the_title():
    from gridclip.evaluation.tables import format_paper_table

    metrics = {"bbox": {"AP": 20.3, "AP50": 30.0, "AP75": 21.0, "APs": 10.0, "APm": 20.0, "APl": 30.0,
                        "APr": 0.0, "APc": 19.4, "APf": 29.7}}
    text = format_paper_table(metrics, title="lvis_v1_val", protocol="protocol all-categories: rare at AP 0")
    lines = text.splitlines()
    assert lines[0] == "### lvis_v1_val" and lines[2] == "Protocol: protocol all-categories: rare at AP 0"
    assert "Protocol:" not in format_paper_table(metrics)
