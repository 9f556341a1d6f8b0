"""The CUDA lowering of the image ops: im2col + cuBLAS GEMMs for convolutions, pooling kernels, reshapes as views.

A Conv2D call owns `cols_<z>` (C·kh·kw, N·Ho·Wo) and `zo_<z>` (O, N·Ho·Wo), the layouts the GEMMs
want, as the NumPy backend does:
- forward: ``nc_im2col`` fills cols (zero padding included), ``gemm(W_mat, cols) -> zo`` (cuBLAS),
  ``nc_conv_bias`` moves zo into z (N, O, Ho, Wo) adding the bias;
- ∂L/∂W: ``nc_conv_rows`` moves δ into zo's layout, ``gemm(zo, colsᵀ) -> dW_mat`` and
  ``gemv(zo, ones) -> db``;
- ∂L/∂x: ``gemm(W_matᵀ, zo) -> cols`` (free once dW has it), then ``nc_col2im`` gathers each
  entry of dx from the columns that hold it.
Pooling is one kernel each way (``nc_maxpool`` also records the first maximum's position);
a reshape is a CuPy view bound once per workspace.  Every launch is a `lowering.Blas` step, with
what it reads and writes, so the dead-store pass and the CUDA graphs treat it like a cuBLAS call.
The kernels are in ``templates/cuda/_images.cu.j2``.
"""
from __future__ import annotations

from ...derive.ir import Conv2D, Conv2DGrad, Conv2DGradInput, Op, Pool2D, Pool2DGrad, Program, Reshape


