"""Entry points of a program: forward, loss, loss_and_grad, diagnose, one step per optimizer,
and the two halves of a step that data-parallel training runs with a sum across processes
between them: `gradient` and one `update_<optimizer>` per optimizer.

`derive` produces the op lists (forward, loss, backward, probes); this module assembles
them into the Program IR's functions.  The backward ops carry a gradient scale `GSCALE`:
1 for gradients, and the learning rate in plain SGD's step, whose update then becomes a
single subtraction (p - g), since g arrives already multiplied by lr.  In `gradient` the
scale is an argument that replaces 1/N: every process holding some of a global batch's B
rows passes 1/B (lr/B for plain SGD), so that the sum of their gradients is the batch
mean, scaled exactly as one process scales it.  It also takes the update count and the
place of its rows in the global batch (`row0`), which key the dropout masks.

Classifiers also count their correct predictions in the forward pass (`CountCorrect`):
`loss` and every step return (loss, count), which is how an epoch's accuracy is known
without a second pass over the data.
"""
from __future__ import annotations

import keyword
import re
from typing import Sequence

import sympy as sp

from ..dsl.losses import BinaryCrossEntropy, CrossEntropy, SoftmaxCrossEntropy
from ..dsl.models import Model
from ..errors import ModelError
from ..symbolic.functions import symbol
from ..symbolic.rules import OPTIMIZERS, Optimizer
from .ir import BATCH, CountCorrect, Function, GradReady, Map, Op, OptimizerSpec, Program

GSCALE = symbol("gscale")  # gradient scale: 1 for gradients, lr when plain SGD folds it in
#: The compiler's own scalars: a hyperparameter (a step-function argument) may not take them.
RESERVED = {"lr", "step", BATCH, "gscale", "row0", "ready", "L", "L_data", "C", "sys"}
#: Names the generated code itself uses; an optimizer hyperparameter may not take them either.
GENERATED_NAMES = re.compile(r"(?:[cs]\d+|_cse\d*|np|math|types|n|DTYPE|params|grads|state|state_\w+)\Z")


def _update_ops(b: object, opt: Optimizer) -> tuple[list[Op], tuple[str, ...]]:
    """The optimizer's update rule on the flat vectors, with g pre-scaled by lr when folded."""
    names = {"p": "params", "g": "grads", "lr": "lr", "t": "step"}
    names.update({s: f"state_{s}" for s in opt.state})
    clash = RESERVED.intersection(opt.defaults) | set(b.buffers).intersection(opt.defaults)
    clash |= {h for h in opt.defaults if keyword.iskeyword(h) or GENERATED_NAMES.match(h)}
    if clash:
        raise ModelError(f"optimizer {opt.name}: hyperparameter name(s) {', '.join(sorted(clash))} "
                         "clash with names the compiler uses")
    ops: list[Op] = []
    for target, expr in opt.updates:
        syms = {s: symbol(names.get(s.name, s.name)) for s in expr.free_symbols}
        e = expr.xreplace(syms)
        if opt.folds_lr:
            e = e.xreplace({symbol("grads"): symbol("grads") / symbol("lr")})
        out = names[target]
        ops.append(Map(f"{target} = {sp.sstr(expr)}", opt.name, "update", out, e))
    return ops, ("lr", "step") + tuple(opt.defaults)


def optimizer_set(extra: Sequence[Optimizer]) -> dict[str, Optimizer]:
    """Built-in optimizers, then the user's; a user rule may not reuse a built-in's name."""
    chosen = dict(OPTIMIZERS)
    for opt in extra:
        if not isinstance(opt, Optimizer):
            raise ModelError(f"optimizers must be nncompile Optimizer rules, got {type(opt).__name__}")
        if opt.name in chosen and chosen[opt.name] != opt:
            what = "a built-in optimizer" if opt.name in OPTIMIZERS else "given twice with different rules"
            raise ModelError(f"optimizer name {opt.name!r} is {what}: give your rule another name")
        chosen[opt.name] = opt
    return chosen


