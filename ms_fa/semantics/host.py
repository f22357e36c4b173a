"""Reading call arguments on the host, whatever framework they come from (numpy, MindSpore, torch,
or shape-only stand-ins in MindSpore GRAPH mode)."""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["host_array", "is_int", "is_tensor", "ArraySpec"]


def host_array(x) -> Optional[np.ndarray]:
    """numpy view of ``x`` if its contents can be read on the host, else None (symbolic / device)."""
    try:
        if isinstance(x, np.ndarray):
            return x
        if hasattr(x, "asnumpy"):  # MindSpore Tensor
            return np.asarray(x.asnumpy())
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
            return x.detach().cpu().numpy()
        a = np.asarray(x)
        return None if a.dtype == object else a
    except Exception:  # noqa: BLE001 - abstract / graph-mode values
        return None


def is_tensor(x) -> bool:
    """``x`` has a shape and a dtype (an array, a tensor of any framework, or a shape stand-in)."""
    return hasattr(x, "shape") and hasattr(x, "dtype")


def is_int(v) -> bool:
    """``v`` is a Python or numpy int, and not a bool."""
    return not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, np.integer))


class ArraySpec:
    """A shape and dtype standing in for an array when only they matter (validation from shapes: MindSpore
    GRAPH mode, or float64 values validated as the float32 call they emulate)."""

    def __init__(self, shape, dtype):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"ArraySpec({self.shape}, {self.dtype})"


def as_float(v) -> float:
    """``float(v)``, with a Python int beyond float64's range as +-inf (``float()`` raises OverflowError), the
    value any cast to a float type gives."""
    try:
        return float(v)
    except OverflowError:
        return float("inf") if v > 0 else float("-inf")


def phys_memory() -> int:
    """This machine's physical memory in bytes (0 when the OS does not say)."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def check_memory(args, *inputs, scores: bool = False) -> None:
    """``[kernel.size]``: the outputs, the contiguous copies of strided inputs and (``scores``: the float64
    oracle) one batch's score matrices must fit this machine's memory. A stride-0 view of 2**40 rows is a
    valid call numpy cannot copy: without this, MemoryError (or the OOM killer) instead of a named error."""
    from .rules import Kernel

    rows = args.T1 if args.layout == "TND" else args.B * args.S1
    esz = np.dtype(getattr(inputs[0], "dtype", np.float32)).itemsize if inputs else 4
    need = rows * args.N1 * (args.Dv * max(esz, 2) + 2 * 8 * 4)
    need += sum(int(a.nbytes) for a in inputs if isinstance(a, np.ndarray) and not a.flags.c_contiguous)
    if scores:  # the oracle: (N1, S1, S2) float64 temporaries per batch, a few at a time
        need += 3 * args.N1 * args.S1 * args.S2 * 8
    phys = phys_memory()
    if phys and need > phys:
        Kernel.kernel__size.fail(
            f"this call needs about {need / 2**30:.1f} GiB for its outputs and copies, the machine has {phys / 2**30:.1f} GiB"
        )
