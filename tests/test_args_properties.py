"""Property tests of ms_fa.semantics.args.normalize (hypothesis).

* random VALID argument sets (every layout and sparse mode, GQA, TND lengths with empty batches,
  pse kinds incl. compressed ALiBi and slopes, drop masks, all APIs) never raise and normalize to
  the dimensions they were built from;
* the same sets with ONE rule broken raise the documented exception with the documented rule name
  (docs/validation.md).

Tensors are shape/dtype-only objects (what MindSpore GRAPH mode passes) or small numpy arrays; the
compressed masks are the real canonical arrays, so their content check runs too.
"""

import copy
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ms_fa.semantics.args import APIS, INT_MAX, RULES, canonical_compressed_mask, normalize

F16, F32, BF16 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16)
CAUSAL = canonical_compressed_mask("causal")
PREFIX = canonical_compressed_mask("prefix")
CAUSAL_U8_4D = CAUSAL.astype(np.uint8)[None, None]
CAUSAL_BAD = np.array(CAUSAL)
CAUSAL_BAD[100, 99] = True
PSE1_APIS = ("flash_attention_score", "npu_fusion_attention")
RULE_EXC = {r[0]: r[1] for r in RULES}
SETTINGS = dict(deadline=None, max_examples=30, derandomize=True)
MUTATION_EXAMPLES = 25


