"""Writing the HTML report from the command line: after a run (with the confusion matrix of a
classifier on the held-out set) or for a model alone; one line says where it went."""
from __future__ import annotations

import sys

import numpy as np

from .errors import CliError


def write_page(path: str, html: str) -> None:
    """Write the page atomically and say where, in one line; one-line error if it cannot be written."""
    from ..report.page import write
    try:
        size = write(path, html)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None
    print(f"wrote the report to {path} ({size / 1024:,.0f} KB; opens from disk, needs no network)", file=sys.stderr)


def run_report(path: str, prog: object, result: object, summary: dict | None, settings: dict,
               held_out: tuple[str, np.ndarray, np.ndarray] | None, batch: int, note: str | None = None) -> None:
    """The page after a run: `held_out` (name, X, y) is the set the confusion matrix is computed on."""
    from ..report.page import build, page_html
    from ..report.runview import RunRecord
    confusion = None if held_out is None else classifier_confusion(prog, result.params, *held_out)
    record = RunRecord.of(result, prog.module.METRIC, settings=settings, summary=summary or {}, confusion=confusion)
    if note:
        record.warnings.append(note)
    options = prog.options if prog.backend == "numpy" else None
    write_page(path, page_html(build(prog.model, prog.derivation, record, batch, prog.backend, options)))


def classifier_confusion(prog: object, params: dict, name: str, X: np.ndarray, y: np.ndarray) -> object:
    """The confusion matrix of a classifier's predictions on (X, y); None for other models."""
    from ..report.confusion import confusion_matrix, confusion_view, labels_of
    metric, outputs = prog.module.METRIC, int(prog.module.OUTPUT_DIM)
    if metric == "accuracy":
        classes = outputs
    elif metric == "binary_accuracy" and outputs == 1:
        classes = 2
    else:
        return None
    predicted = np.asarray(prog.predict(params, X)).reshape(-1)
    return confusion_view(confusion_matrix(labels_of(y, classes), predicted, classes), name)
