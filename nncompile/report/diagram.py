"""The network diagram's geometry: boxes with their lines of text, and edges as SVG paths.

`network.Network` says what to draw, `layout.layout` where; this module sizes each box for
its text and turns edge routes into smooth paths with their labels.  The SVG itself is
written by the report's template.
"""
from __future__ import annotations

from dataclasses import dataclass

from .layout import layout
from .network import KINDS, Network, shape_text

CHAR_WIDTH = 7.0     # average advance of the diagram's 12px sans-serif text
LINE_HEIGHT = 15.0
PAD = 10.0


@dataclass(frozen=True)
class NodeView:
    """A placed box: its corner, size, kind (for its colour) and lines of text."""

    id: str
    kind: str
    x: float            # left
    y: float            # top
    width: float
    height: float
    lines: tuple[tuple[str, str], ...]   # (css class, text), first line the name
    title: str

    @property
    def text(self) -> tuple[tuple[str, str, float, float], ...]:
        """(css class, text, x, y) of each line, centred in the box."""
        return tuple((cls, text, self.x + self.width / 2, self.y + PAD + 7 + i * LINE_HEIGHT)
                     for i, (cls, text) in enumerate(self.lines))


@dataclass(frozen=True)
class EdgeView:
    """An edge as an SVG path, with its label near its start."""

    path: str
    label: str
    label_x: float
    label_y: float


@dataclass(frozen=True)
class DiagramView:
    """The whole diagram: size, boxes, edges, and the crossings its layout could not avoid."""

    name: str
    width: float
    height: float
    nodes: tuple[NodeView, ...]
    edges: tuple[EdgeView, ...]
    crossings: int


def _lines(node: object) -> tuple[tuple[str, str], ...]:
    lines = [("name", node.name)]
    if node.detail:
        lines.append(("detail", node.detail))
    if node.shape:
        lines.append(("shape", shape_text(node.shape)))
    if node.params:
        lines.append(("params", f"{node.params:,} parameters"))
    return tuple(lines)


def _size(lines: tuple[tuple[str, str], ...]) -> tuple[float, float]:
    longest = max(len(text) for _, text in lines)
    return max(72.0, longest * CHAR_WIDTH + 2 * PAD), len(lines) * LINE_HEIGHT + PAD


def _path(points: list[tuple[float, float]]) -> str:
    """A smooth path through `points` (top to bottom): cubic segments with vertical tangents."""
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in rest:
        mid = (y0 + y1) / 2
        parts.append(f"C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(parts)


def diagram(net: Network) -> DiagramView:
    """Boxes and edges of `net`, laid out top to bottom from the inputs to the loss."""
    texts = {n.id: _lines(n) for n in net.nodes}
    sizes = {n.id: _size(texts[n.id]) for n in net.nodes}
    drawing = layout([n.id for n in net.nodes], [(e.src, e.dst) for e in net.edges], sizes)
    nodes = []
    for n in net.nodes:
        box = drawing.boxes[n.id]
        title = " ".join(text for _, text in texts[n.id])
        nodes.append(NodeView(n.id, n.kind if n.kind in KINDS else "layer", box.left, box.y, box.width,
                              box.height, texts[n.id], title))
    edges = []
    for e, route in zip(net.edges, drawing.routes):
        (x0, y0), (x1, y1) = route[0], route[1]
        edges.append(EdgeView(_path(route), e.label, (x0 + x1) / 2 + 6, (y0 + y1) / 2 + 4))
    return DiagramView(net.name, drawing.width + 60, drawing.height, tuple(nodes), tuple(edges), drawing.crossings)
