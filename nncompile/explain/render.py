"""`nncompile derive`'s output: the formulas as text, unicode, LaTeX or Markdown.

The formulas are laid out once as a small document (sections of rows, notes and code
lines) and each format writes that document; every formula in it is printed by SymPy's
printers (`printers`), never patched as a string.  LaTeX is one ``align*`` block (with
``--standalone``, a complete document), and each of its formulas also renders with
matplotlib's mathtext.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import sympy as sp
from sympy.printing.latex import latex_escape

from ..symbolic.notation import LOSS, LOSS_MEAN, LOSS_ONE, NamedArray, Partial
from .equations import LayerFormulas, mode_of
from .printers import show

if TYPE_CHECKING:  # the scalar view imports this module
    from .formulas import Formulas
    from .scalar import ScalarFormulas

FORMATS = ("text", "unicode", "latex", "markdown")
_LABEL = 13
_WIDTH = 100

LEGEND = {
    "text": "notation: X holds the inputs (one row per example, N rows) and T the targets; layer k computes "
            "zk = a(k-1) @ Wk + bk and ak = f(zk), with a0 = X; dzk = dL/dzk is layer k's delta and dak = dL/dak; "
            "*, / and ** act elementwise, @ is the matrix product, .T the transpose, sum_n(...) sums over the rows, "
            "sum(...) over every element; Heaviside(u, 0) is the unit step, 0 for u <= 0; activations are "
            "differentiated in z, with a = f(z).",
    "unicode": "notation: X holds the inputs (one row per example, N rows) and T the targets; layer k computes "
               "zₖ = aₖ₋₁·Wₖ + bₖ and aₖ = f(zₖ), with a₀ = X; δₖ = ∂L/∂zₖ is layer k's delta; ⊙ is the "
               "elementwise product, · the matrix product, ᵀ the transpose, Σₙ sums over the rows, Σ over every "
               "element; H(u) is the unit step, 0 for u ≤ 0; activations are differentiated in z, with a = f(z).",
}
LEGEND_LATEX = (r"$X$ holds the inputs (one row per example, $N$ rows) and $T$ the targets; layer $k$ computes "
                r"$z_k = a_{k-1} W_k + b_k$ and $a_k = f(z_k)$, with $a_0 = X$; "
                r"$\delta_k = \partial L / \partial z_k$ is layer $k$'s delta; $\odot$ is the elementwise product, "
                r"juxtaposition the matrix product, ${}^{\top}$ the transpose, $\sum_n$ sums over the rows, "
                r"$\sum$ over every element; $H(u)$ is the unit step, 0 for $u \le 0$; activations are "
                r"differentiated in $z$, with $a = f(z)$.")


@dataclass
class Row:
    """A labelled chain of formulas, printed e0 = e1 = e2.

    `writes` names the buffers of the generated code that compute it (z1, dz1, dW1, L), so
    that a reader such as the HTML report can find its lines.
    """

    label: str
    exprs: tuple[sp.Basic, ...]
    writes: tuple[str, ...] = ()


@dataclass
class Note:
    text: str


@dataclass
class Code:
    lines: tuple[str, ...]


@dataclass
class Section:
    title: str
    items: list[Row | Note | Code] = field(default_factory=list)


@dataclass
class Document:
    title: str
    intro: list[str]
    sections: list[Section]
    legend: bool = True


# -- laying out the formulas ---------------------------------------------------------------

def _eq(eq: sp.Eq) -> tuple[sp.Basic, ...]:
    return (eq.lhs, eq.rhs)


@dataclass(frozen=True)
class _Buffers:
    """Which buffer of the program holds what a formula's left-hand side names."""

    names: dict[str, str]      # a name shown (z1, dz1, da1_via_z2) -> its buffer; only buffers that exist
    grads: dict[str, str]      # a parameter's buffer (W1) -> its gradient's (dW1)

    @classmethod
    def of(cls, formulas: Formulas) -> "_Buffers":
        derivation = formulas.derivation
        names = {name: name for name in derivation.program.buffers}
        names.update({shown: buf for shown, buf in derivation.aliases.items() if buf in names})
        return cls(names, {p.buffer: p.grad for p in derivation.program.params})

    def written(self, lhs: sp.Basic) -> tuple[str, ...]:
        """z1 and dz1 themselves, a path's δ its buffer, ∂L/∂W1 its gradient dW1, L the loss; () for a
        name no buffer holds (a step of a derivation the code does not take, such as ∂L/∂μ)."""
        if isinstance(lhs, NamedArray):
            return (self.names[lhs.name],) if lhs.name in self.names else ()
        if isinstance(lhs, Partial) and lhs.args[0] == LOSS and isinstance(lhs.args[1], NamedArray):
            name = lhs.args[1].name
            return (self.grads.get(name, name),)
        return ("L",) if lhs == LOSS else ()

    def steps(self, layer: LayerFormulas) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for step in layer.steps for name in self.written(step.lhs)))


