"""The JIT cache under concurrency and damage: real processes compiling at once never import a
half-written module; a damaged, poisoned or stale entry is detected and rebuilt, never imported."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from nncompile import NncompileError, jit, nn

ROOT = Path(__file__).resolve().parent.parent

# Each child compiles the shared model and its own one at the same moment as the others (they
# start together when the parent creates the "go" file), checks its modules, and reports results.
_COMPILER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import nncompile as nc
from nncompile import jit, nn
index, go = int(sys.argv[1]), Path(sys.argv[2])

def model(width, name):
    return nn.Sequential(nn.Dense(width), nn.Tanh(), nn.Dense(3), nn.Softmax(), input_dim=4, loss=nn.CrossEntropy(),
                         l2=0.01, name=name)

print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
results = {}
for width, name in ((5, "shared"), (6 + index, f"own{index}")):
    prog = nc.compile(model(width, name))
    assert jit._verified(prog.source_path) is not None
    X = np.linspace(-1, 1, 24).reshape(6, 4)
    loss, grads = prog.loss_and_grad(prog.init_params(1), X, np.arange(6) % 3)
    results[name] = [float(loss)] + [float(np.abs(g).sum()) for g in grads.values()]
print(json.dumps(results), flush=True)
"""


def _model(width: int, name: str) -> nn.Sequential:
    return nn.Sequential(nn.Dense(width), nn.Tanh(), nn.Dense(3), nn.Softmax(), input_dim=4, loss=nn.CrossEntropy(),
                         l2=0.01, name=name)


