"""The training run as the report shows it: curves, learning rate, diagnostics heat map,
warnings in words, final metrics, settings and the confusion matrix.

Reads plain data only (the history records of `nc.train`, the command line's summary), so
`TrainResult._repr_html_` can use it without SymPy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .charts import ChartView, line_chart
from .confusion import ConfusionView
from .heatmap import HeatmapView, heatmap

METRIC_NAMES = {"accuracy": "accuracy", "binary_accuracy": "binary accuracy"}
SETS = (("train", "training"), ("val", "validation"), ("test", "test"))


@dataclass
class RunRecord:
    """What a run produced: one history record per epoch and what is known about its end."""

    history: list[dict]
    metric: str | None = None
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)          # "<set>_loss", "<set>_<metric>", "<set>_rows", ...
    confusion: ConfusionView | None = None
    best_epoch: int | None = None
    stopped_early: bool = False

    @classmethod
    def of(cls, result: object, metric: str | None = None, **extra: object) -> "RunRecord":
        """From a `TrainResult` (its program's metric unless given)."""
        if metric is None and getattr(result, "program", None) is not None:
            metric = result.program.module.METRIC
        return cls(list(result.history), metric, list(result.warnings), best_epoch=result.best_epoch,
                   stopped_early=result.stopped_early, **extra)


@dataclass(frozen=True)
class WarningView:
    """One problem the diagnostics reported: the epochs it was seen in, and its words."""

    first: int | None
    last: int | None
    active: bool                  # still reported at the last check
    layer: str
    message: str


@dataclass(frozen=True)
class RunView:
    """Everything the run section draws."""

    headline: str
    charts: tuple[ChartView, ...]
    heatmap: HeatmapView | None
    warnings: tuple[WarningView, ...]
    finals: tuple[tuple[str, str, str, str], ...]      # (set, rows, loss, metric)
    metric: str
    settings: tuple[tuple[str, str], ...]
    confusion: ConfusionView | None


def _series(history: list[dict], key: str) -> list[float | None]:
    return [r.get(key) for r in history]


def _charts(record: RunRecord) -> tuple[ChartView, ...]:
    history, metric = record.history, record.metric
    epochs = [r["epoch"] for r in history]
    charts = []
    loss = [("training", "train", _series(history, "loss"))]
    if any("val_loss" in r for r in history):
        loss.append(("validation", "val", _series(history, "val_loss")))
    charts.append(line_chart("chart-loss", "loss per epoch", epochs, loss))
    if metric and any(metric in r for r in history):
        series = [("training", "train", _series(history, metric))]
        if any(f"val_{metric}" in r for r in history):
            series.append(("validation", "val", _series(history, f"val_{metric}")))
        charts.append(line_chart("chart-metric", f"{METRIC_NAMES.get(metric, metric)} per epoch", epochs, series,
                                 percent=True))
    charts.append(line_chart("chart-lr", "learning rate per epoch", epochs,
                             [("learning rate", "lr", _series(history, "lr"))], log=False, height=170))
    return tuple(charts)


def _warnings(record: RunRecord) -> tuple[WarningView, ...]:
    """Each problem once: the epochs it was reported in, and its words; messages without a record kept as said."""
    seen: dict[tuple[str, str], list] = {}
    checks = [r for r in record.history if "warnings" in r]
    for r in checks:
        for w in r["warnings"]:
            key = (w["layer"], w["problem"])
            if key not in seen:
                seen[key] = [r["epoch"], r["epoch"], w["message"]]
            seen[key][1] = r["epoch"]
    last = checks[-1]["epoch"] if checks else None
    views = [WarningView(first, end, end == last, layer, message) for (layer, _), (first, end, message) in seen.items()]
    known = {v.message for v in views}
    views += [WarningView(None, None, False, "", m) for m in record.warnings if m not in known]
    return tuple(views)


def _finals(record: RunRecord) -> tuple[tuple[str, str, str, str], ...]:
    metric, rows = record.metric, []
    summary = record.summary
    if summary:
        for prefix, name in SETS:
            if f"{prefix}_loss" in summary:
                value = summary.get(f"{prefix}_{metric}") if metric else None
                rows.append((name, f"{summary.get(f'{prefix}_rows', '')}", f"{summary[f'{prefix}_loss']:.4f}",
                             "" if value is None else f"{100 * value:.2f}%"))
        return tuple(rows)
    last = record.history[-1] if record.history else {}
    for prefix, name in (("", "training (last epoch)"), ("val_", "validation (last epoch)")):
        if f"{prefix}loss" in last:
            value = last.get(f"{prefix}{metric}") if metric else None
            rows.append((name, "", f"{last[f'{prefix}loss']:.4f}", "" if value is None else f"{100 * value:.2f}%"))
    return tuple(rows)


def _headline(record: RunRecord) -> str:
    history = record.history
    updates = sum(r.get("updates", 0) for r in history)
    text = f"{len(history)} epochs, {updates:,} updates"
    if record.best_epoch is not None:
        text += f"; best validation loss at epoch {record.best_epoch}"
        text += " (stopped early, its weights restored)" if record.stopped_early else ""
    seconds = record.summary.get("seconds")
    if seconds is not None:
        text += f"; {seconds:.2f} s"
    return text


def run_view(record: RunRecord) -> RunView:
    """Everything the run section draws, from `record`."""
    settings = tuple((k, f"{v:g}" if isinstance(v, float) else str(v)) for k, v in record.settings.items()
                     if v is not None)
    return RunView(_headline(record), _charts(record), heatmap(record.history), _warnings(record), _finals(record),
                   METRIC_NAMES.get(record.metric or "", record.metric or ""), settings, record.confusion)


def run_html(record: RunRecord) -> str:
    """The run section alone, as a <div> (what Jupyter shows for a `TrainResult`)."""
    from .templating import render
    return render("run_fragment.html.j2", run=run_view(record))
