"""The warnings the semantics layer computes reach the user (issue: "warnings users can see"): every warning is
declared once (semantics.rules.W), documented, names its rule, and the public entry points issue it as
ms_fa.MsFaWarning at the caller's line -- numpy kernel entry, MindSpore functional API (eager and, once, at
graph compile time), torch frontend."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import ms_fa
from ms_fa.semantics.rules import WARNINGS, W

ROOT = Path(__file__).resolve().parents[1]
Q = np.random.default_rng(0).standard_normal((1, 2, 4, 8)).astype(np.float32)


def test_every_warning_is_declared_and_documented():
    doc = (ROOT / "docs" / "validation.md").read_text()
    for attr, note in vars(W).items():
        if attr.startswith("__"):
            continue
        assert note.name == attr.replace("__", ".")
        assert len([ln for ln in doc.splitlines() if ln.startswith(f"| `{note.name}` |")]) == 1, note.name
    assert len({n.name for n in WARNINGS}) == len(WARNINGS)


def test_numpy_entry_warns_at_the_callers_line():
    from ms_fa.kernels.cpu import fa_forward

    with pytest.warns(ms_fa.MsFaWarning, match=r"^\[sparse_mode\.no_mask\] sparse_mode 4 without atten_mask") as rec:
        fa_forward(Q, Q, Q, 2, "BNSD", sparse_mode=4)  # a diffusers-style "causal" call that masks nothing
    assert rec[0].filename == __file__


def test_warnings_can_be_filtered_by_rule():
    from ms_fa.kernels.cpu import fa_forward

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=re.escape("[sparse_mode.no_mask]"))
        fa_forward(Q, Q, Q, 2, "BNSD", sparse_mode=2)
    assert not [w for w in rec if issubclass(w.category, ms_fa.MsFaWarning)]


def test_mindspore_eager_and_graph():
    import mindspore as ms
    from mindspore import Tensor, nn

    q = Tensor(Q)
    with pytest.warns(ms_fa.MsFaWarning, match=r"^\[sparse_mode\.no_mask\]"):
        ms_fa.speed_fusion_attention(q, q, q, 2, "BNSD", sparse_mode=3)

    class Net(nn.Cell):
        def construct(self, x):
            return ms_fa.speed_fusion_attention(x, x, x, 2, "BNSD", sparse_mode=2)[0]

    prev = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        with pytest.warns(ms_fa.MsFaWarning, match=r"^\[sparse_mode\.no_mask\]"):
            Net()(q)
    finally:
        ms.set_context(mode=prev)


def test_torch_frontend():
    import torch

    import ms_fa.torch as mt

    q = torch.from_numpy(Q)
    with pytest.warns(ms_fa.MsFaWarning, match=r"^\[drop_mask\.unused\]"):
        mt.npu_fusion_attention(q, q, q, 2, "BNSD", dropout_mask=torch.zeros(64, dtype=torch.uint8))


def test_no_warning_for_a_plain_call():
    from ms_fa.kernels.cpu import fa_forward

    with warnings.catch_warnings():
        warnings.simplefilter("error", ms_fa.MsFaWarning)
        fa_forward(Q, Q, Q, 2, "BNSD", scale=0.3)
