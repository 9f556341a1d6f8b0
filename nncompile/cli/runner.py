"""`nncompile run` and `nncompile predict`: compile, train with progress, report; or apply saved weights.

`run` resolves settings (flags, else the model file's `training` dict, else defaults),
holds out a test split, trains through `nc.train` with a progress bar and diagnostics,
then prints a summary table (or JSON) and writes weights, a plot and checkpoints as asked.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .. import data as datasets
from ..dsl.modelfile import load_model
from ..errors import DivergenceError, TrainingWarning
from ..runtime import distributed as parallel
from ..runtime import loop, script
from ..runtime.checkpoint import Checkpoint, CheckpointError, save_npz_atomic, write_bytes_atomic
from ..runtime.diagnostics import DEAD_WARN, FLAT, LINEAR_WARN, summary_rows
from ..runtime.engine import TrainingError
from ..runtime.plot import PlotUnavailable, render_png
from .errors import CliError


def run(args: argparse.Namespace) -> int:
    import nncompile as nc

    from .progress import Progress
    model, defaults = load_model(args.model)
    rule = defaults.get("optimizer")
    extra = () if rule is None or isinstance(rule, str) else (rule,)
    if extra:
        defaults = dict(defaults, optimizer=getattr(rule, "name", rule))
    try:
        script.settings_from(argparse.Namespace(), defaults)
    except TrainingError as exc:  # the model file's training dict
        raise CliError(f"{Path(args.model).name}: training: {exc}") from None
    try:
        settings, hyper = script.settings_from(args, defaults)
        script.check_outputs(args)
    except (TrainingError, PlotUnavailable) as exc:
        raise CliError(str(exc)) from None
    ds = datasets.shaped(datasets.load(args.data), model.input_shapes)
    train_set, test_set = _test_split(ds, args.test_split, settings["seed"])
    try:
        X, y, validation = script.validation_split(train_set.X, train_set.y, settings["val_split"], settings["seed"])
    except TrainingError as exc:
        raise CliError(str(exc)) from None
    prog = nc.compile(model, backend=args.backend, dtype=args.dtype, optimizers=extra)
    _check_hyperparameters(prog, settings["optimizer"], hyper)
    cluster = _cluster(args, prog)
    writer = cluster is None or cluster.rank == 0  # rank 0 alone prints and writes
    if cluster is not None and writer and not (args.quiet or args.json):
        print(f"nncompile: {cluster.describe()}", file=sys.stderr)
    progress = Progress(settings["epochs"], len(X), prog.module.METRIC, disable=args.quiet or args.json or not writer,
                        first_epoch=_resumed_epochs(args.resume))
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TrainingWarning)  # shown by the progress display instead
            result = nc.train(
                prog, X, y, mode=settings["mode"], batch_size=settings["batch_size"], epochs=settings["epochs"],
                lr=settings["lr"], optimizer=settings["optimizer"], seed=settings["seed"], init=settings["init"],
                schedule=settings["schedule"], step_size=settings["step_size"], gamma=settings["gamma"],
                validation=validation, patience=settings["patience"], min_delta=settings["min_delta"],
                diagnostics=not args.no_diagnostics, checkpoint=args.checkpoint,
                checkpoint_every=settings["checkpoint_every"], resume=args.resume, callback=progress.epoch,
                on_batch=progress.batch, distributed=cluster or False, **hyper)
    except DivergenceError as exc:
        progress.close()
        if getattr(args, "report", None) and exc.result is not None and writer:
            from .html_output import run_report
            run_report(args.report, prog, exc.result, None, _shown_settings(args, settings, hyper), None,
                       settings["batch_size"], note=str(exc))
        message = str(exc)
        if args.save and exc.result is not None and writer:
            _save(args.save, exc.result.params)
            message += f"; saved them to {args.save}"
        if args.json and writer:
            history = [] if exc.result is None else exc.result.history
            print(dump_json({"error": message, "history": history}))
        raise DivergenceError(message, exc.result) from None
    except KeyboardInterrupt:
        progress.close()
        done = _resumed_epochs(args.checkpoint) if args.checkpoint else progress.done_epochs
        saved = (f"; checkpoint saved to {args.checkpoint} (continue with --resume {args.checkpoint})"
                 if args.checkpoint else "")
        raise Interrupted(f"interrupted after epoch {done}{saved}") from None
    progress.close()
    if not writer:
        return 0
    seconds = time.perf_counter() - started
    summary = _summary(prog, result, (X, y), validation, test_set, seconds, progress.examples)
    if args.json:
        print(dump_json({"history": result.history, "summary": summary}))
    else:
        print(_table(summary, prog.module.METRIC, result, settings["patience"] is not None))
    if args.save:
        _save(args.save, result.params)
        print(f"saved weights to {args.save}", file=sys.stderr)
    if args.plot:
        _plot(args.plot, result.history, prog.module.METRIC, f"{model.name}: {settings['optimizer']}, "
                                                              f"lr {settings['lr']:g}, {settings['mode']}")
        print(f"saved the training curves to {args.plot}", file=sys.stderr)
    if getattr(args, "report", None):
        from .html_output import run_report
        held_out = (("test", test_set.X, test_set.y) if test_set is not None else
                    ("validation", *validation) if validation is not None else ("training", X, y))
        run_report(args.report, result.program or prog, result, summary, _shown_settings(args, settings, hyper),
                   held_out, settings["batch_size"])
    return 0


def _shown_settings(args: argparse.Namespace, settings: dict, hyper: dict) -> dict:
    """The settings of a run as the report lists them."""
    shown = {"data": args.data, "backend": f"{args.backend}, {args.dtype}", "mode": settings["mode"]}
    if settings["mode"] == "minibatch":
        shown["batch size"] = settings["batch_size"]
    shown.update({"epochs": settings["epochs"], "learning rate": settings["lr"], "optimizer": settings["optimizer"]})
    shown.update({name: value for name, value in hyper.items()})
    shown["schedule"] = settings["schedule"]
    if settings["schedule"] in ("step", "exponential"):
        shown.update({"step size": settings["step_size"] if settings["schedule"] == "step" else None,
                      "gamma": settings["gamma"]})
    shown.update({"init": settings["init"], "seed": settings["seed"], "validation split": settings["val_split"] or None,
                  "patience": settings["patience"]})
    return shown


DIAGNOSTICS_LEGEND = (f"saturated/inactive: share of (example, unit) pairs with |f'(z)| < {FLAT:g} (saturated "
                      f"sigmoid/tanh, inactive ReLU); dead: units inactive on every example (a warning from "
                      f"{DEAD_WARN:.0%}); linear: units whose f'(z) barely varies (a warning from {LINEAR_WARN:.0%})")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `run`: the one line to print says what was kept."""


