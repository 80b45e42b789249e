"""The public convolutions, with `torch.nn.functional`'s signatures and results.

Each call validates its arguments into a `ConvPlan` (pure Python, before any
computation), then runs one jit-compiled function keyed on that plan: canonicalise the
layout, batch dims and padding mode, run the chosen algorithm, add the bias, restore the
layout.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from jaxconv import _autotune, _dispatch, _spec
from jaxconv._impls import FORWARDS
from jaxconv._impls._common import accumulation_dtype, flip_kernel

_NP_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def check_array(fname: str, arg: str, value, *, optional: bool = False):
    """`value` must be an array of a floating or complex dtype (or None if optional)."""
    if value is None and optional:
        return
    if isinstance(value, str) or not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise TypeError(
            f"{fname}: `{arg}` must be an array (jax.Array or numpy.ndarray), "
            f"got {type(value).__name__}"
        )
    if not jnp.issubdtype(value.dtype, jnp.inexact):
        raise TypeError(
            f"{fname}: `{arg}` has dtype {value.dtype}; convolutions take floating or "
            "complex arrays (cast integers explicitly)"
        )


def check_operands(fname: str, input, weight, bias):
    """The three arrays of a convolution; a complex bias needs a complex result."""
    check_array(fname, "input", input)
    check_array(fname, "weight", weight)
    check_array(fname, "bias", bias, optional=True)
    if (
        bias is not None
        and jnp.issubdtype(bias.dtype, jnp.complexfloating)
        and not any(jnp.issubdtype(a.dtype, jnp.complexfloating) for a in (input, weight))
    ):
        raise TypeError(
            f"{fname}: `bias` has dtype {bias.dtype}, but input ({input.dtype}) and "
            f"weight ({weight.dtype}) are real: the result would drop its imaginary part"
        )


# ----------------------------------------------------------------------------- layouts


def to_canonical_input(x: jax.Array, batch_ndim: int, channels_last: bool) -> jax.Array:
    """(*B, C, *S) or (*B, *S, C) -> (N, C, *S) with N = prod(B)."""
    x = x.reshape((math.prod(x.shape[:batch_ndim]), *x.shape[batch_ndim:]))
    return jnp.moveaxis(x, -1, 1) if channels_last else x


def from_canonical_output(y: jax.Array, batch_shape, channels_last: bool) -> jax.Array:
    """(N, C, *S) -> (*B, C, *S) or (*B, *S, C)."""
    if channels_last:
        y = jnp.moveaxis(y, 1, -1)
    return y.reshape((*batch_shape, *y.shape[1:]))


def to_canonical_weight(w: jax.Array, channels_last: bool) -> jax.Array:
    """Channels-last weight ``(*K, B, A)`` -> channels-first ``(A, B, *K)``."""
    if not channels_last:
        return w
    n = w.ndim - 2
    return jnp.transpose(w, (n + 1, n, *range(n)))


@functools.partial(jax.jit, static_argnames=("plan",))
def _run(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: _spec.ConvPlan) -> jax.Array:
    with jax.named_scope(f"jaxconv.{plan.name}"):
        mesh = _explicit_mesh(x, w, b)
        if mesh is None:
            return _body(x, w, b, plan)
        # Explicit sharding axes type every intermediate, and layout reshapes have no
        # sharding rule: run the body under automatic (GSPMD) partitioning instead, and
        # keep the output split the way the input and weight were where it divides.
        out = NamedSharding(mesh, _output_spec(x, w, plan, mesh))
        body = functools.partial(_body, plan=plan)
        return jax.sharding.auto_axes(body, axes=mesh.explicit_axes, out_sharding=out)(x, w, b)


def _explicit_mesh(*arrays):
    """The abstract mesh of the first argument sharded over `Explicit` axes, or None."""
    for a in arrays:
        if a is None:
            continue
        sharding = getattr(jax.typeof(a), "sharding", None)
        mesh = getattr(sharding, "mesh", None)
        if mesh is not None and not mesh.empty and mesh.explicit_axes:
            return mesh
    return None


def _output_spec(x, w, plan: _spec.ConvPlan, mesh) -> PartitionSpec:
    """The output's partition: batch and spatial dims as the input's, channels as the
    weight's output channels, wherever the output's size divides by the axes' size."""
    n = plan.spec.ndim
    x_spec, w_spec = _padded_spec(x), _padded_spec(w)
    batch, rest = x_spec[: plan.batch_ndim], x_spec[plan.batch_ndim :]
    spatial = rest[:n] if plan.channels_last else rest[1:]
    # A forward weight's output channels: dim 0, or the last with channels_last.
    channel = None if plan.transpose else w_spec[-1 if plan.channels_last else 0]
    entries = (*batch, *spatial, channel) if plan.channels_last else (*batch, channel, *spatial)
    return PartitionSpec(
        *(
            e if e is None or size % _axes_size(mesh, e) == 0 else None
            for e, size in zip(entries, plan.out_shape, strict=True)
        )
    )


