"""``impl="lax"``: XLA's own convolution, `jax.lax.conv_general_dilated`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical convolution by `jax.lax.conv_general_dilated` (NC*, OI*, NC*)."""
    lhs_dilation = spec.lhs_dilation
    if (
        any(d > 1 for d in lhs_dilation)
        and jnp.dtype(x.dtype).itemsize >= 8
        and jax.default_backend() == "cpu"
    ):
        # XLA's CPU compiler (jaxlib 0.10.2) aborts the process on some float64
        # input-dilated convolutions (a 3-D transposed one with stride (2, 3, 2),
        # dilation (1, 2, 2) and a length-1 dim: "Window dimensions do not match RHS
        # shape" in algebraic_simplifier; float32 compiles). The zeros inserted
        # explicitly avoid it; complex64, also 8 bytes, takes the same path untested
        # against the abort.
        zero = lax.full((), 0, x.dtype)
        x = lax.pad(x, zero, [(0, 0, 0), (0, 0, 0)] + [(0, 0, d - 1) for d in lhs_dilation])
        lhs_dilation = (1,) * spec.ndim
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=spec.stride,
        padding=spec.padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=spec.rhs_dilation,
        feature_group_count=spec.groups,
        precision=spec.precision,
    )


def forward_padded(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """XLA's convolution, steered off its CPU slow path for unpadded convolutions.

    On the CPU, XLA (jaxlib 0.10) runs a convolution with no padding at all 1.2-2.9x
    slower than the same one with a padded row (the notes' valid 5x5 100->100 layer:
    2.9x; ResNet 3x3 64@58 valid: 2.6x; a 7x7 stride-2 stem: 1.2x). So pad one row high
    in the first spatial dim and drop the output row it may add.
    """
    if any(p != (0, 0) for p in spec.padding) or any(d != 1 for d in spec.lhs_dilation):
        return forward(x, w, spec)
    out = spec.out_spatial(x.shape[2:], w.shape[2:])
    padded = dataclasses.replace(spec, padding=((0, 1),) + ((0, 0),) * (spec.ndim - 1))
    return forward(x, w, padded)[:, :, : out[0]]
