"""A convolution as a sum over the taps of its first spatial dim of convolutions with
one spatial dim fewer: 3-D as 2-D ones per depth tap, 2-D as 1-D ones per kernel row.

Output depth ``o`` meets, through depth tap ``t``, the padded input's depth plane
``o * stride + t * dilation``. So for each depth tap, the planes it meets (one per
output depth, taken with the depth stride) fold into the batch, and a 2-D convolution
of them with that tap's ``(C_out, C_in / groups, K_h, K_w)`` slice of the weight gives
its share of every output plane at once:

    y[:, :, o] = sum_t conv2d(x_padded[:, :, o * s + t * d], w[:, :, t])

XLA's CPU convolution runs 2-D convolutions faster than 3-D ones (a 3x3x3 64-channel
video layer: 1.3-1.8x forward with 16 depth planes, 3x with 8), so on the CPU
``impl="auto"`` runs 3-D convolutions this way, each 2-D one chosen by its own rules;
and XLA's 2-D weight gradient is 2.6x slower than the same work as one 1-D weight
gradient per kernel row, so ``auto`` takes the weight derivative of 2-D convolutions
this way too (then "depth" is the height and "planes" are rows). Specs with input
dilation along the first spatial dim go to ``inner`` unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._impls._common import accumulation_dtype

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec

Forward = Callable[[jax.Array, jax.Array, "ConvSpec"], jax.Array]


def applies(spec: ConvSpec) -> bool:
    """Whether ``spec`` has a first spatial dim to split (2-D or more) and no input
    dilation along it."""
    return spec.ndim >= 2 and spec.lhs_dilation[0] == 1


def decompose(x: jax.Array, w: jax.Array, spec: ConvSpec, inner: Forward) -> jax.Array:
    """The canonical convolution, one convolution of a spatial dim fewer per tap along
    the first spatial dim, via ``inner``."""
    if not applies(spec):
        return inner(x, w, spec)
    out = spec.out_spatial(x.shape[2:], w.shape[2:])
    n, c = x.shape[:2]
    c_out, _, depth = w.shape[:3]
    if 0 in (n, c, *out):
        # Nothing to sum: an empty result, or zeros from zero input channels. (Not
        # `inner` on the same spec: the dispatcher's inner would split it again.)
        return jnp.zeros((n, c_out, *out), x.dtype)
    (lo, hi), stride, dilation = spec.padding[0], spec.stride[0], spec.rhs_dilation[0]
    keep = (0, 0, 0)
    # (N, C, D, *S), depth padded (or cropped), as (N, D, C, *S).
    config = (keep, keep, (lo, hi, 0)) + (keep,) * (spec.ndim - 1)
    xp = jnp.moveaxis(lax.pad(x, lax.full((), 0, x.dtype), config), 2, 1)
    sub = dataclasses.replace(
        spec,
        stride=spec.stride[1:],
        padding=spec.padding[1:],
        lhs_dilation=spec.lhs_dilation[1:],
        rhs_dilation=spec.rhs_dilation[1:],
    )
    acc = accumulation_dtype(x.dtype) or x.dtype
    y = None
    for t in range(depth):
        start = t * dilation
        planes = lax.slice_in_dim(xp, start, start + (out[0] - 1) * stride + 1, stride, axis=1)
        term = inner(planes.reshape((n * out[0], c, *x.shape[3:])), w[:, :, t], sub)
        term = term.astype(acc)
        y = term if y is None else y + term
    y = jnp.moveaxis(y.reshape((n, out[0], c_out, *out[1:])), 1, 2)
    return y.astype(x.dtype)
