"""Paired differences over seeds with Student-t 95 % intervals (gridclip.evaluation.paired_stats)."""
import math

import pytest

from gridclip.evaluation.paired_stats import (
    format_paired_difference, paired_difference, seeds_for_half_width, t_quantile_975,
)


def test_t_quantiles_match_published_values():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(4) == 2.776 and t_quantile_975(30) == 2.042
    assert t_quantile_975(35) == pytest.approx(2.030, abs=0.002)  # interpolated (published 2.0301)
    assert t_quantile_975(100) == pytest.approx(1.984, abs=0.002)
    assert t_quantile_975(10 ** 6) == pytest.approx(1.960, abs=0.001)
    with pytest.raises(ValueError, match="2 seeds"):
        t_quantile_975(0)


def test_hand_computed_interval_and_per_seed_values():
    # differences 1, 2, 3: mean 2, sd 1, half-width 4.303 / sqrt(3) = 2.484
    r = paired_difference({0: 11.0, 1: 12.0, 2: 13.0, 9: 50.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert r["seeds"] == [0, 1, 2] and r["differences"] == [1.0, 2.0, 3.0]  # seed 9 has no partner
    assert r["values"] == [11.0, 12.0, 13.0] and r["reference"] == [10.0, 10.0, 10.0]
    assert r["mean"] == 2.0 and r["sd"] == pytest.approx(1.0)
    assert r["half_width"] == pytest.approx(4.303 / math.sqrt(3))
    assert r["ci95"] == pytest.approx([2 - 2.4844, 2 + 2.4844], abs=1e-3)
    assert r["verdict"] == "inside the noise"


def test_pairing_removes_the_shared_seed_noise():
    # seeds move both rows by several points, the row is always 2 higher: resolved although the
    # unpaired spreads overlap
    reference = {0: 29.5, 1: 24.8, 2: 27.0, 3: 22.0}
    row = {s: v + 2.0 + 0.1 * s for s, v in reference.items()}
    r = paired_difference(row, reference)
    assert r["verdict"] == "resolved: row higher" and r["ci95"][0] > 0
    assert paired_difference(reference, row)["verdict"] == "resolved: row lower"


def test_one_or_no_common_seed():
    assert paired_difference({0: 3.0}, {0: 1.0})["verdict"] == "one seed: no interval"
    assert format_paired_difference(paired_difference({0: 3.0}, {0: 1.0})) == "+2.0 (1 seed)"
    assert paired_difference({0: 3.0}, {1: 1.0})["verdict"] == "no common seed"
    assert format_paired_difference(paired_difference({0: 3.0}, {1: 1.0})) == "-"


def test_seeds_needed_for_a_half_width():
    # sd 3.5 AP_r (a paired difference swinging by 3-4 points): 50 seeds for +-1 AP_r
    n = seeds_for_half_width(3.5, 1.0)
    assert n == 50
    assert t_quantile_975(n - 1) * 3.5 / math.sqrt(n) <= 1.0 < t_quantile_975(n - 2) * 3.5 / math.sqrt(n - 1)
    assert seeds_for_half_width(0.0, 1.0) == 2
    with pytest.raises(ValueError):
        seeds_for_half_width(1.0, 0.0)
    with pytest.raises(ValueError, match="more than"):
        seeds_for_half_width(100.0, 0.01, max_seeds=50)


def test_ablation_summary_reports_each_row_against_its_reference(tmp_path):
    """gridclip.world.ablations.summarize: Table 5's "both" against "grid-only", paired by seed, with a CI."""
    import json

    from gridclip.world import ablations

    # grid-only AP_r swings by 5 points between seeds; "both" is 2 higher (+-0.5) on every seed
    for seed, (grid_apr, both_apr) in enumerate(((29.5, 31.0), (24.8, 27.2), (27.0, 29.3))):
        for run, apr in (("grid-align", grid_apr), ("both", both_apr)):
            out = tmp_path / run / f"seed{seed}"
            out.mkdir(parents=True)
            (out / "run_record.json").write_text(json.dumps({
                "run": run, "seed": seed, "per_category_ap": {"val": "", "val_base": ""},
                "metrics": {"val": {"AP": 40.0, "APr": apr, "APc": 45.0 + seed, "APf": 50.0},
                            "val_base": {"AP": 42.0, "APr": -1.0, "APc": 46.0, "APf": 51.0}}}))
    markdown, _ = ablations.summarize(str(tmp_path), ["T5-grid-align", "T5-both", "T4-grid-align"], [0, 1, 2])
    line = next(l for l in markdown.splitlines() if l.startswith("| T5 | T5-both | T5-grid-align |"))
    assert "| 3 |" in line and "resolved: row higher" in line and "s0 +1.5, s1 +2.4, s2 +2.3" in line
    assert "| 4 (sd 0.49) |" in line  # what a +-1 AP_r CI takes at that sd: t_3 * 0.49 / 2 = 0.78 <= 1
    summary = json.loads((tmp_path / "ablations.json").read_text())
    apr = summary["T5-both"]["vs_reference"]["APr"]
    assert summary["T5-both"]["vs_reference"]["reference"] == "T5-grid-align"
    assert apr["differences"] == pytest.approx([1.5, 2.4, 2.3]) and apr["ci95"][0] > 0
    assert summary["T5-both"]["vs_reference"]["seeds_for_half_width_1"] == 4
    assert summary["T5-both"]["vs_reference"]["APc"]["mean"] == 0.0  # same APc on each seed: no difference
    assert "vs_reference" not in summary["T4-grid-align"]  # its reference, T4-wo-align, has no runs
