"""conv_cost: the notes' count against XLA's own cost analysis, bytes, errors, the example."""

import math

import jax
import jax.numpy as jnp
import pytest
from jax import lax
from jitted import compile_as_shipped

import jaxconv
from jaxconv import ConvCost, conv_cost


def xla_flops(f, *args) -> float:
    """XLA's FLOP count of the compiled ``f(*args)`` (a dict, or a list of per-module dicts)."""
    analysis = compile_as_shipped(f, *args).cost_analysis()
    if isinstance(analysis, dict):
        analysis = [analysis]
    return sum(a.get("flops", 0.0) for a in analysis)


def zeros(shape, dtype=jnp.float32):
    return jnp.zeros(shape, dtype)


# (input_shape, weight_shape, stride, dilation, groups): unpadded, so XLA counts every tap.
UNPADDED = [
    ((2, 4, 10), (6, 4, 3), 1, 1, 1),
    ((3, 4, 17), (6, 2, 4), 3, 2, 2),
    ((2, 4, 10, 10), (6, 4, 3, 3), 1, 1, 1),
    ((2, 4, 10, 10), (6, 4, 3, 3), (2, 3), 1, 1),
    ((2, 4, 11, 10), (6, 4, 3, 2), 1, (2, 3), 1),
    ((2, 4, 10, 10), (6, 2, 3, 3), 1, 1, 2),
    ((2, 4, 10, 10), (4, 1, 3, 3), 2, 1, 4),  # depthwise
    ((1, 8, 7, 9), (16, 8, 1, 1), 1, 1, 1),  # 1x1: the dense layer
    ((1, 2, 5, 6, 7), (3, 2, 2, 3, 2), 1, 1, 1),
    ((2, 6, 6, 7, 8), (9, 2, 3, 2, 3), (1, 2, 2), (2, 1, 1), 3),
]


@pytest.mark.parametrize("input_shape, weight_shape, stride, dilation, groups", UNPADDED)
def test_flops_equal_xla_cost_analysis(input_shape, weight_shape, stride, dilation, groups):
    n = len(weight_shape) - 2

    def f(x, w):
        return lax.conv_general_dilated(
            x,
            w,
            jaxconv._spec.ntuple("t", "s", stride, n, minimum=1),
            [(0, 0)] * n,
            rhs_dilation=jaxconv._spec.ntuple("t", "d", dilation, n, minimum=1),
            feature_group_count=groups,
        )

    cost = conv_cost(input_shape, weight_shape, stride, 0, dilation, groups)
    assert cost.flops == 2 * cost.macs
    assert cost.flops == xla_flops(f, zeros(input_shape), zeros(weight_shape))


def test_macs_are_the_notes_formula():
    # c_i / groups * c_o * prod(k) * prod(m) * batch
    cost = conv_cost((5, 6, 12, 10), (9, 2, 3, 4), stride=(1, 2), padding=1, groups=3)
    m_h, m_w = (12 - 3 + 2) // 1 + 1, (10 - 4 + 2) // 2 + 1
    assert cost.macs == 6 // 3 * 9 * 3 * 4 * m_h * m_w * 5


def test_batch_dims_and_channels_last_cost_the_same():
    ref = conv_cost((6, 4, 10, 10), (8, 4, 3, 3), stride=2)
    assert conv_cost((2, 3, 4, 10, 10), (8, 4, 3, 3), stride=2) == ref
    assert conv_cost((4, 10, 10), (8, 4, 3, 3), stride=2).macs * 6 == ref.macs
    last = conv_cost((2, 3, 10, 10, 4), (3, 3, 4, 8), stride=2, channels_last=True)
    assert last == ref

    def f(x, w):
        return jaxconv.conv2d(x, w, stride=2, channels_last=True, impl="lax")

    assert last.flops == xla_flops(f, zeros((2, 3, 10, 10, 4)), zeros((3, 3, 4, 8)))


@pytest.mark.parametrize("padding", [1, ((2, 0), (1, 3)), "same", "full"])
def test_padded_taps_are_counted_and_xla_skips_them(padding):
    x, w = zeros((2, 4, 9, 8)), zeros((6, 4, 3, 3))
    cost = conv_cost(x.shape, w.shape, padding=padding)
    pads = jaxconv.resolve_padding(padding, (3, 3))
    padded = jnp.pad(x, ((0, 0), (0, 0), *pads))
    # Padding the input first makes every tap real: then XLA counts what the notes count.
    out_shape = jaxconv.output_shape(x.shape, w.shape, padding=padding)
    assert jaxconv.output_shape(padded.shape, w.shape) == out_shape
    assert cost.macs == conv_cost(padded.shape, w.shape).macs
    assert cost.flops == xla_flops(lambda x, w: jaxconv.conv(x, w, impl="lax"), padded, w)
    # With the padding inside the convolution XLA skips the taps on zeros.
    inside = xla_flops(lambda x, w: jaxconv.conv(x, w, padding=padding, impl="lax"), x, w)
    assert inside < cost.flops


