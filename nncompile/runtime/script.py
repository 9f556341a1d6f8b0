"""Training flags shared by `nncompile run` and generated scripts, and the scripts' command line.

`nncompile generate` embeds engine.py, batches.py, loop.py, distributed.py, checkpoint.py,
diagnostics.py, plot.py and this file, in that order, after the compiled program; in a script the names imported below
are therefore already defined, and the import runs only inside the nncompile package.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

if __package__ == "nncompile.runtime":  # in a generated script these are defined above, in the same file
    from .checkpoint import Checkpoint, CheckpointError, save_npz_atomic, write_bytes_atomic
    from .diagnostics import Monitor, headline, new_warnings
    from .distributed import connect, end_after_lost_rank, speaks
    from .engine import INIT_SCHEMES, Diverged, Engine, TrainingError, check_inputs, encode_targets, init_flat, to_host
    from .loop import SCHEDULES, fit, hyperparameters
    from .plot import PlotUnavailable, render_png, require_matplotlib

#: Training settings when neither a flag nor the model file's `training` dict gives one.
DEFAULTS = {"mode": "minibatch", "batch_size": 32, "epochs": 30, "lr": 0.1, "optimizer": "sgd",
            "schedule": "constant", "step_size": 10, "gamma": None, "seed": 0, "init": "auto",
            "val_split": 0.0, "patience": None, "min_delta": 0.0, "checkpoint_every": None}
#: Optimizer hyperparameters a model file's `training` dict may set (PyTorch's names).
HYPER_KEYS = ("momentum", "betas", "eps", "alpha", "hyper")


def add_training_flags(parser, optimizers=None):
    """The flags of a training run; all default to None so that other sources can fill them."""
    g = parser.add_argument_group("training")
    g.add_argument("--mode", choices=("gd", "sgd", "minibatch"), help="gd: full batch; sgd: one row; "
                   "minibatch: --batch-size rows per update (default minibatch)")
    g.add_argument("--batch-size", type=int, help="rows per update in minibatch mode (default 32)")
    g.add_argument("--epochs", type=int, help="passes over the training data (default 30)")
    g.add_argument("--lr", type=float, help="learning rate (default 0.1)")
    g.add_argument("--optimizer", choices=optimizers, help="update rule (default sgd)")
    g.add_argument("--momentum", type=float, help="momentum/nesterov: momentum (default 0.9)")
    g.add_argument("--betas", type=float, nargs=2, metavar=("BETA1", "BETA2"), help="adam (default 0.9 0.999)")
    g.add_argument("--eps", type=float, help="adam/rmsprop: eps (default 1e-8)")
    g.add_argument("--alpha", type=float, help="rmsprop: smoothing constant (default 0.99)")
    g.add_argument("--hyper", action="append", default=None, metavar="NAME=VALUE",
                   help="any optimizer hyperparameter by name (repeatable)")
    g.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule per epoch (default constant)")
    g.add_argument("--step-size", type=int, help="step schedule: epochs between decays (default 10)")
    g.add_argument("--gamma", type=float, help="step/exponential schedule: decay factor (default 0.1/0.95)")
    g.add_argument("--seed", type=int, help="initialisation and shuffling seed (default 0)")
    g.add_argument("--init", choices=INIT_SCHEMES, help="weight initialisation (default auto)")
    g.add_argument("--val-split", type=float, help="fraction held out for validation (default 0; "
                   "0.1 when --patience is given)")
    g.add_argument("--patience", type=int, help="early stopping: epochs without validation improvement")
    g.add_argument("--min-delta", type=float, help="early stopping: smallest improvement that counts")
    g.add_argument("--distributed", action="store_true", help="data-parallel: this is one of K processes started "
                   "by mpiexec -n K, each computing its share of every batch (needs mpi4py)")
    g.add_argument("--overlap", action="store_true", help="with --distributed: sum each layer's gradients while the "
                   "backward pass goes on (non-blocking allreduce per bucket) instead of once after it")
    g = parser.add_argument_group("output")
    g.add_argument("--save", metavar="FILE.npz", help="write the trained weights to this file")
    g.add_argument("--checkpoint", metavar="FILE", help="save the full training state here (atomically) "
                   "every --checkpoint-every epochs and on Ctrl-C")
    g.add_argument("--checkpoint-every", type=int, metavar="N", help="epochs between checkpoints (default 1, "
                   "or epochs/100 in longer runs)")
    g.add_argument("--resume", metavar="FILE", help="continue the run saved in this checkpoint")
    g.add_argument("--plot", metavar="FILE.png", help="plot loss and metric per epoch (needs matplotlib)")
    g.add_argument("--json", action="store_true", help="print the history and summary as JSON")
    g.add_argument("--no-diagnostics", action="store_true", help="skip the saturation/dead-unit/gradient checks")
    g.add_argument("--quiet", action="store_true", help="no progress output")


def settings_from(args, defaults=None):
    """(settings, optimizer hyperparameter overrides): flags, else `defaults`, else DEFAULTS."""
    defaults = dict(defaults or {})
    unknown = sorted(set(defaults) - set(DEFAULTS) - set(HYPER_KEYS))
    if unknown:
        raise TrainingError(f"unknown training setting {unknown[0]!r} (known: {', '.join(DEFAULTS)}, "
                            f"{', '.join(HYPER_KEYS)})")
    settings = {k: v for k, v in {**DEFAULTS, **defaults}.items() if k not in HYPER_KEYS}
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if settings["patience"] is not None and not settings["val_split"]:
        settings["val_split"] = 0.1
    hyper = hyper_names({k: defaults[k] for k in HYPER_KEYS if k in defaults})
    flags = {k: getattr(args, k) for k in HYPER_KEYS if getattr(args, k, None) is not None}
    if "hyper" in flags:
        flags["hyper"] = dict(_name_value(item) for item in flags["hyper"])
    hyper.update(hyper_names(flags))
    return settings, hyper


def hyper_names(given):
    """PyTorch-style names (betas=(b1, b2)) to the rules' hyperparameter names."""
    hyper = dict(given.pop("hyper", None) or {})
    if "betas" in given:
        betas = given.pop("betas")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TrainingError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        hyper.update(beta1=betas[0], beta2=betas[1])
    hyper.update(given)
    return hyper


