"""``python -m ms_fa demo``: a small GPT trained with ms_fa.FlashAttention (TND packing + causal + ALiBi) in
PYNATIVE mode; its loss decreases and matches the naive-attention twin to 1e-3 relative per step (fp32)."""

from __future__ import annotations

import re

import mindspore  # noqa: E402,F401  (a dependency of ms_fa)
import numpy as np

from ms_fa import demo  # noqa: E402


def test_batches_are_packed_copy_documents():
    ((ids, tgt, w, lens),) = demo.make_batches(1, 40, seed=3, doc_len=(8, 16))
    assert sum(lens) == len(ids) == 40 and len(lens) >= 3
    pos = 0
    for n, L in enumerate(lens):
        doc = ids[pos : pos + L]
        assert doc[0] == demo.BOS
        if n < len(lens) - 1:  # whole documents; the last one is cut to fit the step
            assert 8 <= L <= 16
            half = (L - 2) // 2
            assert doc[half + 1] == demo.SEP and np.array_equal(doc[1 : half + 1], doc[half + 2 :])  # the copy
        assert w[pos + L - 1] == 0 and np.all(w[pos : pos + L - 1] == 1)  # no target across documents
        assert np.array_equal(tgt[pos : pos + L - 1], doc[1:])
        pos += L


def test_demo_trains_and_matches_naive_twin(capfd):
    rc = demo.main(["--steps", "8", "--tokens", "96", "--doc-len", "16,40", "--quiet"])
    out, err = capfd.readouterr()
    rows = [ln.split() for ln in out.splitlines() if re.match(r"^\s+\d+\s+\d", ln)]
    assert len(rows) == 8
    fa, nv = np.array([float(r[1]) for r in rows]), np.array([float(r[2]) for r in rows])
    assert np.all(np.abs(fa - nv) <= 1e-5 * np.abs(nv))  # the issue asks 1e-3; measured ~3e-7
    assert fa[-2:].mean() < fa[:2].mean()
    assert "<= 1e-3: OK" in out and "decreased" in out
    assert re.search(r"step time \(median, s\)\s+[\d.]+\s+[\d.]+", out)
    assert re.search(r"peak memory growth \(MiB\)\s+\d+\s+\d+", out)
    assert "deprecat" not in (out + err).lower()  # issue 12: a new user sees no deprecation warning
    assert rc == 0
