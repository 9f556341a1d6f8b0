"""The chain rule over a model: local derivatives from `calculus`, composed into the IR.

Dense layers use the matrix form (dx = dz·Wᵀ, dW = xᵀ·dz, db = Σ_rows dz); activations
multiply the incoming delta by f' in its cheapest form; the output layer uses the loss
composed with the last activation (σ + BCE gives σ(z) - t, softmax + cross-entropy gives
p - t), scaled by 1/N once so that every gradient comes out as a mean.

Besides the IR this records, per layer, the formulas a person reads (`Derivation`): SymPy
equations over the derivation's named arrays (`notation`), with the IR formulas of the ops
that implement them, which are the comments of the generated code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import sympy as sp

from ..dsl.layers import Activation, Dense, Softmax
from ..dsl.losses import CrossEntropy, SoftmaxCrossEntropy
from ..dsl.models import Sequential
from ..errors import ModelError
from ..symbolic import calculus
from ..symbolic.calculus import LocalDerivative, OutputDelta
from ..symbolic.functions import symbol
from ..symbolic.notation import LAMBDA, LOSS, MatProd, Partial, SumAll, SumK, SumN, Transposed, softmax, tensor
from ..symbolic.rules import ACTIVATIONS, LAM, REGULARISERS, A, LossFunction, Optimizer, T, W, X
from .entrypoints import GSCALE, assemble, optimizer_set
from .ir import BATCH, Buffer, Linear, LinearGrad, Map, MatMulT, Op, ParamSpec, Probe, Program, Reduce

N = symbol(BATCH)


@dataclass
class LayerRecord:
    """What the derivation did at one layer, for people.

    `forward` and `backward` are equations over `notation.NamedArray`s (buffer names),
    the backward ones in the order the code runs them; `code` holds the formulas of the IR
    ops that implement them.  An "output" record (the loss) says by `rule` how its delta
    was found: "composite" (loss∘activation simplified, see `output`), "softmax_cross_entropy"
    (p - t) or "loss_gradient" (dl/dp, then back through the softmax layer).
    """

    layer: str
    kind: str  # "dense", "activation", "softmax" or "output"
    forward: sp.Eq
    inp: str = ""
    out: str = ""
    local: LocalDerivative | None = None
    output: OutputDelta | None = None
    backward: list[sp.Eq] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loss: LossFunction | None = None
    rule: str = ""


@dataclass
class Derivation:
    """The derivation as records, plus the Program IR built from it."""

    model: Sequential
    records: list[LayerRecord]
    loss: str
    program: Program


class _Builder:
    """Accumulates buffers and ops while walking the model."""

    def __init__(self, model: Sequential, dtype: str) -> None:
        self.model = model
        self.buffers: dict[str, Buffer] = {}
        self.records: list[LayerRecord] = []
        self.forward: list[Op] = []
        self.loss_ops: list[Op] = []
        self.backward: list[Op] = []
        self.params: list[ParamSpec] = []
        self.probes: list[tuple[Probe, Op]] = []
        self.dtype = dtype

    def buffer(self, name: str, shape: tuple, role: str = "value") -> sp.Symbol:
        self.buffers[name] = Buffer(name, tuple(shape), role)
        return symbol(name)

    def param(self, layer: Dense, kind: str, index: int, shape: tuple[int, ...], init: str) -> None:
        offset = sum(p.size for p in self.params)
        buf, grad = f"{kind}{index}", f"d{kind}{index}"
        self.buffer(buf, shape, "param")
        self.buffer(grad, shape, "grad")
        self.params.append(ParamSpec(f"{layer.name}.{kind}", buf, grad, shape, offset, layer.name,
                                     regularized=kind == "W", init=init))


def derive(model: Sequential, dtype: str = "float64", optimizers: Sequence[Optimizer] = ()) -> Derivation:
    """Differentiate `model` and build its Program IR (forward, loss, backward, updates).

    Every built-in optimizer gets a fused ``step_<name>`` entry point, and so does each
    extra one in `optimizers` (user rules, see `rules.Optimizer`).
    """
    if model.loss is None:
        raise ModelError(f"model {model.name} has no loss: pass loss=nn.MSE() (or another loss) "
                         "to Sequential")
    model.check_names()
    b = _Builder(model, dtype)
    b.buffer("X", (BATCH, model.input_dim), "input")
    b.buffer("T", (BATCH, model.output_dim), "target")
    trail = _forward(b)
    delta, start = _output(b, trail)
    _backward(b, trail, delta, start)
    _regularisation(b)
    program = assemble(b, trail[-1][2], optimizer_set(optimizers))
    return Derivation(model, b.records, model.loss.name, program)


def _forward(b: _Builder) -> list[tuple[object, str, str, int]]:
    """Forward ops; returns the trail (layer, input buffer, output buffer, dense index)."""
    trail = []
    h, width, dense_index = "X", b.model.input_dim, 0
    for i, layer in enumerate(b.model.layers):
        if isinstance(layer, Dense):
            dense_index += 1
            k = dense_index
            init = "he" if _relu_like(b.model.layers[i + 1:]) else "xavier"
            b.param(layer, "W", k, (width, layer.units), init)
            b.param(layer, "b", k, (layer.units,), "zeros")
            width = layer.units
            out = f"z{k}"
            b.buffer(out, (BATCH, width))
            b.forward.append(Linear(f"{out} = {h} @ W{k} + b{k}", layer.name, "forward", out, h, f"W{k}", f"b{k}"))
            b.records.append(LayerRecord(layer.name, "dense", sp.Eq(tensor(out), sp.Add(
                MatProd(tensor(h), tensor(f"W{k}")), tensor(f"b{k}"), evaluate=False)), h, out))
        elif isinstance(layer, Activation):
            local = calculus.activation(layer.function)
            out = h if local.is_identity else _next_name(b, f"a{dense_index}")
            if not local.is_identity:
                b.buffer(out, (BATCH, width))
                expr = local.stable.subs(X, symbol(h))
                b.forward.append(Map(f"{out} = {sp.sstr(expr)}", layer.function.name, "forward", out, expr))
                if i < len(b.model.layers) - 1:
                    _probe(b, layer, local, h, out, b.model.dense_layers[dense_index - 1].name)
            b.records.append(LayerRecord(layer.function.name, "activation", sp.Eq(
                tensor(out), local.function.xreplace({X: tensor(h)}), evaluate=False), h, out, local))
        elif isinstance(layer, Softmax):
            out = _next_name(b, f"p{dense_index}")
            _softmax(b, h, out, width, b.forward, "softmax")
            b.records.append(LayerRecord("softmax", "softmax", sp.Eq(tensor(out), softmax(tensor(h)), evaluate=False),
                                         h, out))
        trail.append((layer, h, out, dense_index))
        h = out
    return trail


def _probe(b: _Builder, layer: Activation, local: LocalDerivative, z: str, a: str, dense: str) -> None:
    """Watch a hidden activation: an op writing f'(z) into its own buffer, for `diagnose`."""
    fp = f"fp_{a}"
    b.buffer(fp, b.buffers[a].shape)
    fprime = local.evaluated.xreplace({X: symbol(z), A: symbol(a)})
    op = Map(f"{fp} = {sp.sstr(fprime)}   [{layer.function.name}'({z}), watched by diagnostics]",
             layer.function.name, "diagnose", fp, fprime)
    b.probes.append((Probe(dense, layer.function.name, fp, calculus.saturation_kind(local)), op))


