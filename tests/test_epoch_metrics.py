"""Epoch figures from the steps themselves, and a loop that adds nothing to the steps' work.

The running loss and accuracy of an epoch are checked against a hand-made reference (the
same batches, the weights before each update, NumPy's argmax); the per-element binary
accuracy; that no second pass is made unless asked; that full-batch data is loaded once
and survives other users of the same workspace; and that rolling back by replaying epochs
gives the same bits as keeping a copy every epoch.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import nncompile as nc
from nncompile import data, nn
from nncompile.runtime import loop


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    ds = data.digits()
    return data.Dataset("digits", ds.X[:203], ds.y[:203])


def _reference_epochs(prog: nc.CompiledProgram, X: np.ndarray, T: np.ndarray, correct, batch: int, epochs: int,
                      lr: float, seed: int) -> list[tuple[float, float]]:
    """(mean loss, accuracy) per epoch, by hand: the same shuffles and batches, plain SGD from
    loss_and_grad, the loss and the correct predictions of the weights before each update."""
    params, rng, out = prog.init_params(seed), np.random.default_rng(seed), []
    for _ in range(epochs):
        order, losses, hits = rng.permutation(len(X)), [], 0
        for start in range(0, len(X), batch):
            idx = order[start:start + batch]
            loss, grads = prog.loss_and_grad(params, X[idx], T[idx])
            hits += correct(prog.forward(params, X[idx]), T[idx])
            losses.append(float(loss))
            params = {k: v - lr * grads[k] for k, v in params.items()}
        out.append((float(np.mean(losses)), hits))
    return out


def test_running_loss_and_accuracy_come_from_the_updates(digits_prog: nc.CompiledProgram, digits) -> None:
    T = np.eye(10)[digits.y]
    result = nc.train(digits_prog, digits.X, digits.y, batch_size=16, epochs=3, lr=0.3, seed=4)
    expected = _reference_epochs(digits_prog, digits.X, T,
                                 lambda out, t: int((out.argmax(1) == t.argmax(1)).sum()), 16, 3, 0.3, 4)
    for record, (loss, hits) in zip(result.history, expected):
        assert record["loss"] == pytest.approx(loss, rel=1e-12)
        assert record["accuracy"] == hits / len(digits.X)
        assert set(record) == {"epoch", "loss", "updates", "lr", "accuracy"}  # no evaluation pass by default


def test_binary_accuracy_counts_every_output_element(digits) -> None:
    prog = nc.compile(nn.Sequential(nn.Dense(8), nn.Tanh(), nn.Dense(3), nn.Sigmoid(), input_dim=64,
                                    loss=nn.BinaryCrossEntropy(), name="three_flags"))
    Y = np.stack([digits.y % 2, digits.y < 5, digits.y == 0], axis=1).astype(float)
    result = nc.train(prog, digits.X, Y, batch_size=20, epochs=2, lr=0.5, seed=1)
    expected = _reference_epochs(prog, digits.X, Y, lambda out, t: int(((out > 0.5) == (t > 0.5)).sum()),
                                 20, 2, 0.5, 1)
    for record, (loss, hits) in zip(result.history, expected):
        assert record["loss"] == pytest.approx(loss, rel=1e-12)
        assert record["binary_accuracy"] == hits / Y.size
    out = prog.forward(result.params, digits.X)
    assert prog.evaluate(result.params, digits.X, Y)["binary_accuracy"] == ((out > 0.5) == (Y > 0.5)).mean()


def test_an_exact_evaluation_per_epoch_only_when_asked(digits_prog: nc.CompiledProgram, digits,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    evaluated = []
    original = nc.runtime.engine.Engine.evaluate

    def counted(engine: object, X: np.ndarray, *args: object, **kwargs: object) -> object:
        evaluated.append(X.shape[0])
        return original(engine, X, *args, **kwargs)
    with monkeypatch.context() as patched:
        patched.setattr(nc.runtime.engine.Engine, "evaluate", counted)
        nc.train(digits_prog, digits.X, digits.y, epochs=2, lr=0.1)
    # one batch of the starting weights (the divergence check's reference), no pass over the data
    assert evaluated == [32]
    result = nc.train(digits_prog, digits.X, digits.y, epochs=2, lr=0.1, evaluate=True)
    exact = digits_prog.evaluate(result.params, digits.X, digits.y)
    assert result.history[-1]["train_loss"] == pytest.approx(exact["loss"], rel=1e-13)
    assert result.history[-1]["train_accuracy"] == exact["accuracy"]
    plain = nc.train(digits_prog, digits.X, digits.y, epochs=2, lr=0.1)
    assert [h["accuracy"] for h in plain.history] == [h["accuracy"] for h in result.history]


def test_full_batch_rows_loaded_once_survive_a_validation_set_of_the_same_size(digits_prog: nc.CompiledProgram,
                                                                               digits) -> None:
    """gd keeps the rows in the step's buffers; evaluating 100 other rows in the same workspace must not
    leave them there: the run equals plain gradient descent on the training rows alone."""
    X, y, Xv, yv = digits.X[:100], digits.y[:100], digits.X[100:200], digits.y[100:200]
    result = nc.train(digits_prog, X, y, mode="gd", epochs=4, lr=0.5, validation=(Xv, yv), diagnostics=True)
    params = digits_prog.init_params(0)
    for _ in range(4):
        _, grads = digits_prog.loss_and_grad(params, X, y)
        params = {k: v - 0.5 * grads[k] for k, v in params.items()}
    for key in params:
        np.testing.assert_allclose(result.params[key], params[key], rtol=1e-12, atol=1e-15)


@pytest.fixture
def rare_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rollback copies as rare as the replay bound allows, so that rolling back replays epochs."""
    monkeypatch.setattr(loop, "COPY_RATIO", 1e9)


