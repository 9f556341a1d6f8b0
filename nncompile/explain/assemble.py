"""Assembles `derive`'s records into `formulas.Formulas`: the chain rule layer by layer.

A textbook layer k is a Dense layer with the elementwise layers after it.  Its δₖ = ∂L/∂zₖ
comes from the step that reaches its output (∂L/∂aₖ = δₖ₊₁·Wₖ₊₁ᵀ, or the loss at the
output) followed by its activation's derivative: the steps are the records' equations in
the order the code runs them, and `_combine` writes them as one formula,
δₖ = (δₖ₊₁·Wₖ₊₁ᵀ) ⊙ f'(zₖ).  The "raw" variant puts SymPy's unsimplified derivatives in.
"""
from __future__ import annotations

import sympy as sp
from sympy.core.parameters import evaluate

from ..derive.backprop import Derivation, LayerRecord
from ..dsl.models import Model
from ..symbolic.calculus import LocalDerivative, loss_gradient, regulariser_gradient
from ..symbolic.functions import symbol
from ..symbolic.kinks import kinks
from ..symbolic.convolution import check_flipped
from ..symbolic.normalization import check_closed_form
from ..symbolic.notation import LAMBDA, LOSS, Partial, softmax, tensor
from ..symbolic.rules import ACTIVATIONS, LAM, REGULARISERS, A, T, W, X, Y
from .equations import A_OUT, T_TARGET, Y_PRED, ActivationFormulas, LayerFormulas, LossFormulas, Z, chain_of, named

N = symbol("N")


def activation_formulas(local: LocalDerivative, name: str) -> ActivationFormulas:
    """Display form of calculus' result: the registry's x becomes z, a stays a."""
    names = {X: Z, A: A_OUT}
    derivative = local.derivative.xreplace(names)
    found = kinks(local.function.xreplace(names), Z, derivative, local.evaluated.xreplace(names), A_OUT)
    notes = tuple(k.sentence(name) for k in found) or local.kinks
    return ActivationFormulas(name, local.function.xreplace(names), local.stable.xreplace(names),
                              local.raw.xreplace(names), derivative, local.evaluated.xreplace(names),
                              local.rewrites, found, notes)


# -- the loss ------------------------------------------------------------------------------

def _loss(output: LayerRecord, derivation: Derivation, constants: dict) -> LossFormulas:
    model = derivation.model
    element = output.loss.expr.xreplace({Y: Y_PRED, T: T_TARGET})
    per_element = sp.Integer(1 if output.loss.per_row_sum else model.output_dim)
    delta = output.backward[0]
    notes, rows = list(output.notes), []
    if output.rule == "composite":
        act = _output_activation(output, derivation.records)
        local = output.output
        names = {X: Z, A: A_OUT, T: T_TARGET}
        lhs = sp.Derivative(sp.Function(output.layer)(named(act, Z), T_TARGET), Z)
        chain = chain_of(lhs, local.chain.xreplace(names), local.delta.xreplace(names))
        raw = chain_of(lhs, local.chain.xreplace(names))
        arrays = {Z: tensor(output.inp), A_OUT: tensor(output.out), T_TARGET: tensor("T")}
        delta_raw = sp.Eq(delta.lhs, sp.Mul(raw[-1].xreplace(arrays), 1 / (N * per_element), evaluate=False),
                          evaluate=False)
        written = output.loss.expr.xreplace({Y: named(act, Z), T: T_TARGET})
        rows.append(("evaluated as", chain_of(written, local.value.xreplace(names))))
        rewrites = local.rewrites
    elif output.rule == "softmax_cross_entropy":
        chain = raw = _cross_entropy_chain()
        delta_raw, rewrites = delta, ()
        notes.insert(0, "rows of T sum to 1 (one-hot labels or a distribution), so sum_j t_j = 1")
        if not any(r.kind == "softmax" and r.out == output.out for r in derivation.records):
            rows.append(("where", (tensor(output.out), softmax(tensor(output.inp)))))
    else:
        grad_raw, grad = loss_gradient(output.loss)
        lhs = sp.Derivative(sp.Function(output.layer)(Y_PRED, T_TARGET), Y_PRED)
        names = {Y: Y_PRED, T: T_TARGET}
        chain = chain_of(lhs, grad_raw.xreplace(names), grad.xreplace(names))
        raw = chain_of(lhs, grad_raw.xreplace(names))
        delta_raw, rewrites = delta, ()
    dl = sp.diff(element, Y_PRED)
    found = [k.sentence(output.layer) for k in kinks(element, Y_PRED, dl, dl)]
    found += _penalty_kinks(model)
    for sym, value in constants.items():
        notes.append(f"{sym.name.replace('lambda', 'lambda_')} = {value:g} (the model's "
                     f"{'l1' if sym == LAMBDA['l1'] else 'l2'})")
    return LossFormulas(output.layer, output.forward, element, chain, raw, delta, delta_raw, tuple(rewrites),
                        tuple(found), tuple(notes), tuple(output.code), dict(constants), tuple(rows))


