"""THE registry: every activation, loss, regulariser and optimizer update as a SymPy formula.

Adding an activation, loss or optimizer is one entry here.  Nothing below is code for a
backend: derivatives come from `sympy.diff` (see `calculus`), the derivation stage turns
these into the Program IR, and each backend prints the IR with its own printer.

Formulas are written as on paper (``1/(1 + exp(-x))``, not a stable special form): the
stability rewrites in `symbolic.stabilize` make them safe to evaluate and are reported
in the derive output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import sympy as sp

from ..errors import FormulaError
from .functions import symbol
from .parse import check_identifier, parse, to_expr

_OPT_BASE = ("p", "g", "lr", "t")

#: Symbols of elementwise formulas: x the input of an activation, a its output,
#: y a prediction, t a target, w a weight, lam a regularisation strength.
X, A, Y, T, W, LAM = (symbol(n) for n in ("x", "a", "y", "t", "w", "lam"))


@dataclass(frozen=True)
class ElementwiseFunction:
    """An activation f(x), applied elementwise.

    `output_derivative`, when given, is f' written in the output a = f(x) for functions
    where that cannot be found by substitution (ReLU: a > 0 exactly when x > 0); the
    tests check it against `sympy.diff` at sample points.
    """

    name: str
    expr: sp.Expr
    output_derivative: sp.Expr | None = None
    kink: str | None = None

    def key(self) -> str:
        """Deterministic identity used in cache keys."""
        return f"{self.name}:{sp.srepr(self.expr)}"


@dataclass(frozen=True)
class LossFunction:
    """An elementwise loss l(y, t); `per_row_sum` sums over outputs, then means over rows."""

    name: str
    expr: sp.Expr
    per_row_sum: bool = False

    def key(self) -> str:
        return f"{self.name}:{int(self.per_row_sum)}:{sp.srepr(self.expr)}"


@dataclass(frozen=True)
class Regulariser:
    """A penalty lam·r(w) summed over the weights of every Dense layer (not biases)."""

    name: str
    expr: sp.Expr
    kink: str | None = None


@dataclass(frozen=True, eq=False)
class Optimizer:
    """An optimizer written as update formulas on flat parameter (p) and gradient (g) vectors.

    ``Optimizer("heavy_ball", {"v": "mu*v + g", "p": "p - lr*v"}, {"mu": 0.9})`` defines
    one: assignments are done in the order given, in the symbols p, g, lr, t (the 1-based
    update count), the state names (every target except p, each a vector starting at zero)
    and the hyperparameter names (with their defaults).  Formulas are strings (parsed by a
    whitelist, never evaluated), SymPy expressions or callables.  The compiler fuses the
    update into the generated step; when the rule is exactly p - lr*g (plain SGD) it folds
    lr into the output delta so the update is one subtraction.
    """

    name: str
    updates: object
    defaults: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = check_identifier(self.name, "optimizer name")
        defaults = {check_identifier(k, "hyperparameter"): _number(v, f"optimizer {name}, hyperparameter {k}")
                    for k, v in dict(self.defaults or {}).items()}
        pairs = list(self.updates.items()) if isinstance(self.updates, Mapping) else list(self.updates)
        targets = [check_identifier(t, "optimizer state") for t, _ in pairs]
        if targets.count("p") != 1 or len(set(targets)) != len(targets):
            raise FormulaError(f"optimizer {name}: assign p (the parameters) exactly once and each state once "
                               f"(got {', '.join(targets) or 'no updates'})")
        clash = set(defaults) & (set(targets) | set(_OPT_BASE))
        if clash:
            raise FormulaError(f"optimizer {name}: hyperparameter name(s) {', '.join(sorted(clash))} "
                               "clash with p, g, lr, t or a state name")
        bad_state = set(targets) & (set(_OPT_BASE) - {"p"})
        if bad_state:
            raise FormulaError(f"optimizer {name}: {', '.join(sorted(bad_state))} cannot be assigned "
                               "(g, lr and t are inputs of the rule)")
        names = _OPT_BASE + tuple(t for t in targets if t != "p") + tuple(defaults)
        exprs = tuple((t, to_expr(f, names, f"optimizer {name}, update of {t}")) for t, f in pairs)
        object.__setattr__(self, "updates", exprs)
        object.__setattr__(self, "defaults", defaults)

    @property
    def state(self) -> tuple[str, ...]:
        """State vectors, in the order they are assigned."""
        return tuple(target for target, _ in self.updates if target != "p")

    @property
    def folds_lr(self) -> bool:
        """Whether the rule is plain SGD, p - lr*g, so lr can be folded into the gradient."""
        p, g, lr = (symbol(n) for n in ("p", "g", "lr"))
        return len(self.updates) == 1 and sp.expand(self.updates[0][1] - (p - lr * g)) == 0

    def key(self) -> str:
        """Deterministic identity: name, defaults and every formula (part of cache keys)."""
        parts = [f"{t}={sp.srepr(e)}" for t, e in self.updates]
        return f"{self.name}:{sorted(self.defaults.items())}:{';'.join(parts)}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Optimizer) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        rule = ", ".join(f"{t!r}: {str(e)!r}" for t, e in self.updates)
        return f"Optimizer({self.name!r}, {{{rule}}}, {dict(self.defaults)!r})"


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FormulaError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _x(text: str) -> sp.Expr:
    return parse(text, {"x": X})


def _a(text: str) -> sp.Expr:
    return parse(text, {"a": A})


def leaky_relu(alpha: float) -> ElementwiseFunction:
    """LeakyReLU(alpha): x for x > 0, alpha·x otherwise; at 0 the derivative is alpha."""
    a = sp.Integer(int(alpha)) if float(alpha).is_integer() else sp.Float(alpha)
    return ElementwiseFunction(
        "leaky_relu", sp.Piecewise((X, X > 0), (a * X, True)),
        output_derivative=sp.Piecewise((1, A > 0), (a, True)),
        kink="not differentiable at x = 0: the derivative there is taken as alpha "
             "(the left derivative, as PyTorch does)")


ACTIVATIONS: dict[str, ElementwiseFunction] = {
    "sigmoid": ElementwiseFunction("sigmoid", _x("1/(1 + exp(-x))")),
    "tanh": ElementwiseFunction("tanh", _x("tanh(x)")),
    "relu": ElementwiseFunction(
        "relu", _x("max(0, x)"), output_derivative=_a("heaviside(a)"),
        kink="not differentiable at x = 0: the derivative there is taken as 0 "
             "(the left derivative, as PyTorch does)"),
    "softplus": ElementwiseFunction("softplus", _x("log(1 + exp(x))")),
    "identity": ElementwiseFunction("identity", _x("x")),
}

LOSSES: dict[str, LossFunction] = {
    "mse": LossFunction("mse", parse("(y - t)**2", {"y": Y, "t": T})),
    "binary_cross_entropy": LossFunction(
        "binary_cross_entropy", parse("-(t*log(y) + (1 - t)*log(1 - y))", {"y": Y, "t": T})),
    "cross_entropy": LossFunction("cross_entropy", parse("-t*log(y)", {"y": Y, "t": T}), per_row_sum=True),
}

REGULARISERS: dict[str, Regulariser] = {
    "l2": Regulariser("l2", parse("lam/2 * w**2", {"lam": LAM, "w": W})),
    "l1": Regulariser("l1", parse("lam*abs(w)", {"lam": LAM, "w": W}),
                      kink="|w| is not differentiable at w = 0: the subgradient sign(0) = 0 is used"),
}

def make_optimizer(name: str, updates: Mapping[str, object] | list[tuple[str, object]],
                   defaults: Mapping[str, float] | None = None) -> Optimizer:
    """Build an optimizer from update formulas (the same as ``Optimizer(name, updates, defaults)``)."""
    return Optimizer(name, updates, defaults or {})


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": make_optimizer("sgd", {"p": "p - lr*g"}),
    "momentum": make_optimizer("momentum", {"v": "momentum*v + g", "p": "p - lr*v"}, {"momentum": 0.9}),
    "nesterov": make_optimizer("nesterov", {"v": "momentum*v + g", "p": "p - lr*(g + momentum*v)"},
                               {"momentum": 0.9}),
    "adam": make_optimizer(
        "adam", {"m": "beta1*m + (1 - beta1)*g", "v": "beta2*v + (1 - beta2)*g**2",
                 "p": "p - lr/(1 - beta1**t) * m/(sqrt(v)/sqrt(1 - beta2**t) + eps)"},
        {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
    "rmsprop": make_optimizer(
        "rmsprop", {"v": "alpha*v + (1 - alpha)*g**2", "p": "p - lr*g/(sqrt(v) + eps)"},
        {"alpha": 0.99, "eps": 1e-8}),
}

#: Bumped whenever a formula above or its lowering changes meaning; part of cache keys.
RULES_VERSION = 1