def _padded_spec(a) -> tuple:
    spec = tuple(jax.typeof(a).sharding.spec)
    return spec + (None,) * (a.ndim - len(spec))


def _axes_size(mesh, entry) -> int:
    names = entry if isinstance(entry, tuple) else (entry,)
    return math.prod(mesh.shape[name] for name in names)


def _body(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: _spec.ConvPlan) -> jax.Array:
    with jax.numpy_dtype_promotion("standard"):  # the contract's dtype, whatever the config
        dtype = jnp.result_type(x.dtype, w.dtype)
    batch_shape = x.shape[: plan.batch_ndim]
    x = to_canonical_input(x.astype(dtype), plan.batch_ndim, plan.channels_last)
    w = to_canonical_weight(w.astype(dtype), plan.channels_last)
    if plan.transpose:
        w = flip_kernel(w, plan.spec.groups)
    if plan.mode_padding is not None:
        x = jnp.pad(x, ((0, 0), (0, 0), *plan.mode_padding), _NP_PAD_MODE[plan.padding_mode])
    if plan.impl == "auto":
        forward = _dispatch.forward
    elif plan.impl == "autotune":
        forward = _autotune.forward
    else:
        forward = FORWARDS[plan.impl]
    y = forward(x, w, plan.spec)
    if b is not None:
        # Half precision: the sum (and so the bias gradient, a sum over every output
        # position) in float32, rounded once, as PyTorch does.
        acc = accumulation_dtype(dtype) or dtype
        bias = b.astype(acc).reshape((1, -1) + (1,) * plan.spec.ndim)
        y = (y.astype(acc) + bias).astype(dtype)
    return from_canonical_output(y, batch_shape, plan.channels_last)


# ----------------------------------------------------------------------------- plans

PLAN_CACHE_SIZE = 4096


# Argument values a plan is cached for: immutable scalars whose equality is their value.
_PLAIN = (int, float, str, type(None), np.integer, np.floating, np.bool_, jax.lax.Precision)
# Nesting of tuples and lists a key follows (`padding` pairs inside the call's arguments).
_KEY_DEPTH = 4


def _typed(value, depth: int = _KEY_DEPTH):
    """`value` with the type of each element beside it, a key under which ``True`` and
    ``1``, ``1.0`` and ``1``, ``(1, 1)`` and ``[1, 1]`` differ; None where an element is
    not a plain scalar (`_PLAIN`) or tuples and lists nest too deep."""
    if isinstance(value, (tuple, list)):
        if depth == 0:
            return None
        items = tuple(_typed(v, depth - 1) for v in value)
        return None if None in items else (type(value), items)
    return (type(value), value) if isinstance(value, _PLAIN) else None


_PLANS: dict = {}


def cached_plan(builder, *args, **kwargs) -> _spec.ConvPlan:
    """``builder(*args, **kwargs)`` (`_spec.conv_plan` or `_spec.transpose_plan`), cached
    on the arguments' values and types: a call with the arguments of an earlier one
    skips building and validating its plan (about 14 us of the 40 an eager call takes
    on the CPU; the operands' own checks still run). A rejected call raises every time
    (an exception is not cached), and a call with any argument other than plain
    scalars in tuples and lists (an array, a sequence of another type) is planned
    afresh."""
    key = _typed((args, tuple(sorted(kwargs.items()))))
    if key is None:
        return builder(*args, **kwargs)
    key = (builder, key)
    plan = _PLANS.get(key)
    if plan is None:
        plan = builder(*args, **kwargs)
        if len(_PLANS) >= PLAN_CACHE_SIZE:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


