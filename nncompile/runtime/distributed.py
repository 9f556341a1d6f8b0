"""Data-parallel training: K processes (one per CPU socket or core over MPI, one per GPU over NCCL),
each computing the gradients of its share of every batch.

Embedded verbatim in standalone scripts after loop.py: NumPy and the standard library only;
mpi4py is imported when a run asks for it.  On the GPU the sums go through NCCL, set up by
the CUDA program's own CuPy glue (cupy_support.nccl_join).

Every process loads the whole data set and shuffles it with the same seed, so all agree on
each global batch of B rows.  Process r takes its share (`share`: np.array_split's, the
first B mod K processes one row more) and runs the program's `gradient(gscale, step, row0)`, which
sums its rows' gradients times gscale = 1/B (lr/B for an optimizer that folds lr in), so
the sum of the K gradient vectors is the batch mean, scaled exactly as one process scales
it, an uneven last batch included; the update count `step` and the share's first row in
the batch `row0` key the dropout masks as one process's step keys them.  The gradient vector and
the two numbers after it (the loss times n_r/B, the correct count) are summed in place by
one allreduce, and every process makes the same update with `update_<optimizer>`: the
parameters stay identical on every process, and equal to one process's to round-off.
Parameters start as rank 0's (broadcast).  Rank 0 alone writes.

Faults: a sum that makes no progress for `timeout` seconds (a process died, and the MPI
launcher left the others running) starts a roll call on a communicator of its own; the
processes that do not answer within GRACE seconds are named in one line (`RankLost`).
"""
import math
import os
import pickle
import socket
import sys
import time

import numpy as np

if __package__ == "nncompile.runtime":  # in a generated script these are defined above, in the same file
    from .engine import Diverged, TrainingError, to_host

#: Seconds a sum across processes may take before the processes check on each other.
TIMEOUT = 30.0
#: Seconds the roll call waits for every process to answer.
GRACE = 5.0
#: Overlapped mode: gradient blocks are summed in buckets of at least this many bytes (PyTorch DDP: 25 MB).
BUCKET_BYTES = 4 << 20
_ROLL_CALL = 77
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))


class DistributedError(TrainingError):
    """Distributed training cannot start or go on (no MPI, too many processes, a lost process)."""


class RankLost(DistributedError):
    """Processes stopped answering; `lost` names them, `reporter` is the process that says so."""

    def __init__(self, message, lost, reporter):
        super().__init__(message)
        self.lost, self.reporter = lost, reporter


def share(rows, rank, size):
    """Rows [lo, hi) of a batch of `rows` that process `rank` of `size` computes (np.array_split's)."""
    each, extra = rows // size, rows % size
    lo = rank * each + min(rank, extra)
    return lo, lo + each + (1 if rank < extra else 0)


def connect(comm=None, overlap=False, timeout=None):
    """A Cluster over `comm` (an mpi4py communicator; MPI.COMM_WORLD by default).

    Raises DistributedError in one line when mpi4py (or the MPI library under it) is missing.
    """
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(f"distributed training needs mpi4py, which is not installed here ({exc}): "
                               "pip install 'nncompile[mpi]' (mpi4py and MPICH), or mpi4py built against "
                               "your cluster's MPI, then start K processes with mpiexec -n K") from None
    except Exception as exc:  # mpi4py present, its MPI library not loadable
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistributedError(f"distributed training needs an MPI library, and mpi4py cannot load one: "
                               f"{text}") from None
    if timeout is None:
        timeout = float(os.environ.get("NNCOMPILE_MPI_TIMEOUT", TIMEOUT))
    return Cluster(MPI, MPI.COMM_WORLD if comm is None else comm, overlap, timeout)