def _loss_section(formulas: Formulas, mode: str, buffers: _Buffers) -> Section:
    loss = formulas.loss
    delta = buffers.written(loss.delta.lhs)
    section = Section(f"loss: {loss.name} (mean over the batch)", [Row("loss", _eq(loss.loss), ("L",))])
    section.items += [Row(label, row, buffers.written(row[0]) or ("L",)) for label, row in loss.rows]
    chain = loss.raw_chain if mode == "raw" else loss.chain
    if mode == "simplified":
        chain = (chain[0], chain[-1])
    section.items.append(Row("chain rule", chain, delta))
    section.items.append(Row("delta", _eq(loss.delta_raw if mode == "raw" else loss.delta), delta))
    section.items += [Note(f"stability rewrite: {r}") for r in loss.rewrites]
    section.items += [Note(k) for k in loss.kinks] + [Note(n) for n in loss.notes]
    return section


def _layer_section(layer: LayerFormulas, mode: str, buffers: _Buffers) -> Section:
    section = Section(f"{layer.name}: {layer.description}")
    section.items += [Row("forward", f, buffers.written(f[0])) for f in layer.forward]
    for i, act in enumerate(layer.activations):
        writes = layer.derivative_writes[i:i + 1]
        section.items.append(Row("derivative", act.chain(mode), writes))
        section.items += [Note(f"stability rewrite: {r}") for r in act.rewrites]
        section.items += [Note(n) for n in act.notes]
    if layer.delta is None:
        section.items.append(Note("no gradient reaches this node: it depends on no parameter"))
    else:
        section.items.append(Row("delta", _eq(layer.delta_raw if mode == "raw" else layer.delta),
                                 buffers.steps(layer)))
    if len(layer.steps) > 1 and mode != "raw":
        section.items += [Row("in steps", _eq(step), buffers.written(step.lhs)) for step in layer.steps]
    section.items += [Row(label, chain, buffers.written(chain[0])) for label, chain in layer.rows]
    section.items += [Note(n) for n in layer.notes]
    section.items += [Row("this use", _eq(g), buffers.written(g.lhs)) for g in layer.uses]
    section.items += [Row("gradient", _eq(g), buffers.written(g.lhs)) for g in layer.gradients.values()]
    if layer.code:
        section.items.append(Code(layer.code))
    return section


def _param_section(formulas: Formulas, name: str, mode: str, buffers: _Buffers) -> Section:
    param = formulas.param(name)
    layers = {lay.delta.lhs: lay for lay in formulas if lay.delta is not None}
    section = Section(f"gradient of {name}", [Row("gradient", _eq(param.gradient),
                                                  buffers.written(param.gradient.lhs))])
    for delta in param.deltas:
        layer = layers[delta.lhs]
        section.items.append(Row("where", _eq(layer.delta_raw if mode == "raw" else delta), buffers.steps(layer)))
    return section


def _selected(formulas: Formulas, layers: list[str] | None) -> Iterable[LayerFormulas]:
    for layer in formulas:
        if layers is None or layer.name in layers or any(a.name in layers for a in layer.activations):
            yield layer


def document(formulas: Formulas, simplify: bool | None = None, layers: list[str] | None = None,
             params: list[str] | None = None) -> Document:
    """The derivation laid out: loss, then each layer from the output back (or the selection)."""
    mode = mode_of(simplify)
    buffers = _Buffers.of(formulas)
    sections: list[Section] = []
    show_all = layers is None and params is None
    if show_all or "loss" in (layers or []) or formulas.loss.name in (layers or []):
        sections.append(_loss_section(formulas, mode, buffers))
    if show_all or layers:
        sections += [_layer_section(layer, mode, buffers) for layer in _selected(formulas, layers)]
    sections += [_param_section(formulas, name, mode, buffers) for name in params or []]
    intro = [formulas.summary, "backward pass, from the loss to the input"
             + {"raw": " (raw chain-rule products, unsimplified)", "simplified": " (simplified forms)"}.get(mode, "")]
    return Document(f"Backpropagation for model {formulas.model}", intro, sections)


def scalar_document(scalar: ScalarFormulas, params: list[str] | None = None) -> Document:
    """The scalar view laid out: the per-example forward pass, then each parameter's entries."""
    inputs = ", ".join(e.name for e in scalar.inputs)
    targets = ", ".join(e.name for e in scalar.targets)
    intro = [f"scalar view of model {scalar.model}: every parameter's gradient, for one example (inputs {inputs}; "
             f"targets {targets}) and as the batch mean over the rows n of X and T",
             "indices count from 0, as in NumPy (W1_01 is params['dense1.W'][0, 1]); each gradient is the chain "
             "rule summed over every path from the parameter to the loss"
             + (" (raw chain-rule factors)" if scalar.mode == "raw" else "")]
    sections = [Section("forward pass, one example", [Row("forward", _eq(eq)) for eq in scalar.forward])]
    for name in params or list(dict.fromkeys(g.param for g in scalar)):
        section = Section(f"{name}: dl/d(entry) for one example, dL/d(entry) for the batch mean")
        for g in scalar:
            if g.param == name:
                section.items.append(Row(f"{g.n_paths} path" + ("s" if g.n_paths > 1 else ""),
                                         (Partial(LOSS_ONE, g.symbol), g.paths, g.one_example)))
                section.items.append(Row("batch mean", (Partial(LOSS_MEAN, g.symbol), g.batch_mean)))
        sections.append(section)
    if scalar.constants:
        sections[0].items += [Note(f"{s.name} = {v:g}") for s, v in scalar.constants.items()]
    return Document(f"Scalar gradients for model {scalar.model}", intro, sections, legend=False)