def torch_style(optimizer, hyper):
    """PyTorch's spellings: SGD with momentum=m (nesterov=True) is the momentum (nesterov) rule.

    Returns (optimizer name, hyperparameters) with `nesterov` resolved; refuses
    weight_decay, which is the model's l2 here.
    """
    hyper = dict(hyper)
    nesterov = hyper.pop("nesterov", False)
    if "weight_decay" in hyper:
        raise TrainingError("weight_decay belongs to the model here: nn.Sequential(..., l2=...) adds l2*W to "
                            "the gradient, as PyTorch's weight_decay does")
    if optimizer == "sgd" and "momentum" in hyper:
        if hyper["momentum"]:
            return ("nesterov" if nesterov else "momentum"), hyper
        del hyper["momentum"]
    if nesterov:
        if optimizer not in ("momentum", "nesterov"):
            raise TrainingError("nesterov=True needs SGD with momentum (optimizer 'nesterov', or 'sgd' with "
                                "momentum > 0)")
        optimizer = "nesterov"
    return optimizer, hyper


def _name_value(item):
    name, sep, value = item.partition("=")
    try:
        if not sep:
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise TrainingError(f"--hyper takes NAME=VALUE with a number, got {item!r}") from None


def check_writable(path, flag):
    """Refuse, before training, an output file that could not be written at the end of it."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise TrainingError(f"{flag} {path} is a folder: give a file name")
    if not os.path.isdir(folder):
        raise TrainingError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrainingError(f"{flag} {path}: cannot write to the folder {folder}")


def check_outputs(args):
    """Every output a run will write (--save, --checkpoint, --plot and matplotlib for it) is checked
    before the first epoch, so that no failure at the end loses the training."""
    for flag in ("save", "checkpoint", "plot"):
        if getattr(args, flag, None):
            check_writable(getattr(args, flag), "--" + flag)
    if getattr(args, "plot", None):
        require_matplotlib()


def validation_split(X, T, fraction, seed):
    """(X_train, T_train, validation) with max(1, round(fraction·N)) shuffled rows held out.

    The shuffle uses seed + 1, so it does not repeat the training shuffles drawn from seed.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise TrainingError(f"val_split must be a fraction in [0, 1), got {fraction!r}")
    if not fraction:
        return X, T, None
    order = np.random.default_rng(seed + 1).permutation(X.shape[0])
    n_val = max(1, int(round(fraction * X.shape[0])))
    if n_val >= X.shape[0]:
        raise TrainingError(f"val_split={fraction} leaves no training rows out of {X.shape[0]}")
    return X[order[n_val:]], T[order[n_val:]], (X[order[:n_val]], T[order[:n_val]])


