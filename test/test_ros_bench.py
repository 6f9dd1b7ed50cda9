"""lmeec_ros.bench_node measures the real node end to end and reports JSON-able statistics."""
import json

from ros_helpers import require_ros

require_ros()

from lmeec_ros import bench_node  # noqa: E402


def test_a_short_run_reports_latency_and_pair_counts():
    result = bench_node.run(width=160, height=120, rate_hz=5.0, duration_s=4.0, device="cpu",
                            exo_width=200, exo_height=150)
    json.dumps(result)
    assert result["ego_resolution"] == "160x120" and result["exo_resolution"] == "200x150"
    assert 15 <= result["published_pairs"] <= 21
    assert 0 < result["results_received"] <= result["published_pairs"]
    assert result["dropped_pairs"] >= 0
    assert 0 < result["latency_ms_median"] <= result["latency_ms_p95"] <= result["latency_ms_max"] < 10_000
    assert "lag_trend_ms_per_s" in result


def test_a_targets_run_reports_per_pair_time_and_memory_per_count():
    result = bench_node.run_targets((2, 1), width=160, height=120, duration_s=2.0, device="cpu")
    json.dumps(result)
    assert list(result["targets"]) == ["1", "2"]
    one, two = result["targets"]["1"], result["targets"]["2"]
    for figures in (one, two):
        assert figures["pairs"] >= 1 and figures["pairs_without_result"] == 0
        assert 0 < figures["ms_per_pair_median"] <= figures["ms_per_pair_p95"]
        assert figures["memory_end"]["process_rss_mb"] > 0
    assert sorted(two["memory_end"]["target_bytes"]) == sorted(set(two["memory_end"]["target_bytes"]))
    assert len(one["memory_end"]["target_bytes"]) == 1 and len(two["memory_end"]["target_bytes"]) == 2
    assert all(b > 0 for b in two["memory_end"]["target_bytes"].values())
    assert two["cost_vs_one_target"] > 0 and "cost_vs_one_target" not in one
