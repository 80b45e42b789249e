"""``impl="matmul"``: convolution as one dense matrix product per group.

A 1x1 kernel is the notes' dense layer over channels: subsample the padded input by
the stride and multiply ``(C_out, C_in)`` by ``(C_in, L)``. Any other kernel goes
through patches (im2col): the tap windows stacked channel-major into
``(N, C_in * taps, L)``, PyTorch's ``unfold`` layout, times the weight reshaped to
``(C_out, C_in * taps)``, which needs no transpose of either operand.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._impls import lax as lax_impl
from jaxconv._impls._common import (
    accumulation_dtype,
    computed_once,
    match_varying,
    pad_input,
    padded_bytes,
    tap_windows,
)

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec


def patches(x: jax.Array, kernel, spec: ConvSpec) -> jax.Array:
    """The patch matrix of ``(N, C, *S)``: ``(N, C * prod(kernel), *S_out)``, channel-major.

    Row ``c * prod(kernel) + t`` holds, at each output position, the padded input
    element that kernel tap ``t`` (row-major over ``kernel``) multiplies in channel ``c``.
    """
    cols = _tap_stack(x, kernel, spec)
    return cols.reshape((x.shape[0], x.shape[1] * math.prod(kernel), *cols.shape[3:]))


def _tap_stack(x: jax.Array, kernel, spec: ConvSpec) -> jax.Array:
    """``(N, C, taps, *S_out)``: the tap windows of the padded input, stacked."""
    xp = pad_input(x, spec)
    windows = [win for _, win in tap_windows(xp, kernel, spec)]
    return windows[0][:, :, None] if len(windows) == 1 else jnp.stack(windows, axis=2)


# The patch matrix of one chunk of the batch stays below this many bytes: past the
# cache, building it costs more than the product saves (ResNeXt 3x3 g32 128@56 batch 8:
# whole batch 0.79x lax, one sample at a time 2.3x; the notes' 5x5 layer 0.73x vs 1.35x).
PATCH_BYTES = 16 * 2**20


def forward(
    x: jax.Array, w: jax.Array, spec: ConvSpec, value: bool = False, alone: bool = False
) -> jax.Array:
    """The canonical convolution, in batch chunks whose patch matrix fits in cache.

    A 1x1 kernel builds no patches (its patch matrix is the strided input), so it runs
    whole. With that and the in-place contraction below, 1x1 256->64 @56 batch 8 trains
    in 49 ms channels-first and 24 ms channels-last, from 89 and 114 ms (full bench).
    ``value``: this product is a value, which reverse mode does not transpose (see
    `_forward_channels_last`), not an input or weight gradient's convolution; the
    result is the same either way. ``alone``: a value computed without its
    derivatives (see `rows_first`).
    """
    n = x.shape[0]
    if math.prod(w.shape[2:]) == 1:
        return _forward(x, w, spec, value, alone)
    if single_pixel(x.shape):
        return _single_pixel(x, w, spec)
    per_sample = patch_bytes(x.shape, w.shape, spec, x.dtype.itemsize)
    # The padded input is a temporary too, and past glibc's largest heap block a fresh
    # ``mmap`` whose pages fault in on every call: a chunk's stays within it (2x2x2
    # stride 3 padding 1 192->32 @10 batch 32 channels-last, padded 42 MB, patches 13
    # MB: 13.4-14.4 -> 3.2-3.6 ms forward in chunks of 16 images; unpadded, whole, 0.96).
    padded = padded_bytes(x.shape, spec, x.dtype.itemsize)
    chunk = max(
        [
            d
            for d in range(1, n + 1)
            if n % d == 0
            and d * per_sample <= PATCH_BYTES
            and d * padded <= lax_impl.MALLOC_MAX_HEAP_BLOCK
        ]
        or [1]
    )
    if chunk >= n:
        return _forward(x, w, spec, value)
    # The chunks are cut from the input in the layout `_forward` reads it in, the
    # caller's: channels-last (one group), its transposes to and from the canonical
    # layout meet the caller's inside the loop, and XLA cancels them. Cut from the
    # canonical input, the whole input went channels-first before the loop and each
    # chunk back inside it, and the output likewise (3x3x3 stride 2 96->48 @12 batch 32
    # channels-last, `matmul` forward 30.4 -> 18.7 ms, training 176 -> 128).
    lead = x.ndim - 1 if spec.channels_last and spec.groups == 1 else 1
    xs = jnp.moveaxis(x, 1, lead)
    xs = xs.reshape((n // chunk, chunk, *xs.shape[1:]))

    def one(xb: jax.Array) -> jax.Array:
        return jnp.moveaxis(_forward(jnp.moveaxis(xb, lead, 1), w, spec, value), 1, lead)

    ys = lax.map(one, xs)
    return jnp.moveaxis(ys.reshape((n, *ys.shape[2:])), lead, 1)


def patch_bytes(x_shape, w_shape, spec: ConvSpec, itemsize: int) -> int:
    """The bytes of one image's patch matrix, ``C * taps * S_out`` elements."""
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    return x_shape[1] * math.prod(w_shape[2:]) * math.prod(out) * itemsize


