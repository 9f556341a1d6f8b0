"""`nncompile generate`: a standalone training program for a model, needing only NumPy (or CuPy).

The script is the backend's rendering of the Program IR plus the text of the NumPy-only
runtime modules (`RUNTIME_MODULES`: initialisation, batching, the epoch loop, data-parallel
training, checkpoints, diagnostics, plots and the command line), embedded verbatim; it
imports nothing from nncompile.  Output is deterministic: the same model gives the same
bytes on every run and machine.
"""
from __future__ import annotations

import argparse
import ast
import math
import re
from pathlib import Path
from typing import Mapping, Sequence

from . import backends, runtime
from .derive.backprop import derive
from .dsl.models import Sequential
from .errors import ModelError
from .runtime import script
from .runtime.engine import TrainingError
from .symbolic.rules import Optimizer

#: NumPy-only modules a script embeds, in this order (later ones use names of earlier ones).
RUNTIME_MODULES = ("engine.py", "batches.py", "loop.py", "distributed.py", "checkpoint.py", "diagnostics.py", "plot.py",
                   "script.py")
_RULE = "# " + "-" * 82


def runtime_source() -> str:
    """The runtime modules' text, each under a banner naming its file, as embedded in scripts."""
    folder = Path(runtime.__file__).parent
    parts = []
    for name in RUNTIME_MODULES:
        text = (folder / name).read_text(encoding="utf-8").rstrip("\n")
        parts.append(f"{_RULE}\n# nncompile/runtime/{name}, embedded verbatim.\n{_RULE}\n{text}\n")
    return "\n\n".join(parts)


def standalone(model: Sequential, backend: str = "numpy", dtype: str = "float64",
               filename: str = "train.py", optimizers: Sequence[Optimizer] = (),
               training: Mapping[str, object] | None = None) -> str:
    """Source of a standalone training script for `model` (with any extra optimizer rules).

    `training` (a model file's `training` dict) becomes the script's defaults; a custom
    optimizer rule in it is compiled in and made the default optimizer.
    """
    be = backends.get(backend)
    training = dict(training or {})
    rule = training.get("optimizer")
    if isinstance(rule, Optimizer):
        optimizers = (*optimizers, rule)
        training["optimizer"] = rule.name
    program = derive(model, dtype, optimizers).program
    return be.render_script(program, runtime_source() + training_source(training), filename)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def training_source(training: Mapping[str, object]) -> str:
    """The `training` defaults as a checked Python literal, `TRAINING = {...}`, for a script.

    Keys are checked against the known settings and values must be numbers, None, plain
    names, number pairs (betas) or a {name: number} dict (hyper): nothing a user gives is
    pasted into the script unless it reads back as the same literal.
    """
    if not training:
        return ""
    try:
        script.settings_from(argparse.Namespace(), training)
    except TrainingError as exc:
        raise ModelError(f"training: {exc}") from None
    for key, value in training.items():
        if not _plain(value):
            raise ModelError(f"training[{key!r}] must be a number, a name, a pair of numbers or a dict of numbers, "
                             f"got {value!r}"[:300])
    items = {key: tuple(value) if isinstance(value, list) else value for key, value in sorted(training.items())}
    literal = repr(items)
    if ast.literal_eval(literal) != items:  # cannot happen for the values _plain admits; never paste what differs
        raise ModelError("training: the settings do not read back as the same Python literal")
    return ("\n\n# The model file's training dict: the defaults of this script (flags override them).\n"
            f"TRAINING = {literal}\n")


def _plain(value: object) -> bool:
    if value is None or isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**63):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return bool(_NAME.match(value)) and value.isascii()
    if isinstance(value, (tuple, list)):
        return len(value) <= 8 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and _plain(v)
                                       for v in value)
    if isinstance(value, dict):
        return len(value) <= 64 and all(isinstance(k, str) and _plain(k) and isinstance(v, (int, float))
                                        and not isinstance(v, bool) and _plain(v) for k, v in value.items())
    return False
