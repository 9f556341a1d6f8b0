"""The test side: start the worker (libasan preloaded), send it scenarios, restart it when it dies."""
from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

from . import build
from .worker import read_frame, write_frame

TESTS = Path(__file__).resolve().parent.parent
#: No leak check and no quarantine: the kernels never allocate or free, and the quarantine
#: would make every large NumPy temporary of the worker fresh (page-faulting) memory.
ASAN_OPTIONS = ("detect_leaks=0:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=0:"
                "quarantine_size_mb=0:thread_local_quarantine_size_kb=0:print_summary=1")


class WorkerDied(RuntimeError):
    """The worker ended mid-request: an AddressSanitizer report or a crash; the message holds its output."""


class ScenarioFailed(AssertionError):
    """A scenario raised in the worker (a HarnessError, a wrong shape, ...); the message holds the traceback."""


def unavailable() -> str | None:
    """Why host execution cannot run here, or None."""
    if build.compiler() is None:
        return "no C++ compiler (g++) to build the host CUDA harness"
    if build.asan_runtime() is None:
        return "the C++ compiler has no AddressSanitizer runtime (libasan)"
    return None


class Worker:
    """One worker process at a time; a new one starts after a death, reusing the compiled libraries."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.process: subprocess.Popen | None = None
        self.seed: int | None = None
        self.log = None

    def _start(self) -> None:
        self.log = tempfile.TemporaryFile(mode="w+b")
        env = dict(os.environ, LD_PRELOAD=build.asan_runtime(), ASAN_OPTIONS=ASAN_OPTIONS,
                   NNCOMPILE_HOSTCUDA_BUILD=str(self.folder / "build"), OPENBLAS_NUM_THREADS="1",
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen([sys.executable, "-m", "hostcuda.worker"], cwd=TESTS, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        _, self.seed = self._reply(120)

    def _reply(self, timeout: float) -> tuple:
        fd = self.process.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        reply = read_frame(self.process.stdout) if ready else None
        if reply is None:
            self._stop()
            raise WorkerDied((f"no reply within {timeout} s" if not ready else "the worker died") +
                             f" (harness seed {self.seed}):\n{self._log_tail()}")
        return reply

    def _log_tail(self, limit: int = 6000) -> str:
        """The end of the worker's output, or the start of AddressSanitizer's report when there is one."""
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        report = text.find("ERROR: AddressSanitizer")
        if report < 0:
            return text[-limit:]
        start = text.rfind("\n", 0, report) + 1
        launch = text.find("host CUDA harness: the error above happened in", start)
        lines = text[start:].splitlines()
        head = lines[:6] + [line for line in lines if " is located " in line][:1]
        if launch >= 0:
            head.append(text[launch:].split("\n")[0])
        return "\n".join(head)

    def _stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def call(self, scenario: str, *args: object, timeout: float = 300, **kwargs: object) -> object:
        """Run `scenario` in the worker; its result, or ScenarioFailed / WorkerDied."""
        if self.process is None:
            self._start()
        write_frame(self.process.stdin, (scenario, args, kwargs))
        reply = self._reply(timeout)
        if reply[0] == "error":
            raise ScenarioFailed(f"{reply[1]} (harness seed {self.seed})\n{reply[2]}")
        return reply[1]

    def close(self) -> None:
        if self.process is not None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._stop()
            self.process = None
