"""Showing the warnings the semantics layer computes (:attr:`ms_fa.semantics.args.AttnArgs.warnings`).

Each warning is ``"[rule] text"`` (the rules are declared in :mod:`ms_fa.semantics.rules`, class ``W``) and is
issued as :class:`MsFaWarning` at the *user's* line: the first frame outside ms_fa, torch and mindspore. Python's
default filter then shows a given warning once per call site, like FlexAttention's ``_warn_once`` but with no
cache of ours; filter one rule with e.g. ``warnings.filterwarnings("ignore", r"\\[sparse_mode\\.no_mask\\]")``.
In MindSpore GRAPH mode they are issued once, when the graph is compiled.
"""

from __future__ import annotations

import os
import sys
import warnings
from types import FrameType
from typing import Iterable, Optional

__all__ = ["MsFaWarning", "emit"]


class MsFaWarning(UserWarning):
    """A call ms_fa accepts whose result may surprise; the message starts with the warning's rule in brackets."""


_SKIP = tuple(os.path.dirname(os.path.abspath(p)) + os.sep for p in (__file__,))


def _is_internal(filename: str) -> bool:
    return (
        filename.startswith(_SKIP)
        or f"{os.sep}torch{os.sep}" in filename
        or (f"{os.sep}mindspore{os.sep}" in filename and f"{os.sep}ms_fa{os.sep}" not in filename)
        or filename.startswith("<frozen")
    )


def emit(messages: Iterable[str]) -> None:
    """Issue each ``"[rule] text"`` as :class:`MsFaWarning` at the first frame outside ms_fa / torch / mindspore."""
    messages = tuple(messages)
    if not messages:
        return
    level = 1
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None and _is_internal(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    for m in messages:
        warnings.warn(m, MsFaWarning, stacklevel=level + 1)
