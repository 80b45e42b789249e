"""``impl="fft"``: convolution by the convolution theorem.

The input is padded explicitly (`pad_input`), the kernel is dilated by inserting zeros
and flipped (a correlation is a convolution with the flipped kernel; flipping, not
conjugating, keeps complex inputs right), both are transformed to a common fast size
at least the padded input's, multiplied with a per-group contraction over input
channels in the frequency domain, transformed back, and the valid region is read out
with the stride as a strided slice. Circular wrap-around only touches the first
``extent - 1`` outputs of each dim, which the valid region skips.

float32, bfloat16 and float16 are computed in float32 (complex64) and cast back;
float64 and complex128 in double precision.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._impls._common import pad_input, valid_out_spatial

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec


def fast_size(n: int) -> int:
    """The smallest ``m >= n`` whose prime factors are all 2, 3, 5 or 7."""
    m = max(n, 1)
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype the transforms run in: float32 at least, complex kept complex."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return dtype
    return jnp.dtype(jnp.float64) if dtype == jnp.float64 else jnp.dtype(jnp.float32)


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical convolution through ``rfftn``/``irfftn`` (``fftn`` for complex)."""
    dtype = x.dtype
    ct = compute_dtype(dtype)
    n, c_in = x.shape[:2]
    c_out, c_in_g, *kernel = w.shape
    g = spec.groups
    nd = spec.ndim
    xp = pad_input(x.astype(ct), spec)
    padded = xp.shape[2:]
    out = valid_out_spatial(padded, kernel, spec)
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, spec.rhs_dilation, strict=True))
    sizes = tuple(fast_size(m) for m in padded)
    axes = tuple(range(2, 2 + nd))

    # Dilate (zeros between taps) and flip the kernel: correlation as convolution.
    wd = lax.pad(
        w.astype(ct),
        lax.full((), 0, ct),
        [(0, 0, 0), (0, 0, 0)] + [(0, 0, d - 1) for d in spec.rhs_dilation],
    )
    wd = jnp.flip(wd, axis=axes)

    if jnp.issubdtype(ct, jnp.complexfloating):
        xf = jnp.fft.fftn(xp, s=sizes, axes=axes)
        wf = jnp.fft.fftn(wd, s=sizes, axes=axes)
    else:
        xf = jnp.fft.rfftn(xp, s=sizes, axes=axes)
        wf = jnp.fft.rfftn(wd, s=sizes, axes=axes)
    freq = xf.shape[2:]
    xf = xf.reshape((n, g, c_in // g, math.prod(freq)))
    wf = wf.reshape((g, c_out // g, c_in_g, math.prod(freq)))
    yf = jnp.einsum("ngcf,gocf->ngof", xf, wf, precision=spec.precision)
    yf = yf.reshape((n, c_out, *freq))
    if jnp.issubdtype(ct, jnp.complexfloating):
        y = jnp.fft.ifftn(yf, s=sizes, axes=axes)
    else:
        y = jnp.fft.irfftn(yf, s=sizes, axes=axes)

    # Full-convolution index e - 1 + o * stride is valid-correlation output o.
    start = [0, 0] + [e - 1 for e in extent]
    limit = [n, c_out] + [
        e - 1 + (m - 1) * s + 1 for e, m, s in zip(extent, out, spec.stride, strict=True)
    ]
    y = lax.slice(y, start, limit, [1, 1, *spec.stride])
    return y.astype(dtype)
