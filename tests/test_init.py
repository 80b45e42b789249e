"""init_conv: PyTorch's default draw (uniform in ±1/sqrt(fan_in)) in jaxconv's layouts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv import init_conv

KEY = jax.random.key(0)

# (in_channels, out_channels, kernel_size, groups, ndim, transpose, weight shape, fan_in)
SHAPES = [
    (16, 32, (3, 3), 1, None, False, (32, 16, 3, 3), 16 * 9),
    (6, 4, (3, 5), 2, None, False, (4, 3, 3, 5), 3 * 15),  # torch: Conv2d(6, 4, (3, 5), groups=2)
    (3, 8, 4, 1, None, False, (8, 3, 4), 12),  # an int alone: one spatial dim
    (3, 8, 4, 1, 3, False, (8, 3, 4, 4, 4), 3 * 64),
    (6, 4, (3, 5), 2, None, True, (6, 2, 3, 5), 2 * 15),  # ConvTranspose2d: fan_in from C_out/g
    (4, 6, 2, 2, 3, True, (4, 3, 2, 2, 2), 3 * 8),
    (5, 7, [2], 1, 2, False, (7, 5, 2, 2), 5 * 4),  # length-1 sequence broadcast, as in torch
]


@pytest.mark.parametrize("c_in, c_out, kernel, groups, ndim, transpose, shape, fan_in", SHAPES)
def test_shapes_bounds_and_layouts(c_in, c_out, kernel, groups, ndim, transpose, shape, fan_in):
    kw = dict(groups=groups, transpose=transpose, ndim=ndim)
    w, b = init_conv(KEY, c_in, c_out, kernel, **kw)
    assert w.shape == shape and w.dtype == jnp.float32
    assert b.shape == (c_out,) and b.dtype == jnp.float32
    w, b = np.asarray(w), np.asarray(b)
    bound = np.float32(1 / math.sqrt(fan_in))  # the bound as the draw's dtype holds it
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # Channels-last: kernel dims to the front, the two channel dims swapped, same numbers.
    w_last, b_last = init_conv(KEY, c_in, c_out, kernel, channels_last=True, **kw)
    n = len(shape) - 2
    np.testing.assert_array_equal(w_last, np.transpose(w, (*range(2, n + 2), 1, 0)))
    np.testing.assert_array_equal(b_last, b)
    # And they fit the convolutions (whose shape functions run the same validation).
    if transpose:
        out = jaxconv.transpose_output_shape((1, c_in, *(5,) * n), w.shape, groups=groups)
        out_last = jaxconv.transpose_output_shape(
            (1, *(5,) * n, c_in), w_last.shape, groups=groups, channels_last=True
        )
    else:
        out = jaxconv.output_shape((1, c_in, *(5,) * n), w.shape, groups=groups)
        out_last = jaxconv.output_shape(
            (1, *(5,) * n, c_in), w_last.shape, groups=groups, channels_last=True
        )
    assert out[1] == out_last[-1] == c_out


def test_distribution_is_uniform_in_the_bound():
    c_in, c_out, k = 64, 256, (3, 3)
    w, b = init_conv(KEY, c_in, c_out, k, dtype=jnp.float64)
    bound = 1 / math.sqrt(c_in * 9)
    u = np.sort(np.asarray(w).ravel())  # 147456 draws
    assert abs(u.mean()) < 0.01 * bound
    assert u.var() == pytest.approx(bound**2 / 3, rel=0.02)
    assert u[0] >= -bound and u[-1] <= bound
    assert u[0] < -0.999 * bound and u[-1] > 0.999 * bound
    # Kolmogorov-Smirnov distance to U(-bound, bound); 1.63/sqrt(n) is the 1% level.
    cdf = (u + bound) / (2 * bound)
    i = np.arange(1, u.size + 1)
    ks = max(np.max(i / u.size - cdf), np.max(cdf - (i - 1) / u.size))
    assert ks < 1.63 / math.sqrt(u.size)
    # The bias comes from the same distribution, not a copy of the weight.
    assert b.shape == (256,) and np.abs(np.asarray(b)).max() <= bound
    assert not np.allclose(np.asarray(b), np.asarray(w).ravel()[:256])


def test_deterministic_pure_function_of_the_key():
    w1, b1 = init_conv(KEY, 3, 4, (3, 3))
    w2, b2 = init_conv(jax.random.key(0), 3, 4, (3, 3))
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(b1, b2)
    w3, _ = init_conv(jax.random.key(1), 3, 4, (3, 3))
    assert not np.array_equal(w1, w3)
    w4, b4 = init_conv(KEY, 3, 4, (3, 3), bias=False)
    np.testing.assert_array_equal(w4, w1)
    assert b4 is None
    # Legacy uint32 keys work too, and under jit.
    legacy = jax.random.PRNGKey(0)
    w5, _ = jax.jit(lambda k: init_conv(k, 3, 4, (3, 3)))(legacy)
    w6, _ = init_conv(legacy, 3, 4, (3, 3))
    np.testing.assert_array_equal(w5, w6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16, "float16"])
def test_dtype(dtype):
    w, b = init_conv(KEY, 4, 4, (2, 2), dtype=dtype)
    assert w.dtype == jnp.dtype(dtype) and b.dtype == jnp.dtype(dtype)
    assert np.abs(np.asarray(w, np.float32)).max() <= 0.25  # 1/sqrt(fan_in), exact


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((0, 4, 3), {}, ValueError, r"`in_channels` \(=0\) must be positive"),
        ((4, -1, 3), {}, ValueError, r"`out_channels` \(=-1\) must be positive"),
        ((4.0, 4, 3), {}, TypeError, r"`in_channels` \(=4.0\) must be an int"),
        ((4, 6, 3), {"groups": 4}, ValueError, r"`groups` \(=4\) must divide out_channels"),
        ((6, 4, 3), {"groups": 4}, ValueError, r"`groups` \(=4\) must divide in_channels"),
        ((4, 4, 3), {"groups": 0}, ValueError, r"`groups` \(=0\) must be positive"),
        ((4, 4, 0), {}, ValueError, r"`kernel_size` \(=0\) must be positive"),
        ((4, 4, (3, 3)), {"ndim": 3}, ValueError, r"`kernel_size` \(=\(3, 3\)\) must be an int"),
        ((4, 4, ()), {}, ValueError, r"`kernel_size` \(=\(\)\) must not be empty"),
        ((4, 4, 3.0), {}, TypeError, r"`kernel_size` \(=3.0\) must be an int"),
        ((4, 4, 3), {"ndim": 0}, ValueError, r"`ndim` \(=0\) must be positive"),
        ((4, 4, 3), {"bias": 1}, TypeError, r"`bias` \(=1\) must be a bool"),
        ((4, 4, 3), {"transpose": None}, TypeError, r"`transpose` \(=None\) must be a bool"),
        ((4, 4, 3), {"dtype": jnp.int32}, TypeError, r"`dtype` \(=.*\) must be a floating"),
        ((4, 4, 3), {"dtype": "floaty"}, TypeError, r"`dtype` \(='floaty'\) must be a floating"),
    ],
)
def test_errors(args, kwargs, error, message):
    with pytest.raises(error, match=rf"^init_conv: {message}"):
        init_conv(KEY, *args, **kwargs)


def test_key_errors():
    for key, got in [
        (0, "int"),
        (np.zeros(2, np.uint32), r"ndarray of shape \(2,\) and dtype uint32"),
        (jax.random.split(KEY, 2), r"\w+ of shape \(2,\) and dtype key<\w+>"),
        (jnp.zeros(2, jnp.float32), r"\w+ of shape \(2,\) and dtype float32"),
    ]:
        with pytest.raises(
            TypeError, match=rf"^init_conv: `key` must be one JAX random key, .*, got {got}$"
        ):
            init_conv(key, 4, 4, 3)


def test_kernel_size_any_sequence():
    # Any sequence of ints (not only a list or tuple) gives one entry per spatial dim.
    w, _ = init_conv(KEY, 4, 6, range(2, 5))
    assert w.shape == (6, 4, 2, 3, 4)
