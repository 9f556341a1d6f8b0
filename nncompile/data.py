"""Data sets: built-in ones (all offline) and .npz / .csv files, with a held-out split.

Built-ins: ``xor`` (4 points), ``moons`` and ``spirals`` (generated from a seed),
``digits`` (the 8×8 UCI handwritten digits, 1797 images, shipped in the package, pixels
scaled to [0, 1]).  A ``.npz`` file holds arrays ``X`` and ``y``; a ``.csv`` file has one
row per example, the target in the last column, and an optional header line.
"""
from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import DataError

BUILTINS = ("xor", "moons", "spirals", "digits")


@dataclass(frozen=True)
class Dataset:
    """Inputs X (N, d), targets y ((N,) labels or (N, k) values) and where they came from."""

    name: str
    X: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def __iter__(self) -> Iterator[np.ndarray]:
        """`X, y = nc.data.load("digits")`."""
        return iter((self.X, self.y))


def xor() -> Dataset:
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    return Dataset("xor", X, np.array([0, 1, 1, 0]))


def moons(n: int = 400, noise: float = 0.1, seed: int = 0) -> Dataset:
    """Two interleaving half circles, as scikit-learn's make_moons."""
    rng = np.random.default_rng(seed)
    n_out = n // 2
    angle_out, angle_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n - n_out)
    X = np.vstack([np.c_[np.cos(angle_out), np.sin(angle_out)],
                   np.c_[1 - np.cos(angle_in), 1 - np.sin(angle_in) - 0.5]])
    X += rng.normal(scale=noise, size=X.shape)
    y = np.r_[np.zeros(n_out, dtype=np.int64), np.ones(n - n_out, dtype=np.int64)]
    return Dataset("moons", X, y)


def spirals(n_per_class: int = 100, classes: int = 3, noise: float = 0.2, seed: int = 0) -> Dataset:
    """Interleaved spiral arms, one class each (the classic CS231n toy problem)."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n_per_class * classes, 2))
    y = np.zeros(n_per_class * classes, dtype=np.int64)
    for k in range(classes):
        rows = slice(n_per_class * k, n_per_class * (k + 1))
        radius = np.linspace(0.0, 1.0, n_per_class)
        theta = np.linspace(k * 4.0, (k + 1) * 4.0, n_per_class) + rng.normal(scale=noise, size=n_per_class)
        X[rows] = np.c_[radius * np.sin(theta), radius * np.cos(theta)]
        y[rows] = k
    return Dataset("spirals", X, y)


def digits() -> Dataset:
    """8×8 handwritten digits (UCI, 1797 images), pixels scaled from 0..16 to [0, 1]."""
    with resources.files("nncompile").joinpath("datasets", "digits.npz").open("rb") as handle:
        data = np.load(io.BytesIO(handle.read()))
        return Dataset("digits", data["X"].astype(np.float64) / 16.0, data["y"].astype(np.int64))


def load(spec: str) -> Dataset:
    """A built-in name, or a path to a .npz (arrays X, y) or .csv (target last) file."""
    if spec in BUILTINS:
        return {"xor": xor, "moons": moons, "spirals": spirals, "digits": digits}[spec]()
    path = Path(spec)
    if path.suffix.lower() not in (".npz", ".csv"):
        raise DataError(f"unknown data set {spec!r}: use one of {', '.join(BUILTINS)}, a .npz or a .csv file")
    if not path.is_file():
        raise DataError(f"data file {spec} does not exist")
    return _load_npz(path) if path.suffix.lower() == ".npz" else _load_csv(path)


def save_npz(spec: str, path: str | Path) -> Path:
    """Write a data set (a built-in name or a file `load` reads) to a .npz file with arrays X and y,
    the form a generated script's --data reads; written atomically."""
    from .runtime.checkpoint import save_npz_atomic
    ds = load(spec)
    try:
        save_npz_atomic(str(path), {"X": ds.X, "y": ds.y})
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    return Path(path)


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("X", "y") if k not in data.files]
            if missing:
                held = ', '.join(data.files) or 'nothing'
                raise DataError(f"{path.name} has no array {missing[0]!r} (it holds: {held})")
            X, y = data["X"], data["y"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path.name} is not a readable .npz file ({exc})") from None
    return _checked(path.name, X, y)


