"""Finding and loading ms_fa's C++ library, and choosing its instruction-set variant at run time.

The build (``ms_fa/csrc/CMakeLists.txt``) makes one library per variant, from the same sources and with
the same results bit for bit:

- ``libms_fa_cpu.so``: portable (the architecture's baseline, e.g. x86-64 / armv8-a);
- ``libms_fa_cpu_avx2.so``: x86 with AVX2 + FMA + F16C.

:func:`library_path` picks the best variant this CPU runs (``MS_FA_ISA=portable|avx2`` forces one;
``MS_FA_LIB`` names a library file directly). Whoever loads the library -- ctypes here, MindSpore's
``ops.Custom`` or its op-plugin loader -- takes that path from :func:`prepare_library`.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Dict, Optional

from .abi import FaProblem, check_abi

__all__ = ["ISAS", "isa", "library_path", "prepare_library", "load_library"]

#: variants, best first: name -> (library file, CPU features it needs (numpy's names))
ISAS: Dict[str, tuple] = {
    "avx2": ("libms_fa_cpu_avx2.so", ("AVX2", "FMA3", "F16C")),
    "portable": ("libms_fa_cpu.so", ()),
}

_LIB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_lib")


def _cpu_has(features) -> bool:
    try:
        from numpy.core._multiarray_umath import __cpu_features__ as have
    except ImportError:  # pragma: no cover - numpy always has it (>= 1.20)
        return not features
    return all(have.get(f, False) for f in features)


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
