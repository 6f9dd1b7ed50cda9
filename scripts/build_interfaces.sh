#!/usr/bin/env bash
# Build this package's ROS interfaces (lmeec_ros/msg, lmeec_ros/srv) into a venv that holds the ros-*
# wheels, with their cmake tool chain; no ROS install needed. Idempotent: reruns rebuild what changed.
#
#   bash scripts/build_interfaces.sh VENV
#
# The hand-written lmeec_ros package stays the one pip installed (editable in development). rosidl's
# generated half (msg/, srv/, type-support extensions) goes to VENV/lib/lmeec_ros/python/lmeec_ros,
# outside sys.path, and a `lmeec_ros.pkg` file in site-packages lists it so that
# pkgutil.extend_path() in lmeec_ros/__init__.py joins both halves into one package.
# Work-arounds for the wheels (shared/reference/ros2-from-pip.md): the extra generator wheels come
# from requirements/ros.txt; AMENT_PREFIX_PATH is set for configure; the exported include paths of
# the wheels' build machine are rewritten to this Python's.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 VENV" >&2
    exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(cd "$1" && pwd)"
python="$venv/bin/python"
build_dir="$root/build/interfaces-$(basename "$venv" | sed "s/^\.//")"
generated_dir="lib/lmeec_ros/python"   # relative to the venv prefix

read -r py_include np_include site_packages < <("$python" -c '
import sysconfig, numpy
print(sysconfig.get_paths()["include"], numpy.get_include(), sysconfig.get_paths()["purelib"])')

# Work-around 3: the wheels were built in manylinux, whose include paths their CMake exports keep.
# Rewriting only the foreign prefixes makes a second run a no-op.
wheel_py_include="/opt/python/cp311-cp311/include/python3.11"
wheel_np_include="/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"
mapfile -t exports < <(grep -l -e "$wheel_py_include" -e "$wheel_np_include" \
    "$venv"/share/*/cmake/*Export.cmake 2>/dev/null || true)
if [[ ${#exports[@]} -gt 0 ]]; then
    sed -i -e "s#$wheel_np_include#$np_include#g" -e "s#$wheel_py_include#$py_include#g" "${exports[@]}"
    echo "build_interfaces: rewrote include paths in ${#exports[@]} exported CMake files"
fi

export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"   # work-around 2
cmake -S "$root" -B "$build_dir" \
    -DCMAKE_PREFIX_PATH="$venv" \
    -DCMAKE_INSTALL_PREFIX="$venv" \
    -DPython3_EXECUTABLE="$python" \
    -DPYTHON_INSTALL_DIR="$generated_dir" \
    -DLMEEC_INSTALL_PYTHON=OFF \
    -DBUILD_TESTING=OFF \
    --log-level=WARNING
cmake --build "$build_dir" -j "$(nproc)"
cmake --install "$build_dir" > /dev/null

echo "$venv/$generated_dir/lmeec_ros" > "$site_packages/lmeec_ros.pkg"

"$python" -c 'import lmeec_ros.msg, lmeec_ros.srv' \
    || { echo "build_interfaces: lmeec_ros.msg/.srv built but not importable from $venv" >&2; exit 1; }
echo "build_interfaces: lmeec_ros/msg and lmeec_ros/srv installed in $venv"
