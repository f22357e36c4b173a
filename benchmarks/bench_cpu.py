"""CPU benchmark of ms_fa's blockwise kernel vs torch SDPA (CPU) vs a naive MindSpore composite.

One run prints a table and writes it to docs/benchmarks.md, with machine info and the DESIGN §5
targets marked met / not met:

    .venv/bin/python benchmarks/bench_cpu.py            # full run (B=1 N=8 S=4096 D=128; S sweep 1K..32K)
    .venv/bin/python benchmarks/bench_cpu.py --quick    # smoke test (small sizes, fewer repeats)

Every (implementation, case, pass) runs in its own subprocess so that peak memory is measured
cleanly: inputs are created, one warm-up run is done, the peak-RSS counter is reset
(``/proc/self/clear_refs`` = 5), the baseline VmRSS is read, the timed repeats run, and
"peak extra" = VmHWM - baseline (so it includes the outputs the call returns -- and for
forward+backward the gradients -- plus any workspace). "workspace" = peak extra minus the bytes of
the returned outputs. Times are medians of the repeats.

Implementations:
  * ms_fa     -- ms_fa.kernels.cpu.fa_forward / fa_grad (numpy in/out, all cores)
  * torch     -- torch.nn.functional.scaled_dot_product_attention, torch.set_num_threads(2); masks
                 other than causal are passed as dense boolean masks (is_causal for mode 2/3)
  * mindspore -- matmul -> softmax -> matmul with a dense additive mask, PYNATIVE, CPU, fp32 only
                 (MindSpore CPU has no bf16 BatchMatMul, DESIGN §8)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
THREADS = 2

# ------------------------------------------------------------------------------------------------
# worker side


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _masks_np(case, S):
    """Dense boolean mask (True = discard) of a case for torch / MindSpore, or None."""
    import numpy as np

    kind = case["kind"]
    i = np.arange(S)[:, None]
    j = np.arange(S)[None, :]
    if kind == "dense":
        return None
    if kind == "causal":
        return j > i
    if kind == "band":
        W = case["window"]
        return (j > i) | (i - j > W)
    if kind == "tnd":
        L = case["seq"]
        return (j > i) | (i // L != j // L)
    raise ValueError(kind)


def _inputs(case, dtype):
    import numpy as np

    rng = np.random.default_rng(0)
    B, N, S, D = 1, case["N"], case["S"], case["D"]
    if case["kind"] == "tnd":
        shape = (S, N, D)
    else:
        shape = (B, N, S, D)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(4)]  # q, k, v, dy


def _run_msfa(case, dtype, bwd):
    import ml_dtypes
    import numpy as np

    sys.path.insert(0, ROOT)
    from ms_fa.kernels import cpu as K

    K.load_library()
    npdt = np.float32 if dtype == "float32" else np.dtype(ml_dtypes.bfloat16)
    q, k, v, dy = (x.astype(npdt) for x in _inputs(case, dtype))
    S, N, D = case["S"], case["N"], case["D"]
    comp = np.triu(np.ones((2048, 2048), dtype=bool), 1)
    kw = dict(scale=1.0 / np.sqrt(D))
    layout = "BNSD"
    if case["kind"] == "causal":
        kw.update(sparse_mode=2, atten_mask=comp)
    elif case["kind"] == "band":
        kw.update(sparse_mode=4, atten_mask=comp, pre_tokens=case["window"], next_tokens=0)
    elif case["kind"] == "tnd":
        L = case["seq"]
        layout = "TND"
        cum = list(range(L, S + 1, L))
        kw.update(sparse_mode=3, atten_mask=comp, actual_seq_qlen=cum, actual_seq_kvlen=cum)

    def step():
        o = K.fa_forward(q, k, v, N, layout, **kw)
        res = [o[0], o[1], o[2]]
        if bwd:
            res += list(K.fa_grad(dy, q, k, v, N, layout, attention_out=o[0], softmax_max=o[1], softmax_sum=o[2], **kw))
        return res

    return step


def _run_torch(case, dtype, bwd):
    import torch

    torch.set_num_threads(THREADS)
    tdt = torch.float32 if dtype == "float32" else torch.bfloat16
    q, k, v, dy = (torch.from_numpy(x).to(tdt) for x in _inputs(case, dtype))
    S = case["S"]
    if case["kind"] == "tnd":  # (T, N, D) -> (1, N, T, D): block-diagonal causal dense mask
        q, k, v, dy = (x.permute(1, 0, 2).unsqueeze(0).contiguous() for x in (q, k, v, dy))
    m = _masks_np(case, S)
    causal = case["kind"] == "causal"
    mask = None if (m is None or causal) else torch.from_numpy(~m)  # torch: True = take part
    F = torch.nn.functional

    def step():
        if bwd:
            qq, kk, vv = (x.detach().requires_grad_(True) for x in (q, k, v))
            o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, is_causal=causal)
            o.backward(dy)
            return [o.detach(), qq.grad, kk.grad, vv.grad]
        with torch.no_grad():
            return [F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)]

    return step


def _run_mindspore(case, dtype, bwd):
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, ops

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    q, k, v, dy = _inputs(case, dtype)
    S, D = case["S"], case["D"]
    if case["kind"] == "tnd":
        q, k, v, dy = (np.ascontiguousarray(x.transpose(1, 0, 2)[None]) for x in (q, k, v, dy))
    q, k, v, dy = (Tensor(x) for x in (q, k, v, dy))
    m = _masks_np(case, S)
    add = None if m is None else Tensor(np.where(m, np.float32(-1e9), np.float32(0))[None, None])
    scale = float(1.0 / np.sqrt(D))

    def attn(q_, k_, v_):
        s = ops.matmul(q_, k_.swapaxes(-1, -2)) * scale
        if add is not None:
            s = s + add
        p = ops.softmax(s, -1)
        return ops.matmul(p, v_)

    def loss(q_, k_, v_):
        return (attn(q_, k_, v_) * dy).sum()

    grad = ms.grad(loss, grad_position=(0, 1, 2))

    def step():
        if bwd:
            o = attn(q, k, v)
            g = grad(q, k, v)
            return [o.asnumpy()] + [x.asnumpy() for x in g]
        return [attn(q, k, v).asnumpy()]

    return step


def worker(spec):
    import gc

    import numpy as np

    impl, case, dtype, bwd, reps = spec["impl"], spec["case"], spec["dtype"], spec["bwd"], spec["reps"]
    make = {"ms_fa": _run_msfa, "torch": _run_torch, "mindspore": _run_mindspore}[impl]
    # warm-up on a tiny problem of the same kind (library loads, thread pools), so that the memory
    # measured below is the call's own: the big run's first call is inside the measured window
    tiny = dict(
        case,
        S=256,
        N=2,
        D=16,
        **({"window": 32} if case["kind"] == "band" else {}),
        **({"seq": 64} if case["kind"] == "tnd" else {}),
    )
    warm = make(tiny, dtype, bwd)
    warm()
    del warm
    step = make(case, dtype, bwd)
    gc.collect()
    ok = _reset_peak()
    base = _status("VmRSS")
    r = step()  # first (untimed) call: page faults, allocator
    out_bytes = 0
    for x in r:
        out_bytes += int(np.asarray(x).nbytes) if not hasattr(x, "element_size") else x.numel() * x.element_size()
    del r
    times, cpus = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        r = step()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        del r
    peak = _status("VmHWM") if ok else _status("VmHWM")
    extra = max(peak - base, 0)
    return {
        "time": statistics.median(times),
        "times": times,
        "cpu": statistics.median(cpus),
        "cpus": cpus,
        "extra": extra,
        "out_bytes": out_bytes,
        "peak_reset": ok,
    }


# ------------------------------------------------------------------------------------------------
# driver side


def run_one(impl, case, dtype, bwd, reps, timeout, env_extra=None):
    spec = dict(impl=impl, case=case, dtype=dtype, bwd=bwd, reps=reps)
    env = dict(os.environ)
    for k, v in (env_extra or {}).items():  # None: unset the variable in the worker
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    env.setdefault("OMP_NUM_THREADS", str(THREADS))
    # large blocks always mmap'ed / unmapped (no dynamic threshold): RSS follows the live arrays
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    try:
        p = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout}s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    for line in p.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": "no result"}


def merge(rs):
    """Merge the results of several worker runs of one (impl, case, pass): medians over all repeats."""
    ok = [r for r in rs if "time" in r]
    if not ok:
        return rs[0]
    times = [t for r in ok for t in r["times"]]
    cpus = [c for r in ok for c in r["cpus"]]
    return {
        "time": statistics.median(times),
        "times": times,
        "cpu": statistics.median(cpus),
        "cpus": cpus,
        "extra": max(r["extra"] for r in ok),
        "out_bytes": ok[0]["out_bytes"],
        "runs": len(ok),
    }


def _mb(x):
    return x / 2**20


def machine_info():
    info = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cores"] = os.cpu_count()
    try:
        info["loadavg"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    sys.path.insert(0, ROOT)
    from ms_fa.kernels import library

    info["isa"] = library.isa()
    info["coretype"] = os.environ.get("OPENBLAS_CORETYPE", "unset")
    for mod in ("numpy", "torch", "mindspore"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = "n/a"
    return info


SGEMM = """
import time, statistics, numpy as np
n = {n}
a = np.random.default_rng(0).random((n, n), dtype=np.float32)
a @ a
ts = []
for _ in range(5):
    t0 = time.perf_counter(); a @ a; ts.append(time.perf_counter() - t0)
