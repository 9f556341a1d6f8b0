"""nncompile: a compiler for neural-network training code.

A network declared with `nncompile.nn` is differentiated symbolically (SymPy, chain rule)
into an explicit backward graph, lowered to NumPy (or CUDA) source, loaded, and trained.
"""
__version__ = "0.1.0"

from . import nn  # noqa: E402
from .errors import (BackendError, DataError, DivergenceError, FormulaError, ModelError,  # noqa: E402
                     NncompileError, TrainingWarning)
from .program import CompiledProgram, compile  # noqa: E402,A004
from .rules import OPTIMIZERS, Optimizer  # noqa: E402
from .train import TrainResult, train  # noqa: E402

__all__ = ["nn", "compile", "train", "CompiledProgram", "TrainResult", "Optimizer", "OPTIMIZERS",
           "NncompileError", "ModelError", "FormulaError", "DataError", "BackendError", "DivergenceError",
           "TrainingWarning", "__version__"]
