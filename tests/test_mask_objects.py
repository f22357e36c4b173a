"""Mask objects (ms_fa.masks.objects): materialize() equals the effective mask the spec computes
from to_ascend()'s arguments, and the chosen sparse_mode is the cheapest exact one (brute force
over every cheaper mode and its parameters on small sizes)."""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ms_fa.masks.compile import COST_ORDER, COST_ORDER_TND
from ms_fa.masks.objects import CausalMask, DenseMask, Packed, PrefixLM, SlidingWindow
from ms_fa.semantics import plan as sm
from ms_fa.semantics.args import canonical_compressed_mask, normalize

INT_MAX = 2147483647


# ---------------------------------------------------------------------------------- spec helpers


def spec_mask(kw, S1=None, S2=None, B=1, N=1):
    """Effective mask per the spec (normalize + effective_mask_for). Non-TND: (B, N, S1, S2);
    TND: block-diagonal (T1, T2). Raises the spec's TypeError / ValueError."""
    kw = dict(kw)
    layout = kw.pop("input_layout", "BNSD")
    z = np.zeros((), np.float32)
    if layout == "TND":
        T1, T2 = kw["actual_seq_qlen"][-1], kw["actual_seq_kvlen"][-1]
        q, k = np.broadcast_to(z, (T1, N, 8)), np.broadcast_to(z, (T2, N, 8))
    else:
        q, k = np.broadcast_to(z, (B, N, S1, 8)), np.broadcast_to(z, (B, N, S2, 8))
    args = normalize(q, k, k, N, layout, check_values=False, **kw)
    am = kw.get("atten_mask")
    if layout == "TND":
        out = np.ones((T1, T2), bool)
        oq = ok = 0
        for b in range(args.B):
            s1, s2 = args.seqlens_q[b], args.seqlens_kv[b]
            if s1 and s2:
                out[oq : oq + s1, ok : ok + s2] = sm.effective_mask_for(args, b, 0, am)
            oq, ok = oq + s1, ok + s2
        return out
    return np.stack([np.stack([sm.effective_mask_for(args, b, h, am) for h in range(N)]) for b in range(B)])


def as4(m, B, N):
    m = np.asarray(m)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    return np.broadcast_to(m, (B, N) + m.shape[-2:])


C = canonical_compressed_mask("causal")
P = canonical_compressed_mask("prefix")


def structural_candidates(mode, S1, S2, B, tnd_lens=None):
    """Every (kwargs) of a structural mode worth trying on small sizes."""
    big = max(S1, S2) + 3
    R = list(range(-big, big + 1)) + [INT_MAX]
    if mode == "none":
        yield dict(sparse_mode=0, atten_mask=None)
    elif mode in (2, 3):
        yield dict(sparse_mode=mode, atten_mask=C)
    elif mode in (4, 7, 8):
        for p, n in itertools.product(R, R):
            yield dict(sparse_mode=mode, atten_mask=C, pre_tokens=p, next_tokens=n)
    elif mode == 6:
        ranges = [range(0, s + 1) for s in (tnd_lens[1] if tnd_lens else [S2] * B)]
        for pf in itertools.product(*ranges):
            yield dict(sparse_mode=6, atten_mask=P, prefix=list(pf))


def cheaper_exists(target, chosen, order, S1, S2, B, packed=None):
    """Brute force: is any mode before ``chosen`` in ``order`` exact for ``target``?"""
    modes = order[: order.index(chosen)] if chosen in order else order
    for mode in modes:
        if mode in (0, 1, 5):
            continue  # full-mask modes are after every structural one
        for kw in structural_candidates(mode, S1, S2, B, (packed.seqlens_q, packed.seqlens_kv) if packed else None):
            if packed is not None:
                kw = dict(
                    kw,
                    input_layout="TND",
                    actual_seq_qlen=list(np.cumsum(packed.seqlens_q)),
                    actual_seq_kvlen=list(np.cumsum(packed.seqlens_kv)),
                )
            try:
                got = spec_mask(kw, S1, S2, B)
            except (TypeError, ValueError):
                continue
            if packed is None:
                ok = np.array_equal(got, as4(target, B, 1))
            else:
                ok = np.array_equal(got, target)
            if ok:
                return mode, kw
    return None


# ------------------------------------------------------------------------------------- strategies

aligns = st.sampled_from(["top_left", "bottom_right"])


@st.composite
def windows(draw):
    left = draw(st.one_of(st.none(), st.integers(-2, 6)))
    lo = -left if left is not None else -2
    right = draw(st.one_of(st.none(), st.integers(max(lo, -2), 6)))
    return SlidingWindow(left, right, draw(aligns))