def _forward(
    x: jax.Array, w: jax.Array, spec: ConvSpec, value: bool = False, alone: bool = False
) -> jax.Array:
    """The canonical convolution as ``(C_out, C_in * taps) @ (C_in * taps, L)`` per group.

    The product contracts the channel and tap dims of the stacked windows in place, with
    the output's spatial dims kept as they are: no reshape stands between the layout
    transposes around it, so XLA cancels them in the derivatives too (a reshape there
    left two extra copies of the input gradient in the 1x1 channels-last backward).
    """
    n = x.shape[0]
    c_out, c_in_g, *kernel = w.shape
    g = spec.groups
    if spec.channels_last and g == 1:
        return _forward_channels_last(x, w, spec, value)
    cols = _tap_stack(x, kernel, spec)  # (N, C, taps, *S_out)
    out = cols.shape[3:]
    taps = math.prod(kernel)
    if taps == 1:
        # No unit tap dim among the contracted ones (see `_forward_channels_last`).
        cols, w = cols[:, :, 0], w.reshape((c_out, c_in_g))
        k = 1
    else:
        w = w.reshape((c_out, c_in_g, taps))
        k = 2
    cols = cols.reshape((n, g, c_in_g, *cols.shape[2:]))
    w = w.reshape((g, c_out // g, *w.shape[1:]))
    acc = accumulation_dtype(x.dtype)
    nd = len(out)
    if g == 1 and per_image(c_in_g, c_out, taps, out):
        w_b = jnp.broadcast_to(w[0], (n, *w.shape[1:]))  # (N, C_out, C[, taps])
        contract = (tuple(range(2, 2 + k)), tuple(range(1, 1 + k)))
        y = lax.dot_general(
            w_b, cols[:, 0], (contract, ((0,), (0,))), spec.precision, preferred_element_type=acc
        )
        return y.astype(x.dtype)
    if g == 1 and taps == 1 and rows_first(n, out, c_in_g, c_out, alone):
        # (N, *S, C) @ (C, C_out): the positions as the product's rows (see `rows_first`).
        y = lax.dot_general(
            cols[:, 0], w[0], (((1,), (1,)), ((), ())), spec.precision, preferred_element_type=acc
        )
        return jnp.moveaxis(y, -1, 1).astype(x.dtype)
    if g == 1:
        # (C_out, C) @ (C, *S) per sample, channels-first, with no batch dim for XLA.
        contract = (tuple(range(1, 1 + k)), tuple(range(1, 1 + k)))
        y = lax.dot_general(
            w[0], cols[:, 0], (contract, ((), ())), spec.precision, preferred_element_type=acc
        )
        return jnp.moveaxis(y, 0, 1).astype(x.dtype)
    contract = (tuple(range(2, 2 + k)), tuple(range(2, 2 + k)))
    if spec.channels_last:
        # (N, *S, C) @ (C, C_out) per group -> (groups, N, *S, C_out/groups).
        y = lax.dot_general(
            cols, w, (contract, ((1,), (0,))), spec.precision, preferred_element_type=acc
        )
        y = jnp.transpose(y, (1, 0, nd + 2, *range(2, nd + 2)))
    else:
        # (C_out, C) @ (C, *S) per group -> (groups, C_out/groups, N, *S): channels-first.
        y = lax.dot_general(
            w, cols, (contract, ((0,), (1,))), spec.precision, preferred_element_type=acc
        )
        y = jnp.transpose(y, (2, 0, 1, *range(3, nd + 3)))
    return y.astype(x.dtype).reshape((n, c_out, *out))


def per_image(c_in: int, c_out: int, taps: int, out) -> bool:
    """Whether channels-first `matmul` (one group) runs one product per image, the
    weight broadcast along the batch (a batch dim for XLA), so that neither operand
    nor the result is transposed: 1x1 on maps of at least as many positions as
    channels, and kernels whose patches are no deeper than the output channels on
    maps of at least as many positions.

    Against one product over the whole batch between transposes (batch 8 unless said,
    7-15 shuffled runs; forward, training through a ReLU): 1x1 256->64 @56 1.07x,
    3.1x; 64->256 @56 1.5x, 1.8x; 128->128 @28 1.0x, 1.4x; 96->24 @56 1.7x, 1.35x;
    batch 1 256->64 @56 1.06x, 1.2x; 32->16 @14 batch 2-8 2.6-4x, 1.9-2.7x. 1-D from
    one channel (raw audio) 1->512 kernel 10 stride 5 @16000 1.7x, 1.8x; 1->128
    kernel 80 stride 4 0.87x, 2.0x. With fewer positions than channels the products
    are too small (1x1 256->256 @14 1.1x, 0.67x; 1024->256 @14 0.81x, 0.57x; 512->2048
    @7 0.48x, 0.16x; 3x3 512@7 0.29x, 0.14x), and deeper patches gain nothing (3x3
    64@56 1.16x, 0.93x; 128@28 0.95x, 0.86x; 1-D 3 taps 256@1000 1.04x, 0.87x).
    """
    positions = math.prod(out)
    if taps == 1:
        return positions >= max(c_in, c_out)
    return c_in * taps <= c_out <= positions


def per_image_weight_gradient(x: jax.Array, ct: jax.Array, spec: ConvSpec, w_shape) -> jax.Array:
    """The weight gradient of a channels-first 1x1 convolution, unstrided and unpadded,
    run as one product per image (`per_image`): ``sum_n ct_n @ x_n^T``, one batched
    product contracting the positions, summed over the batch.

    The right operand is the one of fewer channels (the cotangent of 256->64 @56 batch 8:
    4.7 ms, against 6.3 with the input; of 64->256 the input: 4.6 against 5.5; the
    product alone, 11 interleaved runs), so the gradient comes out transposed where
    that is the cotangent (a ``(C_in, C_out)`` copy).
    JAX's own transpose of the product laid out the whole input channels-last first.
    """
    n, c_in = x.shape[:2]
    c_out = ct.shape[1]
    positions = math.prod(x.shape[2:])  # as many in the output: 1x1, unstrided, unpadded
    xf, cf = x.reshape((n, c_in, positions)), ct.reshape((n, c_out, positions))
    dims = (((2,), (2,)), ((0,), (0,)))
    acc = accumulation_dtype(jnp.result_type(x.dtype, ct.dtype))
    if c_out <= c_in:
        dw = jnp.sum(
            lax.dot_general(xf, cf, dims, spec.precision, preferred_element_type=acc), axis=0
        ).T
    else:
        dw = jnp.sum(
            lax.dot_general(cf, xf, dims, spec.precision, preferred_element_type=acc), axis=0
        )
    return dw.astype(jnp.result_type(x.dtype, ct.dtype)).reshape(w_shape)


def _gradient_sizes(x: jax.Array, ct: jax.Array, kernel) -> tuple[int, int, int, jnp.dtype]:
    """A weight gradient's images, output positions per image, taps and result dtype."""
    dtype = jnp.result_type(x.dtype, ct.dtype)
    return x.shape[0], math.prod(ct.shape[2:]), math.prod(kernel), dtype


# `chunked_patches_weight_gradient` takes as many images at a time as keep their patches
# within this many bytes (at least one image).
PATCHES_CHUNK_BYTES = 8 * 2**20


def chunked_patches_weight_gradient(
    x: jax.Array, ct: jax.Array, spec: ConvSpec, w_shape
) -> jax.Array:
    """The weight gradient of a dense convolution as products of patches with the output
    gradient, a few images at a time in a loop (``lax.scan``), summed in its carry:
    ``sum_chunks cols_chunk^T @ ct_chunk``, with ``cols_chunk`` the chunk's padded tap
    windows stacked tap-major, ``(images * positions, taps * C)`` channels-last (the
    output gradient read in place), ``(images, taps * C, positions)`` channels-first.
    Each chunk holds the most images that divide the batch and keep its patches within
    `PATCHES_CHUNK_BYTES` (one image at least; a prime batch goes image by image).

    The loop keeps the program's temporaries small: XLA's CPU runtime allocates them on
    every call, and past glibc's largest heap block (`lax.MALLOC_MAX_HEAP_BLOCK`) an
    allocation is a fresh ``mmap`` whose pages fault in each time. The whole batch's
    patches of 3x3 stride-2 64->128 @56 at batch 16 are 29 MB, with the padded input
    past the block; that weight gradient took 29.9 ms so against 12.1 in chunks of two
    or four images (PyTorch 11.7), and at batch 32 63.9 against 24.5 (PyTorch 23.9;
    `/tmp/s68/wgexp2.py`, 7 interleaved runs, Sapphire Rapids Xeon, 2026-12-06).

    ``x`` and ``ct`` are canonical (channels-first); the result is the canonical weight's
    gradient. For forward convolutions (no input dilation), one group.
    """
    (c_out, c_in, *kernel), nd = w_shape, len(w_shape) - 2
    n, positions, taps, dtype = _gradient_sizes(x, ct, kernel)
    if x.size == 0 or ct.size == 0:
        return jnp.zeros(w_shape, dtype)
    per_image = positions * taps * c_in * dtype.itemsize
    chunk = max(
        c
        for c in range(1, n + 1)
        if n % c == 0 and (c == 1 or c * per_image <= PATCHES_CHUNK_BYTES)
    )
    cl = spec.channels_last
    if cl:
        x, ct = jnp.moveaxis(x, 1, -1), jnp.moveaxis(ct, 1, -1)
    xs = x.reshape((n // chunk, chunk, *x.shape[1:]))
    cts = ct.reshape((n // chunk, chunk, *ct.shape[1:]))
    acc = accumulation_dtype(dtype)

    def step(total, part):
        xc, ctc = part
        xp = pad_input(xc, spec, channels_last=cl)
        windows = [win for _, win in tap_windows(xp, kernel, spec, channels_last=cl)]
        if cl:
            # (chunk, *out, taps, C) against (chunk, *out, C_out), rows contracted.
            cols = jnp.stack(windows, axis=-2).reshape((chunk * positions, taps * c_in))
            rows = ctc.reshape((chunk * positions, c_out))
            dims = (((0,), (0,)), ((), ()))
        else:
            # (chunk, taps, C, *out) against (chunk, C_out, *out), images and positions
            # contracted.
            cols = jnp.stack(windows, axis=1).reshape((chunk, taps * c_in, positions))
            rows = ctc.reshape((chunk, c_out, positions))
            dims = (((0, 2), (0, 2)), ((), ()))
        part_dw = lax.dot_general(cols, rows, dims, spec.precision, preferred_element_type=acc)
        return total + part_dw, None

    # The total in the products' dtype (float32 for half precision, else the operands',
    # complex too); inside ``jax.shard_map`` varying over the mesh axes they do.
    (zero, *_) = match_varying(jnp.zeros((taps * c_in, c_out), acc or dtype), x, ct)
    dw, _ = lax.scan(step, zero, (xs, cts))
    dw = dw.astype(dtype).reshape((*kernel, c_in, c_out))
    return jnp.transpose(dw, (nd + 1, nd, *range(nd)))


def per_image_patches_weight_gradient(
    x: jax.Array, ct: jax.Array, spec: ConvSpec, w_shape
) -> jax.Array:
    """The weight gradient of a dense convolution as one product per image of its patches
    with the output gradient, summed over the batch: ``sum_n cols_n @ ct_n``, with
    ``cols_n`` the image's tap windows stacked channel-major, ``(C * taps, positions)``,
    and ``ct_n`` the output gradient as the caller lays it out (positions by channels
    channels-last, channels by positions channels-first, the product contracting it in
    place either way). One image's patches stay small where the whole batch's would not
    (the 7x7 stride-2 stem at batch 8: 59 MB), and none of them is transposed.

    ``x`` and ``ct`` are canonical (channels-first); the result is the canonical weight's
    gradient. For forward convolutions (no input dilation), one group.
    """
    (c_out, c_in, *kernel), nd = w_shape, len(w_shape) - 2
    n, positions, taps, dtype = _gradient_sizes(x, ct, kernel)
    if x.size == 0 or ct.size == 0:
        return jnp.zeros(w_shape, dtype)
    xp = pad_input(x, spec)
    if spec.channels_last:
        cts, contract = jnp.moveaxis(ct, 1, -1).reshape((n, positions, c_out)), (1, 0)
    else:
        cts, contract = ct.reshape((n, c_out, positions)), (1, 1)
    acc = accumulation_dtype(dtype)
    out = ct.shape[2:]

    def one(image):
        xi, cti = image
        if nd == 2:
            cols = _patches_by_rows(xi, kernel, out, spec)
        else:
            windows = [win for _, win in tap_windows(xi[None], kernel, spec)]
            cols = jnp.stack(windows, axis=2)
        cols = cols.reshape((c_in * taps, positions))
        dims = (((contract[0],), (contract[1],)), ((), ()))
        return lax.dot_general(cols, cti, dims, spec.precision, preferred_element_type=acc)

    dw = jnp.sum(lax.map(one, (xp, cts)), axis=0)  # (C * taps, C_out)
    dw = dw.astype(dtype).reshape((c_in, *kernel, c_out))
    return jnp.transpose(dw, (nd + 1, 0, *range(1, nd + 1)))


def _patches_by_rows(xi: jax.Array, kernel, out, spec: ConvSpec) -> jax.Array:
    """One padded image ``(C, H, W)``'s patches ``(C, K_h, K_w, H_out, W_out)``, taken
    as ``K_h`` strided row slices and then ``K_w`` strided column slices of those, not
    one slice per tap: each slice is a kernel of its own to compile (the 7x7 stem's 49
    took its weight gradient from 0.11 s to 0.56 s)."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, spec.stride, spec.rhs_dilation, out
    rows = jnp.stack(
        [lax.slice_in_dim(xi, t * dh, t * dh + (ho - 1) * sh + 1, sh, axis=1) for t in range(kh)],
        axis=1,
    )  # (C, K_h, H_out, W)
    cols = jnp.stack(
        [lax.slice_in_dim(rows, t * dw, t * dw + (wo - 1) * sw + 1, sw, axis=3) for t in range(kw)],
        axis=2,
    )  # (C, K_h, K_w, H_out, W_out)
    return cols


# The product's column tile on this CPU (16 float32 lanes of AVX-512), see `rows_first`.
ROWS_FIRST_LANES = 16
# ... and a value computed alone on maps of at most this many positions and at least
# this many rows (batch x positions), whatever its channels (`rows_first`).
ROWS_FIRST_ALONE_MAX_POSITIONS, ROWS_FIRST_ALONE_MIN_ROWS = 100, 400


def rows_first(n: int, out, c_in: int, c_out: int, alone: bool = False) -> bool:
    """Whether channels-first 1x1 `matmul` (one group, not `per_image`) takes the
    positions as the product's rows, ``(N * S, C) @ (C, C_out)``, rather than as its
    columns, ``(C_out, C) @ (C, N * S)``: from batch 2 (at batch 1 the columns need
    no transpose of either the input or the output) when the positions of the whole
    batch are not a multiple of `ROWS_FIRST_LANES`, where XLA's CPU dot (YNNPACK)
    ran the columns' ragged last tile slowly; and to at most half as many channels as
    it takes when one image's positions are more than and not a multiple of it.

    Rows first against columns first (21 shuffled runs; forward, training through a
    ReLU): batch 2 and 8 on 3x3 to 11x11 maps, 256->64, 512->128 and 128->512, whose
    positions are no multiple of 16: 0.97-2.71x and 0.84-1.83x (below 1.0 only 128->512
    @6 batch 2, 0.97x and 0.98x, and @3 batch 8 training, 0.84x); @7 batch 8, 96->16
    4.8x and 2.3x (the columns first ran at 0.23x `lax`), 64->16 3.4-3.8x and 1.9-2.2x,
    512->2048 1.23x and 1.06x, 2048->512
    0.95-1.14x and 0.92-1.04x, 960->160 1.08-1.12x and 1.14-1.20x. On positions that
    are a multiple of 16 the columns are mostly faster or even: @4, @6, @8, @12 and @14
    batch 8, @8 and @12 batch 2, 0.61-1.11x and 0.89-1.21x (one at 1.42x forward, 256->64
    @14 batch 8); at batch 1 rows first lost on 6x6 and 8x8 to
    12x12 maps (0.65-0.93x forward) and won on 5x5 and 7x7 (1.08-1.44x).

    Where the batch's positions are a multiple of 16 and one image's are not, rows
    first ran faster to fewer channels (2026-12-04, Intel Xeon, 9-15 interleaved runs,
    settled, `/tmp/s47/abrf2.py`: value, training with a fixed cotangent, training
    through a ReLU): MobileNetV2's projections 576->96 @7 batch 32 1.36-1.49x,
    1.18-1.39x, 1.14-1.23x, batch 16 1.35-1.74x, 1.21-1.24x, 1.17-1.47x, @14 batch 8
    1.23x, 1.19x, 1.09x; 960->160 @7 batch 32 1.19x, 1.20x, 1.13x, batch 16 1.13-1.24x,
    1.00-1.19x, 1.11-1.13x; 384->64 @14 batch 8 1.17x, 1.06x, 1.16x; 192->32 @7 batch
    16 1.35-1.43x, 1.00-1.22x, 1.29-1.31x; 144->24 @7 batch 32 1.59x, 1.01x, 1.17x;
    96->16 @7 batch 16 2.39x, 1.15x, 1.23x; 256->64 @14 batch 4-8 1.16-1.30x,
    1.05-1.19x, 1.05-1.11x; 512->64 @7 batch 32 1.68x, 1.53x, 1.32x; 1024->256 @14
    batch 8 1.07-1.09x, 1.07-1.19x, 1.01-1.04x, @7 batch 16 1.40x, 1.15x, 1.15x;
    2048->512 @7 batch 32 1.14-1.34x, 0.99-1.07x, 1.03-1.05x; 256->128 @7-14
    1.17-1.67x, 1.11-1.13x, 1.08-1.12x; @6 batch 8 256->64 and 512->128 1.05-1.25x,
    0.86-0.98x, 1.04-1.09x. Even or mixed, taken: 576->96 @14 batch 16 0.84-1.04x,
    1.09-1.37x, 0.93-0.97x; 512->256 @14 batch 8 1.14x, 1.13x, 0.94x. Not taken: to more
    than half as many channels (256->256 @14 0.97x, 0.97x, 0.98x; 128->512 @14 0.94x,
    0.95x, 0.77x), maps of 16 positions or a multiple of them (256->64 @8 batch 8-16
    0.78-0.94x forward, @4 0.93x), and smaller maps (@2 512->128 batch 8 0.84x, 0.93x,
    0.97x; @3 1024->256 batch 16 1.20x, 0.91x, 0.87x).

    A value computed ``alone`` (not differentiated: `auto`'s value outside
    `jax.grad`) takes the rows there whatever its channels, on maps of 17 to
    `ROWS_FIRST_ALONE_MAX_POSITIONS` (100) positions with at least
    `ROWS_FIRST_ALONE_MIN_ROWS` (400) rows in the batch. Found by a random sweep on the
    Sapphire Rapids Xeon (`/tmp/s65/rand.py 6703`: 1x1 24->128 @7 batch 16 forward at
    0.43x `lax`, 0.23 ms against 0.10). Rows against columns, forward, 21 interleaved
    runs, 2026-12-06 (`/tmp/s67/pw9.py`; 1x1 layers from 8-512 to 64-1024 channels, not
    to at most half as many, @3x7-10x10, batch 2-64, fewer positions than channels,
    else `per_image` runs first): on 672-6,400 rows 1.05-2.00x over 14 layers (32->128
    @9 batch 16 2.00x); in a second sample 1.11-1.98x on nine (24->128 @7 batch 16
    1.98x); on 400 rows 1.40x (16->256 @5 batch 16, `pw7.py`); on 288 rows 0.69x and
    0.91x (16->256 and 64->256 @6 batch 8), on 80 0.84x: hence the floor.
    ResNet's and MobileNet's expansions @7 (`pw8.py`, 15 runs: 64->256 to 512->2048,
    batch 16-32) 1.12-1.57x on all ten. Not under differentiation, where the value's
    layout is the derivatives' too: training with a fixed cotangent 0.89-1.12x on those
    ten, through a ReLU 0.90-1.10x, and 0.90-1.45x and 0.85-1.56x on 16 random layers
    (`pw7.py`).
    """
    positions = math.prod(out)
    if n == 1:
        return False
    if (n * positions) % ROWS_FIRST_LANES != 0:
        return True
    ragged = positions > ROWS_FIRST_LANES and positions % ROWS_FIRST_LANES != 0
    small = (
        alone
        and positions <= ROWS_FIRST_ALONE_MAX_POSITIONS
        and n * positions >= ROWS_FIRST_ALONE_MIN_ROWS
    )
    return ragged and (c_in >= 2 * c_out or small)


def single_pixel(x_shape) -> bool:
    """Whether a canonical input ``(N, C, *S)`` has one pixel (every spatial dim 1),
    which `forward` computes as one product (`_single_pixel`)."""
    return all(size == 1 for size in x_shape[2:])


def _single_pixel(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """An input of one pixel: one product ``(N, C) @ (C, C_out * S_out)`` per group.

    Padded, the input is zero but at ``lo`` in every dim, which output position ``p``
    meets through tap ``(lo - p * stride) / dilation`` when that is a whole tap of the
    kernel, and through none otherwise; so the output is the input's channels times the
    kernel gathered at those taps (zeros elsewhere). A transposed convolution from a
    1x1 map (DCGAN's first generator layer, 100->512 4x4 batch 64) is exactly this; as
    patches of its mostly-zero padded input it trained at 0.78x lax, this way 2.1x.
    """
    n = x.shape[0]
    c_out, c_in_g, *kernel = w.shape
    g = spec.groups
    out = spec.out_spatial(x.shape[2:], kernel)
    w_sel = w
    for axis, ((lo, _), s, d, k, m) in enumerate(
        zip(spec.padding, spec.stride, spec.rhs_dilation, kernel, out, strict=True)
    ):
        offsets = [lo - p * s for p in range(m)]
        taps = [o // d if o >= 0 and o % d == 0 and o // d < k else None for o in offsets]
        w_sel = _select_taps(w_sel, taps, 2 + axis)
    w_sel = w_sel.reshape((g, c_out // g, c_in_g, math.prod(out)))
    xg = x.reshape((n, g, c_in_g))
    acc = accumulation_dtype(x.dtype)
    # (groups, N, C_out/groups, S_out)
    y = lax.dot_general(
        xg, w_sel, (((2,), (2,)), ((1,), (0,))), spec.precision, preferred_element_type=acc
    )
    return jnp.moveaxis(y, 0, 1).astype(x.dtype).reshape((n, c_out, *out))


def _select_taps(w: jax.Array, taps, axis: int) -> jax.Array:
    """``w`` gathered along ``axis`` at the static ``taps`` (None: zeros), as reversed
    static slices, one per run of consecutive descending taps (the whole kernel
    reversed, at stride 1), and zeros: not a gather, whose transpose (the weight
    gradient) is a scatter-add that XLA's CPU runtime ran at 0.39-0.41x `lax` under
    `jax.grad` of a sum (DCGAN's 100->512 4x4 batch 16: 4.4-4.8 ms against 1.8), nor
    one slice per tap of a kernel padded with a zero tap, whose transpose wrote a padded
    copy of the gradient per tap (6 ms channels-last)."""
    runs = []  # [first, count] of descending taps, or [None, count]
    for t in taps:
        last = runs[-1] if runs else None
        if last and t is None and last[0] is None:
            last[1] += 1
        elif last and t is not None and last[0] is not None and t == last[0] - last[1]:
            last[1] += 1
        else:
            runs.append([t, 1])
    if not runs:  # an empty output along this dim
        return lax.slice_in_dim(w, 0, 0, axis=axis)
    pieces = []
    for first, count in runs:
        if first is None:
            shape = list(w.shape)
            shape[axis] = count
            pieces.append(jnp.zeros(shape, w.dtype))
        else:
            piece = lax.slice_in_dim(w, first - count + 1, first + 1, axis=axis)
            pieces.append(lax.rev(piece, (axis,)))
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=axis)


def _forward_channels_last(
    x: jax.Array, w: jax.Array, spec: ConvSpec, value: bool = False
) -> jax.Array:
    """Patches built channels-last, ``(N, *S_out, taps, C)``, times ``(taps, C, C_out)``.

    With the caller's channels-last arrays every tap window is a slab of whole pixels
    and the product needs no transpose of the patches (ResNet 3x3 512@7 batch 8
    channels-last: the channels-first patches ran at 0.84x lax).
    """
    c_out, c_in, *kernel = w.shape
    xp = pad_input(jnp.moveaxis(x, 1, -1), spec, channels_last=True)
    windows = [win for _, win in tap_windows(xp, kernel, spec, channels_last=True)]
    nd = len(kernel)
    caller = w.size >= x.size or (value and len(windows) == 1)
    if caller:
        # The weight as the caller holds it, (*K, C, C_out), before any reshape: XLA
        # cancels that transpose with the caller's, so the product reads the caller's
        # weight, where the canonical weight reshaped first is a transposed copy of it.
        # Only for weights at least as large as the input: JAX's transpose of this
        # product takes the weight gradient as a product XLA does not hand to YNNPACK,
        # which cost more on large inputs than the weight's copy (training with a fixed
        # cotangent, batch 8: 1x1 1024->256 @14 0.91x, 256->64 @56 0.75x, 64->256 @56
        # 0.65x). Forward, then training, against the canonical weight (channels-last,
        # 11 interleaved runs, two runs): 1x1 512->2048 @7 batch 8 1.19-1.26x,
        # 1.40-1.45x; 2048->512 @7 batch 8 1.22x, 1.24x; batch 1 1.88-2.26x, 2.33-2.57x;
        # 512->512 @14 batch 1 1.46x, 1.19x; 3x3 512@7 batch 8 0.97-1.01x, 0.99-1.07x;
        # 5x5 384->128 @5 batch 16 1.01-1.03x, 1.02-1.03x. A 1x1 value (``value``),
        # which no derivative transposes, reads it whatever its size: the weight's
        # transposed copy was one more kernel to compile (channels-last, batch 8 unless
        # said, 3 compiles and 15-41 interleaved runs each, 2026-12-03): 256->64 @56 43
        # -> 12 ms, 64->256 @56 41 -> 14 ms, 1024->256 @14 43 -> 14 ms, 128->128 @28
        # batch 1 39-42 -> 12-13 ms; forward 0.99-1.05x, training 0.98-1.05x. (With
        # more taps XLA still copies it: it moves the tap dims' reshape before the
        # transpose, which then no longer meets the caller's.)
        w = jnp.transpose(w, (*range(2, nd + 2), 1, 0)).reshape((len(windows), c_in, c_out))
    if len(windows) == 1:
        # 1x1: the strided input times (C, C_out), no unit tap dim among the contracted
        # ones (it kept XLA from cancelling the layout transposes in the derivatives).
        cols = windows[0]
        w = w.reshape((c_in, c_out)) if caller else jnp.transpose(w.reshape((c_out, c_in)))
        dims = (((nd + 1,), (0,)), ((), ()))
    else:
        cols = jnp.stack(windows, axis=-2)  # (N, *S_out, taps, C)
        if caller:
            dims = (((nd + 1, nd + 2), (0, 1)), ((), ()))
        else:
            w = jnp.moveaxis(w.reshape((c_out, c_in, len(windows))), 0, -1)  # (C, taps, C_out)
            dims = (((nd + 1, nd + 2), (1, 0)), ((), ()))
    acc = accumulation_dtype(x.dtype)
    y = lax.dot_general(cols, w, dims, spec.precision, preferred_element_type=acc)
    return jnp.moveaxis(y, -1, 1).astype(x.dtype)


# With at most this many input channels (or strided) `pointwise_weight_gradient` flattens the
# rows into one dim, which XLA's CPU compiler runs as one product on the operands as
# they lie (Eigen's); from it on, the input is the product's left operand, which XLA
# lays out transposed (a copy of the smaller operand) for YNNPACK's product.
POINTWISE_FLAT_MAX_IN_CHANNELS = 63


def pointwise_expands(w_shape, spec: ConvSpec) -> bool:
    """Whether channels-last `matmul` (one group) takes a 1x1 convolution's weight
    gradient by `pointwise_weight_gradient`: 1x1 kernels to more channels than they take.

    JAX's transpose of the value's product is a product with the output gradient as its
    left operand, contracting the batch and spatial dims, and XLA's CPU compiler laid
    that operand, the larger, out transposed for the product: one full copy of it, into
    which it fused the mask of a ReLU before the convolution, a loop that ran at a few
    GB/s (64->256 @56 batch 4 through a ReLU: 38 ms, against 6.8 with a fixed output
    gradient). Against that, channels-last, `impl="auto"` (11 interleaved runs, batch 4
    unless said; training with a fixed output gradient, then through a ReLU):

    - by one product over flattened rows: 16->96 @112 2.1x, 6.3x; @28 batch 8 1.6x,
      1.35x; 24->144 @56 1.6x, 2.9x; 32->64 @56 batch 8 3.6x, 3.9x; 32->192 @28 1.09x,
      1.32x; stride 2, 256->512 @56 0.95x, 1.70x;
    - by the input as the left operand: 64->256 @56 1.23x, 5.5x, batch 1 0.81x, 2.5x;
      256->1024 @14 1.49x, 1.93x; 512->2048 @7 batch 8 1.13x, 1.35x; 256->512 @56
      1.07x, 1.86x.

    Flattened, the wider layers ran 0.88x, 4.5x (64->256), 1.33x, 1.65x (256->1024) and
    0.94x, 1.22x (512->2048); the narrow ones by the left operand 1.8x, 2.75x (16->96)
    and 1.29x, 2.1x (24->144). Layers to fewer channels keep JAX's transpose: its copy is
    of the smaller operand there, and one product over rows ran 0.56-0.95x (192->32 @28,
    1024->256 @14, 256->64 @56 batch 8; only 256->64 through a ReLU gained, 1.33-1.39x).
    """
    return (
        spec.channels_last
        and spec.groups == 1
        and w_shape[2:] == (1,) * spec.ndim
        and w_shape[0] > w_shape[1]
    )


def pointwise_weight_gradient(x: jax.Array, ct: jax.Array, spec: ConvSpec, w_shape) -> jax.Array:
    """The weight gradient of a channels-last 1x1 convolution to more channels
    (`pointwise_expands`): ``x^T @ ct`` over the batch and output positions, with ``x``
    the padded, strided input. ``x`` and ``ct`` are canonical (channels-first); the
    layout transposes cancel with the caller's.
    """
    c_out, c_in, *kernel = w_shape
    nd = len(kernel)
    xp = pad_input(jnp.moveaxis(x, 1, -1), spec, channels_last=True)
    ((_, cols),) = tap_windows(xp, kernel, spec, channels_last=True)  # (N, *S_out, C)
    ct = jnp.moveaxis(ct, 1, -1)  # (N, *S_out, C_out)
    dtype = jnp.result_type(x.dtype, ct.dtype)
    acc = accumulation_dtype(dtype)
    if c_in <= POINTWISE_FLAT_MAX_IN_CHANNELS or any(s > 1 for s in spec.stride):
        rows = math.prod(cols.shape[:-1])
        cols, ct = cols.reshape((rows, c_in)), ct.reshape((rows, c_out))
        lead = (0,)
    else:
        lead = tuple(range(nd + 1))
    dw = lax.dot_general(
        cols, ct, ((lead, lead), ((), ())), spec.precision, preferred_element_type=acc
    )
    # Shaped as the caller's channels-last weight, (*K, C, C_out), then transposed to the
    # canonical one: XLA cancels that transpose with the caller's. (Transposed first,
    # then reshaped, it left two copies of the gradient, one of them transposing:
    # 512->2048 @7 batch 8 trained at 0.5-0.65x.)
    dw = dw.astype(dtype).reshape((*kernel, c_in, c_out))
    return jnp.transpose(dw, (nd + 1, nd, *range(nd)))


# `output_taps` slices its taps out of chunks of at most this many, split apart once.
OUTPUT_TAPS_CHUNK = 4


def output_taps(x: jax.Array, w: jax.Array, spec: ConvSpec, per_image: bool = False) -> jax.Array:
    """The canonical convolution as one product to ``taps * C_out`` channels, every
    input position multiplied by every tap's weight, then each output the sum of the
    products its taps meet, shifted (zero where a tap meets the padding):

        z[:, t] = w[:, :, t] @ x          (all taps at once, no patches)
        y[..., o] = sum_t z[:, t][..., o * stride + t * dilation - lo]

    The transpose of the patches' product: no ``taps``-fold copy of the input, an
    intermediate ``taps * C_out / C_in`` times the input instead, so it pays where the
    output channels are few against the input channels (an image's three colours or a
    map's one class score from 64-1024 channels), where XLA's CPU convolution runs its
    product on too few output channels to fill its tiles. The input gradient (the
    output gradient's shifted copies stacked, times the weight) and the weight gradient
    (the input times them) transpose to products of the same shape. Input dilation
    (a transposed convolution's stride) spreads each tap's products apart before the
    shift, so the products are taken at the input's own positions. ``per_image``
    takes the product image by image channels-first (channels-last it is ignored: the
    input is positions-first already)."""
    n, c = x.shape[:2]
    c_out, c_in_g, *kernel = w.shape
    g = spec.groups
    spatial = x.shape[2:]
    out = spec.out_spatial(spatial, kernel)
    if 0 in (n, c, *out):
        return jnp.zeros((n, c_out, *out), x.dtype)
    taps = math.prod(kernel)
    nd = len(kernel)
    acc = accumulation_dtype(x.dtype)
    # (C_out, C_in/G, *K) -> (G, C_in/G, taps, C_out/G)
    wt = jnp.moveaxis(w.reshape((g, c_out // g, c_in_g, taps)), 1, -1)
    if spec.channels_last:
        # (N, *S, G, C_in/G) @ (G, C_in/G, taps * C_out/G) -> (N, *S, G, taps, C_out/G)
        if g == 1:
            # No unit batch dim for XLA: the product with the groups as a batch dim of
            # one ran 3-11x slower (96->1 3x3 @56 batch 32: 18.9 ms against 1.7).
            z = jnp.einsum(
                "n...i,itc->n...tc",
                jnp.moveaxis(x, 1, -1),
                wt[0],
                precision=spec.precision,
                preferred_element_type=acc,
            )[..., None, :, :]
        else:
            xs = jnp.moveaxis(x, 1, -1).reshape((n, *spatial, g, c_in_g))
            z = jnp.einsum(
                "n...gi,gitc->n...gtc",
                xs,
                wt,
                precision=spec.precision,
                preferred_element_type=acc,
            )
        z = jnp.moveaxis(z, -2, 1)  # (N, taps, *S, G, C_out/G)
        base = 1  # the first spatial axis of one tap's (N, *S, G, C_out/G)
    else:
        # (G, taps * C_out/G, C_in/G) @ (N, G, C_in/G, *S) -> (N, taps, G, C_out/G, *S)
        if per_image:
            # Image by image (w broadcast along the batch): one product per image, which
            # reads the image's positions where they lie, as does its transpose along w
            # (then the images' sum), with no copy of the input nor of the output
            # gradient's shifted copies put positions-first (see
            # `_dispatch._output_taps_per_image`).
            c_out_g = c_out // g
            xs = x.reshape((n, g, c_in_g, math.prod(spatial)))
            rows = jnp.swapaxes(wt.reshape((g, c_in_g, taps * c_out_g)), 1, 2)
            z = lax.dot_general(
                jnp.broadcast_to(rows, (n, *rows.shape)),
                xs,
                (((3,), (2,)), ((0, 1), (0, 1))),
                precision=spec.precision,
                preferred_element_type=acc,
            )  # (N, G, taps * C_out/G, positions)
            z = jnp.moveaxis(z.reshape((n, g, taps, c_out_g, *spatial)), 2, 1)
        else:
            xs = x.reshape((n, g, c_in_g, *spatial))
            z = jnp.einsum(
                "ngi...,gitc->ntgc...", xs, wt, precision=spec.precision, preferred_element_type=acc
            )
        base = 3  # of one tap's (N, G, C_out/G, *S)
    y = None
    # The taps sliced out of chunks of `OUTPUT_TAPS_CHUNK` split apart once: JAX
    # transposes each slice to a zero-padded copy of what it was sliced from, and XLA
    # fuses their sum into one loop whose every element computes every copy's. Sliced
    # from ``z`` whole, that is ``taps^2`` work per element of the derivatives' shifted
    # copies of the output gradient (7x7 128->1 @14 batch 8: the weight gradient 4.9
    # ms, XLA's own 2.9); a chunk's slices sum to the chunk's copies only, and the split
    # transposes to their concatenation (0.39 ms). By taps per chunk (1, 2, 3, 4, 6,
    # 9), the weight gradient and training with a fixed cotangent, 11 interleaved runs,
    # AMD EPYC with AVX2, 2026-12-05 (`/tmp/s56/tog3.py`): that layer 0.36, 0.42, 0.35,
    # 0.39, 0.39, 0.87 ms / 0.97, 1.04, 0.91, 0.81, 0.81, 1.20 (whole: 5.1 / 5.4); 1-D
    # k9 dilation 2 512->4 @4096 batch 2 7.6, 13.7, 9.8, 7.5, 8.2, 11.4 (whole) / 29.0,
    # 25.2, 14.7, 14.7, 14.7, 17.8; 3x3 64->1 @128 batch 8 32, 30, 31, 32, 31, 35
    # (whole) / 80, 62, 63, 65, 62, 63 (a tap a chunk, many parts concatenated, ran
    # 0.79x there).
    sizes = [min(OUTPUT_TAPS_CHUNK, taps - i) for i in range(0, taps, OUTPUT_TAPS_CHUNK)]
    chunks = lax.split(z, sizes, axis=1)
    for t, tap in enumerate(itertools.product(*(range(k) for k in kernel))):
        chunk, t_in = divmod(t, OUTPUT_TAPS_CHUNK)
        term = lax.index_in_dim(chunks[chunk], t_in, 1, keepdims=False)
        config = [(0, 0, 0)] * term.ndim
        starts, limits, strides = [0] * term.ndim, list(term.shape), [1] * term.ndim
        for i in range(nd):
            # Output o meets input o * stride + tap * dilation - lo through this tap.
            lead = tap[i] * spec.rhs_dilation[i] - spec.padding[i][0]
            last = lead + (out[i] - 1) * spec.stride[i]
            axis = base + i
            dilated = (spatial[i] - 1) * spec.lhs_dilation[i] + 1
            config[axis] = (max(0, -lead), max(0, last - (dilated - 1)), spec.lhs_dilation[i] - 1)
            starts[axis] = lead + config[axis][0]
            limits[axis] = starts[axis] + last - lead + 1
            strides[axis] = spec.stride[i]
        term = lax.pad(term, lax.full((), 0, term.dtype), config)
        term = lax.slice(term, starts, limits, strides)
        y = term if y is None else y + term
    if spec.channels_last:
        y = jnp.moveaxis(y.reshape((n, *out, c_out)), -1, 1)
    else:
        y = y.reshape((n, c_out, *out))
    return y.astype(x.dtype)


def tap_ranges(spatial, kernel, spec: ConvSpec) -> list[tuple[tuple[int, int, int], ...] | None]:
    """For each tap (row-major over ``kernel``), the outputs along each spatial dim that
    it meets the input at, as ``(first output, end output, first input)``, or ``None``
    for a tap that meets only padding: output ``o`` reads input
    ``o * stride + tap * dilation - lo`` through the tap (no input dilation).

    >>> from jaxconv._spec import ConvSpec
    >>> spec = ConvSpec((1,), ((1, 1),), (1,), (1,), 1)
    >>> tap_ranges((4,), (3,), spec)
    [((1, 4, 0),), ((0, 4, 0),), ((0, 3, 1),)]
    """
    out = spec.out_spatial(spatial, kernel)
    ranges = []
    for tap in itertools.product(*(range(k) for k in kernel)):
        dims = []
        for o, n, t, s, d, (lo, _) in zip(
            out, spatial, tap, spec.stride, spec.rhs_dilation, spec.padding, strict=True
        ):
            lead = t * d - lo
            first = max(0, -(lead // s))  # the least o with o * s + lead >= 0
            end = min(o, (n - 1 - lead) // s + 1)
            if end <= first:
                dims = None
                break
            dims.append((first, end, first * s + lead))
        ranges.append(None if dims is None else tuple(dims))
    return ranges


def _dense(spec: ConvSpec) -> None:
    """Raise unless ``spec`` is dense and not input-dilated, as `input_taps` needs."""
    if spec.groups != 1 or max(spec.lhs_dilation) > 1:
        raise ValueError("input_taps: dense convolutions without input dilation only")


def _tap_window(xs: jax.Array, box, spec: ConvSpec) -> jax.Array:
    """The input positions (of the positions-first ``xs``, ``(N, *S, C)``) that a
    tap's ``box`` of outputs (`tap_ranges`) reads: ``(N, *R_t, C)``. The callers write
    ``xs`` out once (`computed_once`): XLA fused its producer into every tap's slice,
    so that a ReLU's mask on the output gradient, and the value's whole sum over taps
    behind it, ran once a tap (3x3 dilation 6 256@14 batch 8 trained through a ReLU
    at 0.48x XLA's convolution, against 1.4-1.6x with a fixed cotangent)."""
    starts = [0] + [first_in for _, _, first_in in box] + [0]
    limits = [
        xs.shape[0],
        *(i + (e - f - 1) * s + 1 for (f, e, i), s in zip(box, spec.stride, strict=True)),
        xs.shape[-1],
    ]
    return lax.slice(xs, starts, limits, (1, *spec.stride, 1))


def input_taps(
    x: jax.Array, w: jax.Array, spec: ConvSpec, callers_weight: bool = True
) -> jax.Array:
    """The canonical convolution (dense, not input-dilated) as one product per tap, of
    the input positions the tap meets and no others, each padded into the output and
    summed:

        y[:, :, R_t] += w[:, :, t] @ x[:, :, R_t * stride + t * dilation - lo]

    where ``R_t`` is the box of outputs whose window meets the input at tap ``t``
    (`tap_ranges`). No padding is multiplied: on small maps and with dilations a large
    share of a kernel's taps meet the padding (a 5x5 kernel of dilation 3 on a 7x7 map:
    three quarters of its products), which XLA's convolution multiplies. Each product
    is a plain ``(positions, C_in) @ (C_in, C_out)`` one, which XLA's CPU backend runs
    faster than its convolution on small maps; the padded sum costs a pass over the
    output a tap, so it loses on large maps (see `jaxconv._dispatch._input_taps`).
    ``callers_weight``: ``w`` is the caller's weight (a layer's value), not one derived
    from it (an input gradient's flipped, transposed weight), so that channels-last
    each tap's ``(C_in, C_out)`` weight is read where it lies."""
    _dense(spec)
    n, c_in = x.shape[:2]
    c_out, _, *kernel = w.shape
    spatial = x.shape[2:]
    out = spec.out_spatial(spatial, kernel)
    nd = len(kernel)
    if 0 in (n, c_in, c_out, *out):
        return jnp.zeros((n, c_out, *out), x.dtype)
    acc = accumulation_dtype(x.dtype)
    # (N, *S, C_in): in place where the caller's is channels-last; written once, not
    # recomputed in every tap's slice (see `_tap_window`).
    xs = computed_once(jnp.moveaxis(x, 1, -1))
    taps = math.prod(kernel)
    if spec.channels_last and callers_weight:
        # (taps, C_in, C_out): the caller's (*K, C_in, C_out), each tap's slice read
        # where it lies. Sliced from the canonical weight instead, XLA wrote each tap's
        # weight out transposed (channels-last 3x3 dilation 6 256->512 @10 batch 4:
        # 1.8 ms against 1.1); channels-first that slice was the faster one. (An input
        # gradient's weight, the caller's flipped with its channels swapped, lies as
        # the canonical slice reads it.)
        wt, contract = jnp.moveaxis(w, (0, 1), (-1, -2)).reshape((taps, c_in, c_out)), 0
    else:
        wt, contract = jnp.moveaxis(w.reshape((c_out, c_in, taps)), -1, 0), 1
    y = None
    for t, box in enumerate(tap_ranges(spatial, kernel, spec)):
        if box is None:
            continue
        term = lax.dot_general(
            _tap_window(xs, box, spec),
            wt[t],
            (((nd + 1,), (contract,)), ((), ())),
            precision=spec.precision,
            preferred_element_type=acc,
        )  # (N, *R_t, C_out)
        config = [(0, 0, 0)] + [(f, o - e, 0) for (f, e, _), o in zip(box, out, strict=True)]
        term = lax.pad(term, lax.full((), 0, term.dtype), config + [(0, 0, 0)])
        y = term if y is None else y + term
    if y is None:
        return jnp.zeros((n, c_out, *out), x.dtype)
    return jnp.moveaxis(y, -1, 1).astype(x.dtype)


def input_taps_weight_gradient(x: jax.Array, ct: jax.Array, spec: ConvSpec, w_shape) -> jax.Array:
    """The weight gradient of `input_taps`' convolution (dense, not input-dilated): for
    each tap the product of the output gradient's box of outputs the tap meets the
    input at with the input positions it meets there, contracted over the batch and
    the box; zeros for a tap that meets only padding."""
    _dense(spec)
    c_out, c_in, *kernel = w_shape
    n = x.shape[0]
    nd = len(kernel)
    out_dtype = jnp.result_type(x.dtype, ct.dtype)
    acc = accumulation_dtype(out_dtype)
    xs = computed_once(jnp.moveaxis(x, 1, -1))  # (N, *S, C_in)
    cts = computed_once(jnp.moveaxis(ct, 1, -1))  # (N, *out, C_out)
    taps = []
    for box in tap_ranges(x.shape[2:], kernel, spec):
        if box is None:
            taps.append(jnp.zeros((c_out, c_in), acc or out_dtype))
            continue
        window = _tap_window(xs, box, spec)
        part = lax.slice(
            cts, [0] + [f for f, _, _ in box] + [0], [n] + [e for _, e, _ in box] + [c_out]
        )
        rows = tuple(range(nd + 1))
        taps.append(
            lax.dot_general(
                part,
                window,
                ((rows, rows), ((), ())),
                precision=spec.precision,
                preferred_element_type=acc,
            )
        )
    return jnp.stack(taps, axis=-1).reshape(w_shape).astype(out_dtype)
