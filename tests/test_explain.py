"""``python -m ms_fa explain`` and the generated sparse-mode atlas."""

import importlib.util
import os

import pytest

from ms_fa.explain import main, parse_mask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(capsys, *argv):
    rc = main(list(argv))
    return rc, capsys.readouterr()


def test_mode4_picture_matches_spec_figure(capsys):
    # SPEC §8.2 (1 = discarded): row0 0000000011111111, row4 1000000000001111,
    # row8 1111100000000000, row12 1111111110000000; glyphs: x = discarded, . = kept
    rc, out = run(capsys, "--sparse-mode", "4", "--s1", "13", "--s2", "16", "--pre", "6", "--next", "4")
    assert rc == 0
    lines = out.out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("effective mask")) + 1
    rows = lines[start : start + 13]
    fig = {0: "0000000011111111", 4: "1000000000001111", 8: "1111100000000000", 12: "1111111110000000"}
    for r, want in fig.items():
        assert rows[r] == want.replace("0", ".").replace("1", "x")
    assert "verdict: OK" in out.out and "block plan" in out.out and "FLOPs computed" in out.out


def test_block_plan_counts(capsys):
    rc, out = run(capsys, "--sparse-mode", "2", "--s1", "8", "--s2", "8", "--block", "4,4")
    assert rc == 0
    # causal 8x8 in 4x4 tiles: the two diagonal tiles are partial, the lower-left one full, the upper-right skipped
    assert "4 tiles, 3 computed (1 full, 2 partial), 1 skipped" in out.out
    assert "tiles (# full, + partial, - skipped):\n+-\n#+\n" in out.out


def test_invalid_call_names_rule(capsys):
    rc, out = run(capsys, "--sparse-mode", "3", "--tnd-q", "4,6", "--tnd-kv", "2,6")
    assert rc == 1
    assert "verdict: INVALID" in out.out and "[tnd.mode3.s1_gt_s2]" in out.out
    rc, out = run(capsys, "--sparse-mode", "7", "--s1", "4", "--s2", "4")
    assert rc == 1 and "[sparse_mode.range]" in out.out


def test_no_mask_means_nothing_masked(capsys):
    rc, out = run(capsys, "--sparse-mode", "2", "--s1", "4", "--s2", "4", "--no-mask")
    assert rc == 0 and "nothing is masked" in out.out
    assert "....\n....\n....\n...." in out.out


def test_tnd_mode7_card1(capsys):
    rc, out = run(capsys, "--sparse-mode", "7", "--tnd-q", "3,5", "--tnd-kv", "3,9", "--pre", "6", "--next", "-2")
    assert rc == 0
    assert ".xx\n..x\n..." in out.out  # batch 0: 3x3 causal
    assert "...xxx\n....xx" in out.out  # batch 1 (band batch): j > i + 2


def test_mask_expression(capsys):
    rc, out = run(capsys, "--mask", "CausalMask('bottom_right') & SlidingWindow(4, 0)", "--s1", "16", "--s2", "16")
    assert rc == 0 and "sparse_mode=4" in out.out and "pre_tokens=4, next_tokens=0" in out.out
    rc, out = run(capsys, "--mask", "SlidingWindow(2, 2) & PrefixLM(4)", "--s1", "10", "--s2", "10")
    assert rc == 1 and "NOT EXPRESSIBLE" in out.out and "allow_dense" in out.out


def test_mask_expression_is_restricted():
    assert repr(parse_mask("Packed([3, 5], [3, 9]) & CausalMask('bottom_right')")).startswith("Packed")
    for bad in ("__import__('os').system('true')", "CausalMask().__class__", "open('x')", "[c for c in ()]"):
        with pytest.raises(ValueError):
            parse_mask(bad)


