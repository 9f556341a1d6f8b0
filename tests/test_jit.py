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


def test_atomic_write_replaces_the_file_whole_or_not_at_all(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new text goes to a temporary file that is renamed over the old one: if the write or the
    rename fails, the old file is intact and no temporary is left; readers never see a mixture."""
    target = cache / "a" / "b.py"
    (cache / "a").mkdir()
    jit.write_atomic(target, "x = 1\n")
    inode = target.stat().st_ino
    jit.write_atomic(target, "x = 2\n")
    assert target.read_text() == "x = 2\n" and [p.name for p in (cache / "a").iterdir()] == ["b.py"]
    assert target.stat().st_ino != inode, "the file was rewritten in place, not replaced by a rename"

    def refuse(*args: object) -> None:
        raise OSError(28, "No space left on device")

    for step in ("fsync", "replace"):
        with monkeypatch.context() as patch:
            patch.setattr(os, step, refuse)
            with pytest.raises(OSError):
                jit.write_atomic(target, "x = 3; " * 1000)
        assert target.read_text() == "x = 2\n", f"a failed {step} damaged the old file"
        assert [p.name for p in (cache / "a").iterdir()] == ["b.py"], f"a failed {step} left a temporary"


def test_outputs_follow_the_umask_and_the_cache_stays_private(cache: Path, tmp_path: Path) -> None:
    from nncompile.runtime.checkpoint import save_npz_atomic, write_bytes_atomic
    old = os.umask(0o022)
    try:
        save_npz_atomic(str(tmp_path / "w.npz"), {"W": np.zeros(2)})
        write_bytes_atomic(str(tmp_path / "plot.png"), b"png")
        os.umask(0o077)
        write_bytes_atomic(str(tmp_path / "private.png"), b"png")
    finally:
        os.umask(old)
    assert (tmp_path / "w.npz").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "plot.png").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.png").stat().st_mode & 0o777 == 0o600
    entry = nc.compile(_model()).source_path
    assert entry.stat().st_mode & 0o777 == 0o600 and entry.parent.stat().st_mode & 0o777 == 0o700


def test_an_edited_template_is_a_different_cache_entry(cache: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The key covers the templates' text: after a template edit the module is rendered anew, not reused."""
    import shutil

    from nncompile.backends import templating
    first = nc.compile(_model())
    copy = tmp_path / "templates"
    shutil.copytree(templating.template_dir(), copy)
    body = copy / "numpy" / "_body.py.j2"
    body.write_text(body.read_text() + "\n# an edited template\n")
    monkeypatch.setattr(templating, "template_dir", lambda: copy)
    for cached in (templating.environment, templating.templates_digest):
        if hasattr(cached, "cache_clear"):
            monkeypatch.setattr(templating, cached.__name__, cached.__wrapped__)
    second = nc.compile(_model())
    assert second.source_path != first.source_path and "# an edited template" in second.source


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
