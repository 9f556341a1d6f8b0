"""`nncompile run` and `nncompile predict`: progress, summary, JSON, plots, checkpoints, Ctrl-C."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from nncompile import load_model
from nncompile.cli import main

ROOT = Path(__file__).resolve().parent.parent
DIGITS = str(ROOT / "examples" / "digits.py")


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("nncompile")
    cmd = [exe] if exe else [sys.executable, "-m", "nncompile.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def _popen(*args: str) -> subprocess.Popen:
    """A CLI child that Ctrl-C interrupts even if this test inherited SIGINT as ignored."""
    exe = shutil.which("nncompile")
    cmd = [exe] if exe else [sys.executable, "-m", "nncompile.cli"]
    return subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_saves_a_checkpoint_and_resuming_ends_bit_identical(tmp_path: Path) -> None:
    flags = ["run", DIGITS, "--data", "digits", "--epochs", "30", "--optimizer", "adam", "--lr", "0.003",
             "--val-split", "0.1", "--json"]
    whole = _cli(*flags, "--save", str(tmp_path / "whole.npz"))
    assert whole.returncode == 0, whole.stderr
    checkpoint = tmp_path / "ck.npz"
    proc = _popen(*flags, "--checkpoint", str(checkpoint))
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    with np.load(checkpoint) as saved:
        done = json.loads(saved["meta"].tobytes())["epoch"]
    assert 1 <= done < 30, "the run finished before it could be interrupted"
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert lines == [f"nncompile: interrupted after epoch {done}; checkpoint saved to {checkpoint} (continue with "
                     f"--resume {checkpoint})"] and "Traceback" not in err
    resumed = _cli(*flags, "--resume", str(checkpoint), "--save", str(tmp_path / "resumed.npz"))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["history"] == json.loads(whole.stdout)["history"]
    with np.load(tmp_path / "whole.npz") as a, np.load(tmp_path / "resumed.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert all(a[k].tobytes() == b[k].tobytes() for k in a.files)


def test_json_history_and_summary(capsys: pytest.CaptureFixture) -> None:
    assert main(["run", DIGITS, "--data", "digits", "--epochs", "3", "--patience", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    history, summary = out["history"], out["summary"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert {"loss", "updates", "lr", "accuracy", "val_loss", "val_accuracy", "diagnostics", "warnings"} <= set(
        history[-1])
    assert summary["val_rows"] == 144 and summary["train_rows"] == 1438 - 144 and summary["test_rows"] == 359
    assert summary["updates"] == 3 * 41 and summary["examples_per_second"] > 0
    assert 0.8 < summary["test_accuracy"] <= 1 and summary["diagnostics"]["dense1"]["activation"] == "tanh"


def test_progress_and_warnings_go_to_stderr(tmp_path: Path) -> None:
    model = tmp_path / "sat.py"
    model.write_text("from nncompile import nn\nmodel = nn.Sequential(nn.Dense(16), nn.Sigmoid(), nn.Dense(10), "
                     "nn.Softmax(), input_dim=64, loss=nn.CrossEntropy(), name='sat')\n")
    done = _cli("run", str(model), "--data", "digits", "--epochs", "3", "--init", "normal", "--lr", "0.01")
    assert done.returncode == 0, done.stderr
    assert "ex/s" in done.stderr and "epoch" in done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning: epoch" in line]
    assert len(warnings) == 2 and "acts as a linear map" in warnings[0], warnings  # each printed once
    assert "linear" in done.stdout and "2 warning(s)" in done.stdout


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert main(["run", DIGITS, "--data", "digits", "--epochs", "2", "--val-split", "0.2", "--quiet",
                 "--plot", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.ticker"):
        monkeypatch.setitem(sys.modules, name, None)   # makes `import matplotlib...` fail
    status = main(["run", DIGITS, "--data", "digits", "--epochs", "1", "--quiet", "--plot", str(tmp_path / "c.png")])
    err = capsys.readouterr().err
    assert status == 2 and "pip install 'nncompile[plot]'" in err and not (tmp_path / "c.png").exists()


def test_predict_writes_the_outputs_of_saved_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    weights = str(tmp_path / "w.npz")
    assert main(["run", DIGITS, "--data", "digits", "--epochs", "3", "--quiet", "--save", weights]) == 0
    capsys.readouterr()
    from nncompile.data import digits
    ds = digits()
    np.savez(tmp_path / "x.npz", X=ds.X[:20])
    np.savetxt(tmp_path / "x.csv", np.c_[ds.X[:20], ds.y[:20]], delimiter=",")
    prog = nc.compile(load_model(DIGITS)[0])
    with np.load(weights) as saved:
        expected = prog.forward(dict(saved), ds.X[:20])
    assert main(["predict", DIGITS, "--weights", weights, "--data", str(tmp_path / "x.npz"),
                 "-o", str(tmp_path / "p.npz")]) == 0
    with np.load(tmp_path / "p.npz") as p:
        np.testing.assert_array_equal(p["output"], expected)
        np.testing.assert_array_equal(p["label"], expected.argmax(axis=1))
    assert capsys.readouterr().err == f"wrote predictions for 20 rows to {tmp_path / 'p.npz'}\n"
    assert main(["predict", DIGITS, "--weights", weights, "--data", str(tmp_path / "x.csv")]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == ",".join([f"output_{j}" for j in range(10)] + ["label"]) and len(lines) == 21
    np.testing.assert_allclose(np.loadtxt(lines[1:], delimiter=",")[:, :10], expected, rtol=1e-9)
    assert err.startswith("20 rows: loss") and "accuracy" in err


@pytest.mark.parametrize("args,message", [
    (["--hyper", "momentum"], "--hyper takes NAME=VALUE"),
    (["--eps", "1e-6"], "optimizer sgd has no hyperparameter 'eps'"),
    (["--optimizer", "adamw"], "unknown optimizer 'adamw'"),
    (["--resume", "missing.npz"], "checkpoint missing.npz does not exist"),
    (["--checkpoint", "no/such/dir/ck.npz"], "--checkpoint no/such/dir/ck.npz: the folder "),
    (["--hyper", "epochs=5"], "optimizer sgd has no hyperparameter 'epochs' (it takes: none)"),
    (["--optimizer", "adam", "--hyper", "bet1=0.5"], "optimizer adam has no hyperparameter 'bet1' (did you mean "
                                                     "'beta1'? it takes: beta1, beta2, eps)"),
    (["--val-split", "1.5"], "val_split"),
    (["--schedule", "step", "--step-size", "0"], "step_size"),
])
def test_run_flag_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    status = main(["run", DIGITS, "--data", "digits", "--epochs", "1", "--quiet", *args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("nncompile: error:") and message in lines[0]
    assert "digits.py" not in lines[0]  # a flag's error is not the model file's


@pytest.mark.parametrize("flag,path,message", [
    ("--save", "missing/w.npz", "--save missing/w.npz: the folder "),
    ("--plot", "missing/c.png", "--plot missing/c.png: the folder "),
    ("--save", ".", "--save . is a folder"),
])
def test_outputs_are_checked_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture, flag: str, path: str,
                                             message: str) -> None:
    monkeypatch.chdir(tmp_path)
    status = main(["run", DIGITS, "--data", "digits", "--epochs", "2", "--checkpoint", "ck.npz", flag, path])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ck.npz").exists(), "training ran before the outputs were checked"


def test_plot_without_matplotlib_fails_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.ticker"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.chdir(tmp_path)
    status = main(["run", DIGITS, "--data", "digits", "--epochs", "2", "--checkpoint", "ck.npz", "--plot", "c.png"])
    assert status == 2 and "pip install 'nncompile[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "ck.npz").exists()


def test_hyperparameter_errors_of_the_training_dict_name_the_model_file(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "typo.py"
    model.write_text("from nncompile import nn\nmodel = nn.Sequential(nn.Dense(1), input_dim=2, loss=nn.MSE())\n"
                     "training = {'epoch': 5}\n")
    assert main(["run", str(model), "--data", "xor", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nncompile: error: typo.py: training: unknown training setting 'epoch'")


def test_diverging_run_with_json_prints_a_json_object(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--json still prints one JSON object when training diverges; the exit status is 1 and
    --save keeps the weights of the last good epoch."""
    model = tmp_path / "runaway.py"
    model.write_text("from nncompile import nn\nmodel = nn.Sequential(nn.Dense(8), nn.Tanh(), nn.Dense(10), "
                     "nn.Softmax(), input_dim=64, loss=nn.CrossEntropy(), name='runaway')\n")
    status = main(["run", str(model), "--data", "digits", "--epochs", "5", "--lr", "1e6", "--json",
                   "--save", str(tmp_path / "w.npz")])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert status == 1 and report["history"] == [] and "the loss grew from" in report["error"]
    assert err.strip().count("\n") == 0 and "(try 0.1)" in err and "saved them to" in err
    start = nc.compile(load_model(str(model))[0]).init_params(0)
    with np.load(tmp_path / "w.npz") as saved:
        assert all(np.array_equal(saved[k], start[k]) for k in start)


