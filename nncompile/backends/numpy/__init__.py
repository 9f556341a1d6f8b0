"""The NumPy backend: the Program IR as straight-line NumPy on preallocated buffers.

`lowering` plans the buffers (bias folding, aliasing, one flat parameter vector) and
lowers each op; `ufunc_printer` prints elementwise expressions as in-place ufunc calls,
`reductions` sums as BLAS calls, `scratch` keeps the scratch buffers and hoisted scalars.
"""
from .lowering import NAME, context, plan_layout, render_module, render_script, source_map

__all__ = ["NAME", "context", "plan_layout", "render_module", "render_script", "source_map"]
