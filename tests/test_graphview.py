"""`nncompile graph`: the op table with FLOPs, DOT with forward and backward told apart, PNG or one clear line."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nncompile import load_model
from nncompile.cli import main
from nncompile.derive import derive
from nncompile.explain.graph import dot, flops, table

ROOT = Path(__file__).resolve().parent.parent
XOR = str(ROOT / "examples" / "xor.py")


def _program() -> object:
    return derive(load_model(XOR)[0]).program


def test_flops_of_the_matrix_products_follow_their_shapes() -> None:
    program = _program()
    ops = {op.formula.split(" =")[0]: op for op in program.functions["loss_and_grad"].ops}
    assert flops(program, ops["z1"], 4) == 2 * 4 * 2 * 8            # X (4x2) @ W1 (2x8)
    assert flops(program, ops["da1"], 4) == 2 * 4 * 1 * 8           # dz2 (4x1) @ W2.T (1x8)
    assert flops(program, ops["dW1"], 4) == 2 * 4 * 2 * 8 + 4 * 8   # X.T @ dz1, plus the row sums for db1
    text = table(program, batch=4)
    total = sum(flops(program, op, 4) for op in program.functions["loss_and_grad"].ops)
    count = len(program.functions["loss_and_grad"].ops)
    assert text.splitlines()[-1].startswith(f"total: {count} ops, {total:,} FLOPs at batch size N = 4 (forward ")


def test_dot_tells_forward_from_backward() -> None:
    text = dot(_program())
    backward = [line for line in text.splitlines() if '"backward: ' in line]
    forward = [line for line in text.splitlines() if '"forward: ' in line]
    assert backward and forward
    assert all("dashed" in line and "#b91c1c" in line for line in backward)
    assert not any("dashed" in line for line in forward)
    assert "cluster_legend" in text and '"dW1" [shape=cylinder, color="#b91c1c"' in text


def test_png_is_drawn_where_graphviz_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("graphviz")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot program is not installed")
    out = tmp_path / "xor.png"
    assert main(["graph", XOR, "--png", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_dot_is_one_clear_line(tmp_path: Path) -> None:
    pytest.importorskip("graphviz")
    env = {**os.environ, "PATH": str(tmp_path)}    # no dot anywhere on the PATH
    done = subprocess.run([sys.executable, "-m", "nncompile.cli", "graph", XOR, "--png", str(tmp_path / "x.png")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--png needs Graphviz's dot program" in lines[0]
    assert "apt-get install graphviz" in lines[0]
    assert not (tmp_path / "x.png").exists()
