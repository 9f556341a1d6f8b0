"""Host execution of generated CUDA programs, for tests: the kernels run on the CPU.

- `cuda_host.h`: the CUDA built-ins the kernels use, for g++; `runtime.cpp`: the scheduler
  (a block's threads as fibers in warps of 32, blocks in a seeded random order);
- `build`: g++ with AddressSanitizer, one library per source, cached by content hash;
- `cupy_standin` (with `device`, `launch`, `cublas`): the part of CuPy the generated driver
  uses, installed as ``cupy`` in the worker;
- `worker`, `client`: the worker process (libasan preloaded) and the tests' handle on it;
- `scenarios`, `probes`: what the worker runs for tests/test_cuda_host.py and
  tests/test_cuda_host_harness.py.
"""
