"""The report page: network diagram, derivation beside the generated code, explicit graph, run.

`report_html` builds the whole page for a compiled program (and a run, when there was
one); `derivation_html` the derivation alone (`derive --format html`); `fragment=True`
gives a ``<div>`` for Jupyter instead of a document.  Every part is inline (style, script,
SVG, MathML): the page makes no request and opens from disk.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..explain.formulas import Formulas
from ..explain.graph import op_rows, stage_totals
from ..explain.render import LEGEND, document, scalar_document
from ..runtime.checkpoint import write_bytes_atomic
from ..version import __version__
from .codemap import FUNCTION, CodeMap, code_map
from .derivation import SectionView, sections
from .diagram import DiagramView, diagram
from .network import from_model, shape_text
from .runview import RunRecord, RunView, run_view
from .templating import render


@dataclass(frozen=True)
class GraphRow:
    """One op of the explicit graph as the table shows it (numbers already formatted)."""

    index: int
    stage: str
    kind: str
    writes: str
    reads: str
    shape: str
    flops: str
    formula: str


@dataclass
class Report:
    """Everything the page template shows; parts left out are None or empty."""

    title: str
    model: str
    summary: str
    legend: str
    sections: list[SectionView] = field(default_factory=list)
    diagram: DiagramView | None = None
    graph: list[GraphRow] = field(default_factory=list)
    totals: dict[str, str] = field(default_factory=dict)
    batch: int = 32
    code: CodeMap | None = None
    run: RunView | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)
    version: str = __version__


def _graph(program: object, batch: int) -> tuple[list[GraphRow], dict[str, str]]:
    rows = op_rows(program, FUNCTION, batch)
    view = [GraphRow(r.index, r.stage, r.kind, ", ".join(r.writes), ", ".join(r.reads), _shape(r.shape),
                     f"{r.flops:,}", r.formula) for r in rows]
    totals = {stage: f"{cost:,}" for stage, cost in stage_totals(rows).items()}
    totals["total"] = f"{sum(r.flops for r in rows):,}"
    return view, totals


def _shape(shape: tuple | None) -> str:
    if shape is None:  # a mark in the op list (GradReady) writes no buffer
        return "-"
    return shape_text(shape[1:]) if shape[:1] == ("N",) else ("×".join(map(str, shape)) or "scalar")


def _diagram(model: object) -> DiagramView | None:
    net = from_model(model)
    return None if net is None else diagram(net)


def _facts(program: object, backend: str, totals: dict[str, str]) -> list[tuple[str, str]]:
    return [("parameters", f"{program.n_params:,}"), ("backend", f"{backend}, {program.dtype}"),
            ("ops per step", str(len(program.functions[FUNCTION].ops))), ("FLOPs per step", totals["total"])]


def build(model: object, derivation: object, run: RunRecord | None = None, batch: int = 32, backend: str = "numpy",
          numpy_options: dict | None = None, simplify: bool | None = None) -> Report:
    """The full report of `model` from its `derivation` (`derive.backprop.derive`), with `run` when given.

    `backend` is what the program was compiled for (the page shows both backends' code);
    `numpy_options` the NumPy backend's options it was compiled with, if any.
    """
    formulas = Formulas.of(derivation)
    program = derivation.program
    cmap = code_map(program, FUNCTION, numpy_options)
    graph, totals = _graph(program, batch)
    return Report(f"nncompile report: {formulas.model}", formulas.model, formulas.summary, LEGEND["unicode"],
                  sections(document(formulas, simplify), cmap, program), _diagram(model), graph, totals,
                  batch, cmap, None if run is None else run_view(run), _facts(program, backend, totals))


def report_html(prog: object, run: RunRecord | None = None, batch: int = 32, fragment: bool = False) -> str:
    """The report of a compiled program (`nc.compile`'s result) as a page, or with `fragment` a <div> for Jupyter."""
    options = prog.options if prog.backend == "numpy" else None
    report = build(prog.model, prog.derivation, run, batch, prog.backend, options)
    return render("fragment.html.j2" if fragment else "page.html.j2", report=report)


def page_html(report: Report) -> str:
    """A built report as a page."""
    return render("page.html.j2", report=report)


def derivation_html(formulas: Formulas, simplify: bool | None = None, layers: list[str] | None = None,
                    params: list[str] | None = None) -> str:
    """The derivation alone as a page, narrowed to `layers` / `params` as `derive` does."""
    formulas.check_names(layers, params)
    program = formulas.derivation.program
    cmap = code_map(program, FUNCTION)
    doc = document(formulas, simplify, layers, params)
    report = Report(doc.title, formulas.model, formulas.summary, LEGEND["unicode"], sections(doc, cmap, program),
                    code=cmap)
    return render("page.html.j2", report=report)


def scalar_html(scalar: object, params: list[str] | None = None) -> str:
    """The scalar view (every weight's gradient, small networks) as a page of MathML."""
    doc = scalar_document(scalar, params)
    report = Report(doc.title, scalar.model, " ".join(doc.intro), "", sections(doc, None, None))
    return render("page.html.j2", report=report)


def write(path: str | Path, html: str) -> int:
    """Write the page atomically (temporary file, then rename), readable as the umask allows; returns its size."""
    data = html.encode("utf-8")
    write_bytes_atomic(path, data)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return len(data)
