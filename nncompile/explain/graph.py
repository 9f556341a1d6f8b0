"""The explicit forward + backward graph, as a table, as Graphviz DOT, or drawn to PNG.

Shows one entry point of the Program IR (by default ``loss_and_grad``: forward, loss and
backward): each op, what it reads, what it writes, the output's shape, and its FLOPs for
a batch size, with totals per stage.  In DOT each stage has its own colour, backward ops
have dashed red borders, and parameters, gradients and data have their own node shapes.
PNG goes through the `graphviz` package and Graphviz's ``dot`` program.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..derive.ir import (BATCH, Conv2D, Conv2DGrad, Conv2DGradInput, CountCorrect, Linear, LinearGrad, Map, MatMulT,
                         Op, Pool2D, Pool2DGrad, Program, Reduce)
from ..errors import NncompileError

STAGES = ("forward", "loss", "backward", "update", "diagnose")
STAGE_COLORS = {"forward": "#dbeafe", "loss": "#fef3c7", "backward": "#fee2e2", "update": "#dcfce7",
                "diagnose": "#ede9fe"}
STAGE_BORDERS = {"forward": "#1d4ed8", "loss": "#b45309", "backward": "#b91c1c", "update": "#15803d",
                 "diagnose": "#6d28d9"}
_ROLE_SHAPES = {"input": "parallelogram", "target": "parallelogram", "param": "cylinder", "grad": "cylinder",
                "state": "cylinder", "scalar": "circle", "value": "ellipse", "index": "hexagon"}


class GraphError(NncompileError):
    """The picture could not be drawn (Graphviz missing)."""


def _dims(program: Program, name: str, n: int) -> tuple[int, ...]:
    return tuple(n if d == BATCH else int(d) for d in program.buffers[name].shape)


def flops(program: Program, op: Op, n: int) -> int:
    """Floating-point operations of `op` for batch size n (a multiply-add counts 2)."""
    if isinstance(op, Linear):
        rows, inner = _dims(program, op.x, n)
        return 2 * rows * inner * _dims(program, op.out, n)[1]
    if isinstance(op, LinearGrad):
        rows, inner = _dims(program, op.x, n)
        cols = _dims(program, op.dz, n)[1]
        return 2 * rows * inner * cols + rows * cols
    if isinstance(op, MatMulT):
        rows, inner = _dims(program, op.a, n)
        return 2 * rows * inner * _dims(program, op.out, n)[1]
    if isinstance(op, (Conv2D, Conv2DGrad, Conv2DGradInput)):
        return _conv_flops(program, op, n)
    if isinstance(op, (Pool2D, Pool2DGrad)):  # a comparison or an add per window entry of every output
        out = op.out if isinstance(op, Pool2D) else op.dz
        return _count(_dims(program, out, n)) * op.size[0] * op.size[1]
    if isinstance(op, CountCorrect):  # a comparison per output element (and per target element)
        return 2 * _count(_dims(program, op.y, n))
    if isinstance(op, (Map, Reduce)):
        size = 1
        for name in op.inputs:
            if name in program.buffers:
                size = max(size, _count(_dims(program, name, n)))
        return size * max(1, int(op.expr.count_ops()))
    return 0


def _conv_flops(program: Program, op: Op, n: int) -> int:
    """A convolution's GEMM: 2·(N·Ho·Wo)·O·(C·kh·kw), plus the bias (forward) or its gradient (N·Ho·Wo·O)."""
    weight = op.dw if isinstance(op, Conv2DGrad) else op.w
    out_channels, channels, kh, kw = _dims(program, weight, n)
    delta = op.out if isinstance(op, Conv2D) else op.dz
    rows, _, ho, wo = _dims(program, delta, n)
    gemm = 2 * rows * ho * wo * out_channels * channels * kh * kw
    return gemm if isinstance(op, Conv2DGradInput) else gemm + rows * ho * wo * out_channels


def _count(dims: tuple[int, ...]) -> int:
    total = 1
    for d in dims:
        total *= d
    return total


@dataclass(frozen=True)
class OpRow:
    """One op of an entry point as the graph view lists it (`index`: its place in the function)."""

    index: int
    stage: str
    kind: str
    writes: tuple[str, ...]
    reads: tuple[str, ...]
    shape: tuple | None
    flops: int
    formula: str


