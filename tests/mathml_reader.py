"""Reads the report's MathML back into numbers, the way a person reads the rendered formula.

Independent of the printer: the markup is parsed as XML and turned into a Python
expression token by token, following only what is on the screen: a row is read left to
right, `·` is a product (of matrices when both sides are), `⊙` an elementwise product,
fractions, powers, roots, `ᵀ`, `Σ`, bars and braces group what they hold, and nothing else
does.  A formula the printer wrote with a missing bracket reads back as a different number.
"""
from __future__ import annotations

import re
from xml.dom.minidom import Element, parseString

import numpy as np

#: What a function name on the page means.
FUNCTIONS = {"tanh": "np.tanh", "log": "np.log", "exp": "np.exp", "sign": "np.sign", "σ": "sigmoid",
             "H": "step", "max": "maximum", "min": "minimum", "softmax": "softmax", "relu": "relu",
             "softplus": "softplus", "sqrt": "np.sqrt", "cos": "np.cos", "sin": "np.sin", "atan": "np.arctan",
             "asinh": "np.arcsinh", "cosh": "np.cosh", "sinh": "np.sinh", "log1p": "np.log1p"}
GREEK = {"λ": "lambda", "α": "alpha", "δ": "delta"}
CONSTANTS = {"ⅇ": "V(2.718281828459045)", "π": "V(3.141592653589793)"}


class V:
    """A value on the page: `@` is the product `·` (matrix product when both sides are matrices)."""

    def __init__(self, v: object) -> None:
        self.v = v.v if isinstance(v, V) else np.asarray(v, dtype=float)

    def _bin(self, other: object, fn: object) -> "V":
        return V(fn(self.v, V(other).v))

    def __matmul__(self, other: object) -> "V":
        b = V(other).v
        return V(self.v @ b if self.v.ndim == 2 and b.ndim == 2 else self.v * b)

    def __rmatmul__(self, other: object) -> "V":
        return V(other) @ self

    __add__ = lambda s, o: s._bin(o, np.add)          # noqa: E731
    __radd__ = lambda s, o: V(o)._bin(s, np.add)      # noqa: E731
    __sub__ = lambda s, o: s._bin(o, np.subtract)     # noqa: E731
    __rsub__ = lambda s, o: V(o)._bin(s, np.subtract)  # noqa: E731
    __mul__ = lambda s, o: s._bin(o, np.multiply)     # noqa: E731
    __truediv__ = lambda s, o: s._bin(o, np.divide)   # noqa: E731
    __pow__ = lambda s, o: s._bin(o, np.power)        # noqa: E731
    __gt__ = lambda s, o: s._bin(o, np.greater)       # noqa: E731
    __lt__ = lambda s, o: s._bin(o, np.less)          # noqa: E731
    __ge__ = lambda s, o: s._bin(o, np.greater_equal)  # noqa: E731
    __le__ = lambda s, o: s._bin(o, np.less_equal)    # noqa: E731

    def __neg__(self) -> "V":
        return V(-self.v)

    @property
    def T(self) -> "V":  # noqa: N802
        return V(self.v.T)


def _wrap(fn: object) -> object:
    return lambda *args: V(fn(*(V(a).v for a in args)))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _piecewise(*pairs: tuple[object, object]) -> V:
    """{e1 if c1; e2 otherwise}: the first branch whose condition holds (otherwise reads as 1, true)."""
    values = [(V(e).v, V(c).v.astype(bool)) for e, c in pairs]
    shape = np.broadcast(*(x for pair in values for x in pair)).shape
    return V(np.select([np.broadcast_to(c, shape) for _, c in values],
                       [np.broadcast_to(e, shape) for e, _ in values]))


def namespace() -> dict:
    numpy = {k: staticmethod(_wrap(getattr(np, k))) for k in ("tanh", "log", "exp", "sign", "sqrt", "cos", "sin",
                                                               "arctan", "arcsinh", "cosh", "sinh", "log1p")}
    return {"np": type("np", (), numpy), "V": V, "piecewise": _piecewise,
            "sigmoid": _wrap(lambda x: 1 / (1 + np.exp(-x))), "step": _wrap(lambda x: (x > 0) * 1.0),
            "maximum": _wrap(np.maximum), "minimum": _wrap(np.minimum), "softmax": _wrap(_softmax),
            "relu": _wrap(lambda x: np.maximum(x, 0)), "softplus": _wrap(lambda x: np.logaddexp(0, x)),
            "absolute": _wrap(np.abs), "sumn": _wrap(lambda x: x.sum(axis=0)),
            "sumk": _wrap(lambda x: x.sum(axis=1, keepdims=True)), "sumall": _wrap(np.sum)}


