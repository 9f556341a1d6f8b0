"""CuPy support for generated CUDA programs: device check, kernels, cuBLAS calls, CUDA graphs.

The CUDA backend embeds this file verbatim in every module and script it writes (as
`nncompile generate` embeds nncompile/runtime/), so it imports only the standard
library and NumPy.  CuPy is imported on first use: without CuPy or a GPU, a generated
CUDA program still imports and can be read, and asking it to run says in one line
what is missing.  Any CuPy build works (cupy-cuda12x, cupy-cuda13x, ...).

Each entry point of a workspace (forward, loss, loss_and_grad, step_<optimizer>) runs
its launches eagerly on its first call, is captured into a CUDA graph on its second
and replays that graph afterwards, so a step costs one graph launch however many
kernels it has; a `Chain` does the same for several entry points with host calls
between them (a data-parallel step with its NCCL sum).  Scalar arguments (learning
rate, step count, hyperparameters) live in device memory, where the captured kernels
read them: the step count is advanced on the device, so consecutive steps upload nothing.
`nccl_join` sets up NCCL for data-parallel training (runtime/distributed.py).
"""
import types
import warnings

import numpy as np

BLOCK = (256,)            # threads per block: elementwise and row kernels (8 rows of 32 lanes)
ONE = (1,)
TOTAL_BLOCK = (512,)      # the one block of a full reduction
MAX_BLOCKS = 8192         # elementwise kernels loop over the rest (grid-stride)

_cupy = None


def device_problem():
    """None when CuPy and a CUDA device are usable here, else one line saying what is missing."""
    try:
        import cupy
    except ImportError as exc:
        return (f"the cuda backend needs CuPy, which is not installed here ({exc}): install "
                "nncompile[cuda] (cupy-cuda12x) or the CuPy build for your CUDA version")
    except Exception as exc:  # a CuPy that cannot load its CUDA libraries
        return f"the cuda backend needs CuPy, which failed to load: {_first_line(exc)}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, or a driver older than CuPy's CUDA
        return f"the cuda backend needs a CUDA device, and CuPy cannot reach one: {_first_line(exc)}"
    if count < 1:
        return "the cuda backend needs a CUDA device, and CuPy finds none on this machine"
    return None


def _first_line(exc):
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def cupy_module():
    """CuPy (with cupy.cublas), imported on first use; RuntimeError naming what is missing."""
    global _cupy
    if _cupy is None:
        problem = device_problem()
        if problem is not None:
            raise RuntimeError(problem)
        import cupy
        import cupy.cublas  # noqa: F401  (gemm/gemv on row-major arrays)
        _cupy = cupy
    return _cupy


def free_memory():
    """Bytes a new allocation can still get on the current device: what the driver reports free
    plus what CuPy's memory pool holds unused (it hands those out first)."""
    cp = cupy_module()
    free, _ = cp.cuda.runtime.memGetInfo()
    return int(free) + int(cp.get_default_memory_pool().free_bytes())


def load_kernels(source, names):
    """The named kernels of `source`, compiled by NVRTC through CuPy (which caches binaries on disk)."""
    module = cupy_module().RawModule(code=source)
    return types.SimpleNamespace(**{name: module.get_function(name) for name in names})


def gemm(transa, transb, a, b, out, beta=0.0):
    """out = op(a) @ op(b) (+ out with beta=1: a shared weight's next use) by cuBLAS on C-ordered arrays;
    op is 'N' (as is) or 'T' (transposed)."""
    _cupy.cublas.gemm(transa, transb, a, b, out=out, beta=beta)


def gemv(transa, a, x, out, beta=0.0):
    """out = op(a) @ x (+ out with beta=1) by cuBLAS: with a ones vector x, the column sums of a (a bias
    gradient)."""
    _cupy.cublas.gemv(transa, 1.0, a, x, beta, out)


