"""What the worker runs: CUDA programs, through the CuPy stand-in, against the NumPy backend.

Each scenario compiles with the public API (`nc.compile(model, backend="cuda")` reaches
the stand-in through ``import cupy``), drives the programs the way the runtime does
(`Engine` workspaces, entry points, `nc.train`, the CLI) and returns plain data: the
largest relative difference per compared quantity, allocation records, messages.  The
tests in tests/test_cuda_host*.py judge them.
"""
from __future__ import annotations

import contextlib
import io
import runpy
import sys
import types
from pathlib import Path

import numpy as np

import nncompile as nc
from cuda_models import large, matrix
from nncompile.cli import main as cli_main
from nncompile.gradcheck import random_batch
from nncompile.program import CompiledProgram
from nncompile.runtime.engine import vector_bytes
from nncompile.runtime.loop import hyperparameters

from . import cupy_standin

_PROGRAMS: dict = {}


def _models() -> dict:
    models = matrix()
    models.update({name: model for name, (model, _) in large().items()})
    return models


MODELS = _models()


def programs(model: str, dtype: str) -> tuple[CompiledProgram, CompiledProgram]:
    """(CUDA program, NumPy program) for a model of cuda_models, compiled once per worker.

    The reference is the NumPy backend's plain lowering (``optimize=False``): no fusion
    and no rewrite in common with the CUDA kernels (and the optimised lowering is held
    to it by tests/test_numpy_backend.py).
    """
    if (model, dtype) not in _PROGRAMS:
        gpu = nc.compile(MODELS[model], backend="cuda", dtype=dtype)
        cupy_standin.DEVICE.builder.submit(gpu.module.CUDA_SOURCE)   # g++ runs while SymPy derives
        _PROGRAMS[model, dtype] = (gpu, nc.compile(MODELS[model], dtype=dtype, optimize=False))
    return _PROGRAMS[model, dtype]


def prepare(pairs: list[tuple[str, str]]) -> int:
    """Derive the CUDA programs of `pairs` and queue their host builds, in that order; returns how many."""
    for model, dtype in pairs:
        gpu = nc.compile(MODELS[model], backend="cuda", dtype=dtype)
        cupy_standin.DEVICE.builder.submit(gpu.module.CUDA_SOURCE)
    return len(pairs)


def _plain(value: object) -> np.ndarray:
    """A NumPy view of a device array (no copy), or the value (a tuple of them too) as an array."""
    if isinstance(value, (tuple, list)):
        return np.array([_plain(v) for v in value])
    return value._a if isinstance(value, cupy_standin.ndarray) else np.asarray(value)


def relative(got: object, want: object) -> float:
    """max |got - want| / max |want|; inf where shapes or the positions of non-finite values differ."""
    got, want = _plain(got), _plain(want)
    if got.shape != want.shape:
        return float("inf")
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)):
        return float("inf")
    if not finite.all():
        got, want = got[finite], want[finite]
    if got.size == 0:
        return 0.0
    scale = max(float(np.abs(want).max()), 1e-30)
    return float(np.abs(got.astype(np.float64) - want).max()) / scale if got.dtype != want.dtype else \
        float(np.abs(got - want).max()) / scale


def _entries(module: object) -> list[str]:
    return ["forward", "loss", "loss_and_grad", "diagnose"] + [f"step_{name}" for name in module.OPTIMIZERS]


def _compare(errors: dict, key: str, engines: list, workspaces: list, results: list, entry: str) -> None:
    ref, gpu = engines
    if entry != "forward":
        errors[f"{key} result"] = relative(results[1], results[0])
    errors[f"{key} output"] = relative(workspaces[1].output, workspaces[0].output)
    if entry != "forward" and entry != "loss":
        errors[f"{key} grads"] = relative(gpu.grads, ref.grads)
    if entry == "diagnose":
        for k, (a, b) in enumerate(zip(workspaces[1].probes, workspaces[0].probes)):
            errors[f"{key} probe {k}"] = relative(a, b)
    if entry.startswith("step_"):
        errors[f"{key} params"] = relative(gpu.params, ref.params)
        for name in ref.state:
            errors[f"{key} state {name}"] = relative(gpu.state[name], ref.state[name])


#: Adam's and RMSprop's update g/(sqrt(v) + eps) has slope lr/eps at g = 0: with the
#: default eps (1e-8) a gradient entry that is zero up to round-off (1e-18 apart between
#: two correct backends) moves its parameter 1e-11 apart after one step, more in float32.
#: The comparisons use eps = 1e-3, a hyperparameter the kernels read like any other.
WELL_CONDITIONED = {"eps": 1e-3}


