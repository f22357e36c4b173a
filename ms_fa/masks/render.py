"""Pictures of a 2-D bool mask (True = discarded): text (``x`` / ``.``, FlexAttention-style blocks for large
sizes) and a small PNG (matplotlib, Agg)."""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["render", "write_png"]


def render(m: np.ndarray, *, max_cells: int = 64, title: Optional[str] = None) -> str:
    """Text picture of a 2-D bool mask (True = discarded): ``x`` discarded, ``.`` kept. If a side
    is longer than ``max_cells`` it is shown in blocks: ``x`` all discarded, ``.`` all kept,
    ``+`` mixed (FlexAttention-style)."""
    m = np.asarray(m, dtype=bool)
    S1, S2 = m.shape
    lines = []
    if S1 <= max_cells and S2 <= max_cells:
        if title:
            lines.append(f"{title}   (x = discarded, . = kept)")
        lines += ["".join("x" if v else "." for v in row) for row in m]
        return "\n".join(lines)
    bs1 = -(-S1 // max_cells)
    bs2 = -(-S2 // max_cells)
    bs = max(bs1, bs2)
    if title:
        lines.append(f"{title}   (one cell = {bs}x{bs} block: x all discarded, . all kept, + mixed)")
    for i0 in range(0, S1, bs):
        row = []
        for j0 in range(0, S2, bs):
            blk = m[i0 : i0 + bs, j0 : j0 + bs]
            row.append("x" if blk.all() else ("." if not blk.any() else "+"))
        lines.append("".join(row))
    return "\n".join(lines)


def write_png(m: np.ndarray, path, *, title: Optional[str] = None, max_px: int = 256) -> str:
    """Write a 2-D bool mask as a small PNG (dark = discarded). Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = np.asarray(m, dtype=bool)
    S1, S2 = m.shape
    scale = max(S1, S2, 1)
    fig, ax = plt.subplots(figsize=(max(1.2, 2.4 * S2 / scale), max(1.2, 2.4 * S1 / scale)), dpi=80)
    ax.imshow(m, cmap="Greys", vmin=0, vmax=1.6, interpolation="nearest", aspect="equal")
    if S1 <= 32 and S2 <= 32:
        ax.set_xticks(np.arange(-0.5, S2, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, S1, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title if len(title) <= 40 else title[:37] + "...", fontsize=6)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, format="png")
    plt.close(fig)
    return str(path)
