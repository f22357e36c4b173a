"""Case generators shared by the reference tests and the kernel-vs-oracle tests.

Main entry point::

    case = make_case("BSND", 4, "float16", B=2, N1=4, N2=2, S1=16, S2=24, D=8, Dv=8, seed=3)
    out = fa_forward(**case)                        # or any backend with the same keywords
    dy = make_dy(case, seed=4)
    dq, dk, dv = fa_grad(dy, **grad_kwargs(case, out))

``make_case`` returns a dict of keyword arguments for :func:`ms_fa.semantics.reference.fa_forward`
(``query, key, value, head_num, input_layout`` and every option the case sets) that satisfies the
Ascend rules (SPEC §2-§5, §9): consistent full masks for modes 0/1/5, canonical compressed masks for
2/3/4/6/7/8, pre/next chosen inside the band checks when not given, valid prefixes, TND lengths
turned into cumulative actual_seq lists, pse of the requested kind. Randomness comes only from
``seed`` (numpy ``default_rng``). Invalid explicit choices raise ``ValueError`` naming the rule.
"""

from __future__ import annotations

import functools

import numpy as np

from ms_fa.semantics import reference as R
from ms_fa.semantics.dropout import pack_bits
from ms_fa.semantics.dtypes import as_float32, numpy_dtype
from ms_fa.semantics.layouts import from_bnsd
from ms_fa.semantics.plan import INT_MAX
from ms_fa.semantics.pse import alibi_bias_full, alibi_compressed, alibi_slopes

__all__ = [
    "make_case",
    "random_config",
    "random_case",
    "make_dy",
    "grad_kwargs",
    "split_case",
    "compressed_mask",
    "compressed_prefix_mask",
    "SPARSE_MODES",
    "PSE_KINDS",
    "band_mode_ok",
    "cast",
]

#: sparse modes per layout family
SPARSE_MODES = {"non_tnd": (0, 1, 2, 3, 4, 5, 6), "tnd": (0, 1, 2, 3, 4, 6, 7, 8)}
PSE_KINDS = (None, "full", "row", "alibi", "alibi_compressed", "slopes_bn", "slopes_n")


@functools.lru_cache(maxsize=None)
def compressed_mask() -> np.ndarray:
    """The canonical 2048x2048 compressed mask ``triu(ones, 1)`` (bool, read-only)."""
    m = np.triu(np.ones((2048, 2048), dtype=bool), k=1)
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=None)
def compressed_prefix_mask() -> np.ndarray:
    """The canonical 3072x2048 mode-6 mask (bool, read-only): triu(1) on top, then 1024 rows with
    columns 0..1023 = 0, 1024..2047 = 1 (SPEC §2.2)."""
    m = np.zeros((3072, 2048), dtype=bool)
    m[:2048] = compressed_mask()
    m[2048:, 1024:] = True
    m.setflags(write=False)
    return m


def cast(x, dtype):
    """float array -> ``dtype`` ("float16" | "bfloat16" | "float32" | "float64" or a numpy dtype)."""
    dt = numpy_dtype(dtype) if isinstance(dtype, str) else np.dtype(dtype)
    return np.asarray(x, dtype=np.float32).astype(dt) if dt != np.float64 else np.asarray(x, np.float64)


def band_mode_ok(p: int, n: int, S1: int, S2: int) -> bool:
    """SparseBandModeCheck on left-up values (SPEC §9)."""
    if p < 0 and n < 0:
        return False
    if p < 0:
        return n >= -p and -p < S2
    if n < 0:
        return -n <= p and -n < S1
    return True


def _cum(lens):
    return list(np.cumsum(np.asarray(lens, dtype=np.int64)).tolist())


def _fail(rule, msg):
    raise ValueError(f"[make_case.{rule}] {msg}")


