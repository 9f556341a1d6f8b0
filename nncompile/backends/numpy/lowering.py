"""NumPy backend: lowers the Program IR to straight-line Python on preallocated buffers.

Lowering decisions made here, seeing the IR only:
- bias folding: a Dense input fed by an elementwise op (or the data) carries an extra
  column of ones and its layer's W and b are one (in + 1, out) block of the flat
  parameter vector, so one GEMM adds the bias and one GEMM gives dW and db together;
- aliasing: an elementwise result takes over the storage of an input that dies there
  (dz takes da's, softmax's p normalises in place);
- every elementwise expression becomes in-place ufunc calls (`printers.UfuncPrinter`).
The module text comes from the Jinja2 templates in ``templates/numpy/``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...derive.ir import (BATCH, CountCorrect, Function, GradReady, Linear, LinearGrad, Map, MatMulT, Op, Program,
                          Reduce, last_uses)
from ..interface import allocation_shape, count_elements, interface, shape_text
from ..templating import render
from .scratch import Scalars, ScratchPool
from .ufunc_printer import UfuncPrinter

NAME = "numpy"


@dataclass
class Layout:
    """Where every buffer lives in a workspace."""

    storage: dict[str, str] = field(default_factory=dict)      # buffer -> buffer owning its memory
    augmented: set[str] = field(default_factory=set)           # inputs carrying a ones column
    blocks: dict[str, str] = field(default_factory=dict)       # W, b, dW, db -> their [W; b] block

    def root(self, name: str) -> str:
        while self.storage.get(name, name) != name:
            name = self.storage[name]
        return name


def plan_layout(program: Program, fold_bias: bool = True, alias: bool = True) -> Layout:
    """Decide bias folding, augmented inputs and aliasing for `program`."""
    layout = Layout()
    linear_ops = [op for op in program.iter_ops() if isinstance(op, Linear)]
    producers = {out: op for op in program.iter_ops() for out in op.outputs}
    specs = {p.buffer: p for p in program.params}
    for op in linear_ops:
        w, b = specs[op.w], specs[op.b]
        adjacent = b.offset == w.offset + w.size
        fed_elementwise = op.x == program.input or isinstance(producers.get(op.x), Map)
        if fold_bias and adjacent and fed_elementwise:
            block = f"{op.w}b"
            layout.blocks.update({w.buffer: block, b.buffer: block, w.grad: f"d{block}", b.grad: f"d{block}"})
            layout.augmented.add(op.x)
    if alias:
        _plan_aliases(program, layout)
    return layout


def _plan_aliases(program: Program, layout: Layout) -> None:
    """Let a Map's output reuse the storage of an input that dies at that Map in every function."""
    lasts = {name: last_uses(fn.ops) for name, fn in program.functions.items()}
    for op in program.iter_ops():
        if not isinstance(op, Map) or op.out in layout.storage or op.out in layout.augmented:
            continue
        out = program.buffers[op.out]
        if out.role != "value" or op.out in op.inputs:
            continue
        for cand in op.inputs:
            buf = program.buffers.get(cand)
            if buf is None or buf.role != "value" or buf.shape != out.shape or cand in layout.augmented:
                continue
            if all(_dies_at(fn, lasts[name], op, cand) for name, fn in program.functions.items()):
                layout.storage[op.out] = cand
                break


def _dies_at(fn: Function, last: dict[str, int], op: Op, cand: str) -> bool:
    """True if `op` is in `fn` and is the last reader of `cand` there (or `cand` is unused in fn)."""
    index = next((i for i, o in enumerate(fn.ops) if o.outputs == op.outputs and o.inputs == op.inputs), None)
    if index is None:
        return cand not in last and op.out not in last
    return last.get(cand) == index and fn.returns != cand


