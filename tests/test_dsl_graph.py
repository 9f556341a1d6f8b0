"""Declaring functional models: nodes, merges, shared layers, names by kind and first call, one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

import nncompile as nc
from nncompile import ModelError, nn


def test_issue_example_declares_and_compiles() -> None:
    x = nn.Input(64)
    h = nn.Tanh()(nn.Dense(32)(x))
    r = nn.Tanh()(nn.Dense(32)(h))
    s = h + r
    assert isinstance(s.layer, nn.Add) and s.inputs == (h, r) and s.shape == (32,)
    g = h * r
    assert isinstance(g.layer, nn.Multiply)
    y = nn.Dense(10)(s)
    model = nn.Model(x, y, loss=nn.SoftmaxCrossEntropy(), l2=1e-4, name="resmlp")
    prog = nc.compile(model)
    assert prog.param_names == ["dense1.W", "dense1.b", "dense2.W", "dense2.b", "dense3.W", "dense3.b"]
    assert prog.trainable == prog.param_names and prog.buffers == []
    assert prog.forward(prog.init_params(0), np.ones((2, 64))).shape == (2, 10)


def test_layers_are_named_by_kind_in_the_order_of_their_first_call() -> None:
    x = nn.Input(3)
    late, early, named = nn.Dense(2), nn.Dense(3), nn.Dense(2, name="dense1")
    h = early(x)                       # called first, although declared second
    a = late(h)
    b = named(h)
    c = nn.Concat()(a, b)
    model = nn.Model(x, nn.Dense(1)(c + c), loss=nn.MSE())
    assert (early.name, late.name, named.name) == ("dense2", "dense3", "dense1")
    assert [layer.name for layer in model.layers] == ["dense2", "dense3", "dense1", "concat1", "add1", "dense4"]
    assert nc.compile(model).param_names[:2] == ["dense2.W", "dense2.b"]


def test_sequential_is_the_chain_model() -> None:
    seq = nn.Sequential(nn.Dense(4), nn.Tanh(), nn.Dense(2), input_dim=3, loss=nn.MSE(), name="chain")
    assert isinstance(seq, nn.Model) and len(seq.nodes) == 4 and seq.output_dim == 2
    x = nn.Input(3)
    model = nn.Model(x, nn.Dense(2)(nn.Tanh()(nn.Dense(4)(x))), loss=nn.MSE(), name="chain")
    p1, p2 = nc.compile(seq), nc.compile(model)
    params = p1.init_params(3)
    X, Y = np.random.default_rng(0).normal(size=(5, 3)), np.zeros((5, 2))
    assert p1.loss_and_grad(params, X, Y)[0] == p2.loss_and_grad(params, X, Y)[0]
    assert p1.source.replace("model 'chain'", "") == p2.source.replace("model 'chain'", "")


@pytest.mark.parametrize("build,message", [
    (lambda x: nn.Dense(3)(x) + nn.Dense(4)(x),
     r"Add\(\) needs nodes of the same shape: the output of Dense\(3\) has shape \(N, 3\) but the output of "
     r"Dense\(4\) has \(N, 4\)"),
    (lambda x: nn.Multiply()(nn.Dense(3)(x), x), r"the output of Dense\(3\) has shape \(N, 3\) but the input"),
    (lambda x: nn.Add()(x), "merges two or more nodes, got 1"),
    (lambda x: nn.Dense(3)(x, x), "takes 1 node, got 2"),
    (lambda x: nn.Tanh()(np.ones(3)), "tanh was called on ndarray, not on a node"),
    (lambda x: nn.Dense(3, in_features=7)(x), r"declared in_features=7 but it receives 5 features"),
    (lambda x: nn.Input(0), "Input shape must be a positive integer"),
    (lambda x: nn.Input((3, "a")), "Input shape must be"),
])
def test_bad_graphs_say_what_is_wrong(build: object, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        build(nn.Input(5))


def test_bad_models_say_what_is_wrong() -> None:
    x, other = nn.Input(3), nn.Input(2, name="extra")
    h = nn.Dense(2)(x)
    with pytest.raises(ModelError, match="depends on input 'extra' .*not among the model's inputs"):
        nn.Model(x, nn.Concat()(h, other), loss=nn.MSE())
    with pytest.raises(ModelError, match=r"input 2 \(input 'extra'\) is not used"):
        nn.Model([x, other], h, loss=nn.MSE())
    with pytest.raises(ModelError, match="must be an nn.Input"):
        nn.Model(h, h, loss=nn.MSE())
    with pytest.raises(ModelError, match="listed twice"):
        nn.Model([x, x], h, loss=nn.MSE())
    with pytest.raises(ModelError, match="at least one layer with parameters"):
        nn.Model(x, nn.Tanh()(x), loss=nn.MSE())
    shared = nn.Dense(2)
    a, b = shared(x), shared(other)
    with pytest.raises(ModelError, match=r"called on inputs of shape \(N, 3\) and of shape \(N, 2\)"):
        nn.Model([x, other], a + b, loss=nn.MSE())
    with pytest.raises(ModelError, match="name 'twin' is used twice"):
        y = nn.Dense(2, name="twin")(nn.Dense(2, name="twin")(x))
        nn.Model(x, y, loss=nn.MSE())
    with pytest.raises(ModelError, match="merges several nodes: build the model with nn.Model"):
        nn.Sequential(nn.Dense(2), nn.Add(), input_dim=2)
    with pytest.raises(ModelError, match="SoftmaxCrossEntropy takes logits"):
        nn.Model(x, nn.Softmax()(h), loss=nn.SoftmaxCrossEntropy())


def test_a_shared_layer_keeps_one_set_of_parameters() -> None:
    x = nn.Input(3)
    block = nn.Dense(3)
    y = block(nn.Tanh()(block(x)))
    prog = nc.compile(nn.Model(x, y, loss=nn.MSE(), name="twice"))
    assert prog.param_shapes == {"dense1.W": (3, 3), "dense1.b": (3,)}


def test_sequential_takes_an_input_shape() -> None:
    with pytest.raises(ModelError, match=r"dense1 takes \(N, features\) inputs, but its input has shape "
                                         r"\(N, 1, 2, 2\)"):
        nn.Sequential(nn.Dense(2), input_shape=(1, 2, 2), loss=nn.MSE())
    with pytest.raises(ModelError, match="input_dim=features or input_shape"):
        nn.Sequential(nn.Dense(2), input_dim=4, input_shape=(4,))
    seq = nn.Sequential(nn.Dense(2), input_shape=(4,), loss=nn.MSE())
    assert seq.input_dim == 4