def assemble(b: object, output: str, optimizers: dict[str, Optimizer]) -> Program:
    """The program's functions from a derivation builder's op lists (see `builder.Builder`).

    forward and loss evaluate (running statistics, no dropout); the others train (batch
    statistics, dropout masks); only a step updates the running statistics.  The update of
    an optimizer covers the trainable prefix of the flat vectors ("params", "grads").
    """
    model = b.model
    params = b.ordered_params()
    size = sum(p.size for p in params if p.trainable)
    b.buffer("params", (size,), "param")
    b.buffer("grads", (size,), "grad")
    encoding, metric = _task(model)
    prog = Program(model.name, b.dtype, "X", "T", output, metric, encoding, b.buffers, params,
                   inputs=tuple(b.site(n).out for n in model.inputs), input_shapes=model.input_shapes,
                   min_train_rows=b.min_train_rows)
    one = {GSCALE: sp.S.One}
    fwd, fwd_eval = tuple(b.forward), tuple(b.forward_eval)
    count = _count_correct(b, output, metric)
    counted, counted_eval = fwd + count, fwd_eval + count
    tally = "C" if count else None
    backward_1 = tuple(_subs(op, one) for op in b.backward)
    prog.functions["forward"] = Function("forward", fwd_eval, doc="forward pass: writes the output buffer")
    prog.functions["loss"] = Function("loss", counted_eval + tuple(b.loss_ops), returns="L", count=tally,
                                      doc="forward pass and loss (with penalties), no gradients")
    if fwd != fwd_eval:
        prog.functions["train_loss"] = Function(
            "train_loss", counted + tuple(b.loss_ops), returns="L", count=tally,
            doc="the loss as training computes it (batch statistics, dropout masks), no gradients")
    prog.functions["loss_and_grad"] = Function(
        "loss_and_grad", fwd + tuple(b.loss_ops) + backward_1, returns="L",
        doc="loss and the gradient of every parameter (means over the batch)")
    prog.functions["diagnose"] = Function(
        "diagnose", fwd + tuple(op for _, op in b.probes) + tuple(b.loss_ops) + backward_1, returns="L",
        doc="loss, gradients, and f'(z) of every hidden activation, for training diagnostics",
        results=tuple(probe.buffer for probe, _ in b.probes))
    prog.probes = tuple(probe for probe, _ in b.probes)
    per_row = {GSCALE: symbol("gscale") * symbol(BATCH)}  # gscale/N becomes gscale: the global batch's 1/B
    prog.functions["gradient"] = Function(
        "gradient", counted + tuple(b.loss_ops)
        + _with_ready_marks(tuple(_subs(op, per_row) for op in b.backward), [p for p in params if p.trainable])
        + tuple(b.running),
        ("gscale", "step", "row0"), "L", count=tally, hook="ready",
        doc="loss, and the gradients times gscale (one over the rows of the global batch); running statistics. "
            "step (the update count) and row0 (this share's first row in the global batch) key the dropout "
            "masks, so that K processes draw the masks one process would")
    for name, opt in optimizers.items():
        for state in opt.state:
            b.buffer(f"state_{state}", (size,), "state")
        update, scalars = _update_ops(b, opt)
        scale = {GSCALE: symbol("lr")} if opt.folds_lr else one
        backward = tuple(_subs(op, scale) for op in b.backward)
        fname = f"step_{name}"
        ops = counted + tuple(b.loss_ops) + backward + tuple(b.running) + tuple(update)
        prog.functions[fname] = Function(fname, ops, scalars, "L", count=tally,
                                         doc=f"one training step with {name}: loss, gradients, update")
        folded = " (gradients already multiplied by lr)" if opt.folds_lr else ""
        prog.functions[f"update_{name}"] = Function(f"update_{name}", tuple(update), scalars,
                                                    doc=f"the {name} update alone, from the summed gradients{folded}")
        prog.optimizers[name] = OptimizerSpec(name, fname, opt.state, tuple(opt.defaults.items()), opt.folds_lr)
    prog.validate()
    return prog


def _count_correct(b: object, output: str, metric: str | None) -> tuple[Op, ...]:
    """The op counting correct predictions for a classifier's metric (none for regression)."""
    if metric is None:
        return ()
    b.buffer("C", (), "scalar")
    if metric == "accuracy":
        return (CountCorrect(f"C = number of rows where argmax({output}) = argmax(T)", "metric", "loss", "C",
                             output, "T", "argmax"),)
    return (CountCorrect(f"C = number of elements where ({output} > 0.5) = (T > 0.5)", "metric", "loss", "C",
                         output, "T", "threshold"),)


def _with_ready_marks(backward: tuple[Op, ...], params: Sequence[object]) -> tuple[Op, ...]:
    """`backward` with a GradReady after the last op writing each run of adjacent parameters' gradients."""
    last = {}
    for i, op in enumerate(backward):
        for name in op.outputs:
            last[name] = i
    done: dict[int, list[tuple[int, int]]] = {}
    for p in params:
        if p.grad in last:
            done.setdefault(last[p.grad], []).append((p.offset, p.offset + p.size))
    ops: list[Op] = []
    for i, op in enumerate(backward):
        ops.append(op)
        for start, stop in _merged(done.get(i, [])):
            ops.append(GradReady(f"grads[{start}:{stop}] are final", op.layer, "backward", start, stop))
    return tuple(ops)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent ranges joined, highest first (the order a backward pass finishes them)."""
    out: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out[::-1]


def _subs(op: Op, mapping: dict) -> Op:
    if isinstance(op, Map) and op.expr.has(GSCALE):
        return Map(op.formula, op.layer, op.stage, op.out, op.expr.xreplace(mapping))
    return op


def _task(model: Model) -> tuple[str, str | None]:
    """How targets are encoded and which metric fits, from the loss."""
    if isinstance(model.loss, (CrossEntropy, SoftmaxCrossEntropy)):
        return "onehot", "accuracy"
    if isinstance(model.loss, BinaryCrossEntropy):
        return "binary", "binary_accuracy"
    return "real", None
