"""PyTorch as an independent oracle: a model's loss computed by torch ops, differentiated by autograd.

`loss_and_grad(model, params, X, Y)` interprets the model's graph node by node with torch
operations (torch's own LayerNorm, batch norm, losses) on float64 tensors and asks autograd
for the gradients, so nothing of nncompile's derivation is involved.  Test-only: PyTorch
is never a dependency of the package, and tests that use this module skip where it is absent.
"""
from __future__ import annotations

import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F

from nncompile import nn

ACTIVATIONS = {
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "softplus": F.softplus,
    "identity": lambda z: z,
}


def _activation(layer: nn.Activation):
    name = layer.function.name
    if name == "leaky_relu":
        return lambda z: F.leaky_relu(z, layer.alpha)
    if name in ACTIVATIONS:
        return ACTIVATIONS[name]
    x = sp.Symbol("x", real=True)
    expr = layer.function.expr.xreplace({s: x for s in layer.function.expr.free_symbols})
    return sp.lambdify(x, expr, modules=[{"sign": torch.sign, "Heaviside": lambda u, h=0: (u > 0).double()},
                                         torch])


def _node(layer: object, ins: list, params: dict, masks: dict, node_index: int):
    """One node's value from its inputs' values (torch tensors)."""
    if isinstance(layer, nn.Dense):
        return ins[0] @ params[f"{layer.name}.W"] + params[f"{layer.name}.b"]
    if isinstance(layer, nn.Activation):
        return _activation(layer)(ins[0])
    if isinstance(layer, nn.Softmax):
        return torch.softmax(ins[0], dim=1)
    if isinstance(layer, nn.Add):
        return sum(ins[1:], ins[0])
    if isinstance(layer, nn.Multiply):
        out = ins[0]
        for other in ins[1:]:
            out = out * other
        return out
    if isinstance(layer, nn.Concat):
        return torch.cat(ins, dim=1)
    kind = type(layer).__name__
    if kind == "LayerNorm":
        return F.layer_norm(ins[0], ins[0].shape[1:], params[f"{layer.name}.gamma"], params[f"{layer.name}.beta"],
                            layer.eps)
    if kind == "BatchNorm":
        running_mean = params[f"{layer.name}.running_mean"].detach().clone()
        running_var = params[f"{layer.name}.running_var"].detach().clone()
        out = F.batch_norm(ins[0], running_mean, running_var, params[f"{layer.name}.gamma"],
                           params[f"{layer.name}.beta"], training=True, momentum=layer.momentum, eps=layer.eps)
        masks[f"{layer.name}.running"] = (running_mean, running_var)
        return out
    if kind == "Dropout":
        keep = torch.as_tensor(masks[node_index], dtype=torch.float64)
        return ins[0] * keep / (1 - layer.p)
    if kind in IMAGE_LAYERS:
        return IMAGE_LAYERS[kind](layer, ins[0], params)
    raise NotImplementedError(f"no torch interpretation of {kind}")


#: The image layers as torch.nn.functional computes them (cross-correlation, zero padding, floor-free shapes).
IMAGE_LAYERS = {
    "Conv2D": lambda layer, x, params: F.conv2d(x, params[f"{layer.name}.W"], params[f"{layer.name}.b"],
                                                stride=layer.stride, padding=layer.padding),
    "MaxPool2D": lambda layer, x, params: F.max_pool2d(x, layer.kernel, layer.stride),
    "AvgPool2D": lambda layer, x, params: F.avg_pool2d(x, layer.kernel, layer.stride),
    "Flatten": lambda layer, x, params: torch.flatten(x, 1),
}


def forward(model: nn.Model, params: dict, X: list, masks: dict | None = None) -> torch.Tensor:
    """The model's output for inputs X (a list of tensors, one per input)."""
    masks = {} if masks is None else masks
    values: dict[int, torch.Tensor] = {}
    for index, node in enumerate(model.nodes):
        if node.is_input:  # an image input given flat is read row-major
            given = X[model.inputs.index(node)]
            values[id(node)] = given.reshape(given.shape[0], *node.shape) if len(node.shape) > 1 else given
        else:
            values[id(node)] = _node(node.layer, [values[id(n)] for n in node.inputs], params, masks, index)
    return values[id(model.output)]


def loss_of(model: nn.Model, out: torch.Tensor, T: torch.Tensor, params: dict) -> torch.Tensor:
    """The contract's losses, means over the batch, with the l1/l2 penalties on Dense and Conv2D weights."""
    loss = model.loss
    if isinstance(loss, nn.SoftmaxCrossEntropy):
        value = -(T * torch.log_softmax(out, dim=1)).sum() / out.shape[0]
    elif isinstance(loss, nn.CrossEntropy):
        value = -(T * torch.log(out)).sum() / out.shape[0]
    elif isinstance(loss, nn.BinaryCrossEntropy):
        value = F.binary_cross_entropy(out, T)
    elif isinstance(loss, nn.MSE):
        value = F.mse_loss(out, T)
    else:
        raise NotImplementedError(f"no torch loss for {loss.name}")
    for layer in (layer for layer in model.layers if type(layer).__name__ in ("Dense", "Conv2D")):
        W = params[f"{layer.name}.W"]
        value = value + model.l2 / 2 * (W**2).sum() + model.l1 * W.abs().sum()
    return value


def loss_and_grad(model: nn.Model, params: dict[str, np.ndarray], X: object, T: np.ndarray,
                  masks: dict | None = None) -> tuple[float, dict[str, np.ndarray], dict]:
    """(loss, gradients of every trainable parameter, extras such as BatchNorm's updated running statistics).

    T is the encoded target matrix (one-hot rows for cross-entropy), as `prog.prepare` gives it.
    """
    tensors = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad="running" not in k)
               for k, v in params.items()}
    inputs = X if isinstance(X, (list, tuple)) else [X]
    Xt = [torch.tensor(np.asarray(x, dtype=np.float64)) for x in inputs]
    extras = {} if masks is None else dict(masks)
    out = forward(model, tensors, Xt, extras)
    value = loss_of(model, out, torch.tensor(T, dtype=torch.float64), tensors)
    value.backward()
    grads = {k: t.grad.numpy() for k, t in tensors.items() if t.grad is not None}
    return float(value.detach()), grads, extras
