"""``impl="shift"``: shift-and-multiply-add, for depthwise and small-group convolutions.

Each kernel tap contributes its strided window of the padded input times that tap's
weights, broadcast over positions: ``y = sum_t window_t * w[..., t]``. There is no
matrix product but a small one per tap where a group has more channels than it takes one
at a time (`per_channel`, `_channel_sum`), so it wins exactly where XLA's grouped
convolution is slowest (depthwise: one input channel per group), and it loses where
channels per group are many (its work per tap grows with ``C_in/groups * C_out/groups``
and nothing is blocked for cache). XLA fuses the whole sum into one loop over the
output.

Up to `unroll_max_taps` taps the sum is unrolled (more than `ROW_SUM_MIN_TERMS` terms
added kernel row by kernel row); beyond that (large kernels, where unrolling made
compile times of minutes, or XLA's loop falls off a cliff) it is a `jax.lax.scan` over
the taps. Input dilation (transposed convolutions) is split into sub-pixel phases first,
so no product with an inserted zero is ever computed."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._impls import lax as lax_impl
from jaxconv._impls import subpixel
from jaxconv._impls._common import (
    accumulation_dtype,
    computed_once,
    match_varying,
    pad_input,
    tap_windows,
    valid_out_spatial,
)

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec


# Taps unrolled per spatial rank; more go through `lax.scan`. Unrolled is faster
# (depthwise 7x7 96@56: 20x lax fwd and 3.8x train, against 8.5x and 2.6x scanned), but
# XLA's CPU compiler crashes (SIGSEGV) on the gradient of a 3-D unroll of 60 taps, and
# in 2-D beyond 11x11 XLA's one loop falls off a cliff (depthwise 128@56 batch 8
# channels-last: 13x13 415 ms, 11x11 40; channels-first 17x17 @28: 139 ms, FFT 21).
UNROLL_MAX_TAPS = {1: 64, 2: 121}
UNROLL_MAX_TAPS_ND = 27
# Channels-first 2-D sums, added by kernel rows (`ROW_SUM_MIN_TERMS`), unroll further:
# depthwise forward against FFT (batch 4-8, 128 channels, minimum of 11 shuffled runs):
# 13x13 @56 3.4-4.5x, @28 1.7x; 15x15 @56 2.0x. 17x17 falls off the cliff (0.20-0.25x
# FFT @28 and @56), and so does channels-last 13x13 (0.19x), which therefore runs the
# channels-first sum (`_channels_first`) up to as many taps.
UNROLL_MAX_TAPS_CHANNELS_FIRST = {2: 225}


def unroll_max_taps(ndim: int, channels_last: bool) -> int:
    """The most taps `forward` unrolls (more are a `jax.lax.scan`) in this layout."""
    if not channels_last and ndim in UNROLL_MAX_TAPS_CHANNELS_FIRST:
        return UNROLL_MAX_TAPS_CHANNELS_FIRST[ndim]
    return UNROLL_MAX_TAPS.get(ndim, UNROLL_MAX_TAPS_ND)


# Products per output (taps times input channels per group) up to which each input
# channel is a broadcast product of its own (ResNeXt 3x3 g8 64@56 batch 8 fwd: 72
# products, 7x lax against 1.4x reducing over channels; 144 products lose to matmul).
PER_CHANNEL_MAX_TERMS = {1: 100, 2: 100}


# Sums of more terms than this (taps times products per tap) add each kernel row's terms
# first, then the rows: XLA emits the sum as one loop with the terms added in the order
# written, and one chain of adds over the whole kernel ran slower. Forward, batch 8
# unless said, one chain against a chain per kernel row (minimum of 21 runs in shuffled
# order): depthwise 7x7 96@56 1.64x channels-first, 1.21x channels-last; 5x5 240@28
# 1.22x; 7x7 192@28 batch 16 1.75x; 11x11 128@56 1.71x; 9x9 96@56 channels-last 1.24x;
# ResNeXt 3x3 4x4 groups 128@56 channels-last 1.43x, channels-first 0.96x; 8x8 groups
# 64@56 1.55x. Training (fixed cotangent) 1.0-1.2x. Depthwise 3x3 (9 terms) gained
# nothing (0.87-0.99x) and keeps one chain.
ROW_SUM_MIN_TERMS = 16


def _carried(zeros, *like: jax.Array) -> tuple[jax.Array, ...]:
    """A loop's initial accumulators ``zeros``, cast to vary over the manual mesh axes
    (inside ``jax.shard_map``) that what the loop reads varies over (``like``): a
    loop's carry must keep its type, and the products added into it vary."""
    return match_varying(*zeros, *like)[: len(zeros)]


def _flat(out, c_in_g: int) -> tuple[int, ...]:
    """The output's spatial dims as the products and sums over channels hold them: 3-D
    ones flattened into one where a group has more than one input channel. XLA's CPU
    runtime (jaxlib 0.10.2) crashed the process (a segfault in a YNNPACK reduce fusion's
    thread) on sums over rank-7 products: batch, groups, two channel dims and three
    spatial ones (2-16 input channels per group). The same sums over rank 5 and 6 ran (a
    1-D or 2-D layer, or flattened; found by a random differential run against PyTorch
    on 2026-12-02: `tests/test_dispatch.py::test_no_xla_crash_on_3d_products`). Depthwise
    layers, which never crashed, keep their dims: flattened, training a depthwise
    3x3x3 96@8x28x28 batch 4 channels-first ran 0.55x, and 1x3x3 48@8x28x28 0.76x
    (9 interleaved runs, AMD EPYC AVX2). Flattened, training 32 groups of 2->4 3x3x3
    @8x16x16 batch 4 channels-first read 1.08-1.17x, and of 4->4 @8x14x14 batch 2
    channels-last 0.90-1.01x (two runs); forward 1.05-1.14x and 0.92-0.97x."""
    return (math.prod(out),) if len(out) > 2 and c_in_g > 1 else tuple(out)


def _add(sums: dict, key, term: jax.Array) -> None:
    """Add ``term`` into ``sums[key]`` (a new entry if there is none)."""
    sums[key] = term if key not in sums else lax.add(sums[key], term)


def _total(sums: dict) -> jax.Array:
    """The entries of ``sums``, added in the order they were made."""
    return functools.reduce(lax.add, sums.values())


def _take(a: jax.Array, index: int, axis: int) -> jax.Array:
    """``a`` at ``index`` along ``axis``, that dim dropped: ``a[..., i]``-style static
    indexing as one slice and one squeeze, the primitives NumPy-style indexing makes,
    traced without its parsing, which took nearly a third of the trace of per-channel
    sums (ResNeXt 3x3 g32: 243 indexings per training step)."""
    return lax.index_in_dim(a, index, axis % a.ndim, keepdims=False)


def per_channel(w_shape, ndim: int) -> bool:
    """Whether a weight of ``w_shape`` runs one broadcast product per input channel of a
    group (at most `PER_CHANNEL_MAX_TERMS` products per output; none with no input
    channel, whose sum is zeros either way)."""
    terms = w_shape[1] * math.prod(w_shape[2:])
    return 0 < terms <= PER_CHANNEL_MAX_TERMS.get(ndim, UNROLL_MAX_TAPS_ND)