def test_png(tmp_path, capsys):
    p = tmp_path / "m.png"
    rc, _ = run(capsys, "--sparse-mode", "4", "--s1", "13", "--s2", "16", "--pre", "6", "--next", "4", "--png", str(p))
    assert rc == 0
    with open(p, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    img = mpimg.imread(str(p))
    assert img.ndim == 3 and img.shape[0] > 10 and img.shape[1] > 10


def test_sparse_mode_atlas_is_up_to_date():
    path = os.path.join(ROOT, "docs", "gen_sparse_modes.py")
    spec = importlib.util.spec_from_file_location("gen_sparse_modes", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    with open(os.path.join(ROOT, "docs", "sparse_modes.md")) as f:
        doc = f.read()
    assert doc == gen.render_doc(), "run: python docs/gen_sparse_modes.py"
    for mode in range(9):
        assert f"## mode {mode}:" in doc
    # independent of the generator: SPEC §8.2's mode-4 figure rows (S1=13, S2=16, pre=6, next=4), by hand
    for row in ("........xxxxxxxx", "x...........xxxx", "xxxxx...........", "xxxxxxxxx......."):
        assert "\n" + row + "\n" in doc, row


@pytest.mark.parametrize(
    "argv, rule",
    [
        (["--s1", "4", "--s2", "4", "--max-cells", "0"], "explain.max_cells"),
        (["--s1", "4", "--s2", "4", "--atten-mask", "missing-dir/missing.npy"], "explain.atten_mask"),
        (["--s1", "4", "--s2", "4", "--png", "missing-dir/sub/x.png"], "explain.png"),
        (["--s1", "4", "--s2", "4", "--block", "0,4"], "explain.block"),
        (["--s1", "4", "--s2", "4", "--block", "4,4,4"], "explain.block"),
        (["--s1", "4", "--s2", "4", "--block", "a"], "explain.block"),
        (["--s1", "-3", "--s2", "4"], "explain.s1"),
        (["--sparse-mode", "0", "--s1", "99999999999", "--s2", "4"], "explain.size"),  # was a numpy MemoryError
        (["--s1", "4", "--s2", "-1"], "explain.s2"),
        (["--s1", "4", "--s2", "4", "--heads", "-1"], "explain.heads"),
        (["--s1", "4", "--s2", "4", "--batch", "-2"], "explain.batch"),
        (["--s1", "4", "--s2", "4", "--batch", "0"], "explain.batch"),
        (["--tnd-kv", "3,5"], "explain.tnd_kv"),
        (["--sparse-mode", "6", "--s1", "4", "--s2", "4", "--prefix", "x"], "explain.prefix"),
        (["--mask", "PrefixLM(1.5)", "--s1", "4", "--s2", "4"], "explain.mask_expr"),
        (["--mask", "PrefixLM([-1])", "--s1", "4", "--s2", "4"], "mask.prefix"),
        (["--mask", "Packed([3])", "--s1", "1", "--s2", "1", "--heads", "0"], "explain.heads"),
        # malformed expressions (issue 13: were AttributeError / TypeError tracebacks)
        (["--mask", "()", "--s1", "4", "--s2", "4"], "explain.mask_expr"),
        (["--mask", "1", "--s1", "4", "--s2", "4"], "explain.mask_expr"),
        (["--mask", "None", "--s1", "4", "--s2", "4"], "explain.mask_expr"),
        (["--mask", "CausalMask() & 3", "--s1", "4", "--s2", "4"], "explain.mask_expr"),
        (["--mask", "SlidingWindow(1, 2, 3, 4)", "--s1", "4", "--s2", "4"], "explain.mask_expr"),
        (["--mask", "SlidingWindow(9**9**9)", "--s1", "4", "--s2", "4"], "explain.mask_expr"),
        (["--mask", "SlidingWindow('a')", "--s1", "4", "--s2", "4"], "mask.sliding_window.type"),
    ],
)
def test_cli_usage_errors_name_rule(capsys, argv, rule):
    rc, out = run(capsys, *argv)
    assert rc == 2, out
    err = out.err.strip()
    assert len(err.splitlines()) == 1 and f"[{rule}]" in err, err
    assert "Traceback" not in err and out.out == ""
