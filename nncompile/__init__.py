"""nncompile: a compiler for neural-network training code.

A network declared with `nncompile.nn` is differentiated symbolically (SymPy, chain rule)
into an explicit backward graph, lowered to NumPy (or CUDA) source, loaded, and trained.
This module is the public face; the stages live in the subpackages (see the README's
"How the code is laid out").
"""
from . import data, nn
from .dsl.modelfile import load_model
from .errors import (ArgumentError, BackendError, DataError, DistributedError, DivergenceError, FormulaError,
                     ModelError, NncompileError, TrainingWarning)
from .program import CompiledProgram, compile  # noqa: A004
from .symbolic.rules import OPTIMIZERS, Optimizer
from .train import TrainResult, train
from .version import __version__

__all__ = ["nn", "data", "compile", "train", "load_model", "CompiledProgram", "TrainResult", "Optimizer",
           "OPTIMIZERS", "NncompileError", "ModelError", "FormulaError", "DataError", "ArgumentError", "BackendError",
           "DivergenceError", "DistributedError", "TrainingWarning", "__version__"]