class _Lowering:
    """Turns each IR function into commented lines of NumPy calls."""

    def __init__(self, program: Program, layout: Layout, fast: bool = True) -> None:
        self.program, self.layout = program, layout
        self.pool, self.scalars = ScratchPool(), Scalars()
        self.printer = UfuncPrinter(self._shape, layout.root, self._contiguous, self.pool, self.scalars, fast)
        self._done: dict[int, tuple[dict, set[str]]] = {}  # op id -> (block, scalars it uses)

    def _shape(self, name: str) -> tuple:
        return self.program.buffers[name].shape

    def _contiguous(self, name: str) -> bool:
        return name not in self.layout.augmented

    def function(self, fn: Function) -> dict:
        self.hook = fn.hook
        blocks = [self.op(op) for op in fn.ops]
        scalars = self.scalars.needed()
        args = list(fn.scalars) + ([f"{fn.hook}=no_hook"] if fn.hook else [])
        returns = ", ".join(name for name in (fn.returns, fn.count) if name)
        return {"name": fn.name, "args": args, "doc": fn.doc, "scalars": scalars,
                "blocks": blocks, "returns": returns}

    def op(self, op: Op) -> dict:
        """The commented lines of one op; an op shared by several functions is lowered once.

        Reuse is safe because an op's scratch buffers are live only within the op.
        """
        if isinstance(op, GradReady):  # its call names the function's own hook argument
            return {"header": f"{op.stage}: {op.formula}",
                    "lines": [(f"{self.hook}({op.start}, {op.stop})", "the sum across processes may start")]}
        if id(op) in self._done:
            block, used = self._done[id(op)]
            self.scalars.used |= used
            return block
        before = set(self.scalars.used)
        self.scalars.used = set()
        block = self._lower(op)
        used = self.scalars.used
        self.scalars.used = before | used
        self._done[id(op)] = (block, used)
        return block

    def _lower(self, op: Op) -> dict:
        if isinstance(op, Linear):
            lines = self._linear(op)
        elif isinstance(op, LinearGrad):
            lines = self._linear_grad(op)
        elif isinstance(op, MatMulT):
            lines = [(f"np.dot({op.a}, {op.b}T, {op.out})", f"{op.out} = {op.a} @ {op.b}.T")]
        elif isinstance(op, Map) and not self._shape(op.out):
            lines = self.printer.scalar(op.out, op.expr)
        elif isinstance(op, Map):
            lines = self.printer.assign(op.out, op.expr)
        elif isinstance(op, Reduce):
            lines = self.printer.reduce(op.out, op.expr, op.op, op.axis)
        elif isinstance(op, CountCorrect):
            lines = self._count_correct(op)
        else:
            raise NotImplementedError(f"NumPy backend has no lowering for {op.kind}")
        return {"header": f"{op.stage}: {op.formula}", "lines": lines}

    def _count_correct(self, op: CountCorrect) -> list[tuple[str, str]]:
        """Correct predictions as a Python int: wrong ones are counted, the rest are right."""
        rows, width = self._shape(op.y)
        if op.rule == "argmax":
            guess, truth, wrong = (self.pool.take((rows,), "index"), self.pool.take((rows,), "index"),
                                   self.pool.take((rows,), "bool"))
            lines = [(f"{op.y}.argmax(1, {guess})", f"{guess} = class predicted for each row"),
                     (f"{op.t}.argmax(1, {truth})", f"{truth} = class of each row's target"),
                     (f"np.not_equal({guess}, {truth}, {wrong})", f"{wrong} = rows predicted wrongly"),
                     (f"{op.out} = N - np.count_nonzero({wrong})", f"{op.out} = rows predicted rightly")]
        else:
            half = self.scalars.operand(0.5)
            guess, truth = self.pool.take((rows, width), "bool"), self.pool.take((rows, width), "bool")
            elements = "N" if width == 1 else f"N*{width}"
            lines = [(f"np.greater({op.y}, {half}, {guess})", f"{guess} = {op.y} > 0.5"),
                     (f"np.greater({op.t}, {half}, {truth})", f"{truth} = {op.t} > 0.5"),
                     (f"np.not_equal({guess}, {truth}, {guess})", f"{guess} = elements predicted wrongly"),
                     (f"{op.out} = {elements} - np.count_nonzero({guess})", f"{op.out} = elements predicted rightly")]
            wrong = guess
        for name in dict.fromkeys((guess, truth, wrong)):
            self.pool.give(name)
        return lines

    def _linear(self, op: Linear) -> list[tuple[str, str]]:
        math = f"{op.out} = {op.x} @ {op.w} + {op.b}"
        if op.w in self.layout.blocks:
            return [(f"np.dot({op.x}_aug, {self.layout.blocks[op.w]}, {op.out})",
                     f"{math}   (bias folded into the product)")]
        return [(f"np.dot({op.x}, {op.w}, {op.out})", f"{op.out} = {op.x} @ {op.w}"),
                (f"np.add({op.out}, {op.b}, {op.out})", math)]

    def _linear_grad(self, op: LinearGrad) -> list[tuple[str, str]]:
        if op.dw in self.layout.blocks:
            return [(f"np.dot({op.x}_augT, {op.dz}, {self.layout.blocks[op.dw]})",
                     f"[{op.dw}; {op.db}] = [{op.x}, 1].T @ {op.dz}")]
        colsum = (f"np.dot({self.pool.ones_of((BATCH,))}, {op.dz}, {op.db})" if self.printer.fast
                  else f"np.add.reduce({op.dz}, 0, None, {op.db})")
        return [(f"np.dot({op.x}T, {op.dz}, {op.dw})", f"{op.dw} = {op.x}.T @ {op.dz}"),
                (colsum, f"{op.db} = colsum({op.dz})")]


