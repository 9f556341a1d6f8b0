"""The derivation as the report shows it: each section's formulas as MathML, beside the
generated NumPy lines and CUDA launches that compute them.

Works on `explain.render`'s document (the same one `derive` prints), so the page and the
text output never disagree; `codemap` finds the code of each row.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from markupsafe import Markup

from ..explain.printers import mathml_chain, show
from ..explain.render import Code, Document, Note, Row
from .codemap import CodeLine, CodeMap, Launch, ops_for


@dataclass(frozen=True)
class RowView:
    """A formula chain as MathML, with the ops (and NumPy line ranges) that compute it."""

    is_row: ClassVar[bool] = True
    label: str
    math: Markup
    text: str                              # the same formula in Unicode (hover title, copy)
    ops: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]     # NumPy line ranges, for links that need no script


@dataclass(frozen=True)
class NoteView:
    """A note under a formula: a stability rewrite, a kink, or anything else said."""

    is_row: ClassVar[bool] = False
    kind: str                              # "rewrite", "kink" or "note"
    text: str


@dataclass(frozen=True)
class Gap:
    """Lines of the function left out of a section's excerpt."""

    is_gap: ClassVar[bool] = True
    count: int


@dataclass(frozen=True)
class SectionView:
    """One section of the derivation: its rows and notes, and the code of its rows."""

    id: str
    title: str
    items: tuple[RowView | NoteView, ...]
    code: tuple[CodeLine | Gap, ...]
    launches: tuple[Launch, ...]
    kernels: tuple[tuple[str, str], ...]   # (name, source) of the kernels those launches run
    ops: tuple[int, ...]


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "section"
    slug, i = base, 1
    while slug in taken:
        i += 1
        slug = f"{base}-{i}"
    taken.add(slug)
    return slug


def _note(text: str) -> NoteView:
    if text.startswith("stability rewrite"):
        return NoteView("rewrite", text)
    return NoteView("kink" if "not differentiable" in text else "note", text)


def _excerpt(cmap: CodeMap, ops: set[int]) -> tuple[CodeLine | Gap, ...]:
    """The function's lines belonging to `ops`, in order, with the lines between them counted as gaps."""
    out: list[CodeLine | Gap] = []
    skipped = 0
    for line in cmap.lines:
        if line.op in ops:
            if skipped and out:
                out.append(Gap(skipped))
            out.append(line)
            skipped = 0
        else:
            skipped += 1
    return tuple(out)


def _merged(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Line ranges with touching ones joined: (193, 196), (197, 198) -> (193, 198)."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(last, out[-1][1]))
        else:
            out.append((first, last))
    return tuple(out)


def _named(doc: Document) -> set[str]:
    return {name for s in doc.sections for item in s.items if isinstance(item, Row) for name in item.writes}


def sections(doc: Document, cmap: CodeMap | None, program: object) -> list[SectionView]:
    """Every section of `doc` with MathML rows, notes, and (given a code map) the code of its rows."""
    named, taken, out = _named(doc), set(), []
    for section in doc.sections:
        items: list[RowView | NoteView] = []
        section_ops: set[int] = set()
        for item in section.items:
            if isinstance(item, Row):
                ops = ops_for(program, cmap.function, item.writes, named) if cmap and item.writes else ()
                section_ops.update(ops)
                spans = _merged([cmap.spans[i] for i in ops]) if cmap else ()
                items.append(RowView(item.label, Markup(mathml_chain(item.exprs)),
                                     " = ".join(show(e, "unicode") for e in item.exprs), ops, spans))
            elif isinstance(item, Note):
                items.append(_note(item.text))
            elif not isinstance(item, Code):
                raise TypeError(f"unknown document item {type(item).__name__}")
        code = _excerpt(cmap, section_ops) if cmap else ()
        launches = tuple(s for s in cmap.launches if set(s.ops) & section_ops) if cmap else ()
        kernels = tuple(dict.fromkeys((s.kernel, cmap.kernels[s.kernel]) for s in launches
                                      if s.kernel in cmap.kernels)) if cmap else ()
        out.append(SectionView(_slug(section.title, taken), section.title, tuple(items), code, launches, kernels,
                               tuple(sorted(section_ops))))
    return out
