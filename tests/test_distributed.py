"""Data-parallel training on MPI: K = 2 and 3 processes (mpiexec) against one process, to round-off
(NNCOMPILE_TEST_RANKS=1,2,3,4 tests those K).

Every mode and optimizer, uneven shares and an uneven last batch, six kinds of model (dropout,
convolution and a layer called twice among them), the
overlapped allreduce, early stopping and diagnostics, checkpoints resumed with the same and
with another K, rank 0 alone writing, one-line errors, and a process that stops answering.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="the distributed tests need mpi4py (pip install 'nncompile[mpi]')")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from distributed_cases import dataset, program  # noqa: E402

import nncompile as nc  # noqa: E402

MPIEXEC = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on the PATH (pip install 'nncompile[mpi]')")
LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 0.003, "rmsprop": 0.001}
MODES = {"gd": dict(rows=157), "sgd": dict(rows=23), "minibatch": dict(rows=157, batch_size=25)}
#: Process counts tested (NNCOMPILE_TEST_RANKS=1,2,3,4 for more; 2 and 3 run in CI on 2 cores).
RANKS = [int(k) for k in os.environ.get("NNCOMPILE_TEST_RANKS", "2,3").split(",")]


def mpirun(k: int, *args: str, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([MPIEXEC, "-n", str(k), sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=environment, cwd=HERE.parent)


def _task(model: str, mode: str, optimizer: str, **extra: object) -> dict:
    rows = MODES[mode]["rows"]
    train = dict(mode=mode, batch_size=MODES[mode].get("batch_size", 32), epochs=2, lr=LR[optimizer],
                 optimizer=optimizer, seed=5)
    train.update(extra)
    return {"model": model, "rows": rows, "train": train}


def _tasks(tmp: Path, k: int) -> list[dict]:
    tasks = [_task("softmax", mode, opt) for mode in MODES for opt in LR]
    tasks += [_task("binary", "minibatch", "adam", evaluate=True), _task("regression", "minibatch", "momentum"),
              _task("regression", "sgd", "sgd")]
    tasks += [dict(_task("softmax", "minibatch", "sgd"), overlap=True),
              dict(_task("binary", "gd", "adam"), overlap=True)]
    tasks += [_task("dropout", "minibatch", "adam"), dict(_task("dropout", "minibatch", "sgd"), overlap=True),
              _task("conv", "minibatch", "momentum"), dict(_task("shared", "minibatch", "nesterov"), overlap=True)]
    run = dict(val_split=0.2, patience=50, diagnostics=True, epochs=4)  # early stopping's state travels too
    tasks += [{"kind": "buffers"}]
    tasks += [_task("softmax", "minibatch", "adam", **run),
              _task("softmax", "minibatch", "adam", **dict(run, epochs=2, checkpoint=str(tmp / f"k{k}.npz"))),
              _task("softmax", "minibatch", "adam", **dict(run, resume=str(tmp / f"k{k}.npz")))]
    return tasks


def _single(task: dict) -> nc.TrainResult:
    X, y = dataset(task["model"], task["rows"])
    train = {key: value for key, value in task["train"].items() if key not in ("checkpoint", "resume")}
    return nc.train(program(task["model"]), X, y, **train)


def _results(path: Path, count: int) -> list[tuple[dict, list, bool]]:
    with np.load(path) as saved:
        out = []
        for i in range(count):
            params = {key.split("/", 1)[1]: saved[key] for key in saved.files
                      if key.startswith(f"{i}/") and "." in key}
            history = json.loads(saved[f"{i}/history"].tobytes().decode())
            out.append((params, history, bool(saved[f"{i}/same_on_every_rank"])))
    return out


def _assert_close(distributed: tuple, single: nc.TrainResult, what: str) -> None:
    params, history, same = distributed
    assert same, f"{what}: the processes hold different parameters"
    for name, value in single.params.items():
        scale = max(float(np.abs(value).max()), 1e-300)
        assert float(np.abs(params[name] - value).max()) / scale <= 1e-12, (what, name)
    assert [h["updates"] for h in history] == [h["updates"] for h in single.history], what
    for mine, theirs in zip(history, single.history):
        assert set(mine) == set(theirs), what
        for key, value in theirs.items():
            if isinstance(value, float):
                assert mine[key] == pytest.approx(value, rel=1e-11, abs=1e-14), (what, key)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One mpiexec job per K running every task; the last job also resumes the checkpoint the first wrote."""
    tmp = tmp_path_factory.mktemp("distributed")
    for name in ("softmax", "binary", "regression", "dropout", "conv", "shared"):
        program(name)  # compiled once here, so the processes find it in the cache
    out = {}
    for k in RANKS:
        tasks = _tasks(tmp, k)
        if k == RANKS[-1] and k != RANKS[0]:  # and resume what the first K wrote
            tasks.append(_task("softmax", "minibatch", "adam", val_split=0.2, patience=50, diagnostics=True,
                               epochs=4, resume=str(tmp / f"k{RANKS[0]}.npz")))
        (tmp / f"tasks{k}.json").write_text(json.dumps(tasks))
        done = mpirun(k, str(HERE / "distributed_worker.py"), str(tmp / f"tasks{k}.json"), str(tmp / f"out{k}.npz"))
        assert done.returncode == 0, done.stderr[-3000:]
        out[k] = (tasks, _results(tmp / f"out{k}.npz", len(tasks)))
    return out


