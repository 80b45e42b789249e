"""Two convolutions with nothing between them are one convolution (the notes' exercise).

Correlating ``x`` with ``w1`` and then with ``w2`` (stride 1, dilation 1, groups 1, no
padding) sums ``x[i, q + a + b] * w1[m, i, a] * w2[o, m, b]`` over ``i, m, a, b``, so
it is one correlation with

    w[o, i, t] = sum_m sum_{a + b = t} w1[m, i, a] * w2[o, m, b],

the full convolution of the two kernels over their taps, contracted over the middle
channels, of size ``k1 + k2 - 1``. The first bias passes through the second kernel:
``b = b2 + sum_{m, taps} w2[o, m, :] * b1[m]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxconv.functional import check_array


@jax.jit
def _compose(w1: jax.Array, w2: jax.Array, b1: jax.Array | None, b2: jax.Array | None):
    with jax.named_scope("jaxconv.compose_kernels"):
        with jax.numpy_dtype_promotion("standard"):  # jaxconv.conv's dtype rule
            dtype = jnp.result_type(*(a.dtype for a in (w1, w2, b1, b2) if a is not None))
        w1 = w1.astype(dtype)
        w2 = w2.astype(dtype)
        n = w1.ndim - 2
        k2 = w2.shape[2:]
        # w1 as a batch of C_in signals with C_mid channels, correlated with the flipped
        # w2 (C_out, C_mid, *K2) under full padding: that is the convolution over taps.
        w = lax.conv_general_dilated(
            jnp.swapaxes(w1, 0, 1),
            jnp.flip(w2, axis=tuple(range(2, w2.ndim))),
            window_strides=(1,) * n,
            padding=[(k - 1, k - 1) for k in k2],
            precision=lax.Precision.HIGHEST,
        )
        w = jnp.swapaxes(w, 0, 1)
        if b1 is None and b2 is None:
            return w, None
        b = jnp.zeros((w2.shape[0],), dtype)
        if b1 is not None:
            taps = jnp.sum(w2, axis=tuple(range(2, w2.ndim)))
            b = b + jnp.matmul(taps, b1.astype(dtype), precision=lax.Precision.HIGHEST)
        if b2 is not None:
            b = b + b2.astype(dtype)
        return w, b


def compose_kernels(
    w1: ArrayLike,
    w2: ArrayLike,
    b1: ArrayLike | None = None,
    b2: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """The one convolution equal to two in a row: ``conv(conv(x, w1, b1), w2, b2)``.

    Holds for stride 1, dilation 1, groups 1 and no padding, in any number of spatial
    dims, with `jaxconv.conv`'s cross-correlation. Jit-compiled and differentiable.

    Args:
      w1: the first weight, ``(C_mid, C_in, *K1)``, channels-first.
      w2: the second weight, ``(C_out, C_mid, *K2)``, with as many kernel dims.
      b1: the first bias, ``(C_mid,)``, or None.
      b2: the second bias, ``(C_out,)``, or None.

    Returns:
      ``(w, b)``: ``w`` of shape ``(C_out, C_in, *(K1 + K2 - 1))``, ``w[o, i, t] =
      sum_m sum_{a+b=t} w1[m, i, a] * w2[o, m, b]``; ``b`` of shape ``(C_out,)``, ``b2 +
      sum_m w2[o, m].sum() * b1[m]``, or None when both biases are None. The dtype is
      ``jnp.result_type`` of the arguments (standard promotion, as in
      `jaxconv.conv`).

    Raises:
      ValueError: weights of fewer than 3 dims or of different ranks, an empty kernel
        dim, ``w2``'s input channels not ``w1``'s output channels, or a bias of the
        wrong shape.
      TypeError: a non-array argument or an integer or bool dtype.

    Examples:
      Two 3x3 kernels make one 5x5 kernel:

      >>> import jax.numpy as jnp, numpy as np, jaxconv
      >>> rng = np.random.default_rng(0)
      >>> w1 = jnp.asarray(rng.standard_normal((8, 3, 3, 3)), jnp.float32)
      >>> w2 = jnp.asarray(rng.standard_normal((4, 8, 3, 3)), jnp.float32)
      >>> b1, b2 = jnp.ones(8, jnp.float32), jnp.zeros(4, jnp.float32)
      >>> w, b = jaxconv.compose_kernels(w1, w2, b1, b2)
      >>> w.shape, b.shape
      ((4, 3, 5, 5), (4,))
      >>> x = jnp.asarray(rng.standard_normal((1, 3, 16, 16)), jnp.float32)
      >>> two = jaxconv.conv(jaxconv.conv(x, w1, b1), w2, b2)
      >>> one = jaxconv.conv(x, w, b)
      >>> bool(jnp.allclose(two, one, atol=1e-3, rtol=1e-4))
      True
    """
    fname = "compose_kernels"
    check_array(fname, "w1", w1)
    check_array(fname, "w2", w2)
    check_array(fname, "b1", b1, optional=True)
    check_array(fname, "b2", b2, optional=True)
    if w1.ndim < 3:
        raise ValueError(
            f"{fname}: `w1` must have at least 3 dims (C_mid, C_in, *K1), got shape {w1.shape}"
        )
    if w2.ndim != w1.ndim:
        raise ValueError(
            f"{fname}: `w2` (shape {w2.shape}) must have as many dims as `w1` (shape "
            f"{w1.shape}), (C_out, C_mid, *K2) with {w1.ndim - 2} kernel dims"
        )
    for arg, w in (("w1", w1), ("w2", w2)):
        if any(k < 1 for k in w.shape[2:]):
            raise ValueError(f"{fname}: `{arg}` (shape {w.shape}) has an empty kernel dim")
    c_mid, c_out = w1.shape[0], w2.shape[0]
    if w2.shape[1] != c_mid:
        raise ValueError(
            f"{fname}: `w2` (shape {w2.shape}) takes {w2.shape[1]} input channels, but `w1` "
            f"(shape {w1.shape}) gives {c_mid}; w2.shape[1] must equal w1.shape[0]"
        )
    for arg, b, c in (("b1", b1, c_mid), ("b2", b2, c_out)):
        if b is not None and tuple(b.shape) != (c,):
            raise ValueError(f"{fname}: `{arg}` must have shape ({c},), got shape {tuple(b.shape)}")
    return _compose(w1, w2, b1, b2)
