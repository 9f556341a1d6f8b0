"""Model files: a Python file that defines `model` (and optionally a `training` dict) at module level.

A model file is Python and runs as code, like any script a person runs; what it defines
is checked here, and any failure in it becomes one line naming the file and line.
"""
from __future__ import annotations

import runpy
from pathlib import Path

from ..errors import ModelError, NncompileError
from .models import Model


def load_model(path: str | Path) -> tuple[Model, dict]:
    """Run a model file and return its `model` and its `training` defaults (empty when absent)."""
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        namespace = runpy.run_path(str(file), run_name="__nncompile_model__")
    except NncompileError as exc:
        raise ModelError(f"{file.name}: {exc}") from None
    except SyntaxError as exc:
        raise ModelError(f"{file.name}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # the model file's own code failed
        line = _user_line(exc, file)
        raise ModelError(f"{file.name}{line}: {type(exc).__name__}: {exc}") from None
    model = namespace.get("model")
    if model is None:
        raise ModelError(f"{file.name} does not define `model` (assign an nn.Sequential or nn.Model to a variable "
                         "named model)")
    if not isinstance(model, Model):
        raise ModelError(f"{file.name}: `model` is a {type(model).__name__}, not an nn.Sequential or nn.Model")
    training = namespace.get("training", {})
    return model, training if isinstance(training, dict) else {}


def _user_line(exc: BaseException, file: Path) -> str:
    """":LINE" of the deepest traceback frame in the model file itself, or "" if none."""
    tb = exc.__traceback__
    line = ""
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == file.resolve():
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line
