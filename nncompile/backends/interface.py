"""The tables every generated module carries, whatever the backend (see templates/common/).

The runtime's engine, the trainer and the diagnostics read these names from a compiled module;
computing them once here keeps the backends' contexts, and the modules, alike.
"""
from __future__ import annotations

from ..derive.ir import BATCH, DropoutMask, GradReady, Program
from ..version import __version__


def names_tuple(names: list[str]) -> str:
    """Python source of a tuple of names: (), (a,), (a, b)."""
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


def shape_text(shape: tuple) -> str:
    """Python source of a shape tuple: (3,), (n, 4)."""
    inner = ", ".join(str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def allocation_shape(shape: tuple) -> str:
    """A buffer's shape as build(n, ...) writes it: the batch dimension is the variable n."""
    return shape_text(tuple("n" if d == BATCH else d for d in shape))


def row_elements(shape: tuple) -> int:
    """Elements per row of a (N, ...) buffer."""
    size = 1
    for d in shape[1:]:
        size *= int(d)
    return size


def count_elements(shape: tuple, per_row: int, fixed: int) -> tuple[int, int]:
    """Add a buffer's elements to the per-row (batch-sized) or fixed count, for workspace_bytes."""
    size = 1
    for d in shape:
        size *= 1 if d == BATCH else int(d)
    return (per_row + size, fixed) if BATCH in shape else (per_row, fixed + size)


def _namespace(program: Program) -> list[tuple[str, str]]:
    """What a workspace shows besides its entry points: the dropout seed the trainer sets, the masks of the
    last training call (in layer order)."""
    masks = [op.out for op in program.iter_ops() if isinstance(op, DropoutMask)]
    if not masks:
        return []
    seed = next(op.seed for op in program.iter_ops() if isinstance(op, DropoutMask))
    return [("dropout_seed", seed), ("masks", names_tuple(masks))]


def interface(program: Program, backend: str) -> dict:
    """Template context for templates/common/_interface.py.j2 and the build() namespace."""
    return {
        "version": __version__,
        "backend": backend,
        "program": program,
        "output": program.output,
        "params": [(p.name, p.shape, p.offset, p.init) for p in program.params],
        "buffers": tuple(p.name for p in program.params if not p.trainable),
        "input_shapes": tuple(program.input_shapes),
        "optimizers": [(o.name, o.state, dict(o.defaults)) for o in program.optimizers.values()],
        "state_names": sorted({s for o in program.optimizers.values() for s in o.state}),
        "lr_folded": tuple(o.name for o in program.optimizers.values() if o.folds_lr),
        "grad_blocks": tuple((op.start, op.stop) for op in program.functions["gradient"].ops
                             if isinstance(op, GradReady)),
        "probes": [(p.layer, p.activation, p.buffer, p.kind) for p in program.probes],
        "probe_buffers": names_tuple([p.buffer for p in program.probes]),
        "namespace": _namespace(program),
    }
