"""Built-in data sets are available offline; files are read with clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nncompile import DataError, data


def test_builtins() -> None:
    assert data.load("xor").X.shape == (4, 2)
    digits = data.load("digits")
    assert digits.X.shape == (1797, 64) and set(np.unique(digits.y)) == set(range(10))
    assert 0.0 <= digits.X.min() and digits.X.max() == 1.0
    moons, spirals = data.load("moons"), data.load("spirals")
    assert moons.X.shape == (400, 2) and set(np.unique(moons.y)) == {0, 1}
    assert spirals.X.shape == (300, 2) and set(np.unique(spirals.y)) == {0, 1, 2}
    assert np.array_equal(data.load("moons").X, moons.X)


def test_csv_with_header_and_npz(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("x1,x2,label\n0.5,1,0\n-1,2,1\n")
    ds = data.load(str(tmp_path / "d.csv"))
    assert ds.X.tolist() == [[0.5, 1.0], [-1.0, 2.0]] and ds.y.tolist() == [0, 1] and ds.y.dtype.kind == "i"
    np.savez(tmp_path / "d.npz", X=np.ones((3, 2)), y=np.array([0.5, 1.5, 2.5]))
    assert data.load(str(tmp_path / "d.npz")).y.dtype.kind == "f"


@pytest.mark.parametrize("content,message", [
    ("", "no data rows"), ("a,b\n", "no data rows"), ("1,2\n3\n", "row 2 has 1 columns"),
    ("1,x\n2,3\n", "not a number"), ("1\n2\n", "at least two columns"), ("1,inf,0\n", "NaN or infinite"),
])
def test_bad_csv(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        data.load(str(tmp_path / "bad.csv"))


def test_bad_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", X=np.ones((2, 2)))
    with pytest.raises(DataError, match="no array 'y'"):
        data.load(str(tmp_path / "a.npz"))
    (tmp_path / "b.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        data.load(str(tmp_path / "b.npz"))
    np.savez(tmp_path / "c.npz", X=np.ones((2, 2)), y=np.ones(3))
    with pytest.raises(DataError, match="2 rows but y has 3"):
        data.load(str(tmp_path / "c.npz"))
    with pytest.raises(DataError, match="unknown data set"):
        data.load("cifar10")


def test_split_is_seeded() -> None:
    ds = data.load("digits")
    train, test = data.split(ds, 0.2, seed=0)
    assert len(test) == 359 and len(train) == 1438
    assert np.array_equal(data.split(ds, 0.2, seed=0)[1].y, test.y)
