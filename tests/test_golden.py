"""`derive` and `graph` print exactly the reviewed outputs in tests/golden/, in every format.

The expected files are written by `python scripts/refresh_golden.py` (after a deliberate
change, reviewed as a diff); this test only compares.  It also checks that the tool's
outputs quoted in docs/ are current, and that the LaTeX compiles (with a LaTeX engine
when the machine has one) and renders formula by formula with matplotlib's mathtext.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("refresh_golden", ROOT / "scripts" / "refresh_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)
CASES = golden.cases()
LATEX = shutil.which("pdflatex") or shutil.which("lualatex") or shutil.which("xelatex")


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_matches_golden_file(name: str) -> None:
    expected = (golden.GOLDEN / name).read_text(encoding="utf-8")
    assert golden.run(CASES[name]) == expected, f"refresh with scripts/refresh_golden.py if {name} changed on purpose"


def test_every_golden_file_has_a_case() -> None:
    assert sorted(p.name for p in golden.GOLDEN.iterdir()) == sorted(CASES)


def test_docs_quote_the_current_output() -> None:
    docs = sorted(golden.DOCS.glob("*.md"))
    blocks = [(doc, args, body) for doc in docs for args, body in golden.doc_blocks(doc.read_text(encoding="utf-8"))]
    assert blocks, "docs/ quotes no tool output"
    for doc, args, body in blocks:
        assert body == golden.fenced(args), f"{doc.name}: `nncompile {args}` changed; run scripts/refresh_golden.py"


def _formulas() -> list[str]:
    from nncompile import load_model
    from nncompile.derive import derive
    from nncompile.explain.formulas import Formulas
    from nncompile.explain.render import document, latex_rows, scalar_document
    rows = []
    for example in golden.EXAMPLES:
        model, _ = load_model(str(ROOT / "examples" / f"{example}.py"))
        formulas = Formulas.of(derive(model))
        for simplify in (None, True, False):
            rows += latex_rows(document(formulas, simplify))
    model, _ = load_model(str(ROOT / "examples" / "xor221.py"))
    rows += latex_rows(scalar_document(Formulas.of(derive(model)).scalar()))
    return sorted(set(rows))


def test_every_latex_formula_renders_with_mathtext() -> None:
    """Always runs: each formula chain through matplotlib's TeX parser and its layout of the glyphs
    (to outlines: rasterising a PNG of each took twice as long and checks nothing more of the TeX)."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib import mathtext
    rows = _formulas()
    assert len(rows) > 80
    parser = mathtext.MathTextParser("path")
    for row in rows:
        parser.parse(f"${row}$")


@pytest.mark.skipif(LATEX is None, reason="no LaTeX engine (pdflatex, lualatex or xelatex) on this machine")
@pytest.mark.parametrize("name", sorted(n for n in CASES if n.endswith(".tex")))
def test_latex_output_compiles(name: str, tmp_path: Path) -> None:
    text = (golden.GOLDEN / name).read_text(encoding="utf-8")
    if not text.startswith(r"\documentclass"):
        text = "\\documentclass{article}\n\\usepackage{amsmath,amssymb}\n\\begin{document}\n" + text + \
               "\n\\end{document}\n"
    (tmp_path / "doc.tex").write_text(text, encoding="utf-8")
    done = subprocess.run([LATEX, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stdout.splitlines() if line.startswith("!")]
    assert done.returncode == 0 and (tmp_path / "doc.pdf").stat().st_size > 1000, errors[:5]
