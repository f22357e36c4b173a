"""One definition of the kernel problem (fa_kernel.h ``FaScalars``), filled by one marshaller
(ms_fa/kernels/abi.py ``make_scalars``) for every path into the kernel:

- the Python mirror equals the compiled struct field by field (names, offsets, sizes, kinds);
- the AOT meta row is the bytes of ``make_scalars`` followed by the lists (ms_aot.cc copies them back);
- a field moved in the header alone does not build (fa_abi.cc's compile-time tiling proof), and a
  library whose struct differs from the mirror is refused when it loads (``[kernel.abi]``);
- the run-time choice of the instruction-set variant, and its override.

The op plugin (ms_op_plugin.cc) fills the same ``FaScalars`` in C++: it includes fa_kernel.h and is
built into the same library, so it cannot disagree with the header; tests/test_op_plugin_inputs.py
runs it.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from reference_cases import make_case, split_case

from ms_fa.kernels import abi, library
from ms_fa.semantics.args import normalize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "ms_fa", "csrc")
CXX = os.environ.get("CXX", "g++")


def test_mirror_equals_the_compiled_struct():
    lib = library.load_library()  # load_library runs check_abi; check it here explicitly too
    abi.check_abi(lib)
    assert lib.fa_scalars_size() == ctypes.sizeof(abi.FaScalars) and ctypes.sizeof(abi.FaScalars) % 8 == 0
    # no padding: the fields tile the struct, in order
    at = 0
    for name, off, size, _kind in abi.abi_fields():
        assert off == at, name
        at += size
    assert at == ctypes.sizeof(abi.FaScalars)


@pytest.mark.parametrize(
    "layout, mode, kw",
    [
        ("BNSD", 0, dict(with_mask=False)),
        ("BSH", 2, {}),
        ("BSND", 5, dict(B=2)),
        ("BNSD", 1, dict(pse_kind="full", keep_prob=0.75)),
        ("TND", 8, dict(tnd_q=[3, 5], tnd_kv=[3, 9])),
        ("SBH", 0, dict(pse_kind="slopes_bn")),
    ],
)
def test_meta_row_is_the_bytes_of_the_scalars(layout, mode, kw):
    case = make_case(layout, mode, "float16", seed=1, **kw)
    a, k = split_case(case)
    args = normalize(*a, **{x: y for x, y in k.items() if x not in ("seed", "offset", "precision")})
    mask = k.get("atten_mask")
    shape = None if mask is None else mask.shape
    s = abi.make_scalars(args, mask_shape=shape, has_drop_mask=k.get("drop_mask") is not None)
    row = abi.meta_row(args, mask_shape=shape, has_drop_mask=k.get("drop_mask") is not None)
    words = ctypes.sizeof(abi.FaScalars) // 8
    assert row.dtype == np.int64 and row[:words].tobytes() == bytes(s)
    back = abi.FaScalars.from_buffer_copy(row[:words].tobytes())
    assert [getattr(back, f[0]) for f in abi.FaScalars._fields_] == [getattr(s, f[0]) for f in abi.FaScalars._fields_]
    tail = list(row[words:])
    want = list(args.prefix or ()) + (list(args.actual_seq_qlen) + list(args.actual_seq_kvlen) if args.is_tnd else [])
    assert tail == want
    # and the ctypes problem carries the very same scalars
    prob, _keep = abi.make_problem(args, atten_mask=mask, pse=k.get("pse"), drop_mask=k.get("drop_mask"))
    assert bytes(prob.s) == bytes(s)


def _fields_block(text):
    """The FaScalars field lines of fa_kernel.h."""
    start = text.index("typedef struct FaScalars {")
    return start, text.index("} FaScalars;", start)


def _swap_header_fields(text, a, b):
    start, end = _fields_block(text)
    body = text[start:end]
    la = next(ln for ln in body.splitlines() if re.search(rf"\b{a};", ln))
    lb = next(ln for ln in body.splitlines() if re.search(rf"\b{b};", ln))
    body = body.replace(la, "@@A@@").replace(lb, la).replace("@@A@@", lb)
    return text[:start] + body + text[end:]


def _abi_lib(tmp_path, swap_table):
    """Build fa_abi.cc alone against a copy of fa_kernel.h with two int64 fields (pre_tokens,
    next_tokens... here S1 and S2) swapped; ``swap_table`` swaps them in fa_abi.cc's table too."""
    assert shutil.which(CXX), "g++ is required (it builds ms_fa's C++ library)"
    d = tmp_path / "csrc"
    d.mkdir()
    header = open(os.path.join(CSRC, "fa_kernel.h")).read()
    (d / "fa_kernel.h").write_text(_swap_header_fields(header, "S1, S2", "D, Dv"))
    src = open(os.path.join(CSRC, "fa_abi.cc")).read()
    if swap_table:
        src = src.replace("FA_FIELD(S1, 'i')", "@@").replace("FA_FIELD(D, 'i')", "FA_FIELD(S1, 'i')")
        src = src.replace("@@", "FA_FIELD(D, 'i')")
        src = src.replace("FA_FIELD(S2, 'i')", "@@").replace("FA_FIELD(Dv, 'i')", "FA_FIELD(S2, 'i')")
        src = src.replace("@@", "FA_FIELD(Dv, 'i')")
    (d / "fa_abi.cc").write_text(src)
    out = tmp_path / "libabi.so"
    return subprocess.run(
        [CXX, "-std=c++17", "-shared", "-fPIC", "-I", str(d), str(d / "fa_abi.cc"), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    ), out


def test_a_field_moved_in_the_header_alone_does_not_build(tmp_path):
    r, _ = _abi_lib(tmp_path, swap_table=False)
    assert r.returncode != 0 and "kFields must list every FaScalars field in order" in r.stderr, r.stderr[-2000:]


def test_a_library_with_another_struct_is_refused(tmp_path):
    r, out = _abi_lib(tmp_path, swap_table=True)
    assert r.returncode == 0, r.stderr[-2000:]
    with pytest.raises(RuntimeError, match=r"^\[kernel\.abi\] .*first difference: \(\('D', 40"):
        abi.check_abi(ctypes.CDLL(str(out)))


def test_isa_choice_and_override(monkeypatch):
    monkeypatch.delenv("MS_FA_ISA", raising=False)
    monkeypatch.delenv("MS_FA_LIB", raising=False)
    best = library.isa()
    assert best in library.ISAS
    assert os.path.basename(library.library_path()) == library.ISAS[best][0]
    monkeypatch.setenv("MS_FA_ISA", "portable")
    assert library.isa() == "portable" and library.library_path().endswith("libms_fa_cpu.so")
    monkeypatch.setenv("MS_FA_ISA", "sse9")
    with pytest.raises(ValueError, match=r"^\[kernel\.isa\] MS_FA_ISA must be one of"):
        library.isa()
