"""Hostile input: names and formulas are validated or escaped, never evaluated; fuzzing finds only clear errors.

Every user string that reaches generated source is tried here: model, layer, activation,
loss and optimizer names, formulas, and the file name of a generated script.  An audit
hook (PEP 578) watches for side effects while the parser and the DSL run: no exec or
eval, no process, no socket, no file opened for writing.
"""
from __future__ import annotations

import ast
import io
import subprocess
import sys
import time
import tokenize
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nncompile as nc
from nncompile import FormulaError, ModelError, NncompileError, nn
from nncompile.symbolic import calculus
from nncompile.symbolic.parse import check_identifier, to_expr
from nncompile.generate import standalone
from nncompile.symbolic.rules import ElementwiseFunction, LossFunction, X, make_optimizer

from strategies import examples

# -- a side-effect detector -------------------------------------------------------------

_FORBIDDEN_PREFIXES = ("exec", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.kill",
                       "subprocess.", "socket.", "ctypes.", "os.remove", "os.unlink", "os.rename",
                       "os.rmdir", "os.mkdir", "shutil.", "builtins.input", "urllib.", "http.")
_watch: dict[str, list] = {"events": [], "active": []}


def _audit(event: str, args: tuple) -> None:
    if not _watch["active"]:
        return
    writing = event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+")
    if writing or event.startswith(_FORBIDDEN_PREFIXES):
        _watch["events"].append((event, repr(args)[:120]))


sys.addaudithook(_audit)


@contextmanager
def no_side_effects() -> Iterator[None]:
    """Fail if anything inside runs code (exec/eval), starts a process, opens a socket or writes a file."""
    _watch["events"].clear()
    _watch["active"].append(True)
    try:
        yield
    finally:
        _watch["active"].pop()
    assert not _watch["events"], f"side effects: {_watch['events'][:5]}"


def _one_clear_line(exc: BaseException) -> None:
    text = str(exc)
    assert isinstance(exc, NncompileError), f"{type(exc).__name__}: {text}"
    assert text and "\n" not in text and "\r" not in text and len(text) <= 400, repr(text)
    assert "Traceback" not in text


# -- names --------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "x; import os", "__import__('os').system('true')", "a\nimport os", "a\rb", "a'b", 'a"b', "a\\", "a.b",
    "../../etc/passwd", "a/b", "a b", "", " ", "1abc", "é", "ｘ", "x" * 65, "a-b", "#", "${x}", "{{ x }}",
    "{% raw %}", "a\x00b", "a\u2028b", "class", "lambda", "None", "True", "import", "def", "\t", "a;b",
    1, None, b"name", ["a"], 2.5,
]


def _slots_and_names() -> list[tuple[str, object]]:
    """Every name slot with every hostile name, except None/"" where they mean "the default name"
    and a list where a dict key is needed."""
    pairs = []
    for slot in ("model", "dense", "activation", "loss", "optimizer", "state", "hyper"):
        for name in HOSTILE_NAMES:
            default = (name is None and slot in ("dense", "activation", "loss")
                       or name == "" and slot in ("activation", "loss"))
            if not default and not (isinstance(name, list) and slot in ("state", "hyper")):
                pairs.append((slot, name))
    return pairs


@pytest.mark.parametrize("slot,name", _slots_and_names(), ids=repr)
def test_hostile_names_are_refused_in_one_line(slot: str, name: object) -> None:
    build = {
        "model": lambda: nn.Sequential(nn.Dense(2), input_dim=2, loss=nn.MSE(), name=name),
        "dense": lambda: nn.Dense(2, name=name),
        "activation": lambda: nn.Activation("x", name=name),
        "loss": lambda: nn.Loss("(y - t)^2", name=name),
        "optimizer": lambda: make_optimizer(name, {"p": "p - lr*g"}),
        "state": lambda: make_optimizer("opt", {name: "g", "p": "p - lr*g"}),
        "hyper": lambda: make_optimizer("opt", {"p": "p - lr*g"}, {name: 0.5}),
    }[slot]
    with no_side_effects(), pytest.raises((ModelError, FormulaError)) as info:
        build()
    _one_clear_line(info.value)