# -- writing it ----------------------------------------------------------------------------

def _plain(doc: Document, style: str) -> str:
    """text and unicode: one formula chain per line, labels in a column."""
    legend = [textwrap.fill(LEGEND[style], _WIDTH, subsequent_indent="  ")] if doc.legend else []
    lines = [*doc.intro, *legend, ""]
    for section in doc.sections:
        lines.append(f"[{section.title}]")
        previous = None
        for item in section.items:
            if isinstance(item, Row):
                label = "" if item.label == previous else item.label + ":"
                previous = item.label
                lines.append(f"  {label:<{_LABEL}} " + " = ".join(show(e, style) for e in item.exprs))
            elif isinstance(item, Note):
                previous = None
                lines.append(f"  {'note:':<{_LABEL}} {item.text}")
            else:
                previous = None
                lines += [f"  {'code:' if i == 0 else '':<{_LABEL}} {c}" for i, c in enumerate(item.lines)]
        lines.append("")
    return "\n".join(lines)


def latex_rows(doc: Document) -> list[str]:
    """Every formula chain of the document in LaTeX (what the mathtext check renders)."""
    return [" = ".join(show(e, "latex") for e in item.exprs)
            for section in doc.sections for item in section.items if isinstance(item, Row)]


def _latex(doc: Document, standalone: bool) -> str:
    """One align* block: a formula chain per line, the text between them as \\intertext."""
    rows: list[str] = []
    text = [rf"\noindent {latex_escape(line)}" for line in doc.intro] + [rf"\noindent {LEGEND_LATEX}"] * doc.legend

    def flush() -> None:
        if text:
            rows.append(r"\intertext{" + r"\endgraf".join(text) + "}")
            text.clear()

    for section in doc.sections:
        text.append(rf"\medskip\noindent\textbf{{{latex_escape(section.title)}}}")
        for item in section.items:
            if isinstance(item, Row):
                first, *rest = [show(e, "latex") for e in item.exprs]
                flush()
                tag = f"\\tag*{{\\small {latex_escape(item.label)}}}"
                rows.append(f"{first} &= {rest[0]} {tag} \\\\" if rest else f"& {first} {tag} \\\\")
                rows += [f"&= {e} \\notag \\\\" for e in rest[1:]]
            elif isinstance(item, Note):
                text.append(rf"\noindent{{\small {latex_escape(item.text)}}}")
            else:
                text += [rf"\noindent{{\small\texttt{{{latex_escape(c)}}}}}" for c in item.lines]
    flush()
    if rows[-1].endswith(r" \\"):
        rows[-1] = rows[-1][:-3]
    block = "\\begin{align*}\n" + "\n".join(rows) + "\n\\end{align*}"
    if not standalone:
        return block
    return ("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{amsmath,amssymb}\n"
            "\\allowdisplaybreaks\n\\begin{document}\n" + rf"\section*{{{latex_escape(doc.title)}}}" + "\n"
            + block + "\n\\end{document}\n")


def _markdown(doc: Document) -> str:
    lines = [f"## {doc.title}", "", *[f"{line}." for line in doc.intro], "", *[LEGEND_LATEX, ""] * doc.legend]
    for section in doc.sections:
        lines += [f"### {section.title}", ""]
        for item in section.items:
            if isinstance(item, Row):
                lines.append(f"- {item.label}: $" + " = ".join(show(e, "latex") for e in item.exprs) + "$")
            elif isinstance(item, Note):
                lines.append(f"- note: {item.text}")
            else:
                lines += ["", "```python", *item.lines, "```"]
        lines.append("")
    return "\n".join(lines)


def write(doc: Document, fmt: str, standalone: bool = False) -> str:
    """`doc` in `fmt`: "text" (ASCII), "unicode", "latex" (an align* block, or a document) or "markdown"."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "latex":
        return _latex(doc, standalone)
    if fmt == "markdown":
        return _markdown(doc)
    return _plain(doc, fmt)


def render(formulas: Formulas, fmt: str = "text", simplify: bool | None = None, layers: list[str] | None = None,
           params: list[str] | None = None, standalone: bool = False) -> str:
    """The derivation in `fmt`, narrowed to `layers` / `params` when given."""
    formulas.check_names(layers, params)
    return write(document(formulas, simplify, layers, params), fmt, standalone)
