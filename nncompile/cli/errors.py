"""How the command line fails: one line on stderr, and an exit status that says what kind of failure."""
from __future__ import annotations

from ..errors import NncompileError

EXIT_USER_ERROR = 2
EXIT_FAILED = 1


class CliError(NncompileError):
    """A problem with the command line itself (a missing file, a bad flag value)."""