class ImageLowering:
    """Launches and workspace bindings of a program's image ops; `kernels` names the fixed kernels they use."""

    def __init__(self, program: Program) -> None:
        self.program = program
        weight_of = {p.grad: p.buffer for p in program.params}
        ops = list(program.iter_ops())
        forward = {(op.x, op.w): op for op in ops if isinstance(op, Conv2D)}
        self.conv_of: dict[int, Conv2D] = {}
        for op in ops:
            if isinstance(op, Conv2DGrad):
                self.conv_of[id(op)] = forward[op.x, weight_of[op.dw]]
        for op in ops:
            if isinstance(op, Conv2DGradInput):
                grad = next(g for g in ops if isinstance(g, Conv2DGrad) and g.dz == op.dz)
                self.conv_of[id(op)] = self.conv_of[id(grad)]
        self.kernels: list[str] = []
        self.bindings: list[tuple[str, str]] = []
        self.per_row = 0
        for op in ops:
            self._plan(op)

    @staticmethod
    def handles(op: Op) -> bool:
        return isinstance(op, (Conv2D, Conv2DGrad, Conv2DGradInput, Pool2D, Pool2DGrad, Reshape))

    def _use(self, *names: str) -> None:
        self.kernels += [name for name in names if name not in self.kernels]

    def _dims(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.program.buffers[name].shape[1:])

    def _plan(self, op: Op) -> None:
        if isinstance(op, Conv2D):
            out_channels, channels, kh, kw = (int(d) for d in self.program.buffers[op.w].shape)
            _, ho, wo = self._dims(op.out)
            rows, pixels = channels * kh * kw, ho * wo
            self.bindings += [
                (f"cols_{op.out} = cp.zeros(({rows}, n * {pixels}), dtype=DTYPE)",
                 f"im2col of {op.x}: a column per output pixel"),
                (f"zo_{op.out} = cp.zeros(({out_channels}, n * {pixels}), dtype=DTYPE)",
                 f"{op.out} (later its delta) as (O, N*Ho*Wo)"),
                (f"Wm_{op.out} = {op.w}.reshape({out_channels}, {rows})", f"{op.w} as an (O, C*kh*kw) matrix: a view"),
            ]
            self.per_row += (rows + out_channels) * pixels
            self._use("nc_im2col", "nc_conv_bias")
        elif isinstance(op, Conv2DGrad):
            conv = self.conv_of[id(op)]
            out_channels, channels, kh, kw = (int(d) for d in self.program.buffers[op.dw].shape)
            _, ho, wo = self._dims(conv.out)
            self.bindings += [(f"dWm_{conv.out} = {op.dw}.reshape({out_channels}, {channels * kh * kw})",
                               "its gradient as a matrix: a view"),
                              (f"ones_{conv.out} = cp.ones((n * {ho * wo},), dtype=DTYPE)",
                               "row sums of zo = zo @ ones: the bias gradient")]
            self.per_row += ho * wo
            self._use("nc_conv_rows")
        elif isinstance(op, Conv2DGradInput):
            self._use("nc_col2im")
        elif isinstance(op, Pool2D):
            self._use(f"nc_{op.mode}pool")
        elif isinstance(op, Pool2DGrad):
            self._use(f"nc_{op.mode}pool_grad")

    def steps(self, op: Op, blas: type) -> list:
        """The op as `blas` steps (launch code, math, reads, writes)."""
        if isinstance(op, Conv2D):
            return self._conv(op, blas)
        if isinstance(op, Conv2DGrad):
            return self._conv_grad(op, blas)
        if isinstance(op, Conv2DGradInput):
            return self._conv_grad_input(op, blas)
        if isinstance(op, Pool2D):
            return [self._pool(op, blas)]
        if isinstance(op, Pool2DGrad):
            return [self._pool_grad(op, blas)]
        return [blas("", f"{op.out} = {op.x} reshaped (a view)", frozenset({op.x}), frozenset({op.out}))]

    def _geometry(self, conv: Conv2D) -> str:
        """The nc_im2col / nc_col2im arguments after the arrays: n, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo."""
        channels, height, width = self._dims(conv.x)
        kh, kw = (int(d) for d in self.program.buffers[conv.w].shape[2:])
        _, ho, wo = self._dims(conv.out)
        values = (channels, height, width, kh, kw, *conv.stride, *conv.padding, ho, wo)
        return "n32, " + ", ".join(f"np.int32({v})" for v in values)

    def _conv(self, op: Conv2D, blas: type) -> list:
        z = op.out
        out_channels, ho, wo = self._dims(z)
        size = self.program.buffers[f"{op.w}"].shape
        rows = int(size[1]) * int(size[2]) * int(size[3])
        return [
            blas(f"k.nc_im2col(grid(n * {rows * ho * wo}), BLOCK, (cols_{z}, {op.x}, {self._geometry(op)}))",
                 f"cols_{z} = im2col({op.x})", frozenset({op.x}), frozenset({f"cols_{z}"})),
            blas(f'gemm("N", "N", Wm_{z}, cols_{z}, zo_{z})', f"zo_{z} = W_mat @ cols_{z}",
                 frozenset({op.w, f"cols_{z}"}), frozenset({f"zo_{z}"})),
            blas(f"k.nc_conv_bias(grid(n * {out_channels * ho * wo}), BLOCK, ({z}, zo_{z}, {op.b}, n32, "
                 f"np.int32({out_channels}), np.int32({ho * wo})))", f"{z} = zo_{z} (as an image) + {op.b}",
                 frozenset({f"zo_{z}", op.b}), frozenset({z})),
        ]

    def _conv_grad(self, op: Conv2DGrad, blas: type) -> list:
        z = self.conv_of[id(op)].out
        out_channels, ho, wo = self._dims(z)
        beta, sign = (", beta=1.0", "+=") if op.accumulate else ("", "=")
        reads = frozenset({op.dw, op.db}) if op.accumulate else frozenset()
        return [
            blas(f"k.nc_conv_rows(grid(n * {out_channels * ho * wo}), BLOCK, (zo_{z}, {op.dz}, n32, "
                 f"np.int32({out_channels}), np.int32({ho * wo})))", f"zo_{z} = {op.dz} as (O, N*Ho*Wo)",
                 frozenset({op.dz}), frozenset({f"zo_{z}"})),
            blas(f'gemm("N", "T", zo_{z}, cols_{z}, dWm_{z}{beta})', f"{op.dw} {sign} zo_{z} @ cols_{z}.T",
                 frozenset({f"zo_{z}", f"cols_{z}"}) | reads, frozenset({op.dw})),
            blas(f'gemv("N", zo_{z}, ones_{z}, {op.db}{beta})', f"{op.db} {sign} the row sums of zo_{z}",
                 frozenset({f"zo_{z}"}) | reads, frozenset({op.db})),
        ]

    def _conv_grad_input(self, op: Conv2DGradInput, blas: type) -> list:
        conv = self.conv_of[id(op)]
        z = conv.out
        channels, height, width = self._dims(op.dx)
        return [
            blas(f'gemm("T", "N", Wm_{z}, zo_{z}, cols_{z})', f"cols_{z} = W_mat.T @ zo_{z}",
                 frozenset({op.w, f"zo_{z}"}), frozenset({f"cols_{z}"})),
            blas(f"k.nc_col2im(grid(n * {channels * height * width}), BLOCK, ({op.dx}, cols_{z}, "
                 f"{self._geometry(conv)}))", f"{op.dx} = col2im(cols_{z})", frozenset({f"cols_{z}"}),
                 frozenset({op.dx})),
        ]

    def _pool_args(self, image: str, out: str, size: tuple[int, int], stride: tuple[int, int]) -> tuple[int, str]:
        channels, height, width = self._dims(image)
        _, ho, wo = self._dims(out)
        values = (channels, height, width, *size, *stride, ho, wo)
        return channels, "n32, " + ", ".join(f"np.int32({v})" for v in values)

    def _pool(self, op: Pool2D, blas: type) -> object:
        channels, args = self._pool_args(op.x, op.out, op.size, op.stride)
        _, ho, wo = self._dims(op.out)
        index = f"{op.index}, " if op.index else ""
        writes = frozenset({op.out, op.index} - {""})
        return blas(f"k.nc_{op.mode}pool(grid(n * {channels * ho * wo}), BLOCK, ({op.out}, {index}{op.x}, {args}))",
                    f"{op.out} = {op.mode}pool({op.x})", frozenset({op.x}), writes)

    def _pool_grad(self, op: Pool2DGrad, blas: type) -> object:
        channels, args = self._pool_args(op.dx, op.dz, op.size, op.stride)
        _, height, width = self._dims(op.dx)
        index = f"{op.index}, " if op.index else ""
        return blas(f"k.nc_{op.mode}pool_grad(grid(n * {channels * height * width}), BLOCK, ({op.dx}, {op.dz}, "
                    f"{index}{args}))", f"{op.dx} = {op.mode}pool_grad({op.dz})",
                    frozenset({op.dz, op.index} - {""}), frozenset({op.dx}))
