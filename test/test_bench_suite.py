"""The prepared GPU check runs its every section on the CPU (dry run), and `bench --compare` measures drift."""
import json
from pathlib import Path

import pytest
import torch

from lmeec_core import bench_suite, cli
from lmeec_core.bench_suite import DRY_RUN, SECTIONS, SuiteConfig

SHIPPED = Path(__file__).resolve().parents[1] / "lmeec_core" / "assets" / "nano.pt"
KEYS = {"suite", "dry_run", "preset", "device", "device_name", "torch", "wall_s", *SECTIONS}


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """`--threads` sets the process-wide torch thread count; later tests expect it unchanged."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_dry_run_prints_every_section_of_the_gpu_check(capsys):
    assert cli.main(["bench", "--suite", "gpu", "--dry-run", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= KEYS and report["dry_run"] is True
    assert not [name for name in SECTIONS if "error" in report[name]], report
    assert all(report["speed"][v]["pairs_per_s"] > 0 for v in ("fp32", "bf16", "bf16_compile"))
    parity = report["bf16_vs_fp32"]
    assert 0.0 <= parity["mask_agreement"] <= 1.0 and parity["max_abs_fused_diff"] > 0  # bf16 does differ
    memory = report["memory_over_stream"]
    assert memory["pairs"] == DRY_RUN.memory_pairs and memory["kind"] == "rss" and memory["end_mb"] > 0
    assert report["tracker_latency_30hz"]["results_per_s"] > 0
    node = report["node_latency_30hz"]
    assert "skipped" in node or node["results_received"] > 0


def test_without_ros_the_node_section_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr(bench_suite, "_importable", lambda name: False)
    assert "no ROS" in bench_suite._node_latency(DRY_RUN)["skipped"]


def test_the_real_suite_refuses_a_machine_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="--dry-run"):
        bench_suite.gpu_suite(SuiteConfig())


def test_compare_reports_speedup_and_drift_against_the_fp32_reference(capsys):
    args = ["bench", "--compare", "fp32", "--dtype", "bf16", "--frames", "3", "--quiet", "--threads", "2",
            "--ego-size", "160x120", "--exo-size", "160x120", "--checkpoint", str(SHIPPED)]
    assert cli.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reference"] == {"dtype": "fp32", "speedups": [], "compile": False}
    assert report["candidate"]["dtype"] == "bf16" and report["speedup"] > 0
    assert report["max_abs_fused_diff"] > 0 and 0.0 <= report["mask_agreement"] <= 1.0