def describe(record, metric):
    """One progress line for an epoch record."""
    parts = [f"epoch {record['epoch']:4d}", f"loss {record['loss']:.6f}"]
    value = record.get(metric, record.get(f"train_{metric}")) if metric else None
    if value is not None:
        parts.append(f"{metric.replace('_', ' ')} {100 * value:.2f}%")
    if "val_loss" in record:
        parts.append(f"val loss {record['val_loss']:.6f}")
    if metric and "val_" + metric in record:
        parts.append(f"val {metric.replace('_', ' ')} {100 * record['val_' + metric]:.2f}%")
    parts += [f"{label} {value}" for label, value in headline(record.get("diagnostics", {})).items()]
    return "  ".join(parts)


class _Progress:
    """Progress on standard error, as `nncompile run` shows it: on a terminal one line redrawn each
    epoch (a bar, the epoch record, examples/s); in a log a line every `every` epochs (about 20 in a
    run) and the last.  Each diagnostic warning is printed once, when it first appears."""

    def __init__(self, metric, epochs, rows, quiet, stream=None):
        self.metric, self.epochs, self.rows, self.quiet = metric, epochs, rows, quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = max(1, epochs // 20)
        self.active, self.drawn, self.started, self.examples = None, False, time.perf_counter(), 0

    def __call__(self, record):
        if "warnings" in record:
            for warning in new_warnings(record, self.active):
                self.line(f"warning: epoch {record['epoch']}: {warning['message']}")
            self.active = record["warnings"]
        self.examples += self.rows
        if self.quiet:
            return
        if self.tty:
            done = record["epoch"] / max(self.epochs, 1)
            bar = "#" * int(20 * done) + "-" * (20 - int(20 * done))
            speed = self.examples / max(time.perf_counter() - self.started, 1e-9)
            self.stream.write(f"\r\x1b[K[{bar}] {describe(record, self.metric)}  {speed:,.0f} ex/s")
            self.stream.flush()
            self.drawn = True
        elif record["epoch"] % self.every == 0 or record["epoch"] in (1, self.epochs):
            self.line(describe(record, self.metric))

    def line(self, text):
        """A line of its own (below the redrawn one on a terminal)."""
        self.close()
        print(text, file=self.stream, flush=True)

    def close(self):
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def printable(message):
    """An error on one line: line breaks and other control characters shown escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(message))


def main(module, argv=None):
    """Command line of a standalone script: train on a .npz file, print progress, save weights.

    Settings come from the flags, else from the model file's `training` dict (the script's
    TRAINING, written by `nncompile generate`), else DEFAULTS.
    """
    defaults = dict(getattr(module, "TRAINING", None) or {})
    given = ", ".join(f"{k}={v!r}" for k, v in sorted(defaults.items()))
    parser = argparse.ArgumentParser(
        description=f"Train model {module.MODEL!r} (generated by nncompile).",
        epilog=f"Defaults from the model file's training dict: {given}." if given else None)
    parser.add_argument("--data", required=True, help=".npz file with arrays X and y")
    add_training_flags(parser, tuple(module.OPTIMIZERS))
    args = parser.parse_args(argv)
    progress, engine, cluster, writer = None, None, None, True
    try:
        s, overrides = settings_from(args, defaults)
        check_outputs(args)
        if args.distributed or args.overlap:
            cluster = connect_for(module, args)
            writer = cluster.rank == 0  # rank 0 alone prints and writes
        X, T = _load_data(module, args.data)
        X, T, validation = validation_split(X, T, s["val_split"], s["seed"])
        s["optimizer"], overrides = torch_style(s["optimizer"], overrides)
        engine = Engine(module, init_flat(module, s["seed"], s["init"]))
        engine.reset_state(s["optimizer"])
        hyper = hyperparameters(module, s["optimizer"], overrides)
        monitor = None if args.no_diagnostics else Monitor(module, X, T)
        progress = _Progress(module.METRIC, s["epochs"], X.shape[0], args.quiet or args.json or not writer)
        history, best_epoch, stopped = fit(
            engine, X, T, s["mode"], s["batch_size"], s["epochs"], s["lr"], s["optimizer"], hyper, s["seed"],
            s["schedule"], validation, s["patience"], s["min_delta"], False, progress,
            s["step_size"], s["gamma"], monitor, args.checkpoint and Checkpoint(args.checkpoint),
            s["checkpoint_every"], args.resume and Checkpoint(args.resume), None, cluster)
    except KeyboardInterrupt:
        _close(progress)
        saved = f"; checkpoint saved to {args.checkpoint} (continue with --resume)" if args.checkpoint else ""
        if cluster is not None:
            saved = "; the last checkpoint written resumes" if args.checkpoint else ""
        if writer:
            print(f"interrupted{saved}", file=sys.stderr)
        return 130
    except Diverged as exc:
        _close(progress)
        if not writer:  # every process diverged alike: rank 0 says so
            return 1
        message = printable(exc)
        if args.save:  # the weights of the last good epoch, which fit restored
            _save_weights(module, engine, args.save)
            message += f"; saved them to {args.save}"
        if args.json:
            print(json.dumps({"error": message, "history": exc.history}, indent=2))
        print(f"error: {message}", file=sys.stderr)
        return 1
    except (TrainingError, CheckpointError, PlotUnavailable, OSError, KeyError, ValueError) as exc:
        _close(progress)
        if cluster is None or speaks(exc):
            print(f"error: {printable(exc)}", file=sys.stderr)
        if getattr(exc, "lost", None):
            end_after_lost_rank(1)
        return 1 if getattr(exc, "lost", None) else 2
    _close(progress)
    if not writer:
        return 0
    summary = final_summary(engine, X, T, validation, history, best_epoch, stopped)
    if args.json:
        print(json.dumps({"history": history, "summary": summary}, indent=2))
    else:
        print("final: " + describe(dict(summary, loss=summary["train_loss"], epoch=summary["epochs"]),
                                   module.METRIC))
    try:
        if args.save:  # first: a plot that fails must not cost the weights
            _save_weights(module, engine, args.save)
            print(f"saved weights to {args.save}", file=sys.stderr)
        if args.plot:
            write_bytes_atomic(args.plot, render_png(history, module.METRIC, f"{module.MODEL} ({s['optimizer']}, "
                                                                            f"lr {s['lr']:g})"))
            print(f"saved the training curves to {args.plot}", file=sys.stderr)
    except (PlotUnavailable, OSError) as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return 2
    return 0


def _close(progress):
    if progress is not None:
        progress.close()


def _load_data(module, path):
    """(inputs, encoded targets) from a .npz file holding X and y."""
    if not os.path.exists(path) and path in ("xor", "moons", "spirals", "digits"):
        raise TrainingError(f"{path} is one of nncompile's built-in data sets; a script reads .npz files: write it "
                            f"with python -c \"import nncompile as nc; nc.data.save_npz('{path}', '{path}.npz')\"")
    with np.load(path, allow_pickle=False) as data:
        X, y = data["X"], data["y"]
    X = check_inputs(X, module.INPUT_DIM, module.DTYPE, getattr(module, "INPUT_SHAPES", ()))
    return X, encode_targets(y, module.TARGET_ENCODING, module.OUTPUT_DIM, module.DTYPE, X.shape[0])


def _save_weights(module, engine, path):
    """The engine's parameters as named arrays in a .npz (written atomically)."""
    flat = to_host(engine.params)
    weights = {name: flat[offset:offset + int(np.prod(shape))].reshape(shape)
               for name, shape, offset, _ in module.PARAMS}
    save_npz_atomic(path, weights)


def connect_for(module, args):
    """The processes of a --distributed run; NCCL on the GPU for a CUDA program (before any GPU memory)."""
    if args.overlap and not args.distributed:
        raise TrainingError("--overlap goes with --distributed")
    cluster = connect(overlap=args.overlap)
    cluster.report_signals(sys.argv[0])
    if getattr(module, "BACKEND", "numpy") == "cuda":
        cluster.use_nccl(module)
    if cluster.rank == 0 and not (args.quiet or args.json):
        print(cluster.describe(), file=sys.stderr)
    return cluster


def final_summary(engine, X, T, validation, history, best_epoch, stopped):
    """Loss and metric of the final weights (the best ones after early stopping) on each data set."""
    metric = engine.module.METRIC
    summary = {"epochs": len(history), "updates": sum(r["updates"] for r in history), "best_epoch": best_epoch,
               "stopped_early": stopped}
    sets = [("train", (X, T))] + ([("val", validation)] if validation is not None else [])
    for prefix, (inputs, targets) in sets:
        summary[prefix + "_loss"], value = engine.evaluate(inputs, targets)
        if metric:
            summary[prefix + "_" + metric] = value
    return summary
