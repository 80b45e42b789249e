"""The derivative terms with written-out transposes (`jaxconv._derivatives`).

`input_gradient_spec` + `flip_kernel` (the same regrouping transposed convolutions
use) must give XLA's own input gradient; shift's
fused weight gradient must give XLA's weight gradient; and ``impl="auto"``, which uses
both for depthwise convolutions, must keep every transform right: reverse and forward
mode, second derivatives, `vmap` of gradients, and the half-precision dtypes.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jitted import cotangent
from tolerance import assert_close

import jaxconv
from jaxconv import _derivatives, _dispatch
from jaxconv._impls import lax as lax_impl
from jaxconv._impls import shift
from jaxconv._impls._common import flip_kernel
from jaxconv._spec import ConvSpec


@st.composite
def specs(draw, lhs_dilation=False):
    """A canonical spec with input and weight shapes it accepts (any groups)."""
    nd = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    c_in_g, c_out_g = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3 if nd < 3 else 2)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    lhs = tuple(draw(st.integers(1, 2)) for _ in range(nd)) if lhs_dilation else (1,) * nd
    padding = tuple((draw(st.integers(-1, 3)), draw(st.integers(-1, 3))) for _ in range(nd))
    spatial = []
    for k, d, ld, (lo, hi) in zip(kernel, dilation, lhs, padding, strict=True):
        least = max(1, -(-(d * (k - 1) + 1 - lo - hi - 1) // ld) + 1)
        spatial.append(draw(st.integers(least, least + 5)))
    spec = ConvSpec(
        stride=stride,
        padding=padding,
        lhs_dilation=lhs,
        rhs_dilation=dilation,
        groups=groups,
        channels_last=draw(st.booleans()),
    )
    x_shape = (draw(st.integers(1, 2)), groups * c_in_g, *spatial)
    w_shape = (groups * c_out_g, c_in_g, *kernel)
    return spec, x_shape, w_shape


def _arrays(seed, *shapes, dtype=np.float64):
    """Standard-normal NumPy arrays (drawn without compiling anything: each test computes
    what it compares in one `jax.jit`, since XLA's compile time per program dominates)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


# Derandomized: JAX's own input gradient of a strided float64 convolution (the
# reference here) is an input-dilated convolution, and XLA's CPU compiler aborts the
# process on some of those (see `lax.explicit_lhs_dilation`); a fixed set of examples
# keeps the reference compilable.
@settings(max_examples=30, deadline=None, derandomize=True)
@given(specs(), st.integers(0, 2**16))
def test_written_out_gradients_are_xlas(case, seed):
    """The input gradient as a convolution of the cotangent (`input_gradient_spec`,
    `flip_kernel`) and shift's fused weight gradient give XLA's own gradients."""
    spec, x_shape, w_shape = case
    x, w = _arrays(seed, x_shape, w_shape)
    forward = lambda a, b: lax_impl.forward(a, b, spec)  # noqa: E731
    (ct,) = _arrays(seed + 1, jax.eval_shape(forward, x, w).shape)
    t_spec = _derivatives.input_gradient_spec(spec, x_shape[2:], w_shape[2:])

    def run(x, w, ct):
        want_x, want_w = jax.vjp(forward, x, w)[1](ct)
        got_x = lax_impl.forward(ct, flip_kernel(w, spec.groups), t_spec)
        got_w = shift.weight_gradient(x, ct, spec, w_shape[2:])
        return want_x, want_w, got_x, got_w

    want_x, want_w, got_x, got_w = jax.jit(run)(x, w, ct)
    assert got_x.shape == x.shape
    np.testing.assert_allclose(got_x, want_x, rtol=1e-12, atol=1e-12)
    assert shift.fused_weight_gradient(spec, w_shape[2:])
    np.testing.assert_allclose(got_w, want_w, rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(specs(lhs_dilation=True), st.integers(0, 2**16))
def test_rows_weight_gradient_is_the_one_reduction(case, seed):
    """Shift's channels-last weight gradient as a loop over rows (`_rows_weight_gradient`)
    gives the one reduction's result, whatever the spec (crops, strides, dilations,
    groups, input dilation, 1-D to 3-D)."""
    spec, x_shape, w_shape = case
    x, _ = _arrays(seed, x_shape, w_shape)
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    (ct,) = _arrays(seed + 1, (x_shape[0], w_shape[0], *out))
    got, want = _with_the_one_reduction(shift._rows_weight_gradient, x, ct, spec, w_shape[2:])
    assert got.shape == want.shape == w_shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _with_the_one_reduction(gradient, x, ct, spec, kernel):
    """``gradient(x, ct, spec, kernel)`` and the one reduction's channels-first weight
    gradient (`shift.weight_gradient`), from one jitted program."""
    channels_first = dataclasses.replace(spec, channels_last=False)
    run = lambda x, ct: (  # noqa: E731
        gradient(x, ct, spec, kernel),
        shift.weight_gradient(x, ct, channels_first, kernel),
    )
    return jax.jit(run)(x, ct)


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, dilation, gathered",
    [
        ((2, 6, 11, 10), (6, 1, 3, 3), (1, 1), (1, 1), True),  # depthwise 2-D
        ((2, 6, 13, 12), (6, 1, 5, 3), (2, 1), (1, 2), True),  # strided, dilated
        ((1, 4, 9, 8, 7), (4, 1, 3, 2, 3), (1, 2, 1), (2, 1, 1), True),  # 3-D
        ((2, 6, 11, 10), (6, 1, 7, 7), (1, 1), (1, 1), True),  # 49 taps
        ((2, 6, 11, 10), (12, 1, 3, 3), (1, 1), (1, 1), False),  # two outputs per channel
        ((2, 6, 11, 10), (6, 2, 3, 3), (1, 1), (1, 1), False),  # groups of 2x2
        ((2, 6, 20), (6, 1, 3), (1,), (1,), False),  # 1-D rows
    ],
)
def test_rows_weight_gradient_gathers_depthwise_windows(
    x_shape, w_shape, stride, dilation, gathered, monkeypatch
):
    """Depthwise (one channel in and out per group) rows of rows gather every tap's
    window at once (`_tap_rows`); the result is the one reduction's either way, in the
    input's dtype."""
    groups = x_shape[1] // w_shape[1]
    nd = len(x_shape) - 2
    spec = ConvSpec(stride, ((1, 2),) * nd, (1,) * nd, dilation, groups, channels_last=True)
    calls = []
    tap_rows = shift._tap_rows
    monkeypatch.setattr(shift, "_tap_rows", lambda *a: calls.append(a) or tap_rows(*a))
    x, _ = _arrays(2, x_shape, w_shape)
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    (ct,) = _arrays(3, (x_shape[0], w_shape[0], *out))
    channels_first = dataclasses.replace(spec, channels_last=False)
    gathers = []  # whether the float64 gradient gathered (`_tap_rows` runs while tracing)

    def run(x, ct, x_low, ct_low):
        got = shift._rows_weight_gradient(x, ct, spec, w_shape[2:])
        gathers.append(bool(calls))
        want = shift.weight_gradient(x, ct, channels_first, w_shape[2:])
        return got, want, shift._rows_weight_gradient(x_low, ct_low, spec, w_shape[2:])

    low_args = x.astype(jnp.bfloat16), ct.astype(jnp.bfloat16)
    got, want, low = jax.jit(run)(x, ct, *low_args)
    assert gathers == [gathered]
    assert got.shape == want.shape == w_shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert low.dtype == jnp.bfloat16
    reduction = x_shape[0] * math.prod(out)
    assert_close(low, want, jnp.bfloat16, reduction=reduction)


@pytest.mark.parametrize(
    "x_shape, w_shape, unroll",
    [
        ((1, 6, 7, 30), (6, 1, 3, 3), "ROWS_UNROLL_GATHERED"),  # unpadded, 7 rows
        ((3, 6, 5, 12), (6, 1, 7, 7), "ROWS_UNROLL_GATHERED"),  # padded, gathered, 15 rows
        ((1, 6, 7, 12), (6, 2, 3, 3), "ROWS_UNROLL"),  # per tap, 7 rows
        ((3, 6, 20), (6, 1, 3), "ROWS_UNROLL"),  # 1-D, 3 rows
        ((1, 6, 7, 12), (6, 2, 5, 5), None),  # per tap, 25 taps: one row
    ],
)
def test_rows_weight_gradient_steps_several_rows(x_shape, w_shape, unroll):
    """The loop over rows takes several rows per iteration (`ROWS_UNROLL_GATHERED`,
    `ROWS_UNROLL` up to `ROWS_UNROLL_MAX_TAPS` taps), and a count of rows that is no
    multiple of them still gives the one reduction's result."""
    nd = len(x_shape) - 2
    spec = ConvSpec((1,) * nd, ((1, 1),) * nd, (1,) * nd, (1,) * nd, 3 if w_shape[1] == 2 else 6)
    spec = dataclasses.replace(spec, channels_last=True)
    x, _ = _arrays(4, x_shape, w_shape)
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    (ct,) = _arrays(5, (x_shape[0], w_shape[0], *out))
    rows = x_shape[0] * math.prod(out[:-1])
    jaxpr = jax.make_jaxpr(lambda x, ct: shift._rows_weight_gradient(x, ct, spec, w_shape[2:]))
    loops = [e for e in jaxpr(x, ct).jaxpr.eqns if e.primitive.name in ("scan", "while")]
    if unroll is None:  # more taps than `ROWS_UNROLL_MAX_TAPS`
        assert math.prod(w_shape[2:]) > shift.ROWS_UNROLL_MAX_TAPS
        assert [e.params.get("unroll", 1) for e in loops] == [1]
    else:
        assert rows % getattr(shift, unroll) != 0
        (loop,) = loops
        assert loop.params["length"] == rows
        assert loop.params["unroll"] == getattr(shift, unroll) > 1
    got, want = _with_the_one_reduction(shift._rows_weight_gradient, x, ct, spec, w_shape[2:])
    assert got.shape == want.shape == w_shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_rows_weight_gradient_unpadded_is_the_one_reduction(data):
    """The depthwise loop over rows on the unpadded input
    (`_rows_weight_gradient_unpadded`) gives the one reduction's result: windows that
    reach into the padding on either side, strides and dilations, rows of any length."""
    draw = data.draw
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(2))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(2))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(2))
    padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    height = draw(st.integers(span[0], span[0] + 6))
    width = draw(st.integers(max(1, span[1] - sum(padding[1])), span[1] + 8))
    c, n = draw(st.integers(1, 4)), draw(st.integers(1, 2))
    spec = ConvSpec(stride, padding, (1, 1), dilation, c, channels_last=True)
    out = spec.out_spatial((height, width), kernel)
    x, ct = _arrays(draw(st.integers(0, 2**16)), (n, c, height, width), (n, c, *out))
    got, want = _with_the_one_reduction(shift._rows_weight_gradient_unpadded, x, ct, spec, kernel)
    assert got.shape == want.shape == (c, 1, *kernel)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.complex64])