def _pick_tokens(rng, layout, mode, S1, S2, sq, skv, band_b, pre, nxt):
    """Choose pre/next (as the API takes them) inside the Ascend checks when not given."""
    tnd = layout == "TND"
    nz = [b for b in range(len(sq)) if sq[b] > 0] if tnd else []
    if mode == 0:
        if tnd:
            lo_pre = max([0] + [sq[b] - skv[b] for b in nz])
            pre = int(rng.integers(lo_pre, S1 + 1)) if pre is None else pre
            nxt = int(rng.integers(0, S2 + 1)) if nxt is None else nxt
        else:
            for _ in range(100):
                p = int(rng.integers(-S1 // 2, S1 + 1)) if pre is None else pre
                n = int(rng.integers(-S2 // 2, S2 + 1)) if nxt is None else nxt
                if band_mode_ok(p, n, S1, S2):
                    pre, nxt = p, n
                    break
            else:
                _fail("band", f"no valid band for S1={S1}, S2={S2}")
    elif mode == 4:
        if tnd:
            lo_n = max([-S1] + [sq[b] - skv[b] for b in nz])
            nxt = int(rng.integers(lo_n, S1 + 1)) if nxt is None else nxt
            pre = int(rng.integers(max(0, -nxt), S2 + 1)) if pre is None else pre
        else:
            for _ in range(100):
                p0 = int(rng.integers(-S1 // 2, S1 + 1)) if pre is None else pre
                n0 = int(rng.integers(-S2 // 2, S2 + 1)) if nxt is None else nxt
                if band_mode_ok(p0 + S1 - S2, n0 + S2 - S1, S1, S2):
                    pre, nxt = p0, n0
                    break
            else:
                _fail("band", f"no valid mode-4 band for S1={S1}, S2={S2}")
    elif mode == 7:
        if any(sq[b] > skv[b] for b in nz):
            _fail("mode7", "sparse_mode 7 needs S1b <= S2b for every non-empty batch")
        if nxt is None:
            nxt = int(rng.integers(sq[band_b] - skv[band_b], 1)) if band_b >= 0 else 0
        pre = INT_MAX if pre is None else pre
    elif mode == 8:
        if nxt is None:
            nxt = int(rng.integers(sq[band_b] - skv[band_b], sq[band_b] + 1)) if band_b >= 0 else 0
        pre = INT_MAX if pre is None else pre
    else:
        pre = INT_MAX if pre is None else pre
        nxt = (INT_MAX if mode != 2 else 0) if nxt is None else nxt
    return int(pre), int(nxt)


def _band_keep(mode, S1b, S2b, pre, nxt, pfx, tnd, is_band, maxS1, maxS2):
    from ms_fa.semantics.plan import band_for

    band = band_for(
        mode, S1b, S2b, pre, nxt, has_mask=True, prefix=pfx, tnd=tnd, is_band_batch=is_band, max_s1=maxS1, max_s2=maxS2
    )
    i = np.arange(S1b)[:, None]
    j = np.arange(S2b)[None, :]
    return band.keep(i, j)


def make_case(
    layout,
    sparse_mode,
    dtype,
    *,
    B=1,
    N1=2,
    N2=None,
    S1=8,
    S2=None,
    D=8,
    Dv=None,
    tnd_q=None,
    tnd_kv=None,
    tnd_pad_q=0,
    tnd_pad_kv=0,
    pse_kind=None,
    pse_type=None,
    pse_b=None,
    keep_prob=1.0,
    seed=0,
    pre_tokens=None,
    next_tokens=None,
    prefix=None,
    scale=None,
    inner_precise=0,
    with_mask=True,
    mask_form=None,
    mask_extra=0.0,
    q_start_idx=None,
    kv_start_idx=None,
    explicit_drop_mask=False,
    dropout_seed=None,
    dropout_offset=0,
    value_scale=1.0,
) -> dict:
    """Random valid inputs for one FlashAttentionScore call, as ``fa_forward`` keyword arguments.

    Args:
        layout: BSH | SBH | BSND | BNSD | TND.
        sparse_mode: 0..6 (non-TND) or 0,1,2,3,4,6,7,8 (TND).
        dtype: "float16" | "bfloat16" | "float32" ("float64": float64 arrays, for
            ``precision="float64"`` finite differences).
        B, N1, N2 (default N1), S1, S2 (default S1), D, Dv (default D): sizes (non-TND; for TND
            B/S1/S2 come from ``tnd_q``/``tnd_kv``).
        tnd_q, tnd_kv: TND per-batch lengths (NOT cumulative; default ``[S1]*B`` / ``[S2]*B``);
            ``tnd_pad_q``/``tnd_pad_kv`` add trailing rows to T1/T2 that no batch uses.
        pse_kind: None | "full" (random ``(pse_b, N1, S1, S2)``) | "row" (``(pse_b, N1, 1, S2)``) |
            "alibi" (full MindSpeed ALiBi ``(1, N1, S1, S2)``) | "alibi_compressed"
            (``(1, N1, 1024, S2)``; needs a causal mode and S1 == S2 > 1024, or TND with S1b == S2b) |
            "slopes_bn" ``(B, N1)`` / "slopes_n" ``(N1,)`` float32 slopes (pse_type 2 or 3).
        pse_type: default 1 for external pse kinds, 2 for slopes.
        pse_b: first dim of an external pse (1 or B; default B for "full"/"row", 1 for ALiBi).
        keep_prob: < 1 adds dropout; ``explicit_drop_mask=True`` passes random packed bits
            (MindSpore forms), else ``seed=dropout_seed`` (default ``seed``) / ``offset`` are passed.
        pre_tokens, next_tokens: default: chosen at random inside the Ascend checks (modes 0/4/7/8),
            INT_MAX (or next=0 for mode 2) otherwise.
        prefix: modes 5/6 (default random valid per batch).
        with_mask: False passes no atten_mask (then nothing is masked whatever the mode).
        mask_form: full-mask form for modes 0/1/5: "SS" | "11SS" | "B1SS" | "BNSS" (TND: "SS" | "TT").
            Default "SS" (mode 5: "B1SS").
        mask_extra: probability of additionally discarding each kept score (modes 0/1/5: still a
            consistent mask).
        scale: default 1/sqrt(D).
        seed: seeds every random choice.
    """
    rng = np.random.default_rng(seed)
    layout = layout.upper()
    tnd = layout == "TND"
    mode = int(sparse_mode)
    if mode not in SPARSE_MODES["tnd" if tnd else "non_tnd"]:
        _fail("sparse_mode", f"sparse_mode {mode} not valid for layout {layout}")
    N2 = N1 if N2 is None else N2
    Dv = D if Dv is None else Dv
    S2 = S1 if S2 is None else S2
    if tnd:
        sq = list(tnd_q) if tnd_q is not None else [S1] * B
        skv = list(tnd_kv) if tnd_kv is not None else [S2] * B
        if len(sq) != len(skv):
            _fail("tnd_lengths", "tnd_q and tnd_kv must have the same length")
        B = len(sq)
        S1, S2 = max(sq), max(skv)
        T1, T2 = sum(sq) + tnd_pad_q, sum(skv) + tnd_pad_kv
    else:
        sq, skv = [S1] * B, [S2] * B
    nzb = [b for b in range(B) if sq[b] != 0]
    band_b = (nzb[-1] if mode == 7 else nzb[0]) if (tnd and mode in (7, 8) and nzb) else -1
    pre, nxt = _pick_tokens(rng, layout, mode, S1, S2, sq, skv, band_b, pre_tokens, next_tokens)

    # --- q, k, v ----------------------------------------------------------------------------------------
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    if tnd:
        q, k, v = f(T1, N1, D), f(T2, N2, D), f(T2, N2, Dv) * value_scale
    else:
        q = from_bnsd(f(B, N1, S1, D), layout)
        k = from_bnsd(f(B, N2, S2, D), layout)
        v = from_bnsd(f(B, N2, S2, Dv) * value_scale, layout)
    case = dict(
        query=cast(q, dtype),
        key=cast(k, dtype),
        value=cast(v, dtype),
        head_num=N1,
        input_layout=layout,
        scale=float(1.0 / np.sqrt(D)) if scale is None else float(scale),
        sparse_mode=mode,
        pre_tokens=pre,
        next_tokens=nxt,
    )
    if inner_precise:
        case["inner_precise"] = int(inner_precise)
    if tnd:
        case["actual_seq_qlen"] = _cum(sq)
        case["actual_seq_kvlen"] = _cum(skv)

    # --- prefix -----------------------------------------------------------------------------------------
    if mode in (5, 6):
        if prefix is None:
            prefix = []
            for b in range(B):
                lo = max(skv[b] - sq[b], 0)  # S1 > S2: [0, S2]; S1 <= S2: [S2 - S1, S2]
                prefix.append(int(rng.integers(lo, skv[b] + 1)))
        case["prefix"] = [int(x) for x in prefix]

    # --- atten_mask -------------------------------------------------------------------------------------
    if with_mask:
        if mode in (2, 3, 4, 7, 8):
            case["atten_mask"] = compressed_mask()
        elif mode == 6:
            case["atten_mask"] = compressed_prefix_mask()
        else:
            form = mask_form or ("B1SS" if mode == 5 else "SS")
            if tnd:
                if form not in ("SS", "TT"):
                    _fail("mask_form", f"TND mask_form must be SS or TT, got {form}")
                if form == "SS":
                    keep = _band_keep(mode, S1, S2, pre, nxt, 0, True, False, S1, S2)
                    keep = keep & (rng.random((S1, S2)) >= mask_extra)
                    m = ~keep
                else:
                    m = rng.random((T1, T2)) < mask_extra
                    if mode == 0:
                        oq, ok = np.concatenate([[0], np.cumsum(sq)]), np.concatenate([[0], np.cumsum(skv)])
                        for b in range(B):
                            kb = _band_keep(0, sq[b], skv[b], pre, nxt, 0, True, False, S1, S2)
                            m[oq[b] : oq[b] + sq[b], ok[b] : ok[b] + skv[b]] |= ~kb
            else:
                nb = {"SS": None, "11SS": (1, 1), "B1SS": (B, 1), "BNSS": (B, N1)}
                if form not in nb:
                    _fail("mask_form", f"mask_form must be one of {list(nb)}, got {form}")
                if mode == 5 and form == "SS" and B != 1:
                    _fail("mask_form", "sparse_mode 5 with B > 1 needs a B1SS or BNSS mask (per-batch prefix)")
                lead = nb[form] or (1, 1)
                m = np.zeros(lead + (S1, S2), dtype=bool)
                for b in range(lead[0]):
                    pfx = case["prefix"][b] if mode == 5 else 0
                    keep = _band_keep(mode, S1, S2, pre, nxt, pfx, False, False, S1, S2)
                    for h in range(lead[1]):
                        m[b, h] = ~(keep & (rng.random((S1, S2)) >= mask_extra))
                if form == "SS":
                    m = m[0, 0]
            case["atten_mask"] = m

    # --- pse ----------------------------------------------------------------------------------------------
    if pse_kind is not None:
        if pse_kind not in PSE_KINDS:
            _fail("pse_kind", f"pse_kind must be one of {PSE_KINDS}, got {pse_kind!r}")
        slopes = alibi_slopes(N1)
        if pse_kind in ("slopes_bn", "slopes_n"):
            pt = 2 if pse_type is None else pse_type
            if pt not in (2, 3):
                _fail("pse_type", f"slopes need pse_type 2 or 3, got {pt}")
            sl = (
                (slopes[None] * rng.uniform(0.5, 2.0, (B, 1))).astype(np.float32) if pse_kind == "slopes_bn" else slopes
            )
            case["pse"] = sl.astype(np.float32)
            if q_start_idx is not None:
                case["q_start_idx"] = [int(q_start_idx)]
            if kv_start_idx is not None:
                case["kv_start_idx"] = [int(kv_start_idx)]
        else:
            pt = 1 if pse_type is None else pse_type
            if tnd and pse_kind != "alibi_compressed":
                _fail("pse_kind", f"TND accepts only the compressed ALiBi external pse, got {pse_kind!r}")
            if pt not in (0, 1):
                _fail("pse_type", f"an external pse needs pse_type 0 or 1, got {pt}")
            if pse_kind == "full":
                pb = B if pse_b is None else pse_b
                p = f(pb, N1, S1, S2)
            elif pse_kind == "row":
                pb = B if pse_b is None else pse_b
                p = f(pb, N1, 1, S2)
            elif pse_kind == "alibi":
                p = alibi_bias_full(slopes, S1, S2)[None]
            else:
                if not tnd and not (S1 == S2 and S1 > 1024):
                    _fail("alibi_compressed", f"non-TND compressed ALiBi needs S1 == S2 > 1024, got {S1}, {S2}")
                p = alibi_compressed(slopes, S2)[None]
            case["pse"] = cast(p, dtype)
        case["pse_type"] = int(pt)

    # --- dropout --------------------------------------------------------------------------------------------
    if keep_prob < 1.0:
        case["keep_prob"] = float(keep_prob)
        if explicit_drop_mask:
            n = N1 * sum(a * c for a, c in zip(sq, skv))
            bits = (rng.random(n) < keep_prob).astype(np.uint8)
            packed = pack_bits(bits)
            if not tnd and S2 % 8 == 0:
                packed = packed.reshape(B, N1, S1, S2 // 8)
            case["drop_mask"] = packed
        else:
            case["seed"] = int(seed if dropout_seed is None else dropout_seed)
            case["offset"] = int(dropout_offset)
    return case


def split_case(case: dict):
    """``(args, kwargs)`` with the five positional arguments of fa_forward split off."""
    kw = dict(case)
    args = tuple(kw.pop(n) for n in ("query", "key", "value", "head_num", "input_layout"))
    return args, kw


def make_dy(case: dict, seed: int = 1, out=None) -> np.ndarray:
    """Random ``dy`` with the shape of attention_out and the dtype of query."""
    q, v = case["query"], case["value"]
    rng = np.random.default_rng(seed)
    layout = case["input_layout"].upper()
    if layout in ("BSH", "SBH"):
        d = q.shape[2] // case["head_num"]
        N2 = case["key"].shape[2] // d
        Dv = v.shape[2] // N2
        shape = q.shape[:2] + (case["head_num"] * Dv,)
    else:
        shape = q.shape[:-1] + (v.shape[-1],)
    return cast(rng.standard_normal(shape).astype(np.float32), q.dtype)


def grad_kwargs(case: dict, fwd) -> dict:
    """fa_grad keyword arguments (everything of ``case`` plus the stored forward outputs)."""
    kw = dict(case)
    kw.update(attention_out=fwd[0], softmax_max=fwd[1], softmax_sum=fwd[2])
    return kw


def random_config(
    seed: int,
    *,
    layouts=("BSH", "SBH", "BSND", "BNSD", "TND"),
    dtypes=("float16", "bfloat16", "float32"),
    max_b: int = 3,
    max_s: int = 12,
    max_d: int = 8,
    dropout: bool = True,
    pse: bool = True,
) -> dict:
    """A random *valid* configuration: keyword arguments for :func:`make_case` (also usable as a
    hypothesis strategy via ``st.integers().map(random_config)``). Covers layouts, every sparse mode,
    GQA, Dv < D, TND lengths with empty batches and padding, pse kinds / types (no compressed
    ALiBi: it needs S > 1024), dropout with generated or explicit bits, inner_precise 2."""
    rng = np.random.default_rng(seed)
    layout = str(rng.choice(layouts))
    tnd = layout == "TND"
    mode = int(rng.choice(SPARSE_MODES["tnd" if tnd else "non_tnd"]))
    dtype = str(rng.choice(dtypes))
    N2 = int(rng.integers(1, 3))
    N1 = N2 * int(rng.choice([1, 2, 3]))
    D = int(rng.integers(1, max_d + 1))
    Dv = int(rng.integers(1, D + 1))
    cfg = dict(layout=layout, sparse_mode=mode, dtype=dtype, N1=N1, N2=N2, D=D, Dv=Dv, seed=seed)
    pse_kinds = [None]
    if tnd:
        B = int(rng.integers(1, max_b + 1))
        sq, skv = [], []
        for _ in range(B):
            s1 = int(rng.integers(0, max_s + 1)) if rng.random() < 0.2 else int(rng.integers(1, max_s + 1))
            if mode in (3, 7):
                s2 = int(rng.integers(max(s1, 1), max(s1, 1) + 4))
            elif mode in (1, 2) and rng.random() < 0.15:
                s2 = 0
            else:
                s2 = int(rng.integers(1, max_s + 1))
            sq.append(s1)
            skv.append(s2)
        if not any(sq):
            sq[0] = 1
        cfg.update(tnd_q=sq, tnd_kv=skv, tnd_pad_q=int(rng.integers(0, 3)), tnd_pad_kv=int(rng.integers(0, 3)))
        if pse and mode not in (7,) and rng.random() < 0.3:
            # inner ALiBi; mode 8 additionally needs S1b == S2b for b > 0 and S1_0 - S2_0 + q0 - k0 == 0
            if mode == 8:
                skv = list(sq)
                skv[0] = sq[0] if sq[0] else 1
                cfg["tnd_kv"] = skv
                qs = int(rng.integers(0, 4))
                cfg.update(q_start_idx=qs, kv_start_idx=qs + sq[0] - skv[0])
            pse_kinds = ["slopes_bn", "slopes_n"]
    else:
        B = int(rng.integers(1, max_b + 1))
        S1 = int(rng.integers(1, max_s + 1))
        S2 = int(rng.integers(1, max_s + 1))
        if pse and rng.random() < 0.5:
            pse_kinds = ["full", "row", "alibi", "slopes_bn", "slopes_n"]
            if rng.random() < 0.4:
                S2 = S1
        if S1 != S2:
            pse_kinds = [k for k in pse_kinds if k is None or not k.startswith("slopes")] or [None]
        cfg.update(B=B, S1=S1, S2=S2)
        if mode in (0, 1, 5):
            forms = ["SS", "11SS", "B1SS", "BNSS"] if mode != 5 or B == 1 else ["B1SS", "BNSS"]
            cfg["mask_form"] = str(rng.choice(forms))
    if mode in (0, 1, 5):
        cfg["mask_extra"] = float(rng.choice([0.0, 0.0, 0.2, 0.5]))
    kind = pse_kinds[int(rng.integers(len(pse_kinds)))]
    if kind is not None:
        cfg["pse_kind"] = kind
        cfg["pse_type"] = int(rng.choice([2, 3])) if kind.startswith("slopes") else int(rng.choice([0, 1]))
        if kind.startswith("slopes") and not tnd and rng.random() < 0.5:
            cfg.update(q_start_idx=int(rng.integers(0, 5)), kv_start_idx=int(rng.integers(0, 5)))
    if dropout and rng.random() < 0.3:
        cfg["keep_prob"] = float(rng.choice([0.5, 0.8, 0.9]))
        cfg["explicit_drop_mask"] = bool(rng.random() < 0.5)
    if rng.random() < 0.15:
        cfg["inner_precise"] = 2
    if rng.random() < 0.1:
        cfg["with_mask"] = False
    return cfg


def random_case(seed: int, **kw) -> dict:
    """``make_case(**random_config(seed, **kw))``."""
    cfg = random_config(seed, **kw)
    return make_case(cfg.pop("layout"), cfg.pop("sparse_mode"), cfg.pop("dtype"), **cfg)


# --------------------------------------------------------------------------------------------------
# DESIGN §6: how a low-precision result is compared with the float64 oracle

ULP = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
FLT_MAX = float(np.finfo(np.float32).max)


def to_f64(a) -> np.ndarray:
    """float64 copy of a numpy array (incl. bfloat16) or a MindSpore / torch tensor."""
    if hasattr(a, "asnumpy"):  # MindSpore: no numpy bf16/fp16 surprises on the way
        a = a.float().asnumpy() if str(a.dtype) in ("BFloat16", "Float16") else a.asnumpy()
    elif hasattr(a, "detach"):
        a = a.detach().float().numpy()
    a = np.asarray(a)
    return a if a.dtype == np.float64 else as_float32(a).astype(np.float64)


def assert_design_rule(name, got, ref_x, ref64, dtype, magnitude=None):
    """Assert ``max|got - ref64| <= 2 * max|ref_X - ref64| + eps`` for one output; returns the two errors.

    ``ref_X`` is the oracle run in the tested dtype (``precision="chip"``), ``ref64`` in float64.
    ``eps`` = a few ulp of the result's magnitude (8 ulp for float32 -- a blocked fp32 product's
    accumulation order -- one ulp for float16/bfloat16) ``* max|ref64|``, plus 1e-6 absolute: the
    oracle's products are ideally accumulated, so where ref_X happens to be exact (heavy
    cancellation, a true value of ~0) any real fp32 product still errs by ~1e-7. Entries that are
    +-FLT_MAX in ref64 (invalid-row markers, SPEC §6.1) must match exactly.

    ``magnitude`` adds two float32 ulps of it to ``eps``. A gradient is a cancellation --
    ``dS = P * (dP - D)``, both fp32 -- so its rounding error scales with ``dP`` and ``D``, not
    with the (possibly ~0) result: :func:`gradient_magnitudes` propagates them to dq / dk.
    """
    k, x, r = to_f64(got), to_f64(ref_x), to_f64(ref64)
    assert k.shape == r.shape, f"{name}: shape {k.shape} != {r.shape}"
    big = np.abs(r) >= FLT_MAX * 0.999
    if big.any():
        assert np.array_equal(k[big], r[big]), f"{name}: +-FLT_MAX entries differ"
        k, x, r = k[~big], x[~big], r[~big]
    if r.size == 0:
        return 0.0, 0.0
    assert np.all(np.isfinite(k)), f"{name}: non-finite values"
    ek, ex = float(np.max(np.abs(k - r))), float(np.max(np.abs(x - r)))
    eps = (8 * ULP["float32"] if dtype == "float32" else ULP[dtype]) * float(np.max(np.abs(r))) + 1e-6
    if magnitude:  # the cancelling intermediates are fp32 in every kernel
        eps += 2 * ULP["float32"] * magnitude
    assert ek <= 2 * ex + eps, f"{name}: err {ek:.3e} > 2*{ex:.3e} + {eps:.3e} (dtype {dtype})"
    return ek, ex


def _max_row_norm(x, width):
    """Largest L2 norm of one head's row of ``x`` (the last axis split into heads of ``width``)."""
    x = to_f64(x)
    return float(np.max(np.linalg.norm(x.reshape(-1, width), axis=-1))) if x.size else 0.0


def gradient_magnitudes(dy, query, key, value, head_num, input_layout, **kw):
    """``(dq, dk, dv)`` magnitudes for :func:`assert_design_rule`: first-order rounding-error scales.

    With ``B >= |dP_ij|, |D_i|`` (Cauchy-Schwarz: the largest head row norm of dy times that of
    value, over keep_prob when dropout scales dP), the error of ``dS_ij = P_ij (dP_ij - D_i)`` is a
    few ulp of ``2 B P_ij``, so ``dq_i = scale sum_j dS_ij k_j`` errs by ulps of
    ``scale * 2B * max|k|`` (rows of P sum to 1) and ``dk_j`` by ulps of
    ``scale * 2B * max|q| * max_j sum_i P_ij`` -- the column sums, read off the float64 oracle as
    ``dv`` of an all-ones ``dy`` without dropout. ``dv = P^T dy`` does not cancel: its own size.
    """
    layout = input_layout.upper()
    q, k, v = (to_f64(t) for t in (query, key, value))
    dv_width = to_f64(dy).shape[-1] // head_num if layout in ("BSH", "SBH") else v.shape[-1]
    bound = _max_row_norm(dy, dv_width) * _max_row_norm(v, dv_width)
    bound /= float(kw.get("keep_prob", 1.0))
    plain = {
        n: x
        for n, x in kw.items()
        if n not in ("keep_prob", "drop_mask", "attention_out", "softmax_max", "softmax_sum")
    }
    o64 = R.fa_forward(query, key, value, head_num, input_layout, **plain, precision="float64")
    ones = np.ones(o64[0].shape, np.float64)
    colsum = R.fa_grad(
        ones,
        query,
        key,
        value,
        head_num,
        input_layout,
        attention_out=o64[0],
        softmax_max=o64[1],
        softmax_sum=o64[2],
        **plain,
        precision="float64",
    )[2]
    scale = abs(float(kw.get("scale", 1.0)))
    return (
        scale * 2 * bound * float(np.max(np.abs(k), initial=0.0)),
        scale * 2 * bound * float(np.max(np.abs(q), initial=0.0)) * float(np.max(np.abs(colsum), initial=0.0)),
        None,
    )


def assert_gradients_design_rule(got, ref_x, ref64, dtype, dy, query, key, value, head_num, input_layout, **kw):
    """:func:`assert_design_rule` for ``(dq, dk, dv)`` with :func:`gradient_magnitudes`."""
    mags = gradient_magnitudes(dy, query, key, value, head_num, input_layout, **kw)
    for name, g, x, r, m in zip(("dq", "dk", "dv"), got, ref_x, ref64, mags):
        assert_design_rule(name, g, x, r, dtype, magnitude=m)
