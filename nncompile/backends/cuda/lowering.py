"""CUDA backend: the Program IR lowered to fused CUDA kernels and cuBLAS calls, driven by CuPy.

Lowering decisions made here, seeing the IR only:
- every matrix product is a cuBLAS call through CuPy (``cupy.cublas.gemm`` on the
  row-major buffers, no copies): Linear writes x·W, LinearGrad gives dW = xᵀ·dz by gemm
  and db = dzᵀ·1 by gemv against a vector of ones, MatMulT gives dz·Wᵀ.  The 1/N and
  learning-rate scaling the IR already folds into the output delta, so every product
  runs with alpha = 1, beta = 0;
- the bias add that completes a Linear is a statement of the next kernel, so bias add +
  activation (or bias add + softmax) is one kernel;
- the runs of Maps and Reduces between products become kernels (`kernels.group`), each
  printed by SymPy's C99 printer (`cprinter.CudaPrinter`) in the program's dtype;
- parameters and gradients are views of the flat vectors, so an optimizer's update
  rule is one kernel over every parameter at once.
The CUDA source comes from ``templates/cuda/kernels.cu.j2``, the Python driver that
loads it with CuPy (``cupy.RawModule``, NVRTC) from ``templates/cuda/*.py.j2``; the
driver embeds the source and `cupy_support`, so a generated program is one file.
Rendering needs neither CuPy nor a GPU; running does (`require`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import sympy as sp

from ...derive.ir import (DROPOUT_MIX, DROPOUT_WEYL, Concat, CountCorrect, DropoutMask, Function, GradReady, Linear,
                          LinearGrad, Map, MatMulT, Op, Program, Reduce, Reshape, Slice)
from ...errors import BackendError
from ..interface import allocation_shape, count_elements, interface, names_tuple, row_elements, shape_text
from ..templating import render
from .cprinter import C_TYPES
from .fusion import Stmt, comment, group
from .images import ImageLowering
from .kernels import Kernel, KernelWriter

NAME = "cuda"
GEOMETRY = {"map": "grid({size}), BLOCK", "rows": "rows_grid({size}), BLOCK",
            "total": "ONE, TOTAL_BLOCK", "cols": "grid({size}), BLOCK", "channels": "({size},), TOTAL_BLOCK"}


def require() -> None:
    """Raise BackendError (one line) unless CuPy and a CUDA device are usable here."""
    from .cupy_support import device_problem
    problem = device_problem()
    if problem is not None:
        raise BackendError(problem)


def support_source() -> str:
    """The text of `cupy_support`, embedded in every generated CUDA program."""
    path = Path(__file__).with_name("cupy_support.py")
    return path.read_text(encoding="utf-8").rstrip("\n") + "\n"


@dataclass
class Blas:
    """A call the driver makes as it is (cuBLAS, or a fixed kernel of kernels.cu.j2): driver code, the math
    it computes, what it reads and writes, the IR op it comes from."""

    code: str
    math: str
    reads: frozenset[str]
    writes: frozenset[str]
    partial: bool = False  # writes only part of its output (one block of columns): earlier writes stay live
    origin: int = -1       # the index, in its function, of the IR op the call comes from


def _steps(program: Program, fn: Function, images: ImageLowering) -> list[Blas | Stmt]:
    """The function as cuBLAS calls and elementwise statements, in order, without dead statements.

    A statement is dead when nothing after it reads what it writes and that is a plain
    intermediate (the loss function, for one, needs the softmax's max and sum but not the
    normalised probabilities); the image ops' own arrays (cols, zo) are plain intermediates.
    """
    steps: list[Blas | Stmt] = []
    for index, op in enumerate(fn.ops):
        lowered = images.steps(op, Blas) if images.handles(op) else _lower(program, op, fn)
        steps += [replace(step, origin=index) for step in lowered]
    live = fn.kept(program.output)
    kept: list[Blas | Stmt] = []
    for step in reversed(steps):
        writes = step.writes if isinstance(step, Blas) else {step.out}
        plain = all(program.buffers[w].role in ("value", "scalar") if w in program.buffers else True for w in writes)
        if plain and not writes & live:
            continue
        partial = isinstance(step, Blas) and step.partial
        live = (live if partial else live - set(writes)) | step.reads
        kept.append(step)
    return kept[::-1]


def _lower(program: Program, op: Op, fn: Function) -> list[Blas | Stmt]:
    """The cuBLAS calls and statements of `op` (`_steps` marks each with the op it comes from)."""
    header = f"{op.stage}: {op.formula}"
    if isinstance(op, DropoutMask):
        return [_dropout_mask(program, op, fn, header)]
    if isinstance(op, Linear):
        bias = sp.Symbol(op.out, real=True) + sp.Symbol(op.b, real=True)
        return [Blas(f'gemm("N", "N", {op.x}, {op.w}, {op.out})', f"{op.out} = {op.x} @ {op.w}",
                     frozenset({op.x, op.w}), frozenset({op.out})),
                Stmt(op.out, bias, f"{header}   [bias add after the cuBLAS product]")]
    if isinstance(op, LinearGrad):
        beta, sign = (", beta=1.0", "+=") if op.accumulate else ("", "=")
        reads = frozenset({op.dw, op.db}) if op.accumulate else frozenset()
        return [Blas(f'gemm("T", "N", {op.x}, {op.dz}, {op.dw}{beta})', f"{op.dw} {sign} {op.x}.T @ {op.dz}",
                     frozenset({op.x, op.dz}) | reads, frozenset({op.dw})),
                Blas(f'gemv("T", {op.dz}, ones, {op.db}{beta})', f"{op.db} {sign} {op.dz}.T @ ones = colsum({op.dz})",
                     frozenset({op.dz}) | reads, frozenset({op.db}))]
    if isinstance(op, Concat):
        return _columns(program, op.out, list(op.parts), header)
    if isinstance(op, Slice):  # start counts channels of an image (Concat's backward): H*W columns each
        shape = program.buffers[op.x].shape
        per = _row_size(program, op.x) // int(shape[1]) if len(shape) > 2 else 1
        return [_copy(program, op.out, op.x, 0, op.start * per, _row_size(program, op.out), header)]
    if isinstance(op, MatMulT):
        return [Blas(f'gemm("N", "T", {op.a}, {op.b}, {op.out})', f"{op.out} = {op.a} @ {op.b}.T",
                     frozenset({op.a, op.b}), frozenset({op.out}))]
    if isinstance(op, CountCorrect):
        y_shape = program.buffers[op.y].shape
        if op.rule == "argmax":
            code = (f"k.nc_count_argmax(ONE, TOTAL_BLOCK, ({op.y}, {op.t}, {op.out}, n32, "
                    f"np.int32({y_shape[1]})))")
        else:
            code = f"k.nc_count_threshold(ONE, TOTAL_BLOCK, ({op.y}, {op.t}, {op.out}, np.int64(n * {y_shape[1]})))"
        return [Blas(code, op.formula, frozenset({op.y, op.t}), frozenset({op.out}))]
    if isinstance(op, GradReady):  # one allreduce of the whole gradient vector follows (NCCL), no hook
        return []
    if isinstance(op, Map):
        return [Stmt(op.out, op.expr, header)]
    if isinstance(op, Reduce):
        return [Stmt(op.out, op.expr, header, op.op, op.axis)]
    raise NotImplementedError(f"CUDA backend has no lowering for {op.kind}")


def _dropout_mask(program: Program, op: DropoutMask, fn: Function, math: str) -> Blas:
    """The nc_dropout_mask kernel: the update count is the function's step argument on the device (so a
    replayed CUDA graph draws the next step's masks), or 0 (step_zero) in a function without one; the
    elements are counted from the function's row0 argument (times the width) where it has one."""
    width = _row_size(program, op.out)
    hp, index = (f"hp_{fn.name}.values", fn.scalars.index("step")) if "step" in fn.scalars else ("step_zero", 0)
    row0 = fn.scalars.index("row0") if "row0" in fn.scalars else -1  # row0 implies step: both in hp
    args = (f"{op.out}, {op.seed}, {hp}, np.int32({index}), np.int32({row0}), np.uint32({op.number}), "
            f"np.uint32({op.threshold}), n32, np.int32({width})")
    return Blas(f"k.nc_dropout_mask(grid(n * {width}), BLOCK, ({args}))", math, frozenset({op.seed}),
                frozenset({op.out}))