@pytest.mark.parametrize("name", ["match", "case", "type", "_", "A_1", "x" * 64])
def test_soft_keywords_and_plain_identifiers_are_names(name: str) -> None:
    assert check_identifier(name, "name") == name


def test_names_changed_after_declaration_are_checked_again_at_compile() -> None:
    model = nn.Sequential(nn.Dense(2), nn.Tanh(), nn.Dense(1), input_dim=2, loss=nn.MSE(), name="ok")
    model.name = "x\nimport os"
    with pytest.raises(ModelError, match="model name"):
        nc.compile(model)
    model.name = "ok"
    model.layers[0].name = "a'b"
    with pytest.raises(ModelError, match="layer name"):
        nc.compile(model)


def test_registry_objects_with_bad_names_are_refused_by_the_model() -> None:
    evil = ElementwiseFunction("x\nimport os", X**2)
    with pytest.raises(ModelError, match="activation name"):
        nn.Sequential(nn.Dense(2), nn.Activation(evil), nn.Dense(1), input_dim=2, loss=nn.MSE())
    with pytest.raises(ModelError, match="loss name"):
        nn.Sequential(nn.Dense(1), input_dim=2, loss=nn.Loss(LossFunction("a'b", sp.Symbol("y", real=True))))


def _code_tokens(source: str) -> list[str]:
    """Every token of Python source that is code: not a comment, not a string literal."""
    skip = {tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER}
    return [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in skip]


def _unusual(names: tuple[str, str, str, str, str]) -> nn.Sequential:
    dense1, act, dense2, loss, model = names
    return nn.Sequential(nn.Dense(3, name=dense1), nn.Activation("x*sigmoid(x)", name=act), nn.Dense(1, name=dense2),
                         input_dim=2, loss=nn.Loss("(y - t)^2", name=loss), name=model)


def test_valid_but_unusual_names_reach_code_only_as_string_literals() -> None:
    """Renaming every layer changes string literals and comments only, never a code token."""
    model = _unusual(("case", "match", "type", "_", "print"))
    text = standalone(model, filename="t.py")
    ast.parse(text)
    assert _code_tokens(text) == _code_tokens(standalone(_unusual(("a", "b", "c", "d", "e")), filename="t.py"))
    prog = nc.compile(model)
    loss, grads = prog.loss_and_grad(prog.init_params(0), np.ones((2, 2)), np.ones(2))
    assert np.isfinite(loss) and set(grads) == {"case.W", "case.b", "type.W", "type.b"}


EVIL_FILENAMES = ["evil\nimport os; os.system('touch PWNED')\n#.py", "a\rimport os\r.py", "x\x00.py",
                  "name\u2028import os.py", "{{ 1 }}.py", "'''.py", '""".py']


@pytest.mark.parametrize("filename", EVIL_FILENAMES, ids=repr)
def test_file_names_in_generated_scripts_are_escaped(filename: str, tmp_path: Path) -> None:
    model = nn.Sequential(nn.Dense(2), nn.Tanh(), nn.Dense(1), input_dim=2, loss=nn.MSE(), name="f")
    text = standalone(model, filename=filename)
    assert text == standalone(model, filename="SAFE").replace("SAFE", _escaped(filename), 1)
    assert "PWNED" not in " ".join(_code_tokens(text)) and "\x00" not in text
    script = tmp_path / "script.py"
    script.write_text(text, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "PWNED").exists()


def _escaped(filename: str) -> str:
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in filename)