print(2 * n ** 3 / statistics.median(ts) / 1e9)
"""


def sgemm_gflops(env_extra, n=2048):
    """numpy's fp32 GEMM (n^3, 2 threads) in a process with the same environment as the ms_fa runs."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS))
    for k, v in env_extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    p = subprocess.run([sys.executable, "-c", SGEMM.format(n=n)], capture_output=True, text=True, env=env, timeout=300)
    return float(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None


def coretype_settings():
    """OPENBLAS_CORETYPE settings to run: the machine's own (as set, or unset), and the other of
    {unset, Haswell} -- Haswell is what the CI machines of issue 12 set. Benchmarks only: tests never
    change it."""
    own = os.environ.get("OPENBLAS_CORETYPE")
    return [
        ("as set" if own else "unset", {}),
        (("unset", {"OPENBLAS_CORETYPE": None}) if own else ("Haswell", {"OPENBLAS_CORETYPE": "Haswell"})),
    ]


def isa_matrix(case, reps, tmo, rounds):
    """ms_fa dense fwd / fwd+bwd, fp32 / bf16, every runnable ISA variant x OPENBLAS_CORETYPE setting, with
    numpy sgemm GFLOP/s and torch SDPA in the same environment."""
    sys.path.insert(0, ROOT)
    from ms_fa.kernels import library

    runnable = [
        n
        for n, (f, feats) in library.ISAS.items()
        if set(feats) <= library.cpu_flags() and os.path.exists(os.path.join(library._LIB_DIR, f))
    ]
    out = {"isas": runnable, "settings": [], "rows": {}}
    for label, env_ct in coretype_settings():
        out["settings"].append(label)
        out["rows"][(label, "sgemm")] = sgemm_gflops(env_ct)
        print(f"isa matrix: OPENBLAS_CORETYPE {label}: numpy sgemm {out['rows'][(label, 'sgemm')]} GFLOP/s", flush=True)
        for dtype in ("float32", "bfloat16"):
            for bwd in (False, True):
                got = {}
                for _ in range(rounds):
                    for isa in runnable + ["torch"]:
                        impl = "torch" if isa == "torch" else "ms_fa"
                        env = dict(env_ct) if impl == "torch" else dict(env_ct, MS_FA_ISA=isa)
                        got.setdefault(isa, []).append(run_one(impl, case, dtype, bwd, reps, tmo, env))
                for isa, rs in got.items():
                    r = merge(rs)
                    out["rows"][(label, isa, dtype, bwd)] = r
                    msg = f"{r['time']:.3f}s" if "time" in r else r["error"]
                    print(
                        f"isa matrix: {label:8s} {isa:9s} {dtype:9s} {'fwd+bwd' if bwd else 'fwd':8s} {msg}", flush=True
                    )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, fewer repeats (smoke test)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--no-write", action="store_true", help="print only, do not write docs/benchmarks.md")
    ap.add_argument("--note", default="", help="free text added to the report (e.g. machine load)")
    a = ap.parse_args()
    if a.worker:
        res = worker(json.loads(a.worker))
        print("RESULT " + json.dumps(res))
        return

    quick = a.quick
    S, N, D = (1024, 2, 64) if quick else (4096, 8, 128)
    W = 128 if quick else 512
    L = 128 if quick else 512
    reps_fast, reps_slow = (2, 1) if quick else (4, 2)
    rounds = 1 if quick else 2
    tmo = 300 if quick else 900
    cases = [
        ("no mask", dict(kind="dense", S=S, N=N, D=D)),
        ("causal (mode 2/3)", dict(kind="causal", S=S, N=N, D=D)),
        (f"mode 4 window {W}", dict(kind="band", window=W, S=S, N=N, D=D)),
        (f"TND {S // L}x{L} causal", dict(kind="tnd", seq=L, S=S, N=N, D=D)),
    ]
    t_start = time.time()
    info = machine_info()
    rows = []  # (dtype, case name, pass, impl, result)
    results = {}
    for dtype in ("float32", "bfloat16"):
        for name, case in cases:
            for bwd in (False, True):
                # ms_fa and torch alternate (rounds x [ms_fa, torch]) so that load from other jobs on a
                # shared machine hits both alike; medians over all repeats of all rounds
                got = {"ms_fa": [], "torch": []}
                for _ in range(rounds):
                    for impl in ("ms_fa", "torch"):
                        reps = reps_fast if impl == "ms_fa" else reps_slow
                        if impl == "torch" and dtype == "bfloat16" and bwd:
                            reps = 1
                        got[impl].append(run_one(impl, case, dtype, bwd, reps, tmo))
                for impl in ("ms_fa", "torch", "mindspore"):
                    if impl == "mindspore":
                        if dtype != "float32":
                            continue
                        r = run_one(impl, case, dtype, bwd, 2 if not bwd else 1, tmo)
                    else:
                        r = merge(got[impl])
                    key = (dtype, name, "fwd+bwd" if bwd else "fwd", impl)
                    results[key] = r
                    rows.append(key)
                    msg = (
                        f"{r['time']:.3f}s (cpu {r['cpu']:.3f}s)  extra {_mb(r['extra']):.0f} MB"
                        if "time" in r
                        else r["error"]
                    )
                    print(f"{dtype:9s} {name:22s} {'fwd+bwd' if bwd else 'fwd':8s} {impl:10s} {msg}", flush=True)
    # S sweep, mode 4 window W
    sweep_S = [1024, 2048, 4096] if quick else [1024, 2048, 4096, 8192, 16384, 32768]
    torch_max = 4096 if quick else 16384
    sweep = {}
    for s in sweep_S:
        case = dict(kind="band", window=W, S=s, N=N, D=D)
        for impl, bwd in (("ms_fa", False), ("ms_fa", True), ("torch", False)):
            if impl == "torch" and s > torch_max:
                continue
            reps = reps_fast if impl == "ms_fa" else (1 if s >= 8192 else reps_slow)
            r = run_one(impl, case, "float32", bwd, reps, tmo)
            sweep[(s, impl, bwd)] = r
            msg = (
                f"{r['time']:.3f}s (cpu {r['cpu']:.3f}s)  extra {_mb(r['extra']):.0f} MB" if "time" in r else r["error"]
            )
            print(f"sweep S={s:6d} {impl:6s} {'fwd+bwd' if bwd else 'fwd':8s} {msg}", flush=True)
    dense_case = cases[0][1]
    matrix = isa_matrix(dense_case, reps_fast if quick else 2, tmo, rounds)
    elapsed = time.time() - t_start
    md = report(
        results,
        rows,
        sweep,
        info,
        dict(
            S=S,
            N=N,
            D=D,
            W=W,
            L=L,
            quick=quick,
            elapsed=elapsed,
            note=a.note,
            sweep_S=sweep_S,
            cases=[c[0] for c in cases],
            matrix=matrix,
        ),
    )
    print(md)
    if not a.no_write:
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(md)
        print(f"written to {a.out}")


def _t(r):
    return r.get("time") if r and "time" in r else None


def _c(r):
    return r.get("cpu") if r and "cpu" in r else None


def report(res, rows, sweep, info, cfg):
    S, N, D, W = cfg["S"], cfg["N"], cfg["D"], cfg["W"]
    names = cfg["cases"]
    L = []
    L.append("# CPU benchmarks\n")
    L.append(
        "Generated by `benchmarks/bench_cpu.py`"
        + (" --quick" if cfg["quick"] else "")
        + f" in {cfg['elapsed'] / 60:.1f} min. Do not edit by hand.\n"
    )
    L.append("## Machine\n")
    L.append(f"- CPU: {info.get('cpu', '?')}, {info.get('cores')} cores; {info.get('platform')}")
    L.append(
        f"- python {info.get('python')}, numpy {info.get('numpy')}, torch {info.get('torch')} "
        f"(`torch.set_num_threads({THREADS})`), mindspore {info.get('mindspore')}"
    )
    L.append(
        f"- ms_fa kernel variant: {info.get('isa')} (the default here; `python -m ms_fa info`); "
        f"OPENBLAS_CORETYPE {info.get('coretype')} (the machine's setting, not changed for the main table)"
    )
    L.append(f"- load average at the start: {' '.join(info.get('loadavg', []))}")
    L.append(
        "- Timings are medians of the repeats; this 2-core machine is noisy, and targets near their "
        "threshold can flip between runs." + (f" {cfg['note']}" if cfg["note"] else "")
    )
    L.append("")
    L.append(f"## B=1 N={N} S={S} D={D}\n")
    L.append(
        "Median time of one call (forward, or forward + backward) and peak extra resident memory "
        "(VmHWM above the baseline after the inputs exist; includes the returned outputs / "
        "gradients; 'ws' = the part above the returned arrays). mindspore = naive "
        "matmul-softmax-matmul with a dense mask, PYNATIVE CPU, fp32 only.\n"
    )
    L.append(
        "'ms_fa cpu' is the process CPU time of the ms_fa call (both threads); on a loaded machine it is "
        "the more stable measure of the kernel's own work and is used for the ms_fa-internal ratios "
        "(causal vs dense, linear in S, TND). Comparisons with torch / MindSpore use wall time "
        "(their thread pools spin, so their CPU time is not comparable).\n"
    )
    L.append(
        "| dtype | case | pass | ms_fa time | ms_fa cpu | torch SDPA time | torch cpu | naive MindSpore time | "
        "ms_fa / torch (wall) | ms_fa / torch (cpu) | ms_fa extra MB (ws) | torch extra MB | MindSpore extra MB |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def fmt_t(r):
        return f"{r['time']:.3f} s" if r and "time" in r else ("n/a" if r is None else r.get("error", "err"))

    def fmt_c(r):
        return f"{r['cpu']:.3f} s" if r and "cpu" in r else "n/a"

    def fmt_m(r, ws=False):
        if not r or "time" not in r:
            return "n/a"
        s = f"{_mb(r['extra']):.0f}"
        if ws:
            s += f" ({_mb(max(r['extra'] - r['out_bytes'], 0)):.0f})"
        return s

    for dtype in ("float32", "bfloat16"):
        for name in names:
            for ps in ("fwd", "fwd+bwd"):
                a = res.get((dtype, name, ps, "ms_fa"))
                t = res.get((dtype, name, ps, "torch"))
                m = res.get((dtype, name, ps, "mindspore"))
                ratio = f"{_t(a) / _t(t):.2f}x" if _t(a) and _t(t) else "n/a"
                cratio = f"{_c(a) / _c(t):.2f}x" if _c(a) and _c(t) else "n/a"
                L.append(
                    f"| {dtype} | {name} | {ps} | {fmt_t(a)} | {fmt_c(a)} | {fmt_t(t)} | {fmt_c(t)} | {fmt_t(m)} | "
                    f"{ratio} | {cratio} | "
                    f"{fmt_m(a, True)} | {fmt_m(t)} | {fmt_m(m)} |"
                )
    L.append("")
    L.append(f"## S sweep, sparse_mode 4 window {W} (pre_tokens={W}, next_tokens=0), N={N} D={D} fp32\n")
    L.append("torch SDPA gets the equivalent dense boolean band mask (only where it fits in memory).\n")
    L.append(
        "| S | ms_fa fwd | ms_fa fwd cpu | ms_fa fwd+bwd | ms_fa fwd+bwd cpu | ms_fa fwd extra MB (ws) | "
        "ms_fa fwd+bwd extra MB (ws) | torch fwd (dense band mask) | torch extra MB |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|")
    for s in cfg["sweep_S"]:
        f, b, t = sweep.get((s, "ms_fa", False)), sweep.get((s, "ms_fa", True)), sweep.get((s, "torch", False))
        L.append(
            f"| {s} | {fmt_t(f)} | {fmt_c(f)} | {fmt_t(b)} | {fmt_c(b)} | {fmt_m(f, True)} | {fmt_m(b, True)} | "
            f"{fmt_t(t)} | {fmt_m(t)} |"
        )
    L.append("")
    L += isa_report(cfg["matrix"], cfg)
    L.append("")
    L += targets(res, sweep, cfg)
    L.append("")
    L += KERNEL_NOTES
    return "\n".join(L) + "\n"


def _flops(cfg, bwd):
    """Algorithmic flops of dense attention: forward QK^T + PV = 4 N S^2 D; backward recomputes QK^T and does
    dV, dP, dQ, dK = 10 N S^2 D more."""
    return (14 if bwd else 4) * cfg["N"] * cfg["S"] ** 2 * cfg["D"]


def isa_report(m, cfg):
    L = [f"## Kernel variants x OPENBLAS_CORETYPE (dense, B=1 N={cfg['N']} S={cfg['S']} D={cfg['D']})\n"]
    L.append(
        "Each kernel variant forced with `MS_FA_ISA` (`python -m ms_fa info` shows the one chosen by default), "
        "each OPENBLAS_CORETYPE setting applied to the worker processes of this benchmark only (tests and CI "
        "never change it). GFLOP/s = algorithmic flops (forward 4 N S^2 D, forward + backward 14 N S^2 D) / "
        "wall time; 'of sgemm' = that rate / numpy's fp32 GEMM (2048^3, 2 threads) in the same environment. "
        "torch SDPA in the same run and environment.\n"
    )
    L.append(
        "| OPENBLAS_CORETYPE | numpy sgemm GFLOP/s | variant | dtype | pass | time | GFLOP/s | of sgemm | torch SDPA time / this |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|")
    for label in m["settings"]:
        sg = m["rows"].get((label, "sgemm"))
        for dtype in ("float32", "bfloat16"):
            for bwd in (False, True):
                t = _t(m["rows"].get((label, "torch", dtype, bwd)))
                for isa in m["isas"] + ["torch"]:
                    r = m["rows"].get((label, isa, dtype, bwd))
                    tt = _t(r)
                    if tt is None:
                        continue
                    gf = _flops(cfg, bwd) / tt / 1e9
                    of = f"{gf / sg * 100:.0f}%" if sg else "n/a"
                    vs = "-" if isa == "torch" else (f"{t / tt:.2f}x" if t else "n/a")
                    name = "torch SDPA" if isa == "torch" else isa
                    L.append(
                        f"| {label} | {sg:.0f} | {name} | {dtype} | {'fwd+bwd' if bwd else 'fwd'} | {tt:.3f} s | "
                        f"{gf:.0f} | {of} | {vs} |"
                        if sg
                        else f"| {label} | n/a | {name} | {dtype} | {'fwd+bwd' if bwd else 'fwd'} | {tt:.3f} s | {gf:.0f} | {of} | {vs} |"
                    )
    return L


KERNEL_NOTES = """## Notes on the targets

- bf16: the default variant on a CPU with AVX512-BF16 (`avx512`) multiplies bf16 natively (vdpbf16ps,
  fp32 accumulation; P and dS rounded to bf16 before their GEMMs, as the chip does); the other variants
  compute bf16 in fp32 GEMMs on the same values. The bf16 GEMM runs at about twice the fp32 rate, which
  bounds the gain: see the variant table for what this machine's bf16 rate allows.
- Timings on a shared 2-core machine fluctuate by tens of percent between runs; 'cpu' columns (process
  CPU time) are steadier for the kernel's own ratios. A target near its threshold (e.g. causal
  fwd+bwd vs dense, fwd+bwd vs naive MindSpore) can flip between runs.
- Memory: the workspace of forward+backward (above the returned arrays) is the backward's fp32 dQ
  accumulator (G x S1 x D floats per thread) plus per-thread tiles; the forward's is O(tile).
- Other pages: per-call cost in MindSpore PYNATIVE ([benchmarks_overhead.md](benchmarks_overhead.md)),
  the torch frontend ([benchmarks_torch.md](benchmarks_torch.md)), context parallelism
  ([benchmarks_context_parallel.md](benchmarks_context_parallel.md)).

## How the CPU kernel gets there

- Blockwise ("flash") forward: work items (batch, query head, S1 block of 256 rows), shared by the
  kernel's worker threads (fa_pool.h: they sleep between calls, so they never take a core from
  MindSpore's runtime), heaviest first. Each item walks only the S2 range `fa_plan.h` gives it
  (`fa_s2_range`), in 256-column tiles classified by `fa_block_kind` (SKIP tiles are never touched, FULL
  tiles need no element masking). Online softmax per row (running max, un-dropped fp32 sum), P rounded
  to the input dtype with CAST_ROUND before P @ V. Never an S1 x S2 buffer: the workspace is O(tile) per
  thread.
- GEMMs: fp32 / fp16 inputs: OpenBLAS sgemm (scipy-openblas32), single-threaded inside the worker
  threads; fp32 inputs are read in place in every layout (the layout's row stride is the GEMM leading
  dimension); fp16 / bf16 tiles are converted to fp32 once per tile (F16C / bit shifts). bf16 on the
  avx512 variant: fa_gemm_bf16.h (operands packed in bf16 pairs, an 8 x 32 vdpbf16ps micro-kernel).
  Vectorized expf (AVX2 Cephes polynomial).
- Backward: P recomputed per tile from softmax_max/sum. Race-free schedule: when there are enough
  (batch, kv head) items, one thread owns a kv head's dK/dV and the dQ of its G query heads (5 GEMMs per
  tile); otherwise two passes (dK/dV over kv tiles, then dQ over query blocks; 7 GEMMs per tile).
- Tile sizes: `MS_FA_BLOCK_M/N` (forward, default 256 x 256), `MS_FA_BWD_BLOCK_M/N` (backward, default
  256 x 128); threads: `MS_FA_NUM_THREADS` (default: OMP_NUM_THREADS, else the CPUs the process may use);
  variant: `MS_FA_ISA`; `MS_FA_BF16_DOT=0` keeps bf16 on the fp32 GEMM.
""".splitlines()


def targets(res, sweep, cfg):
    names = cfg["cases"]
    dense, causal, band, tnd = names
    g = lambda dt, n, ps, impl: _t(res.get((dt, n, ps, impl)))  # noqa: E731
    gc_ = lambda dt, n, ps: _c(res.get((dt, n, ps, "ms_fa")))  # noqa: E731
    out = ["## DESIGN §5 targets\n", "| target | measured | status |", "|---|---|---|"]

    def row(target, measured, ok):
        st = "n/a" if ok is None else ("**met**" if ok else "**not met**")
        out.append(f"| {target} | {measured} | {st} |")

    def ratio(a, b):
        return a / b if a and b else None

    for ps in ("fwd", "fwd+bwd"):
        r = ratio(g("float32", dense, ps, "ms_fa"), g("float32", dense, ps, "torch"))
        rc = ratio(_c(res.get(("float32", dense, ps, "ms_fa"))), _c(res.get(("float32", dense, ps, "torch"))))
        row(
            f"dense {ps} <= 1.0x torch SDPA (fp32, wall)",
            (f"{r:.2f}x (cpu time: {rc:.2f}x)" if r and rc else "n/a"),
            None if r is None else r <= 1.0,
        )
    for ps in ("fwd", "fwd+bwd"):
        r = ratio(gc_("float32", causal, ps), gc_("float32", dense, ps))
        rw = ratio(g("float32", causal, ps, "ms_fa"), g("float32", dense, ps, "ms_fa"))
        row(
            f"causal {ps} <= 0.52x our dense (fp32, CPU time)",
            (f"{r:.2f}x (wall: {rw:.2f}x)" if r and rw else "n/a"),
            None if r is None else r <= 0.52,
        )
        r2 = ratio(g("float32", causal, ps, "ms_fa"), g("float32", causal, ps, "torch"))
        row(
            f"causal {ps} <= torch SDPA causal (fp32)", f"{r2:.2f}x" if r2 else "n/a", None if r2 is None else r2 <= 1.0
        )
    # linear in S
    Ss = cfg["sweep_S"]
    fw = [(s, _c(sweep.get((s, "ms_fa", False)))) for s in Ss]
    fw = [(s, t) for s, t in fw if t]
    if len(fw) >= 2:
        (s0, t0), (s1, t1) = fw[-2], fw[-1]
        growth = t1 / t0
        per = [f"{t / s * 1e6:.2f}" for s, t in fw]
        row(
            f"mode 4 window {cfg['W']}: time linear in S (fwd CPU time ratio S={s1}/S={s0}, ideal {s1 / s0:.0f})",
            f"{growth:.2f} (CPU us per query row, S={Ss[0]}..{s1}: {', '.join(per)})",
            growth <= 1.35 * s1 / s0,
        )
    common = [s for s in Ss if _t(sweep.get((s, "torch", False))) and _t(sweep.get((s, "ms_fa", False)))]
    if common:
        s = common[-1]
        sp = _t(sweep[(s, "torch", False)]) / _t(sweep[(s, "ms_fa", False)])
        row(f"mode 4 >= 10x faster than torch SDPA with a dense band mask (fwd, S={s})", f"{sp:.1f}x", sp >= 10)
    r = ratio(gc_("float32", tnd, "fwd"), gc_("float32", causal, "fwd"))
    nseq = cfg["S"] // cfg["L"]
    row(
        f"TND cost ~ sum S_b^2: {tnd} fwd vs causal S={cfg['S']} fwd, CPU time (ideal {1 / nseq:.3f}x)",
        f"{r:.3f}x" if r else "n/a",
        None if r is None else r <= 2.0 / nseq,
    )
    # issue 12: against the machine's own limits, in the machine's own OPENBLAS_CORETYPE setting
    m = cfg["matrix"]
    own = m["settings"][0]
    best = m["isas"][0] if m["isas"] else None
    sg = m["rows"].get((own, "sgemm"))
    for bwd, need in ((False, 0.85), (True, 0.75)):
        t = _t(m["rows"].get((own, best, "float32", bwd)))
        frac = _flops(cfg, bwd) / t / 1e9 / sg if t and sg else None
        row(
            f"fp32 dense {'fwd+bwd' if bwd else 'fwd'} >= {need:.0%} of numpy sgemm GFLOP/s "
            f"(variant {best}, OPENBLAS_CORETYPE {own})",
            f"{frac:.0%} ({_flops(cfg, bwd) / t / 1e9:.0f} of {sg:.0f} GFLOP/s)" if frac else "n/a",
            None if frac is None else frac >= need,
        )
    for bwd, need in ((False, 3.0), (True, 2.5)):
        r = ratio(_t(m["rows"].get((own, "torch", "bfloat16", bwd))), _t(m["rows"].get((own, best, "bfloat16", bwd))))
        row(
            f"bf16 dense {'fwd+bwd' if bwd else 'fwd'} >= {need}x faster than torch SDPA bf16 (variant {best})",
            f"{r:.2f}x" if r else "n/a",
            None if r is None else r >= need,
        )
    # memory
    for ps in ("fwd", "fwd+bwd"):
        a = res.get(("float32", dense, ps, "ms_fa"))
        if a and "time" in a:
            ws = _mb(max(a["extra"] - a["out_bytes"], 0))
            row(
                f"peak extra memory < 64 MB at S={cfg['S']} ({ps}, fp32 dense)",
                f"{_mb(a['extra']):.0f} MB incl. {_mb(a['out_bytes']):.0f} MB of returned arrays; "
                f"workspace {ws:.0f} MB",
                _mb(a["extra"]) < 64 if ps == "fwd" else ws < 64,
            )
    big = Ss[-1]
    for bwd in (False, True):
        a = sweep.get((big, "ms_fa", bwd))
        if a and "time" in a:
            ws = _mb(max(a["extra"] - a["out_bytes"], 0))
            row(
                f"peak extra memory < 256 MB at S={big} (mode 4, {'fwd+bwd' if bwd else 'fwd'})",
                f"{_mb(a['extra']):.0f} MB incl. {_mb(a['out_bytes']):.0f} MB of returned arrays; "
                f"workspace {ws:.0f} MB",
                (_mb(a["extra"]) < 256) if not bwd else ws < 256,
            )
    sp = ratio(g("float32", dense, "fwd+bwd", "mindspore"), g("float32", dense, "fwd+bwd", "ms_fa"))
    row(
        "fwd+bwd >= 5x faster than naive MindSpore (fp32 dense)",
        f"{sp:.1f}x" if sp else "n/a",
        None if sp is None else sp >= 5,
    )
    a, m = res.get(("float32", dense, "fwd+bwd", "ms_fa")), res.get(("float32", dense, "fwd+bwd", "mindspore"))
    if a and m and "time" in a and "time" in m:
        q = m["extra"] / max(a["extra"], 1)
        row(
            ">= 20x less extra memory than naive MindSpore (fp32 dense fwd+bwd)",
            f"{q:.1f}x ({_mb(a['extra']):.0f} MB vs {_mb(m['extra']):.0f} MB)",
            q >= 20,
        )
    out.append("")
    out.append(
        "Memory targets: the forward is judged on the whole peak extra memory; forward+backward on the "
        "workspace (peak extra minus the returned gradients, which any implementation must allocate: "
        "dq/dk/dv alone are 3 x S x N x D x 4 bytes)."
    )
    return out


if __name__ == "__main__":
    main()
