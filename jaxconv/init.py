"""PyTorch's default initialisation of convolution layers, in jaxconv's layouts.

``torch.nn.Conv*d`` and ``torch.nn.ConvTranspose*d`` draw their weight with
``kaiming_uniform_(a=sqrt(5))`` and their bias uniformly, both in
``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (the gain ``sqrt(2 / (1 + 5))`` times
``sqrt(3) / sqrt(fan_in)`` is ``1/sqrt(fan_in)``). ``fan_in`` is what PyTorch's
``_calculate_fan_in_and_fan_out`` reads off the weight tensor: ``weight.size(1) *
prod(kernel)``. For a convolution that is ``in_channels / groups * prod(K)``; a
transposed convolution's weight is ``(in_channels, out_channels / groups, *K)``, so its
fan_in is ``out_channels / groups * prod(K)``.

The distribution is PyTorch's; the numbers are not (JAX and PyTorch have different
random generators).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxconv import _spec


def _check_channels(fname: str, arg: str, value) -> int:
    if not _spec._is_int(value):
        raise TypeError(f"{fname}: `{arg}` (={value!r}) must be an int")
    if value < 1:
        raise ValueError(f"{fname}: `{arg}` (={value}) must be positive")
    return int(value)


@functools.partial(jax.jit, static_argnames=("size", "dtype"))
def _uniform(key, bound, size, dtype):
    # Flat: XLA:CPU compiles jax 0.10's N-d threefry draw several times slower, and one
    # compiled draw then serves every shape, layout and fan_in of this size.
    return jax.random.uniform(key, (size,), dtype, -bound, bound)


def init_conv(
    key: jax.Array,
    in_channels: int,
    out_channels: int,
    kernel_size,
    groups: int = 1,
    *,
    bias: bool = True,
    transpose: bool = False,
    channels_last: bool = False,
    dtype=jnp.float32,
    ndim: int | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """The weight and bias PyTorch's ``nn.Conv*d`` / ``nn.ConvTranspose*d`` draw by default.

    Both are uniform in ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``, with ``fan_in =
    in_channels / groups * prod(kernel_size)`` for a convolution and ``out_channels /
    groups * prod(kernel_size)`` for a transposed one (PyTorch's rule: the weight's second
    dim times the kernel size).

    The number of spatial dims is ``ndim`` if given, else the length of ``kernel_size``
    if it is a sequence, else 1: an int ``kernel_size`` alone means a 1-d kernel (unlike
    ``nn.Conv2d(c_in, c_out, 3)``, where the class fixes the rank), so write
    ``kernel_size=(3, 3)`` or ``ndim=2`` for a 2-d one.

    A pure function of ``key``: the weight is drawn channels-first and then moved to the
    channels-last layout, so both layouts hold the same numbers from the same key.

    Args:
      key: a JAX random key (``jax.random.key`` or ``jax.random.PRNGKey``).
      in_channels: the layer's input channels.
      out_channels: the layer's output channels.
      kernel_size: int or one int per spatial dim.
      groups: must divide both channel counts.
      bias: whether to draw a bias.
      transpose: draw for `jaxconv.conv_transpose` instead of `jaxconv.conv`.
      channels_last: return the weight in the channels-last layout.
      dtype: a floating dtype.
      ndim: the number of spatial dims; needed when ``kernel_size`` is an int meant for
        more than one.

    Returns:
      ``(weight, bias)``. ``weight`` is ``(out_channels, in_channels / groups, *K)``
      (``(*K, in_channels / groups, out_channels)`` with ``channels_last``); transposed,
      ``(in_channels, out_channels / groups, *K)`` (``(*K, out_channels / groups,
      in_channels)``). ``bias`` is ``(out_channels,)``, or None if ``bias`` is False.

    Raises:
      ValueError: non-positive channels, kernel size, groups or ndim, ``groups`` not
        dividing the channels, or a ``kernel_size`` of the wrong length.
      TypeError: a non-int count, a non-bool flag, a non-floating ``dtype`` or a
        ``key`` that is not a JAX random key.

    Examples:
      ``nn.Conv2d(16, 32, 3)``:

      >>> import jax, jaxconv
      >>> w, b = jaxconv.init_conv(jax.random.key(0), 16, 32, (3, 3))
      >>> w.shape, b.shape
      ((32, 16, 3, 3), (32,))
      >>> bound = 1 / (16 * 3 * 3) ** 0.5
      >>> bool(abs(w).max() <= bound) and bool(abs(b).max() <= bound)
      True

      ``nn.ConvTranspose2d(16, 32, 4, groups=2)`` in the channels-last layout:

      >>> w, b = jaxconv.init_conv(
      ...     jax.random.key(0), 16, 32, 4, groups=2, transpose=True, channels_last=True, ndim=2
      ... )
      >>> w.shape
      (4, 4, 16, 16)
    """
    fname = "init_conv"
    in_channels = _check_channels(fname, "in_channels", in_channels)
    out_channels = _check_channels(fname, "out_channels", out_channels)
    groups = _spec._check_groups(fname, groups)
    bias = _spec._check_bool(fname, "bias", bias)
    transpose = _spec._check_bool(fname, "transpose", transpose)
    channels_last = _spec._check_bool(fname, "channels_last", channels_last)
    if ndim is None:
        if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str):
            ndim = len(kernel_size)
            if ndim == 0:
                raise ValueError(f"{fname}: `kernel_size` (={kernel_size!r}) must not be empty")
        else:
            ndim = 1
    else:
        ndim = _check_channels(fname, "ndim", ndim)
    kernel = _spec.ntuple(fname, "kernel_size", kernel_size, ndim, minimum=1)
    for arg, c in (("in_channels", in_channels), ("out_channels", out_channels)):
        if c % groups:
            raise ValueError(f"{fname}: `groups` (={groups}) must divide {arg} (={c})")
    if not (
        isinstance(key, jax.Array)
        and (
            (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ())
            or (key.dtype == jnp.uint32 and key.shape == (2,))
        )
    ):
        got = type(key).__name__
        if hasattr(key, "shape") and hasattr(key, "dtype"):
            got = f"{got} of shape {key.shape} and dtype {key.dtype}"
        raise TypeError(
            f"{fname}: `key` must be one JAX random key, from jax.random.key or "
            f"jax.random.PRNGKey, got {got}"
        )
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{fname}: `dtype` (={dtype!r}) must be a floating dtype")
    if transpose:
        shape = (in_channels, out_channels // groups, *kernel)
    else:
        shape = (out_channels, in_channels // groups, *kernel)
    fan_in = shape[1] * math.prod(kernel)
    with jax.named_scope("jaxconv.init_conv"):
        # Weight and bias share one bound, so one draw serves both; the bias is always
        # drawn, so the weight does not depend on `bias`.
        size = math.prod(shape)
        values = _uniform(key, 1 / math.sqrt(fan_in), size + out_channels, dt)
        weight = values[:size].reshape(shape)
        if channels_last:
            weight = jnp.transpose(weight, (*range(2, ndim + 2), 1, 0))
        return weight, values[size:] if bias else None
