"""``python -m ms_fa info``: which kernel variant this machine runs, and why.

Prints the CPU features the variants need, every variant (built? runnable here?), the one chosen
(``MS_FA_ISA`` / ``MS_FA_LIB`` overrides), whether bf16 inputs take native bf16 products, the worker
thread count, the OpenBLAS core the fp32 GEMMs run on (``OPENBLAS_CORETYPE`` changes it), and which
attention backend runs here and why the others do not.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform

__all__ = ["main", "report"]


def _openblas_core() -> str:
    from ms_fa.kernels import library

    lib = library._preload_openblas()
    if not lib:
        return "none (plain-loop GEMM)"
    try:
        f = lib.scipy_openblas_get_corename
        f.restype = ctypes.c_char_p
        return f().decode()
    except AttributeError:  # pragma: no cover - older scipy-openblas32
        return "unknown"


def report() -> str:
    """The report as text (what :func:`main` prints).

    Examples:
        >>> from ms_fa.info import report
        >>> "chosen variant:" in report()
        True
    """
    import ms_fa
    from ms_fa.kernels import library

    flags = library.cpu_flags()
    lines = [f"ms_fa {ms_fa.__version__} on {platform.machine()}, {os.cpu_count()} CPUs"]
    lines.append("kernel variants (best first):")
    for name, (fname, features) in library.ISAS.items():
        built = os.path.exists(os.path.join(library._LIB_DIR, fname))
        missing = [f for f in features if f not in flags]
        runs = "runs here" if not missing else "CPU lacks " + ", ".join(missing)
        lines.append(f"  {name:<9} {fname:<24} {'built' if built else 'not built'}, {runs}")
    forced = os.environ.get("MS_FA_ISA", "").strip()
    lib_env = os.environ.get("MS_FA_LIB")
    try:
        chosen = library.isa()
        why = f"forced by MS_FA_ISA={forced}" if forced else "the best one built that this CPU runs"
    except ValueError as e:
        chosen, why = "-", str(e)
    if lib_env:
        why = f"MS_FA_LIB={lib_env} overrides the variant"
    lines.append(f"chosen variant: {chosen} ({why})")
    native = chosen == "avx512" and os.environ.get("MS_FA_BF16_DOT", "1")[:1] != "0"
    lines.append(
        "bf16 inputs: "
        + (
            "native bf16 products (AVX512-BF16), fp32 accumulation"
            if native
            else "fp32 GEMMs on the bf16 values" + (" (MS_FA_BF16_DOT=0)" if chosen == "avx512" else "")
        )
    )
    nt = os.environ.get("MS_FA_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    aff = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines.append(f"worker threads: {nt or aff} ({'from the environment' if nt else 'the CPUs this process may use'})")
    lines.append(
        f"fp32 GEMM: OpenBLAS core {_openblas_core()} "
        f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})"
    )
    lines += _backends()
    return "\n".join(lines)


def _backends():
    """Which attention backend runs here and why the others do not (:func:`ms_fa.backends.report`; an
    Ascend device is seen the way st/ sees it: a /dev/davinci* node, and then MindSpore's device target
    is Ascend)."""
    import glob

    from ms_fa.backends import report as backend_report

    npu = bool(glob.glob("/dev/davinci[0-9]*"))
    return backend_report(device_target="Ascend" if npu else "CPU").splitlines()


def main(argv=None) -> int:
    argparse.ArgumentParser(prog="python -m ms_fa info", description=__doc__.splitlines()[0]).parse_args(argv)
    print(report())
    return 0
