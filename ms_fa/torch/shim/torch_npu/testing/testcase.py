"""``torch_npu.testing.testcase`` on the CPU: ``TestCase`` with torch_npu's ``assertRtolEqual`` and ``run_tests``.

``assertRtolEqual(x, y, prec=1e-4, prec16=1e-3)`` follows torch_npu's rule: shapes and dtypes must match;
bool tensors must be equal; bfloat16 pairs must satisfy ``allclose(rtol=atol=prec16)``; otherwise an
element passes when ``|y - x| <= p`` or ``|y - x| / (max(|x|, |y|) + tiny) <= p`` (``p`` = prec16 for float16,
prec else; NaNs must sit at the same places), and the comparison fails only when both the absolute and the
relative test fail for more than ``size * p`` elements.
"""

import os
import random
import unittest
from collections.abc import Sequence
from numbers import Number

import numpy as np
import torch

__all__ = ["TestCase", "run_tests"]


def run_tests():
    unittest.main()


class TestCase(unittest.TestCase):
    _precision = 1e-5
    maxDiff = None

    @property
    def precision(self):
        return self._precision

    @precision.setter
    def precision(self, prec):
        self._precision = prec

    def setUp(self):
        seed = int(os.getenv("SEED", "666"))
        torch.manual_seed(seed)
        random.seed(seed)

    def assertRtolEqual(self, x, y, prec=1.0e-4, prec16=1.0e-3, auto_trans_dtype=False, message=None):
        if isinstance(x, Sequence) and isinstance(y, Sequence):
            for a, b in zip(x, y):
                self.assertRtolEqual(a, b, prec, prec16, auto_trans_dtype, message)
            return
        if isinstance(x, torch.Tensor) and isinstance(y, Sequence):
            y = torch.as_tensor(y, dtype=x.dtype, device=x.device)
        elif isinstance(x, Sequence) and isinstance(y, torch.Tensor):
            x = torch.as_tensor(x, dtype=y.dtype, device=y.device)
        if torch.is_tensor(x) and torch.is_tensor(y):
            if auto_trans_dtype:
                x = x.to(y.dtype)
            if x.dtype == torch.bfloat16 and y.dtype == torch.bfloat16:
                if x.shape != y.shape:
                    self.fail("shape error!")
                if not torch.allclose(x.cpu(), y.cpu(), rtol=prec16, atol=prec16):
                    self.fail("result error!")
                return
            x, y = x.detach().cpu().numpy(), y.detach().cpu().numpy()
        elif isinstance(x, Number) and isinstance(y, Number):
            x, y = np.array(x), np.array(y)
        if x.shape != y.shape:
            self.fail("shape error")
        if x.dtype != y.dtype:
            self.fail("dtype error")
        if x.dtype == np.bool_:
            if not np.equal(x, y).all():
                self.fail("result error")
            return
        if x.dtype == np.float16:
            p, tiny = prec16, 6e-8
        elif x.dtype in (np.float32, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64):
            p, tiny = prec, 1e-9
        else:
            self.fail(f"unsupported dtype {x.dtype}")
        nan = np.isnan(x)
        if not np.equal(nan, np.isnan(y)).all():
            self.fail(message or "NaNs differ")
        diff = np.abs(np.where(nan, 0, y.astype(np.float64) - x.astype(np.float64)))
        deno = np.maximum(np.abs(x.astype(np.float64)), np.abs(y.astype(np.float64)))
        bad_abs = ~(diff <= p)
        bad_rel = ~(diff / (deno + tiny) <= p)
        if bad_abs.any() and bad_rel.any() and bad_rel.sum() > x.size * p and bad_abs.sum() > x.size * p:
            self.fail(message or "result error")
