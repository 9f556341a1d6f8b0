"""The worker process: runs `scenarios` and `probes` with the CuPy stand-in installed, under ASan.

Started by `client.Worker` with libasan preloaded (the kernel libraries are built with
-fsanitize=address, which needs its runtime loaded first).  Requests and replies are
length-prefixed pickles on the pipes it was started with; anything the code under test
prints goes to standard error, which the client keeps in a file and shows when the
process dies (an AddressSanitizer report ends the process on purpose).
"""
from __future__ import annotations

import os
import pickle
import struct
import sys
import traceback


def read_frame(stream) -> object | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    body = stream.read(size)
    return pickle.loads(body) if len(body) == size else None   # short: the other side died mid-frame


def write_frame(stream, value: object) -> None:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(body)) + body)
    stream.flush()


def main() -> int:
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                       # stray prints must not corrupt the replies
    sys.stdout = sys.stderr
    from . import build, cupy_standin, probes, scenarios
    seed = os.environ.get("NNCOMPILE_HOSTCUDA_SEED")
    builder = build.Builder(os.environ.get("NNCOMPILE_HOSTCUDA_BUILD"), asan=bool(os.environ.get("LD_PRELOAD")))
    device = cupy_standin.install(builder, seed=None if seed is None else int(seed))
    write_frame(replies, ("ready", device.seed))
    while True:
        request = read_frame(sys.stdin.buffer)
        if request is None:
            return 0
        name, args, kwargs = request
        try:
            scenario = getattr(scenarios, name, None) or getattr(probes, name)
            reply = ("ok", scenario(*args, **kwargs))
        except Exception as exc:  # reported to the test, which fails with it
            reply = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        write_frame(replies, reply)


if __name__ == "__main__":
    sys.exit(main())
