"""`nncompile derive`: formats, narrowing, and the link from each formula to the generated code."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import nncompile as nc
from nncompile import load_model
from nncompile.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _derive(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert main(["derive", *args]) == 0
    return capsys.readouterr().out


def test_default_format_is_text_when_not_a_terminal(capsys: pytest.CaptureFixture) -> None:
    out = _derive(capsys, str(EXAMPLES / "xor.py"))
    assert out.isascii() and "dz1 = (dz2 @ W2.T)*(1 - a1**2)" in out


def test_narrowing_to_a_layer_or_a_parameter(capsys: pytest.CaptureFixture) -> None:
    out = _derive(capsys, str(EXAMPLES / "mish.py"), "--layer", "dense2", "--format", "text")
    assert "[dense2: 16 -> 16, mish]" in out and "[dense1" not in out and "[loss" not in out
    out = _derive(capsys, str(EXAMPLES / "xor.py"), "--param", "dense1.W", "--format", "unicode")
    sections = re.findall(r"^\[(.*)\]$", out, re.M)
    assert sections == ["gradient of dense1.W"]
    assert "∂L/∂W₁ = Xᵀ·δ₁" in out and "δ₁ = (δ₂·W₂ᵀ) ⊙ (1 − a₁²)" in out and "δ₂ = (a₂ − T)/N" in out
    out = _derive(capsys, str(EXAMPLES / "xor221.py"), "--scalar", "--param", "dense2.b", "--format", "text")
    assert "dl/db2_0 = a2_0 - t0" in out and "W1_00" not in out.split("[dense2.b")[1].split("=")[0]


def test_simplify_flags_choose_raw_or_simplified(capsys: pytest.CaptureFixture) -> None:
    both = _derive(capsys, str(EXAMPLES / "xor.py"), "--format", "text")
    raw = _derive(capsys, str(EXAMPLES / "xor.py"), "--format", "text", "--no-simplify")
    simple = _derive(capsys, str(EXAMPLES / "xor.py"), "--format", "text", "--simplify")
    assert "d/dz tanh(z) = 1 - tanh(z)**2 = 1 - a**2" in both
    assert "d/dz tanh(z) = 1 - tanh(z)**2\n" in raw and "dz1 = (dz2 @ W2.T)*(1 - tanh(z1)**2)" in raw
    assert "d/dz sigmoid(z) = exp(-z)/(1 + exp(-z))**2\n" in raw
    assert "d/dz sigmoid(z) = (1 - sigmoid(z))*sigmoid(z) = a*(1 - a)" in simple
    assert "exp(-z)/(1 + exp(-z))**2" not in simple


@pytest.mark.parametrize("args,message", [
    (["--layer", "dense7"], "no layer 'dense7' (choose from loss, dense2, dense1"),
    (["--param", "dense1.Q"], "no parameter 'dense1.Q' (choose from dense1.W, dense1.b, dense2.W, dense2.b)"),
    (["--standalone"], "--standalone makes a LaTeX document: use it with --format latex"),
])
def test_mistakes_are_one_line(capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    assert main(["derive", str(EXAMPLES / "xor.py"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("example", ["xor", "digits", "mish", "kinks"])
def test_every_backward_line_of_the_generated_code_carries_its_formula(example: str) -> None:
    """derivation -> code: each formula derive lists as code is a block header of the module, and
    every line of the module's backward blocks ends in a comment saying what it computes."""
    model, _ = load_model(str(EXAMPLES / f"{example}.py"))
    prog = nc.compile(model)
    source = prog.source
    for layer in prog.formulas:
        for formula in layer.code:
            assert f"# backward: {formula}\n" in source, formula
    body = source[source.index("def loss_and_grad"):source.index("return L", source.index("def loss_and_grad"))]
    for block in body.split("        # backward: ")[1:]:
        lines = [line for line in block.splitlines()[1:] if line.strip() and not line.strip().startswith("# ")]
        assert lines and all(re.search(r"\)\s+# \S.* = \S", line) for line in lines), block