def _text(node: Element) -> str:
    return "".join(c.data for c in node.childNodes if c.nodeType == c.TEXT_NODE).strip()


def _elements(node: Element) -> list[Element]:
    return [c for c in node.childNodes if c.nodeType == c.ELEMENT_NODE]


def _name(node: Element) -> str:
    """A variable as the page names it: δ₂ is dz2, a₁′ is a1_2, W⁽¹⁾₀₁ is W1_01, λ₂ is lambda2.

    A normalization layer's arrays (μ₁, σ₁², x̂₁, γ₁, β₁, μ̄₁, σ̄₁²) and a layer's constants (ε, D, p)
    name a kind of array of layer 1 (or of its layer), not one buffer: they read as a reference
    that `evaluate` resolves among the arrays the formula was given (mu_ln1 or mu_bn1).
    """
    tag, kids = node.tagName, _elements(node)
    if tag == "mi":
        text = _text(node)
        return f"CONST__{LAYER_CONSTANTS[text]}" if text in LAYER_CONSTANTS else GREEK.get(text, text)
    layer = _layer_array(tag, kids)
    if layer is not None:
        return layer
    base = _text(kids[0])
    index = "".join(_text(k) for k in ([kids[1]] if kids[1].tagName != "mrow" else _elements(kids[1])))
    if tag == "msub":
        if base == "δ":
            return f"dz{index}"
        return f"{GREEK.get(base, base)}{'_' if not index.isdigit() else ''}{index}"
    extra = _elements(kids[2]) if kids[2].tagName == "mrow" else [kids[2]]
    text = "".join(_text(k) for k in extra)
    if text.startswith("("):                                  # W⁽¹⁾₀₁: layer in the superscript
        return f"{base}{text.strip('()')}_{index}"
    primes = text.count("′")
    return f"{'dz' if base == 'δ' else base}{index}_{primes + 1}"


#: A normalization layer's arrays by their letter (and accent), and the constants of a layer.
LAYER_LETTERS = {("μ", ""): "mu", ("γ", ""): "gamma", ("β", ""): "beta", ("x", "^"): "xhat", ("μ", "¯"): "rmean"}
LAYER_SQUARED = {("σ", ""): "var", ("σ", "¯"): "rvar"}
LAYER_CONSTANTS = {"ε": "eps", "D": "D", "p": "p"}


def _layer_array(tag: str, kids: list[Element]) -> str | None:
    """μ₁ -> LA__mu__1, σ₁² -> LA__var__1, x̂₁′ -> LA__xhat__1_2; None for any other name."""
    if tag not in ("msub", "msubsup"):
        return None
    head = kids[0]
    if head.tagName == "mover":
        letter, accent = (_text(k) for k in _elements(head))
    elif head.tagName == "mi":
        letter, accent = _text(head), ""
    else:
        return None
    marks = _text(kids[2]) if tag == "msubsup" else ""
    squared = marks.endswith("2")
    table = LAYER_SQUARED if squared else LAYER_LETTERS
    if (letter, accent) not in table:
        return None
    primes = marks.rstrip("2").count("′")
    return f"LA__{table[letter, accent]}__{_text(kids[1])}" + (f"_{primes + 1}" if primes else "")


def _resolve(source: str, values: dict[str, object]) -> str:
    """Each layer-array or constant reference as the one given array of that kind and layer."""
    def array(match: re.Match) -> str:
        grad, kind, index, primes = match.groups()
        pattern = re.compile(rf"^{grad}{kind}_(ln|bn){index}{'_' + primes if primes else ''}$")
        return _only([k for k in values if pattern.match(k)], match.group(0))

    def constant(match: re.Match) -> str:
        return _only([k for k in values if k.split("_")[0] == match.group(1)], match.group(0))

    source = re.sub(r"\b(d?)LA__(\w+?)__(\d+)(?:_(\d+))?\b", array, source)
    return re.sub(r"\bCONST__(\w+?)\b", constant, source)


