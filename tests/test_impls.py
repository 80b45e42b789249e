"""The hand-written algorithms (einsum, matmul, fft) against lax and the reference.

`test_functional.py` runs the public grid for every name in `jaxconv.IMPLS`; this file
checks what is specific to these algorithms: canonical specs the public layer never
builds directly (negative padding, input dilation), that they really are hand-written
(no XLA convolution inside), their dtype handling, gradients equal to lax's, and the
transforms.
"""

import dataclasses
import functools
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jitted import compile_as_shipped, cotangent, values_and_vjps
from reference import conv as ref_conv
from reference import conv_transpose as ref_conv_transpose
from tolerance import assert_close, tolerance

import jaxconv
from jaxconv import _dispatch
from jaxconv._impls import FORWARDS, fft
from jaxconv._impls import matmul as matmul_impl
from jaxconv._impls import shift as shift_impl
from jaxconv._spec import ConvSpec

MINE = ("einsum", "matmul", "fft")
# Every hand-written algorithm, for the spec-level checks (the public grid in
# test_functional.py already runs all of them through the public API).
HAND = tuple(i for i in jaxconv.IMPLS if i != "lax")


@functools.cache
def jitted(impl):
    return jax.jit(FORWARDS[impl], static_argnums=2)


def spec(n=2, stride=1, padding=0, lhs=1, rhs=1, groups=1, precision=None):
    tup = lambda v: (v,) * n if isinstance(v, int) else tuple(v)  # noqa: E731
    pads = ((padding, padding),) * n if isinstance(padding, int) else tuple(padding)
    return ConvSpec(tup(stride), pads, tup(lhs), tup(rhs), groups, precision)


def arrays(rng, x_shape, w_shape, dtype=np.float64):
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    if np.issubdtype(np.dtype(dtype), np.complexfloating):
        x = x + 1j * rng.standard_normal(x_shape)
        w = w + 1j * rng.standard_normal(w_shape)
    # Cast by NumPy: a cast by JAX compiles a program for each shape.
    return device(x.astype(dtype)), device(w.astype(dtype))


def device(a):
    """A NumPy array on the device, without compiling anything (`jnp.asarray` compiles
    a copy or a cast unless given the array's own dtype)."""
    a = np.asarray(a)
    return jnp.asarray(a, a.dtype)


def forwards(*names, spec):
    """``FORWARDS[name](a, b, spec)`` as a function of ``(a, b)``, for each name."""
    return [lambda a, b, name=name: FORWARDS[name](a, b, spec) for name in names]


def reduction(w_shape):
    return math.prod(w_shape[1:])


# (x shape, w shape, spec): canonical convolutions, including what only transposed
# convolutions produce (input dilation, negative padding).
SPECS = {
    "1d_stride_dilation": ((1, 2, 11), (3, 2, 2), spec(1, stride=3, rhs=2, padding=1)),
    "2d_asym_pad_groups": ((2, 4, 6, 7), (6, 2, 3, 2), spec(2, padding=((1, 2), (0, 3)), groups=2)),
    "2d_depthwise": ((1, 3, 6, 6), (6, 1, 3, 3), spec(2, stride=2, padding=1, groups=3)),
    "2d_negative_pad": ((1, 2, 8, 9), (3, 2, 2, 3), spec(2, padding=((-1, 2), (1, -2)))),
    "2d_lhs_dilation": ((1, 2, 4, 5), (2, 2, 3, 3), spec(2, lhs=(2, 3), padding=((2, 1), (1, 2)))),
    "2d_1x1_stride": ((2, 4, 7, 6), (5, 4, 1, 1), spec(2, stride=(2, 3))),
    "2d_1x1_groups_pad": ((1, 6, 5, 5), (4, 3, 1, 1), spec(2, padding=((1, 0), (0, 2)), groups=2)),
    "3d_all": ((1, 2, 5, 6, 5), (2, 1, 2, 3, 2), spec(3, (1, 2, 1), 1, (2, 1, 1), (1, 1, 2), 2)),
    # One input pixel (matmul's gathered-kernel product): a DCGAN-like transposed
    # convolution from 1x1, and a 3-D one with stride, dilation and a cropped side.
    "2d_single_pixel": ((2, 4, 1, 1), (6, 2, 4, 4), spec(2, lhs=2, padding=3, groups=2)),
    "3d_single_pixel": (
        (1, 2, 1, 1, 1),
        (3, 2, 2, 3, 2),
        spec(3, stride=(2, 1, 3), padding=((1, 2), (-1, 2), (3, 0)), rhs=(2, 1, 1)),
    ),
}


@pytest.mark.parametrize("impl", HAND)
def test_registered(impl):
    assert impl in jaxconv.IMPLS
    assert FORWARDS[impl].__module__ == f"jaxconv._impls.{impl}"


@pytest.mark.parametrize("impl", HAND)
@pytest.mark.parametrize("case", list(SPECS))
def test_forward_matches_lax_and_reference(impl, case):
    x_shape, w_shape, s = SPECS[case]
    x, w = arrays(np.random.default_rng(0), x_shape, w_shape)
    got = jitted(impl)(x, w, s)
    want = jitted("lax")(x, w, s)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert_close(got, want, reduction=reduction(w_shape))
    if all(d == 1 for d in s.lhs_dilation):
        # The reference knows no negative padding: crop first, then pad the rest.
        crop = tuple(
            slice(max(-lo, 0), m - max(-hi, 0))
            for (lo, hi), m in zip(s.padding, x_shape[2:], strict=True)
        )
        pads = [(max(lo, 0), max(hi, 0)) for lo, hi in s.padding]
        ref = ref_conv(
            np.asarray(x)[(slice(None), slice(None), *crop)],
            np.asarray(w),
            None,
            s.stride,
            pads,
            s.rhs_dilation,
            s.groups,
        )
        assert_close(got, ref, reduction=reduction(w_shape))


@pytest.mark.parametrize("impl", [i for i in HAND if i != "subpixel"])  # it calls lax
def test_no_xla_convolution_inside(impl):
    x, w = arrays(np.random.default_rng(1), (1, 4, 6, 6), (4, 2, 3, 3))
    text = str(jax.make_jaxpr(FORWARDS[impl], static_argnums=2)(x, w, spec(2, groups=2)))
    assert "conv_general_dilated" not in text


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((3, 8, 1, 1), (8, 6, 4, 4), dict(groups=2)),  # DCGAN's first layer, grouped
        ((2, 3, 1), (3, 2, 5), dict(stride=2, padding=1, dilation=2, output_padding=1)),
        ((1, 2, 1, 1, 1), (2, 3, 2, 1, 3), dict(stride=(1, 2, 2), padding=(0, 0, 1))),
    ],
)
def test_single_pixel_matmul_gradients(x_shape, w_shape, kwargs):
    """`matmul`'s one-pixel product (which `auto` picks for it) differentiates to
    XLA's gradients, both arguments."""
    x, w = arrays(np.random.default_rng(3), x_shape, w_shape)

    def grads(impl, a, b):
        loss = lambda a, b: jnp.sum(jnp.sin(jaxconv.conv_transpose(a, b, **kwargs, impl=impl)))  # noqa: E731
        return jax.grad(loss, (0, 1))(a, b)

    impls = ("matmul", "auto", "lax")
    every = jax.jit(lambda a, b: [grads(impl, a, b) for impl in impls])(x, w)
    for impl, grads_impl in zip(impls[:2], every[:2], strict=True):
        for got, want in zip(grads_impl, every[-1], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=impl)


def test_matmul_1x1_is_one_dot():
    x, w = arrays(np.random.default_rng(2), (2, 6, 7, 7), (4, 3, 1, 1))
    jaxpr = jax.make_jaxpr(FORWARDS["matmul"], static_argnums=2)(x, w, spec(2, 2, 0, groups=2))
    prims = [e.primitive.name for e in jaxpr.jaxpr.eqns]
    assert prims.count("dot_general") == 1
    assert "concatenate" not in prims