def _load_csv(path: Path, target: bool = True) -> Dataset:
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark, as spreadsheets write, is skipped
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path.name} cannot be read as text ({exc})") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if rows and not any(_numeric([cell]) for cell in rows[0]):
        rows = rows[1:]  # a header line: no cell of it is a number
    if not rows:
        raise DataError(f"{path.name} has no data rows")
    width = len(rows[0])
    for i, row in enumerate(rows, 1):
        if len(row) != width:
            raise DataError(f"{path.name}: data row {i} has {len(row)} columns, the first has {width}")
        if not _numeric(row):
            raise DataError(f"{path.name}: data row {i} has a value that is not a number")
    if target and width < 2:
        raise DataError(f"{path.name} needs at least two columns (features, then the target)")
    table = np.array([[float(c) for c in row] for row in rows])
    if not target:
        return _checked(path.name, table, np.zeros(len(table)))
    y = table[:, -1]
    if np.all(y == np.round(y)) and np.isfinite(y).all():
        y = y.astype(np.int64)
    return _checked(path.name, table[:, :-1], y)


def _numeric(row: list[str]) -> bool:
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return True


def _checked(name: str, X: np.ndarray, y: np.ndarray) -> Dataset:
    X, y = np.asarray(X), np.asarray(y)
    for label, arr in (("X", X), ("y", y)):
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise DataError(f"{name}: {label} must be numeric, got dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise DataError(f"{name}: {label} must be real numbers, got dtype {arr.dtype}")
    if X.ndim < 2:
        raise DataError(f"{name}: X must be an array of rows: (rows, features), or (rows, C, H, W) for images, got "
                        f"shape {X.shape}")
    if X.shape[0] == 0:
        raise DataError(f"{name}: the data set is empty")
    if y.shape[0] != X.shape[0]:
        raise DataError(f"{name}: X has {X.shape[0]} rows but y has {y.shape[0]}")
    for label, arr in (("X", X), ("y", y)):
        bad = ~np.isfinite(arr.astype(np.float64, copy=False))
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DataError(f"{name}: {label} contains NaN or infinite values (first in row {row})")
    return Dataset(name, X, y)


def load_inputs(spec: str, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs to predict on, and targets when the file has them (to report accuracy).

    A built-in name or .npz (array X, y optional) as for training; a .csv holds `width`
    feature columns, or one more for the target.
    """
    path = Path(spec)
    if spec in BUILTINS:
        ds = load(spec)
        return ds.X, ds.y
    if path.suffix.lower() == ".npz" and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                if "X" not in data.files:
                    raise DataError(f"{path.name} has no array 'X' (it holds: {', '.join(data.files) or 'nothing'})")
                X, y = data["X"], (data["y"] if "y" in data.files else None)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{path.name} is not a readable .npz file ({exc})") from None
        if y is None:
            return _checked(path.name, X, np.zeros(len(X))).X, None
        ds = _checked(path.name, X, y)
        return ds.X, ds.y
    if path.suffix.lower() == ".csv" and path.is_file():
        features_only = _csv_width(path) == width
        ds = _load_csv(path, target=not features_only)
        return ds.X, None if features_only else ds.y
    return load(spec).X, None  # reports the unknown name or missing file


def _csv_width(path: Path) -> int:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.reader(handle):
                if row and any(c.strip() for c in row):
                    return len(row)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path.name} cannot be read as text ({exc})") from None
    raise DataError(f"{path.name} has no data rows")


def shaped(ds: Dataset, shapes: tuple[tuple[int, ...], ...]) -> Dataset:
    """The data as the model reads it: flat rows become images (N, C, H, W) for a model of one image input
    (``digits`` is then (N, 1, 8, 8)); anything else is left for the model's own checks."""
    if len(shapes) != 1 or len(shapes[0]) < 2 or ds.X.ndim != 2:
        return ds
    width = int(np.prod(shapes[0]))
    if ds.X.shape[1] != width:
        return ds
    return Dataset(ds.name, ds.X.reshape(ds.X.shape[0], *shapes[0]), ds.y)


def split(ds: Dataset, test_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A shuffled (train, test) split; the test part holds round(test_fraction·N) rows."""
    order = np.random.default_rng(seed).permutation(len(ds))
    n_test = int(round(test_fraction * len(ds)))
    if n_test >= len(ds):
        raise DataError(f"holding out {test_fraction:g} of {len(ds)} rows leaves none to train on")
    test, train = order[:n_test], order[n_test:]
    return (Dataset(ds.name, ds.X[train], ds.y[train]), Dataset(ds.name, ds.X[test], ds.y[test]))
