"""`nncompile generate`: a standalone training program for a model, needing only NumPy (or CuPy).

The script is the backend's rendering of the Program IR plus the text of
`nncompile/runtime.py` (initialisation, batching, the epoch loop and a command line),
embedded verbatim; it imports nothing from nncompile.  Output is deterministic: the
same model gives the same bytes on every run and machine.
"""
from __future__ import annotations

from pathlib import Path

from . import backends, runtime
from .derive import derive
from .nn import Sequential


def runtime_source() -> str:
    """The runtime module's text, as embedded in scripts."""
    return Path(runtime.__file__).read_text(encoding="utf-8").rstrip("\n") + "\n"


def standalone(model: Sequential, backend: str = "numpy", dtype: str = "float64",
               filename: str = "train.py") -> str:
    """Source of a standalone training script for `model`."""
    be = backends.get(backend)
    program = derive(model, dtype).program
    return be.render_script(program, runtime_source(), filename)
