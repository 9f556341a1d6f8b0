"""Bad or unusual data: each case is one clear DataError, or a documented, sensible behaviour.

Documented behaviours (README, "Data"): a batch size larger than the data set means one
update per epoch on all rows (the same as mode "gd"); labels need not cover every class, so
a data set with one class trains the model to predict that class; data files are never
unpickled.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from nncompile import DataError, data, nn


@pytest.fixture(scope="module")
def classifier() -> nc.CompiledProgram:
    return nc.compile(nn.Sequential(nn.Dense(8), nn.Tanh(), nn.Dense(4), nn.Softmax(), input_dim=3,
                                    loss=nn.CrossEntropy(), name="robust_ce"))


@pytest.fixture(scope="module")
def regressor() -> nc.CompiledProgram:
    return nc.compile(nn.Sequential(nn.Dense(5), nn.Sigmoid(), nn.Dense(2), input_dim=3, loss=nn.MSE(),
                                    name="robust_mse"))


@pytest.fixture(scope="module")
def binary() -> nc.CompiledProgram:
    return nc.compile(nn.Sequential(nn.Dense(4), nn.Tanh(), nn.Dense(1), nn.Sigmoid(), input_dim=3,
                                    loss=nn.BinaryCrossEntropy(), name="robust_bce"))


X3 = np.arange(12, dtype=float).reshape(4, 3) / 10


def _ragged() -> list:
    return [[1.0, 2.0, 3.0], [1.0, 2.0]]


@pytest.mark.parametrize("X,message", [
    (np.array([[np.nan, 0, 0]] * 4), r"NaN or infinite values \(first in row 0\)"),
    (np.array([[0, 0, 0]] * 3 + [[0, np.inf, 0]]), r"NaN or infinite values \(first in row 3\)"),
    (np.array([[0, 0, -np.inf]] * 4), "NaN or infinite"),
    (X3.astype(complex), "real numbers"),
    (X3.astype(str), "numeric"),
    (X3.astype(object), "numeric"),
    (np.array(["2020-01-01"] * 12, dtype="datetime64[D]").reshape(4, 3), "numeric"),
    (np.zeros(4, dtype=[("a", float), ("b", float), ("c", float)]), "numeric"),
    (None, "numeric"),
    (5.0, "single number"),
    ("abc", "numeric"),
    (_ragged(), "cannot be read as an array"),
    (np.zeros((0, 3)), "empty"),
    (np.zeros((4, 3, 1)), r"shape \(4, 3, 1\)"),
    (np.zeros((4, 2)), r"\(N, 3\)"),
])
def test_bad_inputs(classifier: nc.CompiledProgram, X: object, message: str) -> None:
    params = classifier.init_params(0)
    with pytest.raises(DataError, match=message):
        classifier.loss_and_grad(params, X, np.zeros(4, dtype=int))
    with pytest.raises(DataError, match=message):
        nc.train(classifier, X, np.zeros(4, dtype=int), epochs=1)


@pytest.mark.parametrize("Y,message", [
    (np.array([0, 1, 4, 2]), "label 4 is out of range for 4 classes"),
    (np.array([0, -1, 2, 2]), "label -1 is out of range"),
    (np.array([0, 1.5, 2, 2]), "whole numbers"),
    (np.array([0, np.nan, 2, 2]), "whole numbers"),
    (np.array([0, 1, 2]), "3 rows but inputs have 4"),
    (np.array([0, 1, 2, 3], dtype=complex), "real numbers"),
    (np.array(["a", "b", "c", "d"]), "numeric"),
    (3, "single number"),
    (np.full((4, 4), 0.5), "summing to 1"),
    (np.eye(4)[:, :3], r"targets have shape \(4, 3\)"),
])
def test_bad_class_labels(classifier: nc.CompiledProgram, Y: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        classifier.loss_and_grad(classifier.init_params(0), X3, Y)


@pytest.mark.parametrize("Y,message", [
    (np.array([[0.0, np.nan]] * 4), "NaN or infinite"),
    (np.array([[0.0, np.inf]] * 4), "NaN or infinite"),
    (np.zeros(4), r"targets have shape \(4,\)"),
    (np.zeros((4, 3)), r"targets have shape \(4, 3\)"),
])
def test_bad_regression_targets(regressor: nc.CompiledProgram, Y: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        regressor.loss_and_grad(regressor.init_params(0), X3, Y)


def test_binary_targets_must_be_probabilities(binary: nc.CompiledProgram) -> None:
    with pytest.raises(DataError, match=r"lie in \[0, 1\]"):
        binary.loss_and_grad(binary.init_params(0), X3, np.array([0, 1, 2, 0]))
    loss, _ = binary.loss_and_grad(binary.init_params(0), X3, np.array([True, False, True, True]))
    assert np.isfinite(loss)


@pytest.mark.parametrize("bad,message", [
    (np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), ("w", "numeric"),
])
def test_params_with_garbage_are_refused(classifier: nc.CompiledProgram, bad: object, message: str) -> None:
    params = classifier.init_params(0)
    weights = params["dense1.W"].astype(object if isinstance(bad, str) else float)
    weights[1, 2] = bad
    params["dense1.W"] = weights
    with pytest.raises(DataError, match=rf"params\['dense1.W'\].*{message}"):
        classifier.loss_and_grad(params, X3, np.zeros(4, dtype=int))
    with pytest.raises(DataError, match=message):
        nc.train(classifier, X3, np.zeros(4, dtype=int), params=params, epochs=1)


def test_batch_larger_than_the_data_set_is_one_full_batch(classifier: nc.CompiledProgram) -> None:
    """Documented: batch_size > rows means one update per epoch on every row, exactly mode "gd"."""
    X, y = np.random.default_rng(0).normal(size=(10, 3)), np.arange(10) % 4
    big = nc.train(classifier, X, y, mode="minibatch", batch_size=1000, epochs=3, lr=0.3, evaluate=False)
    gd = nc.train(classifier, X, y, mode="gd", epochs=3, lr=0.3, evaluate=False)
    assert [h["updates"] for h in big.history] == [1, 1, 1]
    for name in gd.params:  # the minibatch order is a permutation; the gradient is the same mean
        np.testing.assert_allclose(big.params[name], gd.params[name], rtol=1e-12, atol=1e-14)


def test_one_class_only_trains_towards_that_class(classifier: nc.CompiledProgram) -> None:
    """Documented: the model's classes come from its output width, not from the labels present."""
    X = np.random.default_rng(1).normal(size=(20, 3))
    result = nc.train(classifier, X, np.full(20, 2), mode="gd", epochs=40, lr=0.5)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] / 2 and all(np.isfinite(losses))
    assert (classifier.predict(result.params, X) == 2).all() and result.history[-1]["accuracy"] == 1.0


