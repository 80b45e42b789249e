"""A grouped convolution as one dense convolution per group.

Group ``i`` reads input channels ``i * C_in/g ... (i + 1) * C_in/g`` and writes output
channels ``i * C_out/g ...``, with weights ``w[i * C_out/g ...]``; nothing else couples
the groups. So the output is the groups' dense convolutions side by side:

    y = concat_i conv(x[:, group i], w[group i], groups=1)

XLA's CPU backend runs dense convolutions through its fast library paths and grouped
ones through a much slower one (3x3, groups of 16x16 channels, batch 8: XLA's grouped
convolution about 7 GFLOP/s). On the CPU ``impl="auto"`` takes this form for groups of
many channels (see `jaxconv._dispatch.choose`), each dense convolution then chosen by
the dense rules, derivatives included. For more groups, where one convolution per
group takes seconds to compile, the same dense convolutions run in a loop over the
groups: `loop`, and its weight gradient `loop_weight_gradient`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._impls import lax as lax_impl
from jaxconv._impls._common import match_varying, varying_struct

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


def block_diagonal(w: jax.Array, groups: int) -> jax.Array:
    """The dense weight ``(C_out, C_in, *K)`` of the grouped canonical weight ``w``
    ``(C_out, C_in/g, *K)``: group ``i``'s weights in its own input channels' block,
    zeros elsewhere, so that a dense convolution by it is the grouped one.

    A non-finite weight stays in its output channel, as in the grouped convolution. A
    non-finite input element does not stay in its group: the dense convolution
    multiplies it by the other groups' zeros, and their outputs that read it are NaN.

    >>> import jax.numpy as jnp
    >>> block_diagonal(jnp.arange(1, 5, dtype=jnp.float32).reshape(4, 1, 1), 2)[:, :, 0]
    Array([[1., 0.],
           [2., 0.],
           [0., 3.],
           [0., 4.]], dtype=float32)
    """
    g = groups
    o, c, *kernel = w.shape
    same = jnp.arange(g)[:, None] == jnp.arange(g)[None, :]
    same = same.reshape(g, 1, g, 1, *(1,) * len(kernel))
    blocks = jnp.where(same, w.reshape(g, o // g, 1, c, *kernel), jnp.zeros((), w.dtype))
    return blocks.reshape(o, g * c, *kernel)


def loop(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical grouped convolution as XLA's dense convolutions, one per group, in
    a loop over the groups (`jax.lax.scan`, `LOOP_UNROLL` groups a step): one
    convolution to compile (or `LOOP_UNROLL`), however many groups.

    Each group's convolution is written channels-last: inside a loop XLA's CPU compiler
    keeps the layouts it is given, and a channels-first one runs on a slow path (32
    groups of 16x16 channels, 3x3 @28 batch 8: 320 ms channels-first, 18 channels-last;
    the same convolutions unrolled 22 ms, but 1.1 s to compile against 0.16). The
    groups move to the front and the channels to the back (a copy of the input, and of
    the output back).
    """
    g, nd = spec.groups, spec.ndim
    safe = lax_impl.low_padding_safe(x, w.shape[2:], spec)
    if safe is None:
        return lax_impl.padding_only(x, w, spec)
    x, spec = safe
    # The groups' convolutions as `lax_impl.swap_safe` shapes one of the whole.
    x, w, spec, stride = lax_impl.swap_safe(x, w, spec)
    n, c = x.shape[:2]
    # (N, G * C/g, *S) -> (G, N, *S, C/g); (G * O/g, C/g, *K) -> (G, *K, C/g, O/g).
    xs = jnp.moveaxis(x.reshape(n, g, c // g, *x.shape[2:]), (1, 2), (0, -1))
    ws = w.reshape(g, w.shape[0] // g, *w.shape[1:])
    ws = jnp.transpose(ws, (0, *range(3, 3 + nd), 2, 1))
    ys = _per_group(
        xs,
        ws,
        window_strides=stride,
        padding=spec.padding,
        lhs_dilation=spec.lhs_dilation,
        rhs_dilation=spec.rhs_dilation,
        precision=spec.precision,
    )  # (G, N, *S', O/g)
    ys = lax_impl.take_strided(ys, stride, spec, first=2)
    ys = jnp.moveaxis(ys, (0, nd + 2), (1, 2))
    return ys.reshape(n, -1, *ys.shape[3:])


# `_per_group` runs this many groups' convolutions per iteration of its loop. Against one
# (batch 8 unless said, 3x3, 7 interleaved runs, one malloc arena, 2026-12-03,
# `/tmp/s39/gloop.py`; forward, training with a fixed output gradient,
# channels-first / channels-last): 32 groups of 16x16 @28 1.08x / 1.28x, 1.12x / 1.11x;
# 32 of 32x32 @14 1.14x / 1.13x, 1.04x / 1.02x; 32 of 8x8 @56 batch 4 channels-last
# training 1.23x; 32 of 16x16 @7 batch 16 1.01x, 1.10x. Four per iteration: 1.08-1.48x
# forward, 1.06-1.20x training, compiling up to 0.3 s longer.
LOOP_UNROLL = 2


def _per_group(lhs: jax.Array, rhs: jax.Array, **conv) -> jax.Array:
    """``lax.conv_general_dilated(lhs[i], rhs[i], **conv)`` for each group ``i`` in a
    loop, channels-last: (N, *S, C) inputs and outputs, (*K, I, O) kernels."""
    nd = lhs.ndim - 3
    spatial = tuple(range(1, nd + 1))
    numbers = lax.ConvDimensionNumbers(
        lhs_spec=(0, nd + 1, *spatial),
        rhs_spec=(nd + 1, nd, *range(nd)),
        out_spec=(0, nd + 1, *spatial),
    )

    def step(carry, pair):
        return carry, lax.conv_general_dilated(*pair, dimension_numbers=numbers, **conv)

    _, ys = lax.scan(step, None, (lhs, rhs), unroll=LOOP_UNROLL)
    return ys


def loop_weight_gradient(x: jax.Array, ct: jax.Array, spec: ConvSpec, w_shape) -> jax.Array:
    """The weight gradient of `loop` (canonical, ``w_shape``) for the output cotangent
    ``ct``: per group, ``dw[o, c, k] = sum over n, p of x[n, c, p * stride + k *
    dilation] * ct[n, o, p]`` (``x`` padded), a convolution of the input, with the
    channels as its batch and the batch as its features, by the cotangent as the kernel,
    in a loop over the groups. ``spec`` has no input dilation.

    The operands are laid out as XLA's CPU compiler lays out its own weight gradients
    outside a loop (inside one it keeps the layouts given; JAX's transpose of `loop`'s
    convolution there: 32 groups of 16x16 @28 batch 8, 484 ms against 20).
    """
    g = spec.groups
    n, c = x.shape[:2]
    o_g, kernel = w_shape[0] // g, w_shape[2:]
    out = ct.shape[2:]
    # (N, G * C/g, *S) -> (G, C/g, *S, N); (N, G * O/g, *S') -> (G, *S', N, O/g).
    xs = jnp.moveaxis(x.reshape(n, g, c // g, *x.shape[2:]), (1, 0), (0, -1))
    cts = jnp.moveaxis(ct.reshape(n, g, o_g, *out), (1, 0, 2), (0, -2, -1))
    # The high side padded (or cropped) so that the result has exactly the kernel's taps.
    padding = [
        (lo, (k - 1) * d + (m - 1) * s + 1 - size - lo)
        for size, k, m, (lo, _), s, d in zip(
            x.shape[2:], kernel, out, spec.padding, spec.stride, spec.rhs_dilation, strict=True
        )
    ]
    dws = _per_group(
        xs,
        cts,
        window_strides=spec.rhs_dilation,
        padding=padding,
        rhs_dilation=spec.stride,
        precision=spec.precision,
    )  # (G, C/g, *K, O/g)
    return jnp.moveaxis(dws, -1, 1).reshape(w_shape)


def weight_term(x: jax.Array, dw: jax.Array, spec: ConvSpec) -> jax.Array:
    """``loop(x, dw)``, whose transpose along ``dw`` is `loop_weight_gradient`."""
    x, spec = lax_impl.explicit_lhs_dilation(x, spec, always=True)
    safe = lax_impl.low_padding_safe(x, dw.shape[2:], spec)
    if safe is None:
        return lax_impl.padding_only(x, dw, spec)
    x, spec = safe
    out = spec.out_spatial(x.shape[2:], dw.shape[2:])
    x, dw = match_varying(x, dw)
    ct = varying_struct((x.shape[0], dw.shape[0], *out), jnp.result_type(x, dw), x)
    (y,) = jax.linear_transpose(lambda c: loop_weight_gradient(x, c, spec, dw.shape), ct)(dw)
    return y
