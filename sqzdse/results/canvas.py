"""The canvas every figure shares: an Agg figure without pyplot state, a title with a grey note, log ticks, saving.

matplotlib is imported when a figure is made, so importing the plotting modules stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqzdse.errors import InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def new_figure(width: float = 7.0, height: float = 4.5, **kw) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained", **kw)
    FigureCanvasAgg(fig)
    return fig


def titles(fig: Figure, ax, title: str, note: str, width: int = 110) -> None:
    """Title over the figure; the counts and caveats as a grey subtitle, wrapped to the figure's width."""
    import textwrap

    # Wrapped to the figure: a long list of studies would otherwise run off both edges.
    fig.suptitle("\n".join(textwrap.wrap(title, int(fig.get_figwidth() * 12))), fontsize=11)
    lines = [w for line in note.splitlines() for w in textwrap.wrap(line, width)]
    ax.set_title("\n".join(lines), fontsize=8.5, color="0.35")


def log_ticks(ax) -> None:
    """Plain-number labels on a log axis; within three decades the 2 and 5 ticks are labelled too."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_xlim()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    if hi / lo <= 1000:
        ax.xaxis.set_minor_locator(LogLocator(subs=(2, 5)))
        ax.xaxis.set_minor_formatter(plain)
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=8)


def check_figure_path(out: str | os.PathLike) -> Path:
    path = Path(out)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise InputError(f"{path}: the figure's format comes from its suffix; use one of {', '.join(FIGURE_SUFFIXES)}")
    return path


def save_figure(fig: Figure, out: str | os.PathLike, dpi: int = 150) -> Path:
    """Write `fig` as PNG, SVG or PDF, by the suffix of `out` (folders created)."""
    path = check_figure_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Date": None} if path.suffix.lower() in (".svg", ".pdf") else None)
    return path
