"""``impl="lax"``: XLA's own convolution, `jax.lax.conv_general_dilated`."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._impls._common import cpuinfo, slice_in_layout
from jaxconv._shapes import conv_out_size

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical convolution by `jax.lax.conv_general_dilated` (NC*, OI*, NC*).

    Shaped so that neither it nor the convolutions of its derivatives (JAX's transposes)
    meet `swap_breaks`, which aborts the process in XLA's compiler: an input dilation
    written out where the value or the weight gradient would, stride 1 and every
    ``stride``-th output where the input gradient would; nor a low padding that XLA's
    CPU convolution gets wrong (`low_padding_safe`).
    """
    safe = low_padding_safe(x, w.shape[2:], spec)
    if safe is None:
        return padding_only(x, w, spec)
    x, spec = safe
    x, w, spec, stride = swap_safe(x, w, spec)
    y = lax.conv_general_dilated(
        x,
        w,
        window_strides=stride,
        padding=spec.padding,
        lhs_dilation=spec.lhs_dilation,
        rhs_dilation=spec.rhs_dilation,
        feature_group_count=spec.groups,
        precision=spec.precision,
    )
    return take_strided(y, stride, spec)


def low_padding_breaks(padding, lhs_dilation, rhs_dilation) -> bool:
    """Whether XLA's CPU convolution (jaxlib 0.10.2) computes a wrong result (reads
    memory outside its input: values up to 1e38, different from run to run) for this
    padding: a spatial dim with negative low and positive high padding and neither
    input nor kernel dilation, in float32, 1-D and 2-D (float64 and 3-D ran right).
    Found by a random float32 differential run against PyTorch on 2026-12-02: the
    weight gradient of a transposed convolution by sub-pixel phases, one of whose
    phases had padding (-1, 1). Measured over 600 convolutions, 1-D to 3-D, one dim's
    low and high padding -2..2 (strides 1-2, kernels 2-3, an input or kernel dilation of
    2 or none; float32 against float64, three draws each): 18 were wrong, all with low
    < 0 < high and no dilation, 6 of the 8 such 1-D layers and 12 of the 16 2-D ones,
    none of the 24 3-D ones."""
    return any(
        lo < 0 < hi and ld == 1 and rd == 1
        for (lo, hi), ld, rd in zip(padding, lhs_dilation, rhs_dilation, strict=True)
    )


