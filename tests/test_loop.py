"""The epoch loop: schedules, early stopping, divergence, checkpoints and resuming bit-identically."""
from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

import nncompile as nc
from nncompile import data, nn
from nncompile.runtime.loop import schedule_lr


@pytest.fixture(scope="module")
def prog(digits_prog: nc.CompiledProgram) -> nc.CompiledProgram:
    return digits_prog


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    ds = data.digits()
    return data.Dataset("digits", ds.X[:300], ds.y[:300])


@pytest.mark.parametrize("schedule,kwargs,expected", [
    ("constant", {}, [0.2] * 7),
    ("step", {"step_size": 3}, [0.2, 0.2, 0.2, 0.02, 0.02, 0.02, 0.002]),
    ("step", {"step_size": 2, "gamma": 0.5}, [0.2, 0.2, 0.1, 0.1, 0.05, 0.05, 0.025]),
    ("exponential", {}, [0.2 * 0.95 ** e for e in range(7)]),
    ("exponential", {"gamma": 0.5}, [0.2 * 0.5 ** e for e in range(7)]),
    ("cosine", {}, [0.1 * (1 + math.cos(math.pi * e / 7)) for e in range(7)]),
])
def test_schedule_values(prog, digits, schedule, kwargs, expected) -> None:
    assert [schedule_lr(schedule, 0.2, e, 7, **kwargs) for e in range(7)] == pytest.approx(expected, rel=1e-15)
    result = nc.train(prog, digits.X, digits.y, epochs=7, lr=0.2, schedule=schedule, evaluate=False, **kwargs)
    assert [h["lr"] for h in result.history] == pytest.approx(expected, rel=1e-15)


def test_schedule_is_applied_to_the_updates(prog, digits) -> None:
    """A step schedule equals training in pieces with the decayed learning rates."""
    start = prog.init_params(0)
    scheduled = nc.train(prog, digits.X, digits.y, mode="gd", epochs=4, lr=0.4, schedule="step", step_size=2,
                         gamma=0.25, params=start, evaluate=False)
    first = nc.train(prog, digits.X, digits.y, mode="gd", epochs=2, lr=0.4, params=start, evaluate=False)
    second = nc.train(prog, digits.X, digits.y, mode="gd", epochs=2, lr=0.1, params=first.params, evaluate=False)
    for key in start:
        np.testing.assert_allclose(scheduled.params[key], second.params[key], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kwargs,message", [
    ({"schedule": "warmup"}, "unknown schedule"), ({"schedule": "step", "step_size": 0}, "step_size"),
    ({"schedule": "exponential", "gamma": -1.0}, "gamma"), ({"patience": 3}, "validation"),
    ({"patience": 0, "val_split": 0.2}, "patience"), ({"val_split": 1.5}, "val_split"),
    ({"checkpoint_every": 0}, "checkpoint_every"),
])
def test_bad_loop_settings(prog, digits, kwargs, message) -> None:
    with pytest.raises(nc.DataError, match=message):
        nc.train(prog, digits.X, digits.y, epochs=2, **kwargs)


def test_early_stopping_restores_the_best_epoch(prog) -> None:
    """A wide network on 40 rows overfits: validation loss turns up, training stops, best weights return."""
    ds = data.digits()
    X, y, Xv, yv = ds.X[:40], ds.y[:40], ds.X[1000:1300], ds.y[1000:1300]
    wide = nc.compile(nn.Sequential(nn.Dense(64), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64,
                                    loss=nn.CrossEntropy(), name="overfit"))
    kwargs = dict(mode="minibatch", batch_size=8, lr=0.3, seed=0, evaluate=False)
    result = nc.train(wide, X, y, epochs=300, validation=(Xv, yv), patience=5, min_delta=1e-4, **kwargs)
    losses = [h["val_loss"] for h in result.history]
    assert result.stopped_early and len(losses) < 300
    best = result.best_epoch
    assert losses[best - 1] == min(losses) and len(losses) == best + 5
    assert all(v > losses[best - 1] - 1e-4 for v in losses[best:])
    again = nc.train(wide, X, y, epochs=best, **kwargs)   # same seed: the same first `best` epochs
    for key in again.params:
        assert np.array_equal(result.params[key], again.params[key])
    assert wide.evaluate(result.params, Xv, yv)["loss"] == pytest.approx(losses[best - 1], rel=1e-12)


def test_min_delta_counts_only_real_improvements(prog, digits) -> None:
    result = nc.train(prog, digits.X, digits.y, epochs=30, lr=0.05, val_split=0.3, patience=2, min_delta=10.0)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def test_divergence_keeps_the_last_good_epoch(prog, digits) -> None:
    lin = nc.compile(nn.Sequential(nn.Dense(1), input_dim=1, loss=nn.MSE(), name="diverging_line"))
    X = np.linspace(-1, 1, 20).reshape(-1, 1) * 10
    with pytest.raises(nc.DivergenceError) as info:
        nc.train(lin, X, 3 * X[:, 0], mode="gd", epochs=500, lr=3.0)
    message, partial = str(info.value), info.value.result
    epoch = len(partial.history) + 1
    assert f"training diverged in epoch {epoch}" in message and "lower the learning rate (try 0.1)" in message
    assert "the loss grew from 235 to " in message and "\n" not in message
    good = nc.train(lin, X, 3 * X[:, 0], mode="gd", epochs=epoch - 1, lr=3.0)
    for key in good.params:
        assert np.array_equal(partial.params[key], good.params[key])


