"""Context-parallel attention over torch.distributed (issue 10, item 4): 2 and 4 gloo processes on loopback
(torch.multiprocessing), each computing its share with ms_fa.torch.context_parallel_attention; output,
softmax statistics and dq / dk / dv must equal the single-process op on the same global data (fp32, 1e-5
relative), for no mask, causal (contiguous and zigzag, all-gather-KV and ring), a sliding-window band, GQA and
packed TND sequences cut between ranks (sparse_mode 7; with ALiBi, mode 8)."""

from __future__ import annotations

import os
import re
import socket
import tempfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from ms_fa.semantics.context_parallel import plan_context_parallel  # noqa: E402
from ms_fa.semantics.plan import INT_MAX, canonical_full_mask  # noqa: E402


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_reference(case, q, k, v, dout):
    import ms_fa.torch  # noqa: F401

    ops = torch.ops.ms_fa
    q, k, v = (x.clone().requires_grad_(True) for x in (q, k, v))
    N = case["N1"]
    if case.get("tnd"):
        cum = list(np.cumsum(case["lens"]))
        m = torch.from_numpy(np.triu(np.ones((2048, 2048), bool), 1))
        kw = {}
        if case.get("alibi"):
            from ms_fa.semantics.pse import alibi_slopes

            kw.update(pse=torch.from_numpy(alibi_slopes(N)), pse_type=case["alibi"])
        res = ops.npu_fusion_attention_v2(
            q, k, v, N, "TND", atten_mask=m, sparse_mode=3, actual_seq_qlen=cum, actual_seq_kvlen=cum, scale=0.5, **kw
        )
    else:
        S = q.shape[1]
        kw = {}
        if case["mask"] != "none":
            pre, nxt = (INT_MAX, 0) if case["mask"] == "causal" else case["mask"][1:]
            kw = dict(atten_mask=torch.from_numpy(canonical_full_mask(0, S, S, pre, nxt)), sparse_mode=0)
        if case.get("alibi"):
            from ms_fa.semantics.pse import alibi_slopes

            kw.update(pse=torch.from_numpy(alibi_slopes(N)), pse_type=case["alibi"])
        res = ops.npu_fusion_attention_v2(q, k, v, N, "BSND", scale=0.5, **kw)
    res[0].backward(dout)
    smax, ssum = res[1], res[2]
    if case.get("tnd"):  # compare statistics in the true (t, h) order
        from ms_fa.semantics.layouts import softmax_to_tnd

        smax, ssum = (torch.from_numpy(softmax_to_tnd(x.numpy(), case["lens"])) for x in (smax, ssum))
    return res[0].detach(), smax, ssum, q.grad, k.grad, v.grad


def _worker(rank, W, case, port, errfile):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=W)
    try:
        from ms_fa.torch.context_parallel import context_parallel_attention

        g = torch.Generator().manual_seed(0)
        N1, N2, D = case["N1"], case["N2"], 8
        if case.get("tnd"):
            T = sum(case["lens"])
            plan = plan_context_parallel(
                W, seqlens_q=case["lens"], seqlens_kv=case["lens"], sparse_mode=3, alibi=case.get("alibi")
            )
            shape_q, shape_k, axis = (T, N1, D), (T, N2, D), 0
        else:
            S = case["S"]
            plan = plan_context_parallel(
                W,
                seq_len=S,
                mask=case["mask"],
                strategy=case["strategy"],
                scheme=case["scheme"],
                alibi=case.get("alibi"),
            )
            shape_q, shape_k, axis = (2, S, N1, D), (2, S, N2, D), 1
        q, k, v = (
            torch.randn(shape_q, generator=g),
            torch.randn(shape_k, generator=g),
            torch.randn(shape_k, generator=g),
        )
        dout = torch.randn(shape_q, generator=g)
        want = _global_reference(case, q, k, v, dout)
        rows = torch.from_numpy(np.concatenate([np.arange(a, b) for a, b in plan.ranks[rank].q] or [np.zeros(0, int)]))
        lq, lk, lv = (x.index_select(axis, rows).clone().requires_grad_(True) for x in (q, k, v))
        slopes = None
        if case.get("alibi"):
            from ms_fa.semantics.pse import alibi_slopes

            slopes = alibi_slopes(N1)
        out, smax, ssum = context_parallel_attention(lq, lk, lv, N1, plan, scale=0.5, alibi_slopes=slopes)
        out.backward(dout.index_select(axis, rows))
        st_axis = 0 if case.get("tnd") else 2
        got = (out.detach(), smax, ssum, lq.grad, lk.grad, lv.grad)
        ref = (want[0].index_select(axis, rows), want[1].index_select(st_axis, rows), want[2].index_select(st_axis, rows),
               want[3].index_select(axis, rows), want[4].index_select(axis, rows), want[5].index_select(axis, rows))  # fmt: skip
        for name, a, b in zip(("out", "softmax_max", "softmax_sum", "dq", "dk", "dv"), got, ref):
            tol = 1e-5 * max(1.0, float(b.abs().max()))
            err = float((a - b).abs().max()) if a.numel() else 0.0
            if not err <= tol:
                raise AssertionError(f"rank {rank} {name}: max err {err:.3e} > {tol:.3e} ({case})")
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the test with it
        with open(errfile, "a") as f:
            f.write(f"{type(e).__name__}: {e}\n")
        raise
    finally:
        dist.destroy_process_group()