def _row_size(program: Program, name: str) -> int:
    return row_elements(program.buffers[name].shape)


def _copy(program: Program, dst: str, src: str, dst_col0: int, src_col0: int, width: int, math: str) -> Blas:
    """A block of columns copied between two row-major arrays by the nc_columns kernel (grid-stride)."""
    args = (f"{dst}, {src}, n32, np.int32({width}), np.int32({_row_size(program, dst)}), np.int32({dst_col0}), "
            f"np.int32({_row_size(program, src)}), np.int32({src_col0})")
    return Blas(f"k.nc_columns(grid(n * {width}), BLOCK, ({args}))", math, frozenset({src}), frozenset({dst}))


def _columns(program: Program, out: str, parts: list[str], math: str) -> list[Blas]:
    """out = [parts...] along axis 1: one copy per part, into its block of columns."""
    steps, start = [], 0
    for part in parts:
        width = _row_size(program, part)
        step = _copy(program, out, part, start, 0, width, f"{math}   [columns {start}:{start + width}]")
        steps.append(Blas(step.code, step.math, step.reads, step.writes, partial=True))
        start += width
    return steps


def _live_after(steps: list[Blas | Stmt]) -> list[set[str]]:
    """live[k]: buffers read by the steps after step k."""
    live, seen = [set() for _ in steps], set()
    for k in range(len(steps) - 1, -1, -1):
        live[k] = set(seen)
        seen |= steps[k].reads
    return live


