"""compose_kernels: two convolutions in a row equal one, in 1-d, 2-d and 3-d."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerance import assert_close

import jaxconv
from jaxconv import compose_kernels

# (C_in, C_mid, C_out, K1, K2, spatial input size)
CASES = [
    (2, 3, 4, (3,), (2,), (11,)),
    (1, 1, 1, (1,), (4,), (6,)),
    (3, 4, 2, (3, 3), (3, 3), (9, 8)),
    (2, 3, 5, (2, 5), (4, 1), (7, 9)),  # rectangular kernels
    (2, 2, 3, (1, 1), (3, 2), (5, 5)),
    (2, 3, 2, (2, 3, 1), (2, 1, 3), (5, 6, 5)),
]


def full_conv_reference(w1, w2):
    """w[o, i, t] = sum_m sum_{a+b=t} w1[m, i, a] * w2[o, m, b], by loops over taps."""
    k1, k2 = w1.shape[2:], w2.shape[2:]
    w = np.zeros((w2.shape[0], w1.shape[1], *(a + b - 1 for a, b in zip(k1, k2, strict=True))))
    for a in itertools.product(*(range(k) for k in k1)):
        for b in itertools.product(*(range(k) for k in k2)):
            t = tuple(i + j for i, j in zip(a, b, strict=True))
            w[(slice(None), slice(None), *t)] += (
                w2[(slice(None), slice(None), *b)] @ w1[(slice(None), slice(None), *a)]
            )
    return w


@jax.jit  # one compilation for the three convolutions
def two_and_one(x, w1, b1, w2, b2, w, b):
    return jaxconv.conv(jaxconv.conv(x, w1, b1), w2, b2), jaxconv.conv(x, w, b)


def check_two_are_one(compose, rng, c_in, c_mid, c_out, k1, k2, size, biases):
    w1 = rng.standard_normal((c_mid, c_in, *k1))
    w2 = rng.standard_normal((c_out, c_mid, *k2))
    b1 = rng.standard_normal(c_mid) if biases in ("b1", "both") else None
    b2 = rng.standard_normal(c_out) if biases in ("b2", "both") else None
    x = rng.standard_normal((2, c_in, *size))
    w, b = compose(w1, w2, b1, b2)
    assert w.shape == (c_out, c_in, *(a + b - 1 for a, b in zip(k1, k2, strict=True)))
    assert w.dtype == jnp.float64
    assert_close(w, full_conv_reference(w1, w2), reduction=c_mid)
    if biases == "none":
        assert b is None
    else:
        assert b.shape == (c_out,) and b.dtype == jnp.float64
    two, one = two_and_one(x, w1, b1, w2, b2, w, b)
    assert one.shape == two.shape
    reduction = c_in * c_mid * int(np.prod(k1)) * int(np.prod(k2))
    assert_close(one, np.asarray(two), reduction=reduction)


@pytest.mark.parametrize("c_in, c_mid, c_out, k1, k2, size", CASES)
def test_two_convolutions_are_one(rng, c_in, c_mid, c_out, k1, k2, size):
    check_two_are_one(compose_kernels, rng, c_in, c_mid, c_out, k1, k2, size, "both")


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[5]], ids=["1d", "2d", "3d"])
def test_two_convolutions_are_one_without_biases(rng, case):
    check_two_are_one(compose_kernels, rng, *case, "none")


@pytest.mark.parametrize("biases", ["b1", "b2"])
def test_one_bias(rng, biases):
    check_two_are_one(compose_kernels, rng, *CASES[3], biases)


def test_under_an_outer_jit(rng):
    check_two_are_one(jax.jit(compose_kernels), rng, *CASES[3], "both")


def test_bias_formula(rng):
    w1 = rng.standard_normal((3, 2, 2, 2))
    w2 = rng.standard_normal((4, 3, 3, 1))
    b1, b2 = rng.standard_normal(3), rng.standard_normal(4)
    _, b = compose_kernels(w1, w2, b1, b2)
    assert_close(b, b2 + w2.sum(axis=(2, 3)) @ b1, reduction=9)


def test_dtype_is_promoted(rng):
    w1 = jnp.asarray(rng.standard_normal((3, 2, 3)), jnp.float32)
    w2 = jnp.asarray(rng.standard_normal((4, 3, 2)), jnp.float32)
    w, b = compose_kernels(w1, w2, None, jnp.zeros(4, jnp.float32))
    assert w.dtype == jnp.float32 and b.dtype == jnp.float32
    w, _ = compose_kernels(w1, w2.astype(jnp.float64))
    assert w.dtype == jnp.float64


def test_differentiable(rng):
    w1 = rng.standard_normal((3, 2, 3))
    w2 = rng.standard_normal((2, 3, 2))
    b1 = rng.standard_normal(3)
    x = rng.standard_normal((1, 2, 8))

    def composed(w1, w2, b1):
        w, b = compose_kernels(w1, w2, b1)
        return jnp.sum(jaxconv.conv(x, w, b) ** 2)

    def chained(w1, w2, b1):
        return jnp.sum(jaxconv.conv(jaxconv.conv(x, w1, b1), w2) ** 2)

    got, want = jax.jit(
        lambda *a: (jax.grad(composed, (0, 1, 2))(*a), jax.grad(chained, (0, 1, 2))(*a))
    )(w1, w2, b1)
    for g, e in zip(got, want, strict=True):
        assert_close(g, np.asarray(e), reduction=100)


@pytest.mark.parametrize(
    "w1, w2, b1, b2, error, message",
    [
        ((3, 2), (4, 3, 2), None, None, ValueError, r"`w1` must have at least 3 dims"),
        ((3, 2, 3), (4, 3, 2, 2), None, None, ValueError, r"`w2` \(shape \(4, 3, 2, 2\)\) must"),
        (
            (3, 2, 3),
            (4, 5, 2),
            None,
            None,
            ValueError,
            r"`w2` \(shape \(4, 5, 2\)\) takes 5 input channels.*gives 3",
        ),
        ((3, 2, 0), (4, 3, 2), None, None, ValueError, r"`w1` \(shape \(3, 2, 0\)\) has an empty"),
        ((3, 2, 3), (4, 3, 2), (4,), None, ValueError, r"`b1` must have shape \(3,\), got"),
        ((3, 2, 3), (4, 3, 2), None, (3,), ValueError, r"`b2` must have shape \(4,\), got"),
    ],
)
def test_errors(w1, w2, b1, b2, error, message):
    def arr(s):
        return None if s is None else jnp.zeros(s)

    with pytest.raises(error, match=rf"^compose_kernels: {message}"):
        compose_kernels(arr(w1), arr(w2), arr(b1), arr(b2))


def test_type_errors():
    w = jnp.zeros((2, 2, 3))
    with pytest.raises(TypeError, match=r"^compose_kernels: `w1` must be an array"):
        compose_kernels([[[1.0]]], w)
    with pytest.raises(TypeError, match=r"^compose_kernels: `w2` has dtype int32"):
        compose_kernels(w, jnp.zeros((2, 2, 3), jnp.int32))
    with pytest.raises(TypeError, match=r"^compose_kernels: `b1` must be an array"):
        compose_kernels(w, w, 1.0)
