"""Fusion for the CUDA backend: consecutive elementwise ops of an IR function grouped into kernels.

The IR's matrix products stay cuBLAS calls; everything between two of them is a run of
statements (`Stmt`: a Map, a Reduce, or the bias add that completes a Linear), grouped
greedily into kernels of four shapes:

- ``map``: statements writing buffers of one shape, one thread per element, each value
  passed to later statements in a register (bias add + activation; δ·f'(z); the whole
  optimizer update on the flat vectors);
- ``rows``: statements on rows, one warp per row, row reductions by warp shuffles
  (bias add + softmax; the delta through a softmax);
- ``total``: full reductions and scalar statements in one block (the loss and its
  penalties);
- ``cols``: a column reduction, one thread per column;
- ``channels``: a per-channel reduction of images (N, C, H, W), one block per channel.

Two statements share a kernel only when no thread can read what another thread of the
same kernel writes (`_shared_read_then_written` refuses the one pattern that could).
`kernels.KernelWriter` turns each group into C.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ...derive.ir import Program


@dataclass(frozen=True)
class Stmt:
    """out = expr (elementwise), or out = reduce(expr) over `axis` when `reduce` is set.

    `origin` is the index, in its function, of the IR op the statement comes from.
    """

    out: str
    expr: sp.Expr
    formula: str
    reduce: str | None = None
    axis: int | tuple[int, ...] | None = None
    origin: int = -1

    @property
    def reads(self) -> set[str]:
        return {s.name for s in self.expr.free_symbols}


@dataclass
class Group:
    """Statements one kernel runs, from step `start` of the function; `shape` is the iteration shape."""

    kind: str
    shape: tuple
    stmts: list[Stmt] = field(default_factory=list)
    start: int = 0


def comment(text: str) -> str:
    """A formula made safe for a // comment (no line continuation, one line)."""
    return " ".join(text.replace("\\", "/").split())


def shape_of(program: Program, expr: sp.Expr) -> tuple:
    """Broadcast shape of the buffers `expr` reads (scalar names count as ())."""
    shapes = [program.buffers[s.name].shape for s in expr.free_symbols if s.name in program.buffers]
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(ndim):
        dims = {s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0} - {1}
        if len(dims) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


# -- grouping -------------------------------------------------------------------------------
def group(program: Program, stmts: list[Stmt], start: int) -> list[Group]:
    """Greedy fusion of consecutive statements (steps start, start + 1, ...) into kernels."""
    groups: list[Group] = []
    for offset, stmt in enumerate(stmts):
        if not groups or not _absorb(program, groups[-1], stmt):
            groups.append(_begin(program, stmt, start + offset))
    return groups


def _begin(program: Program, stmt: Stmt, index: int) -> Group:
    if stmt.reduce is None:
        shape = program.buffers[stmt.out].shape
        return Group("total" if shape == () else "map", shape, [stmt], index)
    kind = "channels" if isinstance(stmt.axis, tuple) else {None: "total", 1: "rows", 0: "cols"}[stmt.axis]
    shape = () if kind == "total" else shape_of(program, stmt.expr)
    return Group(kind, shape, [stmt], index)


def _absorb(program: Program, g: Group, stmt: Stmt) -> bool:
    """Add `stmt` to `g` when one kernel can run both without a race; say whether it did."""
    out_shape = program.buffers[stmt.out].shape
    if g.kind == "map":
        ok = stmt.reduce is None and out_shape == g.shape
        if not ok and stmt.axis == 1 and len(g.shape) == 2 and shape_of(program, stmt.expr) == g.shape:
            g.kind = ok = "rows"
    elif g.kind == "rows":
        rows = g.shape[0]
        elementwise = stmt.reduce is None and len(out_shape) == 2 and out_shape[0] == rows
        row_reduce = stmt.axis == 1 and shape_of(program, stmt.expr)[:1] == (rows,)
        ok = (elementwise or row_reduce) and not _shared_read_then_written(program, g, stmt, (rows, 1))
    elif g.kind == "total":
        scalar = (stmt.reduce is not None and stmt.axis is None) or (stmt.reduce is None and out_shape == ())
        ok = scalar and not _shared_read_then_written(program, g, stmt, ())
    else:
        ok = False
    if ok:
        g.stmts.append(stmt)
    return bool(ok)


def _shared_read_then_written(program: Program, g: Group, stmt: Stmt, shared: tuple) -> bool:
    """Whether `stmt` writes a buffer all threads share that the group read from memory before."""
    if program.buffers[stmt.out].shape != shared:
        return False
    written: set[str] = set()
    for s in g.stmts:
        if stmt.out in s.reads and stmt.out not in written:
            return True
        written.add(s.out)
    return False
