"""The NumPy lowering of the image ops: convolutions as im2col + GEMM, pooling by windows, reshapes.

Layout.  Every image-shaped intermediate (N, C, H, W) is stored channel-major with the batch
innermost, memory order (C, H, W, N), and seen as (N, C, H, W) through a transposed view
(`channel_major`): elementwise code is unchanged, and the convolution's GEMMs read and write the
buffers in place, since an output z as (O, Ho·Wo·N) *is* the GEMM's (O, columns) result and a δ
as (O, Ho·Wo·N) is its operand.  Windows then have the batch as their long inner run, so im2col,
col2im and pooling copy and add long contiguous runs even on 4×4 images.

A Conv2D call owns `cols` (C·kh·kw, Ho·Wo·N): every kh×kw window of its input as a column, one
per output pixel, filled by one strided copy from a `sliding_window_view` of the input (copied
into a zero-bordered `xpad` when the layer pads or the input is stored batch-first).  Then
- forward: ``z = W_mat @ cols`` (one GEMM, into z's memory; W_mat = W as (O, C·kh·kw)), plus b;
- ∂L/∂W = δ_mat @ colsᵀ (one GEMM, δ_mat = δ as (O, Ho·Wo·N): a view), ∂L/∂b = δ_mat's row sums;
- ∂L/∂x: ``cols = W_matᵀ @ δ_mat`` (one GEMM; cols is free once ∂L/∂W has it), then col2im adds
  the rows of each of the kh·kw kernel entries onto the strided input positions they came from
  (kh·kw slice-adds on views bound once per workspace; never np.add.at).

Max pooling copies the windows into one (kh·kw, C, Ho, Wo, N) buffer and takes the maximum over its
first axis; the position of each window's first maximum (the tie rule) is kept as a mask of the
same shape (the IR's "index" buffer, in the form this backend reads back: a plane is 1 where
its entry equals the maximum and no earlier one did, a few boolean ufunc calls per entry where
``argmax`` over that axis would be ten times slower), and the backward pass multiplies δ by it
into the windows of dx.  When the stride equals the window
the windows are a reshape of the input (max-pool by reshape) and dx is written through the same
reshape with no accumulation; otherwise the windows' shares are added slice by slice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...derive.ir import BATCH, Conv2D, Conv2DGrad, Conv2DGradInput, Op, Pool2D, Pool2DGrad, Program, Reshape
from ..interface import names_tuple

Lines = list[tuple[str, str]]


def channel_major(shape: tuple) -> bool:
    """Whether a buffer of this shape is an image batch (N, C, H, W), stored (C, H, W, N)."""
    return len(shape) == 4 and shape[0] == BATCH


def allocation(shape: tuple, dtype: str = "DTYPE") -> str:
    """Code allocating an (N, C, H, W) buffer stored (C, H, W, N), seen as (N, C, H, W)."""
    _, c, h, w = shape
    return f"np.empty(({c}, {h}, {w}, n), dtype={dtype}).transpose(3, 0, 1, 2)"


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
        """The positions of a (C, H, W, N) array that window entry (p, q) meets, as a slice."""
        (sh, sw), (ho, wo) = self.stride, self.out
        return f"[:, {p}:{p + sh * (ho - 1) + 1}:{sh}, {q}:{q + sw * (wo - 1) + 1}:{sw}]"

    def interior(self) -> str:
        (ph, pw) = self.padding
        return f"[:, {ph}:{ph + self.height}, {pw}:{pw + self.width}]"


def geometry(program: Program, image: str, out: str, kernel: tuple, stride: tuple[int, int],
             padding: tuple[int, int] = (0, 0)) -> Geometry:
    """The geometry of an op reading `image` (N, C, H, W) and writing `out` (N, ., Ho, Wo)."""
    _, channels, height, width = program.buffers[image].shape
    ho, wo = program.buffers[out].shape[2:]
    return Geometry(int(channels), int(height), int(width), (int(kernel[0]), int(kernel[1])), tuple(stride),
                    tuple(padding), (int(ho), int(wo)))


class ImageOps:
    """Plans the workspace arrays of a program's image ops and lowers each op to commented lines.

    `stored(name)` says whether a buffer is stored channel-major (see `channel_major`); the views
    this binds rely on it, and an image the ops read that is stored batch-first (a model input)
    is copied into a channel-major buffer first.
    """

    def __init__(self, program: Program, stored: Callable[[str], bool]) -> None:
        self.program, self.stored = program, stored
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
        self._bound: set[str] = set()
        for op in ops:
            self._plan(op)

    @staticmethod
    def handles(op: Op) -> bool:
        return isinstance(op, (Conv2D, Conv2DGrad, Conv2DGradInput, Pool2D, Pool2DGrad, Reshape))

    def views(self, op: Reshape) -> bool:
        """Whether a reshape is a view (both sides stored batch-first), else a copy."""
        return not (self.stored(op.x) or self.stored(op.out))

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
        """An array of `dims` (ints, and "n" for the batch size) allocated once per workspace."""
        self.bindings.append((f"{name} = np.{make}(({', '.join(str(d) for d in dims)}), dtype={dtype})", comment))
        size, batch = 1, False
        for d in dims:
            if isinstance(d, str):  # "n", or "64 * n"
                batch = True
                size *= int(d.split("*")[0]) if "*" in d else 1
            else:
                size *= d
        if batch:
            self.per_row += size
        else:
            self.fixed += size
        return name

    def _view(self, name: str, code: str, comment: str) -> str:
        if name not in self._bound:
            self._bound.add(name)
            self.bindings.append((f"{name} = {code}", comment))
        return name

    def _chwn(self, image: str) -> str:
        """An image buffer as its (C, H, W, N) memory: contiguous for a channel-major buffer."""
        return self._view(f"{image}_t", f"{image}.transpose(1, 2, 3, 0)", "its (C, H, W, N) memory: a view")

    def _plan(self, op: Op) -> None:
        if isinstance(op, Conv2D):
            self._plan_conv(op, self._geometry(op))
        elif isinstance(op, Conv2DGrad):
            z = self.conv_of[id(op)].out
            out_channels = int(self.program.buffers[op.dw].shape[0])
            self._matrix(op.dz, out_channels, self._geometry(op).pixels)
            self._view(f"dWm_{z}", f"{op.dw}.reshape({out_channels}, {self._rows(op.dw)})",
                       "its gradient as a matrix: a view")
        elif isinstance(op, Conv2DGradInput):
            self._plan_col2im(op, self._geometry(op))
        elif isinstance(op, Pool2D):
            self._plan_pool(op, self._geometry(op))
        elif isinstance(op, Pool2DGrad):
            self._plan_pool_grad(op, self._geometry(op))
        elif isinstance(op, Reshape) and not self.views(op):
            image = op.x if len(self.program.buffers[op.x].shape) == 4 else op.out
            flat = op.out if image == op.x else op.x
            self._view(f"{flat}_4", f"{flat}.reshape(n, {', '.join(map(str, self.program.buffers[image].shape[1:]))})",
                       f"{flat} as an image: a view")

    def _rows(self, weight: str) -> int:
        _, channels, kh, kw = self.program.buffers[weight].shape
        return int(channels) * int(kh) * int(kw)

    def _matrix(self, image: str, rows: int, pixels: int) -> str:
        """A channel-major image (N, O, Ho, Wo) as the (O, Ho·Wo·N) matrix the GEMMs read: a view."""
        if not self.stored(image):
            raise AssertionError(f"{image} is read as a matrix but is not stored channel-major")
        return self._view(f"{image}_m", f"{self._chwn(image)}.reshape({rows}, {pixels} * n)",
                          "as an (O, Ho*Wo*N) matrix: a view")

    def _plan_conv(self, op: Conv2D, g: Geometry) -> None:
        z, (ho, wo), (kh, kw) = op.out, g.out, g.kernel
        out_channels, rows = int(self.program.buffers[op.w].shape[0]), self._rows(op.w)
        if g.padded or not self.stored(op.x):
            border = "zero border: the padding, which stays 0" if g.padded else "no border"
            source = self._array(f"xpad_{z}", (g.channels, g.height + 2 * g.padding[0], g.width + 2 * g.padding[1],
                                               "n"), f"{op.x} as (C, H, W, N) inside a {border}",
                                 make="zeros")
            self._view(f"xin_{z}", f"xpad_{z}{g.interior()}", "its interior: a view")
            self._chwn(op.x)
        else:
            source = self._chwn(op.x)
        self._array(f"cols_{z}", (rows, f"{g.pixels} * n"), f"im2col of {op.x}: a column per output pixel "
                                                           "(i, j, n), a row per kernel entry (c, p, q)")
        self._view(f"cols6_{z}", f"cols_{z}.reshape({g.channels}, {kh}, {kw}, {ho}, {wo}, n)", "view")
        self._view(f"colsT_{z}", f"cols_{z}.T", "transposed view, no copy")
        self._view(f"win_{z}", f"np.lib.stride_tricks.sliding_window_view({source}, ({kh}, {kw}), axis=(1, 2))"
                               f"[:, ::{g.stride[0]}, ::{g.stride[1]}].transpose(0, 4, 5, 1, 2, 3)",
                   "every window as (c, p, q, i, j, n): a strided view, no copy")
        self._matrix(z, out_channels, g.pixels)
        self._view(f"b4_{z}", f"{op.b}.reshape({out_channels}, 1, 1, 1)", "the bias along the channels: a view")
        self._view(f"Wm_{z}", f"{op.w}.reshape({out_channels}, {rows})", f"{op.w} as an (O, C*kh*kw) matrix: a view")

    def _plan_col2im(self, op: Conv2DGradInput, g: Geometry) -> None:
        z = self.conv_of[id(op)].out
        if g.padded:
            target = self._array(f"dxpad_{z}", (g.channels, g.height + 2 * g.padding[0],
                                                g.width + 2 * g.padding[1], "n"), f"{op.dx} with the padding border")
            self._view(f"dxin_{z}", f"dxpad_{z}{g.interior()}", "its interior: a view")
        else:
            target = self._chwn(op.dx)
        kh, kw = g.kernel
        pairs = ", ".join(f"({target}{g.slices(p, q)}, cols6_{z}[:, {p}, {q}])" for p in range(kh) for q in range(kw))
        self._view(f"col2im_{z}", f"({pairs},)", f"(input positions, rows of cols) of each of the {kh}x{kw} kernel "
                                                 "entries: views")
        self._view(f"WmT_{z}", f"Wm_{z}.T", "transposed view, no copy")
        self._chwn(op.dx)

    def _windows(self, image: str, g: Geometry) -> str:
        """The windows of a (C, H, W, N) image as (kh, kw, C, Ho, Wo, N): a reshape when they tile it."""
        (kh, kw), (ho, wo) = g.kernel, g.out
        memory = self._chwn(image)
        if g.tiles and self.stored(image):  # (a reshape of a strided view could silently copy)
            return f"{memory}.reshape({g.channels}, {ho}, {kh}, {wo}, {kw}, n).transpose(2, 4, 0, 1, 3, 5)"
        return (f"np.lib.stride_tricks.sliding_window_view({memory}, ({kh}, {kw}), axis=(1, 2))[:, ::{g.stride[0]}, "
                f"::{g.stride[1]}].transpose(4, 5, 0, 1, 2, 3)")

    def _plan_pool(self, op: Pool2D, g: Geometry) -> None:
        (kh, kw), (ho, wo), out = g.kernel, g.out, op.out
        how = "the windows tile the input: a reshape, no copy" if g.tiles else "every window: a strided view, no copy"
        self._view(f"pwin_{out}", self._windows(op.x, g), how)
        self._chwn(out)
        if op.mode == "max" or not g.tiles:
            self._array(f"pw_{out}", (kh * kw, g.channels, ho, wo, "n"), f"the windows of {op.x}, one plane per "
                                                                        "window entry")
            self._view(f"pw6_{out}", f"pw_{out}.reshape({kh}, {kw}, {g.channels}, {ho}, {wo}, n)", "view")
        if op.index:  # the first maximum of each window, kept as a mask: one plane per window entry
            self._array(op.index, (kh * kw, g.channels, ho, wo, "n"), "1 at each window's first maximum (row-major), "
                                                                     "0 elsewhere", dtype="np.bool_")
            self._view(f"{op.index}_6", f"{op.index}.reshape({kh}, {kw}, {g.channels}, {ho}, {wo}, n)", "view")
            self._array(f"found_{out}", (g.channels, ho, wo, "n"), "windows whose first maximum is found",
                        dtype="np.bool_")
            pairs = [f"(pw_{out}[{k}], {op.index}[{k}])" for k in range(1, kh * kw)]
            self._view(f"planes_{out}", names_tuple(pairs), "(window entry, its plane of the mask) after the first: "
                                                            "views")

    def _plan_pool_grad(self, op: Pool2DGrad, g: Geometry) -> None:
        (kh, kw), (ho, wo), key = g.kernel, g.out, op.dx
        self._chwn(op.dz)
        memory = self._chwn(op.dx)
        if g.tiles:
            self._view(f"dwin_{key}", f"{memory}.reshape({g.channels}, {ho}, {kh}, {wo}, {kw}, n)"
                                      ".transpose(2, 4, 0, 1, 3, 5)", "the windows of dx: a reshape, no copy")
            return
        share = (kh, kw) if op.mode == "max" else ()
        self._array(f"share_{key}", (*share, g.channels, ho, wo, "n"), "each window's share of dx")
        pick = "[{p}, {q}]" if op.mode == "max" else ""
        pairs = ", ".join(f"({memory}{g.slices(p, q)}, share_{key}{pick.format(p=p, q=q)})"
                          for p in range(kh) for q in range(kw))
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
        if self.views(op):
            return []  # a view bound once per workspace
        if len(self.program.buffers[op.x].shape) == 4:
            return [(f"np.copyto({op.out}_4, {op.x})", f"{op.out} = {op.x} flattened row-major (from channel-major)")]
        return [(f"np.copyto({op.out}, {op.x}_4)", f"{op.out} = {op.x} as an image (into channel-major)")]

    def _conv(self, op: Conv2D, g: Geometry) -> Lines:
        z = op.out
        lines = ([(f"np.copyto(xin_{z}, {op.x}_t)", "xpad = the input, channel-major, inside its border")]
                 if g.padded or not self.stored(op.x) else [])
        return lines + [
            (f"np.copyto(cols6_{z}, win_{z})", "im2col: cols[(c, p, q), (i, j, n)] = x[n, c, i*s + p, j*s + q]"),
            (f"np.dot(Wm_{z}, cols_{z}, {z}_m)", f"{z} = W_mat @ cols   (one GEMM, into {z}'s memory)"),
            (f"np.add({z}_t, b4_{z}, {z}_t)", f"{z}[n, o, i, j] += {op.b}[o]"),
        ]

    def _conv_grad(self, op: Conv2DGrad, scratch: Callable[[tuple], str]) -> Lines:
        z = self.conv_of[id(op)].out
        out_channels, rows = int(self.program.buffers[op.dw].shape[0]), self._rows(op.dw)
        if not op.accumulate:
            return [(f"np.dot({op.dz}_m, colsT_{z}, dWm_{z})", f"{op.dw} = {op.dz}_mat @ cols.T   (one GEMM)"),
                    (f"np.add.reduce({op.dz}_m, 1, None, {op.db})", f"{op.db}[o] = the sum of {op.dz}[:, o]")]
        sw, sb = scratch((out_channels, rows)), scratch((out_channels,))
        return [(f"np.dot({op.dz}_m, colsT_{z}, {sw})", f"{sw} = {op.dz}_mat @ cols.T   (one GEMM)"),
                (f"np.add(dWm_{z}, {sw}, dWm_{z})", f"{op.dw} += {sw}   (another use)"),
                (f"np.add.reduce({op.dz}_m, 1, None, {sb})", f"{sb}[o] = the sum of {op.dz}[:, o]"),
                (f"np.add({op.db}, {sb}, {op.db})", f"{op.db} += {sb}")]

    def _conv_grad_input(self, op: Conv2DGradInput, g: Geometry) -> Lines:
        z = self.conv_of[id(op)].out
        target = f"dxpad_{z}" if g.padded else f"{op.dx}_t"
        lines = [(f"np.dot(WmT_{z}, {op.dz}_m, cols_{z})", f"dcols = W_mat.T @ {op.dz}_mat   (one GEMM, into cols)"),
                 (f"{target}.fill(0.0)", f"{op.dx} = 0, then each kernel entry's rows add in"),
                 (f"for dst, src in col2im_{z}:", f"col2im: {g.window} strided slice-adds"),
                 ("    np.add(dst, src, dst)", "dx[n, c, i*s + p, j*s + q] += dcols[(c, p, q), (i, j, n)]")]
        if g.padded:
            lines.append((f"np.copyto({op.dx}_t, dxin_{z})", f"{op.dx} = the interior (the border was padding)"))
        return lines

    @staticmethod
    def _pool(op: Pool2D, g: Geometry) -> Lines:
        out = op.out
        if op.mode == "avg" and g.tiles:
            return [(f"np.add.reduce(pwin_{out}, (0, 1), None, {out}_t)", f"{out} = the sum of each window"),
                    (f"np.multiply({out}_t, {1 / g.window!r}, {out}_t)", f"{out} = the mean of each window")]
        lines = [(f"np.copyto(pw6_{out}, pwin_{out})", "the windows, one plane per window entry")]
        if op.mode == "avg":
            return lines + [(f"np.add.reduce(pw_{out}, 0, None, {out}_t)", f"{out} = the sum of each window"),
                            (f"np.multiply({out}_t, {1 / g.window!r}, {out}_t)", f"{out} = the mean of each window")]
        first, index = f"{op.index}[0]", op.index
        return lines + [
            (f"np.maximum.reduce(pw_{out}, 0, None, {out}_t)", f"{out} = the maximum of each window"),
            (f"np.equal(pw_{out}[0], {out}_t, {first})", f"{index}[0] = the windows whose entry (0, 0) is a maximum"),
            (f"np.copyto(found_{out}, {first})", "found = the windows whose first maximum is known"),
            (f"for entry, first in planes_{out}:", "the later entries, in row-major order:"),
            (f"    np.equal(entry, {out}_t, first)", "    this entry is a maximum"),
            ("    np.greater(first, found_" + out + ", first)", "    ... and no earlier one was (the tie rule)"),
            (f"    np.logical_or(found_{out}, first, found_{out})", "    found |= first"),
        ]

    @staticmethod
    def _pool_grad(op: Pool2DGrad, g: Geometry) -> Lines:
        key, dz = op.dx, f"{op.dz}_t"
        if op.mode == "max":
            target = f"dwin_{key}" if g.tiles else f"share_{key}"
            lines = [(f"np.multiply({op.index}_6, {dz}, {target})",
                      f"{op.dx} = {op.dz} at each window's first maximum, 0 elsewhere" if g.tiles
                      else "each window's share of dx")]
        elif g.tiles:
            lines = [(f"np.multiply({dz}, {1 / g.window!r}, dwin_{key})",
                      f"{op.dx} = {op.dz}/{g.window} on every entry of its window")]
        else:
            lines = [(f"np.multiply({dz}, {1 / g.window!r}, share_{key})", f"each window's share: {op.dz}/{g.window}")]
        if g.tiles:
            return lines
        return lines + [(f"{op.dx}_t.fill(0.0)", f"{op.dx} = 0, then each window entry's shares add in"),
                        (f"for dst, src in scatter_{key}:", f"{g.window} strided slice-adds (the windows overlap "
                                                            "or leave gaps)"),
                        ("    np.add(dst, src, dst)", "dx[n, c, i*s + u, j*s + v] += share[u, v, c, i, j, n]")]
