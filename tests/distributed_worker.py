"""One process of a data-parallel test job (tests/test_distributed.py starts K of them with mpiexec).

    mpiexec -n K python tests/distributed_worker.py TASKS.json OUT.npz

Each task trains with nc.train(..., distributed=...) on the same data in every process;
rank 0 writes every task's parameters and history to OUT.npz, and every process's
parameter digest, so the test can check that all processes hold the same bits.  A task
with "hang_rank" makes that rank stop taking part after its first epoch (a process that
no longer answers); the others must find out and say which rank it was.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from distributed_cases import dataset, program  # noqa: E402

import nncompile as nc  # noqa: E402
from nncompile.runtime import distributed  # noqa: E402


def digest(params: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(params[name]).tobytes())
    return h.hexdigest()


def sync_buffers(comm: MPI.Comm) -> tuple[dict, list]:
    """Per-process buffers (here: pretend dense2.b holds running statistics) become rank 0's."""
    import types
    prog = program("softmax")
    engine = prog.engine(prog.init_params(0))
    _, shape, offset, _ = next(p for p in prog.module.PARAMS if p[0] == "dense2.b")
    engine.params[offset:offset + shape[0]] = comm.rank + np.arange(shape[0])
    engine.module = types.SimpleNamespace(BUFFERS=("dense2.b",), PARAMS=prog.module.PARAMS)
    distributed.connect().sync_buffers(engine)
    return prog.unflatten(engine.params), []


def run_task(task: dict, comm: MPI.Comm) -> tuple[dict, list]:
    if task.get("kind") == "buffers":
        return sync_buffers(comm)
    prog = program(task["model"])
    X, y = dataset(task["model"], task["rows"])
    hang = task.pop("hang_rank", None)
    kwargs = dict(task["train"])
    if hang is not None:
        def callback(record: dict) -> None:
            if comm.rank == hang:
                time.sleep(600)  # alive, but no longer taking part
        kwargs["callback"] = callback
    cluster = distributed.connect(overlap=task.get("overlap", False))
    result = nc.train(prog, X, y, distributed=cluster, **kwargs)
    return result.params, result.history


def main() -> int:
    tasks = json.loads(open(sys.argv[1], encoding="utf-8").read())
    comm = MPI.COMM_WORLD
    out: dict[str, np.ndarray] = {}
    for i, task in enumerate(tasks):
        try:
            params, history = run_task(task, comm)
        except nc.DistributedError as exc:
            if distributed.speaks(exc) or comm.rank == exc.reporter:
                print(f"error: {exc}", file=sys.stderr, flush=True)
            if exc.lost:
                distributed.end_after_lost_rank(1)
            return 1
        digests = comm.gather(digest(params), root=0)
        if comm.rank == 0:
            for name, value in params.items():
                out[f"{i}/{name}"] = value
            out[f"{i}/history"] = np.frombuffer(json.dumps(history).encode(), dtype=np.uint8)
            out[f"{i}/same_on_every_rank"] = np.array(len(set(digests)) == 1)
    if comm.rank == 0:
        np.savez(sys.argv[2], **out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