class _Lowering:
    """Every function as launches; kernels shared between functions are defined once."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.kernels: dict[str, tuple[str, Kernel]] = {}   # source with a placeholder name -> (name, kernel)
        self.images = ImageLowering(program)

    def function(self, fn: Function) -> dict:
        steps = _steps(self.program, fn, self.images)
        writer = KernelWriter(self.program, fn.scalars, _live_after(steps), fn.kept(self.program.output))
        launches, run, start = [], [], 0
        for k, step in enumerate(steps + [None]):
            if isinstance(step, Stmt):
                if not run:
                    start = k
                run.append(step)
                continue
            for g in group(self.program, run, start):
                launches.append(self._launch(writer.kernel(g), fn, sorted({s.origin for s in g.stmts})))
            run = []
            if step is not None and step.code:  # (a reshape launches nothing: its view is bound once)
                launches.append({"code": step.code, "formulas": [step.math], "ops": [step.origin], "kernel": None})
        uses_step = "step" in fn.scalars and any(
            isinstance(op, DropoutMask) or sp.Symbol("step", real=True) in op.expr.free_symbols
            for op in fn.ops if isinstance(op, (Map, Reduce, DropoutMask)))
        if uses_step:
            launches.append({"code": f"k.nc_advance(ONE, ONE, (hp_{fn.name}.values, "
                                     f"np.int32({fn.scalars.index('step')})))",
                             "formulas": ["step += 1 on the device, for the next call"], "ops": [],
                             "kernel": "nc_advance"})
        needs = sorted({b for op in fn.ops for b in op.inputs
                        if b in self.program.buffers and self.program.buffers[b].role == "state"})
        entry = [repr(fn.name), fn.name]
        entry += [f"result={'stats' if fn.count else fn.returns}"] if fn.returns else []
        entry += [f"scalars=hp_{fn.name}"] if fn.scalars else []
        entry += ["graphs=CUDA_GRAPHS"]
        entry += ["needs={" + ", ".join(f"{b!r}: {b}" for b in needs) + "}"] if needs else []
        return {"name": fn.name, "args": list(fn.scalars), "doc": fn.doc, "launches": launches,
                "step": fn.scalars.index("step") if "step" in fn.scalars else -1,
                "advanced": uses_step, "entry": f"Entry({', '.join(entry)})"}

    def _launch(self, kernel: Kernel, fn: Function, ops: list[int]) -> dict:
        """The driver's launch of `kernel`; `ops` are the IR ops (indices in `fn`) it computes."""
        key = kernel.source("KERNEL")
        if key not in self.kernels:
            self.kernels[key] = (f"k{len(self.kernels) + 1}_{kernel.label}", kernel)
        name, _ = self.kernels[key]
        args = [{"n": "n32", "hp": f"hp_{fn.name}.values"}.get(arg, arg) for _, arg in kernel.params]
        geometry = GEOMETRY[kernel.kind].format(size=kernel.size)
        return {"code": f"k.{name}({geometry}, {names_tuple(args)})",
                "formulas": [comment(f) for f in kernel.formulas], "ops": ops, "kernel": name}