def _relu_like(following: tuple) -> bool:
    """Whether the first layer after a Dense is ReLU or LeakyReLU (He initialisation fits)."""
    nxt = following[0] if following else None
    return isinstance(nxt, Activation) and nxt.function.name in ("relu", "leaky_relu")


def _next_name(b: _Builder, base: str) -> str:
    name, i = base, 1
    while name in b.buffers:
        i += 1
        name = f"{base}_{i}"
    return name


def _softmax(b: _Builder, z: str, p: str, width: int, ops: list[Op], layer: str) -> tuple[str, str]:
    """p = softmax(z) with the row max subtracted; returns the row max and row sum buffers."""
    m, s = f"max_{z}", f"sum_{z}"
    zs, ms, ss = symbol(z), b.buffer(m, (BATCH, 1)), b.buffer(s, (BATCH, 1))
    b.buffer(p, (BATCH, width))
    ops += [
        Reduce(f"{m} = rowmax({z})", layer, "forward", m, zs, "max", 1),
        Map(f"{p} = exp({z} - {m})", layer, "forward", p, sp.exp(zs - ms)),
        Reduce(f"{s} = rowsum({p})", layer, "forward", s, symbol(p), "sum", 1),
        Map(f"{p} = {p}/{s}", layer, "forward", p, symbol(p) / ss),
    ]
    return m, s