class Cluster:
    """The processes of one run, and what the epoch loop asks of them.

    `reduce(array)` sums a vector in place across the processes (the host's MPI, or NCCL
    on the GPU after `use_nccl`); everything else goes through MPI on the host.
    """

    def __init__(self, MPI, comm, overlap=False, timeout=TIMEOUT):
        self.MPI, self.comm, self.overlap, self.timeout = MPI, comm, overlap, timeout
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.watch = comm.Dup()  # the roll call's own channel: its messages never meet training traffic
        self.places = comm.allgather((socket.gethostname(), os.getpid()))
        self.reduce = self._mpi_sum
        self.nccl = None
        self._plan = None
        self.alarm = False  # set by the launcher's SIGUSR1: a process ended, hold the roll call now

    # -- plain collectives, each waited for with a deadline ------------------------------------
    def wait(self, *requests):
        """Wait for MPI requests; if none completes for `timeout` seconds, find out who is gone."""
        for request in requests:
            if request.Test():
                continue
            deadline = time.monotonic() + self.timeout
            while not request.Test():
                _yield()  # more processes than cores: let the one being waited for run
                if self.alarm or time.monotonic() > deadline:
                    self.alarm = False
                    self.lost()
                    deadline = time.monotonic() + self.timeout  # everyone answered: only slow, wait on

    def _mpi_sum(self, array):
        self.wait(self.comm.Iallreduce(self.MPI.IN_PLACE, array))

    def use_nccl(self, module):
        """Sum on the GPU with NCCL (the cuda backend): `module.nccl_join` (a CUDA program's CuPy glue)
        picks this process's GPU from its rank among the processes of its machine, before any GPU
        memory is allocated, and joins the communicator whose id rank 0 made (broadcast here)."""
        self.local_rank = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED).Get_rank()
        try:
            self.device, self.nccl, self.reduce = module.nccl_join(self)
        except RuntimeError as exc:  # CuPy without NCCL, or NCCL failing to start
            raise DistributedError(str(exc)) from None

    def sum(self, values):
        """Host numbers summed across processes (a new float64 array)."""
        array = np.array(values, dtype=np.float64)
        self._mpi_sum(array)
        return array

    def broadcast(self, array):
        """Rank 0's values of a host array, in place on every process."""
        self.wait(self.comm.Ibcast(array, root=0))

    def agree(self, value):
        """Rank 0's `value` (any picklable object) on every process."""
        data = pickle.dumps(value) if self.rank == 0 else b""
        length = np.array([len(data)], dtype=np.int64)
        self.broadcast(length)
        buffer = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == 0 else np.empty(int(length[0]), np.uint8)
        self.broadcast(buffer)
        return value if self.rank == 0 else pickle.loads(buffer.tobytes())

    # -- what the epoch loop asks ----------------------------------------------------------------
    def start(self, engine, rows):
        """Check the run fits K processes, then give every process rank 0's parameters and state."""
        if rows < self.size:
            raise DistributedError(f"{self.size} processes but only {rows} training rows: start at most {rows} "
                                   "processes (mpiexec -n)")
        for vector in (engine.params, *engine.state.values()):
            host = np.ascontiguousarray(to_host(vector))
            self.broadcast(host)
            vector[...] = engine.device(host)

    def sync_buffers(self, engine):
        """Running statistics (BatchNorm) are each process's own within an epoch, as in PyTorch DDP;
        each epoch starts from rank 0's.  Modules name them in BUFFERS; PARAMS places them in params."""
        buffers = set(getattr(engine.module, "BUFFERS", ()))
        if not buffers:
            return
        host = np.ascontiguousarray(to_host(engine.params))
        for name, shape, offset, _ in engine.module.PARAMS:
            if name not in buffers:
                continue
            size = int(np.prod(shape))
            block = host[offset:offset + size].copy()
            self.broadcast(block)
            engine.params[offset:offset + size] = engine.device(block)

    def load(self, checkpoint):
        """Rank 0 reads the checkpoint and every process gets its contents (or its error)."""
        if self.rank == 0:
            try:
                payload = ("ok", checkpoint.load())
            except Exception as exc:  # sent to every process, then raised everywhere
                payload = ("error", exc)
        else:
            payload = None
        kind, value = self.agree(payload)
        if kind == "error":
            raise value
        return value

    def evaluate(self, engine, X, T):
        """(summed loss, correct count) over a data set, each process evaluating its share of the rows."""
        lo, hi = share(X.shape[0], self.rank, self.size)
        total, correct = engine.evaluate(X, T, rows=(lo, hi)) if hi > lo else (0.0, 0.0)
        total, correct = self.sum([total, correct])
        return float(total), float(correct)

    def run_epoch(self, engine, batches, optimizer, lr, step, hyper, on_batch=None):
        """One epoch of data-parallel updates: (summed loss, correct count, updates, next step)."""
        self.sync_buffers(engine)
        scale = lr if optimizer in engine.module.LR_FOLDED else 1.0
        total, correct, updates = 0.0, 0.0, 0
        for size, starts in batches.groups:
            lo, hi = share(size, self.rank, self.size)
            ws = engine.workspace(max(hi - lo, 1), keep=True)
            load = self._loader(engine, batches, ws, lo, hi)
            update = self._stepper(engine, ws, optimizer, (hi - lo) / size, hi > lo, lo)
            gscale = scale / size
            for start in starts:
                load(start)
                loss, hits = update(gscale, lr, step, hyper)
                if not math.isfinite(loss):
                    raise Diverged(f"the loss became {loss} at update {step} with learning rate {lr:g}",
                                   update=step)
                total += loss
                correct += hits
                updates += 1
                step += 1
                if on_batch is not None:
                    on_batch(size)
        return total, correct, updates, step

    def _loader(self, engine, batches, ws, lo, hi):
        """A function of a batch's first row putting this process's rows [lo, hi) of it into `ws`."""
        if hi == lo:
            return _nothing
        if batches.whole:
            return lambda start: batches.load_all(ws, lo, hi)
        source, inputs = batches.source(ws)
        take_x, take_t, tb, order = source.take, batches.T.take, ws.T, batches.device_order
        clip = ("clip",) if engine.xp is np else ()

        def load(start):
            idx = order[start + lo:start + hi]
            take_x(idx, 0, inputs, *clip)
            take_t(idx, 0, tb, *clip)
        return load

    def _stepper(self, engine, ws, optimizer, weight, has_rows, row0):
        """A function (gscale, lr, step, hyper) -> (loss, correct count) of the whole batch that makes
        one data-parallel update: this process's gradients (summed over its rows, times gscale), loss
        (times weight = n/B) and count into engine.reduced, their sum over processes, and the update.
        `row0`, where this process's rows start in each batch, keys the dropout masks with the update count."""
        reduced, tail, update = engine.reduced, engine.tail, getattr(ws, "update_" + optimizer)
        if self.nccl is not None:
            return self._device_stepper(engine, ws, update, weight, has_rows, row0)
        fetch = engine.fetch

        def run(gscale, lr, step, hyper):
            if has_rows:
                def compute(hook=None):
                    loss, hits = fetch(ws.gradient(gscale, step, row0) if hook is None
                                       else ws.gradient(gscale, step, row0, hook))
                    tail[0] = loss * weight
                    tail[1] = hits
                self._sum_gradients(engine, compute)
            else:  # more processes than rows in this batch: this one adds nothing
                reduced.fill(0)
                self._sum_gradients(engine, None)
            update(lr, step, *hyper)
            return float(tail[0]), float(tail[1])
        return run

    def _device_stepper(self, engine, ws, update, weight, has_rows, row0):
        """The GPU's version: gradient, loss·weight into the tail, NCCL sum and update chained into
        one CUDA graph (module.Chain); only the tail (loss, count) comes back to the host."""
        xp, reduced, tail = engine.xp, engine.reduced, engine.tail
        counted = 2 if engine.counted else 1
        weights = engine.device(np.array([weight, 1.0][:counted], dtype=reduced.dtype))
        if has_rows:
            gradient = ws.gradient

            def contribute():
                xp.multiply(gradient.result, weights, tail[:counted])
                self.reduce(reduced)
            parts = [gradient, contribute, update]
        else:
            def contribute():
                reduced.fill(0)
                self.reduce(reduced)
            parts = [contribute, update]
        chain = engine.module.Chain(f"data-parallel {update.name}", parts, engine.module.CUDA_GRAPHS)

        def run(gscale, lr, step, hyper):
            if has_rows:
                chain((gscale, step, row0), (lr, step, *hyper))
            else:
                chain((lr, step, *hyper))
            loss, hits = (float(v) for v in to_host(tail))
            return loss, hits
        return run

    def _sum_gradients(self, engine, compute):
        """Run `compute` (None: nothing to add) and sum engine.reduced across processes.

        Overlapped (MPI): each bucket of gradient blocks starts summing as soon as the backward
        pass has finished it, the last layer first, as PyTorch DDP does; the buckets are the
        same on every process (from the module's GRAD_BLOCKS), so their sums pair up.
        """
        if not (self.overlap and engine.xp is np):
            if compute is not None:
                compute()
            self.reduce(engine.reduced)
            return
        grads, requests = engine.grads, []
        plan = self._buckets(engine)
        done = set()

        def post(ready_only):
            while len(requests) < len(plan) and (not ready_only or plan[len(requests)][2] <= done):
                first, last, _ = plan[len(requests)]
                requests.append(self.comm.Iallreduce(self.MPI.IN_PLACE, grads[first:last]))

        def ready(start, stop):
            done.add(start)
            post(True)
            if requests:  # MPI moves data only inside its calls: let the posted sums advance
                self.MPI.Request.Testall(requests)

        if compute is not None:
            compute(ready)
        post(False)
        requests.append(self.comm.Iallreduce(self.MPI.IN_PLACE, engine.tail))
        self.wait(*requests)

    def _buckets(self, engine):
        """(start, stop, blocks) of each bucket: the module's GRAD_BLOCKS in backward order, adjacent
        ones merged up to BUCKET_BYTES, then any gradients no block covers (they stay zero)."""
        if self._plan is None:
            least = max(1, BUCKET_BYTES // engine.grads.itemsize)
            plan, covered = [], np.zeros(engine.grads.size + 1, dtype=bool)
            covered[-1] = True  # a sentinel: every uncovered run ends
            for start, stop in engine.module.GRAD_BLOCKS:
                covered[start:stop] = True
                if plan and plan[-1][0] == stop and plan[-1][1] - plan[-1][0] < least:
                    plan[-1] = (start, plan[-1][1], plan[-1][2] | {start})
                else:
                    plan.append((start, stop, frozenset({start})))
            edges = np.flatnonzero(np.diff(np.concatenate(([True], covered))))  # where coverage changes
            plan += [(int(a), int(b), frozenset()) for a, b in zip(edges[::2], edges[1::2])]
            self._plan = plan
        return self._plan

    # -- faults ------------------------------------------------------------------------------
    def lost(self):
        """Roll call: every process that got stuck says so to the others; who does not answer is gone.

        Raises RankLost naming them when some are gone; returns when everyone answered.
        """
        peers = [r for r in range(self.size) if r != self.rank]
        token = np.array([self.rank], dtype=np.int64)
        for r in peers:
            self.watch.Isend(token, dest=r, tag=_ROLL_CALL)
        answers = {r: np.empty(1, dtype=np.int64) for r in peers}
        pending = {r: self.watch.Irecv(answers[r], source=r, tag=_ROLL_CALL) for r in peers}
        grace = min(GRACE, self.timeout)
        deadline = time.monotonic() + grace
        while pending and time.monotonic() < deadline:
            for r in [r for r, request in pending.items() if request.Test()]:
                del pending[r]
            time.sleep(0.01)
        if not pending:
            return
        lost = sorted(pending)
        alive = [r for r in range(self.size) if r not in lost]
        names = ", ".join(f"rank {r} (pid {self.places[r][1]} on {self.places[r][0]})" for r in lost)
        raise RankLost(f"lost {names}: no answer for {self.timeout + grace:.0f} s, so it was killed or "
                       f"crashed; the other {len(alive)} process(es) stop here (resume from the last "
                       "checkpoint)", lost, min(alive))

    def report_signals(self, name="nncompile"):
        """A process stopped by SIGTERM or SIGHUP says so in one line before it goes (the launcher then
        stops the others); SIGUSR1, by which MPICH's launcher (with -disable-auto-cleanup) reports that a
        process ended, starts the roll call at once instead of ending this process."""
        import signal

        def stop(signum, frame):
            os.write(2, f"{name}: error: rank {self.rank} of {self.size} (pid {os.getpid()}): stopped by "
                        f"{signal.Signals(signum).name}; training stops on every process\n".encode())
            os._exit(128 + signum)

        def alarm(signum, frame):
            self.alarm = True

        for signame, handler in (("SIGTERM", stop), ("SIGHUP", stop), ("SIGUSR1", alarm)):
            if hasattr(signal, signame):
                signal.signal(getattr(signal, signame), handler)

    def describe(self):
        """One line for people: how many processes, where."""
        hosts = sorted({host for host, _ in self.places})
        pids = ", ".join(f"{r}:{pid}" for r, (_, pid) in enumerate(self.places))
        return f"data-parallel over {self.size} processes on {', '.join(hosts)} (rank:pid {pids})"


def _nothing(start):
    """A process without rows in a batch loads none."""


def launcher_rank():
    """This process's rank as the MPI launcher set it in the environment (None outside one), read
    without starting MPI: which process prints an error that every process ran into."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def speaks(error):
    """Whether this process prints `error`: the reporter of a lost process, else rank 0 (or a lone run)."""
    reporter = getattr(error, "reporter", None)
    rank = launcher_rank()
    return rank in (None, reporter) if reporter is not None else rank in (None, 0)


def end_after_lost_rank(code):
    """Leave at once: MPI cannot shut down cleanly with a process gone (its finalize would wait forever)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
