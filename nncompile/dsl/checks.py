"""Checks on what a person declares: names, sizes and penalties, each refused in one line.

Names reach generated code (inside string literals and comments only), so they must be
plain identifiers; sizes and strengths must be numbers of the right kind.
"""
from __future__ import annotations

import math
import numbers

from ..errors import ModelError, NncompileError
from ..symbolic.parse import check_identifier


def identifier(value: object, what: str) -> str:
    try:
        return check_identifier(value, what)
    except NncompileError as exc:
        raise ModelError(str(exc)) from None


def positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ModelError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def non_negative(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise ModelError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def positive_number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ModelError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def fraction(value: object, what: str, closed: bool = False) -> float:
    """A number in [0, 1) ([0, 1] when `closed`)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value and (
        value <= 1 if closed else value < 1)
    if not ok:
        raise ModelError(f"{what} must be a number in [0, {'1]' if closed else '1)'}, got {value!r}")
    return float(value)