def batch(prog: CompiledProgram, rows: int, seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs and targets; regression targets sit 3 away from the outputs, since the loss
    of one example whose output happens to sit on its target is all cancellation (in float32,
    hundreds of ulps apart between two correct programs)."""
    X, Y = random_batch(prog, rows, seed=seed)
    if prog.module.TARGET_ENCODING not in ("onehot", "binary"):
        Y = Y + 3.0
    return ([x * scale for x in X] if isinstance(X, list) else X * scale), Y   # a list: one array per input


def compare_programs(gpu: CompiledProgram, ref: CompiledProgram, batches, calls: int = 3, seed: int = 0,
                     scale: float = 1.0) -> dict[str, float]:
    """Every entry point of both programs on the same data: {quantity: relative difference},
    and the bytes of device memory the CUDA calls allocated (the driver allocates in build only).

    Each entry point is called `calls` times on one workspace (eager, captured into a
    graph, replayed); steps count 1, 2, 3, ... as in training, the last with a new
    learning rate, starting from the same parameters and zero optimizer state, and each
    later step from the reference's parameters and state (a few steps of Adam or RMSprop
    on one example amplify round-off by orders of magnitude; training runs in
    `training` compare the accumulated result).
    """
    params = ref.init_params(seed, scheme="xavier")
    engines = [ref.engine(params), gpu.engine(params)]
    for engine in engines:
        for optimizer in ref.module.OPTIMIZERS:
            engine.reset_state(optimizer)
    start = ref.flatten(params)
    errors: dict[str, float] = {}
    device, allocated = cupy_standin.DEVICE, 0
    for n in batches:
        Xc, T = ref.prepare(*batch(ref, n, seed + n, scale))
        workspaces = [engine.workspace(n) for engine in engines]
        for engine, ws in zip(engines, workspaces):
            ws.X[...] = engine.device(Xc)
            ws.T[...] = engine.device(T)
        for entry in _entries(ref.module):
            hyper = ()
            if entry.startswith("step_"):
                _, defaults = ref.module.OPTIMIZERS[entry[5:]]
                hyper = hyperparameters(ref.module, entry[5:], {k: v for k, v in WELL_CONDITIONED.items()
                                                                 if k in defaults})
            for engine in engines:
                engine.params[...] = engine.device(start)
                for state in engine.state.values():
                    state.fill(0.0)
            for call in range(calls):
                if call:  # each step from the same parameters and state: differences do not compound
                    gpu_engine, ref_engine = engines[1], engines[0]
                    gpu_engine.params[...] = gpu_engine.device(ref_engine.params)
                    for name, state in ref_engine.state.items():
                        gpu_engine.state[name][...] = gpu_engine.device(state)
                args = ()
                if entry.startswith("step_"):
                    # small steps: a large Adam or RMSprop step saturates a softmax, and a loss
                    # near zero (log-sum-exp minus the target logit) is all cancellation
                    lr = 0.001 if calls > 1 and call == calls - 1 else 0.002
                    args = (lr, call + 1, *hyper)
                results = [getattr(workspaces[0], entry)(*args)]
                before = len(device.allocations)
                results.append(getattr(workspaces[1], entry)(*args))
                allocated += sum(nbytes for _, _, nbytes in device.allocations[before:])
                _compare(errors, f"n={n} {entry} call {call + 1}:", engines, workspaces, results, entry)
    errors["bytes allocated by the calls"] = float(allocated)   # the driver promises none
    return errors


def entry_points(model: str, dtype: str, batches=(1, 7, 256), calls: int = 3, scale: float = 1.0) -> dict:
    """compare_programs for a model of the CUDA test set."""
    return compare_programs(*programs(model, dtype), batches, calls, scale=scale)


def grid_stride(model: str, dtype: str, calls: int = 1) -> dict:
    """A model of cuda_models.large() at its batch size: the differences, and the launches made."""
    _, batch = large()[model]
    device = cupy_standin.DEVICE
    device.record, device.launches = True, []
    try:
        errors = entry_points(model, dtype, (batch,), calls)
    finally:
        device.record = False
    return {"errors": errors, "launches": device.launches, "batch": batch}


def training(model: str, dtype: str, **settings: object) -> dict:
    """nc.train on both backends from the same start: differences in parameters and history."""
    gpu, ref = programs(model, dtype)
    X, Y = random_batch(ref, settings.pop("rows", 50), seed=5)
    runs = [nc.train(prog, X, Y, seed=3, **settings) for prog in (ref, gpu)]
    errors = {f"params {name}": relative(runs[1].params[name], runs[0].params[name]) for name in runs[0].params}
    for epoch, (a, b) in enumerate(zip(runs[0].history, runs[1].history)):
        for key in ("loss", "val_loss", "accuracy", "val_accuracy", "train_loss"):
            if key in a:
                errors[f"epoch {epoch + 1} {key}"] = relative(b.get(key, np.nan), a[key])
        if "diagnostics" in a:
            for layer, report in a["diagnostics"].items():
                for name, value in report.items():
                    if isinstance(value, float):
                        errors[f"epoch {epoch + 1} diagnostics {layer} {name}"] = relative(
                            b["diagnostics"][layer][name], value)
    errors["epochs"] = float(len(runs[0].history) != len(runs[1].history) or not runs[0].history)
    return errors


# -- memory ---------------------------------------------------------------------------------
def _allocated_during(action) -> int:
    device = cupy_standin.DEVICE
    before = len(device.allocations)
    action()
    return sum(nbytes for _, _, nbytes in device.allocations[before:])


def allocations(model: str, dtype: str, batches=(1, 7, 300)) -> dict:
    """{piece: (bytes the driver allocated, bytes the program said it needs)}: the parameter and
    gradient vectors, each optimizer's state, and build(n)'s buffers for each batch size."""
    gpu, _ = programs(model, dtype)
    module = gpu.module
    itemsize = np.dtype(dtype).itemsize
    found: dict = {}
    holder = {}
    found["params and grads"] = (_allocated_during(lambda: holder.setdefault("engine", gpu.engine())),
                                 vector_bytes(module))
    engine = holder["engine"]
    for optimizer, (names, _) in module.OPTIMIZERS.items():
        new = len([name for name in names if name not in engine.state])
        found[f"state of {optimizer}"] = (_allocated_during(lambda: engine.reset_state(optimizer)),
                                          new * module.N_PARAMS * itemsize)
    for n in batches:
        found[f"build({n})"] = (_allocated_during(lambda: engine.workspace(n)), module.workspace_bytes(n))
    return found


@contextlib.contextmanager
def _capacity(nbytes: int):
    device = cupy_standin.DEVICE
    saved, device.capacity = device.capacity, device.live + nbytes
    try:
        yield device
    finally:
        device.capacity = saved


def memory_refusal(model: str, dtype: str, free: int, rows: int = 64, **settings: object) -> dict:
    """nc.train with `free` bytes of device memory left: the error, and the shapes allocated."""
    gpu, ref = programs(model, dtype)
    X, Y = random_batch(ref, rows, seed=1)
    with _capacity(free) as device:
        before = len(device.allocations)
        try:
            nc.train(gpu, X, Y, **settings)
            error = None
        except nc.DataError as exc:
            error = str(exc)
        shapes = [shape for shape, _, _ in device.allocations[before:]]
    return {"error": error, "allocated": shapes}


def cli(args: list[str], free: int | None = None) -> dict:
    """The command line, in this process (so `--backend cuda` finds the stand-in): status and output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if free is not None:
            stack.enter_context(_capacity(free))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            status = cli_main(args)
        except SystemExit as exc:
            status = exc.code
    return {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue()}


