"""Rewrite tests/golden/ (the expected `derive` and `graph` outputs) and the tool's outputs quoted in docs/.

`python scripts/refresh_golden.py` after a deliberate change of the output; review the diff.
tests/test_golden.py compares the current output with these files (it never rewrites them),
and checks that every block of docs/ written by the tool is current.
"""
from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
DOCS = ROOT / "docs"
EXAMPLES = ("xor", "digits", "mish", "xor221", "kinks", "resmlp", "digits_regularized", "digits_cnn")
FORMATS = {"text": "txt", "unicode": "utf8.txt", "latex": "tex", "markdown": "md"}
#: A block of a Markdown file in docs/ that the tool wrote: the command in an HTML comment.
DOC_BLOCK = re.compile(r"(<!-- nncompile (?P<args>[^>]*?) -->\n)(?P<body>.*?)(<!-- end -->)", re.S)


def cases() -> dict[str, list[str]]:
    """Golden file name -> the `nncompile` arguments that produce it."""
    out = {}
    for example in EXAMPLES:
        model = f"examples/{example}.py"
        for fmt, ext in FORMATS.items():
            extra = ["--standalone"] if fmt == "latex" else []
            out[f"derive_{example}.{ext}"] = ["derive", model, "--format", fmt, *extra]
    out["derive_xor221_raw.txt"] = ["derive", "examples/xor221.py", "--format", "text", "--no-simplify"]
    out["derive_xor221_simplified.utf8.txt"] = ["derive", "examples/xor221.py", "--format", "unicode", "--simplify"]
    out["derive_xor221_latex_block.tex"] = ["derive", "examples/xor221.py", "--format", "latex"]
    out["derive_xor221_param.utf8.txt"] = ["derive", "examples/xor221.py", "--format", "unicode",
                                           "--param", "dense1.W"]
    out["derive_kinks_layer.txt"] = ["derive", "examples/kinks.py", "--format", "text", "--layer", "dense2"]
    out["derive_xor221_scalar.txt"] = ["derive", "examples/xor221.py", "--format", "text", "--scalar"]
    out["derive_xor221_scalar.utf8.txt"] = ["derive", "examples/xor221.py", "--format", "unicode", "--scalar"]
    out["derive_xor221_scalar.tex"] = ["derive", "examples/xor221.py", "--format", "latex", "--scalar",
                                       "--standalone"]
    out["graph_xor.txt"] = ["graph", "examples/xor.py", "--batch-size", "4"]
    out["graph_xor.dot"] = ["graph", "examples/xor.py", "--dot"]
    out["graph_digits.txt"] = ["graph", "examples/digits.py", "--batch-size", "32"]
    out["graph_resmlp.dot"] = ["graph", "examples/resmlp.py", "--dot"]
    out["graph_digits_cnn.txt"] = ["graph", "examples/digits_cnn.py", "--batch-size", "32"]
    return out


def run(args: list[str]) -> str:
    """What `nncompile ARGS` prints, run from the repository root."""
    from nncompile.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(ROOT / a) if a.endswith(".py") else a for a in args])
    if code != 0:
        raise RuntimeError(f"nncompile {' '.join(args)} exited with {code}")
    return out.getvalue()


def doc_blocks(text: str) -> list[tuple[str, str]]:
    """(arguments, current body) of every tool-written block of a docs/ Markdown file."""
    return [(m.group("args"), m.group("body")) for m in DOC_BLOCK.finditer(text)]


def fenced(args: str) -> str:
    """The block body a docs/ file should hold for `nncompile ARGS`."""
    output = run(args.split())
    return output if "--format markdown" in args else "```\n" + output + "```\n"


def main() -> int:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, args in cases().items():
        (GOLDEN / name).write_text(run(args), encoding="utf-8")
        print(f"wrote tests/golden/{name}")
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        new = DOC_BLOCK.sub(lambda m: m.group(1) + fenced(m.group("args")) + m.group(4), text)
        if new != text:
            doc.write_text(new, encoding="utf-8")
            print(f"updated {doc.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
