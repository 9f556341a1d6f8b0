"""Layers on images (N, C, H, W): Conv2D, MaxPool2D, AvgPool2D, and Flatten back to (N, features).

Each follows torch.nn (Conv2d, MaxPool2d, AvgPool2d, flatten(x, 1)) and checks its input's
shape where it is called: a kernel larger than the padded input, a stride that does not
divide the span it slides over (an output size that is not a whole number) or an input
that is not an image is one line naming the layer and the shapes.  Sizes, strides and
paddings are an int or an (height, width) pair.
"""
from __future__ import annotations

import numbers

from ..errors import ModelError
from .checks import positive_int
from .graph import Layer, Param, Shape, shape_text, size_of

__all__ = ["Conv2D", "MaxPool2D", "AvgPool2D", "Flatten", "pair"]


def pair(value: object, what: str, least: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each >= `least`, as (height, width)."""
    items = value if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= least
                                  for v in items):
        kind = "positive integer" if least == 1 else "integer >= 0"
        raise ModelError(f"{what} must be a {kind} or a pair of them (height, width), got {value!r}")
    return int(items[0]), int(items[1])


def _text(values: tuple[int, int]) -> str:
    """A window's size as people write it: 3x3, 3x5."""
    return f"{values[0]}x{values[1]}"


def _one(values: tuple[int, int]) -> str:
    """A stride or padding as people write it: 1 for (1, 1), (1, 2) for a pair that differs."""
    return str(values[0]) if values[0] == values[1] else f"({values[0]}, {values[1]})"


class _Window(Layer):
    """A layer sliding a kh×kw window over an image with a stride and zero padding."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    padded = False   # whether the layer takes a padding
    what = "window"

    def image_shape(self, shape: Shape) -> tuple[int, int, int]:
        """(C, H, W) of the input, refused in one line when it is not an image."""
        if len(shape) != 3:
            raise ModelError(f"{self.describe()} takes images (N, C, H, W), but its input has shape "
                             f"{shape_text(shape)}: give the model input_shape=(C, H, W) or nn.Input((C, H, W))")
        return shape[0], shape[1], shape[2]

    def output_size(self, shape: Shape) -> tuple[int, int]:
        """(Ho, Wo): (H + 2·pad − k)/stride + 1 on each axis, which must be a whole number >= 1."""
        _, height, width = self.image_shape(shape)
        sizes = []
        for axis, extent, k, s, p in zip(("height", "width"), (height, width), self.kernel, self.stride,
                                         self.padding):
            span = extent + 2 * p - k
            if span < 0:
                padded = f" + 2*{p} padding = {extent + 2 * p}" if self.padded else ""
                raise ModelError(f"{self.describe()}: its {_text(self.kernel)} {self.what} is larger than its "
                                 f"{'padded ' if self.padded else ''}input ({axis} {extent}{padded}; input shape "
                                 f"{shape_text(shape)})")
            if span % s:
                padded = f"({extent} + 2*{p} - {k})" if self.padded else f"({extent} - {k})"
                raise ModelError(f"{self.describe()}: stride {s} does not fit the input's {axis}: "
                                 f"{padded}/{s} + 1 = {span / s + 1:g} is not a whole number (input shape "
                                 f"{shape_text(shape)}, {self.geometry()}); change "
                                 f"{'the padding, ' if self.padded else ''}the stride or the {self.what} size")
            sizes.append(span // s + 1)
        return sizes[0], sizes[1]

    def geometry(self) -> str:
        """What the layer slides, for descriptions: "3x3 kernel, stride 1, padding 1"."""
        text = f"{_text(self.kernel)} {self.what}, stride {_one(self.stride)}"
        return text + (f", padding {_one(self.padding)}" if self.padding != (0, 0) else "")


class Conv2D(_Window):
    """z[n,o,i,j] = b[o] + Σ_{c,p,q} W[o,c,p,q]·x[n,c,i·s+p−pad, j·s+q−pad]: a cross-correlation with
    zero padding, as torch.nn.Conv2d.  Parameters W of shape (filters, in_channels, kh, kw), then b
    of shape (filters,); W is initialised as a Dense weight with fan_in = in·kh·kw and fan_out =
    filters·kh·kw (Xavier, or He before a ReLU-like activation), b at zero."""

    kind = "conv"
    what = "kernel"
    padded = True

    def __init__(self, filters: int, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] = 0, name: str | None = None) -> None:
        super().__init__(name)
        self.filters = positive_int(filters, "Conv2D filters")
        self.kernel = pair(kernel_size, "Conv2D kernel_size")
        self.stride = pair(stride, "Conv2D stride")
        self.padding = pair(padding, "Conv2D padding", least=0)

    def out_shape(self, *shapes: Shape) -> Shape:
        return (self.filters, *self.output_size(shapes[0]))

    def parameters(self, shapes: tuple[Shape, ...]) -> tuple[Param, ...]:
        channels = shapes[0][0] if shapes else 0
        return (Param("W", (self.filters, channels, *self.kernel), "weight", regularized=True),
                Param("b", (self.filters,), "zeros"))

    def spec(self) -> str:
        return f"conv:{self.name}:{self.filters}:{self.kernel}:{self.stride}:{self.padding}"

    def __repr__(self) -> str:
        args = [str(self.filters), f"kernel_size={_one(self.kernel)}"]
        args += [f"stride={_one(self.stride)}"] if self.stride != (1, 1) else []
        args += [f"padding={_one(self.padding)}"] if self.padding != (0, 0) else []
        args += [f"name={self.name!r}"] if self.name else []
        return f"Conv2D({', '.join(args)})"


class _Pool(_Window):
    """A pooling window of `size` moved by `stride` (the size when not given), no padding."""

    mode = "max"
    what = "window"

    def __init__(self, size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 name: str | None = None) -> None:
        super().__init__(name)
        label = type(self).__name__
        self.kernel = pair(size, f"{label} size")
        self.stride = self.kernel if stride is None else pair(stride, f"{label} stride")

    def out_shape(self, *shapes: Shape) -> Shape:
        return (shapes[0][0], *self.output_size(shapes[0]))

    def spec(self) -> str:
        return f"{self.kind}:{self.name}:{self.kernel}:{self.stride}"

    def __repr__(self) -> str:
        stride = "" if self.stride == self.kernel else f", stride={_one(self.stride)}"
        return f"{type(self).__name__}({_one(self.kernel)}{stride})"


class MaxPool2D(_Pool):
    """The maximum of each window, per channel, as torch.nn.MaxPool2d.  Its gradient goes to the first
    maximum of each window in row-major order (where several entries tie, as PyTorch on the CPU)."""

    kind = "maxpool"
    mode = "max"


class AvgPool2D(_Pool):
    """The mean of each window, per channel, as torch.nn.AvgPool2d; its gradient is spread evenly."""

    kind = "avgpool"
    mode = "avg"


class Flatten(Layer):
    """(N, C, H, W) → (N, C·H·W), row-major, as torch.flatten(x, 1); the identity on (N, features)."""

    kind = "flatten"

    def out_shape(self, *shapes: Shape) -> Shape:
        return (size_of(shapes[0]),)

    def spec(self) -> str:
        return f"flatten:{self.name}"
