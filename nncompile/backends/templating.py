"""Jinja2 set-up shared by the backends: where the templates are, and their filters.

Templates live in the top-level ``templates/`` folder of a source checkout and inside the
package (``nncompile/templates``) once installed from a wheel.  `StrictUndefined` makes a
missing variable an error rather than silently empty generated code.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import jinja2

PACKAGE = Path(__file__).resolve().parent.parent
COMMENT_COLUMN = 48


def template_dir() -> Path:
    """The templates folder: the installed copy if present, else the source checkout's."""
    for candidate in (PACKAGE / "templates", PACKAGE.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"nncompile templates not found beside {PACKAGE}")


def comment_text(text: object) -> str:
    """`text` made safe inside a ``#`` comment: anything unprintable (a line break, a NUL) is escaped.

    Comments carry formulas and file names; a newline in one would end the comment and
    turn the rest into code.
    """
    text = str(text)
    if text.isprintable():  # the common case, checked in C: most comments are formulas
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def commented(line: tuple[str, str], indent: int = 0) -> str:
    """``code  # comment`` with comments aligned at a fixed column."""
    code, comment = line
    if not comment:
        return code
    pad = max(COMMENT_COLUMN - indent - len(code), 2)
    return f"{code}{' ' * pad}# {comment_text(comment)}"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # the output is Python/CUDA source, not HTML; values are escaped by pyrepr
    )
    env.filters["pyrepr"] = repr
    env.filters["commented"] = commented
    env.filters["comment"] = comment_text
    return env


def render(name: str, **context: object) -> str:
    """Render one template with the given context."""
    return environment().get_template(name).render(**context)


@lru_cache(maxsize=1)
def templates_digest() -> str:
    """Hash of every template's text: part of the JIT cache key (with jit.compiler_digest)."""
    digest = hashlib.sha256()
    root = template_dir()
    for path in sorted(root.rglob("*.j2")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