def _assert_matmul_is_lax(rng, x, w, s):
    """`matmul`'s value and both gradients (for a random cotangent) are XLA's."""
    fs = forwards("matmul", "lax", spec=s)
    ct = rng.standard_normal(jax.eval_shape(fs[1], x, w).shape)
    (got, *grads_got), (want, *grads_want) = values_and_vjps(fs, (x, w), ct)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    for g, h in zip(grads_got, grads_want, strict=True):
        np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,per_image",
    [
        ((3, 6, 5, 5), (4, 6, 1, 1), dict(), True),  # 25 positions, 6 channels
        ((2, 8, 9, 7), (5, 8, 1, 1), dict(stride=2, padding=1), True),
        ((2, 4, 5, 6, 7), (3, 4, 1, 1, 1), dict(padding=((1, 1), (0, 0), (2, 2))), True),
        ((2, 30, 5, 5), (4, 30, 1, 1), dict(), False),  # 25 positions, 30 channels
        ((2, 30, 9, 9), (4, 30, 1, 1), dict(stride=2), False),  # 25 positions
        ((2, 1, 40), (12, 1, 5), dict(stride=2), True),  # 5 deep, 12 out, 18 positions
        ((2, 2, 40), (12, 2, 3), dict(padding=((1, 2),)), True),
        ((2, 3, 40), (12, 3, 5), dict(), False),  # 15 deep
        ((2, 1, 12), (12, 1, 5), dict(stride=2), False),  # 4 positions
        ((2, 2, 9, 9), (16, 2, 2, 2), dict(), True),  # 2-D
    ],
)
def test_matmul_channels_first_per_image(x_shape, w_shape, kwargs, per_image):
    """Channels-first `matmul` is one product per image (a dot with a batch dim) for
    1x1 kernels with at least as many output positions as channels, and for patches
    no deeper than the output channels, with at least as many positions; its value and
    both gradients are XLA's."""
    rng = np.random.default_rng(4)
    x, w = arrays(rng, x_shape, w_shape)
    s = spec(len(x_shape) - 2, **kwargs)
    jaxpr = jax.make_jaxpr(FORWARDS["matmul"], static_argnums=2)(x, w, s)
    (dot,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    (_, (batch, _)) = dot.params["dimension_numbers"]
    assert bool(batch) == per_image
    _assert_matmul_is_lax(rng, x, w, s)


@pytest.mark.parametrize(
    "w_shape, kwargs, caller",
    [
        ((1, 1, 16, 48), {}, True),  # 768 weights, 512 inputs
        ((3, 3, 16, 16), dict(padding=1), True),
        ((1, 1, 16, 8), dict(stride=2), False),  # 128 weights
    ],
)
def test_matmul_channels_last_reads_the_callers_weight(w_shape, kwargs, caller):
    """Channels-last `matmul` with a weight at least as large as the input contracts the
    caller's ``(*K, C_in, C_out)`` weight as it is: the compiled program reads it only
    through bitcasts and the product, with no transposed copy (smaller weights keep the
    canonical one, whose copy is cheap); value and gradients as lax's."""
    import re

    x = np.random.default_rng(6).standard_normal((2, 4, 4, 16)).astype(np.float32)
    w = np.random.default_rng(7).standard_normal(w_shape).astype(np.float32)
    assert (w.size >= x.size) == caller

    def conv(impl):
        return lambda a, b: jaxconv.conv2d(a, b, channels_last=True, impl=impl, **kwargs)

    text = compile_as_shipped(conv("matmul"), x, w).as_text()
    entry = text[text.index("ENTRY") :]
    (name,) = re.findall(r"(%\S+) = f32\[[\d,]+\]\{[\d,]+\} parameter\(1\)", entry)
    users = [line for line in entry.splitlines() if f"{name}," in line or f"{name})" in line]
    copies = [line for line in users if not re.search(r"= f32\S+ (bitcast|dot)\(|kCustom", line)]
    assert bool(copies) != caller, users
    ct = cotangent(conv("lax"), x, w)
    (y, *grads), (y_lax, *grads_lax) = values_and_vjps([conv("matmul"), conv("lax")], (x, w), ct)
    assert_close(y, y_lax, dtype=np.float32, reduction=16 * math.prod(w_shape[:2]))
    for g, h in zip(grads, grads_lax, strict=True):
        assert_close(g, h, dtype=np.float32, reduction=16 * math.prod(w_shape[:2]) * 32)


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,rows_first",
    [
        ((2, 30, 5, 5), (4, 30, 1, 1), dict(), True),  # 50 positions in the batch
        ((8, 20, 7, 7), (3, 20, 1, 1), dict(), True),  # 392
        ((2, 30, 9, 9), (4, 30, 1, 1), dict(stride=2), True),  # 2 x 25
        ((3, 20, 3, 2, 3), (5, 20, 1, 1, 1), dict(), True),  # 3-D, 54
        ((2, 40, 7), (6, 40, 1), dict(), True),  # 1-D, 14
        ((1, 30, 5, 5), (4, 30, 1, 1), dict(), False),  # batch 1: no transposes otherwise
        ((2, 40, 4, 4), (6, 40, 1, 1), dict(), False),  # 32 positions, a multiple of 16
        ((4, 20, 2, 2), (3, 20, 1, 1), dict(), False),  # 16
        ((2, 30, 5, 5), (4, 30, 3, 3), dict(padding=1), False),  # patches keep columns
        # The batch's positions a multiple of 16, one image's not: rows to at most half
        # as many channels.
        ((16, 64, 7, 7), (32, 64, 1, 1), dict(), True),
        ((16, 64, 7, 7), (33, 64, 1, 1), dict(), False),
        ((4, 40, 6, 6), (20, 40, 1, 1), dict(), True),
        ((4, 40, 6, 6), (21, 40, 1, 1), dict(), False),
        ((2, 40, 4, 4), (3, 40, 1, 1), dict(), False),  # 16 per image
        ((2, 80, 8, 8), (6, 80, 1, 1), dict(), False),  # 64 per image
        ((1, 64, 7, 7), (8, 64, 1, 1), dict(), False),  # batch 1
    ],
)
def test_matmul_1x1_rows_first(x_shape, w_shape, kwargs, rows_first):
    """Channels-first 1x1 `matmul` on maps with fewer positions than channels takes the
    batch's positions as the product's rows (the input is the dot's first operand) from
    batch 2 when they are not a multiple of 16, or when one image's are not and the
    layer goes to at most half as many channels as it takes, else as its columns; the
    value and both gradients are XLA's either way."""
    rng = np.random.default_rng(5)
    x, w = arrays(rng, x_shape, w_shape)
    s = spec(len(x_shape) - 2, **kwargs)
    out = s.out_spatial(x_shape[2:], w_shape[2:])
    if math.prod(w_shape[2:]) == 1:
        assert matmul_impl.rows_first(x_shape[0], out, w_shape[1], w_shape[0]) == rows_first
    jaxpr = jax.make_jaxpr(FORWARDS["matmul"], static_argnums=2)(x, w, s)
    (dot,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    assert (dot.invars[0].aval.shape[0] == x_shape[0]) == rows_first
    _assert_matmul_is_lax(rng, x, w, s)


@pytest.mark.parametrize(
    "x_shape,c_out,alone",
    [
        ((16, 24, 7, 7), 128, True),  # 49 positions, 784 rows
        ((4, 12, 10, 10), 128, True),  # 100 positions, 400 rows
        ((16, 8, 5, 5), 32, True),  # 25 positions, 400 rows
        ((32, 8, 3, 7), 64, True),  # 21 positions, 672 rows
        ((16, 8, 4, 6), 32, False),  # 384 rows
        ((16, 8, 3, 7), 64, False),  # 336 rows
        ((16, 8, 11, 11), 128, False),  # 121 positions
        ((16, 8, 1, 101), 128, False),  # 101 positions
        ((32, 8, 4, 4), 64, False),  # 16 positions
        ((48, 8, 3, 3), 64, False),  # 9 positions, 432 rows
        ((16, 8, 4, 8), 64, False),  # 32 positions, a multiple of 16
        ((1, 8, 7, 7), 64, False),  # batch 1
    ],
)
def test_matmul_1x1_rows_first_alone(x_shape, c_out, alone, monkeypatch):
    """A channels-first 1x1 value computed alone (not differentiated) also takes the
    batch's positions as the product's rows to more than half as many channels as it
    takes, from batch 2 on maps of 17-100 positions (not a multiple of 16) and at least
    400 rows in the batch; under differentiation its columns, as before. `auto`'s value
    and gradients are XLA's either way."""
    n, c_in, *sp = x_shape
    assert not matmul_impl.rows_first(n, sp, c_in, c_out)
    assert matmul_impl.rows_first(n, sp, c_in, c_out, alone=True) == alone
    rng = np.random.default_rng(6)
    x, w = arrays(rng, x_shape, (c_out, c_in, 1, 1))
    s = spec(2)

    def first_operand_rows(f):
        jaxpr = jax.make_jaxpr(f, static_argnums=2)(x, w, s)
        (dot,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
        return dot.invars[0].aval.shape[0] == n

    value = functools.partial(matmul_impl.forward, value=True)
    assert first_operand_rows(functools.partial(value, alone=True)) == alone
    assert not first_operand_rows(value)
    # Through `auto`, and the algorithms named per role (`jaxconv._autotune`'s;
    # `impl="matmul"` is `matmul.forward` as it is): the value alone asks with
    # ``alone``, under differentiation without.
    asked = []
    real = matmul_impl.rows_first

    def spy(n, out, c_in, c_out, alone=False):
        asked.append(alone)
        return real(n, out, c_in, c_out, alone)

    monkeypatch.setattr(matmul_impl, "rows_first", spy)
    named = functools.partial(_dispatch.forward_with, spec=s, names=("matmul",) * 3)
    for conv in (functools.partial(jaxconv.conv2d, impl="auto"), named):
        asked.clear()
        jax.make_jaxpr(conv)(x, w)
        assert asked == [True]
        asked.clear()
        jax.make_jaxpr(lambda a, b, conv=conv: jax.vjp(conv, a, b)[0])(x, w)
        assert asked and not any(asked)
    monkeypatch.undo()
    conv = functools.partial(jaxconv.conv2d, impl="auto")
    fs = (conv, functools.partial(jaxconv.conv2d, impl="lax"))
    np.testing.assert_allclose(jax.jit(fs[0])(x, w), jax.jit(fs[1])(x, w), rtol=1e-10, atol=1e-10)
    ct = rng.standard_normal((n, c_out, *sp))
    (_, *got), (_, *want) = values_and_vjps(fs, (x, w), ct)
    for g, h in zip(got, want, strict=True):
        np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", MINE)
def test_precision_reaches_every_dot(impl):
    x, w = arrays(np.random.default_rng(3), (1, 2, 5, 5), (2, 2, 2, 2), np.float32)
    s = spec(2, precision=jax.lax.Precision.HIGHEST)
    jaxpr = jax.make_jaxpr(FORWARDS[impl], static_argnums=2)(x, w, s)
    dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    assert dots
    for e in dots:
        assert e.params["precision"] in (
            jax.lax.Precision.HIGHEST,
            (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST),
        )


# ----------------------------------------------------------------------------- public API

PUBLIC = {
    "same_dilated_stride": ((2, 3, 9, 8), (4, 3, 3, 2), dict(stride=2, padding="same", dilation=2)),
    "tf_same": ((3, 3, 7), (2, 3, 3), dict(stride=(2,), padding="tf_same")),
    "causal_1d": ((2, 2, 10), (3, 2, 4), dict(padding="causal", dilation=2)),
    "full_pairs": ((1, 2, 5, 4), (2, 2, 2, 3), dict(padding=((0, 2), (1, 0)))),
    "batch_dims_depthwise": ((2, 2, 4, 6, 6), (4, 1, 3, 3), dict(padding=1, groups=4)),
}
CHANNELS_LAST = ("tf_same", "batch_dims_depthwise")  # these run channels-last


@pytest.mark.parametrize("impl", MINE)
@pytest.mark.parametrize("case", list(PUBLIC))
def test_public_conv_matches_reference(impl, case):
    x_shape, w_shape, kwargs = PUBLIC[case]
    channels_last = case in CHANNELS_LAST
    n = len(w_shape) - 2
    x, w = arrays(np.random.default_rng(4), x_shape, w_shape)
    b = device(np.random.default_rng(5).standard_normal(w_shape[0]))
    flat = np.asarray(x).reshape((-1, *x_shape[-n - 1 :]))
    pads = jaxconv.resolve_padding(
        kwargs.get("padding", 0),
        w_shape[2:],
        kwargs.get("stride", 1),
        kwargs.get("dilation", 1),
        x_shape[-n:],
    )
    ref = ref_conv(
        flat,
        np.asarray(w),
        np.asarray(b),
        kwargs.get("stride", 1),
        pads,
        kwargs.get("dilation", 1),
        kwargs.get("groups", 1),
    )
    # (lax's program is compiled once for the three algorithms; the layouts are moved
    # by NumPy, which compiles nothing.)
    want = jaxconv.conv(x, w, b, **kwargs, impl="lax")
    if channels_last:
        xc = device(np.moveaxis(np.asarray(x), -n - 1, -1))
        wc = device(np.transpose(np.asarray(w), (*range(2, n + 2), 1, 0)))
        got = jaxconv.conv(xc, wc, b, **kwargs, channels_last=True, impl=impl)
        got = np.moveaxis(np.asarray(got), -1, -n - 1)
    else:
        got = np.asarray(jaxconv.conv(x, w, b, **kwargs, impl=impl))
    assert got.shape == want.shape
    assert_close(got, want, reduction=reduction(w_shape))
    assert_close(got.reshape(ref.shape), ref, reduction=reduction(w_shape))


@pytest.mark.parametrize("impl", MINE)
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_public_padding_modes(impl, mode):
    x, w = arrays(np.random.default_rng(6), (1, 2, 6, 5), (3, 2, 3, 2))
    got = jaxconv.conv2d(x, w, None, 1, (2, 1), padding_mode=mode, impl=impl)
    ref = ref_conv(x, w, None, 1, [(2, 2), (1, 1)], padding_mode=mode)
    assert_close(got, ref, reduction=12)


@pytest.mark.parametrize("impl", MINE)
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 4, 5), (4, 3, 3), dict(stride=3, padding=1, output_padding=2, groups=2)),
        (
            (1, 6, 3, 4),
            (6, 1, 3, 2),
            dict(stride=(2, 3), padding=(1, 0), output_padding=1, groups=3, dilation=(1, 2)),
        ),
        ((1, 2, 3, 2, 3), (2, 2, 2, 2, 2), dict(stride=2, padding=1, output_padding=(1, 0, 1))),
    ],
    ids=["1d_groups", "2d_depthwise_dilated", "3d"],
)
def test_public_conv_transpose_matches_reference(impl, x_shape, w_shape, kwargs):
    x, w = arrays(np.random.default_rng(7), x_shape, w_shape)
    got = jaxconv.conv_transpose(x, w, **kwargs, impl=impl)
    want = ref_conv_transpose(x, w, **kwargs)
    assert_close(got, want, reduction=math.prod(w_shape[2:]) * w_shape[0])


