"""ms_fa's torch_npu stand-in: the three ways to activate it, the refusal next to a real torch_npu, the API
attention code and its tests use, and remap mode (each in a fresh interpreter: activation is per process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, *, env=None, args=(), script=False, tmp_path=None, timeout=300):
    e = dict(os.environ)
    e.update(env or {})
    if script:
        path = tmp_path / "script.py"
        path.write_text(textwrap.dedent(code))
        cmd = [sys.executable, "-m", "ms_fa.torch", *args, str(path)]
    else:
        cmd = [sys.executable, "-c", textwrap.dedent(code)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=e, cwd=ROOT, timeout=timeout)
    return r


UNCHANGED_NPU_CODE = """
import torch
import torch_npu

assert torch_npu.__ms_fa_shim__
q = torch.randn(1, 2, 4, 8)
torch_npu.npu.manual_seed(7)
out = torch_npu.npu_fusion_attention(q, q, q, 2, "BNSD", keep_prob=0.5)
assert out[4:6] == (7, 0), out[4:6]
same = torch.ops.npu.npu_fusion_attention(q, q, q, 2, "BNSD", keep_prob=0.5, dropout_mask=None)
assert same[4:6] == (7, 12)
assert torch.npu.is_available() is False and torch.npu.get_device_name(0).startswith("Ascend910B")
state = torch_npu.npu.get_rng_state()
a = torch_npu.npu_fusion_attention(q, q, q, 2, "BNSD", keep_prob=0.5)[0]
torch_npu.npu.set_rng_state(state)
b = torch_npu.npu_fusion_attention(q, q, q, 2, "BNSD", keep_prob=0.5)[0]
assert torch.equal(a, b)
print("OK", torch_npu.__version__)
"""


def test_run_executes_unchanged_torch_npu_code(tmp_path):
    r = _run(UNCHANGED_NPU_CODE, script=True, args=("run",), tmp_path=tmp_path)
    assert r.returncode == 0 and "OK 2.13.0+ms_fa.cpu" in r.stdout, r.stderr[-3000:]


def test_shim_path_on_pythonpath(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ms_fa.torch", "shim-path"], capture_output=True, text=True, cwd=ROOT)
    path = r.stdout.strip()
    assert r.returncode == 0 and os.path.isfile(os.path.join(path, "torch_npu", "__init__.py"))
    r = _run(UNCHANGED_NPU_CODE, env={"PYTHONPATH": os.pathsep.join([path, ROOT])})
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


def test_install_from_python():
    r = _run("""
        import ms_fa.torch as mt
        mod = mt.install()
        import torch_npu, torch
        assert mod is torch_npu and mt.is_installed() and torch.npu is torch_npu.npu
        print("OK")
    """)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


def test_refuses_next_to_a_real_torch_npu(tmp_path):
    fake = tmp_path / "site" / "torch_npu"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('a real torch_npu would need CANN here')\n")
    r = _run(
        """
        import ms_fa.torch as mt, torch
        try:
            mt.install()
        except RuntimeError as e:
            print("REFUSED", str(e).split("]")[0] + "]")
        # and the npu namespace is left to the real torch_npu
        print("NPU_NS", hasattr(torch.ops.npu, "npu_fusion_attention"))
    """,
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), ROOT])},
    )
    assert "REFUSED [npu.shim_refused]" in r.stdout and "NPU_NS False" in r.stdout, r.stdout + r.stderr[-3000:]


def test_testing_helpers_follow_torch_npu():
    r = _run("""
        import ms_fa.torch as mt
        mt.install()
        import unittest, torch
        from torch_npu.testing.testcase import TestCase
        from torch_npu.testing.common_utils import SupportedDevices

        class T(TestCase):
            def test_rtol(self):
                x = torch.ones(1000, dtype=torch.float16)
                y = x.clone(); y[:1] = 1.5                      # 1 bad element of 1000 <= size * 1e-3: passes
                self.assertRtolEqual(x, y)
                y[:2] = 1.5                                     # 2 bad > 1: fails
                with self.assertRaises(AssertionError):
                    self.assertRtolEqual(x, y)
                with self.assertRaises(AssertionError):
                    self.assertRtolEqual(x, x.float())          # dtype error

            @SupportedDevices(["Ascend910B"])
            def test_on_910b(self):
                pass

            @SupportedDevices(["Ascend910_93"])
            def test_on_a3(self):
                pass

        res = unittest.TextTestRunner(verbosity=0).run(unittest.defaultTestLoader.loadTestsFromTestCase(T))
        print("RUN", res.testsRun, "FAIL", len(res.failures) + len(res.errors), "SKIP", len(res.skipped))
    """)
    assert "RUN 3 FAIL 0 SKIP 1" in r.stdout, r.stdout + r.stderr[-3000:]


@pytest.mark.parametrize("how", ["env", "run"])
def test_remap_mode(tmp_path, how):
    code = """
        import torch, torch_npu

        @torch.jit.script
        def scripted(x: torch.Tensor) -> torch.Tensor:      # TorchScript keeps working under the remap
            return x * 2

        dev = torch.device("npu:0")
        q = torch.randn(1, 2, 4, 8, device="npu").npu()
        k = torch.randn(1, 2, 4, 8).to("npu:0")
        assert q.device.type == "cpu" and k.device.type == "cpu" and torch.npu.is_available()
        out = torch_npu.npu_fusion_attention(q, k, k, 2, "BNSD")[0]
        assert torch.equal(scripted(out), out * 2)
        import torch.distributed as dist
        assert "hccl" in dist.Backend.backend_list
        print("OK", dev)
    """
    if how == "env":
        r = _run(code, script=True, args=("run",), tmp_path=tmp_path, env={"MS_FA_TORCH_NPU_REMAP": "1"})
    else:
        r = _run(code, script=True, args=("run", "--remap"), tmp_path=tmp_path)
    assert r.returncode == 0 and "OK cpu" in r.stdout, r.stderr[-3000:]  # torch.device("npu:0") is the CPU


def test_hccl_process_group_runs_on_gloo(tmp_path):
    """Remap: a 2-process torch.distributed job on loopback with backend "hccl" (gloo underneath)."""
    code = """
        import os, torch, torch.distributed as dist, torch.multiprocessing as mp, torch_npu

        def worker(rank):
            dist.init_process_group("hccl", init_method="tcp://127.0.0.1:29561", rank=rank, world_size=2)
            t = torch.ones(3, device="npu") * (rank + 1)
            dist.all_reduce(t)
            assert t.tolist() == [3.0, 3.0, 3.0]
            dist.destroy_process_group()

        if __name__ == "__main__":
            mp.spawn(worker, nprocs=2, join=True)
            print("OK")
    """
    r = _run(code, script=True, args=("run", "--remap"), tmp_path=tmp_path, timeout=240)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
