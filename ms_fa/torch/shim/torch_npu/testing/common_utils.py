"""``torch_npu.testing.common_utils`` on the CPU: ``SupportedDevices`` (skip unless the emulated device is listed)."""

import unittest
from functools import wraps

__all__ = ["SupportedDevices"]


def _device_name() -> str:
    import torch_npu

    name = torch_npu.npu.get_device_name(0)
    if name[:10] == "Ascend910_":
        return name[:12]
    if name.startswith("Ascend950"):
        return name[:9]
    return name[:10]


class SupportedDevices:
    """Decorator: run the test only on the listed devices (compared as torch_npu compares them)."""

    def __init__(self, supported_devices):
        self.supported_devices = supported_devices

    def __call__(self, fn):
        @wraps(fn)
        def run(slf, *args, **kwargs):
            name = _device_name()
            if name not in self.supported_devices:
                raise unittest.SkipTest(f"Only run on {self.supported_devices!r}, current device is {name}.")
            return fn(slf, *args, **kwargs)

        return run
