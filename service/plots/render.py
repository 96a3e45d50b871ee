"""What every plot shares: the output formats, a fresh figure, the bytes, the log-scale rule.

Figures are built as ``matplotlib.figure.Figure`` objects and printed through the Agg (PNG)
or SVG canvas directly, never through ``pyplot``: pyplot keeps a global registry of figures
and a global "current figure", which is not safe under the API's thread pool; a ``Figure``
and its canvas are plain objects owned by one call.

Same data, same bytes. PNG from Agg is deterministic. SVG carries a date and random ids
(clip paths, glyphs) unless told otherwise: the date is dropped through ``metadata``, and
the ids are hashed with ``rcParams["svg.hashsalt"]`` — matplotlib reads that salt only from
the global ``rcParams`` (temporarily changing it with ``rc_context`` would race between
threads), so this module sets it once, before the first figure, and only if nobody else has
chosen one.

matplotlib is imported by the first plot, not with this module: it takes about half a second,
which every API, worker and CLI process would otherwise pay at start, plot or not. Every entry
point calls :func:`load_matplotlib` before it imports anything of matplotlib's: two threads
importing matplotlib's modules at once see each other's half-initialised modules
(``ImportError: cannot import name … from partially initialized module``), so the first import
is made whole, under a lock, in one thread.

Titles, axis labels and legends are plain text: names that users chose reach them (a sweep
named ``$\\frac{$``), and matplotlib would otherwise parse ``$…$`` as math, and fail on it.
Tick labels keep math text: the log axes write their powers of ten with it.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.text import Text

PlotFormat = Literal["svg", "png"]
PLOT_FORMATS: tuple[PlotFormat, ...] = ("svg", "png")
MEDIA_TYPES: dict[PlotFormat, str] = {"svg": "image/svg+xml", "png": "image/png"}

#: Figures are laid out for 8 in = 800 px at 100 px/in (text about 14 px high); PNGs are
#: rasterised at 150 dpi (1,200 px wide) so they stay sharp on high-density screens.
FIGURE_WIDTH_IN = 8.0
PNG_DPI = 150
#: A loss that spans more than this ratio (two decades) is drawn on a log axis.
LOG_SPAN = 100.0


_loading = threading.Lock()


def load_matplotlib() -> None:
    """Import every matplotlib module the plots use, in this thread while the others wait,
    and give SVG ids a fixed salt; at once after the first call."""
    with _loading:
        import matplotlib
        import matplotlib.axes
        import matplotlib.backends.backend_agg
        import matplotlib.backends.backend_svg
        import matplotlib.figure
        import matplotlib.ticker

        if matplotlib.rcParams["svg.hashsalt"] is None:
            matplotlib.rcParams["svg.hashsalt"] = "batchwise"


def new_figure(height_in: float) -> Figure:
    """A blank figure ``FIGURE_WIDTH_IN`` × ``height_in`` inches, laid out by matplotlib's
    constrained layout (labels and legends never clipped)."""
    load_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(FIGURE_WIDTH_IN, height_in), layout="constrained")


def figure_bytes(figure: Figure, fmt: PlotFormat) -> bytes:
    """``figure`` as SVG (text as paths, no date) or PNG (``PNG_DPI``) bytes, its titles,
    labels and legends drawn as plain text."""
    load_matplotlib()  # a figure made elsewhere than new_figure gets fixed ids too
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    _plain_text(figure)
    buffer = io.BytesIO()
    if fmt == "svg":
        FigureCanvasSVG(figure).print_figure(buffer, format="svg", metadata={"Date": None})
    elif fmt == "png":
        # No "Software" text chunk: nothing in the file names the library or its version.
        FigureCanvasAgg(figure).print_figure(
            buffer, format="png", dpi=PNG_DPI, metadata={"Software": None}
        )
    else:
        raise ValueError(f"unknown plot format {fmt!r}; expected one of {PLOT_FORMATS}")
    return buffer.getvalue()


def _plain_text(figure: Figure) -> None:
    """Draw every title, axis label and legend entry of ``figure`` literally: no math text
    (``$…$``), no TeX."""
    texts: list[Text] = []
    for ax in figure.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        legend = ax.get_legend()
        if legend is not None:
            texts += [*legend.get_texts(), legend.get_title()]
    for text in texts:
        text.set_usetex(False)
        text.set_parse_math(False)


def spans_decades(values: Iterable[float | None], ratio: float = LOG_SPAN) -> bool:
    """Whether the finite values are all positive and max/min exceeds ``ratio`` (a log axis
    then shows them better; a zero or negative value keeps the axis linear)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite or min(finite) <= 0.0:
        return False
    return max(finite) / min(finite) > ratio


__all__ = [
    "FIGURE_WIDTH_IN",
    "LOG_SPAN",
    "MEDIA_TYPES",
    "PLOT_FORMATS",
    "PNG_DPI",
    "PlotFormat",
    "figure_bytes",
    "load_matplotlib",
    "new_figure",
    "spans_decades",
]
