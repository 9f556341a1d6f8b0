"""`nncompile report`: the page's parts checked against what they show, without a browser.

The code beside each formula comes from the backends' own record of where each IR op went
(checked line by line against the lowering), the curves read back to the history, the
confusion matrix to the accuracy the trainer reports, and the page asks for nothing outside itself.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from nncompile import data, nn
from nncompile.backends.numpy import lowering as numpy_lowering
from nncompile.backends.templating import comment_text, commented
from nncompile.cli import main
from nncompile.derive.backprop import derive
from nncompile.dsl.modelfile import load_model
from nncompile.explain.formulas import Formulas
from nncompile.explain.render import Row, document
from nncompile.report.charts import log_ticks, nice_ticks
from nncompile.report.codemap import FUNCTION, code_map, ops_for
from nncompile.report.confusion import confusion_matrix, labels_of
from nncompile.report.page import build, page_html, report_html
from nncompile.report.runview import RunRecord, run_view

from report_html import parse

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("digits", "xor", "kinks", "mish", "xor221", "resmlp", "digits_regularized")


def _derivation(name: str) -> object:
    model, _ = load_model(str(ROOT / "examples" / f"{name}.py"))
    return model, derive(model)


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("nncompile")
    cmd = [exe] if exe else [sys.executable, "-m", "nncompile.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)


# -- where each op's code is ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["digits", "kinks"])
@pytest.mark.parametrize("options", [{}, {"fold_bias": False, "optimize": False}])
def test_the_numpy_source_map_points_at_exactly_each_ops_lines(name: str, options: dict) -> None:
    _, derivation = _derivation(name)
    program = derivation.program
    text, spans = numpy_lowering.source_map(program, **options)
    assert text == numpy_lowering.render_module(program, **options)      # the map changes nothing
    lines = text.split("\n")
    ctx = numpy_lowering.context(program, **options)
    for fn in ctx["functions"]:
        ops = program.functions[fn["name"]].ops
        assert [i for i, _, _ in spans[fn["name"]]] == list(range(len(ops)))
        for (index, first, last), block in zip(spans[fn["name"]], fn["blocks"]):
            op = ops[index]
            assert lines[first - 1].strip() == f"# {comment_text(f'{op.stage}: {op.formula}')}"
            assert [line.strip() for line in lines[first:last]] == [commented(line, 8).strip()
                                                                   for line in block["lines"]]
            assert last - first == len(block["lines"])


def test_every_cuda_launch_names_the_ops_it_computes() -> None:
    _, derivation = _derivation("kinks")
    program = derivation.program
    ops = program.functions[FUNCTION].ops
    cmap = code_map(program)
    covered = {i for launch in cmap.launches for i in launch.ops}
    assert covered == set(range(len(ops)))
    for launch in cmap.launches:
        if launch.kernel:                       # a kernel's formula comments are its ops' headers
            headers = {" ".join(f"{ops[i].stage}: {ops[i].formula}".split()) for i in launch.ops}
            assert all(any(f.startswith(h) for h in headers) for f in launch.formulas)
            assert launch.kernel in cmap.kernels and f"void {launch.kernel}(" in cmap.kernels[launch.kernel]
        else:
            assert len(launch.ops) == 1 and ops[launch.ops[0]].kind in ("Linear", "LinearGrad", "MatMulT")


def _row_ops(name: str) -> tuple[object, dict[str, tuple[int, ...]], list]:
    _, derivation = _derivation(name)
    program = derivation.program
    doc = document(Formulas.of(derivation))
    rows = [item for s in doc.sections for item in s.items if isinstance(item, Row)]
    named = {n for r in rows for n in r.writes}
    return program, {f"{r.label}:{r.writes}": ops_for(program, FUNCTION, r.writes, named) for r in rows}, rows


def test_each_digits_formula_gets_the_ops_that_compute_it() -> None:
    program, by_row, _ = _row_ops("digits")
    ops = program.functions[FUNCTION].ops
    formulas = lambda key: [ops[i].formula.split("   ")[0] for i in by_row[key]]  # noqa: E731
    assert formulas("forward:('p2',)") == ["max_z2 = rowmax(z2)", "p2 = exp(z2 - max_z2)", "sum_z2 = rowsum(p2)",
                                          "p2 = p2/sum_z2"]
    assert formulas("loss:('L',)") == ["L_lse = sum of logsumexp(z2) over rows", "L_tz = sum(T*z2)",
                                       "L = (L_lse - L_tz)/N"]
    assert formulas("delta:('da1', 'dz1')") == ["da1 = dz2 @ W2.T", "dz1 = da1*(1 - a1**2)"]
    assert formulas("derivative:('dz1',)") == ["dz1 = da1*(1 - a1**2)"]
    assert by_row["gradient:('dW2',)"] == by_row["gradient:('db2',)"]
    assert formulas("gradient:('dW1',)") == ["dW1 = X.T @ dz1;  db1 = sum_rows(dz1)"]


def test_penalties_go_with_their_gradient_and_the_loss() -> None:
    program, by_row, _ = _row_ops("kinks")
    ops = program.functions[FUNCTION].ops
    grad = [ops[i].formula for i in by_row["gradient:('dW1',)"]]
    assert grad == ["dW1 = X.T @ dz1;  db1 = sum_rows(dz1)", "dW1 += 0.0001*W1   [l2 penalty]",
                    "dW1 += 0.001*sign(W1)   [l1 penalty]"]
    loss = {ops[i].outputs[0] for i in by_row["loss:('L',)"]}
    assert loss == {"L_data", "l2_W1", "l2_W2", "l2_W3", "l1_W1", "l1_W2", "l1_W3", "L"}


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_op_has_a_formula_and_every_formula_its_code(name: str) -> None:
    program, by_row, rows = _row_ops(name)
    ops = program.functions[FUNCTION].ops
    assert all(by_row[f"{r.label}:{r.writes}"] for r in rows if r.writes)
    assert set().union(*by_row.values()) == set(range(len(ops)))
    assert {r.label for r in rows if not r.writes} <= {"step by step"}   # a derivation the code does not take
    for r in (r for r in rows if r.writes):    # each op writes a buffer the row names, or feeds one that does
        chosen = by_row[f"{r.label}:{r.writes}"]
        assert any(set(ops[i].outputs) & set(r.writes) for i in chosen)


def test_page_rows_link_to_their_own_lines() -> None:
    model, derivation = _derivation("digits")
    report = build(model, derivation)
    lines = {line.number: line for line in report.code.lines}
    rows = [item for s in report.sections for item in s.items if item.is_row]
    assert all(item.math.startswith("<math><mrow>") for item in rows)
    for section in report.sections:
        for item in section.items:
            if item.is_row:
                for first, last in item.spans:
                    assert {lines[n].op for n in range(first, last + 1)} <= set(item.ops)
        assert all(line.op in section.ops for line in section.code if not line.is_gap)
    dense1 = next(s for s in report.sections if s.title.startswith("dense1"))
    assert any(re.search(r"np.square\(a1, s\d+\)", line.code) for line in dense1.code if not line.is_gap)
    assert {s.kernel for s in dense1.launches if s.kernel} == {name for name, _ in dense1.kernels}


# -- the page ---------------------------------------------------------------------------------

def _external_references(html: str) -> list[str]:
    tree = parse(html)
    found = []
    for el in tree.iter():
        for key in ("src", "href", "xlink:href", "action", "poster", "data"):
            value = el.attrs.get(key)
            if value is not None and not value.startswith("#") and not value.startswith("data:"):
                found.append(f"<{el.tag} {key}={value}>")
    found += re.findall(r"url\((?!#)[^)]*\)", html)
    found += [u for u in re.findall(r"(?:https?:)?//[\w.-]+[^\s\"'<>]*", html) if u != "http://www.w3.org/2000/svg"]
    found += re.findall(r"@import|@font-face|<link|<iframe|fetch\(|XMLHttpRequest|import\(", html)
    return found


def test_the_page_asks_for_nothing_outside_itself_and_is_deterministic(digits_prog: nc.CompiledProgram) -> None:
    html = report_html(digits_prog)
    assert _external_references(html) == []
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert html == report_html(digits_prog)
    tree = parse(html)
    assert len(tree.find_all("math")) >= 15 and tree.find("svg", class_="network")
    planted = html.replace("</style>", "@import url(https://cdn.example.org/x.css);</style>", 1)
    assert _external_references(planted)


def _points(tree: object, chart: str, series: str) -> list[tuple[float, float]]:
    figure = tree.find("figure", id=chart)
    line = next(p for p in figure.iter("polyline") if p.attrs["data-series"] == series)
    return [tuple(map(float, pair.split(","))) for pair in line.attrs["points"].split()]


def test_curves_read_back_to_the_history(digits_prog: nc.CompiledProgram) -> None:
    ds = data.load("digits")
    result = nc.train(digits_prog, ds.X[:600], ds.y[:600], epochs=12, val_split=0.2, diagnostics=True,
                      schedule="cosine", lr=0.3)
    view = run_view(RunRecord.of(result))
    tree = parse(report_html(digits_prog, RunRecord.of(result)))
    charts = {c.id: c for c in view.charts}
    for chart, series, key in (("chart-loss", "training", "loss"), ("chart-loss", "validation", "val_loss"),
                               ("chart-metric", "validation", "val_accuracy"), ("chart-lr", "learning rate", "lr")):
        points = _points(tree, chart, series)
        scale_x, scale_y = charts[chart].xscale, charts[chart].yscale
        assert [round(scale_x.inverse(x)) for x, _ in points] == [r["epoch"] for r in result.history]
        read = [scale_y.inverse(y) for _, y in points]
        expected = [r[key] for r in result.history]
        chart_view = charts[chart]                 # on the page: inside the plot box, larger values higher up
        assert all(chart_view.left <= x <= chart_view.right and chart_view.top <= y <= chart_view.bottom
                   for x, y in points)
        assert all(x0 < x1 for (x0, _), (x1, _) in zip(points, points[1:]))
        high, low = int(np.argmax(expected)), int(np.argmin(expected))
        assert expected[high] == expected[low] or points[high][1] < points[low][1]
        pixels = abs(scale_y.start - scale_y.end)
        for got, want in zip(read, expected):     # points are written to 0.1 px: within 0.05 px of the value
            if scale_y.log:
                span = math.log10(scale_y.hi / scale_y.lo)
                assert math.log10(got) == pytest.approx(math.log10(want), abs=span * 0.051 / pixels)
            else:
                assert got == pytest.approx(want, abs=abs(scale_y.hi - scale_y.lo) * 0.051 / pixels)
    lr = [r["lr"] for r in result.history]
    assert lr[0] == 0.3 and lr[-1] < lr[0]                    # the cosine schedule is what is drawn


def test_the_heat_map_shows_every_check(digits_prog: nc.CompiledProgram) -> None:
    ds = data.load("digits")
    result = nc.train(digits_prog, ds.X[:300], ds.y[:300], epochs=5, diagnostics=True)
    heat = run_view(RunRecord.of(result)).heatmap
    checks = [r for r in result.history if "diagnostics" in r]
    assert heat.epochs == tuple(r["epoch"] for r in checks)
    assert len(heat.cells) == len(checks) * 4                 # dense1: saturated, linear, norm; dense2: norm
    cell = next(c for c in heat.cells if "dense2: gradient norm" in c.title and c.title.startswith("epoch 1,"))
    assert cell.title.endswith(f"{checks[0]['diagnostics']['dense2']['grad_norm']:.3g}")


def test_warnings_are_told_once_with_the_epochs_they_lasted() -> None:
    def record(epoch: int, problems: list[str]) -> dict:
        return {"epoch": epoch, "loss": 1.0, "updates": 1, "lr": 0.1, "diagnostics": {"dense1": {"grad_norm": 1.0}},
                "warnings": [{"layer": "dense1", "problem": p, "message": f"dense1 is {p}"} for p in problems]}
    history = [record(1, []), record(2, ["saturated"]), record(3, ["saturated", "dead"]), record(4, ["dead"])]
    views = run_view(RunRecord(history, None, ["dense1 is saturated", "gradients explode somewhere"])).warnings
    told = [(w.message, w.first, w.last, w.active) for w in views]
    assert told == [("dense1 is saturated", 2, 3, False), ("dense1 is dead", 3, 4, True),
                    ("gradients explode somewhere", None, None, False)]


def test_ticks_are_round_numbers_covering_the_data() -> None:
    assert nice_ticks(0.03, 1.87) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert nice_ticks(0.9, 0.9)[0] < 0.9 < nice_ticks(0.9, 0.9)[-1]
    assert log_ticks(0.004, 2.3) == [0.001, 0.01, 0.1, 1.0, 10.0]
    assert log_ticks(0.2, 3.0) == [0.2, 0.5, 1.0, 2.0, 5.0]


def test_confusion_matrix_counts() -> None:
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    counts = confusion_matrix(true, pred, 4)
    for i in range(4):
        for j in range(4):
            assert counts[i, j] == sum(1 for t, p in zip(true, pred) if t == i and p == j)
    onehot = np.eye(4)[true]
    assert (labels_of(onehot, 4) == true).all() and (labels_of(true, 4) == true).all()
    assert (labels_of(np.array([[0.0], [1.0], [1.0]]), 2) == [0, 1, 1]).all()


# -- the command line -----------------------------------------------------------------------

def test_report_after_a_digits_run_is_small_and_its_confusion_matrix_is_the_test_accuracy(tmp_path: Path) -> None:
    page = tmp_path / "digits.html"
    run = _cli("run", str(ROOT / "examples" / "digits.py"), "--data", "digits", "--epochs", "30", "--val-split",
               "0.1", "--json", "--report", str(page))
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)["summary"]
    html = page.read_text(encoding="utf-8")
    assert page.stat().st_size < 1_000_000 and _external_references(html) == []
    tree = parse(html)
    table = tree.find("table", class_="cm-table")
    cells = [[int(td.all_text) for td in tr.find_all("td")[:-1]] for tr in table.find("tbody").find_all("tr")]
    counts = np.array(cells)
    assert counts.shape == (10, 10) and counts.sum() == summary["test_rows"]
    assert np.trace(counts) / counts.sum() == pytest.approx(summary["test_accuracy"], abs=1e-12)
    assert "final weights" not in html and "training run" in html.lower()
    assert len(_points(tree, "chart-loss", "training")) == 30


def test_report_command_with_and_without_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    xor = str(ROOT / "examples" / "xor.py")
    assert main(["report", xor, "-o", str(tmp_path / "a.html")]) == 0
    assert "wrote the report to" in capsys.readouterr().err
    plain = (tmp_path / "a.html").read_text(encoding="utf-8")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.html").stat().st_mode & 0o777 == 0o666 & ~mask      # a page to share, not a secret
    assert 'id="derivation"' in plain and 'id="run"' not in plain
    assert main(["report", xor, "--data", "xor", "--epochs", "300", "--quiet", "-o", str(tmp_path / "b.html")]) == 0
    trained = (tmp_path / "b.html").read_text(encoding="utf-8")
    assert 'id="run"' in trained and "binary accuracy per epoch" in trained and "cm-table" in trained


def test_derive_format_html(capsys: pytest.CaptureFixture) -> None:
    kinks = str(ROOT / "examples" / "kinks.py")
    assert main(["derive", kinks, "--format", "html", "--layer", "dense2"]) == 0
    tree = parse(capsys.readouterr().out)
    titles = [h.all_text for h in tree.iter("h3")]
    assert titles == ["dense2: 4 -> 3, leaky_relu"]
    assert tree.find_all("mtable") and tree.find_all("div", class_="ln")
    assert main(["derive", str(ROOT / "examples" / "xor221.py"), "--scalar", "--format", "html"]) == 0
    scalar = parse(capsys.readouterr().out)
    assert len(scalar.find_all("math")) > 20 and not scalar.find_all("div", class_="ln")


@pytest.mark.parametrize("args, message", [
    (["report", "{xor}", "-o", "/nonexistent-folder/r.html"], "cannot write /nonexistent-folder/r.html"),
    (["derive", "{xor}", "--format", "html", "--layer", "dense9"], "no layer 'dense9'"),
    (["report", "{xor}", "--batch-size", "0", "-o", "{tmp}/r.html"], "--batch-size must be a positive integer"),
    (["report", "{xor}", "--epochs", "5", "-o", "{tmp}/r.html"], "--epochs is a training flag: give --data"),
])
def test_report_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str],
                                   message: str) -> None:
    args = [a.format(xor=str(ROOT / "examples" / "xor.py"), tmp=tmp_path) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_diverging_run_still_writes_its_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "linear.py"
    model.write_text("from nncompile import nn\nmodel = nn.Sequential(nn.Dense(1), input_dim=1, loss=nn.MSE(), "
                     "name='linear')\n", encoding="utf-8")
    X = np.linspace(-1, 1, 20).reshape(-1, 1) * 100
    np.savez(tmp_path / "d.npz", X=X, y=3 * X[:, 0])
    page = tmp_path / "r.html"
    code = main(["run", str(model), "--data", str(tmp_path / "d.npz"), "--mode", "gd", "--epochs", "500", "--lr",
                 "10", "--test-split", "0", "--quiet", "--report", str(page)])
    assert code == 1
    html = page.read_text(encoding="utf-8")
    assert "training diverged" in html and 'id="run"' in html


def test_jupyter_shows_the_program_and_the_training_result(digits_prog: nc.CompiledProgram) -> None:
    fragment = digits_prog._repr_html_()
    assert fragment.startswith('<div class="ncr ncr-fragment">') and "<html" not in fragment
    tree = parse(fragment)
    assert tree.find("svg", class_="network") and len(tree.find_all("math")) > 10
    ds = data.load("digits")
    result = nc.train(digits_prog, ds.X[:200], ds.y[:200], epochs=3)
    shown = parse(result._repr_html_())
    assert len(_points(shown, "chart-loss", "training")) == 3 and not shown.find_all("math")


def test_a_float32_cuda_program_reports_its_backend_without_a_gpu() -> None:
    model = nn.Sequential(nn.Dense(4), nn.ReLU(), nn.Dense(1), input_dim=3, loss=nn.MSE(), name="tiny")
    report = build(model, derive(model, "float32"), backend="cuda")
    assert ("backend", "cuda, float32") in report.facts
    assert any(launch.kernel for launch in report.code.launches)
    assert "__global__" in "".join(report.code.kernels.values())
    assert page_html(report).count("<math") >= 8
