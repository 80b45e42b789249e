"""Convolutions over an input split along a spatial dim: halo exchange inside `shard_map`.

Sharded inputs need nothing from jaxconv: every convolution here accepts arrays sharded
with `jax.sharding` along any dim, and XLA's SPMD partitioner distributes the work. This
module is for the one case worth spelling out by hand, an input too large for one
device along a spatial dim (a long signal, a big volume). Each device holds one
contiguous block of that dim; before convolving, it fetches the few entries its
kernel needs from its neighbours' blocks (the *halo*) with one `jax.lax.ppermute` each
way, and then convolves locally with no padding along that dim.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from jaxconv import _spec
from jaxconv.functional import _NP_PAD_MODE, check_operands, conv


def _halo_pair(fname: str, halo) -> tuple[int, int]:
    """An int or a ``(lo, hi)`` pair of non-negative ints -> ``(lo, hi)``."""
    pair = tuple(halo) if isinstance(halo, tuple | list) else (halo, halo)
    if len(pair) != 2 or not all(_spec._is_int(h) for h in pair):
        raise TypeError(f"{fname}: `halo` (={halo!r}) must be an int or a (lo, hi) pair of ints")
    if min(pair) < 0:
        raise ValueError(f"{fname}: `halo` (={halo!r}) must be non-negative")
    return int(pair[0]), int(pair[1])


def halo_exchange(x: jax.Array, axis_name, halo, dim: int, *, circular: bool = False) -> jax.Array:
    """The local block along ``dim`` with its neighbours' edges attached; inside `shard_map`.

    Shard ``i`` of the mesh axis ``axis_name`` holds block ``i`` of a global array split
    along ``dim``. It receives the last ``lo`` entries of block ``i - 1`` (prepended)
    and the first ``hi`` entries of block ``i + 1`` (appended), one
    `jax.lax.ppermute` each way. Beyond the global edges the halo is zeros, or, with
    ``circular``, the other end of the global array.

    Args:
      x: the local block, any shape.
      axis_name: the mesh axis (as named in `shard_map`) the array is split over.
      halo: entries fetched from each neighbour: an int (both sides) or a ``(lo, hi)``
        pair (``lo`` from the previous block, ``hi`` from the next). Each at most
        ``x.shape[dim]``: only direct neighbours are asked.
      dim: the dim of ``x`` that is split (negative counts from the end).
      circular: wrap around: the first block's previous one is the last block.

    Returns:
      ``x`` with ``x.shape[dim] + lo + hi`` entries along ``dim``.

    Raises:
      ValueError: a negative halo, a halo larger than the local block, or ``dim``
        out of range.
      TypeError: ``x`` not an array, or a non-int ``halo`` or ``dim``.

    Examples:
      Each of the ``n`` devices holds a block of 4 entries and gets 1 entry from the
      block below and 2 from the block above:

      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> from jaxconv import halo_exchange
      >>> n = len(jax.devices())
      >>> mesh = jax.make_mesh((n,), ("i",))
      >>> x = jax.device_put(jnp.arange(4.0 * n), NamedSharding(mesh, P("i")))
      >>> f = jax.shard_map(lambda b: halo_exchange(b, "i", (1, 2), 0), mesh=mesh,
      ...                   in_specs=P("i"), out_specs=P("i"))
      >>> y = np.asarray(f(x)).reshape(n, 7)  # row i: block i with its halo
      >>> y[0, :5].tolist(), y[-1, -2:].tolist()  # zeros beyond the global ends
      ([0.0, 0.0, 1.0, 2.0, 3.0], [0.0, 0.0])
      >>> bool((y[1:, 0] == np.arange(4 * n).reshape(n, 4)[:-1, -1]).all())
      True
    """
    fname = "halo_exchange"
    with jax.named_scope(f"jaxconv.{fname}"):
        if isinstance(x, str) or not (hasattr(x, "shape") and hasattr(x, "dtype")):
            raise TypeError(f"{fname}: `x` must be an array, got {type(x).__name__}")
        lo, hi = _halo_pair(fname, halo)
        if not _spec._is_int(dim):
            raise TypeError(f"{fname}: `dim` (={dim!r}) must be an int")
        if not -x.ndim <= dim < x.ndim:
            raise ValueError(
                f"{fname}: `dim` (={dim}) must be in [-{x.ndim}, {x.ndim}) for a local "
                f"block of shape {x.shape}"
            )
        dim = dim % x.ndim
        m = x.shape[dim]
        if max(lo, hi) > m:
            raise ValueError(
                f"{fname}: `halo` (={halo!r}) must be at most the local block's size "
                f"along dim {dim} (={m}); only direct neighbours are exchanged"
            )
        n = jax.lax.axis_size(axis_name)
        parts = []
        if lo:
            # Shard i sends its last `lo` entries to shard i + 1.
            edge = jax.lax.slice_in_dim(x, m - lo, m, axis=dim)
            parts.append(_shift(edge, axis_name, n, +1, circular))
        parts.append(x)
        if hi:
            # Shard i sends its first `hi` entries to shard i - 1.
            edge = jax.lax.slice_in_dim(x, 0, hi, axis=dim)
            parts.append(_shift(edge, axis_name, n, -1, circular))
        return jnp.concatenate(parts, axis=dim) if len(parts) > 1 else x


def _shift(edge: jax.Array, axis_name, n: int, step: int, circular: bool) -> jax.Array:
    """Send ``edge`` from shard i to shard i + step; shards nobody sends to get zeros."""
    perm = [(i, (i + step) % n) for i in range(n) if circular or 0 <= i + step < n]
    if not perm:  # one shard and no wrap-around: the only neighbours are global edges
        return jnp.zeros_like(edge)
    return jax.lax.ppermute(edge, axis_name, perm)


# ----------------------------------------------------------------------------- conv


@dataclasses.dataclass(frozen=True)
class _ShardedPlan:
    """Everything the shard_map body needs, hashable so that `jax.jit` caches on it."""

    mesh: Mesh
    axis_name: Any
    axis: int  # the array dim that is split
    halo: tuple[int, int]
    local_padding: tuple[tuple[int, int], ...]  # (0, 0) along the split dim
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str
    channels_last: bool
    impl: str
    precision: Any
    has_bias: bool


def sharded_conv(
    input: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    *,
    mesh: Mesh,
    axis_name: str,
    spatial_dim: int,
    padding_mode: str = "zeros",
    channels_last: bool = False,
    impl: str = "auto",
    precision=None,
) -> jax.Array:
    """`jaxconv.conv` of an input split along one spatial dim, by halo exchange.

    The input is split into equal contiguous blocks along spatial dim ``spatial_dim``
    over the mesh axis ``axis_name``. Inside `jax.shard_map`, each block fetches from
    its neighbours the ``(lo, hi)`` entries that ``padding`` resolves to along that dim
    (`halo_exchange`; at the global edges: zeros, the other end for ``"circular"``, the
    block's own reflection for ``"reflect"`` / ``"replicate"``), pads the other dims as
    usual and runs `jaxconv.conv` with no padding along the split dim. The result
    equals the unsharded `jaxconv.conv` and stays split the same way. Other mesh axes
    are left to XLA (e.g. a batch dim sharded over another axis stays sharded).

    The output must split into the same blocks as the input: along the split dim the
    output size must be ``n / stride`` (e.g. ``"same"``, ``"causal"``, or explicit
    ``(lo, hi)`` with ``lo + hi = d*(k-1)`` at stride 1) and the local block size a
    multiple of the stride.

    Args:
      input: ``(*B, C_in, *S)``; ``(*B, *S, C_in)`` with ``channels_last``. May be
        sharded any way; it is resharded as needed.
      weight: ``(C_out, C_in / groups, *K)``; ``(*K, C_in / groups, C_out)`` with
        ``channels_last``. Replicated on every device.
      bias: ``(C_out,)`` or None.
      stride, padding, dilation, groups: as in `jaxconv.conv`.
      mesh: the `jax.sharding.Mesh` holding ``axis_name``.
      axis_name: the mesh axis the split dim is sharded over.
      spatial_dim: which spatial dim is split: ``0`` for the first of ``S``, negative
        counts from the last (the same in both layouts).
      padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
      channels_last: channels as the last dim of input, output and weight layouts.
      impl: ``"auto"``, ``"autotune"`` or a name in `jaxconv.IMPLS`, run on every block.
      precision: None or a `jax.lax.Precision` (or its name).

    Returns:
      What `jaxconv.conv` returns, sharded along the split dim over ``axis_name``.

    Raises:
      ValueError: what `jaxconv.conv` raises, and: ``axis_name`` not in ``mesh``,
        ``spatial_dim`` out of range, the split size not divisible by the number of
        shards, an output that does not split into the input's blocks, or a halo
        larger than one block.
      TypeError: what `jaxconv.conv` raises, or a non-int ``spatial_dim``.

    Examples:
      A signal split over every device, its kernel of 5 taps needing 2 entries from
      each neighbour:

      >>> import jax, jax.numpy as jnp, jaxconv
      >>> n = len(jax.devices())
      >>> mesh = jax.make_mesh((n,), ("space",))
      >>> x = jnp.linspace(-1.0, 1.0, 2 * 8 * n).reshape(1, 2, 8 * n)
      >>> w = jnp.ones((3, 2, 5))
      >>> y = jaxconv.sharded_conv(x, w, padding="same", mesh=mesh, axis_name="space",
      ...                          spatial_dim=0)
      >>> y.shape == (1, 3, 8 * n), y.sharding.spec[-1]  # split like the input
      (True, 'space')
      >>> bool(jnp.allclose(y, jaxconv.conv(x, w, padding="same")))
      True
    """
    fname = "sharded_conv"
    with jax.named_scope(f"jaxconv.{fname}"):
        check_operands(fname, input, weight, bias)
        conv_plan = _spec.conv_plan(
            fname,
            input.shape,
            weight.shape,
            None if bias is None else bias.shape,
            stride,
            padding,
            dilation,
            groups,
            padding_mode=padding_mode,
            channels_last=channels_last,
            impl=impl,
            precision=precision,
        )
        spec = conv_plan.spec
        n = spec.ndim
        if not isinstance(mesh, Mesh):
            raise TypeError(f"{fname}: `mesh` (={mesh!r}) must be a jax.sharding.Mesh")
        if axis_name not in mesh.axis_names:
            raise ValueError(
                f"{fname}: `axis_name` (={axis_name!r}) must be one of the mesh's axes "
                f"{mesh.axis_names}"
            )
        if not _spec._is_int(spatial_dim):
            raise TypeError(f"{fname}: `spatial_dim` (={spatial_dim!r}) must be an int")
        if not -n <= spatial_dim < n:
            raise ValueError(
                f"{fname}: `spatial_dim` (={spatial_dim}) must be in [-{n}, {n}) for a "
                f"{n}-d convolution"
            )
        sd = spatial_dim % n
        axis = conv_plan.batch_ndim + (sd if channels_last else 1 + sd)
        shards = mesh.shape[axis_name]
        size = input.shape[axis]
        if size % shards:
            raise ValueError(
                f"{fname}: the input's spatial dim {sd} (size {size}) must divide evenly "
                f"over the {shards} shards of mesh axis {axis_name!r}"
            )
        block = size // shards
        pads = conv_plan.mode_padding or spec.padding
        lo, hi = pads[sd]
        k = weight.shape[sd] if channels_last else weight.shape[2 + sd]
        s, d = spec.stride[sd], spec.rhs_dilation[sd]
        out = (size + lo + hi - d * (k - 1) - 1) // s + 1
        if block % s or out * s != size:
            raise ValueError(
                f"{fname}: `padding` (={padding!r}) and `stride` (={stride!r}) give "
                f"{out} outputs along the split spatial dim {sd} of size {size}; it must "
                f"be size / stride with the block size ({block}) a multiple of the "
                "stride, so that the output splits into the input's blocks (use "
                '"same", "causal" or (lo, hi) with lo + hi = dilation * (kernel - 1))'
            )
        limit = block - 1 if padding_mode == "reflect" else block
        if max(lo, hi) > limit:
            rule = "smaller than" if padding_mode == "reflect" else "at most"
            raise ValueError(
                f"{fname}: `padding` (={padding!r}) resolves to (lo, hi) = {(lo, hi)} "
                f"along the split spatial dim {sd}; with padding_mode={padding_mode!r} "
                f"each must be {rule} one block ({block} = {size} / {shards} shards)"
            )
        plan = _ShardedPlan(
            mesh=mesh,
            axis_name=axis_name,
            axis=axis,
            halo=(lo, hi),
            local_padding=tuple((0, 0) if i == sd else p for i, p in enumerate(pads)),
            stride=spec.stride,
            dilation=spec.rhs_dilation,
            groups=spec.groups,
            padding_mode=padding_mode,
            channels_last=conv_plan.channels_last,
            impl=conv_plan.impl,
            precision=spec.precision,
            has_bias=bias is not None,
        )
        args = (input, weight) if bias is None else (input, weight, bias)
        return _run(*args, plan=plan)


@functools.partial(jax.jit, static_argnames=("plan",))
def _run(*args: jax.Array, plan: _ShardedPlan) -> jax.Array:
    split = PartitionSpec(*(None,) * plan.axis, plan.axis_name)
    in_specs = (split, *(PartitionSpec(),) * (len(args) - 1))
    if any(t == AxisType.Explicit for t in plan.mesh.axis_types):
        # Explicit axes: shard_map's in_specs must match the arrays' sharding types.
        args = tuple(
            jax.device_put(a, NamedSharding(plan.mesh, p))
            for a, p in zip(args, in_specs, strict=True)
        )
    body = functools.partial(_local_conv, plan=plan)
    return jax.shard_map(
        body,
        mesh=plan.mesh,
        in_specs=in_specs,
        out_specs=split,
        axis_names={plan.axis_name},
    )(*args)


def _local_conv(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, plan: _ShardedPlan):
    """One block: attach the halo (edge-padded on the edge blocks), then convolve."""
    lo, hi = plan.halo
    xh = halo_exchange(
        x, plan.axis_name, plan.halo, plan.axis, circular=plan.padding_mode == "circular"
    )
    if plan.padding_mode in ("reflect", "replicate"):
        # The global edges are padded from the edge blocks' own entries, not with zeros
        # (circular's other end came with the halo).
        widths = [(0, 0)] * x.ndim
        widths[plan.axis] = (lo, hi)
        own = jnp.pad(x, widths, mode=_NP_PAD_MODE[plan.padding_mode])
        i = jax.lax.axis_index(plan.axis_name)
        last = jax.lax.axis_size(plan.axis_name) - 1
        pos = jax.lax.broadcasted_iota(jnp.int32, xh.shape, plan.axis)
        at_edge = ((pos < lo) & (i == 0)) | ((pos >= xh.shape[plan.axis] - hi) & (i == last))
        xh = jnp.where(at_edge, own, xh)
    return conv(
        xh,
        w,
        b,
        plan.stride,
        plan.local_padding,
        plan.dilation,
        plan.groups,
        padding_mode=plan.padding_mode,
        channels_last=plan.channels_last,
        impl=plan.impl,
        precision=plan.precision,
    )
