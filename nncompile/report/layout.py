"""A layered drawing of a directed acyclic graph (Sugiyama's method, kept small).

1. layers: each node one below its lowest-placed predecessor (longest path), and each
   source (an input, the targets) pulled down to just above its first consumer;
2. edges that skip layers get a dummy node on every layer they cross, so they route
   around boxes rather than through them;
3. order within layers: for small graphs every order is tried and the one with the fewest
   crossings kept; larger ones get barycentre sweeps down and up (the order with the fewest
   crossings seen), then swaps of neighbours while a swap removes a crossing;
4. x positions: nodes in each layer placed at the mean centre of their neighbours below
   (rounds going up) or above (rounds going down, the last one), pushed apart where they
   would overlap: a chain ends straight, a join centred under what it joins.
The result is boxes and edge routes (polylines) in the drawing's own units.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

SWEEPS = 12          # barycentre passes (down and up count one each)
EXHAUSTIVE = 720     # orders tried one by one at most (small networks get the fewest crossings there are)
ROUNDS = 6           # x-position rounds
GAP_X = 28.0         # between boxes of a layer
GAP_Y = 46.0         # between layers
DUMMY_WIDTH = 12.0


@dataclass(frozen=True)
class Box:
    """A placed node: centre x, top y, size, layer and place in its layer."""

    x: float
    y: float
    width: float
    height: float
    layer: int
    order: int

    @property
    def left(self) -> float:
        return self.x - self.width / 2

    @property
    def right(self) -> float:
        return self.x + self.width / 2

    @property
    def bottom(self) -> float:
        return self.y + self.height


@dataclass
class Drawing:
    """Boxes by node id, one route (list of points) per edge in the order given, overall size."""

    boxes: dict[str, Box]
    routes: list[list[tuple[float, float]]]
    width: float
    height: float
    crossings: int
    layers: list[list[str]] = field(default_factory=list)   # with dummies (ids starting with "\0")


def topological(nodes: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Nodes in an order where every edge points forward; ValueError naming a node on a cycle."""
    known = set(nodes)
    for src, dst in edges:
        for end in (src, dst):
            if end not in known:
                raise ValueError(f"edge {src} -> {dst} names an unknown node {end!r}")
    indegree = {n: 0 for n in nodes}
    for _, dst in edges:
        indegree[dst] += 1
    ready = [n for n in nodes if indegree[n] == 0]
    order: list[str] = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for src, dst in edges:
            if src == node:
                indegree[dst] -= 1
                if indegree[dst] == 0:
                    ready.append(dst)
    if len(order) != len(nodes):
        stuck = next(n for n in nodes if n not in order)
        raise ValueError(f"the graph has a cycle through {stuck!r}")
    return order