def _xla_convolutions(jaxpr):
    """Every ``conv_general_dilated`` equation of ``jaxpr``, its sub-jaxprs' included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's jaxpr
                if hasattr(sub, "eqns"):
                    yield from _xla_convolutions(sub)


@pytest.mark.parametrize("impl", [*jaxconv.IMPLS, "auto"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "transpose, x_shape, w_shape, kwargs",
    [
        # Sub-pixel phases of low padding (-1, 1): the fuzz's layer, made small.
        (
            True,
            (2, 2, 16, 16),
            (2, 3, 3, 7),
            dict(stride=(3, 1), padding=(1, 6), output_padding=(2, 0), dilation=(2, 1)),
        ),
        # Canonical padding (-1, 1), input-dilated (XLA gets it right): padding past the
        # kernel, output padding past that.
        (True, (2, 3, 9), (3, 2, 2), dict(stride=3, padding=2, output_padding=2)),
        # Low padding past the kernel: JAX's input gradients would pad (-1, 2), (-2, 1).
        (False, (2, 2, 9, 8), (3, 2, 3, 3), dict(padding=((3, 0), (0, 1)))),
        (False, (2, 4, 12), (4, 2, 1), dict(padding=((2, 0),), stride=3, groups=2)),
    ],
    ids=["phases", "transposed", "past_kernel", "grouped_1x1"],
)
def test_no_convolution_xla_gets_wrong(transpose, x_shape, w_shape, kwargs, channels_last, impl):
    """No XLA convolution in the float32 value and gradients has a low padding XLA's CPU
    convolution computes wrong (`lax.low_padding_breaks`: it read memory outside its
    input, up to 1e38 in the weight gradient), and they equal float64 lax's."""
    from jaxconv._impls import lax as lax_impl

    fn = jaxconv.conv_transpose if transpose else jaxconv.conv
    x, w = arrays(np.random.default_rng(11), x_shape, w_shape)
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.moveaxis(w, (0, 1), (-1, -2))

    def conv(name):
        return lambda a, b: fn(a, b, **kwargs, channels_last=channels_last, impl=name)

    ct = np.random.default_rng(12).standard_normal(jax.eval_shape(conv("lax"), x, w).shape)
    args32 = (x.astype(np.float32), w.astype(np.float32))
    program = jax.make_jaxpr(lambda a, b, c: jax.vjp(conv(impl), a, b)[1](c))
    jaxpr = program(*args32, ct.astype(np.float32)).jaxpr
    for eqn in _xla_convolutions(jaxpr):
        params = (eqn.params["padding"], eqn.params["lhs_dilation"], eqn.params["rhs_dilation"])
        assert not lax_impl.low_padding_breaks(*params), eqn
    (got,) = values_and_vjps([conv(impl)], args32, ct.astype(np.float32))
    (want,) = values_and_vjps([conv("lax")], (x, w), ct)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, reduction=4 * math.prod(w_shape) * x_shape[0])


def test_low_padding_safe_keeps_the_convolution():
    """`lax.low_padding_safe` leaves every dim's low padding in ``[0, dilation * (K -
    1)]`` (writing an input dilation out where a crop cannot), and `lax.forward` on it
    equals XLA's float64 convolution on the spec as given, over low paddings -6..4,
    input dilations 1-3, kernels 1-3 and dilations 1-2 (high padding 2 - low)."""
    from jax import lax

    from jaxconv._impls import lax as lax_impl

    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5))
    checked = 0
    for lo, ld, k, d in itertools.product(range(-6, 5), (1, 2, 3), (1, 2, 3), (1, 2)):
        s = spec(n=1, padding=((lo, 2 - lo),), lhs=ld, rhs=d)
        w = rng.standard_normal((3, 2, k))
        if s.out_spatial(x.shape[2:], w.shape[2:])[0] < 1:
            continue
        checked += 1
        want = lax.conv_general_dilated(
            x, w, (1,), s.padding, lhs_dilation=s.lhs_dilation, rhs_dilation=s.rhs_dilation
        )
        safe = lax_impl.low_padding_safe(x, w.shape[2:], s)
        if safe is None:
            np.testing.assert_array_equal(want, 0)
        else:
            (low, _), extent = safe[1].padding[0], d * (k - 1)
            assert 0 <= low <= extent, (lo, ld, k, d, safe[1])
        np.testing.assert_allclose(lax_impl.forward(x, w, s), want, rtol=1e-12, atol=1e-12)
    assert checked > 100


@pytest.mark.parametrize("impl", [*jaxconv.IMPLS, "auto"])
@pytest.mark.parametrize("groups", [1, 3])
def test_windows_meeting_only_padding(impl, groups):
    """A transposed convolution whose input maps wholly outside its output (padding 1,
    dilation 5, output padding 4, a 1-tap kernel on a length-1 input; canonical low
    padding -1 crops the whole input, `lax.padding_only`): the bias alone, zero
    gradients, as the reference."""
    x, w = arrays(np.random.default_rng(5), (2, 3, 1), (3, 2, 1))
    b = np.arange(w.shape[1] * groups, dtype=np.float64)
    kwargs = dict(stride=1, padding=1, output_padding=4, dilation=5, groups=groups)

    def conv(a, c):
        return jaxconv.conv_transpose1d(a, c, b, **kwargs, impl=impl)

    ct = np.ones(jax.eval_shape(conv, x, w).shape)
    ((y, dx, dw),) = values_and_vjps([conv], (x, w), ct)
    np.testing.assert_array_equal(y, ref_conv_transpose(x, w, b, **kwargs))
    np.testing.assert_array_equal(dx, np.zeros(x.shape))
    np.testing.assert_array_equal(dw, np.zeros(w.shape))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, merged",
    [
        ((2, 6, 5, 4), (6, 3, 2, 2), dict(stride=2), True),  # U-Net's up-convolution
        ((2, 6, 5, 4), (6, 3, 3, 2), dict(stride=(3, 2)), True),
        ((2, 6, 7), (6, 4, 4), dict(stride=4), True),
        ((1, 4, 3, 2, 3), (4, 2, 2, 2, 2), dict(stride=2), True),
        ((2, 6, 5, 4), (6, 3, 2, 3), dict(stride=(2, 1), padding=(0, 1)), True),
        ((2, 6, 5, 4), (6, 3, 2, 2), dict(stride=2, padding=1), False),  # phases differ
        ((2, 6, 5, 4), (6, 3, 2, 2), dict(stride=2, output_padding=1), False),
        ((2, 6, 5, 4), (6, 3, 4, 4), dict(stride=2, padding=1), False),  # 2x2 taps each
        ((2, 6, 5, 4), (6, 1, 2, 2), dict(stride=2, groups=2), False),
    ],
)
def test_subpixel_one_tap_phases_in_one_convolution(
    x_shape, w_shape, kwargs, merged, channels_last
):
    """A transposed convolution whose every phase is one tap at one offset (kernel =
    stride, no padding) runs all phases as one convolution with the phases' kernels
    stacked along the output channels; values and gradients equal lax's, under
    ``subpixel`` and ``auto``."""
    _assert_phases_path("_merged", x_shape, w_shape, kwargs, merged, channels_last, seed=3)


def _assert_phases_path(path, x_shape, w_shape, kwargs, taken, channels_last, seed):
    """Whether `subpixel`'s function ``path`` computes the transposed convolution under
    ``subpixel`` and (on the CPU) ``auto`` is ``taken``; values and gradients equal
    lax's either way."""
    from jaxconv._impls import subpixel

    rng = np.random.default_rng(seed)
    x, w = arrays(rng, x_shape, w_shape)
    if channels_last:
        x = device(np.moveaxis(np.asarray(x), 1, -1))
        w = device(np.moveaxis(np.asarray(w), (0, 1), (-1, -2)))
    calls = []  # the algorithm whose convolution was being traced, for each call
    tracing = []
    real = getattr(subpixel, path)

    def spy(*args):
        if tracing:
            calls.append(tracing[-1])
        return real(*args)

    def conv(impl):
        def f(a, b):
            # (The spy sees the trace of the value and its derivatives, which `jax.vjp`
            # traces while it calls this; not the transposition that `vjp` runs later.)
            tracing.append(impl)
            try:
                return jaxconv.conv_transpose(
                    a, b, **kwargs, channels_last=channels_last, impl=impl
                )
            finally:
                tracing.pop()

        return f

    impls = ("subpixel", "auto", "lax")
    ct = rng.standard_normal(jax.eval_shape(conv("lax"), x, w).shape)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subpixel, path, spy)
        jax.clear_caches()  # the spy sees traces only, and another test may hold one
        # The values and gradients of all three in one compiled program.
        *every, (y_lax, *grads_lax) = values_and_vjps([conv(i) for i in impls], (x, w), ct)
    on_cpu = jax.default_backend() == "cpu"  # auto splits phases on the CPU only
    for impl, (y, *grads) in zip(impls[:2], every, strict=True):
        assert (impl in calls) == (taken and (impl == "subpixel" or on_cpu)), impl
        np.testing.assert_allclose(y, y_lax, rtol=1e-10, atol=1e-10)
        for got, want in zip(grads, grads_lax, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


# Each layer in one layout, the two layouts alternating (both for the first two).
_STACKED_PHASES = [
    ((2, 6, 5, 4), (6, 3, 5, 5), dict(stride=2), True),  # 3 and 2 taps: 1.44x
    ((2, 6, 5, 4), (6, 3, 4, 4), dict(stride=2), True),  # 2 taps each, one offset
    ((2, 6, 9), (6, 4, 5), dict(stride=2), True),
    ((1, 4, 3, 2, 3), (4, 2, 4, 4, 4), dict(stride=2), True),
    ((2, 6, 5, 4), (6, 3, 4, 3), dict(stride=(2, 1), padding=(0, 1)), True),
    ((2, 6, 5, 4), (6, 3, 5, 5), dict(stride=2, output_padding=1), True),
    ((2, 6, 5, 7), (6, 3, 6, 6), dict(stride=3, padding=(1, 2)), False),  # 2.25x
    ((2, 6, 5, 4), (6, 3, 4, 4), dict(stride=2, padding=1), False),  # 2.25x the taps
    ((2, 6, 5, 4), (6, 17, 5, 5), dict(stride=2), False),  # 17 output channels
    ((2, 6, 5, 4), (6, 40, 4, 4), dict(stride=2), True),  # no zero taps: up to 64
    ((2, 6, 5, 4), (6, 65, 4, 4), dict(stride=2), False),
    ((2, 6, 5, 4), (6, 1, 5, 5), dict(stride=2, groups=2), False),
    ((2, 6, 5, 4), (6, 3, 3, 3), dict(stride=2, dilation=2), False),  # phases missing
]


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, stacked, channels_last",
    [(*_STACKED_PHASES[0], True), (*_STACKED_PHASES[1], False)]
    + [(*case, i % 2 == 1) for i, case in enumerate(_STACKED_PHASES)],
)
def test_subpixel_stacks_the_phases_of_few_output_channels(
    x_shape, w_shape, kwargs, stacked, channels_last
):
    """A transposed convolution to at most 16 channels whose phases share a window of at
    most 1.5x the kernel's taps (to at most 64 where it has exactly the kernel's taps)
    runs every phase as one convolution, the phases' kernels placed in that window and
    stacked along the output channels; values and gradients equal lax's, under
    ``subpixel`` and ``auto``."""
    _assert_phases_path("_stacked", x_shape, w_shape, kwargs, stacked, channels_last, seed=4)


