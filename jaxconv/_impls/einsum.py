"""``impl="einsum"``: the notes' multi-channel cross-correlation, built by hand.

The notes compute one output channel as a sum over input channels of 2-D
correlations (``corr2d_multi_in``) and stack output channels (``corr2d_multi_in_out``).
Here the input is padded explicitly, the strided window each kernel tap multiplies is
read out and stacked into one ``(N, groups, C_in/groups, taps, L)`` array, and one
output channel is one `jnp.einsum` over input channels and taps; `jax.vmap` over the
output channels of each group stacks them, exactly as the notes do.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxconv._impls._common import accumulation_dtype, pad_input, tap_windows, valid_out_spatial

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical convolution as one einsum per output channel, vmapped over them."""
    n, c_in = x.shape[:2]
    c_out, c_in_g, *kernel = w.shape
    g = spec.groups
    xp = pad_input(x, spec)
    out = valid_out_spatial(xp.shape[2:], kernel, spec)
    taps = math.prod(kernel)
    # (N, C_in, taps, *out): window t holds the input element each output sees at tap t.
    windows = jnp.stack([win for _, win in tap_windows(xp, kernel, spec)], axis=2)
    windows = windows.reshape((n, g, c_in_g, taps, math.prod(out)))
    w = w.reshape((g, c_out // g, c_in_g, taps))
    acc = accumulation_dtype(x.dtype)

    def multi_in(k: jax.Array) -> jax.Array:
        """One output channel per group: ``k`` is ``(groups, C_in/groups, taps)``."""
        return jnp.einsum(
            "ngctl,gct->ngl",
            windows,
            k,
            precision=spec.precision,
            preferred_element_type=acc,
        )

    y = jax.vmap(multi_in, in_axes=1, out_axes=2)(w)  # (N, groups, C_out/groups, L)
    return y.astype(x.dtype).reshape((n, c_out, *out))
