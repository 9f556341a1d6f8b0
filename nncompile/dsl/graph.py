"""The graph a person builds: inputs, nodes, the base `Layer`, and the layers that merge nodes.

Calling a layer on nodes returns a node (``h = nn.Tanh()(nn.Dense(32)(x))``); a model is the
graph from its input nodes to one output node (`models.Model`).  Each node knows the layer
that made it, the nodes it read and its shape without the batch dimension: ``(features,)``
for vectors, ``(C, H, W)`` for images.  Shapes are checked at the call, so a mismatch is
reported where it is written.  Calling the same layer object twice shares its parameters.
"""
from __future__ import annotations

import itertools
import numbers
from typing import Sequence

from ..errors import ModelError
from .checks import identifier, positive_int

Shape = tuple[int, ...]
_calls = itertools.count(1)  # every call of every layer, in order: nodes sort topologically by it


def shape_of(value: object, what: str) -> Shape:
    """A node shape from an int (features) or a tuple of positive ints ((C, H, W) for images)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (positive_int(value, what),)
    if isinstance(value, (tuple, list)) and value and all(isinstance(d, numbers.Integral) for d in value):
        return tuple(positive_int(d, what) for d in value)
    raise ModelError(f"{what} must be a positive integer or a tuple of them such as (3, 32, 32), got {value!r}")


def shape_text(shape: Shape) -> str:
    """(N, 32) or (N, 3, 8, 8): a node's shape as people read it, with the batch dimension."""
    return "(N, " + ", ".join(str(d) for d in shape) + ")"


def size_of(shape: Shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


class Node:
    """A value of the model: the output of one call of `layer` on `inputs` (or a model input).

    ``a + b`` is ``nn.Add()(a, b)`` and ``a * b`` is ``nn.Multiply()(a, b)``.
    """

    def __init__(self, layer: "Layer | None", inputs: tuple["Node", ...], shape: Shape,
                 name: str | None = None) -> None:
        self.layer, self.inputs, self.shape, self.name = layer, inputs, shape, name
        self.seq = next(_calls)

    @property
    def is_input(self) -> bool:
        return self.layer is None

    def describe(self) -> str:
        """How a message names this node: its layer (by name once the model named it) or the input."""
        if self.is_input:
            return f"input {self.name!r}" if self.name else "the input"
        return f"the output of {self.layer.describe()}"

    def __add__(self, other: object) -> "Node":
        return Add()(self, other)

    def __mul__(self, other: object) -> "Node":
        return Multiply()(self, other)

    def __repr__(self) -> str:
        return f"<node {self.describe()} {shape_text(self.shape)}>"


def Input(shape: int | Sequence[int], name: str | None = None) -> Node:  # noqa: N802  (a constructor, as in Keras)
    """A model input of `shape` features (an int) or (C, H, W) for images; `name` is for messages."""
    checked = shape_of(shape, "Input shape")
    return Node(None, (), checked, None if name is None else identifier(name, "input name"))


class Layer:
    """Base class of every layer: called on nodes, it returns the node of its output.

    `kind` names a layer that gets a name of its own (dense1, add1, ...); `arity` is the
    number of nodes it takes (None: two or more).  A subclass gives `out_shape`, and
    `parameters` if it has any.
    """

    kind = "layer"
    named = True       # named by kind and first-call order (activations are named by their function)
    arity: int | None = 1

    def __init__(self, name: str | None = None) -> None:
        self.name = None if name is None else identifier(name, "layer name")

    def out_shape(self, *shapes: Shape) -> Shape:
        """Shape of the output (without the batch dimension) for inputs of these shapes."""
        return shapes[0]

    def parameters(self, shapes: tuple[Shape, ...]) -> tuple["Param", ...]:
        """The parameters (and buffers) this layer owns, for inputs of these shapes, in order."""
        return ()

    def spec(self) -> str:
        """Deterministic description, used in cache keys."""
        return f"{self.kind}:{self.name}"

    def describe(self) -> str:
        return self.name if self.name else repr(self)

    def __call__(self, *nodes: object) -> Node:
        for node in nodes:
            if not isinstance(node, Node):
                raise ModelError(f"{self.describe()} was called on {type(node).__name__}, not on a node: call layers "
                                 "on nn.Input(...) or on another layer's output")
        if self.arity is None and len(nodes) < 2:
            raise ModelError(f"{self.describe()} merges two or more nodes, got {len(nodes)}")
        if self.arity is not None and len(nodes) != self.arity:
            raise ModelError(f"{self.describe()} takes {self.arity} node{'s' if self.arity > 1 else ''}, "
                             f"got {len(nodes)}")
        return Node(self, tuple(nodes), self.node_shape(nodes))

    def node_shape(self, nodes: tuple[Node, ...]) -> Shape:
        """`out_shape` of the nodes' shapes (a merge overrides this to name the nodes that disagree)."""
        return self.out_shape(*(n.shape for n in nodes))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Param:
    """A parameter a layer declares: its name within the layer, shape, initialisation, role.

    `init` is "weight" (Xavier or He by the scheme), "zeros" or "ones"; `regularized` says
    whether l1/l2 apply; a buffer (`trainable=False`) is state the forward pass keeps, such
    as BatchNorm's running statistics: saved with the parameters, never given a gradient.
    """

    def __init__(self, name: str, shape: Shape, init: str, regularized: bool = False, trainable: bool = True) -> None:
        self.name, self.shape, self.init = name, shape, init
        self.regularized, self.trainable = regularized, trainable


class Merge(Layer):
    """Base of the layers that combine two or more nodes; a mismatch names both nodes and shapes."""

    arity = None

    def node_shape(self, nodes: tuple[Node, ...]) -> Shape:
        first = nodes[0]
        for node in nodes[1:]:
            if not self.fits(first.shape, node.shape):
                raise ModelError(f"{self.describe()} {self.needs}: {first.describe()} has shape "
                                 f"{shape_text(first.shape)} but {node.describe()} has {shape_text(node.shape)}")
        return self.out_shape(*(n.shape for n in nodes))

    needs = "needs nodes of the same shape"

    def fits(self, first: Shape, other: Shape) -> bool:
        return first == other


class Add(Merge):
    """a + b (+ ...): elementwise sum of nodes of one shape, a residual (skip) connection."""

    kind = "add"


class Multiply(Merge):
    """a ⊙ b (⊙ ...): elementwise product of nodes of one shape, e.g. a gate."""

    kind = "multiply"


class Concat(Merge):
    """[a, b, ...] joined along the feature axis (the channel axis for images)."""

    kind = "concat"
    needs = "joins nodes along axis 1 and needs every other axis equal"

    def fits(self, first: Shape, other: Shape) -> bool:
        return len(first) == len(other) and first[1:] == other[1:]

    def out_shape(self, *shapes: Shape) -> Shape:
        return (sum(s[0] for s in shapes), *shapes[0][1:])
