"""The mask language of ``python -m ms_fa explain --mask``: a safe evaluator of mask expressions such as
``CausalMask('bottom_right') & SlidingWindow(4, 0)``.

Only calls of the mask classes with int / str / None / list / tuple arguments (negative ints too),
joined by ``&``, are evaluated; anything else raises ``ValueError`` ``[explain.mask_expr]``. No
``eval``: the expression is parsed with :mod:`ast` and walked.
"""

from __future__ import annotations

import ast

__all__ = ["parse_mask"]


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
    ns = _mask_namespace()
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"[explain.mask_expr] cannot parse mask expression {expr!r}: {e.msg}") from None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd):
            return ev(node.left) & ev(node.right)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ns:
            args = [ev(a) for a in node.args]
            kwargs = {k.arg: ev(k.value) for k in node.keywords if k.arg is not None}
            if len(kwargs) != len(node.keywords):
                raise ValueError(f"[explain.mask_expr] **kwargs are not allowed in mask expressions, got {expr!r}")
            return ns[node.func.id](*args, **kwargs)
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
        raise ValueError(
            f"[explain.mask_expr] not allowed in a mask expression: {ast.dump(node)[:60]} "
            f"(use {', '.join(sorted(ns))}, numbers, strings, lists and &)"
        )

    return ev(tree)
