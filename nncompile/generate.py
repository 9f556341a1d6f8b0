"""`nncompile generate`: a standalone training program for a model, needing only NumPy (or CuPy).

The script is the backend's rendering of the Program IR plus the text of the NumPy-only
runtime modules (`RUNTIME_MODULES`: initialisation, batching, the epoch loop, data-parallel
training, checkpoints, diagnostics, plots and the command line), embedded verbatim; it
imports nothing from nncompile.  Output is deterministic: the same model gives the same
bytes on every run and machine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import backends, runtime
from .derive.backprop import derive
from .dsl.models import Sequential
from .symbolic.rules import Optimizer

#: NumPy-only modules a script embeds, in this order (later ones use names of earlier ones).
RUNTIME_MODULES = ("engine.py", "batches.py", "loop.py", "distributed.py", "checkpoint.py", "diagnostics.py", "plot.py",
                   "script.py")
_RULE = "# " + "-" * 82


def runtime_source() -> str:
    """The runtime modules' text, each under a banner naming its file, as embedded in scripts."""
    folder = Path(runtime.__file__).parent
    parts = []
    for name in RUNTIME_MODULES:
        text = (folder / name).read_text(encoding="utf-8").rstrip("\n")
        parts.append(f"{_RULE}\n# nncompile/runtime/{name}, embedded verbatim.\n{_RULE}\n{text}\n")
    return "\n\n".join(parts)


def standalone(model: Sequential, backend: str = "numpy", dtype: str = "float64",
               filename: str = "train.py", optimizers: Sequence[Optimizer] = ()) -> str:
    """Source of a standalone training script for `model` (with any extra optimizer rules)."""
    be = backends.get(backend)
    program = derive(model, dtype, optimizers).program
    return be.render_script(program, runtime_source(), filename)
