"""Functional models through the command line and in standalone scripts: derive, graph, check, generate, run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from nncompile.cli import main
from nncompile.generate import standalone

from test_generate import _run_script

ROOT = Path(__file__).resolve().parent.parent
RESIDUAL = '''
from nncompile import nn
x = nn.Input(2)
h = nn.Tanh()(nn.Dense(8)(x))
r = nn.Tanh()(nn.Dense(8)(h))
model = nn.Model(x, nn.Dense(2)(h + r), loss=nn.SoftmaxCrossEntropy(), name="skip")
training = {"epochs": 3, "batch_size": 16, "lr": 0.2}
'''


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "skip.py"
    path.write_text(RESIDUAL)
    return path


def test_derive_graph_and_check_work_on_a_graph(model_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["derive", str(model_file), "--format", "text"]) == 0
    text = capsys.readouterr().out
    assert "[add1: a1 + a2]" in text and "da1 = da1_via_h1 + da1_via_z2" in text
    assert main(["graph", str(model_file), "--dot"]) == 0
    dot = capsys.readouterr().out
    assert '"a1" -> op' in dot and dot.count('"a1" -> op') >= 3   # the fan-out: read by dense2, add1 and tanh'
    assert "forward: h1 = a1 + a2" in dot and "paths meet at a1" in dot
    assert main(["derive", str(model_file), "--scalar"]) == 2
    assert "model skip has 114 parameters: read the matrix form" in capsys.readouterr().err
    assert main(["check", str(model_file)]) == 0
    assert "all gradients agree" in capsys.readouterr().out
    assert main(["derive", str(ROOT / "examples" / "resmlp.py"), "--scalar"]) == 2
    assert "has layernorm1 (layernorm): read the matrix form" in capsys.readouterr().err


def test_run_trains_a_graph_from_the_command_line(model_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(model_file), "--data", "moons", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["history"]) == 3 and report["summary"]["test_accuracy"] > 0.5


REGULARIZED = ROOT / "examples" / "digits_regularized.py"


@pytest.mark.parametrize("which", ["skip", "regularized"])
def test_standalone_script_of_a_graph_trains_as_nc_train(model_file: Path, tmp_path: Path, which: str) -> None:
    """The same losses and weights (running statistics included) as nc.train; dropout masks from --seed."""
    model, _ = nc.load_model(model_file if which == "skip" else REGULARIZED)
    script = tmp_path / "train_skip.py"
    script.write_text(standalone(model, filename=script.name))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, model.input_dim))
    y = rng.integers(0, model.output_dim, size=40)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    done = _run_script(script, "--data", "d.npz", "--epochs", "3", "--batch-size", "8", "--lr", "0.3", "--json",
                       "--save", "w.npz", "--seed", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    history = json.loads(done.stdout)["history"]
    prog = nc.compile(model)
    expected = nc.train(prog, X, y, epochs=3, batch_size=8, lr=0.3, seed=4)
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in expected.history], rel=1e-12)
    saved = np.load(tmp_path / "w.npz")
    for name, value in expected.params.items():
        np.testing.assert_allclose(saved[name], value, rtol=1e-12)


def test_diagnostics_watch_every_hidden_activation_of_a_graph() -> None:
    from nncompile import nn
    x = nn.Input(3)
    h = nn.Tanh()(nn.Dense(4)(x))
    s = nn.ReLU()(h + nn.Tanh()(nn.Dense(4)(h)))
    prog = nc.compile(nn.Model(x, nn.Dense(2)(s), loss=nn.MSE(), name="watched"))
    assert [probe[:2] for probe in prog.module.PROBES] == [("dense1", "tanh"), ("dense2", "tanh"), ("add1", "relu")]
    rng = np.random.default_rng(0)
    result = nc.train(prog, rng.normal(size=(30, 3)), rng.normal(size=(30, 2)), epochs=2, diagnostics=True)
    report = result.history[-1]["diagnostics"]
    assert report["add1"]["activation"] == "relu" and "grad_norm" not in report["add1"]
    assert report["dense1"]["activation"] == "tanh" and report["dense1"]["grad_norm"] > 0
