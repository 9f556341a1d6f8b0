"""C text of the CUDA kernels: one `Kernel` per fused group of statements (see `fusion`).

`KernelWriter` prints every expression with `CudaPrinter` (SymPy's C99 printer): reads
become ``buf[i]``, ``buf[row]`` or ``buf[col]`` by broadcasting, values computed earlier in
the same kernel are read from registers, scalar subexpressions (lr/N, 1 - beta1**step)
are hoisted out of the loops as per-thread constants, and common subexpressions are shared
with `sympy.cse`.  A value is stored to memory only when a later step reads it, or when it
is not a plain intermediate.  Full reductions are summed in double precision in a fixed
order (no atomics), so the same inputs give the same loss on every run.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ...derive.ir import BATCH, Program
from .cprinter import CudaPrinter
from .fusion import Group, Stmt, comment, shape_of


@dataclass(frozen=True)
class Kernel:
    """One kernel: its C parameters and body, the formulas it computes, its launch size."""

    kind: str
    label: str                             # the last buffer it writes, for its name
    params: tuple[tuple[str, str], ...]    # (C declaration, argument: a buffer name, "n" or "hp")
    body: tuple[str, ...]
    formulas: tuple[str, ...]
    size: str                              # launch size as a Python expression in n

    def source(self, name: str) -> str:
        """The definition under `name`; also the kernel's identity when deduplicating."""
        head = f'extern "C" __global__ void {name}({", ".join(decl for decl, _ in self.params)})'
        return "\n".join([head, "{", *self.body, "}"])


