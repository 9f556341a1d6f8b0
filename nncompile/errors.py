"""Errors a person can cause, each carrying one line that names the problem.

The CLI prints ``str(error)`` and exits non-zero; the API raises these as they are.
Anything else escaping is a bug in nncompile, not a user error.
"""
from __future__ import annotations


class NncompileError(ValueError):
    """Base class: a problem in what the user gave us (model, formula, data, flags)."""


class FormulaError(NncompileError):
    """A formula string or expression that is not allowed or does not parse."""


class ModelError(NncompileError):
    """A model declaration that is inconsistent (shapes, names, layer order)."""


class DataError(NncompileError):
    """Data that does not fit the model or cannot be trained on (NaN, ragged, labels)."""


class ArgumentError(NncompileError, TypeError):
    """A keyword argument the function does not take (a TypeError too, as Python's own are)."""


class BackendError(NncompileError):
    """A backend that cannot be used here (unknown name, missing CuPy or GPU)."""


class DivergenceError(NncompileError):
    """Training produced a NaN or infinite loss; ``result`` holds the last good state."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class DistributedError(NncompileError):
    """Data-parallel training cannot start or go on: no MPI, more processes than rows, a lost process.

    ``lost`` names the processes (ranks) that stopped answering, if that is what happened, and
    ``reporter`` is the rank that says so (the others stay quiet, so that one line is printed).
    """

    def __init__(self, message: str, lost: tuple[int, ...] = (), reporter: int | None = None) -> None:
        super().__init__(message)
        self.lost, self.reporter = tuple(lost), reporter


class TrainingWarning(UserWarning):
    """A diagnostic finding during training (saturated or dead units, vanishing gradients, ...)."""
