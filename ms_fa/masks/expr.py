"""The mask language of ``python -m ms_fa explain --mask``: a safe evaluator of mask expressions such as
``CausalMask('bottom_right') & SlidingWindow(4, 0)``.

Only calls of the mask classes with int / str / None / list / tuple arguments (negative ints too),
joined by ``&``, are evaluated; anything else raises ``ValueError`` ``[explain.mask_expr]``. No
``eval``: the expression is parsed with :mod:`ast` and walked.
"""

from __future__ import annotations

import ast
from typing import NoReturn

from ms_fa.semantics.rules import Tools as R

__all__ = ["parse_mask"]


def _fail(msg: str) -> NoReturn:
    R.explain__mask_expr.fail(msg)


def _mask_namespace():
    from ms_fa.masks import objects as mo

    return {
        "CausalMask": mo.CausalMask,
        "SlidingWindow": mo.SlidingWindow,
        "PrefixLM": mo.PrefixLM,
        "Packed": mo.Packed,
    }


def parse_mask(expr: str):
    """Evaluate a mask expression with a restricted evaluator: calls of CausalMask / SlidingWindow /
    PrefixLM / Packed with int / str / None / list / tuple arguments (also negative ints), joined by
    ``&``. Anything else raises ``ValueError``."""
    from ms_fa.masks.objects import Mask

    ns = _mask_namespace()
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        _fail(f"cannot parse mask expression {expr!r}: {e.msg}")

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd):
            left, right = ev(node.left), ev(node.right)
            if not (isinstance(left, Mask) and isinstance(right, Mask)):
                _fail(f"& joins masks, got {type(left).__name__} & {type(right).__name__} in {expr!r}")
            return left & right
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ns:
            args = [ev(a) for a in node.args]
            kwargs = {k.arg: ev(k.value) for k in node.keywords if k.arg is not None}
            if len(kwargs) != len(node.keywords):
                _fail(f"**kwargs are not allowed in mask expressions, got {expr!r}")
            try:
                return ns[node.func.id](*args, **kwargs)
            except TypeError as e:
                if str(e).startswith("["):  # a named rule of the mask class (e.g. [mask.size]): keep it
                    raise
                _fail(f"{node.func.id}{tuple(args) if not kwargs else (tuple(args), kwargs)}: {e}")
        if (
            isinstance(node, ast.Constant)
            and (node.value is None or isinstance(node.value, (int, str)))
            and not isinstance(node.value, bool)
        ):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            v = ev(node.operand)
            if isinstance(v, int):
                return -v
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e) for e in node.elts]
        _fail(
            f"not allowed in a mask expression: {ast.dump(node)[:60]} "
            f"(use {', '.join(sorted(ns))}, numbers, strings, lists and &)"
        )

    out = ev(tree)
    if not isinstance(out, Mask):
        _fail(f"the expression must be a mask ({', '.join(sorted(ns))}, joined by &), got {type(out).__name__}")
    return out
