"""``impl="matmul"``: convolution as one dense matrix product per group.

A 1x1 kernel is the notes' dense layer over channels: subsample the padded input by
the stride and multiply ``(C_out, C_in)`` by ``(C_in, L)``. Any other kernel goes
through patches (im2col): the tap windows stacked channel-major into
``(N, C_in * taps, L)``, PyTorch's ``unfold`` layout, times the weight reshaped to
``(C_out, C_in * taps)``, which needs no transpose of either operand.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._impls._common import accumulation_dtype, pad_input, tap_windows, valid_out_spatial

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec


def patches(x: jax.Array, kernel, spec: ConvSpec) -> jax.Array:
    """The patch matrix of ``(N, C, *S)``: ``(N, C * prod(kernel), *S_out)``, channel-major.

    Row ``c * prod(kernel) + t`` holds, at each output position, the padded input
    element that kernel tap ``t`` (row-major over ``kernel``) multiplies in channel ``c``.
    """
    xp = pad_input(x, spec)
    out = valid_out_spatial(xp.shape[2:], kernel, spec)
    windows = [win for _, win in tap_windows(xp, kernel, spec)]
    stacked = windows[0][:, :, None] if len(windows) == 1 else jnp.stack(windows, axis=2)
    return stacked.reshape((x.shape[0], x.shape[1] * math.prod(kernel), *out))


# The patch matrix of one chunk of the batch stays below this many bytes: past the
# cache, building it costs more than the product saves (ResNeXt 3x3 g32 128@56 batch 8:
# whole batch 0.79x lax, one sample at a time 2.3x; the notes' 5x5 layer 0.73x vs 1.35x).
PATCH_BYTES = 16 * 2**20


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical convolution, in batch chunks whose patch matrix fits in cache."""
    n = x.shape[0]
    per_sample = (
        x.shape[1]
        * math.prod(w.shape[2:])
        * math.prod(spec.out_spatial(x.shape[2:], w.shape[2:]))
        * x.dtype.itemsize
    )
    chunk = max([d for d in range(1, n + 1) if n % d == 0 and d * per_sample <= PATCH_BYTES] or [1])
    if chunk >= n:
        return _forward(x, w, spec)
    ys = lax.map(lambda xb: _forward(xb, w, spec), x.reshape((n // chunk, chunk, *x.shape[1:])))
    return ys.reshape((n, *ys.shape[2:]))


def _forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical convolution as ``(C_out, C_in * taps) @ (C_in * taps, L)`` per group."""
    n = x.shape[0]
    c_out, c_in_g, *kernel = w.shape
    g = spec.groups
    cols = patches(x, kernel, spec)  # for a 1x1 kernel: the strided input itself
    out = cols.shape[2:]
    depth = c_in_g * math.prod(kernel)
    cols = cols.reshape((n, g, depth, math.prod(out)))
    w = w.reshape((g, c_out // g, depth))
    acc = accumulation_dtype(x.dtype)
    if spec.channels_last:
        # (N, L, C) @ (C, C_out) per group -> (groups, N, L, C_out/groups): with the
        # caller's channels-last arrays XLA cancels the layout transposes around it.
        y = lax.dot_general(
            cols,
            w,
            (((2,), (2,)), ((1,), (0,))),
            precision=spec.precision,
            preferred_element_type=acc,
        )
        y = jnp.transpose(y, (1, 0, 3, 2))
    else:
        # (C_out, C) @ (C, L) per group -> (groups, C_out/groups, N, L): channels-first.
        y = lax.dot_general(
            w,
            cols,
            (((2,), (2,)), ((0,), (1,))),
            precision=spec.precision,
            preferred_element_type=acc,
        )
        y = jnp.transpose(y, (2, 0, 1, 3))
    return y.astype(x.dtype).reshape((n, c_out, *out))