def test_a_loss_growing_by_orders_of_magnitude_is_divergence(digits) -> None:
    """lr=1e6 on a tanh network: every number stays finite, but the loss grows a million-fold."""
    tanh = nc.compile(nn.Sequential(nn.Dense(8), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64,
                                    loss=nn.CrossEntropy(), name="runaway"))
    start = tanh.init_params(0)
    first = tanh.evaluate(start, digits.X, digits.y)["loss"]
    with pytest.raises(nc.DivergenceError) as info:
        nc.train(tanh, digits.X, digits.y, epochs=5, lr=1e6)
    message, partial = str(info.value), info.value.result
    assert message.startswith("training diverged in epoch 1: the loss grew from ")
    assert "(try 0.1)" in message and partial.history == []
    for key in start:  # the weights of epoch 0 (the start) came back
        assert np.array_equal(partial.params[key], start[key])
    assert first < 3  # and a sound rate trains normally, the check silent
    calm = nc.train(tanh, digits.X, digits.y, epochs=3, lr=0.1)
    assert calm.history[-1]["loss"] < first


def test_growth_limit_is_relative_to_the_starting_loss() -> None:
    from nncompile.runtime import loop
    loop.check_growth(999.0, 1.0)
    loop.check_growth(0.5, 1e-9)            # a near-perfect start measures from the floor (1e-3)
    with pytest.raises(nc.runtime.engine.Diverged, match="grew from 1 to 1001"):
        loop.check_growth(1001.0, 1.0)
    with pytest.raises(nc.runtime.engine.Diverged):
        loop.check_growth(1.5, 1e-9)
    assert loop.smaller_lr(1e6) == 0.1 and loop.smaller_lr(0.5) == 0.05


def _run(prog, ds, **kwargs):
    settings = dict(mode="minibatch", batch_size=25, epochs=8, lr=0.01, optimizer="adam", seed=7, val_split=0.2,
                    patience=50, diagnostics=True)
    settings.update(kwargs)
    return nc.train(prog, ds.X, ds.y, **settings)


def _assert_same_run(a, b) -> None:
    assert a.history == b.history and a.best_epoch == b.best_epoch
    for key in a.params:
        assert a.params[key].tobytes() == b.params[key].tobytes()


def test_same_seed_same_bits_with_every_feature_on(prog, digits) -> None:
    _assert_same_run(_run(prog, digits), _run(prog, digits))
    plain = _run(prog, digits, diagnostics=False)
    for key in plain.params:  # diagnostics draw no random numbers and write no parameters
        assert plain.params[key].tobytes() == _run(prog, digits).params[key].tobytes()


def test_stopped_then_resumed_run_is_bit_identical(prog, digits, tmp_path) -> None:
    whole = _run(prog, digits)
    path = tmp_path / "ck.npz"
    halted = _run(prog, digits, checkpoint=path, callback=lambda record: record["epoch"] < 3)
    assert len(halted.history) == 3 and path.is_file()
    seen: list[int] = []
    resumed = _run(prog, digits, resume=path, callback=lambda record: seen.append(record["epoch"]))
    assert seen == [4, 5, 6, 7, 8]  # it continued; it did not start again
    _assert_same_run(resumed, whole)


def test_interrupted_run_rolls_back_to_the_last_epoch_and_resumes_bit_identically(prog, digits, tmp_path) -> None:
    updates = {"n": 0}

    def ctrl_c(rows: int) -> None:  # Ctrl-C in the middle of epoch 5 (its 5th update of 10)
        updates["n"] += 1
        if updates["n"] == 4 * 10 + 5:
            raise KeyboardInterrupt

    whole = _run(prog, digits)
    path = tmp_path / "ck.npz"
    with pytest.raises(KeyboardInterrupt):
        _run(prog, digits, checkpoint=path, checkpoint_every=3, on_batch=ctrl_c)
    from nncompile.runtime.checkpoint import Checkpoint
    _, meta = Checkpoint(path).load()
    assert meta["epoch"] == 4 and len(meta["history"]) == 4  # the unfinished epoch 5 was rolled back
    seen: list[int] = []
    resumed = _run(prog, digits, resume=path, callback=lambda record: seen.append(record["epoch"]))
    assert seen == [5, 6, 7, 8]
    _assert_same_run(resumed, whole)


