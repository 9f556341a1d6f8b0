"""Merges: Add, Multiply and Concat, where paths of the graph meet.

Their local derivatives are the simplest of all, and they are where the multivariate
chain rule shows: an Add passes its δ unchanged to every input (a residual connection
gives the input one more path to the loss), a Multiply sends each input the δ times the
other inputs, a Concat sends each input its own columns of the δ.  When a node feeds
several layers, the walk sums what they send (`walk`).
"""
from __future__ import annotations

import sympy as sp

from ...dsl.graph import Add, Concat, Multiply
from ...symbolic.functions import symbol
from ...symbolic.notation import Columns, Joined, equation, tensor
from ..builder import Builder, Site
from ..ir import Concat as ConcatOp
from ..ir import Map, Slice
from ..records import LayerRecord
from .base import Rule, Sent, register, target

_LETTER = {"add": "h", "multiply": "g", "concat": "cat"}


def _begin(b: Builder, site: Site) -> tuple[str, list[str]]:
    k = b.number(site.layer)
    site.index, site.out = k, b.next_name(f"{_LETTER[site.layer.kind]}{k}")
    b.buffer(site.out, site.shape)
    return site.out, [inp.out for inp in site.inputs]


class AddRule(Rule):
    def forward(self, b: Builder, site: Site) -> None:
        out, parts = _begin(b, site)
        expr = sp.Add(*(symbol(p) for p in parts))
        b.forward.append(Map(f"{out} = {' + '.join(parts)}", site.layer.name, "forward", out, expr))
        site.record = LayerRecord(site.layer.name, "add", equation(tensor(out), sp.Add(
            *(tensor(p) for p in parts), evaluate=False)), parts[0], out, inputs=tuple(parts))

    def backward(self, b: Builder, site: Site, delta: str) -> list[Sent]:
        dname = tensor(f"d{site.out}")
        sent = []
        for i, inp in enumerate(site.inputs):
            if inp.grad:
                name = target(b, site, i)
                b.reserve(name)
                sent.append(Sent(i, delta, equation(tensor(name), dname)))
        site.record.notes.append(f"d({site.out})/d(each input) = 1: {site.label} passes its delta unchanged to "
                                 "every input")
        return sent


class MultiplyRule(Rule):
    def forward(self, b: Builder, site: Site) -> None:
        out, parts = _begin(b, site)
        expr = sp.Mul(*(symbol(p) for p in parts))
        b.forward.append(Map(f"{out} = {' * '.join(parts)}", site.layer.name, "forward", out, expr))
        site.record = LayerRecord(site.layer.name, "multiply", equation(tensor(out), sp.Mul(
            *(tensor(p) for p in parts), evaluate=False)), parts[0], out, inputs=tuple(parts))

    def backward(self, b: Builder, site: Site, delta: str) -> list[Sent]:
        parts, sent = [inp.out for inp in site.inputs], []
        for i, inp in enumerate(site.inputs):
            if not inp.grad:
                continue
            others = parts[:i] + parts[i + 1:]
            name = target(b, site, i)
            b.buffer(name, inp.shape)
            expr = sp.Mul(symbol(delta), *(symbol(o) for o in others))
            b.backward.append(Map(f"{name} = {delta}*{'*'.join(others)}   [d({site.out})/d({parts[i]}) = "
                                  f"{'*'.join(others)}]", site.layer.name, "backward", name, expr))
            site.record.code.append(b.backward[-1].formula)
            shown = sp.Mul(tensor(f"d{site.out}"), *(tensor(o) for o in others), evaluate=False)
            sent.append(Sent(i, name, equation(tensor(name), shown)))
        return sent


class ConcatRule(Rule):
    def forward(self, b: Builder, site: Site) -> None:
        out, parts = _begin(b, site)
        b.forward.append(ConcatOp(f"{out} = [{', '.join(parts)}]", site.layer.name, "forward", out, tuple(parts)))
        site.record = LayerRecord(site.layer.name, "concat", equation(tensor(out), Joined(*(tensor(p) for p in parts))),
                                  parts[0], out, inputs=tuple(parts))

    def backward(self, b: Builder, site: Site, delta: str) -> list[Sent]:
        sent, start = [], 0
        for i, inp in enumerate(site.inputs):
            stop = start + inp.node.shape[0]
            if inp.grad:
                name = target(b, site, i)
                b.buffer(name, inp.shape)
                b.backward.append(Slice(f"{name} = {delta}[:, {start}:{stop}]", site.layer.name, "backward", name,
                                        delta, start, stop))
                site.record.code.append(b.backward[-1].formula)
                sent.append(Sent(i, name, equation(tensor(name), Columns(tensor(f"d{site.out}"), start, stop))))
            start = stop
        return sent


register(Add, AddRule())
register(Multiply, MultiplyRule())
register(Concat, ConcatRule())
