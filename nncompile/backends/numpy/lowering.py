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

import re
from dataclasses import dataclass, field

import numpy as np

from ...derive.ir import (BATCH, DROPOUT_MIX, DROPOUT_WEYL, Concat, CountCorrect, DropoutMask, Function, GradReady,
                          Linear, LinearGrad, Map, MatMulT, Op, Program, Reduce, Reshape, Slice, last_uses)
from ..interface import allocation_shape, count_elements, interface, row_elements, shape_text
from ..templating import render
from .images import ImageOps, allocation, channel_major
from .scratch import Scalars, ScratchPool
from .ufunc_printer import UfuncPrinter

NAME = "numpy"
#: Put before an op's first generated line when `source_map` renders: function, op index.
_MARK = "\x00{}\x00{}\x00"
_MARKED = re.compile("\x00(\\w+)\x00(\\d+)\x00")


@dataclass
class Layout:
    """Where every buffer lives in a workspace."""

    storage: dict[str, str] = field(default_factory=dict)      # buffer -> buffer owning its memory
    augmented: set[str] = field(default_factory=set)           # inputs carrying a ones column
    blocks: dict[str, str] = field(default_factory=dict)       # W, b, dW, db -> their [W; b] block
    channel_major: set[str] = field(default_factory=set)       # images stored (C, H, W, N): see images.py

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
    foldable: dict[str, bool] = {}
    for op in linear_ops:  # a weight used by several calls folds only if every call's input can carry ones
        fed_elementwise = op.x == program.input or isinstance(producers.get(op.x), Map)
        foldable[op.w] = foldable.get(op.w, True) and fed_elementwise
    for op in linear_ops:
        w, b = specs[op.w], specs[op.b]
        adjacent = b.offset == w.offset + w.size
        if fold_bias and adjacent and foldable[op.w]:
            block = f"{op.w}b"
            layout.blocks.update({w.buffer: block, b.buffer: block, w.grad: f"d{block}", b.grad: f"d{block}"})
            layout.augmented.add(op.x)
    layout.channel_major = {name for name, buf in program.buffers.items()
                            if buf.role == "value" and channel_major(buf.shape)}
    if alias:
        _plan_aliases(program, layout)
    return layout


def _plan_aliases(program: Program, layout: Layout) -> None:
    """Let a Map's output reuse the storage of an input that dies at that Map in every function.

    A reshape's output is a view of its input (the same memory under two names), so neither of
    the two lends its storage nor takes another's.
    """
    lasts = {name: last_uses(fn.ops) for name, fn in program.functions.items()}
    places = {name: _places(fn) for name, fn in program.functions.items()}
    views = {name for op in program.iter_ops() if isinstance(op, Reshape) for name in (op.out, op.x)
             if not ({op.out, op.x} & layout.channel_major)}
    for op in program.iter_ops():
        if not isinstance(op, Map) or op.out in layout.storage or op.out in layout.augmented or op.out in views:
            continue
        out = program.buffers[op.out]
        if out.role != "value" or op.out in op.inputs:
            continue
        for cand in op.inputs:
            buf = program.buffers.get(cand)
            if (buf is None or buf.role != "value" or buf.shape != out.shape or cand in layout.augmented
                    or cand in views):
                continue
            if all(_dies_at(fn, lasts[name], places[name], op, cand) for name, fn in program.functions.items()):
                layout.storage[op.out] = cand
                break


def _places(fn: Function) -> dict[tuple, int]:
    """The first index of each (outputs, inputs) in `fn` (a step's copy of an op, lr folded in, is found too)."""
    places: dict[tuple, int] = {}
    for i, o in enumerate(fn.ops):
        places.setdefault((o.outputs, o.inputs), i)
    return places


def _dies_at(fn: Function, last: dict[str, int], places: dict[tuple, int], op: Op, cand: str) -> bool:
    """True if `op` is in `fn` and is the last reader of `cand` there (or `cand` is unused in fn)."""
    index = places.get((op.outputs, op.inputs))
    if index is None:
        return cand not in last and op.out not in last
    return last.get(cand) == index and fn.returns != cand


