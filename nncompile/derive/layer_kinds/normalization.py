"""LayerNorm and BatchNorm: normalize, then scale and shift; the backward pass in its closed form.

The forward pass keeps what the backward pass reads: the centred input, the statistics and
x̂ = (x − μ)/√(σ² + ε).  The backward pass the code runs is the compact textbook form,
∂L/∂x = (1/√(σ² + ε))·(∂L/∂x̂ − (Σ ∂L/∂x̂ + x̂ ⊙ Σ(∂L/∂x̂ ⊙ x̂))/m): two sums over the axis
instead of the staged chain through σ² and μ, which `symbolic.normalization` derives from
the definition and the record shows next to it (the two are checked equal there).

LayerNorm's statistics are per row (over its m = D features); BatchNorm's per feature (over
the m = N rows).  BatchNorm trains with the batch statistics, updates its running mean and
(unbiased) variance in each training step, and evaluates with the running ones.
"""
from __future__ import annotations

import sympy as sp

from ...dsl.layers import BatchNorm, LayerNorm
from ...symbolic import normalization as norm
from ...symbolic.functions import symbol
from ...symbolic.notation import LOSS, Constant, Partial, equation, tensor
from ..builder import Builder, Site
from ..ir import BATCH, Map, Op, Reduce
from ..records import LayerRecord
from .base import Rule, Sent, register, target

N = symbol(BATCH)
_ARRAYS = ("mu", "xc", "var", "rstd", "xhat", "dxhat", "sum_dxhat", "dot_dxhat")  # a node's own arrays