def atoms(B=1, dense_size=None):
    base = [st.builds(CausalMask, aligns), windows(), st.integers(0, 8).map(PrefixLM)]
    if B > 1:
        base.append(st.lists(st.integers(0, 8), min_size=B, max_size=B).map(PrefixLM))
    return st.one_of(*base)


@st.composite
def plain_masks(draw):
    S1, S2 = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    B = draw(st.sampled_from([1, 1, 2]))
    parts = draw(st.lists(atoms(B), min_size=1, max_size=3))
    if draw(st.integers(0, 5)) == 0:  # a dense component (random or structured content)
        kind = draw(st.sampled_from(["random", "causal", "band"]))
        i, j = np.arange(S1)[:, None], np.arange(S2)[None, :]
        if kind == "random":
            seed = draw(st.integers(0, 1000))
            d = np.random.default_rng(seed).random((S1, S2)) < 0.4
        elif kind == "causal":
            d = j > i
        else:
            d = (j - i > 1) | (i - j > 2)
        parts.append(DenseMask(d))
    m = parts[0]
    for p in parts[1:]:
        m = m & p
    Bm = max([len(p.prefix) for p in parts if isinstance(p, PrefixLM) and isinstance(p.prefix, tuple)] + [1])
    return m, S1, S2, Bm


@st.composite
def packed_masks(draw):
    n = draw(st.integers(1, 3))
    sq = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    sk = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    if n > 1 and draw(st.booleans()):
        sq[draw(st.integers(0, n - 1))] = 0
    pk = Packed(sq, sk)
    parts = draw(
        st.lists(
            st.one_of(
                st.builds(CausalMask, aligns),
                windows(),
                st.lists(st.integers(0, 6), min_size=n, max_size=n).map(PrefixLM),
            ),
            min_size=draw(st.sampled_from([0, 1, 1, 1])),
            max_size=2,
        )
    )
    m = pk
    for p in parts:
        m = m & p
    return m, pk


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------------------- tests


@SETTINGS
@given(plain_masks())
def test_plain_materialize_matches_spec_and_cheapest(case):
    m, S1, S2, B = case
    target = m.materialize(S1, S2)
    kw = m.to_ascend(S1, S2, allow_dense=True, batch=B)
    Bs = kw["atten_mask"].shape[0] if kw.get("atten_mask") is not None and kw["atten_mask"].ndim == 4 else B
    assert np.array_equal(spec_mask(kw, S1, S2, Bs), as4(target, Bs, 1))
    chosen = kw["sparse_mode"] if kw["atten_mask"] is not None else "none"
    assert cheaper_exists(target, chosen, COST_ORDER, S1, S2, Bs) is None, (repr(m), chosen)
    if chosen in (2, 3, 4, 7, 8):
        assert kw["atten_mask"] is C or np.array_equal(kw["atten_mask"], C)


@SETTINGS
@given(plain_masks())
def test_plain_structural_or_reasoned_error(case):
    m, S1, S2, B = case
    if any(isinstance(p, DenseMask) for p in m.parts()):
        return
    target = m.materialize(S1, S2)
    try:
        kw = m.to_ascend(S1, S2)
    except ValueError as e:
        msg = str(e)
        assert "Ascend cannot express" in msg and "allow_dense=True" in msg and "sparse_mode 4" in msg
        assert cheaper_exists(target, None, COST_ORDER[:5], S1, S2, B) is None  # really inexpressible
        return
    assert kw["sparse_mode"] not in (0, 1, 5) or kw["atten_mask"] is None


@SETTINGS
@given(packed_masks())
def test_packed_materialize_matches_spec_and_cheapest(case):
    m, pk = case
    target = m.materialize()
    T1, T2 = sum(pk.seqlens_q), sum(pk.seqlens_kv)
    assert target.shape == (T1, T2)
    try:
        kw = m.to_ascend()
    except ValueError as e:
        assert "Ascend cannot express" in str(e)
        assert cheaper_exists(target, None, COST_ORDER_TND[:7], T1, T2, 1, packed=pk) is None
        kw = m.to_ascend(allow_dense=True)
    assert kw["input_layout"] == "TND"
    assert kw["actual_seq_qlen"] == list(np.cumsum(pk.seqlens_q))  # cumulative, no leading 0
    assert np.array_equal(spec_mask(kw), target)
    chosen = kw["sparse_mode"] if kw["atten_mask"] is not None else "none"
    assert cheaper_exists(target, chosen, COST_ORDER_TND, T1, T2, 1, packed=pk) is None, (repr(m), chosen)


# --------------------------------------------------------------------------------- unit examples


