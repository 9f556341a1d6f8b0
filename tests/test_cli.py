"""The command line: each subcommand works, and mistakes end in one line and a non-zero exit."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from nncompile.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("nncompile")
    cmd = [exe] if exe else [sys.executable, "-m", "nncompile.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_run_digits_reaches_95_percent_held_out() -> None:
    done = _cli("run", str(EXAMPLES / "digits.py"), "--data", "digits", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)["summary"]
    assert summary["test_rows"] == 359 and summary["test_accuracy"] >= 0.95


def test_run_saves_weights_and_prints_a_summary_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(EXAMPLES / "xor.py"), "--data", "xor", "--quiet", "--save", str(tmp_path / "w.npz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "final weights (epoch 2000)" and lines[1].split() == ["rows", "loss", "binary", "accuracy"]
    assert lines[2].split()[0] == "train" and lines[2].endswith("100.00%")
    assert "2000 epochs, 2000 updates" in lines[3] and "examples/s" in lines[3]
    assert sorted(np.load(tmp_path / "w.npz").files) == ["dense1.W", "dense1.b", "dense2.W", "dense2.b"]
    prog = nc.compile(nc.load_model(str(EXAMPLES / "xor.py"))[0])   # the file holds the trained weights
    with np.load(tmp_path / "w.npz") as saved:
        scores = prog.evaluate(dict(saved), *nc.data.load("xor"))
    assert scores["binary_accuracy"] == 1.0 and f"{scores['loss']:.4f}" == lines[2].split()[2]


def test_the_table_says_whose_weights_it_scores(capsys: pytest.CaptureFixture) -> None:
    """--val-split alone keeps the last epoch's weights; with --patience the best epoch's come back.
    (--min-delta 10 makes epoch 1 the best: no later epoch improves by 10.)"""
    flags = ["run", str(EXAMPLES / "digits.py"), "--data", "digits", "--quiet", "--epochs", "4", "--val-split", "0.1",
             "--min-delta", "10"]
    assert main([*flags, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["best_epoch"] == 1
    assert report["summary"]["val_loss"] == pytest.approx(report["history"][-1]["val_loss"], rel=1e-12)
    assert main(flags) == 0
    assert capsys.readouterr().out.splitlines()[0] == "final weights (epoch 4; the best validation loss was at epoch 1)"
    assert main([*flags, "--patience", "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["val_loss"] == pytest.approx(report["history"][0]["val_loss"], rel=1e-12)
    assert main([*flags, "--patience", "10"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "weights of epoch 1 (best validation loss of 4 epochs)"


@pytest.mark.parametrize("example", ["xor", "digits", "mish"])
def test_check_passes_on_examples(example: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(EXAMPLES / f"{example}.py")]) == 0
    out = capsys.readouterr().out
    assert "agree with finite differences" in out
    shown = [float(line.split("max relative error")[1].split()[0]) for line in out.splitlines()
             if "relative error" in line]
    # the errors shown are measured (finite-difference round-off included), not zeroed by the tolerance
    assert shown and max(shown) > 0 and max(shown) < 1e-6


def test_derive_graph_generate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["derive", str(EXAMPLES / "digits.py")]) == 0
    text = capsys.readouterr().out
    assert "dL/dW2 = a1.T @ dz2" in text and "1 - a1**2" in text
    assert main(["graph", str(EXAMPLES / "digits.py")]) == 0
    assert "LinearGrad" in capsys.readouterr().out
    assert main(["graph", str(EXAMPLES / "digits.py"), "--dot"]) == 0
    assert capsys.readouterr().out.startswith('digraph "digits_mlp"')
    assert main(["generate", str(EXAMPLES / "xor.py"), "--backend", "numpy", "-o", str(tmp_path / "x.py")]) == 0
    assert (tmp_path / "x.py").read_text().startswith("#!/usr/bin/env python3")


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("args,message", [
    (["run", "missing.py", "--data", "xor"], "does not exist"),
    (["run", "{nomodel}", "--data", "xor"], "does not define `model`"),
    (["run", "{broken}", "--data", "xor"], "ZeroDivisionError"),
    (["run", "{xor}", "--data", "mnist"], "unknown data set 'mnist'"),
    (["run", "{xor}", "--data", "digits"], "(N, 2)"),
    (["run", "{xor}", "--data", "{nan_csv}"], "NaN"),
    (["run", "{xor}", "--data", "{ragged_csv}"], "row 2 has 2 columns"),
    (["run", "{digits}", "--data", "{labels_npz}"], "label 12 is out of range"),
    (["run", "{xor}", "--data", "xor", "--optimizer", "lbfgs"], "unknown optimizer"),
    (["run", "{badlayer}", "--data", "xor"], "in_features"),
])
def test_errors_are_one_line_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    files = {
        "xor": str(EXAMPLES / "xor.py"), "digits": str(EXAMPLES / "digits.py"),
        "nomodel": _write(tmp_path, "nomodel.py", "x = 1\n"),
        "broken": _write(tmp_path, "broken.py", "from nncompile import nn\nmodel = 1/0\n"),
        "badlayer": _write(tmp_path, "bad.py", "from nncompile import nn\nmodel = nn.Sequential(nn.Dense(3), "
                                                "nn.Dense(2, in_features=4), input_dim=2, loss=nn.MSE())\n"),
        "nan_csv": _write(tmp_path, "nan.csv", "a,b,y\n1,2,0\nnan,1,1\n"),
        "ragged_csv": _write(tmp_path, "ragged.csv", "1,2,0\n1,1\n"),
        "labels_npz": str(tmp_path / "labels.npz"),
    }
    np.savez(files["labels_npz"], X=np.zeros((3, 64)), y=np.array([0, 12, 1]))
    done = _cli(*[a.format(**files) for a in args], cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nncompile: error:") and message in lines[0], lines


def test_diverging_run_exits_1_with_advice(tmp_path: Path) -> None:
    model = _write(tmp_path, "lin.py", "from nncompile import nn\nmodel = nn.Sequential(nn.Dense(1), input_dim=2, "
                                       "loss=nn.MSE())\n")
    np.savez(tmp_path / "big.npz", X=np.random.default_rng(0).normal(size=(64, 2)) * 1e3, y=np.ones(64))
    done = _cli("run", model, "--data", str(tmp_path / "big.npz"), "--lr", "10", "--quiet")
    assert done.returncode == 1 and "diverged" in done.stderr and "lower the learning rate" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_option_of_every_command_is_explained_with_its_default_and_an_example() -> None:
    import argparse

    from nncompile.cli.main import _parser
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert parser.epilog and parser.epilog.startswith(f"example:\n  nncompile {name} "), name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f"{name} {action.dest}"
            assert action.help, f"{where} has no help text"
            shows_default = action.default not in (None, False) and not isinstance(action.default, list)
            if shows_default and not isinstance(action, argparse.BooleanOptionalAction):
                assert "default" in action.help, f"{where}: its default {action.default!r} is not said"
