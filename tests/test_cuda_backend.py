"""The CUDA backend without a GPU: fusion plan, driver control flow, and one-line errors.

Nothing here runs a kernel: test_cuda_host.py runs them on the CPU, and what needs a device
is in test_cuda_gpu.py (marked gpu).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from cuda_models import matrix
from nncompile.backends import cuda
from nncompile.backends.cuda.cupy_support import Entry, device_problem, next_key, scalar_key
from nncompile.backends.templating import render
from nncompile.cli import main
from nncompile.derive import derive

ROOT = Path(__file__).resolve().parent.parent
PROBLEM = device_problem()
no_device = pytest.mark.skipif(PROBLEM is None, reason="CuPy and a CUDA device are present here")


@pytest.fixture(scope="module")
def digits_context() -> dict:
    model = matrix()["digits"]
    return cuda.context(derive(model, "float32").program)


def _kernel_launches(ctx: dict, function: str) -> list[dict]:
    fn = next(f for f in ctx["functions"] if f["name"] == function)
    return [launch for launch in fn["launches"] if launch["code"].startswith("k.")]


def test_bias_add_and_activation_are_one_kernel(digits_context: dict) -> None:
    launches = _kernel_launches(digits_context, "forward")
    assert len(launches) == 2  # bias + tanh, bias + softmax: the rest are two cuBLAS products
    first, second = (" ".join(launch["formulas"]) for launch in launches)
    assert "bias add" in first and "tanh(z1)" in first
    assert "bias add" in second and "rowmax" in second and "rowsum" in second and "p2/sum_z2" in second


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "rmsprop"])
def test_every_optimizer_updates_all_parameters_in_one_launch(digits_context: dict, optimizer: str) -> None:
    launches = _kernel_launches(digits_context, f"step_{optimizer}")
    updates = [launch for launch in launches if any(f.startswith("update:") for f in launch["formulas"])]
    n_params = digits_context["program"].n_params
    assert len(updates) == 1 and f"grid({n_params})" in updates[0]["code"]
    assert all(f.startswith("update:") for f in updates[0]["formulas"])
    advance = [launch for launch in launches if launch["code"].startswith("k.nc_advance")]
    assert len(advance) == (1 if optimizer == "adam" else 0)  # only Adam's rule reads the step count


def test_output_delta_is_one_kernel_and_products_are_cublas(digits_context: dict) -> None:
    fn = next(f for f in digits_context["functions"] if f["name"] == "loss_and_grad")
    codes = [launch["code"] for launch in fn["launches"]]
    # two forward products, dW = x.T @ dz and db = dz.T @ ones per layer, one dz @ W.T between the layers
    assert sum(code.startswith("gemm(") for code in codes) == 5 and sum(code.startswith("gemv(") for code in codes) == 2
    delta = [launch for launch in fn["launches"] if any("softmax + cross-entropy" in f for f in launch["formulas"])]
    assert len(delta) == 1 and delta[0]["code"].startswith("k.")
    loss = [launch for launch in fn["launches"] if any(f.startswith("loss:") for f in launch["formulas"])]
    assert len(loss) == 1 and "ONE, TOTAL_BLOCK" in loss[0]["code"]


def test_every_kernel_statement_carries_its_formula(digits_context: dict) -> None:
    source = render("cuda/kernels.cu.j2", **digits_context)
    for kernel in digits_context["kernels"]:
        body = source[source.index(kernel["source"]):][:len(kernel["source"])]
        stores = [line for line in body.splitlines() if "] = " in line and "//" not in line]
        assert stores and all(f in source for f in kernel["formulas"])
    assert source.count("// k") == len(digits_context["kernels"])


def test_scalars_upload_only_when_a_step_does_not_follow_the_last() -> None:
    adam = (0.01, 5, 0.9, 0.999, 1e-8)
    expected = next_key(adam, 1, True)
    assert expected == scalar_key((0.01, 6, 0.9, 0.999, 1e-8), 1, True)   # consecutive: no copy
    assert expected != scalar_key((0.02, 6, 0.9, 0.999, 1e-8), 1, True)   # new learning rate
    assert expected != scalar_key((0.01, 1, 0.9, 0.999, 1e-8), 1, True)   # training restarted
    assert next_key((0.1, 5), 1, False) == scalar_key((0.1, 999), 1, False)  # step unread: ignored


def test_entry_refuses_to_run_without_its_optimizer_state() -> None:
    calls = []
    entry = Entry("step_adam", lambda: calls.append(1), result="L", graphs=False, needs={"state_m": None, "state_v": 1})
    with pytest.raises(RuntimeError, match="step_adam needs optimizer state state_m"):
        entry(0.1, 1, 0.9, 0.999, 1e-8)
    assert not calls
    plain = Entry("forward", lambda: calls.append(1), result="out", graphs=False)
    assert plain() == "out" and plain() == "out" and calls == [1, 1]


def test_cuda_graphs_can_be_turned_off() -> None:
    program = derive(matrix()["xor"]).program
    assert "CUDA_GRAPHS = True" in cuda.render_module(program)
    assert "CUDA_GRAPHS = False" in cuda.render_module(program, cuda_graphs=False)


def test_cuda_generation_is_deterministic_across_processes(tmp_path: Path) -> None:
    code = ("import sys; from nncompile import load_model; from nncompile.generate import standalone;"
            "sys.stdout.write(standalone(load_model(sys.argv[1])[0], 'cuda', 'float32', filename='x.py'))")
    outputs = {subprocess.run([sys.executable, "-c", code, str(ROOT / "examples" / "mish.py")], capture_output=True,
                              text=True, check=True, env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin",
                                                          "PYTHONPATH": str(ROOT),
                                                          "NNCOMPILE_CACHE_DIR": str(tmp_path)}).stdout
               for seed in ("0", "1", "12345")}
    assert len(outputs) == 1


def test_generate_writes_the_committed_standalone_cuda_script(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "xor_cuda.py"
    assert main(["generate", str(ROOT / "examples" / "xor.py"), "--backend", "cuda", "-o", str(out)]) == 0
    assert "needs only NumPy and CuPy" in capsys.readouterr().err
    assert out.read_bytes() == (ROOT / "generated" / "xor_cuda.py").read_bytes()


@no_device
def test_compile_for_cuda_without_cupy_or_gpu_says_what_is_missing() -> None:
    with pytest.raises(nc.BackendError) as info:
        nc.compile(matrix()["xor"], backend="cuda")
    message = str(info.value)
    assert "\n" not in message and ("CuPy" in message or "CUDA device" in message)


@no_device
def test_cli_run_with_cuda_backend_fails_in_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(ROOT / "examples" / "xor.py"), "--data", "xor", "--backend", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("nncompile: error: the cuda backend needs")


@no_device
def test_standalone_cuda_script_without_cupy_says_so_in_one_line(tmp_path: Path) -> None:
    np.savez(tmp_path / "xor.npz", X=np.zeros((4, 2)), y=np.zeros(4))
    script = _fresh_xor_cuda(tmp_path)
    done = subprocess.run([sys.executable, str(script), "--data", "xor.npz"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "the cuda backend needs" in done.stderr
    helped = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--optimizer" in helped.stdout


@no_device
def test_generated_module_imports_without_cupy_and_names_the_problem_on_use(tmp_path: Path) -> None:
    import importlib.util
    spec = importlib.util.spec_from_file_location("xor_cuda", _fresh_xor_cuda(tmp_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.N_PARAMS == 33 and module.device_problem() == PROBLEM
    with pytest.raises(RuntimeError, match="the cuda backend needs"):
        module.build(4, None, None, {})
    with pytest.raises(RuntimeError, match="the cuda backend needs"):
        module.xp


def _fresh_xor_cuda(folder: Path) -> Path:
    """The CUDA script for examples/xor.py, generated now from the current code (not generated/'s copy)."""
    from nncompile.generate import standalone
    script = folder / "xor_cuda.py"
    model, training = nc.load_model(str(ROOT / "examples" / "xor.py"))
    script.write_text(standalone(model, "cuda", filename=script.name, training=training))
    return script
