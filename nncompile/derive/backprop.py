"""The chain rule over a model: local derivatives from `symbolic`, composed over the graph into the IR.

`walk` visits the model's nodes (forward in call order, backward in reverse, summing the
δ's of every path where a node fans out), each layer kind's rule (`layer_kinds`) writes its ops
(Dense layers in the matrix form dx = dz·Wᵀ, dW = xᵀ·dz, db = Σ_rows dz; activations
multiply by f' in its cheapest form), `output` composes the loss with the output layer
(σ + BCE gives σ(z) - t, softmax + cross-entropy gives p - t), scaled by 1/N once so that
every gradient comes out as a mean, and this module adds the penalties.

Besides the IR this records, per node, the formulas a person reads (`records`): SymPy
equations over the derivation's named arrays (`notation`), with the IR formulas of the ops
that implement them, which are the comments of the generated code.
"""
from __future__ import annotations

from typing import Sequence

import sympy as sp

from ..dsl.models import Model
from ..errors import ModelError
from ..symbolic.functions import symbol
from ..symbolic.notation import LAMBDA, LOSS, SumAll, equation, tensor
from ..symbolic.rules import LAM, REGULARISERS, Optimizer, W
from . import walk
from .builder import Builder
from .entrypoints import assemble, optimizer_set
from .ir import BATCH, Map, Reduce
from .output import output_delta
from .records import Derivation, LayerRecord

__all__ = ["Derivation", "LayerRecord", "derive"]


def derive(model: Model, dtype: str = "float64", optimizers: Sequence[Optimizer] = ()) -> Derivation:
    """Differentiate `model` and build its Program IR (forward, loss, backward, updates).

    Every built-in optimizer gets a fused ``step_<name>`` entry point, and so does each
    extra one in `optimizers` (user rules, see `rules.Optimizer`).
    """
    if model.loss is None:
        raise ModelError(f"model {model.name} has no loss: pass loss=nn.MSE() (or another loss) "
                         "to Sequential or Model")
    model.check_names()
    b = Builder(model, dtype)
    b.buffer("X", (BATCH, model.input_dim), "input")
    b.buffer("T", (BATCH, model.output_dim), "target")
    walk.forward(b)
    delta, start = output_delta(b)
    walk.backward(b, delta, start)
    _regularisation(b)
    program = assemble(b, b.site(model.output).out, optimizer_set(optimizers))
    return Derivation(model, b.records, model.loss.name, program, b.aliases)


def _regularisation(b: Builder) -> None:
    """Penalty terms of the loss: one scalar reduction per regularised weight, then L."""
    total = symbol("L_data")
    for reg_name, strength in (("l2", b.model.l2), ("l1", b.model.l1)):
        if not strength:
            continue
        reg = REGULARISERS[reg_name]
        for p in b.ordered_params():
            if p.regularized:
                out = f"{reg_name}_{p.buffer}"
                b.buffer(out, (), "scalar")
                term = reg.expr.xreplace({LAM: sp.Float(strength), W: symbol(p.buffer)})
                b.loss_ops.append(Reduce(f"{out} = sum({sp.sstr(term)})", p.layer, "loss", out, term, "sum", None))
                total += symbol(out)
    if total != symbol("L_data"):
        b.buffer("L", (), "scalar")
        b.loss_ops.append(Map(f"L = {sp.sstr(total)}", "loss", "loss", "L", total))
    _penalty_record(b)


def _penalty_record(b: Builder) -> None:
    """The output record's loss gets the penalty terms, in λ₁ and λ₂ (their values are on the model)."""
    record = next(r for r in b.records if r.kind == "output")
    terms = [record.forward.rhs]
    for reg_name, strength in (("l2", b.model.l2), ("l1", b.model.l1)):
        if strength:
            reg = REGULARISERS[reg_name]
            terms += [SumAll(reg.expr.xreplace({LAM: LAMBDA[reg_name], W: tensor(p.buffer)}))
                      for p in b.ordered_params() if p.regularized]
    record.forward = equation(LOSS, sp.Add(*terms, evaluate=False))