def test_spec_figure_mode4():
    m = SlidingWindow(6, 4, align="bottom_right")
    rows = m.picture(13, 16, title=False).splitlines()
    assert rows[0] == "........xxxxxxxx" and rows[4] == "x...........xxxx"
    assert rows[8] == "xxxxx..........." and rows[12] == "xxxxxxxxx......."
    kw = m.to_ascend(13, 16)
    assert (kw["sparse_mode"], kw["pre_tokens"], kw["next_tokens"]) == (4, 6, 4)


def test_choices():
    assert CausalMask().to_ascend(8, 8)["sparse_mode"] == 2
    assert CausalMask("bottom_right").to_ascend(5, 8)["sparse_mode"] == 3
    assert CausalMask("bottom_right").to_ascend(8, 8)["sparse_mode"] == 2  # same mask, cheaper mode first
    kw = PrefixLM([4, 5]).to_ascend(10, 10)
    assert kw["sparse_mode"] == 6 and kw["prefix"] == [4, 5] and kw["atten_mask"].shape == (3072, 2048)
    kw = (Packed([3, 2], [3, 6]) & CausalMask("bottom_right")).to_ascend()
    assert kw["sparse_mode"] == 3 and kw["actual_seq_qlen"] == [3, 5] and kw["actual_seq_kvlen"] == [3, 9]
    assert SlidingWindow(None, None).to_ascend(4, 4)["atten_mask"] is None
    assert Packed([2, 3]).to_ascend()["atten_mask"] is None  # TND alone separates documents
    d = DenseMask(np.triu(np.ones((6, 6), bool), 1))
    assert d.to_ascend()["sparse_mode"] == 2  # dense content detected
    r = DenseMask(np.random.default_rng(0).random((4, 5)) < 0.5)
    assert r.to_ascend()["sparse_mode"] == 0


def _doc_dense(docs, sq, sk):
    T1, T2 = sum(sq), sum(sk)
    d = np.ones((T1, T2), bool)
    oq = ok = 0
    for m, a, b in zip(docs, sq, sk):
        d[oq : oq + a, ok : ok + b] = m
        oq, ok = oq + a, ok + b
    return d


def test_context_parallel_modes_7_8_from_dense_documents():
    i3, j3 = np.arange(3)[:, None], np.arange(3)[None, :]
    i2, j6 = np.arange(2)[:, None], np.arange(6)[None, :]
    card1 = _doc_dense([j3 > i3, j6 > i2 + 2], [3, 2], [3, 6])  # SPEC §2.4 mode 7, card 1
    kw = (Packed([3, 2], [3, 6]) & DenseMask(card1)).to_ascend()
    assert (kw["sparse_mode"], kw["next_tokens"]) == (7, -2) and kw["pre_tokens"] >= 6
    assert np.array_equal(spec_mask(kw), card1)
    docs = [
        np.arange(4)[None, :] > np.arange(3)[:, None] + 2,
        np.arange(5)[None, :] > np.arange(5)[:, None],
        np.arange(4)[None, :] > np.arange(4)[:, None],
    ]
    card2 = _doc_dense(docs, [3, 5, 4], [4, 5, 4])  # SPEC §2.4 mode 8, card 2
    kw = (Packed([3, 5, 4], [4, 5, 4]) & DenseMask(card2)).to_ascend()
    assert (kw["sparse_mode"], kw["next_tokens"]) == (8, 1)
    assert kw["actual_seq_qlen"] == [3, 8, 12] and kw["actual_seq_kvlen"] == [4, 9, 13]
    assert np.array_equal(spec_mask(kw), card2)


def test_inexpressible_error_names_reason():
    m = SlidingWindow(2, 2) & PrefixLM(4)
    with pytest.raises(ValueError) as ei:
        m.to_ascend(10, 10)
    msg = str(ei.value)
    assert "sparse_mode 4" in msg and "row" in msg and "DenseMask" in msg and "allow_dense=True" in msg
    kw = m.to_ascend(10, 10, allow_dense=True)
    assert kw["sparse_mode"] == 0 and kw["atten_mask"].shape == (10, 10)


def test_tnd_rule_in_error():
    m = Packed([3, 2], [3, 6]) & CausalMask("bottom_right") & SlidingWindow(None, -2, "bottom_right")
    with pytest.raises(ValueError, match=r"\[tnd\.mode4\.invalid_row\]"):
        m.to_ascend()
    # bottom-right causal with S1b > S2b: mode 3 is rejected in TND, mode 6 with prefix 0 is exact
    kw = (Packed([4], [2]) & CausalMask("bottom_right")).to_ascend()
    assert kw["sparse_mode"] == 6 and kw["prefix"] == [0]


