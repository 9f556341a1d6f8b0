"""Standalone scripts run with NumPy alone; the committed generated/ files are current."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nncompile import load_model
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
    code = ("import sys; from nncompile import load_model; from nncompile.generate import standalone;"
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


def _digits_npz(tmp_path: Path, rows: int = 300) -> str:
    from nncompile.data import digits
    ds = digits()
    np.savez(tmp_path / "d.npz", X=ds.X[:rows], y=ds.y[:rows])
    return "d.npz"


def test_script_schedules_and_early_stopping_as_json(tmp_path: Path) -> None:
    import json
    import math
    data = _digits_npz(tmp_path)
    done = _run_script(ROOT / "generated" / "digits_numpy.py", "--data", data, "--epochs", "40", "--schedule",
                       "cosine", "--lr", "0.5", "--optimizer", "nesterov", "--momentum", "0.5", "--val-split", "0.3",
                       "--patience", "3", "--min-delta", "0.05", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    history, summary = out["history"], out["summary"]
    assert [h["lr"] for h in history] == [0.25 * (1 + math.cos(math.pi * e / 40)) for e in range(len(history))]
    assert summary["stopped_early"] and len(history) == summary["best_epoch"] + 3 < 40
    best = history[summary["best_epoch"] - 1]["val_loss"]
    assert summary["val_loss"] == best  # the best weights came back (best: improved by at least min_delta)
    assert all(h["val_loss"] > best - 0.05 for h in history[summary["best_epoch"]:])
    assert "diagnostics" in history[0]


def test_script_resumes_a_checkpoint_bit_identically(tmp_path: Path) -> None:
    data = _digits_npz(tmp_path)
    script = ROOT / "generated" / "digits_numpy.py"
    flags = ["--data", data, "--optimizer", "adam", "--lr", "0.01", "--quiet"]
    first = _run_script(script, *flags, "--epochs", "3", "--checkpoint", "ck.npz", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = _run_script(script, *flags, "--epochs", "6", "--resume", "ck.npz", "--save", "a.npz", cwd=tmp_path)
    straight = _run_script(script, *flags, "--epochs", "6", "--save", "b.npz", cwd=tmp_path)
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr + straight.stderr
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert all(a[k].tobytes() == b[k].tobytes() for k in b.files)
    other = _run_script(script, *flags, "--lr", "0.02", "--epochs", "6", "--resume", "ck.npz", cwd=tmp_path)
    assert other.returncode == 2 and "lr=0.01" in other.stderr and "Traceback" not in other.stderr


def test_script_runs_a_custom_optimizer_and_plots(tmp_path: Path) -> None:
    import importlib.util
    import nncompile as nc
    model, _ = load_model(str(ROOT / "examples" / "xor.py"))
    rule = nc.Optimizer("signsgd", {"p": "p - lr*sign(g)"})
    script = tmp_path / "train_xor.py"
    script.write_text(standalone(model, filename=script.name, optimizers=[rule]))
    np.savez(tmp_path / "xor.npz", X=np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float), y=np.array([0, 1, 1, 0]))
    plot = ["--plot", "curves.png"] if importlib.util.find_spec("matplotlib") else []
    done = _run_script(script, "--data", "xor.npz", "--mode", "gd", "--epochs", "400", "--lr", "0.01",
                       "--optimizer", "signsgd", "--quiet", *plot, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "binary accuracy 100.00%" in done.stdout
    if plot:
        assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
