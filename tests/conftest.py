"""Shared fixtures: an isolated JIT cache and small models built from the public DSL."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import nncompile as nc
from nncompile import nn

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test session compiles into its own cache folder."""
    os.environ["NNCOMPILE_CACHE_DIR"] = str(tmp_path_factory.mktemp("nncompile-cache"))


@pytest.fixture
def python() -> str:
    return sys.executable


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked gpu run only where CuPy reaches a CUDA device; elsewhere they skip, saying why."""
    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:
        return
    from nncompile.backends.cuda.cupy_support import device_problem
    problem = device_problem()
    if problem is not None:
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason=problem))


@pytest.fixture(scope="session")
def digits_prog() -> nc.CompiledProgram:
    """A small digits classifier (64-16 tanh-10 softmax), compiled once for the session."""
    return nc.compile(nn.Sequential(nn.Dense(16), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64,
                                    loss=nn.CrossEntropy(), name="digits_small"))



@pytest.fixture(scope="session")
def host_cuda_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the host CUDA workers of a session keep their compiled libraries (each built once)."""
    return tmp_path_factory.mktemp("hostcuda")


@pytest.fixture(scope="module")
def host_cuda(host_cuda_folder: Path):
    """The worker that runs generated CUDA kernels on the CPU (tests/hostcuda), one per test module
    (its memory is returned when the module ends); skips without g++ and libasan."""
    from hostcuda.client import Worker, unavailable
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    worker = Worker(host_cuda_folder)
    yield worker
    worker.close()
