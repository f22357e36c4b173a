"""The context-parallel planner (issue 10, item 1): ms_fa.semantics.context_parallel.

Properties (hypothesis): the union of all ranks' computed (query, key) pairs is exactly the global call's kept
pairs, none computed twice; every emitted call passes normalize; zigzag evens out causal work; the CANN
sparse_mode 7 / 8 examples (seeds/004, card 1 / card 2) come out exactly; and running every rank's calls on
the kernel and merging them gives the single-process result (fp32, DESIGN §6 against the float64 oracle).
"""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_cases import assert_design_rule

from ms_fa.kernels import cpu
from ms_fa.semantics import reference as ref
from ms_fa.semantics.context_parallel import computed_pairs, global_pairs, plan_context_parallel, run_rank
from ms_fa.semantics.plan import INT_MAX, band_for, block_plan

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


def _no_pair_twice_and_all(plan):
    got = computed_pairs(plan)
    counts = collections.Counter(got)
    twice = [p for p, n in counts.items() if n > 1]
    assert not twice, f"computed twice: {twice[:5]}"
    want = set(global_pairs(plan))
    assert set(got) == want, (sorted(set(got) - want)[:5], sorted(want - set(got))[:5])


def test_seeds_004_mode7_cards():
    """'varlen outer cut', bottom-right causal: the 4x6 batch is cut 2 + 2 between card 1 and card 2."""
    p = plan_context_parallel(2, seqlens_q=[3, 4, 5, 4], seqlens_kv=[3, 6, 5, 4], sparse_mode=3, cuts=[5])
    c1, c2 = p.ranks[0].calls[0].kwargs, p.ranks[1].calls[0].kwargs
    assert (c1["sparse_mode"], c1["pre_tokens"], c1["next_tokens"]) == (7, 6, -2)
    assert (c1["actual_seq_qlen"], c1["actual_seq_kvlen"]) == ([3, 5], [3, 9])
    assert c2["sparse_mode"] == 3 and (c2["actual_seq_qlen"], c2["actual_seq_kvlen"]) == ([2, 7, 11], [6, 11, 15])
    _no_pair_twice_and_all(p)


def test_seeds_004_mode8_cards():
    """Top-left causal: the 5x4 batch is cut 2 + 3 between card 1 and card 2."""
    p = plan_context_parallel(2, seqlens_q=[3, 5, 5, 4], seqlens_kv=[3, 4, 5, 4], sparse_mode=2, cuts=[5])
    c1, c2 = p.ranks[0].calls[0].kwargs, p.ranks[1].calls[0].kwargs
    assert c1["sparse_mode"] == 2 and (c1["actual_seq_qlen"], c1["actual_seq_kvlen"]) == ([3, 5], [3, 7])
    assert (c2["sparse_mode"], c2["pre_tokens"], c2["next_tokens"]) == (8, 4, 1)
    assert (c2["actual_seq_qlen"], c2["actual_seq_kvlen"]) == ([3, 8, 12], [4, 9, 13])
    _no_pair_twice_and_all(p)


MASKS = st.one_of(
    st.sampled_from(["none", "causal"]),
    st.tuples(st.just("band"), st.integers(0, 12), st.integers(0, 12)),
)


@SETTINGS
@given(
    W=st.integers(1, 5),
    S=st.integers(1, 40),
    mask=MASKS,
    strategy=st.sampled_from(["contiguous", "zigzag"]),
    scheme=st.sampled_from(["allgather", "ring"]),
)
def test_dense_plans_cover_the_mask_once(W, S, mask, strategy, scheme):
    _no_pair_twice_and_all(plan_context_parallel(W, seq_len=S, mask=mask, strategy=strategy, scheme=scheme))


