"""A strided convolution as an unstrided one of its input folded space-to-depth.

With stride ``s`` along a dim, output ``o`` meets the padded input at ``o * s + t`` through
tap ``t``. Write ``t = a * s + b`` (``0 <= b < s``): that is element ``o + a`` of the
input's phase ``b`` (every ``s``-th element from ``b``). So fold each dim's ``s`` phases
into the channels, ``(C, L) -> (s * C, L / s)``, and the kernel likewise, padded with zero
taps to ``ceil(K / s) * s``: the strided convolution is an unstrided one with
``ceil(K / s)`` taps per dim over ``s`` times the channels per dim:

    y[o] = sum_{a, b} x_padded[(o + a) * s + b] w[a * s + b]
         = conv(fold(x_padded), fold(w))[o]

``impl="auto"`` takes it for the weight gradient of some strided 2-D layers on large
inputs, where the folded layer's weight gradient runs by kernel rows (`planes`) and the
strided one would be XLA's (see `jaxconv._dispatch`). The products grow by the zero taps
(3x3 stride 2: 16 taps for 9), the folded input is one copy of the input. A kernel
equal to its stride (or a multiple of it) folds to a 1x1 kernel (or one of ``k / s``
taps) with no zero taps: `auto` runs such layers folded in every role where
`jaxconv._dispatch._tiles_as_pointwise` or `_kernel_multiple_of_stride` says.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
from jax import lax

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec

Forward = Callable[[jax.Array, jax.Array, "ConvSpec"], jax.Array]


def applies(spec: ConvSpec) -> bool:
    """Whether ``spec`` is strided, with neither kernel nor input dilation."""
    return (
        max(spec.stride, default=1) > 1
        and all(d == 1 for d in spec.rhs_dilation)
        and all(d == 1 for d in spec.lhs_dilation)
    )


def problem(x_shape, w_shape, spec: ConvSpec):
    """``(x_shape, w_shape, spec)`` of the folded, unstrided convolution (canonical
    shapes) that gives ``spec``'s result of canonical arrays of these shapes."""
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    folded_taps = tuple(-(-k // s) for k, s in zip(w_shape[2:], spec.stride, strict=True))
    fold = math.prod(spec.stride)
    spatial = (o + f - 1 for o, f in zip(out, folded_taps, strict=True))
    x_folded = (x_shape[0], fold * x_shape[1], *spatial)
    w_folded = (w_shape[0], fold * w_shape[1], *folded_taps)
    sub = dataclasses.replace(spec, stride=(1,) * spec.ndim, padding=((0, 0),) * spec.ndim)
    return x_folded, w_folded, sub


def _fold(a: jax.Array, strides, groups: int) -> jax.Array:
    """``(N, G * C, *L)`` with each ``L`` a multiple of its stride as ``(N, G * S * C,
    *(L / s))``: within each group the phases major, the channels minor."""
    n, c = a.shape[:2]
    split = [n, groups, c // groups]
    for size, s in zip(a.shape[2:], strides, strict=True):
        split += [size // s, s]
    a = a.reshape(split)
    ndim = len(strides)
    phases = [4 + 2 * i for i in range(ndim)]
    blocks = [3 + 2 * i for i in range(ndim)]
    a = a.transpose((0, 1, *phases, 2, *blocks))
    return a.reshape((n, c * math.prod(strides), *(a.shape[-ndim:])))


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec, inner: Forward) -> jax.Array:
    """The canonical convolution ``spec`` (see `applies`) as the unstrided convolution
    of the input and kernel folded space-to-depth, via ``inner``."""
    if not applies(spec):
        return inner(x, w, spec)
    _, w_folded_shape, sub = problem(x.shape, w.shape, spec)
    out = spec.out_spatial(x.shape[2:], w.shape[2:])
    folded_taps = w_folded_shape[2:]
    # Pad (or crop) each dim to exactly the (out + taps - 1) * s elements the folded
    # convolution reads.
    config = [(0, 0, 0), (0, 0, 0)]
    for size, (lo, _), o, f, s in zip(
        x.shape[2:], spec.padding, out, folded_taps, spec.stride, strict=True
    ):
        config.append((lo, (o + f - 1) * s - size - lo, 0))
    zero = lax.full((), 0, x.dtype)
    xs = _fold(lax.pad(x, zero, config), spec.stride, spec.groups)
    w_config = [(0, 0, 0), (0, 0, 0)] + [
        (0, f * s - k, 0) for k, f, s in zip(w.shape[2:], folded_taps, spec.stride, strict=True)
    ]
    ws = _fold(lax.pad(w, lax.full((), 0, w.dtype), w_config), spec.stride, 1)
    return inner(xs, ws, sub)
