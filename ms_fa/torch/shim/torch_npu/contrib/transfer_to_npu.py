"""``torch_npu.contrib.transfer_to_npu`` on the CPU. The real module rewrites CUDA calls to the NPU; here the
"NPU" is the CPU: importing it turns remap mode on (ms_fa.torch.shim) and answers torch.cuda's memory queries as
torch_npu.npu's (0), so CUDA-flavoured NPU scripts run unchanged."""

import torch as _torch

from ms_fa.torch.shim import remap as _remap

from .. import npu as _npu

_remap(True)
for _name in ("max_memory_allocated", "memory_allocated", "max_memory_reserved", "memory_reserved"):
    setattr(_torch.cuda, _name, lambda device=None: 0)
_torch.cuda.reset_peak_memory_stats = lambda device=None: None
_torch.cuda.empty_cache = _npu.empty_cache
