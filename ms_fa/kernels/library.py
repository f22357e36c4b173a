"""Finding and loading ms_fa's C++ library, and choosing its instruction-set variant at run time.

The build (``ms_fa/csrc/CMakeLists.txt``) makes one library per variant, from the same sources:

- ``libms_fa_cpu.so``: portable (the architecture's baseline, e.g. x86-64 / armv8-a);
- ``libms_fa_cpu_avx2.so``: x86 with AVX2 + FMA + F16C;
- ``libms_fa_cpu_avx512.so``: x86 with AVX-512 (F, BW, VL, DQ) and AVX512-BF16: the avx2 code, plus bf16
  inputs computed with native bf16 products (fp32 / fp16 results identical to avx2).

:func:`library_path` picks the best variant this CPU runs (``MS_FA_ISA=portable|avx2|avx512`` forces one;
``MS_FA_LIB`` names a library file directly). Whoever loads the library -- ctypes here, MindSpore's
``ops.Custom`` or its op-plugin loader -- takes that path from :func:`prepare_library`.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Dict, Optional

from .abi import FaProblem, check_abi

__all__ = ["ISAS", "cpu_flags", "isa", "library_path", "prepare_library", "load_library"]

#: variants, best first: name -> (library file, CPU features it needs (Linux /proc/cpuinfo flag names))
ISAS: Dict[str, tuple] = {
    "avx512": (
        "libms_fa_cpu_avx512.so",
        ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16"),
    ),
    "avx2": ("libms_fa_cpu_avx2.so", ("avx2", "fma", "f16c")),
    "portable": ("libms_fa_cpu.so", ()),
}

#: numpy's names of the same features, where /proc/cpuinfo is not there (numpy 1.x has no AVX512-BF16:
#: without /proc/cpuinfo that variant is not chosen, only forced)
_NUMPY_NAMES = {"avx2": "AVX2", "fma": "FMA3", "f16c": "F16C", "avx512f": "AVX512F", "avx512bw": "AVX512BW",
                "avx512vl": "AVX512VL", "avx512dq": "AVX512DQ"}  # fmt: skip

_LIB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_lib")


_FLAGS: Optional[frozenset] = None


def cpu_flags() -> frozenset:
    """The CPU's feature flags (Linux ``/proc/cpuinfo`` names, e.g. ``avx512_bf16``); elsewhere what numpy
    reports of the features :data:`ISAS` needs."""
    global _FLAGS
    if _FLAGS is None:
        flags: set = set()
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith(("flags", "Features")):
                        flags = set(line.split(":", 1)[1].split())
                        break
        except OSError:
            pass
        if not flags:
            try:
                from numpy.core._multiarray_umath import __cpu_features__ as have
            except ImportError:  # pragma: no cover - numpy always has it (>= 1.20)
                have = {}
            flags = {k for k, v in _NUMPY_NAMES.items() if have.get(v, False)}
        _FLAGS = frozenset(flags)
    return _FLAGS


def _cpu_has(features) -> bool:
    return set(features) <= cpu_flags()


def isa() -> str:
    """The variant :func:`library_path` loads: ``$MS_FA_ISA`` if set, else the best one that is built
    and that this CPU runs.

    Raises:
        ValueError: ``[kernel.isa]`` MS_FA_ISA names no variant, or one this CPU cannot run or that is
            not built.
    """
    forced = os.environ.get("MS_FA_ISA", "").strip().lower()
    if forced:
        if forced not in ISAS:
            raise ValueError(f"[kernel.isa] MS_FA_ISA must be one of {tuple(ISAS)}, got {forced!r}")
        fname, features = ISAS[forced]
        if not _cpu_has(features):
            raise ValueError(f"[kernel.isa] MS_FA_ISA={forced} needs CPU features {features}, absent here")
        if not os.path.exists(os.path.join(_LIB_DIR, fname)):
            raise ValueError(f"[kernel.isa] MS_FA_ISA={forced}: {fname} is not built for this machine")
        return forced
    for name, (fname, features) in ISAS.items():
        if _cpu_has(features) and os.path.exists(os.path.join(_LIB_DIR, fname)):
            return name
    return "portable"


def library_path() -> str:
    """Path of the kernel library: ``$MS_FA_LIB``, else the :func:`isa` variant in ``ms_fa/_lib``."""
    env = os.environ.get("MS_FA_LIB")
    if env:
        return os.path.abspath(env)
    return os.path.join(_LIB_DIR, ISAS[isa()][0])


_OPENBLAS: Optional[object] = None


def _preload_openblas():
    """Load the OpenBLAS of the installed ``scipy-openblas32`` wheel into the process (RTLD_GLOBAL).

    The kernel library links against it by soname. Its build may have run in pip's temporary build
    environment, so no rpath can be trusted; once OpenBLAS is loaded, every later ``dlopen`` of the
    kernel library -- ours, MindSpore's AOT ``ops.Custom`` or MindSpore's op-plugin loader -- resolves
    it from the process. OpenBLAS is told to start no thread pool of its own (it reads
    ``OPENBLAS_NUM_THREADS`` when it loads; the variable is restored afterwards): the kernel runs
    single-threaded GEMMs inside its worker threads.
    """
    global _OPENBLAS
    if _OPENBLAS is not None:
        return _OPENBLAS
    try:
        import scipy_openblas32 as sob
    except ImportError:
        _OPENBLAS = False  # a build without OpenBLAS (MS_FA_HAVE_OPENBLAS unset) needs none
        return _OPENBLAS
    path = os.path.join(sob.get_lib_dir(), "lib" + sob.get_library() + ".so")
    old = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        _OPENBLAS = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    finally:
        if old is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = old
    return _OPENBLAS


def prepare_library() -> str:
    """Path of the kernel library, after making sure it exists and its dependencies are loaded, so
    that anything may ``dlopen`` it (MindSpore's ``ops.Custom`` and op-plugin loader do).

    Raises:
        RuntimeError: ``[kernel.library]`` the library has not been built.
    """
    path = library_path()
    if not os.path.exists(path):
        raise RuntimeError(
            f"[kernel.library] ms_fa CPU kernel library not found at {path}; install ms_fa "
            f"(`pip install .`, or `./dev.sh test` in a checkout) or set MS_FA_LIB"
        )
    _preload_openblas()
    return path


_LIB = None
_LOCK = threading.Lock()


def load_library():
    """Load the kernel library once (explicitly, by path), check its ABI against
    :mod:`ms_fa.kernels.abi` and declare the C entry points; returns the CDLL."""
    global _LIB
    if _LIB is not None:
        return _LIB
    with _LOCK:
        if _LIB is None:
            path = prepare_library()
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                from ms_fa.semantics.rules import R

                R.env__value.fail(
                    f"the kernel library {path} cannot be loaded ({e}); check MS_FA_LIB or reinstall ms_fa"
                )
            check_abi(lib)
            vp, fp, cp, i = ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_char_p, ctypes.c_int
            prob = ctypes.POINTER(FaProblem)
            lib.fa_cpu_forward.argtypes = [prob, vp, vp, vp, vp, fp, fp, cp, i]
            lib.fa_cpu_forward.restype = ctypes.c_int
            lib.fa_cpu_backward.argtypes = [prob, vp, vp, vp, vp, vp, fp, fp, vp, vp, vp, cp, i]
            lib.fa_cpu_backward.restype = ctypes.c_int
            _LIB = lib
    return _LIB
