"""``python -m ms_fa explain``: the effective mask, block plan and validation verdict of one call.

From speed_fusion_attention parameters::

    python -m ms_fa explain --sparse-mode 4 --s1 13 --s2 16 --pre 6 --next 4
    python -m ms_fa explain --sparse-mode 6 --s1 10 --s2 10 --prefix 4,5
    python -m ms_fa explain --sparse-mode 7 --tnd-q 3,5 --tnd-kv 3,9 --pre 6 --next -2
    python -m ms_fa explain --sparse-mode 4 --s1 8 --s2 8 --pre 2 --next 0 --no-mask

or from a mask expression (parsed safely: only the mask classes, numbers, lists and ``&``)::

    python -m ms_fa explain --mask "CausalMask('bottom_right') & SlidingWindow(4, 0)" --s1 16 --s2 16
    python -m ms_fa explain --mask "Packed([3, 5], [3, 9]) & CausalMask('bottom_right')"

Prints the call, the verdict of :func:`ms_fa.semantics.args.normalize` (``OK`` or ``INVALID`` with the
rule names), the effective mask per batch (``x`` = discarded, ``.`` = kept; large sizes in blocks)
and the block plan of :mod:`ms_fa.semantics.plan` (tiles visited / skipped, fraction of the dense FLOPs
computed). ``--png FILE`` also writes the picture. Without ``--no-mask`` the matching atten_mask is
passed: the compressed mask for modes 2/3/4/6/7/8, and for modes 0/1/5 the canonical full mask
consistent with pre/next/prefix (``--atten-mask FILE.npy`` to use your own). Exit status: 0 valid,
1 invalid call or inexpressible mask, 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from ms_fa.masks.expr import parse_mask
from ms_fa.semantics import plan as sm
from ms_fa.semantics.plan import canonical_full_mask
from ms_fa.semantics.rules import rule

__all__ = ["main", "explain", "parse_mask", "canonical_full_mask"]

INT_MAX = sm.INT_MAX
_GLYPH_TILE = {sm.BLOCK_SKIP: "-", sm.BLOCK_FULL: "#", sm.BLOCK_PARTIAL: "+"}


# ------------------------------------------------------------------------------------------------
# helpers


def _usage(name, msg):
    rule(name).fail(msg, ValueError)


def _int_list(s, rule="explain.int_list"):
    if s is None:
        return None
    try:
        return [int(x) for x in str(s).replace(" ", "").split(",") if x != ""]
    except ValueError:
        _usage(rule, f"expected comma-separated ints, got {s!r}")


#: the most scores explain materializes (S1 x S2 x batch); 2**28 booleans = 256 MiB
_MAX_CELLS = 1 << 28


def _check_cli(a):
    """Validate the command-line values up front (usage errors, exit status 2)."""
    for name in ("s1", "s2"):
        v = getattr(a, name)
        if v is not None and v < 0:
            _usage(f"explain.{name}", f"--{name} must be >= 0, got {v}")
    # explain draws the effective mask element by element: bound the work instead of failing in numpy
    cells = max(a.s1 or 0, 1) * max(a.s2 or 0, 1) * max(a.batch or 1, 1)
    if cells > _MAX_CELLS:
        _usage(
            "explain.size",
            f"--s1 x --s2 x --batch = {cells} scores is more than explain draws ({_MAX_CELLS}); "
            f"explain a smaller problem with the same structure",
        )
    if a.tnd_q is not None:  # TND: the packed T1 x T2 picture (cumulative ends: the last entries bound it)
        q = _int_list(a.tnd_q, "explain.tnd_q")
        kv = _int_list(a.tnd_kv, "explain.tnd_kv") if a.tnd_kv is not None else q
        cells = max(max(q, default=0), 1) * max(max(kv, default=0), 1)
        if cells > _MAX_CELLS:
            _usage(
                "explain.size",
                f"--tnd-q / --tnd-kv span {cells} scores, more than explain draws ({_MAX_CELLS}); "
                f"explain a smaller problem with the same structure",
            )
    if a.heads < 1:
        _usage("explain.heads", f"--heads must be >= 1, got {a.heads}")
    if a.batch is not None and a.batch < 1:
        _usage("explain.batch", f"--batch must be >= 1, got {a.batch}")
    if a.max_cells < 1:
        _usage("explain.max_cells", f"--max-cells must be >= 1, got {a.max_cells}")
    block = _int_list(a.block, "explain.block")
    if len(block) == 1:
        block = block * 2
    if len(block) != 2 or min(block) < 1:
        _usage("explain.block", f"--block must be one or two ints >= 1 (s1_block,s2_block), got {a.block!r}")
    if a.tnd_kv is not None and a.tnd_q is None:
        _usage("explain.tnd_kv", f"--tnd-kv {a.tnd_kv} needs --tnd-q (actual_seq_qlen)")
    if a.atten_mask is not None and not os.path.isfile(a.atten_mask):
        _usage("explain.atten_mask", f"--atten-mask file not found: {a.atten_mask!r}")
    if a.png is not None:
        d = os.path.dirname(os.path.abspath(a.png))
        if not os.path.isdir(d):
            _usage("explain.png", f"--png directory does not exist: {d!r} (for {a.png!r})")
    return tuple(block)


def _fmt_mask(am, mode):
    if am is None:
        return "None"
    shape = tuple(am.shape)
    if shape == (2048, 2048):
        return "triu(ones(2048,2048),1) (compressed)"
    if shape == (3072, 2048):
        return "prefix-compressed (3072,2048)"
    return f"full bool {shape}"


def _fmt_call(kw, layout, B, N, S1, S2):
    parts = [f"input_layout={layout!r}"]
    if layout != "TND":
        parts.append(f"B={B}, N1={N}, S1={S1}, S2={S2}")
    for k in ("sparse_mode", "pre_tokens", "next_tokens", "prefix", "actual_seq_qlen", "actual_seq_kvlen"):
        if k in kw and kw[k] is not None:
            parts.append(f"{k}={list(kw[k]) if isinstance(kw[k], (list, tuple)) else kw[k]}")
    parts.append(f"atten_mask={_fmt_mask(kw.get('atten_mask'), kw.get('sparse_mode'))}")
    return "speed_fusion_attention(" + ", ".join(parts) + ")"


def _plan_lines(band, S1b, S2b, bs1, bs2, max_cells):
    plan = sm.block_plan(band, S1b, S2b, bs1, bs2)
    n1 = -(-S1b // bs1) if S1b else 0
    n2 = -(-S2b // bs2) if S2b else 0
    total = n1 * n2
    kinds = plan[:, 4] if len(plan) else np.zeros(0, np.int64)
    full = int((kinds == sm.BLOCK_FULL).sum())
    part = int((kinds == sm.BLOCK_PARTIAL).sum())
    frac = sm.plan_flops_fraction(band, S1b, S2b, bs1, bs2)
    line = (
        f"block plan (s1_block={bs1}, s2_block={bs2}): {total} tiles, {full + part} computed "
        f"({full} full, {part} partial), {total - full - part} skipped; FLOPs computed: "
        f"{100.0 * frac:.1f}% of dense"
    )
    out = [line]
    if 0 < n1 <= 16 and 0 < n2 <= 16 and total > 1:
        grid = [["-"] * n2 for _ in range(n1)]
        for i0, _i1, j0, _j1, k in plan:
            grid[i0 // bs1][j0 // bs2] = _GLYPH_TILE[int(k)]
        out.append("tiles (# full, + partial, - skipped):")
        out += ["".join(r) for r in grid]
    work = (
        0
        if not len(plan)
        else int(((plan[:, 1] - plan[:, 0]) * (plan[:, 3] - plan[:, 2]))[kinds != sm.BLOCK_SKIP].sum())
    )
    return out, work


# ------------------------------------------------------------------------------------------------
# the explain core (also used by docs/gen_sparse_modes.py)


def explain(
    *,
    sparse_mode=0,
    S1=None,
    S2=None,
    pre_tokens=INT_MAX,
    next_tokens=INT_MAX,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    layout=None,
    batch=None,
    heads=1,
    no_mask=False,
    atten_mask=None,
    block=(128, 128),
    max_cells=64,
    png=None,
    note=None,
):
    """Explain one call; returns ``(text, ok)``. Arguments as speed_fusion_attention (``S1``/``S2``
    for non-TND layouts, the cumulative ``actual_seq_*`` lists for TND)."""
    from ms_fa.masks.compile import dummy_qkv
    from ms_fa.masks.render import render, write_png
    from ms_fa.semantics.args import normalize, seqlens_from_cumulative

    lines = []
    if note:
        lines.append(note)
    tnd = actual_seq_qlen is not None or (layout or "").upper() == "TND"
    layout = (layout or ("TND" if tnd else "BNSD")).upper()
    B = batch if batch is not None else (len(prefix) if prefix is not None else 1)
    T1 = T2 = None
    if tnd:
        aq, ak = list(actual_seq_qlen or []), list(actual_seq_kvlen or [])
        sq, sk = list(seqlens_from_cumulative(aq)), list(seqlens_from_cumulative(ak))
        T1, T2 = sum(sq), sum(sk)
        S1, S2 = (max(sq) if sq else 0), (max(sk) if sk else 0)
        B = len(aq)
    if S1 is None or S2 is None:
        raise ValueError(f"[explain.s1] --s1 and --s2 are required unless --tnd-q/--tnd-kv are given, got {S1}, {S2}")
    kw = dict(sparse_mode=sparse_mode, pre_tokens=pre_tokens, next_tokens=next_tokens)
    if prefix is not None:
        kw["prefix"] = list(prefix)
    if tnd:
        kw["actual_seq_qlen"], kw["actual_seq_kvlen"] = aq, ak
    if no_mask:
        am = None
    elif atten_mask is not None:
        am = atten_mask
    elif sparse_mode in (2, 3, 4, 7, 8):
        from ms_fa.semantics.plan import canonical_compressed_mask

        am = canonical_compressed_mask("causal")
    elif sparse_mode == 6:
        from ms_fa.semantics.plan import canonical_compressed_mask

        am = canonical_compressed_mask("prefix")
    elif sparse_mode in (0, 1, 5):
        am = canonical_full_mask(sparse_mode, S1, S2, pre_tokens, next_tokens, prefix, B)
    else:
        am = None
    kw["atten_mask"] = am
    lines.append("call: " + _fmt_call(kw, layout, B, heads, S1, S2))
    q, k, v = dummy_qkv(layout, B, S1, S2, T1, T2, heads)
    try:
        args = normalize(q, k, v, heads, layout, **kw)
    except (TypeError, ValueError) as e:
        lines.append("verdict: INVALID")
        lines.append(f"  {type(e).__name__}: {e}")
        return "\n".join(lines), False
    lines.append("verdict: OK (ms_fa.semantics.args.normalize accepts the call)")
    for w in args.warnings:
        lines.append(f"  warning: {w}")
    if am is None:
        lines.append("  note: no atten_mask => nothing is masked, whatever sparse_mode / pre / next say (SPEC §2.1-1)")
    if args.invalid_line:
        lines.append("  note: invalid-line mode is on (fully masked rows give out = 0; SPEC §6.1)")
    bs1, bs2 = block
    total_work, dense_pairs, kept_total = 0, 0, 0
    pictures = []
    for b in range(args.B):
        S1b, S2b = (args.seqlens_q[b], args.seqlens_kv[b]) if tnd else (args.S1, args.S2)
        band = sm.band_of(args, b)
        m = sm.effective_mask_for(args, b, 0, am) if S1b and S2b else np.ones((S1b, S2b), bool)
        pictures.append(m)
        kept_total += int((~m).sum())
        dense_pairs += S1b * S2b
        if not tnd and b > 0 and np.array_equal(m, pictures[0]) and b < args.B:
            if b == 1:
                lines.append("(the other batches have the same mask)")
            continue
        tag = "document" if tnd else "batch"
        lines.append(f"effective mask, {tag} {b}: S1={S1b} S2={S2b}  (x = discarded, . = kept)")
        if S1b and S2b:
            lines.append(render(m, max_cells=max_cells))
            pl, work = _plan_lines(band, S1b, S2b, bs1, bs2, max_cells)
            lines += pl
            total_work += work
        else:
            lines.append("(empty: nothing computed)")
    if tnd:
        full = np.ones((T1, T2), dtype=bool)
        oq = okv = 0
        for b, m in enumerate(pictures):
            full[oq : oq + m.shape[0], okv : okv + m.shape[1]] = m
            oq += m.shape[0]
            okv += m.shape[1]
        lines.append(f"whole TND matrix (T1={T1}, T2={T2}; outside the documents nothing is computed):")
        lines.append(render(full, max_cells=max_cells))
        if T1 and T2:
            lines.append(
                f"work: {100.0 * total_work / (T1 * T2):.1f}% of a dense T1 x T2 attention, "
                f"{100.0 * total_work / max(dense_pairs, 1):.1f}% of sum(S1b*S2b)"
            )
    else:
        lines.append(f"kept scores: {kept_total} of {dense_pairs} ({100.0 * kept_total / max(dense_pairs, 1):.1f}%)")
    if png:
        pic = full if tnd else pictures[0]
        write_png(pic, png, title=f"sparse_mode {sparse_mode}")
        lines.append(f"wrote {png}")
    return "\n".join(lines), True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ms_fa explain",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sparse-mode", type=int, default=0)
    p.add_argument("--s1", type=int)
    p.add_argument("--s2", type=int)
    p.add_argument("--pre", type=int, default=INT_MAX, help="pre_tokens (default 2147483647)")
    p.add_argument("--next", type=int, default=INT_MAX, help="next_tokens (default 2147483647)")
    p.add_argument("--prefix", help="prefix per batch, e.g. 4 or 4,5")
    p.add_argument("--tnd-q", help="actual_seq_qlen, cumulative without a leading 0, e.g. 3,5")
    p.add_argument("--tnd-kv", help="actual_seq_kvlen, cumulative without a leading 0, e.g. 3,9")
    p.add_argument("--layout", help="BSH | SBH | BSND | BNSD | TND (default BNSD, or TND with --tnd-q)")
    p.add_argument("--batch", type=int, help="B for non-TND layouts (default: len(prefix) or 1)")
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--no-mask", action="store_true", help="pass atten_mask=None (then nothing is masked)")
    p.add_argument("--atten-mask", help=".npy file with your atten_mask (True/1 = discard)")
    p.add_argument("--mask", help="mask expression, e.g. \"CausalMask('bottom_right') & SlidingWindow(4, 0)\"")
    p.add_argument("--allow-dense", action="store_true", help="with --mask: allow a full S1 x S2 atten_mask")
    p.add_argument("--block", default="128,128", help="s1_block,s2_block of the block plan (default 128,128)")
    p.add_argument("--max-cells", type=int, default=64, help="largest picture side before block downsampling")
    p.add_argument("--png", help="also write the picture to this PNG file")
    cp = p.add_argument_group("context parallel (each rank's share of the mask and its calls)")
    cp.add_argument("--cp-world", type=int, help="ranks; with --s1 (self-attention S) or --tnd-q / --tnd-kv")
    cp.add_argument("--cp-mask", default="causal", help="non-TND: none | causal | band (band: --pre / --next)")
    cp.add_argument("--cp-strategy", default="contiguous", help="contiguous | zigzag (non-TND)")
    cp.add_argument("--cp-scheme", default="allgather", help="allgather | ring (non-TND)")
    cp.add_argument("--cp-cuts", help="TND: first packed query token of ranks 1..W-1, e.g. 5")
    cp.add_argument("--cp-alibi", type=int, help="the global call's in-kernel ALiBi pse_type, 2 or 3")
    try:
        a = p.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        block = _check_cli(a)
        if a.cp_world is not None:
            return _main_cp(a)
        if a.mask:
            return _main_mask(a, block)
        try:
            am = np.load(a.atten_mask) if a.atten_mask else None
        except (OSError, ValueError) as e:
            _usage("explain.atten_mask", f"cannot load --atten-mask {a.atten_mask!r}: {e}")
        text, ok = explain(
            sparse_mode=a.sparse_mode,
            S1=a.s1,
            S2=a.s2,
            pre_tokens=a.pre,
            next_tokens=a.next,
            prefix=_int_list(a.prefix, "explain.prefix"),
            actual_seq_qlen=_int_list(a.tnd_q, "explain.tnd_q"),
            actual_seq_kvlen=_int_list(a.tnd_kv, "explain.tnd_kv"),
            layout=a.layout,
            batch=a.batch,
            heads=a.heads,
            no_mask=a.no_mask,
            atten_mask=am,
            block=block,
            max_cells=a.max_cells,
            png=a.png,
        )
    except ValueError as e:
        print(f"explain: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"explain: [explain.io] {e}", file=sys.stderr)
        return 2
    print(text)
    return 0 if ok else 1


def _main_cp(a) -> int:
    """``--cp-world``: the context-parallel plan (ms_fa.semantics.context_parallel), one picture per rank."""
    from ms_fa.semantics.context_parallel import plan_context_parallel, rank_pictures
    from ms_fa.semantics.layouts import seqlens_from_cumulative

    if a.tnd_q is not None:
        q = _int_list(a.tnd_q, "explain.tnd_q")
        kv = _int_list(a.tnd_kv, "explain.tnd_kv") if a.tnd_kv is not None else q
        plan = plan_context_parallel(
            a.cp_world,
            seqlens_q=list(seqlens_from_cumulative(q)),
            seqlens_kv=list(seqlens_from_cumulative(kv)),
            sparse_mode=a.sparse_mode,
            cuts=_int_list(a.cp_cuts, "explain.int_list"),
            alibi=a.cp_alibi,
        )
    else:
        if a.s1 is None:
            _usage("explain.s1", "--cp-world needs --s1 (the sequence length) or --tnd-q")
        mask = ("band", a.pre, a.next) if a.cp_mask == "band" else a.cp_mask
        plan = plan_context_parallel(
            a.cp_world, seq_len=a.s1, mask=mask, strategy=a.cp_strategy, scheme=a.cp_scheme, alibi=a.cp_alibi
        )
    text = rank_pictures(plan, max_side=max(a.max_cells, 64))  # before printing anything: it may refuse
    print(
        f"context parallel over {plan.world_size} ranks ({plan.strategy}, {plan.scheme}): x = this rank, . = another rank"
    )
    print(text)
    return 0


def _main_mask(a, block) -> int:
    from ms_fa.masks.compile import COST_ORDER, COST_ORDER_TND
    from ms_fa.masks.objects import Packed

    def _order(order):
        return ", ".join(str(m) for m in order)

    try:
        mask = parse_mask(a.mask)
    except (TypeError, ValueError) as e:
        print(f"explain: {e}", file=sys.stderr)
        return 2
    packed = any(isinstance(x, Packed) for x in mask.parts())
    if not packed and (a.s1 is None or a.s2 is None):
        print(f"explain: [explain.s1] --s1 and --s2 are required for this mask, got {a.s1}, {a.s2}", file=sys.stderr)
        return 2
    S1, S2 = (None, None) if packed else (a.s1, a.s2)
    print(f"mask: {mask!r}")
    try:
        kw = mask.to_ascend(S1, S2, allow_dense=a.allow_dense)
    except ValueError as e:
        if not str(e).startswith("[mask.expressible]"):
            raise  # a usage error (sizes that do not fit the mask)
        print(mask.picture(S1, S2, max_cells=a.max_cells))
        print("verdict: NOT EXPRESSIBLE without a full mask")
        print(str(e))
        return 1
    B = len(kw["prefix"]) if kw.get("prefix") else None
    am = kw.get("atten_mask")
    if am is not None and am.ndim == 4:
        B = am.shape[0]
    text, ok = explain(
        sparse_mode=kw["sparse_mode"],
        S1=S1,
        S2=S2,
        pre_tokens=kw["pre_tokens"],
        next_tokens=kw["next_tokens"],
        prefix=kw.get("prefix"),
        actual_seq_qlen=kw.get("actual_seq_qlen"),
        actual_seq_kvlen=kw.get("actual_seq_kvlen"),
        layout=kw.get("input_layout"),
        batch=B,
        heads=a.heads,
        no_mask=am is None,
        atten_mask=am,
        block=block,
        max_cells=a.max_cells,
        png=a.png,
        note=f"to_ascend chose the cheapest exact sparse_mode (cost order: {_order(COST_ORDER)}; "
        f"TND: {_order(COST_ORDER_TND)})",
    )
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