@pytest.mark.parametrize("processes", [2, 8])
def test_processes_compiling_at_once_all_get_complete_correct_modules(processes: int, tmp_path: Path) -> None:
    cache, go = tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "NNCOMPILE_CACHE_DIR": str(cache)}
    children = [subprocess.Popen([sys.executable, "-c", _COMPILER, str(i), str(go)], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for i in range(processes)]
    for child in children:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    go.touch()
    outputs = [child.communicate(timeout=600) for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err[-3000:]
    X = np.linspace(-1, 1, 24).reshape(6, 4)
    for i, (out, _) in enumerate(outputs):
        results = json.loads(out)
        for width, name in ((5, "shared"), (6 + i, f"own{i}")):
            prog = nc.compile(_model(width, name))  # this session's own cache: an independent compile
            loss, grads = prog.loss_and_grad(prog.init_params(1), X, np.arange(6) % 3)
            expected = [float(loss)] + [float(np.abs(g).sum()) for g in grads.values()]
            assert results[name] == pytest.approx(expected, rel=1e-13), (i, name)
    entries = sorted(cache.glob("*.py"))
    assert len(entries) == processes + 1
    assert all(jit._verified(path) is not None for path in entries)
    assert not [p.name for p in cache.iterdir() if p.suffix != ".py"], "temporary files left behind"


# Writers rewrite one entry until both readers are done; each reader reads until it has made 300
# reads and seen at least 3 versions (counts, not seconds: the test does not depend on the load).
_STRESS = r"""
import os, sys, time, types
package = types.ModuleType("nncompile"); package.__path__ = [sys.argv[1]]; sys.modules["nncompile"] = package
from nncompile import jit
from pathlib import Path
role, target, folder = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
(folder / f"ready-{os.getpid()}").touch()
deadline = time.time() + 120
while len(list(folder.glob("ready-*"))) < 4 and time.time() < deadline:
    time.sleep(0.001)
count, torn, versions = 0, 0, set()
while time.time() < deadline:
    if role == "writer":
        if len(list(folder.glob("done-*"))) == 2:
            break
        body = f"VALUE = {os.getpid()}.{count}\n" + "# padding\n" * 20000
        jit.write_atomic(target, f"{jit.HEADER}{jit._digest(body)}\n{body}")
    else:
        if count >= 300 and len(versions) >= 3:
            (folder / f"done-{os.getpid()}").touch()
            break
        text = jit._verified(target) if target.exists() else ""
        torn += text is None
        versions.add((text or "").partition("\n")[2][:40])
    count += 1
print(count, torn, len(versions))
"""


def test_readers_never_see_a_partly_written_entry(tmp_path: Path) -> None:
    target = tmp_path / "entry.py"
    procs = [subprocess.Popen([sys.executable, "-c", _STRESS, str(ROOT / "nncompile"), role, str(target),
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for role in ("writer", "writer", "reader", "reader")]
    counts = [tuple(map(int, p.communicate(timeout=180)[0].split())) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    (w1, _, _), (w2, _, _), (r1, torn1, seen1), (r2, torn2, seen2) = counts
    assert w1 >= 1 and w2 >= 1 and r1 >= 300 and r2 >= 300 and seen1 >= 3 and seen2 >= 3, counts
    assert torn1 == torn2 == 0, f"readers saw {torn1 + torn2} torn files"


def _tiny(name: str = "damaged") -> nn.Sequential:
    return nn.Sequential(nn.Dense(3), nn.Tanh(), nn.Dense(1), input_dim=2, loss=nn.MSE(), name=name)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NNCOMPILE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _damage(kind: str, text: str, marker: Path) -> bytes:
    first, _, body = text.partition("\n")
    poison = f"open({str(marker)!r}, 'w').close()\n"
    return {
        "empty": b"",
        "truncated": text[: len(text) // 3].encode(),
        "one byte flipped": text.replace("np.tanh(", "np.sinh(", 1).encode(),
        "not utf-8": b"\xff\xfe" + text.encode()[2:],
        "no header": body.encode(),
        "poisoned body, old header": f"{first}\n{poison}{body}".encode(),
        "poisoned, header of other text": f"{jit.HEADER}{jit._digest('x = 1')}\n{poison}".encode(),
    }[kind]


@pytest.mark.parametrize("kind", ["empty", "truncated", "one byte flipped", "not utf-8", "no header",
                                  "poisoned body, old header", "poisoned, header of other text"])
def test_damaged_entries_are_rebuilt_never_imported(kind: str, cache: Path, tmp_path: Path) -> None:
    first = nc.compile(_tiny())
    path, good = first.source_path, first.source_path.read_text()
    marker = tmp_path / "PWNED"
    path.write_bytes(_damage(kind, good, marker))
    again = nc.compile(_tiny())
    assert not marker.exists(), "a damaged entry was executed"
    assert again.source_path == path and path.read_text() == good
    X = np.array([[0.5, -1.0], [2.0, 0.1]])
    params = first.init_params(0)
    assert again.loss_and_grad(params, X, np.ones(2))[0] == first.loss_and_grad(params, X, np.ones(2))[0]


def test_cache_folder_is_private_and_stale_temporaries_are_removed(cache: Path) -> None:
    prog = nc.compile(_tiny("private"))
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    stale = cache / f".{prog.source_path.name}.abc.tmp"   # left by a writer killed long ago
    fresh = cache / f".{prog.source_path.name}.def.tmp"   # a writer at work right now
    stale.write_text("partial")
    fresh.write_text("partial")
    old = time.time() - 2 * jit.STALE_SECONDS
    os.utime(stale, (old, old))
    prog.source_path.unlink()
    nc.compile(_tiny("private"))
    assert not stale.exists() and fresh.exists()


def test_unwritable_cache_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("NNCOMPILE_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(NncompileError, match="cannot write the compile cache .*set NNCOMPILE_CACHE_DIR") as info:
        nc.compile(_tiny("nowhere"))
    assert "\n" not in str(info.value)


def test_an_edited_compiler_does_not_reuse_old_modules(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = nc.compile(_tiny("edited")).source_path
    monkeypatch.setattr(jit, "compiler_digest", lambda: "a different compiler")
    after = nc.compile(_tiny("edited")).source_path
    assert before != after and before.exists() and after.exists()