def _output(b: _Builder, trail: list) -> tuple[str, int]:
    """Loss value and dL/d(pre-activation) at the output; returns (delta buffer, layer index)."""
    loss, last = b.model.loss, len(trail) - 1
    layer, h_in, h_out, k = trail[last]
    scale = GSCALE / N
    data_loss = "L_data" if b.model.l1 or b.model.l2 else "L"  # L itself when there is no penalty
    b.buffer(data_loss, (), "scalar")
    if isinstance(loss, SoftmaxCrossEntropy) or (isinstance(loss, CrossEntropy) and isinstance(layer, Softmax)):
        logits, p = (h_in, h_out) if isinstance(layer, Softmax) else (h_out, _next_name(b, f"p{k}"))
        if not isinstance(layer, Softmax):
            _softmax(b, logits, p, b.model.output_dim, b.loss_ops, "loss")
        zs, ts = symbol(logits), symbol("T")
        lse = symbol(f"max_{logits}") + sp.log(symbol(f"sum_{logits}"))
        b.buffer("L_lse", (), "scalar")
        b.buffer("L_tz", (), "scalar")
        b.loss_ops += [
            Reduce(f"L_lse = sum of logsumexp({logits}) over rows", "loss", "loss", "L_lse", lse, "sum", None),
            Reduce(f"L_tz = sum(T*{logits})", "loss", "loss", "L_tz", ts * zs, "sum", None),
            Map(f"{data_loss} = (L_lse - L_tz)/N   [-sum(T*log(softmax)) with rows of T summing to 1]", "loss",
                "loss", data_loss, (symbol("L_lse") - symbol("L_tz")) / N),
        ]
        dz = f"d{logits}"
        b.buffer(dz, (BATCH, b.model.output_dim))
        b.backward.append(Map(f"{dz} = ({p} - T)/N   [softmax + cross-entropy: dL/dz = p - t]",
                              "loss", "backward", dz, (symbol(p) - ts) * scale))
        _output_record(b, "softmax_cross_entropy", -SumAll(tensor("T") * sp.log(softmax(tensor(logits)))) / N,
                       logits, p, sp.Mul(tensor(p) - tensor("T"), 1 / N, evaluate=False),
                       notes=[f"evaluated as sum(T*(logsumexp({logits}) - {logits}))/N: log-softmax by "
                              "log-sum-exp, never log(softmax(z))"])
        start = last if isinstance(layer, Softmax) else last + 1
        return dz, start
    fn = layer.function if isinstance(layer, Activation) else ACTIVATIONS["identity"]
    pre = h_in if isinstance(layer, Activation) else h_out
    if isinstance(layer, Softmax):
        return _softmax_output(b, trail, loss, data_loss)
    composite = calculus.output_delta(fn, loss.function)
    subs = {X: symbol(pre), A: symbol(h_out), T: symbol("T")}
    per_element = 1 if loss.function.per_row_sum else b.model.output_dim
    value = composite.value.xreplace(subs) / (N * per_element)
    b.loss_ops.append(Reduce(f"{data_loss} = mean({sp.sstr(composite.value.xreplace(subs))})", "loss", "loss",
                             data_loss, value, "sum", None))
    dz = f"d{pre}"
    b.buffer(dz, (BATCH, b.model.output_dim))
    delta = composite.delta.xreplace(subs)
    b.backward.append(Map(f"{dz} = ({sp.sstr(delta)})/{_n_text(per_element)}   "
                          f"[d {loss.name}({h_out}, T)/d{pre}]", "loss", "backward", dz,
                          delta * scale / per_element))
    arrays = {X: tensor(pre), A: tensor(h_out), T: tensor("T"), calculus.Y: tensor(h_out)}
    _output_record(b, "composite", SumAll(loss.function.expr.xreplace(arrays)) / (N * per_element), pre, h_out,
                   sp.Mul(composite.delta.xreplace(arrays), 1 / (N * per_element), evaluate=False), output=composite)
    return dz, last if isinstance(layer, Activation) else last + 1


