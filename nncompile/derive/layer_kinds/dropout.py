"""Dropout: inverted dropout in training, the identity in evaluation.

Training multiplies by m/(1 − p), m a mask of ones (kept) and zeros (dropped) drawn by the
counter-based generator the IR specifies (`ir.DROPOUT_MIX`: keyed by the seed, the update
count, the layer and the element), so the backward pass multiplies by the same m/(1 − p):
δ_in = δ_out ⊙ m/(1 − p).  Evaluation copies the input through.
"""
from __future__ import annotations

import sympy as sp

from ...dsl.layers import Dropout
from ...symbolic.functions import symbol
from ...symbolic.notation import Constant, equation, tensor
from ..builder import Builder, Site
from ..ir import DropoutMask, Map, dropout_threshold
from ..records import LayerRecord
from .base import Rule, Sent, register, target

SEED = "dropout_seed"


class DropoutRule(Rule):
    stochastic = True

    def forward(self, b: Builder, site: Site) -> None:
        layer, x = site.layer, site.inputs[0].out
        k = b.number(layer)
        site.index, site.out = k, b.next_name(f"r{k}")
        mask = site.extra["mask"] = b.next_name(f"m{k}")
        if SEED not in b.buffers:
            b.buffer(SEED, (1,), "seed")
        b.buffer(mask, site.shape)
        b.buffer(site.out, site.shape)
        keep = 1 - layer.p
        b.forward += [
            DropoutMask(f"{mask} = dropout mask (1 kept, 0 dropped; keep probability {keep:g})", layer.name,
                        "forward", mask, SEED, k, dropout_threshold(layer.p)),
            Map(f"{site.out} = {x}*{mask}/{keep!r}   [inverted dropout]", layer.name, "forward", site.out,
                symbol(x) * symbol(mask) / sp.Float(keep)),
        ]
        p = site.extra["p"] = Constant(f"p_{site.out}", "p", "p")
        site.record = LayerRecord(layer.name, "dropout", equation(tensor(site.out), tensor(x) * tensor(mask) / (1 - p)),
                                  x, site.out, constants={p: layer.p})
        site.record.description = f"dropout, p = {layer.p:g}"
        site.record.notes.append(
            f"{mask}: the mask, 1 where an element is kept (probability 1 - p = {keep:g}) and 0 where it is dropped, "
            f"drawn for every training call from (seed, update count, layer {k}, element); p = {layer.p:g}; "
            "evaluation (forward, evaluate, predict) is the identity")

    def forward_eval(self, b: Builder, site: Site) -> None:
        x = site.inputs[0].out
        b.forward_eval.append(Map(f"{site.out} = {x}   [evaluation: no dropout]", site.layer.name, "forward",
                                  site.out, symbol(x)))

    def backward(self, b: Builder, site: Site, delta: str) -> list[Sent]:
        if not site.inputs[0].grad:
            return []
        layer, mask, keep = site.layer, site.extra["mask"], 1 - site.layer.p
        dx = target(b, site, 0)
        b.buffer(dx, site.inputs[0].shape)
        b.backward.append(Map(f"{dx} = {delta}*{mask}/{keep!r}   [the same mask as the forward pass]", layer.name,
                              "backward", dx, symbol(delta) * symbol(mask) / sp.Float(keep)))
        site.record.code.append(b.backward[-1].formula)
        shown = tensor(f"d{site.out}") * tensor(mask) / (1 - site.extra["p"])
        return [Sent(0, dx, equation(tensor(dx), shown))]


register(Dropout, DropoutRule())
