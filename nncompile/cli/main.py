"""The `nncompile` command: derive, graph, generate, run, report, predict, check.

Errors a person can make end with one line on stderr naming the problem and exit
status 2 (1 when training diverged or a gradient check failed); never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import DistributedError, DivergenceError, NncompileError
from ..runtime.distributed import end_after_lost_rank, speaks
from ..runtime.script import add_training_flags, printable
from ..version import __version__
from .errors import EXIT_FAILED, EXIT_USER_ERROR

MODEL_HELP = "model file: Python that defines `model` (and optionally a `training` dict of defaults)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nncompile", description="Compile neural-network training code.")
    parser.add_argument("--version", action="version", version=f"nncompile {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "derive", "print the gradient formulas, layer by layer",
                 "nncompile derive examples/xor.py --layer dense2 --format latex")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--format", choices=("text", "unicode", "latex", "markdown", "html"), default=None,
                   help="default: unicode on a terminal, text otherwise; html: a self-contained page with "
                        "the formulas as MathML beside the generated code")
    p.add_argument("--standalone", action="store_true", help="with --format latex: a complete document")
    p.add_argument("--scalar", action="store_true",
                   help="every weight's gradient as an explicit scalar expression (small networks: at most "
                        "64 parameters, 3 Dense layers, 10 units per layer)")
    p.add_argument("--layer", action="append", metavar="NAME", help="only this layer (repeatable; 'loss' too)")
    p.add_argument("--param", action="append", metavar="NAME", help="only this parameter, e.g. dense1.W")
    p.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=None,
                   help="only the simplified forms (--no-simplify: only the raw chain-rule products; "
                        "default: both)")

    p = _command(sub, "graph", "print the explicit forward + backward graph",
                 "nncompile graph examples/digits.py --batch-size 128 --function loss_and_grad")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--dot", action="store_true", help="Graphviz DOT instead of a table")
    p.add_argument("--png", metavar="FILE", help="draw the graph into a PNG file (needs Graphviz)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size the FLOP counts are for (default 32)")
    p.add_argument("--function", default="loss_and_grad",
                   help="generated entry point to show: forward, loss, loss_and_grad, step_<optimizer>, ... "
                        "(default loss_and_grad)")

    p = _command(sub, "generate", "write a standalone training script",
                 "nncompile generate examples/xor.py -o train_xor.py && python train_xor.py --data xor.npz")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--backend", choices=("numpy", "cuda"), default="numpy",
                   help="numpy: needs only NumPy; cuda: NumPy and CuPy on an NVIDIA GPU (default numpy)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="floating-point type of parameters and data (default float64)")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")

    p = _command(sub, "run", "compile and train on a data set",
                 "nncompile run examples/digits.py --data digits --optimizer adam --lr 0.003 --save w.npz")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--data", required=True, help="xor, moons, spirals, digits, FILE.npz or FILE.csv")
    p.add_argument("--backend", choices=("numpy", "cuda"), default="numpy", help="where to train (default numpy)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="floating-point type (default float64)")
    p.add_argument("--test-split", type=float, default=None,
                   help="held-out fraction (default 0.2 for 50+ rows, else 0)")
    add_training_flags(p)
    p.add_argument("--report", metavar="FILE.html", help="also write the HTML report of the model and this run "
                                                          "(default: none)")

    p = _command(sub, "report", "write one self-contained HTML page: network, derivation beside the generated "
                                "code, explicit graph, and with --data the training run",
                 "nncompile report examples/digits.py --data digits --epochs 30 -o digits.html")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--data", help="train on it first, as run does: xor, moons, spirals, digits, FILE.npz or "
                                  "FILE.csv (default: the derivation alone)")
    p.add_argument("-o", "--output", metavar="FILE.html", help="page to write (default: <model name>_report.html)")
    p.add_argument("--backend", choices=("numpy", "cuda"), default="numpy",
                   help="whose generated code the page shows beside the formulas, and where to train "
                        "(default numpy)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="floating-point type (default float64)")
    p.add_argument("--test-split", type=float, default=None,
                   help="held-out fraction (default 0.2 for 50+ rows, else 0); the confusion matrix uses it")
    add_training_flags(p)

    p = _command(sub, "predict", "apply saved weights to data and write the outputs",
                 "nncompile predict examples/digits.py --weights w.npz --data digits -o predictions.csv")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--weights", required=True, metavar="FILE.npz", help="weights saved by run --save")
    p.add_argument("--data", required=True, help="built-in name, FILE.npz (X, optional y) or FILE.csv")
    p.add_argument("-o", "--output", help="FILE.csv or FILE.npz (default: CSV on standard output)")
    p.add_argument("--backend", choices=("numpy", "cuda"), default="numpy", help="where to compute (default numpy)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="floating-point type (default float64)")

    p = _command(sub, "check", "compare gradients with central finite differences",
                 "nncompile check examples/kinks.py --rows 16 --seed 2")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--data", help="data to check on: a built-in name, FILE.npz or FILE.csv (default: random rows)")
    p.add_argument("--rows", type=int, default=8, help="examples in the batch checked (default 8)")
    p.add_argument("--samples", type=int, default=64, help="entries checked per parameter (0: all; default 64)")
    p.add_argument("--threshold", type=float, default=1e-6,
                   help="largest relative error that passes (default 1e-6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the rows and the entries (default 0)")
    return parser


def _command(sub: argparse._SubParsersAction, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with an example."""
    return sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                          epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    from . import commands
    handler = getattr(commands, args.command)
    quiet = getattr(args, "distributed", False)  # K processes met the same error: one of them says so
    try:
        return handler(args)
    except DistributedError as exc:
        if speaks(exc):
            print(f"nncompile: error: {printable(exc)}", file=sys.stderr)
        if exc.lost:
            end_after_lost_rank(EXIT_FAILED)
        return EXIT_USER_ERROR
    except DivergenceError as exc:
        if not quiet or speaks(exc):
            print(f"nncompile: error: {printable(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except NncompileError as exc:
        if not quiet or speaks(exc):
            print(f"nncompile: error: {printable(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        print(f"nncompile: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
