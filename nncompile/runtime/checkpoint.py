"""Checkpoint files: the training state as one .npz (flat vectors + a JSON header), written atomically.

NumPy and the standard library only: `nncompile generate` embeds this file in standalone
scripts.  What goes in a checkpoint is decided by `loop.Loop`; this module only stores
and reads it, so that a half-written file is never seen (temporary file, then rename).
"""
import io
import json
import os
import tempfile

import numpy as np

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or used; one line says why."""


def write_bytes_atomic(path, data, folder_mode=None):
    """Write `data` to `path` so that a reader sees the old file or the new one, never a part.

    The folder must exist, unless `folder_mode` is given: then it is created with that mode
    and the file stays private (0600: the JIT cache, whose files are code).  Other files
    (weights, checkpoints, plots, scripts) get the permissions the user's umask gives.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if folder_mode is not None:
        os.makedirs(folder, mode=folder_mode, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        if folder_mode is None and hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask():
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_npz_atomic(path, arrays):
    """np.savez of `arrays` written with `write_bytes_atomic`: weights, predictions, checkpoints."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


class Checkpoint:
    """One checkpoint file: `save(arrays, meta)` replaces it atomically, `load()` reads it back."""

    def __init__(self, path):
        self.path = str(path)

    def save(self, arrays, meta):
        header = json.dumps(dict(meta, format=CHECKPOINT_FORMAT), sort_keys=True).encode("utf-8")
        try:
            save_npz_atomic(self.path, dict(arrays, meta=np.frombuffer(header, dtype=np.uint8)))
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint {self.path}: {exc.strerror or exc}") from None

    def load(self):
        """(arrays, meta) of the file, or CheckpointError saying why it cannot be used."""
        try:
            with np.load(self.path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {self.path} does not exist") from None
        except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{self.path} is not an nncompile checkpoint ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{self.path} is not an nncompile checkpoint of format {CHECKPOINT_FORMAT}")
        return arrays, meta
