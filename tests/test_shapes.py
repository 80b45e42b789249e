"""The shape helpers: pure ints, equal to the real outputs' shapes."""

import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxconv
from jaxconv import _shapes


@pytest.mark.parametrize(
    "kernel,kwargs,expected",
    [
        ((3, 3), dict(padding=1), (8, 8)),
        ((5, 3), dict(padding=(2, 1)), (8, 8)),
        ((3, 3), dict(padding=1, stride=2), (4, 4)),
        ((3, 5), dict(padding=(0, 1), stride=(3, 4)), (2, 2)),
        ((3, 3), dict(padding=(2, 3), stride=2), (5, 6)),
    ],
)
def test_notes_worked_examples(kernel, kwargs, expected):
    assert jaxconv.output_shape((1, 1, 8, 8), (1, 1, *kernel), **kwargs) == (1, 1, *expected)
    # Unbatched, as the notes' comp_conv2d strips the batch dims.
    assert jaxconv.output_shape((1, 8, 8), (1, 1, *kernel), **kwargs) == (1, *expected)


def test_notes_formula():
    # floor((n - k + p + s) / s) with total padding p.
    for n in range(1, 12):
        for k in range(1, n + 1):
            for p in range(4):
                for s in range(1, 4):
                    got = _shapes.conv_out_size(n, k, p // 2, p - p // 2, s)
                    assert got == (n - k + p + s) // s


def test_notes_same_padding_with_stride():
    # p = k - 1 gives floor((n + s - 1) / s).
    for n in range(1, 15):
        for k in range(1, 6):
            for s in range(1, 5):
                lo, hi = _shapes.string_padding("same", k, s)
                assert lo + hi == k - 1
                assert _shapes.conv_out_size(n, k, lo, hi, s) == (n + s - 1) // s


@pytest.mark.parametrize(
    "padding,kernel,stride,dilation,input_size,expected",
    [
        ("valid", (3, 4), 1, 1, None, ((0, 0), (0, 0))),
        ("same", (3, 4), 1, 1, None, ((1, 1), (1, 2))),
        ("SAME", 4, 1, 2, None, ((3, 3),)),
        ("same_lower", (4,), 1, 1, None, ((2, 1),)),
        ("causal", 3, 1, 2, None, ((4, 0),)),
        ("full", (2, 3), 1, 1, None, ((1, 1), (2, 2))),
        ("tf_same", 3, 2, 1, (8,), ((0, 1),)),
        ("tf_same", 3, 2, 1, (7,), ((1, 1),)),
        ("tf_same", 1, 2, 1, (8,), ((0, 0),)),
        ("tf_same", (4, 3), (3, 1), 1, (10, 5), ((1, 2), (1, 1))),
        (2, (3, 3), 1, 1, None, ((2, 2), (2, 2))),
        ((1, 2), 3, 1, 1, None, ((1, 1), (2, 2))),
        (((0, 1), (2, 3)), 3, 1, 1, None, ((0, 1), (2, 3))),
        ([[0, 1]], (3, 3), 1, 1, None, ((0, 1), (0, 1))),
    ],
)
def test_resolve_padding(padding, kernel, stride, dilation, input_size, expected):
    assert jaxconv.resolve_padding(padding, kernel, stride, dilation, input_size) == expected


def test_tf_same_matches_lax_same():
    from jax import lax

    for n in range(3, 12):
        for k in range(1, 5):
            for s in range(1, 4):
                (pads,) = lax.padtype_to_pads((n,), (k,), (s,), "SAME")
                assert jaxconv.resolve_padding("tf_same", k, s, 1, (n,)) == (tuple(pads),)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 3),
    data=st.data(),
)
def test_output_shape_equals_real_output(n, data):
    groups = data.draw(st.sampled_from([1, 2]))
    kernel = data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    spatial = data.draw(st.lists(st.integers(1, 7), min_size=n, max_size=n))
    stride = data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    dilation = data.draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
    padding = data.draw(
        st.one_of(
            st.integers(0, 2),
            st.sampled_from(["valid", "same", "same_lower", "tf_same", "causal", "full"]),
        )
    )
    channels_last = data.draw(st.booleans())
    x_shape = (2, 2 * groups, *spatial)
    w_shape = (2 * groups, 2, *kernel)
    if channels_last:
        x_shape = (2, *spatial, 2 * groups)
        w_shape = (*kernel, 2, 2 * groups)
    try:
        expected = jaxconv.output_shape(
            x_shape, w_shape, stride, padding, dilation, groups, channels_last=channels_last
        )
    except ValueError as e:
        assert "empty" in str(e)
        return
    out = jax_eval_shape(
        jaxconv.conv,
        x_shape,
        w_shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        channels_last=channels_last,
    )
    assert out == expected


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 3), data=st.data())
def test_transpose_output_shape_equals_real_output(n, data):
    kernel = data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    spatial = data.draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    stride = data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    dilation = data.draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
    padding = [data.draw(st.integers(0, 2)) for _ in range(n)]
    output_padding = [
        data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)
    ]
    x_shape, w_shape = (1, 2, *spatial), (2, 3, *kernel)
    try:
        expected = jaxconv.transpose_output_shape(
            x_shape, w_shape, stride, padding, output_padding, 1, dilation
        )
    except ValueError as e:
        assert "empty" in str(e)
        return
    out = jax_eval_shape(
        jaxconv.conv_transpose,
        x_shape,
        w_shape,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )
    assert out == expected
    for m, i, k, s, p, op, d in zip(
        expected[2:], spatial, kernel, stride, padding, output_padding, dilation, strict=True
    ):
        assert m == (i - 1) * s - 2 * p + d * (k - 1) + op + 1


def jax_eval_shape(fn, x_shape, w_shape, **kwargs):
    import jax

    return jax.eval_shape(
        lambda x, w: fn(x, w, **kwargs),
        jax.ShapeDtypeStruct(x_shape, jnp.float32),
        jax.ShapeDtypeStruct(w_shape, jnp.float32),
    ).shape
