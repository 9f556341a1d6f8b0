"""Training curves as a PNG: loss and metric per epoch, training and validation.

matplotlib is an optional extra (``pip install 'nncompile[plot]'``), imported only when a
plot is asked for; without it `PlotUnavailable` says how to get it.  NumPy-free and
stdlib-only at import, so `nncompile generate` can embed this file in standalone scripts.
"""
import io


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib():
    """Raise PlotUnavailable, saying how to install it, when matplotlib cannot be imported."""
    try:
        from matplotlib.figure import Figure  # noqa: F401
        from matplotlib.ticker import MaxNLocator  # noqa: F401
    except ImportError:
        raise PlotUnavailable("plotting needs matplotlib, which is not installed: "
                              "pip install 'nncompile[plot]' (or pip install matplotlib)") from None


def render_png(history, metric, title):
    """PNG bytes of the curves in `history` (one record per epoch), via matplotlib's Agg backend."""
    require_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    epochs = [r["epoch"] for r in history]
    panels = [("loss", "loss", "val_loss")]
    if metric and any(metric in r for r in history):
        panels.append((metric.replace("_", " "), metric, "val_" + metric))
    fig = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    for i, (label, train_key, val_key) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), i)
        _curve(ax, epochs, history, train_key, "training")
        _curve(ax, epochs, history, val_key, "validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        if label == "loss" and all(r.get("loss", 1) > 0 for r in history):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _curve(ax, epochs, history, key, label):
    points = [(e, r[key]) for e, r in zip(epochs, history) if key in r]
    if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, label=label, marker="o" if len(points) < 30 else None, markersize=3)