#: What a dropout seed costs on the device: the (1,) uint64 seed and the (1,) float64 update count.
_SEED_BYTES = 16


def _bytes_text(per_row: int, fixed: int) -> str:
    """`` + a * n + b`` for the int32 arrays' bytes, or nothing when there are none."""
    return "".join(f" + {term}" for term, value in ((f"{per_row} * n", per_row), (str(fixed), fixed)) if value)


def _has_seed(program: Program) -> bool:
    return any(buf.role == "seed" for buf in program.buffers.values())


def _allocations(program: Program, uses_ones: bool,
                 images: ImageLowering) -> tuple[list[tuple[str, str]], int, int, tuple[int, int]]:
    """Driver lines binding every buffer, the per-row and fixed DTYPE element counts allocated, and the
    per-row and fixed counts of int32 elements (max-pooling's argmax indices)."""
    lines: list[tuple[str, str]] = []
    reshaped = {op.out: op.x for op in program.iter_ops() if isinstance(op, Reshape)}
    for p in program.params:  # the buffer's shape: a per-channel γ of a BatchNorm2d is (C, 1, 1)
        end, shape = p.offset + p.size, shape_text(program.buffers[p.buffer].shape)
        lines.append((f"{p.buffer} = params[{p.offset}:{end}].reshape{shape}", p.name))
        if p.trainable:
            lines.append((f"{p.grad} = grads[{p.offset}:{end}].reshape{shape}", f"dL/d{p.name}"))
    per_row, fixed, index_per_row, index_fixed = 0, 0, 0, 0
    counted = program.metric is not None
    if counted:
        lines += [("stats = cp.zeros((2,), dtype=DTYPE)", "the loss and the correct count, read back in one copy"),
                  ("L = stats[0]", "scalar"), ("C = stats[1]", "scalar")]
        fixed += 2
    for name, buf in program.buffers.items():
        if buf.role in ("param", "grad", "state") or (counted and name in ("L", "C")):
            continue
        if buf.role == "seed":
            lines += [(f"{name} = cp.zeros((1,), dtype=cp.uint64)", "the dropout seed: set by the trainer"),
                      ("step_zero = cp.zeros((1,), dtype=cp.float64)", "the update count outside a training step")]
            continue
        if name in reshaped:  # its source is bound above: buffers are declared in the order ops write them
            lines.append((f"{name} = {reshaped[name]}.reshape{allocation_shape(buf.shape)}",
                          f"{reshaped[name]} reshaped: a view, nothing moves"))
            continue
        if buf.role == "index":  # int32: counted in bytes, apart from the DTYPE elements
            lines.append((f"{name} = cp.zeros({allocation_shape(buf.shape)}, dtype=cp.int32)", buf.role))
            index_per_row, index_fixed = count_elements(buf.shape, index_per_row, index_fixed)
            continue
        lines.append((f"{name} = cp.zeros({allocation_shape(buf.shape)}, dtype=DTYPE)", buf.role))
        per_row, fixed = count_elements(buf.shape, per_row, fixed)
    if uses_ones:
        lines.append(("ones = cp.ones((n,), dtype=DTYPE)", "colsum(dz) = dz.T @ ones: bias gradients"))
        per_row += 1
    lines += images.bindings
    index_bytes = (index_per_row, index_fixed)
    return lines, per_row + images.per_row, fixed, index_bytes


