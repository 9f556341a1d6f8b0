"""The confusion matrix of a classifier, from its predictions on a held-out set at the end of a run."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def labels_of(targets: np.ndarray, classes: int) -> np.ndarray:
    """Integer class labels from labels (N,), one-hot or probability rows (N, K), or binary columns (N, 1)."""
    targets = np.asarray(targets)
    if targets.ndim == 2 and targets.shape[1] > 1:
        return targets.argmax(axis=1)
    flat = targets.reshape(-1)
    return (flat > 0.5).astype(np.int64) if classes == 2 and flat.dtype.kind == "f" else flat.astype(np.int64)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """counts[i, j]: examples of class i predicted as class j."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return counts


@dataclass(frozen=True)
class ConfusionCell:
    """One count of the matrix with its shading."""

    count: int
    css: str             # "diag", "off" or "zero"
    fill: str            # background: green on the diagonal, red off it, stronger for a larger share of the row


@dataclass(frozen=True)
class ConfusionView:
    """A confusion matrix to show: which set, cells row by row, recall per class, accuracy."""

    dataset: str
    rows: int
    cells: tuple[tuple[ConfusionCell, ...], ...]
    recall: tuple[float, ...]
    accuracy: float


def _cell(count: int, share: float, diagonal: bool) -> ConfusionCell:
    if count == 0:
        return ConfusionCell(0, "zero", "transparent")
    if diagonal:
        return ConfusionCell(count, "diag", f"rgba(21, 128, 61, {0.1 + 0.55 * share:.3f})")
    return ConfusionCell(count, "off", f"rgba(185, 28, 28, {0.15 + 0.75 * share:.3f})")  # any error is visible


def confusion_view(counts: np.ndarray, dataset: str) -> ConfusionView:
    """The matrix `counts` (true class by row) ready to show, with recall per class and accuracy."""
    totals = counts.sum(axis=1)
    shares = counts / np.maximum(totals, 1)[:, None]
    recall = np.diag(counts) / np.maximum(totals, 1)
    cells = tuple(tuple(_cell(int(counts[i, j]), float(shares[i, j]), i == j) for j in range(counts.shape[1]))
                  for i in range(counts.shape[0]))
    return ConfusionView(dataset, int(counts.sum()), cells, tuple(float(r) for r in recall),
                         float(np.trace(counts) / max(counts.sum(), 1)))
