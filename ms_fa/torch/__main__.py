"""``python -m ms_fa.torch shim-path`` | ``python -m ms_fa.torch run [--remap] script.py [args]``.

``shim-path`` prints the directory of ms_fa's ``torch_npu`` stand-in (prepend it to ``PYTHONPATH``; it then
reaches torchrun workers and subprocesses). ``run`` runs a script with the stand-in installed, as
``python script.py`` would (``--remap``: the "npu" device on the CPU, "hccl" on gloo).
"""

from __future__ import annotations

import os
import runpy
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m ms_fa.torch shim-path | run [--remap] script.py [args]"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "shim-path":
        from ms_fa.torch.shim import shim_path

        print(shim_path())
        return 0
    if cmd == "run":
        remap = False
        if rest and rest[0] == "--remap":
            remap, rest = True, rest[1:]
        if not rest:
            print(usage, file=sys.stderr)
            return 2
        from ms_fa.torch.shim import install, shim_path

        install(remap=remap or None)
        # children (torchrun workers, multiprocessing) find the stand-in too
        os.environ["PYTHONPATH"] = os.pathsep.join([shim_path()] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        if remap:
            os.environ["MS_FA_TORCH_NPU_REMAP"] = "1"
        sys.argv = rest
        sys.path.insert(0, os.path.dirname(os.path.abspath(rest[0])))
        runpy.run_path(rest[0], run_name="__main__")
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
