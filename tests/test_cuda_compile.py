"""Every generated CUDA source compiles with nvcc, warning-free; the driver matches its kernels.

nvcc compiles device code only (--ptx) and needs no GPU. The models of `cuda_models`
cover every activation, loss, penalty, optimizer and supported function, in both dtypes.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import symtable
import types
from pathlib import Path

import builtins
import pytest

from cuda_models import matrix
from nncompile.backends import cuda
from nncompile.derive import derive

NVCC = shutil.which("nvcc")
MODELS = matrix()
KERNEL = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)')
LAUNCH = re.compile(r"k\.(\w+)\((.*), \((.*?),?\)\)$")
IMAGE_KERNELS = {"nc_im2col", "nc_col2im", "nc_conv_bias", "nc_conv_rows", "nc_maxpool", "nc_maxpool_grad",
                 "nc_avgpool", "nc_avgpool_grad"}


@pytest.fixture(scope="module")
def programs() -> dict:
    """(model name, dtype) -> Program, derived once for the module."""
    return {}


def _program(programs: dict, name: str, dtype: str):
    if (name, dtype) not in programs:
        programs[name, dtype] = derive(MODELS[name], dtype).program
    return programs[name, dtype]


@pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA compiler) is not on PATH")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_generated_cuda_compiles_with_nvcc_without_warnings(programs: dict, name: str, dtype: str,
                                                           tmp_path: Path) -> None:
    source = tmp_path / f"{name}_{dtype}.cu"
    source.write_text(cuda.render_source(_program(programs, name, dtype)))
    done = subprocess.run([NVCC, "--ptx", "-Werror", "all-warnings", "-o", str(tmp_path / "out.ptx"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ptx = (tmp_path / "out.ptx").read_text()
    names = {m.group(1) for m in KERNEL.finditer(source.read_text())}
    assert names and all(f".entry {kernel}(" in ptx for kernel in names)


def _nvrtc():
    """CuPy's NVRTC bindings, when CuPy and the NVRTC library load here (no GPU needed), else None."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception:  # no CuPy, or no libnvrtc: the nvcc test above still covers the source
        return None
    return nvrtc


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_generated_cuda_compiles_with_nvrtc_as_cupy_does(programs: dict, dtype: str) -> None:
    """The compiler CuPy runs (NVRTC: no host headers, unlike nvcc) accepts every source, with an empty log."""
    nvrtc = _nvrtc()
    if nvrtc is None:
        pytest.skip("CuPy's NVRTC bindings or libnvrtc are not available here")
    for name in sorted(MODELS):
        program = nvrtc.createProgram(cuda.render_source(_program(programs, name, dtype)), "kern.cu", (), ())
        try:
            nvrtc.compileProgram(program, ("--gpu-architecture=compute_75",))
            assert nvrtc.getProgramLog(program).strip() in ("", "\x00"), name
            assert nvrtc.getPTX(program)
        finally:
            nvrtc.destroyProgram(program)


def _module(program) -> tuple[types.ModuleType, str]:
    """The generated driver, imported as the JIT would (it needs no CuPy to import)."""
    text = cuda.render_module(program)
    module = types.ModuleType("driver")
    exec(compile(text, "driver.py", "exec"), module.__dict__)
    return module, text


def _undefined_globals(text: str, namespace: dict) -> set[str]:
    """Names the driver's functions read as globals that neither the module nor builtins define."""
    missing: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        if table.get_type() == "function":
            missing.update(s.get_name() for s in table.get_symbols()
                           if s.is_referenced() and s.is_global() and s.get_name() not in namespace
                           and not hasattr(builtins, s.get_name()))
        for child in table.get_children():
            walk(child)

    walk(symtable.symtable(text, "driver.py", "exec"))
    return missing


