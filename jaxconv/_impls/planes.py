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

`stacked` computes the same sum as one convolution of a spatial dim fewer: each output
plane's input planes stacked along the channels, the depth taps folded into the
weight's input channels. ``auto`` takes it for the value and some derivatives of 3-D
layers on large enough planes, and for the value of 2-D layers strided along the
height (then the 2-D layer is one 1-D convolution over its output rows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._impls._common import accumulation_dtype, match_varying, varying_struct

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec

Forward = Callable[[jax.Array, jax.Array, "ConvSpec"], jax.Array]


def applies(spec: ConvSpec) -> bool:
    """Whether ``spec`` has a first spatial dim to split (2-D or more) and no input
    dilation along it."""
    return spec.ndim >= 2 and spec.lhs_dilation[0] == 1


def _sub(spec: ConvSpec) -> ConvSpec:
    """``spec`` without its first spatial dim."""
    return dataclasses.replace(
        spec,
        stride=spec.stride[1:],
        padding=spec.padding[1:],
        lhs_dilation=spec.lhs_dilation[1:],
        rhs_dilation=spec.rhs_dilation[1:],
    )


def _tap_planes(
    x: jax.Array, spec: ConvSpec, depth: int, out_planes: int, caller_layout: bool = False
) -> list:
    """For each of the ``depth`` taps along the first spatial dim, the planes of the
    padded (or cropped) input it meets, one per output plane, folded into the batch:
    ``(N * out_planes, C, *S)``; with ``caller_layout``, padded and sliced in a
    channels-last caller's layout."""
    n, c = x.shape[:2]
    (lo, hi), stride, dilation = spec.padding[0], spec.stride[0], spec.rhs_dilation[0]
    keep = (0, 0, 0)
    last = (out_planes - 1) * stride + 1
    if caller_layout and spec.channels_last:
        # (N, D, *S, C): XLA cancels the transposes on either side.
        xp = jnp.moveaxis(x, 1, -1)
        config = (keep, (lo, hi, 0)) + (keep,) * spec.ndim
        xp = lax.pad(xp, lax.full((), 0, x.dtype), config)
        return [
            jnp.moveaxis(
                lax.slice_in_dim(xp, t * dilation, t * dilation + last, stride, axis=1).reshape(
                    (n * out_planes, *x.shape[3:], c)
                ),
                -1,
                1,
            )
            for t in range(depth)
        ]
    # (N, C, D, *S), depth padded (or cropped), as (N, D, C, *S).
    config = (keep, keep, (lo, hi, 0)) + (keep,) * (spec.ndim - 1)
    xp = jnp.moveaxis(lax.pad(x, lax.full((), 0, x.dtype), config), 2, 1)
    return [
        lax.slice_in_dim(xp, t * dilation, t * dilation + last, stride, axis=1).reshape(
            (n * out_planes, c, *x.shape[3:])
        )
        for t in range(depth)
    ]


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
    sub = _sub(spec)
    acc = accumulation_dtype(x.dtype) or x.dtype
    y = None
    # The planes in a channels-last caller's layout: padded channels-first, its input was
    # transposed there and each tap's planes back (batch 1, 3x3x3, padding 1, 15
    # interleaved runs, Sapphire Rapids Xeon, forward / training: stride 3 256->8 @16
    # 9.0 -> 3.0 / 20.4 -> 8.5 ms, 128->8 @32 33 -> 20 / 79 -> 62 ms, stride 2 256->8
    # @16 10.6 -> 3.7 / 28.7 -> 18.6 ms; unstrided video and R(2+1)D layers alike
    # within the noise). Not the weight gradient's (`decompose_weight_gradient`): with
    # them there too the video layer's 64@16x28x28 batch 2 trained 1.36x slower and
    # R(2+1)D's 1.10-1.19x.
    for t, planes in enumerate(_tap_planes(x, spec, depth, out[0], caller_layout=True)):
        term = inner(planes, w[:, :, t], sub).astype(acc)
        y = term if y is None else y + term
    y = jnp.moveaxis(y.reshape((n, out[0], c_out, *out[1:])), 1, 2)
    return y.astype(x.dtype)


def _weight_gradient_iko(xs: jax.Array, ct: jax.Array, sub: ConvSpec, w_shape, inner, like):
    """The weight gradient of ``inner(xs, w, sub)`` for a canonical weight of ``w_shape``
    ``(C_out, C_in / G, *K)``, asked for (JAX's transpose of ``inner`` along a weight
    given so) as ``(C_in / G, *K, C_out)``: the layout XLA's CPU convolution writes it
    in, so that a channels-last caller's weight is one transpose away with the output
    channels innermost."""
    c_out, c_in_g, *kernel = w_shape
    nk = len(kernel)

    def value(w_iko):
        return inner(xs, jnp.transpose(w_iko, (nk + 1, 0, *range(1, nk + 1))), sub)

    struct = varying_struct((c_in_g, *kernel, c_out), ct.dtype, like, ct)
    return jax.linear_transpose(value, struct)(ct)[0]


def decompose_weight_gradient(
    x: jax.Array, ct: jax.Array, spec: ConvSpec, w_shape, inner: Forward
) -> jax.Array:
    """The weight gradient of `decompose` written out: for each tap along the first
    spatial dim, the weight gradient of ``inner``'s convolution of a spatial dim fewer
    between the planes that tap meets and the output gradient's planes (both folded into
    the batch), asked for as ``(C_in / groups, *K, C_out)``, the layout XLA's CPU
    convolution writes it in; stacked along the taps, one transpose with the output
    channels innermost gives a channels-last caller's weight, where JAX's transpose of
    `decompose` summed the taps into the canonical ``(C_out, C_in / groups, K_d, *K)``
    and the caller's layout was a copy with the output channels strided.

    Against JAX's transpose (channels-last 3x3, padding 1, batch 8 unless said; training
    with a fixed cotangent, through a ReLU; 9-13 interleaved runs, 2026-12-04,
    `/tmp/s47/abdec.py`, another process running beside): 256@14 batch 1 1.11-1.17x,
    1.15-1.27x; 512@28 batch 2 1.10-1.12x, 1.08-1.09x; 64@56, 128@28, 256@14, 512@7,
    512@14 batch 1, stride-2 64->128 @56 and @112 batch 4, 32->64 @112, 5x5 100@64,
    dilated 256@33 and the video layer's planes 0.90-1.04x, 0.99-1.07x."""
    if not applies(spec):
        raise ValueError("decompose_weight_gradient: no input dilation along the first dim")
    x, ct = match_varying(x, ct)
    n, c = x.shape[:2]
    c_out, c_in_g, depth, *kernel = w_shape
    out = ct.shape[2:]
    dtype = jnp.result_type(x.dtype, ct.dtype)
    nk = len(kernel)
    if 0 in (n, c, c_out, *out):
        return jnp.zeros(w_shape, dtype)
    cs = jnp.moveaxis(ct, 2, 1).reshape((n * out[0], c_out, *out[1:])).astype(dtype)
    rows = [
        _weight_gradient_iko(planes, cs, _sub(spec), (c_out, c_in_g, *kernel), inner, x)
        for planes in _tap_planes(x, spec, depth, out[0])
    ]
    dw = jnp.stack(rows)  # (K_d, C_in / G, *K, C_out)
    return jnp.transpose(dw, (nk + 2, 1, 0, *range(2, nk + 2)))


def stacked(x: jax.Array, w: jax.Array, spec: ConvSpec, inner: Forward) -> jax.Array:
    """`decompose` as one convolution of a spatial dim fewer: each output plane's
    ``K_d`` input planes stacked along the channels (within each group), so that one
    convolution through ``inner`` with the weight's depth taps folded into its input
    channels, ``(C_out, K_d * C_in / groups, *K)``, computes every plane at once:

        y[:, :, o] = conv(concat_t(x_padded[:, :, o * s + t * d]), concat_t(w[:, :, t]))

    The stacked input is ``K_d`` times the input (times the depth stride's share), and
    one convolution with ``K_d`` times the products per output replaces ``K_d``
    convolutions and the sum of their outputs."""
    if not applies(spec):
        return inner(x, w, spec)
    out = spec.out_spatial(x.shape[2:], w.shape[2:])
    n, c = x.shape[:2]
    c_out, c_in_g, depth = w.shape[:3]
    g = spec.groups
    if 0 in (n, c, *out):
        return jnp.zeros((n, c_out, *out), x.dtype)
    lo, stride, dilation = spec.padding[0][0], spec.stride[0], spec.rhs_dilation[0]
    rest = x.shape[3:]
    # Channels innermost where the caller holds them there, so that the stacking is
    # written in the caller's layout (XLA cancels the transposes around it).
    axis = 1 if spec.channels_last else 2  # the depth
    if spec.channels_last:
        x = jnp.moveaxis(x, 1, -1)  # (N, D, *S, C)
    taps = []
    for t in range(depth):
        # The planes tap t meets, o * stride + t * dilation - lo, each tap padded with
        # the zero planes it meets itself (no padded copy of the whole input).
        first = t * dilation - lo
        last = first + (out[0] - 1) * stride
        config = [(0, 0, 0)] * x.ndim
        config[axis] = (max(0, -first), max(0, last - (x.shape[axis] - 1)), 0)
        xp = lax.pad(x, lax.full((), 0, x.dtype), config)
        start = first + config[axis][0]
        planes_t = lax.slice_in_dim(xp, start, start + last - first + 1, stride, axis)
        if spec.channels_last:
            taps.append(planes_t.reshape((n * out[0], *rest, g, c_in_g)))
        else:
            taps.append(planes_t.reshape((n, g, c_in_g, out[0], *rest)))
    if spec.channels_last:
        # (N * D_out, *S, G, K_d, C_in/G) -> (N * D_out, G * K_d * C_in/G, *S)
        xs = jnp.stack(taps, axis=-2).reshape((n * out[0], *rest, g * depth * c_in_g))
        xs = jnp.moveaxis(xs, -1, 1)
    else:
        # (N, G, K_d, C_in/G, D_out, *S) -> (N * D_out, G * K_d * C_in/G, *S)
        xs = jnp.moveaxis(jnp.stack(taps, axis=2), 4, 1).reshape(
            (n * out[0], g * depth * c_in_g, *rest)
        )
    ws = jnp.moveaxis(w, 2, 1).reshape((c_out, depth * c_in_g, *w.shape[3:]))
    y = inner(xs, ws, _sub(spec))
    if spec.channels_last:
        y = jnp.moveaxis(y, 1, -1).reshape((n, *out, c_out))
        return jnp.moveaxis(y, -1, 1)
    return jnp.moveaxis(y.reshape((n, out[0], c_out, *out[1:])), 1, 2)


def _planes_as_batch(x: jax.Array, spec: ConvSpec) -> jax.Array:
    """Every plane of ``x`` along its first spatial dim an input of a spatial dim fewer,
    ``(N * D, C, *S)``, reshaped in the caller's layout (XLA cancels the transposes)."""
    n, c, planes_in, *rest = x.shape
    if spec.channels_last:
        return jnp.moveaxis(jnp.moveaxis(x, 1, -1).reshape((n * planes_in, *rest, c)), -1, 1)
    return jnp.moveaxis(x, 2, 1).reshape((n * planes_in, c, *rest))


def output_stacked(x: jax.Array, w: jax.Array, spec: ConvSpec, inner: Forward) -> jax.Array:
    """`decompose` as one convolution of a spatial dim fewer with the depth taps folded
    into the weight's output channels (within each group), ``(K_d * C_out, C_in / groups,
    *K)``: every input plane convolved once with every depth tap, then each output plane
    the sum of the ``K_d`` planes its taps meet, shifted (zero where a tap meets the
    padding):

        z = conv(x[:, :, i], concat_t(w[:, :, t]))  for every input plane i
        y[:, :, o] = sum_t z[:, t, :, o * s + t * d - lo]

    The transpose of `stacked`: no stacked copy of the input, an output ``K_d`` times
    the value's (and, strided along the depth, planes no output meets convolved too)."""
    if not applies(spec):
        return inner(x, w, spec)
    out = spec.out_spatial(x.shape[2:], w.shape[2:])
    n, c, planes_in = x.shape[:3]
    c_out, c_in_g, depth = w.shape[:3]
    g = spec.groups
    if 0 in (n, c, planes_in, *out):
        return jnp.zeros((n, c_out, *out), x.dtype)
    lo, stride, dilation = spec.padding[0][0], spec.stride[0], spec.rhs_dilation[0]
    # (C_out, C_in/G, K_d, *K) -> (G * K_d * C_out/G, C_in/G, *K)
    ws = w.reshape((g, c_out // g, c_in_g, depth, *w.shape[3:]))
    ws = jnp.moveaxis(ws, 3, 1).reshape((g * depth * (c_out // g), c_in_g, *w.shape[3:]))
    z = inner(_planes_as_batch(x, spec), ws, _sub(spec))
    acc = accumulation_dtype(x.dtype) or x.dtype
    if spec.channels_last:
        z = jnp.moveaxis(z, 1, -1).reshape((n, planes_in, *out[1:], g, depth, c_out // g))
        tap_axis = z.ndim - 2
    else:
        z = z.reshape((n, planes_in, g, depth, c_out // g, *out[1:]))
        tap_axis = 3
    y = None
    for t in range(depth):
        # Output plane o meets input plane o * stride + t * dilation - lo through tap t.
        first = t * dilation - lo
        last = first + (out[0] - 1) * stride
        config = [(0, 0, 0)] * (z.ndim - 1)
        config[1] = (max(0, -first), max(0, last - (planes_in - 1)), 0)
        term = lax.index_in_dim(z, t, tap_axis, keepdims=False)
        term = lax.pad(term, lax.full((), 0, term.dtype), config)
        start = first + config[1][0]
        term = lax.slice_in_dim(term, start, start + last - first + 1, stride, 1).astype(acc)
        y = term if y is None else y + term
    if spec.channels_last:
        y = jnp.moveaxis(y.reshape((n, *out, c_out)), -1, 1)
    else:
        y = jnp.moveaxis(y.reshape((n, out[0], c_out, *out[1:])), 1, 2)
    return y.astype(x.dtype)


def output_stacked_weight_gradient(
    x: jax.Array, ct: jax.Array, spec: ConvSpec, w_shape, inner: Forward
) -> jax.Array:
    """The weight gradient of `output_stacked` (one group, unstrided along the first
    spatial dim) written out, laid out for XLA: the output gradient's planes stacked by
    depth tap along its channels (input plane ``r`` meets output plane ``r - t * d +
    lo`` through tap ``t``), then the weight gradient of ``inner``'s convolution of a
    spatial dim fewer, every input plane against them, asked for as ``(C_in, *K,
    K_d * C_out)``: the layout XLA's CPU convolution writes it in, so one transpose with
    the output channels innermost gives the weight, rather than JAX's transpose of
    `output_stacked`, which took it through ``(K_d * C_out, C_in, *K)``.

    In a program with other outputs XLA split that transpose in two, one of them with
    the output channels strided: the weight gradient of a 3x3 1024->512 @16 batch 1
    channels-last layer ran 10.4 ms alone and 33.7 ms beside a second output (the input
    plus one), in a 64-68 ms training step; written out 11.7 ms beside it.
    """
    if spec.groups != 1 or spec.stride[0] != 1 or not applies(spec):
        raise ValueError("output_stacked_weight_gradient: one group, unstrided, no input dilation")
    x, ct = match_varying(x, ct)
    n, c, planes_in = x.shape[:3]
    c_out, c_in, depth, *kernel = w_shape
    out = ct.shape[2:]
    lo, dilation = spec.padding[0][0], spec.rhs_dilation[0]
    dtype = jnp.result_type(x.dtype, ct.dtype)
    if 0 in (n, c, c_out, planes_in, *out):
        return jnp.zeros(w_shape, dtype)
    # Each tap's output gradient on the input planes: plane r = o + t * d - lo.
    rows = jnp.moveaxis(ct, 1, -1) if spec.channels_last else ct
    axis = 1 if spec.channels_last else 2
    taps = []
    for t in range(depth):
        first = t * dilation - lo
        config = [(0, 0, 0)] * rows.ndim
        config[axis] = (first, planes_in - first - out[0], 0)
        taps.append(lax.pad(rows, lax.full((), 0, rows.dtype), config))
    if spec.channels_last:
        cs = jnp.stack(taps, axis=-2).reshape((n * planes_in, *out[1:], depth * c_out))
        cs = jnp.moveaxis(cs, -1, 1)
    else:
        cs = jnp.moveaxis(jnp.stack(taps, axis=1), 3, 1)  # (N, planes, K_d, C_out, *S)
        cs = cs.reshape((n * planes_in, depth * c_out, *out[1:]))
    nk = len(kernel)
    sub_shape = (depth * c_out, c_in, *kernel)
    dw = _weight_gradient_iko(
        _planes_as_batch(x, spec), cs.astype(dtype), _sub(spec), sub_shape, inner, x
    )
    dw = dw.reshape((c_in, *kernel, depth, c_out))
    return jnp.transpose(dw, (nk + 2, 0, nk + 1, *range(1, nk + 1)))