@pytest.mark.parametrize("k", RANKS)
def test_every_mode_optimizer_and_model_matches_one_process(jobs: dict, k: int) -> None:
    tasks, results = jobs[k]
    for task, result in zip(tasks, results):
        if "train" not in task or "checkpoint" in task["train"] or "resume" in task["train"]:
            continue
        what = f"K={k} {task['model']} {task['train']['mode']} {task['train']['optimizer']}"
        _assert_close(result, _single(task), what + (" overlapped" if task.get("overlap") else ""))


@pytest.mark.parametrize("k", RANKS)
def test_checkpoint_resumes_bit_identically_with_the_same_k(jobs: dict, tmp_path: Path, k: int) -> None:
    tasks, results = jobs[k]
    last = len(_tasks(tmp_path, k)) - 1  # ... 4 epochs whole, 2 epochs with a checkpoint, resumed to 4
    whole, resumed = results[last - 2], results[last]
    assert "resume" in tasks[last]["train"] and "checkpoint" in tasks[last - 1]["train"]
    assert resumed[1] == whole[1]
    for name in whole[0]:
        assert resumed[0][name].tobytes() == whole[0][name].tobytes(), name
    assert len(whole[1]) == 4 and "val_loss" in whole[1][-1] and "diagnostics" in whole[1][0]
    _assert_close(whole, _single(tasks[last - 2]), f"K={k} with early stopping and diagnostics")


@pytest.mark.parametrize("k", RANKS)
def test_buffers_start_each_epoch_as_rank_0s(jobs: dict, k: int) -> None:
    """BatchNorm-style running statistics stay each process's own within an epoch and are rank 0's at the
    start of the next (PyTorch DDP's default): here every process set its own, then synchronised."""
    tasks, results = jobs[k]
    params, _, same = results[next(i for i, t in enumerate(tasks) if t.get("kind") == "buffers")]
    assert same and params["dense2.b"].tolist() == list(range(10))


@pytest.mark.skipif(len(RANKS) < 2, reason="needs two process counts")
def test_a_checkpoint_written_by_k_processes_resumes_with_another_k(jobs: dict) -> None:
    tasks, results = jobs[RANKS[-1]]
    assert tasks[-1]["train"]["resume"].endswith(f"k{RANKS[0]}.npz")
    _assert_close(results[-1], _single(tasks[-1]), f"K={RANKS[0]} checkpoint resumed by K={RANKS[-1]}")


def test_shares_cover_every_row_once() -> None:
    from nncompile.runtime.distributed import share
    for rows in (1, 7, 25, 100):
        for size in (1, 2, 3, 4, 7):
            spans = [share(rows, r, size) for r in range(size)]
            assert spans[0][0] == 0 and spans[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            assert [hi - lo for lo, hi in spans] == [len(part) for part in np.array_split(np.arange(rows), size)]


def test_cli_rank_zero_alone_prints_and_writes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    done = mpirun(2, "-m", "nncompile.cli", "run", str(HERE.parent / "examples" / "digits.py"), "--data", "digits",
                  "--distributed", "--epochs", "2", "--json", "--save", str(out / "w.npz"),
                  "--checkpoint", str(out / "ck.npz"), "--no-diagnostics")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)  # one JSON document: only rank 0 printed
    assert len(report["history"]) == 2 and report["summary"]["test_accuracy"] > 0.5
    assert sorted(p.name for p in out.iterdir()) == ["ck.npz", "w.npz"]  # no temporary files of a second writer
    single = subprocess.run([sys.executable, "-m", "nncompile.cli", "run", str(HERE.parent / "examples" / "digits.py"),
                             "--data", "digits", "--epochs", "2", "--json", "--no-diagnostics"],
                            capture_output=True, text=True, timeout=120)
    expected = json.loads(single.stdout)["history"]
    for mine, theirs in zip(report["history"], expected):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-12)
        assert mine["accuracy"] == pytest.approx(theirs["accuracy"], rel=1e-12)


