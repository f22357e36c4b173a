"""Migration adapters (ms_fa.compat): each translation, run through the spec oracle
(ms_fa.semantics.reference.fa_forward), must reproduce the source API computed independently:
torch SDPA on CPU, and from-the-docs numpy references for flash-attn, xFormers and TensorRT.
fp32 inputs, tolerance 1e-5 (DESIGN §6)."""

import math

import numpy as np
import pytest
import torch  # noqa: E402  (CI installs the torch extra: ./dev.sh)

from ms_fa.compat import (
    flash_attn_func_to_ascend,
    flash_attn_varlen_func_to_ascend,
    sdpa_to_ascend,
    tensorrt_to_ascend,
    xformers_to_ascend,
)
from ms_fa.compat import xformers as xf
from ms_fa.semantics.reference import fa_forward

TOL = dict(rtol=1e-5, atol=1e-5)


def run(args):
    out = fa_forward(**args)[0]
    return args.restore(np.asarray(out, dtype=np.float64))


def rnd(*shape, seed=0):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(np.float32)


def softmax_ref(scores, keep, v):
    """scores/keep (..., L, S) float64; rows without keys give 0 (flash-attn / torch >= 2.5 behaviour)."""
    s = np.where(keep, scores, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.where(keep, np.exp(s - m), 0)
    den = e.sum(-1, keepdims=True)
    p = np.where(den > 0, e / np.where(den > 0, den, 1), 0)
    return p @ v


# ------------------------------------------------------------------------------------------ SDPA


def sdpa_torch(q, k, v, **kw):
    t = lambda x: torch.from_numpy(np.asarray(x, np.float64))  # noqa: E731
    m = kw.pop("attn_mask", None)
    if m is not None:
        m = torch.from_numpy(m) if m.dtype == np.bool_ else t(m)
    return torch.nn.functional.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=m, **kw).numpy()


@pytest.mark.parametrize(
    "case",
    [
        "plain",
        "causal",
        "causal_rect",
        "bool_causal",
        "bool_random",
        "bool_batch",
        "bool_heads",
        "float",
        "float_neginf",
        "gqa",
        "scale",
        "3d",
        "bool_empty_row",
    ],
)
def test_sdpa(case):
    B, N, L, S, E = 2, 2, 5, 7, 8
    q, k, v = rnd(B, N, L, E), rnd(B, N, S, E, seed=1), rnd(B, N, S, E, seed=2)
    kw = {}
    rng = np.random.default_rng(3)
    if case == "causal":
        L = S
        q = rnd(B, N, L, E)
        kw = dict(is_causal=True)
    elif case == "causal_rect":
        kw = dict(is_causal=True)
    elif case == "bool_causal":
        kw = dict(attn_mask=np.tril(np.ones((L, S), bool), 2))
    elif case == "bool_random":
        m = rng.random((L, S)) < 0.6
        m[:, 0] = True
        kw = dict(attn_mask=m)
    elif case == "bool_batch":
        m = rng.random((B, 1, L, S)) < 0.6
        m[..., 1] = True
        kw = dict(attn_mask=m)
    elif case == "bool_heads":  # per-head mask -> BNSS full mask
        m = rng.random((1, N, L, S)) < 0.6
        m[..., 0] = True
        kw = dict(attn_mask=m)
    elif case == "float":
        kw = dict(attn_mask=rng.standard_normal((1, N, L, S)).astype(np.float32))
    elif case == "float_neginf":
        m = rng.standard_normal((L, S)).astype(np.float32)
        m[rng.random((L, S)) < 0.3] = -np.inf
        m[:, 2] = 0.5
        kw = dict(attn_mask=m)
    elif case == "gqa":
        q = rnd(B, 4, L, E)
        kw = dict(enable_gqa=True)
    elif case == "scale":
        kw = dict(scale=0.3, attn_mask=np.triu(np.ones((L, S), bool), -1))
    elif case == "3d":
        q, k, v = q[0], k[0], v[0]
        kw = dict(is_causal=True)
    elif case == "bool_empty_row":
        m = rng.random((L, S)) < 0.6
        m[2] = False
        kw = dict(attn_mask=m)
    want = sdpa_torch(q, k, v, **dict(kw))
    args = sdpa_to_ascend(q, k, v, **kw)
    np.testing.assert_allclose(run(args), want, **TOL)
    if case in ("causal", "causal_rect", "3d"):
        assert args["sparse_mode"] == 2 and args["atten_mask"].shape == (2048, 2048)
    if case == "bool_causal":
        assert args["sparse_mode"] == 0 or args["sparse_mode"] in (2, 3, 4)
    if case == "float":
        assert args["pse_type"] == 0 and args["sparse_mode"] == 0 and args["atten_mask"] is None


