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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sympy as sp

from ...derive.ir import CountCorrect, Function, GradReady, Linear, LinearGrad, Map, MatMulT, Op, Program, Reduce
from ...errors import BackendError
from ..interface import allocation_shape, count_elements, interface, names_tuple, shape_text
from ..templating import render
from .cprinter import C_TYPES
from .fusion import Stmt, comment, group
from .kernels import Kernel, KernelWriter

NAME = "cuda"
GEOMETRY = {"map": "grid({size}), BLOCK", "rows": "rows_grid({size}), BLOCK",
            "total": "ONE, TOTAL_BLOCK", "cols": "grid({size}), BLOCK"}


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
    """A call the driver makes as it is (cuBLAS, or a fixed kernel of kernels.cu.j2): driver code,
    the math it computes, what it reads and writes."""

    code: str
    math: str
    reads: frozenset[str]
    writes: frozenset[str]


def _steps(program: Program, fn: Function) -> list[Blas | Stmt]:
    """The function as cuBLAS calls and elementwise statements, in order, without dead statements.

    A statement is dead when nothing after it reads what it writes and that is a plain
    intermediate (the loss function, for one, needs the softmax's max and sum but not the
    normalised probabilities).
    """
    steps: list[Blas | Stmt] = []
    for op in fn.ops:
        steps += _lower(program, op)
    live = fn.kept(program.output)
    kept: list[Blas | Stmt] = []
    for step in reversed(steps):
        writes = step.writes if isinstance(step, Blas) else {step.out}
        plain = all(program.buffers[w].role in ("value", "scalar") for w in writes)
        if plain and not writes & live:
            continue
        live = (live - set(writes)) | step.reads
        kept.append(step)
    return kept[::-1]


def _lower(program: Program, op: Op) -> list[Blas | Stmt]:
    header = f"{op.stage}: {op.formula}"
    if isinstance(op, Linear):
        bias = sp.Symbol(op.out, real=True) + sp.Symbol(op.b, real=True)
        return [Blas(f'gemm("N", "N", {op.x}, {op.w}, {op.out})', f"{op.out} = {op.x} @ {op.w}",
                     frozenset({op.x, op.w}), frozenset({op.out})),
                Stmt(op.out, bias, f"{header}   [bias add after the cuBLAS product]")]
    if isinstance(op, LinearGrad):
        return [Blas(f'gemm("T", "N", {op.x}, {op.dz}, {op.dw})', f"{op.dw} = {op.x}.T @ {op.dz}",
                     frozenset({op.x, op.dz}), frozenset({op.dw})),
                Blas(f'gemv("T", {op.dz}, ones, {op.db})', f"{op.db} = {op.dz}.T @ ones = colsum({op.dz})",
                     frozenset({op.dz}), frozenset({op.db}))]
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

    def function(self, fn: Function) -> dict:
        steps = _steps(self.program, fn)
        writer = KernelWriter(self.program, fn.scalars, _live_after(steps), fn.kept(self.program.output))
        launches, run, start = [], [], 0
        for k, step in enumerate(steps + [None]):
            if isinstance(step, Stmt):
                if not run:
                    start = k
                run.append(step)
                continue
            for g in group(self.program, run, start):
                launches.append(self._launch(writer.kernel(g), fn))
            run = []
            if step is not None:
                launches.append({"code": step.code, "formulas": [step.math]})
        uses_step = "step" in fn.scalars and any(
            sp.Symbol("step", real=True) in op.expr.free_symbols for op in fn.ops if isinstance(op, (Map, Reduce)))
        if uses_step:
            launches.append({"code": f"k.nc_advance(ONE, ONE, (hp_{fn.name}.values, "
                                     f"np.int32({fn.scalars.index('step')})))",
                             "formulas": ["step += 1 on the device, for the next call"]})
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

    def _launch(self, kernel: Kernel, fn: Function) -> dict:
        key = kernel.source("KERNEL")
        if key not in self.kernels:
            self.kernels[key] = (f"k{len(self.kernels) + 1}_{kernel.label}", kernel)
        name, _ = self.kernels[key]
        args = [{"n": "n32", "hp": f"hp_{fn.name}.values"}.get(arg, arg) for _, arg in kernel.params]
        geometry = GEOMETRY[kernel.kind].format(size=kernel.size)
        return {"code": f"k.{name}({geometry}, {names_tuple(args)})",
                "formulas": [comment(f) for f in kernel.formulas]}


def _allocations(program: Program, uses_ones: bool) -> tuple[list[tuple[str, str]], int, int]:
    """Driver lines binding every buffer, and the per-row and fixed element counts allocated."""
    lines: list[tuple[str, str]] = []
    for p in program.params:
        end, shape = p.offset + p.size, shape_text(p.shape)
        lines += [(f"{p.buffer} = params[{p.offset}:{end}].reshape{shape}", p.name),
                  (f"{p.grad} = grads[{p.offset}:{end}].reshape{shape}", f"dL/d{p.name}")]
    per_row, fixed = 0, 0
    counted = program.metric is not None
    if counted:
        lines += [("stats = cp.zeros((2,), dtype=DTYPE)", "the loss and the correct count, read back in one copy"),
                  ("L = stats[0]", "scalar"), ("C = stats[1]", "scalar")]
        fixed += 2
    for name, buf in program.buffers.items():
        if buf.role in ("param", "grad", "state") or (counted and name in ("L", "C")):
            continue
        lines.append((f"{name} = cp.zeros({allocation_shape(buf.shape)}, dtype=DTYPE)", buf.role))
        per_row, fixed = count_elements(buf.shape, per_row, fixed)
    if uses_ones:
        lines.append(("ones = cp.ones((n,), dtype=DTYPE)", "colsum(dz) = dz.T @ ones: bias gradients"))
        per_row += 1
    return lines, per_row, fixed


def context(program: Program, cuda_graphs: bool = True) -> dict:
    """Everything the templates need, computed here so the templates stay free of logic."""
    lowering = _Lowering(program)
    functions = [lowering.function(fn) for fn in program.functions.values()]
    uses_ones = any(isinstance(op, LinearGrad) for op in program.iter_ops())
    allocations, per_row, fixed = _allocations(program, uses_ones)
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
        "counting": program.metric is not None,
        "scalars": scalars,
        "per_row": per_row,
        "fixed": fixed,
        "itemsize": np.dtype(program.dtype).itemsize,
        "scalar_bytes": 8 * sum(count for _, count, _, _ in scalars),
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
