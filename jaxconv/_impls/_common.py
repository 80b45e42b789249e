"""Pieces the hand-written algorithms share: explicit padding, tap windows, and a way
to make XLA write an array once."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec


@functools.cache
def cpuinfo(key: str) -> str:
    """The value of ``key`` in the host's first CPU entry of Linux's ``/proc/cpuinfo``
    (``cpuinfo("vendor_id")`` is "AuthenticAMD" or "GenuineIntel", ``cpuinfo("flags")``
    the vector extensions among others), or "" where that cannot be read. For the few
    CPU rules that the same XLA program measured the other way round on two CPUs."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return ""


def split_mesh(*arrays: jax.Array):
    """The mesh that XLA's partitioner splits any of ``arrays`` over: the first one's
    abstract mesh with an ``Auto`` or ``Explicit`` axis of more than one device, or None
    (one device, or only ``jax.shard_map``'s ``Manual`` axes, inside which each device
    computes its own block). Under ``Auto`` axes the split itself is not known while
    tracing, only the mesh."""
    for a in arrays:
        mesh = getattr(getattr(jax.typeof(a), "sharding", None), "mesh", None)
        types = getattr(mesh, "axis_types", ())
        sizes = getattr(mesh, "axis_sizes", ())
        if any(t != AxisType.Manual and n > 1 for t, n in zip(types, sizes, strict=True)):
            return mesh
    return None


def varying_struct(shape, dtype, *like) -> jax.ShapeDtypeStruct:
    """A ``jax.ShapeDtypeStruct`` for `jax.linear_transpose` that, inside
    ``jax.shard_map``, varies over the manual mesh axes of ``like`` (arrays or avals):
    without them the transpose of a function of per-device data sees an invariant
    cotangent and fails shard_map's type check."""
    avals = [a if isinstance(a, jax.core.AbstractValue) else jax.typeof(a) for a in like]
    aval = varying_aval(shape, dtype, *avals)
    mat = getattr(aval, "manual_axis_type", None)
    if mat is None or not mat.varying:
        return jax.ShapeDtypeStruct(shape, dtype)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=aval.sharding, manual_axis_type=mat)


def varying_aval(shape, dtype, *like) -> jax.core.ShapedArray:
    """A ``ShapedArray`` for a primitive's abstract evaluation that varies over the
    manual mesh axes of ``like`` (avals; see `varying_struct`)."""
    mat = varying_type(*like)
    if mat is None or not mat.varying:
        return jax.core.ShapedArray(shape, dtype)
    aval = like[0]
    sharding = aval.sharding.update(spec=jax.sharding.PartitionSpec(*[None] * len(shape)))
    return aval.update(
        shape=tuple(shape), dtype=dtype, weak_type=False, sharding=sharding, manual_axis_type=mat
    )


