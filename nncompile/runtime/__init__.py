"""The NumPy-only training runtime that generated scripts embed verbatim.

`engine` (initialisation, data checks, memory, the engine over a compiled module), `loop`
(the epoch loop, schedules, early stopping), `checkpoint` (atomic files), `diagnostics`,
`plot` and `script` (the training flags and a script's command line).  These modules
import only the standard library, NumPy and each other; a test holds them to it.
"""
