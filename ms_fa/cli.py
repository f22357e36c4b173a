"""``python -m ms_fa <command>``: demo | explain | run | info.

Each command lives in its own module and is imported only when used (MindSpore's import is slow).
"""

import importlib
import sys

COMMANDS = {
    "demo": ("ms_fa.demo", "train a small GPT-style model on CPU with the ms_fa layer, next to a naive twin"),
    "explain": ("ms_fa.explain", "show the effective mask, block plan and validation verdict of a call"),
    "run": ("ms_fa.mindspore.runner", "run a script with ms_fa.patch() active from the first kernel on"),
    "info": ("ms_fa.info", "the kernel variant this machine runs (AVX-512 / AVX2 / portable) and why"),
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = ["usage: python -m ms_fa <command> [args]", "", "commands:"]
        lines += [f"  {k:<8} {v[1]}" for k, v in COMMANDS.items()]
        print("\n".join(lines), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    mod = importlib.import_module(COMMANDS[argv[0]][0])
    return mod.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
