"""Layer kinds as the derivation knows them: one `Rule` per kind, found by the layer's class.

A rule writes a node's forward ops and record (`forward`) and, given the buffer holding
the δ at the node's output, the ops of its backward pass (`backward`), returning what it
sends to each input that needs a δ (`Sent`).  The graph walk (`walk`) does the rest: the
order, fan-out sums, which inputs need a δ.  A new kind of layer is a declaration in
`dsl`, a rule here (`register`), and, for ops the IR does not have yet, a lowering in
each backend.
"""
from __future__ import annotations

from . import conv, dense, dropout, elementwise, merge, normalization, pooling  # noqa: F401  (each registers its rule)
from .base import Rule, Sent, register, rule_for, target

__all__ = ["Rule", "Sent", "register", "rule_for", "target"]