@pytest.mark.parametrize("lr, growth", [(0.03, loop.GROWTH_LIMIT), (3.0, math.inf)], ids=["growth", "overflow"])
def test_divergence_replays_to_the_last_good_epoch(rare_copies: None, lr: float, growth: float,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the loss growing 1000-fold (a finite loss), or, with that check off, by overflow."""
    monkeypatch.setattr(loop, "GROWTH_LIMIT", growth)
    lin = nc.compile(nn.Sequential(nn.Dense(1), input_dim=1, loss=nn.MSE(), name="diverging_line"))
    X = np.linspace(-1, 1, 20).reshape(-1, 1) * 10
    with pytest.raises(nc.DivergenceError) as info:
        nc.train(lin, X, 3 * X[:, 0], mode="gd", epochs=500, lr=lr)
    partial = info.value.result
    assert ("grew from" in str(info.value)) == (growth != math.inf)
    good = nc.train(lin, X, 3 * X[:, 0], mode="gd", epochs=len(partial.history), lr=lr)
    assert len(partial.history) > 3 and partial.history == good.history
    for key in good.params:
        assert partial.params[key].tobytes() == good.params[key].tobytes()


def test_ctrl_c_replays_to_the_epoch_start_and_resumes_bit_identically(rare_copies: None, digits_prog, digits,
                                                                     tmp_path) -> None:
    settings = dict(mode="minibatch", batch_size=50, epochs=9, lr=0.01, optimizer="adam", seed=7)
    whole = nc.train(digits_prog, digits.X, digits.y, **settings)
    updates = {"n": 0}

    def ctrl_c(rows: int) -> None:  # in the middle of epoch 7 (5 updates an epoch)
        updates["n"] += 1
        if updates["n"] == 6 * 5 + 3:
            raise KeyboardInterrupt

    path = tmp_path / "ck.npz"
    with pytest.raises(KeyboardInterrupt):
        nc.train(digits_prog, digits.X, digits.y, checkpoint=path, checkpoint_every=100, on_batch=ctrl_c, **settings)
    resumed = nc.train(digits_prog, digits.X, digits.y, resume=path, **settings)
    assert len(resumed.history) == 9 and resumed.history == whole.history
    for key in whole.params:
        assert resumed.params[key].tobytes() == whole.params[key].tobytes()


def test_copy_spacing_follows_the_cost() -> None:
    assert loop.copy_interval(1e-3, 10e-3) == 5        # 50 x a 1 ms copy spread over 10 ms epochs
    assert loop.copy_interval(1e-6, 10e-3) == 1        # cheap copies: every epoch
    assert loop.copy_interval(0.5, 0.1) == 10          # at most REPLAY_SECONDS (1 s) of epochs to replay
    assert loop.copy_interval(1.0, 5.0) == 1


def test_the_graph_view_shows_the_count_and_the_gradient_blocks(digits_prog: nc.CompiledProgram) -> None:
    from nncompile.explain.graph import dot, table
    program = digits_prog.graph
    text = table(program, "gradient", 32)
    blocks = [line for line in text.splitlines() if "GradReady" in line]
    assert [line.split()[-3] for line in blocks] == [f"grads[{a}:{b}]" for a, b in digits_prog.module.GRAD_BLOCKS]
    assert "CountCorrect" in table(program, "loss", 32) and "CountCorrect" not in table(program, "loss_and_grad", 32)
    assert "are final" in dot(program, "gradient")


@pytest.mark.parametrize("copies", ["every epoch", "rare"])
def test_a_last_update_that_overflows_is_blamed_on_its_own_epoch(copies: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parameters are not checked every epoch: an epoch whose last update overflows (its loss, computed
    before the update, was finite) shows up as a NaN loss at the next epoch's first update; a replay
    finds the epoch before to blame, and its record goes."""
    monkeypatch.setattr(loop, "COPY_RATIO", 1e9 if copies == "rare" else 0.0)
    prog = nc.compile(nn.Sequential(nn.Dense(1), input_dim=2, loss=nn.MSE(), name="overflowing_line"))
    X = np.random.default_rng(0).normal(size=(40, 2))
    start = prog.init_params(0)
    seen: list[int] = []
    with pytest.raises(nc.DivergenceError) as info:
        nc.train(prog, X, X[:, 0] * 5 + 3, mode="gd", epochs=3, lr=1e308, params=start,
                 callback=lambda record: seen.append(record["epoch"]))
    message = "training diverged in epoch 1: the parameters became NaN or infinite at update 1 "
    assert str(info.value).startswith(message) and info.value.result.history == [] and seen == [1]
    for name, value in start.items():
        assert info.value.result.params[name].tobytes() == value.tobytes()
