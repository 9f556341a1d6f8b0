"""Models: `Model`, the graph from input nodes to an output node with a loss, and `Sequential`, the chain.

Declaring one checks its graph, shapes and names.  A model is plain data that `derive`
turns into a program: this module knows the layers, the losses and the registry, and
nothing of the later stages.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from ..errors import ModelError
from .checks import identifier, non_negative, positive_int
from .graph import Input, Layer, Node, Shape, shape_of, shape_text, size_of
from .images import Conv2D
from .layers import Activation, Dense, Softmax
from .losses import BinaryCrossEntropy, CrossEntropy, Loss, SoftmaxCrossEntropy


class Model:
    """A functional model: every node from `inputs` to `output`, and the loss on `output`.

    ``nn.Model(x, y, loss=nn.SoftmaxCrossEntropy(), l2=1e-4, name="resmlp")``; with a list
    of inputs, X is a list of arrays in that order.  Checks at declaration: the output is
    reached from the inputs and from nothing else, every input is used, a layer called
    more than once gets inputs of one shape (its parameters are shared), names are unique
    identifiers, the loss fits the output, l1/l2 >= 0.  Layers without a name are named by
    kind and the order of their first call: dense1, dense2, add1, layernorm1, ...
    """

    def __init__(self, inputs: Node | Sequence[Node], output: Node, loss: Loss | None = None,
                 l1: float = 0.0, l2: float = 0.0, name: str = "model") -> None:
        self.name = identifier(name, "model name")
        self.inputs = _checked_inputs(inputs)
        if not isinstance(output, Node):
            raise ModelError(f"the model's output must be a node (a layer's output), got {type(output).__name__}")
        self.output = output
        self.l1 = non_negative(l1, "l1")
        self.l2 = non_negative(l2, "l2")
        if loss is not None and not isinstance(loss, Loss):
            raise ModelError(f"loss must be an nncompile loss such as nn.MSE(), got {type(loss).__name__}")
        self.loss = loss
        self.nodes = _reachable(output)
        self._check_inputs_used()
        self.layers = _layers_in_call_order(self.nodes)
        name_layers(self.layers)
        self._check_shared_calls()
        self.check_names()
        if not any(layer.parameters(tuple(n.shape for n in self.node_of(layer).inputs)) for layer in self.layers):
            raise ModelError("a model needs at least one layer with parameters (Dense, Conv2D, LayerNorm, "
                             "BatchNorm, ...)")
        if len(output.shape) != 1:
            raise ModelError(f"the model's output has shape {shape_text(output.shape)}: a loss needs (N, outputs); "
                             "flatten it first")
        self._check_loss()

    # -- what later stages read ----------------------------------------------------------------
    @property
    def input_shapes(self) -> tuple[Shape, ...]:
        return tuple(node.shape for node in self.inputs)

    @property
    def input_dim(self) -> int:
        """Columns of X: every input's features, flattened row-major and joined in input order."""
        return sum(size_of(shape) for shape in self.input_shapes)

    @property
    def output_dim(self) -> int:
        return self.output.shape[0]

    @property
    def dense_layers(self) -> tuple[Dense, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, Dense))

    def node_of(self, layer: Layer) -> Node:
        """The node of `layer`'s first call."""
        return next(node for node in self.nodes if node.layer is layer)

    def consumers(self, node: Node) -> list[Node]:
        """Nodes that read `node`, in call order (a node reading it twice appears twice)."""
        return [user for user in self.nodes for inp in user.inputs if inp is node]

    def spec(self) -> str:
        """Deterministic description of everything that determines the generated code."""
        index = {id(node): i for i, node in enumerate(self.nodes)}
        parts = [f"model:{self.name}", f"inputs:{[index[id(n)] for n in self.inputs]}", f"l1:{self.l1!r}",
                 f"l2:{self.l2!r}"]
        for i, node in enumerate(self.nodes):
            what = "input" if node.is_input else node.layer.spec()
            parts.append(f"{i}:{what}:{node.shape}<-{[index[id(n)] for n in node.inputs]}")
        parts.append(self.loss.spec() if self.loss else "loss:none")
        return "\n".join(parts)

    def check_names(self) -> None:
        """Every name that reaches generated code is a plain identifier (checked again at compile,
        so a name changed after declaration cannot slip through)."""
        identifier(self.name, "model name")
        for layer in self.layers:
            if layer.name is not None:
                identifier(layer.name, "layer name")
            if isinstance(layer, Activation):
                identifier(layer.function.name, "activation name")
        if self.loss is not None:
            identifier(self.loss.name, "loss name")

    # -- checks ---------------------------------------------------------------------------------
    def _check_inputs_used(self) -> None:
        declared = {id(node) for node in self.inputs}
        for node in self.nodes:
            if node.is_input and id(node) not in declared:
                raise ModelError(f"the output depends on {node.describe()} {shape_text(node.shape)}, which is not "
                                 "among the model's inputs")
        reached = {id(node) for node in self.nodes}
        for i, node in enumerate(self.inputs, 1):
            if id(node) not in reached:
                raise ModelError(f"input {i} ({node.describe()}) is not used to compute the output")

    def _check_shared_calls(self) -> None:
        first: dict[int, Node] = {}
        for node in self.nodes:
            if node.is_input:
                continue
            seen = first.setdefault(id(node.layer), node)
            shapes, before = [n.shape for n in node.inputs], [n.shape for n in seen.inputs]
            if shapes != before and node.layer.parameters(tuple(before)):
                raise ModelError(f"{node.layer.describe()} is called on inputs of shape "
                                 f"{', '.join(map(shape_text, before))} and of shape "
                                 f"{', '.join(map(shape_text, shapes))}: a layer called twice shares its parameters, "
                                 "so its inputs need one shape")

    def _check_loss(self) -> None:
        if self.loss is None or self.output.is_input:
            return
        last = self.output.layer
        if isinstance(self.loss, SoftmaxCrossEntropy):
            if isinstance(last, Softmax):
                raise ModelError("SoftmaxCrossEntropy takes logits but the last layer is Softmax: "
                                 "use CrossEntropy, or drop the Softmax layer")
        elif isinstance(self.loss, CrossEntropy) and isinstance(last, Dense):
            raise ModelError(f"CrossEntropy expects probabilities but the last layer {last.name} "
                             "gives logits: add nn.Softmax() or use nn.SoftmaxCrossEntropy()")
        elif isinstance(self.loss, BinaryCrossEntropy) and isinstance(last, Dense):
            raise ModelError(f"BinaryCrossEntropy expects probabilities but the last layer {last.name} "
                             "gives logits: add nn.Sigmoid()")

    def __repr__(self) -> str:
        return (f"Model({len(self.inputs)} input(s), {len(self.nodes)} nodes, loss={self.loss!r}, "
                f"name={self.name!r})")


