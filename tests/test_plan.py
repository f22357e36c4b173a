"""ms_fa/semantics/plan.py: global mask rules (SPEC §2.1), user-mask forms, the auto invalid-line rule
(SPEC §6.1) and the band batch of TND modes 7/8 (SPEC §2.4)."""

from __future__ import annotations

import numpy as np
import pytest

from ms_fa.semantics import plan as M
from ms_fa.semantics.args import canonical_compressed_mask, normalize

INT_MAX = M.INT_MAX


# ---------------------------------------------------------------------------------------------
# SPEC §2.1-1: no atten_mask => nothing is masked, whatever sparse_mode / pre / next say


@pytest.mark.parametrize("mode", range(9))
@pytest.mark.parametrize("tnd", [False, True])
def test_no_atten_mask_masks_nothing(mode, tnd):
    rng = np.random.default_rng(mode + 10 * tnd)
    for _ in range(20):
        S1, S2 = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        pre, nxt = (int(x) for x in rng.integers(-10, 10, 2))
        band = M.band_for(
            mode,
            S1,
            S2,
            pre,
            nxt,
            has_mask=False,
            prefix=int(rng.integers(0, S2 + 1)),
            tnd=tnd,
            is_band_batch=bool(rng.integers(0, 2)),
        )
        assert not band.structural and not band.user_mask
        assert not M.effective_mask(band, S1, S2, None).any()
        assert (M.row_kept_count(band, S1, S2) == S2).all()
        plan = M.block_plan(band, S1, S2, 8, 8)
        assert (plan[:, 4] == M.BLOCK_FULL).all() and M.plan_flops_fraction(band, S1, S2, 8, 8) == 1.0


@pytest.mark.parametrize("mode", [0, 1, 2, 3, 4, 5, 6])
def test_no_atten_mask_through_normalize(mode):
    q = np.zeros((1, 2, 6, 8), np.float32)
    k = np.zeros((1, 2, 9, 8), np.float32)
    kw = {"prefix": [4]} if mode in (5, 6) else {}
    # SPEC §2.1-1 / §8.1 case 4: without atten_mask every mode is accepted and nothing is masked
    args = normalize(q, k, k, 2, "BNSD", sparse_mode=mode, pre_tokens=1, next_tokens=0, **kw)
    for h in range(2):
        assert not M.effective_mask_for(args, 0, h, None).any()


# ---------------------------------------------------------------------------------------------
# modes 0/1/5 OR the user's full mask; the compressed modes never read it element-wise


@pytest.mark.parametrize("mode", range(7))
def test_user_mask_is_ored_only_in_modes_0_1_5(mode):
    rng = np.random.default_rng(mode)
    S1, S2 = 11, 14
    user = rng.random((S1, S2)) < 0.3
    band = M.band_for(mode, S1, S2, 3, 2, has_mask=True, prefix=5)
    got = M.effective_mask(band, S1, S2, user)
    struct = M.structural_mask(band, S1, S2)
    if mode in (0, 1, 5):
        assert band.user_mask
        assert (got == (struct | user)).all()
    else:
        assert not band.user_mask
        assert (got == struct).all()
    if mode == 1:
        assert (got == user).all()
    # uint8 user masks: any non-zero byte discards
    u8 = user.astype(np.uint8) * np.uint8(7)
    assert (M.effective_mask(band, S1, S2, u8) == got).all()


def _args_bnsd(mask, mode=0, B=2, N1=3, S1=5, S2=7, **kw):
    q = np.zeros((B, N1, S1, 8), np.float32)
    k = np.zeros((B, N1, S2, 8), np.float32)
    return normalize(q, k, k, N1, "BNSD", atten_mask=mask, sparse_mode=mode, **kw)


