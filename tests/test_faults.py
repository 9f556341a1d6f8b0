"""Faults: divergence keeps the last good weights, a SIGKILL mid-write never leaves a torn file,
Ctrl-C exits cleanly, and a batch that does not fit in memory is refused before allocating.
"""
from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from nncompile import nn
from nncompile.runtime import engine as runtime

ROOT = Path(__file__).resolve().parent.parent


# -- divergence ------------------------------------------------------------------------------

def _linear() -> nc.CompiledProgram:
    return nc.compile(nn.Sequential(nn.Dense(1), input_dim=2, loss=nn.MSE(), name="div"))


def _data() -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(0).normal(size=(40, 2))
    return X, X[:, 0] * 5 + 3


@pytest.mark.parametrize("mode,optimizer,lr,good", [
    ("gd", "sgd", 1.6, 4), ("sgd", "sgd", 1.0, 0), ("minibatch", "momentum", 0.8, 4),
    ("minibatch", "nesterov", 0.8, 1), ("minibatch", "adam", 1e200, 0), ("gd", "rmsprop", 1e200, 1),
])
def test_divergence_keeps_the_weights_of_the_last_finished_epoch(mode: str, optimizer: str, lr: float,
                                                                 good: int) -> None:
    """Too large a step makes the loss grow 1000-fold (or overflow) after `good` epochs; the run stops
    with exactly the weights it had after epoch `good` (bit for bit the result of the same run told
    to stop there) and its history."""
    prog, (X, y) = _linear(), _data()
    kw = dict(mode=mode, batch_size=8, lr=lr, optimizer=optimizer, seed=3, evaluate=False)
    with pytest.raises(nc.DivergenceError, match=rf"diverged in epoch {good + 1}: .*lower the learning rate") as info:
        nc.train(prog, X, y, epochs=2000, **kw)
    kept = info.value.result
    assert [h["epoch"] for h in kept.history] == list(range(1, good + 1))
    assert all(math.isfinite(h["loss"]) for h in kept.history)
    assert f"kept the weights from epoch {good}:" in str(info.value)
    reference = nc.train(prog, X, y, epochs=good, **kw).params if good else prog.init_params(3)
    for name, value in reference.items():
        assert np.isfinite(kept.params[name]).all()
        assert np.array_equal(kept.params[name], value), name


def test_an_overflowing_last_update_is_caught() -> None:
    """The loss is computed before each update: a final update to inf must not be returned silently."""
    prog, (X, y) = _linear(), _data()
    start = prog.init_params(0)
    with pytest.raises(nc.DivergenceError, match="parameters became NaN or infinite at update 1") as info:
        nc.train(prog, X, y, mode="gd", epochs=1, lr=1e308, params=start)
    for name, value in start.items():
        assert np.array_equal(info.value.result.params[name], value)


