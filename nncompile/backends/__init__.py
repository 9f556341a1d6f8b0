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


def require(backend: ModuleType) -> None:
    """Raise BackendError (one line) unless `backend` can run here: the CUDA one needs CuPy and a GPU."""
    check = getattr(backend, "require", None)
    if check is not None:
        check()