class _Lowering:
    """Turns each IR function into commented lines of NumPy calls."""

    def __init__(self, program: Program, layout: Layout, fast: bool = True) -> None:
        self.program, self.layout = program, layout
        self.pool, self.scalars = ScratchPool(), Scalars()
        self.images = ImageOps(program, lambda name: layout.root(name) in layout.channel_major)
        self.printer = UfuncPrinter(self._shape, layout.root, self._contiguous, self.pool, self.scalars, fast)
        self._done: dict[tuple, tuple[dict, set[str]]] = {}  # (op id, row0) -> (block, scalars it uses)
        self.hook, self.row0 = None, False  # the function being lowered: its hook, whether it takes row0

    def _shape(self, name: str) -> tuple:
        return self.program.buffers[name].shape

    def _contiguous(self, name: str) -> bool:
        """Whether NumPy sees the array as C-contiguous (BLAS sums need it): not an augmented input's view,
        not an image stored channel-major."""
        return name not in self.layout.augmented and not channel_major(self.printer.shape_of(name))

    def function(self, fn: Function, marks: bool = False) -> dict:
        self.hook, self.row0 = fn.hook, "row0" in fn.scalars
        blocks = [dict(self.op(op), mark=_MARK.format(fn.name, i) if marks else "") for i, op in enumerate(fn.ops)]
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
        key = (id(op), isinstance(op, DropoutMask) and self.row0)  # a mask counts its rows from row0 or 0
        if key in self._done:
            block, used = self._done[key]
            self.scalars.used |= used
            return block
        before = set(self.scalars.used)
        self.scalars.used = set()
        block = self._lower(op)
        used = self.scalars.used
        self.scalars.used = before | used
        self._done[key] = (block, used)
        return block

    def _lower(self, op: Op) -> dict:
        if self.images.handles(op):
            lines = self.images.lower(op, self._scratch)
        elif isinstance(op, Linear):
            lines = self._linear(op)
        elif isinstance(op, LinearGrad):
            lines = self._linear_grad(op)
        elif isinstance(op, MatMulT):
            lines = [(f"np.dot({op.a}, {op.b}T, {op.out})", f"{op.out} = {op.a} @ {op.b}.T")]
        elif isinstance(op, DropoutMask):
            lines = self._dropout_mask(op)
        elif isinstance(op, Concat):
            lines = [(f"np.concatenate(({', '.join(op.parts)},), 1, {op.out})", op.formula)]
        elif isinstance(op, Slice) and self._is_view(op.out):
            lines = []  # a view of X, bound once per workspace
        elif isinstance(op, Slice) and len(self._shape(op.out)) > 2 and len(self._shape(op.x)) == 2:
            lines = [(f"np.copyto({op.out}_rows, {op.x}[:, {op.start}:{op.stop}])", op.formula)]
        elif isinstance(op, Slice):
            lines = [(f"np.copyto({op.out}, {op.x}[:, {op.start}:{op.stop}])", op.formula)]
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

    def _dropout_mask(self, op: DropoutMask) -> list[tuple[str, str]]:
        """The mask by the IR's generator: a per-call key, then MurmurHash3's finalizer on each element's
        counter, compared with the layer's threshold (uint32 arithmetic wraps, as the spec says)."""
        shape = self._shape(op.out)
        h, t = self.pool.take(shape, "uint32"), self.pool.take(shape, "uint32")
        key = f"key_{op.out}"
        first = f", row0*{row_elements(shape)}" if self.row0 else ""  # this share's first element in the batch
        lines = [(f"{key} = dropout_key({op.seed}[0], step, {op.number}{first})", f"the key of {op.out} for this call"),
                 (f"np.add({self.pool.counter_of(shape)}, {key}, {h})", f"{h} = key + (i + 1)*{DROPOUT_WEYL:#x}")]
        for shift, mix in ((16, 0), (13, 1), (16, None)):
            lines += [(f"np.right_shift({h}, {shift}, {t})", ""),
                      (f"np.bitwise_xor({h}, {t}, {h})", f"{h} ^= {h} >> {shift}")]
            if mix is not None:
                lines.append((f"np.multiply({h}, DROPOUT_MIX[{mix}], {h})", f"{h} *= {DROPOUT_MIX[mix]:#x}"))
        lines.append((f"np.greater_equal({h}, np.uint32({op.threshold}), {op.out})",
                      f"{op.out} = 1 where kept (fmix32 >= {op.threshold}), 0 where dropped"))
        self.pool.give(h)
        self.pool.give(t)
        return lines

    def _is_view(self, name: str) -> bool:
        return _viewable(self.program, name)

    def _linear_grad(self, op: LinearGrad) -> list[tuple[str, str]]:
        if op.dw in self.layout.blocks:
            block = self.layout.blocks[op.dw]
            math = f"[{op.dw}; {op.db}] = [{op.x}, 1].T @ {op.dz}"
            if not op.accumulate:
                return [(f"np.dot({op.x}_augT, {op.dz}, {block})", math)]
            rows, cols = next(p.shape for p in self.program.params if p.grad == op.dw)
            scratch = self._scratch((rows + 1, cols))
            return [(f"np.dot({op.x}_augT, {op.dz}, {scratch})", f"{scratch} = [{op.x}, 1].T @ {op.dz}"),
                    (f"np.add({block}, {scratch}, {block})", f"{math.replace(' = ', ' += ')}   (another use)")]
        colsum = (f"np.dot({self.pool.ones_of((BATCH,))}, {op.dz}, {{}})" if self.printer.fast
                  else f"np.add.reduce({op.dz}, 0, None, {{}})")
        if not op.accumulate:
            return [(f"np.dot({op.x}T, {op.dz}, {op.dw})", f"{op.dw} = {op.x}.T @ {op.dz}"),
                    (colsum.format(op.db), f"{op.db} = colsum({op.dz})")]
        sw = self._scratch(self.program.buffers[op.dw].shape)
        sb = self._scratch(self.program.buffers[op.db].shape)
        return [(f"np.dot({op.x}T, {op.dz}, {sw})", f"{sw} = {op.x}.T @ {op.dz}"),
                (f"np.add({op.dw}, {sw}, {op.dw})", f"{op.dw} += {op.x}.T @ {op.dz}   (another use)"),
                (colsum.format(sb), f"{sb} = colsum({op.dz})"),
                (f"np.add({op.db}, {sb}, {op.db})", f"{op.db} += colsum({op.dz})")]

    def _scratch(self, shape: tuple) -> str:
        """A scratch array for the lines of one op (given back at once: the next op may reuse it)."""
        name = self.pool.take(tuple(shape))
        self.pool.give(name)
        return name