@pytest.mark.parametrize("form", ["BNSS", "B1SS", "11SS", "SS"])
def test_effective_mask_for_reads_each_full_form(form):
    rng = np.random.default_rng(1)
    B, N1, S1, S2 = 2, 3, 5, 7
    shape = {"BNSS": (B, N1, S1, S2), "B1SS": (B, 1, S1, S2), "11SS": (1, 1, S1, S2), "SS": (S1, S2)}[form]
    mask = rng.random(shape) < 0.4
    args = _args_bnsd(mask, mode=1)
    assert args.mask_form == form
    for b in range(B):
        for h in range(N1):
            want = {
                "BNSS": lambda b=b, h=h: mask[b, h],
                "B1SS": lambda b=b: mask[b, 0],
                "11SS": lambda: mask[0, 0],
                "SS": lambda: mask,
            }[form]()
            assert (M.effective_mask_for(args, b, h, mask) == want).all()


def test_effective_mask_for_mode0_band_or_user():
    S1, S2 = 6, 6
    user = np.zeros((S1, S2), bool)
    user[2, 0] = True
    args = _args_bnsd(user, mode=0, B=1, N1=1, S1=S1, S2=S2, pre_tokens=1, next_tokens=1)
    got = M.effective_mask_for(args, 0, 0, user)
    i, j = np.arange(S1)[:, None], np.arange(S2)[None, :]
    assert (got == ((j - i > 1) | (i - j > 1) | user)).all()


def test_effective_mask_for_tnd_ss_and_tt():
    rng = np.random.default_rng(5)
    qlen, kvlen = (3, 3, 7), (4, 9, 12)  # S1 = [3, 0, 4], S2 = [4, 5, 3]
    T1, T2, N = 7, 12, 2
    q = np.zeros((T1, N, 8), np.float16)
    k = np.zeros((T2, N, 8), np.float16)
    ss = rng.random((4, 5)) < 0.3
    args = normalize(
        q, k, k, N, "TND", atten_mask=ss, sparse_mode=1, actual_seq_qlen=list(qlen), actual_seq_kvlen=list(kvlen)
    )
    assert args.mask_form == "SS"
    ms = M.effective_masks_tnd(args, 1, ss)
    assert [m.shape for m in ms] == [(3, 4), (0, 5), (4, 3)]
    assert (ms[0] == ss[:3, :4]).all() and (ms[2] == ss[:4, :3]).all()
    tt = rng.random((T1, T2)) < 0.3
    args = normalize(
        q, k, k, N, "TND", atten_mask=tt, sparse_mode=1, actual_seq_qlen=list(qlen), actual_seq_kvlen=list(kvlen)
    )
    assert args.mask_form == "TT"
    ms = M.effective_masks_tnd(args, 0, tt)
    assert (ms[0] == tt[0:3, 0:4]).all() and (ms[2] == tt[3:7, 9:12]).all()


def test_compressed_mask_is_not_read():
    """Modes 2/3/4: the 2048x2048 tensor only says 'a mask is present'; the band is the mask."""
    args = _args_bnsd(canonical_compressed_mask("causal"), mode=3, B=1, N1=1, S1=5, S2=7)
    got = M.effective_mask_for(args, 0, 0, canonical_compressed_mask("causal"))
    i, j = np.arange(5)[:, None], np.arange(7)[None, :]
    assert (got == (j > i + 2)).all()


def test_row_range_is_one_interval_for_every_mode():
    rng = np.random.default_rng(9)
    for _ in range(300):
        mode = int(rng.integers(0, 9))
        S1, S2 = int(rng.integers(1, 25)), int(rng.integers(1, 25))
        band = M.band_for(
            mode,
            S1,
            S2,
            int(rng.integers(-8, 30)),
            int(rng.integers(-8, 30)),
            has_mask=True,
            prefix=int(rng.integers(0, S2 + 1)),
            tnd=bool(rng.integers(0, 2)),
            is_band_batch=bool(rng.integers(0, 2)),
        )
        kept = ~M.structural_mask(band, S1, S2)
        jb, je = M.row_range(band, S2, np.arange(S1))
        for i in range(S1):
            assert np.nonzero(kept[i])[0].tolist() == list(range(jb[i], je[i]))


