"""The CUDA printer's C, compiled by the host C compiler, against SymPy at 40 digits.

The kernels' arithmetic is exactly these printed expressions, so evaluating them on the
CPU checks the printing (precedence, float32 suffixes, stable forms at ±1000) without a
GPU; the device's math library differs from the host's only in the last bits.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from nncompile.symbolic import calculus
from nncompile.backends.cuda.cprinter import C_TYPES, CudaPrinter
from nncompile.symbolic.rules import ACTIVATIONS, LOSSES, A, T, X, leaky_relu
from nncompile.symbolic.functions import SUPPORTED_FUNCTIONS, expm1, log1p, sigmoid, softplus

CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="no host C compiler (cc) to evaluate printed C")

POINTS = (-1000.0, -100.0, -30.0, -3.0, -0.5, -1e-9, 0.0, 1e-9, 0.5, 3.0, 30.0, 100.0, 1000.0)
TOLERANCE = {"float64": 1e-12, "float32": 2e-5}
TINY = {"float64": 1e-300, "float32": 1e-30}


def _expressions() -> list[sp.Expr]:
    """Every supported function, powers and constants, and each registry formula with its derivative."""
    scale = {"tan": 1000, "sinh": 7, "cosh": 7, "exp": 7, "expm1": 7}  # keep results finite and well-conditioned
    exprs = [fn(X / scale[name]) if name in scale else fn(X)
             for name, fn in SUPPORTED_FUNCTIONS.items() if name not in ("log", "sqrt", "max", "min", "log1p")]
    exprs += [sp.log(1 + X**2), sp.sqrt(1 + X**2), sp.Max(X, 0, X / 2), sp.Min(X, 1), log1p(X**2),
              X**2, X**3 / 1e6, (X + 1) ** -2, (1 + X**2) ** sp.Rational(-1, 2), (1 + X**2 / 1e4) ** 1.5,
              1 / (1 + X**2) ** 3, sp.pi * X + sp.sqrt(2) - sp.log(2), sp.Heaviside(X), sp.sign(X) * X,
              sp.cosh(X / 300) ** -2 / (1 + sp.Abs(X))]
    functions = list(ACTIVATIONS.values()) + [leaky_relu(0.1)]
    for fn in functions:
        local = calculus.activation(fn)
        exprs += [local.stable, local.evaluated.xreplace({A: local.stable})]
    mish = calculus.activation(type(functions[0])("mish", X * sp.tanh(sp.log(1 + sp.exp(X)))))
    exprs += [mish.stable, mish.evaluated]
    for fn_name, loss_name in (("sigmoid", "binary_cross_entropy"), ("identity", "mse"), ("tanh", "mse")):
        out = calculus.output_delta(ACTIVATIONS[fn_name], LOSSES[loss_name])
        stable = calculus.activation(ACTIVATIONS[fn_name]).stable
        exprs += [e.xreplace({A: stable, T: sp.Rational(3, 10)}) for e in (out.value, out.delta)]
    return exprs


def _reference(expr: sp.Expr, x: float) -> float:
    """The exact value, rounded to float64 (the registry's functions written out)."""
    plain = expr.replace(sigmoid, lambda u: 1 / (1 + sp.exp(-u))).replace(softplus, lambda u: sp.log(1 + sp.exp(u)))
    plain = plain.replace(log1p, lambda u: sp.log(1 + u)).replace(expm1, lambda u: sp.exp(u) - 1)
    value = sp.N(plain.xreplace({X: sp.Float(x, 60)}), 40)
    if value.is_real is False or not value.is_number:
        return math.nan
    try:
        return float(value)
    except (TypeError, OverflowError):
        return math.nan


def _evaluate(exprs: list[sp.Expr], dtype: str, tmp: Path) -> np.ndarray:
    printer = CudaPrinter(dtype, {"x": "x"})
    ctype = C_TYPES[dtype]
    lines = ["#include <math.h>", "#include <stdio.h>", f"typedef {ctype} real;",
             "static inline real nc_sq(const real x) { return x * x; }",
             "static inline real nc_cube(const real x) { return x * x * x; }"]
    lines += [f"static real f{k}(const real x) {{ return {printer.code(e)}; }}" for k, e in enumerate(exprs)]
    lines += ["typedef real (*fn)(const real);",
              f"static const fn table[] = {{{', '.join(f'f{k}' for k in range(len(exprs)))}}};",
              f"static const double points[] = {{{', '.join(repr(p) for p in POINTS)}}};",
              "int main(void) {",
              f"    for (int k = 0; k < {len(exprs)}; ++k)",
              f"        for (int j = 0; j < {len(POINTS)}; ++j)",
              "            printf(\"%.17g\\n\", (double)table[k]((real)points[j]));",
              "    return 0;", "}"]
    source, exe = tmp / f"printed_{dtype}.c", tmp / f"printed_{dtype}"
    source.write_text("\n".join(lines) + "\n")
    subprocess.run([CC, "-std=c99", "-O1", "-Wall", "-Werror", "-o", str(exe), str(source), "-lm"], check=True,
                   capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    return np.array([float(v) for v in out]).reshape(len(exprs), len(POINTS))


def _mismatches(exprs: list[sp.Expr], dtype: str, tmp: Path, relative: bool) -> list[str]:
    """Points where the C value is off: relative to the value, or (relative=False) to max(|value|, 1).

    The second is the right yardstick for formulas whose terms cancel (1 - tanh(x)**2 at
    x = 30 is 0 in any float arithmetic): the printing is checked, not the formula.
    """
    got = _evaluate(exprs, dtype, tmp)
    cast = np.float32 if dtype == "float32" else np.float64
    bad = []
    for k, expr in enumerate(exprs):
        for j, x in enumerate(POINTS):
            with np.errstate(over="ignore", under="ignore"):
                want = float(cast(_reference(expr, float(cast(x)))))
            value = got[k, j]
            if math.isnan(want) or math.isinf(want):
                ok = (math.isnan(want) and math.isnan(value)) or want == value
            else:
                scale = abs(want) if relative else max(abs(want), 1.0)
                ok = abs(value - want) <= TOLERANCE[dtype] * scale + TINY[dtype]
            if not ok:
                bad.append(f"{expr} at x={x}: C {value!r}, SymPy {want!r}")
    return bad


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_printed_c_matches_sympy_at_40_digits(dtype: str, tmp_path: Path) -> None:
    bad = _mismatches(_expressions(), dtype, tmp_path, relative=False)
    assert not bad, "\n".join(bad[:20])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_stable_functions_keep_full_relative_precision_out_to_1000(dtype: str, tmp_path: Path) -> None:
    """sigmoid(-30) = 9.4e-14 must not come out as 1e-16 noise; softplus(1000) must not overflow."""
    exprs = [sigmoid(X), softplus(X), log1p(X / 2e3), expm1(X / 1e3),
             sp.tanh(X / 40), X * sp.tanh(softplus(X))]
    bad = _mismatches(exprs, dtype, tmp_path, relative=True)
    assert not bad, "\n".join(bad[:20])


def test_float32_printing_uses_float_functions_and_literals() -> None:
    printer = CudaPrinter("float32", {"x": "x[i]"})
    text = printer.code(sp.tanh(X) + sp.exp(-X) / 3 + sp.sqrt(1 + X**2) + sigmoid(X) + softplus(X) + sp.pi + 2 * X)
    for function in ("tanhf(", "expf(", "sqrtf(", "log1pf(", "fmaxf(", "fabsf("):
        assert function in text
    assert "M_PI" not in text and "3.14159" in text
    assert re.search(r"(?<![\w.])\d+(?![\w.])", text.replace("x[i]", "x")) is None, text  # no int literal


def test_piecewise_evaluates_only_the_branch_taken() -> None:
    text = CudaPrinter("float64", {"x": "x"}).code(sp.Piecewise((sp.exp(X), X < 0), (X, True)))
    assert text.startswith("((x < 0.0) ? (exp(x)) :") and "\n" not in text