def _output_activation(output: LayerRecord, records: list[LayerRecord]) -> str:
    """The activation fused into the loss (identity when the model ends with a Dense layer)."""
    for record in records:
        if record.kind == "activation" and record.inp == output.inp and record.out == output.out:
            return record.layer
    return ACTIVATIONS["identity"].name


def _cross_entropy_chain() -> tuple[sp.Basic, ...]:
    """∂l/∂zₖ for l = -Σⱼ tⱼ log pⱼ, p = softmax(z): Σⱼ (-tⱼ/pⱼ)·pⱼ(δⱼₖ - pₖ) = pₖ Σⱼ tⱼ - tₖ = pₖ - tₖ."""
    j, k = sp.symbols("j k", integer=True)
    K = sp.Symbol("K", integer=True, positive=True)
    pj, pk, tj, tk = (sp.Symbol(n, real=True) for n in ("p_j", "p_k", "t_j", "t_k"))
    raw = sp.Sum(sp.Mul(-tj / pj, pj, sp.KroneckerDelta(j, k) - pk, evaluate=False), (j, 1, K))
    middle = sp.Add(sp.Mul(pk, sp.Sum(tj, (j, 1, K)), evaluate=False), -tk, evaluate=False)
    return (Partial(sp.Symbol("l"), sp.Symbol("z_k", real=True)), raw, middle, pk - tk)


def _penalty_kinks(model: Model) -> list[str]:
    out = []
    for name, strength in (("l1", model.l1), ("l2", model.l2)):
        if strength:
            reg = REGULARISERS[name]
            expr = reg.expr.xreplace({LAM: sp.Float(strength)})
            grad = regulariser_gradient(reg).xreplace({LAM: sp.Float(strength)})
            out += [k.sentence(name) for k in kinks(expr, W, grad, grad)]
    return out


# -- the layers ----------------------------------------------------------------------------

_ELEMENTWISE = ("activation", "softmax")
_NORMALIZATIONS = {"layernorm": "features", "batchnorm": "batch"}


def _sections(records: list[LayerRecord]) -> list[list[LayerRecord]]:
    """The model's nodes as a textbook reads them: each Dense with the elementwise layers that follow it
    alone (an activation whose input nothing else reads), every other node on its own; elementwise
    layers before any parameter (no δ reaches them) join the next section, as input preprocessing."""
    readers: dict[str, int] = {}
    for record in records:
        for name in record.inputs:
            readers[name] = readers.get(name, 0) + 1
    sections: list[list[LayerRecord]] = []
    pending: list[LayerRecord] = []
    for record in records:
        current = sections[-1] if sections else None
        joins = (current is not None and record.kind in _ELEMENTWISE and current[0].kind in ("dense", "conv")
                 and record.inp == current[-1].out and readers.get(record.inp, 0) == 1)
        if joins:
            current.append(record)
        elif record.kind in _ELEMENTWISE and not record.received:
            pending.append(record)
        else:
            sections.append(pending + [record])
            pending = []
    if pending:
        sections.append(pending)
    return sections


def _combine(steps: list[sp.Eq]) -> sp.Eq:
    """The recurrence in one formula: each step's left-hand side replaced by its right-hand side."""
    known: dict[sp.Basic, sp.Expr] = {}
    expr = steps[0].rhs
    for step in steps:
        with evaluate(False):
            expr = step.rhs.xreplace(known)
        known[step.lhs] = expr
    return sp.Eq(steps[-1].lhs, expr, evaluate=False)


