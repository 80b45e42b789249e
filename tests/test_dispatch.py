"""impl="auto": the rules choose what they say, and never leave XLA off the CPU."""

import jax.numpy as jnp
import pytest

from jaxconv import _dispatch, _spec


def choose(x_shape, w_shape, backend="cpu", **kwargs):
    """The rules' choice for a call in the caller's layout (they see canonical shapes)."""
    plan = _spec.conv_plan("conv", x_shape, w_shape, **kwargs)
    if kwargs.get("channels_last"):
        x_shape = (x_shape[0], x_shape[-1], *x_shape[1:-1])
        w_shape = (w_shape[-1], w_shape[-2], *w_shape[:-2])
    return _dispatch.choose(plan.spec, x_shape, w_shape, jnp.float32, backend)


@pytest.mark.parametrize("backend", ["gpu", "tpu", "METAL"])
def test_unmeasured_backends_use_xla(backend):
    for x, w, kw in [
        ((1, 8, 9, 9), (8, 1, 3, 3), dict(groups=8)),
        ((1, 8, 9, 9), (4, 8, 1, 1), {}),
        ((1, 8, 9, 9), (8, 2, 3, 3), dict(groups=4)),
    ]:
        assert choose(x, w, backend, **kw) == ("lax", "lax")


def test_cpu_rules():
    assert choose((2, 16, 32, 32), (16, 1, 3, 3), groups=16) == ("shift", "shift")
    assert choose((2, 16, 32, 32), (32, 1, 7, 7), groups=16) == ("shift", "shift")
    assert choose((2, 16, 64, 64), (16, 1, 13, 13), groups=16) == ("fft", "fft")
    assert choose((1, 128, 56, 56), (128, 4, 3, 3), groups=32, padding=1) == ("matmul",) * 2
    assert choose((8, 128, 56, 56), (128, 4, 3, 3), groups=32, padding=1) == ("matmul",) * 2
    assert choose((4, 100, 68, 68), (100, 100, 5, 5)) == ("lax", "lax")
    assert choose((2, 64, 28, 28), (32, 64, 1, 1)) == ("matmul", "matmul")
    assert choose((2, 28, 28, 64), (1, 1, 64, 32), channels_last=True) == ("lax", "matmul")
    assert choose((2, 512, 7, 7), (512, 512, 3, 3), padding=1) == ("matmul", "matmul")
    assert choose((2, 64, 56, 56), (64, 64, 3, 3), padding=1) == ("lax", "lax")
    assert choose((2, 256, 1000), (256, 256, 3), padding=1) == ("lax", "lax")


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((2, 3, 9, 8), (4, 3, 3, 2), dict(stride=2)),
        ((1, 2, 10, 7), (2, 2, 3, 3), dict(stride=3, dilation=2)),
        ((1, 2, 11), (3, 2, 4), dict(stride=(3,))),
        ((1, 2, 5, 6, 7), (2, 1, 2, 3, 2), dict(groups=2, stride=(2, 1, 3))),
    ],
)
def test_lax_off_the_unpadded_path_is_exact(x_shape, w_shape, kwargs):
    import numpy as np

    from jaxconv._impls import lax as lax_impl

    plan = _spec.conv_plan("conv", x_shape, w_shape, **kwargs)
    rng = np.random.default_rng(0)
    x, w = jnp.asarray(rng.standard_normal(x_shape)), jnp.asarray(rng.standard_normal(w_shape))
    got = lax_impl.forward_padded(x, w, plan.spec)
    np.testing.assert_allclose(got, lax_impl.forward(x, w, plan.spec), rtol=1e-12, atol=1e-12)
