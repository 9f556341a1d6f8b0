"""Content-hashed cache of generated modules: write once, atomically; verify, then import.

The key is a hash of everything that determines the source (model description, dtype,
backend, backend options, nncompile and rules versions, template texts), so a second
compile of the same model skips derivation entirely.  Each file's first line holds the
SHA-256 of the rest: a half-written or corrupted entry fails the check and is rebuilt,
never imported.  Files are written to a temporary name in the same folder and renamed,
so concurrent compiles of one model race harmlessly.
"""
from __future__ import annotations

import hashlib
import os
import sys
import types
from pathlib import Path
from typing import Callable

from .checkpoint import write_bytes_atomic  # the one atomic writer (embedded in scripts too)

HEADER = "# nncompile-sha256: "


def cache_dir() -> Path:
    """``$NNCOMPILE_CACHE_DIR``, else ``$XDG_CACHE_HOME/nncompile``, else ``~/.cache/nncompile``."""
    explicit = os.environ.get("NNCOMPILE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nncompile"


def key_of(*parts: str) -> str:
    """Deterministic cache key of the given descriptions."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def _verified(path: Path) -> str | None:
    """The file's text if its header matches its body, else None."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    first, _, body = text.partition("\n")
    if not first.startswith(HEADER) or first[len(HEADER):] != _digest(body):
        return None
    return text


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and a rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def load(key: str, render: Callable[[], str], prefix: str = "nncompile_gen") -> tuple[types.ModuleType, Path]:
    """The module for `key`: from the cache when a verified entry exists, else rendered now."""
    path = cache_dir() / f"{prefix}_{key[:32]}.py"
    text = _verified(path)
    if text is None:
        body = render()
        text = f"{HEADER}{_digest(body)}\n{body}"
        write_atomic(path, text)
    return _import(path, text, f"{prefix}_{key[:32]}"), path


def _import(path: Path, text: str, name: str) -> types.ModuleType:
    """Execute verified text as a module whose code points at `path` (for tracebacks)."""
    module = types.ModuleType(name)
    module.__file__ = str(path)
    code = compile(text, str(path), "exec")
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