def context(program: Program, cuda_graphs: bool = True) -> dict:
    """Everything the templates need, computed here so the templates stay free of logic."""
    lowering = _Lowering(program)
    functions = [lowering.function(fn) for fn in program.functions.values()]
    uses_ones = any(isinstance(op, LinearGrad) for op in program.iter_ops())
    allocations, per_row, fixed, index_elements = _allocations(program, uses_ones, lowering.images)
    kernels = [{"name": name, "kind": kernel.kind, "formulas": [comment(f) for f in kernel.formulas],
                "source": kernel.source(name)} for name, kernel in lowering.kernels.values()]
    scalars = [(fn["name"], len(fn["args"]), fn["step"], fn["advanced"]) for fn in functions if fn["args"]]
    return {
        **interface(program, NAME),
        "ctype": C_TYPES[program.dtype],
        "infinity": "__int_as_float(0x7f800000)" if program.dtype == "float32" else
                    "__longlong_as_double(0x7ff0000000000000LL)",
        "allocations": allocations,
        "functions": functions,
        "kernels": kernels,
        "uses_columns": any(isinstance(op, (Concat, Slice)) for op in program.iter_ops()),
        "uses_dropout": any(isinstance(op, DropoutMask) for op in program.iter_ops()),
        "image_kernels": lowering.images.kernels,
        "mix": [f"{c:#x}u" for c in DROPOUT_MIX],
        "weyl": f"{DROPOUT_WEYL:#x}u",
        "counting": program.metric is not None,
        "scalars": scalars,
        "per_row": per_row,
        "fixed": fixed,
        "itemsize": np.dtype(program.dtype).itemsize,
        "scalar_bytes": 8 * sum(count for _, count, _, _ in scalars) + _SEED_BYTES * _has_seed(program),
        "index_bytes": _bytes_text(4 * index_elements[0], 4 * index_elements[1]),
        "cuda_graphs": cuda_graphs,
    }


def render_source(program: Program) -> str:
    """The CUDA C source of every kernel of `program` (what NVRTC, or nvcc, compiles)."""
    return render("cuda/kernels.cu.j2", **context(program))


def _with_source(ctx: dict) -> dict:
    source = render("cuda/kernels.cu.j2", **ctx)
    if '"""' in source or "\\" in source:
        raise AssertionError("generated CUDA source cannot be embedded in a raw Python string")
    return {**ctx, "cuda_source": source, "support_source": support_source()}


def render_module(program: Program, cuda_graphs: bool = True) -> str:
    """Python source of the compiled program (driver + embedded CUDA source), imported by the JIT."""
    return render("cuda/program.py.j2", **_with_source(context(program, cuda_graphs)))


def render_script(program: Program, runtime_source: str, filename: str, cuda_graphs: bool = True) -> str:
    """A standalone training script needing only NumPy and CuPy, the CUDA source embedded."""
    return render("cuda/script.py.j2", runtime_source=runtime_source, filename=filename,
                  **_with_source(context(program, cuda_graphs)))
