"""The notes' building blocks: worked examples, a direct loop, the 1x1 check, errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import conv as ref_conv
from tolerance import assert_close

import jaxconv
from jaxconv import blocks

X = jnp.array(
    [
        [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]],
    ]
)
K = jnp.array([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])


def loop_corr2d(x, k):
    """The notes' corr2d: a double loop over output positions."""
    h, w = k.shape
    y = np.zeros((x.shape[0] - h + 1, x.shape[1] - w + 1), np.result_type(x, k))
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            y[i, j] = (x[i : i + h, j : j + w] * k).sum()
    return y


def test_notes_multi_in_example(maybe_jit):
    y = maybe_jit(jaxconv.corr2d_multi_in)(X, K)
    np.testing.assert_array_equal(y, [[56, 72], [104, 120]])


def test_notes_multi_in_out_example(maybe_jit):
    K3 = jnp.stack([K, K + 1, K + 2])
    assert K3.shape == (3, 2, 2, 2)
    y = maybe_jit(jaxconv.corr2d_multi_in_out)(X, K3)
    want = [[[56, 72], [104, 120]], [[76, 100], [148, 172]], [[96, 128], [192, 224]]]
    np.testing.assert_array_equal(y, want)


def test_corr2d_matches_loop(rng, maybe_jit):
    x = rng.standard_normal((6, 8))
    k = rng.standard_normal((3, 2))
    assert_close(maybe_jit(jaxconv.corr2d)(jnp.asarray(x), jnp.asarray(k)), loop_corr2d(x, k))


def test_multi_in_out_matches_reference(rng):
    x = rng.standard_normal((3, 7, 5))
    k = rng.standard_normal((4, 3, 3, 2))
    y = jaxconv.corr2d_multi_in_out(jnp.asarray(x), jnp.asarray(k))
    assert_close(y, ref_conv(x[None], k)[0], reduction=18)
    # one output channel is corr2d_multi_in of its kernel, which is a sum of corr2d
    per_channel = sum(loop_corr2d(x[c], k[1, c]) for c in range(3))
    assert_close(y[1], per_channel, reduction=18)


def test_1x1_equals_general_path(rng):
    # The notes' check: the matrix product and the general correlation agree.
    x = jnp.asarray(rng.standard_normal((3, 3, 3)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((2, 3, 1, 1)), jnp.float32)
    Y1 = jaxconv.corr2d_multi_in_out_1x1(x, k)
    Y2 = jaxconv.corr2d_multi_in_out(x, k)
    assert Y1.shape == (2, 3, 3)
    assert float(abs(Y1 - Y2).sum()) < 1e-6


def test_1x1_is_one_matmul():
    jaxpr = jax.make_jaxpr(jaxconv.corr2d_multi_in_out_1x1)(
        jnp.ones((3, 4, 5)), jnp.ones((2, 3, 1, 1))
    )
    text = str(jaxpr)
    assert text.count("dot_general") == 1
    assert "conv_general_dilated" not in text


def test_dtypes_promote_and_complex(rng):
    x = jnp.asarray(rng.standard_normal((2, 4, 4)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((2, 2, 2)), jnp.float64)
    assert jaxconv.corr2d_multi_in(x, k).dtype == jnp.float64
    xc = jnp.asarray(rng.standard_normal((2, 4, 4)) + 1j * rng.standard_normal((2, 4, 4)))
    want = ref_conv(np.asarray(xc)[None], np.asarray(k)[None])[0, 0]
    assert_close(jaxconv.corr2d_multi_in(xc, k.astype(jnp.complex128)), want, reduction=8)


def test_numpy_inputs_and_gradient(rng):
    x = rng.standard_normal((2, 4, 4))
    k = rng.standard_normal((3, 2, 2, 2))
    y = jaxconv.corr2d_multi_in_out(x, k)
    assert isinstance(y, jax.Array) and y.shape == (3, 3, 3)
    g = jax.grad(lambda k_: jnp.sum(jaxconv.corr2d_multi_in_out(jnp.asarray(x), k_)))(
        jnp.asarray(k)
    )
    assert_close(
        g[0], np.stack([loop_corr2d(x[c], np.ones((3, 3))) for c in range(2)]), reduction=9
    )


def test_eager_calls_compile_once():
    jaxconv.corr2d_multi_in(X, K)
    before = blocks._corr2d_multi_in._cache_size()
    jaxconv.corr2d_multi_in(X + 1, K)
    jaxconv.corr2d_multi_in(X, K * 2)
    assert blocks._corr2d_multi_in._cache_size() == before


def test_named_scope_in_hlo():
    text = jax.jit(jaxconv.corr2d_multi_in_out).lower(X, K[None]).as_text(debug_info=True)
    assert "jaxconv.corr2d_multi_in_out" in text


@pytest.mark.parametrize(
    "fn, x, k, exc, match",
    [
        (
            jaxconv.corr2d,
            [[1.0, 2.0]],
            jnp.ones((1, 1)),
            TypeError,
            r"corr2d: `X` must be an array",
        ),
        (
            jaxconv.corr2d,
            jnp.ones((3, 3), jnp.int32),
            jnp.ones((2, 2)),
            TypeError,
            r"`X` has dtype int32",
        ),
        (
            jaxconv.corr2d,
            jnp.ones((3, 3, 1)),
            jnp.ones((2, 2)),
            ValueError,
            r"`X` \(shape \(3, 3, 1\)\) must have 2 dims",
        ),
        (
            jaxconv.corr2d,
            jnp.ones((3, 3)),
            jnp.ones((4, 2)),
            ValueError,
            r"`K` \(shape \(4, 2\)\) must be no larger than `X`",
        ),
        (jaxconv.corr2d, jnp.ones((3, 3)), jnp.ones((0, 2)), ValueError, r"empty kernel dim"),
        (
            jaxconv.corr2d_multi_in,
            X,
            jnp.ones((3, 2, 2)),
            ValueError,
            "^"
            + re.escape(
                "corr2d_multi_in: `K` (shape (3, 2, 2)) must have as many channels as `X` "
                "(shape (2, 3, 3))"
            )
            + "$",
        ),
        (
            jaxconv.corr2d_multi_in,
            X,
            jnp.ones((2, 2)),
            ValueError,
            r"`K` \(shape \(2, 2\)\) must have 3 dims",
        ),
        (
            jaxconv.corr2d_multi_in_out,
            X,
            K,
            ValueError,
            r"corr2d_multi_in_out: `K` .* must have 4 dims",
        ),
        (jaxconv.corr2d_multi_in_out, X, jnp.ones((1, 3, 2, 2)), ValueError, r"as many channels"),
        (jaxconv.corr2d_multi_in_out, X, jnp.ones((1, 2, 2, 4)), ValueError, r"no larger than"),
        (
            jaxconv.corr2d_multi_in_out_1x1,
            X,
            jnp.ones((1, 2, 2, 2)),
            ValueError,
            r"must be a 1x1 kernel",
        ),
        (
            jaxconv.corr2d_multi_in_out_1x1,
            X,
            jnp.ones((1, 2, 1, 1), bool),
            TypeError,
            r"`K` has dtype bool",
        ),
    ],
)
def test_errors(fn, x, k, exc, match):
    with pytest.raises(exc, match=match):
        fn(x, k)