def low_padding_safe(x: jax.Array, kernel, spec: ConvSpec) -> tuple[jax.Array, ConvSpec] | None:
    """The canonical input and spec, with each spatial dim's low padding ``lo`` in
    ``[0, dilation * (K - 1)]``: a negative one cropped from the input, one past the
    kernel's extent padded onto it; None where the crop takes the whole input (the
    output is zeros: its windows meet only padding).

    So neither this convolution nor JAX's transposes of it (the weight gradient's low
    padding is ``lo``, the input gradient's ``dilation * (K - 1) - lo``) meet
    `low_padding_breaks`. Where an input-dilated dim's low padding is past the kernel's
    extent, or would be once cropped (by whole input elements), the dilation is written
    out first."""
    if not any(
        lo < 0 or lo > d * (k - 1)
        for (lo, _), k, d in zip(spec.padding, kernel, spec.rhs_dilation, strict=True)
    ):
        return x, spec
    if any(
        ld > 1 and (lo > d * (k - 1) or lo < 0 and lo % ld > d * (k - 1))
        for k, (lo, _), ld, d in zip(
            kernel, spec.padding, spec.lhs_dilation, spec.rhs_dilation, strict=True
        )
    ):
        x, spec = explicit_lhs_dilation(x, spec, always=True)
    starts, pads, padding = [], [], []
    for n, k, (lo, hi), ld, d in zip(
        x.shape[2:], kernel, spec.padding, spec.lhs_dilation, spec.rhs_dilation, strict=True
    ):
        extent = d * (k - 1)
        crop = -(-max(0, -lo) // ld)  # input elements cropped (each ld positions)
        if crop >= n and lo < 0:
            return None
        over = max(0, lo - extent) // ld  # input elements of zeros added
        starts.append(crop)
        pads.append((over, 0, 0))
        padding.append((lo + crop * ld - over * ld, hi))
    ndim = x.ndim
    if any(starts):
        x = lax.slice(x, (0, 0, *starts), x.shape)
    if any(p != (0, 0, 0) for p in pads):
        x = lax.pad(x, lax.full((), 0, x.dtype), [(0, 0, 0)] * (ndim - len(pads)) + pads)
    return x, dataclasses.replace(spec, padding=tuple(padding))


def padding_only(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical output of a convolution whose windows meet only padding (where
    `low_padding_safe` is None): zeros."""
    out = (x.shape[0], w.shape[0], *spec.out_spatial(x.shape[2:], w.shape[2:]))
    return jnp.zeros(out, jnp.result_type(x.dtype, w.dtype))


# `swap_safe` checks the convolutions JAX writes for derivatives up to this order (the
# gradient of a gradient's norm is order 2; a Hessian-vector product by forward over
# reverse mode writes no new ones).
SWAP_SAFE_ORDER = 3


def swap_safe(
    x: jax.Array, w: jax.Array, spec: ConvSpec
) -> tuple[jax.Array, jax.Array, ConvSpec, tuple]:
    """``(x, w, spec, stride)`` for a convolution by `jax.lax.conv_general_dilated`
    that neither it nor its derivatives (JAX's transposes) meet `swap_breaks`: the
    input dilation written out where the value or the weight gradient would meet it,
    and ``stride`` all ones where the input gradient would (then `take_strided` keeps
    every ``spec.stride``-th output); else as given (see `explicit_lhs_dilation`).

    Where the convolutions of higher derivatives (to `SWAP_SAFE_ORDER`) would still meet
    it, both dilations are written out and the stride is all ones: a convolution with
    neither, at stride one, has none among its derivatives. So the gradient of a
    gradient's norm of a 3-D convolution, x ``(1, C, 5, 6, 2)`` by a kernel ``(2, 4,
    1)``, stride ``(2, 1, 2)``, padding 1, dilation ``(1, 2, 1)``: the input gradient of
    its weight gradient is such a convolution. ``w`` may be a grouped convolution's
    whole kernel (its spatial sizes are what count)."""
    kernel = w.shape[2:]
    always = _swap_breaks_value(x.shape[2:], kernel, spec) or _swap_breaks_weight_gradient(
        x.shape[2:], kernel, spec
    )
    x, spec = explicit_lhs_dilation(x, spec, always=always)
    stride = spec.stride
    if _swap_breaks_input_gradient(x.shape[2:], kernel, spec):
        stride = (1,) * spec.ndim
    window = (stride, *_spec_window(spec)[1:])
    if not swap_breaks_to_order(x.shape[2:], kernel, window, SWAP_SAFE_ORDER):
        return x, w, spec, stride
    x, spec = explicit_lhs_dilation(x, spec, always=True)
    if any(d > 1 for d in spec.rhs_dilation):
        zero = lax.full((), 0, w.dtype)
        w = lax.pad(w, zero, [(0, 0, 0), (0, 0, 0)] + [(0, 0, d - 1) for d in spec.rhs_dilation])
        spec = dataclasses.replace(spec, rhs_dilation=(1,) * spec.ndim)
    return x, w, spec, (1,) * spec.ndim


def take_strided(y: jax.Array, stride, spec: ConvSpec, first: int = 2) -> jax.Array:
    """``y`` (spatial dims from ``first``) computed at ``stride``, kept at
    ``spec.stride`` (`swap_safe`)."""
    if tuple(stride) == tuple(spec.stride):
        return y
    steps = (1,) * first + tuple(spec.stride) + (1,) * (y.ndim - first - spec.ndim)
    return lax.slice(y, (0,) * y.ndim, y.shape, steps)


def swap_breaks(in_spatial, kernel, stride, padding, lhs_dilation, rhs_dilation) -> bool:
    """Whether XLA's compiler (jaxlib 0.10.2; measured on the CPU, in a pass not
    the CPU's own) aborts the process on a convolution with these spatial sizes and
    window (grouped ones too, although XLA measured to leave those alone).

    XLA swaps the operands of a convolution whose kernel is larger than its input
    (`ConvOperandSwapper`: the product of kernel sizes over the product of input sizes,
    leaving out some dims). A dim with no padding, no kernel dilation, input dilation
    equal to the kernel size and stride one less it keeps as it is, although its sizes
    now belong to the other operand, and the swapped convolution fails its own shape
    check: "Window dimensions do not match RHS shape". JAX writes such a convolution for
    the input gradient of a stride-2 convolution with a 2-tap kernel padded by 1 along
    one dim and a kernel larger than the output along another: ``conv2d`` of
    ``(1, 1, 10, 5)`` by ``(1, 1, 2, 5)``, stride ``(2, 1)``, padding 1. This is a
    superset of XLA's condition (it leaves out fewer dims).
    """
    kept = [
        pad == (0, 0) and rd == 1 and k >= 2 and ld == k and s == k - 1
        for k, s, pad, ld, rd in zip(
            kernel, stride, padding, lhs_dilation, rhs_dilation, strict=True
        )
    ]
    if not any(kept):
        return False
    rest = [(n, k) for n, k, keep in zip(in_spatial, kernel, kept, strict=True) if not keep]
    return math.prod(k for _, k in rest) > math.prod(n for n, _ in rest)


def swap_breaks_to_order(in_spatial, kernel, window, order: int) -> bool:
    """Whether the convolution of these spatial sizes and ``window`` (stride, padding,
    input and kernel dilation), or one JAX writes for its derivatives up to ``order``
    (the transposes of transposes), meets `swap_breaks`."""
    if swap_breaks(in_spatial, kernel, *window):
        return True
    if order == 0 or any(m < 1 for m in _out_spatial(in_spatial, kernel, window)):
        return False
    return any(
        swap_breaks_to_order(*conv, order - 1)
        for conv in (
            _input_gradient_conv(in_spatial, kernel, window),
            _weight_gradient_conv(in_spatial, kernel, window),
        )
    )


def _spec_window(spec: ConvSpec) -> tuple:
    return spec.stride, spec.padding, spec.lhs_dilation, spec.rhs_dilation


def _swap_breaks_value(in_spatial, kernel, spec: ConvSpec) -> bool:
    return swap_breaks_to_order(in_spatial, kernel, _spec_window(spec), 0)


def _swap_breaks_input_gradient(in_spatial, kernel, spec: ConvSpec) -> bool:
    return swap_breaks_to_order(*_input_gradient_conv(in_spatial, kernel, _spec_window(spec)), 0)


def _swap_breaks_weight_gradient(in_spatial, kernel, spec: ConvSpec) -> bool:
    return swap_breaks_to_order(*_weight_gradient_conv(in_spatial, kernel, _spec_window(spec)), 0)


def _out_spatial(in_spatial, kernel, window) -> list:
    stride, padding, lhs_dilation, rhs_dilation = window
    return [
        conv_out_size((n - 1) * ld + 1, k, lo, hi, s, d)
        for n, k, s, (lo, hi), ld, d in zip(
            in_spatial, kernel, stride, padding, lhs_dilation, rhs_dilation, strict=True
        )
    ]


def _dilated(in_spatial, kernel, window) -> tuple[list, list]:
    """The output's spatial lengths, and per spatial dim the low padding and the input,
    kernel and output lengths dilated (by the input dilation, the kernel dilation and
    the stride)."""
    stride, padding, lhs_dilation, rhs_dilation = window
    out = _out_spatial(in_spatial, kernel, window)
    dims = zip(in_spatial, kernel, padding, stride, lhs_dilation, rhs_dilation, out, strict=True)
    return out, [
        (lo, (n - 1) * ld + 1, (k - 1) * d + 1, (m - 1) * s + 1)
        for n, k, (lo, _), s, ld, d, m in dims
    ]


def _input_gradient_conv(in_spatial, kernel, window) -> tuple:
    """``(in_spatial, kernel, window)`` of the convolution JAX writes for the input
    gradient: the output cotangent dilated by the stride, correlated with the reversed
    kernel (`jax.lax`'s ``_conv_general_vjp_lhs_padding``)."""
    stride, _, lhs_dilation, rhs_dilation = window
    out, dims = _dilated(in_spatial, kernel, window)
    padding = tuple((k - 1 - lo, n + k - 1 - m - (k - 1 - lo)) for lo, n, k, m in dims)
    return out, kernel, (lhs_dilation, padding, stride, rhs_dilation)


def _weight_gradient_conv(in_spatial, kernel, window) -> tuple:
    """``(in_spatial, kernel, window)`` of the convolution JAX writes for the weight
    gradient: the input correlated with the output cotangent dilated by the stride
    (`jax.lax`'s ``_conv_general_vjp_rhs_padding``)."""
    stride, _, lhs_dilation, rhs_dilation = window
    out, dims = _dilated(in_spatial, kernel, window)
    padding = tuple((lo, m - n + k - 1 - lo) for lo, n, k, m in dims)
    return in_spatial, out, (rhs_dilation, padding, lhs_dilation, stride)


def explicit_lhs_dilation(
    x: jax.Array, spec: ConvSpec, always: bool = False
) -> tuple[jax.Array, ConvSpec]:
    """The canonical input with the zeros of an input dilation written in, and the
    spec without it, where XLA's CPU compiler needs that (or ``always``); else both as
    given.

    XLA's CPU compiler (jaxlib 0.10.2) aborts the process on some float64
    input-dilated convolutions (a 3-D transposed one with stride (2, 3, 2), dilation
    (1, 2, 2) and a length-1 dim: "Window dimensions do not match RHS shape" in
    algebraic_simplifier; float32 compiles). The zeros inserted explicitly avoid it;
    complex64, also 8 bytes, takes the same path untested against the abort.
    """
    if all(d == 1 for d in spec.lhs_dilation) or not (
        always or (jnp.dtype(x.dtype).itemsize >= 8 and jax.default_backend() == "cpu")
    ):
        return x, spec
    zero = lax.full((), 0, x.dtype)
    x = lax.pad(x, zero, [(0, 0, 0), (0, 0, 0)] + [(0, 0, d - 1) for d in spec.lhs_dilation])
    return x, dataclasses.replace(spec, lhs_dilation=(1,) * spec.ndim)


def weight_derivative(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """XLA's convolution, shaped so that its transpose along ``w`` (the weight
    gradient) stays on XLA's fast CPU paths; the value is `forward`'s.

    XLA's CPU weight gradient is 20-50x slower once the padding of a dim exceeds the
    kernel's extent, ``lo + hi > dilation * (K - 1)`` (the output longer than the
    input; a stride-1 transposed convolution has ``2 * (K - 1)``). So the excess is
    padded explicitly (the input is a constant of this derivative, so padding it costs
    one copy), and the rest goes through `forward_padded`. Weight gradient of a 3x3
    convolution with padding 2, XLA's against this: 64->64 @56 batch 2 186 ms against
    9.6; 256@14 batch 8 1154 ms against 26. Where `explicit_padding_pays` says, all of
    the padding is written out, not only the excess.
    """
    if explicit_padding_pays(x.shape, w.shape, spec):
        excess = list(spec.padding)  # all of it (no dim crops there)
    else:
        excess = [
            _excess_padding(lo, hi, d * (k - 1), ld)
            for (lo, hi), k, d, ld in zip(
                spec.padding, w.shape[2:], spec.rhs_dilation, spec.lhs_dilation, strict=True
            )
        ]
    if any(e != (0, 0) for e in excess):
        zero = lax.full((), 0, x.dtype)
        x = lax.pad(x, zero, [(0, 0, 0), (0, 0, 0)] + [(lo, hi, 0) for lo, hi in excess])
        spec = dataclasses.replace(
            spec,
            padding=tuple(
                (lo - e_lo, hi - e_hi)
                for (lo, hi), (e_lo, e_hi) in zip(spec.padding, excess, strict=True)
            ),
        )
    return forward_padded(x, w, spec, derivative=True)


def _excess_padding(lo: int, hi: int, extent: int, lhs_dilation: int) -> tuple[int, int]:
    """The part of a dim's padding ``(lo, hi)`` past the kernel's ``extent`` that
    `weight_derivative` writes out, from both sides, never more than a side has (a side
    may crop); none where the input is dilated."""
    over = lo + hi - extent
    if over <= 0 or lhs_dilation > 1:
        return (0, 0)
    hi_part = min(max(hi, 0), over // 2)
    lo_part = min(max(lo, 0), over - hi_part)
    return (lo_part, over - lo_part)


# `explicit_padding_pays` for batches of at most this many images to at most this many
# output channels.
EXPLICIT_PADDING_MAX_BATCH, EXPLICIT_PADDING_MAX_OUT_CHANNELS = 4, 16


def explicit_padding_pays(x_shape, w_shape, spec: ConvSpec) -> bool:
    """Whether `weight_derivative` writes all of this canonical convolution's padding
    out (the input padded with zeros, then convolved unpadded, so that `forward_padded`
    adds its row): 2-D, dense, unstrided, no input dilation, padded (no dim cropped), on
    at most `EXPLICIT_PADDING_MAX_BATCH` images to at most
    `EXPLICIT_PADDING_MAX_OUT_CHANNELS` channels, with outputs tall enough for the row
    (`FORWARD_PADDED_MIN_ROWS`).

    XLA's CPU weight gradient of a padded convolution (the input against the output
    gradient, the batch contracted) takes a slow path there: its time grows with the
    input channels and positions alone, not with the output channels or the batch
    (3x3 to 4-16 channels @56 batch 1: 5.2-5.5 ms per 64 input channels, 3-11 GFLOP/s,
    against 40-50 to 24 or more), while the unpadded convolution with the row runs fast.
    Found by a random sweep (`/tmp/s55/rand.py 1414`: 128->8 3x3 padding 1 @56 batch 1
    channels-last training 12.9 ms, PyTorch 1.8). The weight gradient alone, with the
    rule against without (`auto`, padding keeping the size unless said, 5-9 interleaved
    runs, AMD EPYC with AVX2, 2026-12-05, `/tmp/s55/pwd.py`; channels-first /
    channels-last): 3x3 64->8 @56 batch 1 8.2x / 5.0x, 128->16 7.5x / 5.2x, batch 2
    64->8 4.9x / 3.0x, batch 4 64->16 2.3x / 1.9x, 256->16 @14 batch 1 3.3x / 2.9x;
    over 90 random layers (`gen(1, 90)`: batch 1-8, 16-512 to 1-32 channels, 3x3-7x7,
    dilations 1-2, strides 1-2) the 32 the rule takes 1.35-10.3x; a second draw of 60
    layers to 2-16 channels (`gen2(2, 60)`) the 42 it takes 1.38-8.3x, those of 8-16
    images 0.80-1.17x (not taken); a third, 17 2-D layers taken, 1.65-11x;
    training (the rule's other roles unchanged) 128->8 @56 batch 1 channels-last 4.1x,
    64->16 4.0x, 5x5 32->8 @112 batch 2 3.8x, 4 groups of 16->8 (64->32) @56 batch 2
    2.3x. Not to 24 or more channels (0.70-1.16x on 13 layers of `gen(1, 90)`), not
    strided (0.70-1.47x on its 26), not in 1-D (no row there; 0.56-3.1x on 24 layers)
    nor 3-D (0.66-1.17x on 16), where the convolution stays as it is."""
    c_out = w_shape[0]
    if (
        spec.ndim != 2
        or spec.groups != 1
        or any(s != 1 for s in spec.stride)
        or any(d != 1 for d in spec.lhs_dilation)
        or all(p == (0, 0) for p in spec.padding)
        or any(lo < 0 or hi < 0 for lo, hi in spec.padding)
        or x_shape[0] > EXPLICIT_PADDING_MAX_BATCH
        or c_out > EXPLICIT_PADDING_MAX_OUT_CHANNELS
    ):
        return False
    return spec.out_spatial(x_shape[2:], w_shape[2:])[0] >= FORWARD_PADDED_MIN_ROWS


# `forward_padded` adds its row only to outputs of at least this many rows, and
# channels-first only to layers of fewer output channels than this many times the
# products per output (input channels times taps).
FORWARD_PADDED_MIN_ROWS, FORWARD_PADDED_MAX_FAN_OUT = 6, 3
# ... and only to layers of at least this many input channels and more output channels
# than this (see `forward_padded`).
FORWARD_PADDED_MIN_IN_CHANNELS, FORWARD_PADDED_FEW_OUT_CHANNELS = 8, 16
# ... the latter only from at most this many input channels (see `forward_padded`).
FORWARD_PADDED_FEW_OUT_MAX_IN_CHANNELS = 16
# ... and, for a value not differentiated, strided along the height by more than this,
# to more output channels than input channels, on fewer output rows than
# `FORWARD_PADDED_STRIDED_MIN_ROWS` or with a kernel (undilated) no taller than the
# stride, only where YNNPACK's patches would pass `MALLOC_MAX_HEAP_BLOCK` (see
# `forward_padded`).
FORWARD_PADDED_MAX_VALUE_STRIDE, FORWARD_PADDED_STRIDED_MIN_ROWS = 1, 7


def forward_padded(
    x: jax.Array, w: jax.Array, spec: ConvSpec, derivative: bool = False, value: bool = False
) -> jax.Array:
    """XLA's convolution, steered off its CPU slow path for unpadded convolutions.

    On the CPU, XLA (jaxlib 0.10) runs a convolution with no padding at all 1.2-2.9x
    slower than the same one with a padded row (the notes' valid 5x5 100->100 layer:
    2.9x; ResNet 3x3 64@58 valid: 2.6x; a 7x7 stride-2 stem: 1.2x). So pad one row high
    in the first spatial dim and drop the output row it may add. Grouped convolutions
    have no such slow path, and the padded row only costs them (3x3 with 2-3 groups of
    16-64 channels, batch 2-8, @28-112: 0.81-0.98x channels-first, 0.86-0.92x
    channels-last). Nor do 1-D ones (the padded row, value and weight gradient with a
    fixed cotangent, batch 1-8, valid, channels-last: 3 taps 256@1000 1.20x slower
    training, 5 taps 128@2000 1.23x, 9 taps stride 2 1.13x, 2 taps stride 2 dilation 2
    1.28x; forward even; channels-first, the time with the row over the time without,
    minimum of 21 shuffled runs, forward and training through a ReLU: 2 taps 128->16
    @256 batch 1 0.96x and 1.64x, @1000 batch 8 1.03x and 1.05x; 3 taps 128@1000 0.97x
    and 1.03x, 256@1000 0.93x and 1.05x, stride 2 1.06x and 1.00x; 5 taps 64@2000 1.12x
    and 1.01x; 9 taps 64->128 @500 1.09x and 1.02x; 15 taps 48->32 @64 1.25x and
    1.05x), and a padded row is a large part of a small output: 3x3 48->256 @7 valid (5
    rows), both layouts, forward 1.14-1.19x and training 1.04-1.28x faster without it;
    from 7 rows it pays (9x9 input 1.04x). Nor, for the value (not a ``derivative``,
    whose transpose is the weight gradient), channels-first, where the layer has at
    least `FORWARD_PADDED_MAX_FAN_OUT` times as many output channels as products per
    output: there the output is large for the work, and cutting the row off it costs
    more than the slow path (with the row against without, forward, minimum of 15
    shuffled runs, 3x3 unless said: 4->256 @56 batch 4 0.54x, 3->128 @112 batch 2 0.61x,
    8->256 stride 2 @112 batch 4 0.69x, batch 1 8->512 0.42x, 5x5 3->384 @224 batch 1
    0.86x, 2x2 8->128 @64 batch 8 0.69x, but stride 2 1.12x; training with the rule
    against without 0.93-1.13x; with fewer output channels 0.93-1.64x: 8->64 5x5 @56
    1.57x, the 7x7 stride-2 stem 3->64 @224 1.64x, 8->32 @112 1.49x, 3->64 @112 1.01x,
    1->32 5x5 @28 0.93x; channels-last 0.98-1.18x).

    Nor, for the value, from fewer than `FORWARD_PADDED_MIN_IN_CHANNELS` input
    channels, nor to at most `FORWARD_PADDED_FEW_OUT_CHANNELS` output channels from at
    most `FORWARD_PADDED_FEW_OUT_MAX_IN_CHANNELS`, where
    XLA's unpadded convolution takes no slow path and the row only costs (valid, with
    the row against
    without, forward, channels-first / channels-last, 15 interleaved runs, Intel Xeon,
    2026-12-01; a random layer, 3->16 5x5 @160 batch 4, ran 0.82x `lax` under `auto`):
    3->64 3x3 @112 batch 4 0.42x / 0.23x, 5x5 0.61x, 0.86x / 0.38x, 0.38x; 4->64 3x3
    0.44x / 0.20x; 6->64 0.48x / 0.29x; 3->16 3x3 @160 0.89x / 0.72x, 5x5 0.90x / 0.74x;
    1->16 5x5 @64 batch 8 0.94x / 0.34x; 8->16 3x3 @112 0.98x / 0.71x; 16->16 @64 0.94x
    / 0.83x. With 8 or more input channels and more outputs the row pays: 8->32 3x3 @112
    2.15x / 1.25x, 8->64 5x5 @56 batch 8 1.78x / 1.44x, 16->64 3x3 @56 1.33x / 1.06x,
    32->32 2.29x / 2.30x. (3->32 5x5 @128 gained 1.31x / 1.18x with the row, and is
    left out.) To few output channels from more than 16 input channels the slow path is
    back, and the row pays most of all (found by a random sweep: 256->16 5x5 @112 batch
    1 valid channels-first forward 171 ms `lax`, PyTorch 19). With the row against
    without, forward, 3x3 valid unless said, batch 8, 5 interleaved runs, AMD EPYC,
    2026-12-05 (`/tmp/s54/row.py`), channels-first / channels-last: 5x5 256->16 @112
    batch 1 7.7x / 6.6x; 64->16 @112 6.3x / 6.3x; 32->16 @112 6.3x / 6.4x, 32->8 10x,
    32->4 11.8x / 13.7x; 24->16 6.7x / 6.6x; 20->16 5.2x / 6.0x; 5x5 32->16 @64 batch 4
    7.8x / 8.2x; 128->16 @56 - / 6.2x, @28 1.23x / 1.41x; 64->16 @56 batch 2 1.27x /
    1.22x; 64->1 @112 - / 8.7x; 256->3 @56 batch 4 - / 10.5x (layers to at most 6
    channels channels-first take `matmul.output_taps` first). From 16 and fewer it
    stays as measured above: 16->16 @224 0.81x / 0.91x, 5x5 @112 0.83x / 0.86x, @56
    0.93x; 16->4 @112 - / 1.01x; 8->16 @224 0.77x / 0.83x. Strided by 2, where the row
    also moves `eigen_pays` (YNNPACK's buffer is then the input read, not the patches),
    `auto` with the change against without (`/tmp/s54/toggle.py`, forward and training
    with a fixed cotangent): 384->16 @64 batch 8 1.09x, 0.95x / 0.98x, 1.08x; 192->16
    @56 batch 8 1.10x, 1.01x / 1.21x, 1.78x; batch 2 384->16 1.01x, 0.98x channels-first;
    7x7 512->1 @32 batch 16 1.10x, 1.14x / 1.90x, 0.85x (9 runs).

    Nor, for a ``value`` not differentiated, where the layer is strided along the height
    (`FORWARD_PADDED_MAX_VALUE_STRIDE`) and YNNPACK's patches without the row
    (`ynnpack_buffer_bytes`) stay under `MALLOC_MAX_HEAP_BLOCK`: found by a random sweep
    (3x3 stride 2 8->256 @112 batch 8 channels-last forward at 0.28x `lax`, 45.7 ms
    against 12.6). Unpadded 3x3 stride 2, batch 8 unless said, without the row against
    with it, 5-7 interleaved runs, AMD EPYC with AVX2, 2026-12-05
    (`/tmp/s52/patchab.py`), channels-last / channels-first: 8->256 @112 3.5x
    channels-last, 16->256 @112 2.6x / 1.2x, 8->64 @112 1.08x / 1.22x, 8->128 @112 1.10x
    / 1.09x, 16->128 @56 1.00x / 1.18x, batch 4 64->256 @56 1.02x / 1.14x, 32->128 @56
    1.00x / 0.92x, 5x5 8->256 @56 0.99x / 0.97x (the patches of all of these 3.4-14 MB).
    Past the block the row pays: 3x3 stride 2 192->32 @56 batch 8 channels-last 3.7x
    `lax` with it (its patches 38 MiB, the padded input it reads 18 MiB). Training keeps
    the row (without it 0.90-1.04x on four of these layers).

    Those layers all widen. Narrowing ones keep the row: found by a random sweep on an
    AMD EPYC with AVX-512 (Zen 5), 2026-12-07 (5x5 stride 2 192->16 @32 batch 8 valid
    channels-first, forward 5.5 ms without the row, 2.0 with it, PyTorch 0.7). With the
    row against without, forward, valid, 7 interleaved runs, channels-first /
    channels-last (`/tmp/s73/rowab.py`, `rowab2.py`): 3x3 stride 2 128->128 @28 batch 8
    2.34x / 3.57x, 64->64 @56 1.15x / 1.13x, 192->16 @32 1.48x / 1.27x, 256->64 @56
    batch 4 1.42x / 1.46x, 48->32 @56 1.29x / 1.08x; 5x5 192->16 @32 2.36x / 2.41x, 96->96
    @32 1.55x / 1.42x; 7x7 64->16 @56 batch 4 2.92x / 2.69x; 4x4 64->32 @32 1.09x /
    1.11x (0.96-3.57x over the class's rows in both grids, the lowest on a layer under
    0.2 ms, 64->48 @28 batch 2, and one other rules run, 7x7 32->32 @64); but on 6 output
    rows 0.89-0.95x (3x3 256->256 and 128->96 @14), widening 0.94-1.10x (8->256 @112,
    16->128 @56, 32->48 @56, 96->128 @28, 64->256 @28). On fresh layers
    (`/tmp/s73/rowrand.py`, the rule against without, stride 2-3, 2x2 to 7x7):
    kernels no taller than the stride lost at stride 3 (3x3 384->64 @32 batch 16
    0.65x, 2x2 0.79-0.83x), so they keep the slow path; with them left out, 20 layers
    ran 0.96-3.40x (3x3 stride 2 384->128 @16 batch 8 channels-last 3.40x, 4x4 384->8
    @20 1.91x, 5x5 stride 3 dilation 2 512->8 @56 batch 1 1.54x). The kernel's height
    counts undilated (3x3 stride 3 dilation 2: 0.92x and 1.13x, not taken). With the
    row YNNPACK's buffer is the padded input read, not the patches, so `eigen_pays`
    may now take such a value past the block where its patches were under it (a kernel
    narrower than the stride along the width reads more input than its patches hold);
    Eigen was measured to win past the block (see `MALLOC_MAX_HEAP_BLOCK`).
    """
    dtype = jnp.result_type(x.dtype, w.dtype)
    padded = padded_row(x.shape, w.shape, spec, derivative, value, dtype)
    if padded is spec:
        return forward(x, w, spec)
    out = spec.out_spatial(x.shape[2:], w.shape[2:])
    return slice_in_layout(forward(x, w, padded), spec, 2, 0, out[0])


def padded_row(
    x_shape,
    w_shape,
    spec: ConvSpec,
    derivative: bool = False,
    value: bool = False,
    dtype=jnp.float32,
) -> ConvSpec:
    """The convolution `forward_padded` hands XLA for this canonical one: ``spec`` with
    a padded row high in the first spatial dim, or ``spec`` itself where that does not
    pay (see `forward_padded`)."""
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    c_out, c_in = w_shape[:2]
    if (
        any(p != (0, 0) for p in spec.padding)
        or any(d != 1 for d in spec.lhs_dilation)
        or spec.groups > 1
        or spec.ndim == 1
        or out[0] < FORWARD_PADDED_MIN_ROWS
        or (
            not derivative
            and (
                c_in < FORWARD_PADDED_MIN_IN_CHANNELS
                or (
                    c_out <= FORWARD_PADDED_FEW_OUT_CHANNELS
                    and c_in <= FORWARD_PADDED_FEW_OUT_MAX_IN_CHANNELS
                )
            )
        )
        or (
            value
            and spec.stride[0] > FORWARD_PADDED_MAX_VALUE_STRIDE
            and (
                c_out > c_in
                or out[0] < FORWARD_PADDED_STRIDED_MIN_ROWS
                or w_shape[2] <= spec.stride[0]
            )
            and ynnpack_buffer_bytes(x_shape, w_shape, dtype, spec) <= MALLOC_MAX_HEAP_BLOCK
        )
        or (
            not derivative
            and not spec.channels_last
            and c_out >= FORWARD_PADDED_MAX_FAN_OUT * c_in * math.prod(w_shape[2:])
        )
    ):
        return spec
    return dataclasses.replace(spec, padding=((0, 1),) + ((0, 0),) * (spec.ndim - 1))


# `forward_eigen` adds at most this fraction of the output's rows (at least one row).
EIGEN_MAX_EXTRA_ROWS = 0.25
# ... and leaves to YNNPACK the deep 5x5-and-larger layers of many channels on large
# maps, where it measured as fast or faster (see `eigen_pays`), but on x86 CPUs with
# AVX2 and without AVX-512 (`avx2_only`). There Eigen won on 10 of 11: forward, Eigen against
# YNNPACK, AMD EPYC with AVX2 (2 cores), 2026-12-04, medians of 11-15 interleaved runs
# in two sweeps (`/tmp/s51/eigsweep.py`): the notes' 5x5 100->100 valid @68 batch 8
# 1.12-1.13x, batch 4 channels-last 1.20x, batch 1 0.93x and 1.17x (and 1.22x in a
# third script), padding 2 @64 batch 8 1.17x; 5x5 128@56 batch 4 1.07x / 1.12x
# channels-first / -last, 192@32 channels-last 1.38x, 160@40 1.24x; 3x3 512@32 batch 2
# 1.17x / 1.11x, batch 1 1.13x, 320@40 1.12x, 288->96 @48 channels-last 1.18x; 7x7
# 64->96 @56 batch 4 1.30x. (Layers whose program the lift leaves alone read 0.97x and
# 1.00x in the same runs.) Training (the value and both gradients, the cotangent passed
# in, `/tmp/s51/patchab2.py`, 11 runs, the value already lifted): the notes' valid
# layer 1.02x, 5x5 128@56 0.99x, 3x3 512@32 1.06x, 7x7 64->96 0.99x, 5x5 192@32
# channels-last 1.07x; the input gradient alone 1.02-1.07x, 1.37x for the last.
# (`EIGEN_MAX_POSITIONS_PER_IMAGE` is lifted there for some values only, see
# `EIGEN_AVX2_WIDE_KERNEL`.)
EIGEN_MAX_DEPTH, EIGEN_MAX_POSITIONS = 2400, 1024
# ... and to YNNPACK the layers with fewer input or output channels than this. Against
# YNNPACK (3x3 unless said, batch 8 unless said, @56 unless said, channels-last /
# channels-first, minimum of 21 shuffled runs; forward, training through a ReLU):
# 3->128 batch 2 0.57x / 0.62x, 0.73x / 0.75x; 3->64 0.58x, 0.78-0.80x; 3->64 5x5 @112
# 0.70x, 0.64x; 3->48 @112 0.63x, 0.78x; 64->3 0.55x / 0.73x, 0.69x / 0.85x; 8->64
# 0.87x / 0.84x, 0.89x / 0.97x; 128->8 0.73x (@28 channels-first 0.81x), 0.84x; but
# 12->64 1.09x / 0.96x, 1.04x / 1.21x; 64->12 1.65x, 1.19x; 16->64 1.12x / 1.20x,
# 1.04x / 1.22x. (A few layers of 3 or 8 channels won, and are left to YNNPACK all the
# same: 3->32 @112 1.56-1.73x forward, where YNNPACK took twice as long as for 3->48;
# 8->96 5x5 @28 1.32x.)
EIGEN_MIN_CHANNELS = 12
# ... and to YNNPACK the maps of more than this many output positions per image (3x3,
# batch 2 unless said, Eigen against YNNPACK, minimum of 21 shuffled runs; forward,
# training through a ReLU): 64@224 0.71x / 0.81x channels-first / -last, 0.84x /
# 0.87x; 64@128 0.74x / 0.93x, 0.84x / 0.66x; 64@112 0.75x, 0.67x (batch 8
# channels-last 0.88x, 0.83x); 128@112 0.74x, 0.88x; 64@96 batch 4 0.87x, 0.86x;
# 48@160 channels-last 1.09x, 0.74x; but 64@80 1.17x / 1.27x, 1.01x / 0.97x; 96@72
# 1.30x, 1.16x; 128@64 channels-last 1.03x, 1.08x.
EIGEN_MAX_POSITIONS_PER_IMAGE = 8192
# ... but for values not differentiated on x86 CPUs with AVX2 and without AVX-512
# (`avx2_only`), with a kernel of this shape at this batch or more. Forward, Eigen
# against YNNPACK, AMD EPYC with AVX2, 2026-12-04, 11-15 interleaved runs
# (`/tmp/s51/eigsweep.py`, `/tmp/s51/patchab2.py`), 3x3 padding 1, channels-first /
# channels-last: 64@112 batch 2 1.15-1.23x / 1.29-1.36x, batch 8 1.40x / 1.33x; 48@128
# batch 4 channels-last 1.48-1.58x; 32@160 batch 2 channels-last 1.48x; 32@224 batch 2
# 1.24-1.31x; 96@120 batch 2 1.23x; 128@96 batch 2 1.13x / 1.01x. At batch 1 not: 64@224
# 0.93x and 1.05x, channels-last 1.00x; 128@112 0.98x; 64@256 channels-last 1.03x. Nor
# larger kernels: 5x5 64@112 batch 2 1.01x / 0.91x; 7x7 32@128 channels-last 0.83x.
# Training did not gain (the cotangent passed in, the same layers at batch 2-4:
# 0.81-1.12x), though the input gradient alone did (1.17-2.44x, batch 1 1.07x). Dilated
# by 2, measured after (the rule against without, 11 runs): 64@112 batch 2 1.16x,
# 32@224 batch 2 1.18x, 96@120 batch 2 channels-last 1.28x, but 48->96 @160 batch 4
# 0.93x and 0.95x (`auto` at 0.94x `lax` there, in a sweep of 24 layers these rules
# route, `/tmp/s51/rand2.py 7 24`, whose other rows read 0.95-5.95x forward and
# 0.98-2.96x in training). Every role of such layers, differentiated values and input
# gradients too, where YNNPACK's padded copy of the input (one per thread) passes
# `MALLOC_MAX_HEAP_BLOCK`: training with the cotangent passed in, the rule against
# without, 5 interleaved runs, 2026-12-05 (`/tmp/s52/patchab.py`), channels-last /
# channels-first: 64@112 batch 16 1.10x / 1.03x, 128@112 batch 8 1.23x / 1.14x, 32@128
# batch 16 1.28x / 1.00x, 64@256 batch 2 1.00x / 0.98x, 96->48 @112 batch 8 1.14x /
# 1.11x (under the block, every role by Eigen had read 0.98x / 0.96x on 64@112 batch 8).
EIGEN_AVX2_WIDE_KERNEL, EIGEN_AVX2_WIDE_MIN_BATCH = (3, 3), 2
# ... and to YNNPACK the layers of fewer FLOPs (2 x multiply-adds) than this, where
# Eigen's start costs more than its second core saves (3x3 unless said, Eigen against
# YNNPACK, minimum of 21 shuffled runs; forward, training through a ReLU; channels-last
# unless said): 16->64 @8 batch 2 (2.4 MFLOP) 0.66x, 0.72x; 5x5 16->32 @8 batch 4 (6.6)
# 0.55x, 0.61x; 48->16 @14 batch 2 (5.4) 0.55x / 0.65x channels-first, 0.82x / 1.05x;
# 32->32 @14 batch 8 (29) 0.77x, 0.76x; @28 batch 2 channels-first (29) 0.96x, 0.79x;
# from about 60 MFLOP even or better: 128@14 batch 1 (58) 1.04-1.08x, 1.00x; 64@14 batch
# 8 (116) 1.28-1.35x, 0.90-0.96x; 64@28 batch 2 (116) 1.17x / 0.86x, 1.05x / 0.92x;
# larger 1.03-1.58x, 1.01-1.18x.
EIGEN_MIN_FLOPS = 5e7
# ... and for a value not differentiated this many. Forward, Eigen against YNNPACK (3x3
# padding 1, rule against without, 15 interleaved runs, two runs, Sapphire Rapids Xeon,
# 2026-12-02, channels-first / channels-last, `/tmp/s35/ab_flops.py`): 64@14 batch 4
# (58 MFLOP) 1.46-1.48x / 1.26-1.30x, 64@20 batch 2 1.38-1.40x / 1.15-1.23x, 64@8
# batch 16 (75) 0.97-1.03x / 1.08-1.47x, 32@16 batch 16 0.96-0.98x / 1.14-1.56x, 64@7
# batch 16, 128@7 batch 4 and 128@14 batch 1 0.95-1.09x; 48@14 batch 8 (65) 0.87-0.94x
# / 1.02-1.03x. Training (the input gradient and the differentiated value) stays at
# `EIGEN_MIN_FLOPS`: with the higher floor 48@14 trained 0.83-0.85x in both layouts,
# 32@16 channels-last 1.88-1.94x, the rest 0.89-1.25x.
EIGEN_MIN_VALUE_FLOPS = 1e8
# ... and, channels-first, the input gradients and differentiated values of fewer than
# this many. Training through a ReLU with Eigen against YNNPACK under the 1e8 floor
# (3x3 padding 1, 15 interleaved runs, Sapphire Rapids Xeon, 2026-12-03,
# `/tmp/s37/abeig.py`; a held-out 64->64 @28 batch 1 layer had trained at 0.78x `lax`),
# channels-first: 64->64 @28 batch 1 (58 MFLOP) 0.79x, @14 batch 4 0.81x, @20 batch 2
# 0.82x, @7 batch 16 0.83x, @24 batch 2 (85) 0.96x, @32 batch 1 0.97x, @16 batch 4
# 0.98x; 80->80 @20 batch 2 (92) 0.84x; 128->128 @14 batch 1 0.91x, @7 batch 4 0.99x;
# but 48->48 @14 batch 8 (65) 1.15x, @28 batch 2 1.08x; from 116 MFLOP Eigen won,
# 64->64 @28 batch 2 1.49x, @40 batch 1 1.34x, 96->96 @14 batch 4 1.14x, 128->128
# @14 batch 2 1.03x. Channels-last the same layers ran 0.95-1.34x with Eigen (48->48
# @14 batch 8 1.34x, 32->32 @16 batch 16 1.26x), so there the floor stays. A rerun
# with the floor against without (`/tmp/s37/abmode.py`, 11 runs; a step with a fixed
# cotangent passed in, then through a ReLU and the cotangent) read less: 64->64 @28
# batch 1 1.06x and 1.02x, @14 batch 4 1.04x and 1.01x, 128->128 @14 batch 1 0.95x and
# 1.02x, 80->80 @20 batch 2 0.90x and 1.08x, 48->48 @14 batch 8 0.80x and 0.89x: a
# small effect either way, within the machine's noise but for 48 channels.
EIGEN_MIN_FLOPS_CHANNELS_FIRST = 1e8
# ... and to YNNPACK the channels-first layers to at least this many output channels on
# maps of at least this many output positions per image. Forward, Eigen against
# YNNPACK (3x3 padding 1, channels-first, Intel Xeon with AVX-512, 11-15 interleaved
# runs, 2026-12-01): 64->256 @64 batch 2 0.74x, batch 4 0.71x (ESPCN's layer, `auto` at
# 0.74x `lax`), batch 8 0.86x; @56 batch 8 0.90x; 128->256 @64 batch 2 0.88x; 32->256
# @64 batch 4 0.93x. With fewer output channels or positions Eigen wins: 64->192 @64
# batch 4 1.35x, 64->128 @56 batch 8 1.11x (but @64 batch 4 0.92x), 64->64 @64 1.6x,
# 64->256 @32 batch 8 1.18x, 128->512 @32 batch 4 1.08x. Channels-last the two ran
# even (64->256 @64 batch 4 1.04x).
EIGEN_CHANNELS_FIRST_MAX_OUT_CHANNELS, EIGEN_CHANNELS_FIRST_WIDE_POSITIONS = 255, 2500
# ... and to YNNPACK the layers to at most this many output channels on fewer rows
# (batch times output positions) than this. Forward, Eigen against YNNPACK (3x3 padding
# 1, channels-first / channels-last, 15 interleaved runs, Intel Xeon, 2026-12-01; two
# random layers lost 0.44-0.58x `lax` this way): to 16 channels 512 @18 batch 4 (1,296
# rows) 0.73x / 0.71x, 384 @33 batch 2 (2,178) 0.62x / 0.75x, 384 @14 batch 8 (1,568)
# 0.66x / 0.77x, 256 @28 batch 4 (3,136) 0.68x / 0.74x, 128 @28 batch 4 0.72x / 0.78x;
# 256->24 @28 batch 4 0.94x / 0.93x. From 6,272 rows Eigen is even or wins: 512->16 @56
# batch 2 0.92x / 1.16x, @28 batch 8 1.06x / 1.25x; 128->16 @56 batch 8 (25,088) 1.09x
# / 1.23x, 64->16 1.15x / 1.11x. With 32 output channels Eigen won on 1,296 rows too
# (512->32 @18 batch 4 1.06x / 1.12x), and with 48 (256->48 @28 batch 4 1.08x / 1.33x).
EIGEN_FEW_OUT_CHANNELS, EIGEN_FEW_OUT_CHANNELS_MIN_ROWS = 24, 6272
# ... and to YNNPACK the dilated values (not differentiated) to that many output channels
# from at most this many input channels, on any number of rows. Found by a random sweep
# (24->16 7x7 dilation 2 @56 batch 2 channels-last forward 0.80x `lax`). Forward, Eigen
# against YNNPACK (padding keeping the size, 15 interleaved runs, Sapphire Rapids Xeon,
# 2026-12-03, one malloc arena; channels-last unless said): dilation 2, 24->16 7x7 @56
# batch 2 0.81-0.83x (channels-first 0.84-0.85x), batch 4 0.83x; 5x5 batch 8 0.83x;
# 24->20 5x5 batch 4 0.84x; 48->12 3x3 batch 8 0.93x; 64->16 3x3 batch 2 0.89x, 5x5
# batch 4 0.96x; dilation 3 24->16 5x5 batch 4 0.78x, 64->16 3x3 0.92x. Not from more
# channels (128->16 3x3 batch 4 1.09x / 0.99x channels-first, 256->16 @28 batch 8 0.98x)
# nor to more (24->32 5x5 1.16x, 64->64 3x3 1.43-1.45x), nor undilated (24->16 7x7
# 1.04-1.06x, 5x5 0.85-0.97x); and training kept Eigen's (with it 0.99-1.24x).
EIGEN_DILATED_FEW_MAX_IN_CHANNELS = 64
# ... and to YNNPACK the maps of at most this many output positions per image to this
# range of output channels. Forward, `auto` (Eigen) against `lax` (YNNPACK), 3x3 padding
# 1, C->C channels, batch 8 unless said, channels-last (two runs) / channels-first, 15
# interleaved runs, Intel Xeon (Sapphire Rapids, AVX-512), 2026-12-02
# (`/tmp/s35/eig2.py`): 128@14 0.91x, 0.88x / 0.91x; 256@7 0.90x, 0.97x / 0.91x; 256@14
# 0.99x, 1.01x / 1.00x; 128@8 batch 16 0.90x / 0.93x; 128@9 batch 16 0.91x; 256@8
# 0.84x; 384@6 0.97x; 128@7 0.90x / 0.94x. Outside it Eigen is even or wins: 512@7
# 1.03x, 1.02x / 1.03x, batch 2 1.07x; 64@14 batch 16 1.24x, 1.21x / 1.25x; 128@28
# 1.04x, 1.03x / 1.04x; 256@28 batch 2 1.04x, 1.03x / 1.03x. Side by side with the rule
# against without it (`/tmp/s35/ab_small.py`, three runs, channels-first /
# channels-last): forward 128@14 1.05-1.09x / 1.07-1.15x, 256@7 1.05-1.09x /
# 1.07-1.11x, 128@8 batch 16 1.09-1.11x / 1.09-1.17x, 256@8 batch 4 0.95-1.02x /
# 1.13-1.17x, 128->256 @14 batch 2 1.01-1.12x / 1.15-1.20x, 256@14 batch 1 1.10-1.14x /
# 1.11-1.15x; 256@14 and 384@6 0.98-1.05x. Not for the value under differentiation
# (training 0.93-1.00x channels-last on 128@14, 0.89-0.96x on 384@6), nor for the input
# gradient (96->96 @9 training 0.76-0.77x with it, when the range started at 96).
EIGEN_SMALL_MAP_POSITIONS, EIGEN_SMALL_MAP_OUT_CHANNELS = 196, (128, 384)
# ... and to YNNPACK the values to exactly this many output channels on fewer rows (batch
# times output positions) than this: YNNPACK seems to split the output channels into
# blocks of 64, one per core, and 128 fills both cores of this machine (with 64, 96,
# 144, 160 or 192 output channels Eigen won 1.08-1.43x on 2,178-4,608 rows; 256 even).
# Forward, with the rule against without (YNNPACK against Eigen), 3x3 padding 1 unless
# said, channels-first / channels-last, 11 interleaved runs, Sapphire Rapids Xeon,
# 2026-12-03 (`/tmp/s36/abrule.py`): 128@28 batch 2 1.09x / 1.10x, batch 4 1.06x /
# 1.05x; 128@56 batch 1 1.11x / 1.02x; 64->128 @56 batch 1 1.10x / 1.09x; dilation 3
# 128@40 batch 2 1.10x / 1.12x (a held-out layer, `auto` at 0.88-0.90x `lax` without
# it); dilation 2 128@33 batch 1 1.11x / 1.08x; 256->128 @28 batch 4 1.00x / 1.05x;
# 5x5 128@28 batch 2 1.04x / 1.05x, @20 batch 4 1.12x / 1.10x; 7x7 64->128 @32 batch 2
# 1.00x / 1.01x; 128@48 batch 2 (4,608 rows) 1.07x / 1.03x; from 6,272 rows even
# (128@40 batch 4 1.00x / 0.99x). Not for the differentiated value and the input
# gradient: training through a ReLU with them on YNNPACK too ran 0.87-0.96x on 128@28
# batch 2-4 and 0.89-1.02x on the rest.
EIGEN_BALANCED_OUT_CHANNELS, EIGEN_BALANCED_MAX_ROWS = 128, 6272

# Strided along the height, YNNPACK's convolution (jaxlib 0.10.2) writes each call's
# input into a buffer of its own: the input it reads, padded, where the convolution is
# padded, else the whole patch matrix (`ynnpack_buffer_bytes`; seen with ``strace``:
# 26.6 MB per thread for 3x3 stride 2 256->128 @56 batch 8 padded, 53.1 MB for
# 384->16 @64 batch 4 unpadded, its patches). glibc's malloc takes a block of more than
# `MALLOC_MAX_HEAP_BLOCK` (its largest mmap threshold on 64-bit) from the system afresh
# on every call, whose pages then fault in, and past it such layers fall off a cliff:
# 3x3 stride 2 channels-last 256->16 @56 ran 1.1 ms an image at batch 10 and 3.4 at
# batch 16, 384->16 @64 2.8 ms at batch 2 and 13 at batch 4, as PyTorch ran them 8-16x
# faster. To at most `EIGEN_STRIDED_MAX_OUT_CHANNELS` output channels Eigen's
# convolution, with as many extra output rows as make the output taller than the input
# (`forward_eigen`: about twice the products at stride 2), is then faster. Forward,
# Eigen against YNNPACK, 3x3 stride 2 unless said, AMD EPYC with AVX2, 2026-12-05, 5
# interleaved runs, channels-last / channels-first (`/tmp/s52/sw.py`), past the limit:
# 384->16 @64 unpadded batch 4 4.52x / 3.09x, batch 8 3.45-4.03x / 2.20-2.21x; 128->4
# @64 unpadded batch 16 5.25x / 2.17x; padded 256->16 @56 batch 16 2.23-2.44x /
# 1.56x, batch 12 2.33x; 64->32 @112 batch 16 2.48x / 1.59x; 192->16 @112 batch 8
# 2.58x / 1.57x; 256->64 @56 batch 16 1.60x / 1.32x; 5x5 256->24 @64 batch 8 1.37x /
# 1.19x. Under it Eigen lost: 256->16 @56 batch 8 0.68-0.83x / 0.70x (batch 10 0.77x),
# 128->8 @56 batch 16 0.79x / 0.68x, 256->48 @56 batch 8 0.94x / 0.72x, batch 32 256->16 @28
# 0.88x / 0.80x, 384->16 @64 batch 2 0.94x. With more output channels the doubled
# products cost what the buffer does: 256->128 @56 batch 16 0.98x, 128->128 @56 batch
# 16 1.00x (channels-last). With the rule against without, 16 random layers past the
# block (`/tmp/s52/cfgs2.txt`, 5 interleaved runs): the 10 it takes ran forward
# 1.19-14.0x (7x7 64->1 @64 batch 4 channels-last 14.0x, 7x7 dilation 2 256->1 @32
# batch 16 7.2x, 5x5 384->16 @28 batch 16 channels-first 4.2x, 2x2 512->8 @64 batch 8
# 3.5x, 4x4 256->24 @64 batch 16 channels-first 1.19x); three more run
# `matmul.output_taps`, and three unpadded ones stay on YNNPACK, whose buffer with
# `forward_padded`'s row is the input read, under the block (dilation 2 512->24 @112
# batch 1 had run 0.86-0.88x with the rule when it counted their patches). Training
# (the cotangent passed in, 5 runs, channels-last / channels-first): 384->16 @64 batch
# 8 1.36x / 1.35x, 256->16 @56 batch 16 1.13x / 1.09x, 64->32 @112 batch 16 1.11x /
# 1.09x, 256->64 @56 batch 16 1.40x / 1.13x.
MALLOC_MAX_HEAP_BLOCK = 32 * 2**20
EIGEN_STRIDED_MAX_OUT_CHANNELS = 64
# ... strided along the height by at most this much. Strides 3 and 4 would pay too
# (Eigen against YNNPACK past the block, forward, 5 interleaved runs, channels-last /
# channels-first, `/tmp/s52/sw.py`: 3x3 stride 3 256->16 @56 batch 16 3.27x / 1.77x,
# 256->64 1.83x / 1.52x, 64->3 @128 batch 8 2.87x / 1.98x; stride 4 128->32 @112 batch
# 8 2.87x / 1.67x, 5x5 64->3 @128 batch 8 1.88x / 1.34x), but with the input split
# along its height over a mesh XLA's partitioner (jaxlib 0.10.2) got the extra rows'
# gradients wrong at stride 3: relative errors of 0.25-0.31 on 3x3 stride 3 padding 1
# @32 on 8 devices, both layouts, where `lax` is right (`/tmp/s52/shard2.py`: 90 layers
# a stride, 3x3 and 5x5, maps of 24-40, 2-8 devices; none wrong at stride 2). XLA gets
# some of these layers wrong itself, the rule or not (`/tmp/s52/shard5.py`): 5x5
# stride 3 padding 1 @32 and 3x3 and 5x5 stride 4 padding 1-2 @40 on 8 devices, `lax`'s
# gradients 0.21-0.35 off (2 of 90 layers at stride 3, 6 of 90 at stride 4).
EIGEN_STRIDED_MAX_STRIDE = 2


def ynnpack_buffer_bytes(x_shape, w_shape, dtype, spec: ConvSpec) -> int:
    """The bytes of the buffer YNNPACK writes the input into for this canonical strided
    2-D convolution (see `MALLOC_MAX_HEAP_BLOCK`): the input rows and columns the
    windows read, padded, where the convolution is padded; else the patches, one row of
    ``C_in * taps`` per output position (seen with ``strace``: 4x4 stride 2 192->48 @56
    batch 4 channels-last unpadded writes 35.8 MB, its patches, and nothing that large
    with a row padded high, which no window reads).

    >>> from jaxconv._spec import ConvSpec
    >>> spec = ConvSpec((2, 2), ((1, 1), (1, 1)), (1, 1), (1, 1), 1)
    >>> ynnpack_buffer_bytes((8, 256, 56, 56), (128, 256, 3, 3), "float32", spec)
    26615808
    """
    n, c = x_shape[:2]
    kernel = w_shape[2:]
    out = spec.out_spatial(x_shape[2:], kernel)
    read = [
        (o - 1) * s + (k - 1) * d + 1
        for o, s, k, d in zip(out, spec.stride, kernel, spec.rhs_dilation, strict=True)
    ]
    padded = any(p != (0, 0) for p in spec.padding)
    per_image = math.prod(read) * c if padded else math.prod(out) * c * math.prod(kernel)
    return n * per_image * jnp.dtype(dtype).itemsize


def _strided_eigen_pays(x_shape, w_shape, dtype, spec: ConvSpec, value: bool) -> bool:
    """`eigen_pays` for a convolution strided along the height: by at most
    `EIGEN_STRIDED_MAX_STRIDE`, to at most `EIGEN_STRIDED_MAX_OUT_CHANNELS`, where the
    buffer of YNNPACK's convolution that `forward_padded` would run passes
    `MALLOC_MAX_HEAP_BLOCK` (its padded row turns the patches of an unpadded layer into
    the padded input)."""
    if spec.stride[0] > EIGEN_STRIDED_MAX_STRIDE or w_shape[0] > EIGEN_STRIDED_MAX_OUT_CHANNELS:
        return False
    return _ynnpack_buffer_past_block(x_shape, w_shape, dtype, spec, value)


def _ynnpack_buffer_past_block(x_shape, w_shape, dtype, spec: ConvSpec, value: bool) -> bool:
    """Whether the buffer of the YNNPACK convolution `forward_padded` would run for this
    one (`padded_row`, `ynnpack_buffer_bytes`) passes `MALLOC_MAX_HEAP_BLOCK`."""
    ynnpack = padded_row(x_shape, w_shape, spec, value=value, dtype=dtype)
    return ynnpack_buffer_bytes(x_shape, w_shape, dtype, ynnpack) > MALLOC_MAX_HEAP_BLOCK


def eigen_pays(x_shape, w_shape, dtype, spec: ConvSpec, value: bool = False) -> bool:
    """Whether `forward_eigen` runs this canonical convolution off YNNPACK: float32 or
    float64 (XLA gives YNNPACK no other floating type), 2-D, dense, no input dilation,
    more than 16 input or output channels (XLA runs smaller ones through Eigen already);
    strided along the height only where YNNPACK's buffer would be large
    (`_strided_eigen_pays`), else stride 1 along the height, at most
    `EIGEN_MAX_EXTRA_ROWS` extra output rows, and at least `EIGEN_MIN_CHANNELS` of each,
    on maps of at most `EIGEN_MAX_POSITIONS_PER_IMAGE` output positions (but, on a CPU
    with AVX2 and no AVX-512, `avx2_only`, for a kernel of `EIGEN_AVX2_WIDE_KERNEL`
    and a ``value`` at `EIGEN_AVX2_WIDE_MIN_BATCH` or more or YNNPACK's buffer past
    `MALLOC_MAX_HEAP_BLOCK`), with at least `EIGEN_MIN_FLOPS` FLOPs
    (`EIGEN_MIN_FLOPS_CHANNELS_FIRST` channels-first), and not channels-first to more
    than `EIGEN_CHANNELS_FIRST_MAX_OUT_CHANNELS` channels on maps of
    `EIGEN_CHANNELS_FIRST_WIDE_POSITIONS` positions or more, nor to at most
    `EIGEN_FEW_OUT_CHANNELS` on fewer than `EIGEN_FEW_OUT_CHANNELS_MIN_ROWS` rows (batch
    times output positions), nor, for a value not differentiated (``value``), with fewer
    than `EIGEN_MIN_VALUE_FLOPS` FLOPs, or dilated to at most `EIGEN_FEW_OUT_CHANNELS`
    from at most `EIGEN_DILATED_FEW_MAX_IN_CHANNELS`, or to
    `EIGEN_SMALL_MAP_OUT_CHANNELS` on maps of at most `EIGEN_SMALL_MAP_POSITIONS`
    positions, or to exactly `EIGEN_BALANCED_OUT_CHANNELS` on fewer than
    `EIGEN_BALANCED_MAX_ROWS` rows. Not the deep (``C_in * taps >= EIGEN_MAX_DEPTH``)
    layers of 96 or more output channels on maps of `EIGEN_MAX_POSITIONS` or more: the
    notes' 5x5 100->100 @64 measured 0.8-1.1x YNNPACK's (batch 4-32), 96-128 channels
    0.9-1.3x, on an Intel Xeon with AVX-512; those run by Eigen on a CPU with AVX2 and
    no AVX-512 (`avx2_only`), where Eigen ran 1.07-1.38x forward on 10 of 11 layers (the
    notes' layer at batch 1 0.93x and 1.17x in two runs) and 0.99-1.07x in training."""
    if jnp.dtype(dtype) not in (jnp.float32, jnp.float64):
        return False
    if spec.ndim != 2 or spec.groups != 1 or spec.lhs_dilation != (1, 1):
        return False
    c_out, c_in, *kernel = w_shape
    out = spec.out_spatial(x_shape[2:], kernel)
    if min(out) < 1 or 0 in x_shape:
        return False
    if max(c_in, c_out) <= 16:
        return False
    if spec.stride[0] != 1:
        return _strided_eigen_pays(x_shape, w_shape, dtype, spec, value)
    if min(c_in, c_out) < EIGEN_MIN_CHANNELS:
        return False
    if math.prod(out) > EIGEN_MAX_POSITIONS_PER_IMAGE and not (
        avx2_only()
        and tuple(kernel) == EIGEN_AVX2_WIDE_KERNEL
        and (
            (value and x_shape[0] >= EIGEN_AVX2_WIDE_MIN_BATCH)
            or _ynnpack_buffer_past_block(x_shape, w_shape, dtype, spec, value)
        )
    ):
        return False
    if (
        not spec.channels_last
        and c_out > EIGEN_CHANNELS_FIRST_MAX_OUT_CHANNELS
        and math.prod(out) >= EIGEN_CHANNELS_FIRST_WIDE_POSITIONS
    ):
        return False
    if value:
        floor = EIGEN_MIN_VALUE_FLOPS
    else:
        floor = EIGEN_MIN_FLOPS if spec.channels_last else EIGEN_MIN_FLOPS_CHANNELS_FIRST
    if spec.flops(x_shape, w_shape) < floor:
        return False
    low, high = EIGEN_SMALL_MAP_OUT_CHANNELS
    if value and math.prod(out) <= EIGEN_SMALL_MAP_POSITIONS and low <= c_out <= high:
        return False
    rows = x_shape[0] * math.prod(out)
    if value and c_out == EIGEN_BALANCED_OUT_CHANNELS and rows < EIGEN_BALANCED_MAX_ROWS:
        return False
    if c_out <= EIGEN_FEW_OUT_CHANNELS and rows < EIGEN_FEW_OUT_CHANNELS_MIN_ROWS:
        return False
    few = c_out <= EIGEN_FEW_OUT_CHANNELS and c_in <= EIGEN_DILATED_FEW_MAX_IN_CHANNELS
    if value and few and max(spec.rhs_dilation) > 1:
        return False
    if c_in * math.prod(kernel) >= EIGEN_MAX_DEPTH and c_out >= 96:
        if math.prod(out) >= EIGEN_MAX_POSITIONS and not avx2_only():
            return False
    return _extra_rows(x_shape, out) <= max(1, EIGEN_MAX_EXTRA_ROWS * out[0])


def avx2_only() -> bool:
    """Whether the host is an x86 CPU with AVX2 and without AVX-512 (Linux's
    ``/proc/cpuinfo`` flags; False where they cannot be read). On these, measured on an
    AMD EPYC, XLA's YNNPACK convolutions lose to Eigen's on deep layers
    (`EIGEN_MAX_DEPTH`) and on the values of 3x3 layers on large maps
    (`EIGEN_AVX2_WIDE_KERNEL`), and XLA's 2-D weight gradients to `auto`'s kernel rows
    where AMD's AVX-512 CPUs keep XLA's (`jaxconv._dispatch.ROWS_MID_MAP_VENDORS`);
    and the patches' derivatives of dilated windows past small outputs, which won on an
    AVX-512 Xeon, lose to XLA's there with fewer channels or more rows
    (`jaxconv._dispatch.KERNEL_PAST_OUTPUT_DILATED_AVX2_MAX_ROWS`; other CPUs, since
    2026-12-07, have a 2-D rows bound of their own, `KERNEL_PAST_OUTPUT_DILATED_MAX_ROWS`).

    >>> isinstance(avx2_only(), bool)
    True
    """
    flags = cpuinfo("flags").split()
    return "avx2" in flags and "avx512f" not in flags


def _extra_rows(x_shape, out) -> int:
    """The output rows to add for an output longer than the input (none if it is)."""
    if any(m > n for m, n in zip(out, x_shape[2:], strict=True)):
        return 0
    return x_shape[2] - out[0] + 1


def forward_eigen(x: jax.Array, w: jax.Array, spec: ConvSpec, value: bool = False) -> jax.Array:
    """XLA's convolution with extra output rows, dropped after, that keep it off
    YNNPACK; `forward_padded` where that does not pay (`eigen_pays`).

    XLA's CPU compiler (jaxlib 0.10) hands a 2-D convolution to YNNPACK unless, among
    other things, an output dim is longer than the input's; then Eigen's convolution
    runs it. Eigen spreads the work over both cores of this machine, YNNPACK (measured
    in XLA's profile, and with ``taskset``) often does not: ResNet 3x3 64@56 batch 8
    22 ms on two cores against 17 on one. So when the output has no more rows than the
    input, pad enough rows high for one more and drop them. Forward against XLA's
    convolution (batch 8, stride 1, minimum of 11 shuffled runs, channels-first /
    channels-last): 3x3 64@56 1.6x / 1.5x; valid 4.2x / 4.6x (against the padded row
    of `forward_padded`: 1.5x); 128@28 1.05x / 1.2x; 256@14 1.1x / 1.3x; 512@7 1.2x /
    1.2x; 32->64 @112 0.97x / 1.6x (rerun: 1.12x / 1.0x); 5x5 64@28 2.0x / 1.5x; 7x7
    1.7x / 1.5x; 3x3 256@33 dilation 2 1.1x / 1.0x, dilation 4 1.2x / 1.3x. With a
    stride the extra rows cost as many again (3x3 stride 2 128@56: 0.77x). An output
    already taller than the input (a stride-1 transposed convolution) runs as it is.
    ``value``: this is a value not differentiated (small maps stay on YNNPACK, see
    `eigen_pays`), not an input gradient's convolution.
    """
    dtype = jnp.result_type(x.dtype, w.dtype)
    if not eigen_pays(x.shape, w.shape, dtype, spec, value=value):
        return forward_padded(x, w, spec, value=value)
    out = spec.out_spatial(x.shape[2:], w.shape[2:])
    extra = _extra_rows(x.shape, out)
    if not extra:
        return forward(x, w, spec)
    (lo, hi), rest = spec.padding[0], spec.padding[1:]
    taller = dataclasses.replace(spec, padding=((lo, hi + extra * spec.stride[0]), *rest))
    return slice_in_layout(forward(x, w, taller), spec, 2, 0, out[0])
