"""Shared look of every figure: the paper-size style (:data:`STYLE`) that :func:`styled` applies
while a figure is built, :func:`save_figure` (PNG + PDF, atomically), and :class:`RunLabel`, the
model, data and certification a run's figure titles name. Figures are built without pyplot and
styled through ``matplotlib.rc_context``, so importing this neither picks a backend nor changes
global settings.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

# Paper size: one column ≈ 3.4 in, two ≈ 7 in; fonts stay readable when the PDF is scaled to it.
STYLE = {"figure.dpi": 150, "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
         "legend.fontsize": 7, "figure.titlesize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7}
#: kept (light grey) → removed (dark red): the "removed at λ̂" panel of the heat map
REMOVED_CMAP = LinearSegmentedColormap.from_list("removed", ["#e6e6e6", "#b2182b"])

F = TypeVar("F", bound=Callable[..., Any])


def styled(build: F) -> F:
    """Decorator for a function that builds and returns a :class:`Figure` (or None): it runs
    under :data:`STYLE`, and the figure is laid out before the style is left (tick labels are
    created lazily at the first draw, which would otherwise happen outside the style)."""

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            fig = build(*args, **kwargs)
            if fig is not None:
                fig.draw_without_rendering()
                # The layout is final: freeze it, so that each save (PNG, PDF, and the tight-bbox
                # pass of each) draws once instead of re-running the constrained-layout solver.
                fig.set_layout_engine("none")
            return fig

    return wrapper  # type: ignore[return-value]


def save_figure(fig: Figure, out_dir: Path, stem: str, formats: tuple[str, ...] | list[str] = ("png", "pdf")) -> list[str]:
    """Write ``<stem>.<format>`` for each format atomically (a reader never sees half a figure);
    returns the paths, in ``formats``' order. A figure made with pyplot is closed afterwards.
    The layout was fixed when the figure was built (:func:`styled`); the tight bounding box
    keeps wide legends and subtitles that constrained layout lets overhang the canvas."""
    from ..cache import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with matplotlib.rc_context(STYLE):
        for ext in formats:
            p = out_dir / f"{stem}.{ext}"
            atomic_write(p, lambda tmp, ext=ext: fig.savefig(tmp, format=ext, bbox_inches="tight"))
            paths.append(str(p))
    if getattr(fig.canvas, "manager", None) is not None:  # a caller's pyplot figure: free it
        import matplotlib.pyplot as plt

        plt.close(fig)
    return paths


@dataclass(frozen=True)
class RunLabel:
    """What every figure of a run names: who was pruned, on which data, certified how."""

    model: str
    dataset: str
    loss: str
    bound: str
    fwer: str
    criterion: str
    alpha: float
    delta: float
    scope: str = "global"
    structure: str = "unstructured"
    synthetic: bool = False

    def title(self) -> str:
        """Two lines: the model, data and pruning family; the loss, bound, FWER, α and δ."""
        data = f"{self.dataset} (SYNTHETIC data)" if self.synthetic else self.dataset
        scope = "" if self.scope == "global" else f" ({self.scope})"
        family = f"{self.structure} {self.criterion} pruning{scope}"
        return (f"{self.model} on {data} · {family}\n"
                f"loss {self.loss} · bound {self.bound} · FWER {self.fwer} · "
                f"α = {self.alpha:g}, δ = {self.delta:g}")


def _legend_below(fig: Figure, ax: Any, ncol: int = 2, extra: Any = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if extra is not None:
        more = extra.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)
