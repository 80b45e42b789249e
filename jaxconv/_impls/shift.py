"""``impl="shift"``: shift-and-multiply-add, for depthwise and small-group convolutions.

Each kernel tap contributes its strided window of the padded input times that tap's
weights, broadcast over positions: ``y = sum_t window_t * w[..., t]``. There is no
matrix product at all, so it wins exactly where XLA's grouped convolution is slowest
(depthwise: one input channel per group), and it loses where channels per group are
many (its work per tap grows with ``C_in/groups * C_out/groups`` and nothing is
blocked for cache). XLA fuses the whole sum into one loop over the output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxconv._impls._common import accumulation_dtype, pad_input, tap_windows

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical convolution as a sum over taps of window times weight."""
    n = x.shape[0]
    c_out, c_in_g, *kernel = w.shape
    g = spec.groups
    o_g = c_out // g
    nd = len(kernel)
    acc = accumulation_dtype(x.dtype) or x.dtype
    if spec.channels_last:
        # Channels innermost, as the caller holds them: XLA cancels the layout
        # transposes around this, and the products vectorise along channels.
        x = jnp.moveaxis(x, 1, -1)
    xp = pad_input(x.astype(acc), spec, channels_last=spec.channels_last)
    wg = w.astype(acc).reshape((g, o_g, c_in_g, *kernel))
    y = None
    for tap, win in tap_windows(xp, kernel, spec, channels_last=spec.channels_last):
        wt = wg[(slice(None),) * 3 + tap]  # (g, C_out/g, C_in/g)
        if spec.channels_last:
            out = win.shape[1:-1]
            win = win.reshape((n, *out, g, 1, c_in_g))
            term = win * wt.reshape((1,) * (1 + nd) + wt.shape)
        else:
            out = win.shape[2:]
            win = win.reshape((n, g, 1, c_in_g, *out))
            term = win * wt.reshape((1, g, o_g, c_in_g) + (1,) * nd)
        term = jnp.sum(term, axis=-1 if spec.channels_last else 3)
        y = term if y is None else y + term
    if spec.channels_last:
        y = jnp.moveaxis(y.reshape((n, *y.shape[1 : 1 + nd], c_out)), -1, 1)
    return y.reshape((n, c_out, *y.shape[-nd:])).astype(x.dtype)