# (input_shape, transposed weight_shape, stride, output_padding, groups, dilation)
TRANSPOSED = [
    ((2, 4, 5, 5), (4, 3, 3, 3), 2, 0, 1, 1),
    ((2, 4, 5, 5), (4, 3, 3, 2), (2, 3), 1, 1, 2),
    ((2, 4, 5), (4, 3, 3), 1, 0, 2, 1),
    ((1, 6, 3, 4, 2), (6, 1, 2, 2, 3), 2, (1, 0, 1), 3, 1),
]


@pytest.mark.parametrize(
    "input_shape, weight_shape, stride, output_padding, groups, dilation", TRANSPOSED
)
def test_transposed_cost_is_the_scatter_and_equals_xla_without_padding(
    input_shape, weight_shape, stride, output_padding, groups, dilation
):
    cost = conv_cost(
        input_shape,
        weight_shape,
        stride,
        0,
        dilation,
        groups,
        transpose=True,
        output_padding=output_padding,
    )
    # Every input element times C_out/groups * prod(K).
    assert cost.macs == math.prod(input_shape) * math.prod(weight_shape[1:])

    def f(x, w):
        return jaxconv.conv_transpose(
            x, w, None, stride, 0, output_padding, groups, dilation, impl="lax"
        )

    assert cost.flops == xla_flops(f, zeros(input_shape), zeros(weight_shape))
    out = jaxconv.transpose_output_shape(
        input_shape, weight_shape, stride, 0, output_padding, groups, dilation
    )
    assert cost.output_bytes == 4 * math.prod(out)


def test_transposed_padding_crops_scatters_xla_skips():
    x, w = zeros((2, 4, 5, 5)), zeros((4, 3, 3, 3))
    cost = conv_cost(x.shape, w.shape, stride=2, padding=1, transpose=True)
    assert cost.macs == conv_cost(x.shape, w.shape, stride=2, transpose=True).macs
    f = lambda x, w: jaxconv.conv_transpose(x, w, stride=2, padding=1, impl="lax")  # noqa: E731
    assert xla_flops(f, x, w) < cost.flops


@pytest.mark.parametrize("input_shape, weight_shape, stride, dilation, groups", UNPADDED[2:6])
def test_backward_flops_equal_xla_vjp(input_shape, weight_shape, stride, dilation, groups):
    def f(x, w):
        return jaxconv.conv(x, w, None, stride, 0, dilation, groups, impl="lax")

    x, w = zeros(input_shape), zeros(weight_shape)
    dy = zeros(jaxconv.output_shape(input_shape, weight_shape, stride, 0, dilation, groups))
    cost = conv_cost(input_shape, weight_shape, stride, 0, dilation, groups)
    assert cost.backward_flops == 2 * cost.flops
    assert cost.backward_flops == xla_flops(lambda x, w, dy: jax.vjp(f, x, w)[1](dy), x, w, dy)


@pytest.mark.parametrize(
    "dtype, itemsize",
    [("float32", 4), ("bfloat16", 2), (jnp.bfloat16, 2), ("float16", 2), (jnp.float64, 8),
     ("complex64", 8)],
)  # fmt: skip
def test_bytes_and_intensity(dtype, itemsize):
    cost = conv_cost((2, 3, 8, 8), (5, 3, 3, 3), padding=1, dtype=dtype)
    assert cost.input_bytes == 2 * 3 * 8 * 8 * itemsize
    assert cost.weight_bytes == 5 * 3 * 3 * 3 * itemsize
    assert cost.output_bytes == 2 * 5 * 8 * 8 * itemsize
    assert cost.bytes == cost.input_bytes + cost.weight_bytes + cost.output_bytes
    assert cost.arithmetic_intensity == cost.flops / cost.bytes
    assert cost.bytes == zeros((2, 3, 8, 8), dtype).nbytes + zeros((5, 3, 3, 3), dtype).nbytes + (
        zeros((2, 5, 8, 8), dtype).nbytes
    )


def test_zero_channels_cost_nothing():
    # The convolutions accept empty channel dims; so does their cost (no division by them).
    assert conv_cost((1, 3, 8, 8), (0, 3, 3, 3)) == ConvCost(0, 768, 0, 0)
    assert conv_cost((1, 8, 8, 3), (3, 3, 3, 0), channels_last=True) == ConvCost(0, 768, 0, 0)
    assert conv_cost((1, 0, 5, 5), (0, 3, 3, 3), transpose=True) == ConvCost(0, 0, 0, 588)


