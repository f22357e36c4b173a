"""Which attention implementation runs a call, and why the others do not (the xFormers way: every
backend lists its reasons to refuse an input).

Three backends serve ms_fa's MindSpore API:

========== ======================================================================================
native     MindSpore's own ``FlashAttentionScore`` / ``SpeedFusionAttention`` (Ascend NPU only)
ascend_c   ms_fa's Ascend C ops ``MsFaFlashAttention`` / ``MsFaFlashAttentionGrad`` (``custom_ops/``;
           Ascend NPU with the op package installed; never compiled or run so far)
cpu        ms_fa's C++ kernel (every other device target)
========== ======================================================================================

``auto`` (the default) keeps the native op on Ascend and the CPU kernel elsewhere; the Ascend C op runs
only when chosen, with :func:`set_backend` or ``MS_FA_BACKEND``. A chosen backend that refuses a call
raises ``ValueError`` (``[backend.unsupported]``) listing its reasons before anything runs;
:func:`report` prints every backend's reasons for one call (``python -m ms_fa info`` prints the
machine-wide ones).

Nothing here imports MindSpore: the device target is passed in (the MindSpore layer reads it).
"""

from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional

from ms_fa.semantics.rules import rule

__all__ = [
    "BACKENDS",
    "ASCEND_C_OP",
    "ASCEND_C_GRAD_OP",
    "ASCEND_C_ACLNN_HEADER",
    "ASCEND_C_MAX_BATCH",
    "set_backend",
    "get_backend",
    "refusals",
    "choose",
    "report",
    "backend_report",
    "ascend_c_package",
]

#: the backends, in the order of the report
BACKENDS = ("native", "ascend_c", "cpu")
#: the op type of ms_fa's Ascend C op (OpDef, aclnn API, MindSpore ops.Custom: tests check they agree)
ASCEND_C_OP = "MsFaFlashAttention"
#: the op type of its backward
ASCEND_C_GRAD_OP = "MsFaFlashAttentionGrad"
#: the header MindSpore's ops.Custom reads the aclnn signature from (its name rule for op type X:
#: aclnn + X in snake case)
ASCEND_C_ACLNN_HEADER = "aclnn_ms_fa_flash_attention.h"
#: the largest batch (TND: sequences) the op's tiling takes (FA_TILING_MAX_BATCH in fa_tiling_core.h)
ASCEND_C_MAX_BATCH = 4096
#: the largest head dims of the op's buffer plan (FA_MAX_HEAD_DIM in fa_tiling_core.h)
ASCEND_C_MAX_HEAD_DIM = 512

_CHOICE: List[Optional[str]] = [None]


def set_backend(name: Optional[str]) -> None:
    """Choose the backend of ms_fa's MindSpore calls: ``"auto"`` (or ``None``), ``"native"``,
    ``"ascend_c"`` or ``"cpu"``. Overrides ``MS_FA_BACKEND``. Under GRAPH mode / ``ms.jit`` the choice is
    read when a graph is compiled.

    Raises:
        ValueError: ``[backend.name]`` for another name.

    Examples:
        >>> import ms_fa
        >>> ms_fa.set_backend("cpu"); ms_fa.get_backend()
        'cpu'
        >>> ms_fa.set_backend(None); ms_fa.get_backend()
        'auto'
    """
    if name is not None and name != "auto" and name not in BACKENDS:
        rule("backend.name").fail(f"backend must be 'auto', {', '.join(map(repr, BACKENDS))} or None, got {name!r}")
    _CHOICE[0] = None if name in (None, "auto") else name


def get_backend() -> str:
    """The chosen backend: :func:`set_backend`'s, else ``MS_FA_BACKEND``'s, else ``"auto"``.

    Raises:
        ValueError: ``[backend.name]`` when ``MS_FA_BACKEND`` names no backend.
    """
    if _CHOICE[0] is not None:
        return _CHOICE[0]
    env = os.environ.get("MS_FA_BACKEND", "").strip()
    if not env or env == "auto":
        return "auto"
    if env not in BACKENDS:
        rule("backend.name").fail(f"MS_FA_BACKEND must be 'auto' or one of {', '.join(BACKENDS)}, got {env!r}")
    return env


def ascend_c_package() -> Optional[str]:
    """The directory holding the installed op package's aclnn header, where MindSpore's ``ops.Custom``
    looks for it (``ASCEND_CUSTOM_OPP_PATH`` entries, then ``ASCEND_OPP_PATH/vendors/*``), or None."""
    dirs = [d for d in os.environ.get("ASCEND_CUSTOM_OPP_PATH", "").split(":") if d]
    opp = os.environ.get("ASCEND_OPP_PATH")
    if opp:
        dirs += sorted(glob.glob(os.path.join(opp, "vendors", "*")))
    for d in dirs:
        inc = os.path.join(d, "op_api", "include")
        if os.path.isfile(os.path.join(inc, ASCEND_C_ACLNN_HEADER)):
            return inc
    return None


def _npu_present() -> bool:
    return bool(glob.glob("/dev/davinci[0-9]*"))