def test_rows_weight_gradient_unpadded_dtypes(dtype, monkeypatch):
    """A channels-last depthwise 3x3 layer with rows of 28 and more takes the unpadded
    loop, in the input's dtype, and gives the float64 weight gradient to its tolerance."""
    spec = ConvSpec((1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 3, channels_last=True)
    x, ct = _arrays(0, (2, 3, 5, 30), (2, 3, 5, 30))
    calls = []
    unpadded = shift._rows_weight_gradient_unpadded
    monkeypatch.setattr(
        shift, "_rows_weight_gradient_unpadded", lambda *a: calls.append(a) or unpadded(*a)
    )
    channels_first = dataclasses.replace(spec, channels_last=False)

    def run(x, ct, x_low, ct_low):
        got = shift._rows_weight_gradient(x_low, ct_low, spec, (3, 3))
        return got, shift.weight_gradient(x, ct, channels_first, (3, 3))

    got, want = jax.jit(run)(x, ct, x.astype(dtype), ct.astype(dtype))
    assert calls and got.dtype == dtype
    assert_close(got, want, dtype, reduction=2 * 5 * 30)


def test_rows_weight_gradient_keeps_input_dilation_padded(monkeypatch):
    """Input dilation with rows of 28 and more: the padded loop, which dilates the input
    (`pad_input`), not the unpadded one, and the one reduction's result."""
    spec = ConvSpec((1, 1), ((1, 1), (1, 1)), (2, 2), (1, 1), 3, channels_last=True)
    out = spec.out_spatial((4, 16), (3, 3))
    assert out[-1] >= shift.UNPADDED_ROWS_MIN_WIDTH
    x, ct = _arrays(0, (1, 3, 4, 16), (1, 3, *out))
    monkeypatch.setattr(shift, "_rows_weight_gradient_unpadded", None)  # not called
    got, want = _with_the_one_reduction(shift._rows_weight_gradient, x, ct, spec, (3, 3))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "x_shape, kernel, padding, unpadded",
    [
        ((8, 144, 56, 56), (3, 3), 1, True),  # MobileNet depthwise 3x3
        ((8, 96, 112, 112), (3, 3), 1, True),  # output rows of 56 at stride 2
        ((8, 144, 27, 27), (3, 3), 1, False),  # rows of 27
        ((8, 240, 28, 28), (5, 5), 2, False),  # 25 taps
        ((8, 144, 56, 56), (3, 1), 1, True),
        ((8, 144, 2, 56), (3, 3), 1, False),  # a kernel taller than the input
        ((8, 144, 56, 56), (3, 3), -1, False),  # a crop
        ((2, 64, 16, 28, 28), (3, 3, 3), 1, False),  # 3-D
    ],
)
def test_rows_weight_gradient_unpadded_rule(x_shape, kernel, padding, unpadded):
    nd = len(kernel)
    stride = (2 if x_shape[-1] == 112 else 1,) * nd
    spec = ConvSpec(stride, ((padding, padding),) * nd, (1,) * nd, (1,) * nd, x_shape[1])
    out = spec.out_spatial(x_shape[2:], kernel)
    assert shift._rows_unpadded(x_shape, spec, kernel, out[-1]) == unpadded