def assign_layers(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layers (every edge goes down at least one layer); sources moved next to their consumers."""
    layer: dict[str, int] = {}
    for node in topological(nodes, edges):
        preds = [layer[s] for s, d in edges if d == node]
        layer[node] = max(preds) + 1 if preds else 0
    for node in nodes:
        succs = [layer[d] for s, d in edges if s == node]
        if succs and not any(d == node for _, d in edges):
            layer[node] = min(succs) - 1
    return layer


def _with_dummies(nodes: list[str], edges: list[tuple[str, str]], layer: dict[str, int]) -> tuple[
        list[list[str]], list[tuple[str, str]], list[list[str]]]:
    """Layers with a dummy node on each layer an edge crosses; short edges; each edge's chain of nodes."""
    rows: list[list[str]] = [[] for _ in range(max(layer.values()) + 1)]
    for node in nodes:
        rows[layer[node]].append(node)
    short: list[tuple[str, str]] = []
    chains: list[list[str]] = []
    for i, (src, dst) in enumerate(edges):
        chain = [src]
        for depth in range(layer[src] + 1, layer[dst]):
            dummy = f"\0{i}.{depth}"
            rows[depth].append(dummy)
            chain.append(dummy)
        chain.append(dst)
        short += list(zip(chain, chain[1:]))
        chains.append(chain)
    return rows, short, chains


def crossings(rows: list[list[str]], edges: list[tuple[str, str]]) -> int:
    """Edge crossings between consecutive layers for this order."""
    pos = {n: i for row in rows for i, n in enumerate(row)}
    level = {n: k for k, row in enumerate(rows) for n in row}
    total = 0
    for k in range(len(rows) - 1):
        between = [(pos[s], pos[d]) for s, d in edges if level[s] == k and level[d] == k + 1]
        total += sum(1 for i, (a, b) in enumerate(between) for c, d in between[i + 1:] if (a - c) * (b - d) < 0)
    return total


def _sweep(rows: list[list[str]], edges: list[tuple[str, str]], downward: bool) -> list[list[str]]:
    """One barycentre pass: each layer sorted by the mean place of its neighbours in the layer before."""
    rows = [list(r) for r in rows]
    order = range(1, len(rows)) if downward else range(len(rows) - 2, -1, -1)
    for k in order:
        fixed = {n: i for i, n in enumerate(rows[k - 1 if downward else k + 1])}
        rows[k] = [n for _, _, n in sorted((_barycentre(n, i, fixed, edges, downward), i, n)
                                           for i, n in enumerate(rows[k]))]
    return rows


def _barycentre(node: str, place: int, fixed: dict[str, int], edges: list[tuple[str, str]], downward: bool) -> float:
    """Mean place of `node`'s neighbours in the fixed layer (its own place when it has none there)."""
    near = [fixed[s] for s, d in edges if d == node and s in fixed] if downward else \
        [fixed[d] for s, d in edges if s == node and d in fixed]
    return sum(near) / len(near) if near else float(place)


def _between(rows: list[list[str]], edges: list[tuple[str, str]], k: int) -> int:
    """Crossings of the edges between layer k and layer k + 1."""
    upper = {n: i for i, n in enumerate(rows[k])}
    lower = {n: i for i, n in enumerate(rows[k + 1])}
    pairs = [(upper[s], lower[d]) for s, d in edges if s in upper and d in lower]
    return sum(1 for i, (a, b) in enumerate(pairs) for c, d in pairs[i + 1:] if (a - c) * (b - d) < 0)


def _transpose(rows: list[list[str]], edges: list[tuple[str, str]]) -> list[list[str]]:
    """Swap neighbours within a layer while a swap removes crossings (Graphviz dot's local search)."""
    rows = [list(r) for r in rows]
    improved = True
    while improved:
        improved = False
        for k, row in enumerate(rows):
            near = [j for j in (k - 1, k) if 0 <= j < len(rows) - 1]
            for i in range(len(row) - 1):
                before = sum(_between(rows, edges, j) for j in near)
                row[i], row[i + 1] = row[i + 1], row[i]
                if sum(_between(rows, edges, j) for j in near) < before:
                    improved = True
                else:
                    row[i], row[i + 1] = row[i + 1], row[i]
    return rows


def _exhaustive(rows: list[list[str]], edges: list[tuple[str, str]]) -> list[list[str]] | None:
    """The order with the fewest crossings, by trying them all, when there are at most EXHAUSTIVE."""
    count = 1
    for row in rows:
        count *= math.factorial(len(row))
    if count > EXHAUSTIVE:
        return None
    orders = itertools.product(*(itertools.permutations(row) for row in rows))
    return [list(r) for r in min(orders, key=lambda o: crossings([list(r) for r in o], edges))]


def order_layers(rows: list[list[str]], edges: list[tuple[str, str]]) -> list[list[str]]:
    """The fewest crossings: every order tried for small graphs; else barycentre sweeps, then swaps."""
    exact = _exhaustive(rows, edges)
    if exact is not None:
        return exact
    return heuristic_order(rows, edges)


def heuristic_order(rows: list[list[str]], edges: list[tuple[str, str]]) -> list[list[str]]:
    """Barycentre sweeps keeping the best order seen, then neighbour swaps (never more crossings than given)."""
    best, best_count = rows, crossings(rows, edges)
    current = rows
    for sweep in range(SWEEPS):
        current = _sweep(current, edges, downward=sweep % 2 == 0)
        count = crossings(current, edges)
        if count < best_count:
            best, best_count = current, count
    return _transpose(best, edges)


def _spread(row: list[str], wanted: dict[str, float], width: dict[str, float]) -> dict[str, float]:
    """Centres as close to `wanted` as the order allows, boxes at least GAP_X apart."""
    xs: dict[str, float] = {}
    edge = -float("inf")
    for node in row:
        x = max(wanted[node], edge + width[node] / 2)
        xs[node] = x
        edge = x + width[node] / 2 + GAP_X
    # shift back the overlap pushed to the right: centre the row on the mean of what was wanted
    drift = sum(xs[n] - wanted[n] for n in row) / len(row)
    edge = float("inf")
    for node in reversed(row):
        x = min(xs[node] - drift, edge - width[node] / 2)
        xs[node] = x
        edge = x - width[node] / 2 - GAP_X
    return xs


def _positions(rows: list[list[str]], edges: list[tuple[str, str]], width: dict[str, float]) -> dict[str, float]:
    xs: dict[str, float] = {}
    for row in rows:
        wanted, edge = {}, 0.0
        for node in row:
            wanted[node] = edge + width[node] / 2
            edge += width[node] + GAP_X
        xs.update(_spread(row, wanted, width))
    for rnd in range(ROUNDS):  # up, down, ..., down: a chain ends straight under its first node
        downward = rnd % 2 == 1
        for row in (rows if downward else reversed(rows)):
            wanted = {}
            for node in row:
                near = [xs[s] for s, d in edges if d == node] if downward else [xs[d] for s, d in edges if s == node]
                wanted[node] = sum(near) / len(near) if near else xs[node]
            xs.update(_spread(row, wanted, width))
    return xs


def _port(box: Box, chains: list[list[str]], index: int, end: int, boxes: dict[str, Box]) -> float:
    """Where edge `index` leaves (end 0) or enters (end -1) its box: edges sharing a side are spread
    over the middle of it, in the order of the nodes at their other end, so they do not cross there."""
    node = chains[index][end]
    other = 1 if end == 0 else -2
    sharing = sorted((boxes[c[other]].x, j) for j, c in enumerate(chains) if c[end] == node)
    if len(sharing) == 1:
        return box.x
    place = [j for _, j in sharing].index(index)
    return box.left + box.width * (0.2 + 0.6 * place / (len(sharing) - 1))


def layout(nodes: list[str], edges: list[tuple[str, str]], sizes: dict[str, tuple[float, float]],
           margin: float = 12.0) -> Drawing:
    """Place `nodes` (ids) of size `sizes[id]` = (width, height) with `edges` (src, dst) pointing down."""
    if not nodes:
        return Drawing({}, [], 2 * margin, 2 * margin, 0)
    layer = assign_layers(nodes, edges)
    rows, short, chains = _with_dummies(nodes, edges, layer)
    rows = order_layers(rows, short)
    width = {n: (sizes[n][0] if n in sizes else DUMMY_WIDTH) for row in rows for n in row}
    xs = _positions(rows, short, width)
    left = min(xs[n] - width[n] / 2 for n in xs)
    heights = [max((sizes[n][1] for n in row if n in sizes), default=0.0) for row in rows]
    tops, y = [], margin
    for h in heights:
        tops.append(y)
        y += h + GAP_Y
    boxes = {}
    for k, row in enumerate(rows):
        for i, node in enumerate(row):
            w, h = sizes.get(node, (DUMMY_WIDTH, heights[k]))
            boxes[node] = Box(xs[node] - left + margin, tops[k] + (heights[k] - h) / 2, w, h, k, i)
    routes = []
    for i, chain in enumerate(chains):
        first, last = boxes[chain[0]], boxes[chain[-1]]
        points = [(_port(first, chains, i, 0, boxes), first.bottom)]
        points += [(boxes[d].x, boxes[d].y + boxes[d].height / 2) for d in chain[1:-1]]
        routes.append(points + [(_port(last, chains, i, -1, boxes), last.y)])
    real = {n: b for n, b in boxes.items() if not n.startswith("\0")}
    total_width = max(b.right for b in boxes.values()) + margin
    return Drawing(real, routes, total_width, y - GAP_Y + margin, crossings(rows, short), rows)