@SETTINGS
@given(
    W=st.integers(1, 4),
    lens=st.lists(st.tuples(st.integers(0, 9), st.integers(1, 9)), min_size=1, max_size=5),
    mode=st.sampled_from([0, 2, 3]),
    data=st.data(),
)
def test_tnd_plans_cover_the_mask_once(W, lens, mode, data):
    sq, skv = [a for a, _ in lens], [b for _, b in lens]
    if mode == 3:  # bottom-right causal keeps nothing of rows beyond S2b - S1b < 0: a valid but empty row
        skv = [max(a, b) for a, b in zip(sq, skv)]
    if sum(sq) == 0:
        sq[0] = 1
    T1 = sum(sq)
    cuts = None
    if data.draw(st.booleans()):
        cuts = sorted(data.draw(st.lists(st.integers(0, T1), min_size=W - 1, max_size=W - 1)))
    _no_pair_twice_and_all(plan_context_parallel(W, seqlens_q=sq, seqlens_kv=skv, sparse_mode=mode, cuts=cuts))


@pytest.mark.parametrize("W", [2, 3, 4, 8])
@pytest.mark.parametrize("S", [4096, 8192 + 96])
def test_zigzag_evens_causal_work(W, S):
    """Blocks of the kernel's plan (128 x 128 tiles) per rank: zigzag's most loaded rank <= 1.1x the mean
    (contiguous: the last rank does ~1.5x (W=2) to ~2x the mean)."""

    def load(plan):
        out = []
        for rp in plan.ranks:
            n = 0
            for c in rp.calls:
                s1, s2 = sum(b - a for a, b in c.q), sum(b - a for a, b in c.k)
                kw = c.kwargs
                band = band_for(
                    kw["sparse_mode"],
                    s1,
                    s2,
                    kw["pre_tokens"],
                    kw["next_tokens"],
                    has_mask=kw["atten_mask"] is not None,
                )
                n += int((block_plan(band, s1, s2, 128, 128) != 0).sum())
            out.append(n)
        return np.array(out, float)

    zz = load(plan_context_parallel(W, seq_len=S, mask="causal", strategy="zigzag"))
    ct = load(plan_context_parallel(W, seq_len=S, mask="causal", strategy="contiguous"))
    assert zz.max() <= 1.1 * zz.mean(), zz
    assert ct.max() > 1.4 * ct.mean(), ct  # W=2: 3/4 of the work on the last rank


def _global(q, k, v, N, mask):
    kw = {}
    if mask == "causal":
        kw = dict(sparse_mode=2, atten_mask=np.triu(np.ones((2048, 2048), bool), 1))
    return kw


@pytest.mark.parametrize("scheme", ["allgather", "ring"])
@pytest.mark.parametrize("strategy", ["contiguous", "zigzag"])
@pytest.mark.parametrize("mask", ["none", "causal", ("band", 5, 2)])
@pytest.mark.parametrize("W", [2, 3])
def test_running_the_plan_equals_one_process(W, mask, strategy, scheme):
    """Every rank's calls on the kernel, merged, == the single call (out and softmax statistics)."""
    rng = np.random.default_rng(W)
    B, S, N, D = 2, 37, 2, 8
    q, k, v = (rng.standard_normal((B, S, N, D)).astype(np.float32) for _ in range(3))
    plan = plan_context_parallel(W, seq_len=S, mask=mask, strategy=strategy, scheme=scheme)
    pre, nxt = plan.band
    gkw = {}
    if mask != "none":
        gkw = dict(
            sparse_mode=0,
            atten_mask=np.triu(np.ones((S, S), bool), nxt + 1) | np.tril(np.ones((S, S), bool), -pre - 1),
            pre_tokens=INT_MAX,
            next_tokens=INT_MAX,
        )
    want = ref.fa_forward(q, k, v, N, "BSND", **gkw)
    want64 = ref.fa_forward(q, k, v, N, "BSND", precision="float64", **gkw)
    got_o = np.zeros_like(q)
    got_m = np.zeros((B, N, S, 8), np.float32)
    got_s = np.zeros((B, N, S, 8), np.float32)
    for r in range(W):
        res = run_rank(plan, r, q, k, v, N, cpu.fa_forward)
        rows = np.concatenate([np.arange(a, b) for a, b in plan.ranks[r].q])
        got_o[:, rows], got_m[:, :, rows], got_s[:, :, rows] = res
    for name, g, x, r64 in zip(("out", "max", "sum"), (got_o, got_m, got_s), want[:3], want64[:3]):
        assert_design_rule(name, g, x, r64, "float32")


