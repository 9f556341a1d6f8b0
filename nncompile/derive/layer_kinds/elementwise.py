"""Activations and Softmax: the chain rule through f elementwise, and through softmax row by row.

An activation multiplies the incoming δ by f' in the cheapest form SymPy found (in a = f(z)
where possible: tanh' = 1 − a²); softmax's Jacobian-vector product is p ⊙ (δ − Σₖ δ ⊙ p).
A hidden activation also gets a probe: an op writing f'(z) into its own buffer, which the
`diagnose` entry point runs for training diagnostics.
"""
from __future__ import annotations

import sympy as sp

from ...dsl.layers import Activation, Softmax
from ...symbolic import calculus
from ...symbolic.calculus import LocalDerivative
from ...symbolic.functions import symbol
from ...symbolic.notation import SumK, equation, softmax, tensor
from ...symbolic.rules import A, X
from ..builder import Builder, Site
from ..ir import BATCH, Map, Op, Probe, Reduce
from ..records import LayerRecord
from .base import Rule, Sent, register, target


class ActivationRule(Rule):
    def forward(self, b: Builder, site: Site) -> None:
        layer, inp = site.layer, site.inputs[0]
        local = calculus.activation(layer.function)
        h = inp.out
        site.index = inp.index
        out = site.out = h if local.is_identity else b.next_name(f"a{inp.index}")
        if not local.is_identity:
            b.buffer(out, site.shape)
            expr = local.stable.subs(X, symbol(h))
            b.forward.append(Map(f"{out} = {sp.sstr(expr)}", layer.function.name, "forward", out, expr))
            watched = _watched(site)
            if site.node is not b.model.output and watched is not None:
                _probe(b, layer, local, h, out, watched)
        site.record = LayerRecord(layer.function.name, "activation", equation(
            tensor(out), local.function.xreplace({X: tensor(h)})), h, out, local)

    def backward(self, b: Builder, site: Site, delta: str) -> list[Sent]:
        layer, record = site.layer, site.record
        local = record.local
        if local.is_identity:
            if site.inputs[0].edges == 1:
                return [Sent(0, delta, None)]  # the same array, and the same δ
            name = target(b, site, 0)
            b.reserve(name)
            return [Sent(0, delta, equation(tensor(name), tensor(f"d{site.out}")))]
        z, a, dname = site.inputs[0].out, site.out, f"d{site.out}"
        dz = target(b, site, 0)
        b.buffer(dz, b.buffers[z].shape)
        fprime = local.evaluated.xreplace({X: symbol(z), A: symbol(a)})
        product = sp.sstr(sp.Mul(symbol(delta), fprime, evaluate=False))
        b.backward.append(Map(f"{dz} = {product}   [{layer.function.name}'({z}) = "
                              f"{sp.sstr(local.derivative.xreplace({X: symbol(z)}))}]",
                              layer.function.name, "backward", dz, symbol(delta) * fprime))
        record.code.append(b.backward[-1].formula)
        record.writes = dz
        eq = equation(tensor(dz), sp.Mul(tensor(dname), local.evaluated.xreplace({X: tensor(z), A: tensor(a)}),
                                      evaluate=False))
        raw = equation(tensor(dz), sp.Mul(tensor(dname), local.raw.xreplace({X: tensor(z), A: tensor(a)}),
                                       evaluate=False))
        return [Sent(0, dz, eq, raw)]


def _watched(site: Site) -> str | None:
    """What diagnostics file this activation's f'(z) under: the layer that computed z, looking back
    through elementwise layers (None when no layer with parameters comes before it)."""
    inp = site.inputs[0]
    while inp.layer is not None and isinstance(inp.layer, (Activation, Softmax)):
        inp = inp.inputs[0]
    return None if inp.layer is None else inp.label


def _probe(b: Builder, layer: Activation, local: LocalDerivative, z: str, a: str, watched: str) -> None:
    """Watch a hidden activation: an op writing f'(z) into its own buffer, for `diagnose`."""
    fp = f"fp_{a}"
    b.buffer(fp, b.buffers[a].shape)
    fprime = local.evaluated.xreplace({X: symbol(z), A: symbol(a)})
    op = Map(f"{fp} = {sp.sstr(fprime)}   [{layer.function.name}'({z}), watched by diagnostics]",
             layer.function.name, "diagnose", fp, fprime)
    b.probes.append((Probe(watched, layer.function.name, fp, calculus.saturation_kind(local)), op))


class SoftmaxRule(Rule):
    def forward(self, b: Builder, site: Site) -> None:
        inp = site.inputs[0]
        site.index = inp.index
        out = site.out = b.next_name(f"p{inp.index}")
        softmax_ops(b, inp.out, out, site.node.shape[0], b.forward, "softmax")
        site.record = LayerRecord("softmax", "softmax", equation(tensor(out), softmax(tensor(inp.out))),
                                  inp.out, out)

    def backward(self, b: Builder, site: Site, delta: str) -> list[Sent]:
        z, p, dname = site.inputs[0].out, site.out, f"d{site.out}"
        dz, r = target(b, site, 0), f"dot_{delta}"
        b.buffer(dz, b.buffers[z].shape)
        b.buffer(r, (BATCH, 1))
        b.backward.append(Reduce(f"{r} = rowsum({delta}*{p})", "softmax", "backward", r,
                                 symbol(delta) * symbol(p), "sum", 1))
        b.backward.append(Map(f"{dz} = {p}*({delta} - {r})   [softmax Jacobian-vector product]", "softmax",
                              "backward", dz, symbol(p) * (symbol(delta) - symbol(r))))
        site.record.code += [op.formula for op in b.backward[-2:]]
        dps, ps = tensor(dname), tensor(p)
        return [Sent(0, dz, equation(tensor(dz), sp.Mul(ps, dps - SumK(dps * ps), evaluate=False)))]


def softmax_ops(b: Builder, z: str, p: str, width: int, ops: list[Op], layer: str) -> tuple[str, str]:
    """p = softmax(z) with the row max subtracted; returns the row max and row sum buffers."""
    m, s = f"max_{z}", f"sum_{z}"
    zs, ms, ss = symbol(z), b.buffer(m, (BATCH, 1)), b.buffer(s, (BATCH, 1))
    b.buffer(p, (BATCH, width))
    ops += [
        Reduce(f"{m} = rowmax({z})", layer, "forward", m, zs, "max", 1),
        Map(f"{p} = exp({z} - {m})", layer, "forward", p, sp.exp(zs - ms)),
        Reduce(f"{s} = rowsum({p})", layer, "forward", s, symbol(p), "sum", 1),
        Map(f"{p} = {p}/{s}", layer, "forward", p, symbol(p) / ss),
    ]
    return m, s


register(Activation, ActivationRule())
register(Softmax, SoftmaxRule())