@pytest.mark.parametrize("weights,message", [("w.npz", "missing 'dense1.b'"), ("none.npz", "does not exist"),
                                             ("bad.npz", "not a readable .npz")])
def test_predict_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, weights: str,
                                     message: str) -> None:
    np.savez(tmp_path / "w.npz", **{"dense1.W": np.zeros((3, 3))})
    (tmp_path / "bad.npz").write_text("not a zip")
    assert main(["predict", DIGITS, "--weights", str(tmp_path / weights), "--data", "digits"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_a_model_file_may_bring_its_own_optimizer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "hb.py"
    model.write_text(
        "import nncompile as nc\nfrom nncompile import nn\n"
        "model = nn.Sequential(nn.Dense(8), nn.Tanh(), nn.Dense(1), nn.Sigmoid(), input_dim=2, "
        "loss=nn.BinaryCrossEntropy(), name='xor_hb')\n"
        "training = {'mode': 'gd', 'epochs': 300, 'lr': 0.5,\n"
        "            'optimizer': nc.Optimizer('heavy_ball', {'v': 'mu*v + g', 'p': 'p - lr*v'}, {'mu': 0.9})}\n")
    assert main(["run", str(model), "--data", "xor", "--json", "--hyper", "mu=0.8"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["train_binary_accuracy"] == 1.0
    assert main(["generate", str(model), "-o", str(tmp_path / "train.py")]) == 0
    assert "def step_heavy_ball(lr, step, mu):" in (tmp_path / "train.py").read_text()
    os.remove(tmp_path / "train.py")


def test_predict_refuses_an_output_format_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", DIGITS, "--weights", "w.npz", "--data", "digits", "-o", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "predictions are written as .csv or .npz" in err and not (tmp_path / "out.json").exists()


def test_predict_says_when_it_was_given_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ck = str(tmp_path / "ck.npz")
    assert main(["run", DIGITS, "--data", "digits", "--epochs", "1", "--quiet", "--checkpoint", ck]) == 0
    capsys.readouterr()
    assert main(["predict", DIGITS, "--weights", ck, "--data", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a training checkpoint (--checkpoint), not a weights file" in err and "\n" not in err


def test_nan_in_a_data_file_names_the_first_bad_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    X = np.zeros((6, 64))
    X[4, 7] = np.nan
    np.savez(tmp_path / "nan.npz", X=X, y=np.zeros(6, int))
    assert main(["run", DIGITS, "--data", str(tmp_path / "nan.npz"), "--quiet"]) == 2
    assert "X contains NaN or infinite values (first in row 4)" in capsys.readouterr().err
