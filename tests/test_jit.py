"""The JIT cache: content-hash keys, reuse, atomic files, corrupted entries rebuilt."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from nncompile import jit, nn


def _model(units: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Dense(units), nn.Tanh(), nn.Dense(1), input_dim=2, loss=nn.MSE(), name="cached")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NNCOMPILE_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_second_compile_reuses_the_file_without_deriving(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = nc.compile(_model())
    files = list(cache.glob("*.py"))
    assert len(files) == 1 and first.source_path == files[0]
    import nncompile.derive as derive_module

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not derive again")

    monkeypatch.setattr(derive_module, "derive", fail)
    second = nc.compile(_model())
    assert second.source_path == first.source_path and list(cache.glob("*.py")) == files
    assert "def loss_and_grad" in second.source


def test_different_models_and_dtypes_get_different_entries(cache: Path) -> None:
    paths = {nc.compile(_model(3)).source_path, nc.compile(_model(4)).source_path,
             nc.compile(_model(3), dtype="float32").source_path}
    assert len(paths) == 3


def test_corrupted_entry_is_rebuilt_not_imported(cache: Path) -> None:
    prog = nc.compile(_model())
    path = prog.source_path
    text = path.read_text()
    path.write_text(text.replace("np.tanh(", "np.sinh(", 1))  # same length, wrong code
    rebuilt = nc.compile(_model())
    assert "np.sinh(" not in rebuilt.source and rebuilt.source_path.read_text() == text
    path.write_text(text[: len(text) // 2])  # truncated, as by a crash mid-write
    again = nc.compile(_model())
    params = again.init_params(0)
    loss, _ = again.loss_and_grad(params, np.ones((2, 2)), np.ones(2))
    assert np.isfinite(loss)


def test_atomic_write_leaves_no_temporaries(cache: Path) -> None:
    (cache / "a").mkdir()
    jit.write_atomic(cache / "a" / "b.py", "x = 1\n")
    assert (cache / "a" / "b.py").read_text() == "x = 1\n"
    assert [p.name for p in (cache / "a").iterdir()] == ["b.py"]


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NNCOMPILE_CACHE_DIR", str(tmp_path / "x"))
    assert jit.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("NNCOMPILE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jit.cache_dir() == tmp_path / "xdg" / "nncompile"


def test_tracebacks_point_into_the_generated_file(cache: Path) -> None:
    prog = nc.compile(_model())
    ws = prog.engine(prog.init_params(0)).workspace(2)
    assert ws.forward.__code__.co_filename == str(prog.source_path)
    assert os.path.exists(ws.forward.__code__.co_filename)
