"""Line charts for the training run, as geometry for inline SVG: axes, ticks, polylines.

Ticks are "nice" numbers (1, 2 or 5 times a power of ten); a series spanning more than
`LOG_SPAN` (a loss falling from 2 to 0.01) is drawn on a log scale with ticks at powers of
ten.  Values are mapped to pixels by `Scale`, whose `inverse` reads them back (the tests
check the curves that way).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

WIDTH, HEIGHT = 460.0, 250.0
MARGIN = {"left": 58.0, "right": 14.0, "top": 28.0, "bottom": 38.0}
LOG_SPAN = 30.0        # max/min above this: log scale
MAX_MARKERS = 100      # points with a hover title, per series
KEY_WIDTH = 95.0       # room for one series' key above the plot


def nice_step(span: float, count: int) -> float:
    """A step of 1, 2 or 5 times a power of ten giving about `count` intervals over `span`."""
    raw = span / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Tick values covering [lo, hi] at a nice step, starting and ending on multiples of it."""
    if not hi > lo:
        lo, hi = (lo - 1, hi + 1) if lo == 0 else (lo - abs(lo) * 0.1, hi + abs(hi) * 0.1)
    step = nice_step(hi - lo, count)
    first = math.floor(lo / step + 1e-9) * step
    ticks = []
    value = first
    while value < hi + step * (1 - 1e-9):
        ticks.append(round(value / step) * step)
        value += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi] (with 2 and 5 between them when the range is under two decades)."""
    first, last = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    last = max(last, first + 1)
    mantissas = (1, 2, 5) if last - first <= 2 else (1,)
    ticks = [m * 10.0 ** e for e in range(first, last) for m in mantissas] + [10.0 ** last]
    inside = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    below = [t for t in ticks if t < lo * (1 - 1e-9)] if not inside or inside[0] > lo * (1 + 1e-9) else []
    above = [t for t in ticks if t > hi * (1 + 1e-9)] if not inside or inside[-1] < hi * (1 - 1e-9) else []
    return below[-1:] + inside + above[:1]


@dataclass(frozen=True)
class Scale:
    """Maps data values in [lo, hi] onto pixels [start, end] (end may be smaller: SVG's y grows down)."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def _t(self, value: float) -> float:
        if self.log:
            return (math.log10(value) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return (value - self.lo) / (self.hi - self.lo)

    def __call__(self, value: float) -> float:
        return self.start + self._t(value) * (self.end - self.start)

    def inverse(self, pixel: float) -> float:
        """The value drawn at `pixel`."""
        t = (pixel - self.start) / (self.end - self.start)
        if self.log:
            return 10.0 ** (math.log10(self.lo) + t * (math.log10(self.hi) - math.log10(self.lo)))
        return self.lo + t * (self.hi - self.lo)


@dataclass(frozen=True)
class Tick:
    """A tick at pixel `pos` with its label."""

    pos: float
    label: str


@dataclass(frozen=True)
class Marker:
    """A point of a series with a hover title."""

    x: float
    y: float
    title: str


@dataclass(frozen=True)
class SeriesView:
    """One curve: its points as SVG wants them, and its markers."""

    name: str
    css: str                 # "train", "val", "lr": colour and dash by CSS
    points: str              # SVG polyline points
    markers: tuple[Marker, ...]


@dataclass(frozen=True)
class ChartView:
    """A chart: size, plot box, ticks, curves and the scales that placed them."""

    id: str
    title: str
    width: float
    height: float
    left: float
    top: float
    right: float
    bottom: float
    xticks: tuple[Tick, ...]
    yticks: tuple[Tick, ...]
    series: tuple[SeriesView, ...]
    xlabel: str
    log: bool
    xscale: Scale
    yscale: Scale

    @property
    def keys(self) -> tuple[tuple[SeriesView, float], ...]:
        """Each series with the x of its key, the keys right-aligned above the plot."""
        return tuple((s, self.right - KEY_WIDTH * (len(self.series) - i)) for i, s in enumerate(self.series))


def _label(value: float, percent: bool, step: float) -> str:
    if percent:
        digits = max(0, -math.floor(math.log10(step * 100) + 1e-9)) if step > 0 else 0
        return f"{100 * value:.{digits}f}%"
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.0e}"


def line_chart(chart_id: str, title: str, epochs: list[int], series: list[tuple[str, str, list[float | None]]],
               percent: bool = False, log: bool | None = None, fmt: str = "{:.4g}",
               height: float = HEIGHT) -> ChartView:
    """A chart of `series` (name, css class, one value per epoch, None where missing) against `epochs`.

    `log=None` picks a log scale when every value is positive and they span more than LOG_SPAN.
    """
    values = [v for _, _, vs in series for v in vs if v is not None and math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if log is None:
        log = lo > 0 and hi / lo > LOG_SPAN
    left, top = MARGIN["left"], MARGIN["top"]
    right, bottom = WIDTH - MARGIN["right"], height - MARGIN["bottom"]
    count = max(2, round((height - MARGIN["top"] - MARGIN["bottom"]) / 40))
    if log:
        ticks = log_ticks(lo, hi)
        yscale = Scale(ticks[0], ticks[-1], bottom, top, log=True)
        yticks = tuple(Tick(yscale(t), _label(t, percent, t)) for t in ticks)
    else:
        ticks = nice_ticks(lo, hi, count)
        yscale = Scale(ticks[0], ticks[-1], bottom, top)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        yticks = tuple(Tick(yscale(t), _label(t, percent, step)) for t in ticks)
    first, last = (epochs[0], epochs[-1]) if epochs else (1, 1)
    xscale = Scale(first, last if last > first else first + 1, left, right)
    xt = [t for t in nice_ticks(first, max(last, first + 1), 6) if first <= t <= max(last, first + 1)]
    xticks = tuple(Tick(xscale(t), f"{t:g}") for t in xt if float(t).is_integer())
    views = []
    for name, css, vs in series:
        pts = [(xscale(e), yscale(v), e, v) for e, v in zip(epochs, vs)
               if v is not None and math.isfinite(v) and (not log or v > 0)]
        markers = tuple(Marker(x, y, f"{name}, epoch {e}: " + (f"{100 * v:.2f}%" if percent else fmt.format(v)))
                        for x, y, e, v in pts) if len(pts) <= MAX_MARKERS else ()
        views.append(SeriesView(name, css, " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in pts), markers))
    return ChartView(chart_id, title, WIDTH, height, left, top, right, bottom, xticks, yticks, tuple(views),
                     "epoch", log, xscale, yscale)
