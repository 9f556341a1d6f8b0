"""Conv2D: the cross-correlation forward; its gradients derived in index notation (`symbolic.convolution`).

The IR gets three ops: `Conv2D` (z = x ⋆ W + b), `Conv2DGrad` (∂L/∂W and ∂L/∂b) and, when the
input needs a δ, `Conv2DGradInput`; a backend evaluates them as im2col + GEMM.  The record
shows the definition as an indexed sum, the gradients SymPy derived from it with this layer's
arrays, stride and padding, and δx both as derived and as the full correlation of the dilated δ
with the flipped kernel.  A layer called again adds its gradients to the same buffers.
"""
from __future__ import annotations

import sympy as sp

from ...dsl.images import Conv2D
from ...symbolic import convolution as cv
from ...symbolic.notation import LOSS, Constant, Partial, equation, tensor
from ..builder import Builder, Site
from ..ir import Conv2D as ConvOp
from ..ir import Conv2DGrad, Conv2DGradInput
from ..records import LayerRecord
from .base import Rule, Sent, register, target
from .dense import penalties_of, relu_like


def _arrays(**names: str) -> dict[sp.IndexedBase, sp.IndexedBase]:
    """The generic arrays of `symbolic.convolution` (x, W, b, z, dz, dx, ...) as this node's named arrays."""
    generic = {"x": cv.X, "w": cv.K, "b": cv.B, "z": cv.Z, "dz": cv.DZ, "dx": cv.DX, "hat": cv.DILATED,
               "u": cv.ARG_U, "v": cv.ARG_V}
    return {generic[key]: sp.IndexedBase(tensor(name), real=True) for key, name in names.items()}


def geometry(out: str, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int] | None
             ) -> tuple[dict[sp.Symbol, sp.Basic], dict[sp.Symbol, float]]:
    """The generic k_h, k_w, s_h, s_w, pad_h, pad_w as this layer's constants (one letter where the two
    axes agree: k, s, pad), and their values."""
    shown, values = {}, {}
    pairs = [("k", kernel, (cv.KH, cv.KW)), ("s", stride, (cv.SH, cv.SW))]
    pairs += [("pad", padding, (cv.PH, cv.PW))] if padding is not None else []
    for letter, (first, second), (row, col) in pairs:
        if first == second:
            const = Constant(f"{letter}_{out}", letter, letter, integer=True)
            shown.update({row: const, col: const})
            values[const] = first
        else:
            for axis, sym, value in (("h", row, first), ("w", col, second)):
                const = Constant(f"{letter}{axis}_{out}", f"{letter}_{axis}", f"{letter}_{{{axis}}}", integer=True)
                shown[sym] = const
                values[const] = value
    return shown, values


def constants_note(values: dict[sp.Symbol, float]) -> str:
    """k = 3, s = 1, pad = 1: the layer's constants by the letters the formulas show."""
    return ", ".join(f"{sym.name.split('_')[0]} = {value:g}" for sym, value in values.items())