# ---------------------------------------------------------------------------------------------
# SPEC §6.1: auto invalid-line mode


@pytest.mark.parametrize(
    "case,want",
    [
        # (mode, S1, S2, pre, next, kw)
        ((3, 10, 8, INT_MAX, INT_MAX, {}), True),  # mode 3, S1 > S2
        ((3, 8, 8, INT_MAX, INT_MAX, {}), False),
        ((3, 8, 10, INT_MAX, INT_MAX, {}), False),
        ((0, 13, 10, 9, -3, {}), True),  # next_LU < 0
        ((0, 13, 10, -3, 7, {}), True),  # pre_LU < S1 - S2
        ((0, 13, 10, 2, 3, {}), True),  # pre_LU = 2 < 3 = S1 - S2
        ((0, 13, 10, 3, 3, {}), False),
        ((0, 10, 10, 2, 2, {}), False),
        ((0, 13, 10, INT_MAX, 0, {}), False),  # mode-0 causal special case
        ((0, 13, 10, 13, 10, {}), False),  # mode-0 no-band special case
        ((0, 13, 10, 13, 5, {}), False),
        ((4, 13, 16, 6, 4, {}), False),  # pre_LU = 3, next_LU = 7
        ((4, 13, 16, 2, 4, {}), False),  # pre_LU = -1 >= S1 - S2 = -3, next_LU = 7
        ((4, 13, 10, 2, 2, {}), True),  # next_LU = 2 - 3 = -1 < 0 (mode 4: next < S1-S2)
        ((4, 10, 13, -1, 5, {}), True),  # pre_LU = -4 < S1 - S2 = -3 (mode 4: pre < 0)
        ((4, 10, 10, 2, -1, {}), True),  # next_LU = -1 < 0
        ((4, 12, 10, 1, 0, {}), True),  # pre_LU = 3 > 2 = S1-S2, next_LU = -2 < 0
        ((5, 12, 10, INT_MAX, INT_MAX, {"prefix": [3, 0]}), True),  # prefix mode, S1 > S2, a prefix 0
        ((6, 12, 10, INT_MAX, INT_MAX, {"prefix": [3, 1]}), False),
        ((5, 10, 10, INT_MAX, INT_MAX, {"prefix": [0]}), False),  # S1 <= S2
        ((5, 12, 10, INT_MAX, INT_MAX, {"prefix": None}), False),
        ((1, 12, 10, 0, 0, {}), False),
        ((2, 12, 10, INT_MAX, 0, {}), False),
        ((3, 10, 8, INT_MAX, INT_MAX, {"has_mask": False}), False),  # no mask: nothing masked
        ((3, 10, 8, INT_MAX, INT_MAX, {"tnd": True}), False),  # TND: no auto rule
        ((1, 4, 4, INT_MAX, INT_MAX, {"inner_precise": 2}), True),  # inner_precise 2 forces it
        ((1, 4, 4, INT_MAX, INT_MAX, {"inner_precise": 2, "tnd": True, "has_mask": False}), True),
    ],
)
def test_auto_invalid_line_cases(case, want):
    mode, S1, S2, pre, nxt, kw = case
    kw = dict(kw)
    kw.setdefault("has_mask", True)
    kw.setdefault("inner_precise", 0)
    assert M.auto_invalid_line(mode, S1, S2, pre, nxt, **kw) is want


def _valid_band(p, n, S1, S2):
    """SPEC §9 SparseBandModeCheck on left-up values."""
    if p < 0 and n < 0:
        return False
    if p < 0 and not (n >= -p and -p < S2):
        return False
    if n < 0 and not (-n <= p and -n < S1):
        return False
    return True


