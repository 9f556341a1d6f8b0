"""Why a network does not learn, in numbers and words: saturated and dead units, near-linear
layers, vanishing or exploding gradients.

The compiled program's `diagnose()` entry point runs the forward and backward pass on a
fixed sample of the training data and writes f'(z) of every hidden activation into its
own buffer (the module's PROBES table names them).  This module turns those buffers and
the gradient vector into fractions, norms and warnings with NumPy alone: `nncompile
generate` embeds it in standalone scripts.  It draws no random numbers and writes no
parameters, so a run with diagnostics ends with the same weights as one without.
"""
import math

import numpy as np

if __package__ == "nncompile.runtime":  # in a generated script engine.py is embedded above this file
    from .engine import to_host

#: |f'(z)| below this counts as no gradient: a saturated sigmoid/tanh unit, an inactive ReLU.
FLAT = 0.01
#: A unit whose f'(z) varies less than this (std / mean over the sample) acts linearly.
LINEAR_SPREAD = 0.05
SATURATED_WARN = 0.5        # fraction of (example, unit) pairs saturated, in one layer
DEAD_WARN = 0.4             # fraction of units dead in one layer
LINEAR_WARN = 0.9           # fraction of units acting linearly in one layer
VANISHING_RATIO = 1e-3      # smallest / largest layer gradient norm
EXPLODING_NORM = 1e3        # a layer gradient norm above this, or above 10 and ...
EXPLODING_GROWTH = 100.0    # ... this many times its value at the previous check


