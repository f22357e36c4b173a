"""ms_fa.kernels -- compute backends behind the public API.

``cpu``: the blockwise CPU kernel (``ms_fa/_lib/libms_fa_cpu.so``) through ctypes; numpy in,
numpy out, same signatures as the reference oracle :mod:`ms_fa.semantics.reference`.
"""

from . import cpu  # noqa: F401  (importing loads no library; load_library() does)

__all__ = ["cpu"]