# ----------------------------------------------------------------------------- public


def conv(
    input: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    *,
    padding_mode: str = "zeros",
    channels_last: bool = False,
    impl: str = "auto",
    precision=None,
) -> jax.Array:
    """N-d convolution (cross-correlation), as `torch.nn.functional.conv{1,2,3}d`.

    The number of spatial dims is ``weight.ndim - 2``.

    Args:
      input: ``(*B, C_in, *S)``, any number of leading batch dims (none included);
        ``(*B, *S, C_in)`` with ``channels_last``.
      weight: ``(C_out, C_in / groups, *K)``; ``(*K, C_in / groups, C_out)`` with
        ``channels_last`` (lax's HWIO, flax's kernel).
      bias: ``(C_out,)`` or None.
      stride: int or one int per spatial dim.
      padding: int; one int per dim; one ``(lo, hi)`` pair per dim; or one of
        ``"valid"``, ``"same"`` (total ``d*(k-1)``, the odd one high, any stride),
        ``"same_lower"``, ``"tf_same"`` (XLA's ``'SAME'``), ``"causal"``, ``"full"``.
      dilation: int or one int per spatial dim.
      groups: splits input and output channels into this many independent groups.
      padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
      channels_last: channels as the last dim of input, output and weight layouts.
      impl: ``"auto"`` (measured rules), ``"autotune"`` (measured here, once per
        signature, cached on disk: `jaxconv._autotune`) or a name in `jaxconv.IMPLS`.
      precision: None or a `jax.lax.Precision` (or its name), passed to every dot.

    Returns:
      ``(*B, C_out, *S_out)`` (``(*B, *S_out, C_out)`` with ``channels_last``) of dtype
      ``jnp.result_type(input, weight)``, where each ``S_out`` is
      ``floor((n + lo + hi - d*(k-1) - 1) / s) + 1``.

    Raises:
      ValueError: a bad value or shape relation (see `jaxconv.output_shape`).
      TypeError: a non-array or integer input, or a non-int config value.

    Examples:
      >>> import jax.numpy as jnp, jaxconv
      >>> x = jnp.ones((1, 2, 5, 5, 5))
      >>> w = jnp.ones((4, 2, 3, 3, 3))
      >>> jaxconv.conv(x, w, padding="same").shape
      (1, 4, 5, 5, 5)
    """
    return _conv(
        "conv",
        None,
        input,
        weight,
        bias,
        stride,
        padding,
        dilation,
        groups,
        padding_mode,
        channels_last,
        impl,
        precision,
    )


def conv_transpose(
    input: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
    *,
    channels_last: bool = False,
    impl: str = "auto",
    precision=None,
) -> jax.Array:
    """N-d transposed convolution, as `torch.nn.functional.conv_transpose{1,2,3}d`.

    The exact adjoint (vector-Jacobian product with respect to the input) of `conv`
    with the same ``stride``, ``padding``, ``dilation`` and ``groups``.

    Args:
      input: ``(*B, C_in, *S)``; ``(*B, *S, C_in)`` with ``channels_last``.
      weight: ``(C_in, C_out / groups, *K)``; ``(*K, C_out / groups, C_in)`` with
        ``channels_last``.
      bias: ``(C_out,)`` or None.
      stride: int or one int per spatial dim.
      padding: int or one int per dim: ``d*(k-1) - padding`` of the full output is
        dropped on each side, PyTorch's meaning.
      output_padding: int or one int per dim, added on the high side; smaller than
        either stride or dilation.
      groups: splits input and output channels into this many independent groups.
      dilation: int or one int per spatial dim.
      channels_last: channels as the last dim of input, output and weight layouts.
      impl: ``"auto"`` (measured rules), ``"autotune"`` (measured here, once per
        signature, cached on disk: `jaxconv._autotune`) or a name in `jaxconv.IMPLS`.
      precision: None or a `jax.lax.Precision` (or its name), passed to every dot.

    Returns:
      ``(*B, C_out, *S_out)`` (``(*B, *S_out, C_out)`` with ``channels_last``), each
      ``S_out = (n - 1)*s - 2*padding + d*(k - 1) + output_padding + 1``.

    Raises:
      ValueError: a bad value or shape relation (see `jaxconv.transpose_output_shape`).
      TypeError: a non-array or integer input, a string padding, or a non-int value.

    Examples:
      >>> import jax.numpy as jnp, jaxconv
      >>> x = jnp.ones((1, 4, 3, 3, 3))
      >>> w = jnp.ones((4, 2, 2, 2, 2))
      >>> jaxconv.conv_transpose(x, w, stride=2).shape
      (1, 2, 6, 6, 6)
    """
    return _conv_transpose(
        "conv_transpose",
        None,
        input,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
        channels_last,
        impl,
        precision,
    )


