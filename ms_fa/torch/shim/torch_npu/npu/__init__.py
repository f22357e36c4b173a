"""``torch_npu.npu`` on the CPU: the emulated generator (seed / offset of the fused-attention dropout) and
the device queries attention code and its tests make. The device is an emulated Atlas A2 named
``$MS_FA_NPU_DEVICE_NAME`` (default ``Ascend910B1``)."""

import os as _os

import torch as _torch

from ms_fa.torch.generator import default_generator as _gen
from ms_fa.torch.shim import remap_requested as _remap_requested


def is_available() -> bool:
    """False unless remap mode is on (then NPU code paths run on the CPU)."""
    return _remap_requested()


def device_count() -> int:
    return 1 if is_available() else 0


def get_device_name(device=None) -> str:
    return _os.environ.get("MS_FA_NPU_DEVICE_NAME", "Ascend910B1")


def current_device() -> int:
    return 0


def set_device(device) -> None:
    """Accepted and ignored (one emulated device)."""


def synchronize(device=None) -> None:
    """Nothing to wait for: the CPU kernels are synchronous."""


def is_initialized() -> bool:
    return True


def manual_seed(seed) -> None:
    _gen.manual_seed(int(seed))


def manual_seed_all(seed) -> None:
    _gen.manual_seed(int(seed))


def seed() -> None:
    _gen.manual_seed(int.from_bytes(_os.urandom(8), "little"))


def initial_seed() -> int:
    return _gen.initial_seed()


def get_rng_state(device="npu") -> _torch.Tensor:
    return _torch.frombuffer(bytearray(_gen.get_state()), dtype=_torch.uint8)


def set_rng_state(new_state, device="npu") -> None:
    _gen.set_state(bytes(new_state.to(_torch.uint8).tolist()))


def max_memory_allocated(device=None) -> int:
    return 0


def memory_allocated(device=None) -> int:
    return 0


def empty_cache() -> None:
    """Nothing cached."""


def set_compile_mode(jit_compile=False) -> None:
    """Accepted and ignored (an NPU graph-compilation switch)."""
