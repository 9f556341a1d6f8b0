"""Dense layers: z = x·W + b forward; the matrix form of the chain rule backward.

δx = δz·Wᵀ, ∂L/∂W = xᵀ·δz, ∂L/∂b = Σ_rows δz, plus the penalties' gradients.  A layer
called more than once shares W and b: each call adds its xᵀ·δz to the same gradient, so
the gradient is the sum over the uses (`LinearGrad(accumulate=True)` after the first).
"""
from __future__ import annotations

import sympy as sp

from ...dsl.layers import Activation, Dense
from ...symbolic import calculus
from ...symbolic.functions import symbol
from ...symbolic.notation import LAMBDA, LOSS, MatProd, Partial, SumN, Transposed, equation, tensor
from ...symbolic.rules import LAM, REGULARISERS, W
from ..builder import Builder, Site
from ..entrypoints import GSCALE
from ..ir import Linear, LinearGrad, Map, MatMulT
from ..records import LayerRecord
from .base import Rule, Sent, register, target


class DenseRule(Rule):
    def forward(self, b: Builder, site: Site) -> None:
        layer, k, x = site.layer, b.number(site.layer), site.inputs[0].out
        weight, bias = layer.parameters((site.inputs[0].node.shape,))
        w = b.declare(layer, weight, f"W{k}", "he" if relu_like(b, site) else "xavier")
        bb = b.declare(layer, bias, f"b{k}", "zeros")
        site.index, site.out = k, b.next_name(f"z{k}")
        out = site.out
        b.buffer(out, site.shape)
        b.forward.append(Linear(f"{out} = {x} @ {w} + {bb}", layer.name, "forward", out, x, w, bb))
        site.record = LayerRecord(layer.name, "dense", equation(tensor(out), sp.Add(
            MatProd(tensor(x), tensor(w)), tensor(bb), evaluate=False)), x, out)

    def backward(self, b: Builder, site: Site, delta: str) -> list[Sent]:
        layer, k, x, record = site.layer, site.index, site.inputs[0].out, site.record
        dw, db, dname = f"dW{k}", f"db{k}", f"d{site.out}"
        accumulate = dw in b.grad_written
        sign = "+=" if accumulate else "="
        b.backward.append(LinearGrad(f"{dw} {sign} {x}.T @ {delta};  {db} {sign} sum_rows({delta})", layer.name,
                                     "backward", dw, db, x, delta, accumulate))
        record.code.append(b.backward[-1].formula)
        shared = sum(1 for node in b.model.nodes if node.layer is layer) > 1
        weight_grad = [MatProd(Transposed(tensor(x)), tensor(dname))]
        penalties = [] if accumulate else penalties_of(b, record, f"W{k}", tensor(f"W{k}"))
        b.grad_written |= {dw, db}
        if shared:
            record.gradients = {f"{layer.name}.W": equation(tensor(f"dW{k}_via_{site.out}"), weight_grad[0]),
                                f"{layer.name}.b": equation(tensor(f"db{k}_via_{site.out}"), SumN(tensor(dname)))}
            record.penalties = {f"{layer.name}.W": penalties}
        else:
            record.gradients = {f"{layer.name}.W": equation(Partial(LOSS, tensor(f"W{k}")),
                                                         sp.Add(*weight_grad, *penalties, evaluate=False)),
                                f"{layer.name}.b": equation(Partial(LOSS, tensor(f"b{k}")), SumN(tensor(dname)))}
        if not site.inputs[0].grad:
            return []
        dx = target(b, site, 0)
        b.buffer(dx, site.inputs[0].shape)
        b.backward.append(MatMulT(f"{dx} = {delta} @ W{k}.T", layer.name, "backward", dx, delta, f"W{k}"))
        record.code.append(b.backward[-1].formula)
        return [Sent(0, dx, equation(tensor(dx), MatProd(tensor(dname), Transposed(tensor(f"W{k}")))))]


def penalties_of(b: Builder, record: LayerRecord, weight: str, shown_as: sp.Expr) -> list[sp.Expr]:
    """The l2/l1 terms of ∂L/∂(weight) (ops added once per weight, on its gradient d<weight>), as shown
    for the weight written `shown_as`: λ₂·W, λ₁·sign(W)."""
    shown, grad_buffer = [], f"d{weight}"
    for reg_name, strength in (("l2", b.model.l2), ("l1", b.model.l1)):
        if strength:
            reg = REGULARISERS[reg_name]
            grad = calculus.regulariser_gradient(reg).xreplace({LAM: sp.Float(strength), W: symbol(weight)})
            b.backward.append(Map(f"{grad_buffer} += {sp.sstr(grad)}   [{reg_name} penalty]", record.layer,
                                  "backward", grad_buffer, symbol(grad_buffer) + GSCALE * grad))
            record.code.append(b.backward[-1].formula)
            shown.append(calculus.regulariser_gradient(reg).xreplace({LAM: LAMBDA[reg_name], W: shown_as}))
    return shown


def relu_like(b: Builder, site: Site) -> bool:
    """Whether the first layer reading this Dense output is ReLU or LeakyReLU (He initialisation fits)."""
    readers = b.model.consumers(site.node)
    nxt = readers[0].layer if readers else None
    return isinstance(nxt, Activation) and nxt.function.name in ("relu", "leaky_relu")


register(Dense, DenseRule())