def _only(found: list[str], shown: str) -> str:
    if len(found) != 1:
        raise ValueError(f"{shown} names {len(found)} of the given arrays: {found}")
    return found[0]


def _is_paren(node: Element, ch: str) -> bool:
    return node.tagName == "mo" and _text(node) == ch


def _group(node: Element) -> str:
    return f"({read(node)})"


def _row(kids: list[Element]) -> str:
    out: list[str] = []
    bars = 0
    i = 0
    while i < len(kids):
        k = kids[i]
        nxt = kids[i + 1] if i + 1 < len(kids) else None
        if k.tagName == "mi" and _text(k) in FUNCTIONS and nxt is not None and nxt.tagName == "mrow":
            out.append(f"{FUNCTIONS[_text(k)]}{read(nxt)}")         # the argument row holds its brackets
            i += 2
            continue
        if k.tagName == "msup" and _elements(k)[0].tagName == "mi" and _text(_elements(k)[0]) in FUNCTIONS \
                and nxt is not None:
            fn, power = _elements(k)
            out.append(f"({FUNCTIONS[_text(fn)]}{read(nxt)})**{_group(power)}")
            i += 2
            continue
        if k.tagName == "munder" or (k.tagName == "mo" and _text(k) == "∑"):
            index = _text(_elements(k)[1]) if k.tagName == "munder" else ""
            out.append(f"sum{index or 'all'}({read(nxt)})")
            i += 2
            continue
        if _is_paren(k, "(") and i + 4 < len(kids) and kids[i + 2].tagName == "mtext" \
                and _text(kids[i + 2]) == "via" and _is_paren(kids[i + 4], ")"):
            out.append(f"{read(kids[i + 1])}_via_{read(kids[i + 3])}")   # (∂L/∂a₁ via z₂): one path's part
            i += 5
            continue
        if k.tagName == "mo" and _text(k) == "|":
            out.append("absolute(" if bars % 2 == 0 else ")")
            bars += 1
        elif _is_paren(k, "{"):
            out.append(read(nxt))
            i += 1
        else:
            out.append(read(k))
        i += 1
    return " ".join(out)


OPERATORS = {"+": "+", "−": "-", "-": "-", "·": "@", "⊙": "*", "(": "(", ")": ")", ",": ",", ">": ">",
             "<": "<", "≥": ">=", "≤": "<="}


def read(node: Element) -> str:
    """The Python expression a person reads off `node`."""
    tag, kids = node.tagName, _elements(node)
    if tag in ("math", "mrow", "mtd"):
        return _row(kids)
    if tag == "mn":
        return f"V({float(_text(node).replace('−', '-'))!r})"
    if tag == "mi":
        return CONSTANTS.get(_text(node)) or _name(node)
    if tag == "mo":
        return OPERATORS[_text(node)]
    if tag == "mfrac":
        top = _elements(kids[0]) if kids[0].tagName == "mrow" else []
        if top and _is_paren(top[0], "∂"):                   # ∂L/∂a₁ names the array da1
            return "d" + _name(_elements(kids[1])[1])
        return f"({_group(kids[0])} / {_group(kids[1])})"
    if tag == "msqrt":
        return f"np.sqrt({_row(kids)})"
    if tag == "msup":
        if kids[1].tagName == "mi" and _text(kids[1]) == "⊤":
            return f"{_group(kids[0])}.T"
        return f"({_group(kids[0])} ** {_group(kids[1])})"
    if tag in ("msub", "msubsup"):
        return _name(node)
    if tag == "mtable":
        pairs = []
        for tr in kids:
            expr, cond = (_elements(td)[0] for td in _elements(tr))
            pairs.append(f"({read(expr)}, {'V(1.0)' if cond.tagName == 'mtext' else _row(_elements(cond)[1:])})")
        return f"piecewise({', '.join(pairs)})"
    raise ValueError(f"unexpected MathML element <{tag}>")


def evaluate(markup: str, values: dict[str, object]) -> np.ndarray:
    """The value of the MathML `markup` (one expression) for the named `values`."""
    node = parseString(f"<math>{markup}</math>").documentElement
    source = _resolve(read(node), values)
    env = namespace()
    env.update({k: V(v) for k, v in values.items()})
    return V(eval(source, {"__builtins__": {}}, env)).v  # the test's own printer output, in a closed namespace

