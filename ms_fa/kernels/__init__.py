"""ms_fa.kernels -- compute backends behind the public API.

``abi``: the kernel problem (``FaScalars`` / ``FaProblem`` of ``ms_fa/csrc/fa_kernel.h``) and the one marshaller
from a validated call to it; ``library``: finding and loading the C++ library and its instruction-set variant;
``cpu``: the blockwise CPU kernel through ctypes -- numpy in, numpy out, the signatures of the reference oracle
:mod:`ms_fa.semantics.reference`.
"""

from . import cpu  # noqa: F401  (importing loads no library; load_library() does)

__all__ = ["cpu"]
