"""Which generated code computes each formula: IR ops found from the buffers a formula writes,
then the lines and launches each backend produced for those ops.

A derivation row names the buffers that compute it (`explain.render.Row.writes`: z1, dz1,
dW1, L).  The ops of the entry point writing them are the row's ops, together with the
helper ops of the same stage whose results only they read and that no row names (the row
maximum and sum of a softmax, the terms of the loss).  The NumPy backend's `source_map`
says which lines of the module each op became; the CUDA backend's launches say which ops
each cuBLAS call or kernel computes.  Nothing is matched by comment text.
"""
from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass, field
from typing import ClassVar

from ..backends.cuda import lowering as cuda_lowering
from ..backends.numpy import lowering as numpy_lowering
from ..derive.ir import Program

FUNCTION = "loss_and_grad"


@dataclass(frozen=True)
class CodeLine:
    """One line of generated Python: its number in the module, code (with the spaces before a comment) and
    comment, its op (-1: none)."""

    is_gap: ClassVar[bool] = False
    number: int
    code: str
    comment: str
    op: int


@dataclass(frozen=True)
class Launch:
    """One step of the CUDA driver: a cuBLAS call or a kernel launch, and the ops it computes."""

    ops: tuple[int, ...]
    code: str
    formulas: tuple[str, ...]
    kernel: str | None


@dataclass
class CodeMap:
    """The generated code of one entry point, both backends, indexed by IR op."""

    function: str
    lines: list[CodeLine]                         # the NumPy function, def to return
    spans: dict[int, tuple[int, int]]             # op -> (first, last) line of the module
    launches: list[Launch]
    kernels: dict[str, str]                       # kernel name -> CUDA C source
    writers: dict[str, list[int]] = field(default_factory=dict)   # buffer -> ops writing it


def _split(source_lines: list[str]) -> list[tuple[str, str]]:
    """(code, comment) of each line, the comment found by Python's tokenizer (so a # in a string stays code)."""
    comments: dict[int, tuple[int, str]] = {}
    text = "\n".join(source_lines) + "\n"
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.start[1], tok.string)
    out = []
    for i, line in enumerate(source_lines, 1):
        column, comment = comments.get(i, (len(line), ""))
        code = line[:column]
        out.append((code.rstrip() + "  " if code.strip() and comment else code, comment))
    return out


def _function_lines(text: str, function: str) -> tuple[int, int]:
    """First and last line of the nested `def function` in the module (found by `ast`)."""
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return node.lineno, node.end_lineno
    raise KeyError(f"the generated module has no function {function!r}")


def code_map(program: Program, function: str = FUNCTION, numpy_options: dict | None = None) -> CodeMap:
    """The NumPy lines and CUDA launches of `function`, each tagged with the IR op it comes from."""
    text, spans = numpy_lowering.source_map(program, **(numpy_options or {}))
    first, last = _function_lines(text, function)
    source = text.split("\n")
    op_spans = {index: (a, b) for index, a, b in spans[function]}
    owner = {n: index for index, (a, b) in op_spans.items() for n in range(a, b + 1)}
    indent = len(source[first - 1]) - len(source[first - 1].lstrip())
    block = [line[indent:] for line in source[first - 1:last]]   # as if the function stood alone
    lines = [CodeLine(first + i, code, comment, owner.get(first + i, -1))
             for i, (code, comment) in enumerate(_split(block))]
    ctx = cuda_lowering.context(program)
    cuda_fn = next(f for f in ctx["functions"] if f["name"] == function)
    launches = [Launch(tuple(step["ops"]), step["code"], tuple(step["formulas"]), step["kernel"])
                for step in cuda_fn["launches"]]
    kernels = {k["name"]: k["source"] for k in ctx["kernels"]}
    writers: dict[str, list[int]] = {}
    for index, op in enumerate(program.functions[function].ops):
        for name in op.outputs:
            writers.setdefault(name, []).append(index)
    return CodeMap(function, lines, op_spans, launches, kernels, writers)


def ops_for(program: Program, function: str, writes: tuple[str, ...], named: set[str]) -> tuple[int, ...]:
    """The ops of `function` that compute a formula writing `writes`, with their private helpers.

    A helper is an op of the same stage as an op already chosen, whose outputs that op reads
    and that no formula names (`named`): a softmax's row maximum and sum, the loss's terms.
    """
    ops = program.functions[function].ops
    chosen = {i for i, op in enumerate(ops) if set(op.outputs) & set(writes)}
    grown = True
    while grown:
        grown = False
        for j, op in enumerate(ops):
            if j in chosen or set(op.outputs) & named:
                continue
            if any(k > j and ops[k].stage == op.stage and set(op.outputs) & set(ops[k].inputs) for k in chosen):
                chosen.add(j)
                grown = True
    return tuple(sorted(chosen))
