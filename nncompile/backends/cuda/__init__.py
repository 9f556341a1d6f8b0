"""The CUDA backend: the Program IR as fused CUDA kernels and cuBLAS calls, driven by CuPy.

`lowering` orders the launches, `fusion` groups elementwise statements into kernels,
`kernels` writes their C with `cprinter` (SymPy's C99 printer for CUDA), and
`cupy_support` is the NumPy-only glue embedded in every generated CUDA program.
"""
from .lowering import NAME, context, render_module, render_script, render_source, require, support_source

__all__ = ["NAME", "context", "render_module", "render_script", "render_source", "require", "support_source"]
