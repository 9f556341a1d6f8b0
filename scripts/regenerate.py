"""Rewrite generated/ from examples/: `python scripts/regenerate.py` (a test checks it is current).

Each example model gets one standalone script per backend, named <example>_<backend>.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("xor", "digits", "mish", "digits_cnn")
BACKENDS = ("numpy", "cuda")


def expected() -> dict[Path, str]:
    """Every file generated/ should hold, with its exact text."""
    from nncompile import load_model
    from nncompile.generate import standalone
    files = {}
    for example in EXAMPLES:
        model, training = load_model(str(ROOT / "examples" / f"{example}.py"))
        for backend in BACKENDS:
            name = f"{example}_{backend}.py"
            files[ROOT / "generated" / name] = standalone(model, backend, filename=name, training=training)
    return files


def main() -> int:
    for path, text in expected().items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
