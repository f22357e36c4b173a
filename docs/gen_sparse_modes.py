"""Generate docs/sparse_modes.md (the sparse-mode atlas) with ``python -m ms_fa explain``'s engine.

    python docs/gen_sparse_modes.py            # rewrite docs/sparse_modes.md and docs/img/*.png
    python docs/gen_sparse_modes.py --check    # exit 1 if the markdown is out of date

Every picture in the atlas is printed by ms_fa.explain from the spec (ms_fa.semantics.plan), so the doc
cannot drift from the code: tests/test_explain.py checks that the file equals this script's output.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
INT_MAX = 2147483647


def _cli(kw):
    """The equivalent command line of an explain() call."""
    parts = ["python -m ms_fa explain"]
    if kw.get("mask_expr"):
        parts.append(f'--mask "{kw["mask_expr"]}"')
        if kw.get("S1") is not None:
            parts.append(f"--s1 {kw['S1']} --s2 {kw['S2']}")
        return " ".join(parts)
    parts.append(f"--sparse-mode {kw.get('sparse_mode', 0)}")
    if kw.get("actual_seq_qlen") is not None:
        parts.append("--tnd-q " + ",".join(map(str, kw["actual_seq_qlen"])))
        parts.append("--tnd-kv " + ",".join(map(str, kw["actual_seq_kvlen"])))
    else:
        parts.append(f"--s1 {kw['S1']} --s2 {kw['S2']}")
    if kw.get("pre_tokens", INT_MAX) != INT_MAX:
        parts.append(f"--pre {kw['pre_tokens']}")
    if kw.get("next_tokens", INT_MAX) != INT_MAX:
        parts.append(f"--next {kw['next_tokens']}")
    if kw.get("prefix") is not None:
        parts.append("--prefix " + ",".join(map(str, kw["prefix"])))
    if kw.get("no_mask"):
        parts.append("--no-mask")
    if kw.get("atten_mask") is not None:
        parts.append("--atten-mask MASK.npy")
    if kw.get("max_cells"):
        parts.append(f"--max-cells {kw['max_cells']}")
    if tuple(kw.get("block", (128, 128))) != (128, 128):
        parts.append("--block " + ",".join(map(str, kw["block"])))
    return " ".join(parts)


def _doc_mask(S1, S2):
    """A 'two documents in one sequence' full mask for the mode-1 example (True = discard)."""
    i, j = np.arange(S1)[:, None], np.arange(S2)[None, :]
    doc = lambda x: (x >= 5).astype(int)  # noqa: E731
    return (doc(i) != doc(j)) | (j > i)


B4 = (4, 4)
CASES = [
    (
        "0",
        "defaultMask, band (top-left), next < 0",
        "Mode 0 reads the full `atten_mask` and skips blocks outside the top-left band "
        "`i - pre <= j <= i + next`. The atlas passes the canonical consistent mask "
        "`triu(k=next+1) | tril(k=-pre-1)`. SPEC §8.2 figure: rows 0-2 all discarded, row 3 `.xxxxxxxxx`, "
        "row 12 `xxx.......`.",
        dict(sparse_mode=0, S1=13, S2=10, pre_tokens=9, next_tokens=-3, block=B4),
        "mode0_next_neg",
    ),
    (
        "0",
        "defaultMask, band (top-left), pre < 0",
        "SPEC §8.2 figure: row 0 `xxx.....xx`, row 6 `xxxxxxxxx.`, rows 7-12 all discarded.",
        dict(sparse_mode=0, S1=13, S2=10, pre_tokens=-3, next_tokens=7, block=B4),
        "mode0_pre_neg",
    ),
    (
        "0",
        "defaultMask, causal with a full mask (pre >= S1, next = 0)",
        "Tiling treats `pre >= S1, next == 0` as causal: the full mask must be `triu(ones(S1, S2), 1)`.",
        dict(sparse_mode=0, S1=8, S2=8, pre_tokens=8, next_tokens=0, block=B4),
        None,
    ),
    (
        "0",
        "no atten_mask: nothing is masked",
        "Without an `atten_mask` no mode masks anything: sparse_mode, pre_tokens and next_tokens are "
        "ignored (SPEC §2.1-1). This is the most common silent bug when porting.",
        dict(sparse_mode=4, S1=8, S2=8, pre_tokens=2, next_tokens=0, no_mask=True, block=B4),
        "no_mask",
    ),
    (
        "1",
        "allMask",
        "Mode 1 computes every block and reads the full mask element-wise (here: two documents packed in "
        "one causal sequence; pre/next are ignored).",
        dict(sparse_mode=1, S1=10, S2=10, atten_mask="doc", block=B4),
        "mode1",
    ),
    (
        "2",
        "leftUpCausal",
        "Keep `j <= i` (top-left); compressed `triu(ones(2048, 2048), 1)` mask.",
        dict(sparse_mode=2, S1=8, S2=12, block=B4),
        "mode2",
    ),
    (
        "3",
        "rightDownCausal, S1 > S2",
        "Keep `j <= i + S2 - S1` (bottom-right). SPEC §8.2: rows 0-2 all discarded (invalid-line mode "
        "turns on by itself: those rows output 0), row 3 `.xxxxxxxxx`, row 12 `..........`.",
        dict(sparse_mode=3, S1=13, S2=10, block=B4),
        "mode3",
    ),
    (
        "3",
        "rightDownCausal, S1 < S2",
        "The flash-attn `causal=True` alignment.",
        dict(sparse_mode=3, S1=8, S2=12, block=B4),
        None,
    ),
    (
        "4",
        "band (bottom-right)",
        "Keep `-pre <= j - i - (S2 - S1) <= next`. SPEC §8.2 figure: row 0 `........xxxxxxxx`, row 4 "
        "`x...........xxxx`, row 8 `xxxxx...........`, row 12 `xxxxxxxxx.......`.",
        dict(sparse_mode=4, S1=13, S2=16, pre_tokens=6, next_tokens=4, block=B4),
        "mode4",
    ),
    (
        "4",
        "band at scale: sliding window 256 over S = 4096",
        "Large sizes are drawn in blocks; the block plan (real 128 x 128 tiles) shows the cost growing "
        "like S x W, not S^2.",
        dict(sparse_mode=4, S1=4096, S2=4096, pre_tokens=256, next_tokens=0, max_cells=32),
        "mode4_large",
    ),
    (
        "5",
        "prefix, full mask (B = 2, prefix 4 and 5)",
        "Bottom-right causal OR the first `prefix[b]` columns, read from a full `(B, 1, S1, S2)` mask.",
        dict(sparse_mode=5, S1=10, S2=10, prefix=[4, 5], block=B4),
        "mode5",
    ),
    (
        "6",
        "prefix, compressed (prefix 4)",
        "Same region as mode 5 from the `(3072, 2048)` compressed mask. SPEC §8.2: rows 0-3 "
        "`....xxxxxx`, row 4 `.....xxxxx`, row 9 `..........`.",
        dict(sparse_mode=6, S1=10, S2=10, prefix=[4], block=B4),
        "mode6",
    ),
    (
        "7",
        "TND context parallel (split of a mode-3 batch), card 1",
        "SPEC §2.4: a 4 x 6 bottom-right causal batch is split over two cards by query rows. Card 1 gets "
        "batch 0 (3 x 3) and the first two rows of the split batch; the last batch is the band batch: "
        "`j > i + (S2b - S1b) + next` with next = -2; `pre_tokens` only has to be >= its S2 (6).",
        dict(sparse_mode=7, actual_seq_qlen=[3, 5], actual_seq_kvlen=[3, 9], pre_tokens=6, next_tokens=-2),
        "mode7_card1",
    ),
    (
        "7",
        "... card 2 runs mode 3",
        "Card 2 holds the other two rows of the split batch plus two whole batches: plain mode 3.",
        dict(sparse_mode=3, actual_seq_qlen=[2, 7, 11], actual_seq_kvlen=[6, 11, 15]),
        "mode7_card2",
    ),
    (
        "8",
        "TND context parallel (split of a mode-2 batch), card 2",
        "SPEC §2.4: a 5 x 4 top-left causal batch is split into 2 x 4 (card 1) and 3 x 4 (card 2). On "
        "card 2 the first batch is the band batch: `j > i + S2b - max(S1b - next, 0)` with next = 1 "
        "(i.e. `j > i + 2`); the others are top-left causal.",
        dict(sparse_mode=8, actual_seq_qlen=[3, 8, 12], actual_seq_kvlen=[4, 9, 13], pre_tokens=4, next_tokens=1),
        "mode8_card2",
    ),
    (
        "8",
        "... card 1 runs mode 2",
        "Card 1: two whole batches, plain mode 2.",
        dict(sparse_mode=2, actual_seq_qlen=[3, 5], actual_seq_kvlen=[3, 7]),
        "mode8_card1",
    ),
    (
        "-",
        "an invalid call: TND mode 3 with S1b > S2b",
        "The verdict names the broken rule (from `ms_fa.semantics.args.normalize`).",
        dict(sparse_mode=3, actual_seq_qlen=[4, 6], actual_seq_kvlen=[2, 6]),
        None,
    ),
    (
        "-",
        "from a mask object",
        "`--mask` compiles a mask expression with `to_ascend` (cheapest exact mode) and explains the result.",
        dict(mask_expr="CausalMask('bottom_right') & SlidingWindow(3, 0, align='bottom_right')", S1=8, S2=12),
        None,
    ),
]


def render_doc(write_png=False) -> str:
    from ms_fa.explain import explain
    from ms_fa.masks.compile import COST_ORDER, COST_ORDER_TND

    out = [
        "# Sparse-mode atlas",
        "",
        "<!-- generated by docs/gen_sparse_modes.py -- do not edit by hand -->",
        "",
        "Every `sparse_mode` (0-8) of Ascend FlashAttentionScore (`speed_fusion_attention`, "
        "`npu_fusion_attention`), with its parameters and the effective mask the spec computes "
        "([spec.md](spec.md) §2). Each picture is printed by `python -m ms_fa explain` with the command shown "
        "(`x` = discarded, `.` = kept; `i` = query row, `j` = key column, 0-based). The block plans of "
        "the small cases use 4 x 4 tiles (`--block 4,4`) so that skipping is visible; the kernel uses "
        "128 x 128.",
        "",
        "| mode | name | kept region (True/1 in atten_mask = discard) | atten_mask | pre / next |",
        "|---|---|---|---|---|",
        "| 0 | defaultMask | full mask, plus block skipping outside `i-pre <= j <= i+next` (top-left) | full S1 x S2 | used (top-left) |",
        "| 1 | allMask | full mask only | full | ignored |",
        "| 2 | leftUpCausal | `j <= i` | 2048 x 2048 compressed | ignored |",
        "| 3 | rightDownCausal | `j <= i + S2 - S1` | 2048 x 2048 compressed | ignored |",
        "| 4 | band | `-pre <= j - i - (S2 - S1) <= next` | 2048 x 2048 compressed | used (bottom-right) |",
        "| 5 | prefix, full mask | `j <= i + S2 - S1` or `j < prefix[b]` | full (B,1,S1,S2) | ignored |",
        "| 6 | prefix, compressed | same as 5 | 3072 x 2048 compressed | ignored |",
        "| 7 | TND split of mode 3 | last non-empty batch: `j <= i + S2b - S1b + next`; others mode 3 | 2048 x 2048 | next (bottom-right); pre >= S2 of that batch |",
        "| 8 | TND split of mode 2 | first non-empty batch: `j <= i + S2b - max(S1b - next, 0)`; others mode 2 | 2048 x 2048 | next; pre >= S2 of that batch |",
        "",
        "Rules that bite: no `atten_mask` => no masking at all, whatever the mode (SPEC §2.1-1); the "
        "compressed masks must be exactly `triu(ones(2048, 2048), 1)` (and the 3072-row prefix form); "
        "modes 7/8 exist only in TND, mode 5 only outside TND.",
        "",
        "Mask objects (`ms_fa.CausalMask`, `SlidingWindow`, `PrefixLM`, `Packed`, `DenseMask`) choose "
        f"the cheapest exact mode in this order: non-TND `{', '.join(map(str, COST_ORDER))}`, TND "
        f"`{', '.join(map(str, COST_ORDER_TND))}` (`none` = no atten_mask).",
        "",
    ]
    for mode, title, text, kw, png in CASES:
        kw = dict(kw)
        head = f"## mode {mode}: {title}" if mode != "-" else f"## {title}"
        out += [head, "", text, ""]
        cli = _cli(kw)
        if kw.get("mask_expr"):
            import contextlib
            import io

            from ms_fa.explain import main

            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                main(["--mask", kw["mask_expr"], "--s1", str(kw["S1"]), "--s2", str(kw["S2"])])
            body = buf.getvalue().rstrip("\n")
        else:
            if kw.get("atten_mask") == "doc":
                kw["atten_mask"] = _doc_mask(kw["S1"], kw["S2"])
            path = None
            if png:
                path = os.path.join(HERE, "img", f"{png}.png")
            text_out, _ok = explain(
                sparse_mode=kw.get("sparse_mode", 0),
                S1=kw.get("S1"),
                S2=kw.get("S2"),
                pre_tokens=kw.get("pre_tokens", INT_MAX),
                next_tokens=kw.get("next_tokens", INT_MAX),
                prefix=kw.get("prefix"),
                actual_seq_qlen=kw.get("actual_seq_qlen"),
                actual_seq_kvlen=kw.get("actual_seq_kvlen"),
                no_mask=kw.get("no_mask", False),
                atten_mask=kw.get("atten_mask"),
                block=kw.get("block", (128, 128)),
                max_cells=kw.get("max_cells", 64),
                png=path if write_png else None,
            )
            body = "\n".join(l for l in text_out.splitlines() if not l.startswith("wrote "))
        out += ["```", f"$ {cli}", body, "```", ""]
        if png:
            out += [f"![{title}](img/{png}.png)", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    path = os.path.join(HERE, "sparse_modes.md")
    if a.check:
        with open(path) as f:
            same = f.read() == render_doc()
        print("up to date" if same else "docs/sparse_modes.md is out of date: run python docs/gen_sparse_modes.py")
        return 0 if same else 1
    os.makedirs(os.path.join(HERE, "img"), exist_ok=True)
    text = render_doc(write_png=True)
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