def _conv(
    fname,
    ndim,
    input,
    weight,
    bias,
    stride,
    padding,
    dilation,
    groups,
    padding_mode,
    channels_last,
    impl,
    precision,
):
    check_operands(fname, input, weight, bias)
    plan = cached_plan(
        _spec.conv_plan,
        fname,
        input.shape,
        weight.shape,
        None if bias is None else bias.shape,
        stride,
        padding,
        dilation,
        groups,
        ndim=ndim,
        padding_mode=padding_mode,
        channels_last=channels_last,
        impl=impl,
        precision=precision,
    )
    return _run(input, weight, bias, plan=plan)


def _conv_transpose(
    fname,
    ndim,
    input,
    weight,
    bias,
    stride,
    padding,
    output_padding,
    groups,
    dilation,
    channels_last,
    impl,
    precision,
):
    check_operands(fname, input, weight, bias)
    plan = cached_plan(
        _spec.transpose_plan,
        fname,
        input.shape,
        weight.shape,
        None if bias is None else bias.shape,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
        ndim=ndim,
        channels_last=channels_last,
        impl=impl,
        precision=precision,
    )
    return _run(input, weight, bias, plan=plan)


def conv1d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    *,
    padding_mode="zeros",
    channels_last=False,
    impl="auto",
    precision=None,
):
    return _conv(
        "conv1d",
        1,
        input,
        weight,
        bias,
        stride,
        padding,
        dilation,
        groups,
        padding_mode,
        channels_last,
        impl,
        precision,
    )


def conv2d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    *,
    padding_mode="zeros",
    channels_last=False,
    impl="auto",
    precision=None,
):
    return _conv(
        "conv2d",
        2,
        input,
        weight,
        bias,
        stride,
        padding,
        dilation,
        groups,
        padding_mode,
        channels_last,
        impl,
        precision,
    )


def conv3d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    *,
    padding_mode="zeros",
    channels_last=False,
    impl="auto",
    precision=None,
):
    return _conv(
        "conv3d",
        3,
        input,
        weight,
        bias,
        stride,
        padding,
        dilation,
        groups,
        padding_mode,
        channels_last,
        impl,
        precision,
    )


def conv_transpose1d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
    *,
    channels_last=False,
    impl="auto",
    precision=None,
):
    return _conv_transpose(
        "conv_transpose1d",
        1,
        input,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
        channels_last,
        impl,
        precision,
    )


def conv_transpose2d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
    *,
    channels_last=False,
    impl="auto",
    precision=None,
):
    return _conv_transpose(
        "conv_transpose2d",
        2,
        input,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
        channels_last,
        impl,
        precision,
    )


def conv_transpose3d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
    *,
    channels_last=False,
    impl="auto",
    precision=None,
):
    return _conv_transpose(
        "conv_transpose3d",
        3,
        input,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
        channels_last,
        impl,
        precision,
    )