def test_and_semantics_and_shapes():
    a, b = CausalMask(), SlidingWindow(1, 1)
    assert np.array_equal((a & b).materialize(5, 6), a.materialize(5, 6) | b.materialize(5, 6))
    assert PrefixLM([1, 2]).materialize(3, 3).shape == (2, 3, 3)
    pk = Packed.from_cu_seqlens([0, 2, 5])
    assert pk.seqlens_q == (2, 3) and pk.materialize().shape == (5, 5)
    assert DenseMask(np.zeros((2, 3, 4, 5))).materialize().shape == (2, 3, 4, 5)


def test_picture_downsampled():
    s = CausalMask().picture(300, 300)
    lines = s.splitlines()
    assert "block" in lines[0] and max(len(x) for x in lines[1:]) <= 64 and "+" in s


def test_compressed_masks_are_the_canonical_constants():
    # the compiler hands out the semantics' one keyed cache of the constants (no cache of its own)
    causal = CausalMask().to_ascend(4096, 4096)["atten_mask"]
    prefix = PrefixLM([100]).to_ascend(4096, 4096)["atten_mask"]
    assert np.array_equal(causal, np.triu(np.ones((2048, 2048), bool), 1)) and not causal.flags.writeable
    assert causal is canonical_compressed_mask("causal")
    assert prefix.shape == (3072, 2048) and prefix is canonical_compressed_mask("prefix")


def test_png(tmp_path):
    p = CausalMask().to_png(tmp_path / "m.png", 6, 8)
    with open(p, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "make, exc, rule",
    [
        (lambda: PrefixLM([1.7]), TypeError, "mask.prefix.type"),
        (lambda: PrefixLM(["x"]), TypeError, "mask.prefix.type"),
        (lambda: PrefixLM(2.0), TypeError, "mask.prefix.type"),
        (lambda: PrefixLM(True), TypeError, "mask.prefix.type"),
        (lambda: PrefixLM(-3), ValueError, "mask.prefix"),
        (lambda: PrefixLM([]), ValueError, "mask.prefix.empty"),
        (lambda: Packed([1.5, 2]), TypeError, "mask.packed.type"),
        (lambda: Packed(3), TypeError, "mask.packed.type"),
        (lambda: Packed(["a"]), TypeError, "mask.packed.type"),
        (lambda: Packed([True, 2]), TypeError, "mask.packed.type"),
        (lambda: Packed([]), ValueError, "mask.packed.empty"),
        (lambda: Packed([1, 2], [1]), ValueError, "mask.packed.length"),
        (lambda: Packed([1, -2]), ValueError, "mask.packed.negative"),
        (lambda: Packed.from_cu_seqlens([1, 3]), ValueError, "mask.packed.cu_seqlens"),
        (lambda: CausalMask("diag"), ValueError, "mask.align"),
        (lambda: SlidingWindow(1.5, 0), TypeError, "mask.sliding_window.type"),
        (lambda: SlidingWindow(-3, 1), ValueError, "mask.sliding_window.empty"),
        (lambda: DenseMask(np.zeros(3, bool)), ValueError, "mask.dense.rank"),
        (lambda: DenseMask(np.zeros((1,) * 5, bool)), ValueError, "mask.dense.rank"),
        (lambda: DenseMask("abc"), TypeError, "mask.dense.type"),
        (lambda: Packed([2]) & Packed([2]), ValueError, "mask.packed.multiple"),
        (lambda: CausalMask().to_ascend(4.5, 4), TypeError, "mask.size"),
        (lambda: CausalMask().materialize(4, True), TypeError, "mask.size"),
        (lambda: CausalMask().materialize(-1, 4), ValueError, "mask.size"),
        (lambda: CausalMask().to_ascend(), ValueError, "mask.size"),
        (lambda: DenseMask(np.zeros((3, 4), bool)).materialize(4, 4), ValueError, "mask.dense.shape"),
        (lambda: (PrefixLM([1, 2]) & PrefixLM([1, 2, 3])).materialize(4, 4), ValueError, "mask.batch"),
        (lambda: Packed([3]).materialize(2, 3), ValueError, "mask.packed.size"),
        (lambda: (SlidingWindow(2, 2) & PrefixLM(4)).to_ascend(10, 10), ValueError, "mask.expressible"),
    ],
)
def test_bad_input_names_rule(make, exc, rule):
    with pytest.raises(exc) as ei:
        make()
    assert type(ei.value) is exc
    assert str(ei.value).startswith(f"[{rule}]"), str(ei.value)


@pytest.mark.parametrize("shape", [(0, 0), (3, 0), (0, 4)])
def test_empty_dense_mask_compiles(shape):
    """An empty DenseMask used to fail with numpy's 'argmax of an empty sequence'; it masks nothing there is to
    mask, exactly."""
    m = DenseMask(np.zeros(shape, bool))
    kw = m.to_ascend()
    assert kw["sparse_mode"] == 0 and kw["atten_mask"] is None
    assert m.materialize().shape == shape