@pytest.mark.parametrize("mode", [0, 3, 4])
def test_auto_invalid_line_whenever_the_band_empties_a_row(mode):
    """Non-TND modes 0/3/4 (valid band arguments): a row the band discards entirely => auto mode on.
    (The converse need not hold: the rule is the tiling's, stated on pre/next.)"""
    rng = np.random.default_rng(mode)
    n_on = 0
    for _ in range(3000):
        S1, S2 = int(rng.integers(1, 24)), int(rng.integers(1, 24))
        pre, nxt = (int(x) for x in rng.integers(-24, 30, 2))
        band = M.band_for(mode, S1, S2, pre, nxt, has_mask=True)
        if mode in (0, 4) and band.structural and not _valid_band(band.pre, band.next, S1, S2):
            continue
        empty_row = (M.row_kept_count(band, S1, S2) == 0).any()
        on = M.auto_invalid_line(mode, S1, S2, pre, nxt, has_mask=True, inner_precise=0)
        n_on += on
        if empty_row:
            assert on, (mode, S1, S2, pre, nxt, band)
    assert n_on > 0


# ---------------------------------------------------------------------------------------------
# SPEC §2.4: band batch of TND modes 7 (last non-empty q batch) and 8 (first)


@pytest.mark.parametrize(
    "seqlens,b7,b8",
    [
        ((3, 2), 1, 0),
        ((0, 2, 0, 3, 0), 3, 1),
        ((0, 0, 4), 2, 2),
        ((5, 0, 0), 0, 0),
        ((0, 0, 0), -1, -1),
        ((1,), 0, 0),
    ],
)
def test_band_batch_index(seqlens, b7, b8):
    assert M.band_batch_index(7, seqlens) == b7
    assert M.band_batch_index(8, seqlens) == b8
    for mode in (0, 1, 2, 3, 4, 5, 6):
        assert M.band_batch_index(mode, seqlens) == -1


def test_band_batch_only_gets_next():
    """Mode 7/8: batches other than the band batch are plain causal (7 bottom-right, 8 top-left)."""
    b7 = M.band_for(7, 3, 5, 5, -1, has_mask=True, tnd=True, is_band_batch=False)
    assert (b7.pre, b7.next) == (INT_MAX, 2)
    b7 = M.band_for(7, 3, 5, 5, -1, has_mask=True, tnd=True, is_band_batch=True)
    assert (b7.pre, b7.next) == (INT_MAX, 1)
    b8 = M.band_for(8, 3, 5, 5, 1, has_mask=True, tnd=True, is_band_batch=False)
    assert (b8.pre, b8.next) == (INT_MAX, 0)
    b8 = M.band_for(8, 3, 5, 5, 1, has_mask=True, tnd=True, is_band_batch=True)
    assert (b8.pre, b8.next) == (INT_MAX, 5 - 2)
    b8 = M.band_for(8, 3, 5, 5, 7, has_mask=True, tnd=True, is_band_batch=True)  # next > S1b: clipped
    assert (b8.pre, b8.next) == (INT_MAX, 5)


def test_band_batch_with_empty_batches_through_normalize():
    qlen, kvlen = (0, 2, 2, 5, 5), (0, 4, 4, 9, 9)  # S1 = [0, 2, 0, 3, 0], S2 = [0, 4, 0, 5, 0]
    q = np.zeros((5, 1, 8), np.float16)
    k = np.zeros((9, 1, 8), np.float16)
    for mode, want in ((7, 3), (8, 1)):
        args = normalize(
            q,
            k,
            k,
            1,
            "TND",
            atten_mask=canonical_compressed_mask("causal"),
            sparse_mode=mode,
            pre_tokens=INT_MAX,
            next_tokens=0,
            actual_seq_qlen=list(qlen),
            actual_seq_kvlen=list(kvlen),
        )
        assert args.band_batch == want


def test_mode5_without_prefix_falls_back_to_all():
    """SPEC §2.3: mode 5 with a missing prefix falls back to ALL (the full user mask only)."""
    band = M.band_for(5, 6, 6, INT_MAX, INT_MAX, has_mask=True, prefix=None)
    assert not band.structural and band.user_mask
    band = M.band_for(5, 6, 6, INT_MAX, INT_MAX, has_mask=True, prefix=2)
    assert band.structural and band.prefix == 2