def test_subpixel_shifted_phases_of_undilated_kernels_rotate():
    """Wherever the phases of an undilated kernel share a window (`shifted_window`: as
    many taps each), each dim has a rotation (`subpixel._rotations`): phase ``r``'s part
    of the window starts ``(r + c) // L`` positions in, so one interleave and a crop
    place every phase. Over every stride 2-5, kernel 1-8, low padding -8 to 8 and high
    padding -4 to 4, on inputs of 5-7."""
    from jaxconv._impls import subpixel

    shared = 0
    for ld, k, lo, hi, n in itertools.product(
        range(2, 6), range(1, 9), range(-8, 9), range(-4, 5), range(5, 8)
    ):
        s = spec(1, padding=((lo, hi),), lhs=ld)
        x_shape, w_shape = (1, 1, n), (1, 1, k)
        if s.out_spatial((n,), (k,))[0] <= 0:
            continue
        window = subpixel.shifted_window(x_shape, w_shape, s)
        if window is None:
            continue
        shared += 1
        per_dim = subpixel._per_dim(x_shape, w_shape, s)
        assert subpixel._rotations(per_dim, s, window) is not None, (ld, k, lo, hi, n)
    assert shared > 1000


@pytest.mark.parametrize(
    "x_shape, w_shape, padding, lhs, rhs, by",
    [
        ((2, 3, 5, 4), (65, 3, 4, 4), 2, 2, 1, "interleaved"),  # 4x4 stride 2 padding 1
        ((2, 3, 5, 4), (65, 3, 3, 3), 1, 3, 1, "interleaved"),  # 3x3 stride 3 padding 1
        ((2, 3, 5, 4), (65, 3, 3, 3), ((0, 3), (1, 1)), 3, 1, "interleaved"),
        ((2, 3, 5, 4), (65, 3, 3, 3), ((2, 3), (2, 4)), 3, 1, "interleaved"),  # c = 0
        ((2, 3, 5, 4), (65, 3, 6, 6), ((4, 4), (3, 5)), 3, 1, "interleaved"),  # 2 taps each
        ((2, 3, 5, 4), (65, 3, 4, 2), ((2, 3), (1, 0)), (2, 1), 1, "interleaved"),
        ((2, 3, 5, 4), (65, 3, 3, 2), ((0, 1), (1, 2)), (3, 2), 1, "interleaved"),
        ((2, 3, 9), (65, 3, 8), ((-2, 1),), 4, 1, "interleaved"),  # cropping the input
        ((1, 3, 3, 2, 3), (65, 3, 4, 4, 4), 2, 2, 1, "interleaved"),
        ((2, 3, 5, 4), (65, 3, 4, 4), 8, 2, 3, "pieces"),  # dilated: no rotation
        ((2, 3, 9), (65, 3, 3), ((3, 3),), 3, 2, "pieces"),
    ],
)
def test_subpixel_shifted_phases_equal_lax(x_shape, w_shape, padding, lhs, rhs, by):
    """`subpixel.decompose` with ``shifted`` (as ``auto`` calls it) computes phases that
    share a window in one convolution, interleaved and cropped where every dim has a
    rotation (`_shifted_interleaved`), cut phase by phase otherwise (`_shifted_pieces`);
    its value and gradients equal XLA's convolution's, channels-first and with the
    channels-last hint. (To 65 channels, past those `_stacked` takes.)"""
    from jaxconv._impls import subpixel

    nd = len(x_shape) - 2
    s = spec(nd, padding=padding, lhs=lhs, rhs=rhs)
    x, w = arrays(np.random.default_rng(6), x_shape, w_shape)
    assert subpixel.shifted_window(x.shape, w.shape, s) is not None
    taken = []
    fs = [
        functools.partial(lambda a, b, h: subpixel.decompose(a, b, h, FORWARDS["lax"], True), h=h)
        for h in (s, dataclasses.replace(s, channels_last=True))
    ] + forwards("lax", spec=s)
    ct = np.random.default_rng(7).standard_normal(jax.eval_shape(fs[-1], x, w).shape)
    with pytest.MonkeyPatch.context() as mp:
        for name in ("_shifted_interleaved", "_shifted_pieces"):
            mp.setattr(subpixel, name, _spying(getattr(subpixel, name), taken, name))
        *every, want = values_and_vjps(fs, (x, w), device(ct))
    assert taken == [f"_shifted_{by}"] * 2
    for got in every:
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def _spying(real, calls, name):
    """``real``, appending ``name`` to ``calls`` at each call."""

    def spy(*args):
        calls.append(name)
        return real(*args)

    return spy


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("impl", MINE)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.complex64])
def test_dtypes(impl, dtype):
    x, w = arrays(np.random.default_rng(8), (2, 4, 7, 6), (4, 2, 3, 3), dtype)
    s = spec(2, stride=(1, 2), padding=1, rhs=(2, 1), groups=2)
    got = jitted(impl)(x, w, s)
    assert got.dtype == jnp.dtype(dtype)
    wide = np.complex128 if jnp.iscomplexobj(x) else np.float64
    x64, w64 = (device(np.asarray(a).astype(wide)) for a in (x, w))  # NumPy compiles nothing
    want = jitted("lax")(x64, w64, s)  # compiled once for the three algorithms
    assert_close(got, want, dtype=dtype, reduction=18)


def test_fft_large_values_float32():
    # The FFT's error scales with the whole signal, not each output; still within float32's.
    x, w = arrays(np.random.default_rng(9), (1, 3, 40, 40), (2, 3, 5, 5), np.float32)
    s = spec(2, padding=2)
    x64, w64 = (device(np.asarray(a).astype(np.float64)) for a in (x, w))
    got, want = jax.jit(
        lambda a, b, a64, b64: (FORWARDS["fft"](a, b, s), FORWARDS["lax"](a64, b64, s))
    )(x, w, x64, w64)
    assert_close(got, want, dtype=np.float32, reduction=75)


