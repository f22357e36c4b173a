"""Running the kernel's test files (tests/test_kernel_cpu.py, tests/test_kernel_properties.py: kernel vs the
float64 oracle) in a fresh process with another library: the library is loaded once per process, so a
variant or a separately built copy needs its own (``MS_FA_LIB`` / ``MS_FA_ISA`` in ``env``)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ["tests/test_kernel_cpu.py", "tests/test_kernel_properties.py"]


def run_kernel_suite(env, timeout=600):
    """The kernel test files under ``env`` (a full environment); returns the CompletedProcess."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *FILES]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
