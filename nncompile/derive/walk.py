"""The chain rule over the model's graph: forward in call order, backward in reverse, summing at fan-outs.

Forward, each node's rule writes its ops (`layer_kinds`).  Backward, the walk visits the nodes
from the output back; a node that several layers read has received one δ contribution
per path (each named after the layer it came through, d<node>_via_<reader>), and its δ is
their sum — the multivariate chain rule, ∂L/∂h = Σ over paths.  Only nodes with a
parameter upstream get a δ: the walk stops where the graph no longer depends on one.
"""
from __future__ import annotations

import sympy as sp

from ..dsl.graph import shape_text, size_of
from ..symbolic.functions import symbol
from ..symbolic.notation import equation, tensor
from .builder import Builder, Site
from .ir import Map, Slice
from .layer_kinds import rule_for


def forward(b: Builder) -> None:
    """Every node's forward ops, inputs first; sets which nodes the chain rule reaches."""
    model = b.model
    calls: dict[int, int] = {}
    for node in model.nodes:
        site = Site(node)
        b.sites[id(node)] = site
        if node.is_input:
            _input(b, site)
            continue
        site.inputs = tuple(b.site(n) for n in node.inputs)
        for inp in site.inputs:
            inp.edges += 1
        calls[id(node.layer)] = site.call = calls.get(id(node.layer), 0) + 1
        shapes = tuple(n.shape for n in node.inputs)
        site.grad = bool(node.layer.parameters(shapes)) or any(inp.grad for inp in site.inputs)
        rule = rule_for(node.layer)
        before = len(b.forward)
        rule.forward(b, site)
        site.extra.setdefault("formula", b.forward[before].formula.split("   [")[0] if len(b.forward) > before
                              else f"{site.out} = {site.inputs[0].out}")
        if rule.stochastic:
            rule.forward_eval(b, site)
        else:
            b.forward_eval += b.forward[before:]
        site.record.call, site.record.label = site.call, site.label
        site.record.inputs = site.record.inputs or tuple(inp.out for inp in site.inputs)
        b.records.append(site.record)


def _input(b: Builder, site: Site) -> None:
    """A model input: X itself, or its own columns of X (several inputs arrive joined in X; an image
    input is read as (N, C, H, W) from its row-major columns)."""
    inputs = b.model.inputs
    position = next(i for i, n in enumerate(inputs) if n is site.node)
    if len(inputs) == 1 and len(site.node.shape) == 1:
        site.out = "X"
        return
    site.out, site.index = f"X{position + 1}", position + 1
    start = sum(size_of(n.shape) for n in inputs[:position])
    stop = start + size_of(site.node.shape)
    b.buffer(site.out, site.shape, "input")
    shaped = "" if len(site.node.shape) == 1 else f" as {shape_text(site.node.shape)}"
    op = Slice(f"{site.out} = X[:, {start}:{stop}]{shaped}   [input {position + 1}]", "input", "forward", site.out,
               "X", start, stop)
    b.forward.append(op)
    b.forward_eval.append(op)


def backward(b: Builder, delta: str, start: Site) -> None:
    """From the loss's δ at `start` back to the first nodes that depend on a parameter."""
    loss_eq = b.records[-1].backward[0]
    pending: dict[int, list[tuple[str, sp.Eq | None, Site | None]]] = {id(start.node): [(delta, loss_eq, None)]}
    for node in reversed(b.model.nodes):
        site = b.site(node)
        arrived = pending.pop(id(node), None)
        if not arrived:
            continue
        own = _gather(b, site, arrived)
        for sent in rule_for(node.layer).backward(b, site, own):
            receiver = site.inputs[sent.position]
            pending.setdefault(id(receiver.node), []).append((sent.buffer, sent.eq, site))
            if sent.eq is not None:
                receiver.record.received.append((sent.eq, sent.eq if sent.raw is None else sent.raw))
                b.aliases[sent.eq.lhs.name] = sent.buffer


def _gather(b: Builder, site: Site, arrived: list[tuple[str, sp.Eq | None, Site | None]]) -> str:
    """The buffer holding the δ at `site`: the one contribution, or the sum of several (one per path)."""
    record = site.record
    if arrived[0][2] is None:  # the loss's δ comes first
        record.received.insert(0, (arrived[0][1], arrived[0][1]))
    if len(arrived) == 1:
        return arrived[0][0]
    total = b.next_name(f"d{site.out}")
    b.buffer(total, site.shape)
    buffers = [buf for buf, _, _ in arrived]
    b.backward.append(Map(f"{total} = {' + '.join(buffers)}   [{len(buffers)} paths meet at {site.out}]",
                          record.layer, "backward", total, sp.Add(*(symbol(x) for x in buffers))))
    record.code.insert(0, b.backward[-1].formula)
    shown = [eq.lhs if eq is not None else tensor(buf) for buf, eq, _ in arrived]
    total_eq = equation(tensor(f"d{site.out}"), sp.Add(*shown, evaluate=False))
    record.received.append((total_eq, total_eq))
    b.aliases[total_eq.lhs.name] = total
    for i, (buf, eq, sender) in enumerate(arrived, 1):
        through = "the loss" if sender is None else f"{sender.label}, which computes {sender.extra['formula']}"
        record.notes.append(f"path {i}: {sp.sstr(shown[i - 1])} comes through {through}")
    return total
