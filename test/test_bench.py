"""`lmeec bench --targets`: trackers of several target counts measured side by side (report shape only;
the figures themselves are the command's output, not asserted here)."""
from __future__ import annotations

import json

from lmeec_core.cli import main


def test_bench_measures_each_target_count_on_the_same_pairs(capsys):
    assert main(["bench", "--targets", "1,2", "--frames", "8", "--ego-size", "112x96", "--exo-size", "160x120",
                 "--threads", "2", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    one, two = report["runs"]["1"], report["runs"]["2"]
    assert (one["targets"], two["targets"]) == (1, 2) and list(two["memory"]) == ["1", "2"]
    assert two["cost_vs_one_target"] > 0 and "cost_vs_one_target" not in one
    assert two["stage_ms_median"]["encode"] > 0 and two["skipped_results"] == 0   # both views, one batch
    # What a target holds does not depend on how many share the tracker (no batch storage is pinned).
    assert set(two["target_bytes_end"].values()) == {one["target_bytes_end"]["1"]}