# -- planted bugs ---------------------------------------------------------------------------
def planted(model: str, dtype: str, edits: list[tuple[str, str]], batches=(7, 256), calls: int = 3) -> dict:
    """A CUDA program whose generated text (kernels or driver) is edited, compared as above.

    Each edit (old, new) must apply: a template change that removes `old` fails here
    rather than leaving the planted bug unplanted.
    """
    gpu, ref = programs(model, dtype)
    text = gpu.source
    for old, new in edits:
        if old not in text:
            raise AssertionError(f"the planted edit {old!r} matches nothing in the generated program")
        text = text.replace(old, new)
    module = types.ModuleType(f"planted_{model}_{dtype}")
    exec(compile(text, f"<planted {model} {dtype}>", "exec"), module.__dict__)  # noqa: S102 (our own text)
    mutant = CompiledProgram(MODELS[model], module, gpu.source_path, "cuda", dtype)
    return compare_programs(mutant, ref, batches, calls)


# -- the command line and standalone scripts ------------------------------------------------
def scripts(model_file: str, args: list[str], folder: str, dtype: str = "float64") -> dict:
    """`nncompile generate` for numpy and cuda, each script run in this process with `args`
    (plus --save): {backend: {"status", "stdout", "stderr", "weights"}}."""
    results = {}
    for backend in ("numpy", "cuda"):
        path = Path(folder) / f"train_{backend}.py"
        made = cli(["generate", model_file, "--backend", backend, "--dtype", dtype, "-o", str(path)])
        if made["status"] != 0:
            raise AssertionError(f"generate --backend {backend} failed: {made['stderr']}")
        weights = Path(folder) / f"{backend}.npz"
        out, err = io.StringIO(), io.StringIO()
        argv = sys.argv
        sys.argv = [str(path), *args, "--save", str(weights)]
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                runpy.run_path(str(path), run_name="__main__")
            status = 0
        except SystemExit as exc:
            status = exc.code
        finally:
            sys.argv = argv
        saved = dict(np.load(weights)) if weights.exists() else {}
        results[backend] = {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue(), "weights": saved}
    return results
