"""The NumPy lowering of the image ops: convolutions as im2col + GEMM, pooling by windows, reshapes as views.

A Conv2D call owns, per workspace, `cols` (C·kh·kw, N·Ho·Wo): every kh×kw window of its input (zero
padded in `xpad` when the layer pads) as a column, filled by one strided copy from a
`sliding_window_view` (no loop over pixels, nothing allocated per step).  Then:

- forward: ``zo = W_mat @ cols`` (one GEMM, W_mat = W as an (O, C·kh·kw) matrix), and one
  call moves zo (O, N, Ho·Wo) into z (N, O, Ho·Wo) while adding the bias;
- ∂L/∂W: δ is moved into zo's layout (one copy), ``dW_mat = zo @ cols.T`` (one GEMM) and
  ∂L/∂b = the row sums of zo;
- ∂L/∂x: ``cols = W_mat.T @ zo`` (one GEMM; cols is free once dW has it), then col2im adds
  each of the kh·kw blocks of rows back onto the strided positions of the input it came from
  (kh·kw slice-adds on views bound once, never np.add.at).

Max pooling copies the windows into one buffer, takes ``argmax`` (the first maximum: the tie
rule) and ``max`` over them; its backward pass turns the recorded positions into a mask and
multiplies δ into the windows of dx.  When the stride equals the window, the windows are a
reshape of the input (no sliding view) and dx is written through the same reshape with no
accumulation; otherwise the windows' shares are added slice by slice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...derive.ir import BATCH, Conv2D, Conv2DGrad, Conv2DGradInput, Op, Pool2D, Pool2DGrad, Program, Reshape

Lines = list[tuple[str, str]]


@dataclass(frozen=True)
class Geometry:
    """Sizes of one windowed op: input (C, H, W), window, stride, padding, output (Ho, Wo)."""

    channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    out: tuple[int, int]

    @property
    def window(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def pixels(self) -> int:
        return self.out[0] * self.out[1]

    @property
    def padded(self) -> bool:
        return self.padding != (0, 0)

    @property
    def tiles(self) -> bool:
        """Whether the windows tile the input exactly (stride = window): a reshape gives them."""
        return self.stride == self.kernel

    def slices(self, p: int, q: int) -> str:
        """The input positions that window entry (p, q) meets, as a slice of the (padded) input."""
        (sh, sw), (ho, wo) = self.stride, self.out
        return f"[:, :, {p}:{p + sh * (ho - 1) + 1}:{sh}, {q}:{q + sw * (wo - 1) + 1}:{sw}]"

    def interior(self) -> str:
        (ph, pw) = self.padding
        return f"[:, :, {ph}:{ph + self.height}, {pw}:{pw + self.width}]"


def geometry(program: Program, image: str, out: str, kernel: tuple, stride: tuple[int, int],
             padding: tuple[int, int] = (0, 0)) -> Geometry:
    """The geometry of an op reading `image` (N, C, H, W) and writing `out` (N, ., Ho, Wo)."""
    _, channels, height, width = program.buffers[image].shape
    ho, wo = program.buffers[out].shape[2:]
    return Geometry(int(channels), int(height), int(width), (int(kernel[0]), int(kernel[1])), tuple(stride),
                    tuple(padding), (int(ho), int(wo)))


class ImageOps:
    """Plans the workspace arrays of a program's image ops and lowers each op to commented lines."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.bindings: Lines = []       # workspace arrays and views, bound after every buffer
        self.per_row = self.fixed = 0
        weight_of = {p.grad: p.buffer for p in program.params}
        ops = list(program.iter_ops())
        forward = {(op.x, op.w): op for op in ops if isinstance(op, Conv2D)}
        #: a Conv2DGrad's and a Conv2DGradInput's forward op: the call with the same input and kernel
        self.conv_of: dict[int, Conv2D] = {}
        for op in ops:
            if isinstance(op, Conv2DGrad):
                self.conv_of[id(op)] = forward[op.x, weight_of[op.dw]]
        for op in ops:
            if isinstance(op, Conv2DGradInput):
                grad = next(g for g in ops if isinstance(g, Conv2DGrad) and g.dz == op.dz)
                self.conv_of[id(op)] = self.conv_of[id(grad)]
        self._plan(ops)

    @staticmethod
    def handles(op: Op) -> bool:
        return isinstance(op, (Conv2D, Conv2DGrad, Conv2DGradInput, Pool2D, Pool2DGrad, Reshape))

    def _geometry(self, op: Op) -> Geometry:
        if isinstance(op, Conv2D):
            return geometry(self.program, op.x, op.out, self.program.buffers[op.w].shape[2:], op.stride, op.padding)
        if isinstance(op, (Conv2DGrad, Conv2DGradInput)):
            return self._geometry(self.conv_of[id(op)])
        if isinstance(op, Pool2D):
            return geometry(self.program, op.x, op.out, op.size, op.stride)
        return geometry(self.program, op.dx, op.dz, op.size, op.stride)

    # -- workspace ------------------------------------------------------------------------------
    def _array(self, name: str, dims: tuple, comment: str, make: str = "empty", dtype: str = "DTYPE") -> str:
        """An array of `dims` (ints; "n" for the batch size, possibly times an int) allocated per workspace."""
        text = ", ".join(str(d) for d in dims)
        self.bindings.append((f"{name} = np.{make}(({text}), dtype={dtype})", comment))
        size, per_row = 1, False
        for d in dims:
            if isinstance(d, str):
                per_row = True
                size *= int(d.split("*")[1]) if "*" in d else 1
            else:
                size *= d
        if per_row:
            self.per_row += size
        else:
            self.fixed += size
        return name

    def _view(self, name: str, code: str, comment: str) -> str:
        self.bindings.append((f"{name} = {code}", comment))
        return name

    def _plan(self, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, Conv2D):
                self._plan_conv(op, self._geometry(op))
            elif isinstance(op, Conv2DGrad):
                z = self.conv_of[id(op)].out
                self._view(f"dz3_{op.dz}", f"{op.dz}.reshape(zo3_{z}.shape)", "view")
            elif isinstance(op, Conv2DGradInput):
                self._plan_col2im(op, self._geometry(op))
            elif isinstance(op, Pool2D):
                self._plan_pool(op, self._geometry(op))
            elif isinstance(op, Pool2DGrad):
                self._plan_pool_grad(op, self._geometry(op))

    def _plan_conv(self, op: Conv2D, g: Geometry) -> None:
        z, (ho, wo), (kh, kw) = op.out, g.out, g.kernel
        out_channels, rows = int(self.program.buffers[op.w].shape[0]), g.channels * g.window
        source = op.x
        if g.padded:
            source = self._array(f"xpad_{z}", ("n", g.channels, g.height + 2 * g.padding[0],
                                               g.width + 2 * g.padding[1]),
                                 f"{op.x} zero-padded: the border stays 0", make="zeros")
            self._view(f"xin_{z}", f"xpad_{z}{g.interior()}", "its interior: a view")
        self._array(f"cols_{z}", (rows, f"n*{g.pixels}"), f"im2col of {op.x}: a column per output pixel (n, i, j), "
                                                          "a row per kernel entry (c, p, q)")
        self._view(f"cols6_{z}", f"cols_{z}.reshape({g.channels}, {kh}, {kw}, n, {ho}, {wo})", "view")
        self._view(f"colsT_{z}", f"cols_{z}.T", "transposed view, no copy")
        self._view(f"win_{z}", f"np.lib.stride_tricks.sliding_window_view({source}, ({kh}, {kw}), axis=(2, 3))[:, :, ::{g.stride[0]}, "
                               f"::{g.stride[1]}].transpose(1, 4, 5, 0, 2, 3)",
                   "every window of the input as (c, p, q, n, i, j): a strided view, no copy")
        self._array(f"zo_{z}", (out_channels, f"n*{g.pixels}"), f"{z} (later its delta) as (O, N*Ho*Wo): the "
                                                                "GEMMs' layout")
        self._view(f"zo3_{z}", f"zo_{z}.reshape({out_channels}, n, {g.pixels}).transpose(1, 0, 2)",
                   "zo as (N, O, Ho*Wo): a view")
        self._view(f"z3_{z}", f"{z}.reshape(n, {out_channels}, {g.pixels})", "view")
        self._view(f"bcol_{z}", f"{op.b}.reshape({out_channels}, 1)", "the bias as a column: a view")
        self._view(f"Wm_{z}", f"{op.w}.reshape({out_channels}, {rows})", f"{op.w} as an (O, C*kh*kw) matrix: a view")

    def _plan_col2im(self, op: Conv2DGradInput, g: Geometry) -> None:
        z = self.conv_of[id(op)].out
        target = op.dx
        if g.padded:
            target = self._array(f"dxpad_{z}", ("n", g.channels, g.height + 2 * g.padding[0],
                                                g.width + 2 * g.padding[1]), f"{op.dx} with the padding border")
            self._view(f"dxin_{z}", f"dxpad_{z}{g.interior()}", "its interior: a view")
        kh, kw = g.kernel
        pairs = ", ".join(f"({target}{g.slices(p, q)}, cols6_{z}[:, {p}, {q}].transpose(1, 0, 2, 3))"
                          for p in range(kh) for q in range(kw))
        self._view(f"col2im_{z}", f"({pairs},)", f"(input positions, rows of cols) of each of the {kh}x{kw} kernel "
                                                 "entries: views")
        self._view(f"WmT_{z}", f"Wm_{z}.T", "transposed view, no copy")

    def _plan_pool(self, op: Pool2D, g: Geometry) -> None:
        (kh, kw), (ho, wo), out = g.kernel, g.out, op.out
        if g.tiles:
            self._view(f"pwin_{out}", f"{op.x}.reshape(n, {g.channels}, {ho}, {kh}, {wo}, {kw})"
                                      + (".transpose(0, 1, 2, 4, 3, 5)" if op.mode == "max" else ""),
                       "the windows tile the input: a reshape, no copy")
        else:
            self._view(f"pwin_{out}", f"np.lib.stride_tricks.sliding_window_view({op.x}, ({kh}, {kw}), axis=(2, 3))[:, :, "
                                      f"::{g.stride[0]}, ::{g.stride[1]}]", "every window: a strided view, no copy")
        if op.mode == "max" or not g.tiles:
            self._array(f"pw_{out}", ("n", g.channels, ho, wo, kh * kw), f"the windows of {op.x}, one per row")
            self._view(f"pw6_{out}", f"pw_{out}.reshape(n, {g.channels}, {ho}, {wo}, {kh}, {kw})", "view")

    def _plan_pool_grad(self, op: Pool2DGrad, g: Geometry) -> None:
        (kh, kw), (ho, wo), key = g.kernel, g.out, op.dx
        if op.mode == "max":
            self._view(f"keys_{key}", f"np.arange({kh * kw})", "window positions u*kw + v")
            self._view(f"pidx_{key}", f"{op.index}[..., None]", "view")
            self._array(f"pmask_{key}", ("n", g.channels, ho, wo, kh * kw), "1 at each window's first maximum",
                        dtype="np.bool_")
            self._view(f"pmask6_{key}", f"pmask_{key}.reshape(n, {g.channels}, {ho}, {wo}, {kh}, {kw})", "view")
        if g.tiles:
            self._view(f"dwin_{key}", f"{op.dx}.reshape(n, {g.channels}, {ho}, {kh}, {wo}, {kw})"
                       + (".transpose(0, 1, 2, 4, 3, 5)" if op.mode == "max" else ""),
                       "the windows of dx: a reshape, no copy")
            self._view(f"dz6_{key}", f"{op.dz}[..., None, None]" if op.mode == "max" else
                       f"{op.dz}.reshape(n, {g.channels}, {ho}, 1, {wo}, 1)", "view")
            return
        self._view(f"dz6_{key}", f"{op.dz}[..., None, None]", "view")
        self._array(f"share_{key}", ("n", g.channels, ho, wo, kh, kw), "each window's share of dx")
        pairs = ", ".join(f"({op.dx}{g.slices(p, q)}, share_{key}[..., {p}, {q}])" for p in range(kh) for q in range(kw))
        self._view(f"scatter_{key}", f"({pairs},)", f"(input positions, shares) of each of the {kh}x{kw} window "
                                                   "entries: views")

    # -- lowering -------------------------------------------------------------------------------
    def lower(self, op: Op, scratch: Callable[[tuple], str]) -> Lines:
        """The lines of one image op; `scratch(shape)` gives a scratch array for this op alone."""
        if isinstance(op, Conv2D):
            return self._conv(op, self._geometry(op))
        if isinstance(op, Conv2DGrad):
            return self._conv_grad(op, scratch)
        if isinstance(op, Conv2DGradInput):
            return self._conv_grad_input(op, self._geometry(op))
        if isinstance(op, Pool2D):
            return self._pool(op, self._geometry(op))
        if isinstance(op, Pool2DGrad):
            return self._pool_grad(op, self._geometry(op))
        return []  # Reshape: a view bound once per workspace

    @staticmethod
    def _conv(op: Conv2D, g: Geometry) -> Lines:
        z = op.out
        lines = [(f"np.copyto(xin_{z}, {op.x})", f"xpad = {op.x} inside a zero border")] if g.padded else []
        return lines + [
            (f"np.copyto(cols6_{z}, win_{z})", "im2col: cols[(c, p, q), (n, i, j)] = x[n, c, i*s + p, j*s + q]"),
            (f"np.dot(Wm_{z}, cols_{z}, zo_{z})", "zo = W_mat @ cols   (one GEMM)"),
            (f"np.add(zo3_{z}, bcol_{z}, z3_{z})", f"{z}[n, o, i, j] = zo[o, (n, i, j)] + {op.b}[o]"),
        ]

    def _conv_grad(self, op: Conv2DGrad, scratch: Callable[[tuple], str]) -> Lines:
        z = self.conv_of[id(op)].out
        out_channels, c, kh, kw = (int(d) for d in self.program.buffers[op.dw].shape)
        dwm = f"{op.dw}.reshape({out_channels}, {c * kh * kw})"
        lines = [(f"np.copyto(zo3_{z}, dz3_{op.dz})", f"zo[o, (n, i, j)] = {op.dz}[n, o, i, j]")]
        if not op.accumulate:
            return lines + [(f"np.dot(zo_{z}, colsT_{z}, {dwm})", f"{op.dw} = zo @ cols.T   (one GEMM)"),
                            (f"np.add.reduce(zo_{z}, 1, None, {op.db})", f"{op.db}[o] = the sum of zo[o, :]")]
        sw, sb = scratch((out_channels, c * kh * kw)), scratch((out_channels,))
        return lines + [(f"np.dot(zo_{z}, colsT_{z}, {sw})", f"{sw} = zo @ cols.T   (one GEMM)"),
                        (f"np.add({dwm}, {sw}, {dwm})", f"{op.dw} += {sw}   (another use)"),
                        (f"np.add.reduce(zo_{z}, 1, None, {sb})", f"{sb}[o] = the sum of zo[o, :]"),
                        (f"np.add({op.db}, {sb}, {op.db})", f"{op.db} += {sb}")]

    def _conv_grad_input(self, op: Conv2DGradInput, g: Geometry) -> Lines:
        z = self.conv_of[id(op)].out
        target = f"dxpad_{z}" if g.padded else op.dx
        lines = [(f"np.dot(WmT_{z}, zo_{z}, cols_{z})", "dcols = W_mat.T @ zo   (one GEMM, into cols)"),
                 (f"{target}.fill(0.0)", ""),
                 (f"for dst, src in col2im_{z}:", f"col2im: {g.window} strided slice-adds"),
                 ("    np.add(dst, src, dst)", "dx[n, c, i*s + p, j*s + q] += dcols[(c, p, q), (n, i, j)]")]
        if g.padded:
            lines.append((f"np.copyto({op.dx}, dxin_{z})", f"{op.dx} = the interior (the border was padding)"))
        return lines

    @staticmethod
    def _pool(op: Pool2D, g: Geometry) -> Lines:
        out = op.out
        if op.mode == "avg" and g.tiles:
            return [(f"np.add.reduce(pwin_{out}, (3, 5), None, {out})", f"{out} = the sum of each window"),
                    (f"np.multiply({out}, {1 / g.window!r}, {out})", f"{out} = the mean of each window")]
        lines = [(f"np.copyto(pw6_{out}, pwin_{out})", "the windows, one per row")]
        if op.mode == "avg":
            return lines + [(f"np.add.reduce(pw_{out}, 4, None, {out})", f"{out} = the sum of each window"),
                            (f"np.multiply({out}, {1 / g.window!r}, {out})", f"{out} = the mean of each window")]
        return lines + [(f"np.argmax(pw_{out}, 4, {op.index})", f"{op.index} = u*kw + v of the first maximum"),
                        (f"np.fmax.reduce(pw_{out}, 4, None, {out})", f"{out} = the maximum of each window")]

    @staticmethod
    def _pool_grad(op: Pool2DGrad, g: Geometry) -> Lines:
        key = op.dx
        if op.mode == "max":
            lines = [(f"np.equal(pidx_{key}, keys_{key}, pmask_{key})", "1 at each window's first maximum")]
            product = (f"np.multiply(pmask6_{key}, dz6_{key}, {'dwin' if g.tiles else 'share'}_{key})",
                       f"{op.dx} = {op.dz} at each window's first maximum, 0 elsewhere" if g.tiles
                       else "each window's share of dx")
        else:
            lines = []
            product = (f"np.multiply(dz6_{key}, {1 / g.window!r}, {'dwin' if g.tiles else 'share'}_{key})",
                       f"{op.dx} = {op.dz}/{g.window} on every entry of its window" if g.tiles
                       else f"each window's share of dx: {op.dz}/{g.window}")
        lines.append(product)
        if g.tiles:
            return lines
        return lines + [(f"{op.dx}.fill(0.0)", ""),
                        (f"for dst, src in scatter_{key}:", f"{g.window} strided slice-adds (the windows overlap "
                                                            "or leave gaps)"),
                        ("    np.add(dst, src, dst)", "dx[n, c, i*s + u, j*s + v] += share[n, c, i, j, u, v]")]
