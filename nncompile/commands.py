"""What each `nncompile` subcommand does; `cli` parses the command line and reports errors."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import data as datasets
from . import jit
from .cli import CliError, dump_json, load_model

RUN_DEFAULTS = {"mode": "minibatch", "batch_size": 32, "epochs": 30, "lr": 0.1, "optimizer": "sgd",
                "schedule": "constant", "seed": 0, "init": "auto", "patience": None}


def derive(args: argparse.Namespace) -> int:
    from .derive import derive as run_derivation
    from .formulas import Formulas
    model, _ = load_model(args.model)
    fmt = args.format or ("unicode" if sys.stdout.isatty() else "text")
    if args.standalone and fmt != "latex":
        raise CliError("--standalone makes a LaTeX document: use it with --format latex")
    formulas = Formulas.of(run_derivation(model))
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


def _scalar_params(formulas: object, layers: list[str] | None, params: list[str] | None) -> list[str] | None:
    """The parameters --layer/--param select for the scalar view (None: all)."""
    if layers is None and params is None:
        return None
    formulas.check_names(layers, params)
    chosen = [p for lay in reversed(formulas.layers) if lay.name in (layers or []) for p in lay.gradients]
    return chosen + [p for p in params or [] if p not in chosen]


def graph(args: argparse.Namespace) -> int:
    from .derive import derive as run_derivation
    from .graphview import dot, png, table
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
    from .generate import standalone
    model, _ = load_model(args.model)
    name = Path(args.output).name if args.output else f"train_{model.name}.py"
    text = standalone(model, args.backend, args.dtype, filename=name)
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


def _settings(args: argparse.Namespace, defaults: dict) -> dict:
    """Training settings: command-line flags, else the model file's `training` dict, else defaults."""
    unknown = sorted(set(defaults) - set(RUN_DEFAULTS) - {"momentum", "betas", "eps", "alpha"})
    if unknown:
        raise CliError(f"model file's training settings have unknown key {unknown[0]!r} "
                       f"(known: {', '.join(RUN_DEFAULTS)})")
    settings = {**RUN_DEFAULTS, **defaults}
    for key in RUN_DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    return settings


def run(args: argparse.Namespace) -> int:
    import nncompile as nc
    from .progress import EpochBar
    model, defaults = load_model(args.model)
    settings = _settings(args, defaults)
    ds = datasets.load(args.data)
    fraction = args.test_split if args.test_split is not None else (0.2 if len(ds) >= 50 else 0.0)
    if not 0.0 <= fraction < 1.0:
        raise CliError(f"--test-split must be in [0, 1), got {fraction}")
    train_set, test_set = datasets.split(ds, fraction, settings["seed"]) if fraction else (ds, None)
    prog = nc.compile(model, backend=args.backend, dtype=args.dtype)
    hyper = {k: settings[k] for k in ("momentum", "betas", "eps", "alpha") if k in settings}
    bar = EpochBar(settings["epochs"], prog.module.METRIC, disable=args.quiet or args.json)
    try:
        result = nc.train(prog, train_set.X, train_set.y, mode=settings["mode"], batch_size=settings["batch_size"],
                          epochs=settings["epochs"], lr=settings["lr"], optimizer=settings["optimizer"],
                          seed=settings["seed"], init=settings["init"], schedule=settings["schedule"],
                          val_split=args.val_split, patience=settings["patience"], callback=bar.update, **hyper)
    except nc.DivergenceError as exc:
        if args.save and exc.result is not None:
            _save(args.save, exc.result.params)
        raise
    finally:
        bar.close()
    summary = _summary(prog, result, train_set, test_set)
    if args.json:
        print(dump_json({"history": result.history, "summary": summary}))
    else:
        print(_summary_line(summary, prog.module.METRIC))
    if args.save:
        _save(args.save, result.params)
        print(f"saved weights to {args.save}", file=sys.stderr)
    return 0


def _summary(prog: object, result: object, train_set: datasets.Dataset, test_set: object) -> dict:
    summary = {"epochs": len(result.history), "train_loss": result.history[-1]["loss"], "train_rows": len(train_set)}
    metric = prog.module.METRIC
    if metric:
        summary["train_" + metric] = float(np.mean(_correct(prog, result.params, train_set)))
    if test_set is not None:
        summary["test_loss"] = float(prog.loss(result.params, test_set.X, test_set.y))
        summary["test_rows"] = len(test_set)
        if metric:
            summary["test_" + metric] = float(np.mean(_correct(prog, result.params, test_set)))
    return summary


def _correct(prog: object, params: dict, ds: datasets.Dataset) -> np.ndarray:
    predicted = prog.predict(params, ds.X)
    _, T = prog.prepare(ds.X, ds.y)
    truth = T.argmax(axis=1) if prog.module.METRIC == "accuracy" else (T > 0.5).astype(np.int64).reshape(predicted.shape)
    return predicted == truth


def _summary_line(summary: dict, metric: str | None) -> str:
    parts = [f"epochs {summary['epochs']}", f"train loss {summary['train_loss']:.4f}"]
    label = (metric or "").replace("_", " ")
    if metric:
        parts.append(f"train {label} {100 * summary['train_' + metric]:.2f}%")
    if "test_loss" in summary:
        parts.append(f"test loss {summary['test_loss']:.4f}")
        if metric:
            parts.append(f"test {label} {100 * summary['test_' + metric]:.2f}% "
                         f"({summary['test_rows']} held-out rows)")
    return "final: " + ", ".join(parts)


def _save(path: str, params: dict) -> None:
    import io
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    try:
        jit.write_bytes_atomic(Path(path), buffer.getvalue())
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def check(args: argparse.Namespace) -> int:
    import nncompile as nc
    from .gradcheck import check_gradients, random_batch
    model, _ = load_model(args.model)
    prog = nc.compile(model, dtype="float64")
    if args.data:
        ds = datasets.load(args.data)
        rows = np.random.default_rng(args.seed).permutation(len(ds))[:args.rows]
        X, Y = ds.X[rows], ds.y[rows]
    else:
        X, Y = random_batch(prog, args.rows, args.seed)
    params = prog.init_params(args.seed)
    report = check_gradients(prog, params, X, Y, samples=args.samples, seed=args.seed)
    worst = max(report.values())
    for name, err in report.items():
        flag = "ok" if err <= args.threshold else "FAIL"
        print(f"{name:24s} max relative error {err:.2e}  {flag}")
    if worst > args.threshold:
        print(f"nncompile: check failed: largest relative error {worst:.2e} exceeds the threshold "
              f"{args.threshold:g}", file=sys.stderr)
        return 1
    print(f"all gradients agree with central finite differences (threshold {args.threshold:g})")
    return 0