@pytest.mark.parametrize("mode", [0, 2, 3])
def test_running_a_tnd_plan_equals_one_process(mode):
    rng = np.random.default_rng(mode)
    sq, skv = [5, 9, 1, 7], [6, 9, 4, 7]
    if mode == 2:
        skv = [5, 9, 1, 7]
    N, D = 2, 8
    q = rng.standard_normal((sum(sq), N, D)).astype(np.float32)
    k, v = (rng.standard_normal((sum(skv), N, D)).astype(np.float32) for _ in range(2))
    plan = plan_context_parallel(3, seqlens_q=sq, seqlens_kv=skv, sparse_mode=mode)
    assert any(c.kwargs["sparse_mode"] in (7, 8) for rp in plan.ranks for c in rp.calls) or mode == 0
    gkw = dict(actual_seq_qlen=list(np.cumsum(sq)), actual_seq_kvlen=list(np.cumsum(skv)), sparse_mode=mode)
    if mode:
        gkw["atten_mask"] = np.triu(np.ones((2048, 2048), bool), 1)
    want = ref.fa_forward(q, k, v, N, "TND", **gkw)
    want64 = ref.fa_forward(q, k, v, N, "TND", precision="float64", **gkw)
    got = [run_rank(plan, r, q, k, v, N, cpu.fa_forward) for r in range(3)]
    got = [g for g in got if g is not None]
    o = np.concatenate([g[0] for g in got])
    for name, g, x, r64 in zip(("out",), (o,), want[:1], want64[:1]):
        assert_design_rule(name, g, x, r64, "float32")


@pytest.mark.parametrize(
    "kw,rule",
    [
        (dict(world_size=0, seq_len=8), "cp.args"),
        (dict(world_size=2), "cp.args"),
        (dict(world_size=2, seq_len=8, mask="diagonal"), "cp.args"),
        (dict(world_size=2, seq_len=8, strategy="random"), "cp.args"),
        (dict(world_size=2, seqlens_q=[4, 4], scheme="ring"), "cp.args"),
        (dict(world_size=2, seqlens_q=[4, 4], sparse_mode=4), "cp.args"),
        (dict(world_size=3, seqlens_q=[4, 4], cuts=[5]), "cp.args"),
        (dict(world_size="2", seq_len=8), "cp.args"),
    ],
)
def test_bad_arguments_name_the_rule(kw, rule):
    with pytest.raises((TypeError, ValueError), match=rf"^\[{rule}\]"):
        plan_context_parallel(**kw)


