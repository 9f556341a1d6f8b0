"""The chain rule over a model: model -> Program IR.

`backprop` differentiates the model layer by layer (local derivatives from `symbolic`,
the matrix form of the chain rule) into forward, loss, backward and probe ops, and keeps
the records people read; `entrypoints` assembles them into the IR's functions (forward,
loss, loss_and_grad, diagnose, one step per optimizer); `ir` is the IR itself, which
imports nothing of the package.
"""
from .backprop import Derivation, derive

__all__ = ["Derivation", "derive"]
