"""MaxPool2D, AvgPool2D and Flatten: the layers without parameters between a convolution and a Dense layer.

Max pooling keeps, in an "index" buffer, where each window's first maximum is (row-major), and its
backward pass routes δ there: d max(a, b)/da is the step H(a − b), undefined at a tie, and the tie
rule (the first maximum, as PyTorch) is stated.  Average pooling's δ to its input is derived from
its definition in index notation, as a convolution's is (`symbolic.convolution`): δ/(k_h·k_w) to
every entry of the window.  Flatten reshapes (no data moves); its δ is reshaped back.
"""
from __future__ import annotations

import sympy as sp

from ...dsl.images import AvgPool2D, Flatten, MaxPool2D
from ...symbolic import convolution as cv
from ...symbolic.notation import Constant, equation, tensor
from ..builder import Builder, Site
from ..ir import Pool2D, Pool2DGrad, Reshape
from ..records import LayerRecord
from .base import Rule, Sent, register, target
from .conv import _arrays, _shown, constants_note, geometry


class PoolRule(Rule):
    def forward(self, b: Builder, site: Site) -> None:
        layer, x = site.layer, site.inputs[0].out
        k = b.number(layer)
        letter = "pm" if layer.mode == "max" else "pa"
        site.index, site.out = k, b.next_name(f"{letter}{k}")
        out, index = site.out, ""
        b.buffer(out, site.shape)
        if layer.mode == "max":
            index = site.extra["index"] = b.next_name(f"am{k}")
            b.buffer(index, site.shape, "index")
        what = f"{layer.kernel[0]}x{layer.kernel[1]} window, stride {layer.stride[0]}" + (
            f"x{layer.stride[1]}" if layer.stride[0] != layer.stride[1] else "")
        b.forward.append(Pool2D(f"{out} = {layer.mode}pool({x})   [{what}]", layer.name, "forward", out, x, index,
                                layer.mode, layer.kernel, layer.stride))
        shown, values = geometry(out, layer.kernel, layer.stride, None)
        derivation = cv.maxpool() if layer.mode == "max" else cv.avgpool()
        arrays = _arrays(x=x, z=out, dz=f"d{out}")
        arrays.update({cv.ARG_U: sp.IndexedBase(Constant(f"ustar_{out}", "u*", "u^{*}")),
                       cv.ARG_V: sp.IndexedBase(Constant(f"vstar_{out}", "v*", "v^{*}"))})
        site.extra.update(shown=shown, arrays=arrays, derivation=derivation)
        record = site.record = LayerRecord(layer.name, layer.kind, _shown(derivation.forward, arrays, shown), x, out,
                                           constants=values)
        channels, height, width = site.inputs[0].node.shape
        record.description = (f"{channels}x{height}x{width} -> {'x'.join(map(str, site.node.shape))}, "
                               f"{layer.mode} over {layer.geometry()}")
        record.notes.append(f"{constants_note(values)} (no padding)")
        if layer.mode == "max":
            derivative, step = cv.max_derivative()
            record.derived.append(("derivative", equation(derivative, step)))
            record.notes.append(f"d max(a, b)/da is the unit step H(a - b), undefined where a = b: the gradient "
                                f"goes to the first maximum of each window in row-major order (u, then v), as "
                                f"PyTorch; the forward pass records its position u*·k_w + v* in {index}")

    def backward(self, b: Builder, site: Site, delta: str) -> list[Sent]:
        if not site.inputs[0].grad:
            return []
        layer = site.layer
        dx = target(b, site, 0)
        b.buffer(dx, site.inputs[0].shape)
        how = "to the first maximum of each window" if layer.mode == "max" else "spread evenly over each window"
        b.backward.append(Pool2DGrad(f"{dx} = {layer.mode}pool_grad({delta})   [{how}]", layer.name, "backward", dx,
                                     delta, site.extra.get("index", ""), layer.mode, layer.kernel, layer.stride))
        site.record.code.append(b.backward[-1].formula)
        derivation, shown = site.extra["derivation"], site.extra["shown"]
        arrays = {**site.extra["arrays"], **_arrays(dx=dx)}
        eq = _shown(derivation.input, arrays, shown)
        if derivation.condition is not sp.true:
            site.record.notes.append(f"a term of {sp.sstr(eq.lhs)} is 0 unless (h, w) lies in window (i, j): "
                                     f"{sp.sstr(_shown(derivation.condition, arrays, shown))}")
        return [Sent(0, dx, eq)]


class FlattenRule(Rule):
    def forward(self, b: Builder, site: Site) -> None:
        layer, inp = site.layer, site.inputs[0]
        if len(inp.node.shape) == 1:  # already (N, features): the identity
            site.index, site.out = inp.index, inp.out
            site.record = LayerRecord(layer.name, "flatten", equation(tensor(inp.out), tensor(inp.out)), inp.out,
                                      inp.out)
            return
        k = b.number(layer)
        site.index, site.out = k, b.next_name(f"f{k}")
        b.buffer(site.out, site.shape)
        b.forward.append(Reshape(f"{site.out} = {inp.out}.reshape(N, {site.node.shape[0]})   [row-major]",
                                 layer.name, "forward", site.out, inp.out))
        flat, image = _flat_entry(site.out, inp.out, inp.node.shape)
        site.record = LayerRecord(layer.name, "flatten", equation(flat, image), inp.out, site.out)
        site.record.description = f"{'x'.join(map(str, inp.node.shape))} -> {site.node.shape[0]}, row-major"

    def backward(self, b: Builder, site: Site, delta: str) -> list[Sent]:
        inp = site.inputs[0]
        if not inp.grad:
            return []
        if len(inp.node.shape) == 1:  # the identity: the same array and the same δ
            if inp.edges == 1:
                return [Sent(0, delta, None)]
            name = target(b, site, 0)
            b.reserve(name)
            return [Sent(0, delta, equation(tensor(name), tensor(f"d{site.out}")))]
        dx = target(b, site, 0)
        b.buffer(dx, inp.shape)
        b.backward.append(Reshape(f"{dx} = {delta}.reshape(N, {', '.join(map(str, inp.node.shape))})",
                                  site.layer.name, "backward", dx, delta))
        site.record.code.append(b.backward[-1].formula)
        flat, image = _flat_entry(f"d{site.out}", dx, inp.node.shape)
        return [Sent(0, dx, equation(image, flat))]


def _flat_entry(flat: str, image: str, shape: tuple[int, ...]) -> tuple[sp.Indexed, sp.Indexed]:
    """(flat[n, c·H·W + h·W + w], image[n, c, h, w]): one entry, row-major."""
    _, height, width = shape
    column = cv.c * height * width + cv.h * width + cv.w
    return (sp.IndexedBase(tensor(flat), real=True)[cv.n, column],
            sp.IndexedBase(tensor(image), real=True)[cv.n, cv.c, cv.h, cv.w])


register(MaxPool2D, PoolRule())
register(AvgPool2D, PoolRule())
register(Flatten, FlattenRule())
