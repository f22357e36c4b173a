"""The official sparse-mode figures (SPEC §8.2, [OT-sparse-doc]) reproduced cell by cell.

Pictures use the figures' polarity: 1 = discarded, 0 = kept. The §8.2 rows quoted by SPEC are
checked literally; the other rows, and the TND pictures of modes 7/8 (held back in SPEC: "derive it
from §2.4"), were derived BY HAND from the SPEC §2.3/§2.4 formulas and written out here as strings
-- not produced by running the code. The derivations are in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest

from ms_fa.semantics import plan as M
from ms_fa.semantics.args import canonical_compressed_mask, normalize

INT_MAX = M.INT_MAX


def pic(rows: str) -> np.ndarray:
    return np.array([[c == "1" for c in r] for r in rows.split()], dtype=bool)


def show(m: np.ndarray) -> str:
    return "\n".join("".join("1" if x else "0" for x in r) for r in m)


def assert_pic(got: np.ndarray, want: str):
    w = pic(want)
    assert got.shape == w.shape, (got.shape, w.shape)
    assert (got == w).all(), f"\ngot:\n{show(got)}\nwant:\n{show(w)}"


def nontnd(mode, S1, S2, pre=INT_MAX, nxt=INT_MAX, prefix=0):
    band = M.band_for(mode, S1, S2, pre, nxt, has_mask=True, prefix=prefix)
    user = np.zeros((S1, S2), bool) if mode in (0, 1, 5) else None  # consistent (empty) user part
    return M.effective_mask(band, S1, S2, user)


def tnd(mode, qlen, kvlen, pre, nxt, prefix=None):
    """Per-batch pictures of a TND call, straight from band_for (lengths from the cumulative lists)."""
    sq = [M.seqlen(qlen, b) for b in range(len(qlen))]
    skv = [M.seqlen(kvlen, b) for b in range(len(kvlen))]
    bb = M.band_batch_index(mode, sq)
    out = []
    for b, (s1, s2) in enumerate(zip(sq, skv)):
        band = M.band_for(
            mode,
            s1,
            s2,
            pre,
            nxt,
            has_mask=True,
            tnd=True,
            is_band_batch=(b == bb),
            prefix=0 if prefix is None else prefix[b],
            max_s1=max(sq),
            max_s2=max(skv),
        )
        out.append(M.effective_mask(band, s1, s2, None))
    return out


# ---------------------------------------------------------------------------------------------
# non-TND figures (SPEC §8.2). Rows quoted by SPEC are marked  <- §8.2

MODE0_PRE9_NEXTM3 = """
1111111111
1111111111
1111111111
0111111111
0011111111
0001111111
0000111111
0000011111
0000001111
0000000111
1000000011
1100000001
1110000000
"""  # keep i-9 <= j <= i-3. rows 0-2 all 1 <- §8.2; row 3 <- §8.2; row 10 <- §8.2; row 12 <- §8.2

MODE0_PREM3_NEXT7 = """
1110000011
1111000001
1111100000
1111110000
1111111000
1111111100
1111111110
1111111111
1111111111
1111111111
1111111111
1111111111
1111111111
"""  # keep i+3 <= j <= i+7. row 0 <- §8.2; row 6 <- §8.2; rows 7-12 all 1 <- §8.2

MODE3_13x10 = """
1111111111
1111111111
1111111111
0111111111
0011111111
0001111111
0000111111
0000011111
0000001111
0000000111
0000000011
0000000001
0000000000
"""  # discard j > i + (10 - 13) = i - 3. rows 0-2, 3, 12 <- §8.2

MODE4_13x16_PRE6_NEXT4 = """
0000000011111111
0000000001111111
0000000000111111
0000000000011111
1000000000001111
1100000000000111
1110000000000011
1111000000000001
1111100000000000
1111110000000000
1111111000000000
1111111100000000
1111111110000000
"""  # discard j-i > 4+3 or i-j > 6-3: keep i-3 <= j <= i+7. rows 0, 4, 8, 12 <- §8.2

PREFIX4_10x10 = """
0000111111
0000111111
0000111111
0000111111
0000011111
0000001111
0000000111
0000000011
0000000001
0000000000
"""  # discard j > i and j >= 4. rows 0-3, 4, 9 <- §8.2

PREFIX5_10x10 = """
0000011111
0000011111
0000011111
0000011111
0000011111
0000001111
0000000111
0000000011
0000000001
0000000000
"""  # discard j > i and j >= 5


def test_mode0_pre9_next_minus3():
    assert_pic(nontnd(0, 13, 10, 9, -3), MODE0_PRE9_NEXTM3)


def test_mode0_pre_minus3_next7():
    assert_pic(nontnd(0, 13, 10, -3, 7), MODE0_PREM3_NEXT7)


def test_mode3_s1_gt_s2():
    assert_pic(nontnd(3, 13, 10), MODE3_13x10)


def test_mode4_band():
    assert_pic(nontnd(4, 13, 16, 6, 4), MODE4_13x16_PRE6_NEXT4)


@pytest.mark.parametrize("mode", [5, 6])
def test_prefix_b1(mode):
    assert_pic(nontnd(mode, 10, 10, prefix=4), PREFIX4_10x10)


@pytest.mark.parametrize("mode", [5, 6])
def test_prefix_b2(mode):
    # B = 2, prefix list [4, 5]: each batch has its own prefix (SPEC §2.3 prefix[b])
    for p, want in ((4, PREFIX4_10x10), (5, PREFIX5_10x10)):
        assert_pic(nontnd(mode, 10, 10, prefix=p), want)


def test_quoted_rows_literally():
    """The rows SPEC §8.2 quotes, against the code (independent of the hand-written pictures)."""
    m = nontnd(0, 13, 10, 9, -3)
    assert show(m[:3]) == "\n".join(["1" * 10] * 3)
    assert [show(m[[k]]) for k in (3, 10, 12)] == ["0111111111", "1000000011", "1110000000"]
    m = nontnd(0, 13, 10, -3, 7)
    assert [show(m[[k]]) for k in (0, 6)] == ["1110000011", "1111111110"] and m[7:].all()
    m = nontnd(3, 13, 10)
    assert m[:3].all() and show(m[[3]]) == "0111111111" and show(m[[12]]) == "0000000000"
    m = nontnd(4, 13, 16, 6, 4)
    assert [show(m[[k]]) for k in (0, 4, 8, 12)] == [
        "0000000011111111",
        "1000000000001111",
        "1111100000000000",
        "1111111110000000",
    ]
    for mode in (5, 6):
        m = nontnd(mode, 10, 10, prefix=4)
        assert all(show(m[[k]]) == "0000111111" for k in range(4))
        assert show(m[[4]]) == "0000011111" and show(m[[9]]) == "0000000000"


def test_masks_module_docstring_pictures():
    """The pictures in the docstring of ms_fa/semantics/plan.py (S1 = 4, S2 = 6)."""
    assert_pic(nontnd(2, 4, 6), "011111 001111 000111 000011")
    assert_pic(nontnd(3, 4, 6), "000111 000011 000001 000000")
    assert_pic(nontnd(4, 4, 6, 1, 0), "100111 110011 111001 111100")


# ---------------------------------------------------------------------------------------------
# TND figures (SPEC §2.4), derived by hand

# mode 7, card 1: actual_seq_qlen {3,5}, kvlen {3,9}, pre 6, next -2
#   lengths S1 = [3, 2], S2 = [3, 6]; band batch = LAST with S1b != 0 = batch 1
#   batch 0 (not band):  discard j > i + (3-3)          = j > i       (3x3 causal)
#   batch 1 (band):      discard j > i + (6-2) + (-2)   = j > i + 2   (2x6)
MODE7_CARD1 = ["011 001 000", "000111 000011"]
# card 2 of the same split runs mode 3: qlen {2,7,11}, kvlen {6,11,15}
#   S1 = [2, 5, 4], S2 = [6, 5, 4]; discard j > i + S2b - S1b
#   batch 0: j > i + 4 (2x6); batch 1: j > i (5x5); batch 2: j > i (4x4)
MODE3_CARD2 = ["000001 000000", "01111 00111 00011 00001 00000", "0111 0011 0001 0000"]
# mode 8, card 2: qlen {3,8,12}, kvlen {4,9,13}, pre 4, next 1
#   S1 = [3, 5, 4], S2 = [4, 5, 4]; band batch = FIRST with S1b != 0 = batch 0
#   batch 0 (band): discard j > i + S2b - max(S1b - next, 0) = i + 4 - 2 = i + 2   (3x4)
#   batch 1, 2:     discard j > i                                                  (5x5, 4x4)
MODE8_CARD2 = ["0001 0000 0000", "01111 00111 00011 00001 00000", "0111 0011 0001 0000"]
# card 1 of the same split runs mode 2: qlen {3,5}, kvlen {3,7}
#   S1 = [3, 2], S2 = [3, 4]; discard j > i (top-left)
MODE2_CARD1 = ["011 001 000", "0111 0011"]

TND_CASES = [
    ("mode7_card1", 7, (3, 5), (3, 9), 6, -2, MODE7_CARD1),
    ("mode3_card2", 3, (2, 7, 11), (6, 11, 15), INT_MAX, INT_MAX, MODE3_CARD2),
    ("mode8_card2", 8, (3, 8, 12), (4, 9, 13), 4, 1, MODE8_CARD2),
    ("mode2_card1", 2, (3, 5), (3, 7), INT_MAX, INT_MAX, MODE2_CARD1),
]


@pytest.mark.parametrize("name,mode,qlen,kvlen,pre,nxt,want", TND_CASES, ids=[c[0] for c in TND_CASES])
def test_tnd_figures(name, mode, qlen, kvlen, pre, nxt, want):
    got = tnd(mode, qlen, kvlen, pre, nxt)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_pic(g, w)


@pytest.mark.parametrize("name,mode,qlen,kvlen,pre,nxt,want", TND_CASES, ids=[c[0] for c in TND_CASES])
def test_tnd_figures_through_normalize(name, mode, qlen, kvlen, pre, nxt, want):
    """Same pictures from the user's arguments: normalize() -> AttnArgs -> effective_mask_for."""
    T1, T2, N, D = qlen[-1], kvlen[-1], 2, 8
    q = np.zeros((T1, N, D), np.float16)
    k = np.zeros((T2, N, D), np.float16)
    args = normalize(
        q,
        k,
        k,
        N,
        "TND",
        atten_mask=canonical_compressed_mask("causal"),
        pre_tokens=pre,
        next_tokens=nxt,
        sparse_mode=mode,
        actual_seq_qlen=list(qlen),
        actual_seq_kvlen=list(kvlen),
    )
    masks = M.effective_masks_tnd(args, 1, canonical_compressed_mask("causal"))
    for g, w in zip(masks, want):
        assert_pic(g, w)


def test_tnd_block_diagonal_picture_mode7():
    """The whole T1 x T2 picture of card 1 (mode 7): batches on the diagonal, nothing across."""
    got = tnd(7, (3, 5), (3, 9), 6, -2)
    full = np.ones((5, 9), bool)
    full[0:3, 0:3] = got[0]
    full[3:5, 3:9] = got[1]
    assert_pic(
        full,
        """
011111111
001111111
000111111
111000111
111000011
""",
    )
