"""Build of ms_fa: the Python package plus one shared library, ``ms_fa/_lib/libms_fa_cpu.so``.

The library holds the CPU kernel (C ABI in ``ms_fa/csrc/fa_kernel.h``), the MindSpore AOT entry
points and the MindSpore op-plugin entry points. It is compiled here, at install time, with the
system C++ compiler and linked against OpenBLAS from the ``scipy-openblas32`` wheel, so importing
ms_fa never needs a compiler. ``pip install -e .`` builds it in place.
"""
import glob
import os
import platform
import subprocess
import sys
import tempfile

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
# the in-place target of the library (editable installs copy it here); not tracked by git
os.makedirs(os.path.join(HERE, "ms_fa", "_lib"), exist_ok=True)
CSRC = os.path.join("ms_fa", "csrc")


def _openblas():
    try:
        import scipy_openblas32 as sob
    except ImportError:  # pragma: no cover - build requirement
        return None
    return sob.get_include_dir(), sob.get_lib_dir(), sob.get_library()


class BuildSharedLib(build_ext):
    """Compile ms_fa/csrc/*.cc into one plain shared library (not a CPython extension).

    Flags: -O3 -fopenmp, ``-ffp-contract=off`` (the kernel's rounding points, e.g. ``S*scale + pse``
    with two roundings, must not be fused into FMAs), and CPU tuning unless ``MS_FA_CXXFLAGS``
    overrides it: ``-march=native`` on x86, ``-mcpu=native`` on aarch64 / arm64, none elsewhere (each
    only if the compiler accepts it). The kernel (``ms_fa/csrc/fa_simd.h``) uses AVX2 + FMA + F16C
    where the target has all three, else portable C++ that the compiler auto-vectorizes (NEON, SSE),
    with the same results; e.g. ``MS_FA_CXXFLAGS="-mavx2 -mfma -mf16c"`` for a portable AVX2 build,
    ``MS_FA_CXXFLAGS="-march=x86-64"`` (or ``-DMS_FA_FORCE_SCALAR``) for the portable code on x86.
    """

    @staticmethod
    def _cpu_flags(cxx):
        """Default tuning flags for this machine (``MS_FA_CXXFLAGS`` unset): nothing x86-specific
        off x86; dropped if the compiler rejects them."""
        machine = platform.machine().lower()
        if machine in ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"):
            cand = ["-march=native"]
        elif machine in ("aarch64", "arm64", "armv8l", "armv8b"):
            cand = ["-mcpu=native"]
        else:
            return []
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "probe.cc")
            with open(src, "w") as f:
                f.write("int main() { return 0; }\n")
            try:
                subprocess.check_call([cxx] + cand + ["-c", src, "-o", os.path.join(d, "probe.o")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except (OSError, subprocess.CalledProcessError):
                print(f"ms_fa: {cxx} rejects {' '.join(cand)}; building without CPU tuning")
                return []
        return cand

    def get_ext_filename(self, ext_name):
        # a plain library loaded with ctypes / dlopen: no CPython ABI suffix
        return os.path.join(*ext_name.split(".")) + ".so"

    def build_extension(self, ext):
        out = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        cxx = os.environ.get("CXX", "g++")
        flags = ["-std=c++17", "-O3", "-fPIC", "-shared", "-fopenmp", "-Wall", "-Wextra", "-ffp-contract=off",
                 "-D_GLIBCXX_USE_CXX11_ABI=0",  # MindSpore's AOT ABI (DESIGN §8)
                 "-I" + CSRC]
        env_flags = os.environ.get("MS_FA_CXXFLAGS")
        flags += env_flags.split() if env_flags is not None else self._cpu_flags(cxx)
        ob = _openblas()
        libs = []
        if ob is not None:
            inc, libdir, lib = ob
            flags += ["-I" + inc, "-DMS_FA_HAVE_OPENBLAS=1"]
            # No absolute rpath: under pip's build isolation libdir is a temporary directory. At run
            # time ms_fa.kernels.cpu.prepare_library() loads the installed wheel's OpenBLAS first;
            # the relative rpath serves a plain site-packages install loaded by anyone else.
            libs += ["-L" + libdir, "-l" + lib, "-Wl,-rpath,$ORIGIN/../../scipy_openblas32/lib"]
        try:
            import mindspore
            msinc = os.path.join(os.path.dirname(mindspore.__file__), "include")
            if os.path.isdir(msinc):
                flags += ["-I" + msinc, "-DMS_FA_HAVE_MINDSPORE_HEADERS=1"]
        except Exception:  # MindSpore is optional at build time: its entry points need no headers
            pass
        srcs = sorted(glob.glob(os.path.join(CSRC, "*.cc")))
        cmd = [cxx] + flags + srcs + ["-o", out] + libs
        print(" ".join(cmd))
        subprocess.check_call(cmd, cwd=HERE)


def _read(path):
    with open(os.path.join(HERE, path), encoding="utf-8") as f:
        return f.read()


setup(
    name="ms_fa",
    version="0.1.0",
    description="Ascend FlashAttentionScore semantics for MindSpore and torch, with an exact fast CPU emulation",
    long_description=_read("README.md"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ms_fa", "ms_fa.*"]),
    package_data={"ms_fa": ["csrc/*.h", "csrc/*.cc"]},
    ext_modules=[Extension("ms_fa._lib.libms_fa_cpu", sources=[])],
    cmdclass={"build_ext": BuildSharedLib},
    python_requires=">=3.9",
    install_requires=["numpy>=1.25,<2", "mindspore>=2.3", "ml_dtypes>=0.4,<0.6", "scipy-openblas32>=0.3.27"],
    extras_require={
        "torch": ["torch"],
        "npu": ["torch-npu"],
        "test": ["pytest>=7", "hypothesis>=6", "matplotlib"],
        "plot": ["matplotlib"],
    },
    entry_points={"console_scripts": ["ms-fa=ms_fa.cli:main"]},
    zip_safe=False,
)
