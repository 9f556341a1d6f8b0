"""Compiling generated CUDA source for the host: g++ and AddressSanitizer, cached by content hash.

A kernel library is the generated source, unchanged, compiled with `cuda_host.h`
force-included, plus one thunk per kernel: ``nc_thunk_<name>(void** args)`` calls the
kernel with its arguments read from `args` as cudaLaunchKernel reads them (args[i] points
at argument i).  The thunks come from the kernels' own signatures in the source.
Libraries land in a cache folder named by the SHA-256 of everything that goes into
them, so each source is compiled once per folder (the test session's, by default).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = HERE / "cuda_host.h"
RUNTIME = HERE / "runtime.cpp"
KERNEL = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)')
TYPEDEF = re.compile(r"^typedef (\w+(?: \w+)*) (\w+);", re.M)
FLAGS = ["-std=c++17", "-g", "-fPIC", "-shared", "-ffp-contract=off", "-fno-omit-frame-pointer",
         "-Wno-unused-variable", "-Wno-unused-function"]


class BuildError(RuntimeError):
    """The host compiler rejected a source; the message holds its diagnostics."""


@dataclass(frozen=True)
class Param:
    """One kernel parameter: its C type without qualifiers that do not matter to a caller."""

    ctype: str      # "const double*", "const int", ...
    name: str

    @property
    def pointer(self) -> bool:
        return self.ctype.endswith("*")

    @property
    def base(self) -> str:
        """The pointee or value type: "double", "int", ..."""
        words = self.ctype.rstrip("*").split()
        return " ".join(w for w in words if w not in ("const", "volatile"))


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def asan_runtime() -> str | None:
    """Path of the compiler's libasan (to preload into the worker), or None where there is none."""
    cxx = compiler()
    if cxx is None:
        return None
    done = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = Path(done.stdout.strip())
    return str(path.resolve()) if done.returncode == 0 and path.is_absolute() and path.exists() else None


def signatures(source: str) -> dict[str, list[Param]]:
    """Kernel name -> parameters, read from the source's ``extern "C" __global__`` definitions."""
    aliases = {alias: ctype for ctype, alias in TYPEDEF.findall(source)}
    kernels = {}
    for match in KERNEL.finditer(source):
        params = []
        for text in filter(None, (p.strip() for p in match.group(2).split(","))):
            words = text.replace("*", " * ").split()
            name = words.pop()
            words = [aliases.get(w, w) for w in words if w != "__restrict__"]
            ctype = " ".join(w for w in words if w != "*") + "*" * words.count("*")
            params.append(Param(ctype, name))
        kernels[match.group(1)] = params
    return kernels


def _thunks(source_file: str, kernels: dict[str, list[Param]]) -> str:
    lines = [f'#include "{source_file}"', "", 'extern "C" {']
    for name, params in kernels.items():
        args = ", ".join(f"*({p.ctype}*)args[{k}]" for k, p in enumerate(params))
        lines.append(f"void nc_thunk_{name}(void** args) {{ {name}({args}); }}")
    lines += ["// The __shared__ variables of the source (cuda_host.h puts them in this section).",
              "extern char __start_nc_shared[] __attribute__((weak));",
              "extern char __stop_nc_shared[] __attribute__((weak));",
              "void nc_shared_range(char** begin, char** end) { *begin = __start_nc_shared; *end = __stop_nc_shared; }",
              "}", ""]
    return "\n".join(lines)


class Builder:
    """Compiles the runtime and kernel sources into `folder`, each at most once.

    `submit` starts a compile in the background (one at a time: g++ on one core while
    the caller derives the next program on the other); `kernels` waits for it.
    """

    def __init__(self, folder: Path | None = None, asan: bool = True) -> None:
        self.folder = Path(folder or tempfile.mkdtemp(prefix="nncompile-hostcuda-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.asan = asan
        self.cxx = compiler()
        if self.cxx is None:
            raise BuildError("no C++ compiler (g++) on PATH")
        self.flags = FLAGS + ["-O0"] + (["-fsanitize=address", "-DNC_ASAN=1"] if asan else ["-DNC_ASAN=0"])
        self.version = subprocess.run([self.cxx, "--version"], capture_output=True, text=True).stdout
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="g++")
        self.pending: dict[str, Future] = {}
        self.lock = threading.Lock()

    def _key(self, *texts: str) -> str:
        digest = hashlib.sha256()
        for text in (self.version, " ".join(self.flags), HEADER.read_text(), *texts):
            digest.update(text.encode())
            digest.update(b"\0")
        return digest.hexdigest()[:24]

    def _compile(self, out: Path, sources: list[Path], flags: list[str]) -> Path:
        if out.exists():
            return out
        partial = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}")
        done = subprocess.run([self.cxx, *flags, "-I", str(HERE), "-include", str(HEADER), *map(str, sources),
                               "-o", str(partial)], capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"g++ failed on {' '.join(map(str, sources))}:\n{done.stderr}")
        os.replace(partial, out)
        return out

    def runtime(self) -> Path:
        """The scheduler library (load it with RTLD_GLOBAL before any kernel library).

        Built without -fsanitize=address: its own memory needs no checking.
        """
        key = self._key(RUNTIME.read_text())
        flags = FLAGS + ["-O2", f"-DNC_ASAN={int(self.asan)}"]
        return self._compile(self.folder / f"runtime-{key}.so", [RUNTIME], flags)

    def _build(self, source: str, key: str) -> Path:
        library = self.folder / f"kernels-{key}.so"
        if not library.exists():
            cu = self.folder / f"kernels-{key}.cu"   # AddressSanitizer's reports name its lines
            cu.write_text(source)
            thunks = self.folder / f"kernels-{key}-thunks.cpp"
            thunks.write_text(_thunks(cu.name, signatures(source)))
            self._compile(library, [thunks], self.flags)
        return library

    def submit(self, source: str) -> Future:
        """Start compiling `source` (if it is not built or under way); the future gives the library."""
        key = self._key(source)
        with self.lock:
            if key not in self.pending:
                self.pending[key] = self.pool.submit(self._build, source, key)
            return self.pending[key]

    def kernels(self, source: str) -> tuple[Path, dict[str, list[Param]]]:
        """(library, signatures) of a generated CUDA source, compiled once."""
        return self.submit(source).result(), signatures(source)