@pytest.mark.parametrize(
    "n, ct_shape, c_in_g, kernel, rows",
    [
        ((8, (144, 56, 56), 1, (3, 3), True)),  # MobileNet depthwise 3x3, 32.5 M products
        ((2, (144, 56, 56), 1, (3, 3), False)),  # 8.1 M
        ((8, (144, 28, 28), 1, (3, 3), False)),  # 8.1 M
        ((16, (240, 14, 14), 1, (5, 5), False)),  # 18.8 M, but rows of 14
        ((8, (128, 28, 28), 4, (3, 3), True)),  # ResNeXt groups of 4x4, 28.9 M
        ((8, (256, 2000), 1, (3,), True)),  # 1-D
        ((2, (64, 16, 28, 28), 1, (3, 3, 3), True)),  # 3-D
        ((8, (96, 56, 56), 1, (7, 7), True)),  # 49 taps
        ((8, (96, 56, 56), 1, (8, 8), False)),  # 64 taps: too long to compile
        ((24, (32, 56, 56), 1, (3, 3), True)),  # depthwise from 16 channels
        ((16, (16, 112, 112), 1, (3, 3), True)),
        ((16, (15, 112, 112), 1, (3, 3), False)),  # 27.1 M, but 15 channels
        ((32, (16, 56, 56), 2, (3, 3), False)),  # groups of 2x2: 32 products a tap
        ((32, (20, 56, 56), 2, (3, 3), True)),  # 40
        ((64, (32, 2000), 1, (3,), False)),  # 1-D depthwise: 40 channels
        ((64, (40, 2000), 1, (3,), True)),
        ((16, (40, 56, 56), 1, (3, 3), True)),
    ],
)
def test_rows_weight_gradient_rule(n, ct_shape, c_in_g, kernel, rows):
    nd = len(kernel)
    groups = ct_shape[0] // (2 if c_in_g == 2 else 1)
    spec = ConvSpec((1,) * nd, ((1, 1),) * nd, (1,) * nd, (1,) * nd, groups)
    assert shift._rows_pay(n, ct_shape, spec, c_in_g, kernel) == rows