def test_ctrl_c_after_an_epoch_is_counted_keeps_that_epoch(prog, digits, tmp_path) -> None:
    """Ctrl-C in the epoch callback, or right after a checkpoint was written, loses no finished epoch
    (and never overwrites a newer checkpoint with an older state)."""
    whole = _run(prog, digits)
    path = tmp_path / "ck.npz"
    with pytest.raises(KeyboardInterrupt):
        _run(prog, digits, checkpoint=path, callback=lambda record: _interrupt_at(record, 5))
    from nncompile.runtime.checkpoint import Checkpoint
    assert Checkpoint(path).load()[1]["epoch"] == 5

    class InterruptedAfterSaving(Checkpoint):  # Ctrl-C lands just after the epoch-2 checkpoint is on disk
        def save(self, arrays: dict, meta: dict) -> None:
            super().save(arrays, meta)
            if meta["epoch"] == 2 and not getattr(self, "fired", False):
                self.fired = True
                raise KeyboardInterrupt

    trainer = importlib.import_module("nncompile.train")  # the module (nc.train is the function)
    original, trainer.Checkpoint = trainer.Checkpoint, InterruptedAfterSaving
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(prog, digits, checkpoint=path)
    finally:
        trainer.Checkpoint = original
    arrays, meta = Checkpoint(path).load()
    assert meta["epoch"] == 2 and len(meta["history"]) == 2
    _assert_same_run(_run(prog, digits, resume=path), whole)


def _interrupt_at(record: dict, epoch: int) -> None:
    if record["epoch"] == epoch:
        raise KeyboardInterrupt


def test_resumed_early_stopping_run_returns_the_best_weights(prog, digits, tmp_path) -> None:
    """The best weights so far travel in the checkpoint: interrupted after its best epoch and resumed,
    a run returns the same weights as one never interrupted."""
    whole = _run(prog, digits, min_delta=10.0)           # only epoch 1 ever counts as an improvement
    assert whole.best_epoch == 1 and len(whole.history) == 8
    path = tmp_path / "ck.npz"
    with pytest.raises(KeyboardInterrupt):
        _run(prog, digits, min_delta=10.0, checkpoint=path, callback=lambda record: _interrupt_at(record, 4))
    _assert_same_run(_run(prog, digits, min_delta=10.0, resume=path), whole)


def test_resume_extends_a_finished_run(prog, digits, tmp_path) -> None:
    path = tmp_path / "ck.npz"
    _run(prog, digits, epochs=4, checkpoint=path, diagnostics=False)
    longer = _run(prog, digits, epochs=8, resume=path, diagnostics=False)
    _assert_same_run(longer, _run(prog, digits, epochs=8, diagnostics=False))


@pytest.mark.parametrize("change,message", [({"lr": 0.02}, "lr=0.01"), ({"optimizer": "rmsprop"}, "optimizer"),
                                            ({"seed": 8}, "seed"), ({"batch_size": 10}, "batch")])
def test_resume_refuses_other_settings(prog, digits, tmp_path, change, message) -> None:
    path = tmp_path / "ck.npz"
    _run(prog, digits, epochs=2, checkpoint=path)
    with pytest.raises(nc.DataError, match=message):
        _run(prog, digits, resume=path, **change)


def test_resume_refuses_other_data_and_broken_files(prog, digits, tmp_path) -> None:
    path = tmp_path / "ck.npz"
    _run(prog, digits, epochs=2, checkpoint=path)
    other = data.Dataset("d", digits.X[::-1].copy(), digits.y[::-1].copy())
    with pytest.raises(nc.DataError, match="data="):
        _run(prog, other, resume=path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(nc.DataError, match="not an nncompile checkpoint"):
        _run(prog, digits, resume=tmp_path / "junk.npz")
    with pytest.raises(nc.DataError, match="does not exist"):
        _run(prog, digits, resume=tmp_path / "missing.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz", "junk.npz"]  # no temporary files left


def test_val_split_holds_out_the_documented_rows(prog, digits) -> None:
    """val_split=f holds out the first round(f·N) rows of a permutation drawn with seed + 1 (not the
    training seed, whose shuffles would then repeat it): the same run as passing those rows as
    validation=(X, Y) explicitly, bit for bit."""
    n = len(digits.X)
    order = np.random.default_rng(7 + 1).permutation(n)
    held, kept = order[:round(0.2 * n)], order[round(0.2 * n):]
    settings = dict(mode="minibatch", batch_size=25, epochs=3, lr=0.05, seed=7)
    split = nc.train(prog, digits.X, digits.y, val_split=0.2, **settings)
    explicit = nc.train(prog, digits.X[kept], digits.y[kept], validation=(digits.X[held], digits.y[held]), **settings)
    _assert_same_run(split, explicit)


def test_resumed_run_keeps_its_patience_count(prog, digits, tmp_path) -> None:
    """Epochs already waited without improvement travel in the checkpoint: interrupted after two such
    epochs and resumed, a run with patience 3 stops at the same epoch as one never interrupted."""
    whole = _run(prog, digits, min_delta=10.0, patience=3)   # only epoch 1 improves: stops after epoch 4
    assert whole.best_epoch == 1 and len(whole.history) == 4
    path = tmp_path / "ck.npz"
    with pytest.raises(KeyboardInterrupt):
        _run(prog, digits, min_delta=10.0, patience=3, checkpoint=path,
             callback=lambda record: _interrupt_at(record, 3))
    _assert_same_run(_run(prog, digits, min_delta=10.0, patience=3, resume=path), whole)