def _fft_lengths(jaxpr) -> list[tuple[int, ...]]:
    """``fft_lengths`` of every real-to-complex transform in ``jaxpr``, nested jaxprs
    included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "fft" and eqn.params["fft_type"] == jax.lax.FftType.RFFT:
            found.append(tuple(eqn.params["fft_lengths"]))
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", None)
            if inner is not None:
                found += _fft_lengths(getattr(inner, "jaxpr", inner))
    return found


@pytest.mark.parametrize(
    "padding",
    [
        ((0, 0), (0, 0)),
        ((4, 4), (2, 2)),  # "same": inside the transform along both dims
        ((8, 0), (0, 4)),  # as low as the kernel's extent less one reaches
        ((9, 1), (3, 12)),  # past it below (padded), far past the output above
        ((0, 11), (5, 0)),
        ((-1, 3), (2, -2)),  # cropped
    ],
)
@pytest.mark.parametrize("stride, rhs, lhs", [(1, 1, 1), (2, 1, 1), (1, 2, 1), (3, 1, 2)])
@pytest.mark.parametrize("variant", ["real", "complex", "channels_last"])
def test_fft_padding_inside_the_transform(padding, stride, rhs, lhs, variant):
    # Zero padding is left to the transform where the kernel reaches it (fft.forward):
    # the outputs are read where the circular wrap-around does not reach.
    dtype = np.complex128 if variant == "complex" else np.float64
    x, w = arrays(np.random.default_rng(12), (2, 3, 11, 9), (4, 3, 5, 3), dtype)
    s = spec(2, stride, padding, lhs, rhs)
    s = dataclasses.replace(s, channels_last=variant == "channels_last")
    got = jitted("fft")(x, w, s)
    want = jitted("lax")(x, w, s)
    assert got.shape == want.shape
    assert_close(got, want, dtype=dtype, reduction=15)


def test_fft_no_output():
    # A spec with no output along some dim (which the public functions reject): an
    # empty result, as lax's, not outputs read from before the start.
    x, w = arrays(np.random.default_rng(14), (1, 1, 1), (1, 1, 5))
    s = spec(1, stride=3, padding=((1, 0),), rhs=2)
    assert jitted("fft")(x, w, s).shape == jitted("lax")(x, w, s).shape == (1, 1, 0)


@pytest.mark.parametrize(
    "x_shape, w_shape, padding, lengths",
    [
        # "same" 31x31 on 28x28: 28 + 15 = 43 -> 45 per dim, not 28 + 30 = 58 -> 60.
        ((1, 2, 28, 28), (2, 1, 31, 31), ((15, 15), (15, 15)), (45, 45)),
        # Padded past the kernel's extent below: that dim padded as before (30 -> 30).
        ((1, 2, 20, 20), (2, 1, 3, 3), ((5, 5), (1, 1)), (30, 21)),
        # 1-D "same" k65 on 1000: 1032 -> 1050 (1064 -> 1080 padded).
        ((1, 2, 1000), (2, 1, 65), ((32, 32),), (1050,)),
    ],
)
def test_fft_transform_holds_no_padding(x_shape, w_shape, padding, lengths):
    x, w = arrays(np.random.default_rng(13), x_shape, w_shape)
    s = spec(len(lengths), padding=padding, groups=2)
    jaxpr = jax.make_jaxpr(lambda a, b: FORWARDS["fft"](a, b, s))(x, w).jaxpr
    assert _fft_lengths(jaxpr) == [lengths, lengths]  # the input's and the kernel's


@pytest.mark.parametrize("n, want", [(1, 1), (7, 7), (11, 12), (13, 14), (97, 98), (121, 125)])
def test_fft_fast_size(n, want):
    assert fft.fast_size(n) == want


# ----------------------------------------------------------------------------- autodiff


@functools.partial(jax.jit, static_argnums=(0, 1))
def pullback(name, s, a, b, ct):
    return jax.vjp(lambda a_, b_: FORWARDS[name](a_, b_, s), a, b)[1](ct)


@pytest.mark.parametrize("impl", HAND)
@pytest.mark.parametrize("case", ["2d_negative_pad", "2d_lhs_dilation", "3d_all"])
def test_vjp_equals_lax(impl, case):
    x_shape, w_shape, s = SPECS[case]
    x, w = arrays(np.random.default_rng(10), x_shape, w_shape)
    y_shape = jax.eval_shape(jitted("lax"), x, w, s).shape
    ct = device(np.random.default_rng(11).standard_normal(y_shape))
    tol = tolerance(np.float64, math.prod(y_shape))
    # (lax's pullback is compiled once for the algorithms, as `jitted` compiles values.)
    chex.assert_trees_all_close(pullback(impl, s, x, w, ct), pullback("lax", s, x, w, ct), **tol)


@pytest.mark.parametrize("impl", HAND)
def test_vmap_and_jit(impl):
    x, w = arrays(np.random.default_rng(12), (3, 2, 2, 6, 6), (4, 1, 3, 3))
    s = spec(2, stride=2, padding=1, groups=2)
    ws = device(np.stack([np.asarray(w), -np.asarray(w)]))

    def run(x, ws):  # all three in one compiled program
        got = jax.vmap(lambda a: FORWARDS[impl](a, w, s))(x)
        want = jax.vmap(lambda a: FORWARDS["lax"](a, w, s))(x)
        got_w = jax.vmap(lambda b: FORWARDS[impl](x[0], b, s))(ws)
        return got, want, got_w

    got, want, got_w = (np.asarray(a) for a in jax.jit(run)(x, ws))
    assert_close(got, want, reduction=9)
    assert_close(got_w[1], -want[0], reduction=9)


# ----------------------------------------------------------------------------- properties


@st.composite
def canonical_specs(draw):
    n = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    c_in_g, c_out_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 3)) for _ in range(n)]
    stride = [draw(st.integers(1, 3)) for _ in range(n)]
    rhs = [draw(st.integers(1, 2)) for _ in range(n)]
    lhs = [draw(st.integers(1, 2)) for _ in range(n)]
    pads, spatial = [], []
    for k, d, ld in zip(kernel, rhs, lhs, strict=True):
        lo, hi = draw(st.integers(-1, 2)), draw(st.integers(-1, 2))
        extent = d * (k - 1) + 1
        # the dilated, padded size (m - 1) * ld + 1 + lo + hi must hold the extent
        least = max(1, -(-(extent - lo - hi - 1) // ld) + 1)
        m = draw(st.integers(least, least + 4))
        pads.append((lo, hi))
        spatial.append(m)
    # The layout hint changes how algorithms order their operands, never the result.
    hint = draw(st.booleans())
    s = ConvSpec(tuple(stride), tuple(pads), tuple(lhs), tuple(rhs), groups, None, hint)
    x_shape = (draw(st.integers(1, 2)), c_in_g * groups, *spatial)
    w_shape = (c_out_g * groups, c_in_g, *kernel)
    return draw(st.sampled_from(HAND)), x_shape, w_shape, s


@settings(max_examples=25, deadline=None)
@given(canonical_specs())
def test_random_specs_match_lax(config):
    impl, x_shape, w_shape, s = config
    x, w = arrays(np.random.default_rng(13), x_shape, w_shape)
    got, want = jax.jit(lambda a, b: [f(a, b) for f in forwards(impl, "lax", spec=s)])(x, w)
    assert_close(got, want, reduction=reduction(w_shape))


@st.composite
def dense_specs(draw):
    """Dense canonical convolutions without input dilation, negative padding included,
    on maps small against their (dilated) kernels, where many taps meet padding."""
    n = draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 4)) for _ in range(n)]
    stride = [draw(st.integers(1, 3)) for _ in range(n)]
    rhs = [draw(st.integers(1, 3)) for _ in range(n)]
    pads, spatial = [], []
    for k, d in zip(kernel, rhs, strict=True):
        lo, hi = draw(st.integers(-2, 6)), draw(st.integers(-2, 6))
        least = max(1, d * (k - 1) + 1 - lo - hi)  # the padded size holds the extent
        pads.append((lo, hi))
        spatial.append(draw(st.integers(least, least + 5)))
    s = ConvSpec(tuple(stride), tuple(pads), (1,) * n, tuple(rhs), 1, None, draw(st.booleans()))
    c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (draw(st.integers(1, 2)), c_in, *spatial), (c_out, c_in, *kernel), s


@settings(max_examples=40, deadline=None)
@given(dense_specs())
def test_input_taps_matches_lax(config):
    """`matmul.input_taps` (one product per tap of the inputs it meets) equals XLA's
    convolution, value and both transposes, float64, and so does its weight gradient
    written out (`matmul.input_taps_weight_gradient`)."""
    x_shape, w_shape, s = config
    x, w = arrays(np.random.default_rng(14), x_shape, w_shape)
    ct = device(np.random.default_rng(15).standard_normal(FORWARDS["lax"](x, w, s).shape))

    def both(f):
        y, vjp = jax.vjp(lambda a, b: f(a, b, s), x, w)
        return (y, *vjp(ct))

    def weight_gradient():
        return matmul_impl.input_taps_weight_gradient(x, ct, s, w_shape)

    got, want = jax.jit(
        lambda: [[*both(matmul_impl.input_taps), weight_gradient()], both(FORWARDS["lax"])]
    )()
    for a, b in zip(got, [*want, want[2]], strict=True):  # the weight gradient twice
        assert a.shape == b.shape
        assert_close(a, b, reduction=reduction(w_shape))


def test_input_taps_against_the_reference():
    """`matmul.input_taps` against the NumPy reference: a dilated kernel on a small map
    (every tap meets some padding, three only padding), strided, 3-D; and a layer whose
    taps all meet padding only (zeros)."""
    rng = np.random.default_rng(16)
    for x_shape, w_shape, stride, pads, dilation in [
        ((2, 3, 5, 4), (4, 3, 3, 3), 1, [(6, 0), (3, 3)], 3),
        ((1, 2, 7, 6), (3, 2, 5, 2), 2, [(4, 0), (1, 2)], 2),
        ((1, 2, 3, 4, 2), (2, 2, 2, 3, 2), 1, [(1, 1), (0, 2), (3, 1)], 1),
        ((1, 2, 1), (2, 2, 2), 1, [(3, 3)], 5),  # taps at -3 and 2 meet nothing
    ]:
        x, w = arrays(rng, x_shape, w_shape)
        n = len(x_shape) - 2
        s = ConvSpec((stride,) * n, tuple(pads), (1,) * n, (dilation,) * n, 1)
        got = jax.jit(lambda a, b, s=s: matmul_impl.input_taps(a, b, s))(x, w)
        want = ref_conv(x, w, stride=stride, pads=pads, dilation=dilation)
        assert got.shape == want.shape
        assert_close(got, want, reduction=reduction(w_shape))
    assert matmul_impl.tap_ranges((1,), (2,), ConvSpec((1,), ((3, 3),), (1,), (5,), 1)) == [
        None,
        None,
    ]
    x, w = arrays(rng, (1, 4, 5), (4, 2, 3))
    for s in (ConvSpec((1,), ((1, 1),), (1,), (1,), 2), ConvSpec((1,), ((1, 1),), (2,), (1,), 1)):
        with pytest.raises(ValueError, match="dense convolutions without input dilation"):
            matmul_impl.input_taps(x, w, s)
        with pytest.raises(ValueError, match="dense convolutions without input dilation"):
            matmul_impl.input_taps_weight_gradient(x, x, s, w.shape)


# ----------------------------------------------------------------------------- shift paths


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "c_in_g, c_out_g, kernel",
    [
        (1, 1, (3, 3)),  # depthwise: one product per tap
        (1, 3, (3, 3)),  # channel multiplier 3
        (1, 2, (3, 3)),  # multiplier 2: channels-last, the input's channels repeated
        (1, 2, (3, 2, 2)),  # ... in 3-D
        (1, 2, (5,)),  # ... but not in 1-D
        (4, 2, (3, 3)),  # ResNeXt-like: 36 products per output, one per input channel
        (3, 1, (2,)),  # 1-D
        (12, 1, (3, 3)),  # 108 products: reduced over input channels per tap
        (1, 2, (13, 12)),  # 156 taps: channels-last by the channels-first sum
        (1, 2, (15, 16)),  # 240 taps: scanned in both layouts
    ],
)
def test_shift_paths_match_lax(c_in_g, c_out_g, kernel, channels_last):
    from jaxconv._impls import shift

    groups, nd = 2, len(kernel)
    x_shape = (2, c_in_g * groups, *(k + 4 for k in kernel))
    w_shape = (c_out_g * groups, c_in_g, *kernel)
    x, w = arrays(np.random.default_rng(14), x_shape, w_shape)
    s = ConvSpec((1,) * nd, ((1, 0),) * nd, (1,) * nd, (1,) * nd, groups, None, channels_last)
    if c_in_g == 12:
        assert math.prod(kernel) * c_in_g > shift.PER_CHANNEL_MAX_TERMS[nd]
    if kernel == (15, 16):
        assert math.prod(kernel) > shift.unroll_max_taps(nd, channels_last)
    if kernel == (13, 12):
        assert (
            shift.unroll_max_taps(nd, True) < math.prod(kernel) <= shift.unroll_max_taps(nd, False)
        )
    got, want = jax.jit(lambda a, b: (shift.forward(a, b, s), FORWARDS["lax"](a, b, s)))(x, w)
    assert_close(got, want, reduction=reduction(w_shape))
    # A channel multiplier of 2 channels-last in 2-D and 3-D (shift.REPEAT_MAX_MULTIPLIER)
    # repeats the input's channels: its value is a depthwise layer of 2x the channels.
    if c_in_g == 1 and c_out_g > 1:
        repeated = channels_last and c_out_g == 2 and nd >= 2
        repeated = repeated and math.prod(kernel) <= shift.unroll_max_taps(nd, True)
        text = jax.jit(lambda a, b: shift.forward(a, b, s)).lower(x, w).as_text()
        marker = f"tensor<{x_shape[0]}x{c_out_g * x_shape[1]}x{x_shape[2]}x"
        assert (marker in text) == repeated


@pytest.mark.parametrize(
    "x_shape, w_shape, spec_",
    [
        # depthwise, padded, as `auto` takes it
        ((2, 3, 15, 14), (3, 1, 11, 12), spec(2, padding=((5, 5), (6, 5)), groups=3)),
        # strided, dilated, asymmetric and negative padding, a channel multiplier of 2
        (
            (1, 2, 30, 29),
            (4, 1, 12, 11),
            spec(2, stride=(2, 3), rhs=(2, 1), padding=((3, 0), (-1, 4)), groups=2),
        ),
        # two channels per group, no padding
        ((2, 4, 14, 14), (2, 2, 11, 12), spec(2, groups=2)),
    ],
)
def test_shift_channels_last_large_kernel_runs_channels_first(x_shape, w_shape, spec_):
    """Channels-last kernels past the channels-last unroll, within the channels-first
    one: the channels-first sum, behind a conditional XLA cannot fold
    (`shift._channels_first`). The value and both gradients equal lax's; so does the
    value under `vmap` over the weight (a batched predicate: both branches computed,
    one selected); with a NaN weight (which the predicate reads) it is the
    channels-first sum's, NaN where that is (lax skips the padding, the sum multiplies
    it)."""
    from jaxconv._impls import shift

    s = dataclasses.replace(spec_, channels_last=True)
    assert (
        shift.unroll_max_taps(2, True) < math.prod(w_shape[2:]) <= shift.unroll_max_taps(2, False)
    )
    x, w = arrays(np.random.default_rng(16), x_shape, w_shape)
    f, f_lax = forwards("shift", "lax", spec=s)
    (f_cf,) = forwards("shift", spec=spec_)
    # The branch survives XLA's passes (a folded predicate would inline it and fuse the
    # layout changes back into the sum).
    assert " conditional(" in compile_as_shipped(f, x, w).as_text()
    (y, gx, gw), (y_lax, gx_lax, gw_lax) = values_and_vjps([f, f_lax], (x, w), cotangent(f, x, w))
    assert_close(y, y_lax, reduction=reduction(w_shape))
    np.testing.assert_allclose(gx, gx_lax, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, gw_lax, rtol=1e-10, atol=1e-10)
    w_nan = np.asarray(w).copy()
    w_nan.reshape(-1)[0] = np.nan

    def run(a, b, c):
        return jax.vmap(f, (None, 0))(a, jnp.stack([b, -b])), f(a, c), f_cf(a, c)

    batched, nan, nan_cf = jax.jit(run)(x, w, device(w_nan))
    assert_close(batched[0], y_lax, reduction=reduction(w_shape))
    assert_close(batched[1], -y_lax, reduction=reduction(w_shape))
    assert np.isnan(nan_cf).any() and not np.isnan(nan_cf).all()
    np.testing.assert_array_equal(np.isnan(nan), np.isnan(nan_cf))
    finite = ~np.isnan(nan_cf)
    assert_close(np.asarray(nan)[finite], np.asarray(nan_cf)[finite], reduction=reduction(w_shape))


@pytest.mark.parametrize(
    "kernel, stride, dilation",
    [
        ((3, 3), (1, 1), (1, 1)),
        ((5, 2), (2, 1), (1, 2)),  # strided along a leading dim, dilated along the last
        ((4,), (1,), (3,)),  # 1-D: the whole row is the last dim and the channels
        ((2, 3, 2), (1, 2, 1), (2, 1, 1)),
    ],
)
def test_shift_depthwise_channels_last_rows(kernel, stride, dilation, monkeypatch, retrace):
    """Depthwise channels-last, stride 1 along the last dim: taps as runs of a row that
    flattens that dim with the channels (`shift._depthwise_rows`; the split off, which
    takes small kernels)."""
    from jaxconv._impls import shift

    monkeypatch.setattr(shift, "SPLIT_MAX_TAPS", {})
    monkeypatch.setattr(shift, "SPLIT_MAX_TAPS_ND", 0)
    nd, c = len(kernel), 5
    x, w = arrays(np.random.default_rng(15), (2, c, *(k + 6 for k in kernel)), (c, 1, *kernel))
    pads = tuple((k // 2, (k - 1) // 2) for k in kernel)
    s = ConvSpec(stride, pads, (1,) * nd, dilation, c, None, True)
    got, want = jax.jit(lambda a, b: (shift.forward(a, b, s), FORWARDS["lax"](a, b, s)))(x, w)
    assert_close(got, want, reduction=reduction(w.shape))
    text = jax.jit(shift.forward, static_argnums=2).lower(x, w, s).as_text()
    flat = (x.shape[-1] + sum(pads[-1])) * c  # the padded last dim times the channels
    assert f"x{flat}x" in text or f"x{flat}>" in text


@pytest.mark.parametrize("kernel", [(3, 3), (3,), (3, 1, 3)])
def test_shift_depthwise_split_weight_written_once(kernel):
    """Channels-last depthwise by `shift._depthwise_split`, with a weight the caller's
    program transposes from channels-first: the weight is written out channels-last
    once, and no loop over the output reads the caller's array (XLA would fuse the
    transpose into every product and read each tap's weights with a stride of the taps:
    4x slower on depthwise 3x3 144@56). Value as lax's."""
    import re

    nd, c = len(kernel), 24
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, *(k + 5 for k in kernel), c)).astype(np.float32)
    w_cf = rng.standard_normal((c, 1, *kernel)).astype(np.float32)
    order = (*range(2, nd + 2), 1, 0)  # (C, 1, *K) -> (*K, 1, C)

    def conv(impl):
        return lambda a, b: jaxconv.conv(
            a, jnp.transpose(b, order), padding="same", groups=c, channels_last=True, impl=impl
        )

    text = compile_as_shipped(conv("auto"), x, w_cf).as_text()
    entry = text[text.index("ENTRY") :]
    (name,) = re.findall(r"(%\S+) = f32\[[\d,]+\]\{[\d,]+\} parameter\(1\)", entry)
    users = [line for line in entry.splitlines() if f"{name}," in line or f"{name})" in line]
    shapes = [re.search(r"= f32\[([\d,]+)\]", u).group(1) for u in users]
    sizes = [math.prod(map(int, shape.split(","))) for shape in shapes]
    assert users and max(sizes) <= w_cf.size, users
    got, want = jax.jit(lambda a, b: (conv("auto")(a, b), conv("lax")(a, b)))(x, w_cf)
    assert_close(got, want, dtype=np.float32, reduction=math.prod(kernel))