def match_varying(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    """``arrays``, each cast to vary over every manual mesh axis (inside
    ``jax.shard_map``) that any of them varies over, as JAX's own primitives require of
    their operands; unchanged outside shard_map."""
    types = [getattr(jax.typeof(a), "manual_axis_type", None) for a in arrays]
    if any(t is None for t in types):
        return arrays
    union = frozenset().union(*(t.varying for t in types))
    return tuple(
        a if t.varying == union else lax.pcast(a, tuple(union - t.varying), to="varying")
        for a, t in zip(arrays, types, strict=True)
    )


def varying_type(*like):
    """The manual axis type (shard_map's varying mesh axes) of the union of ``like``'s
    (avals), or None where JAX has none."""
    types = [getattr(a, "manual_axis_type", None) for a in like]
    if any(t is None for t in types):
        return None
    union = frozenset().union(*(t.varying for t in types))
    for t in types:
        if t.varying == union:
            return t
    return types[0].update(varying=union)


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


def padded_bytes(x_shape, spec: ConvSpec, itemsize: int) -> int:
    """The bytes of one image of ``(N, C, *S)`` padded (and input-dilated) by `pad_input`."""
    spatial = [
        (m - 1) * d + 1 + lo + hi if m else lo + hi
        for m, (lo, hi), d in zip(x_shape[2:], spec.padding, spec.lhs_dilation, strict=True)
    ]
    return x_shape[1] * math.prod(max(m, 0) for m in spatial) * itemsize


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


def slice_in_layout(
    y: jax.Array, spec: ConvSpec, axis: int, start: int, limit: int, stride: int = 1
) -> jax.Array:
    """``lax.slice_in_dim`` of the canonical (channels-first) ``y`` along ``axis``,
    written in the caller's layout: channels-last, between two layout transposes.

    Cut in the canonical order, XLA's layout assignment (jaxlib 0.10.2) put the slice of
    a channels-last program on a physically channels-first array whenever the program
    had more than one output, and copied it transposed there and back: a training step
    returning the value and both gradients copied the value and the input gradient
    twice each where `jaxconv._impls.lax.forward_eigen` cut its extra rows. Between the
    transposes it is one slice in place, or one fused with the transpose the caller's
    layout needs anyway (the FFT's last inverse transform runs channels-first).
    Training with against without (channels-last, batch 8 unless said, 11 interleaved
    runs, Sapphire Rapids Xeon, 2026-12-03; through a ReLU, then the value and both
    gradients of a fixed cotangent): the extra rows of a stride-1 transposed 3x3
    512->32 @56 batch 2 1.62x and 1.62x (from 0.58x `lax`); ResNet 3x3 64@56 1.11x,
    128@28 1.12x, 256@14 1.03x, 5x5 64@28 1.18x; the full bench's rows it changes 1.04-1.11x;
    forward alone 0.99-1.02x; `forward_padded`'s unpadded layers (32->32 3x3 @112
    batch 2, 64->16 @56, 32->64 @100 batch 4) 0.98-1.02x. The FFT's last cut:
    depthwise 13x13 128@56 1.03x and 1.02x, 31x31 128@28 1.06x and 1.03x; forward
    31x31 1.06x, 21x21 and 15x15 0.99-1.02x (channels-first unchanged)."""
    starts, limits, strides = [0] * y.ndim, list(y.shape), [1] * y.ndim
    starts[axis], limits[axis], strides[axis] = start, limit, stride
    return slices_in_layout(y, spec, starts, limits, strides)


def slices_in_layout(y: jax.Array, spec: ConvSpec, starts, limits, strides) -> jax.Array:
    """``lax.slice`` of the canonical (channels-first) ``y`` along every dim, written
    in the caller's layout as `slice_in_layout`: cut in the canonical order, XLA
    (jaxlib 0.10.2) copied a channels-last input transposed, sliced it and copied the
    slice back (`jaxconv._dispatch._common_factor`'s input elements: 2-D channels-last
    layers trained 1.05-1.41x cut so, 5x5 stride 2 dilation 2 128->32 @64 batch 8 1.41x;
    see there for 1-D)."""
    if not spec.channels_last:
        return lax.slice(y, starts, limits, strides)
    order = [0, *range(2, y.ndim), 1]
    cut = lax.slice(
        jnp.moveaxis(y, 1, -1),
        [starts[i] for i in order],
        [limits[i] for i in order],
        [strides[i] for i in order],
    )
    return jnp.moveaxis(cut, -1, 1)


def pads_in_layout(y: jax.Array, spec: ConvSpec, spatial) -> jax.Array:
    """The canonical (channels-first) ``y`` with zeros ``(before, after)`` around each
    spatial dim (``spatial``), written in the caller's layout as `slices_in_layout`
    cuts."""
    if not spec.channels_last:
        return jnp.pad(y, ((0, 0), (0, 0), *spatial))
    return jnp.moveaxis(jnp.pad(jnp.moveaxis(y, 1, -1), ((0, 0), *spatial, (0, 0))), -1, 1)