@pytest.mark.parametrize(
    "x_shape, kernel, kwargs, rows",
    [
        ((1, 64, 28, 28), (3, 3), {}, True),  # 1.8 M products, unpadded rows of 28
        ((1, 48, 56, 56), (3, 3), {}, True),
        ((1, 144, 56, 56), (3, 3), dict(stride=2), True),  # output rows of 28
        ((2, 64, 56, 56), (3, 3), dict(dilation=2), True),
        ((1, 16, 56, 56), (3, 3), {}, True),
        ((1, 15, 56, 56), (3, 3), {}, False),  # too few channels
        ((1, 64, 27, 27), (3, 3), {}, False),  # rows of 27: not unpadded
        ((1, 64, 28, 28), (5, 5), {}, False),  # 25 taps: not unpadded
        ((1, 64, 28, 28), (3, 3), dict(groups=32), False),  # not depthwise
        ((1, 64, 28, 28), (3, 3), dict(out_per_group=2), False),  # two outputs per channel
    ],
)
def test_unpadded_rows_weight_gradient_rule(x_shape, kernel, kwargs, rows):
    """Depthwise channels-last layers whose rows loop reads the input unpadded take it
    from `shift.DEPTHWISE_ROWS_MIN_CHANNELS` channels, however few their products."""
    nd = len(kernel)
    c = x_shape[1]
    stride, dilation = kwargs.get("stride", 1), kwargs.get("dilation", 1)
    groups = kwargs.get("groups", c)
    c_out = c * kwargs.get("out_per_group", 1)
    padding = (dilation * (kernel[0] - 1) // 2,) * 2
    spec = ConvSpec((stride,) * nd, (padding,) * nd, (1,) * nd, (dilation,) * nd, groups)
    spec = dataclasses.replace(spec, channels_last=True)
    out = spec.out_spatial(x_shape[2:], kernel)
    got = shift._unpadded_rows_pay(x_shape, (c_out, *out), spec, c // groups, kernel)
    assert got == rows
    assert not shift._rows_pay(x_shape[0], (c_out, *out), spec, c // groups, kernel)


@pytest.mark.parametrize(
    "n, ct_shape, kernel, kwargs, rows",
    [
        (16, (576, 14, 14), (3, 3), {}, True),  # MobileNetV2's 14x14 stage, 16.3 M
        (4, (960, 7, 7), (3, 3), {}, False),  # 1.7 M products
        (16, (960, 7, 7), (3, 3), {}, True),  # 6.8 M
        (8, (672, 14, 14), (5, 5), {}, True),
        (16, (384, 7, 7), (7, 7), {}, True),
        (16, (384, 7, 7), (8, 8), {}, False),  # 64 taps
        (64, (32, 14, 14), (3, 3), {}, True),  # depthwise from 16 channels
        (128, (15, 14, 14), (3, 3), {}, False),  # 15 channels, 3.3 M
        (256, (32, 14, 14), (3, 3), dict(groups=16, c_in_g=1), False),  # 2 out per group
        (16, (512, 14, 14), (3, 3), dict(groups=128), True),  # groups of 4x4, 57.8 M
        (4, (256, 14, 14), (3, 3), dict(groups=64), False),  # groups of 4x4, 7.2 M
        (16, (576, 14, 14), (3, 3), dict(groups=288, c_in_g=1), True),  # 2 out per group
        (4, (576, 14, 14), (3, 3), dict(groups=288, c_in_g=1), False),  # ... 4.1 M
        (16, (576, 196), (9,), {}, False),  # 1-D
        (2, (96, 8, 14, 14), (3, 3, 3), {}, True),  # 3-D depthwise, 8.1 M
        (1, (96, 8, 7, 7), (3, 3, 3), {}, False),  # 1.0 M
        (8, (256, 8, 14, 14), (3, 3, 3), dict(groups=64), False),  # 3-D groups of 4x4
    ],
)
def test_small_map_rows_weight_gradient_rule(n, ct_shape, kernel, kwargs, rows):
    """2-D channels-last layers (and 3-D depthwise ones) loop over rows on narrow maps
    too, from `shift.SMALL_MAP_ROWS_MIN_PRODUCTS` multiply-adds if depthwise, else from
    `shift.ROWS_MIN_PRODUCTS` (`shift._small_map_rows_pay`)."""
    nd = len(kernel)
    c_out = ct_shape[0]
    groups = kwargs.get("groups", c_out)
    c_in_g = kwargs.get("c_in_g", c_out // groups)
    spec = ConvSpec((1,) * nd, ((1, 1),) * nd, (1,) * nd, (1,) * nd, groups)
    spec = dataclasses.replace(spec, channels_last=True)
    assert shift._small_map_rows_pay(n, ct_shape, spec, c_in_g, kernel) == rows


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the depthwise rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, kernel, kwargs",
    [
        ((16, 14, 14, 96), (3, 3), dict(padding=1)),
        ((32, 14, 14, 192), (3, 3), dict(stride=2, padding=1)),
        ((8, 7, 7, 240), (5, 5), dict(padding=2)),
        ((16, 9, 12, 192), (3, 5), dict(padding=(2, 0), dilation=(2, 1))),
        ((2, 4, 14, 14, 96), (3, 3, 3), dict(padding=1)),
    ],
)
def test_auto_small_map_depthwise_weight_gradient_by_rows(x_shape, kernel, kwargs):
    """On maps too narrow for `shift._rows_pay`, a channels-last depthwise layer with
    enough products loops over rows for its weight gradient, and matches XLA's."""
    c = x_shape[-1]
    x, w = _arrays(0, x_shape, (*kernel, 1, c), dtype=np.float32)

    def f(impl):
        return lambda a, b: jaxconv.conv(a, b, groups=c, channels_last=True, impl=impl, **kwargs)

    (ct,) = _arrays(1, jax.eval_shape(f("lax"), x, w).shape, dtype=np.float32)
    out = ct.shape[1:-1]
    spec = ConvSpec(
        (1,) * len(kernel), ((1, 1),) * len(kernel), (1,) * len(kernel), (1,) * len(kernel), c
    )
    assert not shift._rows_pay(x_shape[0], (c, *out), spec, 1, kernel)
    dw = lambda impl: lambda a, b, ct: jax.vjp(lambda v: f(impl)(a, v), b)[1](ct)[0]  # noqa: E731
    assert "stablehlo.while" in jax.jit(dw("auto")).lower(x, w, ct).as_text()
    got, want = jax.jit(lambda *a: (dw("auto")(*a), dw("lax")(*a)))(x, w, ct)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * float(jnp.abs(want).max()))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the depthwise rule is the CPU's")
@pytest.mark.parametrize("c, loops", [(64, True), (16, True), (15, False)])
def test_auto_small_depthwise_weight_gradient_by_unpadded_rows(c, loops):
    """A small channels-last depthwise 3x3 layer (batch 1, 28x28): its gradient loops
    over rows from `shift.DEPTHWISE_ROWS_MIN_CHANNELS` channels
    (`shift._unpadded_rows_pay`), and matches XLA's either way."""
    x, w = _arrays(0, (1, 28, 28, c), (3, 3, 1, c), dtype=np.float32)
    (ct,) = _arrays(1, (1, 28, 28, c), dtype=np.float32)

    def f(impl):
        return lambda a, b: jaxconv.conv2d(a, b, padding=1, groups=c, channels_last=True, impl=impl)

    loss = lambda impl: lambda a, b, ct: jnp.sum(jnp.tanh(f(impl)(a, b)) * ct)  # noqa: E731
    grad = lambda impl: jax.grad(loss(impl), (0, 1))  # noqa: E731
    assert ("stablehlo.while" in jax.jit(grad("auto")).lower(x, w, ct).as_text()) == loops
    grads, grads_lax = jax.jit(lambda *a: (grad("auto")(*a), grad("lax")(*a)))(x, w, ct)
    for got, want in zip(grads, grads_lax, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * float(jnp.abs(want).max()))


@pytest.mark.parametrize(
    "n, ct_shape, c_in_g, kernel, chunked",
    [
        (1, (1536, 2051), 1, (4,), True),  # Mamba's depthwise k4 at batch 1, 12.6 M
        (8, (32, 4096), 1, (3,), True),  # 3.1 M
        (32, (32, 255), 1, (9,), False),  # 255 positions
        (32, (32, 256), 1, (9,), True),
        (1, (50, 1000), 1, (40,), True),  # 2,000,000 products
        (1, (50, 999), 1, (40,), False),  # 1,998,000
        (8, (32, 4096), 1, (49,), True),  # 49 taps
        (8, (32, 4096), 1, (50,), False),  # 50: `shift.ROWS_MAX_TAPS`
        (16, (24, 4096), 1, (3,), True),  # 24 products a position and tap
        (16, (23, 4096), 1, (3,), False),
        (8, (12, 4096), 2, (5,), True),  # groups of 2 -> 2: 24
        (8, (8, 4096), 2, (5,), False),  # groups of 2 -> 2: 16
        (8, (64, 64, 64), 1, (3, 3), False),  # 2-D
    ],
)
def test_chunked_rows_weight_gradient_rule(n, ct_shape, c_in_g, kernel, chunked):
    assert shift._chunked_rows_pay(n, ct_shape, c_in_g, kernel) == chunked


@pytest.mark.parametrize(
    "n, c_in, c_out, groups, length, k, stride, dilation, padding, positions",
    [
        (2, 6, 6, 6, 600, 3, 1, 1, (1, 1), None),  # depthwise, one chunk (512) and a tail
        (3, 6, 6, 6, 50, 3, 1, 1, (1, 1), 16),  # three chunks and a tail of 2
        (2, 6, 6, 6, 48, 3, 1, 1, (1, 1), 16),  # three chunks, no tail
        (2, 4, 8, 4, 41, 5, 2, 2, (3, 0), 4),  # two outputs per channel, strided, dilated
        (1, 6, 4, 2, 37, 4, 3, 1, (2, 2), 3),  # groups of 3 -> 2
        (2, 5, 3, 1, 30, 3, 1, 2, (0, 4), 7),  # dense
        (2, 4, 4, 4, 40, 3, 1, 1, (-2, 3), 5),  # negative padding (a cropped input)
        (1, 4, 4, 4, 9, 9, 1, 1, (0, 0), None),  # one output position
        (2, 4, 4, 4, 20, 1, 2, 1, (0, 0), 1),  # chunks of one position
    ],
)
def test_chunked_rows_weight_gradient_matches_xla(
    n, c_in, c_out, groups, length, k, stride, dilation, padding, positions
):
    """`shift._chunked_rows_weight_gradient` gives XLA's float64 weight gradient, with
    and without a tail past the last whole chunk."""
    spec = ConvSpec((stride,), (padding,), (1,), (dilation,), groups, channels_last=True)
    x, w = _arrays(0, (n, c_in, length), (c_out, c_in // groups, k))
    out = spec.out_spatial((length,), (k,))
    (ct,) = _arrays(1, (n, c_out, *out))

    @jax.jit
    def run(x, w, ct):
        xla = lambda v: jax.lax.conv_general_dilated(  # noqa: E731
            x, v, (stride,), (padding,), rhs_dilation=(dilation,), feature_group_count=groups
        )
        want = jax.vjp(xla, w)[1](ct)[0]
        return shift._chunked_rows_weight_gradient(x, ct, spec, (k,), positions), want

    got, want = run(x, w, ct)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the depthwise rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((1, 4096, 48), (11, 1, 48), dict(padding=5, groups=48)),  # one image, 2.2 M
        ((2, 3000, 64), (5, 2, 64), dict(padding=2, groups=32, dilation=2)),  # groups of 2
        ((2, 4000, 48), (3, 1, 96), dict(padding=1, groups=48)),  # two outputs a channel
    ],
)
def test_auto_1d_weight_gradient_by_chunks(x_shape, w_shape, kwargs, monkeypatch):
    """A channels-last 1-D layer of enough products loops over chunks of its rows for
    its weight gradient (`shift._chunked_rows_pay`), and its gradients match XLA's."""
    calls = []
    chunked = shift._chunked_rows_weight_gradient
    monkeypatch.setattr(
        shift, "_chunked_rows_weight_gradient", lambda *a, **k: calls.append(1) or chunked(*a, **k)
    )
    x, w = _arrays(0, x_shape, w_shape, dtype=np.float32)

    def f(impl):
        return lambda a, b: jaxconv.conv1d(a, b, channels_last=True, impl=impl, **kwargs)

    (ct,) = _arrays(1, jax.eval_shape(f("lax"), x, w).shape, dtype=np.float32)
    loss = lambda impl: lambda a, b, ct: jnp.sum(jnp.tanh(f(impl)(a, b)) * ct)  # noqa: E731
    grad = lambda impl: jax.grad(loss(impl), (0, 1))  # noqa: E731
    assert "stablehlo.while" in jax.jit(grad("auto")).lower(x, w, ct).as_text()
    assert calls
    grads, grads_lax = jax.jit(lambda *a: (grad("auto")(*a), grad("lax")(*a)))(x, w, ct)
    for got, want in zip(grads, grads_lax, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * float(jnp.abs(want).max()))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the depthwise rule is the CPU's")
@pytest.mark.parametrize("groups, c_in_g", [(128, 1), (32, 4)])
def test_auto_channels_last_weight_gradient_by_rows(groups, c_in_g):
    """A channels-last depthwise (and small-groups) layer large enough for the rows loop:
    the gradient's program loops, the value's does not, and both match XLA's."""
    c = groups * c_in_g
    x, w = _arrays(0, (4, 56, 56, c), (3, 3, c_in_g, c), dtype=np.float32)
    spec = ConvSpec((1, 1), ((1, 1),) * 2, (1, 1), (1, 1), groups)
    assert shift._rows_pay(4, (c, 56, 56), spec, c_in_g, (3, 3))

    def f(impl):
        return lambda a, b: jaxconv.conv2d(
            a, b, padding=1, groups=groups, channels_last=True, impl=impl
        )

    (ct,) = _arrays(1, (4, 56, 56, c), dtype=np.float32)
    loss = lambda impl: lambda a, b, ct: jnp.sum(jnp.tanh(f(impl)(a, b)) * ct)  # noqa: E731
    grad = lambda impl: jax.grad(loss(impl), (0, 1))  # noqa: E731
    assert "stablehlo.while" in jax.jit(grad("auto")).lower(x, w, ct).as_text()
    assert "stablehlo.while" not in jax.jit(f("auto")).lower(x, w).as_text()

    @jax.jit
    def run(x, w, ct):
        return f("auto")(x, w), f("lax")(x, w), grad("auto")(x, w, ct), grad("lax")(x, w, ct)

    y, y_lax, grads, grads_lax = run(x, w, ct)
    np.testing.assert_allclose(y, y_lax, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, grads_lax, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * float(jnp.abs(want).max()))


def test_fused_weight_gradient_declines_input_dilation_and_scanned_kernels():
    spec = ConvSpec((1, 1), ((0, 0),) * 2, (2, 1), (1, 1), 1)
    assert not shift.fused_weight_gradient(spec, (3, 3))
    spec = dataclasses.replace(spec, lhs_dilation=(1, 1))
    assert shift.fused_weight_gradient(spec, (11, 11))
    assert not shift.fused_weight_gradient(spec, (11, 12))  # scanned channels-last


@pytest.mark.parametrize("rows", [False, True])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16, np.float32, np.complex64])
def test_fused_weight_gradient_dtypes(dtype, rows):
    """The one reduction and the loop over rows (`_rows_weight_gradient`) keep the
    dtype and give XLA's float64 weight gradient to the dtype's tolerance."""
    spec = ConvSpec((1, 2), ((1, 1), (0, 2)), (1, 1), (1, 2), 4, channels_last=True)
    x, ct = _arrays(0, (2, 8, 7, 9), (2, 8, 7, 4), dtype=np.float32)
    x, ct = x.astype(dtype), ct.astype(dtype)
    if dtype is np.complex64:
        x = x + 1j * x[::-1].astype(dtype)
    assert x.dtype == ct.dtype == jnp.dtype(dtype)
    gradient = shift._rows_weight_gradient if rows else shift.weight_gradient
    wide = np.complex128 if dtype is np.complex64 else np.float64

    def run(x, ct, x64, ct64):
        zeros = jnp.zeros((8, 2, 3, 3), wide)
        _, vjp = jax.vjp(lambda b: lax_impl.forward(x64, b, spec), zeros)
        return gradient(x, ct, spec, (3, 3)), vjp(ct64)[0]

    got, want = jax.jit(run)(x, ct, x.astype(wide), ct.astype(wide))
    assert got.dtype == jnp.dtype(dtype) and got.shape == (8, 2, 3, 3)
    assert_close(got, want, dtype, reduction=2 * 7 * 4)


