#!/usr/bin/env bash
# One-stop set-up and run for a fresh machine:  ./dev.sh demo   |   ./dev.sh test
# Creates .venv (if missing), installs ms_fa with its test and torch extras (torch pinned to the
# CPU wheel 2.13.0, mindspore with numpy<2), builds the C++ kernel, then runs the job.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# reinstall only when the build inputs changed (setup.py, pyproject, C++ sources)
STAMP_NEW=$(cat setup.py pyproject.toml ms_fa/csrc/* 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat .dev-stamp 2>/dev/null || true)" != "$STAMP_NEW" ] || [ ! -f ms_fa/_lib/libms_fa_cpu.so ]; then
    $VPY -m pip install -q --upgrade "pip>=23" >/dev/null
    $VPY -m pip install -q "numpy>=1.25,<2" "torch==2.13.0"
    $VPY -m pip install -q -e ".[test,torch]"
    echo "$STAMP_NEW" > .dev-stamp
fi
cmd=${1:-}
shift || true
case "$cmd" in
    demo) exec $VPY -m ms_fa demo "$@" ;;
    test) exec $VPY -m pytest -q "$@" ;;
    bench) exec $VPY benchmarks/bench_cpu.py "$@" ;;
    *) echo "usage: ./dev.sh demo|test|bench [args]" >&2; exit 2 ;;
esac
