"""``python -m ms_fa run [--op-plugin] script.py [args...]``: run an unchanged MindSpore script with ms_fa patched in.

Default (``python`` mechanism): imports MindSpore, calls ``ms_fa.patch(mechanism="python")`` -- which
replaces ``mindspore.ops.speed_fusion_attention``, ``mindspore.ops.flash_attention_score`` and the
``FlashAttentionScore`` primitive class in every ``mindspore.*`` module -- and then runs the script with
:mod:`runpy` as ``__main__`` (``sys.argv`` = the script and its arguments). Every name the script
looks up afterwards is ms_fa's: PYNATIVE, GRAPH and ``ms.jit`` all work.

``--op-plugin``: instead set ``MS_OP_PLUGIN_PATH`` to ``libms_fa_cpu.so`` before MindSpore is imported,
so that MindSpore's *own* primitives and bprop run ms_fa's kernel (reaches primitives created by any
path). GRAPH mode only: with any op plugin set, MindSpore 2.10 PYNATIVE hands strided views to its
built-in CPU kernels, which read them as contiguous (silently wrong add/mul/matmul/softmax/sum on
transposed tensors; see docs/mindspore.md).

Options (before the script): ``--op-plugin``; ``-q`` / ``--quiet`` (no status line on stderr).
"""

import os
import runpy
import sys

__all__ = ["main"]

USAGE = "usage: python -m ms_fa run [--op-plugin] [-q] script.py [args...]"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet = plugin = False
    while argv and argv[0].startswith("-"):
        opt = argv.pop(0)
        if opt in ("-h", "--help"):
            print(USAGE + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:]))
            return 0
        if opt in ("-q", "--quiet"):
            quiet = True
        elif opt == "--op-plugin":
            plugin = True
        else:
            print(f"ms_fa run: unknown option {opt}\n{USAGE}", file=sys.stderr)
            return 2
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    script = argv[0]
    if not os.path.isfile(script):
        print(f"ms_fa run: no such script: {script}", file=sys.stderr)
        return 2
    from ms_fa.mindspore._custom import library_path  # no MindSpore import

    try:
        lib = library_path()  # also loads its OpenBLAS, so MindSpore's dlopen of it resolves
    except RuntimeError as e:
        print(f"ms_fa run: {e}", file=sys.stderr)
        return 2
    if plugin:
        cur = os.environ.get("MS_OP_PLUGIN_PATH")
        if cur and os.path.abspath(cur) != lib:
            print(f"ms_fa run: MS_OP_PLUGIN_PATH already names {cur}; one op plugin per process", file=sys.stderr)
            return 2
        os.environ["MS_OP_PLUGIN_PATH"] = lib
        msg = (
            f"ms_fa run: mechanism=op_plugin (MS_OP_PLUGIN_PATH={lib} set before MindSpore's first kernel; "
            "GRAPH mode only)"
        )
    else:
        from ms_fa.mindspore.patch import patch

        msg = f"ms_fa run: {patch(mechanism='python')}"
    if not quiet:
        print(msg, file=sys.stderr)
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