def _param_views(program: Program, layout: Layout) -> list[tuple[str, str]]:
    """Views of the flat parameter and gradient vectors: one per tensor, or per [W; b] block."""
    lines: list[tuple[str, str]] = []
    for p in program.params:
        block = layout.blocks.get(p.buffer)
        if block is None:
            shape, end = shape_text(p.shape), p.offset + p.size
            lines += [(f"{p.buffer} = params[{p.offset}:{end}].reshape{shape}", p.name),
                      (f"{p.grad} = grads[{p.offset}:{end}].reshape{shape}", f"dL/d{p.name}")]
        elif len(p.shape) == 2:
            rows, cols = p.shape[0] + 1, p.shape[1]
            end = p.offset + rows * cols
            lines += [(f"{block} = params[{p.offset}:{end}].reshape({rows}, {cols})", f"[{p.name}; bias row]"),
                      (f"d{block} = grads[{p.offset}:{end}].reshape({rows}, {cols})", "its gradient"),
                      (f"{p.buffer} = {block}[:{p.shape[0]}]", p.name),
                      (f"{p.grad} = d{block}[:{p.shape[0]}]", f"dL/d{p.name}")]
        else:
            lines += [(f"{p.buffer} = {block}[-1]", p.name), (f"{p.grad} = d{block}[-1]", f"dL/d{p.name}")]
    for name in sorted({op.b for op in program.iter_ops() if isinstance(op, MatMulT)}):
        lines.append((f"{name}T = {name}.T", "transposed view, no copy"))
    return lines


def _allocations(program: Program, layout: Layout, pool: ScratchPool) -> tuple[list, int, int]:
    """Workspace lines (code, comment) and the per-row and fixed element counts allocated."""
    lines = _param_views(program, layout)
    aliases: list[tuple[str, str]] = []  # after every buffer they may name is allocated
    per_row, fixed = 0, 0
    transposed = {op.x for op in program.iter_ops() if isinstance(op, LinearGrad)}
    for name, buf in program.buffers.items():
        if buf.role in ("param", "grad", "state", "scalar"):
            continue
        root, width = layout.root(name), buf.shape[-1]
        if root != name:
            aliases.append((f"{name} = {root}", f"shares storage: {root} is dead when {name} is written"))
            if name in transposed:
                aliases.append((f"{name}T = {name}.T", "transposed view, no copy"))
            continue
        if name in layout.augmented:
            lines += [(f"{name}_aug = np.empty((n, {width + 1}), dtype=DTYPE)", f"{name} with a ones column"),
                      (f"{name}_aug[:, {width}] = 1.0", "the column that multiplies the bias row"),
                      (f"{name} = {name}_aug[:, :{width}]", "view"),
                      (f"{name}_augT = {name}_aug.T", "transposed view, no copy")]
            per_row += width + 1
        else:
            lines.append((f"{name} = np.empty({allocation_shape(buf.shape)}, dtype=DTYPE)", buf.role))
            per_row, fixed = count_elements(buf.shape, per_row, fixed)
        if name in transposed and name not in layout.augmented:
            lines.append((f"{name}T = {name}.T", "transposed view, no copy"))
    lines += aliases
    for name, (shape, kind) in pool.declared.items():
        dtype = {"bool": "np.bool_", "index": "np.intp"}.get(kind, "DTYPE")
        lines.append((f"{name} = np.empty({allocation_shape(shape)}, dtype={dtype})", "scratch"))
        for _ in range(8 // np.dtype(program.dtype).itemsize if kind == "index" else 1):  # intp: 8 bytes
            per_row, fixed = count_elements(shape, per_row, fixed)
    for name, shape in sorted(pool.ones.items()):
        lines.append((f"{name} = np.ones({allocation_shape(shape)}, dtype=DTYPE)", "sums are dot products with ones"))
        per_row, fixed = count_elements(shape, per_row, fixed)
    return lines, per_row, fixed


def context(program: Program, fold_bias: bool = True, optimize: bool = True) -> dict:
    """Everything the templates need, computed here so the templates stay free of logic.

    `fold_bias=False` keeps separate bias adds and column sums; `optimize=False` also turns
    off aliasing and the printer's fast forms, giving the plain lowering tests compare against.
    """
    layout = plan_layout(program, fold_bias, alias=optimize)
    lowering = _Lowering(program, layout, fast=optimize)
    functions = [lowering.function(fn) for fn in program.functions.values()]
    allocations, per_row, fixed = _allocations(program, layout, lowering.pool)
    return {
        **interface(program, NAME),
        "allocations": allocations,
        "workspace_scalars": lowering.scalars.workspace,
        "hooks": any(fn.hook for fn in program.functions.values()),
        "input_store": f"{program.input}_aug" if program.input in layout.augmented else program.input,
        "functions": functions,
        "per_row": per_row,
        "fixed": fixed,
        "itemsize": np.dtype(program.dtype).itemsize,
    }


def render_module(program: Program, fold_bias: bool = True, optimize: bool = True) -> str:
    """Python source of the compiled program, imported by the JIT."""
    return render("numpy/program.py.j2", **context(program, fold_bias, optimize))


def render_script(program: Program, runtime_source: str, filename: str, fold_bias: bool = True) -> str:
    """A standalone training script: the program, the runtime text, and its command line."""
    return render("numpy/script.py.j2", runtime_source=runtime_source, filename=filename,
                  **context(program, fold_bias))