class Monitor:
    """Runs `diagnose()` at chosen epochs and adds "diagnostics" and "warnings" to the record.

    `rows` evenly spaced examples (no random numbers drawn, every part of data sorted by
    class represented) form the sample.
    Checks run at the first and last epoch and every `every` epochs (default: about 50
    checks per run at most).  Each warning is a dict with "layer", "problem" and "message";
    problems are "saturated", "dead", "linear", "linear_model", "vanishing", "exploding".
    """

    def __init__(self, module, X, T, rows=256, every=None):
        step = max(1, X.shape[0] // rows)
        self.module, self.X, self.T, self.every = module, X[::step][:rows], T[::step][:rows], every
        self.layers = _dense_layers(module.PARAMS, getattr(module, "BUFFERS", ()))
        self.previous = None  # gradient norms at the previous check

    def due(self, epoch, epochs):
        every = self.every or max(1, epochs // 50)
        return epoch == 1 or epoch == epochs or epoch % every == 0

    def observe(self, engine, record, epochs):
        """Diagnose the current parameters if this epoch is due; adds to `record` in place."""
        if not self.due(record["epoch"], epochs):
            return
        report = self.measure(engine)
        record["diagnostics"] = report
        record["warnings"] = self.judge(report)

    def measure(self, engine):
        """Per layer: activation statistics (for probed layers) and the gradient norm."""
        ws = engine.workspace(self.X.shape[0])
        ws.X[...] = engine.device(self.X)
        ws.T[...] = engine.device(self.T)
        ws.diagnose()
        grads = to_host(engine.grads)
        report = {name: {"grad_norm": float(np.sqrt(sum(np.vdot(grads[a:b], grads[a:b]) for a, b in spans)))}
                  for name, spans in self.layers.items()}
        for (layer, activation, _, kind), fprime in zip(self.module.PROBES, ws.probes):
            # an activation after a layer without parameters (an Add, say) gets an entry of its own
            report.setdefault(layer, {}).update(activation=activation, kind=kind, **unit_statistics(to_host(fprime)))
        return report

    def judge(self, report):
        """Warnings, in words, for what the numbers say went wrong."""
        found = []
        probed = [name for name, r in report.items() if "kind" in r]
        for name in probed:
            found += _unit_warnings(name, report[name])
        linear = [w for w in found if w["problem"] == "linear"]
        if probed and len(linear) == len(probed):
            found.append(_warning("network", "linear_model",
                                  "every hidden layer acts linearly, so the network computes an (almost) linear "
                                  "function of its input and cannot fit non-linear structure"))
        norms = {name: r["grad_norm"] for name, r in report.items() if "grad_norm" in r}
        found += _gradient_warnings(norms, self.previous)
        self.previous = norms
        return found

    def state(self):
        return {"previous": self.previous}

    def load_state(self, state):
        self.previous = (state or {}).get("previous")


def unit_statistics(fprime):
    """Fractions for one layer from f'(z) of shape (examples, units); for images (examples, C, H, W) a unit
    is a channel (a filter), seen at every pixel of every example."""
    if fprime.ndim == 4:
        fprime = np.moveaxis(fprime, 1, 3).reshape(-1, fprime.shape[1])
    flat = np.abs(fprime) < FLAT
    dead = flat.all(axis=0)
    mean = np.abs(fprime.mean(axis=0))
    spread = fprime.std(axis=0) / np.maximum(mean, 1e-300)
    linear = (spread < LINEAR_SPREAD) & ~dead
    return {"saturated": float(flat.mean()), "dead": float(dead.mean()), "linear": float(linear.mean())}


def _warning(layer, problem, message):
    return {"layer": layer, "problem": problem, "message": message}


def _unit_warnings(name, r):
    where = f"{name} ({r['activation']})"
    found = []
    if r["kind"] == "saturating" and r["saturated"] >= SATURATED_WARN:
        found.append(_warning(name, "saturated", (
            f"{where}: {100 * r['saturated']:.0f}% of unit activations are saturated (|f'(z)| < {FLAT:g}), so "
            "almost no gradient flows through them; start from smaller weights (init 'xavier'), scale the "
            "inputs, or lower the learning rate")))
    elif r["kind"] != "saturating" and r["dead"] >= DEAD_WARN:
        found.append(_warning(name, "dead", (
            f"{where}: {100 * r['dead']:.0f}% of units are dead (f'(z) = 0 on every example checked) and can no "
            "longer learn; lower the learning rate, use init 'he', or use LeakyReLU")))
    if r["linear"] >= LINEAR_WARN:
        found.append(_warning(name, "linear", (
            f"{where}: {100 * r['linear']:.0f}% of units work in a linear region (f'(z) nearly constant over "
            "the data), so the layer acts as a linear map; its weights may be too small (init 'normal' "
            "gives N(0, 0.01^2)) or its inputs too narrow")))
    return found


def _gradient_warnings(norms, previous):
    found = []
    largest = max(norms, key=norms.get)
    smallest = min(norms, key=norms.get)
    top = norms[largest]
    if top > 0 and norms[smallest] < VANISHING_RATIO * top:
        found.append(_warning(smallest, "vanishing", (
            f"gradients vanish: {smallest}'s gradient norm is {norms[smallest]:.2g}, "
            f"{norms[smallest] / top:.1g} times {largest}'s ({top:.2g}); the layers before it barely learn")))
    for name, norm in norms.items():
        before = (previous or {}).get(name)
        grew = before is not None and before > 0 and norm > max(EXPLODING_GROWTH * before, 10.0)
        if norm > EXPLODING_NORM or grew or not math.isfinite(norm):
            change = f" ({norm / before:.0f} times its value at the previous check)" if grew else ""
            found.append(_warning(name, "exploding", (
                f"gradients explode: {name}'s gradient norm is {norm:.2g}{change}; lower the learning rate")))
    return found


def _dense_layers(params, buffers=()):
    """Layer name -> [(start, stop)] spans of the flat gradient vector holding its parameters (not buffers)."""
    layers = {}
    for name, shape, offset, _ in params:
        if name in buffers:
            continue
        size = 1
        for d in shape:
            size *= d
        layers.setdefault(name.rsplit(".", 1)[0], []).append((offset, offset + size))
    return layers


def new_warnings(record, previous):
    """Warnings in `record` that were not active at the previous check (to print once)."""
    seen = {(w["layer"], w["problem"]) for w in (previous or ())}
    return [w for w in record.get("warnings", ()) if (w["layer"], w["problem"]) not in seen]


def headline(report):
    """The worst layer's saturation (sigmoid/tanh) and dead fraction (ReLU-like), for progress lines."""
    shown = {}
    for key, kind, label in (("saturated", "saturating", "sat"), ("dead", "rectifier", "dead")):
        values = [r[key] for r in report.values() if r.get("kind") == kind]
        if values:
            shown[label] = f"{100 * max(values):.0f}%"
    return shown


def summary_rows(report):
    """Table rows (layer, activation, saturated, dead, linear, gradient norm) for a report."""
    rows = []
    for name, r in report.items():
        if "kind" in r:
            cells = [f"{100 * r[k]:.1f}%" for k in ("saturated", "dead", "linear")]
        else:
            cells = ["-", "-", "-"]
        norm = f"{r['grad_norm']:.2e}" if "grad_norm" in r else "-"
        rows.append([name, r.get("activation", "-"), *cells, norm])
    return rows
