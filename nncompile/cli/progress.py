"""Progress display for `nncompile run`: tqdm bars over epochs and over each epoch's examples.

The epoch bar shows the latest loss, metric and validation loss; the inner bar counts the
examples of the current epoch, so tqdm reports the speed in examples per second.
Diagnostic warnings are printed above the bars (once each, when they first appear).
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

from ..runtime.diagnostics import headline, new_warnings


class Progress:
    """Callbacks for `nc.train`: `epoch(record)` after each epoch, `batch(rows)` after each update."""

    def __init__(self, epochs: int, rows: int, metric: str | None, disable: bool = False,
                 first_epoch: int = 0) -> None:
        self.epochs, self.rows, self.metric, self.disable = epochs, rows, metric, disable
        self.first_epoch = first_epoch
        self.bar: tqdm | None = None   # created at the first update, so errors before it print alone
        self.inner: tqdm | None = None
        self.active: list | None = None
        self.done_epochs = first_epoch
        self.examples = 0
        self.started = time.perf_counter()

    def _open(self) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.epochs, initial=self.first_epoch, unit="epoch", file=sys.stderr,
                            disable=self.disable, dynamic_ncols=True, position=0)
            # the per-example bar redraws many times an epoch: on a terminal only, not in logs
            self.inner = tqdm(total=self.rows, unit="ex", unit_scale=True, file=sys.stderr,
                              disable=self.disable or not sys.stderr.isatty(), dynamic_ncols=True, leave=False,
                              position=1, desc="examples")

    def batch(self, rows: int) -> None:
        if self.inner is None:
            self._open()
        self.examples += rows
        self.inner.update(rows)

    def epoch(self, record: dict) -> None:
        self._open()
        for warning in new_warnings(record, self.active) if "warnings" in record else ():
            self.write(f"warning: epoch {record['epoch']}: {warning['message']}")
        if "warnings" in record:
            self.active = record["warnings"]
        shown = {"loss": f"{record['loss']:.4f}"}
        if self.metric and self.metric in record:
            shown["acc"] = f"{100 * record[self.metric]:.1f}%"
        if "val_loss" in record:
            shown["val_loss"] = f"{record['val_loss']:.4f}"
        if "val_" + str(self.metric) in record:
            shown["val_acc"] = f"{100 * record['val_' + self.metric]:.1f}%"
        shown.update(headline(record.get("diagnostics", {})))
        shown["ex/s"] = f"{self.speed:,.0f}"
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)
        self.done_epochs = record["epoch"]
        self.inner.reset()

    def write(self, line: str) -> None:
        """A line above the bars (or plainly, when they are off)."""
        tqdm.write(line, file=sys.stderr)

    @property
    def speed(self) -> float:
        """Training examples per second so far."""
        return self.examples / max(time.perf_counter() - self.started, 1e-9)

    def close(self) -> None:
        for bar in (self.inner, self.bar):
            if bar is not None:
                bar.close()