def _section(group: list[LayerRecord], index: int, code: list[str], shapes: dict[str, tuple],
             loss: LossFormulas) -> LayerFormulas:
    """One section, from the δ that reaches its last output (received from the layers after it, or the loss)."""
    head = next((r for r in group if r.kind in ("dense", "conv")), group[-1])
    forward, forms, writes = [], [], []
    for record in group:
        if record.kind == "activation":
            form = activation_formulas(record.local, record.layer)
            shown = group.index(record) > group.index(head) or (record is head and record.received)
            if not record.local.is_identity and shown:
                forms.append(form)  # before the first Dense layer: input preprocessing, no gradient
                writes.append(record.writes or loss.delta.lhs.name)  # fused into the loss's δ at the output
            if not record.local.is_identity:
                forward.append(form.forward(tensor(record.inp), tensor(record.out)))
        else:
            forward += [chain for _, chain in record.rows]   # a normalization's mean, variance and x̂ first
            forward.append((record.forward.lhs, record.forward.rhs))
    steps, raw_steps, notes = [], [], []
    for record in reversed(group):
        code += record.code
        for eq, raw in record.received:
            steps.append(eq)
            raw_steps.append(loss.delta_raw if eq == loss.delta else raw)
        steps += record.steps
        raw_steps += record.steps
        notes += record.notes
    description = _description(group, head, shapes)
    rows = tuple((label, (eq.lhs, eq.rhs) if isinstance(eq, sp.Eq) else (eq,)) for label, eq in head.derived)
    if head.kind == "conv" and head.derived:
        verdict = "equal" if check_flipped() else "NOT equal (a bug: please report it)"
        notes.append(f"SymPy finds the full correlation {verdict} to the derived sum, entry by entry, on a 5x5 input "
                     "(a 3x2 kernel, strides 2 and 1, padding 1 and 0)")
    if head.kind in _NORMALIZATIONS and head.derived:
        axis = _NORMALIZATIONS[head.kind]
        verdict = "equal" if check_closed_form(axis) else "NOT equal (a bug: please report it)"
        notes.append(f"SymPy finds the closed form {verdict} to the step-by-step derivation: their difference "
                     f"reduces to 0 with 3 explicit entries of a {'row' if axis == 'features' else 'batch'}")
    return LayerFormulas(head.label or head.layer, index, tuple(forward), tuple(forms),
                         _combine(steps) if steps else None, _combine(raw_steps) if steps else None, tuple(steps),
                         dict(head.gradients), tuple(code), description, tuple(writes), kind=head.kind,
                         notes=tuple(notes), rows=rows)


def _description(group: list[LayerRecord], head: LayerRecord, shapes: dict[str, tuple]) -> str:
    after = [r.layer for r in group[group.index(head) + 1:] if not (r.kind == "activation" and r.local.is_identity)]
    if head.kind == "dense":
        weight = head.forward.rhs.args[0].args[1].name
        rows, cols = shapes[weight]
        return f"{rows} -> {cols}, " + (" + ".join(after) or "linear")
    if head.kind == "conv":
        return head.description + "".join(f" + {name}" for name in after)
    if head.kind == "activation":
        return f"{head.layer} of {head.inp}"
    if head.description:
        return head.description
    return sp.sstr(head.forward.rhs)


def _shared(sections: list[LayerFormulas], records: list[LayerRecord]) -> None:
    """A layer called more than once: its first call's section holds the sum over the uses (and the
    penalty once); every call's section shows its own term."""
    by_param: dict[str, list[tuple[LayerRecord, sp.Eq]]] = {}
    for record in records:
        for name, eq in record.gradients.items():
            by_param.setdefault(name, []).append((record, eq))
    for name, uses in by_param.items():
        if len(uses) < 2:
            continue
        first, _ = uses[0]
        penalties = [term for record, _ in uses for term in record.penalties.get(name, [])]
        buffer = uses[0][1].lhs.name.split("_via_")[0][1:]
        total = sp.Eq(Partial(LOSS, tensor(buffer)), sp.Add(*(eq.lhs for _, eq in uses), *penalties, evaluate=False),
                      evaluate=False)
        for section in sections:
            section_uses = [eq for record, eq in uses if section.name == (record.label or record.layer)]
            if section_uses:
                section.uses.extend(section_uses)
                section.gradients.pop(name, None)
            if section.name == (first.label or first.layer):
                section.gradients[name] = total


def build(derivation: Derivation) -> tuple[str, str, LossFormulas, tuple[LayerFormulas, ...], dict]:
    """(model name, summary, loss, sections, constants) from a derivation's records: the loss, then each
    section from the output back; `formulas.Formulas.of` holds them with the derivation."""
    model = derivation.model
    output = next(r for r in derivation.records if r.kind == "output")
    constants = {LAMBDA[n]: v for n, v in (("l1", model.l1), ("l2", model.l2)) if v}
    loss = _loss(output, derivation, constants)
    for record in derivation.records:
        constants.update(record.constants)   # after the loss's notes, which list the penalties only
    records = [r for r in derivation.records if r.kind != "output"]
    groups = _sections(records)
    shapes = {name: buf.shape for name, buf in derivation.program.buffers.items()}
    sections: list[LayerFormulas] = []
    for index in range(len(groups), 0, -1):
        group = groups[index - 1]
        receives_loss = any(eq == loss.delta for r in group for eq, _ in r.received)
        sections.append(_section(group, index, list(output.code) if receives_loss else [], shapes, loss))
    _shared(sections, records)
    parts = ", ".join(f"{lay.name} ({lay.description})" for lay in reversed(sections))
    penalties = "".join(f", {n} {v:g}" for n, v in (("l1", model.l1), ("l2", model.l2)) if v)
    inputs = " and ".join(f"{shape[0]}" if len(shape) == 1 else "x".join(map(str, shape)) + " image"
                          for shape in model.input_shapes)
    summary = f"model {model.name}: {inputs} inputs -> {parts}; loss {loss.name}{penalties}"
    return model.name, summary, loss, tuple(sections), constants
