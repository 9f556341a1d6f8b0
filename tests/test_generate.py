"""Standalone scripts run with NumPy alone; the committed generated/ files are current.

The scripts run here are generated afresh from the current code (the `script` fixture), never the
committed generated/ copies, so a change of the runtime or the templates is tested before anyone
regenerates."""
from __future__ import annotations

import importlib.util
import json
import re
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


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory):
    """script(example) -> a fresh standalone NumPy script for examples/<example>.py, with its training dict."""
    folder = tmp_path_factory.mktemp("scripts")
    made: dict[str, Path] = {}

    def make(example: str) -> Path:
        if example not in made:
            model, training = load_model(str(ROOT / "examples" / f"{example}.py"))
            made[example] = folder / f"train_{example}.py"
            made[example].write_text(standalone(model, filename=made[example].name, training=training))
        return made[example]
    return make


def _xor_npz(folder: Path) -> str:
    np.savez(folder / "xor.npz", X=np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float), y=np.array([0, 1, 1, 0]))
    return "xor.npz"


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
    done = _run_script(script, "--data", _xor_npz(tmp_path), "--mode", "gd", "--epochs", "2000", "--lr", "1.0",
                       "--save", "w.npz", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "binary accuracy 100.00%" in done.stdout
    _assert_saved_weights_are_the_trained_ones(script, tmp_path / "w.npz", tmp_path)


def _assert_saved_weights_are_the_trained_ones(script: Path, weights: Path, cwd: Path) -> None:
    """The saved file holds the parameters (not gradients or the start): nncompile's forward pass on
    them classifies XOR, and they are not the initial weights."""
    import nncompile as nc
    prog = nc.compile(load_model(str(ROOT / "examples" / "xor.py"))[0])
    with np.load(weights) as saved:
        params = {k: saved[k] for k in saved.files}
    assert sorted(params) == ["dense1.W", "dense1.b", "dense2.W", "dense2.b"]
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    np.testing.assert_array_equal(prog.forward(params, X)[:, 0] > 0.5, [False, True, True, False])
    assert prog.evaluate(params, X, np.array([0, 1, 1, 0]))["loss"] < 0.05
    assert not np.array_equal(params["dense1.W"], prog.init_params(0)["dense1.W"])


def test_script_defaults_are_the_model_files_training_dict(script, tmp_path: Path) -> None:
    """examples/xor.py says gd, 2000 epochs, lr 1.0: the script trains so with no flags at all."""
    path = script("xor")
    assert "TRAINING = {'epochs': 2000, 'lr': 1.0, 'mode': 'gd'}" in path.read_text()
    done = _run_script(path, "--data", _xor_npz(tmp_path), "--save", "w.npz", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["history"]) == 2000 and {h["updates"] for h in out["history"]} == {1}
    assert out["history"][0]["lr"] == 1.0 and out["summary"]["train_binary_accuracy"] == 1.0
    _assert_saved_weights_are_the_trained_ones(path, tmp_path / "w.npz", tmp_path)
    flags = _run_script(path, "--data", "xor.npz", "--epochs", "3", "--json", cwd=tmp_path)  # flags still win
    assert flags.returncode == 0 and len(json.loads(flags.stdout)["history"]) == 3
    assert "epochs=2000" in _run_script(path, "--help", cwd=tmp_path).stdout


def test_script_progress_is_a_line_every_few_epochs_in_a_log(script, tmp_path: Path) -> None:
    done = _run_script(script("xor"), "--data", _xor_npz(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    epochs = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("epoch ")]
    assert epochs == [1, *range(100, 2001, 100)]
    assert done.stdout.startswith("final: epoch 2000") and done.stdout.count("\n") == 1


def test_script_checks_its_outputs_before_training(script, tmp_path: Path) -> None:
    path = script("xor")
    done = _run_script(path, "--data", _xor_npz(tmp_path), "--checkpoint", "ck.npz", "--save", "no/dir/w.npz",
                       cwd=tmp_path)
    assert done.returncode == 2 and "--save no/dir/w.npz: the folder" in done.stderr
    assert not (tmp_path / "ck.npz").exists() and "epoch" not in done.stderr


def _with_fake_matplotlib(tmp_path: Path, figure_py: str | None) -> list[str]:
    """A python command line whose `matplotlib` is a stand-in: missing (None) or with this figure.py."""
    fake = tmp_path / "fake_mpl"
    (fake / "matplotlib").mkdir(parents=True, exist_ok=True)
    if figure_py is None:
        (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    else:
        (fake / "matplotlib" / "__init__.py").write_text("")
        (fake / "matplotlib" / "figure.py").write_text(figure_py)
        (fake / "matplotlib" / "ticker.py").write_text("class MaxNLocator:\n    def __init__(self, **kw): pass\n")
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(fake)!r});" + BLOCKER]


def test_script_refuses_plot_without_matplotlib_before_training(script, tmp_path: Path) -> None:
    done = subprocess.run([*_with_fake_matplotlib(tmp_path, None), str(script("xor")), "--data", _xor_npz(tmp_path),
                           "--plot", "c.png", "--save", "w.npz"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "pip install 'nncompile[plot]'" in done.stderr
    assert "epoch" not in done.stderr and not (tmp_path / "w.npz").exists()


def test_script_keeps_the_weights_when_the_plot_fails_at_the_end(script, tmp_path: Path) -> None:
    broken = "class Figure:\n    def __init__(self, *a, **kw):\n        raise OSError('the disk is full')\n"
    done = subprocess.run([*_with_fake_matplotlib(tmp_path, broken), str(script("xor")), "--data",
                           _xor_npz(tmp_path), "--plot", "c.png", "--save", "w.npz", "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "the disk is full" in done.stderr and "saved weights to w.npz" in done.stderr
    _assert_saved_weights_are_the_trained_ones(script("xor"), tmp_path / "w.npz", tmp_path)


def test_a_diverging_script_says_so_in_json_and_keeps_the_last_good_weights(script, tmp_path: Path) -> None:
    data = _digits_npz(tmp_path)
    done = _run_script(script("digits"), "--data", data, "--lr", "1e6", "--epochs", "5", "--json", "--save", "w.npz",
                       cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "(try 0.1)" in done.stderr
    out = json.loads(done.stdout)
    assert out["history"] == [] and "the loss grew from" in out["error"] and (tmp_path / "w.npz").exists()


def test_a_builtin_name_as_data_says_how_to_make_the_file(script, tmp_path: Path) -> None:
    done = _run_script(script("xor"), "--data", "xor", cwd=tmp_path)
    assert done.returncode == 2 and "nc.data.save_npz('xor', 'xor.npz')" in done.stderr
    made = subprocess.run([sys.executable, "-c", "import nncompile as nc; nc.data.save_npz('xor', 'xor.npz')"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    again = _run_script(script("xor"), "--data", "xor.npz", "--quiet", cwd=tmp_path)
    assert again.returncode == 0 and "binary accuracy 100.00%" in again.stdout


@pytest.mark.parametrize("mode,optimizer", [("minibatch", "adam"), ("sgd", "momentum"), ("gd", "rmsprop")])
def test_digits_script_runs_every_mode(script, tmp_path: Path, mode: str, optimizer: str) -> None:
    data = _digits_npz(tmp_path)
    done = _run_script(script("digits"), "--data", data, "--mode", mode, "--optimizer", optimizer, "--epochs", "3",
                       "--lr", "0.01", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("epoch ") == 3 and "final:" in done.stdout


def test_script_reports_bad_data_in_one_line(script, tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", X=np.zeros((3, 5)), y=np.zeros(3))
    done = _run_script(script("xor"), "--data", "bad.npz", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "(N, 2)" in done.stderr


def _digits_npz(tmp_path: Path, rows: int = 300) -> str:
    from nncompile.data import digits
    ds = digits()
    np.savez(tmp_path / "d.npz", X=ds.X[:rows], y=ds.y[:rows])
    return "d.npz"


def test_script_schedules_and_early_stopping_as_json(script, tmp_path: Path) -> None:
    import math
    data = _digits_npz(tmp_path)
    done = _run_script(script("digits"), "--data", data, "--epochs", "40", "--schedule",
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


def test_script_resumes_a_checkpoint_bit_identically(script, tmp_path: Path) -> None:
    data = _digits_npz(tmp_path)
    script = script("digits")
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


@pytest.mark.parametrize("training,message", [
    ({"mode": "gd\nimport os"}, "training['mode'] must be a number, a name"),
    ({"lr": float("nan")}, "training['lr'] must be"),
    ({"hyper": {"mu": "0.9); import os; ("}}, "training['hyper'] must be"),
    ({"epoch": 5}, "unknown training setting 'epoch'"),
    ({"betas": [0.9, object()]}, "training['betas'] must be"),
])
def test_a_training_dict_reaches_a_script_only_as_checked_literals(training: dict, message: str) -> None:
    import nncompile as nc
    model, _ = load_model(str(ROOT / "examples" / "xor.py"))
    with pytest.raises(nc.ModelError, match=re.escape(message)):
        standalone(model, filename="t.py", training=training)
    text = standalone(model, filename="t.py", training={"mode": "gd", "betas": [0.5, 0.6], "hyper": {"mu": 0.5}})
    assert "TRAINING = {'betas': (0.5, 0.6), 'hyper': {'mu': 0.5}, 'mode': 'gd'}" in text
