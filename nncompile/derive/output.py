"""The loss at the model's output, and the first δ of the backward pass.

The loss is composed with the output layer and simplified symbolically where that gives
a cheaper, stabler δ: σ + BCE gives σ(z) − t, softmax + cross-entropy gives p − t (the
output activation is then skipped by the walk, and the δ lands on its input); after any
other layer the δ is ∂l/∂(output).  Everything is scaled by 1/N once here (and by the
learning rate for plain SGD, through `GSCALE`), so every gradient comes out as a mean.
"""
from __future__ import annotations

import sympy as sp

from ..dsl.layers import Activation, Softmax
from ..dsl.losses import CrossEntropy, SoftmaxCrossEntropy
from ..symbolic import calculus
from ..symbolic.functions import symbol
from ..symbolic.notation import LOSS, SumAll, equation, softmax, tensor
from ..symbolic.rules import ACTIVATIONS, A, T, X
from .builder import Builder, Site
from .entrypoints import GSCALE
from .ir import BATCH, Map, Reduce
from .layer_kinds.base import target
from .layer_kinds.elementwise import softmax_ops
from .records import LayerRecord

N = symbol(BATCH)


def output_delta(b: Builder) -> tuple[str, Site]:
    """Loss ops and dL/d(the node the δ lands on); returns (the δ's buffer, that node's site)."""
    loss, site = b.model.loss, b.site(b.model.output)
    layer = site.layer
    data_loss = "L_data" if b.model.l1 or b.model.l2 else "L"  # L itself when there is no penalty
    b.buffer(data_loss, (), "scalar")
    if isinstance(loss, SoftmaxCrossEntropy) or (isinstance(loss, CrossEntropy) and isinstance(layer, Softmax)):
        return _softmax_cross_entropy(b, site, data_loss)
    if isinstance(layer, Softmax):
        return _softmax_output(b, site, data_loss)
    activation = isinstance(layer, Activation)
    fn = layer.function if activation else ACTIVATIONS["identity"]
    pre = site.inputs[0].out if activation else site.out
    composite = calculus.output_delta(fn, loss.function)
    subs = {X: symbol(pre), A: symbol(site.out), T: symbol("T")}
    per_element = 1 if loss.function.per_row_sum else b.model.output_dim
    value = composite.value.xreplace(subs) / (N * per_element)
    b.loss_ops.append(Reduce(f"{data_loss} = mean({sp.sstr(composite.value.xreplace(subs))})", "loss", "loss",
                             data_loss, value, "sum", None))
    dz = target(b, site, 0) if activation else f"d{pre}"
    b.buffer(dz, b.buffers[pre].shape)
    delta = composite.delta.xreplace(subs)
    b.backward.append(Map(f"{dz} = ({sp.sstr(delta)})/{_n_text(per_element)}   "
                          f"[d {loss.name}({site.out}, T)/d{pre}]", "loss", "backward", dz,
                          delta * (GSCALE / N) / per_element))
    arrays = {X: tensor(pre), A: tensor(site.out), T: tensor("T"), calculus.Y: tensor(site.out)}
    _record(b, "composite", SumAll(loss.function.expr.xreplace(arrays)) / (N * per_element), pre, site.out, dz,
            sp.Mul(composite.delta.xreplace(arrays), 1 / (N * per_element), evaluate=False), output=composite)
    return dz, site.inputs[0] if activation else site


def _softmax_cross_entropy(b: Builder, site: Site, data_loss: str) -> tuple[str, Site]:
    """Softmax + cross-entropy: L by log-sum-exp, δ = (p − T)/N on the logits."""
    fused = isinstance(site.layer, Softmax)
    logits, p = (site.inputs[0].out, site.out) if fused else (site.out, b.next_name(f"p{site.index}"))
    if not fused:
        softmax_ops(b, logits, p, b.model.output_dim, b.loss_ops, "loss")
    zs, ts = symbol(logits), symbol("T")
    lse = symbol(f"max_{logits}") + sp.log(symbol(f"sum_{logits}"))
    b.buffer("L_lse", (), "scalar")
    b.buffer("L_tz", (), "scalar")
    b.loss_ops += [
        Reduce(f"L_lse = sum of logsumexp({logits}) over rows", "loss", "loss", "L_lse", lse, "sum", None),
        Reduce(f"L_tz = sum(T*{logits})", "loss", "loss", "L_tz", ts * zs, "sum", None),
        Map(f"{data_loss} = (L_lse - L_tz)/N   [-sum(T*log(softmax)) with rows of T summing to 1]", "loss",
            "loss", data_loss, (symbol("L_lse") - symbol("L_tz")) / N),
    ]
    dz = target(b, site, 0) if fused else f"d{logits}"
    b.buffer(dz, (BATCH, b.model.output_dim))
    b.backward.append(Map(f"{dz} = ({p} - T)/N   [softmax + cross-entropy: dL/dz = p - t]",
                          "loss", "backward", dz, (symbol(p) - ts) * (GSCALE / N)))
    _record(b, "softmax_cross_entropy", -SumAll(tensor("T") * sp.log(softmax(tensor(logits)))) / N, logits, p, dz,
            sp.Mul(tensor(p) - tensor("T"), 1 / N, evaluate=False),
            notes=[f"evaluated as sum(T*(logsumexp({logits}) - {logits}))/N: log-softmax by "
                   "log-sum-exp, never log(softmax(z))"])
    return dz, site.inputs[0] if fused else site


def _softmax_output(b: Builder, site: Site, data_loss: str) -> tuple[str, Site]:
    """A non-cross-entropy loss after Softmax: dL/dp, then back through softmax (by the walk)."""
    loss, p = b.model.loss, site.out
    grad_raw, _ = calculus.loss_gradient(loss.function)
    per_element = 1 if loss.function.per_row_sum else b.model.output_dim
    ps, ts = symbol(p), symbol("T")
    value = loss.function.expr.xreplace({calculus.Y: ps, T: ts}) / (N * per_element)
    b.loss_ops.append(Reduce(f"{data_loss} = mean({sp.sstr(loss.function.expr)})", "loss", "loss",
                             data_loss, value, "sum", None))
    dp = f"d{p}"
    b.buffer(dp, (BATCH, b.model.output_dim))
    grad = grad_raw.xreplace({calculus.Y: ps, T: ts})
    b.backward.append(Map(f"{dp} = ({sp.sstr(grad)})/{_n_text(per_element)}   [d {loss.name}({p}, T)/d{p}]",
                          "loss", "backward", dp, grad * GSCALE / (N * per_element)))
    arrays = {calculus.Y: tensor(p), T: tensor("T")}
    _record(b, "loss_gradient", SumAll(loss.function.expr.xreplace(arrays)) / (N * per_element), p, p, dp,
            sp.Mul(grad_raw.xreplace(arrays), 1 / (N * per_element), evaluate=False))
    return dp, site


def _record(b: Builder, rule: str, written: sp.Expr, wrt: str, out: str, dz: str, delta: sp.Expr,
            **extra: object) -> None:
    """The loss's record: L as written, and the first delta, d<wrt> (or its path), that the code computes."""
    b.records.append(LayerRecord(b.model.loss.name, "output", equation(LOSS, written), wrt, out,
                                 backward=[equation(tensor(dz), delta)],
                                 code=[b.backward[-1].formula], loss=b.model.loss.function, rule=rule, **extra))


def _n_text(per_element: int) -> str:
    return "N" if per_element == 1 else f"(N*{per_element})"
