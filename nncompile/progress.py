"""Progress display for `nncompile run`: a tqdm bar over epochs with loss and metric."""
from __future__ import annotations

import sys

from tqdm import tqdm


class EpochBar:
    """Callback for `nc.train`: advances one step per epoch and shows the latest numbers."""

    def __init__(self, epochs: int, metric: str | None, disable: bool = False) -> None:
        self.metric, self.epochs, self.disable = metric, epochs, disable
        self.bar: tqdm | None = None  # created at the first epoch, so errors before it print alone

    def update(self, record: dict) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.epochs, unit="epoch", file=sys.stderr, disable=self.disable,
                            dynamic_ncols=True)
        shown = {"loss": f"{record['loss']:.4f}"}
        if self.metric and self.metric in record:
            shown["acc"] = f"{100 * record[self.metric]:.1f}%"
        if "val_loss" in record:
            shown["val_loss"] = f"{record['val_loss']:.4f}"
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