def test_sum_of_layers_and_seconds():
    a = conv_cost((1, 3, 32, 32), (16, 3, 3, 3), padding=1)
    b = conv_cost((1, 16, 32, 32), (16, 16, 3, 3), padding=1)
    total = sum([a, b])
    assert isinstance(total, ConvCost)
    assert total == a + b
    assert total.macs == a.macs + b.macs and total.bytes == a.bytes + b.bytes
    assert total.seconds(1e9) == pytest.approx(a.seconds(1e9) + b.seconds(1e9))
    assert a.seconds(1e9, samples=10, layers=3) == pytest.approx(a.flops * 30 / 1e9)
    assert a.seconds(1e9, backward=True) == pytest.approx(3 * a.flops / 1e9)
    with pytest.raises(ValueError, match=r"ConvCost.seconds: `flops_per_second` \(=0\)"):
        a.seconds(0)
    with pytest.raises(ValueError, match=r"ConvCost.seconds: `samples` \(=-1\) must be positive"):
        a.seconds(1e9, samples=-1)
    with pytest.raises(TypeError, match=r"ConvCost.seconds: `layers` \(='2'\) must be a number"):
        a.seconds(1e9, layers="2")
    with pytest.raises(TypeError):
        a + 1


def test_the_notes_example():
    # c_i = c_o = 100, k = 5, m = 64: ~1 G multiply-adds (the notes' "1 GFLOP").
    cost = conv_cost((100, 68, 68), (100, 100, 5, 5))
    assert cost.macs == 100 * 100 * 5 * 5 * 64 * 64 == 1_024_000_000
    assert conv_cost((100, 64, 64), (100, 100, 5, 5), padding=2) == conv_cost(
        (100, 64, 64), (100, 100, 5, 5), padding="same"
    )
    assert conv_cost((100, 64, 64), (100, 100, 5, 5), padding=2).macs == cost.macs
    # 10 layers, 1M samples, one multiply-add counted as one operation as in the notes:
    work = cost.macs * 10 * 1_000_000  # ~1e16, the notes' "10 PFLOP"
    assert work / 0.15e12 / 3600 == pytest.approx(18.5, rel=0.03)  # "18 H" at 0.15 T
    assert work / 12e12 / 60 == pytest.approx(14, rel=0.02)  # "14 min" at 12 T
    # In FLOPs (2 per multiply-add) it is twice that.
    assert cost.seconds(12e12, samples=1_000_000, layers=10) == pytest.approx(2 * work / 12e12)


# Errors are the convolutions' (same validation), under the name conv_cost.
BAD = [
    (((1, 3, 8, 8), (4, 3, 3, 3)), {"stride": 0}, ValueError),
    (((1, 3, 8, 8), (4, 3, 3, 3)), {"groups": 2}, ValueError),
    (((1, 3, 8, 8), (4, 2, 3, 3)), {}, ValueError),
    (((1, 3, 2, 2), (4, 3, 3, 3)), {}, ValueError),
    (((1, 3, 8, 8), (4, 3, 3, 3)), {"padding": "sideways"}, ValueError),
    (((1, 3, 8, 8), (4, 3, 3, 3)), {"stride": 1.5}, TypeError),
    (((3, 8), (4, 3, 3, 3)), {}, ValueError),
]


@pytest.mark.parametrize("shapes, kwargs, error", BAD)
def test_errors_equal_the_convolutions(shapes, kwargs, error):
    with pytest.raises(error) as expected:
        jaxconv.output_shape(*shapes, **kwargs)
    with pytest.raises(error) as got:
        conv_cost(*shapes, **kwargs)
    assert str(got.value).startswith("conv_cost: ")
    assert str(got.value).removeprefix("conv_cost") == str(expected.value).removeprefix(
        "output_shape"
    )


def test_transposed_errors_equal_the_transposed_convolutions():
    shapes = (1, 4, 5, 5), (4, 3, 3, 3)
    for kwargs, error in [
        ({"output_padding": 2, "stride": 2}, ValueError),
        ({"padding": "same"}, TypeError),
        ({"groups": 3}, ValueError),
    ]:
        with pytest.raises(error) as expected:
            jaxconv.transpose_output_shape(*shapes, **kwargs)
        with pytest.raises(error) as got:
            conv_cost(*shapes, transpose=True, **kwargs)
        assert str(got.value).removeprefix("conv_cost") == str(expected.value).removeprefix(
            "transpose_output_shape"
        )


def test_own_errors():
    shapes = (1, 3, 8, 8), (4, 3, 3, 3)
    with pytest.raises(TypeError, match=r"conv_cost: `dtype` \(='float3'\)"):
        conv_cost(*shapes, dtype="float3")
    with pytest.raises(TypeError, match=r"conv_cost: `dtype` \(=None\)"):
        conv_cost(*shapes, dtype=None)
    with pytest.raises(ValueError, match=r"conv_cost: `output_padding` \(=1\) applies only"):
        conv_cost(*shapes, output_padding=1)
    with pytest.raises(TypeError, match=r"conv_cost: `transpose` \(=1\) must be a bool"):
        conv_cost(*shapes, transpose=1)
