"""Diagnostics over the epochs as a heat map: one row per layer and measure, one column per check.

Fractions (saturated, dead, linear units) shade from light grey at 0 to red at 1;
gradient norms, which span decades, shade by log10 between the smallest and largest norm
of the run, light to dark blue.  Every cell carries its value as a hover title.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

CELL_W, CELL_H, LABEL_W, TOP = 16.0, 18.0, 190.0, 34.0
FRACTION_RGB = (185, 28, 28)
NORM_RGB = (29, 78, 216)


@dataclass(frozen=True)
class Cell:
    """One coloured cell with its value as a hover title."""

    x: float
    y: float
    fill: str
    title: str


@dataclass(frozen=True)
class RowLabel:
    """The label of one row (layer and measure)."""

    y: float
    text: str


@dataclass(frozen=True)
class HeatmapView:
    """The heat map: size, row labels, labelled columns, cells, the epochs checked."""

    width: float
    height: float
    rows: tuple[RowLabel, ...]
    columns: tuple[tuple[float, str], ...]     # (x centre, epoch) for labelled columns
    cells: tuple[Cell, ...]
    epochs: tuple[int, ...]
    cell_width: float = CELL_W - 1       # a 1 px white gap between cells
    cell_height: float = CELL_H - 1


def shade(t: float, rgb: tuple[int, int, int], base: int = 243) -> str:
    """`rgb` mixed with light grey (`base`): t = 0 the grey, t = 1 the full colour (clipped to [0, 1])."""
    t = min(max(t, 0.0), 1.0)
    r, g, b = (round(base + (c - base) * t) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def _measures(report: dict) -> list[tuple[str, str, str]]:
    """(layer, key, label) rows for one diagnostics report, in layer order."""
    rows = []
    for layer, r in report.items():
        if "kind" in r:
            key = "dead" if r["kind"] == "rectifier" else "saturated"
            rows += [(layer, key, f"{layer} {r['activation']}: {key}"), (layer, "linear", f"{layer}: linear")]
        rows.append((layer, "grad_norm", f"{layer}: gradient norm"))
    return rows


def heatmap(history: list[dict]) -> HeatmapView | None:
    """The heat map of every diagnostics check in `history`, or None when there was none."""
    checks = [r for r in history if "diagnostics" in r]
    if not checks:
        return None
    rows = _measures(checks[-1]["diagnostics"])
    norms = [r["diagnostics"][layer]["grad_norm"] for r in checks for layer, key, _ in rows if key == "grad_norm"
             and layer in r["diagnostics"]]
    positive = [math.log10(v) for v in norms if v > 0 and math.isfinite(v)]
    lo, hi = (min(positive), max(positive)) if positive else (0.0, 1.0)
    cells = []
    for j, record in enumerate(checks):
        x = LABEL_W + j * CELL_W
        for i, (layer, key, label) in enumerate(rows):
            value = record["diagnostics"].get(layer, {}).get(key)
            if value is None:
                continue
            if key == "grad_norm":
                t = (math.log10(value) - lo) / (hi - lo) if value > 0 and math.isfinite(value) and hi > lo else 1.0
                fill, text = shade(0.15 + 0.85 * t, NORM_RGB), f"{value:.3g}"
            else:
                fill, text = shade(value, FRACTION_RGB), f"{100 * value:.1f}%"
            cells.append(Cell(x, TOP + i * CELL_H, fill, f"epoch {record['epoch']}, {label}: {text}"))
    every = max(1, math.ceil(len(checks) / 10))
    columns = tuple((LABEL_W + (j + 0.5) * CELL_W, str(r["epoch"])) for j, r in enumerate(checks)
                    if j % every == 0 or j == len(checks) - 1)
    labels = tuple(RowLabel(TOP + (i + 0.7) * CELL_H, label) for i, (_, _, label) in enumerate(rows))
    return HeatmapView(LABEL_W + len(checks) * CELL_W + 10, TOP + len(rows) * CELL_H + 8, labels, columns,
                       tuple(cells), tuple(r["epoch"] for r in checks))
