"""A grouped convolution as one dense convolution per group.

Group ``i`` reads input channels ``i * C_in/g ... (i + 1) * C_in/g`` and writes output
channels ``i * C_out/g ...``, with weights ``w[i * C_out/g ...]``; nothing else couples
the groups. So the output is the groups' dense convolutions side by side:

    y = concat_i conv(x[:, group i], w[group i], groups=1)

XLA's CPU backend runs dense convolutions through its fast library paths and grouped
ones through a much slower one (3x3, groups of 16x16 channels, batch 8: XLA's grouped
convolution about 7 GFLOP/s). On the CPU ``impl="auto"`` takes this form for groups of
many channels (see `jaxconv._dispatch.choose`), each dense convolution then chosen by
the dense rules, derivatives included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec

Forward = Callable[[jax.Array, jax.Array, "ConvSpec"], jax.Array]


def decompose(x: jax.Array, w: jax.Array, spec: ConvSpec, inner: Forward) -> jax.Array:
    """The canonical grouped convolution, one dense convolution per group via ``inner``
    (which sees ``spec`` with ``groups=1``)."""
    g = spec.groups
    if g == 1:
        return inner(x, w, spec)
    c_in_g, o_g = x.shape[1] // g, w.shape[0] // g
    dense = dataclasses.replace(spec, groups=1)
    ys = [
        inner(x[:, i * c_in_g : (i + 1) * c_in_g], w[i * o_g : (i + 1) * o_g], dense)
        for i in range(g)
    ]
    return jnp.concatenate(ys, axis=1)
