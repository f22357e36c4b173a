"""``python -m ms_fa run [--op-plugin | --python] script.py [args...]``: run an unchanged MindSpore script with
ms_fa patched in, choosing the mechanism that works for the script's mode (as ``ms_fa.patch()`` does) and saying
which.

The mode is read from the script before MindSpore starts (the op plugin must be set before MindSpore's first
kernel): a script whose ``set_context`` calls all set ``GRAPH_MODE`` (or ``mode=0``) runs with the op plugin; any
other script -- PYNATIVE, the default, or a mix -- with the python mechanism. ``--op-plugin`` / ``--python`` force one;
``--op-plugin`` on a script that runs PYNATIVE is refused (``[run.op_plugin_pynative]``), and so is a switch to
PYNATIVE at run time while the op plugin is active: MindSpore 2.10 then computes silently wrong numbers.

``python`` mechanism: imports MindSpore, calls ``ms_fa.patch(mechanism="python")`` -- which
replaces ``mindspore.ops.speed_fusion_attention``, ``mindspore.ops.flash_attention_score`` and the
``FlashAttentionScore`` primitive class in every ``mindspore.*`` module -- and then runs the script with
:mod:`runpy` as ``__main__`` (``sys.argv`` = the script and its arguments). Every name the script
looks up afterwards is ms_fa's: PYNATIVE, GRAPH and ``ms.jit`` all work.

``op_plugin`` mechanism: set ``MS_OP_PLUGIN_PATH`` to the kernel library before MindSpore is imported, so that
MindSpore's *own* primitives and bprop run ms_fa's kernel (reaches primitives created by any path, and takes
Tensor-valued ``actual_seq_*`` lists in GRAPH mode). GRAPH mode only: with any op plugin set, MindSpore 2.10
PYNATIVE hands strided views to its built-in CPU kernels, which read them as contiguous (silently wrong
add/mul/matmul/softmax/sum on transposed tensors; see docs/mindspore.md).

Options (before the script): ``--op-plugin``, ``--python``; ``-q`` / ``--quiet`` (no status line on stderr).
"""

import ast
import os
import runpy
import sys

__all__ = ["main", "script_mode"]

USAGE = "usage: python -m ms_fa run [--op-plugin | --python] [-q] script.py [args...]"

_REFUSE = (
    "[run.op_plugin_pynative] {what}: with the op plugin set, MindSpore 2.10 PYNATIVE hands strided views to its "
    "built-in CPU kernels, which read them as contiguous (silently wrong numbers). Run it without --op-plugin (the "
    "python mechanism works in PYNATIVE and GRAPH)"
)


def _mode_value(node):
    """GRAPH / PYNATIVE for a ``mode=`` value (``ms.GRAPH_MODE``, ``context.PYNATIVE_MODE``, 0 / 1), else None."""
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
    if name in ("GRAPH_MODE", "PYNATIVE_MODE"):
        return name[: -len("_MODE")]
    if isinstance(node, ast.Constant) and node.value in (0, 1) and not isinstance(node.value, bool):
        return "GRAPH" if node.value == 0 else "PYNATIVE"
    return None


def script_mode(path: str) -> str:
    """The execution mode a script asks for: ``"GRAPH"`` if every ``set_context(mode=...)`` call in it sets GRAPH
    mode, ``"PYNATIVE"`` if none does (MindSpore's default), ``"mixed"`` otherwise (or if a mode is computed)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    modes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if fn == "set_context":
                for kw in node.keywords:
                    if kw.arg == "mode":
                        modes.add(_mode_value(kw.value))
    if not modes:
        return "PYNATIVE"
    if modes == {"GRAPH"}:
        return "GRAPH"
    return "PYNATIVE" if modes == {"PYNATIVE"} else "mixed"


def _guard_pynative_switch():
    """With the op plugin active, refuse a switch to PYNATIVE when the script makes it, before it computes."""
    import mindspore as ms

    original = ms.set_context

    def set_context(*args, **kwargs):
        if kwargs.get("mode") == ms.PYNATIVE_MODE:
            raise RuntimeError(_REFUSE.format(what="the script switched to PYNATIVE mode under the op plugin"))
        return original(*args, **kwargs)

    ms.set_context = set_context
    if hasattr(ms, "context"):
        ms.context.set_context = set_context


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet = False
    plugin = None  # None: auto (from the script's mode)
    while argv and argv[0].startswith("-"):
        opt = argv.pop(0)
        if opt in ("-h", "--help"):
            print(USAGE + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:]))
            return 0
        if opt in ("-q", "--quiet"):
            quiet = True
        elif opt == "--op-plugin":
            plugin = True
        elif opt == "--python":
            plugin = False
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
    try:
        mode = script_mode(script)
    except SyntaxError as e:
        print(f"ms_fa run: cannot parse {script}: {e}", file=sys.stderr)
        return 2
    why = "requested"
    if plugin is None:
        plugin = mode == "GRAPH"
        why = f"auto: the script runs {mode} mode"
    elif plugin and mode != "GRAPH":
        print("ms_fa run: " + _REFUSE.format(what=f"{script} runs {mode} mode"), file=sys.stderr)
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
            f"ms_fa run: mechanism=op_plugin ({why}; MS_OP_PLUGIN_PATH={lib} set before MindSpore's first kernel; "
            "GRAPH mode only)"
        )
        _guard_pynative_switch()
        from ms_fa.mindspore.patch import patch_dropout_gen_mask

        patch_dropout_gen_mask()  # no CPU kernel in MindSpore, and the op plugin cannot serve it
    else:
        from ms_fa.mindspore.patch import patch

        msg = f"ms_fa run: {patch(mechanism='python')} ({why})"
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