def test_explain_shows_each_rank(capsys):
    from ms_fa.explain import main

    assert main(["--cp-world", "2", "--s1", "8", "--cp-strategy", "zigzag"]) == 0
    out = capsys.readouterr().out
    assert "rank 0: queries [(0, 2), (6, 8)]" in out and "rank 1: queries [(2, 4), (4, 6)]" in out
    assert "  xxxxxxxx" in out  # rank 0 computes the last row whole
    assert (
        main(
            ["--cp-world", "2", "--tnd-q", "3,7,12,16", "--tnd-kv", "3,9,14,18", "--sparse-mode", "3", "--cp-cuts", "5"]
        )
        == 0
    )
    assert "mode 7 pre 6 next -2 q[3, 5] kv[3, 9]" in capsys.readouterr().out
    assert (
        main(["--cp-world", "3", "--tnd-q", "5,14,15,22", "--sparse-mode", "3", "--cp-cuts", "7,12", "--cp-alibi", "2"])
        == 0
    )
    assert "mode 8 pre 7 next 0 q[5] kv[7] alibi q_start 2 kv_start 0" in capsys.readouterr().out
    assert main(["--cp-world", "2", "--s1", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("explain: [cp.args]") and len(err.splitlines()) == 1


@pytest.mark.parametrize("pse_type", [2, 3])
@pytest.mark.parametrize("scheme", ["allgather", "ring"])
@pytest.mark.parametrize("mask", ["none", "causal", ("band", 6, 1)])
@pytest.mark.parametrize("W", [2, 3])
def test_alibi_across_ranks(W, mask, scheme, pse_type):
    """In-kernel ALiBi of the global call (pse_type 2 / 3, slopes): every rank's blocks get the bias of their
    global positions -- square blocks in the kernel (q_start_idx / kv_start_idx), others as explicit pse."""
    from ms_fa.semantics.pse import alibi_slopes

    rng = np.random.default_rng(W + pse_type)
    B, S, N, D = 1, 36, 4, 8
    q, k, v = (rng.standard_normal((B, S, N, D)).astype(np.float32) for _ in range(3))
    slopes = alibi_slopes(N)
    plan = plan_context_parallel(W, seq_len=S, mask=mask, strategy="zigzag", scheme=scheme, alibi=pse_type)
    pre, nxt = plan.band
    gkw = dict(pse=slopes, pse_type=pse_type)
    if mask != "none":
        gkw.update(atten_mask=np.triu(np.ones((S, S), bool), nxt + 1) | np.tril(np.ones((S, S), bool), -pre - 1))
    want = ref.fa_forward(q, k, v, N, "BSND", **gkw)
    want64 = ref.fa_forward(q, k, v, N, "BSND", precision="float64", **gkw)
    got = np.zeros_like(q)
    for r in range(W):
        res = run_rank(plan, r, q, k, v, N, cpu.fa_forward, alibi_slopes=slopes)
        got[:, np.concatenate([np.arange(a, b) for a, b in plan.ranks[r].q])] = res[0]
    kinds = {c.kwargs["sparse_mode"] for rp in plan.ranks for c in rp.calls}
    assert kinds, kinds
    assert_design_rule("out", got, want[0], want64[0], "float32")


@pytest.mark.parametrize("slopes", ["x", np.ones((2, 2), np.float32), np.ones(2, np.int32), None])
def test_alibi_slopes_are_checked(slopes):
    plan = plan_context_parallel(2, seq_len=8, alibi=2)
    with pytest.raises(TypeError, match=r"^\[cp\.args\]"):
        run_rank(plan, 0, *(np.zeros((1, 8, 1, 8), np.float32),) * 3, 1, cpu.fa_forward, alibi_slopes=slopes)


@SETTINGS
@given(
    W=st.integers(1, 4),
    lens=st.lists(st.integers(0, 9), min_size=1, max_size=5),
    mode=st.sampled_from([0, 2, 3]),
    data=st.data(),
)
def test_tnd_alibi_plans_cover_the_mask_once(W, lens, mode, data):
    """TND with ALiBi (self-attention): causal plans never need mode 7 (the last sequence's keys stop at its
    last query row) and are always possible; sparse_mode 0 is refused by name exactly when a rank starts inside
    a sequence and holds more (one q_start_idx per call)."""
    if sum(lens) == 0:
        lens[0] = 1
    T1 = sum(lens)
    cuts = sorted(data.draw(st.lists(st.integers(0, T1), min_size=W - 1, max_size=W - 1)))
    kw = dict(seqlens_q=lens, seqlens_kv=lens, sparse_mode=mode, cuts=cuts, alibi=data.draw(st.sampled_from([2, 3])))
    starts = set(np.cumsum([0] + lens).tolist())
    edges = [0, *cuts, T1]
    ends = np.cumsum(lens)
    needs_refusal = mode == 0 and any(
        edges[r] not in starts and int(np.sum(ends[ends > edges[r]] < edges[r + 1])) >= 1 for r in range(W)
    )
    if needs_refusal:
        with pytest.raises(ValueError, match=r"^\[cp\.args\] TND sparse_mode 0 with ALiBi"):
            plan_context_parallel(W, **kw)
        return
    plan = plan_context_parallel(W, **kw)
    assert all(c.kwargs["sparse_mode"] != 7 for rp in plan.ranks for c in rp.calls)
    _no_pair_twice_and_all(plan)


@pytest.mark.parametrize("pse_type", [2, 3])
@pytest.mark.parametrize(
    "mode,cuts", [(3, [7, 12]), (2, [3, 19]), (3, [2, 4]), (0, [7, 14]), (0, [16, 19]), (3, [5, 14])]
)
def test_running_a_tnd_alibi_plan_equals_one_process(mode, cuts, pse_type):
    """Packed sequences with in-kernel ALiBi cut between 3 ranks: output and softmax statistics of the ranks,
    put together, equal the single call (mode 8 + q_start_idx for a top cut, square last blocks)."""
    from ms_fa.semantics.layouts import seqlens_from_cumulative, softmax_to_tnd
    from ms_fa.semantics.pse import alibi_slopes

    rng = np.random.default_rng(mode + pse_type)
    lens, N, D = [5, 9, 1, 7], 4, 8
    T = sum(lens)
    q, k, v = (rng.standard_normal((T, N, D)).astype(np.float32) for _ in range(3))
    slopes = alibi_slopes(N)
    plan = plan_context_parallel(3, seqlens_q=lens, seqlens_kv=lens, sparse_mode=mode, cuts=cuts, alibi=pse_type)
    cum = list(np.cumsum(lens))
    gkw = dict(actual_seq_qlen=cum, actual_seq_kvlen=cum, sparse_mode=mode, pse=slopes, pse_type=pse_type)
    if mode:
        gkw["atten_mask"] = np.triu(np.ones((2048, 2048), bool), 1)
    want = ref.fa_forward(q, k, v, N, "TND", **gkw)
    want64 = ref.fa_forward(q, k, v, N, "TND", precision="float64", **gkw)
    got = [np.zeros((T, N, D), np.float32), np.zeros((T, N, 8), np.float32), np.zeros((T, N, 8), np.float32)]
    for r, rp in enumerate(plan.ranks):
        res = run_rank(plan, r, q, k, v, N, cpu.fa_forward, alibi_slopes=slopes)
        if res is None:
            continue
        (t0, t1) = rp.q[0]
        lens_r = seqlens_from_cumulative(rp.calls[0].kwargs["actual_seq_qlen"])
        got[0][t0:t1] = res[0]
        got[1][t0:t1], got[2][t0:t1] = (softmax_to_tnd(x, lens_r) for x in res[1:3])
    kinds = {c.kwargs["sparse_mode"] for rp in plan.ranks for c in rp.calls}
    assert (8 in kinds) == (mode != 0 and any(c not in np.cumsum([0] + lens) for c in cuts)), kinds
    for i, name in enumerate(("out", "max", "sum")):
        w, w64 = want[i], want64[i]
        if i:
            w, w64 = softmax_to_tnd(w, lens), softmax_to_tnd(w64, lens)
        assert_design_rule(name, got[i], w, w64, "float32")


@pytest.mark.parametrize(
    "args,rule,exc",
    [
        (dict(plan="plan"), "cp.args", TypeError),
        (dict(head_num="4"), "head_num.type", TypeError),
        (dict(head_num=0), "head_num.positive", ValueError),
        (dict(scale="0.5"), "scale.type", TypeError),
        (dict(alibi_slopes=np.ones(2, np.float32)), "cp.args", ValueError),
        (dict(world_size=3), "cp.args", ValueError),
    ],
)
def test_layer_arguments_name_the_rule_before_any_collective(args, rule, exc):
    """Both framework layers check their arguments with check_layer_args before they touch a collective:
    the MindSpore Cell here without any communication initialised (it would fail there otherwise)."""
    from ms_fa.mindspore.context_parallel import ContextParallelAttention
    from ms_fa.semantics.context_parallel import check_layer_args

    kw = dict(plan=plan_context_parallel(2, seq_len=8), head_num=2, scale=0.5, alibi_slopes=None, world_size=2)
    kw.update(args)
    with pytest.raises(exc, match="^" + re.escape(f"[{rule}]")):
        check_layer_args(**kw)
    if "world_size" not in args:
        kw.pop("world_size")
        with pytest.raises(exc, match="^" + re.escape(f"[{rule}]")):
            ContextParallelAttention(kw["head_num"], kw["plan"], kw["scale"], alibi_slopes=kw["alibi_slopes"])
