"""What each `nncompile` subcommand does; `cli` parses the command line and reports errors."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .. import data as datasets
from .. import jit
from ..dsl.modelfile import load_model
from ..errors import ModelError
from .errors import CliError


def derive(args: argparse.Namespace) -> int:
    from ..derive.backprop import derive as run_derivation
    from ..explain.formulas import Formulas
    model, _ = load_model(args.model)
    fmt = args.format or ("unicode" if sys.stdout.isatty() else "text")
    if args.standalone and fmt != "latex":
        raise CliError("--standalone makes a LaTeX document: use it with --format latex")
    formulas = Formulas.of(run_derivation(model))
    if fmt == "html":
        print(_html(formulas, args))
        return 0
    if args.scalar:
        params = _scalar_params(formulas, args.layer, args.param)
        text = formulas.scalar(args.simplify is not False, params).render(fmt, params, args.standalone)
    else:
        text = formulas.render(fmt, args.simplify, args.layer, args.param, args.standalone)
    try:
        print(text)
    except UnicodeEncodeError:
        raise CliError("this terminal cannot show Unicode: use --format text") from None
    return 0


def _html(formulas: object, args: argparse.Namespace) -> str:
    from ..report.page import derivation_html, scalar_html
    if args.scalar:
        params = _scalar_params(formulas, args.layer, args.param)
        return scalar_html(formulas.scalar(args.simplify is not False, params), params)
    return derivation_html(formulas, args.simplify, args.layer, args.param)


def _scalar_params(formulas: object, layers: list[str] | None, params: list[str] | None) -> list[str] | None:
    """The parameters --layer/--param select for the scalar view (None: all)."""
    if layers is None and params is None:
        return None
    formulas.check_names(layers, params)
    chosen = [p for lay in reversed(formulas.layers) if lay.name in (layers or []) for p in lay.gradients]
    return chosen + [p for p in params or [] if p not in chosen]


def graph(args: argparse.Namespace) -> int:
    from ..derive.backprop import derive as run_derivation
    from ..explain.graph import dot, png, table
    model, _ = load_model(args.model)
    program = run_derivation(model).program
    if args.function not in program.functions:
        raise CliError(f"unknown entry point {args.function!r} (choose from {', '.join(program.functions)})")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.png:
        size = png(dot(program, args.function), Path(args.png))
        print(f"wrote {args.png} ({size:,} bytes)", file=sys.stderr)
        return 0
    print(dot(program, args.function) if args.dot else table(program, args.function, args.batch_size))
    return 0


def generate(args: argparse.Namespace) -> int:
    from ..generate import standalone
    model, training = load_model(args.model)
    name = Path(args.output).name if args.output else f"train_{model.name}.py"
    try:
        text = standalone(model, args.backend, args.dtype, filename=name, training=training)
    except ModelError as exc:
        raise CliError(f"{Path(args.model).name}: {exc}") from None
    if args.output:
        try:
            jit.write_atomic(Path(args.output), text)
        except OSError as exc:
            raise CliError(f"cannot write {args.output}: {exc.strerror}") from None
        print(f"wrote {args.output} ({len(text.splitlines())} lines; needs only NumPy"
              f"{' and CuPy' if args.backend == 'cuda' else ''})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def run(args: argparse.Namespace) -> int:
    from .runner import run as train_and_report
    return train_and_report(args)


def report(args: argparse.Namespace) -> int:
    from .report import report as write_report
    return write_report(args)


def predict(args: argparse.Namespace) -> int:
    from .runner import predict as apply_weights
    return apply_weights(args)


def check(args: argparse.Namespace) -> int:
    import nncompile as nc

    from ..gradcheck import gradient_check, off_the_kinks, random_batch
    model, _ = load_model(args.model)
    prog = nc.compile(model, dtype="float64")
    if args.data:
        ds = datasets.load(args.data)
        rows = np.random.default_rng(args.seed).permutation(len(ds))[:args.rows]
        X, Y = ds.X[rows], ds.y[rows]
    else:
        X, Y = random_batch(prog, args.rows, args.seed)
    params = off_the_kinks(prog.init_params(args.seed), args.seed)
    report = gradient_check(prog, params, X, Y, samples=args.samples, seed=args.seed, threshold=args.threshold)
    for name, r in report.items():
        flag = "ok" if r.error <= args.threshold else "FAIL"
        kink = f"  ({r.at_kink} of {r.entries} entries at a kink: one-sided differences)" if r.at_kink else ""
        print(f"{name:24s} max relative error {r.measured:.2e}  {flag}{kink}")
    worst = max(r.error for r in report.values())
    if any(r.at_kink for r in report.values()):
        print("at a kink the code uses a subgradient: " + "; ".join(_kink_policies(prog)))
    if worst > args.threshold:
        print(f"nncompile: check failed: largest relative error {worst:.2e} exceeds the threshold "
              f"{args.threshold:g}", file=sys.stderr)
        return 1
    print(f"all gradients agree with finite differences (threshold {args.threshold:g})")
    return 0


def _kink_policies(prog: object) -> list[str]:
    """The derivation's sentences about its non-differentiable points (ReLU'(0) = 0, ...)."""
    formulas = prog.formulas
    found = [note for layer in formulas.layers for act in layer.activations for note in act.notes
             if "not differentiable" in note]
    found += [note for note in formulas.loss.kinks if note not in found]
    return found or ["(none stated)"]
