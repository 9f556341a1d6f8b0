"""Backends: each turns a Program IR into source text; they see the IR only."""
from __future__ import annotations

from types import ModuleType

from ..errors import BackendError

BACKENDS = ("numpy", "cuda")


def get(name: str) -> ModuleType:
    """The backend module for `name`, imported on demand (the CUDA one needs no CuPy to render)."""
    if name == "numpy":
        from . import numpy as backend
    elif name == "cuda":
        try:
            from . import cuda as backend
        except ImportError as exc:
            raise BackendError(f"the cuda backend is not available: {exc}") from None
    else:
        raise BackendError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    return backend