@pytest.mark.parametrize("c_in_g, writes_copies", [(2, True), (1, False)])
def test_fused_weight_gradient_writes_channels_last_grouped_inputs_once(c_in_g, writes_copies):
    """Channels-last grouped (not depthwise): input and cotangent go through
    `computed_once` before the reduction, so XLA does not fuse their transposes into
    it; the value is the same either way (test above)."""
    groups = 4
    spec = ConvSpec((1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), groups, channels_last=True)
    x, ct = _arrays(0, (2, groups * c_in_g, 7, 6), (2, 8, 7, 6), dtype=np.float32)
    text = jax.jit(shift.weight_gradient, static_argnums=(2, 3)).lower(x, ct, spec, (3, 3))
    assert ("dynamic_update_slice" in text.as_text()) == writes_copies


@pytest.mark.parametrize("shape", [(3, 4, 5), (0, 4), ()])
def test_computed_once_is_the_identity(shape):
    from jaxconv._impls._common import computed_once

    a = np.arange(np.prod(shape, dtype=int), dtype=np.float32).reshape(shape)

    def run(a):
        grad = jax.grad(lambda b: jnp.sum(computed_once(b) ** 2))(a) if a.size else None
        return computed_once(a), grad, jax.vmap(computed_once)(a) if a.ndim else None

    value, grad, mapped = jax.jit(run)(a)
    np.testing.assert_array_equal(value, a)
    if a.size:
        np.testing.assert_array_equal(grad, 2 * a)
    if a.ndim:
        np.testing.assert_array_equal(mapped, a)


