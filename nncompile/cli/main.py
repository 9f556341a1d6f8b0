"""The `nncompile` command: derive, graph, generate, run, predict, check.

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nncompile", description="Compile neural-network training code.")
    parser.add_argument("--version", action="version", version=f"nncompile {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("derive", help="print the gradient formulas, layer by layer")
    p.add_argument("model")
    p.add_argument("--format", choices=("text", "unicode", "latex", "markdown"), default=None,
                   help="default: unicode on a terminal, text otherwise")
    p.add_argument("--standalone", action="store_true", help="with --format latex: a complete document")
    p.add_argument("--scalar", action="store_true",
                   help="every weight's gradient as an explicit scalar expression (small networks: at most "
                        "64 parameters, 3 Dense layers, 10 units per layer)")
    p.add_argument("--layer", action="append", metavar="NAME", help="only this layer (repeatable; 'loss' too)")
    p.add_argument("--param", action="append", metavar="NAME", help="only this parameter, e.g. dense1.W")
    p.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=None,
                   help="only the simplified forms (--no-simplify: only the raw chain-rule products; "
                        "default: both)")

    p = sub.add_parser("graph", help="print the explicit forward + backward graph")
    p.add_argument("model")
    p.add_argument("--dot", action="store_true", help="Graphviz DOT instead of a table")
    p.add_argument("--png", metavar="FILE", help="draw the graph into a PNG file (needs Graphviz)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for FLOP counts")
    p.add_argument("--function", default="loss_and_grad", help="entry point to show")

    p = sub.add_parser("generate", help="write a standalone training script")
    p.add_argument("model")
    p.add_argument("--backend", choices=("numpy", "cuda"), default="numpy")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")

    p = sub.add_parser("run", help="compile and train on a data set")
    p.add_argument("model")
    p.add_argument("--data", required=True, help="xor, moons, spirals, digits, FILE.npz or FILE.csv")
    p.add_argument("--backend", choices=("numpy", "cuda"), default="numpy")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--test-split", type=float, default=None,
                   help="held-out fraction (default 0.2 for 50+ rows, else 0)")
    add_training_flags(p)

    p = sub.add_parser("predict", help="apply saved weights to data and write the outputs")
    p.add_argument("model")
    p.add_argument("--weights", required=True, metavar="FILE.npz", help="weights saved by run --save")
    p.add_argument("--data", required=True, help="built-in name, FILE.npz (X, optional y) or FILE.csv")
    p.add_argument("-o", "--output", help="FILE.csv or FILE.npz (default: CSV on standard output)")
    p.add_argument("--backend", choices=("numpy", "cuda"), default="numpy")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")

    p = sub.add_parser("check", help="compare gradients with central finite differences")
    p.add_argument("model")
    p.add_argument("--data", help="data to check on (default: random rows)")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--samples", type=int, default=64, help="entries checked per parameter (0: all)")
    p.add_argument("--threshold", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    return parser


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
    except KeyboardInterrupt:
        print("nncompile: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
