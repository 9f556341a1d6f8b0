"""What a person declares, under one name: ``from nncompile import nn``.

The classes live in `nncompile.dsl` (graph, layers, losses, models); this module is the
stable public path to them, as ``torch.nn`` is to PyTorch's modules.
"""
import difflib

from .dsl.graph import Add, Concat, Input, Layer, Multiply, Node
from .dsl.images import AvgPool2D, Conv2D, Flatten, MaxPool2D
from .dsl.layers import (Activation, BatchNorm, Dense, Dropout, Identity, LayerNorm, LeakyReLU, ReLU, Sigmoid, Softmax,
                         Softplus, Tanh)
from .dsl.losses import MSE, BinaryCrossEntropy, CrossEntropy, Loss, SoftmaxCrossEntropy
from .dsl.models import Model, Sequential

__all__ = ["Layer", "Dense", "Activation", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "Softplus", "Identity",
           "Softmax", "Loss", "MSE", "BinaryCrossEntropy", "CrossEntropy", "SoftmaxCrossEntropy", "Sequential",
           "Input", "Node", "Model", "Add", "Multiply", "Concat", "LayerNorm", "BatchNorm", "Dropout",
           "Conv2D", "MaxPool2D", "AvgPool2D", "Flatten"]


def __getattr__(name: str) -> object:
    """A misspelt name (`nn.Tanhh`, `nn.relu`): an AttributeError naming the closest one there is."""
    same = [known for known in __all__ if known.lower() == name.lower()]
    close = same or difflib.get_close_matches(name, __all__, n=1)
    hint = f" (did you mean nn.{close[0]}?)" if close else ""
    raise AttributeError(f"module 'nncompile.nn' has no attribute {name!r}{hint}")
