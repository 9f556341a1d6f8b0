"""One of the processes of tests/test_nccl_wiring.py (mpiexec -n 2), on a machine without a GPU.

Real MPI (the NCCL id really travels from rank 0 to the others), the runtime's real NCCL
set-up and data-parallel step code, real cupy_support Entry and Chain objects; CuPy itself
is nccl_fakes.fake_cupy, which records every call.  Writes the log to LOG.<rank>.json.

    mpiexec -n 2 python tests/nccl_worker.py LOG DEVICES
"""
from __future__ import annotations

import json
import os
import sys
import types

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nccl_fakes import Log, device_array, fake_cupy  # noqa: E402

from nncompile.backends.cuda import cupy_support  # noqa: E402
from nncompile.runtime import distributed  # noqa: E402

N_PARAMS = 9


def main() -> int:
    log, rank = Log(), MPI.COMM_WORLD.rank
    cupy = fake_cupy(log, devices=int(sys.argv[2]), rank=rank)
    sys.modules.update({"cupy": cupy, "cupy.cuda": cupy.cuda, "cupy.cuda.nccl": cupy.cuda.nccl})
    cupy_support._cupy = cupy
    cluster = distributed.connect()
    cluster.use_nccl(cupy_support)
    engine = fake_engine(log)
    log.add("reduced", engine.reduced.data.ptr, engine.reduced.size)
    run = cluster._stepper(engine, engine.ws, "sgd", 0.25, True, 3)  # this share starts at row 3
    for step in (1, 2, 3):
        log.add("call", step)
        log.add("returned", *run(0.5, 0.1, step, ()))
    with open(f"{sys.argv[1]}.{rank}.json", "w", encoding="utf-8") as handle:
        json.dump(log, handle)
    return 0


def fake_engine(log: Log) -> types.SimpleNamespace:
    """An engine whose vectors are host arrays posing as device arrays, with a workspace of real Entries
    (gradient writes grads and [L, C]; update_sgd subtracts) and the real Chain."""
    reduced = device_array(np.zeros(N_PARAMS + 2))
    params = device_array(np.ones(N_PARAMS))
    stats = device_array([0.0, 0.0])

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def update(self, values: tuple) -> None:
            log.add(f"{self.name}.scalars", *values)

    def gradient() -> None:
        log.add("gradient")
        reduced[:N_PARAMS] = np.arange(N_PARAMS)
        stats[...] = [2.0, 3.0]

    def update() -> None:
        log.add("update")
        params[...] -= reduced[:N_PARAMS]

    ws = types.SimpleNamespace(gradient=cupy_support.Entry("gradient", gradient, stats, Recorder("gradient")),
                               update_sgd=cupy_support.Entry("update_sgd", update, None, Recorder("update")))

    def multiply(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        log.add("scale", list(np.asarray(b)))
        np.multiply(a, b, out)

    module = types.SimpleNamespace(Chain=cupy_support.Chain, CUDA_GRAPHS=True, LR_FOLDED=("sgd",))
    return types.SimpleNamespace(xp=types.SimpleNamespace(multiply=multiply), reduced=reduced,
                                 tail=reduced[N_PARAMS:], counted=True, device=device_array, module=module, ws=ws,
                                 params=params)


if __name__ == "__main__":
    sys.exit(main())
