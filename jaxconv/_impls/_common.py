"""Pieces the hand-written algorithms share: explicit padding, tap windows, and a way
to make XLA write an array once."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec


def pad_input(x: jax.Array, spec: ConvSpec, *, channels_last: bool = False) -> jax.Array:
    """Apply ``spec``'s input dilation and (lo, hi) padding to ``(N, C, *S)``.

    What is left is a "valid" correlation at ``spec.stride`` with the kernel dilated by
    ``spec.rhs_dilation``. Negative padding crops (transposed convolutions produce it).
    With ``channels_last`` the array is ``(N, *S, C)``.
    """
    if all(p == (0, 0) for p in spec.padding) and all(d == 1 for d in spec.lhs_dilation):
        return x
    spatial = [(lo, hi, d - 1) for (lo, hi), d in zip(spec.padding, spec.lhs_dilation, strict=True)]
    keep = (0, 0, 0)
    config = [keep, *spatial, keep] if channels_last else [keep, keep, *spatial]
    return lax.pad(x, lax.full((), 0, x.dtype), config)


def valid_out_spatial(padded_spatial, kernel, spec: ConvSpec) -> tuple[int, ...]:
    """Output spatial sizes of the valid correlation left after `pad_input`."""
    return tuple(
        (m - d * (k - 1) - 1) // s + 1
        for m, k, s, d in zip(padded_spatial, kernel, spec.stride, spec.rhs_dilation, strict=True)
    )


def tap_windows(
    xp: jax.Array, kernel, spec: ConvSpec, *, channels_last: bool = False
) -> Iterator[tuple[tuple[int, ...], jax.Array]]:
    """For each kernel tap ``t``, the strided view of padded ``(N, C, *S)`` it multiplies.

    Yields ``(t, window)`` with window ``(N, C, *S_out)``: element ``o`` of it is the
    input element ``o * stride + t * dilation``. With ``channels_last`` the array and
    its windows are ``(N, *S, C)`` instead.
    """
    first = 1 if channels_last else 2
    nd = len(kernel)
    out = valid_out_spatial(xp.shape[first : first + nd], kernel, spec)
    for tap in itertools.product(*(range(k) for k in kernel)):
        lead = [t * d for t, d in zip(tap, spec.rhs_dilation, strict=True)]
        limit = [b + (m - 1) * s + 1 for b, m, s in zip(lead, out, spec.stride, strict=True)]
        if channels_last:
            start = [0, *lead, 0]
            limit = [xp.shape[0], *limit, xp.shape[-1]]
            strides = [1, *spec.stride, 1]
        else:
            start = [0, 0, *lead]
            limit = [xp.shape[0], xp.shape[1], *limit]
            strides = [1, 1, *spec.stride]
        yield tap, lax.slice(xp, start, limit, strides)


def flip_kernel(w: jax.Array, groups: int) -> jax.Array:
    """``(A, B, *K)`` -> ``(groups * B, A / groups, *K)``: the two channel dims swapped
    within each group and every kernel dim reversed.

    A transposed convolution's weight ``(C_in, C_out/g, *K)`` becomes the forward weight
    that, on the stride-dilated input, computes it; a forward weight
    ``(C_out, C_in/g, *K)`` becomes the one whose convolution of the output cotangent is
    the input gradient. Applied twice it is the identity.
    """
    a, b, *kernel = w.shape
    w = w.reshape((groups, a // groups, b, *kernel))
    w = jnp.swapaxes(w, 1, 2).reshape((groups * b, a // groups, *kernel))
    return jnp.flip(w, axis=tuple(range(2, w.ndim)))


def accumulation_dtype(dtype) -> jnp.dtype | None:
    """float32 accumulation for half-precision inputs; None (the input's own) otherwise."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype).itemsize < 4 else None


def computed_once(a: jax.Array) -> jax.Array:
    """``a`` itself, written to memory once rather than recomputed in its consumers.

    XLA's CPU fusion copies an elementwise producer (a sum over taps, a transpose) into
    every loop that reads it, and reads a fused transpose with strides. A one-element
    ``dynamic_update_slice`` of ``a`` with itself is an op XLA's simplifier keeps and
    no consumer fuses past: ``a`` is written once. (XLA may fuse it into ``a``'s own
    loop, a select per element; training with a fixed cotangent, where nothing was
    recomputed, timed the same with and without it.)
    """
    if a.size == 0:
        return a
    corner = (0,) * a.ndim
    return lax.dynamic_update_slice(a, lax.slice(a, corner, (1,) * a.ndim), corner)