class Sequential(Model):
    """A stack of layers applied in order to inputs of width `input_dim` (or shape `input_shape`):
    the chain `Model`.

    Checks at declaration: layer types, widths (`Dense(in_features=...)` against what it
    receives), unique identifier names, the loss against the last layer, l1/l2 >= 0.
    Dense layers without a name become dense1, dense2, ...
    """

    def __init__(self, *layers: Layer | Iterable[Layer], input_dim: int | None = None,
                 input_shape: Sequence[int] | None = None, loss: Loss | None = None,
                 l1: float = 0.0, l2: float = 0.0, name: str = "model") -> None:
        flat: list[Layer] = []
        for item in layers:
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
        for i, layer in enumerate(flat, 1):
            if not isinstance(layer, Layer):
                raise ModelError(f"layer {i} is {type(layer).__name__}, not an nncompile layer "
                                 "(Dense, an activation or Softmax)")
            if layer.arity != 1:
                raise ModelError(f"layer {i} ({layer.describe()}) merges several nodes: build the model with "
                                 "nn.Model(inputs, output) instead of nn.Sequential")
        if not any(isinstance(layer, (Dense, Conv2D)) for layer in flat):
            raise ModelError("a model needs at least one Dense or Conv2D layer")
        identifier(name, "model name")
        if (input_dim is None) == (input_shape is None):
            raise ModelError("give Sequential input_dim=features or input_shape=(C, H, W), one of them")
        shape = (positive_int(input_dim, "input_dim"),) if input_shape is None else shape_of(input_shape, "input_shape")
        name_layers(flat, refuse_repeats=True)
        node = x = Input(shape)
        for layer in flat:
            node = layer(node)
        self.sequence = tuple(flat)
        super().__init__(x, node, loss=loss, l1=l1, l2=l2, name=name)
        self.layers = self.sequence

    @property
    def widths(self) -> tuple[int, ...]:
        """The flat width of every layer's output, in order."""
        return tuple(size_of(node.shape) for node in self.nodes[1:])

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner}, input_dim={self.input_dim}, loss={self.loss!r}, name={self.name!r})"


def name_layers(layers: Sequence[Layer], refuse_repeats: bool = False) -> None:
    """Give unnamed layers kind + count names (dense1, add1, ...) in the given order; refuse a name
    used by two layers (or, for a chain, a layer object listed twice)."""
    owner: dict[str, Layer] = {}
    for layer in layers:
        if layer.name is not None:
            if layer.name in owner and (owner[layer.name] is not layer or refuse_repeats):
                raise ModelError(f"layer name {layer.name!r} is used twice")
            owner[layer.name] = layer
    counts: dict[str, int] = {}
    for layer in layers:
        if not layer.named or layer.name is not None:
            continue
        while True:
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            candidate = f"{layer.kind}{counts[layer.kind]}"
            if candidate not in owner:
                break
        layer.name = candidate
        owner[candidate] = layer
    if refuse_repeats:
        seen: set[int] = set()
        for layer in layers:
            if layer.named and id(layer) in seen:
                raise ModelError(f"layer name {layer.name!r} is used twice")
            seen.add(id(layer))


def _checked_inputs(inputs: object) -> tuple[Node, ...]:
    listed = tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)
    if not listed:
        raise ModelError("a model needs at least one input node (nn.Input(features))")
    for i, node in enumerate(listed, 1):
        if not isinstance(node, Node) or not node.is_input:
            what = type(node).__name__ if not isinstance(node, Node) else node.describe()
            raise ModelError(f"model input {i} must be an nn.Input(...) node, got {what}")
    if len({id(n) for n in listed}) != len(listed):
        raise ModelError("a model input is listed twice")
    return listed


def _reachable(output: Node) -> tuple[Node, ...]:
    """Every node the output depends on, in call order (a topological order: inputs come first)."""
    seen: dict[int, Node] = {}
    stack = [output]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen[id(node)] = node
            stack.extend(node.inputs)
    return tuple(sorted(seen.values(), key=lambda n: n.seq))


def _layers_in_call_order(nodes: tuple[Node, ...]) -> tuple[Layer, ...]:
    found: dict[int, Layer] = {}
    for node in nodes:
        if not node.is_input:
            found.setdefault(id(node.layer), node.layer)
    return tuple(found.values())