def refusals(backend: str, args=None, device_target: str = "CPU") -> List[str]:
    """Why ``backend`` cannot run a call on ``device_target``: an empty list when it can. ``args`` is the
    validated :class:`~ms_fa.semantics.args.AttnArgs` of the call (None: the machine-wide reasons only).

    Examples:
        >>> from ms_fa.backends import refusals
        >>> refusals("cpu", device_target="CPU")
        []
        >>> refusals("native", device_target="CPU")[0]
        'device target is CPU: the native FlashAttentionScore runs on an Ascend NPU only'
    """
    if backend not in BACKENDS:
        rule("backend.name").fail(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    why: List[str] = []
    on_ascend = device_target == "Ascend"
    if backend == "cpu":
        if on_ascend:
            why.append("device target is Ascend: the CPU kernel reads host memory (set device_target='CPU')")
        return why
    if not on_ascend:
        name = "the native FlashAttentionScore" if backend == "native" else "the Ascend C op"
        why.append(f"device target is {device_target}: {name} runs on an Ascend NPU only")
    if backend == "native":
        return why
    if ascend_c_package() is None:
        why.append(
            f"the op package is not installed ({ASCEND_C_ACLNN_HEADER} is in no ASCEND_CUSTOM_OPP_PATH entry "
            "and no ASCEND_OPP_PATH vendor): build it with custom_ops/build.sh on a CANN machine (docs/ascend_c.md)"
        )
    if args is None:
        return why
    if args.dtype not in ("float16", "bfloat16"):
        why.append(f"dtype {args.dtype}: the kernel is built for float16 and bfloat16")
    if args.B > ASCEND_C_MAX_BATCH:
        why.append(f"batch {args.B}: the op's tiling takes at most {ASCEND_C_MAX_BATCH} (TND: sequences)")
    if max(args.D, args.Dv) > ASCEND_C_MAX_HEAD_DIM:
        why.append(f"head dim {max(args.D, args.Dv)} > {ASCEND_C_MAX_HEAD_DIM}")
    return why


def choose(args=None, device_target: str = "CPU", backend: Optional[str] = None) -> str:
    """The backend that runs a call: ``backend`` (default :func:`get_backend`) when given, else
    ``native`` on Ascend and ``cpu`` elsewhere.

    Raises:
        ValueError: ``[backend.unsupported]`` when the chosen backend refuses the call (with its reasons).

    Examples:
        >>> from ms_fa.backends import choose
        >>> choose(device_target="CPU", backend="auto")
        'cpu'
    """
    name = get_backend() if backend is None else backend
    if name == "auto":
        return "native" if device_target == "Ascend" else "cpu"
    why = refusals(name, args, device_target)
    if why:
        rule("backend.unsupported").fail(f"backend {name!r} cannot run this call: " + "; ".join(why))
    return name


def report(args=None, device_target: str = "CPU") -> str:
    """Every backend and its reasons to refuse (``args``: a validated call, or None for the machine),
    and which one runs.

    Examples:
        >>> from ms_fa.backends import report
        >>> print(report(device_target="CPU").splitlines()[-1])
        runs: cpu (backend 'auto')
    """
    rows: Dict[str, List[str]] = {b: refusals(b, args, device_target) for b in BACKENDS}
    lines = [f"attention backends (device target {device_target}" + (", NPU present)" if _npu_present() else ")")]
    for b, why in rows.items():
        lines.append(f"  {b:<9} " + ("can run" if not why else "refuses: " + "; ".join(why)))
    chosen = get_backend()
    try:
        runs = choose(args, device_target)
    except ValueError as e:
        runs = f"none -- {e}"
    lines.append(f"runs: {runs} (backend {chosen!r})")
    return "\n".join(lines)


def backend_report(query, key, value, head_num, input_layout, *, device_target: Optional[str] = None, **options) -> str:
    """The backend report of one call, without running it: the call is validated exactly as
    ``speed_fusion_attention`` validates it (same arguments; numpy arrays or MindSpore tensors), then
    every backend says whether it can run it and why not (:func:`report`).

    Args:
        query, key, value, head_num, input_layout: as ``speed_fusion_attention``.
        device_target (str, optional): the device to report for; default MindSpore's current one (CPU
            when MindSpore is not imported).
        **options: the keyword arguments of ``speed_fusion_attention`` (pse, atten_mask, sparse_mode, ...).

    Returns:
        str: one line per backend, then the one that runs.

    Raises:
        TypeError, ValueError: the call itself is invalid (the rule in brackets, as the call would raise).

    Examples:
        >>> import numpy as np
        >>> import ms_fa
        >>> q = np.zeros((1, 2, 64, 16), np.float32)
        >>> print(ms_fa.backend_report(q, q, q, 2, "BNSD", device_target="Ascend"))  # doctest: +ELLIPSIS
        attention backends (device target Ascend...)
          native    can run
          ascend_c  refuses: the op package is not installed (...); dtype float32: the kernel is built for float16 and bfloat16
          cpu       refuses: device target is Ascend: the CPU kernel reads host memory (set device_target='CPU')
        runs: native (backend 'auto')
    """
    import sys

    from ms_fa.semantics.args import normalize

    if device_target is None:
        ms = sys.modules.get("mindspore")
        device_target = ms.get_context("device_target") if ms is not None else "CPU"
    args = normalize(query, key, value, head_num, input_layout, api="speed_fusion_attention", **options)
    return report(args, device_target)
