"""`nncompile report`, `run --report` and `derive --format html`: the HTML page, written atomically.

Without data the page holds the network, the derivation beside the generated code and the
explicit graph; with `--data` the model is trained as `run` trains it and the run is added:
curves, diagnostics, warnings, final metrics and, for classifiers, the confusion matrix on
the held-out set.
"""
from __future__ import annotations

import argparse

from ..dsl.modelfile import load_model
from .errors import CliError
from .html_output import write_page


def report(args: argparse.Namespace) -> int:
    """The page for a model file; with --data, trains first (as `run` does) and adds the run."""
    model, _ = load_model(args.model)
    args.report = args.output or f"{model.name}_report.html"
    if args.data:
        from .runner import run
        return run(args)
    _no_training_flags(args)
    from ..derive.backprop import derive
    from ..report.page import build, page_html
    batch = 32 if args.batch_size is None else args.batch_size
    if batch < 1:
        raise CliError(f"--batch-size must be a positive integer, got {batch}")
    write_page(args.report, page_html(build(model, derive(model, args.dtype), batch=batch, backend=args.backend)))
    return 0


def _no_training_flags(args: argparse.Namespace) -> None:
    """Training flags without --data would be ignored silently: refuse them in one line."""
    from ..runtime.script import DEFAULTS, HYPER_KEYS
    given = [key for key in (*DEFAULTS, *HYPER_KEYS, "save", "checkpoint", "resume", "plot")
             if key != "batch_size" and getattr(args, key, None) not in (None, False)]
    given += ["json"] if args.json else []
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise CliError(f"{flag} is a training flag: give --data to train and report the run "
                       "(without --data the report shows the model only)")
