"""The public convolutions against the float64 NumPy reference, for every algorithm."""

import functools
import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import conv as ref_conv
from reference import conv_transpose as ref_conv_transpose
from tolerance import assert_close

import jaxconv
from jaxconv import functional

IMPLS = (*jaxconv.IMPLS, "auto")


# ----------------------------------------------------------------------------- oracle
# The padding strings, written out again here from the contract (not imported), so the
# reference does not share the library's arithmetic.


def expected_pads(padding, kernel, stride, dilation, spatial):
    n = len(kernel)
    if isinstance(padding, str):
        pads = []
        for k, s, d, m in zip(kernel, stride, dilation, spatial, strict=True):
            total = d * (k - 1)
            mode = padding.lower()
            if mode == "valid":
                pads.append((0, 0))
            elif mode == "same":
                pads.append((total // 2, total - total // 2))
            elif mode == "same_lower":
                pads.append((total - total // 2, total // 2))
            elif mode == "causal":
                pads.append((total, 0))
            elif mode == "full":
                pads.append((total, total))
            elif mode == "tf_same":
                need = max((math.ceil(m / s) - 1) * s + total + 1 - m, 0)
                pads.append((need // 2, need - need // 2))
        return pads
    if isinstance(padding, int):
        return [(padding, padding)] * n
    if isinstance(padding[0], int):
        return [(p, p) for p in padding] * (n if len(padding) == 1 else 1)
    return [tuple(p) for p in padding]


def tup(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v) * (n if len(v) == 1 else 1)


def to_channels_last(x, n):
    """(*B, C, *S) -> (*B, *S, C)."""
    return np.moveaxis(x, -n - 1, -1)


def weight_to_channels_last(w):
    """(A, B, *K) -> (*K, B, A)."""
    n = w.ndim - 2
    return np.transpose(w, (*range(2, n + 2), 1, 0))


def draw(rng, shape, dtype):
    x = rng.standard_normal(shape)
    if np.issubdtype(np.dtype(dtype), np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x


def reference(x, w, b, kwargs, transpose):
    """The reference on arbitrary batch dims: flatten them, run, restore."""
    n = w.ndim - 2
    batch = x.shape[: x.ndim - n - 1]
    xf = x.reshape((math.prod(batch), *x.shape[len(batch) :]))
    if transpose:
        y = ref_conv_transpose(xf, w, b, **kwargs)
    else:
        kw = dict(kwargs)
        pads = expected_pads(
            kw.pop("padding", 0),
            w.shape[2:],
            tup(kw.get("stride", 1), n),
            tup(kw.get("dilation", 1), n),
            x.shape[-n:],
        )
        y = ref_conv(xf, w, b, pads=pads, **kw)
    return y.reshape((*batch, *y.shape[1:]))


def run_case(
    x_shape,
    w_shape,
    kwargs,
    *,
    impl,
    transpose=False,
    bias=True,
    channels_last=False,
    dtype=np.float32,
    jit=lambda f: f,
    seed=0,
):
    rng = np.random.default_rng(seed)
    n = len(w_shape) - 2
    c_out = w_shape[1] * kwargs.get("groups", 1) if transpose else w_shape[0]
    # Round the inputs to `dtype` first, so that only the arithmetic is compared.
    x, w, b = (
        np.asarray(jnp.asarray(draw(rng, shape, dtype), dtype)).astype(
            np.complex128 if jnp.issubdtype(dtype, jnp.complexfloating) else np.float64
        )
        for shape in (x_shape, w_shape, (c_out,))
    )
    b = b if bias else None
    expected = reference(x, w, b, kwargs, transpose)
    xa, wa = x, w
    if channels_last:
        xa, wa = to_channels_last(x, n), weight_to_channels_last(w)
        expected = to_channels_last(expected, n)
    fn = getattr(jaxconv, ("conv_transpose" if transpose else "conv") + f"{n}d", None)
    fn = fn if n <= 3 else (jaxconv.conv_transpose if transpose else jaxconv.conv)
    call = jit(lambda x_, w_, b_: fn(x_, w_, b_, **kwargs, channels_last=channels_last, impl=impl))
    out = call(
        jnp.asarray(xa, dtype), jnp.asarray(wa, dtype), None if b is None else jnp.asarray(b, dtype)
    )
    assert out.dtype == jnp.dtype(dtype)
    assert out.shape == expected.shape
    reduction = math.prod(w_shape[1:]) if not transpose else math.prod(w_shape[:1] + w_shape[2:])
    assert_close(out, expected, dtype=dtype, reduction=reduction)
    return out


# ----------------------------------------------------------------------------- grid

FORWARD_CASES = {
    "1d": ((2, 3, 9), (4, 3, 3), {}),
    "1d_stride_dil_groups": (
        (2, 4, 11),
        (6, 2, 3),
        dict(stride=2, padding=1, dilation=2, groups=2),
    ),
    "2d_notes": ((1, 1, 8, 8), (1, 1, 3, 3), dict(padding=1)),
    "2d_notes_rect": ((1, 1, 8, 8), (1, 1, 3, 5), dict(padding=(0, 1), stride=(3, 4))),
    "2d_pairs": ((2, 3, 7, 6), (4, 3, 2, 3), dict(padding=((1, 2), (0, 3)), stride=(2, 1))),
    "2d_dilated": ((1, 2, 9, 10), (3, 2, 3, 2), dict(padding=2, dilation=(2, 3))),
    "2d_groups": ((2, 6, 6, 5), (9, 2, 3, 3), dict(groups=3, padding=[1])),
    "2d_depthwise": ((2, 4, 7, 7), (4, 1, 3, 3), dict(groups=4, padding="same")),
    "2d_depthwise_mult": ((1, 3, 6, 6), (6, 1, 3, 3), dict(groups=3, stride=2)),
    "2d_1x1": ((2, 5, 4, 6), (3, 5, 1, 1), {}),
    "2d_1x1_strided_groups": ((2, 4, 5, 6), (6, 2, 1, 1), dict(stride=2, groups=2)),
    "2d_big_kernel": ((1, 2, 12, 11), (2, 2, 7, 6), dict(padding="same")),
    "3d": ((1, 2, 5, 6, 4), (3, 2, 2, 3, 2), dict(stride=(1, 2, 1), padding=1, dilation=(2, 1, 1))),
    "4d": ((1, 2, 4, 4, 3, 4), (2, 2, 2, 2, 2, 2), dict(padding=1)),
    "batch_dims": ((2, 3, 2, 7, 7), (4, 2, 3, 3), dict(padding=1)),
    "unbatched": ((2, 7, 7), (4, 2, 3, 3), dict(stride=2)),
}

TRANSPOSE_CASES = {
    "1d": ((2, 4, 5), (4, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    "2d_groups_dilation": (
        (1, 4, 4, 5),
        (4, 3, 3, 2),
        dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(1, 2)),
    ),
    "2d_crop": ((1, 2, 6, 5), (2, 2, 2, 2), dict(stride=3, padding=2)),
    "2d_output_padding_by_dilation": (
        (1, 2, 4, 4),
        (2, 3, 2, 2),
        dict(dilation=3, output_padding=2),
    ),
    "2d_depthwise": ((2, 3, 4, 4), (3, 1, 4, 4), dict(stride=2, padding=1, groups=3)),
    "3d": ((1, 2, 3, 3, 3), (2, 2, 2, 2, 2), dict(stride=2)),
    "unbatched": ((2, 3, 4), (2, 2, 3, 3), dict(stride=2, padding=1, output_padding=1)),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(FORWARD_CASES), ids=str)
def test_conv_matches_reference(case, impl, maybe_jit):
    x_shape, w_shape, kwargs = FORWARD_CASES[case]
    run_case(x_shape, w_shape, kwargs, impl=impl, jit=maybe_jit)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(TRANSPOSE_CASES), ids=str)
def test_conv_transpose_matches_reference(case, impl, maybe_jit):
    x_shape, w_shape, kwargs = TRANSPOSE_CASES[case]
    run_case(x_shape, w_shape, kwargs, impl=impl, transpose=True, jit=maybe_jit)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "case", ["1d_stride_dil_groups", "2d_pairs", "2d_depthwise", "3d", "batch_dims", "unbatched"]
)
def test_conv_channels_last(case, impl):
    x_shape, w_shape, kwargs = FORWARD_CASES[case]
    run_case(x_shape, w_shape, kwargs, impl=impl, channels_last=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", ["1d", "2d_groups_dilation", "3d", "unbatched"])
def test_conv_transpose_channels_last(case, impl):
    x_shape, w_shape, kwargs = TRANSPOSE_CASES[case]
    run_case(x_shape, w_shape, kwargs, impl=impl, transpose=True, channels_last=True)


@pytest.mark.parametrize(
    "padding", ["valid", "same", "same_lower", "tf_same", "causal", "full", "SAME", "Valid"]
)
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_padding_strings(padding, stride):
    # Even and odd kernels, dilation, and sizes that do and don't divide by the stride.
    run_case(
        (1, 2, 9, 8),
        (2, 2, 4, 3),
        dict(padding=padding, stride=stride, dilation=(1, 2)),
        impl="auto",
    )


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("n", [7, 8, 9])
def test_same_padding_gives_ceil(n, stride):
    # The notes: "same" with stride s gives ceil(n / s) whatever n is.
    out = jaxconv.conv1d(jnp.ones((1, 1, n)), jnp.ones((1, 1, 4)), stride=stride, padding="same")
    assert out.shape[-1] == -(-n // stride)


def test_same_equals_symmetric_padding_for_odd_kernels():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((1, 2, 9, 9)))
    w = jnp.asarray(rng.standard_normal((3, 2, 5, 3)))
    chex.assert_trees_all_close(
        jaxconv.conv2d(x, w, padding="same", dilation=2, stride=2),
        jaxconv.conv2d(x, w, padding=(4, 2), dilation=2, stride=2),
        atol=1e-12,
        rtol=1e-12,
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize(
    "case",
    [
        ((2, 2, 9), (3, 2, 3), dict(padding=2)),
        ((1, 2, 6, 7), (3, 2, 3, 4), dict(padding="same", stride=2)),
        ((1, 2, 5, 6), (2, 2, 3, 3), dict(padding=((1, 4), (5, 0)))),
        ((1, 1, 4, 5, 3), (2, 1, 3, 3, 2), dict(padding=1, dilation=(1, 2, 1))),
    ],
    ids=["1d", "2d_same", "2d_pairs", "3d"],
)
def test_padding_modes(case, mode, impl):
    x_shape, w_shape, kwargs = case
    run_case(x_shape, w_shape, dict(kwargs, padding_mode=mode), impl=impl)


@pytest.mark.parametrize(
    "dtype", [np.float64, np.complex64, np.complex128, jnp.bfloat16, np.float16]
)
@pytest.mark.parametrize("impl", IMPLS)
def test_dtypes(dtype, impl):
    run_case((1, 3, 6, 6), (4, 3, 3, 3), dict(padding=1, stride=2), impl=impl, dtype=dtype)
    run_case(
        (1, 2, 4, 4),
        (2, 2, 3, 3),
        dict(stride=2, padding=1),
        impl=impl,
        dtype=dtype,
        transpose=True,
    )


def test_dtype_promotion():
    x = jnp.ones((1, 2, 5), jnp.float32)
    w = jnp.ones((3, 2, 3), jnp.float64)
    assert jaxconv.conv1d(x, w).dtype == jnp.float64
    assert jaxconv.conv1d(x, w.astype(jnp.complex64)).dtype == jnp.complex64
    assert jaxconv.conv1d(x.astype(jnp.bfloat16), w.astype(jnp.float32)).dtype == jnp.float32


def test_numpy_inputs_and_list_config():
    x = np.ones((1, 2, 6, 6), np.float32)
    w = np.ones((2, 2, 3, 3), np.float32)
    out = jaxconv.conv2d(x, w, None, [2, 1], [(1, 0), [0, 1]], [1, 1])
    assert out.shape == jaxconv.output_shape(x.shape, w.shape, (2, 1), ((1, 0), (0, 1)))


def test_zero_batch():
    out = jaxconv.conv2d(jnp.ones((0, 2, 5, 5)), jnp.ones((3, 2, 3, 3)))
    assert out.shape == (0, 3, 3, 3)


@pytest.mark.parametrize("impl", ["auto", "matmul", "lax"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("n, c", [(0, 4), (2, 0)])
def test_gradients_of_empty_operands(n, c, op, channels_last, impl):
    """No images or no input channels: gradients of the input's and the weight's shapes,
    all zeros (the 1x1 and 2x2 stride-2 layers run `auto`'s products per image)."""
    x_shape, w_shape = (n, c, 6, 6), ((3, c, 1, 1) if op == "conv2d" else (c, 3, 2, 2))
    if channels_last:
        x_shape, w_shape = (n, 6, 6, c), (*w_shape[2:], w_shape[1], w_shape[0])
    stride = 1 if op == "conv2d" else 2
    f = getattr(jaxconv, op)
    loss = lambda a, b: f(a, b, None, stride, channels_last=channels_last, impl=impl).sum()  # noqa: E731
    gx, gw = jax.grad(loss, (0, 1))(jnp.ones(x_shape), jnp.ones(w_shape))
    assert gx.shape == x_shape and gw.shape == w_shape
    np.testing.assert_array_equal(gw, np.zeros(w_shape, np.float32))


# ----------------------------------------------------------------------------- the notes


def test_notes_shape_examples():
    x = jnp.zeros((1, 1, 8, 8))
    for k, kwargs, shape in [
        ((3, 3), dict(padding=1), (8, 8)),
        ((5, 3), dict(padding=(2, 1)), (8, 8)),
        ((3, 3), dict(padding=1, stride=2), (4, 4)),
        ((3, 5), dict(padding=(0, 1), stride=(3, 4)), (2, 2)),
        ((3, 3), dict(padding=(2, 3), stride=2), (5, 6)),
    ]:
        w = jnp.zeros((1, 1, *k))
        assert jaxconv.conv2d(x, w, **kwargs).shape[2:] == shape
        assert jaxconv.output_shape(x.shape, w.shape, **kwargs)[2:] == shape


@pytest.mark.parametrize("impl", IMPLS)
def test_notes_multi_channel_example(impl):
    X = jnp.array(
        [[[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[1, 2, 3], [4, 5, 6], [7, 8, 9]]], jnp.float32
    )
    K = jnp.array([[[0, 1], [2, 3]], [[1, 2], [3, 4]]], jnp.float32)
    K3 = jnp.stack([K, K + 1, K + 2])
    out = jaxconv.conv2d(X, K3, impl=impl)
    np.testing.assert_allclose(
        out, [[[56, 72], [104, 120]], [[76, 100], [148, 172]], [[96, 128], [192, 224]]], rtol=1e-6
    )


# ----------------------------------------------------------------------------- gradients

GRAD_CASES = [
    (
        "conv",
        (1, 2, 5, 6),
        (3, 2, 3, 2),
        dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2)),
    ),
    ("conv", (2, 4, 7), (4, 2, 3), dict(groups=2, padding="same", padding_mode="reflect")),
    ("conv", (1, 3, 5), (3, 1, 2), dict(groups=3, padding=1, padding_mode="circular")),
    (
        "conv_transpose",
        (1, 4, 3, 4),
        (4, 1, 3, 2),
        dict(stride=2, padding=1, output_padding=1, groups=2),
    ),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", range(len(GRAD_CASES)))
def test_gradients_numerically(case, impl):
    fname, x_shape, w_shape, kwargs = GRAD_CASES[case]
    rng = np.random.default_rng(case)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    c_out = w_shape[1] * kwargs.get("groups", 1) if "transpose" in fname else w_shape[0]
    b = rng.standard_normal(c_out)
    f = functools.partial(getattr(jaxconv, fname), **kwargs, impl=impl)
    jax.test_util.check_grads(f, (x, w, b), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


ADJOINT_CASES = [
    ((2, 3, 9), (4, 3, 3), dict(stride=2, padding=1)),
    ((1, 4, 8, 7), (6, 2, 3, 2), dict(stride=(2, 3), padding=(1, 0), dilation=(1, 2), groups=2)),
    ((1, 2, 7, 6), (2, 2, 2, 3), dict(stride=3, padding=(0, 2))),
    ((1, 2, 4, 5, 4), (2, 1, 2, 3, 2), dict(stride=2, padding=1, groups=2)),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", range(len(ADJOINT_CASES)))
def test_conv_transpose_is_adjoint_of_conv(case, impl):
    """The vjp of conv with respect to its input is conv_transpose, same arguments."""
    x_shape, w_shape, kwargs = ADJOINT_CASES[case]
    rng = np.random.default_rng(case)
    x = jnp.asarray(rng.standard_normal(x_shape))
    w = jnp.asarray(rng.standard_normal(w_shape))
    y, vjp = jax.vjp(lambda x_: jaxconv.conv(x_, w, **kwargs, impl="lax"), x)
    ct = jnp.asarray(rng.standard_normal(y.shape))
    (dx,) = vjp(ct)
    n = len(w_shape) - 2
    plain = jaxconv.transpose_output_shape(
        y.shape,
        w_shape,
        kwargs.get("stride", 1),
        kwargs.get("padding", 0),
        0,
        kwargs.get("groups", 1),
        kwargs.get("dilation", 1),
    )
    output_padding = tuple(a - b for a, b in zip(x_shape[-n:], plain[-n:], strict=True))
    dx2 = jaxconv.conv_transpose(
        ct,
        w,
        None,
        kwargs.get("stride", 1),
        kwargs.get("padding", 0),
        output_padding,
        kwargs.get("groups", 1),
        kwargs.get("dilation", 1),
        impl=impl,
    )
    chex.assert_trees_all_close(dx, dx2, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_equal_lax(impl):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 4, 8, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((6, 2, 3, 3)), jnp.float32)

    def loss(x_, w_, impl_):
        y = jaxconv.conv2d(x_, w_, None, 2, "same", 1, 2, impl=impl_)
        return jnp.sum(jnp.sin(y))

    got = jax.grad(loss, argnums=(0, 1))(x, w, impl)
    want = jax.grad(loss, argnums=(0, 1))(x, w, "lax")
    chex.assert_trees_all_close(got, want, atol=2e-4, rtol=2e-4)


# ----------------------------------------------------------------------------- transforms


def test_vmap_jit_grad_compose():
    rng = np.random.default_rng(4)
    xs = jnp.asarray(rng.standard_normal((3, 2, 6, 6)))
    w = jnp.asarray(rng.standard_normal((4, 2, 3, 3)))
    f = jax.jit(jax.vmap(lambda x: jaxconv.conv2d(x, w, padding=1)))
    chex.assert_trees_all_close(f(xs), jaxconv.conv2d(xs, w, padding=1), atol=1e-12)
    ws = jnp.stack([w, 2 * w])
    g = jax.vmap(lambda w_: jaxconv.conv2d(xs, w_, padding=1))(ws)
    chex.assert_trees_all_close(g[1], 2 * jaxconv.conv2d(xs, w, padding=1), atol=1e-12)
    gx = jax.grad(lambda x: jnp.sum(jax.vmap(lambda w_: jaxconv.conv2d(x, w_))(ws)))(xs)
    assert gx.shape == xs.shape


def test_eager_calls_compile_once():
    x = jnp.ones((1, 2, 7, 7))
    w = jnp.ones((3, 2, 3, 3))
    functional._run(
        x,
        w,
        None,
        plan=jaxconv._spec.conv_plan("conv2d", x.shape, w.shape, stride=[2, 2], padding=[1]),
    )
    before = functional._run._cache_size()
    for stride, padding in [([2, 2], [1]), ((2, 2), (1,)), (2, 1), ((2,), (1, 1))]:
        jaxconv.conv2d(x, w, None, stride, padding)
    assert functional._run._cache_size() == before


def test_equivalent_eager_calls_trace_the_algorithm_once(monkeypatch):
    """Lists, tuples, length-1 sequences and ints that mean the same config, on new
    arrays of the same shape, reuse one compiled function: the algorithm traces once."""
    from jaxconv._impls import FORWARDS

    counted = chex.assert_max_traces(FORWARDS["lax"], n=1)
    monkeypatch.setitem(FORWARDS, "lax", counted)
    w = jnp.ones((3, 2, 3, 2))
    for i, (stride, padding, dilation) in enumerate(
        [
            ([2, 1], [(1, 0), [2, 2]], 1),
            ((2, 1), ((1, 0), (2, 2)), (1,)),
            ((2, 1), [[1, 0], [2, 2]], [1, 1]),
        ]
    ):
        x = jnp.full((1, 2, 13, 11), float(i))
        jaxconv.conv2d(x, w, None, stride, padding, dilation, impl="lax")


def test_plans_are_validated_once_per_signature(monkeypatch):
    """An eager call with the arguments of an earlier one reuses its plan; one that
    differs only in a type validation rejects (True for 1, a float) still raises, every
    time; arguments that cannot be hashed are validated on each call."""
    monkeypatch.setattr(functional, "_PLANS", {})
    built = []
    real = jaxconv._spec.conv_plan

    def counting(*args, **kwargs):
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(jaxconv._spec, "conv_plan", counting)
    x, w = jnp.ones((1, 2, 7, 7)), jnp.ones((3, 2, 3, 3))
    y = jaxconv.conv2d(x, w, None, 1, [[1, 1], [0, 0]])
    for _ in range(3):
        chex.assert_trees_all_equal(jaxconv.conv2d(x, w, None, 1, [[1, 1], [0, 0]]), y)
    assert len(built) == 1
    for stride in (True, 1.0, (1, True)):
        for _ in range(2):
            with pytest.raises(TypeError, match="`stride`"):
                jaxconv.conv2d(x, w, None, stride, [[1, 1], [0, 0]])
    assert len(built) == 7
    for _ in range(2):
        with pytest.raises(TypeError, match="`padding`"):
            jaxconv.conv2d(x, w, padding=np.array([1, 0]))
    assert len(built) == 9
    chex.assert_trees_all_equal(jaxconv.conv2d(x, w, None, 1, ((1, 1), (0, 0))), y)
    assert len(built) == 10  # a tuple of tuples is another key, the same plan
    assert len(functional._PLANS) == 2
    # Keyword arguments are typed too: 0 is no bool, though False was planned.
    jaxconv.conv2d(x, w, channels_last=False)
    with pytest.raises(TypeError, match="`channels_last`"):
        jaxconv.conv2d(x, w, channels_last=0)
    for precision in (("highest", "highest"), ["highest", "highest"]):
        chex.assert_trees_all_equal(jaxconv.conv2d(x, w, precision=precision).shape, (1, 3, 5, 5))
    assert len(built) == 14 and len(functional._PLANS) == 5


def test_plans_of_other_sequences_are_not_cached(monkeypatch):
    """A sequence of another type than tuple or list may change under the same identity:
    planned afresh each call."""
    import collections.abc

    class Stride(collections.abc.Sequence):
        def __init__(self, items):
            self.items = list(items)

        def __getitem__(self, i):
            return self.items[i]

        def __len__(self):
            return len(self.items)

    monkeypatch.setattr(functional, "_PLANS", {})
    x, w = jnp.ones((1, 2, 7, 7)), jnp.ones((3, 2, 3, 3))
    stride = Stride([1, 1])
    assert jaxconv.conv2d(x, w, stride=stride).shape == (1, 3, 5, 5)
    stride.items[:] = [2, 2]
    assert jaxconv.conv2d(x, w, stride=stride).shape == (1, 3, 3, 3)
    assert not functional._PLANS
    nested = [1]
    nested.append(nested)  # validation rejects it; the key does not recurse forever
    with pytest.raises((TypeError, ValueError)):
        jaxconv.conv2d(x, w, padding=nested)


def test_plan_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(functional, "_PLANS", {})
    monkeypatch.setattr(functional, "PLAN_CACHE_SIZE", 3)
    x = jnp.ones((1, 1, 9))
    for k in range(1, 8):
        assert jaxconv.conv1d(x, jnp.ones((1, 1, k))).shape == (1, 1, 10 - k)
        assert len(functional._PLANS) <= 3
    monkeypatch.setattr(functional, "_PLANS", {})
    for _ in range(2):
        assert jaxconv.conv_transpose1d(x, jnp.ones((1, 1, 3)), stride=2).shape == (1, 1, 19)
    assert [key[0] for key in functional._PLANS] == [jaxconv._spec.transpose_plan]


def test_named_scope_in_hlo():
    text = (
        jax.jit(lambda x, w: jaxconv.conv1d(x, w))
        .lower(jnp.ones((1, 1, 5)), jnp.ones((1, 1, 3)))
        .as_text(debug_info=True)
    )
    assert "jaxconv.conv1d" in text


# ----------------------------------------------------------------------------- properties


@st.composite
def configs(draw_):
    n = draw_(st.integers(1, 3))
    groups = draw_(st.sampled_from([1, 1, 2, 3]))
    c_in = groups * draw_(st.integers(1, 2))
    c_out = groups * draw_(st.integers(1, 2))
    kernel = [draw_(st.integers(1, 3)) for _ in range(n)]
    stride = [draw_(st.integers(1, 3)) for _ in range(n)]
    dilation = [draw_(st.integers(1, 2)) for _ in range(n)]
    spatial = [
        draw_(st.integers(d * (k - 1) + 1, d * (k - 1) + 5))
        for k, d in zip(kernel, dilation, strict=True)
    ]
    transpose = draw_(st.booleans())
    impl = draw_(st.sampled_from(IMPLS))
    batch = draw_(st.sampled_from([(), (1,), (2,)]))
    if transpose:
        w_shape = (c_in, c_out // groups, *kernel)
        padding = [
            draw_(st.integers(0, d * (k - 1))) for k, d in zip(kernel, dilation, strict=True)
        ]
        output_padding = [
            draw_(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)
        ]
        kwargs = dict(
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            groups=groups,
            dilation=dilation,
        )
    else:
        w_shape = (c_out, c_in // groups, *kernel)
        padding = draw_(
            st.one_of(
                st.sampled_from(["valid", "same", "same_lower", "tf_same", "causal", "full"]),
                st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=n, max_size=n),
            )
        )
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return (*batch, c_in, *spatial), w_shape, kwargs, transpose, impl, draw_(st.booleans())


@settings(max_examples=40, deadline=None)
@given(configs())
def test_random_configurations(config):
    x_shape, w_shape, kwargs, transpose, impl, channels_last = config
    run_case(
        x_shape,
        w_shape,
        kwargs,
        impl=impl,
        transpose=transpose,
        channels_last=channels_last,
        dtype=np.float64,
    )


@pytest.mark.parametrize(
    "case",
    [
        ((1, 2, 6, 5), (3, 2, 3, 2), dict(padding=1)),  # dense
        ((1, 4, 6, 5), (4, 1, 3, 3), dict(groups=4, padding="same")),  # depthwise
        ((1, 4, 6, 5), (6, 2, 3, 3), dict(groups=2, stride=2)),  # grouped
        # 1x1 groups of 4 -> 32 channels-last: XLA's value, matmul's derivatives
        ((1, 5, 4, 8), (1, 1, 4, 64), dict(groups=2, channels_last=True)),
    ],
    ids=["dense", "depthwise", "grouped", "pointwise-groups-expansion"],
)
def test_auto_forward_and_reverse_mode(case):
    """auto's custom JVP: forward mode, reverse mode and second order all agree."""
    x_shape, w_shape, kwargs = case
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    f = functools.partial(jaxconv.conv2d, **kwargs, impl="auto")
    jax.test_util.check_grads(f, (x, w), order=2, modes=["fwd", "rev"], atol=1e-5, rtol=1e-5)
    tx, tw = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    _, got = jax.jvp(f, (x, w), (tx, tw))
    _, want = jax.jvp(functools.partial(jaxconv.conv2d, **kwargs, impl="lax"), (x, w), (tx, tw))
    chex.assert_trees_all_close(got, want, atol=1e-10, rtol=1e-10)


def test_auto_transpose_forward_mode():
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((2, 3, 2, 2))
    f = functools.partial(jaxconv.conv_transpose2d, stride=2, impl="auto")
    jax.test_util.check_grads(f, (x, w), order=1, modes=["fwd", "rev"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["shift", "auto"])
def test_large_kernels(impl):
    # 81 and 169 taps: shift scans over taps instead of unrolling them; auto uses FFT.
    run_case((1, 3, 20, 19), (3, 1, 9, 9), dict(groups=3, padding=2, stride=2), impl=impl)
    run_case((1, 2, 16, 16), (4, 1, 13, 13), dict(groups=2, padding="same"), impl=impl)


def test_pytorch_conv_transpose3d_sample_gradient():
    """PyTorch's OpInfo sample that once crashed XLA's CPU compiler through shift."""
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((2, 2, 4, 4, 4)), rng.standard_normal((2, 2, 4, 5, 6))
    kwargs = dict(
        stride=(3, 2, 1), padding=(1, 2, 3), output_padding=(2, 3, 1), groups=2, dilation=(4, 4, 4)
    )

    def loss(x_, w_, impl):
        return jnp.sum(jaxconv.conv_transpose3d(x_, w_, **kwargs, impl=impl) ** 2)

    got = jax.grad(loss, argnums=(0, 1))(x, w, "shift")
    want = jax.grad(loss, argnums=(0, 1))(x, w, "lax")
    chex.assert_trees_all_close(got, want, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("impl", ["matmul", "auto"])
def test_matmul_in_batch_chunks(impl, monkeypatch, retrace):
    """Past its cache budget the matmul runs the batch in chunks: same values, gradients."""
    from jaxconv._impls import matmul

    monkeypatch.setattr(matmul, "PATCH_BYTES", 1)
    run_case((4, 4, 6, 5), (6, 2, 3, 3), dict(groups=2, padding=1), impl=impl)
    # Channels-last, one group: the chunks cut in the caller's layout.
    for cl_shapes, cl_kwargs in (
        (((4, 3, 6, 5, 7), (5, 3, 3, 2, 3)), dict(stride=(2, 1, 2), padding=1)),
        (((3, 2, 9), (4, 2, 3)), dict(dilation=2, padding=3)),
    ):
        run_case(*cl_shapes, cl_kwargs, impl=impl, channels_last=True)
    rng = np.random.default_rng(10)
    x, w = rng.standard_normal((3, 2, 5, 5)), rng.standard_normal((2, 2, 3, 3))
    for channels_last in (False, True):
        f = functools.partial(jaxconv.conv2d, stride=2, impl="matmul", channels_last=channels_last)
        args = (to_channels_last(x, 2), weight_to_channels_last(w)) if channels_last else (x, w)
        jax.test_util.check_grads(f, args, order=1, modes=["fwd", "rev"], atol=1e-5, rtol=1e-5)


def test_matmul_chunks_channels_last_transpose_only_the_weight(monkeypatch, retrace):
    """Channels-last, one group, `matmul`'s batch chunks are cut in the caller's layout:
    the compiled program transposes the weight and nothing else. Cut from the
    canonical input they transposed the whole input, and each chunk and its output back
    (3x3x3 stride 2 96->48 @12 batch 32: 30 -> 19 ms forward)."""
    from jaxconv._impls import matmul

    monkeypatch.setattr(matmul, "PATCH_BYTES", 1)
    x, w = jnp.zeros((4, 6, 5, 7, 3), jnp.float32), jnp.zeros((3, 2, 3, 3, 5), jnp.float32)

    def f(a, b):
        return jaxconv.conv3d(a, b, stride=(2, 1, 2), padding=1, channels_last=True, impl="matmul")

    hlo = jax.jit(f).lower(x, w).compile().as_text()
    shapes = re.findall(r"= f32\[([\d,]*)\]\{[\d,]*\} transpose\(", hlo)
    sizes = [math.prod(int(d) for d in shape.split(",")) for shape in shapes]
    assert sizes and all(size == w.size for size in sizes), shapes


@pytest.mark.parametrize("channels_last", [False, True])
def test_matmul_chunks_keep_the_padded_input_within_the_heap_block(
    channels_last, monkeypatch, retrace
):
    """A chunk's padded input stays within `lax.MALLOC_MAX_HEAP_BLOCK` (past it every
    call faults a fresh ``mmap`` in), whatever the patches' budget allows; same values."""
    from jaxconv._impls import matmul

    x_shape, w_shape, kwargs = (4, 3, 5, 6, 4), (4, 3, 2, 2, 2), dict(stride=3, padding=1)
    spec = jaxconv._spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    padded = matmul.padded_bytes(x_shape, spec, 4)  # run_case's float32
    assert padded == 3 * 7 * 8 * 6 * 4
    sizes = []
    forward = matmul._forward

    def spy(x, *args, **kw):
        sizes.append(x.shape[0])
        return forward(x, *args, **kw)

    monkeypatch.setattr(matmul, "_forward", spy)
    for block, chunk in [(4 * padded, 4), (4 * padded - 1, 2), (2 * padded - 1, 1)]:
        monkeypatch.setattr(matmul.lax_impl, "MALLOC_MAX_HEAP_BLOCK", block)
        sizes.clear()
        jax.clear_caches()
        run_case(x_shape, w_shape, kwargs, impl="matmul", channels_last=channels_last)
        assert sizes and set(sizes) == {chunk}, (block, sizes)


def test_half_precision_bias_gradient_accumulates_in_float32():
    """The bias gradient sums the cotangent over every output position: in bfloat16
    that sum is taken in float32 and rounded once (it was off by 2.5x of its largest
    entry on a 3-D layer when summed in bfloat16)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 5, 5, 5, 2)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((2, 2, 2, 1, 2)), jnp.bfloat16)
    b = jnp.asarray(rng.standard_normal((2,)), jnp.bfloat16)
    ct = jnp.asarray(rng.standard_normal((2, 6, 6, 6, 2)), jnp.bfloat16)
    exact = np.asarray(ct, np.float64).sum((0, 1, 2, 3))
    for impl in ("lax", "auto"):
        f = lambda a, c, d, impl=impl: jaxconv.conv3d(  # noqa: E731
            a, c, d, groups=2, padding=1, channels_last=True, impl=impl
        )
        _, vjp = jax.vjp(f, x, w, b)
        db = vjp(ct)[2]
        assert db.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(db, np.float64), exact, rtol=1e-2, atol=1e-6)