@pytest.mark.parametrize("kernel", [(3, 3), (1, 3, 3)])
def test_shift_depthwise_split_value_written_before_a_transpose(kernel):
    """Channels-last 2-D and 3-D depthwise by `shift._depthwise_split`, transposed to
    channels-first right after the call: the sums are written out in the caller's
    layout first, and the transpose is a copy of its own (no product fused into it,
    where it wrote with strides: 2x slower on depthwise 3x3 144@56). Value as lax's."""
    import re

    nd, c = len(kernel), 24
    rng = np.random.default_rng(19)
    x = rng.standard_normal((2, *(k + 5 for k in kernel), c)).astype(np.float32)
    w = rng.standard_normal((*kernel, 1, c)).astype(np.float32)
    perm = (0, nd + 1, *range(1, nd + 1))

    def conv(impl):
        return lambda a, b: jnp.transpose(
            jaxconv.conv(a, b, padding="same", groups=c, channels_last=True, impl=impl), perm
        )

    text = compile_as_shipped(conv("auto"), x, w).as_text()
    root = re.search(r"ROOT \S+ = \S+ fusion\([^)]*\), kind=\w+, calls=(%[\w.-]+)", text)
    body = text[text.index(f"{root.group(1)} ") :]
    body = body[: body.index("\n}")]
    assert " multiply(" not in body, body
    got, want = jax.jit(lambda a, b: (conv("auto")(a, b), conv("lax")(a, b)))(x, w)
    assert_close(got, want, dtype=np.float32, reduction=math.prod(kernel))


def _shift_against_lax(x, w, s, seed):
    """`shift.forward`'s value and both gradients (of a random cotangent) against lax's
    and einsum's, in one compiled program; returns `shift.forward`'s lowered text."""
    shifted, by_lax, by_einsum = forwards("shift", "lax", "einsum", spec=s)
    ct = np.random.default_rng(seed).standard_normal(jax.eval_shape(shifted, x, w).shape)

    def run(a, b, c):  # everything compared, in one compiled program
        return (
            shifted(a, b),
            by_lax(a, b),
            jax.vjp(shifted, a, b)[1](c),
            jax.vjp(by_einsum, a, b)[1](c),
        )

    got, want, grads, expected = jax.jit(run)(x, w, ct)
    assert_close(got, want, reduction=reduction(w.shape))
    for g, e in zip(grads, expected, strict=True):
        assert_close(g, e, reduction=reduction(w.shape) * got.size)
    return jax.jit(shift_impl.forward, static_argnums=2).lower(x, w, s).as_text()


@st.composite
def specs_depthwise_split(draw):
    """A canonical depthwise convolution that `shift._depthwise_split` takes:
    non-negative padding (some of it wider than the kernel reaches, so that some
    outputs read only zeros), stride and dilation; channels-last 1-D to 3-D, or
    channels-first 2-D and strided (the test lifts the least number of outputs)."""
    from jaxconv._impls import shift

    channels_last = draw(st.booleans())
    nd = draw(st.sampled_from([1, 2, 2, 3])) if channels_last else 2
    if channels_last:
        most = shift.SPLIT_MAX_TAPS.get(nd, shift.SPLIT_MAX_TAPS_ND)
    else:
        most = shift.SPLIT_MAX_TAPS_CHANNELS_FIRST_STRIDED[nd]
    kernel = [draw(st.integers(1, 4 if nd == 1 else 3)) for _ in range(nd)]
    while math.prod(kernel) > most:
        kernel[kernel.index(max(kernel))] -= 1
    stride = [draw(st.integers(1, 3)) for _ in range(nd)]
    if not channels_last and max(stride) == 1:
        stride[draw(st.integers(0, nd - 1))] = draw(st.integers(2, 3))
    rhs = [draw(st.integers(1, 2)) for _ in range(nd)]
    pads = [(draw(st.integers(0, 4)), draw(st.integers(0, 4))) for _ in range(nd)]
    if all(p == (0, 0) for p in pads):
        pads[0] = (1, 0)
    spatial = [
        draw(st.integers(d * (k - 1) + 1, d * (k - 1) + 7))
        for k, d in zip(kernel, rhs, strict=True)
    ]
    c = draw(st.integers(1, 4))
    s = ConvSpec(tuple(stride), tuple(pads), (1,) * nd, tuple(rhs), c, None, channels_last)
    return (draw(st.integers(1, 2)), c, *spatial), (c, 1, *kernel), s


@settings(max_examples=20, deadline=None)
@given(specs_depthwise_split())
def test_shift_depthwise_split(case):
    """Depthwise by the inner outputs straight from the input and the border from
    padded slices (`shift._depthwise_split`), in either layout: values and both
    gradients as lax's, and no padded copy of the whole input."""
    from unittest import mock

    from jaxconv._impls import shift

    x_shape, w_shape, s = case
    x, w = arrays(np.random.default_rng(16), x_shape, w_shape)
    # (Where no output reads only the input along some dim, shift pads first instead.)
    assume(shift._interior(x_shape[2:], w_shape[2:], s) is not None)
    # (Channels-first splits from 100 outputs per image; these have fewer.)
    with mock.patch.object(shift, "SPLIT_MIN_POSITIONS_CHANNELS_FIRST", 1):
        assert shift.splits(s, x_shape, w_shape)
        text = _shift_against_lax(x, w, s, seed=17)
    dims = zip(x_shape[2:], w_shape[2:], s.rhs_dilation, s.padding, strict=True)
    if all(k > 1 and n >= 2 * (d * (k - 1) + 1) + lo + hi for n, k, d, (lo, hi) in dims):
        # (On smaller inputs, or with one tap, a part may have the whole input's shape.)
        layout = (x_shape[0], *x_shape[2:], x_shape[1]) if s.channels_last else x_shape
        whole = "tensor<" + "x".join(map(str, layout))
        pads = [line for line in text.splitlines() if "stablehlo.pad" in line]
        assert pads and not any(line.split(": (")[1].startswith(whole) for line in pads)


