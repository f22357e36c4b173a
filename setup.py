"""Build of ms_fa: the Python package (metadata in pyproject.toml) plus its C++ library.

The library (the CPU kernel with its C ABI ``ms_fa/csrc/fa_kernel.h``, the MindSpore AOT and op-plugin
entry points) is the CMake project ``ms_fa/csrc/CMakeLists.txt``; this file only drives it: configure,
build, install the variants into ``ms_fa/_lib`` (or the wheel's ``ms_fa/_lib``). The library is plain
C ABI, loaded with ctypes / dlopen, not a CPython extension. It links OpenBLAS from the
``scipy-openblas32`` wheel, so importing ms_fa never needs a compiler. The default build is portable
(no ``-march=native``); the AVX2 variant is chosen at run time (``ms_fa/kernels/library.py``).

Environment: ``CMAKE_ARGS`` (extra ``-D`` options, e.g. ``-DMS_FA_EXTRA_FLAGS=-g``),
``CMAKE_BUILD_PARALLEL_LEVEL`` (compile jobs; default: the number of CPUs).
"""

import os
import platform
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "ms_fa", "csrc")
# editable installs copy the built libraries here (not tracked by git); setuptools does not create it
os.makedirs(os.path.join(HERE, "ms_fa", "_lib"), exist_ok=True)


def _cmake() -> str:
    """The cmake executable: the ``cmake`` build requirement's, else one on PATH."""
    try:
        import cmake  # the PyPI package (a build requirement in pyproject.toml)

        exe = os.path.join(cmake.CMAKE_BIN_DIR, "cmake")
        if os.path.exists(exe):
            return exe
    except ImportError:
        pass
    exe = shutil.which("cmake")
    if exe is None:
        raise RuntimeError("ms_fa: building the C++ library needs CMake >= 3.18 (`pip install cmake`)")
    return exe


class CMakeLibrary(build_ext):
    """Configure, build and install ``ms_fa/csrc`` with CMake into the package's ``_lib`` directory."""

    def build_extension(self, ext):
        # the directory of the placeholder extensions is the package's _lib in the build (or in place);
        # one CMake run builds every variant
        lib_dir = os.path.dirname(os.path.abspath(self.get_ext_fullpath(ext.name)))
        if getattr(self, "_ms_fa_built", None) == lib_dir:
            return
        self._ms_fa_built = lib_dir
        build_dir = os.path.abspath(os.path.join(self.build_temp, "csrc"))
        os.makedirs(build_dir, exist_ok=True)
        cfg = [f"-DMS_FA_INSTALL_DIR={lib_dir}", f"-DPython3_EXECUTABLE={sys.executable}"]
        try:
            import scipy_openblas32 as sob

            so = os.path.join(sob.get_lib_dir(), "lib" + sob.get_library() + ".so")
            cfg += [f"-DOPENBLAS_INCLUDE_DIR={sob.get_include_dir()}", f"-DOPENBLAS_LIBRARY={so}"]
        except ImportError:  # pragma: no cover - a build requirement; without it the GEMM is a plain loop
            print("ms_fa: scipy-openblas32 not found; building the kernel without OpenBLAS (slow GEMM)")
        cfg += shlex.split(os.environ.get("CMAKE_ARGS", ""))
        cmake = _cmake()
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.check_call([cmake, "-S", CSRC, "-B", build_dir] + cfg)
        subprocess.check_call([cmake, "--build", build_dir, "--parallel", jobs])
        subprocess.check_call([cmake, "--install", build_dir])

    def get_ext_filename(self, ext_name):
        # CMake names the files; this only fixes the install directory (ms_fa/_lib)
        return os.path.join(*ext_name.split(".")) + ".so"


def _variants():
    """The library files CMake makes on this architecture (see CMakeLists.txt), as placeholder
    extensions, so that setuptools copies each into place (editable installs included)."""
    names = ["libms_fa_cpu"]
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i486", "i586", "i686"):
        names += ["libms_fa_cpu_avx2", "libms_fa_cpu_avx512"]
    return [Extension(f"ms_fa._lib.{n}", sources=[]) for n in names]


setup(
    ext_modules=_variants(),
    cmdclass={"build_ext": CMakeLibrary},
)