def test_cli_saves_the_last_good_weights_on_divergence(tmp_path: Path) -> None:
    model = tmp_path / "lin.py"
    model.write_text("from nncompile import nn\nmodel = nn.Sequential(nn.Dense(1), input_dim=2, loss=nn.MSE())\n")
    X, y = _data()
    np.savez(tmp_path / "big.npz", X=X, y=y)
    done = subprocess.run([sys.executable, "-m", "nncompile.cli", "run", str(model), "--data",
                           str(tmp_path / "big.npz"), "--lr", "1e200", "--optimizer", "adam", "--quiet",
                           "--save", str(tmp_path / "w.npz")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "diverged in epoch 1" in done.stderr
    saved = np.load(tmp_path / "w.npz")
    assert all(np.isfinite(saved[k]).all() for k in saved.files)


def test_standalone_script_reports_divergence_in_one_line(tmp_path: Path) -> None:
    X, y = _data()
    np.savez(tmp_path / "big.npz", X=X, y=(y > 0).astype(int))
    from nncompile.generate import standalone
    script = tmp_path / "train_xor.py"  # generated now, from the current code (not the committed copy)
    script.write_text(standalone(nc.load_model(str(ROOT / "examples" / "xor.py"))[0], filename=script.name))
    done = subprocess.run([sys.executable, str(script), "--data", "big.npz",
                           "--mode", "gd", "--lr", "1e308", "--epochs", "3", "--quiet", "--no-diagnostics"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr  # 1, as `nncompile run`: training failed
    assert done.stderr.count("\n") == 1 and "diverged" in done.stderr


# -- SIGKILL while writing -------------------------------------------------------------------

# Imports nncompile.jit / nncompile.runtime without the package's __init__ (no SymPy), so a
# child starts in ~0.1 s.  Writer "jit": the atomic writer behind `nncompile run --save`,
# `generate -o` and the JIT cache; writer "checkpoint": training checkpoints (run --checkpoint,
# nc.train(checkpoint=...), standalone scripts), the same writer behind a checkpoint's rename.
_WRITER = r"""
import sys, types, io
import numpy as np
package = types.ModuleType("nncompile"); package.__path__ = [sys.argv[1]]; sys.modules["nncompile"] = package
from nncompile import jit
from nncompile.runtime import checkpoint
from pathlib import Path
target = Path(sys.argv[2])
def save(k):
    arrays = {"W": np.full((512, 1024), float(k)), "k": np.array(k)}
    if sys.argv[3] == "checkpoint":
        checkpoint.Checkpoint(target).save(arrays, {"epoch": k})
    else:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        jit.write_bytes_atomic(target, buffer.getvalue())
save(0)
print("ready", flush=True)
k = 1
while True:
    save(k)
    k += 1
"""


@pytest.mark.parametrize("writer", ["jit", "checkpoint"])
def test_sigkill_while_saving_weights_never_leaves_a_torn_file(writer: str, tmp_path: Path) -> None:
    """Kill a process at random points while it rewrites a 4 MB weights file: the file on disk
    is always a complete earlier version."""
    target = tmp_path / "weights.npz"
    rng = random.Random(7)
    seen = set()
    for _ in range(20):
        child = subprocess.Popen([sys.executable, "-c", _WRITER, str(ROOT / "nncompile"), str(target), writer],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait()
        with np.load(target) as saved:
            k = int(saved["k"])
            assert saved["W"].shape == (512, 1024) and (saved["W"] == k).all()
        seen.add(k)
    assert len(seen) > 3, "the writer must have been killed at different points"


def _sigint_as_default() -> None:
    """In the child: Ctrl-C interrupts, even when this test runs with SIGINT ignored (a background job
    of a non-interactive shell, nohup), which a child would otherwise inherit across exec."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_stops_a_cli_run_cleanly(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-m", "nncompile.cli", "run", str(ROOT / "examples" / "digits.py"),
                              "--data", "digits", "--epochs", "100000"], cwd=tmp_path, preexec_fn=_sigint_as_default,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        progress = ""
        while "epoch" not in progress and time.time() < deadline:  # wait for the first progress update
            progress += child.stderr.read(1)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:  # never leave a 100000-epoch run behind
            child.kill()
            child.wait()
    assert child.returncode == 130
    last = err.rstrip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("nncompile: interrupted after epoch ")
    assert err.count("interrupted") == 1


# -- memory ----------------------------------------------------------------------------------

def test_available_memory_is_known_here() -> None:
    free = runtime.available_memory()
    if sys.platform.startswith("linux"):
        assert free is not None and 0 < free <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


_TOO_BIG = r"""
import resource, sys
import numpy as np
import nncompile as nc
from nncompile import nn
from nncompile.runtime import engine as runtime
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # even if the check were gone: no swapping, no OOM killer
model = nn.Sequential(nn.Dense(2**20), nn.Tanh(), nn.Dense(1), input_dim=2, loss=nn.MSE(), name="wide")
prog = nc.compile(model)
per_row = prog.workspace_bytes(2) - prog.workspace_bytes(1)
rows = 2 * runtime.available_memory() // per_row + 1
try:
    nc.train(prog, np.zeros((rows, 2)), np.zeros(rows), mode="gd", epochs=1)
except nc.DataError as exc:
    print(exc)
    print(rows, prog.workspace_bytes(rows))
"""


def test_a_batch_that_cannot_fit_says_how_much_it_needs(tmp_path: Path) -> None:
    """A batch needing twice the free memory is refused before any buffer is allocated."""
    limit = 6 * 2**30
    done = subprocess.run([sys.executable, "-c", _TOO_BIG, str(limit)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    message, numbers = done.stdout.strip().splitlines()
    rows, need = map(int, numbers.split())
    assert message.startswith(f"a batch of {rows} rows needs {runtime.human_bytes(need)} of memory but only ")
    assert message.endswith("is available: use a smaller batch")


def test_a_model_too_large_to_initialise_says_so() -> None:
    free = runtime.available_memory()
    if free is None:
        pytest.skip("this system does not report available memory")
    width = int(math.isqrt(free // 8)) + 1000  # W of width x width float64 needs more than is free
    prog = nc.compile(nn.Sequential(nn.Dense(width), input_dim=width, loss=nn.MSE(), name="huge"))
    with pytest.raises(nc.DataError, match=rf"the {prog.n_params} parameters of the model needs .* GiB of memory"):
        prog.init_params(0)
    with pytest.raises(ValueError, match="parameter and gradient vectors"):
        prog.engine()


def test_ensure_memory_message() -> None:
    expected = r"^x needs 1,048,576\.00 GiB of memory but only .* is available: y$"
    with pytest.raises(runtime.TrainingError, match=expected):
        runtime.ensure_memory(2**50, "x", "y")
    runtime.ensure_memory(1, "x")


def test_sigkill_during_checkpointed_training_leaves_a_resumable_checkpoint(tmp_path: Path) -> None:
    """A real `nncompile run --checkpoint` saving every epoch, killed with SIGKILL at random moments:
    each time the checkpoint on disk loads whole, and the next run resumes from it.  A wide model
    on 32 rows makes writing the (~8 MB) checkpoint most of every epoch, so the kills land mid-write."""
    from nncompile.runtime.checkpoint import Checkpoint
    model = tmp_path / "wide.py"
    model.write_text("from nncompile import nn\nmodel = nn.Sequential(nn.Dense(1000), nn.Tanh(), nn.Dense(2), "
                     "nn.Softmax(), input_dim=500, loss=nn.CrossEntropy(), name='wide')\n")
    rows = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rows.normal(size=(32, 500)), y=rows.integers(0, 2, 32))
    ck = tmp_path / "ck.npz"
    rng = random.Random(11)
    epochs_seen = []
    for _ in range(8):
        resume = ["--resume", str(ck)] if ck.exists() else []
        child = subprocess.Popen([sys.executable, "-m", "nncompile.cli", "run", str(model), "--data", "d.npz",
                                  "--test-split", "0", "--epochs", "100000", "--optimizer", "adam", "--lr", "1e-4",
                                  "--checkpoint", str(ck), "--checkpoint-every", "1", "--quiet", "--no-diagnostics",
                                  *resume], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not ck.exists() and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.3, 0.9))  # now it rewrites the checkpoint back to back
        child.send_signal(signal.SIGKILL)
        child.wait()
        arrays, meta = Checkpoint(ck).load()
        assert np.isfinite(arrays["params"]).all() and meta["epoch"] >= 1
        epochs_seen.append(meta["epoch"])
    assert epochs_seen == sorted(epochs_seen), "each resumed run continues from the previous checkpoint"