def _output_record(b: _Builder, rule: str, written: sp.Expr, wrt: str, out: str, delta: sp.Expr,
                   **extra: object) -> None:
    """The loss's record: L as written, and the first delta d<wrt> that the code computes."""
    b.records.append(LayerRecord(b.model.loss.name, "output", sp.Eq(LOSS, written, evaluate=False), wrt, out,
                                 backward=[sp.Eq(tensor(f"d{wrt}"), delta, evaluate=False)],
                                 code=[b.backward[-1].formula], loss=b.model.loss.function, rule=rule, **extra))


def _n_text(per_element: int) -> str:
    return "N" if per_element == 1 else f"(N*{per_element})"


def _softmax_output(b: _Builder, trail: list, loss: object, data_loss: str) -> tuple[str, int]:
    """A non-cross-entropy loss after Softmax: dL/dp, then back through softmax."""
    layer, z, p, k = trail[-1]
    grad_raw, _ = calculus.loss_gradient(loss.function)
    per_element = 1 if loss.function.per_row_sum else b.model.output_dim
    ps, ts = symbol(p), symbol("T")
    value = loss.function.expr.xreplace({calculus.Y: ps, T: ts}) / (N * per_element)
    b.loss_ops.append(Reduce(f"{data_loss} = mean({sp.sstr(loss.function.expr)})", "loss", "loss",
                             data_loss, value, "sum", None))
    dp = f"d{p}"
    b.buffer(dp, (BATCH, b.model.output_dim))
    grad = grad_raw.xreplace({calculus.Y: ps, T: ts})
    b.backward.append(Map(f"{dp} = ({sp.sstr(grad)})/{_n_text(per_element)}   [d {loss.name}({p}, T)/d{p}]",
                          "loss", "backward", dp, grad * GSCALE / (N * per_element)))
    arrays = {calculus.Y: tensor(p), T: tensor("T")}
    _output_record(b, "loss_gradient", SumAll(loss.function.expr.xreplace(arrays)) / (N * per_element), p, p,
                   sp.Mul(grad_raw.xreplace(arrays), 1 / (N * per_element), evaluate=False))
    return dp, len(trail)  # the softmax layer itself is walked back by _backward


def _backward(b: _Builder, trail: list, delta: str, start: int) -> None:
    """Walk layers from `start - 1` (the first not fused into the output) back to the first Dense."""
    first_dense = next(i for i, (layer, *_) in enumerate(trail) if isinstance(layer, Dense))
    for i in range(start - 1, first_dense - 1, -1):
        layer, h_in, h_out, k = trail[i]
        record = b.records[i]
        if isinstance(layer, Dense):
            delta = _dense_backward(b, layer, h_in, delta, k, i == first_dense, record)
        elif isinstance(layer, Activation):
            delta = _activation_backward(b, layer, h_in, h_out, delta, record)
        else:
            delta = _softmax_backward(b, h_in, h_out, delta, record)


