"""The network diagram's layout: layers follow the edges, boxes never overlap, chains stand
straight, edges that skip layers go round the boxes, and the ordering removes crossings a
brute-force search says can be removed."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import nncompile as nc
from nncompile import nn
from nncompile.report.diagram import diagram
from nncompile.report.layout import GAP_X, assign_layers, crossings, heuristic_order, layout, order_layers
from nncompile.report.network import Edge, Network, Node, from_model, shape_text

RESIDUAL = (["x", "dense1", "tanh1", "add", "norm", "dense2", "t", "loss"],
            [("x", "dense1"), ("dense1", "tanh1"), ("tanh1", "add"), ("x", "add"), ("add", "norm"),
             ("norm", "dense2"), ("dense2", "loss"), ("t", "loss")])


def _sizes(nodes: list[str]) -> dict[str, tuple[float, float]]:
    return {n: (60.0 + 10 * (i % 3), 40.0) for i, n in enumerate(nodes)}


def _check_drawing(nodes: list[str], edges: list[tuple[str, str]]) -> object:
    drawing = layout(nodes, edges, _sizes(nodes))
    boxes = drawing.boxes
    for src, dst in edges:
        assert boxes[dst].layer > boxes[src].layer and boxes[dst].y >= boxes[src].bottom
    for a, b in itertools.combinations(nodes, 2):
        if boxes[a].layer == boxes[b].layer:
            gap = max(boxes[b].left - boxes[a].right, boxes[a].left - boxes[b].right)
            assert gap >= GAP_X - 1e-6, f"{a} and {b} overlap"
    for (src, dst), route in zip(edges, drawing.routes):
        assert route[0][1] == pytest.approx(boxes[src].bottom) and route[-1][1] == pytest.approx(boxes[dst].y)
        assert boxes[src].left <= route[0][0] <= boxes[src].right
        assert boxes[dst].left <= route[-1][0] <= boxes[dst].right
        for (x0, y0), (x1, y1) in zip(route, route[1:]):         # segments pass no box but their ends'
            for t in np.linspace(0.05, 0.95, 19):
                x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
                inside = [n for n, b in boxes.items() if b.left < x < b.right and b.y < y < b.bottom]
                assert not set(inside) - {src, dst}, f"edge {src} -> {dst} runs through {inside}"
    return drawing


def test_a_chain_stands_straight_and_the_targets_sit_beside_the_output() -> None:
    model = nn.Sequential(nn.Dense(8), nn.Tanh(), nn.Dense(3), nn.Softmax(), input_dim=4, loss=nn.CrossEntropy())
    net = from_model(model)
    nodes, edges = [n.id for n in net.nodes], [(e.src, e.dst) for e in net.edges]
    drawing = _check_drawing(nodes, edges)
    chain = ["input", "dense1", "tanh1", "dense2", "softmax1"]
    assert len({round(drawing.boxes[n].x, 6) for n in chain}) == 1
    assert drawing.boxes["target"].layer == drawing.boxes["loss"].layer - 1 == drawing.boxes["softmax1"].layer
    assert drawing.crossings == 0


def test_a_functional_model_is_drawn_as_its_graph() -> None:
    """A residual block with a shared layer and two inputs: one box per call, an edge per read."""
    x, side = nn.Input(4, name="x"), nn.Input(2, name="side")
    shared = nn.Dense(4)
    h = nn.Tanh()(shared(x))
    r = nn.Tanh()(shared(h))
    y = nn.Dense(3)(nn.LayerNorm()(nn.Concat()(h + r, side)))
    model = nn.Model([x, side], y, loss=nn.SoftmaxCrossEntropy(), name="res")
    net = from_model(model)
    ids = [n.id for n in net.nodes]
    assert ids[:3] == ["input1", "input2", "dense1"] and "dense1@2" in ids and "add1" in ids and "concat1" in ids
    edges = {(e.src, e.dst) for e in net.edges}
    assert {("input1", "dense1"), ("tanh1", "dense1@2"), ("tanh1", "add1"), ("tanh2", "add1"),
            ("add1", "concat1"), ("input2", "concat1"), ("concat1", "layernorm1"), ("dense2", "loss"),
            ("target", "loss")} <= edges
    kinds = {n.id: n.kind for n in net.nodes}
    assert kinds["add1"] == kinds["concat1"] == "merge" and kinds["layernorm1"] == "norm"
    assert net.node("dense1").params == 4 * 4 + 4 and net.node("dense1@2").params == 0   # shared: counted once
    drawing = _check_drawing(ids, sorted(edges))
    assert drawing.boxes["add1"].layer > drawing.boxes["tanh2"].layer > drawing.boxes["tanh1"].layer


def test_a_skip_connection_routes_round_the_layers_it_skips() -> None:
    nodes, edges = RESIDUAL
    drawing = _check_drawing(nodes, edges)
    assert assign_layers(nodes, edges)["add"] == 3
    assert len(drawing.routes[3]) == 4            # x -> add crosses two layers: two bends
    assert drawing.crossings == 0


def test_longest_path_layers() -> None:
    nodes = ["a", "b", "c", "d"]
    layers = assign_layers(nodes, [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d"), ("a", "d")])
    assert layers == {"a": 0, "b": 1, "c": 2, "d": 3}


def _brute_force_minimum(rows: list[list[str]], edges: list[tuple[str, str]]) -> int:
    return min(crossings([list(p) for p in perm], edges) for perm in itertools.product(
        *(itertools.permutations(r) for r in rows)))


def _segment_crossings(rows: list[list[str]], edges: list[tuple[str, str]]) -> int:
    """Crossings counted geometrically: straight segments between consecutive layers that intersect."""
    pos = {n: (i, k) for k, row in enumerate(rows) for i, n in enumerate(row)}
    segs = [(pos[s], pos[d]) for s, d in edges]
    count = 0
    for ((a0, k0), (a1, _)), ((b0, j0), (b1, _)) in itertools.combinations(segs, 2):
        if k0 == j0 and a0 != b0 and a1 != b1 and (a0 < b0) != (a1 < b1):
            count += 1
    return count


def _random_layers(seed: int, widths: range, edges_per_layer: int, layers: int = 3) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    rows = [[f"{k}.{i}" for i in range(rng.integers(widths.start, widths.stop))] for k in range(layers)]
    edges = sorted({(str(rng.choice(rows[k])), str(rng.choice(rows[k + 1])))
                    for k in range(layers - 1) for _ in range(edges_per_layer)})
    return rows, edges


@pytest.mark.parametrize("seed", range(12))
def test_small_graphs_get_the_fewest_crossings_there_are(seed: int) -> None:
    rows, edges = _random_layers(seed, range(2, 4), 5)
    assert crossings(rows, edges) == _segment_crossings(rows, edges)
    best = order_layers(rows, edges)
    assert sorted(map(sorted, best)) == sorted(map(sorted, rows))
    assert crossings(best, edges) == _brute_force_minimum(rows, edges) == _segment_crossings(best, edges)


@pytest.mark.parametrize("seed", range(6))
def test_the_heuristic_for_large_graphs_never_adds_crossings(seed: int) -> None:
    rows, edges = _random_layers(seed, range(5, 9), 12, layers=4)
    start = crossings(rows, edges)
    best = heuristic_order(rows, edges)
    assert sorted(map(sorted, best)) == sorted(map(sorted, rows))
    assert crossings(best, edges) <= start and crossings(best, edges) == _segment_crossings(best, edges)
    assert crossings(best, edges) < start or start == 0


def test_a_crossing_in_the_declared_order_is_removed() -> None:
    rows = [["a", "b"], ["c", "d"]]
    edges = [("a", "d"), ("b", "c")]
    assert crossings(rows, edges) == 1
    assert crossings(order_layers(rows, edges), edges) == 0


def test_bad_graphs_are_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        layout(["a", "b"], [("a", "b"), ("b", "a")], {"a": (10, 10), "b": (10, 10)})
    with pytest.raises(ValueError, match="unknown node 'c'"):
        layout(["a", "b"], [("a", "c")], {"a": (10, 10), "b": (10, 10)})


def test_the_diagram_of_a_model_names_every_layer_its_shape_and_parameter_count() -> None:
    model = nn.Sequential(nn.Dense(32), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64, loss=nn.CrossEntropy(),
                          l2=1e-4, name="digits_like")
    prog = nc.compile(model)
    view = diagram(from_model(model))
    nodes = {n.id: n for n in view.nodes}
    assert list(nodes) == ["input", "dense1", "tanh1", "dense2", "softmax1", "target", "loss"]
    assert sum(n.params for n in from_model(model).nodes) == prog.n_params
    assert ("shape", "N×32") in nodes["tanh1"].lines and ("detail", "64 → 32") in nodes["dense1"].lines
    assert ("detail", "l2 0.0001") in nodes["loss"].lines
    assert [e.label for e in view.edges] == ["N×64", "N×32", "N×32", "N×10", "N×10", "N×10"]
    for n in view.nodes:
        assert n.width >= max(len(text) for _, text in n.lines) * 7.0


def test_shapes_are_not_assumed_to_be_widths() -> None:
    net = Network("conv", [Node("x", "input", "X", (3, 32, 32)), Node("c", "conv", "conv1", (8, 30, 30)),
                           Node("f", "reshape", "flatten", (7200,)), Node("o", "mystery", "head", (10,))],
                  [Edge("x", "c", shape_text((3, 32, 32))), Edge("c", "f"), Edge("f", "o")])
    view = diagram(net)
    assert view.edges[0].label == "N×3×32×32"
    assert ("shape", "N×8×30×30") in view.nodes[1].lines
    assert view.nodes[3].kind == "layer"           # an unknown kind is drawn as a plain layer
