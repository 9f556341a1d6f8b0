#!/usr/bin/env bash
# The GPU checks of the CUDA backend in one command, for a machine with an NVIDIA GPU:
# the tests marked gpu (CUDA against the NumPy backend and finite differences, training,
# CUDA graphs, the standalone script, the epoch accuracy counted on the device, and
# data-parallel training over NCCL with one process per GPU: K = 1, and K = 2 where two
# GPUs exist, against one NumPy process), then the generated CUDA step against PyTorch
# eager on the same GPU. Needs NumPy, SymPy, Jinja2, tqdm, pytest, CuPy, mpi4py with an MPI
# (pip install ".[mpi]"; CuPy brings NCCL through nvidia-nccl-cu12) and (for the
# benchmark's last column) PyTorch; nncompile itself is used from this checkout. A few
# minutes at most.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export NNCOMPILE_CACHE_DIR="${NNCOMPILE_CACHE_DIR:-$(mktemp -d)}"
PY="${PYTHON:-python3}"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c 'import sys, numpy, sympy; print("python", sys.version.split()[0], "| numpy", numpy.__version__, "| sympy", sympy.__version__)'
"$PY" -c 'import sys; from nncompile.backends.cuda.cupy_support import device_problem as p; m = p(); print(m or "CuPy reaches a CUDA device"); sys.exit(1 if m else 0)' || exit 1

status=0
"$PY" -c 'from cupy.cuda import nccl; print("NCCL", nccl.get_version())' || echo "NCCL not usable: the NCCL tests will fail"
"$PY" -m pytest -q -m gpu -p no:cacheprovider -rs tests || status=1
"$PY" benchmarks/cuda_vs_torch.py || status=1
exit "$status"