CASES = [
    dict(S=29, N1=2, N2=2, mask="none", strategy="contiguous", scheme="allgather"),
    dict(S=32, N1=2, N2=2, mask="causal", strategy="zigzag", scheme="allgather"),
    dict(S=30, N1=4, N2=2, mask="causal", strategy="contiguous", scheme="ring"),  # GQA
    dict(S=32, N1=2, N2=1, mask="causal", strategy="zigzag", scheme="ring"),
    dict(S=27, N1=2, N2=2, mask=("band", 5, 2), strategy="contiguous", scheme="ring"),
    dict(S=27, N1=2, N2=2, mask=("band", 4, 0), strategy="zigzag", scheme="allgather"),
    dict(tnd=True, lens=[5, 9, 3, 7], N1=2, N2=2),
    dict(tnd=True, lens=[5, 9, 3, 7], N1=4, N2=2, alibi=2),  # packed + ALiBi + GQA: mode 8, square last blocks
    dict(S=32, N1=4, N2=2, mask="causal", strategy="zigzag", scheme="ring", alibi=2),  # ALiBi + GQA
    dict(S=30, N1=2, N2=2, mask=("band", 6, 1), strategy="contiguous", scheme="allgather", alibi=3),
]


@pytest.mark.parametrize("W", [2, 4])
@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: (
        f"tnd-alibi{c.get('alibi')}"
        if c.get("tnd")
        else f"{c['mask']}-{c['strategy']}-{c['scheme']}-N{c['N1']}/{c['N2']}-alibi{c.get('alibi')}"
    ),
)
def test_context_parallel_equals_one_process(W, case):
    with tempfile.NamedTemporaryFile("w+", suffix=".err", delete=False) as f:
        errfile = f.name
    try:
        mp.spawn(_worker, args=(W, case, _port(), errfile), nprocs=W, join=True)
    except Exception as e:  # noqa: BLE001
        pytest.fail(open(errfile).read() or str(e))
    finally:
        os.unlink(errfile)


@pytest.mark.parametrize(
    "change,rule,exc",
    [
        (dict(query=np.zeros((1, 4, 2, 8), np.float32)), "cp.args", TypeError),
        (dict(plan=None), "cp.args", TypeError),
        (dict(head_num=2.0), "head_num.type", TypeError),
        (dict(scale=None), "scale.type", TypeError),
    ],
)
def test_bad_arguments_are_refused_before_any_collective(change, rule, exc):
    """No process group exists here: the rules are checked before torch.distributed is touched."""
    from ms_fa.torch.context_parallel import context_parallel_attention

    x = torch.zeros(1, 4, 2, 8)
    kw = dict(query=x, key=x, value=x, head_num=2, plan=plan_context_parallel(2, seq_len=8), scale=0.5)
    kw.update(change)
    with pytest.raises(exc, match="^" + re.escape(f"[{rule}]")):
        context_parallel_attention(
            kw.pop("query"), kw.pop("key"), kw.pop("value"), kw.pop("head_num"), kw.pop("plan"), **kw
        )