_FIXED_DOC = """{n}-d convolution (cross-correlation), as `torch.nn.functional.conv{n}d`.

    `jaxconv.conv` restricted to weights with {n} kernel dims; see it for every argument.

    Args:
      input: ``(*B, C_in, {s})``, e.g. PyTorch's ``(N, C_in, {s})`` or unbatched
        ``(C_in, {s})``; ``(*B, {s}, C_in)`` with ``channels_last``.
      weight: ``(C_out, C_in / groups, {k})``; ``({k}, C_in / groups, C_out)`` with
        ``channels_last``.
      bias: ``(C_out,)`` or None.
      stride: int or {n} ints.
      padding: int, {n} ints, {n} ``(lo, hi)`` pairs, or a string (``"valid"``,
        ``"same"``, ``"same_lower"``, ``"tf_same"``, ``"causal"``, ``"full"``).
      dilation: int or {n} ints.
      groups: number of channel groups; divides ``C_in`` and ``C_out``.
      padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
      channels_last: channels as the last dim of input, output and weight layouts.
      impl: ``"auto"`` (measured rules), ``"autotune"`` (measured here, once per
        signature, cached on disk: `jaxconv._autotune`) or a name in `jaxconv.IMPLS`.
      precision: None or a `jax.lax.Precision` (or its name).

    Returns:
      ``(*B, C_out, {so})`` (``(*B, {so}, C_out)`` with ``channels_last``).

    Raises:
      ValueError: a bad value or shape relation.
      TypeError: a non-array or integer input, or a non-int config value.

    Examples:
      >>> import jax.numpy as jnp, jaxconv
      >>> x = jnp.ones({xs})
      >>> w = jnp.ones({ws})
      >>> jaxconv.conv{n}d(x, w, stride=2, padding=1).shape
      {ys}
"""

_TRANSPOSE_DOC = """{n}-d transposed convolution, as `torch.nn.functional.conv_transpose{n}d`.

    `jaxconv.conv_transpose` restricted to weights with {n} kernel dims; the adjoint of
    `jaxconv.conv{n}d` with the same stride, padding, dilation and groups.

    Args:
      input: ``(*B, C_in, {s})``; ``(*B, {s}, C_in)`` with ``channels_last``.
      weight: ``(C_in, C_out / groups, {k})``; ``({k}, C_out / groups, C_in)`` with
        ``channels_last``.
      bias: ``(C_out,)`` or None.
      stride: int or {n} ints.
      padding: int or {n} ints (PyTorch's meaning).
      output_padding: int or {n} ints, smaller than either stride or dilation.
      groups: number of channel groups; divides ``C_in`` and ``C_out``.
      dilation: int or {n} ints.
      channels_last: channels as the last dim of input, output and weight layouts.
      impl: ``"auto"`` (measured rules), ``"autotune"`` (measured here, once per
        signature, cached on disk: `jaxconv._autotune`) or a name in `jaxconv.IMPLS`.
      precision: None or a `jax.lax.Precision` (or its name).

    Returns:
      ``(*B, C_out, {so})``, each ``(n - 1)*s - 2*padding + d*(k - 1) +
      output_padding + 1``.

    Raises:
      ValueError: a bad value or shape relation.
      TypeError: a non-array or integer input, a string padding, or a non-int value.

    Examples:
      >>> import jax.numpy as jnp, jaxconv
      >>> x = jnp.ones({ys})
      >>> w = jnp.ones({wt})
      >>> jaxconv.conv_transpose{n}d(x, w, stride=2, padding=1, output_padding=1).shape
      {xs}
"""


def _fill_docs():
    names = {
        1: ("L", "kL", "L_out"),
        2: ("H, W", "kH, kW", "H_out, W_out"),
        3: ("D, H, W", "kD, kH, kW", "D_out, H_out, W_out"),
    }
    for n, (s, k, so) in names.items():
        xs = (1, 2) + (8,) * n
        ys = (1, 4) + (4,) * n
        fmt = dict(n=n, s=s, k=k, so=so, xs=xs, ys=ys, ws=(4, 2) + (3,) * n, wt=(4, 2) + (3,) * n)
        globals()[f"conv{n}d"].__doc__ = _FIXED_DOC.format(**fmt)
        globals()[f"conv_transpose{n}d"].__doc__ = _TRANSPOSE_DOC.format(**fmt)


_fill_docs()