def _channel_sum(win: jax.Array, wt: jax.Array, spec: ConvSpec, channels_last: bool) -> jax.Array:
    """The sum over a group's input channels of one tap's window times its weights:
    ``win`` ``(N, *S, g, 1, C_in/g)`` channels-last or ``(N, g, 1, C_in/g, *S)``
    channels-first, ``wt`` ``(g, C_out/g, C_in/g)``; ``(N, *S, g, C_out/g)`` or ``(N, g,
    C_out/g, *S)``.

    As a product, not a broadcast product summed: XLA's CPU compiler (jaxlib 0.10.2)
    hands ``sum(win * w, axis)`` to YNNPACK's reduction, which returned wrong sums once
    the array was large enough to split among threads (relative errors 0.6-1.6; 8->8 7x7
    batch 1 channels-first, float32: wrong from @66 in one run, from @72 in another,
    right at @64 and in float64, which YNNPACK does not take; found by a random sweep on
    an AMD EPYC with AVX-512, 2026-12-06; the bug XNNPACK's PR 11243 mends, "tasks
    overwrite other tasks' partial results"). The product is also faster: the same sum
    alone 4-31x (`/tmp/s70/ynnfix.py`). With one input channel a group the sum of one
    term stays as it was: written as a plain broadcast product instead (no sum), XLA's
    CPU runtime crashed (a segfault) running the scanned input gradient of PyTorch's
    grouped `conv_transpose3d` sample
    (`tests/test_impls.py::test_shift_scanned_grouped_3d_input_gradient`)."""
    if wt.shape[-1] == 1:  # one input channel a group (depthwise): a sum of one term
        if channels_last:
            return jnp.sum(win * wt.reshape((1,) * (win.ndim - 3) + wt.shape), axis=-1)
        return jnp.sum(win * wt.reshape((1, *wt.shape) + (1,) * (win.ndim - 4)), axis=3)
    if channels_last:
        win = lax.squeeze(win, (win.ndim - 2,))  # (N, *S, g, C_in/g)
        dims = (((win.ndim - 1,), (2,)), ((win.ndim - 2,), (0,)))
        y = lax.dot_general(win, wt, dims, spec.precision)  # (g, N, *S, C_out/g)
        return jnp.moveaxis(y, 0, -2)
    win = lax.squeeze(win, (2,))  # (N, g, C_in/g, *S)
    y = lax.dot_general(win, wt, (((2,), (2,)), ((1,), (0,))), spec.precision)
    return jnp.moveaxis(y, (0, y.ndim - 1), (1, 2))  # (g, N, *S, C_out/g) -> (N, g, C_out/g, *S)


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical convolution as a sum over taps of window times weight."""
    return subpixel.decompose(x, w, spec, _undilated)


def forward_unsplit(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """`forward`, with the input padded first where `forward` would split the outputs
    (`_depthwise_split`)."""
    return subpixel.decompose(x, w, spec, functools.partial(_undilated, split=False))


# The values (not differentiated) of channels-last 2-D and 3-D depthwise layers (the
# unrolled sums) with a channel multiplier up to this run as depthwise layers without
# one on the input with each channel repeated (see `_undilated`). Forward, with against
# without, batch 4 unless said, 5-9 interleaved runs, AMD EPYC, 2026-12-05
# (`/tmp/s54/toggle.py`; found by a random sweep: 7x7 128@28 multiplier 2 ran 13.5 ms,
# PyTorch 6.8), multiplier 2: 7x7 128@28 1.94x, 2.17x; 7x7 32@56 2.45x, 3.22x; 5x5
# 128@28 1.53x, 1.84x; 3x3 64@56 1.18x, 1.20x, stride 2 1.19x; 3x3 256@14 1.17x; 3-D
# 3x3x3 32@8x28x28 batch 2 1.80x. Multiplier 4 went both ways (3x3 64@56 1.53x, 3-D
# 1.24x; 5x5 64@28 0.85x, 7x7 32@56 0.84x), 8 and 16 lost (0.69-0.95x), and 1-D too
# (multiplier 2 k3 and k5 1.19-1.26x, k9 0.79x; multiplier 4 0.68-1.22x). Training is
# unchanged: under differentiation the value pads first (`forward_unsplit`), and there
# the repeat ran 0.37-0.57x.
REPEAT_MAX_MULTIPLIER = 2


def _undilated(x: jax.Array, w: jax.Array, spec: ConvSpec, split: bool = True) -> jax.Array:
    taps = math.prod(w.shape[2:])
    if taps > unroll_max_taps(spec.ndim, spec.channels_last):
        if taps <= unroll_max_taps(spec.ndim, channels_last=False):
            return _channels_first(x, w, spec)
        return _scanned(x, w, spec)
    repeat = (
        split
        and spec.channels_last
        and spec.ndim >= 2
        and w.shape[1] == 1
        and 1 < w.shape[0] // spec.groups <= REPEAT_MAX_MULTIPLIER
    )
    if repeat:
        # A channel multiplier ``m``: output channel ``o`` reads input channel ``o // m``,
        # so each input channel repeated ``m`` times makes it a depthwise layer of one
        # channel per group, whose sums keep the channels innermost (here the
        # multiplier would be the innermost dim, which XLA's loops do not vectorise).
        x = jnp.repeat(x, w.shape[0] // spec.groups, axis=1)
        spec = dataclasses.replace(spec, groups=w.shape[0])
    # (Not split for its size once repeated: 5x5 144 x 2 @112 batch 8 forward 0.61x, 480 x
    # 2 @112 batch 2 0.48x, 7x7 240 x 2 @56 batch 16 0.49x, `/tmp/s72/splab.py 1 14 7`.)
    if (
        split
        and splits(spec, x.shape, w.shape, large=not repeat)
        and _interior(x.shape[2:], w.shape[2:], spec)
    ):
        return _depthwise_split(x, w, spec)
    if spec.channels_last and w.shape[:2] == (spec.groups, 1) and spec.stride[-1] == 1:
        return _depthwise_rows(x, w, spec)
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
    # Few products per output (depthwise, small groups): one broadcast product per
    # input channel of a group, each over the whole output, so no dim of size one (or
    # a few) is innermost, where XLA's loops would not vectorise (ResNeXt 3x3 g32
    # 128@56 batch 8 fwd: 14x lax channels-first, against 1.6x reducing over channels).
    one_per_channel = per_channel(w.shape, nd)
    if spec.channels_last and one_per_channel:
        # The weight as the caller holds it, (*K, C_in/g, C_out), written out in that
        # layout, so that each input channel's weights at a tap are a contiguous run.
        # The caller's weight is that already; a derived one (the flipped kernel of the
        # input gradient) would otherwise be read with strides: ResNeXt 3x3 g32 128@56
        # input gradient 20 ms against 8.6 for the value.
        w_cl = computed_once(jnp.moveaxis(w.astype(acc), (0, 1), (-1, -2)))
    sums = {}  # per kernel row (see ROW_SUM_MIN_TERMS), or one
    by_rows = math.prod(kernel) * (c_in_g if one_per_channel else 1) > ROW_SUM_MIN_TERMS
    for tap, win in tap_windows(xp, kernel, spec, channels_last=spec.channels_last):
        # (g, C_out/g, C_in/g): wg[:, :, :, *tap]
        wt = lax.slice(wg, (0, 0, 0, *tap), (*wg.shape[:3], *(t + 1 for t in tap)))
        wt = wt.reshape(wg.shape[:3])
        out = win.shape[1:-1] if spec.channels_last else win.shape[2:]
        flat = _flat(out, c_in_g)
        if spec.channels_last:
            win = win.reshape((n, *flat, g, 1, c_in_g))  # channel c_in_g * group + i
        else:
            win = win.reshape((n, g, 1, c_in_g, *flat))
            w_i = jnp.moveaxis(wt, -1, 0).reshape((c_in_g, 1, g, o_g) + (1,) * len(flat))
        if not one_per_channel:
            terms = [_channel_sum(win, wt, spec, spec.channels_last)]
        elif spec.channels_last:
            # Each input channel's weights as w[:, i, *tap]: a contiguous run of the
            # caller's (*K, C_in/g, C_out) weight (the per-group view above makes XLA
            # copy the weight into a layout that strides these reads: ResNeXt 3x3 g32
            # 128@56 fwd 2x slower).
            shape = (1,) * (1 + len(flat)) + ((g,) if o_g == 1 else (g, o_g))
            if o_g == 1:
                win = lax.squeeze(win, (win.ndim - 2,))
            end = tuple(t + 1 for t in tap)
            terms = [  # w_cl[(*tap, i)], reshaped to broadcast
                lax.mul(
                    _take(win, i, -1),
                    lax.slice(w_cl, (*tap, i, 0), (*end, i + 1, c_out)).reshape(shape),
                )
                for i in range(c_in_g)
            ]  # (N, *S, g) or (N, *S, g, C_out/g)
        else:
            # (N, g, C_out/g, *S)
            terms = [lax.mul(_take(win, i, 3), _take(w_i, i, 0)) for i in range(c_in_g)]
        for term in terms:
            _add(sums, tap[:-1] if by_rows else (), term)
    y = _total(sums)
    if spec.channels_last:
        y = jnp.moveaxis(y.reshape((n, *out, c_out)), -1, 1)
    return y.reshape((n, c_out, *out)).astype(x.dtype)


# Channels-last depthwise layers of at most this many taps (per spatial rank) compute
# the outputs whose windows lie inside the input apart from those that reach into the
# padding (`_depthwise_split`). Forward against padding first, batch 8 unless said,
# Intel Xeon, 11 interleaved runs: 1-D k3 256@1000 1.7-2.2x, k5 512@1000 3.2-5.6x, k9
# 128@4000 1.8-3.2x, k31 144@2000 1.5-1.6x, k63 1.15x; 3-D 1x3x3 96@8x28x28 batch 4
# 1.75x, 3x1x1 1.4x. Larger 2-D and 3-D kernels lose, whose border is a larger part of
# the output: 5x5 240@28 0.66x, 480@14 0.60x (but 128@56 1.44x); 7x7 96@56 0.95x,
# 192@28 0.74x, 384@14 0.48x; 9x9 128@28 batch 4 1.0x; 3x3x3 64@8x56x56 batch 2 0.73x,
# 192@4x14x14 0.56x.
SPLIT_MAX_TAPS = {1: 64}
SPLIT_MAX_TAPS_ND = 9
# Channels-first, only 2-D layers strided along some dim, of at most this many taps and
# at least this many output positions per image, split. Forward against padding first,
# batch 8 unless said (Intel Xeon, 11 interleaved runs, two or three runs): 3x3 stride 2
# 96@112 2.2-3.6x, batch 1 1.5-1.8x; 144@56 1.3-1.6x; 192@28 1.0-1.55x; 240@28 batch 16
# 1.3x; 32@224 batch 2 1.7-2.2x; stride 3 64@56 1.15-2.2x. Not on smaller outputs:
# 576@14 (7x7 outputs) 0.98-1.2x, 960@7 0.76x. Unstrided 3x3 lose (0.5-1.0x: 144@56,
# 32@112, 576@14, 960@7), and so do strided 5x5 and 7x7 (0.5-0.57x: 144@56, 240@28,
# 672@14, 7x7 96@56 batch 4).
SPLIT_MAX_TAPS_CHANNELS_FIRST_STRIDED = {2: 9}
SPLIT_MIN_POSITIONS_CHANNELS_FIRST = 100
# Channels-last 2-D layers of at most this many taps split too where their padded input
# (float32) would pass `lax.MALLOC_MAX_HEAP_BLOCK`: glibc's malloc takes such a block
# from the system afresh on every call, whose pages then fault in. Forward against
# padding first, batch 8 unless said, 11 interleaved runs, AMD EPYC with AVX-512,
# 2026-12-07 (`/tmp/s72/wsplit3.py`; found by a random sweep against PyTorch,
# `/tmp/s70/rand.py 709`: 7x7 stride 2 384@56 batch 8 padded 3, 18-22 ms against 4.3-5.2
# unpadded and PyTorch's 2.0), the padded input's size in MB: that layer (47) 1.9-2.4x;
# 7x7 96@112 (43) 1.47x; 5x5 stride 2 144@112 (62) 6.8x; 5x5 240@56 batch 16 (55) 1.53x;
# 7x7 192@56 batch 16 (47) 1.20x; 5x5 32@224 (53) 1.88x. Under the block it went both
# ways: 5x5 128@56 (15) 1.63x, 7x7 stride 2 64@112 (29) 1.92x, 5x5 stride 2 96@112
# batch 4 (21) 1.29x, but 5x5 480@28 batch 16 (31) 0.98x, 5x5 stride 2 672@14 batch 16
# (14) 0.79x, 7x7 384@14 (5) 0.57x.
SPLIT_LARGE_MAX_TAPS = {2: 49}


def splits(spec: ConvSpec, x_shape, w_shape, large: bool = True) -> bool:
    """Whether `forward` runs this canonical depthwise layer by `_depthwise_split`
    where its padding and sizes allow: one channel in and out per group, and either
    channels-last with at most `SPLIT_MAX_TAPS` taps (with ``large``,
    `SPLIT_LARGE_MAX_TAPS` where the padded input would pass
    `lax.MALLOC_MAX_HEAP_BLOCK`) or channels-first, strided, with at most
    `SPLIT_MAX_TAPS_CHANNELS_FIRST_STRIDED` taps and at least
    `SPLIT_MIN_POSITIONS_CHANNELS_FIRST` output positions.

    `auto` splits only values not differentiated (`shift.forward_unsplit` otherwise),
    and input gradients where `_dispatch._split_input_gradient` says, without
    ``large``; ``impl="shift"`` under differentiation transposes the split op by op.
    """
    if tuple(w_shape[:2]) != (spec.groups, 1):
        return False
    taps = math.prod(w_shape[2:])
    if spec.channels_last:
        if taps <= SPLIT_MAX_TAPS.get(spec.ndim, SPLIT_MAX_TAPS_ND):
            return True
        if not large:
            return False
        padded = [m + lo + hi for m, (lo, hi) in zip(x_shape[2:], spec.padding, strict=True)]
        past_block = 4 * math.prod((*x_shape[:2], *padded)) > lax_impl.MALLOC_MAX_HEAP_BLOCK
        return past_block and taps <= SPLIT_LARGE_MAX_TAPS.get(spec.ndim, 0)
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    return (
        any(s > 1 for s in spec.stride)
        and taps <= SPLIT_MAX_TAPS_CHANNELS_FIRST_STRIDED.get(spec.ndim, 0)
        and math.prod(out) >= SPLIT_MIN_POSITIONS_CHANNELS_FIRST
    )


def _interior(spatial, kernel, spec: ConvSpec) -> list[tuple[int, int, int]] | None:
    """Per spatial dim ``(out, a, b)``: the output length and the range ``[a, b)`` of
    outputs whose windows lie inside the unpadded input; None where `_depthwise_split`
    does not apply (input dilation, negative or no padding, or no such output along
    some dim)."""
    if any(d != 1 for d in spec.lhs_dilation):
        return None
    if all(p == (0, 0) for p in spec.padding) or any(min(p) < 0 for p in spec.padding):
        return None
    ranges = []
    for n, k, s, d, (lo, hi) in zip(
        spatial, kernel, spec.stride, spec.rhs_dilation, spec.padding, strict=True
    ):
        out = (n + lo + hi - d * (k - 1) - 1) // s + 1
        a = -(-lo // s)
        b = min(out, (n - 1 - d * (k - 1) + lo) // s + 1)
        if b <= a:
            return None
        ranges.append((out, a, b))
    return ranges


def _depthwise_split(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """Depthwise: the outputs whose windows lie inside the input summed over taps
    straight from the input, the few whose windows reach into the padding from small
    padded slices of it, written into the first (padded) in place; in the caller's
    layout.

    Padding the whole input first costs a copy of it, and XLA's loop over a sum that
    reads the padded copy ran 2-3x slower than the same loop over the input. Forward,
    2-D 3x3 channels-last, against padding first, batch 8 unless said, Intel Xeon, 11
    interleaved runs: 144@56 2.8x, batch 1 1.5x; 32@112 2.7x; 576@14 1.3x; 960@7 0.95x;
    240@28 batch 2 1.2x; dilation 2 128@56 1.8x; stride 2 96@112 9.3x (the per-pixel
    sum over a padded copy, where `_depthwise_rows` does not apply), 144@56 3.2x, 144@28
    1.35x. Other ranks, kernels and channels-first: `SPLIT_MAX_TAPS`,
    `SPLIT_MAX_TAPS_CHANNELS_FIRST_STRIDED`.
    """
    n, c = x.shape[:2]
    kernel = w.shape[2:]
    nd = len(kernel)
    cl = spec.channels_last
    acc = accumulation_dtype(x.dtype) or x.dtype
    ranges = _interior(x.shape[2:], kernel, spec)
    xc = (jnp.moveaxis(x, 1, -1) if cl else x).astype(acc)  # the caller's layout

    def full(batch, spatial, channel) -> tuple:
        # An index (or size, or padding) per dim of ``xc``, in its layout.
        return (batch, *spatial, channel) if cl else (batch, channel, *spatial)

    # Channels-last, each tap's weights as a contiguous run of the weight written out
    # (*K, 1, C) once: XLA otherwise fuses the weight's producer into every product, and
    # a weight transposed in the caller's program was read with strides. Forward against
    # 247f945, batch 8 unless said, 11-21 interleaved runs, 2026-12-03, a weight
    # transposed in the program / passed in: 3x3 144@56 4.3x / 1.00-1.01x, 576@14 batch
    # 16 3.0-3.2x / 0.79-0.96x, 32@112 batch 4 3.7x / 1.00x, 240@28 3.2x / 1.05x, 960@7
    # 2.0x / 1.08x; 1-D k5 256@1000 1.20x / 1.05x (`/tmp/s38/aboldf.py`).
    wl = computed_once(jnp.moveaxis(w.astype(acc), (0, 1), (-1, -2))) if cl else w.astype(acc)
    taps = {
        t: (wl[(*t, 0)] if cl else wl[(slice(None), 0, *t)]).reshape(full(1, (1,) * nd, c))
        for t in itertools.product(*map(range, kernel))
    }
    by_rows = math.prod(kernel) > ROW_SUM_MIN_TERMS
    none = (0, 0, 0)

    def box(region):
        # The outputs in ``region`` (a range per dim): from the input itself where their
        # windows lie inside it, else from the slice they read, zero-padded where it
        # runs past the input.
        start, limit, pads = [], [], []
        for (o0, o1), size, k, s, d, (lo, _) in zip(
            region, x.shape[2:], kernel, spec.stride, spec.rhs_dilation, spec.padding, strict=True
        ):
            # Input rows [r0, r1) from the slice [first, last), zeros around it (all
            # zeros where the padding is wider than the kernel reaches).
            r0, r1 = o0 * s - lo, (o1 - 1) * s - lo + d * (k - 1) + 1
            first, last = min(max(r0, 0), size), min(max(r1, 0), size)
            below = min(max(-r0, 0), r1 - r0)
            start.append(first)
            limit.append(last)
            pads.append((below, r1 - r0 - below - (last - first), 0))
        # Unpadded (the inner outputs), each window is read straight from the input: a
        # slice of it read by all the taps' windows, XLA wrote out first (37 MB for 7x7
        # stride 2 384@56 batch 8, split: 23.8 ms forward against 9.4 read straight;
        # depthwise 3x3 144@56 batch 8 channels-last 1.03x, `/tmp/s70/sweep.py
        # olddirect`, 2026-12-07).
        padded = any(p != none for p in pads)
        part, offset = xc, start
        if padded:
            part = lax.slice(xc, full(0, start, 0), full(n, limit, c))
            part = lax.pad(part, lax.full((), 0, acc), full(none, pads, none))
            offset = [0] * nd
        sums = {}
        for t, wt in taps.items():
            lead = [i * d + f for i, d, f in zip(t, spec.rhs_dilation, offset, strict=True)]
            ends = [
                b + (o1 - o0 - 1) * s + 1
                for b, (o0, o1), s in zip(lead, region, spec.stride, strict=True)
            ]
            win = lax.slice(part, full(0, lead, 0), full(n, ends, c), full(1, spec.stride, 1))
            _add(sums, t[:-1] if by_rows else (), win * wt)
        return _total(sums)

    inner = [(a, b) for _, a, b in ranges]
    border = [(a, out - b, 0) for out, a, b in ranges]
    y = lax.pad(box(inner), lax.full((), 0, acc), full(none, border, none))
    # The border: along each dim the outputs below and above the inner range, across
    # the inner range of the dims before it and the whole of the dims after it.
    for i, (out, a, b) in enumerate(ranges):
        for side in ((0, a), (b, out)):
            if side[0] == side[1]:
                continue
            region = [*inner[:i], side, *((0, m) for m, _, _ in ranges[i + 1 :])]
            y = lax.dynamic_update_slice(y, box(region), full(0, [o0 for o0, _ in region], 0))
    if cl and nd >= 2:
        # Written out in the caller's layout before anything reads it: a transpose in
        # the caller's program right after the call was otherwise fused into the sums,
        # which then wrote with strides. Forward, batch 8 unless said, 15 interleaved
        # runs, 2026-12-03, one malloc arena, the output transposed after / as it is:
        # 3x3 144@56 2.1x / 0.99x, 576@14 batch 16 1.8x / 1.04x, 32@112 batch 4 1.7x /
        # 1.00x, 240@28 2.1x / 1.03x; 1-D k3 256@1000 0.80x / 1.03x, so not in 1-D
        # (`/tmp/s38/natonce.py`).
        y = computed_once(y)
    return (jnp.moveaxis(y, -1, 1) if cl else y).astype(x.dtype)


def _channels_first(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """A channels-last layer whose kernel is too large for its unrolled sum (XLA's loop
    falls off a cliff, `UNROLL_MAX_TAPS`) but not channels-first: the channels-first sum,
    on the input written out channels-first and padded, with its output written out
    channels-first before the caller's layout takes it back.

    XLA's CPU fusion would otherwise fuse the layout change into the sum, looping over
    the output channels-last, with the cliff. Nothing short of a computation of its own
    stops it (`lax.optimization_barrier` is removed before fusion, a loop copies its
    operand per step and leaves the step's fusion on one thread), so the sum is the
    branch of a `jax.lax.cond` on a predicate that is always true but that XLA cannot
    fold (`_always`); the other branch, never taken, returns zeros.

    Depthwise forward, channels-last, against FFT (what `auto` took there before; 9
    interleaved runs, Intel Xeon): 13x13 128@56 batch 8 2.6x, @28 2.3x, @14 2.0x; @56
    batch 1 2.9x; 384@14 batch 4 2.9x; 512@7 batch 16 5.3x; 12x12 96@56 batch 4 2.4x;
    15x15 128@28 batch 8 1.8x; 11x13 2.4x. The channels-first sum on a channels-first
    input is faster still (13x13 128@56 batch 8: 3.2-3.7x FFT); the two layout changes
    cost the rest. The same sum without the branch: 0.2-0.5x FFT. Compile time 0.5-1.1
    s (FFT 0.1-0.15 s).
    """
    cf = dataclasses.replace(spec, channels_last=False)
    xp = pad_input(x, cf)
    valid = dataclasses.replace(cf, padding=((0, 0),) * spec.ndim, lhs_dilation=(1,) * spec.ndim)
    if xp.size == 0 or w.size == 0:
        return _undilated(xp, w, valid)
    shape = (x.shape[0], w.shape[0], *valid_out_spatial(xp.shape[2:], w.shape[2:], spec))

    def taken(a: jax.Array, b: jax.Array) -> jax.Array:
        return _undilated(a, b, valid)

    def skipped(a: jax.Array, b: jax.Array) -> jax.Array:
        del a, b
        return jnp.zeros(shape, x.dtype)

    return lax.cond(_always(w), taken, skipped, xp, w)


def _always(a: jax.Array) -> jax.Array:
    """A scalar true whatever ``a`` holds, NaN included, computed from ``a`` so that XLA
    cannot fold it: ``v != v or v == v`` for one element ``v``."""
    v = a.reshape(-1)[0]
    return (v != v) | (v == v)


def _depthwise_rows(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """Depthwise (one channel in, one out per group), channels-last, stride 1 along the
    last spatial dim: that dim and the channels flattened into one row, so every tap is
    a contiguous run of the row times its weights tiled along it (7x7 96@56 batch 8
    fwd 5.5 ms against 25 for a product per pixel)."""
    n, c = x.shape[:2]
    kernel = w.shape[2:]
    nd = len(kernel)
    acc = accumulation_dtype(x.dtype) or x.dtype
    xp = pad_input(jnp.moveaxis(x, 1, -1).astype(acc), spec, channels_last=True)
    *lead, width = xp.shape[1:-1]
    out = valid_out_spatial((*lead, width), kernel, spec)
    rows = xp.reshape((n, *lead, width * c))
    w = w.astype(acc)
    sums = {}
    by_rows = math.prod(kernel) > ROW_SUM_MIN_TERMS
    for tap in itertools.product(*(range(k) for k in kernel)):
        start = [0] + [i * d for i, d in zip(tap[:-1], spec.rhs_dilation[:-1], strict=True)]
        steps = zip(start[1:], out[:-1], spec.stride[:-1], strict=True)
        limit = [n] + [b + (m - 1) * s + 1 for b, m, s in steps]
        first = tap[-1] * spec.rhs_dilation[-1] * c
        win = lax.slice(
            rows, (*start, first), (*limit, first + out[-1] * c), (1, *spec.stride[:-1], 1)
        )
        # w[:, 0, *tap] reads the caller's (*K, 1, C) weight contiguously.
        term = win * jnp.tile(w[(slice(None), 0, *tap)], out[-1]).reshape((1,) * nd + (-1,))
        _add(sums, tap[:-1] if by_rows else (), term)
    y = _total(sums).reshape((n, *out, c))
    return jnp.moveaxis(y, -1, 1).astype(x.dtype)


def _tap_rows(kernel, spec: ConvSpec, span, width: int, out_width: int) -> np.ndarray:
    """``(taps, out_width)``: for each tap (row-major over ``kernel``) and output position
    of a row, the position in a block of ``span`` input rows of ``width`` (flattened,
    rows of rows first) that it multiplies.

    `_rows_weight_gradient` gathers a depthwise layer's windows with these instead of
    one slice per tap: one fusion in the loop's body whatever the kernel, so it
    compiles in about the same time for 3x3 and 7x7, and runs faster. Gather against a
    slice per tap (channels-last, batch 8 unless said, 15 shuffled runs; compile time of
    value and both gradients, then training with a fixed cotangent and through a
    ReLU): 7x7 96@56 1.69 -> 0.70 s, 1.14x, 1.18x; batch 2 2.03 -> 0.73 s, 1.23x,
    1.14x; 3x3 144@56 0.63 -> 0.50 s, 1.21x, 2.01x; @28 batch 32 1.34x, 1.87x; 5x5
    240@28 1.13 -> 0.53 s, 1.23x, 1.19x; 192@56 batch 4 1.09x, 1.05x; 7x7 384@28
    batch 16 1.74 -> 0.89 s, 1.06x, 1.09x; 3x3 stride 2 96@112 1.0x; 3-D 3x3x3
    64@16x28x28 batch 2 1.36 -> 0.56 s, 1.23x, 1.25x. Not for two or more outputs per
    channel (32->64 @112 0.67x, 64->128 @56 0.54-0.60x) or 1-D rows (0.84-0.98x);
    groups of 4x4 and 8x8 channels ran even (0.97-1.06x)."""
    offsets, cols = _tap_offsets(kernel, spec, out_width)
    return (width * (offsets @ _block_rows(span)))[:, None] + cols


def _row_span(kernel, spec: ConvSpec) -> list[int]:
    """The input rows a kernel's window spans along each spatial dim but the last."""
    return [(k - 1) * d + 1 for k, d in zip(kernel[:-1], spec.rhs_dilation[:-1], strict=True)]


def _block_rows(span) -> np.ndarray:
    """Rows per step of each leading dim in a block of ``span`` rows (rows of rows)."""
    return np.cumprod([1, *span[::-1]])[::-1][1:]


def _tap_offsets(kernel, spec: ConvSpec, out_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per tap (row-major over ``kernel``): its row offset along each spatial dim but the
    last, ``(taps, nd - 1)``, and the position in the row (padded as the spec pads it)
    that each output position of a row reads, ``(taps, out_width)``."""
    taps = list(itertools.product(*(range(k) for k in kernel)))
    offsets = np.asarray(
        [[t * d for t, d in zip(tap[:-1], spec.rhs_dilation[:-1], strict=True)] for tap in taps],
        np.int32,
    ).reshape((len(taps), len(kernel) - 1))
    cols = np.asarray(
        [tap[-1] * spec.rhs_dilation[-1] + np.arange(out_width) * spec.stride[-1] for tap in taps],
        np.int32,
    )
    return offsets, cols


# `_scanned` steps this many taps per iteration: XLA fuses the unrolled steps' updates
# of the output into one fusion, which reads and writes it once per step, not once per
# tap. Depthwise forward against one tap per iteration (batch 2 @8x28x28 / batch 4-8,
# 7 interleaved runs, one malloc arena, 2026-12-03, `/tmp/s39/scanu.py`): 3-D 4x4x4 64
# channels-first 4.8x; 3x5x5 5.0x (channels-last 3.4x); 3x3x5 channels-last 2.4x;
# 5x5x5 5.8-5.9x (channels-last 4.4x); 2-D 17x17 96@56 5.4-5.7x; 31x31 128@28
# 6.7-7.0x; 1-D k65 128@1000 4.1x. Four taps ran 1.1-1.9x slower than eight, sixteen
# 0.74-1.02x eight.
SCANNED_UNROLL = 8


def _scanned(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The same sum as a `jax.lax.scan` over the taps: compile time independent of them."""
    if spec.groups > 1 and spec.ndim >= 3:
        # One scan over the groups' stacked problems (`jax.vmap`): the grouped scan's
        # input gradient came out wrong in 3-D (zeros op by op, NaN or garbage under
        # `jax.jit`: PyTorch's conv_transpose3d sample of 2 groups, kernel 4x5x6,
        # stride (3, 2, 1), dilation 4), where 1-D, 2-D and one group were right. The
        # same time: depthwise 4x4x4 64@8x28x28 batch 2, forward 1.03x, training 1.00x.
        g = spec.groups
        xs = x.reshape((x.shape[0], g, x.shape[1] // g, *x.shape[2:])).swapaxes(0, 1)
        ws = w.reshape((g, w.shape[0] // g, *w.shape[1:]))
        one = dataclasses.replace(spec, groups=1)
        ys = jax.vmap(lambda a, b: _scanned(a, b, one))(xs, ws)  # (g, N, C_out/g, *out)
        return ys.swapaxes(0, 1).reshape((x.shape[0], w.shape[0], *ys.shape[3:]))
    n = x.shape[0]
    c_out, c_in_g, *kernel = w.shape
    g = spec.groups
    o_g = c_out // g
    nd = len(kernel)
    acc = accumulation_dtype(x.dtype) or x.dtype
    xp = pad_input(x.astype(acc), spec)
    out = valid_out_spatial(xp.shape[2:], kernel, spec)
    span = [(m - 1) * s + 1 for m, s in zip(out, spec.stride, strict=True)]
    offsets = jnp.asarray(
        [
            [t * d for t, d in zip(tap, spec.rhs_dilation, strict=True)]
            for tap in itertools.product(*(range(k) for k in kernel))
        ],
        np.int32,
    )
    # (taps, g, C_out/g, C_in/g), row-major over the kernel like `offsets`.
    wt = jnp.moveaxis(w.astype(acc).reshape((g, o_g, c_in_g, math.prod(kernel))), -1, 0)

    def tap(y, inputs):
        offset, w_tap = inputs
        zero = jnp.zeros((), offset.dtype)  # one index dtype, with or without x64
        start = (zero, zero, *(offset[i] for i in range(nd)))
        block = lax.dynamic_slice(xp, start, (n, xp.shape[1], *span))
        win = lax.slice(block, (0,) * (nd + 2), block.shape, (1, 1, *spec.stride))
        win = win.reshape((n, g, 1, c_in_g, *flat))
        return y + _channel_sum(win, w_tap, spec, channels_last=False), None

    flat = _flat(out, c_in_g)
    (zeros,) = _carried([jnp.zeros((n, g, o_g, *flat), acc)], xp, wt)
    y, _ = lax.scan(tap, zeros, (offsets, wt), unroll=SCANNED_UNROLL)
    return y.reshape((n, c_out, *out)).astype(x.dtype)


def fused_weight_gradient(spec: ConvSpec, kernel) -> bool:
    """Whether `weight_gradient` takes this spec: no input dilation (transposed
    convolutions arrive split into phases) and a kernel `forward` unrolls in either
    layout (`UNROLL_MAX_TAPS`; its one reduction keeps an accumulator per tap)."""
    return all(d == 1 for d in spec.lhs_dilation) and math.prod(kernel) <= UNROLL_MAX_TAPS.get(
        spec.ndim, UNROLL_MAX_TAPS_ND
    )


def weight_gradient(x: jax.Array, ct: jax.Array, spec: ConvSpec, kernel) -> jax.Array:
    """The weight gradient of the canonical convolution: the correlation of input ``x``
    and output cotangent ``ct``, ``(C_out, C_in // groups, *kernel)``.

    One variadic reduction with an accumulator per tap, so the input and the cotangent
    are read once for all taps. Transposing `forward` instead gives one reduction per
    tap, each over a shifted copy of the input that XLA writes out first (depthwise
    3x3 144@56 batch 8: 3.7x faster).
    """
    n, c_in, *_ = x.shape
    c_out = ct.shape[1]
    g = spec.groups
    c_in_g, o_g = c_in // g, c_out // g
    dtype = jnp.result_type(x.dtype, ct.dtype)
    acc = accumulation_dtype(dtype) or dtype
    if spec.channels_last and _chunked_rows_pay(n, ct.shape[1:], c_in_g, kernel):
        return _chunked_rows_weight_gradient(x, ct, spec, kernel)
    if spec.channels_last and (
        _rows_pay(x.shape[0], ct.shape[1:], spec, c_in_g, kernel)
        or _unpadded_rows_pay(x.shape, ct.shape[1:], spec, c_in_g, kernel)
        or _small_map_rows_pay(x.shape[0], ct.shape[1:], spec, c_in_g, kernel)
    ):
        return _rows_weight_gradient(x, ct, spec, kernel)
    # Channels-first whatever the caller's layout: a reduction that keeps the channels
    # innermost runs across the vector lanes (channels-last input, 3x3 144@56: 1.2x
    # slower than transposing first; 7x7 96@56: 1.3x).
    if spec.channels_last and c_in_g > 1:
        # XLA fuses those transposes into the reduction, which then reads with strides.
        # Written out first, grouped, batch 8, 3x3, weight gradient (and training):
        # g32 128@56 64 -> 51 ms (102 -> 89), g32 256@28 62 -> 35 (90 -> 63), g8 64@56
        # 60 -> 39 (85 -> 68), g64 512@14 25 -> 16 (41 -> 32); a small input loses a
        # little (5x5 g16 64@28 batch 4: 2.7 -> 3.4). Depthwise, with one channel in
        # per output, loses (3x3 144@56 16 -> 24 ms, 7x7 96@56 26 -> 31).
        x, ct = computed_once(x), computed_once(ct)
    xp = pad_input(x.astype(acc), spec)
    flat = _flat(ct.shape[2:], c_in_g)
    ct_b = ct.astype(acc).reshape((n, g, 1, o_g, *flat))
    products = [
        win.reshape((n, g, c_in_g, 1, *flat)) * ct_b for _, win in tap_windows(xp, kernel, spec)
    ]
    zero = jnp.zeros((), acc)
    sums = lax.reduce(
        products,
        [zero] * len(products),
        lambda a, b: [u + v for u, v in zip(a, b, strict=True)],
        (0, *range(4, 4 + len(flat))),
    )
    dw = jnp.stack(sums, -1)  # (g, C_in/g, C_out/g, taps)
    dw = jnp.moveaxis(dw, 2, 1).reshape((c_out, c_in_g, *kernel))
    return dw.astype(dtype)


# Channels-last weight gradients run as a loop over rows (`_rows_weight_gradient`) from
# this many multiply-adds (batch x output positions x output channels x input channels
# per group x taps), with an output row of at least this many positions.
ROWS_MIN_PRODUCTS = 12_000_000
ROWS_MIN_WIDTH = 28
# ... and at most this many taps: each is one more fusion in the loop's body to compile
# (depthwise channels-last training, batch 8, compiled by the other rule and by rows:
# 3x3 144@56 0.3 -> 0.6 s, 7x7 96@56 0.67 -> 1.45 s, 8x8 1.0 -> 2.5 s; 1-D 64 taps
# 1.1 -> 1.9 s). Depthwise 2-D and 3-D layers now gather their windows in one fusion
# (`_tap_rows`: 7x7 96@56 0.7 s); the limit was measured before that and stays.
ROWS_MAX_TAPS = 49
# ... and at least this many products per position and tap (output channels times input
# channels per group): with fewer the one reduction is faster (depthwise 3x3, batch
# 8-128, weight gradient: 16 channels @56 and @112 0.51-0.52x by rows, 24 @28 0.50x,
# 32 @28, @56 and @112 0.68-0.99x, 5x5 32 @56 0.59x; 40 @28 and @56 1.5-2.2x, 48 @28 and
# @112 1.9-2.1x; depthwise layers of 2-D and up are remeasured below).
ROWS_MIN_CHANNELS = 40
# ... but depthwise layers of 2-D and up (one channel in and out per group, whose loop
# gathers every tap's window at once, `_tap_rows`) from this many channels. The bound
# above was measured before that gather and the unrolled steps (`ROWS_UNROLL_GATHERED`).
# The weight gradient alone against the one reduction, and training through a ReLU
# (channels-last, 3x3 unless said, Sapphire Rapids Xeon, 7-15 interleaved runs,
# 2026-12-07, `/tmp/s80/dwc.py`): MobileNetV2's first depthwise layer 32@112 batch 4
# 4.54x, 2.54x (6.8 -> 1.5 ms); batch 1 3.36x, 1.91x; 32@224 batch 2 7.31x, 2.66x;
# 32@56 batch 8 3.76x, 2.21x; 5x5 1.72x, 1.51x; stride 2 32@112 batch 4 3.20x,
# 1.89x; 24@56 5x5 1.78x, 1.53x; dilation 2 24@56 batch 4 2.11x, 1.18x; 20@56 batch 8
# 1.89x, 1.28x; 16@56 batch 8 1.69-1.89x, 1.24-1.36x; 7x7 16@56 1.51x, 1.40x; 16@112
# batch 4 1.93x, 1.58x; stride 2 16@112 1.65x, 1.34x; 3-D 3x3x3 32@16 batch 2 1.47x,
# 1.22x, 16@16 1.28x, 0.99x. Small ones, around the noise: 16@28 batch 16 1.29-1.48x,
# 0.85-0.98x; 24@28 batch 8 1.41-1.58x, 0.86-0.93x; 32@14 batch 32 1.50x, 1.00x; 16@112
# batch 1 1.54x, 1.06x; 16@28 batch 4 1.12x, 1.35x. With XLA's code limited to AVX2
# (`--xla_cpu_max_isa=AVX2`) 32@112 batch 4 4.25x, 2.79x; 16@56 batch 8 1.83x, 1.34x;
# 24@28 batch 8 1.52x, 0.95x. Fewer channels lose: 12@56 batch 8 0.57x, 0.67x; 12@112
# 0.65x, 0.77x; 8@56 batch 8 0.51x, 0.57x; 8@112 batch 4 0.48x, 0.60x.
DEPTHWISE_ROWS_MIN_CHANNELS = 16


def _rows_channels(ct_shape, spec: ConvSpec, c_in_g: int, kernel) -> bool:
    """Whether a layer has channels enough for the loop over rows: `ROWS_MIN_CHANNELS`
    products per position and tap (output channels times input channels per group), or
    `DEPTHWISE_ROWS_MIN_CHANNELS` channels if depthwise in 2-D and up."""
    c_out = ct_shape[0]
    if len(kernel) > 1 and c_in_g == 1 and c_out == spec.groups:
        return c_out >= DEPTHWISE_ROWS_MIN_CHANNELS
    return c_out * c_in_g >= ROWS_MIN_CHANNELS


def _rows_pay(n: int, ct_shape, spec: ConvSpec, c_in_g: int, kernel) -> bool:
    """Whether the channels-last weight gradient of these shapes (``ct_shape`` the
    canonical output without its batch) runs as a loop over rows: measured (batch 8
    unless said, weight gradient alone against the one reduction, 7 interleaved runs):
    depthwise 3x3 144@56 2.0x, 7x7 96@56 1.7-2.2x, 3x3 144@28 batch 32 2.3x, 3x3 96@112
    stride 2 2.0x, 5x5 240@28 1.3x, 3x3 144@56 batch 2 1.3x, 7x7 96@56 batch 4 1.7x,
    1-D k3 256@2000 3.6-4.5x, k9 1.5x; ResNeXt 4x4 groups 128@56 1.8-2.1x, 128@28
    1.9x, 256@28 1.9x; depthwise 32->64 (two outputs per channel) @112 2.3-2.4x; 3-D
    3x3x3 64@16x28x28 batch 2 1.6x. Smaller reductions lose, whose one reduction
    runs from cache: 3x3 144@28 batch 4-8 0.94-0.99x, 144@56 batch 1 0.82x, 5x5 240@14
    batch 8-16 0.84-0.88x, 3x3 480@7 0.86x, 4x4 groups 128@14 0.81x."""
    c_out, *out = ct_shape
    taps = math.prod(kernel)
    products = n * math.prod(out) * c_out * c_in_g * taps
    return (
        products >= ROWS_MIN_PRODUCTS
        and out[-1] >= ROWS_MIN_WIDTH
        and taps <= ROWS_MAX_TAPS
        and _rows_channels(ct_shape, spec, c_in_g, kernel)
    )


# Channels-last 2-D layers (and 3-D depthwise ones) take the loop over rows whatever
# their width, depthwise ones from this many multiply-adds (batch x output positions x
# channels x taps), others from `ROWS_MIN_PRODUCTS` (see `_small_map_rows_pay`, which
# for those layers admits everything `_rows_pay` does, on maps of any width).
SMALL_MAP_ROWS_MIN_PRODUCTS = 2_000_000


def _small_map_rows_pay(n: int, ct_shape, spec: ConvSpec, c_in_g: int, kernel) -> bool:
    """Whether a channels-last 2-D layer (or 3-D depthwise one) that `_rows_pay` leaves
    out for its narrow output rows (MobileNet's and ResNeXt's 14x14 and 7x7 maps) runs
    its weight gradient as the loop over rows all the same: with channels enough
    (`_rows_channels`), at most `ROWS_MAX_TAPS` taps, and `SMALL_MAP_ROWS_MIN_PRODUCTS`
    multiply-adds if depthwise (one channel in and out per group), `ROWS_MIN_PRODUCTS`
    otherwise. There the one reduction's input and cotangent outgrow the cache. Training
    against the one reduction (one process, 9-11 interleaved runs, Sapphire Rapids Xeon,
    2026-12-03, `/tmp/s41/dwtr.py`, `grtr.py`; a fixed output gradient, then through a
    ReLU): depthwise 3x3 576@14 batch 16 1.98x, 2.85x; batch 8 1.61x, 2.33x; batch 2
    1.28x, 1.26x; 384@14 batch 32 2.28x, 6.17x; batch 8 1.54x, 1.73x; batch 4 1.09x,
    1.49x; 144@14 batch 8 1.06x, 1.15x; 96@14 batch 16 and 32 1.17x, 1.33x and 1.54x,
    3.23x; 960@7 batch 64 1.68x, 2.31x; batch 16 1.39x, 2.47x; stride 2 576@14 batch 16
    1.41x, 1.51x; 5x5 480@14 batch 16 1.70x, 2.34x; 672@14 batch 8 1.73x, 1.57x; 144@14
    batch 16 1.27x, 1.64x; 240@7 batch 8 1.06x, 1.04x; 7x7 384@7 batch 16 1.40x, 1.19x
    (the weight gradient alone: 3x3 576@14 batch 16 8.3 -> 2.4 ms, 960@7 batch 64 21.6
    -> 4.6 ms). Groups of 4x4 channels 3x3: 512@14 batch 16 (57.8M products) 2.19x,
    2.75x; 1024@7 batch 32 2.17x, 2.42x; 256@14 batch 8 (14.4M) 1.53x, 1.65x; batch 4
    (7.2M) 1.09x, 1.24x. Two outputs per channel (`/tmp/s41/mult.py`): 288->576 @14
    batch 16 (16.3M) 1.80x, 2.00x; 480->960 @7 batch 32 1.55x, 2.09x. 3-D depthwise
    3x3x3 (`/tmp/s41/dw3d.py`): 192@8x14x14 batch 4 2.07x, 1.70x; 96@8x14x14 batch 8
    1.85x, 2.04x; 96@4x14x14 batch 2 1.56x, 1.17x; 192@4x14x14 batch 1 1.34x, 1.25x;
    432@4x7x7 batch 2 1.10x, 1.15x (3-D groups of several channels were not measured and
    keep the one reduction). Fewer products lose or tie: depthwise 3x3 960@7 batch 1
    (0.42M) 0.53x, 0.54x; batch 4 (1.7M) 1.03x, 1.14x; 576@14 batch 1 (1.0M) 0.98x,
    0.95x; 96@14 batch 8 (1.35M) 0.83x, 1.19x; groups of 4x4 256@14 batch 2 and 512@14
    batch 1 (3.6M) 0.94-0.98x, 1.16-1.20x; 128@7 batch 8 (1.8M) 0.96x, 1.01x. Compile
    time of training 0.27-0.54 -> 0.46-0.85 s."""
    c_out, *out = ct_shape
    taps = math.prod(kernel)
    depthwise = c_in_g == 1 and c_out == spec.groups
    floor = SMALL_MAP_ROWS_MIN_PRODUCTS if depthwise else ROWS_MIN_PRODUCTS
    return (
        (len(kernel) == 2 or (len(kernel) == 3 and depthwise))
        and _rows_channels(ct_shape, spec, c_in_g, kernel)
        and taps <= ROWS_MAX_TAPS
        and n * math.prod(out) * c_out * c_in_g * taps >= floor
    )


def _unravel(r: jax.Array, shape) -> list[jax.Array]:
    """The index into ``shape`` of flat (row-major) position ``r``."""
    index = []
    for m in reversed(shape):
        index.append(r % m)
        r = r // m
    return index[::-1]


# Depthwise 2-D layers that take the loop over rows (`_rows_pay`, channels-last), of at
# most this many taps and with output rows of at least this many positions, run it on
# the unpadded input (`_rows_weight_gradient_unpadded`). Training (value and both
# gradients, batch 8 unless said, Intel Xeon, 11 interleaved runs, a fixed output
# gradient / through a ReLU) against the padded copy: 3x3 144@56 1.04-2.32x /
# 1.14-1.69x in four runs; 144@28 batch 32 1.45x / 1.84x; 96@112 stride 2 1.19x / 1.15x.
# Forced on layers the rule leaves out: 3x3 576@14 batch 32 0.99x / 0.94x; 5x5 240@28
# 0.95x / 1.14x, 192@56 batch 4 0.97x / 1.09x; 7x7 96@56 1.01x / 0.98x, 384@14 0.96x /
# 0.96x; 3-D 3x3x3 64@16x28x28 batch 2 1.07x / 0.94x (1.21x / 1.19x at depth 8). (The
# same program timed against itself in this way ran 0.85-1.11x.)
UNPADDED_ROWS_MAX_TAPS = 9
UNPADDED_ROWS_MIN_WIDTH = 28

# The loop over rows steps this many rows per iteration where it gathers depthwise
# windows (`_tap_rows`, and the unpadded loop), and `ROWS_UNROLL` where it slices them
# per tap: XLA then fuses the unrolled steps' updates of the accumulators into one
# fusion, which reads and writes them once per step, not once per row. Against one row
# per iteration (channels-last, batch 8 unless said, Sapphire Rapids Xeon, 9-15
# interleaved runs, one malloc arena, 2026-12-03; the weight gradient alone, training
# with a fixed output gradient, through a ReLU; `/tmp/s39/unroll2.py`), four rows:
# depthwise 3x3 144@56 1.89x, 1.38x; batch 2 1.60x, 1.45x; batch 1 1.41x, 1.21x,
# 1.10x; 7x7 96@56 2.01x, 1.51x; 7x7 96@28 batch 4 1.57x, 1.28x, 1.31x; 5x5 240@28
# batch 4 1.55x, 1.25x; 3x3 192@28 batch 16 1.36x, 1.02x, 1.26x; stride 2 96@112 1.90x,
# 1.01x; 3-D 3x3x3 64@8x28x28 batch 2 1.04x, 1.19x, 1.09x; 3x3 144@28 0.91x, 1.04x,
# 0.98x (the noise band). Two rows ran 1.20-1.74x on those weight gradients, eight
# 0.82-0.83x four's (3x3 144@56, 7x7 96@56). Per tap, two rows: ResNeXt 3x3 g32 128@56
# 1.66x, 1.15x; 3x3 g64 256@28 1.68x, 1.32x, 1.20x; depthwise 32->64 3x3 @112 batch 4
# 1.70x, 1.32x, 1.20x; 1-D k3 256@2000 1.13x, 1.14x, 1.01x; 1-D k9 128@2000 1.22x,
# 1.54x, 1.08x. Four rows there: 1.67x, 1.19x; 1.69x, 1.26x, 1.17x; 1.98x, 1.13x,
# 1.29x; 1.22x, 1.08x, 1.06x; 1.39x, 1.33x, 1.15x; no better, and each row unrolled
# compiles one fusion per tap more. Compile time of training against one row per
# iteration: depthwise 3x3 144@56 0.45 -> 0.54 s, 7x7 96@56 0.69 -> 0.78 s, ResNeXt
# 0.81 -> 0.87 s. Per tap, only kernels of at most `ROWS_UNROLL_MAX_TAPS` taps step
# two rows: each tap is a fusion of its own there, and 16 groups of 2->2 7x7 dilated
# @112 batch 16 (49 taps) compiled its training in 1.98 s against 1.70.
ROWS_UNROLL_GATHERED = 4
ROWS_UNROLL = 2
ROWS_UNROLL_MAX_TAPS = 9


def _rows_unpadded(x_shape, spec: ConvSpec, kernel, out_width: int) -> bool:
    """Whether `_rows_weight_gradient` reads this depthwise layer's input unpadded
    (`_rows_weight_gradient_unpadded`): 2-D, a small kernel, long output rows, no input
    dilation, no crop, and a kernel no taller (dilated) than the input."""
    span = _row_span(kernel, spec)
    return (
        len(kernel) == 2
        and math.prod(kernel) <= UNPADDED_ROWS_MAX_TAPS
        and out_width >= UNPADDED_ROWS_MIN_WIDTH
        and all(d == 1 for d in spec.lhs_dilation)
        and all(lo >= 0 and hi >= 0 for lo, hi in spec.padding)
        and all(sp <= m for sp, m in zip(span, x_shape[2:-1], strict=True))
    )


def _unpadded_rows_pay(x_shape, ct_shape, spec: ConvSpec, c_in_g: int, kernel) -> bool:
    """Whether a channels-last depthwise layer of at least `DEPTHWISE_ROWS_MIN_CHANNELS`
    channels whose loop over rows reads the input unpadded (`_rows_unpadded`) takes that loop
    however few its products (`_rows_pay` asks for `ROWS_MIN_PRODUCTS`, measured before
    the unpadded loop): training against the one reduction (Intel Xeon, 9 interleaved
    runs, 3x3; a fixed output gradient, then through a ReLU), 48@56 batch 1 1.08x,
    1.17x; 64@56 batch 1 1.14x, 1.49x; 64@28 batch 1 1.57x, 1.50x; 144@56 batch 1
    1.34x; 144@28 batch 2 1.18x, batch 8 1.75x; 192@28 batch 4 1.41x; 384@28 batch 1
    1.23x, 1.34x; dilation 2, 64@56 batch 2 1.44x, 2.81x; stride 2, 144@56 batch 1, 4
    and 8 1.19x, 1.87x and 2.48x, 96@112 batch 2 and 4 2.38x and 1.20-1.62x; 48@112 batch 2
    3.86x, 3.77x. With fewer channels it lost then (16@112 batch 1 0.51x, 0.63x; 16@56
    batch 8 0.52x, 0.73x; 32@56 batch 1 0.61x, 0.58x), before the loop gathered its
    windows four rows a step; now those win (see `DEPTHWISE_ROWS_MIN_CHANNELS`)."""
    c_out, *out = ct_shape
    return (
        c_in_g == 1
        and c_out == spec.groups
        and _rows_channels(ct_shape, spec, c_in_g, kernel)
        and _rows_unpadded(x_shape, spec, kernel, out[-1])
    )


def _rows_weight_gradient_unpadded(
    x: jax.Array, ct: jax.Array, spec: ConvSpec, kernel
) -> jax.Array:
    """`_rows_weight_gradient` of a depthwise layer (one channel in and out per group)
    without a padded copy of the input.

    Each step reads the block of input rows its output row needs, moved inside the
    input where the window reaches into the padding, and gathers every tap's window
    from it (as `_tap_rows`), the positions that fall in the padding set to zero. Under
    differentiation the value pads its own copy of the input; when this loop read a
    padded copy too, XLA wrote a second one in training with a fixed output gradient
    (15 MB each for depthwise 3x3 144@56 batch 8). For the measurements see
    `UNPADDED_ROWS_MAX_TAPS`.
    """
    n, c = x.shape[:2]
    c_out, *out = ct.shape[1:]
    nd = len(kernel)
    dtype = jnp.result_type(x.dtype, ct.dtype)
    acc = accumulation_dtype(dtype) or dtype
    *heights, width = x.shape[2:]
    span = _row_span(kernel, spec)
    rows = jnp.moveaxis(x, 1, -1).astype(acc).reshape((n, *heights, width * c))
    cl = jnp.moveaxis(ct, 1, -1).astype(acc)  # (N, *out, C)
    lead = (n, *out[:-1])
    offsets, cols = _tap_offsets(kernel, spec, out[-1])
    cols = cols - spec.padding[-1][0]  # in the unpadded row
    in_row = (cols >= 0) & (cols < width)
    block_rows = _block_rows(span)
    at = (width * (offsets @ block_rows))[:, None] + np.clip(cols, 0, width - 1)

    def row(r, a):
        b, *o = _unravel(r, lead)
        first = jnp.stack(
            [i * s - lo for i, s, (lo, _) in zip(o, spec.stride, spec.padding, strict=False)]
        ).astype(b.dtype)  # the window's first row, in the input (negative in the padding)
        start = jnp.clip(first, 0, np.asarray(heights) - np.asarray(span)).astype(b.dtype)
        block = lax.dynamic_slice(
            rows, (b, *start, jnp.zeros((), b.dtype)), (1, *span, width * c)
        ).reshape((math.prod(span) * width, c))
        moved = jnp.sum((first - start) * jnp.asarray(block_rows, b.dtype)) * width
        wins = jnp.take(block, jnp.asarray(at, b.dtype) + moved, axis=0, mode="clip")
        tap_rows = first[None] + jnp.asarray(offsets, b.dtype)  # (taps, nd - 1)
        inside = jnp.all((tap_rows >= 0) & (tap_rows < np.asarray([heights])), axis=1)
        wins = jnp.where((inside[:, None] & in_row)[..., None], wins, 0)
        zero = jnp.zeros((), b.dtype)
        cs = lax.dynamic_slice(cl, (b, *o, zero, zero), (1,) * nd + (out[-1], c_out))
        return a + wins * cs.reshape((1, out[-1], c_out))

    (zeros,) = _carried([jnp.zeros((len(offsets), out[-1], c_out), acc)], rows, cl)
    a = lax.fori_loop(0, math.prod(lead), row, zeros, unroll=ROWS_UNROLL_GATHERED)
    return jnp.moveaxis(a.sum(1), 0, -1).reshape((c_out, 1, *kernel)).astype(dtype)


# 1-D channels-last weight gradients loop over chunks of output positions
# (`_chunked_rows_weight_gradient`), each of about `CHUNK_PRODUCTS` products per tap (positions
# x output channels x input channels per group), from `CHUNK_MIN_POSITIONS` to
# `CHUNK_MAX_POSITIONS` positions. Against chunks of 16 positions (the weight gradient
# alone, `/tmp/s80/cgrid.py`): depthwise k15 24@16000 batch 2 1.71x at 32 positions,
# 2.94x at 64, 3.45-3.78x at 128-1024; k5 96@2000 batch 16 1.46x at 128, 0.77x at 256,
# 0.38x at 512; k3 32@4096 batch 8 1.08x at 32-64, 0.70x at 1024; k3 stride 2 256@2000
# batch 16 1.13x at 32, 0.74x at 64; k3 512@4096 batch 4 flat to 256. The chunks are
# taken where the output is at least `CHUNKED_MIN_POSITIONS` long, from
# `CHUNKED_MIN_PRODUCTS` multiply-adds (batch x output positions x output channels x
# input channels per group x taps) and `CHUNKED_MIN_CHANNELS` products per position and
# tap (output channels x input channels per group), to `ROWS_MAX_TAPS` taps (kernels of
# 1-31 measured; see `_chunked_rows_pay`). Against the weight gradients before (the one
# reduction, or the loop over whole rows from `ROWS_MIN_PRODUCTS`), on random layers
# within the bounds (`/tmp/s80/r1dr.py` seeds 1-4, 12 layers each: depthwise, two
# outputs per channel and groups of 2-4, kernels 1-15, strides 1-2, dilations 1-2,
# 24-1024 channels, batch 1-32, lengths 256-16000; Sapphire Rapids Xeon, 7 interleaved
# runs, 2026-12-07): the weight gradient alone 2.02x, 2.42x, 2.49x, 3.06x (geometric
# means), training through a ReLU 1.71x, 1.91x, 2.08x, 2.01x; under 0.9x training on 4
# of 48 (groups of 4->2 k3 256->128 @1000 batch 32 0.54x, groups of 2->2 k15 64@2000
# batch 2 0.67x, depthwise k3 dilation 2 128@2000 batch 32 0.65x, k15 24@16000 0.86x).
# With one image the loop over whole rows ran as one product per tap summed by a slow
# YNNPACK reduction: two outputs per channel k3 512->1024 @8000 batch 1 952 -> 6.2 ms
# (training 964 -> 34), depthwise k15 96@16000 185 -> 4.9 ms, groups of 2->4 k9 dilation
# 2 128->256 @16000 354 -> 17.5 ms. Below the bounds it often lost (`r1dr.py` seeds 2
# and 3 with the rule wider, chunks of 64): under 2 M products 0.43-0.79x on six of 10
# (depthwise k5 4@16000 batch 4 0.43x, k15 32@2000 batch 1 0.47x), with 8-16 products a
# position and tap 0.44x and 0.87x (groups of 2->2 k5 8@8000 batch 8, depthwise k3
# 8@8000 batch 16).
CHUNK_PRODUCTS = 8192
CHUNK_MIN_POSITIONS = 32
CHUNK_MAX_POSITIONS = 512
CHUNKED_MIN_POSITIONS = 256
CHUNKED_MIN_PRODUCTS = 2_000_000
CHUNKED_MIN_CHANNELS = 24


def _chunked_rows_pay(n: int, ct_shape, c_in_g: int, kernel) -> bool:
    """Whether a channels-last weight gradient (``ct_shape`` the canonical output
    without its batch) loops over chunks of its rows (`_chunked_rows_weight_gradient`):
    1-D, at least `CHUNKED_MIN_POSITIONS` output positions, `CHUNKED_MIN_CHANNELS`
    products per position and tap, `CHUNKED_MIN_PRODUCTS` multiply-adds, and at most
    `ROWS_MAX_TAPS` taps."""
    c_out, *out = ct_shape
    return (
        len(out) == 1
        and out[0] >= CHUNKED_MIN_POSITIONS
        and c_out * c_in_g >= CHUNKED_MIN_CHANNELS
        and kernel[0] <= ROWS_MAX_TAPS
        and n * out[0] * c_out * c_in_g * kernel[0] >= CHUNKED_MIN_PRODUCTS
    )


def _chunked_rows_weight_gradient(
    x: jax.Array, ct: jax.Array, spec: ConvSpec, kernel, positions: int | None = None
) -> jax.Array:
    """`_rows_weight_gradient` of a 1-D layer, channels-last: the output's rows cut into
    chunks of ``positions``, each read with the input positions its windows span (which
    overlap the next chunk's). Per chunk and tap, the window times the output
    gradient's chunk is added into an accumulator per tap of one chunk, ``(positions,
    groups, C_in/groups, C_out/groups)``, summed over the chunk at the end; the
    positions past the last whole chunk are summed apart.

    Looping over whole rows (one per image) kept accumulators as long as the sequence,
    and with one image XLA unrolled the loop into one product per tap summed by a
    YNNPACK reduction that ran at 0.3 GB/s (depthwise k4 1536@2048 batch 1: 195 ms)."""
    n, c_in, _ = x.shape
    c_out, out = ct.shape[1], ct.shape[2]
    g = spec.groups
    c_in_g, o_g = c_in // g, c_out // g
    (k,), (s,), (d,) = kernel, spec.stride, spec.rhs_dilation
    dtype = jnp.result_type(x.dtype, ct.dtype)
    acc = accumulation_dtype(dtype) or dtype
    if positions is None:
        positions = CHUNK_PRODUCTS // (c_out * c_in_g)
        positions = min(max(positions, CHUNK_MIN_POSITIONS), CHUNK_MAX_POSITIONS)
    positions = min(positions, out)
    chunks, tail = divmod(out, positions)
    span = (positions - 1) * s + (k - 1) * d + 1  # the input positions a chunk reads
    xp = pad_input(jnp.moveaxis(x, 1, -1).astype(acc), spec, channels_last=True)
    cl = jnp.moveaxis(ct, 1, -1).astype(acc)  # (N, out, C_out)
    flat = xp.reshape((n, xp.shape[1] * c_in))

    def chunk(r, accs):
        b, j = r // chunks, r % chunks
        zero = jnp.zeros((), b.dtype)
        xs = lax.dynamic_slice(flat, (b, j * (positions * s * c_in)), (1, span * c_in))
        xs = xs.reshape((span, c_in))
        cs = lax.dynamic_slice(cl, (b, j * positions, zero), (1, positions, c_out))
        cs = cs.reshape((positions, g, 1, o_g))
        new = []
        for a, t in zip(accs, range(k), strict=True):
            win = lax.slice(xs, (t * d, 0), (t * d + (positions - 1) * s + 1, c_in), (s, 1))
            new.append(a + win.reshape((positions, g, c_in_g, 1)) * cs)
        return tuple(new)

    zeros = _carried([jnp.zeros((positions, g, c_in_g, o_g), acc)] * k, flat, cl)
    unroll = ROWS_UNROLL if k <= ROWS_UNROLL_MAX_TAPS else 1
    accs = lax.fori_loop(0, n * chunks, chunk, zeros, unroll=unroll)
    sums = [a.sum(0) for a in accs]  # (g, C_in/g, C_out/g) per tap
    if tail:
        first = chunks * positions
        cs = cl[:, first:].reshape((n, tail, g, 1, o_g))
        for t in range(k):
            at = first * s + t * d
            win = lax.slice(xp, (0, at, 0), (n, at + (tail - 1) * s + 1, c_in), (1, s, 1))
            sums[t] = sums[t] + (win.reshape((n, tail, g, c_in_g, 1)) * cs).sum((0, 1))
    dw = jnp.stack(sums, -1)  # (g, C_in/g, C_out/g, taps)
    return jnp.moveaxis(dw, 2, 1).reshape((c_out, c_in_g, k)).astype(dtype)


def _rows_weight_gradient(x: jax.Array, ct: jax.Array, spec: ConvSpec, kernel) -> jax.Array:
    """`weight_gradient` channels-last, as a loop over the output's rows (each image,
    each position of every spatial dim but the last): per row and tap, the input row's
    window times the cotangent row, added into an accumulator per tap that holds one
    row, ``(W_out, groups, C_in/groups, C_out/groups)``; summed over the row at the end.

    The one reduction (`weight_gradient`) keeps the channels innermost channels-last,
    which XLA's CPU reductions do not vectorise, and reading channels-first copies
    costs their transposes (depthwise 3x3 144@56 batch 8: 23 ms either way). Here every
    product is an elementwise multiply-add along a contiguous row, and the
    accumulators stay in cache: 9.6 ms. (The batch inside the body, looping over rows
    only, was as fast on 3x3 but its accumulators outgrow the cache: 7x7 96@56 28 ms
    against 24; adding 2-8 rows into the accumulators per iteration was 2-12x
    slower.)
    """
    n, c_in = x.shape[:2]
    c_out, *out = ct.shape[1:]
    g = spec.groups
    c_in_g, o_g = c_in // g, c_out // g
    nd = len(kernel)
    dtype = jnp.result_type(x.dtype, ct.dtype)
    acc = accumulation_dtype(dtype) or dtype
    if c_in_g == o_g == 1 and _rows_unpadded(x.shape, spec, kernel, out[-1]):
        return _rows_weight_gradient_unpadded(x, ct, spec, kernel)
    taps = list(itertools.product(*(range(k) for k in kernel)))
    xp = pad_input(jnp.moveaxis(x, 1, -1).astype(acc), spec, channels_last=True)
    cl = jnp.moveaxis(ct, 1, -1).astype(acc)  # (N, *out, C_out)
    lead = (n, *out[:-1])
    span = _row_span(kernel, spec)
    width = xp.shape[-2]
    last = (out[-1] - 1) * spec.stride[-1] + 1
    # Rows flattened as `_depthwise_rows` flattens them, so that XLA can write one padded
    # copy of the input for the value and this loop (it did under `jax.grad` through a
    # ReLU of a depthwise 3x3 layer, which now reads the unpadded input; with a fixed
    # cotangent it wrote two).
    xp = xp.reshape((*xp.shape[:-2], width * c_in))
    # Depthwise with rows of rows (2-D and up): every tap's window of the row block read
    # as one gather into one accumulator, one fusion instead of one per tap (see
    # `_tap_rows`).
    gathered = nd > 1 and c_in_g == o_g == 1
    if gathered:
        rows_at = _tap_rows(kernel, spec, span, width, out[-1])

    def row(r, accs):
        b, *o = _unravel(r, lead)
        zero = jnp.zeros((), b.dtype)
        first = [i * s for i, s in zip(o, spec.stride[:-1], strict=True)]
        xs = lax.dynamic_slice(xp, (b, *first, zero), (1, *span, width * c_in))
        cs = lax.dynamic_slice(cl, (b, *o, zero, zero), (1,) * nd + (out[-1], c_out))
        if gathered:
            block = xs.reshape((math.prod(span) * width, c_in))
            wins = jnp.take(block, rows_at, axis=0, mode="clip")
            return (accs[0] + wins * cs.reshape((1, out[-1], c_out)),)
        xs = xs.reshape((1, *span, width, c_in))
        cs = cs.reshape((out[-1], g, 1, o_g))
        new = []
        for a, tap in zip(accs, taps, strict=True):
            at = [t * d for t, d in zip(tap, spec.rhs_dilation, strict=True)]
            limit = (1, *(i + 1 for i in at[:-1]), at[-1] + last, c_in)
            win = lax.slice(xs, (0, *at, 0), limit, (1,) * nd + (spec.stride[-1], 1))
            new.append(a + win.reshape((out[-1], g, c_in_g, 1)) * cs)
        return tuple(new)

    if gathered:
        zeros = _carried([jnp.zeros((len(taps), out[-1], c_out), acc)], xp, cl)
        (a,) = lax.fori_loop(0, math.prod(lead), row, zeros, unroll=ROWS_UNROLL_GATHERED)
        return jnp.moveaxis(a.sum(1), 0, -1).reshape((c_out, 1, *kernel)).astype(dtype)
    zeros = _carried([jnp.zeros((out[-1], g, c_in_g, o_g), acc)] * len(taps), xp, cl)
    unroll = ROWS_UNROLL if len(taps) <= ROWS_UNROLL_MAX_TAPS else 1
    accs = lax.fori_loop(0, math.prod(lead), row, zeros, unroll=unroll)
    dw = jnp.stack([a.sum(0) for a in accs], -1)  # (g, C_in/g, C_out/g, taps)
    dw = jnp.moveaxis(dw, 2, 1).reshape((c_out, c_in_g, *kernel))
    return dw.astype(dtype)