def test_sdpa_bool_mask_polarity_and_cheapest_mode():
    L = S = 6
    q, k, v = rnd(1, 1, L, 8), rnd(1, 1, S, 8, seed=1), rnd(1, 1, S, 8, seed=2)
    keep = np.tril(np.ones((L, S), bool))  # SDPA: True = take part
    args = sdpa_to_ascend(q, k, v, attn_mask=keep)
    assert args["sparse_mode"] == 2  # detected: top-left causal, compressed mask
    np.testing.assert_allclose(run(args), sdpa_torch(q, k, v, attn_mask=keep), **TOL)


@pytest.mark.parametrize("B", [2, 3])
def test_sdpa_one_mask_shared_over_the_batch(B):
    """Issue 13: one (L, S) bool mask for B > 1 that only mode 6 expresses (bottom-right causal plus a
    kept first column, L > S) used to compile to a one-entry prefix and fail with [prefix.length]."""
    L, S = 7, 4
    q, k, v = rnd(B, 2, L, 8), rnd(B, 2, S, 8, seed=1), rnd(B, 2, S, 8, seed=2)
    i, j = np.arange(L)[:, None], np.arange(S)[None, :]
    keep = (j <= i - (L - S)) | (j == 0)
    args = sdpa_to_ascend(q, k, v, attn_mask=keep)
    assert args["sparse_mode"] == 6 and list(args["prefix"]) == [1] * B
    np.testing.assert_allclose(run(args), sdpa_torch(q, k, v, attn_mask=keep), **TOL)


def test_sdpa_rejects_mask_and_causal():
    q = rnd(1, 1, 4, 8)
    with pytest.raises(ValueError, match=r"^\[sdpa\.mask_and_causal\].*both"):
        sdpa_to_ascend(q, q, q, attn_mask=np.ones((4, 4), bool), is_causal=True)


# ------------------------------------------------------------------------------------ flash-attn