class ConvRule(Rule):
    def forward(self, b: Builder, site: Site) -> None:
        layer, k, x = site.layer, b.number(site.layer), site.inputs[0].out
        weight, bias = layer.parameters((site.inputs[0].node.shape,))
        kernel = b.declare(layer, weight, f"K{k}", "he" if relu_like(b, site) else "xavier")
        bc = b.declare(layer, bias, f"bc{k}", "zeros")
        site.index, site.out = k, b.next_name(f"zc{k}")
        out = site.out
        b.buffer(out, site.shape)
        where = f"stride {_pair(layer.stride)}, padding {_pair(layer.padding)}"
        b.forward.append(ConvOp(f"{out} = conv2d({x}, {kernel}) + {bc}   [{where}]", layer.name, "forward", out, x,
                                kernel, bc, layer.stride, layer.padding))
        shown, values = geometry(out, layer.kernel, layer.stride, layer.padding)
        arrays = _arrays(x=x, w=kernel, b=bc, z=out, dz=f"d{out}")
        site.extra.update(shown=shown, arrays=arrays, kernel=kernel, bias=bc)
        record = site.record = LayerRecord(layer.name, "conv", _shown(cv.conv().forward, arrays, shown), x, out,
                                           constants=values)
        channels, height, width = site.inputs[0].node.shape
        record.description = (f"{channels}x{height}x{width} -> {'x'.join(map(str, site.node.shape))}, "
                               f"{layer.geometry()}")
        record.notes.append(f"{layer.name} is a cross-correlation (as torch.nn.Conv2d) with zero padding: "
                            f"{constants_note(values)}; x is 0 outside the image")

    def backward(self, b: Builder, site: Site, delta: str) -> list[Sent]:
        layer, record, x = site.layer, site.record, site.inputs[0].out
        kernel, bc = site.extra["kernel"], site.extra["bias"]
        dw, db = f"d{kernel}", f"d{bc}"
        accumulate = dw in b.grad_written
        sign = "+=" if accumulate else "="
        b.backward.append(Conv2DGrad(f"{dw} {sign} conv2d_weight_grad({x}, {delta});  {db} {sign} "
                                     f"sum_n,i,j({delta})", layer.name, "backward", dw, db, x, delta, layer.stride,
                                     layer.padding, accumulate))
        record.code.append(b.backward[-1].formula)
        arrays, shown = site.extra["arrays"], site.extra["shown"]
        base = arrays[cv.K]
        penalties = [] if accumulate else penalties_of(b, record, kernel, base[cv.o, cv.c, cv.p, cv.q])
        b.grad_written |= {dw, db}
        shared = sum(1 for node in b.model.nodes if node.layer is layer) > 1
        (_, weight_eq), (_, bias_eq) = cv.conv().gradients
        grads = {"W": (weight_eq, penalties), "b": (bias_eq, [])}
        for name, (eq, terms) in grads.items():
            entry = eq.lhs.xreplace(arrays)
            lhs = (sp.IndexedBase(tensor(f"d{entry.base.label.name}_via_{site.out}"))[entry.indices] if shared
                   else Partial(LOSS, entry))
            rhs = _shown(eq.rhs, arrays, shown)
            record.gradients[f"{layer.name}.{name}"] = equation(lhs, sp.Add(rhs, *terms, evaluate=False)
                                                                if terms and not shared else rhs)
            if shared:
                record.penalties[f"{layer.name}.{name}"] = terms
        record.notes += _evaluation_notes(layer, site)
        if not site.inputs[0].grad:
            return []
        dx = target(b, site, 0)
        b.buffer(dx, site.inputs[0].shape)
        b.backward.append(Conv2DGradInput(f"{dx} = conv2d_input_grad({delta}, {kernel})", layer.name, "backward", dx,
                                          delta, kernel, layer.stride, layer.padding))
        record.code.append(b.backward[-1].formula)
        return [self._sent(site, dx)]

    @staticmethod
    def _sent(site: Site, dx: str) -> Sent:
        """δx as derived, and, in the record, as the full correlation with the flipped kernel."""
        derivation, shown = cv.conv(), site.extra["shown"]
        arrays = {**site.extra["arrays"], **_arrays(dx=dx, hat=f"d{site.out}_hat")}
        eq = _shown(derivation.input, arrays, shown)
        record = site.record
        hat = arrays[cv.DILATED]
        record.derived += [("to the input", eq), ("nonzero terms", _shown(derivation.condition, arrays, shown)),
                           ("full correlation", _shown(derivation.flipped, arrays, shown)),
                           ("where", _shown(cv.dilated_entry(), arrays, shown))]
        record.notes.append(f"a term of the sum for {eq.lhs.base.label.name} is 0 unless its kernel index lies in the "
                            "kernel (SymPy's condition when it sums out the Kronecker deltas of the derivative)")
        record.notes.append(f"{hat.label.name}: the delta dilated by the stride (s - 1 zeros between entries) and "
                            "padded by k - 1 - pad on each side (0 at every other position), so that the input's "
                            "delta is its full correlation with the kernel turned by 180 degrees")
        return Sent(0, dx, eq)


def _shown(expr: sp.Basic, arrays: dict, shown: dict) -> sp.Basic:
    """A generic formula with this layer's arrays and constants (one substitution, nothing re-evaluated: the
    same formula, only renamed)."""
    with sp.evaluate(False):
        renamed = expr.xreplace({**arrays, **shown})
    # (an unevaluated Sum wraps its term as 1·term: unwrapped, as written)
    return renamed.replace(lambda e: e.is_Mul and len(e.args) == 2 and e.args[0] == 1, lambda e: e.args[1])


def _pair(values: tuple[int, int]) -> str:
    return str(values[0]) if values[0] == values[1] else str(values)


def _evaluation_notes(layer: Conv2D, site: Site) -> list[str]:
    """How the code evaluates the formulas: im2col, then one GEMM each."""
    channels = site.inputs[0].node.shape[0]
    rows = channels * layer.kernel[0] * layer.kernel[1]
    pixels = f"N*{site.node.shape[1] * site.node.shape[2]}"
    padded = "zero-padded " if layer.padding != (0, 0) else ""
    notes = [f"evaluated as im2col + GEMM: cols ({rows} x {pixels}) holds every {layer.kernel[0]}x{layer.kernel[1]} "
             f"window of the {padded}input as a column, one per output pixel (one strided copy); z = W_mat @ cols + b "
             f"is one GEMM, W_mat = W as a ({layer.filters} x {rows}) matrix",
             f"dL/dW_mat = delta_mat @ cols.T is one GEMM (delta_mat = delta as ({layer.filters} x {pixels})); "
             "dL/db = the row sums of delta_mat"]
    if site.inputs[0].grad:
        notes.append(f"the input's delta: dcols = W_mat.T @ delta_mat is one GEMM, then col2im adds each of the "
                     f"{layer.kernel[0] * layer.kernel[1]} kernel entries' rows back onto the input positions they "
                     "came from (strided slice-adds)")
    return notes


register(Conv2D, ConvRule())
