"""The emulated NPU random generator behind torch_npu's dropout: ``torch_npu.npu.manual_seed`` and friends.

torch_npu draws the dropout stream of a call as ``(seed, offset) = philox_engine_inputs(10)`` of the NPU
default generator: the current (seed, offset), after which the offset advances by 10 rounded up to a
multiple of 4 (12). The hardware turns (seed, offset) into bits with its own Philox unit, which is not
public (docs/spec.md §4); ms_fa turns the same (seed, offset) into bits with its own generator
(``ms_fa.semantics.dropout``), the one the CPU kernel runs, so a forward, its backward and
``_npu_dropout_gen_mask(seed, offset)`` agree. The bits are ms_fa's, not the chip's.
"""

from __future__ import annotations

import threading
from typing import Tuple

__all__ = ["NpuGenerator", "default_generator"]


class NpuGenerator:
    """(seed, offset) state; thread-safe."""

    def __init__(self, seed: int = 0):
        self._lock = threading.Lock()
        self._seed = int(seed)
        self._offset = 0

    def manual_seed(self, seed: int) -> "NpuGenerator":
        with self._lock:
            self._seed, self._offset = int(seed) & 0xFFFFFFFFFFFFFFFF, 0
        return self

    def initial_seed(self) -> int:
        return self._seed

    def philox_engine_inputs(self, increment: int) -> Tuple[int, int]:
        """The current (seed, offset); then offset += increment rounded up to a multiple of 4."""
        with self._lock:
            out = (self._seed, self._offset)
            self._offset += (int(increment) + 3) // 4 * 4
        return out

    def get_state(self) -> bytes:
        with self._lock:
            return self._seed.to_bytes(8, "little") + self._offset.to_bytes(8, "little")

    def set_state(self, state: bytes) -> None:
        b = bytes(state)
        if len(b) != 16:
            from ms_fa.semantics.rules import R

            R.npu__rng_state.fail(f"an NPU generator state is 16 bytes (seed, offset), got {len(b)}")
        with self._lock:
            self._seed = int.from_bytes(b[:8], "little")
            self._offset = int.from_bytes(b[8:], "little")


default_generator = NpuGenerator()