def test_shift_depthwise_split_reads_the_input():
    """The split's inner outputs read their windows straight from the input: no slice
    of it is written out first (XLA wrote the inner part's slice, 37 MB for 7x7 stride 2
    384@56 batch 8, before the sums read it)."""
    from jaxconv._impls import shift

    c, hw = 9, 21
    x = np.random.default_rng(20).standard_normal((2, hw, hw, c)).astype(np.float32)
    w = np.random.default_rng(21).standard_normal((3, 3, 1, c)).astype(np.float32)

    def conv(impl):
        return lambda a, b: jaxconv.conv2d(
            a, b, stride=2, padding=1, groups=c, channels_last=True, impl=impl
        )

    spec = ConvSpec((2, 2), ((1, 1), (1, 1)), (1, 1), (1, 1), c, None, True)
    assert shift.splits(spec, (2, c, hw, hw), (c, 1, 3, 3))
    (_, a, b), _ = shift._interior((hw, hw), (3, 3), spec)
    rows = (b - 1) * 2 - 1 + 3 - (a * 2 - 1)  # the inner outputs' input rows
    assert rows < hw
    text = compile_as_shipped(conv("shift"), x, w).as_text()
    assert f"f32[2,{rows},{rows},{c}]" not in text
    got, want = jax.jit(lambda a, b: (conv("shift")(a, b), conv("lax")(a, b)))(x, w)
    assert_close(got, want, dtype=np.float32, reduction=9)


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, pad, channels_last, large, split",
    [
        # Found by a sweep: 7x7 stride 2 384@56 batch 8, its padded input 47 MB.
        ((8, 384, 56, 56), (384, 1, 7, 7), 2, 3, True, True, True),
        ((8, 384, 56, 56), (384, 1, 7, 7), 2, 3, True, False, False),  # not `large`
        ((8, 384, 56, 56), (384, 1, 7, 7), 2, 3, False, True, False),  # channels-first
        ((8, 96, 56, 56), (96, 1, 7, 7), 1, 3, True, True, False),  # 12 MB
        ((8, 96, 112, 112), (96, 1, 7, 7), 1, 3, True, True, True),  # 43 MB
        ((8, 96, 112, 112), (96, 1, 5, 10), 1, 3, True, True, False),  # 50 taps
        ((2, 1024, 58, 58), (1024, 1, 7, 7), 1, 3, True, True, False),  # 32 MiB exactly
        ((2, 1025, 58, 58), (1025, 1, 7, 7), 1, 3, True, True, True),  # past it
        ((2, 1025, 58, 58), (1025, 1, 3, 3), 1, 1, True, False, True),  # 3x3: any size
        ((2, 64, 40, 56, 56), (64, 1, 3, 3, 3), 1, 1, True, True, False),  # 3-D, 27 taps
    ],
)
def test_shift_depthwise_split_large_inputs(
    x_shape, w_shape, stride, pad, channels_last, large, split
):
    """Channels-last 2-D depthwise layers of up to 49 taps split (`shift.splits`) where
    their padded float32 input would pass `lax.MALLOC_MAX_HEAP_BLOCK`, with ``large``;
    up to 9 taps at any size, as before."""
    from jaxconv._impls import shift

    nd = len(w_shape) - 2
    s = ConvSpec(
        (stride,) * nd, ((pad, pad),) * nd, (1,) * nd, (1,) * nd, x_shape[1], None, channels_last
    )
    assert shift.splits(s, x_shape, w_shape, large) == split


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "kernel, stride, dilation, pads",
    [
        ((7, 7), (2, 2), (1, 1), ((3, 3), (3, 3))),
        ((5, 5), (1, 1), (1, 1), ((2, 2), (4, 1))),
        ((7, 5), (2, 1), (1, 2), ((3, 2), (4, 4))),
        ((6, 4), (1, 3), (1, 1), ((1, 4), (2, 1))),
    ],
)
def test_shift_depthwise_split_large_kernels(kernel, stride, dilation, pads, channels_last):
    """Kernels of 10-49 taps by the split (as large channels-last inputs take them: here
    the heap block is set to nothing) in `shift.forward`: values and both gradients as
    lax's and einsum's, in float64, the input gradient of a cotangent."""
    from unittest import mock

    from jaxconv._impls import lax as lax_impl
    from jaxconv._impls import shift

    c = 3
    x_shape = (2, c, *(d * (k - 1) + 9 for k, d in zip(kernel, dilation, strict=True)))
    w_shape = (c, 1, *kernel)
    s = ConvSpec(stride, pads, (1, 1), dilation, c, None, channels_last)
    x, w = arrays(np.random.default_rng(22), x_shape, w_shape)
    assert not shift.splits(s, x_shape, w_shape)
    assert shift._interior(x_shape[2:], kernel, s) is not None
    with mock.patch.object(lax_impl, "MALLOC_MAX_HEAP_BLOCK", 0):
        assert shift.splits(s, x_shape, w_shape) == channels_last
        text = _shift_against_lax(x, w, s, seed=23)
    if channels_last:  # no padded copy of the whole input
        layout = (x_shape[0], *x_shape[2:], c)
        whole = "tensor<" + "x".join(map(str, layout))
        pads_ = [line for line in text.splitlines() if "stablehlo.pad" in line]
        assert pads_ and not any(line.split(": (")[1].startswith(whole) for line in pads_)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.complex64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_shift_depthwise_split_dtypes(dtype, channels_last):
    """The split in half precision (accumulated in float32) and complex."""
    from jaxconv._impls import shift

    s = ConvSpec((2, 1), ((1, 1), (2, 0)), (1, 1), (1, 1), 3, None, channels_last)
    x, w = arrays(np.random.default_rng(18), (2, 3, 20, 12), (3, 1, 3, 3), dtype)
    assert shift.splits(s, x.shape, w.shape)
    assert shift._interior(x.shape[2:], w.shape[2:], s) is not None
    wide = np.complex128 if jnp.issubdtype(dtype, jnp.complexfloating) else np.float64
    x64, w64 = (device(np.asarray(a).astype(wide)) for a in (x, w))
    got, want = jax.jit(
        lambda a, b, a64, b64: (shift.forward(a, b, s), FORWARDS["lax"](a64, b64, s))
    )(x, w, x64, w64)
    assert got.dtype == dtype
    assert_close(got, want, dtype=dtype, reduction=9)


_SWAP_CHILD = """
import jax, jax.numpy as jnp, numpy as np, jaxconv
jax.config.update("jax_enable_x64", True)
rng = np.random.default_rng(0)
c2, c3, t2 = jaxconv.conv2d, jaxconv.conv3d, jaxconv.conv_transpose2d
cases = [
    # the input gradient: a 2-tap kernel at stride 2 padded by 1, the other dim's kernel
    # longer than the output
    (c2, (1, 1, 10, 5), (1, 1, 2, 5), dict(stride=(2, 1), padding=1), "float64"),
    (c2, (2, 3, 10, 5), (4, 3, 2, 5), dict(stride=(2, 1), padding=1), "float32"),
    (c3, (1, 1, 5, 2, 4), (1, 1, 4, 4, 2), dict(stride=(1, 2, 2), padding=(0, 2, 1)), "float64"),
    # the value of a transposed convolution: its input dilation equal to a 2-tap kernel
    (t2, (1, 1, 3, 2), (1, 1, 2, 5), dict(stride=(2, 1), padding=(1, 0)), "float32"),
]
# Second derivatives (the gradient of a gradient's norm): the input gradient of the
# weight gradient (whose stride is the kernel dilation) meets it.
second = [
    (c3, (1, 5, 6, 2, 7), (2, 4, 1, 7, 3),
     dict(stride=(2, 1, 2), padding=1, dilation=(1, 2, 1), channels_last=True), "float64"),
    (c2, (1, 3, 8, 5), (2, 3, 5, 1), dict(stride=(1, 3), padding=(1, 0), dilation=(2, 1)),
     "float32"),
    (c3, (1, 3, 6, 5, 7), (2, 3, 4, 1, 1),
     dict(stride=(1, 1, 2), padding=(1, 1, 2), dilation=(2, 2, 1)), "float64"),
]
# (Second derivatives only by the algorithms that write XLA convolutions, and einsum.)
every_impl = (*jaxconv.IMPLS, "auto")
for order, (fn, xs, ws, kw, dtype) in [(1, c) for c in cases] + [(2, c) for c in second]:
    impls = every_impl if order == 1 else ("lax", "einsum", "subpixel", "auto")
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    def grads(impl, x, w, order=order):
        f = lambda x, w: jnp.sum(jnp.sin(fn(x, w, impl=impl, **kw)))
        for _ in range(order - 1):
            f = lambda x, w, g=jax.grad(f, (0, 1)): sum(jnp.sum(jnp.sin(d)) for d in g(x, w))
        return jax.value_and_grad(f, (0, 1))(x, w)
    # Every algorithm in one compiled program (XLA compiles each one's convolutions,
    # its own and those JAX derives, as it would alone), against einsum's.
    every = jax.jit(lambda x, w: [grads(impl, x, w) for impl in impls])(x, w)
    want = every[impls.index("einsum")]
    for impl, got in zip(impls, every):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=impl)
print("ok")
"""


def test_no_xla_abort_where_xla_swaps_operands():
    """Values and gradients, every algorithm, of the convolutions whose own or derived
    (JAX-transposed, first or second derivatives) convolution XLA's compiler aborted the
    process on (`jaxconv._impls.lax.swap_breaks`); in a child process, so that an abort
    fails this test instead of ending the run."""
    from jitted import run_shipped_child

    run_shipped_child(_SWAP_CHILD)


@pytest.mark.parametrize(
    "in_spatial, kernel, stride, padding, lhs, rhs, breaks",
    [
        ((6, 3), (2, 5), (1, 1), ((0, 0), (3, 3)), (2, 1), (1, 1), True),
        ((6, 3), (2, 3), (1, 1), ((0, 0), (3, 3)), (2, 1), (1, 1), False),  # 3 taps on 3
        ((6, 3), (2, 5), (1, 1), ((1, 0), (3, 3)), (2, 1), (1, 1), False),  # padded
        ((6, 3), (2, 5), (2, 1), ((0, 0), (3, 3)), (2, 1), (1, 1), False),  # stride 2
        ((6, 3), (2, 5), (1, 1), ((0, 0), (3, 3)), (1, 2), (1, 1), False),  # no such dim
        ((6, 3, 2), (2, 5, 2), (1, 1, 1), ((0, 0), (3, 3), (0, 0)), (2, 1, 1), (1, 1, 1), True),
        ((6, 3, 4), (2, 5, 2), (1, 1, 1), ((0, 0), (3, 3), (0, 0)), (2, 1, 1), (1, 1, 1), False),
    ],
)
def test_swap_breaks(in_spatial, kernel, stride, padding, lhs, rhs, breaks):
    """The condition, on convolutions measured to abort XLA's compiler or not."""
    from jaxconv._impls import lax as lax_impl

    assert lax_impl.swap_breaks(in_spatial, kernel, stride, padding, lhs, rhs) is breaks


def test_swap_breaks_to_order():
    """The convolutions JAX derives: the 3-D layer whose second derivatives aborted
    XLA's compiler meets `swap_breaks` through the input gradient of its weight
    gradient (order 2), not before; so does a 2-D one measured to abort."""
    from jaxconv._impls import lax as lax_impl

    layers = [
        ((5, 6, 3), (2, 4, 1), ((2, 1, 2), ((1, 1), (1, 1), (0, 1)), (1, 1, 1), (1, 2, 1))),
        ((8, 5), (5, 1), ((1, 3), ((1, 1), (0, 0)), (1, 1), (2, 1))),
    ]
    for in_spatial, kernel, window in layers:
        breaks = [lax_impl.swap_breaks_to_order(in_spatial, kernel, window, o) for o in range(4)]
        assert breaks == [False, False, True, True]


def test_swap_safe_clears_every_order():
    """`swap_safe`'s convolution (as `forward` calls it) meets `swap_breaks` at no
    derivative order up to `SWAP_SAFE_ORDER`, over random small windows (input
    dilations too, as transposed convolutions have), and keeps the window as given
    where nothing meets it."""
    from jaxconv._impls import lax as lax_impl

    rng = np.random.default_rng(48)
    changed = 0
    for _ in range(3000):
        nd = int(rng.integers(1, 4))
        draw = lambda lo, hi, nd=nd: tuple(int(v) for v in rng.integers(lo, hi + 1, nd))  # noqa: E731
        in_spatial, kernel, stride = draw(1, 8), draw(1, 5), draw(1, 3)
        padding = tuple((int(p), int(p)) for p in rng.integers(0, 3, nd))
        lhs = draw(1, 3) if rng.random() < 0.3 else (1,) * nd
        spec = ConvSpec(stride, padding, lhs, draw(1, 3), 1)
        if min(spec.out_spatial(in_spatial, kernel)) < 1:
            continue
        x = jax.ShapeDtypeStruct((1, 2, *in_spatial), jnp.float32)
        w = jax.ShapeDtypeStruct((3, 2, *kernel), jnp.float32)
        got = {}

        def safe(x, w, spec=spec, got=got):
            x, w, got["spec"], got["stride"] = lax_impl.swap_safe(x, w, spec)
            return x, w

        x2, w2 = jax.eval_shape(safe, x, w)
        spec2, stride2 = got["spec"], got["stride"]
        window = (stride2, spec2.padding, spec2.lhs_dilation, spec2.rhs_dilation)
        order = lax_impl.SWAP_SAFE_ORDER
        assert not lax_impl.swap_breaks_to_order(x2.shape[2:], w2.shape[2:], window, order)
        window0 = (stride, padding, lhs, spec.rhs_dilation)
        if not lax_impl.swap_breaks_to_order(in_spatial, kernel, window0, order):
            assert (x2.shape, w2.shape, spec2, stride2) == (x.shape, w.shape, spec, stride)
        changed += (x2.shape, w2.shape) != (x.shape, w.shape)
    assert changed > 0


