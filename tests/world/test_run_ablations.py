"""tools/run_ablations.py: the rows it knows, and mean ± std beside the paper's numbers from per-run metrics."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "run_ablations.py")


def test_lists_table4_and_table5_rows():
    proc = subprocess.run([sys.executable, TOOL, "--list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for row in ("T4-wo-align", "T4-R50star-wo-align", "T4-grid-align", "T4-image-align", "T4-both",
                "T5-grid-align", "T5-both"):
        assert row in proc.stdout
    assert "USE_MHSA False" in proc.stdout and "val_base" in proc.stdout


def test_summary_is_mean_and_std_over_seeds_beside_the_paper(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import run_ablations

    for seed, apr in ((0, 10.0), (1, 14.0)):
        out = tmp_path / "T5-both" / f"seed{seed}"
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({
            "row": "T5-both", "seed": seed, "per_category_ap": str(out / "missing.json"),
            "metrics": {"AP": 30.0 + seed, "APr": apr, "APc": 20.0, "APf": 40.0},
        }))
    args = run_ablations.get_parser().parse_args(["--output-dir", str(tmp_path)])
    markdown, figures = run_ablations.summarize(args, ["T5-both", "T5-grid-align"], [0, 1, 2])
    line = next(l for l in markdown.splitlines() if "T5-both" in l)
    assert "| 2 |" in line and "12.0 ± 2.0" in line and "30.5 ± 0.5" in line and "APr 12.7" in line
    assert "T5-grid-align" not in markdown  # no runs: no row
    summary = json.loads((tmp_path / "ablations.json").read_text())
    assert summary["T5-both"]["APr"]["values"] == [10.0, 14.0] and figures == []