class _Normalization(Rule):
    """What LayerNorm and BatchNorm share; `axis` says which the statistics run over."""

    axis = "features"
    letters = "ln"

    # -- shapes and names -----------------------------------------------------------------------
    def axis_of(self, site: Site) -> str:
        """"features" (each row), "batch" (each feature over the rows) or "channels" (each channel of an
        image over the rows and pixels: BatchNorm2d)."""
        return self.axis

    def _stat_shape(self, site: Site) -> tuple:
        """A statistic's buffer shape, which broadcasts against the input (and is a parameter's buffer shape)."""
        axis = self.axis_of(site)
        if axis == "channels":
            return (site.node.shape[0], 1, 1)
        return (BATCH, 1) if axis == "features" else (site.node.shape[0],)

    def _count(self, site: Site) -> sp.Expr:
        axis = self.axis_of(site)
        if axis == "channels":
            return N * sp.Integer(site.node.shape[1] * site.node.shape[2])
        return sp.Integer(site.node.shape[0]) if axis == "features" else N

    def _reduce(self, site: Site, out: str, expr: sp.Expr, formula: str, stage: str) -> Reduce:
        axis, what = {"features": (1, "rowsum"), "batch": (0, "colsum"),
                      "channels": ((0, 2, 3), "sum_nhw")}[self.axis_of(site)]
        return Reduce(f"{out} = {what}({formula})", site.layer.name, stage, out, expr, "sum", axis)

    @staticmethod
    def _names(site: Site) -> dict[str, str]:
        return {k: f"{k}_{site.out}" for k in _ARRAYS}

    # -- forward --------------------------------------------------------------------------------
    def forward(self, b: Builder, site: Site) -> None:
        layer, x = site.layer, site.inputs[0].out
        k = b.number(layer)
        site.index, site.out = k, b.next_name(f"{self.letters}{k}")
        params = {d.name: b.declare(layer, d, f"{d.name.replace('running_', 'r')}_{self.letters}{k}", d.init,
                                    self._stat_shape(site) if self.axis_of(site) == "channels" else None)
                  for d in layer.parameters((site.inputs[0].node.shape,))}
        n, out, m = self._names(site), site.out, self._count(site)
        m_text = str(m) if m.is_Atom else f"({m})"
        for name in ("mu", "var", "rstd"):
            b.buffer(n[name], self._stat_shape(site))
        for name in ("xc", "xhat", out):
            b.buffer(n.get(name, name), site.shape)
        s = {name: symbol(value) for name, value in {**n, **params, "x": x}.items()}
        label = layer.name
        b.forward += [
            self._reduce(site, n["mu"], s["x"], x, "forward"),
            Map(f"{n['mu']} = {n['mu']}/{m_text}   [the mean]", label, "forward", n["mu"], s["mu"] / m),
            Map(f"{n['xc']} = {x} - {n['mu']}", label, "forward", n["xc"], s["x"] - s["mu"]),
            self._reduce(site, n["var"], s["xc"] ** 2, f"{n['xc']}**2", "forward"),
            Map(f"{n['var']} = {n['var']}/{m_text}   [the biased variance]", label, "forward", n["var"], s["var"] / m),
            Map(f"{n['rstd']} = 1/sqrt({n['var']} + {layer.eps!r})", label, "forward", n["rstd"],
                1 / sp.sqrt(s["var"] + sp.Float(layer.eps))),
            Map(f"{n['xhat']} = {n['xc']}*{n['rstd']}", label, "forward", n["xhat"], s["xc"] * s["rstd"]),
            Map(f"{out} = {params['gamma']}*{n['xhat']} + {params['beta']}", label, "forward", out,
                s["gamma"] * s["xhat"] + s["beta"]),
        ]
        site.extra.update(params=params, shown=self._shown(site, params, n), formula=f"{out} = {layer.name}({x})")
        site.record = self._record(site)

    def _shown(self, site: Site, params: dict[str, str], n: dict[str, str]) -> dict[sp.Symbol, sp.Basic]:
        """The abstract symbols of `symbolic.normalization` as this node's named arrays (and constants)."""
        eps = Constant(f"eps_{site.out}", "ε", r"\varepsilon")
        site.extra["constants"] = {eps: site.layer.eps}
        m = Constant(f"D_{site.out}", "D", "D") if self.axis == "features" else self._count(site)
        if self.axis == "features":
            site.extra["constants"][m] = site.node.shape[0]
        shown = {norm.X: tensor(site.inputs[0].out), norm.Y: tensor(site.out), norm.MU: tensor(n["mu"]),
                 norm.VAR: tensor(n["var"]), norm.XHAT: tensor(n["xhat"]), norm.GAMMA: tensor(params["gamma"]),
                 norm.BETA: tensor(params["beta"]), norm.EPS: eps,
                 norm.M: m, norm.DY: tensor(f"d{site.out}")}
        for sym in (norm.MU, norm.VAR, norm.XHAT):
            shown[norm.adjoint(sym)] = tensor(f"d{n[sym.name]}")
        return shown

    def _record(self, site: Site) -> LayerRecord:
        shown, total = site.extra["shown"], norm.SUMS[self.axis_of(site)]
        rows = [(shown[d.target], (total(d.expr) / norm.M if d.mean else d.expr).xreplace(shown))
                for d in norm.DEFINITIONS]
        record = LayerRecord(site.layer.name, site.layer.kind, equation(*rows[-1]), site.inputs[0].out, site.out,
                             constants=site.extra["constants"])
        record.rows = [("forward", row) for row in rows[:-1]]
        shape, axis = site.node.shape, self.axis_of(site)
        over = (f"each row over its D = {shape[0]} features" if axis == "features" else
                f"each of the {shape[0]} features over the N rows of the batch" if axis == "batch" else
                f"each of the {shape[0]} channels over the N rows and the {shape[1]}x{shape[2]} pixels of the batch")
        record.notes.append(f"{site.label} normalizes {over}; eps = {site.layer.eps:g}")
        record.description = f"{type(site.layer).__name__} of {site.node.shape[0]} features, over the " + (
            "row" if self.axis == "features" else "batch") + (" and the pixels" if self.axis_of(site) == "channels"
                                                                else "")
        return record

    # -- backward -------------------------------------------------------------------------------
    def backward(self, b: Builder, site: Site, delta: str) -> list[Sent]:
        first = len(b.backward)
        n, xhat = self._names(site), symbol(self._names(site)["xhat"])
        sums = {"gamma": self._gradient(b, site, "gamma", symbol(delta) * xhat, f"{delta}*{n['xhat']}"),
                "beta": self._gradient(b, site, "beta", symbol(delta), delta)}
        sent = []
        if site.inputs[0].grad:
            dx = target(b, site, 0)
            b.buffer(dx, site.inputs[0].shape)
            b.backward.append(self._input_delta(b, site, delta, dx, sums))
            shown = {**site.extra["shown"], norm.adjoint(norm.X): tensor(dx)}
            derivation = norm.derivation(self.axis_of(site))
            sent.append(Sent(0, dx, equation(tensor(dx), derivation.closed.xreplace(shown))))
            site.record.derived += [("step by step", equation(shown[name], expr.xreplace(shown)))
                                    for name, expr in derivation.steps]
            site.record.derived.append(("closed form", sent[0].eq))
        site.record.code += [op.formula for op in b.backward[first:]]
        return sent

    def _input_delta(self, b: Builder, site: Site, delta: str, dx: str, sums: dict[str, str]) -> Map:
        """∂L/∂x in the closed form: ∂L/∂x̂ = δ ⊙ γ, then its two sums over the row."""
        n, params, m, label = self._names(site), site.extra["params"], self._count(site), site.layer.name
        b.buffer(n["dxhat"], site.shape)
        b.backward.append(Map(f"{n['dxhat']} = {delta}*{params['gamma']}", label, "backward", n["dxhat"],
                              symbol(delta) * symbol(params["gamma"])))
        dxhat, xhat = symbol(n["dxhat"]), symbol(n["xhat"])
        for name, expr, what in (("sum_dxhat", dxhat, n["dxhat"]), ("dot_dxhat", dxhat * xhat,
                                                                      f"{n['dxhat']}*{n['xhat']}")):
            b.buffer(n[name], self._stat_shape(site))
            b.backward.append(self._reduce(site, n[name], expr, what, "backward"))
        r1, r2 = symbol(n["sum_dxhat"]), symbol(n["dot_dxhat"])
        count = str(m) if m.is_Atom else f"({m})"
        return Map(f"{dx} = {n['rstd']}*({n['dxhat']} - ({n['sum_dxhat']} + {n['xhat']}*{n['dot_dxhat']})/{count})   "
                   "[the closed form (the textbook's compact formula), not the staged one]", label, "backward", dx,
                   symbol(n["rstd"]) * (dxhat - (r1 + xhat * r2) / m))

    def _gradient(self, b: Builder, site: Site, name: str, expr: sp.Expr, formula: str) -> str:
        """∂L/∂γ = Σₙ δ ⊙ x̂ and ∂L/∂β = Σₙ δ (γ and β are broadcast along the batch in both layers);
        a layer called again adds its sum to the same gradient.  Returns the buffer holding this call's sum."""
        layer, buffer = site.layer, site.extra["params"][name]
        grad = f"d{buffer}"
        axis, what = ((0, 2, 3), "sum_nhw") if self.axis_of(site) == "channels" else (0, "colsum")
        if grad in b.grad_written:
            held = b.next_name(f"{grad}_via_{site.out}")
            b.buffer(held, b.buffers[grad].shape)
            b.backward += [Reduce(f"{held} = {what}({formula})", layer.name, "backward", held, expr, "sum", axis),
                           Map(f"{grad} += {held}   [another use]", layer.name, "backward", grad,
                               symbol(grad) + symbol(held))]
        else:
            held = grad
            b.backward.append(Reduce(f"{grad} = {what}({formula})", layer.name, "backward", grad, expr, "sum", axis))
            b.grad_written.add(grad)
        adjoint = norm.adjoint(norm.GAMMA if name == "gamma" else norm.BETA)
        rhs = dict(norm.derivation(self.axis_of(site)).gradients)[adjoint].xreplace(site.extra["shown"])
        shared = sum(1 for node in b.model.nodes if node.layer is layer) > 1
        lhs = tensor(f"{grad}_via_{site.out}") if shared else Partial(LOSS, tensor(buffer))
        site.record.gradients[f"{layer.name}.{name}"] = equation(lhs, rhs)
        return held


