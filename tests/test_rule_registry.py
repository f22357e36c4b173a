"""Every rule ms_fa raises is registered once (``ms_fa.semantics.rules.ALL_RULES``) with the exception it
is raised with, and listed in docs/validation.md (issue 13: "docs/validation.md lists every rule").

The scan reads the source: every ``fail(Exc, "name", ...)`` / ``_fail`` / ``_usage`` call and every
``raise Exc(f"[name] ...")`` in ``ms_fa/**.py``, and every ``"[name]`` string in the C++ sources.
Computed names (``rule(f"{x}.type")``) go through :func:`ms_fa.semantics.rules.rule`, which raises
KeyError for an unregistered one -- the bad-input suite (tests/test_bad_input.py) would report that.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

from ms_fa.semantics import rules

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXCS = {"TypeError": TypeError, "ValueError": ValueError, "RuntimeError": RuntimeError}


def _const(node, prefix=False):
    """A literal string; with ``prefix``, the literal start of an f-string too (computed names: None)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return node.values[0].value if prefix or len(node.values) == 1 else None
    return None


def python_sites():
    """``{(name, exc name): [file:line, ...]}`` of the rule names raised with a literal name."""
    sites: dict = {}
    for path in sorted((ROOT / "ms_fa").rglob("*.py")):
        if path.name == "rules.py":
            continue
        for n in ast.walk(ast.parse(path.read_text())):
            if not isinstance(n, ast.Call):
                continue
            fn = getattr(n.func, "id", None) or getattr(n.func, "attr", None)
            name = exc = None
            if fn in ("fail", "_fail") and len(n.args) >= 2 and isinstance(n.args[0], ast.Name):
                name, exc = _const(n.args[1]), n.args[0].id
            elif fn == "_usage" and n.args:
                name, exc = _const(n.args[0]), "ValueError"
            elif fn in EXCS and n.args:
                s = _const(n.args[0], prefix=True)
                m = re.match(r"\[([A-Za-z_0-9.]+)\] ", s or "")
                name, exc = (m.group(1), fn) if m else (None, None)
            if name and exc in EXCS and "{" not in name:
                sites.setdefault((name, exc), []).append(f"{path.relative_to(ROOT)}:{n.lineno}")
    return sites


def test_scan_finds_the_rules():
    sites = python_sites()
    assert len(sites) > 80, len(sites)  # the scan itself works (it must see the families)


def test_every_python_rule_is_registered_with_its_exception():
    bad = []
    for (name, exc), where in sorted(python_sites().items()):
        if name not in rules.rule_names():
            bad.append(f"{name}: not registered ({where[0]})")
        elif EXCS[exc] not in rules.rule(name).excs:
            bad.append(f"{name}: raised as {exc} at {where[0]}, declared {rules.rule(name).excs}")
    assert not bad, "\n".join(bad)


def test_every_c_rule_is_registered():
    names = set()
    for path in (ROOT / "ms_fa" / "csrc").glob("*.[ch]*"):
        names |= set(re.findall(r'"\[([A-Za-z_0-9.]+)\]', path.read_text()))
    assert names
    assert names <= set(rules.rule_names()), sorted(names - set(rules.rule_names()))


def test_docs_list_every_rule_once():
    doc = (ROOT / "docs" / "validation.md").read_text().splitlines()
    for r in rules.ALL_RULES:
        rows = [ln for ln in doc if ln.startswith(f"| `{r.name}` |")]
        assert len(rows) == 1, r.name
        assert all(e.__name__ in rows[0] for e in r.excs), r.name


def test_two_exception_rule_must_be_told_which():
    r = rules.rule("mask.size")
    with pytest.raises(TypeError, match=r"^\[mask.size\] x$"):
        r.fail("x", TypeError)
    with pytest.raises(RuntimeError, match="say which"):
        r.fail("x")
    with pytest.raises(RuntimeError, match="declared with"):
        rules.rule("mask.align").fail("x", TypeError)