def test_generated_script_trains_data_parallel(tmp_path: Path) -> None:
    script = tmp_path / "train_xor.py"
    assert subprocess.run([sys.executable, "-m", "nncompile.cli", "generate", str(HERE.parent / "examples" / "xor.py"),
                           "-o", str(script)], capture_output=True).returncode == 0
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(61, 2))
    np.savez(tmp_path / "xor.npz", X=X, y=(X[:, 0] * X[:, 1] > 0).astype(float))
    args = [str(script), "--data", str(tmp_path / "xor.npz"), "--mode", "minibatch", "--batch-size", "8",
            "--epochs", "3", "--lr", "0.5", "--json", "--no-diagnostics"]
    parallel = mpirun(3, *args, "--distributed", "--save", str(tmp_path / "w3.npz"))
    alone = subprocess.run([sys.executable, *args, "--save", str(tmp_path / "w1.npz")], capture_output=True,
                           text=True, timeout=120)
    assert parallel.returncode == 0 and alone.returncode == 0, parallel.stderr[-2000:]
    for mine, theirs in zip(json.loads(parallel.stdout)["history"], json.loads(alone.stdout)["history"]):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-12)
        assert mine["binary_accuracy"] == theirs["binary_accuracy"] and mine["updates"] == theirs["updates"] == 8
    with np.load(tmp_path / "w3.npz") as a, np.load(tmp_path / "w1.npz") as b:
        for name in b.files:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case,message", [("rows", "3 processes but only 2 training rows"),
                                          ("batch", "batch_size must be a positive integer")])
def test_bad_use_is_one_line_from_one_process(tmp_path: Path, case: str, message: str) -> None:
    data = tmp_path / "tiny.npz"
    np.savez(data, X=np.zeros((2, 64)), y=np.array([0, 1]))
    flags = ["--test-split", "0"] + (["--batch-size", "0"] if case == "batch" else [])
    done = mpirun(3, "-m", "nncompile.cli", "run", str(HERE.parent / "examples" / "digits.py"), "--data",
                  str(data if case == "rows" else "digits"), "--distributed", "--quiet", *flags)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("nncompile: error:"), done.stderr


def test_without_mpi4py_distributed_says_how_to_get_it() -> None:
    code = ("import sys; sys.modules['mpi4py'] = None; from nncompile.cli import main; "
            f"sys.exit(main(['run', {str(HERE.parent / 'examples' / 'xor.py')!r}, '--data', 'xor', '--distributed']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "needs mpi4py" in done.stderr and "nncompile[mpi]" in done.stderr and "Traceback" not in done.stderr


def test_a_process_that_stops_answering_is_named_in_one_line(tmp_path: Path) -> None:
    task = dict(_task("softmax", "minibatch", "sgd"), hang_rank=1)
    task["train"]["epochs"] = 50
    (tmp_path / "tasks.json").write_text(json.dumps([task]))
    done = mpirun(3, str(HERE / "distributed_worker.py"), str(tmp_path / "tasks.json"), str(tmp_path / "out.npz"),
                  env={"NNCOMPILE_MPI_TIMEOUT": "1"}, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and len(lines) == 1, done.stderr[-2000:]
    assert "lost rank 1 (pid " in lines[0] and "rank 0" not in lines[0] and "rank 2" not in lines[0]


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_a_killed_process_ends_the_run_and_the_last_checkpoint_resumes(tmp_path: Path, signal_name: str) -> None:
    import re
    import signal
    import time
    checkpoint = tmp_path / "ck.npz"
    command = [MPIEXEC, "-n", "2", sys.executable, "-m", "nncompile.cli", "run",
               str(HERE.parent / "examples" / "digits.py"), "--data", "digits", "--distributed", "--epochs", "3000",
               "--checkpoint", str(checkpoint), "--checkpoint-every", "1", "--no-diagnostics"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=HERE.parent,
                            env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    try:
        first = proc.stderr.readline()
        pids = dict(re.findall(r"(\d+):(\d+)", first.partition("rank:pid")[2]))
        deadline = time.monotonic() + 60
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = time.monotonic()
        os.kill(int(pids["1"]), getattr(signal, signal_name))
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert time.monotonic() - killed < 60 and proc.returncode != 0
    if signal_name == "SIGTERM":  # the process itself names itself in one line before it goes
        named = [line for line in rest.splitlines() if "stopped by SIGTERM" in line]
        assert len(named) == 1 and f"rank 1 of 2 (pid {pids['1']})" in named[0], rest[-2000:]
    from nncompile.runtime.checkpoint import Checkpoint
    epoch = Checkpoint(checkpoint).load()[1]["epoch"]
    resumed = mpirun(2, "-m", "nncompile.cli", "run", str(HERE.parent / "examples" / "digits.py"), "--data", "digits",
                     "--distributed", "--epochs", str(epoch + 1), "--resume", str(checkpoint), "--json",
                     "--no-diagnostics")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(json.loads(resumed.stdout)["history"]) == epoch + 1
