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