def _check_hyperparameters(prog: object, optimizer: str, hyper: dict) -> None:
    """Flags naming hyperparameters the optimizer does not take, refused before training."""
    try:
        name, named = script.torch_style(optimizer, hyper)
        loop.hyperparameters(prog.module, name, named)
    except TrainingError as exc:
        raise CliError(str(exc)) from None


def _cluster(args: argparse.Namespace, prog: object) -> parallel.Cluster | None:
    """With --distributed: this process's place among the K that mpiexec started (one line if MPI is missing)."""
    if not args.distributed:
        if args.overlap:
            raise CliError("--overlap goes with --distributed")
        return None
    from ..program import data_errors
    with data_errors():
        cluster = parallel.connect(overlap=args.overlap)
    cluster.report_signals()
    return cluster


def _test_split(ds: datasets.Dataset, fraction: float | None, seed: int) -> tuple:
    fraction = fraction if fraction is not None else (0.2 if len(ds) >= 50 else 0.0)
    if not 0.0 <= fraction < 1.0:
        raise CliError(f"--test-split must be in [0, 1), got {fraction}")
    return datasets.split(ds, fraction, seed) if fraction else (ds, None)


def _resumed_epochs(path: str | None) -> int:
    """Epochs already done in the checkpoint to resume (for the progress bar); errors come later."""
    if not path:
        return 0
    try:
        return int(Checkpoint(path).load()[1].get("epoch", 0))
    except (CheckpointError, TypeError, ValueError):
        return 0


def _summary(prog: object, result: object, train: tuple, validation: tuple | None,
             test_set: datasets.Dataset | None, seconds: float, examples: int) -> dict:
    """Loss and metric of the final weights on each data set, and what the run did."""
    history = result.history
    summary = {"epochs": len(history), "updates": sum(r["updates"] for r in history),
               "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
               "seconds": round(seconds, 3), "examples_per_second": round(examples / max(seconds, 1e-9))}
    sets = [("train", train), ("val", validation), ("test", None if test_set is None else (test_set.X, test_set.y))]
    for prefix, pair in sets:
        if pair is not None:
            summary[f"{prefix}_rows"] = len(pair[0])
            for key, value in prog.evaluate(result.params, *pair).items():
                summary[f"{prefix}_{key}"] = value
    report = next((r["diagnostics"] for r in reversed(history) if "diagnostics" in r), None)
    if report is not None:
        summary["diagnostics"] = report
    summary["warnings"] = result.warnings
    return summary