def _param_views(program: Program, layout: Layout) -> list[tuple[str, str]]:
    """Views of the flat parameter and gradient vectors: one per tensor, or per [W; b] block."""
    lines: list[tuple[str, str]] = []
    for p in program.params:
        block = layout.blocks.get(p.buffer)
        if block is None:  # the buffer's shape: a per-channel γ of a BatchNorm2d is (C, 1, 1)
            shape, end = shape_text(program.buffers[p.buffer].shape), p.offset + p.size
            lines.append((f"{p.buffer} = params[{p.offset}:{end}].reshape{shape}", p.name))
            if p.trainable:
                lines.append((f"{p.grad} = grads[{p.offset}:{end}].reshape{shape}", f"dL/d{p.name}"))
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


def _allocations(program: Program, layout: Layout, pool: ScratchPool, images: ImageOps) -> tuple[list, int, int]:
    """Workspace lines (code, comment) and the per-row and fixed element counts allocated."""
    lines = _param_views(program, layout)
    aliases: list[tuple[str, str]] = []  # after every buffer they may name is allocated
    per_row, fixed = 0, 0
    transposed = {op.x for op in program.iter_ops() if isinstance(op, LinearGrad)}
    reshaped = {op.out: op for op in program.iter_ops() if isinstance(op, Reshape) and images.views(op)}
    for name, buf in program.buffers.items():
        if buf.role in ("param", "grad", "state", "scalar") or name in reshaped:
            continue
        if buf.role == "index":  # allocated with the image ops, in the form they keep it
            continue
        if buf.role == "seed":
            lines += [(f"{name} = np.zeros((1,), dtype=np.uint64)", "the dropout seed: set by the trainer"),
                      ("step = 0", "the update count dropout masks use outside a training step")]
            continue
        root, width = layout.root(name), buf.shape[-1]
        if root != name:
            aliases.append((f"{name} = {root}", f"shares storage: {root} is dead when {name} is written"))
            if name in transposed:
                aliases.append((f"{name}T = {name}.T", "transposed view, no copy"))
            continue
        if name in layout.channel_major:
            lines.append((f"{name} = {allocation(buf.shape)}", f"{buf.role}, stored channel-major"))
            per_row, fixed = count_elements(buf.shape, per_row, fixed)
            continue
        if buf.role == "input" and len(buf.shape) > 2 and not _viewable(program, name):
            lines += [(f"{name} = np.empty({allocation_shape(buf.shape)}, dtype=DTYPE)", "an image input"),
                      (f"{name}_rows = {name}.reshape(n, -1)", "its rows, a view: its columns of X land here")]
            per_row, fixed = count_elements(buf.shape, per_row, fixed)
            continue
        if _viewable(program, name):
            lines.append((f"{name} = {_input_view(program, name)}", "one model input: its columns of X, a view"))
            if name in transposed:
                lines.append((f"{name}T = {name}.T", "transposed view, no copy"))
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
    for name, op in reshaped.items():  # after the buffers (and aliases) they view
        lines.append((f"{name} = {op.x}.reshape{allocation_shape(program.buffers[name].shape)}",
                      f"{op.x} reshaped: a view, nothing moves"))
        if name in transposed:
            lines.append((f"{name}T = {name}.T", "transposed view, no copy"))
    lines += images.bindings
    per_row, fixed = per_row + images.per_row, fixed + images.fixed
    if program.n_trainable < program.n_params:
        t = program.n_trainable
        lines.append((f"params, grads = params[:{t}], grads[:{t}]",
                      "the optimizer updates the trainable prefix; buffers follow it"))
    for name, (shape, kind) in pool.declared.items():
        dtype = {"bool": "np.bool_", "uint32": "np.uint32", "index": "np.intp"}.get(kind, "DTYPE")
        if channel_major(shape):  # as the images it meets
            lines.append((f"{name} = {allocation(shape, dtype)}", "scratch, stored channel-major"))
        else:
            lines.append((f"{name} = np.empty({allocation_shape(shape)}, dtype={dtype})", "scratch"))
        for _ in range(8 // np.dtype(program.dtype).itemsize if kind == "index" else 1):  # intp: 8 bytes
            per_row, fixed = count_elements(shape, per_row, fixed)
    for name, shape in sorted(pool.ones.items()):
        lines.append((f"{name} = np.ones({allocation_shape(shape)}, dtype=DTYPE)", "sums are dot products with ones"))
        per_row, fixed = count_elements(shape, per_row, fixed)
    for name, shape in sorted(pool.counters.items()):
        size = "*".join("n" if d == BATCH else str(d) for d in shape)
        lines.append((f"{name} = np.multiply(np.arange(1, {size} + 1, dtype=np.uint32), np.uint32({DROPOUT_WEYL:#x}))"
                      f".reshape{allocation_shape(shape)}", "(i + 1)*0x9E3779B9 for element i: dropout counters"))
        per_row, fixed = count_elements(shape, per_row, fixed)
    return lines, per_row, fixed


def _state_bindings(program: Program) -> list[tuple[str, str]]:
    """Each optimizer state vector as the step functions see it (its trainable prefix when buffers follow)."""
    names = sorted({s for o in program.optimizers.values() for s in o.state})
    if program.n_trainable == program.n_params:
        return [(name, f"state.get({name!r})") for name in names]
    t = program.n_trainable
    return [(name, f"state[{name!r}][:{t}] if {name!r} in state else None") for name in names]


def _viewable(program: Program, name: str) -> bool:
    """Whether an input's buffer is a view of X: its columns, as they are, or reshaped when they are all of X."""
    buf = program.buffers[name]
    if buf.role != "input" or name == program.input:
        return False
    return len(buf.shape) == 2 or len(program.inputs) == 1


def _input_view(program: Program, name: str) -> str:
    """One input's columns of X, as a view: reshaped to (n, C, H, W) for an image (X is C-contiguous, so
    the reshape of a slice starting at column 0 and ending at the last is a view too)."""
    op = next(op for op in program.iter_ops() if isinstance(op, Slice) and op.out == name)
    shape = program.buffers[name].shape
    view = f"{op.x}[:, {op.start}:{op.stop}]"
    return view if len(shape) == 2 else f"{view}.reshape{allocation_shape(shape)}"


def context(program: Program, fold_bias: bool = True, optimize: bool = True, marks: bool = False) -> dict:
    """Everything the templates need, computed here so the templates stay free of logic.

    `fold_bias=False` keeps separate bias adds and column sums; `optimize=False` also turns
    off aliasing and the printer's fast forms, giving the plain lowering tests compare against.
    `marks` tags each op's first line for `source_map`.
    """
    layout = plan_layout(program, fold_bias, alias=optimize)
    lowering = _Lowering(program, layout, fast=optimize)
    functions = [lowering.function(fn, marks) for fn in program.functions.values()]
    allocations, per_row, fixed = _allocations(program, layout, lowering.pool, lowering.images)
    return {
        **interface(program, NAME),
        "allocations": allocations,
        "state_bindings": _state_bindings(program),
        "workspace_scalars": lowering.scalars.workspace,
        "hooks": any(fn.hook for fn in program.functions.values()),
        "input_store": f"{program.input}_aug" if program.input in layout.augmented else program.input,
        "functions": functions,
        "per_row": per_row,
        "fixed": fixed,
        "itemsize": np.dtype(program.dtype).itemsize,
        "dropout": any(isinstance(op, DropoutMask) for op in program.iter_ops()),
        "mix": [f"{c:#x}" for c in DROPOUT_MIX],
        "weyl": f"{DROPOUT_WEYL:#x}",
    }


def render_module(program: Program, fold_bias: bool = True, optimize: bool = True) -> str:
    """Python source of the compiled program, imported by the JIT."""
    return render("numpy/program.py.j2", **context(program, fold_bias, optimize))


def source_map(program: Program, fold_bias: bool = True,
               optimize: bool = True) -> tuple[str, dict[str, list[tuple[int, int, int]]]]:
    """The text `render_module` writes, and where each IR op landed in it.

    Returns (text, {function: [(op index in the function, first line, last line)]}), lines
    counted from 1 and inclusive: the op's ``# stage: formula`` line and the lines it lowered
    to.  Found as the template renders (each op's first line carries a mark, removed here),
    so the map follows the template wherever it puts the code.
    """
    ctx = context(program, fold_bias, optimize, marks=True)
    sizes = {fn["name"]: [len(block["lines"]) for block in fn["blocks"]] for fn in ctx["functions"]}
    lines, spans = render("numpy/program.py.j2", **ctx).split("\n"), {}
    for number, line in enumerate(lines, 1):
        found = _MARKED.search(line)
        if found:
            name, index = found.group(1), int(found.group(2))
            spans.setdefault(name, []).append((index, number, number + sizes[name][index]))
            lines[number - 1] = _MARKED.sub("", line)
    return "\n".join(lines), spans


def render_script(program: Program, runtime_source: str, filename: str, fold_bias: bool = True) -> str:
    """A standalone training script: the program, the runtime text, and its command line."""
    return render("numpy/script.py.j2", runtime_source=runtime_source, filename=filename,
                  **context(program, fold_bias))