def test_a_single_row(classifier: nc.CompiledProgram) -> None:
    for mode in ("gd", "sgd", "minibatch"):
        result = nc.train(classifier, X3[:1], [3], mode=mode, epochs=2)
        assert [h["updates"] for h in result.history] == [1, 1]


def test_validation_data_is_checked_and_split_leaves_rows(classifier: nc.CompiledProgram) -> None:
    y = np.zeros(4, dtype=int)
    with pytest.raises(DataError, match="NaN"):
        nc.train(classifier, X3, y, validation=(np.full((2, 3), np.nan), [0, 1]), epochs=1)
    with pytest.raises(DataError, match="leaves no training rows"):
        nc.train(classifier, X3, y, val_split=0.9, epochs=1)
    ds = data.Dataset("tiny", X3, y)
    with pytest.raises(DataError, match="leaves none to train on"):
        data.split(ds, 0.9)


# -- files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("content,message", [
    (b"", "no data rows"),
    (b"\n\n  \n", "no data rows"),
    (b"a,b,c\n", "no data rows"),
    (b"1,2,0\n1,2\n", "data row 2 has 2 columns, the first has 3"),
    (b"1,2,0\n1,2,0,5\n", "data row 2 has 4 columns"),
    (b"1;2;0\n3;4;1\n", "not a number"),
    (b"1,,0\n", "not a number"),
    (b"1,nan,0\n", "NaN or infinite"),
    (b"1,2,inf\n", "NaN or infinite"),
    (b"\xff\xfe\x00garbage", "cannot be read as text"),
    (b"1\n2\n", "at least two columns"),
])
def test_bad_csv_files(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "d.csv").write_bytes(content)
    with pytest.raises(DataError, match=message):
        data.load(str(tmp_path / "d.csv"))


def test_csv_from_a_spreadsheet(tmp_path: Path) -> None:
    """A byte-order mark, CRLF line ends, quoted numbers and spaces are all read."""
    for header in (b"", b"x1,x2,label\r\n"):
        (tmp_path / "d.csv").write_bytes(b'\xef\xbb\xbf' + header + b'"0.5", 1 ,0\r\n-1,2e0,1\r\n')
        ds = data.load(str(tmp_path / "d.csv"))
        assert ds.X.tolist() == [[0.5, 1.0], [-1.0, 2.0]] and ds.y.tolist() == [0, 1]


class _Payload:
    """Unpickling this would create a file: a data file must never be unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def test_npz_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    target = tmp_path / "PWNED"
    X = np.empty((2, 2), dtype=object)
    X[:] = _Payload(str(target))
    np.savez(tmp_path / "evil.npz", X=X, y=np.zeros(2))
    pickle.dumps(X)  # the payload is real: loading with pickle would run open(...)
    with pytest.raises(DataError, match="not a readable .npz file"):
        data.load(str(tmp_path / "evil.npz"))
    assert not target.exists()


@pytest.mark.parametrize("arrays,message", [
    ({"X": np.zeros((0, 3)), "y": np.zeros(0)}, "empty"),
    ({"X": np.zeros(3), "y": np.zeros(3)}, "array of rows"),   # (images (N, C, H, W) load; the model checks them)
    ({"X": np.zeros((2, 3), dtype=complex), "y": np.zeros(2)}, "real numbers"),
    ({"X": np.zeros((2, 3)), "y": np.array(["a", "b"])}, "numeric"),
    ({"X": np.zeros((2, 3)), "y": np.array([0.0, np.nan])}, "NaN"),
])
def test_bad_npz_contents(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        data.load(str(tmp_path / "d.npz"))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04truncated", b"\x93NUMPY garbage"])
def test_empty_and_truncated_npz_files(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "d.npz").write_bytes(content)
    with pytest.raises(DataError, match="not a readable .npz file"):
        data.load(str(tmp_path / "d.npz"))