def flash_ref(q, k, v, scale=None, causal=False, window=(-1, -1), alibi=None):
    """From the flash-attn docstring: BSHD, bottom-right causal/window, ALiBi -slope*|i+Sk-Sq-j|."""
    B, Sq, H, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    scale = 1 / math.sqrt(D) if scale is None else scale
    G = H // Hk
    i = np.arange(Sq)[:, None]
    j = np.arange(Sk)[None, :]
    keep = np.ones((Sq, Sk), bool)
    left, right = window
    if causal:
        right = 0
    if causal:
        keep &= j <= i + Sk - Sq
    if left >= 0:
        keep &= j >= i + Sk - Sq - left
    if right >= 0:
        keep &= j <= i + Sk - Sq + right
    out = np.zeros((B, Sq, H, v.shape[-1]))
    for b in range(B):
        for h in range(H):
            s = q[b, :, h].astype(np.float64) @ k[b, :, h // G].astype(np.float64).T * scale
            if alibi is not None:
                sl = alibi[b, h] if alibi.ndim == 2 else alibi[h]
                s = s - float(sl) * np.abs(i + Sk - Sq - j)
            out[b, :, h] = softmax_ref(s, keep, v[b, :, h // G].astype(np.float64))
    return out


@pytest.mark.parametrize(
    "Sq,Sk,kw",
    [
        (6, 6, dict()),
        (5, 8, dict(causal=True)),
        (8, 5, dict(causal=True)),
        (6, 9, dict(window_size=(2, 1))),
        (7, 7, dict(window_size=(3, 0))),
        (5, 9, dict(causal=True, window_size=(2, 4))),
        (9, 6, dict(window_size=(1, -1))),
        (6, 6, dict(alibi=(2,), causal=True)),
        (5, 7, dict(alibi=(2, 4))),
        (6, 6, dict(alibi=(2, 4), softmax_scale=0.2)),
    ],
)
def test_flash_attn_func(Sq, Sk, kw):
    B, H, Hk, D = 2, 4, 2, 8
    q, k, v = rnd(B, Sq, H, D), rnd(B, Sk, Hk, D, seed=1), rnd(B, Sk, Hk, D, seed=2)
    kw = dict(kw)
    alibi = None
    if "alibi" in kw:
        shape = kw.pop("alibi")
        alibi = (
            (np.abs(rnd(*shape, seed=5)) * 0.5).astype(np.float32)
            if len(shape) == 2
            else np.array([0.5, 0.25], np.float32)
        )
        if len(shape) == 1:
            alibi = np.array([0.5, 0.25, 0.125, 0.0625], np.float32)
        else:
            alibi = np.abs(rnd(B, H, seed=5)).astype(np.float32)
    want = flash_ref(
        q,
        k,
        v,
        scale=kw.get("softmax_scale"),
        causal=kw.get("causal", False),
        window=kw.get("window_size", (-1, -1)),
        alibi=alibi,
    )
    args = flash_attn_func_to_ascend(q, k, v, alibi_slopes=alibi, **kw)
    assert args["input_layout"] == "BSND"
    np.testing.assert_allclose(run(args), want, **TOL)
    if kw.get("causal") and "window_size" not in kw and Sq != Sk:
        assert args["sparse_mode"] == 3  # bottom-right, not mode 2
    if kw.get("window_size") == (3, 0):
        assert (args["sparse_mode"], args["pre_tokens"], args["next_tokens"]) == (4, 3, 0)


@pytest.mark.parametrize("kw", [dict(), dict(causal=True), dict(window_size=(1, 0)), dict(causal=True, alibi=True)])
def test_flash_attn_varlen(kw):
    sq, sk = [3, 5, 2], [3, 7, 4]
    if kw.get("alibi"):
        sk = [4, 7, 3]
        sq = [2, 5, 1]
    H, D = 2, 8
    cu_q = np.concatenate([[0], np.cumsum(sq)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(sk)]).astype(np.int32)
    q, k, v = rnd(cu_q[-1], H, D), rnd(cu_k[-1], H, D, seed=1), rnd(cu_k[-1], H, D, seed=2)
    kw = dict(kw)
    alibi = np.array([0.5, 0.25], np.float32) if kw.pop("alibi", False) else None
    if alibi is not None:  # Sk - Sq must be one value for all sequences (in-kernel ALiBi)
        sq, sk = [2, 5, 1], [4, 7, 3]
    want = np.zeros((cu_q[-1], H, D))
    for b in range(3):
        want[cu_q[b] : cu_q[b + 1]] = flash_ref(
            q[None, cu_q[b] : cu_q[b + 1]],
            k[None, cu_k[b] : cu_k[b + 1]],
            v[None, cu_k[b] : cu_k[b + 1]],
            causal=kw.get("causal", False),
            window=kw.get("window_size", (-1, -1)),
            alibi=alibi,
        )[0]
    args = flash_attn_varlen_func_to_ascend(q, k, v, cu_q, cu_k, max(sq), max(sk), alibi_slopes=alibi, **kw)
    assert args["input_layout"] == "TND"
    assert list(args["actual_seq_qlen"]) == list(cu_q[1:]) and list(args["actual_seq_kvlen"]) == list(cu_k[1:])
    np.testing.assert_allclose(run(args), want, **TOL)
    if kw.get("causal"):
        assert args["sparse_mode"] == 3


def test_flash_attn_unsupported():
    q = rnd(1, 4, 2, 8)
    with pytest.raises(ValueError, match=r"^\[flash_attn\.softcap\]"):
        flash_attn_func_to_ascend(q, q, q, softcap=30.0)


# --------------------------------------------------------------------------------------- xFormers


def xf_ref(q, k, v, keep=None, bias=None, scale=None):
    """BMHK; keep (M, N) bool or None; bias broadcastable to (B, H, M, N)."""
    B, M, H, K = q.shape
    scale = 1 / math.sqrt(K) if scale is None else scale
    out = np.zeros((B, M, H, v.shape[-1]))
    for b in range(B):
        for h in range(H):
            s = q[b, :, h].astype(np.float64) @ k[b, :, h].astype(np.float64).T * scale
            kp = np.ones_like(s, bool) if keep is None else keep
            if bias is not None:
                s = s + np.broadcast_to(bias, (B, H) + s.shape)[b, h]
            out[b, :, h] = softmax_ref(s, kp, v[b, :, h].astype(np.float64))
    return out


def causal_keep(M, N, bottom_right=False, window=None):
    """xFormers _materialize_causal_mask: tril(shift) then triu(shift - window + 1)."""
    shift = N - M if bottom_right else 0
    keep = np.tril(np.ones((M, N), bool), shift)
    if window is not None:
        keep &= np.triu(np.ones((M, N), bool), shift - window + 1)
    return keep


@pytest.mark.parametrize(
    "bias_name",
    [
        "none",
        "LowerTriangularMask",
        "LowerTriangularFromBottomRightMask",
        "LowerTriangularFromBottomRightLocalAttentionMask",
        "tensor",
        "LowerTriangularMaskWithTensorBias",
    ],
)
def test_xformers_dense(bias_name):
    B, M, N, H, K = 2, 5, 7, 2, 8
    q, k, v = rnd(B, M, H, K), rnd(B, N, H, K, seed=1), rnd(B, N, H, K, seed=2)
    keep, bias, ab = None, None, None
    if bias_name == "LowerTriangularMask":
        ab, keep = xf.LowerTriangularMask(), causal_keep(M, N)
    elif bias_name == "LowerTriangularFromBottomRightMask":
        ab, keep = xf.LowerTriangularFromBottomRightMask(), causal_keep(M, N, True)
    elif bias_name == "LowerTriangularFromBottomRightLocalAttentionMask":
        ab, keep = xf.LowerTriangularFromBottomRightLocalAttentionMask(3), causal_keep(M, N, True, 3)
    elif bias_name == "tensor":
        bias = rnd(B, H, M, N, seed=7)
        ab = bias
    elif bias_name == "LowerTriangularMaskWithTensorBias":
        bias = rnd(1, H, M, N, seed=8)
        ab, keep = xf.LowerTriangularMaskWithTensorBias(bias), causal_keep(M, N)
    args = xformers_to_ascend(q, k, v, attn_bias=ab)
    np.testing.assert_allclose(run(args), xf_ref(q, k, v, keep, bias), **TOL)
    if bias_name == "LowerTriangularFromBottomRightLocalAttentionMask":
        assert (args["sparse_mode"], args["pre_tokens"], args["next_tokens"]) == (4, 2, 0)


@pytest.mark.parametrize(
    "bias_cls,br,window",
    [
        ("BlockDiagonalMask", None, None),
        ("BlockDiagonalCausalMask", False, None),
        ("BlockDiagonalCausalFromBottomRightMask", True, None),
        ("BlockDiagonalCausalLocalAttentionMask", False, 2),
        ("BlockDiagonalCausalLocalAttentionFromBottomRightMask", True, 2),
    ],
)
def test_xformers_block_diagonal(bias_cls, br, window):
    sq, sk = [3, 4, 2], [3, 6, 5]
    H, K = 2, 8
    q, k, v = rnd(1, sum(sq), H, K), rnd(1, sum(sk), H, K, seed=1), rnd(1, sum(sk), H, K, seed=2)
    ab = getattr(xf, bias_cls).from_seqlens(sq, sk)
    if window is not None:
        ab._window_size = window
    want = np.zeros((1, sum(sq), H, K))
    oq = ok = 0
    for a, b in zip(sq, sk):
        keep = None if br is None else causal_keep(a, b, br, window)
        want[:, oq : oq + a] = xf_ref(q[:, oq : oq + a], k[:, ok : ok + b], v[:, ok : ok + b], keep)
        oq, ok = oq + a, ok + b
    args = xformers_to_ascend(q, k, v, attn_bias=ab)
    assert args["input_layout"] == "TND" and list(args["actual_seq_qlen"]) == [3, 7, 9]
    np.testing.assert_allclose(run(args), want, **TOL)
    if bias_cls == "BlockDiagonalCausalMask":
        assert args["sparse_mode"] == 2  # top-left per block (not 3)


def test_xformers_duck_typed_by_class_name():
    class LowerTriangularMask:  # e.g. the real xformers class
        pass

    q = rnd(1, 4, 1, 8)
    assert xformers_to_ascend(q, q, q, attn_bias=LowerTriangularMask())["sparse_mode"] == 2


# --------------------------------------------------------------------------------------- TensorRT


@pytest.mark.parametrize("case", ["bool", "float", "causal", "causal_bool", "gqa"])
def test_tensorrt(case):
    B, N, L, S, E = 1, 2, 4, 6, 8
    q, k, v = rnd(B, N, L, E), rnd(B, N, S, E, seed=1), rnd(B, N, S, E, seed=2)
    rng = np.random.default_rng(11)
    mask, causal, keep, bias = None, False, np.ones((L, S), bool), None
    if case in ("bool", "causal_bool"):
        mask = rng.random((1, 1, L, S)) < 0.7
        mask[..., 0] = True
        keep = mask[0, 0].copy()
    if case == "float":
        mask = rng.standard_normal((1, N, L, S)).astype(np.float32)
        bias = mask
    if case in ("causal", "causal_bool"):
        causal = True
        keep = keep & np.tril(np.ones((L, S), bool))  # our reading: top-left
    if case == "gqa":
        q = rnd(B, 4, L, E)
    Nq, G = q.shape[1], q.shape[1] // k.shape[1]
    want = np.zeros((B, Nq, L, E))
    for h in range(Nq):
        s = q[0, h].astype(np.float64) @ k[0, h // G].astype(np.float64).T  # no scale in IAttention
        if bias is not None:
            s = s + bias[0, h]
        want[0, h] = softmax_ref(s, keep, v[0, h // G].astype(np.float64))
    args = tensorrt_to_ascend(q, k, v, mask=mask, causal=causal)
    assert args["scale"] == 1.0
    np.testing.assert_allclose(run(args), want, **TOL)


def test_flash_attn_varlen_causal_more_queries_than_keys():
    """Bottom-right causal with S1b > S2b: TND mode 3 is rejected by Ascend; mode 6 with prefix 0 is
    exact, and rows without keys give 0 through inner_precise=2 (as flash-attn)."""
    sq, sk = [4, 3], [2, 5]
    cu_q, cu_k = np.concatenate([[0], np.cumsum(sq)]), np.concatenate([[0], np.cumsum(sk)])
    q, k, v = rnd(7, 2, 8), rnd(7, 2, 8, seed=1), rnd(7, 2, 8, seed=2)
    args = flash_attn_varlen_func_to_ascend(q, k, v, cu_q, cu_k, causal=True)
    assert (args["sparse_mode"], args["prefix"], args["inner_precise"]) == (6, [0, 2], 2)
    want = np.zeros((7, 2, 8))
    for b in range(2):
        want[cu_q[b] : cu_q[b + 1]] = flash_ref(
            q[None, cu_q[b] : cu_q[b + 1]], k[None, cu_k[b] : cu_k[b + 1]], v[None, cu_k[b] : cu_k[b + 1]], causal=True
        )[0]
    np.testing.assert_allclose(run(args), want, **TOL)


# ------------------------------------------------------------------------------- input validation


def _q4(B=1, N=2, L=4, E=8):
    return rnd(B, N, L, E)


_QB = rnd(1, 4, 2, 8)  # BSND / BMHK
_QT = rnd(4, 2, 8)  # TND


@pytest.mark.parametrize(
    "fn, kw, exc, rule",
    [
        # int / uint8 masks would otherwise be read as an additive +1 bias (nothing masked)
        (
            sdpa_to_ascend,
            dict(query=_q4(), key=_q4(), value=_q4(), attn_mask=np.eye(4, dtype=np.uint8)),
            TypeError,
            "sdpa.attn_mask.dtype",
        ),
        (
            tensorrt_to_ascend,
            dict(query=_q4(), key=_q4(), value=_q4(), mask=np.eye(4, dtype=np.int32)),
            TypeError,
            "tensorrt.mask.dtype",
        ),
        (
            xformers_to_ascend,
            dict(query=_QB, key=_QB, value=_QB, attn_bias=np.eye(4, dtype=np.uint8)),
            TypeError,
            "xformers.bias.dtype",
        ),
        (
            flash_attn_func_to_ascend,
            dict(q=_QB, k=_QB, v=_QB, window_size=(1.7, 0)),
            TypeError,
            "flash_attn.window_size",
        ),
        (flash_attn_func_to_ascend, dict(q=_QB, k=_QB, v=_QB, window_size=(1,)), ValueError, "flash_attn.window_size"),
        (flash_attn_func_to_ascend, dict(q=_QB, k=_QB, v=_QB, window_size=3), TypeError, "flash_attn.window_size"),
        (
            flash_attn_varlen_func_to_ascend,
            dict(q=_QT, k=_QT, v=_QT, cu_seqlens_q=[0, 1.5, 4.0], cu_seqlens_k=[0, 2, 4]),
            TypeError,
            "flash_attn.cu_seqlens",
        ),
        (
            flash_attn_varlen_func_to_ascend,
            dict(q=_QT, k=_QT, v=_QT, cu_seqlens_q=[1, 4], cu_seqlens_k=[1, 4]),
            ValueError,
            "flash_attn.cu_seqlens",
        ),
        (
            xformers_to_ascend,
            dict(query=_QB, key=_QB, value=_QB, attn_bias=xf.LowerTriangularFromBottomRightLocalAttentionMask(2.5)),
            TypeError,
            "xformers.window_size",
        ),
        (
            xformers_to_ascend,
            dict(
                query=_QB, key=_QB, value=_QB, attn_bias=xf.BlockDiagonalCausalLocalAttentionMask.from_seqlens([2, 2])
            ),
            TypeError,
            "xformers.window_size",
        ),
        (flash_attn_func_to_ascend, dict(q=_QT, k=_QT, v=_QT), ValueError, "compat.qkv.rank"),
        (
            flash_attn_varlen_func_to_ascend,
            dict(q=_QB, k=_QB, v=_QB, cu_seqlens_q=[0, 4], cu_seqlens_k=[0, 4]),
            ValueError,
            "compat.qkv.rank",
        ),
        (sdpa_to_ascend, dict(query=_q4(), key=rnd(4, 8), value=_q4()), ValueError, "compat.qkv.rank"),
        (tensorrt_to_ascend, dict(query=_QT, key=_QT, value=_QT), ValueError, "compat.qkv.rank"),
        (xformers_to_ascend, dict(query=rnd(8), key=rnd(8), value=rnd(8)), ValueError, "compat.qkv.rank"),
        (flash_attn_func_to_ascend, dict(q=_QB, k=rnd(1, 4, 0, 8), v=rnd(1, 4, 0, 8)), ValueError, "compat.qkv.heads"),
        (
            sdpa_to_ascend,
            dict(query=_q4(), key=_q4(N=0), value=_q4(N=0), enable_gqa=True),
            ValueError,
            "compat.qkv.heads",
        ),
        (tensorrt_to_ascend, dict(query=_q4(), key=_q4(N=0), value=_q4(N=0)), ValueError, "compat.qkv.heads"),
        (sdpa_to_ascend, dict(query=_q4(), key=_q4(), value=_q4(), scale="x"), TypeError, "scale.type"),
        (tensorrt_to_ascend, dict(query=_q4(), key=_q4(), value=_q4(), scale=None), TypeError, "scale.type"),
        (flash_attn_func_to_ascend, dict(q=_QB, k=_QB, v=_QB, softmax_scale="x"), TypeError, "scale.type"),
        (
            sdpa_to_ascend,
            dict(query=_q4(), key=_q4(), value=_q4(), attn_mask=np.ones((3, 3), bool)),
            ValueError,
            "compat.mask.shape",
        ),
        (
            sdpa_to_ascend,
            dict(query=_q4(), key=_q4(), value=_q4(), attn_mask=np.zeros((3, 3), np.float32)),
            ValueError,
            "compat.mask.shape",
        ),
        (sdpa_to_ascend, dict(query=_q4(), key=_q4(), value=_q4(), dropout_p=1.5), ValueError, "compat.dropout_p"),
        (sdpa_to_ascend, dict(query=_q4(), key=_q4(), value=_q4(), dropout_p="0.1"), TypeError, "compat.dropout_p"),
        (
            sdpa_to_ascend,
            dict(query=_q4(), key=_q4(), value=_q4(), attn_mask=np.ones((4, 4), bool), is_causal=True),
            ValueError,
            "sdpa.mask_and_causal",
        ),
        (sdpa_to_ascend, dict(query=_q4(), key=_q4(N=1), value=_q4(N=1)), ValueError, "sdpa.enable_gqa"),
        (
            sdpa_to_ascend,
            dict(query=_q4(), key=_q4(), value=_q4(), attn_mask=np.full((4, 4), np.inf, np.float32)),
            ValueError,
            "compat.mask.values",
        ),
        (
            sdpa_to_ascend,
            dict(
                query=_q4().astype(np.float16),
                key=_q4().astype(np.float16),
                value=_q4().astype(np.float16),
                attn_mask=np.full((4, 4), 0.1, np.float32),
            ),
            ValueError,
            "compat.mask.values",
        ),  # 0.1 is not a float16: the pse would differ
        (
            tensorrt_to_ascend,
            dict(query=_q4(), key=_q4(), value=_q4(), normalization_op="NONE"),
            ValueError,
            "tensorrt.normalization_op",
        ),
        (flash_attn_func_to_ascend, dict(q=_QB, k=_QB, v=_QB, softcap=30.0), ValueError, "flash_attn.softcap"),
        (
            flash_attn_func_to_ascend,
            dict(q=_QB, k=_QB, v=_QB, return_attn_probs=True),
            ValueError,
            "flash_attn.return_attn_probs",
        ),
        (
            flash_attn_varlen_func_to_ascend,
            dict(q=_QT, k=_QT, v=_QT, cu_seqlens_q=[0, 4], cu_seqlens_k=[0, 4], block_table=np.zeros((1, 1), np.int32)),
            ValueError,
            "flash_attn.block_table",
        ),
        (
            flash_attn_func_to_ascend,
            dict(q=_QB, k=_QB, v=_QB, alibi_slopes=np.ones(3, np.float32)),
            ValueError,
            "flash_attn.alibi_slopes",
        ),
        (
            flash_attn_varlen_func_to_ascend,
            dict(q=_QT, k=_QT, v=_QT, cu_seqlens_q=[0, 4], cu_seqlens_k=[0, 4], max_seqlen_q=3),
            ValueError,
            "flash_attn.max_seqlen",
        ),
        (
            flash_attn_varlen_func_to_ascend,
            dict(q=_QT, k=_QT, v=_QT, cu_seqlens_q=[0, 4], cu_seqlens_k=[0, 4], max_seqlen_k=2),
            ValueError,
            "flash_attn.max_seqlen",
        ),
        (
            flash_attn_varlen_func_to_ascend,
            dict(
                q=_QT, k=_QT, v=_QT, cu_seqlens_q=[0, 1, 4], cu_seqlens_k=[0, 2, 4], alibi_slopes=np.ones(2, np.float32)
            ),
            ValueError,
            "flash_attn.varlen_alibi",
        ),
        (
            xformers_to_ascend,
            dict(
                query=rnd(2, 4, 2, 8),
                key=rnd(2, 4, 2, 8),
                value=rnd(2, 4, 2, 8),
                attn_bias=xf.BlockDiagonalMask.from_seqlens([2, 2]),
            ),
            ValueError,
            "xformers.block_diagonal.batch",
        ),
        (
            xformers_to_ascend,
            dict(query=_QB, key=_QB, value=_QB, attn_bias=type("PagedBlockDiagonalPaddedKeysMask", (), {})()),
            ValueError,
            "xformers.bias.unsupported",
        ),
        (sdpa_to_ascend, dict(query=_q4(), key=_q4(), value=_q4(), is_causal="false"), TypeError, "compat.flag"),
        (sdpa_to_ascend, dict(query=_q4(), key=_q4(), value=_q4(), enable_gqa=1), TypeError, "compat.flag"),
        (tensorrt_to_ascend, dict(query=_q4(), key=_q4(), value=_q4(), causal="yes"), TypeError, "compat.flag"),
        (flash_attn_func_to_ascend, dict(q=_QB, k=_QB, v=_QB, causal="x"), TypeError, "compat.flag"),
        (
            flash_attn_varlen_func_to_ascend,
            dict(q=_QT, k=_QT, v=_QT, cu_seqlens_q=[0, 4], cu_seqlens_k=[0, 4], causal=None),
            TypeError,
            "compat.flag",
        ),
        # anything else: the spec's own rule, through ms_fa.semantics.args.normalize on the translated call
        (sdpa_to_ascend, dict(query=_q4(), key=_q4(E=4), value=_q4()), ValueError, "head_dim.qk"),
        (
            sdpa_to_ascend,
            dict(query=_q4().astype(np.float64), key=_q4().astype(np.float64), value=_q4().astype(np.float64)),
            TypeError,
            "qkv.dtype",
        ),
    ],
)
def test_input_validation_named_rules(fn, kw, exc, rule):
    with pytest.raises(exc, match=r"^\[" + rule.replace(".", r"\.") + r"\]"):
        fn(**kw)


def test_int_mask_is_not_an_additive_bias():
    """A 0/1 keep mask in an int dtype must raise, never translate to a +1 bias (nothing masked)."""
    q = _q4()
    for dt in (np.uint8, np.int8, np.int32, np.int64):
        with pytest.raises(TypeError, match=r"^\[sdpa\.attn_mask\.dtype\].*" + np.dtype(dt).name):
            sdpa_to_ascend(q, q, q, attn_mask=np.tril(np.ones((4, 4), dt)))
    # bool / float keep working
    sdpa_to_ascend(q, q, q, attn_mask=np.tril(np.ones((4, 4), bool)))
    sdpa_to_ascend(q, q, q, attn_mask=np.zeros((4, 4), np.float32))


def test_flash_attn_alibi_explicit_pse_matches_formula():
    """Sq != Sk explicit pse = -slope * |i + Sk - Sq - j| bit for bit (negative slopes too)."""
    sl = np.array([0.5, -0.25], np.float32)
    q, k = rnd(1, 3, 2, 8), rnd(1, 5, 2, 8, seed=1)
    args = flash_attn_func_to_ascend(q, k, k, alibi_slopes=sl)
    i, j = np.arange(3)[:, None], np.arange(5)[None, :]
    want = (np.float32(-1) * sl[None, :, None, None]) * np.abs(i + 5 - 3 - j).astype(np.float32)[None, None]
    assert args["pse_type"] == 0
    assert np.array_equal(args["pse"].view(np.uint32), want.view(np.uint32))


def test_head_dim_zero_names_the_rule():
    """Head dim 0 used to raise ZeroDivisionError while computing the default scale; every adapter now reaches the
    semantics' rule."""
    q = np.zeros((1, 2, 4, 0), np.float32)  # SDPA (N, H, L, E)
    t = q.transpose(0, 2, 1, 3)  # flash-attn / xFormers (B, S, H, D)
    for call in (
        lambda: sdpa_to_ascend(query=q, key=q, value=q),
        lambda: flash_attn_func_to_ascend(q=t, k=t, v=t),
        lambda: xformers_to_ascend(query=t, key=t, value=t),
    ):
        with pytest.raises(ValueError, match=r"^\[head_dim\.range\]"):
            call()
