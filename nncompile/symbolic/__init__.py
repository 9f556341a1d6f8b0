"""The SymPy knowledge every later stage shares.

`parse` turns formula text into SymPy through a whitelist (never `eval`); `functions`
holds the stable functions (sigmoid, softplus) and the stability rewrites; `rules` is THE
registry of activations, losses, regularisers and optimizers; `calculus` finds local
derivatives in their cheapest form; `kinks` the non-differentiable points and the value
used there; `notation` the named arrays and matrix operations of the derivation.
"""
