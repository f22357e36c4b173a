"""Activating ms_fa's ``torch_npu`` stand-in, and the opt-in device remap for script-style NPU tests.

The stand-in is the package directory ``ms_fa/torch/shim/torch_npu``: shipped inside ms_fa, never installed
as a distribution (so no ``torch.backends`` auto-load entry point), active only when asked:

- ``python -m ms_fa.torch shim-path`` prints the directory to prepend to ``PYTHONPATH`` (it then reaches
  torchrun workers and subprocesses);
- ``python -m ms_fa.torch run script.py [args]`` runs a script with it;
- :func:`install` from Python.

It refuses to activate where the real torch_npu is importable (an NPU machine: use the real one).

Remap mode (``MS_FA_TORCH_NPU_REMAP=1``, ``install(remap=True)`` or ``run --remap``) maps the device
``"npu"`` / ``"npu:i"`` and ``Tensor.npu()`` to the CPU, and the ``"hccl"`` process-group backend to gloo, so
that tests written for an NPU run unchanged. It is a ``TorchFunctionMode`` (``torch.*`` stay builtins, so
``torch.jit.script`` keeps working), not wrapped factories.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

__all__ = ["shim_path", "install", "is_installed", "remap", "remap_requested"]

_SHIM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")


def shim_path() -> str:
    """The directory holding the ``torch_npu`` stand-in (prepend it to ``PYTHONPATH``)."""
    return _SHIM_DIR


def _real_torch_npu():
    """The origin of a torch_npu that is not the stand-in, or None."""
    mod = sys.modules.get("torch_npu")
    if mod is not None:
        return None if getattr(mod, "__ms_fa_shim__", False) else getattr(mod, "__file__", "loaded")
    saved = list(sys.path)
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _SHIM_DIR]
        spec = importlib.util.find_spec("torch_npu")
    except (ImportError, ValueError):
        spec = None
    finally:
        sys.path[:] = saved
    return None if spec is None else (spec.origin or "namespace package")


def is_installed() -> bool:
    """The stand-in is the ``torch_npu`` of this process."""
    return getattr(sys.modules.get("torch_npu"), "__ms_fa_shim__", False)


def remap_requested() -> bool:
    return os.environ.get("MS_FA_TORCH_NPU_REMAP", "0").strip().lower() in ("1", "true", "yes", "on")


def install(remap: bool | None = None):
    """Make ms_fa's stand-in this process's ``torch_npu`` (and ``torch.npu``); returns the module.

    Args:
        remap (bool, optional): also map the "npu" device to the CPU and "hccl" to gloo (default:
            ``$MS_FA_TORCH_NPU_REMAP``).

    Raises:
        RuntimeError: ``[npu.shim_refused]`` the real torch_npu is importable here.
    """
    real = _real_torch_npu()
    if real is not None:
        raise RuntimeError(
            f"[npu.shim_refused] the real torch_npu is importable ({real}); ms_fa's CPU stand-in is for machines "
            "without it. On an NPU machine use the real torch_npu (ms_fa.torch then registers only torch.ops.ms_fa)"
        )
    if _SHIM_DIR not in sys.path:
        sys.path.insert(0, _SHIM_DIR)
    import torch_npu  # the stand-in

    if remap if remap is not None else remap_requested():
        globals()["remap"](True)
    return torch_npu


# --------------------------------------------------------------------------------------------------
# remap mode
# --------------------------------------------------------------------------------------------------
class _NpuToCpu(torch.overrides.TorchFunctionMode):
    """Every device argument naming the NPU becomes the CPU."""

    @staticmethod
    def _map(x):
        if isinstance(x, torch.device):
            return torch.device("cpu") if x.type == "npu" else x
        if isinstance(x, str) and (x == "npu" or x.startswith("npu:")):
            return "cpu"
        return x

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        args = tuple(self._map(a) for a in args)
        if "device" in kwargs:
            kwargs = dict(kwargs, device=self._map(kwargs["device"]))
        return func(*args, **kwargs)


_MODE = None


def _hccl_on_gloo(store, rank, size, timeout):
    import torch.distributed as dist

    return dist.ProcessGroupGloo(store, rank, size, timeout)


def remap(enable: bool = True) -> bool:
    """Turn the device remap on (or off); returns whether it is on."""
    global _MODE
    if enable and _MODE is None:
        import torch.distributed as dist

        # torch.device("npu:0") reaches the mode before it is parsed, so PrivateUse1 is not renamed: a renamed
        # backend without hooks would make torch.distributed look for an "npu" accelerator
        _MODE = _NpuToCpu()
        _MODE.__enter__()
        torch.Tensor.npu = lambda self, *a, **k: self  # type: ignore[attr-defined]
        if dist.is_available() and "hccl" not in dist.Backend.backend_list:
            dist.Backend.register_backend("hccl", _hccl_on_gloo, devices=["cpu"])
    elif not enable and _MODE is not None:
        _MODE.__exit__(None, None, None)
        _MODE = None
    return _MODE is not None
