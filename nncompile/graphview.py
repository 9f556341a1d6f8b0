"""The explicit forward + backward graph, as a table or as Graphviz DOT.

Shows one entry point of the Program IR (by default ``loss_and_grad``: forward, loss and
backward): each op, what it reads, what it writes, the shape, and its FLOPs for a batch.
"""
from __future__ import annotations

from .ir import BATCH, Linear, LinearGrad, Map, MatMulT, Op, Program, Reduce

STAGE_COLORS = {"forward": "#dbeafe", "loss": "#fef3c7", "backward": "#fee2e2", "update": "#dcfce7",
                "diagnose": "#ede9fe"}


def _dims(program: Program, name: str, n: int) -> tuple[int, ...]:
    return tuple(n if d == BATCH else int(d) for d in program.buffers[name].shape)


def flops(program: Program, op: Op, n: int) -> int:
    """Floating-point operations of `op` for batch size n (multiply-add counts 2)."""
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
    if isinstance(op, (Map, Reduce)):
        size = 1
        for name in op.inputs:
            if name in program.buffers:
                size = max(size, _count(_dims(program, name, n)))
        return size * max(1, int(op.expr.count_ops()))
    return 0


def _count(dims: tuple[int, ...]) -> int:
    total = 1
    for d in dims:
        total *= d
    return total


def table(program: Program, function: str = "loss_and_grad", batch: int = 32) -> str:
    """One line per op: stage, kind, output <- inputs, output shape, FLOPs, formula."""
    ops = program.functions[function].ops
    rows = [("#", "stage", "op", "writes", "reads", "shape", "FLOPs", "formula")]
    total = 0
    for i, op in enumerate(ops, 1):
        shape = "x".join(str(d) for d in program.buffers[op.outputs[0]].shape) or "scalar"
        cost = flops(program, op, batch)
        total += cost
        rows.append((str(i), op.stage, op.kind, ", ".join(op.outputs), ", ".join(op.inputs), shape,
                     f"{cost:,}", op.formula))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines.append(f"total: {len(ops)} ops, {total:,} FLOPs per step at batch size {batch} (N = {batch})")
    return "\n".join(lines)


def dot(program: Program, function: str = "loss_and_grad") -> str:
    """Graphviz DOT: buffers as ellipses, ops as boxes coloured by stage (backward in red)."""
    ops = program.functions[function].ops
    lines = [f'digraph "{program.name}" {{', "  rankdir=TB;", '  node [fontname="Helvetica"];']
    seen: set[str] = set()
    for i, op in enumerate(ops):
        node = f"op{i}"
        label = op.formula.replace("\\", "\\\\").replace('"', '\\"')
        style = "dashed" if op.stage == "backward" else "solid"
        lines.append(f'  {node} [shape=box, style="filled,{style}", fillcolor="{STAGE_COLORS[op.stage]}", '
                     f'label="{op.kind}\\n{label}"];')
        for name in op.inputs + op.outputs:
            if name in program.buffers and name not in seen:
                seen.add(name)
                lines.append(f'  "{name}" [shape=ellipse, label="{name}"];')
        lines += [f'  "{name}" -> {node};' for name in op.inputs if name in program.buffers]
        lines += [f'  {node} -> "{name}";' for name in op.outputs]
    lines.append("}")
    return "\n".join(lines)