DEPTHWISE = [
    # (ndim, channels, multiplier, kernel, kwargs)
    (2, 3, 1, 3, dict(padding=1)),
    (2, 3, 2, 3, dict(stride=2, padding=1)),
    (2, 4, 1, 5, dict(stride=2, dilation=2, padding=(3, 1))),
    (1, 3, 1, 4, dict(stride=3)),
    (3, 2, 1, 3, dict(padding=1)),
    (2, 2, 3, 2, dict(stride=(2, 1), dilation=(1, 2), padding="same")),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("nd,c,m,k,kwargs", DEPTHWISE)
def test_auto_depthwise_derivatives_match_lax(nd, c, m, k, kwargs, channels_last):
    x, w = _arrays(nd + c + m, (2, c) + (9 if nd < 3 else 5,) * nd, (c * m, 1) + (k,) * nd)
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.moveaxis(w, (0, 1), (-1, -2))

    def f(impl):
        return lambda a, b: jaxconv.conv(
            a, b, groups=c, channels_last=channels_last, impl=impl, **kwargs
        )

    ct = cotangent(f("lax"), x, w, seed=1)

    def everything(impl, x, w, ct):
        conv = f(impl)
        y, vjp = jax.vjp(conv, x, w)
        grad_w = lambda a, b: jax.grad(lambda a, b: jnp.sum(conv(a, b) * ct), 1)(a, b)  # noqa: E731
        hess = jax.grad(lambda a, b: jnp.sum(grad_w(a, b) ** 2), (0, 1))(x, w)
        grad_x = jax.grad(lambda a: jnp.sum(conv(a, w) ** 2))
        hess_x = jax.grad(lambda a: jnp.sum(grad_x(a) ** 2))(x)
        tangent = jax.jvp(conv, (x, w), (0.5 * x, 0.3 * w))[1]
        per_example = jax.vmap(
            lambda a: jax.grad(lambda a, b: jnp.sum(conv(a[None], b) * ct[:1]), (0, 1))(a, w)
        )(x)
        return y, *vjp(ct), *hess, hess_x, tangent, *per_example

    # Jitted whole, both in one program: op by op, the second-order terms took 5-11 s a
    # case.
    run = lambda *args: (everything("auto", *args), everything("lax", *args))  # noqa: E731
    auto_terms, lax_terms = jax.jit(run)(x, w, ct)
    for g, e in zip(auto_terms, lax_terms, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the depthwise rule is the CPU's")
def test_auto_depthwise_gradient_uses_the_written_out_transposes():
    x, w = np.ones((2, 6, 9, 9)), np.ones((6, 1, 3, 3))
    conv = lambda a, b: jaxconv.conv2d(a, b, padding=1, groups=6, impl="auto")  # noqa: E731
    assert (
        _dispatch.choose(
            ConvSpec((1, 1), ((1, 1),) * 2, (1, 1), (1, 1), 6), x.shape, w.shape, x.dtype, "cpu"
        )
        == ("shift",) * 3
    )
    text = str(jax.make_jaxpr(jax.grad(lambda a, b: jnp.sum(conv(a, b) ** 2), (0, 1)))(x, w))
    assert "jaxconv_shift_weight_gradient" in text
    hlo = jax.jit(jax.grad(lambda b: jnp.sum(conv(x, b) ** 2))).lower(w).as_text()
    # One variadic reduction (an accumulator per tap), not a reduction per tap.
    reduces = [line for line in hlo.splitlines() if "stablehlo.reduce(" in line]
    assert len(reduces) == 1 and reduces[0].count("%") > 9
