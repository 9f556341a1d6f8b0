"""Code generation is deterministic: the same model gives the same bytes in every process and on
every machine (no dict order, hash seed, timestamp, path or user name in the output)."""
from __future__ import annotations

import getpass
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import nncompile as nc
from nncompile.generate import standalone

ROOT = Path(__file__).resolve().parent.parent

# Models touching every part of the generator: custom formulas (strings, Max, Piecewise,
# heaviside), every loss, both penalties, hidden softmax, both dtypes.
_MODELS = r"""
from nncompile import nn

def models():
    yield nn.Sequential(nn.Dense(7), nn.ReLU(), nn.Dense(5), nn.Activation("x*tanh(log(1 + exp(x)))", name="mish"),
                        nn.Dense(3), nn.Softmax(), input_dim=4, loss=nn.CrossEntropy(), l1=0.01, l2=0.1, name="a")
    yield nn.Sequential(nn.Dense(6), nn.LeakyReLU(0.2), nn.Dense(4), nn.Softmax(), nn.Dense(2), nn.Sigmoid(),
                        input_dim=3, loss=nn.BinaryCrossEntropy(), name="b")
    yield nn.Sequential(nn.Dense(5), nn.Activation("max(x, 0.2*x) + heaviside(x)*sin(x)", name="odd"), nn.Dense(2),
                        input_dim=2, loss=nn.Loss("log(cosh(y - t))", name="logcosh"), l2=1e-3, name="c")
    yield nn.Sequential(nn.Dense(8), nn.Softplus(), nn.Dense(3), input_dim=5, loss=nn.SoftmaxCrossEntropy(), name="d")
"""

_DIGESTS = _MODELS + r"""
import hashlib, sys
import nncompile as nc
from nncompile.generate import standalone
for model in models():
    for dtype in ("float64", "float32"):
        script = standalone(model, dtype=dtype, filename="train.py")
        module = nc.compile(model, dtype=dtype).source
        digests = [hashlib.sha256(text.encode()).hexdigest() for text in (script, module)]
        print(model.name, dtype, *digests)
"""


def test_same_model_same_bytes_whatever_the_hash_seed(tmp_path: Path) -> None:
    outputs = set()
    for seed in ("0", "1", "4242", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "NNCOMPILE_CACHE_DIR": str(tmp_path / seed)}
        done = subprocess.run([sys.executable, "-c", _DIGESTS], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.add(done.stdout)
    assert len(outputs) == 1 and len(next(iter(outputs)).splitlines()) == 8


def test_generated_text_holds_nothing_of_the_machine(tmp_path: Path, monkeypatch) -> None:
    """Nothing of this machine in the text, and a second rendering in a fresh cache (not a cache hit
    returning the same file) gives the same bytes."""
    namespace: dict = {}
    exec(compile(_MODELS, "models", "exec"), namespace)  # noqa: S102  (our own test source)
    machine = {str(ROOT), str(Path.home()), str(tmp_path), getpass.getuser(), socket.gethostname(),
               sys.version.split()[0], os.environ.get("NNCOMPILE_CACHE_DIR", "")} - {"", "root", "/"}
    for model in namespace["models"]():
        monkeypatch.setenv("NNCOMPILE_CACHE_DIR", str(tmp_path / model.name / "first"))
        first = nc.compile(model)
        monkeypatch.setenv("NNCOMPILE_CACHE_DIR", str(tmp_path / model.name / "second"))
        second = nc.compile(model)
        assert first.source_path.parent != second.source_path.parent  # rendered twice, not reused
        assert first.source_path.read_bytes() == second.source_path.read_bytes()
        script = standalone(model, filename="train.py")
        assert script == standalone(model, filename="train.py")
        for text in (script, first.source):
            found = [m for m in machine if m in text]
            assert not found, f"{model.name}: the generated code contains {found}"
            assert not re.search(r"\b20\d\d-\d\d-\d\d\b|\b\d\d:\d\d:\d\d\b", text), "a timestamp"
