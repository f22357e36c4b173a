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