def _dense_backward(b: _Builder, layer: Dense, x: str, dz: str, k: int, first: bool, record: LayerRecord) -> str:
    b.backward.append(LinearGrad(f"dW{k} = {x}.T @ {dz};  db{k} = sum_rows({dz})", layer.name, "backward",
                                 f"dW{k}", f"db{k}", x, dz))
    record.code.append(b.backward[-1].formula)
    weight_grad = [MatProd(Transposed(tensor(x)), tensor(dz))]
    for reg_name, strength in (("l2", b.model.l2), ("l1", b.model.l1)):
        if strength:
            reg = REGULARISERS[reg_name]
            grad = calculus.regulariser_gradient(reg).xreplace({LAM: sp.Float(strength), W: symbol(f"W{k}")})
            b.backward.append(Map(f"dW{k} += {sp.sstr(grad)}   [{reg_name} penalty]", layer.name, "backward",
                                  f"dW{k}", symbol(f"dW{k}") + GSCALE * grad))
            record.code.append(b.backward[-1].formula)
            named = {LAM: LAMBDA[reg_name], W: tensor(f"W{k}")}
            weight_grad.append(calculus.regulariser_gradient(reg).xreplace(named))
    record.backward += [sp.Eq(Partial(LOSS, tensor(f"W{k}")), sp.Add(*weight_grad, evaluate=False)),
                        sp.Eq(Partial(LOSS, tensor(f"b{k}")), SumN(tensor(dz)))]
    if first:
        return ""
    dx = f"d{x}"
    b.buffer(dx, b.buffers[x].shape)
    b.backward.append(MatMulT(f"{dx} = {dz} @ W{k}.T", layer.name, "backward", dx, dz, f"W{k}"))
    record.code.append(b.backward[-1].formula)
    record.backward.append(sp.Eq(tensor(dx), MatProd(tensor(dz), Transposed(tensor(f"W{k}")))))
    return dx


def _activation_backward(b: _Builder, layer: Activation, z: str, a: str, da: str, record: LayerRecord) -> str:
    local = calculus.activation(layer.function)
    if local.is_identity:
        return da
    dz = f"d{z}"
    b.buffer(dz, b.buffers[z].shape)
    fprime = local.evaluated.xreplace({X: symbol(z), A: symbol(a)})
    expr = symbol(da) * fprime
    product = sp.sstr(sp.Mul(symbol(da), fprime, evaluate=False))
    b.backward.append(Map(f"{dz} = {product}   [{layer.function.name}'({z}) = "
                          f"{sp.sstr(local.derivative.xreplace({X: symbol(z)}))}]",
                          layer.function.name, "backward", dz, expr))
    record.code.append(b.backward[-1].formula)
    record.backward.append(sp.Eq(tensor(dz), sp.Mul(tensor(da), local.evaluated.xreplace(
        {X: tensor(z), A: tensor(a)}), evaluate=False)))
    return dz


def _softmax_backward(b: _Builder, z: str, p: str, dp: str, record: LayerRecord) -> str:
    dz, r = f"d{z}", f"dot_{dp}"
    b.buffer(dz, b.buffers[z].shape)
    b.buffer(r, (BATCH, 1))
    b.backward.append(Reduce(f"{r} = rowsum({dp}*{p})", "softmax", "backward", r,
                             symbol(dp) * symbol(p), "sum", 1))
    b.backward.append(Map(f"{dz} = {p}*({dp} - {r})   [softmax Jacobian-vector product]", "softmax",
                          "backward", dz, symbol(p) * (symbol(dp) - symbol(r))))
    record.code += [op.formula for op in b.backward[-2:]]
    dps, ps = tensor(dp), tensor(p)
    record.backward.append(sp.Eq(tensor(dz), sp.Mul(ps, dps - SumK(dps * ps), evaluate=False)))
    return dz


def _regularisation(b: _Builder) -> None:
    """Penalty terms of the loss: one scalar reduction per regularised weight, then L."""
    total = symbol("L_data")
    for reg_name, strength in (("l2", b.model.l2), ("l1", b.model.l1)):
        if not strength:
            continue
        reg = REGULARISERS[reg_name]
        for p in b.params:
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


def _penalty_record(b: _Builder) -> None:
    """The output record's loss gets the penalty terms, in λ₁ and λ₂ (their values are on the model)."""
    record = next(r for r in b.records if r.kind == "output")
    terms = [record.forward.rhs]
    for reg_name, strength in (("l2", b.model.l2), ("l1", b.model.l1)):
        if strength:
            reg = REGULARISERS[reg_name]
            terms += [SumAll(reg.expr.xreplace({LAM: LAMBDA[reg_name], W: tensor(p.buffer)}))
                      for p in b.params if p.regularized]
    record.forward = sp.Eq(LOSS, sp.Add(*terms, evaluate=False), evaluate=False)
