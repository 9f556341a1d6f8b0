"""Human-readable views of a derivation: the chain rule layer by layer, output to input.

Reads only the records `derive` keeps (forward formula, local derivative as SymPy gave
it and as evaluated, the delta recurrence, the parameter gradients, stability rewrites
and non-differentiable points) and prints them as text, unicode or LaTeX.
"""
from __future__ import annotations

import sympy as sp

from .calculus import LocalDerivative
from .derive import Derivation, LayerRecord
from .rules import A, X

FORMATS = ("text", "unicode", "latex")
_UNICODE = (("d_", "δ"), (" * ", " ⊙ "), (".T", "ᵀ"), ("sum_rows", "Σ_rows"), ("**2", "²"), (" @ ", "·"))


def _local_lines(record: LayerRecord, z: str, a: str) -> list[str]:
    local: LocalDerivative = record.local
    subs = {X: sp.Symbol(z), A: sp.Symbol(a)}
    raw = sp.sstr(local.raw.xreplace(subs))
    evaluated = sp.sstr(local.evaluated.xreplace(subs))
    lines = [f"local derivative: d/d{z} {record.layer}({z}) = {raw}"
             + (f" = {evaluated}" if evaluated != raw else "")]
    lines += [f"stability rewrite: {r}" for r in local.rewrites]
    lines += [f"note: {k}" for k in local.kinks]
    return lines


def text_lines(derivation: Derivation) -> list[str]:
    """The derivation as plain ASCII lines."""
    model = derivation.model
    lines = [f"model {model.name}: input {model.input_dim}, loss {derivation.loss}"
             + (f", l2 {model.l2:g}" if model.l2 else "") + (f", l1 {model.l1:g}" if model.l1 else ""),
             "backward pass, from the loss to the input (d<x> means dL/d<x>; N is the batch size):", ""]
    for record in reversed(derivation.records):
        lines.append(f"[{record.kind}] {record.layer}")
        lines.append(f"  forward: {record.forward}")
        if record.local is not None:
            lines += [f"  {line}" for line in _local_lines(record, record.inp, record.out)]
        if record.output is not None:
            lines.append(f"  chain rule: dl/dy * f'(z) = {sp.sstr(record.output.chain)}")
            lines += [f"  stability rewrite: {r}" for r in record.output.rewrites]
        lines += [f"  {line}" for line in record.backward]
        lines += [f"  note: {note}" for note in record.notes]
        lines.append("")
    return lines


def render(derivation: Derivation, fmt: str = "text") -> str:
    """The derivation in `fmt`: "text" (ASCII), "unicode" or "latex"."""
    lines = text_lines(derivation)
    if fmt == "text":
        return "\n".join(lines)
    if fmt == "unicode":
        out = "\n".join(lines)
        for ascii_text, uni in _UNICODE:
            out = out.replace(ascii_text, uni)
        return out
    if fmt == "latex":
        body = "\n".join(rf"\texttt{{{_latex_escape(line)}}}\\" for line in lines if line)
        return "\\begin{flushleft}\n" + body + "\n\\end{flushleft}"
    raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")


def _latex_escape(text: str) -> str:
    for ch, rep in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("#", r"\#"),
                    ("%", r"\%"), ("&", r"\&"), ("$", r"\$"), ("^", r"\^{}"), ("~", r"\~{}")):
        text = text.replace(ch, rep)
    return text
