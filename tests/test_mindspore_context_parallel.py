"""Context-parallel attention over MindSpore's collectives (issue 10, item 3): msrun with 2 and 4 CPU workers
on loopback, PYNATIVE and GRAPH; each worker (tests/models/cp_msrun.py) checks out, softmax statistics and
dq / dk / dv of ContextParallelAttention against the single-process op on the same global data (fp32, 1e-5
relative) for causal zigzag, a band with GQA, no mask, packed TND (sparse_mode 7 cuts), ALiBi with GQA and
packed TND with ALiBi and GQA (mode 8 cuts), and a small model trained over W ranks gives the loss curve of
one process."""

from __future__ import annotations

import glob
import os
import re
import socket
import subprocess
import sys

import pytest

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "cp_msrun.py")
N_CASES = 7  # six attention cases and the training loop


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("W", [2, 4])
def test_msrun_context_parallel(W, mode, tmp_path):
    pytest.importorskip("mindspore")
    bindir = os.path.dirname(sys.executable)
    env = dict(
        os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""), OMP_NUM_THREADS="1", MS_FA_NUM_THREADS="1"
    )
    msrun = os.path.join(bindir, "msrun")
    cmd = [msrun, f"--worker_num={W}", f"--local_worker_num={W}", "--master_addr=127.0.0.1", f"--master_port={_port()}",
           "--join=True", f"--log_dir={tmp_path}", MODEL, mode]  # fmt: skip
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    logs = "".join(open(f).read() for f in sorted(glob.glob(str(tmp_path / "worker_*.log"))))
    results = re.findall(r"^CP-RESULT rank=(\d+) (\S+) (.*)$", logs, re.M)
    assert p.returncode == 0, f"msrun rc {p.returncode}\n{p.stdout[-2000:]}\n{logs[-4000:]}"
    assert len(results) == W * N_CASES, logs[-4000:]
    bad = [r for r in results if r[2].split()[0] != "ok"]
    assert not bad, bad
