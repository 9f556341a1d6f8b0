"""Convolutional models for the tests: a pairwise grid of Conv2D settings, packed into a few models.

`grid()` covers every pair of values of kernel size 1-5, stride 1-3, padding 0-2, input and output
channels 1-4, odd or even image sizes, pooling (none, max, average; tiling or overlapping windows),
BatchNorm2d or not and every activation: each pair appears in at least one configuration (a greedy
all-pairs cover, deterministic), far fewer than the full product.  `packed(configs)` makes one
functional model of many configurations, a branch per configuration from its own input, so a
single compile checks them all: input -> 1x1 conv (so the grid conv's own input gets a delta) ->
the grid conv -> BatchNorm2d? -> activation -> pooling? -> Flatten, the branches joined by Concat
into one Dense layer.  Parameters are named per branch (pre3, conv3, bn3, ...).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from nncompile import load_model, nn

ROOT = Path(__file__).resolve().parent.parent
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "softplus", "identity", "mish")
FACTORS = {
    "kernel": (1, 2, 3, 4, 5),
    "stride": (1, 2, 3),
    "padding": (0, 1, 2),
    "channels_in": (1, 2, 3, 4),
    "channels_out": (1, 2, 3, 4),
    "odd": (True, False),
    "pool": ("none", "max", "avg"),
    "batchnorm": (False, True),
    "activation": ACTIVATIONS,
}


@dataclass(frozen=True)
class Config:
    kernel: int
    stride: int
    padding: int
    channels_in: int
    channels_out: int
    odd: bool
    pool: str
    batchnorm: bool
    activation: str
    index: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """(H, W): H of the asked parity where the stride fits it (else the other), W of the other parity,
        both small, at least the kernel (with padding), and giving an output of 2 or more where they can."""
        def extent(odd: bool) -> int:
            for parity in (odd, not odd):
                for h in range(1, 14):
                    span = h + 2 * self.padding - self.kernel
                    if h % 2 == parity and span >= 0 and span % self.stride == 0 and span // self.stride + 1 >= 2:
                        return h
            raise AssertionError(f"no image size fits {self}")
        return extent(self.odd), extent(not self.odd)


def _all_pairs() -> list[dict]:
    """A greedy all-pairs cover of FACTORS: rows until every pair of values of two factors appears."""
    names = list(FACTORS)
    uncovered = {(a, va, b, vb) for a, b in itertools.combinations(names, 2)
                 for va in FACTORS[a] for vb in FACTORS[b]}
    rows = []
    while uncovered:
        open_pairs: dict = {}
        for a, va, _, _ in uncovered:
            open_pairs[a, va] = open_pairs.get((a, va), 0) + 1
        row: dict = {}
        for name in names:  # each value chosen to cover the most pairs with the values chosen so far
            def gain(value: object) -> tuple[int, int]:
                covered = sum((other, row[other], name, value) in uncovered for other in row)
                return covered, open_pairs.get((name, value), 0)
            row[name] = max(FACTORS[name], key=gain)
        uncovered -= {(a, row[a], b, row[b]) for a, b in itertools.combinations(names, 2)}
        rows.append(row)
    return rows


def grid() -> list[Config]:
    return [Config(**row, index=i) for i, row in enumerate(_all_pairs())]


def activation(name: str) -> nn.Layer:
    return {"sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.1),
            "softplus": nn.Softplus(), "identity": nn.Identity(),
            "mish": nn.Activation("x*tanh(log(1 + exp(x)))", name="mish")}[name]


def _pool(config: Config, shape: tuple[int, ...]) -> nn.Layer | None:
    """Max or average pooling that fits the conv's output: 2x2 tiles on even sizes (every other
    configuration), else overlapping 2x2 windows with stride 1."""
    if config.pool == "none":
        return None
    _, ho, wo = shape
    kind = nn.MaxPool2D if config.pool == "max" else nn.AvgPool2D
    name = f"pool{config.index}"
    if ho % 2 == 0 and wo % 2 == 0 and config.index % 2 == 0:
        return kind(2, name=name)
    if ho >= 2 and wo >= 2:
        return kind(2, stride=1, name=name)
    return kind((1, 1), name=name)


def branch(config: Config) -> tuple[nn.Node, nn.Node]:
    """(input, flattened output) of one configuration."""
    i = config.index
    x = nn.Input((config.channels_in, *config.size), name=f"x{i}")
    h = nn.Conv2D(config.channels_in, 1, name=f"pre{i}")(x)
    h = nn.Conv2D(config.channels_out, config.kernel, stride=config.stride, padding=config.padding,
                  name=f"conv{i}")(h)
    if config.batchnorm:
        h = nn.BatchNorm(name=f"bn{i}")(h)
    h = activation(config.activation)(h)
    pool = _pool(config, h.shape)
    if pool is not None:
        h = pool(h)
    return x, nn.Flatten(name=f"flat{i}")(h)


def packed(configs: list[Config], name: str, outputs: int = 3, loss: nn.Loss | None = None,
           l2: float = 0.0) -> nn.Model:
    """One model with a branch per configuration, joined into a Dense layer of `outputs` units."""
    pairs = [branch(c) for c in configs]
    joined = pairs[0][1] if len(pairs) == 1 else nn.Concat(name="join")(*(out for _, out in pairs))
    out = nn.Dense(outputs, name="head")(joined)
    return nn.Model([x for x, _ in pairs], out, loss=loss or nn.SoftmaxCrossEntropy(), l2=l2, name=name)


def chunks(configs: list[Config], count: int) -> list[list[Config]]:
    return [configs[i::count] for i in range(count)]


def example(name: str = "digits_cnn") -> nn.Sequential:
    return load_model(str(ROOT / "examples" / f"{name}.py"))[0]


def lenet(batchnorm: bool = False) -> nn.Sequential:
    """The LeNet-style net of the benchmarks, on 28x28 inputs."""
    norm = [nn.BatchNorm()] if batchnorm else []
    return nn.Sequential(nn.Conv2D(6, 5), *norm, nn.ReLU(), nn.MaxPool2D(2), nn.Conv2D(16, 5), nn.ReLU(),
                         nn.MaxPool2D(2), nn.Flatten(), nn.Dense(120), nn.ReLU(), nn.Dense(84), nn.ReLU(),
                         nn.Dense(10), input_shape=(1, 28, 28), loss=nn.SoftmaxCrossEntropy(), name="lenet")


def mixed() -> nn.Model:
    """Image layers with the DAG features: a conv layer called twice (shared kernel), Add and Concat of
    images along the channels, Dropout on an image, pooling with a stride larger than the window, a
    pair of strides and paddings, l2 on the kernels."""
    x = nn.Input((2, 9, 10), name="image")
    shared = nn.Conv2D(3, (3, 2), stride=(1, 2), padding=(1, 0))           # -> 3x9x5
    a = nn.Tanh()(shared(x))
    b = nn.ReLU()(shared(nn.Conv2D(2, 1)(x)))
    h = nn.Concat()(a + b, nn.Dropout(0.25)(a))                              # -> 6x9x5
    h = nn.MaxPool2D((3, 1), stride=(3, 2))(h)                               # -> 6x3x3 (gaps between windows)
    h = nn.Softplus()(nn.BatchNorm()(nn.Conv2D(4, 1, stride=2)(h)))          # -> 4x2x2 (not mean-free: for
    h = nn.AvgPool2D(2, stride=1)(h)                                         # one example its mean is not 0)
    return nn.Model(x, nn.Dense(3)(nn.Flatten()(h)), loss=nn.SoftmaxCrossEntropy(), l2=0.01, name="mixed_images")