def test_cli_output_file_name_with_a_newline(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nncompile.cli import main
    out = tmp_path / "train\nimport os.py"
    root = Path(__file__).resolve().parent.parent
    assert main(["generate", str(root / "examples" / "xor.py"), "-o", str(out)]) == 0
    text = out.read_text()
    assert "# Standalone" in text and "python train\\nimport os.py --data" in text
    ast.parse(text)


def test_cli_errors_stay_on_one_line_whatever_the_file_name(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "nncompile.cli", "run", "missing\nimport os.py", "--data", "xor"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == "nncompile: error: model file missing\\nimport os.py does not exist\n"


# -- formulas ------------------------------------------------------------------------------

HOSTILE_FORMULAS = [
    "__import__('os').system('touch PWNED')", "x.__class__.__mro__", "().__class__.__bases__[0]",
    "[].__class__", "getattr(x, 'real')", "globals()", "locals()", "vars()", "eval('1')", "exec('1')",
    "compile('1', '', 'eval')", "open('PWNED', 'w')", "__builtins__", "x if 1 else 2", "lambda: 0",
    "(lambda x: x)(x)", "{}", "[]", "'a'", "b'a'", "x[0]", "x[::1]", "*x", "x == 1", "x < 1", "x and 1",
    "not x", "~x", "x | 1", "x & 1", "x @ x", "x % 2", "x // 2", "x << 1", "(y := 1)", "f'{x}'",
    "sin(x, y=1)", "exp(**{})", "exp(*[x])", "x; import os", "x\nimport os", "import os", "yield x",
    "await x", "9**9**9**9", "10**10**10", "((999999999999999**64)**64)**64", "((x+1)**64)**64", "x**65",
    "x**-65", "x**(10**10)",
    "2**2**2**2**2**2", "1e309", "1e308*1e308*x", "exp(1000)", "exp(exp(exp(10)))", "1" * 40,
    "-" * 1999 + "x", "(" * 300 + "x" + ")" * 300, "x" + "+x" * 1000, "x\x00", "", "   ", "\n", "x**1j",
    "1j", "True*x", "None", "...", "(x, x)", "x, x", "unknown(x)", "z", "X", "Sin(x)", "sympify('x')",
    "Symbol('x')", "S.One", "**".join(["x"] * 40), "tanh(" * 40 + "x" + ")" * 40,
    "(sin(x) + cos(x) + x + 1)**64*(x+1)**64", "log(0)", "1/0", "x/(x - x)", "sqrt(-1)", "log(-1)",
    "heaviside(x, 1)", "max()", "abs(x, x)", "\\N{GREEK SMALL LETTER ALPHA}", "x²", "√x", "α*x",
]


@pytest.mark.parametrize("text", HOSTILE_FORMULAS, ids=lambda t: repr(t[:40]))
def test_hostile_formulas_are_refused_in_one_line(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with no_side_effects(), pytest.raises(FormulaError) as info:
        nn.Activation(text, name="evil")
    assert time.perf_counter() - start < 5.0, "refusing a formula must be quick"
    _one_clear_line(info.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("build,message", [
    (lambda x: (x + 1) ** 4096, "exponent 4096"),
    (lambda x: x ** 40 * (x + 1) ** 40, "polynomial degree 80"),
    (lambda x: x * sp.Float("1e400"), "not a finite float64"),
    (lambda x: x * sp.exp(800), "not a finite float64"),
    (lambda x: sum(x ** (i % 7) * sp.sin(i * x) for i in range(300)), "too large"),
    (lambda x: x * sp.Integral(x, x), "cannot be compiled"),
    (lambda x: sp.Function("f")(x), "cannot be compiled"),
])
def test_limits_hold_for_sympy_expressions_and_callables(build: object, message: str) -> None:
    with pytest.raises(FormulaError, match=message) as info:
        nn.Activation(build, name="big")
    _one_clear_line(info.value)


def test_a_power_of_a_long_sum_compiles_quickly() -> None:
    """Within the limits, nothing expands into thousands of terms (the compile stays fast)."""
    start = time.perf_counter()
    act = nn.Activation("(sin(x) + cos(x) + tanh(x) + atan(x) + x + 1)^12", name="wide")  # 6188 terms expanded
    local = calculus.activation(act.function)
    assert time.perf_counter() - start < 10.0
    expected = sp.diff(act.function.expr, X)
    for value in (-1.3, 0.2, 0.9):
        assert float(local.evaluated.subs(X, value)) == pytest.approx(float(expected.subs(X, value)), rel=1e-10)


# -- fuzzing -------------------------------------------------------------------------------

FUZZ = dict(deadline=2000, suppress_health_check=[HealthCheck.too_slow])
_TOKENS = ["x", "y", "t", "1", "2.5", "0", "64", "65", "1e308", "+", "-", "*", "/", "**", "^", "(", ")", ",",
           "exp", "log", "sqrt", "tanh", "sin", "max", "min", "abs", "heaviside", "sigmoid", "softplus", "log1p",
           "pi", "e", ".", "[", "]", "__import__", "'os'", "lambda", ":", "if", "else", "=", "==", "×", "−", "÷",
           "·", " ", "\n", "\\", "@", "%", "~", "!", "#", "{", "}"]
token_soup = st.lists(st.sampled_from(_TOKENS), max_size=30).map("".join)


def _parse_or_refuse(text: str, names: tuple[str, ...]) -> None:
    try:
        with no_side_effects():
            expr = to_expr(text, names, "fuzz")
    except FormulaError as exc:
        _one_clear_line(exc)
        return
    assert isinstance(expr, sp.Expr)
    assert {s.name for s in expr.free_symbols} <= set(names)


@settings(max_examples=examples(300), **FUZZ)
@given(text=st.text(max_size=80))
def test_fuzz_parser_with_arbitrary_text(text: str) -> None:
    _parse_or_refuse(text, ("x",))


@settings(max_examples=examples(300), **FUZZ)
@given(text=token_soup)
def test_fuzz_parser_with_formula_tokens(text: str) -> None:
    _parse_or_refuse(text, ("y", "t"))


@settings(max_examples=examples(40), deadline=20000, suppress_health_check=[HealthCheck.too_slow])
@given(text=token_soup.filter(lambda s: "x" in s))
def test_fuzz_accepted_formulas_compile(text: str) -> None:
    """Whatever the parser accepts compiles (derivation, printing, import) without hanging."""
    try:
        act = nn.Activation(text, name="fuzz")
    except FormulaError as exc:
        _one_clear_line(exc)
        return
    prog = nc.compile(nn.Sequential(nn.Dense(2), act, nn.Dense(1), input_dim=1, loss=nn.MSE(), name="fuzz"))
    loss, grads = prog.loss_and_grad(prog.init_params(0), np.array([[0.3], [1.7]]), np.zeros(2))
    assert set(grads) == {"dense1.W", "dense1.b", "dense2.W", "dense2.b"}


anything = st.one_of(st.text(max_size=20), st.integers(-10, 10**6), st.floats(allow_nan=True), st.none(),
                     st.booleans(), st.binary(max_size=5), st.lists(st.integers(), max_size=2))


@settings(max_examples=examples(200), **FUZZ)
@given(name=anything, units=anything, input_dim=anything, l1=anything, alpha=anything, formula=anything)
def test_fuzz_dsl_arguments(name: object, units: object, input_dim: object, l1: object, alpha: object,
                            formula: object) -> None:
    """Any values in any slot of the DSL: a model, or one clear ModelError/FormulaError."""
    with no_side_effects():
        try:
            model = nn.Sequential(nn.Dense(units, name=name), nn.LeakyReLU(alpha), nn.Activation(formula, name="f"),
                                  nn.Dense(1), input_dim=input_dim, loss=nn.MSE(), l1=l1, name="fuzz")
        except (ModelError, FormulaError) as exc:
            _one_clear_line(exc)
            return
    assert isinstance(model.layers[0].units, int) and model.layers[0].units >= 1
    check_identifier(model.layers[0].name, "name")


# -- numbers: no path of nncompile parses a string with SymPy ------------------------------

NUMBERS = [2.0, 1.0, 0.0, 64.0, -2.0, -0.5, 1e300, -1e300, 1e-300, 5e-324, 1e16, 0.1]


@contextmanager
def no_sympy_string_parsing() -> Iterator[None]:
    """Fail if nncompile's own code calls sympify on a string, parse_expr or nsimplify (each can reach
    SymPy's string parser, i.e. eval).  The real functions run; a spy in front of each notes who called."""
    package = str(Path(nc.__file__).parent)
    calls: list[str] = []

    def spy(name: str, real: object) -> object:
        def watched(*args: object, **kwargs: object) -> object:
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(package) and (name != "sympify" or (args and isinstance(args[0], str))):
                calls.append(f"{name}{args[:1]!r} from {caller}")
            return real(*args, **kwargs)
        return watched

    names = ("sympify", "nsimplify", "parse_expr", "S")
    saved = {n: getattr(sp, n) for n in names}
    for n in ("sympify", "nsimplify", "parse_expr"):
        setattr(sp, n, spy(n, saved[n]))
    try:
        yield
    finally:
        for n, real in saved.items():
            setattr(sp, n, real)
    assert not calls, calls[:3]


def test_no_module_calls_a_string_parsing_sympy_function() -> None:
    """Static audit of the package: no nsimplify, parse_expr or S(...), and every sympify is strict
    (refuses strings)."""
    found = []
    for path in Path(nc.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            strict = any(k.arg == "strict" and getattr(k.value, "value", None) is True for k in node.keywords)
            if name in ("nsimplify", "parse_expr", "S") or (name == "sympify" and not strict):
                found.append(f"{path.name}:{node.lineno} {name}")
    assert not found, found


def _numeric_parts(v: float) -> dict[str, object]:
    """Every DSL constructor that takes a number (or a formula built from one), given `v`."""
    f = sp.Float(v)
    return {
        "LeakyReLU": lambda: nn.LeakyReLU(v),
        "Dense": lambda: nn.Dense(v),
        "input_dim": lambda: nn.Sequential(nn.Dense(2), input_dim=v, loss=nn.MSE()),
        "l1": lambda: nn.Sequential(nn.Dense(2), input_dim=2, loss=nn.MSE(), l1=v),
        "l2": lambda: nn.Sequential(nn.Dense(2), input_dim=2, loss=nn.MSE(), l2=v),
        "Activation(number)": lambda: nn.Activation(v, name="const"),
        "Activation(callable)": lambda: nn.Activation(lambda x: sp.Max(x, f * x) + f * sp.tanh(x), name="m"),
        "Activation(expr)": lambda: nn.Activation(f * sp.Symbol("x") ** 2 + sp.Abs(sp.Symbol("x")), name="e"),
        "Loss(callable)": lambda: nn.Loss(lambda y, t: f * (y - t) ** 2 + sp.Abs(y - t), name="w"),
        "Loss(number)": lambda: nn.Loss(v, name="flat"),
        "Optimizer(hyper)": lambda: nc.Optimizer("o", [("p", "p - lr*h*g")], {"h": v}),
        "Optimizer(expr)": lambda: nc.Optimizer("o2", [("p", sp.Symbol("p") - f * sp.Symbol("lr") * sp.Symbol("g"))]),
    }


@pytest.mark.parametrize("value", NUMBERS, ids=repr)
def test_numbers_in_every_constructor_are_never_parsed_as_text(value: float) -> None:
    """Whole-number, huge, tiny and negative floats in every constructor: a part or one clear line,
    nothing executed, and no SymPy string parsing called by nncompile while declaring, then while
    deriving, explaining and rendering one model made of every part that was accepted
    (nn.LeakyReLU(2.0) once reached sp.nsimplify)."""
    from nncompile.backends import numpy as numpy_backend
    from nncompile.derive.backprop import derive
    from nncompile.explain.formulas import Formulas
    made = {}
    for what, build in _numeric_parts(value).items():
        with no_side_effects(), no_sympy_string_parsing():
            try:
                made[what] = build()
            except (ModelError, FormulaError) as exc:
                _one_clear_line(exc)
    layers = [nn.Dense(3)]
    for what in ("LeakyReLU", "Activation(callable)", "Activation(expr)", "Activation(number)"):
        if what in made:
            layers += [made[what], nn.Dense(3)]
    penalties = {k: value for k in ("l1", "l2") if k in made}
    loss = made.get("Loss(callable)", nn.MSE())
    optimizers = [made[k] for k in ("Optimizer(hyper)", "Optimizer(expr)") if k in made]
    with no_sympy_string_parsing():
        try:
            model = nn.Sequential(*layers, nn.Dense(1), input_dim=2, loss=loss, name="numbers", **penalties)
            derivation = derive(model, "float64", optimizers)
        except NncompileError as exc:
            _one_clear_line(exc)
            return
        Formulas.of(derivation).render("text", None, None, None, False)
        numpy_backend.render_module(derivation.program)