def op_rows(program: Program, function: str = "loss_and_grad", batch: int = 32) -> list[OpRow]:
    """Every op of `function` with what it reads and writes, its output's shape and its FLOPs at `batch`."""
    return [OpRow(i, op.stage, op.kind, op.outputs, op.inputs,
                  program.buffers[op.outputs[0]].shape if op.outputs else None,  # a mark (GradReady) writes nothing
                  flops(program, op, batch), op.formula) for i, op in enumerate(program.functions[function].ops)]


def stage_totals(rows: list[OpRow]) -> dict[str, int]:
    """FLOPs per stage, in pipeline order, stages without ops left out."""
    totals = dict.fromkeys(STAGES, 0)
    for row in rows:
        totals[row.stage] += row.flops
    return {stage: cost for stage, cost in totals.items() if cost}


def table(program: Program, function: str = "loss_and_grad", batch: int = 32) -> str:
    """One line per op (stage, kind, output <- inputs, shape, FLOPs, formula), then totals per stage."""
    ops = op_rows(program, function, batch)
    rows = [("#", "stage", "op", "writes", "reads", "shape", "FLOPs", "formula")]
    for op in ops:
        shape = "-" if op.shape is None else "x".join(str(d) for d in op.shape) or "scalar"
        rows.append((str(op.index + 1), op.stage, op.kind, ", ".join(op.writes), ", ".join(op.reads), shape,
                     f"{op.flops:,}", op.formula))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    totals = stage_totals(ops)
    stages = ", ".join(f"{stage} {cost:,}" for stage, cost in totals.items())
    lines.append(f"total: {len(ops)} ops, {sum(totals.values()):,} FLOPs at batch size N = {batch} "
                 f"({stages})")
    return "\n".join(lines)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot(program: Program, function: str = "loss_and_grad") -> str:
    """Graphviz DOT: ops as boxes coloured by stage (backward dashed and red), buffers as nodes, a legend."""
    ops = program.functions[function].ops
    lines = [f"digraph {_quote(program.name)} {{", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];',
             '  edge [color="#475569"];', f"  label={_quote(f'{program.name}: {function} (forward + backward)')};"]
    for i, op in enumerate(ops):
        style = "filled,dashed,bold" if op.stage == "backward" else "filled"
        lines.append(f'  op{i} [shape=box, style="{style}", fillcolor="{STAGE_COLORS[op.stage]}", '
                     f'color="{STAGE_BORDERS[op.stage]}", label={_quote(f"{op.stage}: {op.formula}")}];')
    lines += ["  subgraph cluster_legend {", '    label="legend"; fontsize=10; color="#94a3b8";']
    lines += [f'    legend_{stage} [shape=box, style="{"filled,dashed,bold" if stage == "backward" else "filled"}", '
              f'fillcolor="{STAGE_COLORS[stage]}", color="{STAGE_BORDERS[stage]}", label="{stage} op"];'
              for stage in STAGES if any(op.stage == stage for op in ops)]
    lines.append("  }")
    seen: dict[str, None] = {}
    for op in ops:
        seen.update(dict.fromkeys(n for n in op.inputs + op.outputs if n in program.buffers))
    for name in seen:
        role = program.buffers[name].role
        color = ', color="#b91c1c", fontcolor="#b91c1c"' if role == "grad" or name.startswith("d") else ""
        lines.append(f"  {_quote(name)} [shape={_ROLE_SHAPES[role]}{color}];")
    for i, op in enumerate(ops):
        lines += [f"  {_quote(name)} -> op{i};" for name in op.inputs if name in program.buffers]
        lines += [f"  op{i} -> {_quote(name)};" for name in op.outputs]
    lines.append("}")
    return "\n".join(lines)


def png(dot_source: str, path: Path) -> int:
    """Draw `dot_source` into the PNG file `path` (written atomically); returns its size in bytes."""
    from ..runtime.checkpoint import write_bytes_atomic
    try:
        import graphviz
    except ImportError:
        raise GraphError("--png needs the graphviz Python package (pip install 'nncompile[graph]') and "
                         "Graphviz's dot program; `nncompile graph --dot` prints the DOT text without them") from None
    try:
        data = graphviz.Source(dot_source).pipe(format="png")
    except graphviz.ExecutableNotFound:
        raise GraphError("--png needs Graphviz's dot program on the PATH (Debian/Ubuntu: apt-get install "
                         "graphviz; macOS: brew install graphviz); `nncompile graph --dot` prints the DOT text "
                         "without it") from None
    except graphviz.CalledProcessError as exc:
        raise GraphError(f"Graphviz's dot failed: {exc.stderr.decode(errors='replace').strip()[:200]}") from None
    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        raise GraphError(f"cannot write {path}: {exc.strerror}") from None
    return len(data)