def _table(summary: dict, metric: str | None, result: object, early_stopping: bool) -> str:
    """The final summary as aligned text: one row per data set, then the diagnostics per layer."""
    label = (metric or "").replace("_", " ")
    header = ["", "rows", "loss"] + ([label] if metric else [])
    rows = []
    for prefix, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        if f"{prefix}_loss" in summary:
            row = [name, str(summary[f"{prefix}_rows"]), f"{summary[f'{prefix}_loss']:.4f}"]
            if metric:
                row.append(f"{100 * summary[f'{prefix}_{metric}']:.2f}%")
            rows.append(row)
    weights = f"final weights (epoch {summary['epochs']})"
    restored = result.best_epoch is not None and early_stopping
    if restored and result.stopped_early:
        weights = f"weights of epoch {result.best_epoch} (best validation loss; stopped early)"
    elif restored:
        weights = f"weights of epoch {result.best_epoch} (best validation loss of {summary['epochs']} epochs)"
    elif result.best_epoch is not None:
        weights = (f"final weights (epoch {summary['epochs']}; the best validation loss was at epoch "
                   f"{result.best_epoch})")
    lines = [weights, *_aligned([header, *rows]),
             f"{summary['epochs']} epochs, {summary['updates']} updates in {summary['seconds']:.2f} s "
             f"({summary['examples_per_second']:,} examples/s)"]
    if "diagnostics" in summary:
        lines += ["", "diagnostics (last check)",
                  *_aligned([["layer", "activation", "saturated/inactive", "dead", "linear", "grad norm"],
                             *summary_rows(summary["diagnostics"])], text_columns=2), DIAGNOSTICS_LEGEND]
    if summary["warnings"]:
        lines += ["", f"{len(summary['warnings'])} warning(s) during training; see above"]
    return "\n".join(lines)


def _aligned(rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """Rows as lines: the first `text_columns` columns left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i < text_columns else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def _plot(path: str, history: list[dict], metric: str | None, title: str) -> None:
    try:
        png = render_png(history, metric, title)
    except PlotUnavailable as exc:
        raise CliError(f"--plot: {exc}") from None
    _write(path, png)


def _write(path: str, data: bytes) -> None:
    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def _save(path: str, arrays: dict) -> None:
    try:
        save_npz_atomic(path, arrays)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


PREDICTION_FORMATS = (".csv", ".npz")


def predict(args: argparse.Namespace) -> int:
    import nncompile as nc
    if args.output:
        if Path(args.output).suffix.lower() not in PREDICTION_FORMATS:
            raise CliError(f"-o {args.output}: predictions are written as .csv or .npz; name the file so")
        try:
            script.check_writable(args.output, "-o")
        except TrainingError as exc:
            raise CliError(str(exc)) from None
    model, _ = load_model(args.model)
    prog = nc.compile(model, backend=args.backend, dtype=args.dtype)
    params = _load_weights(args.weights, prog)
    X, y = datasets.load_inputs(args.data, prog.module.INPUT_DIM)
    output = prog.forward(params, X)
    columns = {f"output_{j}": output[:, j] for j in range(output.shape[1])}
    if prog.module.METRIC:
        labels = prog.predict(params, X)
        columns["label"] = labels if labels.ndim == 1 else labels[:, 0]
    _write_predictions(args.output, columns)
    if y is not None:
        scores = prog.evaluate(params, X, y)
        shown = ", ".join(f"{k} {100 * v:.2f}%" if k != "loss" else f"loss {v:.4f}" for k, v in scores.items())
        print(f"{len(X)} rows: {shown}", file=sys.stderr)
    if args.output:
        print(f"wrote predictions for {len(X)} rows to {args.output}", file=sys.stderr)
    return 0


def _load_weights(path: str, prog: object) -> dict:
    try:
        with np.load(path, allow_pickle=False) as saved:
            params = {name: saved[name] for name in saved.files}
    except FileNotFoundError:
        raise CliError(f"weights file {path} does not exist") from None
    except (OSError, ValueError, EOFError) as exc:
        raise CliError(f"{path} is not a readable .npz weights file ({exc})") from None
    if {"meta", "params"} <= set(params):
        raise CliError(f"{path} is a training checkpoint (--checkpoint), not a weights file: continue training "
                       "from it with run --resume, or write weights with run --save")
    prog.flatten(params)  # checks names and shapes against the model, one clear line if they differ
    return params


def _write_predictions(path: str | None, columns: dict[str, np.ndarray]) -> None:
    """A .npz (arrays "output", "label"), or CSV with a header line, to a file or standard output."""
    if path and path.lower().endswith(".npz"):
        arrays = {"output": np.column_stack([v for k, v in columns.items() if k.startswith("output_")])}
        if "label" in columns:
            arrays["label"] = columns["label"]
        _save(path, arrays)
        return
    text = io.StringIO()
    text.write(",".join(columns) + "\n")
    fmt = ["%d" if k == "label" else "%.10g" for k in columns]
    np.savetxt(text, np.column_stack(list(columns.values())), delimiter=",", fmt=fmt)
    if path:
        _write(path, text.getvalue().encode("utf-8"))
    else:
        sys.stdout.write(text.getvalue())


def dump_json(obj: object) -> str:
    """JSON for histories (NumPy scalars become numbers)."""
    return json.dumps(obj, indent=2, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
