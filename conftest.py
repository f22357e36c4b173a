"""Test tiers (DESIGN §6): L0 runs everywhere; L1 (`requires_cann`) needs the CANN toolkit;
L2 (`requires_npu`) needs an Atlas A2 NPU. L1/L2 tests skip here with the reason.

Hypothesis runs a fixed, repeatable set of examples by default, so that a CI result depends on the
code and nothing else; ``MS_FA_HYPOTHESIS=explore`` draws fresh random examples each run (with
``MS_FA_PROP_EXAMPLES=3000`` for a long search) and prints a reproduction blob on failure."""

import os
import shutil

import pytest
from hypothesis import settings

# The torch_npu stand-in is activated on purpose, never imported by test collection: importing its
# contrib.transfer_to_npu turns the device remap on for the whole process (--doctest-modules imports modules).
collect_ignore_glob = ["ms_fa/torch/shim/*"]

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("MS_FA_HYPOTHESIS", "repeatable"))


def _have_cann():
    home = os.environ.get("ASCEND_HOME_PATH") or os.environ.get("ASCEND_TOOLKIT_HOME")
    return bool(home and os.path.isdir(home)) or shutil.which("bisheng") is not None


def _have_npu():
    """An Ascend NPU is present: its device nodes exist (what each test needs on top -- torch_npu or
    MindSpore's Ascend backend -- it imports itself, failing loudly if missing on an NPU machine)."""
    import glob

    return bool(glob.glob("/dev/davinci[0-9]*"))


def pytest_collection_modifyitems(config, items):
    cann = _have_cann()
    npu = _have_npu() if any("requires_npu" in it.keywords for it in items) else False
    for it in items:
        if "requires_cann" in it.keywords and not cann:
            it.add_marker(
                pytest.mark.skip(reason="requires the CANN toolkit (bisheng / ASCEND_HOME_PATH), not installed here")
            )
        if "requires_npu" in it.keywords and not npu:
            it.add_marker(pytest.mark.skip(reason="requires an Ascend NPU (no /dev/davinci* device on this machine)"))


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    """Names the README's examples use without importing them (docstring examples import their own)."""
    import numpy as np

    import ms_fa

    doctest_namespace["ms_fa"] = ms_fa
    doctest_namespace["np"] = np
