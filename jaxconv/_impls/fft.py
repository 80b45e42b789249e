"""``impl="fft"``: convolution by the convolution theorem.

The kernel is dilated by inserting zeros and flipped (a correlation is a convolution
with the flipped kernel; flipping, not conjugating, keeps complex inputs right); the
input is dilated and cropped explicitly (`pad_input`), and zero-padded explicitly only
along dims padded below by more than the kernel's extent less one or cropped on either
side: elsewhere the padding is the transform's own zero fill. Both are transformed to a
common fast size that holds every output read free of circular wrap-around, multiplied
with a per-group contraction over input channels in the frequency domain, and
transformed back one dim at a time, each dim's outputs read out with the stride (a
strided slice) before the next dim's transform.

float32, bfloat16 and float16 are computed in float32 (complex64) and cast back;
float64 and complex128 in double precision.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from jaxconv._impls._common import pad_input, slice_in_layout, split_mesh, valid_out_spatial

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
    """The canonical convolution through ``rfftn``/``irfftn`` (``fftn`` for complex).

    On a mesh that XLA's partitioner splits, each device transforms its own block inside
    ``jax.shard_map``, split as `device_split` says: XLA's partitioner splits no FFT. It
    gathers each transform's whole operand onto every device, along the batch too, and
    on the CPU the FFT of an operand split along a transformed dim or gathered along the
    channels fails (``RET_CHECK`` in ``fft_thunk.cc``, ``IsMonotonicWithDim0Major``, or
    an abort in ``fft_handler.cc``; jaxlib 0.10.2, 8 CPU devices, 2026-12-04). Under
    ``Auto`` axes the result comes out split along the batch (or the output channels);
    ask for another split with ``out_shardings`` or ``jax.lax.with_sharding_constraint``.
    Not inside ``jax.shard_map`` over some of the mesh's axes (the gradients of a
    ``shard_map`` nested in it do not lower), nor for empty operands (a ``shard_map``
    whose body reads none of its operands does not lower): there XLA's partitioner
    splits it as it can.
    """
    mesh = split_mesh(x, w)
    if mesh is None or AxisType.Manual in mesh.axis_types or not (x.size and w.size):
        return _transformed(x, w, spec)
    batch, channels = device_split(mesh, x.shape[0], w.shape[0], spec.groups)
    local = spec
    if spec.groups > 1:  # whole groups per device, the input's channels split with them
        local = dataclasses.replace(
            spec, groups=spec.groups // math.prod(mesh.shape[a] for a in channels)
        )
    b, c = batch or None, channels or None
    return jax.shard_map(
        functools.partial(_transformed, spec=local),
        mesh=mesh,
        in_specs=(P(b, c if spec.groups > 1 else None), P(c)),
        out_specs=P(b, c),
        axis_names=frozenset(mesh.axis_names),
    )(x, w)


def device_split(mesh, n: int, c_out: int, groups: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """How `forward` splits a convolution of batch ``n`` to ``c_out`` channels in
    ``groups`` over ``mesh``: the axes along the batch and along the output channels.

    Each axis goes to the batch while the batch divides, else to the output channels
    while they divide (whole groups, the input's channels with them, when there are
    groups), else each device of it computes the whole.
    """
    batch, channels = [], []
    along_batch = along_channels = 1
    for name, size in mesh.shape.items():
        if n % (along_batch * size) == 0:
            batch.append(name)
            along_batch *= size
        elif (groups if groups > 1 else c_out) % (along_channels * size) == 0:
            channels.append(name)
            along_channels *= size
    return tuple(batch), tuple(channels)


def _transformed(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """`forward` on one device's arrays."""
    dtype = x.dtype
    ct = compute_dtype(dtype)
    n, c_in = x.shape[:2]
    c_out, c_in_g, *kernel = w.shape
    g = spec.groups
    nd = spec.ndim
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, spec.rhs_dilation, strict=True))
    lhs = spec.lhs_dilation
    dilated = [(m - 1) * d + 1 if m else 0 for m, d in zip(x.shape[2:], lhs, strict=True)]
    padded = [m + lo + hi for m, (lo, hi) in zip(dilated, spec.padding, strict=True)]
    out = valid_out_spatial(padded, kernel, spec)
    # Zeros around the input cost the transforms nothing: along a dim padded by at most
    # the kernel's extent E less one below (and not cropped), the input goes in
    # unpadded and output o is the full convolution's index E - 1 - lo + o * stride.
    # A transform of length N holds them free of wrap-around when N > L - 1 + lo (the
    # full convolution's last index wraps below the first output read) and N > the
    # last index read (and N >= E keeps the kernel whole): "same" padding L + (E - 1) / 2
    # instead of L + E - 1. Against
    # padding first (depthwise, batch 8, 9 interleaved runs, one malloc arena,
    # 2026-12-03, `/tmp/s41/upab.py`; channels-first / channels-last, forward and
    # training): 31x31 128@28 2.69x / 2.22x and 2.26x / 2.09x (60 -> 45 per dim);
    # 21x21 64@32 batch 4 1.40x and 1.57x channels-first; the derivatives of 13x13
    # 128@56 (`auto` trains by FFT) 1.33x / 1.16x.
    if min(out) < 1:  # no output (the public functions reject these)
        return jnp.zeros((n, c_out, *(max(o, 0) for o in out)), dtype)
    explicit, lows, sizes = [], [], []
    for m, (lo, hi), e, o, s, p in zip(
        dilated, spec.padding, extent, out, spec.stride, padded, strict=True
    ):
        if 0 <= lo <= e - 1 and hi >= 0:
            explicit.append((0, 0))
            lows.append(lo)
            sizes.append(fast_size(max(m + lo, e - lo + (o - 1) * s, e)))
        else:
            explicit.append((lo, hi))
            lows.append(0)
            sizes.append(fast_size(p))
    xp = pad_input(x.astype(ct), dataclasses.replace(spec, padding=tuple(explicit)))
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

    # Full-convolution index e - 1 - lo + o * stride is valid-correlation output o (lo:
    # the padding below left to the transform).
    start = [e - 1 - lo for e, lo in zip(extent, lows, strict=True)]
    limit = [b + (m - 1) * s + 1 for b, m, s in zip(start, out, spec.stride, strict=True)]
    # The inverse one dim at a time, each dim cut to the outputs read before the next
    # transform, so the last (the real one, for real inputs) runs on only the rows
    # read. Against `irfftn` and one slice after (depthwise, forward, 9 interleaved
    # runs, channels-first / channels-last, 2026-12-03): 31x31 128@28 batch 8 1.21x /
    # 1.26x; 21x21 64@32 batch 4 1.25x / 1.22x; 3-D 7x7x7 64@16 batch 2 1.37x / 1.37x;
    # 1-D k65 (one transform either way) 0.97x / 1.10x; training 31x31 1.02x / 1.07x.
    complex_ = jnp.issubdtype(ct, jnp.complexfloating)
    y = yf
    for i, axis in enumerate(axes):
        if i == nd - 1 and not complex_:
            y = jnp.fft.irfft(y, n=sizes[i], axis=axis)
        else:
            y = jnp.fft.ifft(y, n=sizes[i], axis=axis)
        if i == nd - 1:  # the cut that the caller's layout transposes anyway
            y = slice_in_layout(y, spec, axis, start[i], limit[i], spec.stride[i])
        else:
            y = lax.slice_in_dim(y, start[i], limit[i], spec.stride[i], axis=axis)
    return y.astype(dtype)
