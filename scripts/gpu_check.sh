#!/usr/bin/env bash
# The prepared GPU check (issue 12): one command, JSON on stdout, under 8 minutes on a recent GPU.
#   scripts/gpu_check.sh                         b+ at 480, random weights, on cuda
#   scripts/gpu_check.sh --checkpoint FILE       the same with real weights
#   scripts/gpu_check.sh --dry-run               the same sections on the CPU with a tiny model (CI)
# Needs the project's Python dependencies with a CUDA torch (`make setup` installs a CPU torch; on a GPU
# machine use its torch: PYTHON=/path/to/python scripts/gpu_check.sh). ROS is optional: without rclpy
# the node's latency section says it was skipped and the tracker-level latency stands in for it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m lmeec_core.cli bench --suite gpu "$@"