class LayerNormRule(_Normalization):
    axis, letters = "features", "ln"


class BatchNormRule(_Normalization):
    """Batch statistics in training; the running ones in evaluation, updated by each training step."""

    axis, letters = "batch", "bn"
    stochastic = True

    def axis_of(self, site: Site) -> str:
        return "channels" if len(site.node.shape) == 3 else "batch"

    def _input_delta(self, b: Builder, site: Site, delta: str, dx: str, sums: dict[str, str]) -> Map:
        """The closed form without ∂L/∂x̂ or new sums: γ is constant over the batch, so Σₙ ∂L/∂x̂ = γ ⊙ ∂L/∂β
        and Σₙ ∂L/∂x̂ ⊙ x̂ = γ ⊙ ∂L/∂γ, sums the gradients already hold (no penalty touches γ or β)."""
        n, params, m = self._names(site), site.extra["params"], self._count(site)
        d, xhat, gamma = symbol(delta), symbol(n["xhat"]), symbol(params["gamma"])
        dgamma, dbeta = symbol(sums["gamma"]), symbol(sums["beta"])
        count = str(m) if m.is_Atom else f"({m})"
        return Map(f"{dx} = {n['rstd']}*{params['gamma']}*({delta} - ({sums['beta']} + {n['xhat']}*{sums['gamma']})"
                   f"/{count})   [the closed form; its sums over the batch are gamma*{sums['beta']} and "
                   f"gamma*{sums['gamma']}]", site.layer.name, "backward", dx,
                   symbol(n["rstd"]) * gamma * (d - (dbeta + xhat * dgamma) / m))

    def forward(self, b: Builder, site: Site) -> None:
        super().forward(b, site)
        count = self._count(site)
        if self.axis_of(site) == "batch" or site.node.shape[1] * site.node.shape[2] == 1:
            b.min_train_rows = 2
        layer, params, n = site.layer, site.extra["params"], self._names(site)
        mom = sp.Float(layer.momentum)
        rmean, rvar = params["running_mean"], params["running_var"]
        s = {name: symbol(value) for name, value in {**n, **params}.items()}
        b.running += [
            Map(f"{rmean} = {1 - layer.momentum!r}*{rmean} + {layer.momentum!r}*{n['mu']}   [running mean]",
                layer.name, "update", rmean, (1 - mom) * s["running_mean"] + mom * s["mu"]),
            Map(f"{rvar} = {1 - layer.momentum!r}*{rvar} + {layer.momentum!r}*{n['var']}*m/(m - 1)   "
                f"[running variance, unbiased; m = {count}]", layer.name, "update", rvar,
                (1 - mom) * s["running_var"] + mom * s["var"] * count / sp.Max(count - 1, 1)),  # (m = 1 never trains)
        ]
        site.record.notes.append(f"training normalizes with the batch's statistics and updates the running ones: "
                                 f"running = (1 - {layer.momentum:g})*running + {layer.momentum:g}*batch statistic "
                                 f"(the unbiased variance, m/(m - 1) times the biased one, m = {count} entries per "
                                 "statistic); evaluation uses the running ones")

    def forward_eval(self, b: Builder, site: Site) -> None:
        """y = x ⊙ scale + shift, with scale = γ/√(running σ² + ε) and shift = β − running μ ⊙ scale."""
        layer, params, x, out = site.layer, site.extra["params"], site.inputs[0].out, site.out
        scale, shift = f"scale_{out}", f"shift_{out}"
        b.buffer(scale, self._stat_shape(site))
        b.buffer(shift, self._stat_shape(site))
        s = {name: symbol(value) for name, value in params.items()}
        ops: list[Op] = [
            Map(f"{scale} = {params['gamma']}/sqrt({params['running_var']} + {layer.eps!r})", layer.name, "forward",
                scale, s["gamma"] / sp.sqrt(s["running_var"] + sp.Float(layer.eps))),
            Map(f"{shift} = {params['beta']} - {params['running_mean']}*{scale}", layer.name, "forward", shift,
                s["beta"] - s["running_mean"] * symbol(scale)),
            Map(f"{out} = {x}*{scale} + {shift}   [evaluation: the running statistics]", layer.name, "forward", out,
                symbol(x) * symbol(scale) + symbol(shift)),
        ]
        b.forward_eval += ops


register(LayerNorm, LayerNormRule())
register(BatchNorm, BatchNormRule())
