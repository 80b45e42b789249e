"""unfold against a direct loop, fold as its exact adjoint, in 1, 2 and 3 dims."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerance import assert_close

import jaxconv


def loop_unfold(x, kernel, dilation, padding, stride):
    """(N, C, *S) -> (N, C * prod(K), L) by reading each block element by element."""
    n = len(kernel)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    blocks = [
        (m - d * (k - 1) - 1) // s + 1
        for m, k, d, s in zip(xp.shape[2:], kernel, dilation, stride, strict=True)
    ]
    cols = np.zeros((x.shape[0], x.shape[1] * math.prod(kernel), math.prod(blocks)), x.dtype)
    for col, pos in enumerate(itertools.product(*(range(b) for b in blocks))):
        for c in range(x.shape[1]):
            for t, tap in enumerate(itertools.product(*(range(k) for k in kernel))):
                src = tuple(pos[i] * stride[i] + tap[i] * dilation[i] for i in range(n))
                cols[:, c * math.prod(kernel) + t, col] = xp[(slice(None), c, *src)]
    return cols


def loop_coverage(size, kernel, dilation, padding, stride):
    """How many blocks cover each element of an input of spatial shape ``size``."""
    padded = [m + 2 * p for m, p in zip(size, padding, strict=True)]
    count = np.zeros(padded)
    blocks = [
        (m - d * (k - 1) - 1) // s + 1
        for m, k, d, s in zip(padded, kernel, dilation, stride, strict=True)
    ]
    for pos in itertools.product(*(range(b) for b in blocks)):
        for tap in itertools.product(*(range(k) for k in kernel)):
            count[
                tuple(p * s + t * d for p, t, s, d in zip(pos, tap, stride, dilation, strict=True))
            ] += 1
    return count[tuple(slice(p, p + m) for p, m in zip(padding, size, strict=True))]


CASES = {
    "1d": ((2, 3, 11), (3,), (2,), (1,), (2,)),
    "2d": ((2, 2, 7, 6), (3, 2), (1, 2), (1, 0), (2, 1)),
    "2d_overlap": ((1, 3, 5, 5), (2, 2), (1, 1), (0, 0), (1, 1)),
    "3d": ((1, 2, 5, 4, 5), (2, 2, 3), (2, 1, 1), (0, 1, 1), (1, 2, 2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_unfold_matches_loop(case, rng, maybe_jit):
    x_shape, kernel, dilation, padding, stride = CASES[case]
    x = rng.standard_normal(x_shape)
    got = maybe_jit(lambda a: jaxconv.unfold(a, kernel, dilation, padding, stride))(jnp.asarray(x))
    np.testing.assert_array_equal(got, loop_unfold(x, kernel, dilation, padding, stride))


@pytest.mark.parametrize("case", list(CASES))
def test_fold_is_adjoint_of_unfold(case, rng):
    x_shape, kernel, dilation, padding, stride = CASES[case]
    x = jnp.asarray(rng.standard_normal(x_shape))
    cols = jaxconv.unfold(x, kernel, dilation, padding, stride)
    y = jnp.asarray(rng.standard_normal(cols.shape))
    back = jaxconv.fold(y, x_shape[2:], kernel, dilation, padding, stride)
    assert back.shape == x.shape
    assert_close(jnp.vdot(cols, y), jnp.vdot(x, back), reduction=y.size)


@pytest.mark.parametrize("case", list(CASES))
def test_fold_of_unfold_counts_overlaps(case):
    x_shape, kernel, dilation, padding, stride = CASES[case]
    x = jnp.ones(x_shape)
    got = jaxconv.fold(
        jaxconv.unfold(x, kernel, dilation, padding, stride),
        x_shape[2:],
        kernel,
        dilation,
        padding,
        stride,
    )
    want = loop_coverage(x_shape[2:], kernel, dilation, padding, stride)
    np.testing.assert_array_equal(got, np.broadcast_to(want, x_shape))


def test_int_kernel_means_two_spatial_dims(rng):
    # PyTorch's reading: an int kernel_size is 2-D, so (C, H, W) is one unbatched image.
    x = rng.standard_normal((3, 5, 6))
    got = jaxconv.unfold(jnp.asarray(x), 2, padding=1)
    np.testing.assert_array_equal(got, loop_unfold(x[None], (2, 2), (1, 1), (1, 1), (1, 1))[0])
    assert jaxconv.fold(got, (5, 6), 2, padding=1).shape == (3, 5, 6)


def test_batch_dims_and_complex(rng):
    x = rng.standard_normal((2, 3, 2, 6)) + 1j * rng.standard_normal((2, 3, 2, 6))
    got = jaxconv.unfold(jnp.asarray(x), (3,), stride=(2,))
    assert got.shape == (2, 3, 6, 2) and got.dtype == jnp.complex128
    np.testing.assert_array_equal(
        got.reshape(6, 6, 2), loop_unfold(x.reshape(6, 2, 6), (3,), (1,), (0,), (2,))
    )
    back = jaxconv.fold(got, (6,), (3,), stride=2)
    assert back.shape == x.shape and back.dtype == jnp.complex128


def test_empty_batch():
    # PyTorch's own OpInfo samples unfold a (0, 1, 5, 5) batch; L cannot be inferred there.
    cols = jaxconv.unfold(jnp.zeros((0, 1, 5, 5)), 2, padding=1, stride=(1, 2))
    assert cols.shape == (0, 4, 18)
    assert jaxconv.unfold(jnp.zeros((2, 0, 3, 1, 5)), (2, 1, 3)).shape == (2, 0, 6)
    assert jaxconv.fold(cols, (5, 5), 2, padding=1, stride=(1, 2)).shape == (0, 1, 5, 5)
    grad = jax.grad(lambda a: jaxconv.unfold(a, 2).sum())(jnp.zeros((0, 1, 5, 5)))
    assert grad.shape == (0, 1, 5, 5)


def test_transforms(rng):
    xs = jnp.asarray(rng.standard_normal((3, 1, 2, 5, 5)))
    f = jax.jit(jax.vmap(lambda a: jaxconv.unfold(a, 2)))
    np.testing.assert_array_equal(f(xs), jaxconv.unfold(xs, 2))
    # unfold is linear: its gradient against y is fold(y)
    y = jnp.asarray(rng.standard_normal((1, 8, 16)))
    g = jax.grad(lambda a: jnp.vdot(jaxconv.unfold(a, 2), y))(xs[0])
    assert_close(g, jaxconv.fold(y, 5, 2), reduction=4)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: jaxconv.unfold([[1.0]], 1), TypeError, r"^unfold: `input` must be an array"),
        (lambda: jaxconv.unfold(jnp.ones((1, 1, 3, 3), jnp.int32), 2), TypeError, r"dtype int32"),
        (
            lambda: jaxconv.unfold(jnp.ones((1, 1, 3, 3)), 0),
            ValueError,
            r"`kernel_size` \(=0\) must be positive",
        ),
        (lambda: jaxconv.unfold(jnp.ones((1, 1, 3, 3)), 2.0), TypeError, r"`kernel_size`"),
        (lambda: jaxconv.unfold(jnp.ones((1, 1, 3, 3)), ()), ValueError, r"must not be empty"),
        (
            lambda: jaxconv.unfold(jnp.ones((1, 1, 3, 3)), 2, padding=-1),
            ValueError,
            r"`padding` \(=-1\) must be non-negative",
        ),
        (
            lambda: jaxconv.unfold(jnp.ones((1, 1, 3, 3)), (2, 2), stride=(1, 1, 1)),
            ValueError,
            r"`stride`",
        ),
        (lambda: jaxconv.unfold(jnp.ones((3, 3)), 2), ValueError, r"must have at least 3 dims"),
        (lambda: jaxconv.unfold(jnp.ones((1, 1, 3, 3)), 4), ValueError, r"`input` .* is too small"),
        (
            lambda: jaxconv.fold(jnp.ones((1, 7, 4)), (3, 3), 2),
            ValueError,
            r"multiple of prod\(kernel_size\)",
        ),
        (
            lambda: jaxconv.fold(jnp.ones((1, 8, 5)), (3, 3), 2),
            ValueError,
            r"^fold: `input` .* must have L = 4 columns",
        ),
        (
            lambda: jaxconv.fold(jnp.ones((1, 8, 4)), (1, 3), 2),
            ValueError,
            r"`output_size` .* is too small",
        ),
        (lambda: jaxconv.fold(jnp.ones((4,)), (3, 3), 2), ValueError, r"at least 2 dims"),
        (
            lambda: jaxconv.fold(jnp.ones((1, 8, 4)), (3, 3, 3), (2, 2)),
            ValueError,
            r"`output_size`",
        ),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