class Sym:
    """Shape/dtype only; contents unreadable (np.asarray gives an object array)."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)

    def __repr__(self):
        return f"Sym({self.shape}, {self.dtype})"


def tensor(shape, dtype, real):
    if real and math.prod(shape) <= 4096:
        return np.zeros(shape, dtype)
    return Sym(shape, dtype)


def qkv_shapes(layout, B, N1, N2, S1, S2, D, Dv, T1=0, T2=0):
    return {
        "BNSD": ((B, N1, S1, D), (B, N2, S2, D), (B, N2, S2, Dv)),
        "BSND": ((B, S1, N1, D), (B, S2, N2, D), (B, S2, N2, Dv)),
        "BSH": ((B, S1, N1 * D), (B, S2, N2 * D), (B, S2, N2 * Dv)),
        "SBH": ((S1, B, N1 * D), (S2, B, N2 * D), (S2, B, N2 * Dv)),
        "TND": ((T1, N1, D), (T2, N2, D), (T2, N2, Dv)),
    }[layout]


def call(case):
    d = case["dims"]
    dts = case.get("dtypes", (case["dtype"],) * 3)
    shapes = qkv_shapes(
        case["layout"], d["B"], d["N1"], d["N2"], d["S1"], d["S2"], d["D"], d["Dv"], d.get("T1", 0), d.get("T2", 0)
    )
    q, k, v = (tensor(s, t, case["real"]) for s, t in zip(shapes, dts))
    return normalize(q, k, v, case["head_num"], case["layout_str"], **case["kw"])


def _pre_next_lu(draw, S1, S2):
    """Left-up (pre, next) that pass SparseBandModeCheck (SPEC §9)."""
    kind = draw(st.sampled_from(["pos", "pneg", "nneg", "max"]))
    if kind == "pneg" and S2 > 1:
        a = draw(st.integers(1, S2 - 1))
        return -a, a + draw(st.integers(0, 4))
    if kind == "nneg" and S1 > 1:
        a = draw(st.integers(1, S1 - 1))
        return a + draw(st.integers(0, 4)), -a
    if kind == "max":
        return INT_MAX, INT_MAX
    return draw(st.integers(0, 8)), draw(st.integers(0, 8))


NON_TND_MODES = (0, 1, 2, 3, 4, 5, 6)
TND_MODES = (0, 1, 2, 3, 4, 6, 7, 8)
CASE_KINDS = [(False, m) for m in NON_TND_MODES] + [(True, m) for m in TND_MODES]


@st.composite
def valid_case(draw, tnd=None, mode=None):
    """A valid argument set; ``tnd`` / ``mode`` fix the layout family and sparse_mode (else drawn)."""
    if tnd is None:
        tnd, mode = draw(st.sampled_from(CASE_KINDS))
    layout = "TND" if tnd else draw(st.sampled_from(["BSH", "SBH", "BSND", "BNSD"]))
    api = draw(st.sampled_from(APIS))
    dtype = draw(st.sampled_from([F16, BF16, F32]))
    N2 = draw(st.integers(1, 2))
    N1 = N2 * draw(st.integers(1, 3))
    D = draw(st.integers(1, 8))
    Dv = draw(st.integers(1, D))
    pse1 = api in PSE1_APIS
    kinds = ["none", "external"]
    if mode in (0, 2, 3):
        kinds.append("alibi")
    if not pse1 and not (tnd and mode == 7):
        kinds.append("slopes")
    pse_kind = draw(st.sampled_from(kinds))
    kw = dict(
        api=api,
        scale=draw(st.floats(-4, 4, allow_nan=False)),
        keep_prob=draw(st.sampled_from([1.0, 0.5, 0.9, 1e-3])),
        inner_precise=draw(st.integers(0, 2)),
    )
    expect = {}

    if layout == "TND":
        B = draw(st.integers(1, 4))
        has_mask = pse_kind == "alibi" or draw(st.booleans())
        sq = draw(st.lists(st.integers(0, 4), min_size=B, max_size=B))
        if has_mask and mode == 3:
            skv = [s + draw(st.integers(0, 3)) for s in sq]
        elif has_mask and mode == 7:
            skv = [s + draw(st.integers(0, 3)) if s else draw(st.integers(0, 4)) for s in sq]
        else:
            skv = draw(st.lists(st.integers(0, 4), min_size=B, max_size=B))
        if pse_kind == "alibi":
            skv = list(sq)
        if pse_kind == "slopes" and mode == 8:
            skv = [skv[0]] + sq[1:]
        S1, S2 = max(sq), max(skv)
        pre, nxt = draw(st.sampled_from([INT_MAX, -3, 0, 2, 5])), draw(st.sampled_from([INT_MAX, -3, 0, 2, 5]))
        nz = [b for b in range(B) if sq[b]]
        if has_mask and mode == 0:
            nxt = 0 if pse_kind == "alibi" else draw(st.integers(0, 6))
            pre = max(max(a - b for a, b in zip(sq, skv)), S1 if pse_kind == "alibi" else -10) + draw(st.integers(0, 4))
        elif has_mask and mode == 4:
            lo = max([sq[b] - skv[b] for b in nz], default=-3)
            nxt = lo + draw(st.integers(0, 3))
            pre = max(0, -nxt) + draw(st.integers(0, 4))
        elif has_mask and mode in (7, 8) and nz:
            bb = nz[-1] if mode == 7 else nz[0]
            s1b, s2b = sq[bb], skv[bb]
            nxt = draw(st.integers(s1b - s2b, 0)) if mode == 7 else s1b - s2b + draw(st.integers(0, 3))
            pre = s2b + draw(st.integers(0, 3))
            expect["band_batch"] = bb
        T1, T2 = sum(sq) + draw(st.integers(0, 2)), sum(skv) + draw(st.integers(0, 2))
        kw.update(actual_seq_qlen=np.cumsum(sq).tolist(), actual_seq_kvlen=tuple(np.cumsum(skv).tolist()))
        dims = dict(B=B, N1=N1, N2=N2, S1=S1, S2=S2, D=D, Dv=Dv, T1=T1, T2=T2)
        if has_mask and mode in (0, 1):
            shape = draw(st.sampled_from([(S1, S2), (S1 + 1, S2 + 2), (T1, T2)]))
            kw["atten_mask"] = tensor(shape, draw(st.sampled_from([np.bool_, np.uint8])), True)
        if mode == 6:
            kw["prefix"] = [
                draw(st.integers(0, 5)) if s1 == 0 else draw(st.integers(0 if s1 > s2 else s2 - s1, s2))
                for s1, s2 in zip(sq, skv)
            ]
    else:
        B = draw(st.integers(1, 3))
        if pse_kind == "alibi":
            S1 = S2 = draw(st.integers(1025, 1100))
            has_mask = True
        else:
            S1, S2 = draw(st.integers(1, 6)), draw(st.integers(1, 6))
            if pse_kind == "slopes":
                S2 = S1
            has_mask = draw(st.booleans())
        pre, nxt = draw(st.sampled_from([INT_MAX, -3, 0, 2, 5])), draw(st.sampled_from([INT_MAX, -3, 0, 2, 5]))
        if has_mask and mode in (0, 4):
            if pse_kind == "alibi":
                pre, nxt = S1 + draw(st.integers(0, 3)), 0
            else:
                p, n = _pre_next_lu(draw, S1, S2)
                pre, nxt = (p, n) if mode == 0 or p == INT_MAX else (p - (S1 - S2), n - (S2 - S1))
        dims = dict(B=B, N1=N1, N2=N2, S1=S1, S2=S2, D=D, Dv=Dv)
        if has_mask and mode in (0, 1, 5):
            forms = [(B, N1, S1, S2), (B, 1, S1, S2)]
            if mode != 5 or B == 1:
                forms += [(1, 1, S1, S2), (S1, S2)]
            kw["atten_mask"] = tensor(
                draw(st.sampled_from(forms)), draw(st.sampled_from([np.bool_, np.uint8])), draw(st.booleans())
            )
        if mode == 6 or (mode == 5 and draw(st.booleans())):
            lo = 0 if S1 > S2 else S2 - S1
            kw["prefix"] = draw(st.lists(st.integers(lo, S2), min_size=B, max_size=B))
    if has_mask and mode in (2, 3, 4, 7, 8):
        kw["atten_mask"] = draw(st.sampled_from([CAUSAL, CAUSAL_U8_4D]))
    if has_mask and mode == 6:
        kw["atten_mask"] = PREFIX
    kw.update(sparse_mode=mode, pre_tokens=int(pre), next_tokens=int(nxt))

    # pse
    if pse_kind == "slopes":
        kw["pse_type"] = draw(st.sampled_from([2, 3]))
        kw["pse"] = tensor(draw(st.sampled_from([(B, N1), (N1,)])), F32, True)
        if draw(st.booleans()):
            if layout == "TND" and mode == 8:
                k0 = draw(st.integers(-3, 3))
                kw["q_start_idx"], kw["kv_start_idx"] = [skv[0] - sq[0] + k0], [k0]
            else:
                kw["q_start_idx"] = [draw(st.integers(-5, 5))]
                if draw(st.booleans()):
                    kw["kv_start_idx"] = [draw(st.integers(-5, 5))]
        elif layout == "TND" and mode == 8 and sq[0] != skv[0]:
            kw["q_start_idx"], kw["kv_start_idx"] = [skv[0] - sq[0]], [0]
    else:
        kw["pse_type"] = 1 if pse1 else draw(st.sampled_from([0, 1]))
        pb = draw(st.sampled_from([1, B]))
        if pse_kind == "external" and layout != "TND":
            rows = draw(st.sampled_from([S1, 1]))
            kw["pse"] = tensor((pb, N1, rows, S2), dtype, True)
        elif pse_kind == "alibi":
            kw["pse"] = tensor((pb, N1, 1024, S2), dtype, False)
        else:
            pse_kind = "none"
    expect["pse_form"] = {"none": "none", "alibi": "alibi_compressed"}.get(pse_kind)

    # drop mask
    if draw(st.booleans()):
        numels = N1 * sum(a * b for a, b in zip(sq, skv)) if layout == "TND" else B * N1 * S1 * S2
        if layout != "TND" and S2 % 8 == 0 and draw(st.booleans()):
            kw["drop_mask"] = Sym((B, N1, S1, S2 // 8), np.uint8)
        else:
            kw["drop_mask"] = Sym((-(-numels // 8) + draw(st.integers(0, 16)),), np.uint8)
    layout_str = draw(st.sampled_from([layout, layout.lower()]))
    return dict(
        layout=layout,
        layout_str=layout_str,
        dtype=dtype,
        dims=dims,
        head_num=N1,
        kw=kw,
        real=draw(st.booleans()),
        has_mask=has_mask,
        expect=expect,
    )


@pytest.mark.parametrize("tnd,mode", CASE_KINDS, ids=[f"{'TND' if t else 'BxxD'}-mode{m}" for t, m in CASE_KINDS])
def test_valid_arguments_never_raise(tnd, mode):
    @settings(**SETTINGS)
    @given(valid_case(tnd, mode))
    def check(case):
        _check_valid(case)

    check()


def _check_valid(case):
    a = call(case)
    d = case["dims"]
    assert (a.B, a.N1, a.N2, a.G, a.S1, a.S2, a.D, a.Dv) == (
        d["B"],
        d["N1"],
        d["N2"],
        d["N1"] // d["N2"],
        d["S1"],
        d["S2"],
        d["D"],
        d["Dv"],
    )
    assert a.layout == case["layout"] and a.has_mask == case["has_mask"]
    assert a.dtype == case["dtype"].name
    if case["expect"].get("pse_form"):
        assert a.pse_form == case["expect"]["pse_form"]
    if "band_batch" in case["expect"]:
        assert a.band_batch == case["expect"]["band_batch"]
    if case["layout"] == "TND":
        assert (a.T1, a.T2) == (d["T1"], d["T2"]) and len(a.seqlens_q) == d["B"]
    else:
        assert a.numels == d["B"] * d["N1"] * d["S1"] * d["S2"]
    if a.sparse_mode == 5:
        assert a.prefix is not None and len(a.prefix) == a.B


# --------------------------------------------------------------------------------------------------
# one rule broken at a time
# --------------------------------------------------------------------------------------------------
def _m_keep_prob(c, draw):
    c["kw"]["keep_prob"] = draw(st.sampled_from([0.0, -0.5, 1.5, float("nan")]))
    return "keep_prob.range"


def _m_pse_type(c, draw):
    c["kw"]["pse_type"] = draw(st.sampled_from([4, -1, 7]))
    return "pse_type.range"


def _m_sparse_mode(c, draw):
    c["kw"]["sparse_mode"] = draw(st.sampled_from([5, 9, -1] if c["layout"] == "TND" else [7, 8, 9, -1]))
    return "sparse_mode.range"


def _m_same_dtype(c, draw):
    other = [t for t in (F16, BF16, F32) if t != c["dtype"]]
    dts = [c["dtype"]] * 3
    dts[draw(st.integers(1, 2))] = draw(st.sampled_from(other))
    c["dtypes"] = tuple(dts)
    return "qkv.same_dtype"


def _m_qkv_dtype(c, draw):
    c["dtypes"] = (np.dtype(draw(st.sampled_from([np.float64, np.int8, np.int32]))), c["dtype"], c["dtype"])
    return "qkv.dtype"


def _m_padding(c, draw):
    c["kw"]["padding_mask"] = Sym((1,), np.uint8)
    return "padding_mask.none"


def _m_layout(c, draw):
    c["layout_str"] = draw(st.sampled_from(["BHS", "", "TNDX", "NSD"]))
    return "input_layout.value"


def _m_head_num_type(c, draw):
    c["head_num"] = draw(st.sampled_from([float(c["head_num"]), str(c["head_num"]), None]))
    return "head_num.type"


def _m_head_dim(c, draw):
    c["dims"]["D"] = c["dims"]["Dv"] = draw(st.integers(769, 1024))
    return "head_dim.range"


def _m_dv(c, draw):
    c["dims"]["Dv"] = c["dims"]["D"] + draw(st.integers(1, 3))
    return "head_dim.v"


def _m_gqa(c, draw):
    c["dims"]["N2"] = c["dims"]["N1"] + draw(st.integers(1, 2))
    return "gqa.N1_mod_N2"


def _m_batch(c, draw):
    if c["layout"] == "TND":
        return None
    # shapes are rebuilt from dims: give the key/value side its own batch
    d = c["dims"]
    layout = c["layout"]
    shapes = qkv_shapes(layout, d["B"], d["N1"], d["N2"], d["S1"], d["S2"], d["D"], d["Dv"])
    kb = qkv_shapes(layout, d["B"] + 1, d["N1"], d["N2"], d["S1"], d["S2"], d["D"], d["Dv"])
    c["shapes"] = (shapes[0], kb[1], kb[2])
    return "batch.equal"


def _m_mask_dtype(c, draw):
    m = c["kw"].get("atten_mask")
    if m is None:
        return None
    c["kw"]["atten_mask"] = Sym(m.shape, draw(st.sampled_from([np.float16, np.int32, np.float32])))
    return "atten_mask.dtype"


def _m_mask_content(c, draw):
    c["kw"]["atten_mask"] = CAUSAL_BAD  # content is checked before prefix / pse / band rules
    return "atten_mask.compressed_content"


def _m_prefix_mode(c, draw):
    if c["kw"]["sparse_mode"] in (5, 6):
        return None
    c["kw"]["prefix"] = [0] * c["dims"]["B"]
    return "prefix.mode"


def _m_pse_required(c, draw):
    if c["kw"]["api"] in PSE1_APIS:
        return None
    c["kw"]["pse"] = None
    c["kw"]["pse_type"] = draw(st.sampled_from([2, 3]))
    return "pse.required"


def _m_band(c, draw):
    kw, d = c["kw"], c["dims"]
    if c["expect"].get("pse_form") == "alibi_compressed":
        return None
    if kw.get("atten_mask") is None:
        kw["atten_mask"] = Sym((d["S1"], d["S2"]), np.bool_)
    kw["pre_tokens"], kw["next_tokens"] = -draw(st.integers(1, 5)), -draw(st.integers(1, 5))
    return "band.both_negative"


def _m_tnd_lists(c, draw):
    if c["layout"] != "TND":
        return None
    kv = list(c["kw"]["actual_seq_kvlen"])
    c["kw"]["actual_seq_kvlen"] = kv[:-1]
    return "tnd.same_length" if len(kv) > 1 else "tnd.actual_seq_required"


def _m_tnd_T1(c, draw):
    d = c["dims"]
    if c["layout"] != "TND" or sum(np.diff([0] + list(c["kw"]["actual_seq_qlen"]))) == 0:
        return None
    d["T1"] = int(c["kw"]["actual_seq_qlen"][-1]) - 1
    return "tnd.T1"


def _m_drop_dtype(c, draw):
    c["kw"]["drop_mask"] = Sym((1 << 20,), draw(st.sampled_from([np.bool_, np.float16, np.int8])))
    return "drop_mask.dtype"


def _m_scale_type(c, draw):
    c["kw"]["scale"] = draw(st.sampled_from(["0.5", None, True, [1.0]]))
    return "scale.type"


def _m_tnd_mode0_next(c, draw):
    kw, d = c["kw"], c["dims"]
    if c["expect"].get("pse_form") == "alibi_compressed":
        return None
    if kw.get("atten_mask") is None:
        kw["atten_mask"] = Sym((d["S1"], d["S2"]), np.bool_)
    kw["next_tokens"] = -draw(st.integers(1, 3))
    return "tnd.mode0.next_negative"


def _m_tnd_mode7_next(c, draw):
    kw = c["kw"]
    if kw.get("atten_mask") is None or "band_batch" not in c["expect"]:
        return None
    kw["next_tokens"] = draw(st.integers(1, 3))
    return "tnd.mode7.next_positive"


def _m_prefix_range(c, draw):
    kw, d = c["kw"], c["dims"]
    if c["layout"] == "TND":
        s1 = np.diff([0] + list(kw["actual_seq_qlen"]))
        s2 = np.diff([0] + list(kw["actual_seq_kvlen"]))
        nz = [b for b in range(d["B"]) if s1[b]]
        if not nz:
            return None
        b = draw(st.sampled_from(nz))
        hi = int(s2[b])
    else:
        b, hi = draw(st.integers(0, d["B"] - 1)), d["S2"]
    kw["prefix"] = list(kw["prefix"])
    kw["prefix"][b] = hi + draw(st.integers(1, 3))
    return "prefix.range"


# mutators that only apply to some case kinds draw from those
_m_band.kinds = [(False, 0)]
_m_batch.kinds = [(False, m) for m in NON_TND_MODES]
_m_tnd_lists.kinds = _m_tnd_T1.kinds = [(True, m) for m in TND_MODES]
_m_mask_content.kinds = [(t, m) for t, m in CASE_KINDS if m in (2, 3, 4, 7, 8)]
_m_mask_dtype.kinds = _m_mask_content.kinds + [(False, 0), (False, 1), (False, 5), (True, 0), (True, 1)]
_m_prefix_mode.kinds = [(t, m) for t, m in CASE_KINDS if m not in (5, 6)]
_m_tnd_mode0_next.kinds = [(True, 0)]
_m_tnd_mode7_next.kinds = [(True, 7)]
_m_prefix_range.kinds = [(False, 6), (True, 6)]

MUTATORS = [
    _m_tnd_mode0_next,
    _m_tnd_mode7_next,
    _m_prefix_range,
    _m_keep_prob,
    _m_pse_type,
    _m_sparse_mode,
    _m_same_dtype,
    _m_qkv_dtype,
    _m_padding,
    _m_layout,
    _m_head_num_type,
    _m_head_dim,
    _m_dv,
    _m_gqa,
    _m_batch,
    _m_mask_dtype,
    _m_mask_content,
    _m_prefix_mode,
    _m_pse_required,
    _m_band,
    _m_tnd_lists,
    _m_tnd_T1,
    _m_drop_dtype,
    _m_scale_type,
]


def call_shapes(case):
    """Like :func:`call`, honouring explicit per-tensor shapes set by a mutator."""
    if "shapes" not in case:
        return call(case)
    dts = case.get("dtypes", (case["dtype"],) * 3)
    q, k, v = (tensor(s, t, case["real"]) for s, t in zip(case["shapes"], dts))
    return normalize(q, k, v, case["head_num"], case["layout_str"], **case["kw"])


@pytest.mark.parametrize("mutator", MUTATORS, ids=[m.__name__[3:] for m in MUTATORS])
def test_one_broken_rule_raises_it(mutator):
    kinds = getattr(mutator, "kinds", CASE_KINDS)
    cases = st.sampled_from(kinds).flatmap(lambda k: valid_case(*k))

    @settings(**dict(SETTINGS, max_examples=MUTATION_EXAMPLES))
    @given(cases, st.data())
    def check(case, data):
        _check_broken(case, mutator, data)

    check()


def _check_broken(case, mutator, data):
    case = copy.copy(case)
    case["kw"], case["dims"], case["expect"] = dict(case["kw"]), dict(case["dims"]), dict(case["expect"])
    rule = mutator(case, data.draw)
    if rule is None:  # mutator does not apply to this case: still valid
        call_shapes(case)
        return
    exc = RULE_EXC[rule]
    try:
        call_shapes(case)
    except (TypeError, ValueError) as e:
        assert type(e) is exc, (rule, e)
        assert str(e).startswith(f"[{rule}] "), (rule, str(e))
    else:
        raise AssertionError(f"{mutator.__name__} broke {rule} but normalize accepted {case}")
