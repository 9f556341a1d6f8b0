"""Standalone scripts run with NumPy alone; the committed generated/ files are current."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nncompile.cli import load_model
from nncompile.generate import standalone

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("regenerate", ROOT / "scripts" / "regenerate.py")
regenerate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regenerate)

# Runs a script in a Python that cannot import nncompile (the import itself is blocked).
BLOCKER = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "nncompile" or name.startswith("nncompile."):
            raise ImportError("nncompile is not installed here")
sys.meta_path.insert(0, Block())
try:
    import nncompile
except ImportError:
    pass
else:
    raise SystemExit("nncompile must not be importable")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run_script(path: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-c", BLOCKER, str(path), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_generated_folder_is_byte_identical_to_the_generator() -> None:
    for path, text in regenerate.expected().items():
        assert path.is_file(), f"{path.name} missing: run python scripts/regenerate.py"
        assert path.read_bytes() == text.encode("utf-8"), f"{path.name} is stale: run python scripts/regenerate.py"


def test_generation_is_deterministic_across_processes(tmp_path: Path) -> None:
    code = ("import sys; from nncompile.cli import load_model; from nncompile.generate import standalone;"
            "sys.stdout.write(standalone(load_model(sys.argv[1])[0], filename='x.py'))")
    outputs = {subprocess.run([sys.executable, "-c", code, str(ROOT / "examples" / "mish.py")], capture_output=True,
                              text=True, check=True, env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin",
                                                          "NNCOMPILE_CACHE_DIR": str(tmp_path)}).stdout
               for seed in ("0", "1", "12345")}
    assert len(outputs) == 1


def test_standalone_script_trains_xor_without_nncompile(tmp_path: Path) -> None:
    script = tmp_path / "train_xor.py"
    model, _ = load_model(str(ROOT / "examples" / "xor.py"))
    script.write_text(standalone(model, filename=script.name))
    np.savez(tmp_path / "xor.npz", X=np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float), y=np.array([0, 1, 1, 0]))
    done = _run_script(script, "--data", "xor.npz", "--mode", "gd", "--epochs", "2000", "--lr", "1.0",
                       "--save", "w.npz", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "binary accuracy 100.00%" in done.stdout
    weights = np.load(tmp_path / "w.npz")
    assert sorted(weights.files) == ["dense1.W", "dense1.b", "dense2.W", "dense2.b"]


@pytest.mark.parametrize("mode,optimizer", [("minibatch", "adam"), ("sgd", "momentum"), ("gd", "rmsprop")])
def test_committed_digits_script_runs_every_mode(tmp_path: Path, mode: str, optimizer: str) -> None:
    from nncompile.data import digits
    ds = digits()
    np.savez(tmp_path / "d.npz", X=ds.X[:300], y=ds.y[:300])
    done = _run_script(ROOT / "generated" / "digits_numpy.py", "--data", "d.npz", "--mode", mode, "--optimizer",
                       optimizer, "--epochs", "3", "--lr", "0.01", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("epoch") >= 4 and "final:" in done.stdout


def test_script_reports_bad_data_in_one_line(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", X=np.zeros((3, 5)), y=np.zeros(3))
    done = _run_script(ROOT / "generated" / "xor_numpy.py", "--data", "bad.npz", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "(N, 2)" in done.stderr