def grid(size):
    """Blocks for an elementwise kernel over `size` elements."""
    return (max(1, min((size + BLOCK[0] - 1) // BLOCK[0], MAX_BLOCKS)),)


def rows_grid(rows):
    """Blocks for a row kernel: one warp (32 lanes) per row."""
    per_block = BLOCK[0] // 32
    return (max(1, (rows + per_block - 1) // per_block),)


def scalar_key(values, step, advanced):
    """What a call's scalars must match to need no upload: the step is whatever the device holds
    when the step kernels advance it, and ignored when no kernel reads it."""
    return tuple(None if k == step and not advanced else float(v) for k, v in enumerate(values))


def next_key(values, step, advanced):
    """The key the next call matches when its step count is one more than this call's."""
    key = list(scalar_key(values, step, advanced))
    if advanced:
        key[step] += 1.0
    return tuple(key)


def nccl_join(cluster):
    """NCCL for data-parallel training, in this order: this process takes the GPU of its rank among
    the processes of its machine (modulo the GPUs there), before any GPU memory is allocated; rank 0
    makes the NCCL id, which `cluster.agree` broadcasts over MPI; every process joins the communicator.

    Returns (device, communicator, sum): sum(array) is ncclAllReduce in place on a device vector, on
    the current stream, so a CUDA graph being captured includes it.  RuntimeError in one line if
    this CuPy cannot use NCCL.
    """
    cupy = _cupy or cupy_module()
    try:
        from cupy.cuda import nccl
        nccl.get_version()
    except Exception as exc:  # a CuPy built without NCCL, or no libnccl to load
        raise RuntimeError(f"the cuda backend sums gradients with NCCL, which CuPy cannot use here "
                           f"({_first_line(exc)}): install NCCL for your CUDA version (pip install "
                           "nvidia-nccl-cu12) or use the numpy backend") from None
    device = cluster.local_rank % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(device).use()
    uid = cluster.agree(nccl.get_unique_id() if cluster.rank == 0 else None)
    communicator = nccl.NcclCommunicator(cluster.size, uid, cluster.rank)
    kinds = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def nccl_sum(array):
        communicator.allReduce(array.data.ptr, array.data.ptr, array.size, kinds[np.dtype(array.dtype)],
                               nccl.NCCL_SUM, cupy.cuda.get_current_stream().ptr)
    return device, communicator, nccl_sum


class DeviceScalars:
    """An entry point's scalar arguments in device memory (float64), where its kernels read them."""

    def __init__(self, count, step, advanced):
        self.values = cupy_module().zeros(count, dtype=np.float64)
        self.step, self.advanced = step, advanced
        self.expected = None

    def update(self, values):
        """Copy `values` to the device unless it already holds them (a consecutive step)."""
        if scalar_key(values, self.step, self.advanced) != self.expected:
            self.values.set(np.array(values, dtype=np.float64))
        self.expected = next_key(values, self.step, self.advanced)


class Entry:
    """One entry point of a workspace: launches run eagerly once, then from a captured CUDA graph."""

    def __init__(self, name, launch, result=None, scalars=None, graphs=True, needs=None):
        self.name, self.launch, self.result, self.scalars = name, launch, result, scalars
        self.graphs, self.graph, self.calls = graphs, None, 0
        self.missing = sorted(key for key, value in (needs or {}).items() if value is None)

    def __call__(self, *values):
        self.prepare(values)
        if self.graph is not None:
            self.graph.launch()
        elif self.graphs and self.calls:
            self.graph = capture(self.name, self.launch)
            if self.graph is None:
                self.graphs = False
        else:
            self.launch()
        self.calls += 1
        return self.result

    def prepare(self, values):
        """Check the state it needs exists and put its scalar arguments on the device."""
        if self.missing:
            raise RuntimeError(f"{self.name} needs optimizer state {', '.join(self.missing)}, which this "
                               "workspace was built without: reset the optimizer state first")
        if self.scalars is not None:
            self.scalars.update(values)


class Chain:
    """Entries and host calls run back to back as one step, replayed as one CUDA graph.

    Data-parallel training chains `gradient`, the NCCL sum of the gradient vector (a host
    call that enqueues it on the current stream) and `update_<optimizer>`: captured
    together, a step is one graph launch, the NCCL call included, where the CUDA, NCCL and
    CuPy builds allow capturing it (otherwise a RuntimeWarning says so and it runs eagerly).
    Call it with one tuple of scalar arguments per Entry, in order.
    """

    def __init__(self, name, parts, graphs=True):
        self.name, self.parts, self.graphs, self.graph, self.calls = name, tuple(parts), graphs, None, 0
        self.entries = [part for part in self.parts if isinstance(part, Entry)]
        self.result = self.entries[-1].result if self.entries else None

    def __call__(self, *arguments):
        for entry, values in zip(self.entries, arguments):
            entry.prepare(values)
        if self.graph is not None:
            self.graph.launch()
        elif self.graphs and self.calls:
            self.graph = capture(self.name, self.launch)
            if self.graph is None:
                self.graphs = False
        else:
            self.launch()
        self.calls += 1

    def launch(self):
        for part in self.parts:
            if isinstance(part, Entry):
                part.launch()
            else:
                part()


def capture(name, launch):
    """Run `launch` while capturing it into a CUDA graph and launch the graph; None (after running
    `launch` eagerly, with a RuntimeWarning) when this build cannot capture it."""
    stream = _cupy.cuda.Stream(non_blocking=True)
    try:
        with stream:
            stream.begin_capture()
            try:
                launch()
            finally:
                graph = stream.end_capture()
    except Exception as exc:  # the CUDA, cuBLAS or NCCL build cannot capture this sequence
        warnings.warn(f"{name}: CUDA graph capture failed ({_first_line(exc)}); running its kernels one "
                      "launch at a time", RuntimeWarning, stacklevel=4)
        launch()
        return None
    graph.launch()
    return graph