@pytest.mark.parametrize("name", sorted(MODELS))
def test_driver_launches_match_the_kernels_they_call(programs: dict, name: str) -> None:
    """Every launch names a kernel of CUDA_SOURCE with one argument per parameter, of the right kind."""
    program = _program(programs, name, "float64")
    module, text = _module(program)
    kernels = {m.group(1): [p.strip() for p in m.group(2).split(",")] for m in KERNEL.finditer(module.CUDA_SOURCE)}
    assert set(module.KERNELS) == set(kernels)
    build = text[text.index("def build("):]
    launches = [LAUNCH.search(line.strip()) for line in build.splitlines() if line.strip().startswith("k.")]
    assert launches and all(launches)
    functions = re.split(r"\n    def ", build)
    for launch, function in ((launch, f) for f in functions for launch in map(LAUNCH.search, f.splitlines()[1:])
                             if launch):
        kernel, args = launch.group(1), [a.strip() for a in launch.group(3).split(",")]
        params = kernels[kernel]
        assert len(args) == len(params), (kernel, args, params)
        for arg, param in zip(args, params):
            if arg == "n32":
                assert param == "const int n"
            elif arg.startswith("hp_"):
                assert "double* " in param and param.endswith(" hp")
                assert arg == f"hp_{function.split('(')[0]}.values"  # the scalars of the function launching it
            elif kernel == "nc_advance":
                assert param == "const int index" and arg.startswith("np.int32(")
            elif kernel == "nc_dropout_mask":   # (m, seed, hp|step_zero, step, row0 index, layer, threshold, n, width)
                assert param.split()[-1] in ("m", "seed", "hp", "step_index", "row0_index", "layer", "threshold", "n",
                                             "width")
                if param.endswith(" hp"):
                    assert arg in ("step_zero", f"hp_{function.split('(')[0]}.values"), (arg, function[:30])
                elif param.endswith((" m", " seed")):
                    assert re.search(rf"^\s+{arg} = ", build, re.M), f"{arg} is never bound in build()"
                else:
                    assert arg == "n32" if param == "const int n" else arg.startswith("np.")
            elif kernel == "nc_columns" and param.startswith("const int "):
                assert arg.startswith("np.int32("), (arg, param)
            elif kernel in IMAGE_KERNELS and param.startswith("const int "):   # n, then the geometry
                assert arg == "n32" if param == "const int n" else arg.startswith("np.int32("), (arg, param)
            elif kernel in IMAGE_KERNELS:   # arrays bound in build(): outputs first, a max-pool's positions as int32
                assert re.search(rf"^\s+{arg} = ", build, re.M), f"{arg} is never bound in build()"
                if "int*" in param:
                    assert re.search(rf"^\s+{arg} = cp\.zeros\(.*dtype=cp\.int32\)", build, re.M), arg
                else:
                    assert "real*" in param, (arg, param)
            elif kernel == "nc_columns":   # (dst, src, ...): a copy between two bound buffers
                assert "real*" in param and ("const" in param) == (param.endswith(" src")), (arg, param)
                assert re.search(rf"^\s+{arg} = ", build, re.M), f"{arg} is never bound in build()"
            elif kernel.startswith("nc_count_"):  # fixed kernels: buffers, then the sizes
                assert ("real*" in param) != arg.startswith(("np.int32(", "np.int64(")), (arg, param)
                assert arg.startswith("np.int32(") == param.startswith("const int ")
                assert arg.startswith("np.int64(") == param.startswith("const long long ")
            else:
                assert param.endswith(f" {arg}") and "real*" in param, (arg, param)
                bound = arg in ("params", "grads") or re.search(rf"^\s+{arg} = ", build, re.M)
                assert bound, f"{arg} is never bound in build()"
    assert not _undefined_globals(text, module.__dict__)


def test_driver_interface_is_the_numpy_modules(programs: dict) -> None:
    import nncompile as nc
    model = MODELS["digits"]
    numpy_module = nc.compile(model).module
    module, _ = _module(_program(programs, "digits", "float64"))
    for attr in ("MODEL", "DTYPE", "INPUT_DIM", "OUTPUT_DIM", "TARGET_ENCODING", "METRIC", "N_PARAMS", "PARAMS",
                 "OPTIMIZERS", "INPUT_SHAPES", "N_TRAINABLE", "BUFFERS", "MIN_TRAIN_ROWS"):
        assert getattr(module, attr) == getattr(numpy_module, attr), attr
    assert module.BACKEND == "cuda" and callable(module.build) and module.workspace_bytes(100) > 0
