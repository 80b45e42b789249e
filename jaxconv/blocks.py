"""The notes' building blocks: 2-D cross-correlation with one or many channels.

Channels-first, unbatched, no padding, stride 1, exactly as the notes define them:
``corr2d`` correlates one channel, ``corr2d_multi_in`` sums that over input channels,
``corr2d_multi_in_out`` stacks it over output channels (`jax.vmap`), and
``corr2d_multi_in_out_1x1`` computes a 1x1 convolution as one matrix product. Every
product runs at `jax.lax.Precision.HIGHEST`, so results are exact where the inputs are.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxconv.functional import check_array

_HIGHEST = lax.Precision.HIGHEST


# ----------------------------------------------------------------------------- checks


def _check_rank(fname: str, arg: str, value, ndim: int, layout: str) -> None:
    check_array(fname, arg, value)
    if value.ndim != ndim:
        raise ValueError(
            f"{fname}: `{arg}` (shape {tuple(value.shape)}) must have {ndim} dims, {layout}"
        )


def _check_kernel_fits(fname: str, X, K) -> None:
    kh, kw = K.shape[-2:]
    if kh < 1 or kw < 1:
        raise ValueError(f"{fname}: `K` (shape {tuple(K.shape)}) has an empty kernel dim")
    if kh > X.shape[-2] or kw > X.shape[-1]:
        raise ValueError(
            f"{fname}: `K` (shape {tuple(K.shape)}) must be no larger than `X` "
            f"(shape {tuple(X.shape)}) in its last two dims"
        )


def _check_channels(fname: str, X, K, k_axis: int) -> None:
    if K.shape[k_axis] != X.shape[0]:
        raise ValueError(
            f"{fname}: `K` (shape {tuple(K.shape)}) must have as many channels as `X` "
            f"(shape {tuple(X.shape)})"
        )


def _common_dtype(X, K):
    # Mixed dtypes promote (the result is the wider one) even under strict promotion.
    with jax.numpy_dtype_promotion("standard"):
        dtype = jax.dtypes.canonicalize_dtype(jnp.promote_types(X.dtype, K.dtype))
    return jnp.asarray(X).astype(dtype), jnp.asarray(K).astype(dtype)


# ----------------------------------------------------------------------------- bodies


def _multi_in(X: jax.Array, K: jax.Array) -> jax.Array:
    """(C, H, W), (C, kh, kw) -> (H - kh + 1, W - kw + 1), summed over C."""
    c, h, w = X.shape
    kh, kw = K.shape[1:]
    oh, ow = h - kh + 1, w - kw + 1
    # (C, kh * kw, oh, ow): the window of X each kernel tap multiplies.
    windows = jnp.stack(
        [lax.slice(X, (0, i, j), (c, i + oh, j + ow)) for i in range(kh) for j in range(kw)],
        axis=1,
    )
    return jnp.einsum("cthw,ct->hw", windows, K.reshape((c, kh * kw)), precision=_HIGHEST)


@jax.jit
def _corr2d(X: jax.Array, K: jax.Array) -> jax.Array:
    with jax.named_scope("jaxconv.corr2d"):
        return _multi_in(X[None], K[None])


@jax.jit
def _corr2d_multi_in(X: jax.Array, K: jax.Array) -> jax.Array:
    with jax.named_scope("jaxconv.corr2d_multi_in"):
        return _multi_in(X, K)


@jax.jit
def _corr2d_multi_in_out(X: jax.Array, K: jax.Array) -> jax.Array:
    with jax.named_scope("jaxconv.corr2d_multi_in_out"):
        return jax.vmap(_multi_in, in_axes=(None, 0))(X, K)


@jax.jit
def _corr2d_multi_in_out_1x1(X: jax.Array, K: jax.Array) -> jax.Array:
    with jax.named_scope("jaxconv.corr2d_multi_in_out_1x1"):
        c, h, w = X.shape
        o = K.shape[0]
        Y = jnp.matmul(K.reshape((o, c)), X.reshape((c, h * w)), precision=_HIGHEST)
        return Y.reshape((o, h, w))


# ----------------------------------------------------------------------------- public


def corr2d(X: ArrayLike, K: ArrayLike) -> jax.Array:
    """2-D cross-correlation of one channel, no padding, stride 1 (the notes' ``corr2d``).

    Args:
      X: ``(H, W)``, floating or complex.
      K: ``(kh, kw)`` with ``kh <= H`` and ``kw <= W``.

    Returns:
      ``(H - kh + 1, W - kw + 1)``: ``Y[i, j] = sum(X[i:i+kh, j:j+kw] * K)``, of dtype
      ``jnp.promote_types(X.dtype, K.dtype)``.

    Raises:
      TypeError: a non-array or an integer/bool array.
      ValueError: a wrong rank, an empty kernel or a kernel larger than the input.

    Examples:
      >>> import jax.numpy as jnp, jaxconv
      >>> X = jnp.array([[0., 1., 2.], [3., 4., 5.], [6., 7., 8.]])
      >>> K = jnp.array([[0., 1.], [2., 3.]])
      >>> jaxconv.corr2d(X, K).tolist()
      [[19.0, 25.0], [37.0, 43.0]]
    """
    _check_rank("corr2d", "X", X, 2, "(H, W)")
    _check_rank("corr2d", "K", K, 2, "(kh, kw)")
    _check_kernel_fits("corr2d", X, K)
    return _corr2d(*_common_dtype(X, K))


def corr2d_multi_in(X: ArrayLike, K: ArrayLike) -> jax.Array:
    """Multi-input-channel 2-D cross-correlation: `corr2d` per channel, summed.

    Args:
      X: ``(C, H, W)``, floating or complex.
      K: ``(C, kh, kw)``, one 2-D kernel per input channel.

    Returns:
      ``(H - kh + 1, W - kw + 1)``, the sum over ``C`` of ``corr2d(X[c], K[c])``.

    Raises:
      TypeError: a non-array or an integer/bool array.
      ValueError: a wrong rank, mismatched channels, an empty kernel or a kernel larger
        than the input.

    Examples:
      The notes' worked example:

      >>> import jax.numpy as jnp, jaxconv
      >>> X = jnp.array([[[0., 1., 2.], [3., 4., 5.], [6., 7., 8.]],
      ...                [[1., 2., 3.], [4., 5., 6.], [7., 8., 9.]]])
      >>> K = jnp.array([[[0., 1.], [2., 3.]], [[1., 2.], [3., 4.]]])
      >>> jaxconv.corr2d_multi_in(X, K).tolist()
      [[56.0, 72.0], [104.0, 120.0]]
    """
    fname = "corr2d_multi_in"
    _check_rank(fname, "X", X, 3, "(C, H, W)")
    _check_rank(fname, "K", K, 3, "(C, kh, kw)")
    _check_channels(fname, X, K, 0)
    _check_kernel_fits(fname, X, K)
    return _corr2d_multi_in(*_common_dtype(X, K))


def corr2d_multi_in_out(X: ArrayLike, K: ArrayLike) -> jax.Array:
    """Multi-input, multi-output-channel 2-D cross-correlation.

    One `corr2d_multi_in` per output channel, stacked: `jax.vmap` over the first dim
    of ``K``.

    Args:
      X: ``(C, H, W)``, floating or complex.
      K: ``(O, C, kh, kw)``, one 3-D kernel per output channel.

    Returns:
      ``(O, H - kh + 1, W - kw + 1)``.

    Raises:
      TypeError: a non-array or an integer/bool array.
      ValueError: a wrong rank, mismatched channels, an empty kernel or a kernel larger
        than the input.

    Examples:
      The notes' worked example, three output channels:

      >>> import jax.numpy as jnp, jaxconv
      >>> X = jnp.array([[[0., 1., 2.], [3., 4., 5.], [6., 7., 8.]],
      ...                [[1., 2., 3.], [4., 5., 6.], [7., 8., 9.]]])
      >>> K = jnp.array([[[0., 1.], [2., 3.]], [[1., 2.], [3., 4.]]])
      >>> K3 = jnp.stack([K, K + 1, K + 2])
      >>> K3.shape
      (3, 2, 2, 2)
      >>> jaxconv.corr2d_multi_in_out(X, K3).tolist()  # doctest: +NORMALIZE_WHITESPACE
      [[[56.0, 72.0], [104.0, 120.0]],
       [[76.0, 100.0], [148.0, 172.0]],
       [[96.0, 128.0], [192.0, 224.0]]]
    """
    fname = "corr2d_multi_in_out"
    _check_rank(fname, "X", X, 3, "(C, H, W)")
    _check_rank(fname, "K", K, 4, "(O, C, kh, kw)")
    _check_channels(fname, X, K, 1)
    _check_kernel_fits(fname, X, K)
    return _corr2d_multi_in_out(*_common_dtype(X, K))


def corr2d_multi_in_out_1x1(X: ArrayLike, K: ArrayLike) -> jax.Array:
    """A 1x1 convolution as one matrix product: a dense layer over channels.

    ``X`` is reshaped to ``(C, H * W)``, ``K`` to ``(O, C)``, and ``K @ X`` is reshaped
    back to ``(O, H, W)``: the same result as `corr2d_multi_in_out` with a 1x1 kernel.

    Args:
      X: ``(C, H, W)``, floating or complex.
      K: ``(O, C, 1, 1)``.

    Returns:
      ``(O, H, W)``.

    Raises:
      TypeError: a non-array or an integer/bool array.
      ValueError: a wrong rank, mismatched channels or a kernel that is not 1x1.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxconv
      >>> kx, kk = jax.random.split(jax.random.key(0))
      >>> X = jax.random.normal(kx, (3, 3, 3))
      >>> K = jax.random.normal(kk, (2, 3, 1, 1))
      >>> Y1 = jaxconv.corr2d_multi_in_out_1x1(X, K)
      >>> Y2 = jaxconv.corr2d_multi_in_out(X, K)
      >>> Y1.shape
      (2, 3, 3)
      >>> float(abs(Y1 - Y2).sum()) < 1e-6
      True
    """
    fname = "corr2d_multi_in_out_1x1"
    _check_rank(fname, "X", X, 3, "(C, H, W)")
    _check_rank(fname, "K", K, 4, "(O, C, 1, 1)")
    _check_channels(fname, X, K, 1)
    if K.shape[2:] != (1, 1):
        raise ValueError(
            f"{fname}: `K` (shape {tuple(K.shape)}) must be a 1x1 kernel, (O, C, 1, 1)"
        )
    return _corr2d_multi_in_out_1x1(*_common_dtype(X, K))