def test_shift_scanned_grouped_3d_input_gradient():
    """PyTorch's conv_transpose3d sample (2 groups, kernel 4x5x6 beyond shift's unroll,
    stride (3, 2, 1), dilation 4) by `shift`: its scanned phases' input gradient was
    zeros op by op and NaN under `jax.jit`."""
    kw = dict(stride=(3, 2, 1), padding=(1, 2, 3), output_padding=(2, 3, 1), groups=2)
    x, w = arrays(np.random.default_rng(19), (2, 2, 4, 4, 4), (2, 2, 4, 5, 6), np.float32)
    ct = np.random.default_rng(20).standard_normal((2, 4, 22, 22, 19)).astype(np.float32)
    ct = device(ct)

    def grads(impl):
        def f(x, w, c):
            conv = lambda a, b: jaxconv.conv_transpose3d(a, b, dilation=4, impl=impl, **kw)  # noqa: E731
            return jax.vjp(conv, x, w)[1](c)

        return f

    # shift op by op and under `jax.jit`, against einsum op by op (as before; its
    # value under `jax.jit`, never compared, is no longer computed).
    want = grads("einsum")(x, w, ct)
    for got in (grads("shift")(x, w, ct), jax.jit(grads("shift"))(x, w, ct)):
        for g, e in zip(got, want, strict=True):
            assert_close(g, e, dtype=jnp.float32, reduction=120 * 4)


# ----------------------------------------------------------------------------- planes


@st.composite
def specs_planes(draw):
    """A canonical 2-D or 3-D convolution, input dilation along the first dim included."""
    groups = draw(st.sampled_from([1, 2]))
    nd = draw(st.sampled_from([2, 3]))
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    stride = [draw(st.integers(1, 2)) for _ in range(nd)]
    rhs = [draw(st.integers(1, 2)) for _ in range(nd)]
    lhs = [draw(st.sampled_from([1, 1, 2])) for _ in range(nd)]
    pads, spatial = [], []
    for k, d, ld in zip(kernel, rhs, lhs, strict=True):
        lo, hi = draw(st.integers(-1, 2)), draw(st.integers(-1, 2))
        least = max(1, -(-(d * (k - 1) - lo - hi) // ld) + 1)
        pads.append((lo, hi))
        spatial.append(draw(st.integers(least, least + 3)))
    s = ConvSpec(tuple(stride), tuple(pads), tuple(lhs), tuple(rhs), groups)
    x_shape = (draw(st.integers(1, 2)), 2 * groups, *spatial)
    return x_shape, (draw(st.integers(1, 2)) * groups, 2, *kernel), s


@pytest.mark.parametrize("by", ["decompose", "stacked", "output_stacked"])
@settings(max_examples=20, deadline=None)
@given(config=specs_planes(), channels_last=st.booleans())
def test_planes_match_lax(by, config, channels_last):
    from jaxconv._impls import planes

    x_shape, w_shape, s = config
    s = dataclasses.replace(s, channels_last=channels_last)
    x, w = arrays(np.random.default_rng(15), x_shape, w_shape)
    got, want = jax.jit(
        lambda a, b: (getattr(planes, by)(a, b, s, FORWARDS["lax"]), FORWARDS["lax"](a, b, s))
    )(x, w)
    assert_close(got, want, reduction=reduction(w_shape))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("by", ["decompose", "stacked", "output_stacked"])
def test_planes_gradients_and_half_precision(by, channels_last):
    from jaxconv._impls import planes

    x_shape, w_shape, s = SPECS["3d_all"]
    # Its input dilation moved off the depth, which the planes split (two groups, two
    # depth taps, a stride and a dilation along the other dims).
    s = dataclasses.replace(s, lhs_dilation=(1, 2, 1), channels_last=channels_last)
    assert planes.applies(s)
    x, w = arrays(np.random.default_rng(16), x_shape, w_shape)
    run = lambda name: lambda a, b: getattr(planes, by)(a, b, s, FORWARDS[name])  # noqa: E731
    (by_lax,) = forwards("lax", spec=s)
    ct = np.random.default_rng(17).standard_normal(jax.eval_shape(by_lax, x, w).shape)
    xb, wb = (device(np.asarray(a).astype(jnp.bfloat16)) for a in (x, w))

    def every(a, b, ab, bb, c):  # everything compared, in one compiled program
        got = jax.vjp(run("lax"), a, b)[1](c)
        want = jax.vjp(by_lax, a, b)[1](c)
        return got, want, run("matmul")(ab, bb), by_lax(a, b)

    got, want, half, value = jax.jit(every)(x, w, xb, wb, ct)
    chex.assert_trees_all_close(got, want, **tolerance(np.float64, ct.size))
    assert half.dtype == jnp.bfloat16
    assert_close(half, value, dtype=jnp.bfloat16, reduction=reduction(w_shape))


@pytest.mark.parametrize(
    "x_shape, w_shape",
    [
        ((0, 2, 4, 5, 5), (3, 2, 3, 3, 3)),  # empty batch
        ((1, 2, 2, 5, 5), (3, 2, 3, 3, 3)),  # no output depth
        ((1, 0, 4, 5, 5), (3, 0, 3, 3, 3)),  # no input channels
        ((1, 2, 4, 5, 5), (0, 2, 3, 3, 3)),  # no output channels
    ],
)
@pytest.mark.parametrize("by", ["auto", "stacked", "output_stacked"])
def test_3d_degenerate_shapes_under_auto(x_shape, w_shape, by):
    """Empty 3-D problems go through `auto`'s depth planes without recursing, and
    `planes.stacked` and `planes.output_stacked` alone give lax's zeros too."""
    from jaxconv._impls import planes

    s = spec(3, padding=((0, 0), (1, 1), (1, 1)))
    if by == "auto":
        run = functools.partial(_dispatch.forward, spec=s)
    else:
        run = lambda a, b: getattr(planes, by)(a, b, s, FORWARDS["lax"])  # noqa: E731
    x, w = np.ones(x_shape), np.ones(w_shape)

    def every(a, b):  # all in one compiled program
        grads = jax.grad(lambda a, b: jnp.sum(run(a, b)), (0, 1))(a, b)
        return run(a, b), FORWARDS["lax"](a, b, s), grads

    got, want, (gx, gw) = jax.jit(every)(x, w)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    assert gx.shape == x.shape and gw.shape == w.shape
    np.testing.assert_array_equal(gx, np.zeros_like(x))


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("impl", ["auto", "shift"])
def test_grouped_zero_input_channels(impl, nd):
    """Zero input channels in every group: zeros of the output's shape, as lax gives."""
    x, w = np.ones((1, 0, *(5,) * nd)), np.ones((4, 0, *(3,) * nd))
    conv = getattr(jaxconv, f"conv{nd}d")
    got, want = jax.jit(
        lambda a, b: [conv(a, b, padding=1, groups=2, impl=i) for i in (impl, "lax")]
    )(x, w)
    assert got.shape == want.shape == (1, 4, *(5,) * nd)
    np.testing.assert_array_equal(got, want)


def test_lax_float64_input_dilated_3d_does_not_abort_xla():
    """XLA's CPU compiler (jaxlib 0.10.2) aborted the process on this float64 3-D
    transposed convolution (stride (2, 3, 2), dilation (1, 2, 2), a length-1 dim);
    `lax.forward` inserts the zeros itself there. Value and gradients against einsum."""
    rng = np.random.default_rng(16)
    x = device(rng.standard_normal((2, 2, 5, 1, 3)))
    w = device(rng.standard_normal((2, 3, 2, 2, 3)))
    kw = dict(stride=(2, 3, 2), dilation=(1, 2, 2), padding=1, groups=2)

    def grads(impl):
        f = lambda a, b: jaxconv.conv_transpose3d(a, b, impl=impl, **kw)  # noqa: E731
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(jnp.ones_like(y)))

    # lax's program under `jax.jit` on its own, as XLA compiled it when it aborted (in
    # one program with einsum's, XLA would optimise the two together), then einsum's.
    got, want = jax.jit(lambda: grads("lax"))(), jax.jit(lambda: grads("einsum"))()
    for g, e in zip(got, want, strict=True):
        assert_close(g, e, reduction=12)


def test_groups_loop_steps_two_groups_and_an_odd_count():
    """`groups.loop` runs `groups.LOOP_UNROLL` groups per iteration of its loop (a scan
    with that unroll), and an odd number of groups still gives XLA's grouped
    convolution, value and both gradients."""
    from jaxconv._impls import groups

    spec = ConvSpec((1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 5)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 10, 6, 7)))
    w = jnp.asarray(rng.standard_normal((15, 2, 3, 3)))
    jaxpr = jax.make_jaxpr(lambda a, b: groups.loop(a, b, spec))(x, w)
    (loop,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert loop.params["length"] == 5
    assert loop.params["unroll"] == groups.LOOP_UNROLL > 1
    _assert_is_xlas(groups.loop, x, w, spec, rng)


def test_shift_scanned_steps_eight_taps_and_a_remainder():
    """Shift's loop over taps (`shift._scanned`, kernels past its unrolled sum) steps
    `shift.SCANNED_UNROLL` taps per iteration, and a tap count that is no multiple of it
    (3x3x5, 45 taps) still gives XLA's convolution, value and both gradients."""
    from jaxconv._impls import shift

    spec = ConvSpec((1, 2, 1), ((1, 1), (1, 1), (2, 2)), (1, 1, 1), (1, 1, 1), 4)
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 4, 5, 6, 7)))
    w = jnp.asarray(rng.standard_normal((4, 1, 3, 3, 5)))
    assert math.prod(w.shape[2:]) > shift.unroll_max_taps(3, channels_last=False)
    jaxpr = jax.make_jaxpr(lambda a, b: shift.forward(a, b, spec))(x, w)
    (loop,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert loop.params["length"] == 45 and 45 % shift.SCANNED_UNROLL != 0
    assert loop.params["unroll"] == shift.SCANNED_UNROLL > 1
    _assert_is_xlas(shift.forward, x, w, spec, rng)


def _assert_is_xlas(forward, x, w, spec, rng):
    """``forward(x, w, spec)``'s value and both gradients (for a random cotangent) are
    XLA's convolution's, in float64."""
    from jaxconv._impls import lax as lax_impl

    out = (x.shape[0], w.shape[0], *spec.out_spatial(x.shape[2:], w.shape[2:]))
    ct = jnp.asarray(rng.standard_normal(out))

    def value_and_grads(f):
        y, vjp = jax.vjp(lambda a, b: f(a, b, spec), x, w)
        return (y, *vjp(ct))

    got = jax.jit(lambda: value_and_grads(forward))()
    want = jax.jit(lambda: value_and_grads(lax_impl.forward))()
    for g, e in zip(got, want, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,channels_last",
    [
        ((1, 8, 72, 72), (8, 8, 7, 7), dict(padding=3), False),
        ((1, 6, 96, 96), (8, 6, 5, 5), dict(padding=2), False),
        ((1, 8, 128, 128), (32, 4, 7, 7), dict(stride=2, padding=3, groups=2), True),
        ((1, 8, 96, 96), (8, 4, 17, 17), dict(padding=8, groups=2), False),  # scanned
    ],
)
def test_shift_sums_channels_right_on_large_maps(x_shape, w_shape, kwargs, channels_last):
    """`shift` with more products per output than it takes one channel at a time sums a
    group's input channels per tap (`shift._channel_sum`) right on maps large enough
    for XLA's CPU runtime to split the work among threads: summed as a broadcast product,
    YNNPACK's reduction gave relative errors of 0.6-1.4 on these (jaxlib 0.10.2,
    float32)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    want = ref_conv(
        x.astype(np.float64),
        w.astype(np.float64),
        None,
        kwargs.get("stride", 1),
        [(kwargs["padding"],) * 2] * 2,
        1,
        kwargs.get("groups", 1),
    )
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.moveaxis(w, (0, 1), (-1, -2))
    conv = functools.partial(jaxconv.conv, **kwargs, channels_last=channels_last, impl="shift")
    got = np.asarray(jax.jit(conv)(x, w))
    if channels_last:
        got = np.moveaxis(got, -1, 1)
    assert_close(got, want, np.float32, reduction=reduction(w_shape))
