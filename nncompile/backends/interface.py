"""The tables every generated module carries, whatever the backend (see templates/common/).

runtime.py, the trainer and the diagnostics read these names from a compiled module;
computing them once here keeps the backends' contexts, and the modules, alike.
"""
from __future__ import annotations

from .. import __version__
from ..ir import Program


def names_tuple(names: list[str]) -> str:
    """Python source of a tuple of names: (), (a,), (a, b)."""
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


def interface(program: Program, backend: str) -> dict:
    """Template context for templates/common/_interface.py.j2 and the build() namespace."""
    return {
        "version": __version__,
        "backend": backend,
        "program": program,
        "output": program.output,
        "params": [(p.name, p.shape, p.offset, p.init) for p in program.params],
        "optimizers": [(o.name, o.state, dict(o.defaults)) for o in program.optimizers.values()],
        "state_names": sorted({s for o in program.optimizers.values() for s in o.state}),
        "probes": [(p.layer, p.activation, p.buffer, p.kind) for p in program.probes],
        "probe_buffers": names_tuple([p.buffer for p in program.probes]),
    }