class KernelWriter:
    """C body of one group: memory reads, registers, hoisted scalars and stores."""

    def __init__(self, program: Program, scalars: tuple[str, ...], live_after: list[set[str]],
                 keep: set[str]) -> None:
        self.program, self.scalars = program, scalars
        self.live_after = live_after   # live_after[k]: buffers read by the steps after step k
        self.keep = keep               # buffers always stored (the output, the returned scalar)

    def kernel(self, g: Group) -> Kernel:
        self.g = g
        self.position = {id(s): k for k, s in enumerate(g.stmts)}
        self.printer = CudaPrinter(self.program.dtype)
        self.buffers: dict[str, bool] = {}                  # buffer -> written, in first-use order
        self.registers: dict[str, tuple[str, str]] = {}     # buffer -> (register, "element" | "kernel")
        self.declared: set[str] = set()
        self.hoisted: dict[sp.Expr, str] = {}
        self.hoist_lines: list[str] = []
        self.hp_used: set[str] = set()
        self.needs_n = self.uses_N = self.hp_read = False
        self.index: set[str] = set()
        self.temps = 0
        body = getattr(self, f"_{g.kind}")(g)
        return Kernel(g.kind, g.stmts[-1].out, self._signature(), tuple(self._preamble() + body),
                      tuple(s.formula for s in g.stmts), self._size(g))

    # -- the four kernel shapes -------------------------------------------------------------
    def _map(self, g: Group) -> list[str]:
        self.index = set()
        body = self._elements(g.stmts, g.shape, 2)
        return ([f"    const long long total = {self._count(g.shape)};",
                 "    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;",
                 "         i += (long long)gridDim.x * blockDim.x) {"]
                + self._index_lines(g.shape, 2, from_flat=True) + body + ["    }"])

    def _rows(self, g: Group) -> list[str]:
        lines = ["    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;",
                 "    const int lane = threadIdx.x % 32;",
                 f"    if (row >= {self._dim(g.shape[0])}) return;"]
        for segment in self._segments(g):
            lines += self._row_segment(segment)
        return lines

    def _total(self, g: Group) -> list[str]:
        lines: list[str] = []
        for stmt in g.stmts:
            lines.append(f"    // {comment(stmt.formula)}")
            if stmt.reduce is None:
                lines += self._scalar(stmt, "threadIdx.x == 0")
                continue
            shape = shape_of(self.program, stmt.expr)
            acc = f"acc_{stmt.out}"
            self.index = set()
            init, fold, block = (("0.0", "{a} += (double)({v});", "nc_block_sum") if stmt.reduce == "sum" else
                                 ("-NC_INF", "{a} = fmax({a}, (double)({v}));", "nc_block_max"))
            temps, value = self._value(stmt.expr, shape, 2)
            lines += [f"    double {acc} = {init};",
                      f"    for (long long i = threadIdx.x; i < {self._count(shape)}; i += blockDim.x) {{"]
            lines += self._index_lines(shape, 2, from_flat=True) + temps
            lines += ["        " + fold.format(a=acc, v=value), "    }"]
            lines += self._define(stmt.out, f"(real){block}({acc})", "threadIdx.x == 0", 1, "kernel")
        return lines

    def _channels(self, g: Group) -> list[str]:
        """A per-channel reduction of an image expression (N, C, H, W) into a (C, 1, 1) buffer: one block per
        channel, its threads striding over the channel's N·H·W entries, summed in double in a fixed order."""
        (stmt,) = g.stmts
        channels, pixels = int(g.shape[1]), 1
        for d in g.shape[2:]:
            pixels *= int(d)
        self.needs_n = True
        self.index = set()
        temps, value = self._value(stmt.expr, g.shape, 2)
        self.index = set()
        init, fold, block = (("0.0", "acc += (double)({v});", "nc_block_sum") if stmt.reduce == "sum" else
                             ("-NC_INF", "acc = fmax(acc, (double)({v}));", "nc_block_max"))
        self._write(stmt.out)
        return (["    const int c = blockIdx.x;",
                 f"    // {comment(stmt.formula)}",
                 f"    double acc = {init};",
                 f"    for (long long e = threadIdx.x; e < (long long)n * {pixels}; e += blockDim.x) {{",
                 f"        const long long i = ((e / {pixels}) * {channels} + c) * {pixels} + e % {pixels};"]
                + temps + ["        " + fold.format(v=value), "    }",
                           f"    const double total = {block}(acc);",
                           f"    if (threadIdx.x == 0) {stmt.out}[c] = (real)total;"])

    def _cols(self, g: Group) -> list[str]:
        (stmt,) = g.stmts
        rows, cols = g.shape
        init = self.printer.literal(0) if stmt.reduce == "sum" else "-NC_INF"
        self.index = set()
        temps, value = self._value(stmt.expr, g.shape, 2)
        fold = f"acc + {value}" if stmt.reduce == "sum" else f"fmax(acc, {value})"
        self._write(stmt.out)
        return (["    const int col = blockIdx.x * blockDim.x + threadIdx.x;",
                 f"    if (col >= {cols}) return;",
                 f"    // {comment(stmt.formula)}",
                 f"    real acc = {init};",
                 f"    for (int row = 0; row < {self._dim(rows)}; ++row) {{"]
                + self._index_lines(g.shape, 2, from_flat=False) + temps
                + [f"        acc = {fold};", "    }", f"    {stmt.out}[col] = acc;"])

    # -- rows kernels: column loops over one row -------------------------------------------------
    def _segments(self, g: Group) -> list[list[Stmt]]:
        """Runs of statements sharing one column loop; a row reduction ends its loop."""
        segments: list[list[Stmt]] = []
        width = None
        for stmt in g.stmts:
            shape = shape_of(self.program, stmt.expr) if stmt.reduce else self.program.buffers[stmt.out].shape
            row_scalar = stmt.reduce is None and shape[1] == 1
            if row_scalar or width != shape[1] or not segments or segments[-1][-1].reduce:
                segments.append([])
            segments[-1].append(stmt)
            width = None if row_scalar else shape[1]
        return segments

    def _row_segment(self, stmts: list[Stmt]) -> list[str]:
        lines = [f"    // {comment(s.formula)}" for s in stmts]
        first, last = stmts[0], stmts[-1]
        if first.reduce is None and self.program.buffers[first.out].shape[1] == 1:
            return lines + self._scalar(first, "lane == 0")
        reduce = last if last.reduce else None
        maps = stmts[:-1] if reduce else stmts
        width = (shape_of(self.program, last.expr) if reduce else self.program.buffers[last.out].shape)[1]
        shape = (self.g.shape[0], width)
        self.index = set()
        body = self._elements(maps, shape, 2, loop=stmts)
        acc = ""
        if reduce:
            acc = self._register(reduce.out, "kernel")
            init = self.printer.literal(0) if reduce.reduce == "sum" else "-NC_INF"
            lines.append(f"    real {acc} = {init};")
            temps, value = self._value(reduce.expr, shape, 2)
            body += temps + [f"        {acc} = {acc} + {value};" if reduce.reduce == "sum" else
                             f"        {acc} = fmax({acc}, {value});"]
        lines += [f"    for (int col = lane; col < {width}; col += 32) {{"]
        lines += self._index_lines(shape, 2, from_flat=False) + body + ["    }"]
        self.registers = {k: v for k, v in self.registers.items() if v[1] != "element"}
        if reduce:
            warp = "nc_warp_sum" if reduce.reduce == "sum" else "nc_warp_max"
            lines.append(f"    {acc} = {warp}({acc});")
            lines += self._bind(reduce.out, acc, "kernel", "lane == 0", 1)
        return lines

    # -- statements ----------------------------------------------------------------------------
    def _elements(self, stmts: list[Stmt], shape: tuple, depth: int, loop: list[Stmt] | None = None) -> list[str]:
        """Statements inside one loop over `shape` (whose statements are `loop`, by default `stmts`);
        later ones read earlier ones from registers."""
        lines: list[str] = []
        for k, stmt in enumerate(stmts):
            temps, value = self._value(stmt.expr, shape, depth)
            lines += temps
            rewritten = any(s.out == stmt.out for s in stmts[k + 1:])
            store = not rewritten and self._needed_outside(stmt, loop or stmts)
            reg = self._register(stmt.out, "element")
            lines.append(f"{'    ' * depth}const real {reg} = {value};")
            lines += self._bind(stmt.out, reg, "element", None, depth, store, shape)
        return lines

    def _scalar(self, stmt: Stmt, guard: str) -> list[str]:
        temps, value = self._value(stmt.expr, self.g.shape if self.g.kind == "rows" else (), 1)
        return temps + self._define(stmt.out, value, guard, 1, "kernel")

    def _value(self, expr: sp.Expr, shape: tuple, depth: int) -> tuple[list[str], str]:
        """(lines of cse temporaries, C text) of `expr` read over `shape`."""
        expr = self._hoist(expr)
        names = self._names(expr, shape)
        temps, (reduced,) = sp.cse([expr], symbols=self._fresh_symbols("t"), order="none")
        names.update({sym.name: sym.name for sym, _ in temps})
        self.printer.names = names
        pad = "    " * depth
        lines = [f"{pad}const real {sym.name} = {self.printer.code(sub)};" for sym, sub in temps]
        return lines, self.printer.code(reduced)

    def _define(self, out: str, value: str, guard: str | None, depth: int, scope: str,
                store: bool | None = None) -> list[str]:
        """A new register holding `value` for `out`, stored to memory if needed there."""
        reg = self._register(out, scope)
        return [f"{'    ' * depth}const real {reg} = {value};"] + self._bind(out, reg, scope, guard, depth, store)

    def _bind(self, out: str, reg: str, scope: str, guard: str | None, depth: int,
              store: bool | None = None, shape: tuple | None = None) -> list[str]:
        """`out` now lives in `reg`; store it (at the index of `shape`, the loop's) if needed in memory."""
        self.registers[out] = (reg, scope)
        if store is None:
            store = self._needed_after_group(out)
        if not store:
            return []
        self._write(out)
        target = f"{out}[{self._index_of(out, self.program.buffers[out].shape, shape or self.g.shape)}]"
        pad = "    " * depth
        return [f"{pad}if ({guard}) {target} = {reg};" if guard else f"{pad}{target} = {reg};"]

    def _register(self, out: str, scope: str) -> str:
        reg = f"{out}_{'v' if scope == 'element' else 'r'}"
        base, k = reg, 1
        while reg in self.declared:
            k += 1
            reg = f"{base}{k}"
        self.declared.add(reg)
        return reg

    def _needed_outside(self, stmt: Stmt, loop: list[Stmt]) -> bool:
        """An element value is stored if a statement outside its loop, or a later step, reads it."""
        inside = {id(s) for s in loop}
        later = self.g.stmts[self.position[id(stmt)] + 1:]
        return self._needed_after_group(stmt.out) or any(stmt.out in s.reads for s in later if id(s) not in inside)

    def _needed_after_group(self, out: str) -> bool:
        role = self.program.buffers[out].role
        end = self.g.start + len(self.g.stmts) - 1
        return role not in ("value", "scalar") or out in self.keep or out in self.live_after[end]

    # -- names, indices, hoisting ----------------------------------------------------------------
    def _names(self, expr: sp.Expr, shape: tuple) -> dict[str, str]:
        """C text for every symbol of `expr`: a register, a memory read, a hoisted scalar."""
        names: dict[str, str] = {}
        for name in sorted(s.name for s in expr.free_symbols):
            if name in self.registers:
                names[name] = self.registers[name][0]
            elif name in self.program.buffers:
                self.buffers.setdefault(name, False)
                names[name] = f"{name}[{self._index_of(name, self.program.buffers[name].shape, shape)}]"
            elif name in self.scalars or name == BATCH:
                names[name] = self._scalar_name(name)
            else:
                names[name] = name  # a hoisted constant
        return names

    def _scalar_name(self, name: str) -> str:
        if name == BATCH:
            self.uses_N = self.needs_n = True
            return "N"
        if name in self.scalars:
            self.hp_used.add(name)
            return f"h_{name}"
        raise KeyError(f"a kernel reads {name!r}, which is neither a buffer nor an argument")

    def _index_of(self, name: str, buf: tuple, shape: tuple) -> str:
        if buf == ():
            return "0"
        if self.g.kind == "rows" and len(buf) == 2 and buf == (shape[0], 1):
            return "row"  # defined for the whole kernel
        if buf == shape:
            self.index.add("i")
            return "i"
        if len(shape) == 2 and buf == (shape[0], 1):
            self.index.add("row")
            return "row"
        if len(shape) == 2 and buf in ((shape[1],), (1, shape[1])):
            if shape[1] == 1:
                return "0"
            self.index.add("col")
            return "col"
        if len(shape) > 2 and self.g.kind in ("map", "channels"):
            return self._broadcast_index(name, buf, shape)
        raise NotImplementedError(f"no CUDA lowering for reading {name} of shape {buf} over {shape}")

    def _broadcast_index(self, name: str, buf: tuple, shape: tuple) -> str:
        """The flat index into `buf` of element i of an iteration over `shape` (NumPy broadcasting, dims
        aligned on the right): a per-channel (C, 1, 1) statistic over images reads index (i / (H·W)) % C."""
        offset = len(shape) - len(buf)
        terms, inner, stride = [], 1, 1
        for k in range(len(shape) - 1, -1, -1):
            dim = shape[k]
            kb = k - offset
            if kb >= 0 and buf[kb] != 1:
                if buf[kb] != dim:
                    raise NotImplementedError(f"no CUDA lowering for reading {name} of shape {buf} over {shape}")
                part = "i" if inner == 1 else f"(i / {inner})"
                if k > 0:
                    part = f"({part} % {self._dim(dim)})"
                terms.append(part if stride == 1 else f"{part} * {stride}")
                stride *= 1 if dim == BATCH else int(dim)
            inner_dim = 1 if dim == BATCH else int(dim)
            inner *= inner_dim
            if dim == BATCH and k > 0:
                raise NotImplementedError(f"no CUDA lowering for a batch axis at position {k}")
        self.index.add("i")
        return " + ".join(reversed(terms)) or "0"

    def _index_lines(self, shape: tuple, depth: int, from_flat: bool) -> list[str]:
        """Declarations of the indices the loop body used: i from (row, col), or row, col from i."""
        pad, used = "    " * depth, self.index
        self.index = set()
        if len(shape) != 2:
            return []
        if not from_flat:
            return [f"{pad}const long long i = (long long)row * {shape[1]} + col;"] if "i" in used else []
        lines = [f"{pad}const int row = (int)(i / {shape[1]});"] if "row" in used else []
        return lines + ([f"{pad}const int col = (int)(i % {shape[1]});"] if "col" in used else [])

    def _hoist(self, expr: sp.Expr) -> sp.Expr:
        """Subexpressions of scalars alone (lr/N, 1 - beta1**step) become per-thread constants."""
        if self._scalar_only(expr):
            return self._constant(expr) if expr.args else expr
        if not expr.args:
            return expr
        if isinstance(expr, (sp.Add, sp.Mul)):
            scalar = [a for a in expr.args if a.is_number or self._scalar_only(a)]
            if len(scalar) > 1 and not all(a.is_number for a in scalar):
                rest = [self._hoist(a) for a in expr.args if not (a.is_number or self._scalar_only(a))]
                return expr.func(self._constant(expr.func(*scalar)), *rest)
        return expr.func(*[self._hoist(a) for a in expr.args])

    def _scalar_only(self, expr: sp.Expr) -> bool:
        names = {s.name for s in expr.free_symbols}
        return bool(names) and names <= set(self.scalars) | {BATCH}

    def _constant(self, expr: sp.Expr) -> sp.Symbol:
        """A per-thread constant, evaluated in double from the double scalars and then rounded once
        to `real`, as the NumPy backend and torch.optim do: in float, 1 - beta2 from beta2 = 0.999f
        would be 0.00099998713, 1.3e-5 off."""
        if expr not in self.hoisted:
            name = next(self._fresh_symbols("c")).name
            names = sorted(x.name for x in expr.free_symbols)
            double = CudaPrinter("float64", {s: self._double_name(s) for s in names})
            self.hoist_lines.append(f"    const real {name} = (real){_grouped(double.code(expr))};")
            self.hoisted[expr] = name
        return sp.Symbol(self.hoisted[expr], real=True)

    def _double_name(self, name: str) -> str:
        """A scalar read in double precision: the batch size, or the argument as the host passed it."""
        if name == BATCH:
            self.needs_n = True
            return "(double)n"
        self.hp_read = True
        return f"hp[{self.scalars.index(name)}]"

    def _fresh_symbols(self, prefix: str):
        """Symbols t1, t2, ... (or c1, ...) whose names are no buffer's or argument's."""
        taken = set(self.program.buffers) | set(self.scalars) | {BATCH}
        while True:
            self.temps += 1
            if f"{prefix}{self.temps}" not in taken:
                yield sp.Symbol(f"{prefix}{self.temps}", real=True)

    def _write(self, name: str) -> None:
        self.buffers[name] = True

    def _dim(self, d: object) -> str:
        if d == BATCH:
            self.needs_n = True
            return "n"
        return str(d)

    def _count(self, shape: tuple) -> str:
        dims = [d for d in shape if d != 1]
        if BATCH in dims:
            self.needs_n = True
        numbers = [int(d) for d in dims if d != BATCH]
        size = 1
        for d in numbers:
            size *= d
        if BATCH not in dims:
            return str(size)
        return "(long long)n" if size == 1 else f"(long long)n * {size}"

    # -- signature ---------------------------------------------------------------------------
    def _preamble(self) -> list[str]:
        lines = ["    const real N = (real)n;"] if self.uses_N else []
        lines += [f"    const real h_{s} = (real)hp[{k}];" for k, s in enumerate(self.scalars) if s in self.hp_used]
        return lines + self.hoist_lines

    def _signature(self) -> tuple[tuple[str, str], ...]:
        restrict = "" if _overlapping(self.program, self.buffers) else " __restrict__"
        params = [(f"{'' if written else 'const '}real*{restrict} {name}", name)
                  for name, written in self.buffers.items()]
        if self.hp_used or self.hp_read:
            params.append((f"const double*{restrict} hp", "hp"))
        if self.needs_n:
            params.append(("const int n", "n"))
        return tuple(params)

    def _size(self, g: Group) -> str:
        if g.kind == "total":
            return "1"
        if g.kind == "channels":
            return str(g.shape[1])
        if g.kind == "cols":
            return str(g.shape[1])
        if g.kind == "rows":
            return "n" if g.shape[0] == BATCH else str(g.shape[0])
        dims = [d for d in g.shape if d != 1]
        numbers = 1
        for d in dims:
            numbers *= 1 if d == BATCH else int(d)
        return f"n * {numbers}" if BATCH in dims else str(numbers)


def _grouped(text: str) -> str:
    """`text` in parentheses, unless one pair already encloses all of it."""
    depth = 0
    for k, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and k < len(text) - 1:
            return f"({text})"
    return text if text.startswith("(") else f"({text})"


def _overlapping(program: Program, buffers: dict[str, bool]) -> bool:
    """Whether a buffer the kernel writes shares memory with another it uses (a view and its flat vector)."""
    storage: dict[str, list[str]] = {}
    for name in buffers:
        key = {"param": "params", "grad": "grads"}.get(program.buffers[name].role, name)
        storage.setdefault(key, []).append(name)
    return any(len(names) > 1 and any(buffers[n] for n in names) for names in storage.values())
