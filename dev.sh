#!/usr/bin/env bash
# One-stop set-up and run for a fresh machine:  ./dev.sh demo   |   ./dev.sh test
# Creates .venv (if missing), installs ms_fa with its test and torch extras (torch pinned to the
# CPU wheel 2.13.0, mindspore with numpy<2), builds the C++ library (CMake), then runs the job.
#   demo          the main job (python -m ms_fa demo)
#   test [ARGS]   without ARGS: lint (ruff, format, mypy, clang-format), then the test suite with the
#                 docstring and README examples as doctests -- exactly what CI runs; with ARGS: pytest ARGS
#   lint          the lint steps only
#   bench         the CPU benchmark (writes docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# reinstall only when the build inputs changed (setup.py, pyproject, C++ sources and CMake project)
STAMP_NEW=$(cat setup.py pyproject.toml ms_fa/csrc/* 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat .dev-stamp 2>/dev/null || true)" != "$STAMP_NEW" ] || [ ! -f ms_fa/_lib/libms_fa_cpu.so ]; then
    $VPY -m pip install -q --upgrade "pip>=23" >/dev/null
    $VPY -m pip install -q "numpy>=1.25,<2" "torch==2.13.0"
    $VPY -m pip install -q -e ".[test,torch]"
    echo "$STAMP_NEW" > .dev-stamp
fi

lint() {
    echo "lint: ruff check, ruff format --check, mypy, clang-format" >&2
    $VPY -m ruff check .
    $VPY -m ruff format --check .
    $VPY -m mypy
    .venv/bin/clang-format --dry-run -Werror ms_fa/csrc/*.h ms_fa/csrc/*.cc tests/*.cc custom_ops/op_host/*.h \
        custom_ops/op_host/*.cpp custom_ops/op_kernel/*.h custom_ops/op_kernel/*.cpp st/ascend_c/*.cpp benchmarks/*.cc \
        tests/ascendc_decls/*.h tests/ascendc_decls/*/*.h tests/ascendc_decls/*/*/*.h
}

cmd=${1:-}
shift || true
case "$cmd" in
    demo) exec $VPY -m ms_fa demo "$@" ;;
    lint) lint ;;
    test)
        if [ $# -gt 0 ]; then exec $VPY -m pytest -q "$@"; fi
        lint
        exec $VPY -m pytest -q --doctest-modules --doctest-glob=README.md ms_fa README.md tests st ;;
    bench) exec $VPY benchmarks/bench_cpu.py "$@" ;;
    *) echo "usage: ./dev.sh demo|test|lint|bench [args]" >&2; exit 2 ;;
esac
