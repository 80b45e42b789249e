"""impl="auto": the rules choose what they say, and never leave XLA off the CPU."""

import dataclasses
import functools
import math
import re
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jitted import compile_as_shipped, cotangent, values_and_vjps

import jaxconv
from jaxconv import _derivatives, _dispatch, _spec
from jaxconv._impls import matmul as matmul_impl
from jaxconv._impls import shift as shift_impl


def _values_and_grads(conv, loss, x, w):
    """For "auto" and "lax": ``(conv(impl)(x, w), grad of loss(impl) at (x, w))``,
    from one compiled program (the value outside differentiation, so under auto's
    value-only rules)."""
    return jax.jit(
        lambda a, b: [(conv(i)(a, b), jax.grad(loss(i), (0, 1))(a, b)) for i in ("auto", "lax")]
    )(x, w)


def choose(x_shape, w_shape, backend="cpu", **kwargs):
    """The rules' choice for a call in the caller's layout (they see canonical shapes)."""
    plan = _spec.conv_plan("conv", x_shape, w_shape, **kwargs)
    if kwargs.get("channels_last"):
        x_shape = (x_shape[0], x_shape[-1], *x_shape[1:-1])
        w_shape = (w_shape[-1], w_shape[-2], *w_shape[:-2])
    return _dispatch.choose(plan.spec, x_shape, w_shape, jnp.float32, backend)


@pytest.mark.parametrize("backend", ["gpu", "tpu", "METAL", "cuda"])
def test_unmeasured_backends_use_xla(backend):
    for x, w, kw in [
        ((1, 8, 9, 9), (8, 1, 3, 3), dict(groups=8)),
        ((1, 8, 9, 9), (4, 8, 1, 1), {}),
        ((1, 8, 9, 9), (8, 2, 3, 3), dict(groups=4)),
        ((64, 96, 56, 56), (96, 96, 7, 7), dict(padding=3)),  # dense
    ]:
        assert choose(x, w, backend, **kw) == ("lax",) * 3


@pytest.mark.parametrize(
    "backend, platform_version, name",
    [
        ("gpu", "cuda 12030", "cuda"),
        ("gpu", "PJRT C API\nCUDA 13000", "cuda"),
        ("gpu", "rocm 60000", "gpu"),
        ("cpu", "cpu", "cpu"),
        ("tpu", "PJRT C API\nTFRT TPU v5 lite", "tpu"),
    ],
)
def test_backend_name_is_jaxs_but_cuda_for_a_cuda_gpu(monkeypatch, backend, platform_version, name):
    """The rules' backend: JAX's default one, but "cuda" for a GPU on CUDA, told as
    JAX's own tests tell it (the backend's ``platform_version``)."""
    assert _dispatch.backend_name() == jax.default_backend() or jax.default_backend() == "gpu"
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    fake = type("Backend", (), {"platform_version": platform_version})()
    monkeypatch.setattr(_dispatch.jax_backend, "get_backend", lambda: fake)
    assert _dispatch.backend_name() == name


_CUDA_DEPTHWISE = ((64, 96, 56, 56), (96, 1, 7, 7), dict(groups=96, padding=3))


@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_large_depthwise_kernels_by_fft(channels_last):
    """On an NVIDIA GPU, 2-D depthwise kernels from 7x7 take their derivatives by FFT,
    from 13x13 their value too; everything near them that was not measured stays XLA's."""

    def on_cuda(x, w, **kw):
        if channels_last:
            x, w = (x[0], *x[2:], x[1]), (*w[2:], w[1], w[0])
        return choose(x, w, "cuda", channels_last=channels_last, **kw)

    x, w, kw = _CUDA_DEPTHWISE
    rule = ("lax", "fft", "fft")
    assert on_cuda(x, w, **kw) == rule
    assert on_cuda(x, (96, 1, 13, 13), groups=96, padding=6) == ("fft",) * 3
    assert on_cuda((64, 128, 28, 28), (128, 1, 31, 31), groups=128, padding=15) == ("fft",) * 3
    assert on_cuda(x, (96, 1, 9, 9), groups=96) == ("lax", "fft", "fft")  # valid padding
    lax = ("lax",) * 3
    assert on_cuda(x, (96, 1, 3, 3), groups=96, padding=1) == lax
    assert on_cuda(x, (96, 1, 5, 5), groups=96, padding=2) == lax
    assert on_cuda(x, (96, 1, 7, 1), groups=96, padding=(3, 0)) == lax  # one dim under 7
    assert on_cuda(x, w, groups=96, padding=3, stride=2) == lax
    assert on_cuda(x, w, groups=96, padding=6, dilation=2) == lax
    assert on_cuda(x, (192, 1, 7, 7), groups=96, padding=3) == lax  # channel multiplier
    assert on_cuda(x, (96, 2, 7, 7), groups=48, padding=3) == lax  # grouped
    assert on_cuda((1, 96, 56, 56), w, **kw) == lax  # under CUDA_FFT_MIN_INPUT
    assert on_cuda((64, 128, 28, 28), (128, 1, 7, 7), groups=128, padding=3) == rule
    assert on_cuda((63, 128, 28, 28), (128, 1, 7, 7), groups=128, padding=3) == lax
    assert on_cuda((64, 1, 512, 512), (1, 1, 7, 7), padding=3) == lax  # one channel, dense
    assert choose((64, 96, 4096), (96, 1, 49), "cuda", groups=96, padding=24) == lax  # 1-D
    plan = _spec.conv_plan("conv", x, w, **kw)
    for dtype in (jnp.float16, jnp.bfloat16, jnp.float64):
        assert _dispatch.choose(plan.spec, x, w, dtype, "cuda") == lax
    assert _dispatch.choose(plan.spec, x, w, jnp.float32, "gpu") == lax  # not CUDA


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("k", [7, 13])
def test_cuda_rules_compute_the_convolution(monkeypatch, retrace, k, channels_last):
    """The CUDA rules, run here: auto's value and both derivatives agree with lax's,
    by FFT where the rules say (its transforms in the compiled program)."""
    monkeypatch.setattr(_dispatch, "backend_name", lambda: "cuda")
    monkeypatch.setattr(_dispatch, "CUDA_FFT_MIN_INPUT", 0)
    rng = np.random.default_rng(k)
    c = 6
    x = rng.standard_normal((2, c, 17, 15))
    w = rng.standard_normal((c, 1, k, k))
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.moveaxis(w, (0, 1), (-1, -2))
    kw = dict(groups=c, padding=k // 2, channels_last=channels_last)
    auto, lax = (functools.partial(jaxconv.conv2d, impl=i, **kw) for i in ("auto", "lax"))
    ct = rng.standard_normal(lax(x, w).shape)
    # The rule is float32's; lax in float64 is the reference.
    x32, w32, ct32 = (a.astype(np.float32) for a in (x, w, ct))
    [got] = values_and_vjps([auto], (x32, w32), ct32)
    [want] = values_and_vjps([lax], (x, w), ct)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * np.abs(b).max())
    value = jax.jit(auto).lower(x32, w32).as_text()
    train = jax.jit(lambda a, b: jax.vjp(auto, a, b)[1](ct32)).lower(x32, w32).as_text()
    assert ("fft" in value) == (k >= _dispatch.CUDA_FFT_VALUE_MIN_KERNEL)
    assert "fft" in train
    monkeypatch.setattr(_dispatch, "backend_name", lambda: "gpu")  # not CUDA
    jax.clear_caches()
    assert "fft" not in jax.jit(lambda a, b: jax.vjp(auto, a, b)[1](ct32)).lower(x32, w32).as_text()


@pytest.mark.parametrize("avx2_only", [False, True])
def test_small_grouped_maps_by_matmul(avx2_only, monkeypatch, retrace):
    """Grouped 2-D values of more than 16 groups on fewer than 784 rows and 400
    positions (ResNeXt's later stages): on a CPU with AVX2 and no AVX-512, channels-last
    or of one image, unstrided on more than 16 positions, by `matmul`
    (`_small_grouped_map_by_matmul`), and otherwise XLA's grouped value; on other CPUs
    by the groups loop from `GROUPS_LOOP_VALUE_MIN_ROWS` (49) rows, XLA's grouped value
    on fewer or with a kernel longer than the input. In 1-D XLA's grouped value. The
    derivatives are matmul's either way; the results are every algorithm's."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: avx2_only)
    assert _dispatch.GROUPS_LOOP_VALUE_MIN_ROWS == 49
    mm, xla_value = ("matmul",) * 3, ("lax", "matmul", "matmul")
    loop_value = (_dispatch.GROUPS_LOOP, "matmul", "matmul")
    taken = mm if avx2_only else loop_value
    other = xla_value if avx2_only else loop_value
    cl = dict(groups=32, padding=1, channels_last=True)
    assert choose((2, 14, 14, 512), (3, 3, 16, 512), **cl) == taken  # 392 rows
    assert choose((8, 7, 7, 1024), (3, 3, 32, 1024), **cl) == taken
    assert choose((8, 5, 5, 512), (3, 3, 16, 512), **cl) == taken  # 25 positions
    assert choose((2, 7, 7, 512), (5, 5, 16, 512), groups=32, padding=2, channels_last=True) == (
        taken
    )
    assert choose((1, 7, 7, 512), (3, 3, 16, 512), **cl) == taken  # 49 rows
    assert choose((1, 6, 8, 512), (3, 3, 16, 512), **cl) == (mm if avx2_only else xla_value)
    assert choose((8, 4, 4, 512), (3, 3, 16, 512), **cl) == other  # 16 positions
    x, w = (2, 14, 14, 512), (3, 3, 16, 512)
    assert choose(x, w, stride=2, **cl) == other  # strided
    assert choose((2, 512, 14, 14), (512, 16, 3, 3), groups=32, padding=1) == other  # cf
    assert choose((1, 512, 14, 14), (512, 16, 3, 3), groups=32, padding=1) == taken  # batch 1
    assert choose((1, 512, 4, 4), (512, 16, 3, 3), groups=32, padding=1) == xla_value
    # A kernel longer than the input (XLA's grouped convolution is fast there).
    x, w = (8, 512, 4, 4), (128, 16, 5, 5)
    assert choose(x, w, groups=32, padding=2) == xla_value  # 128 rows
    assert choose((8, 512, 5, 5), w, groups=32, padding=2) == other  # 200 rows
    assert choose((4, 14, 14, 512), (3, 3, 16, 512), **cl) == (_dispatch.GROUPS_LOOP,) * 3
    assert choose((2, 8, 8, 8, 512), (3, 3, 3, 16, 512), **cl) == ("lax",) * 3  # 3-D planes
    assert choose((2, 100, 512), (3, 16, 512), **cl) == xla_value  # 1-D channels-last
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7, 7, 512)).astype(np.float32)
    w = rng.standard_normal((3, 3, 16, 512)).astype(np.float32)
    got = jax.jit(lambda a, b: jaxconv.conv2d(a, b, **cl))(x, w)
    want = jaxconv.conv2d(x.astype(np.float64), w.astype(np.float64), impl="lax", **cl)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    x_cf, w_cf = np.moveaxis(x[:1], -1, 1), np.moveaxis(w, (-1, -2), (0, 1))
    cf = dict(groups=32, padding=1)
    got = jax.jit(lambda a, b: jaxconv.conv2d(a, b, **cf))(x_cf, w_cf)
    want = jaxconv.conv2d(x_cf.astype(np.float64), w_cf.astype(np.float64), impl="lax", **cf)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
def test_groups_loop_value_trains_as_lax(channels_last, monkeypatch):
    """A small-map grouped layer whose value the groups loop takes (on 64 rows, with
    `matmul`'s derivatives) equals lax's (float64), and so do forward mode, second
    derivatives and `vmap`."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    kwargs = dict(padding=2, dilation=2, groups=17)
    x_shape, w_shape = (1, 136, 8, 8), (204, 8, 3, 3)  # 17 groups of 8->12
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=11)
    spec = _spec.conv_plan("conv", x.shape, w.shape, channels_last=channels_last, **kwargs).spec
    names = _dispatch.choose(spec, x_shape, w_shape, jnp.float32, "cpu")
    assert names == (_dispatch.GROUPS_LOOP, "matmul", "matmul")
    trains_as_lax_float64(conv, x, w, check=True)


@pytest.mark.parametrize("avx2_only", [False, True])
def test_few_inputs_narrow_by_xla(avx2_only, monkeypatch, retrace):
    """Channels-first 2-D layers of stride 2 from 2-3 channels to at most 16, with 4x4
    or larger kernels or on at most 1,600 output rows, leave `matmul` (the RGB and grey
    first layers' rule) for the rules after it: XLA's convolution, the value `shift`'s
    within its bounds (`_dispatch._few_inputs_narrow_by_xla`). Not channels-last, to
    more channels, from one channel, of other strides, nor a 3-D layer's planes."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: avx2_only)
    mm = ("matmul",) * 3
    shift_value = ("shift", "lax", "lax")  # (2-4 channels, 600 multiply-adds)
    s2 = dict(stride=2, padding=1)
    assert choose((2, 3, 14, 14), (16, 3, 3, 3), **s2) == shift_value  # 98 rows
    assert choose((1, 3, 80, 80), (16, 3, 3, 3), **s2) == shift_value  # 1,600 rows
    many_rows = mm if avx2_only else ("shift", "matmul", "matmul")
    assert choose((1, 3, 82, 82), (16, 3, 3, 3), **s2) == many_rows  # 1,681 rows
    assert choose((2, 3, 14, 14), (17, 3, 3, 3), **s2) == mm  # 17 channels
    assert choose((2, 2, 14, 14), (8, 2, 3, 3), **s2) == shift_value
    assert choose((8, 3, 112, 112), (16, 3, 4, 4), stride=2) == ("lax",) * 3  # 16 taps
    assert choose((8, 3, 112, 112), (16, 3, 3, 5), stride=2) == mm  # 15 taps, 8 * 55 * 54 rows
    assert choose((8, 3, 112, 112), (17, 3, 4, 4), stride=2) == mm
    assert choose((2, 1, 14, 14), (16, 1, 3, 3), **s2)[1:] == ("matmul", "matmul")  # grey
    assert choose((2, 3, 14, 14), (16, 3, 3, 3), stride=3, padding=1)[1:] == mm[1:]
    assert choose((2, 3, 14, 14), (16, 3, 3, 3), stride=(1, 2), padding=1)[1:] == mm[1:]
    cl = dict(s2, channels_last=True)
    assert choose((2, 14, 14, 3), (3, 3, 3, 16), **cl) == ("shift", "lax", "lax")
    plan = _spec.conv_plan("conv", (2, 3, 14, 14), (16, 3, 3, 3), **s2)
    nested = _dispatch.choose(plan.spec, (2, 3, 14, 14), (16, 3, 3, 3), jnp.float32, "cpu", True)
    assert nested[1:] == mm[1:]
    # Under `auto` their values and gradients are lax's (float64).
    for x_shape, w_shape, kwargs in [
        ((2, 3, 14, 14), (16, 3, 4, 4), dict(stride=2)),
        ((2, 2, 9, 9), (8, 2, 3, 3), s2),
    ]:
        x, w, conv = float64_layer(x_shape, w_shape, kwargs, False, seed=4)
        trains_as_lax_float64(conv, x, w, check=False)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU rule")
@pytest.mark.parametrize("avx2_only", [False, True])
def test_rgb_and_grey_first_layers_run_by_matmul(avx2_only, monkeypatch, retrace):
    """Dense 2-D layers from at most 3 channels with kernels of at most 16 taps:
    `matmul` channels-first (the value from one channel shift's, and on CPUs with
    AVX-512 from 2-3 to at most 16 channels too); channels-last the
    value by `shift` for 17-35 output channels, and not on a CPU with AVX2 and no
    AVX-512 (`_dispatch._few_inputs_cliff`: there XLA's, or shift's within its
    bounds), nor on 2,048 output rows or fewer."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: avx2_only)
    mm = ("matmul",) * 3
    # (2,048 output rows at stride 2: past `test_few_inputs_narrow_by_xla`'s 1,600;
    # channels-last 2,178, past `_few_inputs_cliff`'s 2,048)
    x, x_cl = (2, 3, 64, 64), (2, 66, 66, 3)
    assert choose(x, (32, 3, 3, 3), stride=2, padding=1) == mm  # MobileNet's stem
    # Channels-first to at most 16 channels with at most 600 multiply-adds per output:
    # shift's value on CPUs with AVX-512 (`_few_inputs_channels_first_value_by_shift`).
    by_shift = mm if avx2_only else ("shift", "matmul", "matmul")
    assert choose(x, (16, 3, 3, 3), stride=2, padding=1) == by_shift  # MobileNetV3's
    assert choose(x, (17, 3, 3, 3), stride=2, padding=1) == mm
    assert choose((2, 2, 32, 32), (16, 2, 3, 3), padding=1) == by_shift
    assert choose(x, (12, 3, 4, 4), stride=4) == by_shift  # 576 multiply-adds
    assert choose(x, (13, 3, 4, 4), stride=4) == mm  # 624
    assert choose(x, (64, 3, 3, 3), padding=1) == mm  # VGG's
    assert choose(x, (96, 3, 4, 4), stride=4) == mm  # ConvNeXt's patchify stem
    # (grey: shift's value, `_single_input_by_shift`)
    assert choose((2, 1, 32, 32), (32, 1, 3, 3), padding=1) == ("shift", "matmul", "matmul")
    assert choose(x, (64, 3, 5, 5), stride=2, padding=2) == ("lax",) * 3  # 25 taps
    assert choose((2, 4, 32, 32), (32, 4, 3, 3), padding=1) == ("lax",) * 3  # 4 channels
    assert choose(x, (32, 3, 3, 3), padding=2, dilation=2) == ("lax",) * 3
    cl = dict(stride=2, padding=1, channels_last=True)
    # (to 16: shift's value, `_few_inputs_value_by_shift`)
    values = [(16, "shift"), (17, "shift"), (32, "shift"), (35, "shift"), (36, "lax")]
    if avx2_only:  # (shift's to at most 22: 600 multiply-adds per output)
        values = [(16, "shift"), (17, "shift"), (22, "shift"), (23, "lax"), (35, "lax")]
    for c_out, value in values:
        assert choose(x_cl, (3, 3, 3, c_out), **cl) == (value, "lax", "lax")
    # On 2,048 rows or fewer XLA's value (shift's to at most 22 channels), by rows, not
    # by the input's or output's size alone.
    small = [(16, "shift"), (22, "shift"), (23, "lax"), (32, "lax"), (35, "lax")]
    for c_out, value in small:
        assert choose((2, 64, 64, 3), (3, 3, 3, c_out), **cl) == (value, "lax", "lax")
    assert choose((8, 32, 32, 3), (3, 3, 3, 32), **cl) == ("lax",) * 3  # 2,048 rows
    past = "lax" if avx2_only else "shift"
    assert choose((9, 32, 32, 3), (3, 3, 3, 32), **cl)[0] == past  # 2,304 rows
    assert choose((1, 66, 66, 3), (3, 3, 3, 32), **cl) == ("lax",) * 3  # 1,089
    assert choose((1, 66, 66, 3), (3, 3, 3, 32), channels_last=True)[0] == past  # 4,096
    assert choose((1, 5, 685, 3), (3, 3, 3, 32), channels_last=True)[0] == past  # 3x683
    # ... but the 2-D planes of a 3-D stem (`choose`'s ``nested``), which nothing pads,
    # take it on few rows too.
    plan = _spec.conv_plan("conv", (2, 64, 64, 3), (3, 3, 3, 32), **cl)
    nested = _dispatch.choose(plan.spec, (2, 3, 64, 64), (32, 3, 3, 3), jnp.float32, "cpu", True)
    assert nested == (past, "lax", "lax")
    assert choose((2, 32, 3), (3, 3, 32), channels_last=True) == ("lax",) * 3  # 1-D
    # Their values and derivatives are XLA's convolution's.
    import numpy as np

    rng = np.random.default_rng(0)
    for x_shape, w_shape, kw in [
        ((2, 3, 11, 11), (32, 3, 3, 3), dict(stride=2, padding=1)),
        ((2, 3, 11, 11), (8, 3, 3, 3), dict(stride=2, padding=1)),
        ((2, 66, 66, 3), (3, 3, 3, 24), dict(stride=2, padding=1, channels_last=True)),
        ((2, 11, 11, 3), (3, 3, 3, 24), dict(stride=2, padding=1, channels_last=True)),
        ((2, 1, 9, 9), (8, 1, 4, 4), dict(stride=4)),
    ]:
        x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)

        def loss(impl, kw=kw):
            return lambda a, b: jnp.sum(jnp.sin(jaxconv.conv2d(a, b, impl=impl, **kw)))

        # auto's and lax's values and gradients, in one compiled program
        both = jax.jit(
            lambda a, b, loss=loss: tuple(
                jax.value_and_grad(loss(impl), (0, 1))(a, b) for impl in ("auto", "lax")
            )
        )
        for got, want in zip(*both(x, w), strict=True):
            for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10)


def test_cpu_rules():
    # (value, derivative along the input, derivative along the weight)
    assert choose((2, 16, 32, 32), (16, 1, 3, 3), groups=16) == ("shift",) * 3
    assert choose((2, 16, 32, 32), (32, 1, 7, 7), groups=16) == ("shift",) * 3
    # ... but with a channel multiplier whose input gradient shift would sum over more
    # than 100 products (27 in 3-D) a group, matmul's input gradient.
    shift_matmul_shift = ("shift", "matmul", "shift")
    assert choose((2, 16, 32, 32), (176, 1, 3, 3), groups=16) == ("shift",) * 3  # 11x9
    assert choose((2, 16, 32, 32), (192, 1, 3, 3), groups=16) == shift_matmul_shift  # 12x9
    assert choose((2, 16, 32, 32), (64, 1, 5, 5), groups=16) == ("shift",) * 3  # 4x25
    assert choose((2, 16, 32, 32), (80, 1, 5, 5), groups=16) == shift_matmul_shift  # 5x25
    assert choose((2, 8, 500), (264, 1, 3), groups=8) == ("shift",) * 3  # 1-D 33x3
    assert choose((2, 8, 500), (272, 1, 3), groups=8) == shift_matmul_shift  # 1-D 34x3
    assert choose((2, 8, 6, 6, 6), (8, 1, 3, 3, 3), groups=8) == ("shift",) * 3
    assert choose((2, 8, 6, 6, 6), (16, 1, 3, 3, 3), groups=8) == shift_matmul_shift  # 2x27
    assert choose((2, 8, 6, 6, 6), (16, 1, 1, 3, 3), groups=8) == ("shift",) * 3  # 2x9
    assert choose((2, 16, 64, 64), (16, 1, 9, 9), groups=16) == ("shift", "fft", "fft")
    # 13x13 and 15x15: shift's value in both layouts (channels-last by the
    # channels-first sum); 17x17 FFT in both layouts.
    cl = dict(groups=16, channels_last=True)
    for kernel in [(13, 13), (15, 15)]:
        assert choose((2, 16, 64, 64), (16, 1, *kernel), groups=16) == ("shift", "fft", "fft")
        assert choose((2, 64, 64, 16), (*kernel, 1, 16), **cl) == ("shift", "fft", "fft")
    assert choose((2, 16, 64, 64), (16, 1, 17, 17), groups=16) == ("fft",) * 3
    assert choose((2, 64, 64, 16), (17, 17, 1, 16), **cl) == ("fft",) * 3
    shift = ("shift",) * 3
    assert choose((1, 128, 56, 56), (128, 4, 3, 3), groups=32, padding=1) == shift
    assert choose((8, 128, 2000), (128, 4, 3), groups=32, padding=1) == shift
    # ... the input gradient by matmul where shift's would sum over more than 100 products
    # a group (4 groups of 4->16 3x3: 144), and then the weight gradient too.
    shift_matmul = ("shift", "matmul", "matmul")
    assert choose((2, 8, 28, 28), (32, 4, 3, 3), groups=2, padding=1) == shift_matmul
    assert choose((2, 16, 28, 28), (44, 4, 3, 3), groups=4, padding=1) == shift  # 11x9
    assert choose((2, 16, 28, 28), (48, 4, 3, 3), groups=4, padding=1) == shift_matmul  # 12x9
    assert choose((1, 8, 28, 28), (128, 2, 7, 7), groups=4, padding=3) == shift_matmul
    # ... but up to 16 groups of 8 or more output channels on 6272 rows or more in 2-D
    # differentiate by dense groups.
    shift_dense = ("shift", _dispatch.DENSE_GROUPS, _dispatch.DENSE_GROUPS)
    assert choose((8, 64, 56, 56), (64, 8, 3, 3), groups=8, padding=1) == shift_dense
    assert choose((8, 8, 28, 28), (32, 4, 3, 3), groups=2, padding=1) == shift_dense
    assert choose((8, 56, 56, 64), (3, 3, 8, 64), groups=8, channels_last=True) == shift_dense
    assert choose((8, 64, 56, 56), (64, 4, 3, 3), groups=16, padding=1) == shift  # 4 out
    assert choose((8, 64, 28, 28), (128, 4, 3, 3), groups=16, padding=1) == shift  # 4x8
    assert choose((8, 8, 4000), (32, 4, 3), groups=2, padding=1) == shift  # 1-D
    # ... but channels-last 8x8 groups from batch 2 differentiate by the groups loop.
    x, w = (2, 28, 28, 256), (3, 3, 8, 256)
    shift_loop = ("shift", _dispatch.GROUPS_LOOP, _dispatch.GROUPS_LOOP)
    assert choose(x, w, groups=32, padding=1, channels_last=True) == shift_loop
    w = (3, 3, 8, 64)
    x = (1, 28, 28, 256)
    assert choose(x, w, groups=32, padding=1, channels_last=True) == shift
    assert choose((2, 256, 28, 28), (256, 8, 3, 3), groups=32, padding=1) == shift
    x, w = (2, 28, 28, 128), (3, 3, 4, 256)
    assert choose(x, w, groups=32, padding=1, channels_last=True) == shift
    # ... and 8 or more groups of 16 or more output channels, in either layout.
    assert choose((2, 64, 28, 28), (256, 4, 3, 3), groups=16, padding=1) == shift_loop
    assert choose((1, 64, 28, 28), (256, 4, 3, 3), groups=16, padding=1) == shift_matmul
    assert choose((8, 128, 28, 28), (256, 4, 3, 3), groups=32, padding=1) == shift
    # Many channels per group, or many products per output: one dense convolution per
    # group, up to 16 groups.
    dense_groups = (_dispatch.DENSE_GROUPS,) * 3
    assert choose((8, 32, 28, 28), (512, 4, 3, 3), groups=8, padding=1) == dense_groups
    assert choose((8, 128, 1000), (128, 16, 5), groups=8, padding=2) == dense_groups
    assert choose((8, 256, 7, 7), (256, 16, 3, 3), groups=16, padding=1) == dense_groups
    assert choose((8, 16, 28, 28), (128, 8, 3, 3), groups=2, padding=1) == dense_groups
    assert choose((8, 64, 28, 28), (4, 16, 3, 3), groups=4, padding=1) == dense_groups  # 16x1
    assert choose((8, 28, 28, 64), (3, 3, 16, 64), groups=4, channels_last=True) == dense_groups
    # ... but 1x1 groups of at most 16 input channels (and more than 64 input x output
    # channels): shift's value; channels-last or past 16 groups, shift's input gradient
    # and matmul's weight gradient, else the dense groups' derivatives.
    pointwise = dict(groups=4, channels_last=True)
    shift_matmul = ("shift", "shift", "matmul")
    shift_dense_groups = ("shift", *dense_groups[1:])
    assert choose((1, 136, 136, 32), (1, 1, 8, 512), **pointwise) == shift_matmul
    assert choose((8, 56, 56, 64), (1, 1, 16, 256), **pointwise) == shift_matmul  # 16->64
    assert choose((8, 56, 56, 64), (1, 1, 16, 128), **pointwise) == shift_matmul  # 2x
    assert choose((8, 56, 56, 64), (1, 1, 16, 64), **pointwise) == shift_matmul  # square
    assert choose((8, 56, 56, 128), (1, 1, 32, 512), **pointwise) == dense_groups  # 32 in
    assert choose((8, 64, 56, 56), (256, 16, 1, 1), groups=4) == shift_dense_groups  # first
    assert choose((8, 512, 28, 28), (512, 16, 1, 1), groups=32) == shift_matmul  # 32 groups
    assert choose((8, 512, 28, 28), (512, 32, 1, 1), groups=16)[0] != "shift"  # 32 in
    assert choose((8, 512, 1000), (256, 16, 1), groups=32) == shift_matmul  # 1-D
    assert choose((8, 128, 1000), (128, 16, 1), groups=8) == shift_dense_groups
    assert choose((2, 8, 28, 28, 512), (1, 1, 1, 16, 256), groups=32, channels_last=True) == (
        shift_matmul  # 3-D
    )
    assert choose((8, 56, 56, 64), (1, 1, 16, 64), groups=4, stride=2, channels_last=True) == (
        shift_matmul  # strided
    )
    assert choose((8, 56, 56, 64), (3, 3, 16, 256), **pointwise) == dense_groups  # 3x3
    assert choose((8, 512, 28, 28), (1024, 4, 1, 1), groups=128) == shift  # 4->8: shift's
    # ... at batch 1 with small groups to more than 16 channels a group, the value alone.
    dense_value = (_dispatch.DENSE_GROUPS, "matmul", "matmul")
    assert choose((1, 224, 28, 28), (238, 16, 3, 3), groups=14, padding=1) == dense_value
    assert choose((1, 224, 28, 28), (224, 16, 3, 3), groups=14, padding=1) == dense_groups
    assert choose((1, 256, 14, 14), (256, 32, 3, 3), groups=8, padding=1) == dense_groups
    # ... but XLA's grouped value for a channels-last output of at most 16 positions.
    x, w = (2, 7, 7, 256), (7, 7, 32, 256)
    lax_value = ("lax", _dispatch.DENSE_GROUPS, _dispatch.DENSE_GROUPS)
    assert choose(x, w, groups=8, stride=2, channels_last=True) == lax_value  # 1 position
    x, w = (2, 4, 4, 256), (3, 3, 32, 256)
    assert choose(x, w, groups=8, padding=1, channels_last=True) == lax_value  # 16
    x, w = (2, 5, 5, 256), (3, 3, 32, 256)
    assert choose(x, w, groups=8, padding=1, channels_last=True) == dense_groups  # 25
    assert choose((2, 256, 4, 4), (256, 32, 3, 3), groups=8, padding=1) == dense_groups
    # ... and in 1-D channels-last.
    assert choose((8, 1000, 128), (5, 32, 128), groups=4, channels_last=True) == lax_value
    assert choose((8, 128, 1000), (128, 32, 5), groups=4) == dense_groups  # channels-first
    # More groups: the groups' dense convolutions in a loop in 2-D and channels-first 1-D
    # from 784 rows (batch x output positions), derivatives included ...
    loop_value = (_dispatch.GROUPS_LOOP,) * 3
    assert choose((8, 512, 28, 28), (512, 16, 3, 3), groups=32, padding=1) == loop_value
    assert choose((1, 512, 28, 28), (512, 16, 3, 3), groups=32, padding=1) == loop_value
    assert choose((4, 512, 14, 14), (512, 16, 3, 3), groups=32, padding=1) == loop_value
    assert choose((8, 512, 1000), (512, 16, 5), groups=32, padding=2) == loop_value
    assert choose((8, 28, 28, 512), (3, 3, 16, 512), groups=32, channels_last=True) == loop_value
    # ... else matmul derivatives, and matmul for the value on large 2-D maps, XLA's
    # grouped one on small maps and in 1-D channels-last; in 3-D all by 2-D planes.
    grouped_lax_value = ("lax", "matmul", "matmul")
    # (On CPUs with AVX-512 the value of 64 or more rows by the groups loop too.)
    small = (_dispatch.GROUPS_LOOP, "matmul", "matmul")
    small = grouped_lax_value if _dispatch.lax_impl.avx2_only() else small
    assert choose((8, 512, 7, 7), (512, 16, 3, 3), groups=32, padding=1) == small
    x, w = (1, 1000, 512), (3, 16, 512)
    assert choose(x, w, groups=32, channels_last=True) == grouped_lax_value
    x, w = (2, 512, 8, 8, 8), (512, 16, 3, 3, 3)
    assert choose(x, w, groups=32, padding=1) == ("lax",) * 3
    assert choose((1, 512, 26, 26), (512, 16, 3, 3), groups=32) == ("matmul",) * 3  # 576 rows
    x, w = (1, 512, 4, 4, 4), (512, 16, 3, 3, 3)
    assert choose(x, w, groups=32, padding=1) == ("lax",) * 3
    assert choose((4, 100, 68, 68), (100, 100, 5, 5)) == ("lax",) * 3
    # Few positions, deep patches: matmul channels-first, and channels-last only in 3-D
    # to 256 channels or more.
    assert choose((2, 256, 7, 7), (256, 256, 3, 3), padding=1) == ("matmul",) * 3
    assert choose((2, 7, 7, 256), (3, 3, 256, 256), padding=1, channels_last=True) == ("lax",) * 3
    x, w = (2, 4, 4, 4, 256), (3, 3, 3, 256, 256)
    assert choose(x, w, padding=1, channels_last=True) == ("matmul",) * 3
    x, w = (2, 4, 4, 4, 256), (3, 3, 3, 256, 128)
    assert choose(x, w, padding=1, channels_last=True) == ("lax",) * 3
    assert choose((2, 64, 28, 28), (32, 64, 1, 1)) == ("matmul",) * 3
    assert choose((64, 100, 1, 1), (512, 100, 4, 4), padding=3) == ("matmul",) * 3  # one pixel
    assert choose((2, 28, 28, 64), (1, 1, 64, 32), channels_last=True) == ("matmul",) * 3
    assert choose((2, 64, 500), (32, 64, 1)) == ("matmul",) * 3
    assert choose((2, 500, 64), (1, 64, 32), channels_last=True) == ("lax",) * 3  # 1-D cl
    # 3-D channels-last 1x1: XLA's value and matmul's derivatives.
    lax_matmul = ("lax", "matmul", "matmul")
    assert choose((2, 8, 14, 14, 32), (1, 1, 1, 32, 128), channels_last=True) == lax_matmul
    assert choose((2, 8, 14, 14, 64), (1, 1, 1, 64, 64), channels_last=True) == lax_matmul
    assert choose((2, 8, 14, 14, 96), (1, 1, 1, 96, 24), channels_last=True) == lax_matmul
    assert choose((2, 32, 8, 14, 14), (128, 32, 1, 1, 1)) == ("matmul",) * 3  # channels-first
    # From 4-16 channels to 96 or more, 3x3 or smaller, unstrided: matmul's derivatives,
    # its value too channels-first and undilated.
    wide = dict(padding=1)
    assert choose((2, 8, 30, 30), (128, 8, 3, 3), **wide) == ("matmul",) * 3
    assert choose((2, 4, 30, 30), (96, 4, 3, 3), **wide) == ("matmul",) * 3
    assert choose((2, 16, 30, 30), (96, 16, 3, 1), **wide) == ("matmul",) * 3
    x, w = (2, 30, 30, 8), (3, 3, 8, 128)
    assert choose(x, w, channels_last=True, **wide)[1:] == ("matmul",) * 2
    assert choose(x, w, channels_last=True, **wide)[0] != "matmul"
    assert choose((2, 8, 30, 30), (128, 8, 3, 3), padding=2, dilation=2)[1:] == ("matmul",) * 2
    assert choose((2, 8, 30, 30), (128, 8, 3, 3), padding=2, dilation=2)[0] != "matmul"
    assert choose((2, 8, 30, 30), (95, 8, 3, 3), **wide)[1:] != ("matmul",) * 2
    assert choose((2, 17, 30, 30), (128, 17, 3, 3), **wide)[1:] != ("matmul",) * 2
    assert choose((2, 8, 30, 30), (128, 8, 5, 5), padding=2)[1:] != ("matmul",) * 2
    assert choose((2, 8, 30, 30), (128, 8, 3, 3), stride=2, **wide)[1:] != ("matmul",) * 2
    assert choose((2, 8, 30), (128, 8, 3), **wide)[1:] != ("matmul",) * 2  # 1-D
    # ... but strided, matmul's, value and derivatives; in 1-D channels-last, XLA's value
    # and matmul's derivatives.
    cl = dict(channels_last=True)
    assert choose((2, 8, 14, 14, 32), (1, 1, 1, 32, 128), stride=2, **cl) == ("matmul",) * 3
    assert choose((2, 8, 14, 14, 64), (1, 1, 1, 64, 64), stride=(1, 2, 1), **cl) == ("matmul",) * 3
    assert choose((2, 8, 14, 14, 96), (1, 1, 1, 96, 24), stride=(2, 1, 1), **cl) == ("matmul",) * 3
    assert choose((2, 500, 64), (1, 64, 32), stride=2, **cl) == lax_matmul
    assert choose((2, 500, 64), (1, 64, 128), stride=3, **cl) == lax_matmul
    assert choose((2, 28, 28, 64), (1, 1, 64, 32), stride=2, **cl) == ("matmul",) * 3  # 2-D
    assert choose((2, 32, 8, 14, 14), (128, 32, 1, 1, 1), stride=2) == ("matmul",) * 3
    assert choose((2, 512, 7, 7), (512, 512, 3, 3), padding=1) == ("matmul",) * 3
    assert choose((2, 256, 7, 7), (256, 256, 3, 3), padding=1) == ("matmul",) * 3
    # ... the value by XLA's with fewer than 256 output channels, all of it under 128.
    x, w = (2, 512, 7, 7), (128, 512, 3, 3)
    assert choose(x, w, padding=1) == ("lax", "matmul", "matmul")
    assert choose((2, 96, 7, 7), (64, 96, 7, 7), padding=3) == ("lax",) * 3
    # ... unless the product has more rows (batch x positions) than its depth / 8.
    assert choose((8, 128, 7, 7), (128, 128, 3, 3), padding=1) == ("lax",) * 3
    assert choose((16, 512, 7, 7), (512, 512, 3, 3), padding=1) == ("lax",) * 3
    assert choose((64, 32, 8, 8), (32, 32, 3, 3), padding=1) == ("lax",) * 3
    # ... or patches of more than 10k elements per output channel.
    assert choose((4, 384, 5, 5), (128, 384, 5, 5), padding=2) == ("lax", "matmul", "matmul")
    assert choose((8, 384, 5, 5), (128, 384, 5, 5), padding=2) == ("lax",) * 3  # 15k
    assert choose((8, 384, 5, 5), (256, 384, 5, 5), padding=2) == ("matmul",) * 3  # 7.5k
    assert choose((16, 384, 5, 5), (256, 384, 5, 5), padding=2) == ("lax",) * 3  # 15k
    assert choose((2, 7, 7, 512), (3, 3, 512, 512), padding=1, channels_last=True) == ("lax",) * 3
    assert choose((2, 64, 56, 56), (64, 64, 3, 3), padding=1) == ("lax",) * 3
    assert choose((2, 256, 1000), (256, 256, 3), padding=1) == ("lax",) * 3
    # 1-D channels-first from few channels (raw audio) by matmul's product per image.
    assert choose((2, 1, 16000), (512, 1, 10), stride=5) == ("matmul",) * 3
    assert choose((2, 1, 16000), (128, 1, 12), stride=4, padding=5) == ("matmul",) * 3
    assert choose((2, 1, 16000), (128, 1, 80), stride=4, padding=38) == ("lax",) * 3  # taps
    assert choose((8, 8, 1000), (256, 8, 3), padding=1) == ("matmul",) * 3
    assert choose((8, 24, 1000), (128, 24, 3), padding=1) == ("lax",) * 3  # depth 72
    assert choose((2, 16000, 1), (10, 1, 512), stride=5, channels_last=True) == ("lax",) * 3
    assert choose((2, 2, 300), (512, 2, 10), stride=5) == ("lax",) * 3  # 59 positions
    # A kernel longer than the input along an undilated dim: matmul, any layout and rank.
    matmul = ("matmul",) * 3
    assert choose((8, 256, 2, 2), (256, 256, 3, 3), padding=1) == matmul
    assert choose((1, 4, 4, 384), (5, 5, 384, 384), padding=2, channels_last=True) == matmul
    assert choose((1, 64, 6, 8), (32, 64, 7, 7), padding=3) == matmul  # one dim suffices
    assert choose((4, 2, 256), (3, 256, 256), padding=1, channels_last=True) == matmul
    assert choose((2, 64, 4, 4, 4), (64, 64, 5, 5, 5), padding=2) == matmul
    # ... in 3-D not along the depth alone, which the 2-D planes take apart.
    assert choose((1, 64, 2, 48, 48), (64, 64, 3, 3, 3), padding=1) == ("lax",) * 3
    assert choose((1, 64, 3, 48, 48), (64, 64, 3, 3, 3), padding=(0, 1, 1)) == ("lax",) * 3
    # A dilated window past the output: the derivatives by matmul on small outputs only.
    past_output = ("matmul",) * 3
    assert choose((2, 256, 12, 12), (256, 256, 3, 3), dilation=5, padding=1) == past_output
    aspp = dict(dilation=12, padding=12)  # window 25 on 17x17 outputs
    assert choose((2, 256, 17, 17), (256, 256, 3, 3), **aspp)[1:] != ("matmul",) * 2
    assert choose((2, 16, 2, 2), (32, 16, 3, 3), padding=1) == matmul  # 32 outputs
    # ... not with at most 16 channels, nor along dilated dims only, nor kernel = input.
    assert choose((8, 16, 2, 2), (16, 16, 3, 3), padding=1) == ("lax",) * 3
    assert choose((1, 64, 2, 40), (64, 64, 3, 3), padding=2, dilation=2) == ("lax",) * 3
    # (... but a dilated window past an output of at most 64 positions, see above.)
    # (From 128 channels: with AVX2 alone, fewer keep the rules', see
    # `test_kernel_past_output_dilated_on_avx2_only_cpus`.)
    x, w = (1, 128, 2, 2), (128, 128, 3, 3)
    assert choose(x, w, padding=2, dilation=2) == ("matmul",) * 3
    assert choose((4, 64, 7, 7), (64, 64, 7, 7), padding=3) == ("lax",) * 3
    # ... nor to fewer than 32 channels (DCGAN's last discriminator layer; 8 on AMD's
    # AVX-512 CPUs, see `test_kernel_past_output_few_channels_on_amd_avx512`).
    assert choose((16, 512, 4, 4), (1, 512, 4, 4))[1:] != ("matmul",) * 2
    assert choose((16, 512, 7, 7), (7, 512, 7, 7))[1:] != ("matmul",) * 2
    assert choose((16, 512, 4, 4), (32, 512, 4, 4))[1:] == ("matmul",) * 2


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the planes rule is the CPU's")
def test_3d_runs_as_2d_planes_on_cpu():
    """A dense 3-D convolution under auto has no 3-D convolution left, values or grads."""
    import jaxconv

    x = np.ones((1, 4, 5, 12, 12))
    w = np.ones((4, 4, 3, 3, 3))

    def convolutions(f, *args):
        text = jax.jit(f).lower(*args).as_text()
        return [line for line in text.splitlines() if "stablehlo.convolution" in line]

    conv = lambda a, b: jaxconv.conv3d(a, b, padding=1, impl="auto")  # noqa: E731
    grads = jax.grad(lambda a, b: jnp.sum(conv(a, b) ** 2), (0, 1))
    for lines in (convolutions(conv, x, w), convolutions(grads, x, w)):
        assert lines
        assert not any("0, 1, 2]" in line for line in lines)  # no 3-D convolution
    lax3d = convolutions(lambda a, b: jaxconv.conv3d(a, b, padding=1, impl="lax"), x, w)
    assert all("0, 1, 2]" in line for line in lax3d)


def spy_planes(monkeypatch, name, record, calls=None):
    """``calls`` (a new list if None), which gets ``record(spec)`` for each
    `planes.<name>` call traced, unless that is None."""
    from jaxconv._impls import planes

    calls = [] if calls is None else calls
    original = getattr(planes, name)

    def spy(*args, **kwargs):
        if (entry := record(args[2])) is not None:  # (the spec)
            calls.append(entry)
        return original(*args, **kwargs)

    monkeypatch.setattr(planes, name, spy)
    return calls


def arrays_3d(seed, x_shape, w_shape, channels_last):
    """Float32 normal input and weight of these channels-first shapes, in the layout."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    if channels_last:
        return np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 4, 1, 0))
    return x, w


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the planes rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, by, channels_last",
    [
        # 14x14 planes: the value, the unstrided input gradient and, from at most 8
        # input channels, the weight gradient stack the depth taps; the value and the
        # weight gradient from more fold them into the output channels where these are
        # fewer (or, the value, as many channels-last), and so does the input gradient
        # channels-first.
        ((1, 4, 5, 14, 14), (6, 4, 3, 3, 3), dict(padding=1), ("in", "in", "in"), False),
        ((1, 4, 5, 14, 14), (6, 4, 3, 3, 3), dict(padding=1), ("in", "in", "in"), True),
        ((1, 16, 5, 14, 14), (6, 16, 3, 3, 3), dict(padding=1), ("out", "in", "out"), True),
        ((1, 16, 5, 14, 14), (6, 16, 3, 3, 3), dict(padding=1), ("out", "out", "out"), False),
        ((1, 16, 5, 14, 14), (16, 16, 3, 3, 3), dict(padding=1), ("out", "in", "no"), True),
        # the weight gradient's floor: from 9 input channels "out", from 8 "in"
        ((1, 9, 5, 14, 14), (6, 9, 3, 3, 3), dict(padding=1), ("out", "in", "out"), True),
        ((1, 8, 5, 14, 14), (6, 8, 3, 3, 3), dict(padding=1), ("out", "in", "in"), True),
        # one depth tap: nothing to fold
        (
            (1, 16, 5, 14, 14),
            (6, 16, 1, 3, 3),
            dict(padding=(0, 1, 1)),
            ("in", "in", "no"),
            True,
        ),
        ((1, 6, 5, 14, 14), (6, 6, 3, 3, 3), dict(padding=1), ("out", "in", "in"), True),
        ((1, 6, 5, 14, 14), (6, 6, 3, 3, 3), dict(padding=1), ("in", "in", "in"), False),
        (
            (1, 16, 5, 14, 14),
            (8, 16, 3, 3, 3),
            dict(padding=(2, 1, 1), dilation=(2, 1, 1)),
            ("out", "out", "out"),
            False,
        ),
        # strided along the depth: not the input gradient, nor the output channels
        (
            (1, 4, 7, 14, 14),
            (6, 4, 3, 3, 3),
            dict(padding=1, stride=(2, 1, 1)),
            ("in", "no", "in"),
            False,
        ),
        (
            (1, 16, 7, 14, 14),
            (6, 16, 3, 3, 3),
            dict(padding=1, stride=(2, 1, 1)),
            ("in", "no", "no"),
            True,
        ),
        # 7x7 planes: to fewer channels "out" still, to as many one per depth tap;
        # 6x6 planes: one per depth tap
        ((1, 16, 5, 7, 7), (6, 16, 3, 3, 3), dict(padding=1), ("out", "out", "out"), False),
        ((1, 16, 5, 7, 7), (6, 16, 3, 3, 3), dict(padding=1), ("out", "no", "out"), True),
        ((1, 6, 5, 7, 7), (6, 6, 3, 3, 3), dict(padding=1), ("no", "no", "no"), True),
        ((1, 16, 5, 6, 6), (6, 16, 3, 3, 3), dict(padding=1), ("no", "no", "no"), True),
        # 12x12 planes: one 2-D convolution per depth tap in every role, but to fewer
        # channels
        ((1, 4, 5, 12, 12), (6, 4, 3, 3, 3), dict(padding=1), ("no", "no", "no"), True),
        ((1, 16, 5, 12, 12), (6, 16, 3, 3, 3), dict(padding=1), ("out", "no", "out"), True),
    ],
)
def test_3d_planes_stacked_by_role(
    monkeypatch, retrace, x_shape, w_shape, kwargs, by, channels_last
):
    """Which roles of a 3-D convolution under auto stack the depth taps into the input
    channels ("in": `planes.stacked`) or the output channels ("out":
    `planes.output_stacked`) rather than summing one 2-D convolution per depth tap
    ("no": `planes.decompose`); values and gradients equal lax's either way."""
    calls = []
    for name, short in {"stacked": "in", "output_stacked": "out", "decompose": "no"}.items():
        record = lambda spec, short=short: short if spec.ndim == 3 else None  # noqa: E731
        spy_planes(monkeypatch, name, record, calls)
    x, w = arrays_3d(3, x_shape, w_shape, channels_last)

    def conv(impl):
        return lambda a, b: jaxconv.conv3d(a, b, channels_last=channels_last, impl=impl, **kwargs)

    def role_fns(impl):
        return {
            _dispatch.FORWARD: conv(impl),
            _dispatch.INPUT_GRADIENT: jax.grad(lambda a, b: jnp.sum(conv(impl)(a, b) ** 2), 0),
            _dispatch.WEIGHT_GRADIENT: jax.grad(lambda a, b: jnp.sum(conv(impl)(a, b) ** 2), 1),
        }

    roles = {}
    for role, f in role_fns("auto").items():
        calls.clear()
        jax.jit(f).lower(x, w)  # the spies record the role's trace
        roles[role] = calls[-1]
    # Every role under auto and under lax, in one compiled program.
    got, want = jax.jit(
        lambda a, b: [{r: f(a, b) for r, f in role_fns(impl).items()} for impl in ("auto", "lax")]
    )(x, w)
    for role in roles:
        scale = float(np.max(np.abs(want[role])))
        np.testing.assert_allclose(got[role], want[role], rtol=1e-4, atol=1e-4 * scale)
    assert tuple(roles[r] for r in range(3)) == by


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the planes rule is the CPU's")
@pytest.mark.parametrize("stride", [3, 2, (1, 2, 2)])
def test_channels_last_3d_planes_value_keeps_callers_layout(monkeypatch, retrace, stride):
    """Channels-last, `planes.decompose` pads and slices the depth planes in the caller's
    layout: the compiled value holds no channels-first copy of the input (padded
    channels-first, XLA transposed the input there and every tap's planes back: 3x3x3
    stride 3 256->8 @16 ran 3.0x slower). Value and both gradients stay `lax`'s. (The
    spy sees only fresh traces, hence `retrace`.)"""
    import re

    import jaxconv

    x, w = arrays_3d(5, (1, 32, 12, 12, 12), (8, 32, 3, 3, 3), True)
    decomposed = spy_planes(monkeypatch, "decompose", lambda spec: spec.channels_last)

    def conv(impl):
        return lambda a, b: jaxconv.conv3d(
            a, b, stride=stride, padding=1, channels_last=True, impl=impl
        )

    text = jax.jit(conv("auto")).lower(x, w).compile().as_text()
    assert decomposed == [True]  # by 2-D planes, one per depth tap
    assert not re.search(r"f32\[1,32,\d+,\d+,\d+\]", text)  # no channels-first input

    def loss(impl):
        return lambda a, b: jnp.sum(jnp.sin(conv(impl)(a, b)))

    for impl_out, lax_out in zip(
        (conv("auto")(x, w), *jax.grad(loss("auto"), (0, 1))(x, w)),
        (conv("lax")(x, w), *jax.grad(loss("lax"), (0, 1))(x, w)),
        strict=True,
    ):
        scale = float(np.max(np.abs(lax_out)))
        np.testing.assert_allclose(impl_out, lax_out, rtol=1e-4, atol=1e-4 * scale)


@pytest.fixture
def stacked_calls(monkeypatch):
    """The spatial rank of each `planes.stacked` call traced during the test, with the
    strided rows' floors lifted (`_dispatch.STRIDED_ROWS_MIN_FLOPS`,
    `STRIDED_ROWS_MIN_PRODUCTS_PER_POSITION` and
    `STRIDED_ROWS_MIN_PRODUCTS_PER_STACKED_ELEMENT`) so that small layers take the
    rule."""
    calls = spy_planes(monkeypatch, "stacked", lambda spec: spec.ndim)
    monkeypatch.setattr(_dispatch, "STRIDED_ROWS_MIN_FLOPS", 0)
    monkeypatch.setattr(_dispatch, "STRIDED_ROWS_MIN_PRODUCTS_PER_POSITION", 0)
    monkeypatch.setattr(_dispatch, "STRIDED_ROWS_MIN_PRODUCTS_PER_STACKED_ELEMENT", 0)
    return calls


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rows rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, stacked, channels_last",
    [
        ((2, 16, 20, 18), (16, 16, 3, 3), dict(stride=2, padding=1), True, False),
        ((2, 16, 20, 18), (16, 16, 3, 3), dict(stride=2, padding=1), True, True),
        ((1, 8, 24, 17), (12, 8, 4, 2), dict(stride=(3, 1)), True, True),
        ((1, 8, 24, 17), (12, 8, 4, 2), dict(stride=(3, 1), dilation=(1, 2)), False, True),
        ((1, 8, 24, 17), (12, 8, 3, 3), dict(stride=2, padding="valid"), True, False),
        ((2, 16, 20, 18), (16, 16, 3, 3), dict(stride=(1, 2), padding=1), False, True),
        ((2, 16, 20, 18), (16, 16, 3, 1), dict(stride=2, padding=1), False, False),
        ((2, 32, 20, 18), (32, 16, 3, 3), dict(stride=2, padding=1, groups=2), False, True),
        ((2, 16, 20, 18), (16, 16, 1, 3), dict(stride=2), False, False),  # one kernel row
    ],
)
def test_strided_value_by_stacked_rows(
    stacked_calls, retrace, x_shape, w_shape, kwargs, stacked, channels_last
):
    """auto's value of a dense 2-D convolution strided along its height is one 1-D
    convolution of stacked input rows (`planes.stacked`), outside differentiation only;
    values and gradients equal lax's. (The FLOPs floor is lifted for these small layers;
    `test_strided_rows_flops_floor` checks it.)"""
    calls = stacked_calls
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))

    def conv(impl):
        return lambda a, b: jaxconv.conv2d(a, b, channels_last=channels_last, impl=impl, **kwargs)

    jax.jit(conv("auto")).lower(x, w)  # the value's trace
    assert calls == ([2] if stacked else [])
    calls.clear()
    loss = lambda impl: lambda a, b: jnp.sum(jnp.sin(conv(impl)(a, b)))  # noqa: E731
    jax.jit(jax.grad(loss("auto"), (0, 1))).lower(x, w)  # the gradients' trace
    assert calls == []  # under differentiation the value stays XLA's
    # auto's and lax's values and gradients, in one compiled program
    (got, grads), (want, grads_lax) = _values_and_grads(conv, loss, x, w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, e in zip(grads, grads_lax, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rows rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, padding, channels_last, stacked",
    [
        ((1, 3, 112, 112), (64, 3, 7, 7), 3, False, False),  # under the FLOPs floor
        ((8, 3, 224, 224), (64, 3, 7, 7), 3, False, True),  # the stem, 9408 per position
        ((8, 3, 224, 224), (64, 3, 7, 7), 3, True, False),  # ... channels-last, wide
        ((8, 4, 112, 112), (128, 4, 3, 3), 1, False, False),  # 4608 per position
        ((8, 8, 112, 112), (128, 8, 3, 3), 1, False, True),  # 9216
        ((8, 64, 112, 112), (128, 64, 3, 3), 1, True, False),  # channels-last, 112 wide
        ((8, 64, 56, 56), (128, 64, 3, 3), 1, True, True),  # ResNet's, 56 wide
        ((8, 32, 64, 64), (128, 32, 3, 3), 1, True, True),  # 64 wide
        ((8, 64, 56, 56), (64, 64, 3, 3), 1, False, False),  # 96 products per element
        ((4, 256, 27, 27), (16, 256, 7, 7), 3, False, False),  # 56
        ((1, 256, 79, 79), (48, 256, 5, 5), 2, False, False),  # 120
        ((4, 48, 55, 55), (192, 48, 3, 3), 1, False, True),  # 288
        # To no more channels than it takes only from at most 64; not 4x4 at stride 2.
        ((4, 192, 32, 32), (128, 192, 3, 3), 1, False, False),
        ((2, 128, 56, 56), (128, 128, 3, 3), 1, True, False),
        ((8, 64, 64, 64), (64, 64, 5, 5), 2, False, True),
        ((4, 64, 64, 64), (128, 64, 4, 4), 1, False, False),
        ((4, 64, 64, 64), (128, 64, 5, 5), 2, False, True),
        # 7x7 only from at most 32 channels.
        ((4, 48, 64, 64), (128, 48, 7, 7), 3, False, False),
        ((4, 32, 64, 64), (64, 32, 7, 7), 3, True, True),
    ],
)
def test_strided_rows_thresholds(x_shape, w_shape, padding, channels_last, stacked):
    """Strided 2-D values stack their rows only from `STRIDED_ROWS_MIN_FLOPS`,
    `STRIDED_ROWS_MIN_PRODUCTS_PER_POSITION` and
    `STRIDED_ROWS_MIN_PRODUCTS_PER_STACKED_ELEMENT`, and channels-last only on inputs
    at most `STRIDED_ROWS_MAX_WIDTH_CHANNELS_LAST` wide (shapes canonical,
    channels-first), to no more channels than they take only from at most
    `STRIDED_ROWS_MAX_IN_CHANNELS_NOT_WIDENING`, not with a kernel twice the stride
    high, with 7x7 kernels only from at most 32 channels; never dilated."""
    spec = _spec.conv_plan("conv", x_shape, w_shape, stride=2, padding=padding).spec
    spec = dataclasses.replace(spec, channels_last=channels_last)
    assert _dispatch._strided_rows_stacked(spec, x_shape, w_shape) == stacked
    for dilation in ((2, 2), (1, 2), (2, 1)):
        dilated = dataclasses.replace(spec, rhs_dilation=dilation)
        assert not _dispatch._strided_rows_stacked(dilated, x_shape, w_shape)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rows rule is the CPU's")
@pytest.mark.parametrize(
    "w_shape, kwargs",
    [
        ((16, 16, 3, 3, 3), dict(stride=(1, 2, 2), padding=1)),  # the planes of a 3-D one
        ((16, 16, 3, 1, 1), dict(stride=(2, 1, 1), padding=(1, 0, 0))),  # (k, 1, 1) as 2-D
    ],
)
def test_strided_3d_planes_not_by_stacked_rows(stacked_calls, retrace, w_shape, kwargs):
    """The 2-D convolutions a strided 3-D one runs as keep XLA's strided value."""
    calls = stacked_calls
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 16, 5, 20, 20)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    got, want = jax.jit(
        lambda a, b: [jaxconv.conv3d(a, b, impl=impl, **kwargs) for impl in ("auto", "lax")]
    )(x, w)
    assert 2 not in calls
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the (k, 1, 1) rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "w_kernel,kwargs,flat",
    [
        ((3, 1, 1), dict(padding=(1, 0, 0)), True),
        ((5, 1, 1), dict(stride=(2, 1, 1), padding=(2, 0, 0), dilation=(2, 3, 4)), True),
        ((2, 1, 1), dict(padding="same"), True),  # "same" pads nothing along 1-tap dims
        ((3, 1, 1), dict(padding=(1, 1, 0)), False),  # padded along the height
        ((3, 1, 1), dict(stride=(1, 2, 1)), False),  # strided along the height
        ((3, 1, 1), dict(groups=2), False),  # grouped: the 3-D rules
        ((1, 3, 3), dict(padding=(0, 1, 1)), False),  # spatial, not temporal
        ((1, 1, 1), dict(), False),  # 1x1x1: rules of its own
    ],
)
def test_temporal_3d_runs_as_one_2d_convolution(w_kernel, kwargs, flat, channels_last):
    """A dense (k, 1, 1) 3-D convolution under auto is one 2-D convolution over (depth,
    height x width), values and gradients as ``lax``'s."""
    import numpy as np

    rng = np.random.default_rng(0)
    c_in = 4
    x = rng.standard_normal((2, c_in, 7, 5, 6))
    # (8 output channels: to 6 or fewer `matmul.output_taps` would take the value.)
    w = rng.standard_normal((8, c_in // kwargs.get("groups", 1), *w_kernel))
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 4, 1, 0))

    def conv(impl):
        return lambda a, b: jaxconv.conv3d(a, b, channels_last=channels_last, impl=impl, **kwargs)

    ct = cotangent(conv("lax"), x, w, seed=1)
    got, want = values_and_vjps([conv("auto"), conv("lax")], (x, w), ct)
    for g, e in zip(got, want, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    grads = jax.jit(jax.grad(lambda a, b: jnp.sum(conv("auto")(a, b) ** 2), (0, 1)))
    for f in (jax.jit(conv("auto")), grads):
        text = f.lower(x, w).as_text()
        lines = [line for line in text.splitlines() if "stablehlo.convolution" in line]
        # Height x width = 30 merged into one dim, in every convolution, or in none (the
        # grouped layer runs by shift-and-add, with none at all).
        assert all(("x30x" in line) == flat for line in lines)
        assert lines or not flat


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the 3-D 1x1 rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,whole",
    [
        ((2, 3, 4, 5, 6), (1, 1, 1, 6, 16), dict(), "value"),  # channels-last, 6 -> 16
        ((2, 5, 6, 5, 4), (1, 1, 1, 4, 8), dict(stride=(1, 2, 2)), None),  # strided: matmul
        ((2, 5, 6, 5, 8), (1, 1, 1, 8, 4), dict(stride=(2, 1, 1)), None),
        ((2, 3, 4, 5, 16), (1, 1, 1, 16, 6), dict(), "value"),  # to fewer: matmul grads
        ((2, 3, 4, 5, 8), (1, 1, 1, 8, 8), dict(), "value"),  # to as many
        ((2, 3, 4, 5, 8), (1, 1, 1, 4, 16), dict(groups=2), None),  # grouped rules
        ((2, 3, 4, 5, 6), (3, 1, 1, 6, 16), dict(), None),  # 3 taps: one 2-D convolution
    ],
)
def test_channels_last_3d_pointwise_value_is_xlas(monkeypatch, x_shape, w_shape, kwargs, whole):
    """A dense channels-last 3-D 1x1x1 layer's value is XLA's 3-D convolution under
    auto, whatever its channels (the gradients by `matmul`'s products; to more channels
    the weight gradient by `matmul.pointwise_weight_gradient`); strided, none of it
    (`matmul`'s products)."""
    import numpy as np

    import jaxconv

    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)

    def conv(impl):
        return lambda a, b: jaxconv.conv3d(a, b, **kwargs, channels_last=True, impl=impl)

    def program(impl):
        return (
            jax.jit(jax.grad(lambda a, b: jnp.sum(conv(impl)(a, b) ** 2), (0, 1)))
            .lower(x, w)
            .as_text()
        )

    calls = spy_third_arguments(monkeypatch, matmul_impl, "pointwise_weight_gradient")
    text = program("auto")
    expands = w_shape[:3] == (1, 1, 1) and w_shape[4] > w_shape[3] and "groups" not in kwargs
    assert bool(calls) == expands
    ones = np.ones(jax.eval_shape(conv("lax"), x, w).shape, np.float32)
    (y, *grads), (y_lax, *grads_lax) = values_and_vjps([conv("auto"), conv("lax")], (x, w), ones)
    convs = [line for line in text.splitlines() if "stablehlo.convolution" in line]
    assert any("0, 1, 2]" in line for line in convs) == (whole is not None)
    if whole == "value":
        assert len(convs) == 1  # the value's; the gradients are products
    np.testing.assert_allclose(y, y_lax, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, grads_lax, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_strided_3d_expansion_value_alone():
    """A strided 3-D value from at most 32 channels to 256 or more runs as XLA's 3-D
    convolution from `STRIDED_3D_EXPANSION_VALUE_MIN_CHANNELS` (input x output)
    channels when it is not differentiated, from `STRIDED_3D_MIN_CHANNELS` when it is
    (`_dispatch._strided_3d_direct`); the value equals lax's either way."""
    assert _dispatch.STRIDED_3D_EXPANSION_VALUE_MIN_CHANNELS == 2048
    assert _dispatch.STRIDED_3D_MIN_CHANNELS == 4096
    rule = _dispatch._strided_3d_direct
    for c_in, c_out, alone, differentiated in [
        (8, 384, True, False),
        (8, 256, True, False),  # 2048 pairs
        (4, 384, False, False),  # 1536
        (16, 256, True, True),  # 4096
        (8, 128, False, False),  # to fewer than 256
        (33, 256, False, False),  # from more than 32 (8x8 planes, 576 products each)
    ]:
        x_shape, w_shape = (1, c_in, 4, 16, 16), (c_out, c_in, 3, 3, 3)
        spec = _spec.conv_plan("conv", x_shape, w_shape, stride=(1, 2, 2), padding=1).spec
        assert rule(spec, x_shape, w_shape, differentiated=False) == alone, (c_in, c_out)
        assert rule(spec, x_shape, w_shape) == differentiated, (c_in, c_out)
    x, w = jnp.ones((2, 8, 4, 16, 16)), jnp.ones((384, 8, 3, 3, 3)) * 0.1

    def conv(impl):
        return lambda a, b: jaxconv.conv3d(a, b, stride=(1, 2, 2), padding=1, impl=impl)

    def depth_convolutions(f, *args):
        text = jax.jit(f).lower(*args).as_text()
        return sum("0, 1, 2]" in line for line in text.splitlines() if "convolution" in line)

    assert depth_convolutions(conv("auto"), x, w) == 1
    grads = jax.grad(lambda a, b: jnp.sum(conv("auto")(a, b) ** 2), (0, 1))
    assert depth_convolutions(grads, x, w) == 0
    np.testing.assert_allclose(
        jax.jit(conv("auto"))(x, w), jax.jit(conv("lax"))(x, w), rtol=1e-6, atol=1e-6
    )


def test_strided_3d_few_products():
    """`_dispatch._strided_3d_few_products`: strided along the planes, from
    `STRIDED_3D_MIN_CHANNELS` (input x output) channels per group, fewer than
    `STRIDED_3D_PLANES_MIN_PRODUCTS_PER_ELEMENT` products per plane input element
    (``C_out * K_h * K_w / (s_h * s_w)`` per group)."""
    assert _dispatch.STRIDED_3D_PLANES_MIN_PRODUCTS_PER_ELEMENT == 256
    rule = _dispatch._strided_3d_few_products
    for w_shape, stride, groups, takes in [
        ((64, 64, 3, 3, 3), (1, 2, 2), 1, True),  # 144 products, 4096 pairs
        ((113, 64, 3, 3, 3), (1, 2, 2), 1, True),  # 254.25
        ((114, 64, 3, 3, 3), (1, 2, 2), 1, False),  # 256.5
        ((64, 63, 3, 3, 3), (1, 2, 2), 1, False),  # 4032 pairs
        ((64, 64, 3, 3, 3), (2, 1, 1), 1, False),  # not strided along the planes
        ((16, 256, 3, 3, 3), (2, 1, 1), 1, False),  # ... nor with 144 products
        ((128, 64, 3, 3, 3), (1, 2, 2), 2, True),  # 64 x 64 a group
        ((128, 32, 3, 3, 3), (1, 2, 2), 2, False),  # 32 x 64 a group
    ]:
        x_shape = (1, w_shape[1] * groups, 4, 16, 16)
        spec = _spec.conv_plan(
            "conv", x_shape, w_shape, stride=stride, padding=1, groups=groups
        ).spec
        assert rule(spec, w_shape) == takes, (w_shape, stride, groups)
    # `_dispatch._strided_3d_direct` takes them channels-last at strides of at least
    # `STRIDED_3D_FEW_PRODUCTS_CHANNELS_LAST_MIN_STRIDE` along both plane dims.
    assert _dispatch.STRIDED_3D_FEW_PRODUCTS_CHANNELS_LAST_MIN_STRIDE == 4
    for stride, channels_last, direct in [
        ((2, 4, 4), True, True),
        ((1, 4, 4), True, True),
        ((2, 4, 3), True, False),
        ((2, 3, 3), True, False),
        ((2, 4, 4), False, False),
    ]:
        x_shape, w_shape = (2, 256, 32, 32, 32), (32, 256, 2, 2, 2)
        spec = _spec.conv_plan("conv", x_shape, w_shape, stride=stride).spec
        spec = dataclasses.replace(spec, channels_last=channels_last)
        assert rule(spec, w_shape)
        assert _dispatch._strided_3d_direct(spec, x_shape, w_shape) == direct, stride


def test_strided_3d_value_alone_by_matmul(monkeypatch, retrace):
    """A channels-last dense 3-D value computed without its derivatives, strided along
    every dim and undilated, runs by `matmul` from patches `STRIDED_3D_ALONE_MIN_DEPTH`
    to `STRIDED_3D_ALONE_MAX_DEPTH` deep, to at least
    `STRIDED_3D_ALONE_MIN_OUT_CHANNELS` channels, with at most `STRIDED_3D_ALONE_MAX_TAPS`
    taps and one image's patches within `matmul.PATCH_BYTES`; under differentiation the
    value keeps the rules'. Values and gradients equal lax's."""
    assert _dispatch.STRIDED_3D_ALONE_MIN_DEPTH == 128
    assert _dispatch.STRIDED_3D_ALONE_MAX_DEPTH == 2600
    assert _dispatch.STRIDED_3D_ALONE_MIN_OUT_CHANNELS == 32
    assert _dispatch.STRIDED_3D_ALONE_MAX_TAPS == 64
    assert matmul_impl.PATCH_BYTES == 16 * 2**20
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    rule = _dispatch._strided_3d_value_alone_by_matmul
    for x_shape, w_shape, kwargs, taken in [
        ((32, 96, 12, 12, 12), (48, 96, 3, 3, 3), dict(stride=2, padding=1), True),  # found
        ((2, 16, 8, 8, 8), (32, 16, 2, 2, 2), dict(stride=2), True),  # 128 deep
        ((2, 15, 8, 8, 8), (32, 15, 2, 2, 2), dict(stride=2), False),  # 120 deep
        ((2, 96, 8, 8, 8), (32, 96, 3, 3, 3), dict(stride=2), True),  # 2592 deep
        ((2, 97, 8, 8, 8), (32, 97, 3, 3, 3), dict(stride=2), False),  # 2619 deep
        ((2, 16, 8, 8, 8), (31, 16, 2, 2, 2), dict(stride=2), False),  # to 31 channels
        ((2, 8, 12, 12, 12), (32, 8, 4, 4, 4), dict(stride=2), True),  # 64 taps
        ((2, 8, 12, 12, 12), (32, 8, 5, 5, 4), dict(stride=2), False),  # 100 taps
        ((2, 16, 8, 8, 8), (32, 16, 2, 2, 2), dict(stride=(2, 2, 1)), False),  # unstrided dim
        ((2, 16, 8, 8, 8), (32, 16, 2, 2, 2), dict(stride=2, dilation=2), False),
        ((2, 32, 8, 8, 8), (32, 16, 2, 2, 2), dict(stride=2, groups=2), False),
        ((1, 1, 8, 8, 8), (32, 1, 2, 2, 2), dict(stride=2), False),  # 8 deep
        ((1, 64, 25, 25, 25), (32, 64, 3, 3, 3), dict(stride=2, padding=1), True),  # 15.2 MB
        ((1, 64, 27, 27, 27), (32, 64, 3, 3, 3), dict(stride=2, padding=1), False),  # 19.0 MB
        ((2, 16, 8, 8), (32, 16, 2, 2), dict(stride=2), False),  # 2-D
        # XLA's own 3-D convolution (`_strided_3d_direct`, channels-last stride 4)
        ((16, 96, 16, 16, 16), (256, 96, 3, 3, 3), dict(stride=4, padding=1), False),
        ((16, 96, 16, 16, 16), (256, 96, 3, 3, 3), dict(stride=3, padding=1), True),
    ]:
        for channels_last in (True, False):
            spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
            spec = dataclasses.replace(spec, channels_last=channels_last)
            got = rule(spec, x_shape, w_shape, 4)
            assert got == (taken and channels_last), (x_shape, w_shape, kwargs, channels_last)
    x_shape, w_shape = (2, 16, 8, 8, 8), (32, 16, 2, 2, 2)
    spec = _spec.conv_plan("conv", x_shape, w_shape, stride=2).spec
    spec = dataclasses.replace(spec, channels_last=True)
    assert rule(spec, x_shape, w_shape, 4)
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: True)
    assert not rule(spec, x_shape, w_shape, 4)
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    # `auto`: the value alone by `matmul`, the value with its derivatives by the rules.
    calls = []
    forward = matmul_impl.forward

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return forward(*args, **kwargs)

    monkeypatch.setattr(matmul_impl, "forward", spy)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 7, 6, 8, 16)).astype(np.float32)  # channels-last
    w = rng.standard_normal((3, 3, 3, 16, 32)).astype(np.float32)
    kwargs = dict(stride=2, padding=1, channels_last=True)

    def conv(impl):
        return lambda a, b: jaxconv.conv3d(a, b, **kwargs, impl=impl)

    y = jax.jit(conv("auto"))(x, w)
    assert calls == [(3, 16, 7, 6, 8)]
    np.testing.assert_allclose(y, conv("lax")(x, w), rtol=2e-4, atol=2e-4)
    calls.clear()
    ct = cotangent(conv("auto"), x, w)
    got, want = values_and_vjps([conv("auto"), conv("lax")], (x, w), ct)
    assert calls == []
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4 * float(np.abs(r).max()))


@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_3d_short_value_by_matmul(channels_last, monkeypatch):
    """A dense 3-D value XLA would run as its own 3-D convolution (strided along the
    planes, `_dispatch._strided_3d_direct`), or with few products per plane input
    element (`_dispatch._strided_3d_few_products`), runs by `matmul` on at most
    `STRIDED_3D_MATMUL_VALUE_MAX_ROWS` rows (batch x output positions), patches of at
    least `MATMUL_MIN_DEPTH` products and at least
    `STRIDED_3D_MATMUL_VALUE_MIN_OUT_CHANNELS` output channels; the derivatives keep
    the rules'. Values and gradients equal lax's."""
    assert _dispatch.STRIDED_3D_MATMUL_VALUE_MAX_ROWS == 128
    assert _dispatch.STRIDED_3D_MATMUL_VALUE_MIN_OUT_CHANNELS == 16
    assert _dispatch.MATMUL_MIN_DEPTH == 1024
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    rule = _dispatch._strided_3d_value_by_matmul
    for batch, c_in, c_out, kwargs, taken in [
        (2, 384, 64, dict(stride=2, padding=1), True),  # 2 x 4^3 = 128 rows
        (3, 384, 64, dict(stride=2, padding=1), False),  # 192 rows
        (2, 384, 16, dict(stride=2, padding=1), True),
        (2, 384, 8, dict(stride=2, padding=1), False),  # to fewer than 16 channels
        (2, 38, 112, dict(stride=2, padding=1), True),  # 38 x 27 = 1026 deep
        (2, 37, 112, dict(stride=2, padding=1), True),  # 999 deep: small outputs, below
        (1, 384, 64, dict(stride=(2, 1, 1)), False),  # 108 rows, planes unstrided: planes
        (1, 384, 16, dict(stride=(2, 1, 1)), False),  # ... also with 144 products
        (1, 384, 64, dict(stride=(1, 2, 2), padding=1), True),  # 8 x 4 x 4 rows
        (2, 384, 64, dict(stride=2, padding=1, groups=2), False),  # grouped
    ]:
        x_shape = (batch, c_in, 8, 8, 8)
        w_shape = (c_out, c_in // kwargs.get("groups", 1), 3, 3, 3)
        spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
        assert rule(spec, x_shape, w_shape) == taken, (batch, c_in, c_out, kwargs)
        if not taken:
            continue
        rules = _dispatch.choose(spec, x_shape, w_shape, jnp.float32, "cpu")
        assert rules[0] == "matmul"
        with mock.patch.object(_dispatch, "_strided_3d_value_by_matmul", lambda *a: False):
            before = _dispatch.choose(spec, x_shape, w_shape, jnp.float32, "cpu")
        assert before[0] == "lax" and rules[1:] == before[1:]
    # 999 deep on 125 positions (past the small outputs' clause): not taken.
    for c_in, taken in [(38, True), (37, False)]:
        x_shape, w_shape = (1, c_in, 10, 10, 10), (112, c_in, 3, 3, 3)
        spec = _spec.conv_plan("conv", x_shape, w_shape, stride=2, padding=1).spec
        assert rule(spec, x_shape, w_shape) == taken, c_in
    # Small outputs of any dense layer strided along its planes: at most
    # `STRIDED_3D_MATMUL_VALUE_SMALL_MAX_ROWS` rows and
    # `STRIDED_3D_MATMUL_VALUE_SMALL_MAX_POSITIONS` positions an image, patches at least
    # `STRIDED_3D_MATMUL_VALUE_SMALL_MIN_DEPTH` deep, to at least
    # `STRIDED_3D_MATMUL_VALUE_SMALL_MIN_OUT_CHANNELS` channels, the input within the
    # heap block (in float32).
    assert _dispatch.STRIDED_3D_MATMUL_VALUE_SMALL_MAX_ROWS == 448
    assert _dispatch.STRIDED_3D_MATMUL_VALUE_SMALL_MAX_POSITIONS == 64
    assert _dispatch.STRIDED_3D_MATMUL_VALUE_SMALL_MIN_DEPTH == 768
    assert _dispatch.STRIDED_3D_MATMUL_VALUE_SMALL_MIN_OUT_CHANNELS == 96
    for x_shape, w_shape, stride, taken in [
        ((32, 8, 8, 8, 8), (192, 8, 5, 5, 5), 2, True),  # 256 rows, 1000 deep (found)
        ((7, 29, 8, 8, 8), (96, 29, 3, 3, 3), 2, True),  # 7 x 4^3 = 448 rows, 783 deep
        ((8, 29, 8, 8, 8), (96, 29, 3, 3, 3), 2, False),  # 512 rows
        ((7, 28, 8, 8, 8), (96, 28, 3, 3, 3), 2, False),  # 756 deep
        ((7, 29, 8, 8, 8), (95, 29, 3, 3, 3), 2, False),  # to 95 channels
        ((1, 29, 9, 9, 9), (96, 29, 3, 3, 3), 2, False),  # 125 positions
        ((7, 29, 4, 8, 8), (96, 29, 3, 3, 3), (1, 2, 2), True),  # 7 x 4 x 4 x 4 = 448
        ((7, 29, 8, 4, 4), (96, 29, 3, 3, 3), (2, 1, 1), False),  # planes unstrided
        ((1, 32, 64, 64, 64), (96, 32, 3, 3, 3), 16, True),  # 33.6 MB of input
        ((2, 32, 64, 64, 64), (96, 32, 3, 3, 3), 16, False),  # 67.1 MB
    ]:
        padding = w_shape[2] // 2 if w_shape[2] == 3 else 0
        spec = _spec.conv_plan("conv", x_shape, w_shape, stride=stride, padding=padding).spec
        assert not _dispatch._strided_3d_few_products(spec, w_shape)
        assert rule(spec, x_shape, w_shape) == taken, (x_shape, w_shape, stride)
    # ... of the input's own dtype: 33.6 MB in float32, 67.1 MB in float64.
    x_shape, w_shape = (1, 32, 64, 64, 64), (96, 32, 3, 3, 3)
    spec = _spec.conv_plan("conv", x_shape, w_shape, stride=16, padding=1).spec
    assert rule(spec, x_shape, w_shape, jnp.float32)
    assert not rule(spec, x_shape, w_shape, jnp.float64)
    # Through `_strided_3d_direct` alone: 16->256 5x5x5 stride 2, an expansion (1600
    # products per plane input element), 2000 deep on 64 rows.
    x_shape, w_shape = (1, 16, 8, 8, 8), (256, 16, 5, 5, 5)
    spec = _spec.conv_plan("conv", x_shape, w_shape, stride=2, padding=2).spec
    assert _dispatch._strided_3d_direct(spec, x_shape, w_shape)
    assert not _dispatch._strided_3d_few_products(spec, w_shape)
    assert rule(spec, x_shape, w_shape)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 64, 7, 8, 8)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3, 3)).astype(np.float32)
    kwargs = dict(stride=2, padding=(1, 0, 1), dilation=(1, 2, 1), channels_last=channels_last)
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 4, 1, 0))
    assert choose(x.shape, w.shape, **kwargs)[0] == "matmul"

    def conv(impl):
        return lambda a, b: jaxconv.conv3d(a, b, **kwargs, impl=impl)

    f = conv("auto")
    ct = cotangent(f, x, w)
    got, want = values_and_vjps([conv("auto"), conv("lax")], (x, w), ct)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4 * float(np.abs(r).max()))
    np.testing.assert_allclose(jax.jit(f)(x, w), want[0], rtol=2e-4, atol=2e-3)
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: True)  # not measured there
    assert choose(x.shape, w.shape, **kwargs)[0] == "lax"


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the planes rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape,w_shape,stride,direct",
    [
        ((1, 64, 2, 48, 48), (64, 64, 3, 3, 3), (1, 2, 2), True),  # 24x24 planes out
        ((1, 64, 2, 44, 44), (128, 64, 3, 3, 3), (1, 2, 2), False),  # 22x22, 288 reuse
        ((1, 64, 2, 44, 44), (64, 64, 3, 3, 3), (1, 2, 2), False),  # 144 products per input
        ((1, 32, 2, 48, 48), (64, 32, 3, 3, 3), (1, 2, 2), False),  # 32x64 channels
        ((1, 32, 2, 44, 44), (64, 32, 3, 3, 3), (1, 2, 2), False),  # ... on 22x22
        ((1, 64, 2, 24, 24), (64, 64, 3, 3, 3), (1, 1, 1), False),  # unstrided planes
        ((1, 16, 2, 16, 16), (256, 16, 3, 3, 3), (1, 2, 2), True),  # 16->256, 8x8 planes
        ((1, 32, 2, 16, 16), (384, 32, 3, 3, 3), (1, 2, 2), True),  # 32->384
        ((1, 64, 2, 32, 32), (256, 64, 3, 3, 3), (1, 2, 2), False),  # from 64 channels
        ((1, 32, 2, 32, 32), (128, 32, 3, 3, 3), (1, 2, 2), False),  # to 128
    ],
)
def test_strided_3d_value_runs_as_3d_on_large_planes(x_shape, w_shape, stride, direct):
    """auto's value of a 3-D convolution strided along large planes of many channels,
    or from at most 32 to at least 256 channels, is XLA's 3-D convolution
    (`_dispatch._strided_3d_direct`); its derivatives and the other 3-D values stay 2-D
    planes (stacked), also along planes whose inputs enter fewer than
    `STRIDED_3D_PLANES_MIN_PRODUCTS_PER_ELEMENT` products each (since 2026-12-07; but
    channels-last at plane strides of 4 or more);
    values and gradients equal lax's."""
    import numpy as np

    import jaxconv

    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32) * np.float32(0.05)

    def conv(impl):
        return lambda a, b: jaxconv.conv3d(a, b, stride=stride, padding=1, impl=impl)

    def convolutions(f, *args):
        text = jax.jit(f).lower(*args).as_text()
        return [line for line in text.splitlines() if "stablehlo.convolution" in line]

    value = convolutions(conv("auto"), x, w)
    assert any("0, 1, 2]" in line for line in value) == direct
    # One convolution: XLA's 3-D one, or the 2-D planes stacked along the channels
    # (`planes.stacked`; these planes are large enough).
    assert len(value) == 1
    spec = _spec.conv_plan("conv", x_shape, w_shape, stride=stride, padding=1).spec
    assert _dispatch._strided_3d_direct(spec, x_shape, w_shape) == direct
    y_shape = jax.eval_shape(conv("lax"), x, w).shape
    ct = rng.standard_normal(y_shape).astype(np.float32)
    (y, *vjps), (y_lax, *vjps_lax) = values_and_vjps([conv("auto"), conv("lax")], (x, w), ct)
    np.testing.assert_allclose(y, y_lax, rtol=2e-4, atol=2e-4)
    for got, want in zip(vjps, vjps_lax, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-3)
    grads = jax.grad(lambda a, b: jnp.sum(conv("auto")(a, b) ** 2), (0, 1))
    grad_lines = convolutions(grads, x, w)
    assert sum("0, 1, 2]" in line for line in grad_lines) == (1 if direct else 0)  # value


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rows rule is the CPU's")
@pytest.mark.parametrize(
    "c_in,c_out,batch,kwargs,by_rows",
    [
        (16, _dispatch.ROWS_MIN_OUT_CHANNELS + 1, 16, {}, True),
        (16, _dispatch.ROWS_MIN_OUT_CHANNELS, 16, {}, False),  # few output channels
        (16, _dispatch.ROWS_MIN_OUT_CHANNELS + 1, 1, {}, False),  # under ROWS_MIN_FLOPS
        (16, 32, 16, dict(stride=2, channels_last=True), True),
        # Channels-last and strided: unpadded, or to fewer channels, XLA's 2-D one.
        (16, 32, 16, dict(stride=2, padding=0, channels_last=True), False),
        (64, 32, 16, dict(stride=2, channels_last=True), False),
        (64, 32, 8, dict(stride=2), True),  # channels-first: rows
        (64, 128, 8, dict(stride=2), True),  # ... its value by stacked rows
        (16, 32, 16, dict(stride=2, padding=0), True),
        (64, 32, 4, dict(channels_last=True), True),  # stride 1: rows
        # Strided with an input of more than 2M elements: XLA's 2-D one.
        (64, 32, 11, dict(stride=2), False),  # 2.2M elements
        (64, 32, 10, dict(stride=2), True),  # 2.0M
        (64, 32, 11, dict(channels_last=True), True),  # stride 1
        # Channels-last with fewer than 12 output rows in the batch: XLA's 2-D one.
        (64, 1024, 1, dict(channels_last=True, x_size=10), False),  # 10 output rows
        (64, 1024, 1, dict(channels_last=True, x_size=12), True),  # 12
        (64, 1024, 1, dict(x_size=10), True),  # channels-first
        # Fewer than 10 products per row (input channels x kernel width): XLA's 2-D one.
        (3, 32, 8, dict(x_size=112), False),  # 3 x 3
        (3, 32, 8, dict(x_size=112, channels_last=True), False),
        (10, 32, 8, dict(x_size=112, channels_last=True), True),  # 10 x 3
        (5, 32, 8, dict(x_size=112, channels_last=True), True),  # 5 x 3
        # Channels-first from 16 (`test_weight_gradient_rows_need_16_products_channels_first`:
        # rows of few channels may lower to products, which this test does not count).
        (10, 32, 8, dict(x_size=112), True),
        # Channels-first 3x3 from 64 channels at batch 8 on 2500-8192 positions: XLA's.
        (64, 32, 8, dict(), False),  # 56 x 56
        (64, 32, 8, dict(x_size=90), False),  # 8100 positions
        (64, 32, 8, dict(x_size=91), True),  # 8281
        (64, 32, 8, dict(x_size=49), True),  # 2401
        (64, 32, 4, dict(), True),  # batch 4
        (32, 64, 8, dict(), True),  # 32 input channels
        (64, 32, 8, dict(channels_last=True), True),  # channels-last
        # Channels-last with 2^17 (input x output) channels on at most 196 positions.
        (512, 256, 8, dict(channels_last=True, x_size=7), False),
        (512, 256, 2, dict(channels_last=True, x_size=14), False),  # 196 positions
        (512, 256, 2, dict(channels_last=True, x_size=15), True),  # 225
        (256, 256, 8, dict(channels_last=True, x_size=7), True),  # 2^16 channels
        (512, 256, 16, dict(x_size=7), True),  # channels-first
        # ... on AMD's CPUs with AVX-512 only: on Intel's and AVX2-only ones the rows won.
        (64, 32, 8, dict(vendor="GenuineIntel"), True),
        (64, 32, 8, dict(vendor=""), True),
        (64, 32, 8, dict(avx2_only=True), True),
        (64, 32, 8, dict(vendor="GenuineIntel", avx2_only=True), True),
        # Channels-first to 512 from 160 channels on 100-256 positions: XLA's.
        (192, 512, 1, dict(x_size=14), False),
        (160, 512, 2, dict(x_size=10), False),  # 100 positions
        (512, 512, 1, dict(x_size=16), False),  # 256
        (192, 512, 1, dict(x_size=17), True),  # 289
        (128, 512, 2, dict(x_size=14), True),  # 128 input channels
        (192, 448, 2, dict(x_size=14), True),  # 448 output channels
        (192, 512, 2, dict(x_size=14, channels_last=True), True),
        # To at most 32 from 160 or more: XLA's.
        (512, 32, 2, dict(channels_last=True), False),
        (160, 24, 4, dict(channels_last=True), False),
        (512, 32, 2, dict(), False),  # channels-first
        (512, 48, 2, dict(channels_last=True), True),  # 48 output channels
        (128, 32, 8, dict(channels_last=True), True),  # 128 input channels
    ],
)
def test_2d_weight_gradient_runs_as_1d_rows_on_cpu(
    c_in, c_out, batch, kwargs, by_rows, monkeypatch, retrace
):
    """A dense 2-D convolution under auto: value (unstrided) and input gradient by XLA's
    2-D convolution, the weight gradient by 1-D ones (one per kernel row) when it has
    more than `ROWS_MIN_OUT_CHANNELS` output channels and `ROWS_MIN_FLOPS`, and has at
    least 10 products per row (16 channels-first), and is not channels-first 3x3 from 64
    channels at batch 8 on 2500-8192 positions on an AMD CPU with AVX-512, strided with
    an input of more than 2M elements, channels-last with fewer than 12 output rows in
    the batch or with 2^17 (input x output) channels on at most 196 positions,
    channels-last strided and unpadded or to fewer channels, channels-first to 512
    channels from 160 or more on 100-256 positions, or to at most 32 channels from 160
    or more (`_dispatch._rows_lose`), by XLA's 2-D one otherwise."""
    import re

    import jaxconv

    kwargs = dict(dict(padding=1), **kwargs)
    size = kwargs.pop("x_size", 56)
    vendor = kwargs.pop("vendor", "AuthenticAMD")
    monkeypatch.setattr(_dispatch, "cpu_vendor", lambda: vendor)
    avx2_only = kwargs.pop("avx2_only", False)
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: avx2_only)
    channels_last = kwargs.get("channels_last", False)
    x_shape, w_shape = (batch, c_in, size, size), (c_out, c_in, 3, 3)
    if channels_last:
        x_shape, w_shape = (batch, size, size, c_in), (3, 3, c_in, c_out)
    x, w = np.ones(x_shape), np.ones(w_shape)
    y_shape = jaxconv.output_shape(x_shape, w_shape, **kwargs)
    flops = 2 * math.prod(y_shape) * c_in * 9
    assert (flops >= _dispatch.ROWS_MIN_FLOPS) == (batch > 1 or size < 56)

    def convolutions(f, *args):
        text = jax.jit(f).lower(*args).as_text()
        return [line for line in text.splitlines() if "stablehlo.convolution" in line]

    def one_d(lines):
        # The input's dim_numbers, e.g. [b, f, 0]x[o, i, 0] or [b, 0, f]x[0, i, o].
        spatial = [re.search(r"\[([^\]]*)\]x\[", line).group(1) for line in lines]
        return [dims for dims in spatial if not re.search(r"\d.*\d", dims)]

    conv = lambda impl: lambda a, b: jaxconv.conv2d(a, b, **kwargs, impl=impl)  # noqa: E731
    weight_grad = lambda impl: jax.grad(lambda b: jnp.sum(conv(impl)(x, b) ** 2))  # noqa: E731
    input_grad = lambda impl: jax.grad(lambda a: jnp.sum(conv(impl)(a, w) ** 2))  # noqa: E731
    rows = one_d(convolutions(weight_grad("auto"), w))
    # One per kernel row, or one with the rows folded into fewer output channels
    # (`_dispatch._output_stacked_rows`) where the height is unstrided.
    stride = kwargs.get("stride", 1)
    folded = c_out < c_in and (stride if isinstance(stride, int) else stride[0]) == 1
    assert (len(rows) == 1 if folded else len(rows) >= 3) if by_rows else not rows
    assert not one_d(convolutions(weight_grad("lax"), w))
    assert not one_d(convolutions(input_grad("auto"), x))
    # The value outside differentiation: one 1-D convolution of stacked rows where it is
    # strided along the height (`_dispatch._strided_rows_stacked`), else XLA's 2-D one.
    canonical = (batch, c_in, size, size), (c_out, c_in, 3, 3)
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    stacked = _dispatch._strided_rows_stacked(spec, *canonical)
    assert len(one_d(convolutions(conv("auto"), x, w))) == (1 if stacked else 0)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rows rule is the CPU's")
@pytest.mark.parametrize(
    "c_in,c_out,kernel,size,batch,channels_last,by_rows",
    [
        (3, 192, 5, 32, 16, False, False),  # 3 x 5 = 15 products per row
        (2, 32, 7, 112, 4, False, False),  # 2 x 7 = 14
        (4, 64, 4, 64, 8, False, True),  # 4 x 4 = 16
        (7, 64, 3, 56, 8, False, True),  # 7 x 3 = 21
        (3, 64, 7, 56, 4, False, True),  # 3 x 7 = 21
        (3, 192, 5, 32, 16, True, True),  # channels-last: from 10
        (2, 32, 7, 112, 4, True, True),
    ],
)
def test_weight_gradient_rows_need_16_products_channels_first(
    c_in, c_out, kernel, size, batch, channels_last, by_rows, monkeypatch
):
    """Channels-first, a weight gradient goes by kernel rows only with at least
    `ROWS_MIN_ROW_DEPTH_CHANNELS_FIRST` (16) products per output of a row (input
    channels times kernel width), channels-last from `ROWS_MIN_ROW_DEPTH` (10)
    (`_dispatch._by_rows`; few channels' rows may lower to products rather than 1-D
    convolutions, so the rule is asked); it is the same gradient either way."""
    monkeypatch.setattr(_dispatch, "cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    canonical = (batch, c_in, size, size), (c_out, c_in, kernel, kernel)
    x_shape, w_shape = canonical
    if channels_last:
        x_shape, w_shape = (batch, size, size, c_in), (kernel, kernel, c_in, c_out)
    kw = dict(padding=kernel // 2, channels_last=channels_last)
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kw).spec
    assert _dispatch._by_rows(spec, *canonical) == by_rows
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)

    def weight_grad(impl):
        return jax.grad(lambda b: jnp.sum(jaxconv.conv2d(x, b, **kw, impl=impl) ** 2))

    np.testing.assert_allclose(
        weight_grad("auto")(w), weight_grad("lax")(w), rtol=2e-4, atol=2e-4 * size * size
    )


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,padded",
    [
        ((2, 8, 14, 8), (17, 8, 3, 2), dict(stride=2), True),
        ((1, 8, 22, 7), (17, 8, 3, 3), dict(stride=3, dilation=2), True),
        ((1, 8, 23), (17, 8, 4), dict(stride=(3,)), False),  # 1-D
        ((1, 8, 23), (17, 8, 4), dict(stride=(3,), channels_last=True), False),
        ((1, 8, 12, 6, 7), (17, 8, 2, 3, 2), dict(stride=(2, 1, 3)), True),
        ((1, 16, 12, 6, 7), (18, 8, 2, 3, 2), dict(groups=2, stride=(2, 1, 3)), False),
        ((2, 8, 9, 8), (17, 8, 3, 2), dict(stride=2), False),  # 4 output rows
        # Channels-first with 3x the output channels as products per output: not the
        # value, but its derivative.
        ((1, 8, 9, 8), (48, 8, 2, 1), dict(), False),
        ((1, 8, 9, 8), (48, 8, 2, 1), dict(derivative=True), True),
        ((1, 8, 9, 8), (48, 8, 2, 1), dict(channels_last=True), True),
        ((1, 8, 9, 8), (47, 8, 2, 1), dict(), True),
        # Fewer than 8 input channels or at most 16 output channels: not the value, but
        # its derivative.
        ((1, 7, 9, 8), (32, 7, 3, 3), dict(), False),
        ((1, 7, 9, 8), (32, 7, 3, 3), dict(channels_last=True), False),
        ((1, 7, 9, 8), (32, 7, 3, 3), dict(derivative=True), True),
        ((1, 8, 9, 8), (16, 8, 3, 3), dict(channels_last=True), False),
        ((1, 8, 9, 8), (16, 8, 3, 3), dict(derivative=True), True),
        ((1, 16, 9, 8), (16, 16, 3, 3), dict(), False),
        # ... but the value to few from more than 16 input channels.
        ((1, 17, 9, 8), (16, 17, 3, 3), dict(), True),
        ((1, 17, 9, 8), (2, 17, 3, 3), dict(channels_last=True), True),
    ],
)
def test_lax_off_the_unpadded_path_is_exact(x_shape, w_shape, kwargs, padded):
    """`lax.forward_padded` computes XLA's convolution, with a padded row where it pays:
    not for grouped or 1-D convolutions, nor for fewer than 6 output rows, nor for the
    value of a channels-first one of 3x as many output channels as products per output,
    nor for the value of one from fewer than 8 channels or to at most 16 from at most
    16."""
    import numpy as np

    from jaxconv._impls import lax as lax_impl

    kwargs = dict(kwargs)
    channels_last = kwargs.pop("channels_last", False)
    derivative = kwargs.pop("derivative", False)
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    spec = dataclasses.replace(spec, channels_last=channels_last)  # the canonical arrays
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    got, want = jax.jit(
        lambda a, b: (lax_impl.forward_padded(a, b, spec, derivative), lax_impl.forward(a, b, spec))
    )(x, w)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    padded_fn = jax.jit(lax_impl.forward_padded, static_argnums=(2, 3))
    text = padded_fn.lower(x, w, spec, derivative).as_text()
    assert ("pad = [[0, 1]" in text) == padded, text


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,pays,extra",
    [
        ((2, 24, 9, 8), (20, 24, 3, 3), dict(padding=1), True, 1),  # same: one row
        ((1, 20, 14, 9), (18, 20, 3, 2), dict(), True, 3),  # valid: k rows
        ((1, 20, 12, 7), (17, 20, 3, 3), dict(padding=2, dilation=2), True, 1),
        ((1, 17, 11, 10), (32, 17, 2, 3), dict(stride=(1, 2)), True, 2),
        ((1, 17, 11, 10), (32, 17, 2, 3), dict(padding=1), True, 0),  # taller already
        ((1, 24, 7, 7), (24, 24, 3, 3), dict(), False, 0),  # 3 of 5 rows: too many
        ((1, 24, 9, 9), (24, 24, 3, 3), dict(stride=2, padding=1), False, 0),  # strided
        ((1, 16, 9, 9), (16, 16, 3, 3), dict(padding=1), False, 0),  # Eigen's already
        ((1, 3, 9, 9), (64, 3, 3, 3), dict(padding=1), False, 0),  # RGB in: YNNPACK's
        ((1, 64, 9, 9), (8, 64, 3, 3), dict(padding=1), False, 0),  # few out: YNNPACK's
        ((1, 12, 9, 9), (64, 12, 3, 3), dict(padding=1), True, 1),
        ((1, 24, 90, 91), (24, 24, 3, 3), dict(padding=1), True, 1),  # 8190 positions
        ((1, 24, 91, 91), (24, 24, 3, 3), dict(padding=1), False, 0),  # 8281: YNNPACK's
        ((1, 24, 9, 9), (24, 8, 3, 3), dict(padding=1, groups=3), False, 0),  # grouped
        ((1, 24, 9), (20, 24, 3), dict(padding=1), False, 0),  # 1-D: Eigen's already
        ((1, 100, 32, 32), (100, 100, 5, 5), dict(padding=2), False, 0),  # deep, large
        ((1, 100, 16, 16), (100, 100, 5, 5), dict(padding=2), True, 1),  # ... small map
    ],
)
def test_forward_eigen_is_xla_convolution_with_extra_rows(
    x_shape, w_shape, kwargs, pays, extra, monkeypatch
):
    """`lax.forward_eigen` computes XLA's convolution; where `lax.eigen_pays` it asks
    for ``extra`` more output rows (so that the output is taller than the input) and
    drops them. (Small shapes, with the FLOPs and rows floors off, on a CPU with AVX-512:
    see the next tests.)"""
    import numpy as np

    from jaxconv._impls import lax as lax_impl

    monkeypatch.setattr(lax_impl, "EIGEN_MIN_FLOPS", 0)
    monkeypatch.setattr(lax_impl, "EIGEN_MIN_FLOPS_CHANNELS_FIRST", 0)
    monkeypatch.setattr(lax_impl, "EIGEN_FEW_OUT_CHANNELS_MIN_ROWS", 0)
    monkeypatch.setattr(lax_impl, "avx2_only", lambda: False)  # as on AVX-512 (see below)

    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    assert lax_impl.eigen_pays(x_shape, w_shape, x.dtype, spec) == pays
    assert not lax_impl.eigen_pays(x_shape, w_shape, jnp.bfloat16, spec)
    got, want = jax.jit(
        lambda a, b: (lax_impl.forward_eigen(a, b, spec), lax_impl.forward(a, b, spec))
    )(x, w)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    text = jax.jit(lax_impl.forward_eigen, static_argnums=2).lower(x, w, spec).as_text()
    taller = (*want.shape[:2], want.shape[2] + extra, *want.shape[3:])
    assert f"-> tensor<{'x'.join(map(str, taller))}x" in text, text


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the Eigen rule is the CPU's")
@pytest.mark.parametrize("transposed", [False, True])
def test_channels_last_extra_rows_cut_in_place(transposed):
    """Channels-last, the extra rows are cut in the caller's layout (`_common.slice_in_layout`):
    a training step returning the value and both gradients has every value-sized and
    input-sized array laid out channels-last, none transposed there and back."""
    import re

    import jaxconv

    n, c_in, c_out, size = 2, 64, 32, 28
    x = jnp.zeros((n, size, size, c_in), jnp.float32)
    w = jnp.zeros((3, 3, c_out, c_in) if transposed else (3, 3, c_in, c_out), jnp.float32)
    op = jaxconv.conv_transpose2d if transposed else jaxconv.conv2d

    def conv(a, b):
        return op(a, b, padding=1, channels_last=True)

    ct = jnp.ones((n, size, size, c_out), jnp.float32)

    def step(a, b, c):
        y, vjp = jax.vjp(conv, a, b)
        return (y, *vjp(c))

    text = jax.jit(step).lower(x, w, ct).compile().as_text()
    assert re.search(r"f32\[2,29,28,\d+\]", text), "not on the extra-rows path"
    layouts = re.findall(r"f32\[2,28,28,(?:32|64)\]\{([\d,]+)\}", text)
    assert layouts and set(layouts) == {"3,2,1,0"}, layouts


@pytest.mark.parametrize("stride,batch", [(1, ()), (2, ()), ((1, 2), (3,))])
def test_channels_last_pointwise_value_reads_callers_weight(stride, batch):
    """Channels-last, `auto`'s 1x1 value reads the caller's weight as it lies (by
    `matmul.forward`'s ``value``, which only `_dispatch` passes: no derivative transposes
    its value) even where the weight is smaller than the input: its compiled program
    copies nothing, where the canonical weight cost a transposed copy of it, one more
    kernel to compile (1x1 256->64 @56: 40 ms a compile against 12); strided, and with a
    leading batch dim, too. (In 1-D and 3-D `auto` takes XLA's convolution for this
    value, which reads the weight as it lies anyway.) Values and both gradients stay
    `lax`'s."""
    import re

    import jaxconv

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((*batch, 2, 6, 6, 32)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((1, 1, 32, 16)), jnp.float32)
    assert w.size < x.size  # (from as large on, the caller's weight is read anyway)

    def conv(name):
        return lambda a, b: jaxconv.conv2d(a, b, stride=stride, channels_last=True, impl=name)

    text = compile_as_shipped(conv("auto"), x, w).as_text()
    entry = text[text.index("\nENTRY") :]
    ops = set(re.findall(r"= \S+ ([a-z][\w-]*)\(", entry))
    assert not {"copy", "transpose"} & ops, entry
    weight = re.search(r"%(\S+) = f32\[[\d,]+\]\S* parameter\(1\)", entry).group(1)
    readers = re.findall(rf"= \S+ (\w+)\([^)]*%{re.escape(weight)}[,)]", entry)
    assert readers and set(readers) <= {"bitcast", "convolution"}, entry
    ct = cotangent(conv("lax"), x, w)
    for impl in ("auto", "matmul"):
        got, want = values_and_vjps([conv(impl), conv("lax")], (x, w), ct)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)


def test_channels_last_fft_cut_in_place():
    """Channels-last, the FFT's last cut is made in the caller's layout
    (`_common.slice_in_layout`): a step returning the value and the weight gradient
    has every output-sized array laid out channels-last. (The input gradient's last
    step is the transpose of the input's padding, left channels-first: padded in the
    caller's layout the value ran 0.94-0.96x.)"""
    import re

    import jaxconv

    x = jnp.zeros((2, 12, 12, 8), jnp.float32)
    w = jnp.zeros((7, 7, 1, 8), jnp.float32)
    ct = jnp.ones((2, 12, 12, 8), jnp.float32)

    def conv(a, b):
        return jaxconv.conv2d(a, b, padding=3, groups=8, channels_last=True, impl="fft")

    def step(a, b, c):
        y, vjp = jax.vjp(lambda b_: conv(a, b_), b)
        return (y, *vjp(c))

    text = jax.jit(step).lower(x, w, ct).compile().as_text()
    layouts = re.findall(r"f32\[2,12,12,8\]\{([\d,]+)\}", text)
    assert layouts and set(layouts) == {"3,2,1,0"}, layouts


@pytest.mark.parametrize(
    "x_shape,w_shape,pays",
    [
        ((2, 16, 8, 8), (64, 16, 3, 3), False),  # 2.4 MFLOP
        ((8, 32, 14, 14), (32, 32, 3, 3), False),  # 29 MFLOP
        ((1, 128, 14, 14), (128, 128, 3, 3), True),  # 58 MFLOP
        ((4, 64, 14, 14), (64, 64, 3, 3), True),  # 58 MFLOP: not for a value
        ((8, 64, 14, 14), (64, 64, 3, 3), True),  # 116 MFLOP
    ],
)
def test_eigen_needs_enough_flops(x_shape, w_shape, pays):
    """`lax.eigen_pays` leaves layers of fewer than `EIGEN_MIN_FLOPS` FLOPs to
    YNNPACK (channels-last; `EIGEN_MIN_FLOPS_CHANNELS_FIRST` channels-first), and
    values not differentiated of fewer than `EIGEN_MIN_VALUE_FLOPS`. (Shapes canonical.)"""
    from jaxconv._impls import lax as lax_impl

    spec = _spec.conv_plan("conv", x_shape, w_shape, padding=1).spec
    flops = spec.flops(x_shape, w_shape)
    for channels_last in (True, False):
        spec = dataclasses.replace(spec, channels_last=channels_last)
        floor = (
            lax_impl.EIGEN_MIN_FLOPS if channels_last else lax_impl.EIGEN_MIN_FLOPS_CHANNELS_FIRST
        )
        want = pays and flops >= floor
        assert lax_impl.eigen_pays(x_shape, w_shape, jnp.float32, spec) == want
        value_pays = pays and flops >= lax_impl.EIGEN_MIN_VALUE_FLOPS
        got = lax_impl.eigen_pays(x_shape, w_shape, jnp.float32, spec, value=True)
        assert got == value_pays


@pytest.mark.parametrize(
    "x_shape,w_shape,pays",
    [
        ((4, 512, 18, 18), (16, 512, 3, 3), False),  # 16 out, 1,296 rows
        ((4, 256, 28, 28), (24, 256, 3, 3), False),  # 24 out, 3,136 rows
        ((8, 512, 28, 28), (16, 512, 3, 3), True),  # 16 out, 6,272 rows
        ((4, 512, 18, 18), (32, 512, 3, 3), True),  # 32 out
    ],
)
def test_eigen_leaves_few_output_channels_on_few_rows_to_ynnpack(x_shape, w_shape, pays):
    """`lax.eigen_pays` leaves layers to at most 24 channels on fewer than 6,272 rows
    (batch times output positions) to YNNPACK."""
    from jaxconv._impls import lax as lax_impl

    spec = _spec.conv_plan("conv", x_shape, w_shape, padding=1).spec
    for channels_last in (False, True):
        spec = dataclasses.replace(spec, channels_last=channels_last)
        assert lax_impl.eigen_pays(x_shape, w_shape, jnp.float32, spec) == pays


@pytest.mark.parametrize(
    "x_shape,w_shape,dilation,value,pays",
    [
        ((2, 24, 56, 56), (16, 24, 7, 7), 2, True, False),  # the sweep's layer
        ((2, 24, 56, 56), (16, 24, 7, 7), 2, False, True),  # differentiated
        ((2, 24, 56, 56), (16, 24, 7, 7), 1, True, True),  # undilated
        ((4, 64, 56, 56), (16, 64, 3, 3), 3, True, False),  # 64 in
        ((4, 128, 56, 56), (16, 128, 3, 3), 2, True, True),  # 128 in
        ((2, 24, 56, 56), (32, 24, 5, 5), 2, True, True),  # 32 out
    ],
)
def test_eigen_leaves_dilated_values_from_few_to_few_channels_to_ynnpack(
    x_shape, w_shape, dilation, value, pays
):
    """`lax.eigen_pays` leaves dilated values outside differentiation to at most 24
    channels from at most 64 to YNNPACK, on any number of rows, in both layouts."""
    from jaxconv._impls import lax as lax_impl

    pad = dilation * (w_shape[-1] // 2)
    spec = _spec.conv_plan("conv", x_shape, w_shape, padding=pad, dilation=dilation).spec
    for channels_last in (False, True):
        spec = dataclasses.replace(spec, channels_last=channels_last)
        assert lax_impl.eigen_pays(x_shape, w_shape, jnp.float32, spec, value=value) == pays


@pytest.mark.parametrize(
    "x_shape,w_shape,channels_last,pays",
    [
        ((1, 16, 50, 50), (256, 16, 3, 3), False, False),  # 2500 positions, 256 out
        ((1, 16, 50, 50), (256, 16, 3, 3), True, True),  # channels-last
        ((1, 16, 50, 50), (255, 16, 3, 3), False, True),  # 255 out
        ((1, 16, 49, 50), (256, 16, 3, 3), False, True),  # 2450 positions
    ],
)
def test_eigen_leaves_wide_channels_first_layers_to_ynnpack(x_shape, w_shape, channels_last, pays):
    """`lax.eigen_pays` leaves channels-first layers to 256 or more channels on maps of
    2500 or more positions to YNNPACK."""
    from jaxconv._impls import lax as lax_impl

    spec = _spec.conv_plan("conv", x_shape, w_shape, padding=1).spec
    spec = dataclasses.replace(spec, channels_last=channels_last)
    assert lax_impl.eigen_pays(x_shape, w_shape, jnp.float32, spec) == pays


@pytest.mark.parametrize(
    "w_shape,x_size,limited",
    [
        ((100, 100, 5, 5), 68, True),  # the notes' valid layer: 2,500 deep, 4,096 positions
        ((96, 100, 5, 5), 68, True),  # 96 out
        ((95, 100, 5, 5), 68, False),  # 95 out
        ((100, 96, 5, 5), 68, True),  # 2,400 deep
        ((100, 95, 5, 5), 68, False),  # 2,375 deep
        ((100, 100, 5, 5), 36, True),  # 1,024 positions
        ((100, 100, 5, 5), 35, False),  # 961 positions
    ],
)
@pytest.mark.parametrize("avx2_only", [False, True])
def test_deep_layers_run_by_eigen_on_avx2_only_cpus(
    w_shape, x_size, limited, avx2_only, monkeypatch, retrace
):
    """`lax.eigen_pays` leaves the deep layers (``C_in * taps >= EIGEN_MAX_DEPTH``) of 96
    or more output channels on maps of `EIGEN_MAX_POSITIONS` or more to YNNPACK, but on a
    CPU with AVX2 and no AVX-512 (`lax.avx2_only`): auto asks XLA for the rows that take
    Eigen's convolution there, value and differentiated value, and for one padded row
    (`lax.forward_padded`) elsewhere."""
    from jaxconv._impls import lax as lax_impl

    monkeypatch.setattr(lax_impl, "avx2_only", lambda: avx2_only)
    x_shape = (1, w_shape[1], x_size, x_size)
    spec = _spec.conv_plan("conv", x_shape, w_shape).spec
    pays = avx2_only or not limited
    assert lax_impl.eigen_pays(x_shape, w_shape, jnp.float32, spec) == pays
    assert lax_impl.eigen_pays(x_shape, w_shape, jnp.float32, spec, value=True) == pays

    x, w = jnp.ones(x_shape, jnp.float32), jnp.ones(w_shape, jnp.float32)
    conv = lambda a, b: jaxconv.conv2d(a, b, impl="auto")  # noqa: E731
    eigen_rows, padded_rows = x_size + 1, x_size - 3  # taller than the input; one row more

    def rows(f, *args):
        text = jax.jit(f).lower(*args).as_text()
        lines = [line for line in text.splitlines() if "stablehlo.convolution" in line]
        return {int(m) for line in lines for m in re.findall(r"-> tensor<\d+x\d+x(\d+)x", line)}

    assert rows(conv, x, w) == {eigen_rows if pays else padded_rows}
    # Training: the differentiated value likewise (the input gradient's output is taller
    # than its input already: Eigen's either way).
    grad_rows = rows(jax.grad(lambda a: jnp.sum(conv(a, w) ** 2)), x)
    assert (eigen_rows in grad_rows) == pays
    assert (padded_rows in grad_rows) == (not pays)


@pytest.mark.parametrize(
    "x_shape,w_shape,padding,stride,mib,pays",
    [
        # Unpadded from more than 16 channels `forward_padded` pads a row (to few channels
        # too, since 2026-12-05), and YNNPACK then writes the input read, not the patches.
        ((8, 384, 64, 64), (16, 384, 3, 3), 0, 2, 48.0, True),
        ((2, 384, 64, 64), (16, 384, 3, 3), 0, 2, 12.0, False),
        ((16, 256, 56, 56), (16, 256, 3, 3), 1, 2, 50.8, True),  # padded: the input read
        ((10, 256, 56, 56), (16, 256, 3, 3), 1, 2, 31.7, False),
        ((12, 256, 56, 56), (16, 256, 3, 3), 1, 2, 38.1, True),
        ((16, 256, 56, 56), (64, 256, 3, 3), 1, 2, 50.8, True),
        ((16, 256, 56, 56), (65, 256, 3, 3), 1, 2, 50.8, False),  # 65 output channels
        # Not strides 3-4: XLA's partitioner got their extra rows wrong on a mesh.
        ((16, 256, 56, 56), (16, 256, 3, 3), 1, 3, 50.8, False),  # stride 3
        ((16, 256, 56, 56), (16, 256, 3, 3), 1, 4, 47.3, False),  # stride 4
        ((16, 512, 32, 32), (1, 512, 7, 7), 0, 2, 32.0, False),  # 1 output channel
        ((64, 16, 112, 112), (16, 16, 3, 3), 1, 2, 49.9, False),  # XLA's Eigen already
        ((8, 192, 56, 56), (32, 192, 3, 3), 0, 2, 18.4, False),
        ((8, 192, 56, 56), (16, 192, 3, 3), 0, 2, 18.4, False),
    ],
)
def test_strided_values_past_the_heap_block_run_by_eigen(
    x_shape, w_shape, padding, stride, mib, pays, monkeypatch, retrace
):
    """`lax.eigen_pays` takes a convolution strided by 2 along the height to at most
    `EIGEN_STRIDED_MAX_OUT_CHANNELS` channels off YNNPACK where the buffer YNNPACK
    writes its input into (`lax.ynnpack_buffer_bytes`, of the convolution
    `lax.forward_padded` would hand it) passes `lax.MALLOC_MAX_HEAP_BLOCK`: `auto` then
    asks XLA for output rows taller than the input, value and differentiated value,
    whose values and gradients equal `lax`'s (float64; the threshold lowered to a small
    layer's)."""
    from jaxconv._impls import lax as lax_impl

    spec = _spec.conv_plan("conv", x_shape, w_shape, stride=stride, padding=padding).spec
    ynnpack = lax_impl.padded_row(x_shape, w_shape, spec)
    got = lax_impl.ynnpack_buffer_bytes(x_shape, w_shape, jnp.float32, ynnpack) / 2**20
    assert got == pytest.approx(mib, abs=0.05)
    for channels_last in (False, True):
        layout = dataclasses.replace(spec, channels_last=channels_last)
        for value in (False, True):
            assert lax_impl.eigen_pays(x_shape, w_shape, jnp.float32, layout, value) == pays
    if stride != 2 or (x_shape, w_shape) != ((16, 256, 56, 56), (16, 256, 3, 3)):
        return

    # The same layer, smaller, with the heap block below its buffer.
    small_x, small_w = (2, 24, 13, 13), (6, 24, 3, 3)
    monkeypatch.setattr(lax_impl, "MALLOC_MAX_HEAP_BLOCK", 0)
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(small_x), rng.standard_normal(small_w)

    def conv(impl):
        return lambda a, b: jaxconv.conv2d(a, b, stride=2, padding=1, impl=impl)

    def rows(f, *args):
        text = jax.jit(f).lower(*args).as_text()
        lines = [line for line in text.splitlines() if "stablehlo.convolution" in line]
        return {int(m) for line in lines for m in re.findall(r"-> tensor<\d+x\d+x(\d+)x", line)}

    assert rows(conv("auto"), x, w) == {14}  # 7 rows out, 14 asked for: taller than 13
    assert 14 in rows(jax.grad(lambda a, b: jnp.sum(conv("auto")(a, b) ** 2)), x, w)
    ct = cotangent(conv("lax"), x, w)
    got, want = values_and_vjps([conv("auto"), conv("lax")], (x, w), ct)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * float(np.max(np.abs(b))))


@pytest.mark.parametrize(
    "x_shape,w_shape,stride,value,row",
    [
        ((8, 8, 112, 112), (256, 8, 3, 3), 2, True, False),  # strided value: no row
        ((8, 8, 112, 112), (256, 8, 3, 3), 2, False, True),  # differentiated: the row
        ((8, 8, 112, 112), (256, 8, 3, 3), 1, True, True),  # unstrided: the row
        ((8, 192, 56, 56), (32, 192, 3, 3), 2, True, True),  # narrowing
        ((8, 64, 112, 112), (128, 64, 3, 3), 2, True, True),  # widening, patches past
        ((8, 64, 56, 56), (65, 64, 3, 3), 2, True, False),  # one output channel more
        ((8, 64, 56, 56), (64, 64, 3, 3), 2, True, True),  # as many: the row
        ((8, 192, 32, 32), (16, 192, 5, 5), 2, True, True),  # narrowing
        ((8, 128, 15, 15), (32, 128, 3, 3), 2, True, True),  # 7 rows out
        ((8, 128, 14, 14), (32, 128, 3, 3), 2, True, False),  # 6 rows out
        ((8, 128, 32, 32), (32, 128, 2, 2), 2, True, False),  # kernel as tall as the stride
        ((8, 128, 48, 48), (32, 128, 3, 3), 3, True, False),
        ((8, 128, 48, 48), (32, 128, 4, 4), 3, True, True),  # taller
        ((8, 128, 48, 48), (32, 128, 3, 5), 3, True, False),  # (the height counts)
    ],
)
def test_strided_values_take_no_padded_row(x_shape, w_shape, stride, value, row):
    """`lax.forward_padded` leaves out its padded row for a value not differentiated
    strided along the height to more output channels than input channels, on fewer than
    `lax.FORWARD_PADDED_STRIDED_MIN_ROWS` output rows or with a kernel no taller than the
    stride, unless YNNPACK's patches without it would pass `lax.MALLOC_MAX_HEAP_BLOCK`
    (`lax.padded_row`); XLA's convolution in `auto`'s program then has the output's own
    rows."""
    from jaxconv._impls import lax as lax_impl

    spec = _spec.conv_plan("conv", x_shape, w_shape, stride=stride).spec
    spec = dataclasses.replace(spec, channels_last=True)  # (no fan-out limit)
    padded = lax_impl.padded_row(x_shape, w_shape, spec, value=value, dtype=jnp.float32)
    assert (padded is not spec) == row
    if padded is not spec:
        assert padded.padding == ((0, 1), (0, 0))
    if (x_shape, stride) != ((8, 8, 112, 112), 2):
        return
    x = jnp.ones((x_shape[0], *x_shape[2:], x_shape[1]), jnp.float32)
    w = jnp.ones((*w_shape[2:], w_shape[1], w_shape[0]), jnp.float32)
    conv = lambda a, b: jaxconv.conv2d(a, b, stride=2, channels_last=True, impl="auto")  # noqa: E731

    def rows(f, *args):
        text = jax.jit(f).lower(*args).as_text()
        lines = [line for line in text.splitlines() if "stablehlo.convolution" in line]
        return {int(m) for line in lines for m in re.findall(r"-> tensor<\d+x\d+x(\d+)x", line)}

    want = 56 if row else 55  # 55 rows out; one more with the padded row
    got = rows(conv, x, w) if value else rows(jax.grad(lambda a: jnp.sum(conv(a, w) ** 2)), x)
    assert want in got and (value or 55 not in got), got


@pytest.mark.parametrize(
    "x_shape,w_shape,value,avx2_only,pays",
    [
        ((2, 64, 112, 112), (64, 64, 3, 3), True, True, True),  # 12,544 positions
        ((2, 64, 112, 112), (64, 64, 3, 3), True, False, False),  # AVX-512
        ((2, 64, 112, 112), (64, 64, 3, 3), False, True, False),  # differentiated
        ((1, 64, 112, 112), (64, 64, 3, 3), True, True, False),  # batch 1
        ((2, 64, 112, 112), (64, 64, 5, 5), True, True, False),  # 5x5
        ((2, 64, 112, 112), (64, 64, 3, 1), True, True, False),  # 3x1
        ((1, 64, 90, 90), (64, 64, 3, 3), True, False, True),  # 8,100 positions
        # YNNPACK's padded copy past glibc's heap block: 16 x 114^2 x 64 x 4 = 50.8 MiB
        ((16, 64, 112, 112), (64, 64, 3, 3), False, True, True),  # differentiated
        ((16, 64, 112, 112), (64, 64, 3, 3), False, False, False),  # AVX-512
        ((16, 64, 112, 112), (64, 64, 5, 5), False, True, False),  # 5x5
        ((8, 64, 112, 112), (64, 64, 3, 3), False, True, False),  # 25.4 MiB
        ((1, 64, 400, 400), (64, 64, 3, 3), False, True, True),  # 39.3 MiB at batch 1
        ((1, 64, 400, 400), (64, 64, 3, 3), True, True, True),
    ],
)
def test_eigen_takes_large_3x3_maps_values_on_avx2_only_cpus(
    x_shape, w_shape, value, avx2_only, pays, monkeypatch
):
    """`lax.eigen_pays` leaves maps of more than `EIGEN_MAX_POSITIONS_PER_IMAGE`
    positions to YNNPACK but, on a CPU with AVX2 and no AVX-512, for 3x3 kernels: values
    not differentiated at batch 2 or more, and any role whose YNNPACK buffer
    (`lax.ynnpack_buffer_bytes`) would pass `lax.MALLOC_MAX_HEAP_BLOCK`; in both
    layouts."""
    from jaxconv._impls import lax as lax_impl

    monkeypatch.setattr(lax_impl, "avx2_only", lambda: avx2_only)
    k = w_shape[2:]
    padding = tuple(d // 2 for d in k)
    spec = _spec.conv_plan("conv", x_shape, w_shape, padding=padding).spec
    for channels_last in (False, True):
        spec = dataclasses.replace(spec, channels_last=channels_last)
        assert lax_impl.eigen_pays(x_shape, w_shape, jnp.float32, spec, value=value) == pays


def test_avx2_only_reads_the_flags(monkeypatch):
    """`lax.avx2_only`: AVX2 among the host's flags and AVX-512 Foundation not."""
    from jaxconv._impls import lax as lax_impl

    for flags, want in [
        ("fpu sse2 avx fma avx2 bmi2", True),  # an AMD EPYC of the CI's
        ("fpu avx2 avx512f avx512dq amx_tile", False),  # a Sapphire Rapids Xeon
        ("fp asimd sve", False),  # an Arm CPU
        ("", False),  # not Linux
    ]:
        monkeypatch.setattr(lax_impl, "cpuinfo", lambda key, flags=flags: flags * (key == "flags"))
        assert lax_impl.avx2_only() is want


@pytest.mark.parametrize(
    "x_shape,w_shape,value,pays",
    [
        ((8, 128, 14, 14), (128, 128, 3, 3), True, False),  # 196 positions, 128 out
        ((8, 128, 14, 14), (128, 128, 3, 3), False, True),  # an input gradient's
        ((8, 256, 7, 7), (384, 256, 3, 3), True, False),  # 384 out
        ((8, 512, 7, 7), (512, 512, 3, 3), True, True),  # 512 out
        ((16, 128, 14, 14), (96, 128, 3, 3), True, True),  # 96 out
        ((8, 256, 14, 15), (256, 256, 3, 3), True, True),  # 210 positions
    ],
)
def test_eigen_leaves_small_maps_values_to_ynnpack(x_shape, w_shape, value, pays):
    """`lax.eigen_pays` leaves a value (not an input gradient) to 128-384 channels on
    maps of at most 196 positions to YNNPACK, in both layouts."""
    from jaxconv._impls import lax as lax_impl

    spec = _spec.conv_plan("conv", x_shape, w_shape, padding=1).spec
    for channels_last in (False, True):
        spec = dataclasses.replace(spec, channels_last=channels_last)
        assert lax_impl.eigen_pays(x_shape, w_shape, jnp.float32, spec, value=value) == pays


@pytest.mark.parametrize(
    "x_shape,w_shape,value,pays",
    [
        ((2, 128, 28, 28), (128, 128, 3, 3), True, False),  # 128 out, 1,568 rows
        ((2, 128, 28, 28), (128, 128, 3, 3), False, True),  # an input gradient's
        ((1, 64, 56, 56), (128, 64, 5, 5), True, False),  # 3,136 rows
        ((2, 128, 55, 57), (128, 128, 3, 3), True, False),  # 6,270 rows
        ((2, 128, 56, 56), (128, 128, 3, 3), True, True),  # 6,272 rows
        ((2, 128, 28, 28), (96, 128, 3, 3), True, True),  # 96 out
        ((2, 128, 28, 28), (256, 128, 3, 3), True, True),  # 256 out
    ],
)
def test_eigen_leaves_balanced_values_to_ynnpack(x_shape, w_shape, value, pays):
    """`lax.eigen_pays` leaves a value (not an input gradient) to exactly 128 channels on
    fewer than 6,272 rows to YNNPACK, in both layouts."""
    from jaxconv._impls import lax as lax_impl

    spec = _spec.conv_plan("conv", x_shape, w_shape, padding=w_shape[-1] // 2).spec
    for channels_last in (False, True):
        spec = dataclasses.replace(spec, channels_last=channels_last)
        assert lax_impl.eigen_pays(x_shape, w_shape, jnp.float32, spec, value=value) == pays


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the Eigen rule is the CPU's")
@pytest.mark.parametrize("differentiated", [False, True])
@pytest.mark.parametrize(
    "batch, channels, channels_last",
    [(2, 128, False), (4, 64, True), (4, 64, False)],
    ids=["small_map", "few_flops", "few_flops_channels_first"],
)
def test_auto_small_map_value_on_ynnpack_unless_differentiated(
    differentiated, batch, channels, channels_last
):
    """auto's value of a dense 3x3 128@14 layer (`lax.EIGEN_SMALL_MAP_POSITIONS`) and of
    a 64@14 layer of 58 MFLOP (`lax.EIGEN_MIN_VALUE_FLOPS`) is XLA's convolution as it
    is (no taller output: YNNPACK's); under differentiation the value and the input
    gradient keep the extra row, but for the 58 MFLOP layer channels-first
    (`lax.EIGEN_MIN_FLOPS_CHANNELS_FIRST`)."""
    import numpy as np

    x = np.zeros((batch, channels, 14, 14), np.float32)
    w = np.zeros((channels, channels, 3, 3), np.float32)
    taller = f"{batch}x{channels}x15x14x"
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))
        taller = f"{batch}x15x14x{channels}x"

    def conv(a, b):
        return jaxconv.conv2d(a, b, padding=1, channels_last=channels_last)

    if differentiated:
        text = jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b) ** 2))).lower(x, w).as_text()
    else:
        text = jax.jit(conv).lower(x, w).as_text()
    extra = differentiated and (channels_last or channels == 128)
    assert (f"-> tensor<{taller}" in text) == extra, text


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the Eigen rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((2, 24, 10, 9), (20, 24, 3, 3), dict(padding=1)),
        ((2, 20, 12, 11), (24, 20, 3, 3), dict(padding=(2, 1), dilation=(2, 1))),
        ((1, 24, 9, 12), (32, 24, 3, 5), dict(padding=(1, 2))),
    ],
)
def test_dense_2d_value_and_input_gradient_off_ynnpack(
    x_shape, w_shape, kwargs, channels_last, monkeypatch, retrace
):
    """auto's value and input gradient of a stride-1 dense 2-D convolution are XLA's
    convolutions with a taller output (`lax.forward_eigen`), and equal `lax`'s. (Small
    shapes, with the FLOPs and rows floors and the dilated few-channels rule off.)"""
    import numpy as np

    from jaxconv._impls import lax as lax_impl

    monkeypatch.setattr(lax_impl, "EIGEN_MIN_FLOPS", 0)
    monkeypatch.setattr(lax_impl, "EIGEN_MIN_FLOPS_CHANNELS_FIRST", 0)
    monkeypatch.setattr(lax_impl, "EIGEN_MIN_VALUE_FLOPS", 0)
    monkeypatch.setattr(lax_impl, "EIGEN_DILATED_FEW_MAX_IN_CHANNELS", 0)
    monkeypatch.setattr(lax_impl, "EIGEN_FEW_OUT_CHANNELS_MIN_ROWS", 0)

    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.moveaxis(w, (0, 1), (-1, -2))

    def conv(impl):
        return lambda a, b: jaxconv.conv2d(a, b, **kwargs, channels_last=channels_last, impl=impl)

    ct = rng.standard_normal(jax.eval_shape(conv("lax"), x, w).shape)
    (got, *grads), (y, *grads_lax) = values_and_vjps([conv("auto"), conv("lax")], (x, w), ct)
    np.testing.assert_allclose(got, y, rtol=1e-10, atol=1e-10)
    for g, want in zip(grads, grads_lax, strict=True):
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-10)

    def taller(shape):  # a canonical convolution output one row taller, in StableHLO
        return f"-> tensor<{'x'.join(map(str, (*shape[:2], shape[2] + 1, *shape[3:])))}x"

    # The value's convolution, and (in a program without the value) the input
    # gradient's, each with its canonical output's height plus one row.
    out = y.shape[1:3] if channels_last else y.shape[2:]
    value = jax.jit(conv("auto")).lower(x, w).as_text()
    assert taller((x_shape[0], w_shape[0], *out)) in value, value
    train = jax.jit(jax.grad(lambda a, b: jnp.sum(conv("auto")(a, b) * ct), argnums=0))
    text = train.lower(x, w).as_text()
    assert taller(x_shape) in text, text


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        # Padding past the kernel's extent: a stride-1 transposed convolution's form.
        ((2, 3, 9, 8), (4, 3, 3, 2), dict(padding=((2, 2), (1, 3)))),
        ((1, 2, 10, 7), (2, 2, 3, 3), dict(padding=((5, 0), (0, 4)), dilation=(1, 2))),
        ((1, 2, 11), (3, 2, 4), dict(padding=((-1, 9),), stride=(2,))),
        ((1, 2, 5, 6, 7), (2, 1, 2, 3, 2), dict(groups=2, padding=((2, 2), (0, 0), (3, 1)))),
        ((2, 3, 7), (3, 3, 3), dict(padding=((1, 1),))),
        # All of it written out (`lax.explicit_padding_pays`), one dim on one side only.
        ((2, 3, 9, 8), (4, 3, 3, 2), dict(padding=((1, 1), (0, 1)), dilation=(2, 1))),
    ],
)
def test_lax_weight_derivative_is_exact(x_shape, w_shape, kwargs):
    """`lax.weight_derivative` pads the excess explicitly: its value and weight
    gradient equal XLA's on the spec as given."""
    import numpy as np

    from jaxconv._impls import lax as lax_impl

    spec = _spec.ConvSpec(
        stride=kwargs.get("stride", (1,) * (len(x_shape) - 2)),
        padding=kwargs["padding"],
        lhs_dilation=(1,) * (len(x_shape) - 2),
        rhs_dilation=kwargs.get("dilation", (1,) * (len(x_shape) - 2)),
        groups=kwargs.get("groups", 1),
    )
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    forward = lambda a, b: lax_impl.forward(a, b, spec)  # noqa: E731
    ct = rng.standard_normal(jax.eval_shape(forward, x, w).shape)

    def both(a, b, c):  # each one's value and weight gradient, in one compiled program
        out = []
        for f in (lax_impl.weight_derivative, lax_impl.forward):
            y, vjp = jax.vjp(lambda b_, f=f: f(a, b_, spec), b)
            out.append((y, vjp(c)[0]))
        return out

    (got, got_dw), (want, want_dw) = jax.jit(both)(x, w, ct)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_dw, want_dw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "x_shape, w_shape, padding, takes",
    [
        ((2, 32, 14, 14), (32, 32, 6, 6), 5, True),  # 36 taps, 196 positions
        ((2, 32, 14, 14), (32, 32, 7, 5), (6, 4), False),  # 35 taps
        ((2, 32, 13, 15), (32, 32, 6, 6), 5, False),  # 195 positions
        ((2, 32, 14, 14), (32, 32, 6, 6), 4, False),  # the input gradient padded
        ((2, 8, 14, 14), (16, 8, 6, 6), 5, False),  # to 8 channels from 16: no row
        # From at most 16 channels on inputs of at least 784 positions.
        ((2, 16, 28, 28), (32, 16, 3, 3), 2, True),
        ((2, 17, 28, 28), (32, 17, 3, 3), 2, False),  # 17 channels
        ((2, 16, 28, 27), (32, 16, 3, 3), 2, False),  # 756 positions
        ((2, 16, 28, 28), (16, 16, 3, 3), 2, False),  # to 16 from 16: no row
    ],
)
def test_unpadded_input_gradient_row_rule(x_shape, w_shape, padding, takes):
    """`_dispatch._unpadded_input_gradient_row`: each bound on both sides."""
    from jaxconv import _derivatives

    spec, _, _ = _spec_of(x_shape, w_shape, dict(padding=padding))
    problem = _derivatives.input_gradient_problem(x_shape, w_shape, spec)
    assert _dispatch._unpadded_input_gradient_row(x_shape, w_shape, problem) == takes


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the row is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
def test_transposed_stride_1_input_gradient_takes_the_row(channels_last):
    """auto's input gradient of a stride-1 transposed 2-D layer with a large kernel
    (`_dispatch._unpadded_input_gradient_row`) is the unpadded convolution of the
    cotangent with one output row more, cropped; lax's has none; the value and both
    gradients equal lax's in float64, under the other transforms too."""
    x_shape, w_shape = (2, 32, 14, 14), (32, 24, 6, 6)  # (C_in, C_out, *K) transposed
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.moveaxis(w, (0, 1), (-1, -2))

    def conv(impl):
        return lambda a, b: jaxconv.conv_transpose2d(a, b, channels_last=channels_last, impl=impl)

    ct = cotangent(conv("lax"), x, w)

    def rows(impl):  # the heights of the input gradient's convolutions' outputs
        dx = jax.jit(lambda a, b, c: jax.vjp(lambda a_: conv(impl)(a_, b), a)[1](c))
        text = dx.lower(x, w, ct).as_text()
        lines = [line for line in text.splitlines() if "stablehlo.convolution" in line]
        shapes = [re.findall(r"-> tensor<([\dx]+)x", line)[0].split("x") for line in lines]
        return {int(shape[2]) for shape in shapes}  # (canonical: channels-first)

    assert rows("lax") == {14}
    assert rows("auto") == {15}
    trains_as_lax_float64(conv, x, w, check=True)


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,pays",
    [
        ((1, 128, 56, 56), (8, 128, 3, 3), dict(padding=1), True),
        ((4, 16, 12, 12), (16, 16, 3, 3), dict(padding=1), True),  # both bounds
        ((5, 16, 12, 12), (16, 16, 3, 3), dict(padding=1), False),  # one image more
        ((4, 16, 12, 12), (17, 16, 3, 3), dict(padding=1), False),  # one channel more
        ((2, 8, 12, 12), (4, 8, 5, 5), dict(padding=((2, 0), (0, 1)), dilation=2), True),
        ((2, 8, 12, 12), (4, 8, 3, 3), dict(padding=((0, 1), (0, 0))), True),  # one side
        ((2, 8, 12, 12), (4, 8, 3, 3), dict(padding=0), False),  # nothing to write out
        ((2, 8, 12, 12), (4, 8, 3, 3), dict(crop=((-1, 2), (1, 1))), False),  # a crop
        ((2, 8, 12, 12), (4, 8, 3, 3), dict(padding=1, stride=(1, 2)), False),
        ((2, 8, 12, 12), (4, 4, 3, 3), dict(padding=1, groups=2), False),
        ((2, 8, 7, 12), (4, 8, 3, 3), dict(padding=((0, 1), (1, 1))), True),  # 6 rows
        ((2, 8, 6, 12), (4, 8, 3, 3), dict(padding=((0, 1), (1, 1))), False),  # 5: no row
        ((2, 8, 40), (4, 8, 3), dict(padding=1), False),  # 1-D: no row
        ((2, 8, 8, 8, 8), (4, 8, 3, 3, 3), dict(padding=1), False),  # nor 3-D measured
    ],
)
def test_explicit_padding_rule(x_shape, w_shape, kwargs, pays):
    """`lax.explicit_padding_pays`: each bound on both sides."""
    from jaxconv._impls import lax as lax_impl

    kwargs = dict(kwargs)
    crop = kwargs.pop("crop", None)  # a negative padding, as the canonical spec may hold
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    if crop is not None:
        spec = dataclasses.replace(spec, padding=crop)
    assert lax_impl.explicit_padding_pays(x_shape, w_shape, spec) == pays


def _weight_gradient_padding(grad, w) -> list:
    """The padding (low and high of each spatial dim) of the one convolution in the
    program of ``grad`` at ``w`` that contracts the batch: the weight gradient's."""
    lines = [
        line
        for line in jax.jit(grad).lower(w).as_text().splitlines()
        if "stablehlo.convolution" in line and "[f, b, 0, 1]x" in line  # batch contracted
    ]
    assert len(lines) == 1, lines
    return [int(v) for v in re.findall(r"-?\d+", lines[0].split("pad = ")[1].split("]]")[0])]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the padding rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
def test_few_output_weight_gradient_pads_the_input_first(channels_last):
    """auto's weight gradient of a padded 2-D layer to few channels on few images
    (`lax.explicit_padding_pays`) convolves the input padded explicitly, unpadded but
    for `lax.forward_padded`'s row; lax's keeps the padding; both gradients equal
    lax's in float64, through a second derivative too."""
    x_shape, w_shape = (2, 16, 12, 12), (8, 16, 3, 3)
    layer = dict(padding=1, dilation=(1, 2))
    assert choose(x_shape, w_shape, **layer)[_dispatch.WEIGHT_GRADIENT] == "lax"
    x, w, conv = float64_layer(x_shape, w_shape, layer, channels_last, seed=1)

    def weight_gradient_padding(impl):
        return _weight_gradient_padding(jax.grad(lambda b: jnp.sum(conv(impl)(x, b) ** 2)), w)

    assert weight_gradient_padding("lax") == [1, 1, 1, 1]
    assert weight_gradient_padding("auto") == [0, 1, 0, 0]

    def loss(impl):  # a second derivative through the weight gradient, too
        first = lambda a, b: jnp.sum(conv(impl)(a, b) ** 2)  # noqa: E731
        return lambda a, b: first(a, b) + jnp.sum(jax.grad(first, 1)(a, b) ** 2)

    got, want = (jax.jit(jax.grad(loss(i), (0, 1)))(x, w) for i in ("auto", "lax"))
    for g, v in zip(got, want, strict=True):
        np.testing.assert_allclose(g, v, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the padding rule is the CPU's")
def test_over_padded_weight_gradient_pads_the_input_first():
    """auto's weight gradient of a stride-1 transposed convolution (padding 2 * (K - 1))
    convolves an explicitly padded input with at most K - 1 of padding left; lax's
    keeps it all."""
    import jaxconv

    x, w = np.ones((2, 8, 9, 9)), np.ones((8, 8, 3, 3))

    def weight_gradient_padding(impl):
        grad = jax.grad(lambda b: jnp.sum(jaxconv.conv_transpose2d(x, b, impl=impl) ** 2))
        return _weight_gradient_padding(grad, w)

    assert max(weight_gradient_padding("lax")) == 2
    assert max(weight_gradient_padding("auto")) == 1


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="shift is the CPU's choice")
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_split_for_inference_only(channels_last):
    """`auto`'s depthwise 3x3 value (channels-first: strided, on large enough outputs)
    reads the input unpadded for inference (`shift._depthwise_split`) and pads a copy
    first under differentiation."""
    import jaxconv

    if channels_last:
        x, w, stride, whole = np.ones((2, 12, 12, 8)), np.ones((3, 3, 1, 8)), 1, "2x12x12x8x"
    else:
        x, w, stride, whole = np.ones((2, 8, 24, 24)), np.ones((8, 1, 3, 3)), 2, "2x8x24x24x"

    def conv(x, w):
        return jaxconv.conv2d(x, w, stride=stride, padding=1, groups=8, channels_last=channels_last)

    def whole_padded(f, *args):
        text = jax.jit(f).lower(*args).as_text()
        return any(
            "stablehlo.pad" in line and line.split(": (")[1].startswith("tensor<" + whole)
            for line in text.splitlines()
        )

    assert not whole_padded(conv, x, w)
    assert whole_padded(lambda x, w: jax.vjp(conv, x, w)[0], x, w)  # the value alone


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="shift is the CPU's choice")
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_large_kernels_split_for_inference_only(multiplier, monkeypatch):
    """Channels-last 5x5 depthwise values whose padded input passes the heap block (here
    set to nothing) read the input unpadded for inference (`shift.SPLIT_LARGE_MAX_TAPS`),
    not with a channel multiplier (whose input is repeated first), and not under
    differentiation: neither the value nor the input gradient (of the cotangent)."""
    from jaxconv._impls import lax as lax_impl

    monkeypatch.setattr(lax_impl, "MALLOC_MAX_HEAP_BLOCK", 0)
    c = 8
    x, w = np.ones((2, 32, 32, c)), np.ones((5, 5, 1, c * multiplier))

    def conv(x, w):
        return jaxconv.conv2d(x, w, padding=2, groups=c, channels_last=True)

    def whole_padded(f, *args, channels=c):
        text = jax.jit(f).lower(*args).as_text()
        return any(
            "stablehlo.pad" in line
            and line.split(": (")[1].startswith(f"tensor<2x32x32x{channels}x")
            for line in text.splitlines()
        )

    x_shape, w_shape = (2, c, 32, 32), (c * multiplier, 1, 5, 5)
    spec = _spec.conv_plan("conv", x_shape, w_shape, padding=2, groups=c).spec
    spec = dataclasses.replace(spec, channels_last=True)
    assert not _dispatch._split_input_gradient(spec, x_shape, w_shape)
    assert whole_padded(conv, x, w, channels=c * multiplier) == (multiplier > 1)
    assert whole_padded(lambda x, w: jax.vjp(conv, x, w)[0], x, w)  # the value alone
    ct = np.ones((2, 32, 32, c * multiplier))
    grad = lambda x, w: jax.vjp(lambda a: conv(a, w), x)[1](ct)  # noqa: E731
    assert whole_padded(grad, x, w, channels=c * multiplier)  # the cotangent, padded


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="shift is the CPU's choice")
@pytest.mark.parametrize(
    "size, kwargs, split",
    [
        (28, dict(padding=1), True),  # 784 positions
        (27, dict(padding=1), False),  # 729: the cotangent padded first
        (28, dict(padding="same", dilation=2), True),
        (30, dict(padding=(2, 0), dilation=(2, 1)), True),
        (29, dict(stride=2, padding=1), True),
        (28, dict(stride=(1, 2), padding=(0, 1)), True),
    ],
)
def test_depthwise_input_gradient_split_on_large_maps(size, kwargs, split, monkeypatch, retrace):
    """A channels-last depthwise 3x3 layer on maps of at least
    `_dispatch.SPLIT_INPUT_GRADIENT_MIN_POSITIONS` positions takes its input gradient
    split, from the cotangent written out once (`_dispatch._split_input_gradient`):
    no padded copy of the whole cotangent. The gradients equal `lax`'s with a fixed
    cotangent, through a ReLU and of a squared loss (float64), and so do second
    derivatives."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, size, size, 8))
    w = rng.standard_normal((3, 3, 1, 8))

    def conv(x, w, impl="auto"):
        return jaxconv.conv2d(x, w, groups=8, channels_last=True, impl=impl, **kwargs)

    calls = []
    original = _dispatch._split_once

    def spy(ct, w, spec):
        calls.append(ct.shape)
        return original(ct, w, spec)

    monkeypatch.setattr(_dispatch, "_split_once", spy)
    ct = cotangent(conv, x, w)
    text = jax.jit(lambda x, w: jax.vjp(lambda a: conv(a, w), x)[1](ct)).lower(x, w).as_text()
    assert bool(calls) == split
    whole = "tensor<{}x{}x{}x8x".format(*ct.shape[:3])
    padded = any(
        "stablehlo.pad" in line and line.split(": (")[1].startswith(whole)
        for line in text.splitlines()
        if ": (" in line
    )
    if "stride" not in kwargs:  # (strided, the phases pad their own slices)
        assert padded != split

    def losses(impl):
        f = functools.partial(conv, impl=impl)
        relu = jax.grad(lambda x, w: jnp.sum(jax.nn.relu(f(x, w)) * ct), (0, 1))
        square = jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), (0, 1))
        # A second derivative through the input gradient: d/dw of |d/dx loss|^2.
        dx = jax.grad(lambda a, w: jnp.sum(f(a, w) ** 2))
        second = jax.grad(lambda x, w: jnp.sum(dx(x, w) ** 2), 1)
        return relu, square, second

    auto, lax_ = values_and_vjps([conv, functools.partial(conv, impl="lax")], (x, w), ct)
    for got, want in zip(auto, lax_, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    got, want = jax.jit(lambda x, w: [[g(x, w) for g in losses(i)] for i in ("auto", "lax")])(x, w)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="shift is the CPU's choice")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("groups, c_in_g", [(8, 1), (4, 2)])
def test_shift_value_is_computed_once_under_grad(groups, c_in_g, channels_last):
    """When the output cotangent depends on the value (here a squared loss), the
    compiled gradient multiplies no more than with a fixed cotangent: XLA does not copy
    shift's sum over taps into the derivatives' loops (`_dispatch._computed_once`)."""
    import numpy as np

    import jaxconv

    x_shape, w_shape = (2, 8, 10, 10), (8, c_in_g, 3, 3)
    if channels_last:
        x_shape, w_shape = (2, 10, 10, 8), (3, 3, c_in_g, 8)
    x, w = np.ones(x_shape), np.ones(w_shape)
    assert choose(x_shape, w_shape, groups=groups, channels_last=channels_last)[0] == "shift"

    def conv(x, w):
        return jaxconv.conv2d(x, w, padding=1, groups=groups, channels_last=channels_last)

    def multiplies(compiled):
        return compiled.as_text().count(" multiply(")

    def fixed(x, w, ct):
        y, vjp = jax.vjp(conv, x, w)
        return y, *vjp(ct)

    def squared(x, w):
        return jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1))(x, w)

    # Each program compiled once, for its count and for its values.
    fixed_c = compile_as_shipped(fixed, x, w, np.ones(x_shape))
    squared_c = compile_as_shipped(squared, x, w)
    # (The loss adds a few: 2 * y. Copying the 9-tap sum into a loop adds 9 or more.)
    assert multiplies(squared_c) <= multiplies(fixed_c) + 4
    # And the gradient is right: d sum(y^2) = vjp(2y).
    y = fixed_c(x, w, np.ones(x_shape))[0]
    y, *want = fixed_c(x, w, 2 * np.asarray(y))
    for got, expected in zip(squared_c(x, w), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the depthwise rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
def test_large_depthwise_value_by_shift_alone_and_by_fft_under_grad(channels_last):
    """A 9x9 depthwise kernel: inference runs shift (no FFT in the program), and under
    differentiation the value is FFT's like the derivatives'; both agree with lax."""
    import numpy as np

    import jaxconv

    rng = np.random.default_rng(3)
    x_shape, w_shape = (2, 4, 12, 11), (4, 1, 9, 9)
    if channels_last:
        x_shape, w_shape = (2, 12, 11, 4), (9, 9, 1, 4)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    assert choose(x_shape, w_shape, groups=4, channels_last=channels_last) == (
        "shift",
        "fft",
        "fft",
    )

    def conv(impl):
        return lambda a, b: jaxconv.conv2d(
            a, b, padding=4, groups=4, channels_last=channels_last, impl=impl
        )

    def grads(impl):
        return jax.grad(lambda a, b: jnp.sum(jax.nn.relu(conv(impl)(a, b)) ** 2), (0, 1))

    def inverse_ffts(f):
        return jax.jit(f).lower(x, w).as_text().count("IRFFT")

    assert inverse_ffts(conv("auto")) == 0
    assert inverse_ffts(grads("auto")) == 3  # the value's, and one per derivative
    # auto's and lax's values (outside differentiation) and gradients, in one program
    (y, g), (y_lax, g_lax) = jax.jit(
        lambda a, b: [(conv(i)(a, b), grads(i)(a, b)) for i in ("auto", "lax")]
    )(x, w)
    np.testing.assert_allclose(y, y_lax, rtol=1e-4, atol=1e-4)
    for got, want in zip(g, g_lax, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def spy_third_arguments(monkeypatch, module, name) -> list:
    """The third arguments (a spec) ``module.name`` is called with from now on, as a
    list; the function still runs."""
    calls = []
    original = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def _layer(op, x_shape, w_shape, kwargs, channels_last, seed):
    """Random float32 input and weight (NumPy's) for ``jaxconv.<op>`` (shapes given
    channels-first, moved to the caller's layout), and ``conv(impl)``, the layer by that
    algorithm."""
    import numpy as np

    import jaxconv

    rng = np.random.default_rng(seed)
    if channels_last:
        x_shape = (x_shape[0], *x_shape[2:], x_shape[1])
        w_shape = (*w_shape[2:], w_shape[1], w_shape[0])
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    fn = getattr(jaxconv, op)

    def conv(impl):
        return lambda a, b: fn(a, b, **kwargs, channels_last=channels_last, impl=impl)

    return x, w, conv


def _relu_grad(conv, impl):
    """``jax.value_and_grad`` of a loss that reads the output through a ReLU, along the
    input and the weight, of ``conv(impl)`` (see `_layer`)."""
    return jax.value_and_grad(lambda a, b: jnp.sum(jax.nn.relu(conv(impl)(a, b)) ** 2), (0, 1))


def _derivative_programs(conv, x, w) -> tuple[str, str]:
    """The lowered text of the input gradient and of the weight gradient of
    ``conv("auto")`` at ``x`` and ``w`` (see `_layer`), each for a cotangent argument."""
    ct = jax.eval_shape(conv("auto"), x, w)
    input_grad = lambda a, c: jax.vjp(lambda b: conv("auto")(b, w), a)[1](c)  # noqa: E731
    weight_grad = lambda b, c: jax.vjp(lambda v: conv("auto")(x, v), b)[1](c)  # noqa: E731
    return tuple(jax.jit(f).lower(a, ct).as_text() for f, a in ((input_grad, x), (weight_grad, w)))


def _dilated(f, *args) -> int:
    """How many of ``f``'s lowered convolutions are input-dilated (XLA's transposed
    convolution whole rather than sub-pixel phases)."""
    text = jax.jit(f).lower(*args).as_text()
    lines = [line for line in text.splitlines() if "stablehlo.convolution" in line]
    return sum("lhs_dilate = [1" not in line for line in lines)


def _assert_float32_close(actual, expected):
    """``actual`` as ``expected`` (auto's and lax's float32 results), within 2e-4
    relative and 2e-3 absolute plus 1e-5 of ``expected``'s largest magnitude: unscaled
    gradients reach thousands, where a difference in summation order (another CPU's
    vector width) moves an element that nearly cancels by more than 2e-3 (0.0024 on an
    AVX2 CPU, 2026-12-02, for a value of 0.06 among elements up to 2,300)."""
    import numpy as np

    expected = np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=2e-4, atol=2e-3 + 1e-5 * scale)


def _assert_trains_as_lax(conv, x, w, value=False):
    """`_relu_grad` under auto gives lax's values and gradients (and, with ``value``,
    ``conv`` outside differentiation lax's output), auto and lax in one compiled
    program."""

    def run(impl, a, b):
        out = _relu_grad(conv, impl)(a, b)
        return (conv(impl)(a, b), out) if value else out

    got, want = jax.jit(lambda a, b: [run(impl, a, b) for impl in ("auto", "lax")])(x, w)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        _assert_float32_close(a, b)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the phases rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, whole",
    [
        ((2, 32, 6, 5), (32, 3, 4, 4), dict(stride=2, padding=1), True),  # DCGAN's last
        ((2, 32, 6, 5), (32, 8, 3, 3), dict(stride=2, padding=1, output_padding=1), True),
        ((1, 32, 5, 7), (32, 1, 3, 3), dict(stride=2), True),  # 3x3 unpadded, to 1
        ((2, 31, 6, 5), (31, 4, 4, 4), dict(stride=2, padding=1), False),  # 31 channels
        ((1, 32, 64, 64), (32, 3, 4, 4), dict(stride=2, padding=1), True),  # 64x64
        ((1, 32, 64, 65), (32, 3, 4, 4), dict(stride=2, padding=1), False),  # larger
        # Larger, channels-last from 48 channels and 8 times the output channels where
        # the phases share no window.
        ((1, 48, 64, 65), (48, 6, 3, 3), dict(stride=2, padding=1, output_padding=1), "cl"),
        ((1, 64, 65, 64), (64, 8, 3, 3), dict(stride=2), "cl"),
        ((1, 47, 64, 65), (47, 1, 3, 3), dict(stride=2), False),  # 47 channels
        ((1, 50, 64, 65), (50, 7, 3, 3), dict(stride=2), False),  # under 8 times
        ((1, 64, 64, 65), (64, 3, 4, 4), dict(stride=2, padding=1), False),  # shared window
        ((2, 16, 6, 5), (16, 9, 4, 4), dict(stride=2, padding=1), False),  # 9 channels
        ((2, 16, 6, 5), (16, 3, 2, 2), dict(stride=2), False),  # one convolution, merged
        ((2, 16, 6, 5), (16, 3, 5, 5), dict(stride=2), False),  # ... stacked
        ((2, 128, 4, 3), (128, 3, 5, 5), dict(stride=2), True),  # ... from 128 channels
        ((1, 128, 3, 4), (128, 1, 4, 4), dict(stride=2), True),
        ((1, 256, 3, 3), (256, 16, 5, 5), dict(stride=2), True),  # ... to 16 from 16x
        ((1, 128, 3, 3), (128, 16, 5, 5), dict(stride=2), False),  # ... from 8x
        ((2, 128, 3, 4), (128, 3, 2, 2), dict(stride=2), False),  # ... merged
        ((2, 16, 6, 5), (16, 2, 4, 4), dict(stride=2, padding=1, groups=2), False),
        ((1, 16, 3, 4, 4), (16, 3, 3, 3, 3), dict(stride=2), False),  # 3-D: XLA's slow
        ((2, 16, 7), (16, 1, 3), dict(stride=2), True),  # 1-D, even stacked
        ((2, 16, 7), (16, 9, 4), dict(stride=2, padding=1), False),
        # A dilated kernel keeps the phases, whatever the dilation and the stride.
        ((2, 16, 6, 5), (16, 3, 3, 3), dict(stride=2, padding=2, dilation=2), False),
        ((2, 16, 6, 5), (16, 3, 3, 3), dict(stride=2, padding=1, dilation=3), False),
        ((2, 16, 6, 5), (16, 3, 3, 3), dict(stride=2, dilation=(2, 1)), False),
        ((2, 128, 4, 3), (128, 3, 5, 5), dict(stride=2, dilation=2), False),
        ((2, 16, 7), (16, 1, 3), dict(stride=2, dilation=2), False),
        ((2, 16, 7), (16, 1, 3), dict(stride=3, padding=1, dilation=2), False),
    ],
)
def test_transposed_value_to_few_channels_is_xlas_whole(
    x_shape, w_shape, kwargs, whole, channels_last
):
    """The value of a transposed convolution to at most 8 channels, in 1-D and, where
    its phases would each be a convolution of their own, in 2-D from at least 32
    channels on inputs of at most 64x64 positions (channels-last on larger ones too,
    from at least 48 channels and 8 times the output channels, where the phases share
    no window: ``whole`` "cl"), is XLA's input-dilated convolution under auto, and so is
    the value of one to at most 16 channels from at least 128 and 16 times as many
    whose phases stack in 2-D; its derivatives stay sub-pixel phases; values and
    gradients equal lax's. Not with a dilated kernel, whose value keeps the phases."""
    x, w, conv = _layer("conv_transpose", x_shape, w_shape, kwargs, channels_last, seed=2)
    whole = whole is True or (whole == "cl" and channels_last)

    assert _dilated(conv("auto"), x, w) == int(whole)
    # The value's only: the derivatives by phases.
    assert _dilated(_relu_grad(conv, "auto"), x, w) == int(whole)
    _assert_trains_as_lax(conv, x, w)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the phases rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, shifted",
    [
        ((2, 16, 6, 5), (16, 12, 4, 4), dict(stride=2, padding=1), True),  # DCGAN's
        ((2, 16, 6, 5), (16, 32, 4, 4), dict(stride=2, padding=1), True),
        ((2, 16, 6, 5), (16, 12, 4, 4), dict(stride=2, padding=1, output_padding=1), True),
        ((2, 16, 5, 6), (16, 12, 6, 6), dict(stride=3, padding=1), True),  # 2 taps each
        ((2, 16, 5, 6), (16, 12, 6, 6), dict(stride=3, padding=(2, 1)), True),
        ((2, 16, 5, 6), (16, 12, 3, 3), dict(stride=3, padding=1), True),  # 1 tap each
        ((2, 16, 5, 6), (16, 40, 3, 2), dict(stride=(3, 2), padding=(2, 0)), True),
        ((2, 16, 5, 6), (16, 12, 6, 6), dict(stride=3, padding=(2, 0)), False),  # stacked
        ((2, 16, 6, 5), (16, 24, 4, 3), dict(stride=(2, 1), padding=1), True),
        ((2, 16, 6, 5), (16, 12, 4, 4), dict(stride=2, padding=1, dilation=3), True),
        ((2, 16, 7), (16, 24, 4), dict(stride=2, padding=1), True),  # 1-D
        ((2, 16, 6, 5), (16, 12, 3, 3), dict(stride=2, padding=1, output_padding=1), False),
        ((2, 16, 6, 5), (16, 12, 4, 4), dict(stride=2, padding=1, dilation=2), False),
        ((2, 16, 6, 5), (16, 129, 4, 4), dict(stride=2, padding=1), False),  # 129 channels
        ((2, 32, 6, 5), (32, 3, 4, 4), dict(stride=2, padding=1), False),  # XLA's whole
        ((2, 16, 6, 5), (16, 12, 4, 4), dict(stride=2), False),  # stacked
        ((2, 16, 6, 5), (16, 6, 4, 4), dict(stride=2, padding=1, groups=2), False),
        ((1, 16, 3, 4, 4), (16, 12, 4, 4, 4), dict(stride=2, padding=1), False),  # 3-D
    ],
)
def test_transposed_value_shifted_phases_in_one_convolution(
    monkeypatch, retrace, x_shape, w_shape, kwargs, shifted, channels_last
):
    """The value of a 1-D or 2-D transposed convolution to at most 128 channels whose
    phases each meet as many taps (4x4 stride 2 with padding 1, 6x6 stride 3, 3x3
    stride 3 with padding 1) is one convolution over the positions they all cover under
    auto, its derivatives the phases' own; in training channels-last only to at least
    32 channels. Values and gradients equal lax's."""
    from jaxconv._impls import subpixel

    # Cut phase by phase only for the dilated kernel, which has no rotation.
    cut = spy_third_arguments(monkeypatch, subpixel, "_shifted_pieces")
    interleaved = spy_third_arguments(monkeypatch, subpixel, "_shifted_interleaved")
    x, w, conv = _layer("conv_transpose", x_shape, w_shape, kwargs, channels_last, seed=5)
    jax.eval_shape(conv("auto"), x, w)
    assert len(cut + interleaved) == int(shifted)
    assert len(cut) == int(shifted and kwargs.get("dilation", 1) > 1)
    cut.clear()
    interleaved.clear()
    jax.eval_shape(_relu_grad(conv, "auto"), x, w)
    assert len(cut + interleaved) == int(shifted and (not channels_last or w_shape[1] >= 32))
    _assert_trains_as_lax(conv, x, w, value=True)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the phases rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, whole",
    [
        ((2, 256, 5, 6), (256, 32, 4, 4), dict(stride=2, padding=1), True),  # 8x, 60
        ((2, 256, 10, 20), (256, 32, 4, 4), dict(stride=2, padding=1), True),  # 400
        ((0, 264, 5, 6), (264, 33, 4, 4), dict(stride=2, padding=1), True),  # 8x, batch 0
        ((1, 256, 4, 4), (256, 32, 3, 3), dict(stride=2, padding=1, output_padding=1), True),
        ((1, 256, 4, 4), (256, 32, 4, 4), dict(stride=3, padding=1), True),
        ((2, 256, 5, 6), (256, 33, 4, 4), dict(stride=2, padding=1), False),  # 7.8x
        ((2, 256, 10, 21), (256, 32, 4, 4), dict(stride=2, padding=1), False),  # 420
        ((2, 256, 5, 6), (256, 32, 4, 4), dict(stride=2), False),  # stacked
        ((2, 256, 5, 6), (256, 16, 4, 4), dict(stride=2, padding=1, groups=2), False),
        ((2, 256, 7), (256, 16, 4), dict(stride=2, padding=1), False),  # 1-D
    ],
)
def test_transposed_value_from_many_channels_on_small_inputs_is_xlas_whole(
    x_shape, w_shape, kwargs, whole, channels_last
):
    """Outside differentiation, the value of a 2-D transposed convolution from at
    least 8 times as many channels as it makes, on an input of at most 400 positions
    over the batch, whose phases are a convolution each or shifted ones, is XLA's
    input-dilated convolution whole under auto; under `jax.grad` it stays the phases'.
    Values and gradients equal lax's. (In float32: in float64 XLA's whole lowers as an
    interior pad and an undilated convolution, which `_dilated` does not count.)"""
    x, w, conv = _layer("conv_transpose", x_shape, w_shape, kwargs, channels_last, seed=6)

    assert _dilated(conv("auto"), x, w) == int(whole)
    assert _dilated(_relu_grad(conv, "auto"), x, w) == 0
    _assert_trains_as_lax(conv, x, w, value=True)


# Each layer in one layout, the two layouts alternating (both for the first two).
_SHORT_PHASES = [
    ((2, 128, 15, 16), (128, 32, 4, 4), dict(stride=3, padding=1), True),  # 4x
    ((2, 132, 15, 16), (132, 33, 4, 4), dict(stride=3, padding=1, output_padding=2), True),
    ((2, 128, 15, 16), (128, 33, 4, 4), dict(stride=3, padding=1), False),  # 3.9x
    ((2, 512, 15, 16), (512, 128, 5, 5), dict(stride=4, padding=2), True),
    ((2, 516, 15, 16), (516, 129, 5, 5), dict(stride=4, padding=2), False),  # 129
    ((2, 128, 15, 16), (128, 32, 3, 2), dict(stride=4, padding=1), True),  # phases of none
    ((2, 36, 15, 16), (36, 9, 4, 4), dict(stride=3, padding=1), True),  # 36 channels
    ((2, 28, 15, 16), (28, 7, 3, 3), dict(stride=4, padding=1), False),  # 28
    ((2, 128, 15, 16), (128, 32, 5, 5), dict(stride=4, padding=1), True),
    ((2, 128, 15, 16), (128, 32, 6, 6), dict(stride=5, padding=1), False),  # stride 5
    ((2, 128, 15, 16), (128, 32, 3, 3), dict(stride=3, padding=1), False),  # shared window
    ((2, 128, 15, 16), (128, 32, 4, 3), dict(stride=(3, 2), padding=1), False),
    ((2, 128, 15, 16), (128, 32, 5, 4), dict(stride=3, padding=1), False),  # 5 > 3 + 1
    ((2, 128, 15, 16), (128, 32, 3, 3), dict(stride=2, padding=1, output_padding=1), False),
    ((4, 256, 11, 10), (256, 32, 3, 3), dict(stride=2, padding=1, output_padding=1), True),
    ((3, 256, 15, 16), (256, 32, 3, 3), dict(stride=2, padding=1, output_padding=1), False),
    ((4, 256, 11, 10), (256, 33, 3, 3), dict(stride=2, padding=1), False),  # 7.8x
    ((4, 256, 11, 10), (256, 32, 5, 5), dict(stride=2, padding=2, output_padding=1), True),
    ((4, 256, 11, 10), (256, 32, 7, 7), dict(stride=2, padding=3), False),  # 7 taps
    ((4, 256, 11, 10), (256, 32, 3, 3), dict(stride=(2, 3), padding=1), False),
    ((2, 128, 15, 16), (128, 32, 4, 4), dict(stride=3, padding=1, dilation=2), False),
    ((2, 128, 15, 16), (128, 16, 4, 4), dict(stride=3, padding=1, groups=2), False),
    ((2, 128, 31), (128, 32, 4), dict(stride=3, padding=1), False),  # 1-D
    ((1, 128, 5, 6, 6), (128, 32, 4, 4, 4), dict(stride=3, padding=1), False),  # 3-D
]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the phases rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, whole, channels_last",
    [(*_SHORT_PHASES[0], True), (*_SHORT_PHASES[1], False)]
    + [(*case, i % 2 == 1) for i, case in enumerate(_SHORT_PHASES)],
)
def test_transposed_value_of_short_phases_is_xlas_whole(
    x_shape, w_shape, kwargs, whole, channels_last
):
    """Outside differentiation, the value of a dense 2-D transposed convolution at a
    stride of 3 or 4 along both dims, its kernel at most one longer than the stride, its
    phases a convolution each (one or two taps a dim, or none; not a kernel the size of
    the stride with padding, whose phases share a window), to at most 128 channels from
    at least 4 times as many and at least 32, or at stride 2 with kernels of at most 5
    taps a dim from a batch of 4 or more and 8 times the channels, is XLA's
    input-dilated convolution whole under auto; under `jax.grad` it stays the phases'.
    Values and gradients equal lax's. (Inputs of more than 400 positions over the batch,
    where the small-input rule does not apply.)"""
    x, w, conv = _layer("conv_transpose", x_shape, w_shape, kwargs, channels_last, seed=7)

    assert _dilated(conv("auto"), x, w) == int(whole)
    assert _dilated(_relu_grad(conv, "auto"), x, w) == 0
    _assert_trains_as_lax(conv, x, w, value=True)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the phases rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, channels_last, whole",
    [
        ((1, 64, 4, 4), (64, 48, 2, 2), False, True),  # weight 12288 > input 1024
        ((1, 64, 4, 4), (64, 48, 2, 2), True, True),  # channels-last too
        ((4, 64, 8, 8), (64, 48, 2, 2), True, False),  # channels-last, input larger
        ((8, 64, 16, 16), (64, 48, 2, 2), False, False),  # input larger
        ((1, 64, 4, 4), (64, 48, 3, 3), False, False),  # not merged
    ],
)
def test_transposed_value_merged_with_a_large_weight_is_xlas_whole(
    x_shape, w_shape, channels_last, whole
):
    """The value of a transposed convolution whose kernel is the size of
    its stride (the phases merge into one 1x1 convolution) and whose weight is larger
    than its input is XLA's input-dilated convolution under auto, outside
    differentiation only: under `jax.grad` the value stays the phases'. Values and
    gradients equal lax's."""

    x, w, conv = _layer("conv_transpose", x_shape, w_shape, dict(stride=2), channels_last, 3)

    assert _dilated(conv("auto"), x, w) == int(whole)
    assert _dilated(_relu_grad(conv, "auto"), x, w) == 0
    # The value outside differentiation too (rtol=2e-4, atol=2e-3).
    _assert_trains_as_lax(conv, x, w, value=True)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the phases rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, whole",
    [
        ((2, 16, 6, 5), (16, 3, 4, 4), dict(stride=2, padding=1), True),  # DCGAN's last
        ((2, 16, 6, 5), (16, 16, 3, 3), dict(stride=2, padding=1, output_padding=1), True),
        ((2, 16, 6, 5), (16, 17, 4, 4), dict(stride=2, padding=1), False),  # 17 channels
        ((2, 16, 6, 5), (16, 3, 5, 5), dict(stride=2), False),  # one convolution, stacked
        ((2, 16, 6, 5), (16, 3, 2, 2), dict(stride=2), False),  # ... merged
        ((2, 16, 6, 5), (16, 2, 4, 4), dict(stride=2, padding=1, groups=2), False),
        ((2, 16, 7), (16, 3, 4), dict(stride=2, padding=1), False),  # 1-D
        ((1, 16, 3, 4, 4), (16, 3, 4, 4, 4), dict(stride=2, padding=1), False),  # 3-D
    ],
)
def test_transposed_input_gradient_to_few_channels_is_one_strided_convolution(
    x_shape, w_shape, kwargs, whole, channels_last
):
    """The input gradient of a 2-D transposed convolution to at most 16 channels whose
    sub-pixel phases are a convolution each is XLA's transpose of the whole: one strided
    convolution of the output gradient, not the phases' stride-1 ones; values and
    gradients equal lax's."""
    import re

    x, w, conv = _layer("conv_transpose", x_shape, w_shape, kwargs, channels_last, seed=4)
    y = jax.eval_shape(conv("auto"), x, w)  # the cotangent's shape and dtype
    input_grad = lambda a, ct: jax.vjp(lambda b: conv("auto")(b, w), a)[1](ct)  # noqa: E731
    text = compile_as_shipped(input_grad, x, y).as_text()
    windows = re.findall(r" convolution\(.*?window=\{([^}]*)\}", text)
    strided = [win for win in windows if "stride=" in win]
    if whole:
        assert len(windows) == len(strided) == 1, windows
    else:  # the phases' stride-1 convolutions (or products, for the merged and grouped)
        assert not strided, windows
    _assert_trains_as_lax(conv, x, w)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the kernel-length rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "op, x_shape, w_shape, kwargs, convolutions",
    [
        ("conv", (2, 32, 2, 2), (48, 32, 3, 3), dict(padding=1), 0),
        ("conv", (1, 40, 4, 6), (32, 40, 5, 5), dict(padding=(2, 1), stride=(2, 1)), 0),
        ("conv", (3, 32, 3), (32, 32, 5), dict(padding="same"), 0),
        ("conv", (1, 32, 3, 2, 3), (32, 32, 3, 3, 3), dict(padding=1), 0),
        ("conv_transpose", (2, 32, 3, 3), (32, 40, 5, 5), dict(padding=2), 0),
        # Grouped: XLA's grouped value, each group's derivatives by the patches.
        ("conv", (2, 128, 2, 2), (128, 64, 3, 3), dict(padding=1, groups=2), 1),
        ("conv", (2, 16, 2, 2), (16, 16, 3, 3), dict(padding=1), 3),  # few channels
    ],
)
def test_kernel_past_input_runs_as_patches(
    op, x_shape, w_shape, kwargs, convolutions, channels_last
):
    """A kernel with more taps than the input has positions runs as the patches' product
    under auto, value and gradients (XLA's dense convolution takes a slow path there):
    no convolution left in the program but a grouped value, and values and gradients
    as lax's."""
    x, w, conv = _layer(op, x_shape, w_shape, kwargs, channels_last, seed=3)
    text = jax.jit(_relu_grad(conv, "auto")).lower(x, w).as_text()
    convs = [line for line in text.splitlines() if "stablehlo.convolution" in line]
    assert len(convs) == convolutions
    if kwargs.get("groups"):
        assert all("feature_group_count = 2 " in line for line in convs)
    _assert_trains_as_lax(conv, x, w)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the 3-D planes rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((1, 64, 4, 6, 6), (64, 2, 3, 3, 3), dict(padding=1, groups=32)),
        ((2, 96, 3, 5, 5), (64, 3, 3, 3, 3), dict(padding=1, stride=2, groups=32)),
    ],
)
def test_grouped_3d_derivatives_by_planes(x_shape, w_shape, kwargs, channels_last):
    """A 3-D convolution of many groups takes its derivatives, as its value, by 2-D
    planes, not by the patches' product with the groups as a batch dim (27x the input
    for 3x3x3): no dot in either derivative's program; values and gradients as lax's."""
    x, w, conv = _layer("conv", x_shape, w_shape, kwargs, channels_last, seed=6)
    assert choose(x_shape, w_shape, **kwargs) == ("lax",) * 3
    for text in _derivative_programs(conv, x, w):
        assert "stablehlo.dot_general" not in text
    _assert_trains_as_lax(conv, x, w, value=True)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the kernel-length rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, value_by_patches",
    [
        ((2, 64, 8, 8), (64, 64, 7, 7), {}, True),  # valid 7x7 to 2x2
        ((2, 64, 11, 11), (80, 64, 5, 5), dict(stride=2), True),  # 5x5 stride 2 to 4x4
        ((2, 48, 6, 6), (32, 48, 5, 5), dict(padding=1), False),  # to 4x4, few channels
        ((2, 64, 10), (64, 64, 9), {}, True),
        ((1, 64, 4, 4, 4), (64, 64, 3, 3, 3), {}, True),
        ((8, 64, 3, 200), (64, 64, 3, 3), {}, False),  # past along one dim: large patches
        ((2, 64, 6, 6), (96, 64, 3, 3), dict(dilation=2), True),  # dilated, window 5 to 2x2
    ],
)
def test_kernel_past_output_differentiates_by_patches(
    x_shape, w_shape, kwargs, value_by_patches, channels_last, monkeypatch
):
    """A kernel with more taps than the output has positions along an undilated dim (or
    a dilated window longer than a small output): both derivatives by the patches'
    product under auto (their convolutions would have
    a kernel past the output gradient, XLA's slow path), no convolution in either; the
    value too where the patches are small and the channels many, channels-first, in 3-D
    or unpadded in 2-D (`_dispatch._kernel_past_output_unpadded_value`); values and
    gradients as lax's (on a CPU with AVX-512: see
    `test_kernel_past_output_dilated_on_avx2_only_cpus`)."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    x, w, conv = _layer("conv", x_shape, w_shape, kwargs, channels_last, seed=5)
    for text in _derivative_programs(conv, x, w):
        assert text.count("stablehlo.convolution") == 0
    value = jax.jit(conv("auto")).lower(x, w).as_text().count("stablehlo.convolution")
    rows = x_shape[0] * math.prod(_spec.conv_plan("conv", x_shape, w_shape, **kwargs).out_shape[2:])
    unpadded_2d = len(x_shape) == 4 and "padding" not in kwargs and rows >= 4
    layout = len(x_shape) == 5 or not channels_last or unpadded_2d
    assert (value == 0) == (value_by_patches and layout)
    _assert_trains_as_lax(conv, x, w, value=True)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, taken",
    [
        ((8, 384, 8, 8), (128, 384, 7, 7), {}, True),  # found: 8 x 2 x 2 rows
        ((1, 64, 8, 8), (64, 64, 7, 7), {}, True),  # 4 rows
        ((1, 64, 8, 7), (64, 64, 7, 7), {}, False),  # 2 rows
        ((2, 64, 8, 8), (64, 64, 7, 7), dict(padding=(0, 1)), False),  # padded
        ((2, 64, 8, 8), (64, 64, 7, 7), dict(padding=((0, 0), (1, 0))), False),
        ((2, 64, 8, 8), (64, 64, 7, 7), dict(padding=((0, 0), (0, 1))), False),
        ((2, 64, 12, 12), (96, 64, 5, 5), dict(stride=2, dilation=2), True),
        ((4, 64, 10), (64, 64, 9), {}, False),  # 1-D
    ],
)
def test_kernel_past_output_unpadded_value(monkeypatch, x_shape, w_shape, kwargs, taken):
    """Channels-last 2-D layers unpadded on at least
    `KERNEL_PAST_OUTPUT_UNPADDED_VALUE_MIN_ROWS` rows (batch x output positions) take
    their value by `matmul` where `kernel_past_output` takes their derivatives
    (`_dispatch._kernel_past_output_unpadded_value`), with AVX-512; channels-first the
    rule is not needed (the value by patches already), and with AVX2 alone, not."""
    assert _dispatch.KERNEL_PAST_OUTPUT_UNPADDED_VALUE_MIN_ROWS == 4
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    cl = dataclasses.replace(spec, channels_last=True)
    rule = _dispatch._kernel_past_output_unpadded_value
    assert rule(cl, x_shape, w_shape) == taken
    assert not rule(spec, x_shape, w_shape)
    assert _dispatch.kernel_past_output(cl, x_shape, w_shape)
    rules = _dispatch.choose(cl, x_shape, w_shape, jnp.float32, "cpu")
    assert (rules == ("matmul",) * 3) == taken
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: True)
    assert not rule(cl, x_shape, w_shape)


def test_kernel_past_output_few_channels_on_amd_avx512(monkeypatch):
    """`_dispatch.kernel_past_output` takes layers to
    `KERNEL_PAST_OUTPUT_MIN_OUT_CHANNELS` or more channels, and on AMD CPUs with AVX-512
    (`KERNEL_PAST_OUTPUT_FEW_VENDORS`) from `KERNEL_PAST_OUTPUT_MIN_OUT_CHANNELS_FEW`."""
    from jaxconv._impls import _common

    assert _dispatch.KERNEL_PAST_OUTPUT_MIN_OUT_CHANNELS == 32
    assert _dispatch.KERNEL_PAST_OUTPUT_MIN_OUT_CHANNELS_FEW == 8
    assert _dispatch.KERNEL_PAST_OUTPUT_FEW_VENDORS == ("AuthenticAMD",)
    hosts = {
        "zen5": {"vendor_id": "AuthenticAMD", "flags": "sse avx2 avx512f avx512bw"},
        "epyc avx2": {"vendor_id": "AuthenticAMD", "flags": "sse avx2"},
        "xeon": {"vendor_id": "GenuineIntel", "flags": "sse avx2 avx512f"},
    }
    for c_out, takes in [(32, {"zen5", "epyc avx2", "xeon"}), (31, {"zen5"}), (8, {"zen5"})]:
        x_shape, w_shape = (4, 512, 8, 8), (c_out, 512, 5, 5)  # valid 5x5 on 8x8: 4x4 out
        plan = _spec.conv_plan("conv", x_shape, w_shape)
        for host, info in hosts.items():
            monkeypatch.setattr(_dispatch, "cpuinfo", lambda key, info=info: info.get(key, ""))
            monkeypatch.setattr(_common, "cpuinfo", lambda key, info=info: info.get(key, ""))
            got = _dispatch.kernel_past_output(plan.spec, x_shape, w_shape)
            assert got == (host in takes), (c_out, host)
    zen5 = hosts["zen5"]
    monkeypatch.setattr(_dispatch, "cpuinfo", lambda key: zen5.get(key, ""))
    plan = _spec.conv_plan("conv", (4, 512, 8, 8), (7, 512, 5, 5))  # 7 channels
    assert not _dispatch.kernel_past_output(plan.spec, (4, 512, 8, 8), (7, 512, 5, 5))


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, avx512, avx2",
    [
        ((2, 64, 6, 6), (96, 64, 3, 3), dict(padding=4, dilation=4), True, False),
        ((2, 64, 6, 6), (95, 64, 3, 3), dict(padding=4, dilation=4), False, False),
        ((2, 8, 7, 7), (128, 8, 7, 7), dict(padding=6, dilation=2), True, False),
        ((2, 512, 7, 7), (64, 512, 7, 7), dict(padding=6, dilation=2), False, False),
        ((2, 128, 16, 16), (128, 128, 3, 3), dict(padding=1, dilation=6), True, True),
        ((2, 128, 8, 8), (128, 128, 3, 3), dict(padding=4, dilation=4), True, True),  # 128
        ((3, 128, 8, 8), (128, 128, 3, 3), dict(padding=4, dilation=4), False, False),  # 192
        ((4, 128, 6, 6), (128, 128, 3, 3), dict(padding=3, dilation=3), False, True),  # 144
        ((5, 128, 6, 6), (128, 128, 3, 3), dict(padding=3, dilation=3), False, False),  # 180
        ((3, 128, 6, 6), (127, 128, 3, 3), dict(padding=3, dilation=3), True, False),
        ((3, 127, 6, 6), (256, 127, 3, 3), dict(padding=3, dilation=3), True, False),
        ((8, 64, 8, 8), (64, 64, 7, 7), {}, True, True),  # undilated: any rows, every CPU
        ((8, 128, 12, 12), (128, 128, 3, 3), dict(padding=2, dilation=2), False, False),
        ((32, 128, 8), (128, 128, 3), dict(padding=6, dilation=6), True, False),  # 1-D: 256
        ((32, 128, 4, 4, 4), (128, 128, 3, 3, 3), dict(padding=2, dilation=3), True, False),
    ],
)
def test_kernel_past_output_dilated_on_avx2_only_cpus(
    x_shape, w_shape, kwargs, avx512, avx2, monkeypatch
):
    """A dilated window longer than a small output takes the patches' derivatives
    (`_dispatch.kernel_past_output`) to 96 channels or more, in 2-D on at most 128 rows
    (batch x output positions; 1-D and 3-D on any); with AVX2 alone only from and to
    128 channels or more, on at most 160 rows."""
    assert _dispatch.KERNEL_PAST_OUTPUT_DILATED_MAX_ROWS == 128
    assert _dispatch.KERNEL_PAST_OUTPUT_DILATED_AVX2_MAX_ROWS == 160
    plan = _spec.conv_plan("conv", x_shape, w_shape, **kwargs)
    for avx2_only, want in ((False, avx512), (True, avx2)):
        monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda v=avx2_only: v)
        assert _dispatch.kernel_past_output(plan.spec, x_shape, w_shape) == want


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, taken, input_gradient",
    [
        # (The rule's own bounds; under `auto` a stride and dilation sharing a factor
        # are divided by it first, `_dispatch.reduced_layer`, so those layers never reach it.)
        ((1, 128, 56, 56), (48, 128, 3, 3), dict(stride=2, padding=3, dilation=3), True, "matmul"),
        ((2, 8, 9, 7), (16, 8, 3, 2), dict(stride=(2, 1), dilation=(1, 2)), True, "matmul"),
        ((2, 8, 9, 7), (16, 8, 3, 2), dict(stride=(1, 2), dilation=(2, 1)), True, "matmul"),
        ((2, 8, 9, 7), (16, 8, 3, 3), dict(stride=2), False, None),  # undilated
        ((2, 8, 9, 7), (16, 8, 3, 3), dict(dilation=2), False, None),  # unstrided
        ((2, 8, 9, 7), (16, 4, 3, 3), dict(stride=2, dilation=2, groups=2), False, None),
        ((2, 8, 30), (16, 8, 3), dict(stride=2, dilation=2), False, None),  # 1-D
        ((2, 8, 5, 9, 7), (16, 8, 1, 3, 3), dict(stride=2, dilation=2), False, None),  # 3-D
        # 1 << 22 patch elements: 4 x 32 x 32 rows of 1024 (64 channels x 16 taps); to 8
        # channels from 64 it narrows (`_dispatch._strided_dilated_narrowing`): XLA's
        # input gradient.
        ((4, 64, 68, 68), (8, 64, 4, 4), dict(stride=2, dilation=2, padding=1), True, "lax"),
        ((4, 64, 70, 68), (8, 64, 4, 4), dict(stride=2, dilation=2, padding=1), False, None),
    ],
)
def test_strided_dilated_derivatives_by_matmul(
    monkeypatch, x_shape, w_shape, kwargs, taken, input_gradient
):
    """Dense channels-last 2-D layers both strided and dilated take `matmul`'s
    derivatives (`_dispatch._strided_dilated_derivatives_by_matmul`) up to 4M patch
    elements, the value as before (the input gradient XLA's where they narrow);
    channels-first, on a CPU with AVX2 and no AVX-512, and where `_run` splits a layer
    (nested), not."""
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    cl = dataclasses.replace(spec, channels_last=True)
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    assert _dispatch._strided_dilated_derivatives_by_matmul(cl, x_shape, w_shape) == taken
    assert not _dispatch._strided_dilated_derivatives_by_matmul(spec, x_shape, w_shape)
    choose = functools.partial(_dispatch.choose, dtype=jnp.float32, backend="cpu")
    rules = choose(cl, x_shape, w_shape)
    if taken:
        assert rules[1:] == (input_gradient, "matmul")
        monkeypatch.setattr(_dispatch, "STRIDED_DILATED_MAX_PATCHES", 0)
        assert choose(cl, x_shape, w_shape)[0] == rules[0]  # the value as without it
        monkeypatch.setattr(_dispatch, "STRIDED_DILATED_MAX_PATCHES", 1 << 22)
        assert choose(cl, x_shape, w_shape, nested=True)[1:] != ("matmul", "matmul")
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: True)
    assert not _dispatch._strided_dilated_derivatives_by_matmul(cl, x_shape, w_shape)


@pytest.mark.parametrize(
    "c_in, c_out, narrowing",
    [
        (96, 8, True),  # found by a sweep
        (32, 8, True),
        (64, 16, True),
        (31, 4, False),  # from fewer than 32 channels
        (128, 17, False),  # to more than 16
        (63, 16, False),  # fewer than 4x as many
        (512, 48, False),
    ],
)
def test_strided_dilated_narrowing_keeps_xla_input_gradient(monkeypatch, c_in, c_out, narrowing):
    """Of the layers `_dispatch._strided_dilated_derivatives_by_matmul` takes, those to at
    most 16 channels from at least 32 and 4x as many keep XLA's input gradient
    (`_dispatch._strided_dilated_narrowing`), the weight gradient `matmul`'s; values and
    gradients as lax's."""
    assert _dispatch.STRIDED_DILATED_NARROWING_MAX_OUT_CHANNELS == 16
    assert _dispatch.STRIDED_DILATED_NARROWING_MIN_IN_CHANNELS == 32
    assert _dispatch.STRIDED_DILATED_NARROWING_MIN_RATIO == 4
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    x_shape, w_shape = (1, c_in, 20, 20), (c_out, c_in, 3, 3)
    kwargs = dict(stride=2, padding=3, dilation=3)
    assert _dispatch._strided_dilated_narrowing(w_shape) == narrowing
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    cl = dataclasses.replace(spec, channels_last=True)
    assert _dispatch._strided_dilated_derivatives_by_matmul(cl, x_shape, w_shape)
    rules = _dispatch.choose(cl, x_shape, w_shape, jnp.float32, "cpu")
    assert rules[1:] == ("lax" if narrowing else "matmul", "matmul")
    if not narrowing or c_in > 64:
        return
    x, w, conv = _layer("conv", x_shape, w_shape, kwargs, True, seed=4)
    input_grad, weight_grad = _derivative_programs(conv, x, w)
    assert "stablehlo.convolution" in input_grad
    assert "stablehlo.convolution" not in weight_grad
    _assert_trains_as_lax(conv, x, w, value=True)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, taken",
    [
        ((1, 256, 7, 7), (128, 256, 1, 1), {}, True),  # found by a sweep: 49 rows
        ((2, 128, 8, 8), (64, 128, 1, 1), {}, True),  # 128 rows, 128 -> 64 channels
        ((2, 128, 8, 8), (128, 128, 1, 1), {}, True),  # as many channels
        ((1, 128, 3, 43), (64, 128, 1, 1), {}, False),  # 129 rows
        ((1, 127, 7, 7), (64, 127, 1, 1), {}, False),  # from 127 channels
        ((1, 256, 7, 7), (63, 256, 1, 1), {}, False),  # to 63
        ((2, 256, 5, 5), (128, 256, 1, 1), dict(padding=1), True),  # 2 x 7 x 7 rows
        ((1, 256, 14, 14), (128, 256, 1, 1), dict(stride=2), False),  # strided
        ((1, 256, 64), (128, 256, 1), {}, False),  # 1-D
        ((1, 256, 4, 4, 4), (128, 256, 1, 1, 1), {}, False),  # 3-D
        ((1, 256, 7, 7), (128, 128, 1, 1), dict(groups=2), False),
        ((1, 256, 5, 5), (128, 256, 3, 3), {}, False),  # 3x3
    ],
)
def test_pointwise_few_rows(monkeypatch, x_shape, w_shape, kwargs, taken):
    """Channels-last 1x1 layers on at most 128 rows (batch x output positions), from 128
    or more channels to 64 or more, unstrided, in 2-D, take their weight gradient
    by `matmul.pointwise_weight_gradient` (`_dispatch._pointwise_few_rows`) with AVX-512;
    channels-first and with AVX2 alone, not."""
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    cl = dataclasses.replace(spec, channels_last=True)
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    assert _dispatch._pointwise_few_rows(cl, x_shape, w_shape) == taken
    assert not _dispatch._pointwise_few_rows(spec, x_shape, w_shape)
    # A strided transposed 1x1 layer (input-dilated) on as few rows: not.
    dilated = dataclasses.replace(cl, lhs_dilation=(2,) * spec.ndim)
    small = (1, x_shape[1], *(4,) * spec.ndim)  # 7 x 7 output positions in 2-D
    assert not _dispatch._pointwise_few_rows(dilated, small, w_shape)
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: True)
    assert not _dispatch._pointwise_few_rows(cl, x_shape, w_shape)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU rule")
@pytest.mark.parametrize(
    "op, x_shape, w_shape, kwargs",
    [
        ("conv", (2, 128, 5, 6), (64, 128, 1, 1), dict(padding=(1, 0))),
        ("conv", (4, 160, 4, 8), (96, 160, 1, 1), {}),
        ("conv_transpose", (1, 128, 7, 7), (128, 96, 1, 1), {}),  # a 1x1 convolution
    ],
)
def test_pointwise_few_rows_trains_as_lax(monkeypatch, op, x_shape, w_shape, kwargs):
    """Under auto those layers' weight gradient is the written-out product (its program
    differs from JAX's transpose of the value's); values and gradients as lax's."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    x, w, conv = _layer(op, x_shape, w_shape, kwargs, True, seed=3)
    weight_grad = _derivative_programs(conv, x, w)[1]
    monkeypatch.setattr(_dispatch, "POINTWISE_FEW_ROWS_MAX_ROWS", 0)
    jax.clear_caches()
    assert _derivative_programs(conv, x, w)[1] != weight_grad
    monkeypatch.setattr(_dispatch, "POINTWISE_FEW_ROWS_MAX_ROWS", 128)
    jax.clear_caches()
    assert _derivative_programs(conv, x, w)[1] == weight_grad
    _assert_trains_as_lax(conv, x, w, value=True)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        # (Stride and dilation coprime: sharing a factor, the layer is reduced by it,
        # `_dispatch._common_factor`.)
        ((2, 8, 13, 11), (12, 8, 3, 3), dict(stride=2, padding=3, dilation=3)),
        ((3, 6, 12, 14), (5, 6, 2, 3), dict(stride=(3, 1), padding=(1, 0), dilation=(2, 3))),
        # Kernels shorter than the stride (`_dispatch._kernel_within_stride`).
        ((2, 8, 13, 11), (12, 8, 2, 2), dict(stride=3, padding=1)),
        ((3, 6, 12, 14), (8, 6, 1, 3), dict(stride=(2, 4))),
    ],
)
def test_strided_dilated_layers_train_as_lax(monkeypatch, x_shape, w_shape, kwargs):
    """Under auto, the derivatives of those layers, and of layers whose kernel is shorter
    than the stride, are products of patches, with no convolution in either; values and
    gradients as lax's."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    x, w, conv = _layer("conv", x_shape, w_shape, kwargs, True, seed=7)
    for text in _derivative_programs(conv, x, w):
        assert "stablehlo.convolution" not in text
    _assert_trains_as_lax(conv, x, w, value=True)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the dense-groups rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "op, x_shape, w_shape, kwargs",
    [
        ("conv", (2, 64, 9, 8), (64, 16, 3, 3), dict(groups=4, padding=1)),
        ("conv", (2, 48, 12), (24, 16, 5), dict(groups=3, stride=2)),
        ("conv", (2, 16, 5, 6, 7), (32, 8, 3, 2, 2), dict(groups=2, dilation=(1, 2, 1))),
        ("conv_transpose", (2, 32, 6, 5), (32, 12, 3, 3), dict(groups=2, stride=2, padding=1)),
    ],
)
def test_dense_groups_match_lax_with_no_grouped_convolution(
    op, x_shape, w_shape, kwargs, channels_last
):
    """Grouped layers of many channels run one dense convolution per group: values and
    gradients as lax's, and no grouped XLA convolution anywhere in the program but the
    value in 1-D channels-last."""
    x, w, conv = _layer(op, x_shape, w_shape, kwargs, channels_last, seed=5)
    text = jax.jit(_relu_grad(conv, "auto")).lower(x, w).as_text()
    assert "feature_group_count = 1 " in text
    grouped = sum(text.count(f"feature_group_count = {g} ") for g in (2, 3, 4))
    # In 1-D channels-last the value is XLA's grouped convolution, the derivatives not.
    assert grouped == (1 if channels_last and len(x_shape) == 3 else 0)
    _assert_trains_as_lax(conv, x, w)


@pytest.mark.parametrize(
    "x_shape, w_shape, spec",
    [
        (
            (2, 40, 9, 8),
            (60, 2, 3, 3),
            _spec.ConvSpec((1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 20),
        ),
        (
            (3, 18, 11, 7),
            (36, 1, 2, 3),
            _spec.ConvSpec((2, 1), ((0, 2), (-1, 1)), (1, 1), (2, 1), 18),
        ),
        ((2, 34, 13), (17, 2, 4), _spec.ConvSpec((3,), ((2, 0),), (1,), (2,), 17)),
        (
            (1, 40, 2, 5, 4),
            (40, 2, 3, 2, 2),
            _spec.ConvSpec((1, 1, 1), ((1, 1), (0, 1), (1, 0)), (1, 1, 1), (1, 2, 1), 20),
        ),
        # Input dilation with a stride and a length-1 dim, float64: the zeros written in
        # (XLA's CPU compiler aborts on some of these; see `lax.explicit_lhs_dilation`).
        (
            (1, 36, 3, 1, 4),
            (36, 2, 2, 2, 3),
            _spec.ConvSpec((2, 3, 2), ((1, 1), (1, 1), (2, 2)), (2, 1, 2), (1, 2, 2), 18),
        ),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_groups_loop_is_xla_grouped_convolution(x_shape, w_shape, spec, dtype):
    """`groups.loop` (the groups' dense convolutions in a loop) computes XLA's grouped
    convolution for any spec (padding that crops, strides, both dilations, 1-D to 3-D),
    and `groups.loop_weight_gradient` its weight gradient."""
    import numpy as np

    from jaxconv._impls import groups
    from jaxconv._impls import lax as lax_impl

    rng = np.random.default_rng(7)
    with jax.enable_x64(dtype == "float64"):
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        y_shape = jax.eval_shape(lambda a, b: lax_impl.forward(a, b, spec), x, w).shape
        ct = rng.standard_normal(y_shape).astype(dtype)
        term = jax.jit(groups.weight_term, static_argnums=2)

        def weight_gradient(f, a, b, c):
            return jax.vjp(lambda w_: f(a, w_, spec), b)[1](c)[0]

        def compared(a, b, c):  # everything compared, in one compiled program
            return (
                jax.jit(groups.loop, static_argnums=2)(a, b, spec),
                lax_impl.forward(a, b, spec),
                weight_gradient(term, a, b, c),
                weight_gradient(lax_impl.forward, a, b, c),
                term(a, b, spec),
            )

        got, want, got_dw, want_dw, term_value = jax.jit(compared)(x, w, ct)
        assert got.dtype == want.dtype == dtype and got.shape == want.shape
        tol = 1e-12 if dtype == "float64" else 1e-5
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        text = jax.jit(groups.loop, static_argnums=2).lower(x, w, spec).as_text()
        assert "while" in text and f"feature_group_count = {spec.groups} " not in text
        # Its weight gradient (and `weight_term`, whose transpose it is) is XLA's.
        np.testing.assert_allclose(got_dw, want_dw, rtol=tol, atol=tol * 10)
        np.testing.assert_allclose(term_value, want, rtol=tol, atol=tol)
        # (The weight gradient alone: the value, unused, is not lowered.)
        text = jax.jit(lambda b, c: weight_gradient(term, x, b, c)).lower(w, ct).as_text()
        assert "while" in text and f"feature_group_count = {spec.groups} " not in text


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the groups-loop rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "op, x_shape, w_shape, kwargs",
    [
        ("conv", (1, 160, 28, 28), (320, 8, 3, 3), dict(groups=20, padding=1)),
        ("conv", (4, 136, 33, 30), (272, 8, 3, 3), dict(groups=17, stride=2, dilation=(2, 1))),
        ("conv_transpose", (4, 272, 14, 14), (272, 16, 4, 4), dict(groups=34, stride=2, padding=1)),
    ],
)
def test_many_groups_value_by_the_groups_loop(op, x_shape, w_shape, kwargs, channels_last):
    """Grouped layers of more than 16 groups of many channels: the groups' dense
    convolutions in a loop, no grouped XLA convolution in inference or training; values
    and gradients as lax's."""
    import numpy as np

    x, w, conv = _layer(op, x_shape, w_shape, kwargs, channels_last, seed=3)

    text = jax.jit(conv("auto")).lower(x, w).as_text()
    assert "while" in text
    assert not any(f"feature_group_count = {g} " in text for g in (17, 20, 34))

    def loss(impl):
        return lambda a, b: jnp.sum(jnp.sin(conv(impl)(a, b)))

    text = jax.jit(jax.grad(loss("auto"), (0, 1))).lower(x, w).as_text()
    assert not any(f"feature_group_count = {g} " in text for g in (17, 20, 34))
    # Loops for the derivatives too (the matmul derivatives have none).
    assert text.count("stablehlo.while") >= 3
    # auto's and lax's values (outside differentiation) and gradients, in one program
    (y, got), (y_lax, want) = _values_and_grads(conv, loss, x, w)
    np.testing.assert_allclose(y, y_lax, rtol=1e-4, atol=1e-4)
    for a, b in zip(got, want, strict=True):
        _assert_float32_close(a, b)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the groups-loop rule is the CPU's")
def test_groups_loop_under_vmap_jvp_and_second_order():
    """The loop's custom transposes compose: vmap of grad, forward mode, grad of grad."""
    import numpy as np

    import jaxconv

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 68, 28, 28)).astype(np.float32)
    w = rng.standard_normal((2, 17 * 17, 4, 3, 3)).astype(np.float32)

    def loss(impl):
        conv = lambda a, b: jaxconv.conv2d(a, b, padding=1, groups=17, impl=impl)  # noqa: E731
        return lambda a, b: jnp.sum(jnp.sin(conv(a, b)))

    def vmapped(impl):
        return jax.vmap(jax.grad(loss(impl), (0, 1)))

    assert "while" in jax.jit(vmapped("auto")).lower(x, w).as_text()

    def jvp(impl, x, w):
        return jax.jvp(lambda b: loss(impl)(x[0], b), (w[0],), (w[1],))[1]

    def second(impl, x, w):
        return jax.grad(lambda a: jnp.sum(jax.grad(loss(impl), 1)(a, w[0]) ** 2))(x[0])

    # All three under auto and under lax, in one compiled program.
    got, want = jax.jit(
        lambda a, b: [(vmapped(i)(a, b), jvp(i, a, b), second(i, a, b)) for i in ("auto", "lax")]
    )(x, w)
    for a, b in zip(got[0], want[0], strict=True):
        _assert_float32_close(a, b)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4)
    np.testing.assert_allclose(got[2], want[2], rtol=2e-4, atol=2e-2)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the groups-loop rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, channels_last",
    [((2, 64, 28, 28), (64, 8, 3, 3), True), ((2, 32, 28, 28), (128, 4, 3, 3), False)],
    ids=["8x8", "4->16"],
)
def test_shift_groups_value_by_shift_derivatives_by_the_groups_loop(
    x_shape, w_shape, channels_last
):
    """Channels-last groups of 8x8 channels, and groups of 16 output channels: shift's
    value (no loop for inference), the groups loop for the derivatives; gradients as
    lax's."""
    import numpy as np

    kwargs = dict(groups=8, padding=1)
    x, w, conv = _layer("conv", x_shape, w_shape, kwargs, channels_last, 1)
    assert "while" not in jax.jit(conv("auto")).lower(x, w).as_text()

    def grad(impl):
        return jax.grad(lambda a, b: jnp.sum(jax.nn.relu(conv(impl)(a, b)) ** 2), (0, 1))

    assert "while" in jax.jit(grad("auto")).lower(x, w).as_text()
    # auto's and lax's values (outside differentiation) and gradients, in one program
    (y, got), (y_lax, want) = jax.jit(
        lambda a, b: [(conv(i)(a, b), grad(i)(a, b)) for i in ("auto", "lax")]
    )(x, w)
    np.testing.assert_allclose(y, y_lax, rtol=1e-4, atol=1e-4)
    for a, b in zip(got, want, strict=True):
        _assert_float32_close(a, b)


def test_cpu_vendor_reads_the_host():
    """`cpu_vendor` is the host's vendor id where Linux tells it, else "", and
    `_common.cpuinfo` reads any key of it (the flags too)."""
    import pathlib

    from jaxconv._impls import _common

    cpuinfo = pathlib.Path("/proc/cpuinfo")
    text = cpuinfo.read_text(errors="replace") if cpuinfo.exists() else ""
    vendor = _dispatch.cpu_vendor()
    assert isinstance(vendor, str)
    assert (f": {vendor}\n" in text) if "vendor_id" in text else vendor == ""
    flags = _common.cpuinfo("flags")
    assert (f": {flags}\n" in text) if "\nflags" in text else flags == ""


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU rule")
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,direct",
    [
        ((2, 24, 9, 9), (8, 24, 1, 1), {}, True),  # 81 positions >= 24 channels
        ((2, 8, 9, 9), (24, 8, 1, 1), {}, True),
        ((3, 8, 30), (24, 8, 1), {}, True),  # 1-D
        ((2, 96, 9, 9), (8, 96, 1, 1), {}, False),  # fewer positions than channels
        ((2, 24, 9, 9), (8, 24, 1, 1), dict(stride=2), False),
        ((2, 24, 9, 9), (8, 24, 1, 1), dict(padding=1), False),
        ((2, 24, 9, 9), (8, 24, 1, 1), dict(channels_last=True), False),
    ],
)
def test_per_image_pointwise_gradients_are_products_per_image(x_shape, w_shape, kwargs, direct):
    """Channels-first, unstrided, unpadded 1x1 convolutions that `matmul` runs as one
    product per image take their input gradient as the same product of the cotangent
    and their weight gradient as one product per image, summed (no layout transpose of
    the input, the cotangent or the input gradient), with the values and derivatives
    (first and second order) of XLA's convolution."""
    import numpy as np

    import jaxconv

    if kwargs.get("channels_last"):
        x_shape = (x_shape[0], *x_shape[2:], x_shape[1])
        w_shape = (*w_shape[2:], w_shape[1], w_shape[0])
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    conv = lambda impl: lambda a, b: jaxconv.conv(a, b, **kwargs, impl=impl)  # noqa: E731
    y = jax.eval_shape(conv("lax"), x, w)
    ct = rng.standard_normal(y.shape)
    hvp = lambda impl, a: jax.grad(  # noqa: E731
        lambda b: jnp.sum(jax.grad(lambda a_: jnp.sum(conv(impl)(a_, b) ** 2))(a) ** 2)
    )

    def compared(a, b, c):  # everything compared, in one compiled program
        plain = [conv(impl)(a, b) for impl in ("auto", "lax")]  # outside differentiation
        got, vjp = jax.vjp(conv("auto"), a, b)
        want, vjp_lax = jax.vjp(conv("lax"), a, b)
        # Forward mode, and the second derivative through the input gradient.
        t = jax.jvp(conv("auto"), (a, b), (a, b))[1]
        return plain, got, want, vjp(c), vjp_lax(c), t, hvp("auto", a)(b), hvp("lax", a)(b)

    plain, got, want, grads, grads_lax, t, hvp_auto, hvp_lax = jax.jit(compared)(x, w, ct)
    for value in plain:
        assert value.shape == y.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    for g, r in zip(grads, grads_lax, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(t, 2 * want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(hvp_auto, hvp_lax, rtol=1e-9, atol=1e-9)

    def input_grad(a, b, c):
        return jax.vjp(lambda a_: conv("auto")(a_, b), a)[1](c)[0]

    def weight_grad(a, b, c):
        return jax.vjp(lambda b_: conv("auto")(a, b_), b)[1](c)[0]

    for grad in (input_grad, weight_grad) if direct else ():  # (others: values only)
        hlo = compile_as_shipped(grad, x, w, ct).as_text()
        big = [
            line
            for line in hlo.splitlines()
            if " transpose(" in line
            and math.prod(int(d) for d in re.search(r"\[([\d,]*)\]", line).group(1).split(",") if d)
            > math.prod(w_shape)
        ]
        assert not big, (grad.__name__, big)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "op,x_shape,w_shape,kwargs",
    [
        ("conv_transpose", (3, 10, 1, 1), (10, 16, 4, 4), {}),  # DCGAN's first layer
        ("conv_transpose", (3, 10, 1, 1), (10, 16, 4, 4), dict(stride=2, padding=1)),
        ("conv", (2, 6, 1, 1), (8, 6, 3, 3), dict(padding=2, dilation=(1, 2))),
        ("conv_transpose", (2, 6, 1), (6, 4, 5), dict(dilation=2, output_padding=1, stride=2)),
        ("conv", (2, 6, 1, 1, 1), (8, 6, 2, 3, 3), dict(padding=1)),
    ],
)
def test_single_pixel_taps_by_static_slices(op, x_shape, w_shape, kwargs, channels_last):
    """`matmul` from a one-pixel input selects the kernel's taps by static slices: no
    gather in its value and no scatter in its weight gradient (a scatter-add, slow on
    the CPU); values and gradients, with a fixed output gradient and of a sum, as
    XLA's."""
    x, w, conv = _layer(op, x_shape, w_shape, kwargs, channels_last, seed=7)
    ct = jax.eval_shape(conv("lax"), x, w)
    ct = jnp.asarray(np.random.default_rng(8).standard_normal(ct.shape), ct.dtype)
    weight_grad = lambda b, c: jax.vjp(lambda v: conv("matmul")(x, v), b)[1](c)  # noqa: E731
    text = jax.jit(weight_grad).lower(w, ct).as_text()
    assert "scatter" not in text and "gather" not in jax.jit(conv("matmul")).lower(x, w).as_text()
    for impl in ("matmul", "auto"):
        got = values_and_vjps([conv(impl), conv("lax")], (x, w), ct)
        for a, b in zip(*got, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        sums = [
            jax.grad(lambda a, b, i=i: conv(i)(a, b).sum(), (0, 1))(x, w) for i in (impl, "lax")
        ]
        for a, b in zip(*sums, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU rule")
@pytest.mark.parametrize(
    "op,x_shape,w_shape,kwargs",
    [
        ("conv", (2, 16, 16, 64), (3, 3, 1, 64), dict(stride=2, padding=1, groups=64)),
        ("conv_transpose", (2, 8, 8, 32), (2, 2, 16, 32), dict(stride=2)),  # U-Net's
        ("conv_transpose", (2, 8, 8, 32), (4, 4, 16, 32), dict(stride=2, padding=1)),
        ("conv_transpose", (2, 8, 8, 32), (3, 3, 16, 32), dict(stride=2, output_padding=1)),
    ],
)
def test_channels_last_phases_interleaved_channels_last(op, x_shape, w_shape, kwargs):
    """Channels-last convolutions whose value or input gradient `auto` assembles from
    phases (`subpixel.decompose`) interleave them channels-last: no array of the input's
    or the output's shape in the compiled value or training step is laid out otherwise
    (interleaved channels-first, XLA wrote the result transposed and copied it back)."""
    conv = getattr(jaxconv, op)
    x = jnp.ones(x_shape, jnp.float32)
    w = jnp.ones(w_shape, jnp.float32)
    f = lambda a, b: conv(a, b, channels_last=True, **kwargs)  # noqa: E731
    y = jax.eval_shape(f, x, w)
    ct = jnp.ones(y.shape, jnp.float32)

    def train(a, b, c):
        out, vjp = jax.vjp(f, a, b)
        return out, *vjp(c)

    for g in (lambda a, b, c: f(a, b), train):
        hlo = compile_as_shipped(g, x, w, ct).as_text()
        for shape in (x_shape, y.shape):
            dims = ",".join(map(str, shape))
            default = ",".join(str(i) for i in reversed(range(len(shape))))
            found = re.findall(rf"\[{dims}\]\{{([\d,]+)\}}", hlo)
            assert all(layout == default for layout in found), (shape, found)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU rule")
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,expands,checked",
    [
        ((2, 9, 9, 16), (1, 1, 16, 96), {}, True, True),  # rows flattened
        ((2, 9, 9, 64), (1, 1, 64, 128), {}, True, True),  # the input as left operand
        ((2, 9, 9, 64), (1, 1, 64, 128), dict(stride=2, padding=1), True, True),
        ((2, 9, 9, 96), (1, 1, 96, 128), dict(stride=(2, 1), padding=(0, 2)), True, True),
        ((3, 30, 8), (1, 8, 24), dict(padding=2), True, False),  # 1-D
        ((2, 9, 9, 96), (1, 1, 96, 16), {}, False, False),  # to fewer channels
        ((2, 9, 9, 16), (1, 1, 4, 96), dict(groups=4), False, False),
        ((2, 9, 9, 16), (3, 3, 16, 96), dict(padding=1), False, False),
    ],
)
def test_channels_last_pointwise_expansion_weight_gradient(
    x_shape, w_shape, kwargs, expands, checked
):
    """A channels-last 1x1 convolution to more channels takes its weight gradient by
    `matmul.pointwise_weight_gradient` (`matmul.pointwise_expands`): through a ReLU
    there is no transposed copy of the output gradient, ``(C_out, rows)``, which JAX's
    transpose of the value's product made XLA lay out (with the mask fused into it, a
    slow loop); values and derivatives, first and second order, as XLA's convolution."""
    conv = lambda impl: lambda a, b: jaxconv.conv(a, b, channels_last=True, **kwargs, impl=impl)  # noqa: E731
    plan = _spec.conv_plan("conv", x_shape, w_shape, channels_last=True, **kwargs)
    canonical_w = (w_shape[-1], w_shape[-2], *w_shape[:-2])
    assert matmul_impl.pointwise_expands(canonical_w, plan.spec) == expands
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    y = jax.eval_shape(conv("lax"), x, w)
    ct = rng.standard_normal(y.shape)
    hvp = lambda impl, a: jax.grad(  # noqa: E731
        lambda b: jnp.sum(jax.grad(lambda a_: jnp.sum(conv(impl)(a_, b) ** 2))(a) ** 2)
    )

    def compared(a, b, c):
        got, vjp = jax.vjp(conv("auto"), a, b)
        want, vjp_lax = jax.vjp(conv("lax"), a, b)
        t = jax.jvp(conv("auto"), (a, b), (a, b))[1]
        return got, want, vjp(c), vjp_lax(c), t, hvp("auto", a)(b), hvp("lax", a)(b)

    got, want, grads, grads_lax, t, hvp_auto, hvp_lax = jax.jit(compared)(x, w, ct)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    for g, r in zip(grads, grads_lax, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(t, 2 * want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(hvp_auto, hvp_lax, rtol=1e-9, atol=1e-9)
    if not checked:
        return
    c_out, rows = w_shape[-1], math.prod(y.shape[:-1])
    transposed = {(c_out, rows), (c_out, *y.shape[:-1])}
    for dtype in (jnp.float32, jnp.float64):
        a, b, c = (jnp.asarray(v, dtype) for v in (x, w, ct))
        grad = jax.grad(lambda b_, a_, c_: jnp.sum(jax.nn.relu(conv("auto")(a_, b_)) * c_))
        hlo = compile_as_shipped(grad, b, a, c).as_text()
        shapes = [
            tuple(int(d) for d in m.group(1).split(",") if d)
            for m in re.finditer(r" = [a-z]\d+\[([\d,]*)\]", hlo)
        ]
        assert not transposed & set(shapes), (dtype, transposed & set(shapes))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 5, 4, 3), (5, 3, 2, 2), dict(stride=2)),  # U-Net's up-convolution
        ((2, 5, 4, 3), (5, 3, 2, 2), dict(stride=2, output_padding=1)),
        ((1, 4, 3, 2, 3), (4, 2, 2, 2, 2), dict(stride=2)),  # 3-D
        ((3, 4, 7), (4, 6, 4), dict(stride=4, output_padding=3)),  # 1-D
        ((2, 3, 3, 4), (3, 2, 3, 2), dict(stride=(3, 2))),  # a kernel per dim
    ],
)
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.bfloat16])
def test_non_overlapping_transposed_weight_gradient(x_shape, w_shape, kwargs, channels_last, dtype):
    """A transposed convolution whose kernel is its stride: its weight gradient as one
    product (`subpixel.unpatched_weight_gradient`) is XLA's, in either layout and with
    output padding, whatever the rule says of its size."""
    import numpy as np

    from jaxconv._impls import subpixel

    x, w, conv = _layer("conv_transpose", x_shape, w_shape, kwargs, channels_last, 0)
    spec = _spec.transpose_plan("conv_transpose", x_shape, w_shape, **kwargs).spec
    canonical_w = (w_shape[1], w_shape[0], *w_shape[2:])
    assert subpixel.non_overlapping(spec, canonical_w)
    y = jax.eval_shape(conv("lax"), x, w)
    ct = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    spec_l = dataclasses.replace(spec, channels_last=channels_last)

    def compared(x, w, ct):  # lax's, the phases' and the one product's, in one program
        want = jax.vjp(lambda b: conv("lax")(x, b), w)[1](ct)[0]
        a, b, c = (v.astype(dtype) for v in (x, w, ct))
        got = jax.vjp(lambda b_: conv("subpixel")(a, b_), b)[1](c)[0]  # the phases
        cx = jnp.moveaxis(a, -1, 1) if channels_last else a
        cc = jnp.moveaxis(c, -1, 1) if channels_last else c
        return want, got, subpixel.unpatched_weight_gradient(cx, cc, spec_l, canonical_w)

    with jax.enable_x64(dtype == jnp.float64):
        want, got, direct = jax.jit(compared)(x, w, ct)
    assert direct.dtype == dtype
    # the canonical weight gradient in the caller's weight layout
    direct = np.asarray(direct)
    flip = (slice(None), slice(None), *(slice(None, None, -1),) * (len(x_shape) - 2))
    direct = np.swapaxes(direct[flip], 0, 1)
    if channels_last:
        direct = np.transpose(direct, (*range(2, direct.ndim), 1, 0))
    tol = {jnp.float64: 1e-5, jnp.float32: 1e-5, jnp.bfloat16: 3e-2}[dtype]
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(np.asarray(direct, np.float64), want, atol=tol * scale)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=tol * scale)


@pytest.mark.parametrize(
    "w_shape, kwargs",
    [
        ((4, 3, 2, 2), dict(stride=2, padding=1)),  # crops
        ((4, 3, 2, 2), dict(stride=2, dilation=2, padding=1)),  # padding k - 1, dilated
        ((4, 3, 2, 2), dict(stride=2, groups=2)),
        ((4, 3, 3, 3), dict(stride=2)),  # kernel past the stride
        ((4, 3, 2, 2), dict(stride=(2, 1))),
        ((4, 3, 1, 2), dict(stride=(1, 2))),  # a dim of kernel 1
    ],
)
def test_non_overlapping_declines(w_shape, kwargs):
    spec = _spec.transpose_plan("conv_transpose", (2, 4, 5, 6), w_shape, **kwargs).spec
    groups = kwargs.get("groups", 1)
    canonical_w = (w_shape[1] * groups, w_shape[0] // groups, *w_shape[2:])
    from jaxconv._impls import subpixel

    assert not subpixel.non_overlapping(spec, canonical_w)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 0, 4, 3), (0, 5, 4, 3)])
def test_non_overlapping_weight_gradient_of_empty_operands(
    shape, channels_last, monkeypatch, retrace
):
    """No input channels or no images: the one product gives zeros of the weight's shape."""
    import numpy as np

    monkeypatch.setattr(_dispatch, "NON_OVERLAPPING_MIN_POSITIONS", 0)
    w_shape = (shape[1], 3, 2, 2)
    x, w, conv = _layer("conv_transpose", shape, w_shape, {"stride": 2}, channels_last, 0)
    got = jax.jit(jax.grad(lambda b: conv("auto")(x, b).sum()))(w)
    np.testing.assert_array_equal(got, np.zeros(w.shape, np.float32))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU rule")
@pytest.mark.parametrize("channels_last", [False, True])
def test_auto_non_overlapping_transposed_weight_gradient(channels_last, monkeypatch, retrace):
    """`auto` takes the one product for channels-last layers of enough positions only,
    and trains as `lax` does (values and both gradients, through a ReLU)."""
    from jaxconv._impls import subpixel

    calls = []
    product = subpixel.unpatched_weight_gradient
    monkeypatch.setattr(
        subpixel, "unpatched_weight_gradient", lambda *a: calls.append(a) or product(*a)
    )
    shapes = ((2, 6, 5, 4), (6, 3, 2, 2))
    x, w, conv = _layer("conv_transpose", *shapes, {"stride": 2}, channels_last, 0)
    _assert_trains_as_lax(conv, x, w)
    assert not calls  # 40 positions
    monkeypatch.setattr(_dispatch, "NON_OVERLAPPING_MIN_POSITIONS", 40)
    jax.clear_caches()  # the traces made under the default, above
    _assert_trains_as_lax(conv, x, w)
    assert bool(calls) == channels_last


_3D_CRASH_CHILD = """
import jax, jax.numpy as jnp, numpy as np, jaxconv
rng = np.random.default_rng(0)
c3, t3 = jaxconv.conv3d, jaxconv.conv_transpose3d
cases = [  # 2 or 3 input channels per group, 9 taps, by auto; a dense transposed layer
    (c3, (2, 64, 8, 8, 8), (128, 2, 3, 1, 3), dict(groups=32, padding="same"), "auto"),
    (c3, (2, 64, 8, 8, 8), (256, 2, 1, 3, 3), dict(groups=32, padding="same"), "auto"),
    (c3, (2, 24, 8, 8, 8), (32, 3, 3, 3, 1), dict(groups=8, padding="same"), "auto"),
    (c3, (2, 96, 8, 8, 8), (256, 3, 3, 3, 1), dict(groups=32, padding="same"), "auto"),
    (
        t3,
        (2, 16, 8, 8, 8),
        (16, 16, 2, 7, 4),
        dict(stride=(2, 1, 2), padding=(0, 3, 1), output_padding=(1, 0, 1)),
        "shift",
    ),
]
for fn, xs, ws, kw, impl in cases:
    x = rng.standard_normal(xs).astype("float32")
    w = rng.standard_normal(ws).astype("float32")
    def run(impl):
        f = lambda a, b: fn(a, b, impl=impl, **kw)
        def value_and_grads(a, b, c):
            y, vjp = jax.vjp(f, a, b)
            return (y, *vjp(c))
        return value_and_grads
    out = jax.eval_shape(lambda a, b: fn(a, b, **kw), x, w)
    ct = rng.standard_normal(out.shape).astype("float32")
    got = jax.jit(run(impl))(x, w, ct)
    want = jax.jit(run("lax"))(x, w, ct)
    for a, b in zip(got, want):
        scale = float(np.abs(np.asarray(b)).max())
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale)
print("ok")
"""


def test_no_xla_crash_on_3d_products():
    """The value and both gradients of 3-D layers on which XLA's CPU runtime crashed
    the process summing shift's rank-7 products (`jaxconv._impls.shift._flat`), against
    lax's; in a child process compiling as users do, so that a crash fails this test
    instead of ending the run."""
    from jitted import run_shipped_child

    run_shipped_child(_3D_CRASH_CHILD)


@pytest.mark.parametrize("avx2", [False, True])
@pytest.mark.parametrize(
    "c_in,c_out,dtype,pads,pads_avx2",
    [
        (3, 24, jnp.float32, True, False),  # AVX2: from 3 channels to at most 20
        (3, 20, jnp.float32, True, True),
        (3, 21, jnp.float32, True, False),
        (31, 17, jnp.float32, True, True),
        (5, 32, jnp.float32, True, False),  # AVX2: from 5-9 to at most 25
        (5, 25, jnp.float32, True, True),
        (9, 25, jnp.float32, True, True),
        (9, 26, jnp.float32, True, False),
        (11, 26, jnp.float32, True, True),  # AVX2: from 11 on, as elsewhere
        (31, 32, jnp.float32, True, True),
        (3, 33, jnp.float32, False, False),  # more output channels
        (3, 16, jnp.float32, False, False),  # XLA's Eigen path
        (4, 24, jnp.float32, False, False),  # even
        (33, 24, jnp.float32, False, False),  # more input channels
        (1, 24, jnp.float32, False, False),
        (3, 24, jnp.float64, False, False),  # not measured
        # 2-D from 7-31 to 72-96 or 144-160 (not 1-D):
        (7, 80, jnp.float32, True, True),
        (31, 72, jnp.float32, True, True),
        (9, 96, jnp.float32, True, True),
        (11, 144, jnp.float32, True, True),
        (31, 160, jnp.float32, True, True),
        (5, 80, jnp.float32, False, False),  # from 5
        (7, 71, jnp.float32, False, False),
        (7, 97, jnp.float32, False, False),
        (7, 128, jnp.float32, False, False),
        (7, 161, jnp.float32, False, False),
        (33, 80, jnp.float32, False, False),
        (8, 80, jnp.float32, False, False),  # even
    ],
)
def test_odd_input_channels_rule(c_in, c_out, dtype, pads, pads_avx2, avx2, monkeypatch):
    """`_odd_input_channels` takes dense 1-D and 2-D values from 3-31 (odd) input
    channels to 17-32 output channels, and 2-D ones from 7-31 to 72-96 or 144-160,
    float32 only, not grouped, not 3-D; on AVX2 without AVX-512, 2-D ones from 3
    channels to at most 20 and from 5-9 to at most 25 (`ODD_AVX2_OUT_CHANNELS`)."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: avx2)
    w_shape = (c_out, c_in, 3, 3)
    spec = _spec.conv_plan("conv", (2, c_in, 9, 9), w_shape, padding=1).spec
    for channels_last in (False, True):  # either layout
        spec_l = dataclasses.replace(spec, channels_last=channels_last)
        assert _dispatch._odd_input_channels(spec_l, w_shape, dtype) == (
            pads_avx2 if avx2 else pads
        )
    spec1 = _spec.conv_plan("conv", (2, c_in, 9), w_shape[:3], padding=1).spec
    one_d = _dispatch._odd_input_channels(spec1, w_shape[:3], dtype)
    assert one_d == (pads and c_out <= 32)  # 1-D: the same on every CPU
    grouped = dataclasses.replace(spec, groups=c_in)
    assert not _dispatch._odd_input_channels(grouped, (c_out, 1, 3, 3), dtype)
    spec3 = _spec.conv_plan("conv", (2, c_in, 5, 9, 9), (*w_shape, 3), padding=1).spec
    assert not _dispatch._odd_input_channels(spec3, (*w_shape, 3), dtype)  # 3-D


def _odd_layer(x_shape, w_shape, kwargs, channels_last, seed):
    """``(conv, x, w, check)`` for the odd-channels tests: ``conv(x, w)`` is auto's
    float32 layer in the given layout, ``check()`` compares its value and both
    gradients (one program) with lax's in float64."""
    from tolerance import assert_close

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    fn = {3: jaxconv.conv1d, 4: jaxconv.conv2d, 5: jaxconv.conv3d}[len(x_shape)]

    def to_layout(a, weight=False):
        if not channels_last:
            return a
        return np.moveaxis(a, (0, 1), (-1, -2)) if weight else np.moveaxis(a, 1, -1)

    def conv(a, b):
        return fn(a, b, **kwargs, channels_last=channels_last)

    def check():
        x64, w64 = jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64)
        y64, vjp64 = jax.vjp(lambda a, b: jaxconv.conv(a, b, **kwargs, impl="lax"), x64, w64)
        ct = rng.standard_normal(y64.shape).astype(np.float32)
        dx64, dw64 = vjp64(jnp.asarray(ct, jnp.float64))
        ((y, dx, dw),) = values_and_vjps([conv], (to_layout(x), to_layout(w, True)), to_layout(ct))
        taps = math.prod(w_shape[2:])
        assert_close(y, to_layout(np.asarray(y64)), np.float32, w_shape[1] * taps)
        assert_close(dx, to_layout(np.asarray(dx64)), np.float32, w_shape[0] * taps)
        reduction = math.prod(y64.shape) // w_shape[0]
        assert_close(dw, to_layout(np.asarray(dw64), weight=True), np.float32, reduction)

    return conv, to_layout(x), to_layout(w, weight=True), check


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the odd-channels rule is the CPU's")
@pytest.mark.parametrize("avx2", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,pads,pads_avx2",
    [
        ((2, 5, 10, 9), (24, 5, 3, 3), dict(padding=1), True, True),
        ((2, 5, 10, 9), (26, 5, 3, 3), dict(padding=1), True, False),  # AVX2: to <= 25
        ((2, 3, 10, 9), (21, 3, 5, 5), dict(stride=2, padding=2), True, False),  # <= 20
        ((2, 3, 10, 9), (20, 3, 5, 5), dict(stride=2, padding=2), True, True),
        (
            (3, 7, 11, 12),
            (17, 7, 5, 3),
            dict(stride=2, padding=(2, 0), dilation=(1, 2)),
            True,
            True,
        ),
        ((2, 3, 13), (32, 3, 5), dict(padding="same"), True, True),  # 1-D: on every CPU
        ((2, 5, 4, 5, 6), (24, 5, 3, 3, 3), dict(padding=1), False, False),  # 3-D
        ((2, 7, 10, 9), (80, 7, 3, 3), dict(padding=1), True, True),
        ((1, 15, 9, 8), (144, 15, 3, 3), dict(stride=2, padding="valid"), True, True),
    ],
)
def test_auto_pads_odd_input_channels_of_the_value(
    x_shape, w_shape, kwargs, pads, pads_avx2, channels_last, avx2, monkeypatch, retrace
):
    """auto's float32 value from an odd number of input channels (3-31, to 17-32
    outputs; 2-D from 7-31 to 72-96 or 144-160; on AVX2 without AVX-512, 2-D from 3 to
    at most 20 and from 5-9 to at most 25) convolves input channels of zeros added up
    to a multiple of 4 in 1-D and 2-D (`_dispatch._odd_input_channels`); value and both
    gradients equal the float64 reference's either way."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: avx2)
    conv, x, w, check = _odd_layer(x_shape, w_shape, kwargs, channels_last, seed=5)
    # The canonical (channels-first) input with its channels padded, in StableHLO (in
    # 3-D, by 2-D planes, the planes' inputs fold the depth into the batch: any batch).
    padded = x_shape[1] + -x_shape[1] % 4
    text = jax.jit(conv).lower(x, w).as_text()
    found = re.search(rf"-> tensor<\d+x{padded}x", text) is not None
    assert found == (pads_avx2 if avx2 else pads), text
    check()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the odd-channels rule is the CPU's")
@pytest.mark.parametrize("avx2", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,pads,pads_avx2",
    [
        ((2, 24, 9, 10), (3, 24, 3, 3), dict(padding=1), True, False),  # AVX2: 3 to <= 20
        ((2, 20, 9, 10), (3, 20, 3, 3), dict(padding=1), True, True),
        ((2, 17, 8, 9), (7, 17, 3, 5), dict(padding=(2, 1), dilation=(2, 1)), True, True),
        ((2, 26, 8, 9), (7, 26, 3, 3), dict(padding=1), True, False),  # AVX2: 7 to <= 25
        ((2, 24, 9, 10), (3, 24, 3, 3), dict(stride=2), False, False),  # strided
        ((2, 24, 13), (3, 24, 3), dict(padding=1), False, False),  # 1-D
        ((2, 40, 9, 10), (3, 40, 3, 3), dict(padding=1), False, False),  # to 40 channels
        ((2, 24, 4, 5, 6), (3, 24, 3, 3, 3), dict(padding=1), False, False),  # 3-D
    ],
)
def test_auto_pads_odd_output_channels_of_the_input_gradient(
    x_shape, w_shape, kwargs, pads, pads_avx2, channels_last, avx2, monkeypatch, retrace
):
    """auto's float32 input gradient of a stride-1 2-D convolution to an odd number of
    output channels (3-31, from 17-32; on AVX2 without AVX-512 the bounds of
    `_dispatch._odd_input_channels` there) convolves the cotangent with zero filters
    added to the weight up to a multiple of 4 (`_dispatch._odd_output_channels`); value
    and both gradients equal the float64 reference's either way."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: avx2)
    conv, x, w, check = _odd_layer(x_shape, w_shape, kwargs, channels_last, seed=6)
    # The canonical weight with its filters padded, in the input gradient's program.
    filters = w_shape[0] + -w_shape[0] % 4
    text = jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b) ** 2))).lower(x, w).as_text()
    found = f"-> tensor<{filters}x{w_shape[1]}x" in text
    assert found == (pads_avx2 if avx2 else pads), text
    check()


@pytest.mark.parametrize(
    "groups,c_in_g,c_out_g,channels_last,taken",
    [
        (16, 16, 32, True, True),  # widening, 16 groups
        (32, 16, 16, True, True),  # 32 groups
        (16, 32, 32, True, False),  # square, 16 groups
        (8, 16, 32, True, False),  # 8 groups
        (16, 16, 32, False, False),  # channels-first
    ],
)
def test_pointwise_many_groups_rule(groups, c_in_g, c_out_g, channels_last, taken):
    """`_pointwise_many_groups` takes 2-D channels-last 1x1 layers of 16 widening
    groups or of 32 groups."""
    x_shape, w_shape = (2, groups * c_in_g, 8, 8), (groups * c_out_g, c_in_g, 1, 1)
    spec = _spec.conv_plan("conv", x_shape, w_shape, groups=groups).spec
    spec = dataclasses.replace(spec, channels_last=channels_last)
    assert _dispatch._pointwise_many_groups(spec, w_shape) == taken
    three_d = _spec.conv_plan("conv", (*x_shape, 4), (*w_shape, 1), groups=groups).spec
    assert not _dispatch._pointwise_many_groups(
        dataclasses.replace(three_d, channels_last=True), (*w_shape, 1)
    )


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the grouped 1x1 rule is the CPU's")
def test_auto_pointwise_many_groups_value_is_xla_grouped_unless_differentiated():
    """auto's value of a channels-last 1x1 layer of 16 widening groups of 32 input
    channels (32->64 each) is XLA's grouped convolution
    (`_dispatch._pointwise_many_groups`), under differentiation the dense groups' as
    before; groups of at most 16 input channels are shift's
    (`_dispatch._pointwise_groups_by_shift`); values and gradients equal the float64
    reference's."""

    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 5, 6, 512)).astype(np.float32)
    w = rng.standard_normal((1, 1, 32, 1024)).astype(np.float32)

    def conv(a, b):
        return jaxconv.conv2d(a, b, groups=16, channels_last=True)

    value = jax.jit(conv).lower(x, w).as_text()
    assert "feature_group_count = 16" in value, value
    grad = jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b) ** 2), (0, 1))).lower(x, w)
    assert "feature_group_count = 16" not in grad.as_text()
    # Groups of at most 16 input channels are shift's: 16 groups of 16->32, no
    # convolution at all.
    x_few = rng.standard_normal((2, 5, 6, 256)).astype(np.float32)
    w_few = rng.standard_normal((1, 1, 16, 512)).astype(np.float32)
    few = jax.jit(conv).lower(x_few, w_few).as_text()
    assert "convolution" not in few, few

    def lax_conv(a, b):
        return jaxconv.conv2d(a, b, groups=16, channels_last=True, impl="lax")

    _assert_matches_float64(conv, lax_conv, x, w, rng, (32, 64, 60))


def test_single_input_channel_by_shift(monkeypatch):
    """Dense layers from one input channel run their value by `shift` with at most 288
    products per input position (taps x output channels; 3-D 864), and in 1-D and 2-D
    every role with at most 100 (`_dispatch._single_input_by_shift`); not 1x1, inputs dilated
    (a transposed convolution's), nor more input channels; a kernel past the output
    keeps matmul's derivatives. (Past 288 products on AVX-512 CPUs:
    `test_single_input_channel_values_by_shift_wide`; the AVX-512 rules for few input
    channels are off here.)"""
    monkeypatch.setattr(_dispatch, "_single_input_value_by_shift_wide", lambda *a: False)
    monkeypatch.setattr(_dispatch, "_few_inputs_channels_first_value_by_shift", lambda *a: False)
    shift = ("shift",) * 3
    assert choose((8, 1, 224, 224), (1, 1, 5, 5), padding=2) == shift
    assert choose((8, 224, 224, 1), (5, 5, 1, 1), padding=2, channels_last=True) == shift
    assert choose((8, 1, 64, 64), (4, 1, 5, 5), padding=2) == shift  # 100
    assert choose((8, 1, 64, 64), (2, 1, 7, 7), padding=3) == shift  # 98
    assert choose((8, 1, 16000), (8, 1, 9), padding=4) == shift  # 1-D
    assert choose((8, 1, 64, 64), (4, 1, 3, 3), stride=2, padding=1) == shift  # strided
    assert choose((8, 1, 64, 64), (12, 1, 3, 3), padding=1)[0] == "shift"  # 108
    assert choose((8, 1, 64, 64), (12, 1, 3, 3), padding=1)[1:] != shift[1:]
    assert choose((8, 1, 64, 64), (32, 1, 3, 3), padding=1)[0] == "shift"  # 288
    assert choose((8, 1, 64, 64), (33, 1, 3, 3), padding=1)[0] != "shift"  # 297
    assert choose((8, 1, 16000), (128, 1, 80), stride=4)[0] != "shift"  # raw audio
    x3 = (2, 1, 8, 32, 32)  # 3-D: the value alone, up to 864 products
    # (the derivatives by matmul: `test_single_input_channel_derivatives_by_matmul`)
    assert choose(x3, (8, 1, 3, 3, 3), padding=1) == ("shift", "matmul", "matmul")
    assert choose(x3, (32, 1, 3, 3, 3), padding=1)[:2] == ("shift", "matmul")
    assert choose(x3, (33, 1, 3, 3, 3), padding=1)[0] != "shift"
    assert choose(x3, (434, 1, 2, 1, 1))[0] != "shift"  # 868
    assert choose(x3, (3, 1, 3, 3, 3), padding=1)[0] == "shift"  # 81: still not every role
    assert "shift" not in choose(x3, (3, 1, 3, 3, 3), padding=1)[1:]
    assert choose((8, 1, 64, 64), (8, 1, 1, 1))[0] != "shift"  # 1x1
    assert choose((8, 2, 64, 64), (4, 2, 3, 3), padding=1)[0] != "shift"  # 2 channels
    assert choose((8, 1, 4, 4), (32, 1, 3, 3)) == ("shift", "matmul", "matmul")  # past
    spec = _spec.conv_plan("conv", (8, 1, 64, 64), (4, 1, 3, 3), padding=1).spec
    dilated = dataclasses.replace(spec, lhs_dilation=(2, 2))
    assert not _dispatch._single_input_by_shift(dilated, (4, 1, 3, 3))


@pytest.mark.parametrize("avx2_only", [False, True])
def test_single_input_channel_values_by_shift_wide(avx2_only, monkeypatch):
    """On CPUs with AVX-512, dense 2-D layers from one input channel with 289-2304
    products per input position (taps x output channels), channels-last or
    unstrided, undilated, run their value by `shift`, the derivatives the rules'
    (`_dispatch._single_input_value_by_shift_wide`); not on CPUs with AVX2 and no
    AVX-512, nor in 1-D or 3-D, nor within a split layer (``nested``), nor where the
    rules' value is `matmul`'s."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: avx2_only)
    x, x_cl = (2, 1, 64, 64), (2, 64, 64, 1)
    wide = not avx2_only

    def value(x_shape, w_shape, **kwargs):
        return choose(x_shape, w_shape, **kwargs)[0] == "shift"

    assert value(x, (12, 1, 5, 5), padding=2) == wide  # 300
    assert value(x, (92, 1, 5, 5), padding=2) == wide  # 2300
    assert not value(x, (93, 1, 5, 5), padding=2)  # 2325
    big = (16, 128, 128, 1)  # (past `matmul`'s value: 2^21 patch elements)
    assert value(big, (3, 3, 1, 256), padding=1, channels_last=True) == wide  # 2304
    assert not value(big, (3, 3, 1, 257), padding=1, channels_last=True)  # 2313
    assert value(x, (64, 1, 5, 5), padding=2) == wide  # 1600
    # (channels-first 3x3: `matmul`'s value, the RGB and grey first layers' rule)
    assert choose(x, (64, 1, 3, 3), padding=1) == ("matmul",) * 3
    assert value(x_cl, (5, 5, 1, 64), padding=2, channels_last=True) == wide
    assert not value(x_cl, (5, 5, 1, 128), padding=2, channels_last=True)  # 3200
    # Strided: channels-last only.
    assert value(x_cl, (3, 3, 1, 48), stride=2, padding=1, channels_last=True) == wide
    assert not value(x, (48, 1, 5, 5), stride=2, padding=2)
    assert not value(x, (48, 1, 3, 3), padding=2, dilation=2)  # a dilated kernel
    assert not value((2, 1, 500), (64, 1, 5), padding=2)  # 1-D
    assert not value((2, 1, 8, 16, 16), (48, 1, 3, 3, 3), padding=1)  # 3-D: 1296
    assert not value((2, 2, 64, 64), (40, 2, 5, 5), padding=2)  # two channels
    assert choose((2, 7, 64, 64), (7, 1, 17, 17), padding=8, groups=7)[0] == "fft"  # 2023
    # The derivatives stay the rules'.
    assert choose((4, 1, 112, 112), (64, 1, 5, 5), padding=2)[1:] == ("lax", "lax")
    # ... and `matmul`'s value too, where the rules take it (`_single_input_value_by_matmul`).
    assert choose((2, 1, 16, 16), (128, 1, 3, 3), padding=1) == ("matmul",) * 3
    w_shape = (64, 1, 5, 5)
    spec = _spec.conv_plan("conv", x, w_shape, padding=2).spec
    dilated = dataclasses.replace(spec, lhs_dilation=(2, 2))
    assert not _dispatch._single_input_value_by_shift_wide(dilated, w_shape)
    assert _dispatch.choose(spec, x, w_shape, jnp.float32, "cpu")[0] == ("shift" if wide else "lax")
    nested = _dispatch.choose(spec, x, w_shape, jnp.float32, "cpu", nested=True)
    assert nested[0] == "lax"


def test_single_input_channel_derivatives_by_matmul(monkeypatch):
    """Dense layers from one input channel whose derivatives are not shift's take
    matmul's to at least 128 channels or with at most 2^19 patch elements (batch x
    output positions x taps), and to at least 128 channels with at most 2^21 on at
    least 512 rows (batch x output positions) its value too
    (`_dispatch._single_input_derivatives_by_matmul`, `_single_input_value_by_matmul`);
    not 1x1, inputs dilated, grouped, nor from more channels. (The value and the weight
    gradient as the CPUs with AVX2 and no AVX-512 take them:
    `_single_input_value_by_shift_wide` and `_single_input_weight_gradient_by_xla` off.)"""
    monkeypatch.setattr(_dispatch, "_single_input_value_by_shift_wide", lambda *a: False)
    monkeypatch.setattr(_dispatch, "_single_input_weight_gradient_by_xla", lambda *a: False)
    mm = ("matmul",) * 3
    lax_ = ("lax",) * 3
    assert choose((4, 1, 112, 112), (64, 1, 5, 5), padding=2) == lax_  # 1.25M elements
    assert choose((4, 1, 112, 112), (128, 1, 5, 5), padding=2) == mm
    cl = dict(padding=2, channels_last=True)
    assert choose((4, 112, 112, 1), (5, 5, 1, 128), **cl) == mm
    assert choose((2, 1, 64, 64), (127, 1, 5, 5), padding=2) == ("lax", "matmul", "matmul")
    assert choose((2, 1, 8, 16, 16), (256, 1, 3, 3, 3), dilation=2) == mm  # 3-D
    assert choose((16, 1, 224, 224), (128, 1, 5, 5), padding=2) == ("lax", "matmul", "matmul")

    def rules(x_shape, w_shape, **kwargs):
        spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
        return (
            _dispatch._single_input_derivatives_by_matmul(spec, x_shape, w_shape),
            _dispatch._single_input_value_by_matmul(spec, x_shape, w_shape),
        )

    # The bounds on patch elements: 16 taps x 2^15 (2^17) outputs, and one row more.
    assert rules((1, 1, 131, 259), (64, 1, 4, 4)) == (True, False)  # 2^19
    assert rules((1, 1, 132, 259), (64, 1, 4, 4)) == (False, False)
    assert rules((1, 1, 131, 259), (127, 1, 4, 4)) == (True, False)
    assert rules((1, 1, 132, 259), (127, 1, 4, 4)) == (False, False)  # the channels' bound
    assert rules((1, 1, 132, 259), (128, 1, 4, 4)) == (True, True)
    assert rules((2, 1, 259, 259), (128, 1, 4, 4)) == (True, True)  # 2^21
    assert rules((2, 1, 260, 259), (128, 1, 4, 4)) == (True, False)
    assert rules((16, 1, 224, 224), (1024, 1, 7, 7), padding=3) == (True, False)
    # The value on at least 512 rows (batch x output positions).
    assert rules((2, 1, 16, 16), (128, 1, 3, 3), padding=1) == (True, True)  # 512
    assert rules((1, 1, 16, 31), (128, 1, 3, 3), padding=1) == (True, False)  # 496
    assert rules((2, 1, 7, 7), (512, 1, 7, 7), padding=3) == (True, False)
    # At most 49 taps (more take seconds to compile); not 1-D channels-last.
    assert rules((2, 1, 1000), (128, 1, 49)) == (True, True)
    assert rules((2, 1, 1000), (128, 1, 50)) == (False, False)
    assert rules((2, 1, 8, 16, 16), (128, 1, 7, 7, 1)) == (True, True)  # 3-D, 49 taps
    assert rules((2, 1, 8, 16, 16), (128, 1, 5, 5, 2)) == (False, False)  # 50
    assert choose((2, 1, 4000), (256, 1, 5), padding=2)[1:] == mm[1:]
    assert "matmul" not in choose((2, 4000, 1), (5, 1, 256), padding=2, channels_last=True)
    # Shift's own derivatives (at most 100 products) stay; with more, its value stays.
    assert rules((8, 1, 64, 64), (4, 1, 5, 5), padding=2) == (False, False)
    assert choose((8, 1, 64, 64), (4, 1, 5, 5), padding=2) == ("shift",) * 3
    assert rules((2, 1, 64, 64), (16, 1, 3, 3), padding=1) == (True, False)  # 144
    assert rules((2, 1, 64, 64), (144, 1, 2, 1)) == (True, False)  # shift's value, 288
    assert choose((2, 1, 64, 64), (144, 1, 2, 1))[0] == "shift"
    assert rules((8, 1, 1024), (256, 1, 1)) == (False, False)  # 1x1
    assert rules((2, 2, 64, 64), (128, 2, 3, 3), padding=1) == (False, False)
    assert rules((2, 2, 64, 64), (128, 1, 3, 3), padding=1, groups=2) == (False, False)
    spec = _spec.conv_plan("conv", (2, 1, 64, 64), (128, 1, 3, 3), padding=1).spec
    dilated = dataclasses.replace(spec, lhs_dilation=(2, 2))
    assert not _dispatch._single_input_derivatives_by_matmul(
        dilated, (2, 1, 64, 64), (128, 1, 3, 3)
    )


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 1, 16, 17), (128, 1, 3, 3), dict(padding=1)),  # every role by matmul
        ((2, 1, 30), (16, 1, 9), dict(padding="same", dilation=2)),  # shift's value
        ((1, 1, 5, 6, 7), (128, 1, 3, 3, 3), dict(padding=1, stride=(1, 2, 1))),  # 3-D
        ((2, 1, 13, 12), (40, 1, 3, 3), dict(dilation=2)),  # XLA's value
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_single_input_channel_derivatives_by_matmul_train_as_lax(
    retrace, x_shape, w_shape, kwargs, channels_last
):
    """Layers from one input channel whose derivatives are matmul's (but 1-D
    channels-last): values and both gradients equal lax's (float64), and so do forward
    mode, second derivatives and `vmap`."""
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=13)
    spec = _spec.conv_plan("conv", x.shape, w.shape, channels_last=channels_last, **kwargs).spec
    by_matmul = not (channels_last and len(x_shape) == 3)
    assert _dispatch._single_input_derivatives_by_matmul(spec, x_shape, w_shape) == by_matmul
    names = _dispatch.choose(spec, x_shape, w_shape, x.dtype, "cpu")
    weight = "lax" if _dispatch._single_input_weight_gradient_by_xla(spec) else "matmul"
    assert (names[1:] == ("matmul", weight)) == by_matmul
    trains_as_lax_float64(conv, x, w, check=True)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, ndim",
    [
        ((4, 1, 56, 56), (48, 1, 5, 5), dict(stride=2, padding=2), 2),  # found by a sweep
        ((2, 1, 16, 17), (128, 1, 3, 3), dict(padding=1), 2),  # every role by matmul
        ((1, 1, 5, 6, 7), (128, 1, 3, 3, 3), dict(padding=1), 3),
    ],
)
def test_single_input_weight_gradient_by_xla(monkeypatch, x_shape, w_shape, kwargs, ndim):
    """Channels-last 2-D layers from one channel whose derivatives `matmul` takes
    (`_dispatch._single_input_derivatives_by_matmul`) keep XLA's weight gradient with
    AVX-512 (`_single_input_weight_gradient_by_xla`); channels-first, in 3-D and with
    AVX2 alone both derivatives stay `matmul`'s, and the value is as without it."""
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    cl = dataclasses.replace(spec, channels_last=True)
    choose = functools.partial(_dispatch.choose, dtype=jnp.float32, backend="cpu")
    for avx2_only in (False, True):
        monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda v=avx2_only: v)
        taken = ndim == 2 and not avx2_only
        assert _dispatch._single_input_weight_gradient_by_xla(cl) == taken
        assert not _dispatch._single_input_weight_gradient_by_xla(spec)
        assert _dispatch._single_input_derivatives_by_matmul(cl, x_shape, w_shape)
        rules = choose(cl, x_shape, w_shape)
        assert rules[1:] == ("matmul", "lax" if taken else "matmul")
        assert choose(spec, x_shape, w_shape)[1:] == ("matmul", "matmul")
        with monkeypatch.context() as m:
            m.setattr(_dispatch, "_single_input_weight_gradient_by_xla", lambda *a: False)
            assert choose(cl, x_shape, w_shape)[0] == rules[0]


def test_few_input_channels_value_by_shift(monkeypatch):
    """Dense 2-D layers from 2-4 input channels with 2-25 taps and at most 600
    multiply-adds per output position run their value by shift-and-add, their
    derivatives by the rules (`_dispatch._few_inputs_value_by_shift`), where the rules
    leave the value to XLA's convolution; not from one channel
    (`_single_input_by_shift`'s) nor five, not 1x1 nor 7x7, not past 600, not grouped,
    input-dilated, 1-D or 3-D, not a part of a layer (``nested``), not in bfloat16, nor
    where another rule takes the value (`output_taps` to few channels; channels-first
    RGB layers, `matmul`'s as CPUs with AVX2 and no AVX-512 take them: the AVX-512
    rule, `_few_inputs_channels_first_value_by_shift`, off)."""
    monkeypatch.setattr(_dispatch, "_few_inputs_channels_first_value_by_shift", lambda *a: False)
    spec = _spec.conv_plan("conv", (2, 3, 16, 16), (8, 3, 3, 3), padding=1).spec
    taken = _dispatch._few_inputs_value_by_shift
    for w_shape, want in [
        ((8, 3, 3, 3), True),
        ((8, 2, 3, 3), True),
        ((8, 4, 3, 3), True),
        ((8, 5, 3, 3), False),  # five channels
        ((24, 1, 3, 3), False),  # one channel
        ((8, 3, 5, 5), True),  # 25 taps, 600 multiply-adds
        ((9, 3, 5, 5), False),  # 675
        ((4, 3, 7, 7), False),  # 49 taps
        ((64, 3, 1, 1), False),  # one tap
        ((67, 3, 3, 1), False),  # 603
        ((66, 3, 3, 1), True),  # 594
    ]:
        assert taken(spec, w_shape) == want, w_shape
    grouped = dataclasses.replace(spec, groups=2)
    assert not taken(grouped, (8, 3, 3, 3))
    dilated = dataclasses.replace(spec, lhs_dilation=(2, 2))
    assert not taken(dilated, (8, 3, 3, 3))
    one_d = _spec.conv_plan("conv", (2, 3, 64), (8, 3, 3), padding=1).spec
    assert not taken(one_d, (8, 3, 3))
    three_d = _spec.conv_plan("conv", (2, 3, 8, 8, 8), (4, 3, 3, 3, 3), padding=1).spec
    assert not taken(three_d, (4, 3, 3, 3, 3))
    # 4->8 (the rules' value XLA's; from 3 channels channels-first `matmul`'s, see
    # `test_rgb_and_grey_first_layers_run_by_matmul`).
    x_shape, w_shape = (2, 4, 16, 16), (8, 4, 3, 3)
    names = _dispatch.choose(spec, x_shape, w_shape, jnp.float32, "cpu")
    assert names[0] == "shift" and "shift" not in names[1:]
    assert _dispatch.choose(spec, x_shape, w_shape, jnp.float32, "cpu", True)[0] != "shift"
    assert _dispatch.choose(spec, x_shape, w_shape, jnp.bfloat16, "cpu")[0] != "shift"
    assert choose((2, 16, 16, 4), (3, 3, 4, 8), padding=1, channels_last=True)[0] == "shift"
    assert choose((2, 3, 16, 16), (8, 3, 3, 3), padding=1)[0] == "matmul"
    assert choose((2, 4, 16, 16), (2, 4, 3, 3), padding=1)[0] == "lax"  # `output_taps`'


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 3, 13, 12), (8, 3, 3, 3), dict(padding=2, dilation=2)),
        ((1, 4, 11, 10), (4, 4, 5, 5), dict(stride=2, padding=1)),
        ((2, 2, 9, 9), (8, 2, 3, 3), dict(padding="same", dilation=2)),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_few_input_channels_value_by_shift_trains_as_lax(
    monkeypatch, retrace, x_shape, w_shape, kwargs, channels_last
):
    """Layers whose value the few-input rule runs by shift (float32 only): under auto in
    float32 the value is shift's and it and both gradients are lax's; in float64 (the
    rules' value) values and both gradients equal lax's, and so do forward mode, second
    derivatives and `vmap`."""
    from jaxconv._impls import FORWARDS

    x, w, conv = _layer("conv", x_shape, w_shape, kwargs, channels_last, seed=15)
    spec = _spec.conv_plan("conv", x.shape, w.shape, channels_last=channels_last, **kwargs).spec
    assert _dispatch._few_inputs_value_by_shift(spec, w_shape)
    names = _dispatch.choose(spec, x_shape, w_shape, jnp.float32, "cpu")
    assert names[0] == "shift" and "shift" not in names[1:]
    calls = []
    original = FORWARDS["shift"]

    def spy(a, b, s):
        calls.append(s)
        return original(a, b, s)

    monkeypatch.setitem(FORWARDS, "shift", spy)
    jax.clear_caches()
    _assert_trains_as_lax(conv, x, w, value=True)
    assert calls  # shift's value ran
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=15)
    trains_as_lax_float64(conv, x, w, check=True)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "fname, x_shape, w_shape, kwargs, whole",
    [
        ("conv", (2, 1, 24, 24), (128, 1, 5, 5), dict(padding=2), True),  # the layer
        # Its parts: a transposed layer's sub-pixel phases (each from one channel), a
        # 3-D layer's 2-D planes (5x5x5, past the taps' bound; its planes within it).
        ("conv_transpose", (8, 1, 16, 16), (1, 128, 4, 4), dict(stride=2, padding=1), False),
        ("conv", (2, 1, 8, 8, 8), (64, 1, 5, 5, 5), dict(padding=2), False),
    ],
)
def test_single_input_channel_rule_is_for_whole_layers(
    fname, x_shape, w_shape, kwargs, whole, channels_last
):
    """The one-input-channel rule (`_dispatch._single_input_derivatives_by_matmul`)
    changes the program of a whole layer from one channel, and not of a layer split into
    convolutions from one channel (``nested`` in `_dispatch.choose`): a transposed
    layer's phases by it trained 0.51x and 0.64x channels-last (1->64 3x3 and 1->128 4x4
    stride 2)."""
    x, w, conv = _layer(fname, x_shape, w_shape, kwargs, channels_last, seed=14)

    def program():
        jax.clear_caches()  # (jaxconv's inner `jax.jit` would keep the first trace)
        return jax.jit(_relu_grad(conv, "auto")).lower(x, w).as_text()

    with mock.patch.object(_dispatch, "_single_input_derivatives_by_matmul", lambda *a: False):
        without = program()
    assert (program() != without) == whole


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 1, 11, 12), (3, 1, 5, 5), dict(padding=2)),  # every role by shift
        ((2, 1, 11, 12), (16, 1, 3, 3), dict(padding=1, stride=2)),  # the value
        ((2, 1, 30), (4, 1, 7), dict(padding="same", dilation=2)),  # 1-D
        ((1, 1, 5, 6, 7), (4, 1, 3, 3, 3), dict(padding=1)),  # 3-D: the value
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_single_input_channel_by_shift_trains_as_lax(
    retrace, x_shape, w_shape, kwargs, channels_last
):
    """Layers from one input channel under auto (shift's value, and its derivatives
    with few products): values and both gradients equal lax's (float64), and so do
    forward mode, second derivatives and `vmap`."""
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=12)
    text = jax.jit(conv("auto")).lower(x, w).as_text()
    assert "convolution" not in text, text
    trains_as_lax_float64(conv, x, w, check=True)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, channels_last",
    [
        ((2, 1, 11, 12), (15, 1, 5, 5), dict(padding=2), False),  # 375 products
        ((1, 1, 9, 10), (33, 1, 5, 5), dict(padding=2), True),  # 825
        ((2, 1, 11, 12), (48, 1, 3, 3), dict(padding=1, stride=2), True),
    ],
)
def test_single_input_channel_values_by_shift_wide_train_as_lax(
    retrace, monkeypatch, x_shape, w_shape, kwargs, channels_last
):
    """Layers from one input channel past 288 products whose value `auto` runs by
    `shift` on AVX-512 CPUs (`_dispatch._single_input_value_by_shift_wide`): no
    convolution in the value; values and both gradients equal lax's (float64), under
    the other transforms too."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=15)
    assert choose(x.shape, w.shape, channels_last=channels_last, **kwargs)[0] == "shift"
    text = jax.jit(conv("auto")).lower(x, w).as_text()
    assert "convolution" not in text, text
    trains_as_lax_float64(conv, x, w, check=True)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, convolutions",
    [
        ((2, 6, 5, 7, 9), (10, 6, 1, 1, 1), dict(stride=2), 0),  # 3-D, widening
        ((2, 8, 5, 7, 9), (3, 8, 1, 1, 1), dict(stride=(1, 3, 2), padding=1), 0),
        ((3, 5, 21), (7, 5, 1), dict(stride=2), 1),  # 1-D: XLA's value
        ((3, 5, 21), (4, 5, 1), dict(stride=3, padding=2), 1),
    ],
)
def test_strided_channels_last_pointwise_by_products(
    retrace, x_shape, w_shape, kwargs, convolutions
):
    """Strided channels-last 1x1 layers in 1-D and 3-D under auto: `matmul`'s
    derivatives (and in 3-D its value): no convolution but 1-D's value; values and
    both gradients equal lax's (float64), under the other transforms too."""
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, True, seed=13)
    ct = cotangent(conv("lax"), x, w)
    text = jax.jit(lambda a, b: jax.vjp(conv("auto"), a, b)[1](ct)).lower(x, w).as_text()
    assert "stablehlo.convolution" not in text, text
    text = jax.jit(conv("auto")).lower(x, w).as_text()
    assert text.count("stablehlo.convolution") == convolutions, text
    trains_as_lax_float64(conv, x, w, check=True)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 3, 9, 10), (36, 1, 3, 3), dict(groups=3, padding=1)),  # 12 x 9 products
        ((1, 2, 7, 8), (16, 1, 5, 5), dict(groups=2, padding=2, stride=2)),
        ((2, 2, 5, 6, 7), (4, 1, 3, 3, 3), dict(groups=2, padding=1, dilation=(1, 2, 1))),
        ((2, 4, 9, 10), (24, 2, 3, 3), dict(groups=2, padding=1)),  # grouped: 12 x 9
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_multiplier_input_gradient_by_matmul(
    retrace, x_shape, w_shape, kwargs, channels_last
):
    """A depthwise (or shift-run grouped) layer whose channel multiplier gives its input
    gradient more products per output than shift sums one channel at a time takes
    matmul's input gradient (shift's value, and shift's weight gradient if depthwise,
    else matmul's): no convolution in it; values and both gradients equal lax's
    (float64), under the other transforms too."""
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=14)
    depthwise = w_shape[1] == 1
    assert choose(x.shape, w.shape, channels_last=channels_last, **kwargs) == (
        "shift",
        "matmul",
        "shift" if depthwise else "matmul",
    )
    ct = cotangent(conv("lax"), x, w)
    input_grad = jax.jit(lambda a: jax.vjp(lambda b: conv("auto")(b, w), a)[1](ct))
    assert "stablehlo.convolution" not in input_grad.lower(x).as_text()
    trains_as_lax_float64(conv, x, w, check=True)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, channels_last, value_by_patches",
    [
        ((2, 5, 11, 10), (96, 5, 3, 3), dict(padding=1), False, True),
        ((1, 16, 13, 11), (100, 16, 3, 2), dict(), False, True),
        ((2, 5, 11, 10), (96, 5, 3, 3), dict(padding=1), True, False),
        ((2, 6, 11, 10), (96, 6, 3, 3), dict(padding=2, dilation=2), False, False),
        # Maps of at most 100 output positions: XLA's value.
        ((1, 8, 101, 3), (96, 8, 3, 3), dict(padding=(1, 0)), False, True),  # 101
        ((1, 8, 100, 3), (96, 8, 3, 3), dict(padding=(1, 0)), False, False),  # 100
        ((2, 5, 9, 10), (96, 5, 3, 3), dict(padding=1), False, False),  # 90
    ],
)
def test_few_inputs_wide_by_matmul(
    retrace, x_shape, w_shape, kwargs, channels_last, value_by_patches
):
    """A dense unstrided 2-D layer from 4-16 channels to 96 or more under auto: both
    derivatives by matmul (no convolution in them), the value too channels-first and
    undilated on maps of more than 100 output positions
    (`_dispatch._few_inputs_wide`); values and both gradients equal lax's (float64),
    under the other transforms too."""
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=15)
    ct = cotangent(conv("lax"), x, w)
    for role in (0, 1):
        grad = jax.jit(lambda a, b, role=role: jax.vjp(conv("auto"), a, b)[1](ct)[role])
        assert "stablehlo.convolution" not in grad.lower(x, w).as_text()
    value = jax.jit(conv("auto")).lower(x, w).as_text()
    assert ("stablehlo.convolution" not in value) == value_by_patches
    trains_as_lax_float64(conv, x, w, check=True)


def test_pointwise_groups_by_shift_rule():
    """`_pointwise_groups_by_shift` takes grouped 1x1 layers of 2-16 input channels a
    group, in any dims, not dense, depthwise, wider groups, larger kernels nor inputs
    dilated (a transposed convolution's)."""
    rule = _dispatch._pointwise_groups_by_shift

    def spec(x_shape, w_shape, groups):
        return _spec.conv_plan("conv", x_shape, w_shape, groups=groups).spec

    x = (2, 128, 8, 8)
    assert rule(spec(x, (256, 16, 1, 1), 8), (256, 16, 1, 1))
    assert rule(spec(x, (256, 2, 1, 1), 64), (256, 2, 1, 1))
    assert rule(spec((2, 128, 9), (64, 16, 1), 8), (64, 16, 1))
    assert not rule(spec(x, (256, 32, 1, 1), 4), (256, 32, 1, 1))  # 32 in
    assert not rule(spec(x, (256, 1, 1, 1), 128), (256, 1, 1, 1))  # depthwise
    assert not rule(spec(x, (256, 128, 1, 1), 1), (256, 128, 1, 1))  # dense
    assert not rule(spec(x, (256, 16, 3, 1), 8), (256, 16, 3, 1))  # 3x1
    dilated = dataclasses.replace(spec(x, (256, 16, 1, 1), 8), lhs_dilation=(2, 2))
    assert not rule(dilated, (256, 16, 1, 1))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the grouped 1x1 rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,channels_last,direct",
    [
        ((2, 5, 6, 128), (1, 1, 16, 64), dict(groups=8), True, True),  # 16->8
        ((2, 128, 5, 6), (256, 8, 1, 1), dict(groups=16), False, False),  # 8->16 channels-first
        ((2, 256, 6, 6), (512, 8, 1, 1), dict(groups=32, stride=2), False, True),  # 32 groups
        ((2, 7, 128), (1, 16, 256), dict(groups=8, padding=1), True, True),  # 1-D
        ((1, 3, 4, 5, 64), (1, 1, 1, 16, 128), dict(groups=4), True, True),  # 3-D
    ],
)
def test_auto_pointwise_groups_by_shift(x_shape, w_shape, kwargs, channels_last, direct):
    """auto runs the value of a 1x1 layer of groups of at most 16 input channels (more
    than 64 input x output channels) by shift-and-add, a sum of broadcast products with
    no convolution or dot (`_dispatch._pointwise_groups_by_shift`); its input gradient
    too, channels-last or with more than 16 groups (with more output channels a group
    than shift takes one at a time, one product a tap), and then its weight gradient by one
    product with the groups as a batch dim; in every case values, both gradients, forward mode and
    second derivatives equal the float64 reference's."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    op = {3: jaxconv.conv1d, 4: jaxconv.conv2d, 5: jaxconv.conv3d}[len(x_shape)]

    def conv(a, b, impl="auto"):
        return op(a, b, channels_last=channels_last, impl=impl, **kwargs)

    value = jax.jit(conv).lower(x, w).as_text()
    assert "convolution" not in value and "dot_general" not in value, value
    dx = jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b) ** 2), 0)).lower(x, w).as_text()
    dw = jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b) ** 2), 1)).lower(x, w).as_text()
    if direct:
        # Past `shift.per_channel`'s products a tap, shift sums a group's channels (here
        # the output channels, of the input gradient) as one product a tap
        # (`shift._channel_sum`): a dot_general, no convolution.
        nd = len(x_shape) - 2
        o_g = (w_shape[-1] if channels_last else w_shape[0]) // kwargs["groups"]
        taps = math.prod(w_shape[:-2] if channels_last else w_shape[2:])
        limit = shift_impl.PER_CHANNEL_MAX_TERMS.get(nd, shift_impl.UNROLL_MAX_TAPS_ND)
        assert "convolution" not in dx and ("dot_general" in dx) == (o_g * taps > limit), dx
    else:
        assert "convolution" in dx or "dot_general" in dx, dx
    # One product, the groups its batch dim (the dense groups': one product per group).
    assert "convolution" not in dw and (dw.count("dot_general") == 1) == direct, dw
    c_in_g = w_shape[1] if not channels_last else w_shape[-2]
    _assert_matches_float64(conv, functools.partial(conv, impl="lax"), x, w, rng, (c_in_g, 64, 60))
    # Forward mode and second derivatives, against lax's in float64.
    x64, w64 = jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64)
    tx, tw = jnp.ones_like(x64), jnp.full_like(w64, 0.5)
    _, jvp = jax.jvp(conv, (x64, w64), (tx, tw))
    _, jvp_ref = jax.jvp(functools.partial(conv, impl="lax"), (x64, w64), (tx, tw))
    np.testing.assert_allclose(jvp, jvp_ref, rtol=1e-10, atol=1e-10)

    def second(f):
        def inner(a, b):
            return jnp.sum(jax.grad(lambda a_: jnp.sum(f(a_, b) ** 2))(a) ** 2)

        return jax.grad(inner, 1)(x64, w64)

    np.testing.assert_allclose(
        second(conv), second(functools.partial(conv, impl="lax")), rtol=1e-9, atol=1e-9
    )


def _assert_matches_float64(conv, reference, x, w, rng, reductions):
    """``conv``'s value (alone and under `jax.vjp`) and both gradients, for a random
    cotangent, match ``reference``'s computed in float64, with the tolerance of these
    summation lengths (value, input gradient, weight gradient)."""
    from tolerance import assert_close

    x64, w64 = jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64)
    y64, vjp64 = jax.vjp(reference, x64, w64)
    ct = rng.standard_normal(y64.shape).astype(np.float32)
    dx64, dw64 = vjp64(jnp.asarray(ct, jnp.float64))
    assert_close(jax.jit(conv)(x, w), np.asarray(y64), np.float32, reductions[0])
    ((y, dx, dw),) = values_and_vjps([conv], (x, w), ct)
    for got, want, reduction in zip((y, dx, dw), (y64, dx64, dw64), reductions, strict=True):
        assert_close(got, np.asarray(want), np.float32, reduction)


@pytest.mark.parametrize(
    "x_shape,w_shape,groups,channels_last,taken",
    [
        ((8, 64, 7, 7), (128, 8, 3, 3), 8, True, True),  # 0.9 MFLOP per group
        ((8, 64, 7, 7), (128, 8, 3, 3), 8, False, True),
        ((8, 128, 7, 7), (128, 16, 3, 3), 8, True, False),  # 1.8 MFLOP per group
        ((1, 256, 7, 7), (256, 32, 3, 3), 8, True, True),  # 1024 channels per group
        ((1, 256, 7, 7), (256, 32, 3, 3), 8, False, False),  # ... channels-first
        ((8, 64, 7), (128, 8, 3), 8, True, False),  # 1-D
    ],
)
@pytest.mark.parametrize("avx2_only", [False, True])
def test_small_groups_rule(x_shape, w_shape, groups, channels_last, taken, avx2_only, monkeypatch):
    """`_small_groups` takes 2-D layers of fewer than 1.5 MFLOP per group,
    channels-first only with at most 512 input x output channels per group; none on a
    CPU with AVX2 and no AVX-512."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: avx2_only)
    spec = _spec.conv_plan("conv", x_shape, w_shape, padding=1, groups=groups).spec
    spec = dataclasses.replace(spec, channels_last=channels_last)
    assert _dispatch._small_groups(spec, x_shape, w_shape) == (taken and not avx2_only)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the small-groups rule is the CPU's")
@pytest.mark.parametrize("avx2_only", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_auto_small_groups_value_is_xla_grouped_unless_differentiated(
    channels_last, avx2_only, monkeypatch, retrace
):
    """auto's value of 8 groups of 8->16 3x3 on 7x7 maps (0.9 MFLOP per group) is XLA's
    grouped convolution (`_dispatch._small_groups`), but the groups' on a CPU with AVX2
    and no AVX-512; under differentiation the dense groups' as before; values and
    gradients equal the float64 reference's."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: avx2_only)

    rng = np.random.default_rng(8)
    x = rng.standard_normal((8, 7, 7, 64) if channels_last else (8, 64, 7, 7)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 128) if channels_last else (128, 8, 3, 3))
    w = w.astype(np.float32)

    def conv(a, b, impl="auto"):
        return jaxconv.conv2d(a, b, padding=1, groups=8, channels_last=channels_last, impl=impl)

    grouped = "feature_group_count = 8" in jax.jit(conv).lower(x, w).as_text()
    assert grouped == (not avx2_only)
    grad = jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b) ** 2), (0, 1))).lower(x, w)
    assert "feature_group_count = 8" not in grad.as_text()

    _assert_matches_float64(conv, lambda a, b: conv(a, b, "lax"), x, w, rng, (72, 144, 392))


@pytest.mark.parametrize(
    "x_shape,w_shape,groups,padding,taken",
    [
        ((32, 32, 14, 14), (8, 8, 4, 4), 4, 2, True),  # 4 groups of 8->2: 4 * 2^2 = 16
        ((1, 32, 10, 10), (4, 16, 3, 3), 2, 1, True),  # 2 groups of 16->2, 100 rows
        ((1, 64, 10, 10), (16, 16, 3, 3), 4, 1, True),  # 4 groups of 16->4: 64
        ((1, 48, 10, 10), (15, 16, 3, 3), 3, 1, False),  # 3 groups of 16->5: 75
        ((1, 256, 10, 10), (16, 16, 3, 3), 16, 1, True),  # 16 groups of 16->1: 16
        ((1, 64, 10, 10), (32, 8, 3, 3), 8, 1, False),  # 8 groups of 8->4: 128
        ((1, 64, 10, 10), (24, 8, 3, 3), 8, 1, False),  # 8 groups of 8->3: 72
        ((1, 128, 10, 10), (32, 8, 3, 3), 16, 1, True),  # 16 groups of 8->2: 64
        ((1, 32, 8, 8), (4, 16, 3, 3), 2, 1, True),  # 64 rows
        ((1, 32, 7, 7), (4, 16, 3, 3), 2, 1, False),  # 49 rows
        ((4, 32, 5, 5), (4, 16, 3, 3), 2, 0, False),  # 36 rows
        ((8, 32, 5, 5), (4, 16, 3, 3), 2, 0, True),  # 72 rows
    ],
)
def test_block_diagonal_value_rule(x_shape, w_shape, groups, padding, taken):
    """`_block_diagonal_value` takes layers whose groups times the square of their
    output channels a group is at most 64, on at least 64 rows (batch times output
    positions)."""
    spec = _spec.conv_plan("conv", x_shape, w_shape, padding=padding, groups=groups).spec
    assert _dispatch._block_diagonal_value(spec, x_shape, w_shape) == taken


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the small-groups rule is the CPU's")
@pytest.mark.parametrize("avx2_only", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_auto_small_groups_few_outputs_by_block_diagonal(
    channels_last, avx2_only, monkeypatch, retrace
):
    """auto's value of 4 groups of 8->2 4x4 stride 2 padding 2 @14 batch 32 (1.05 MFLOP per
    group) is one dense convolution by the block-diagonal weight
    (`_dispatch._block_diagonal_value`), not XLA's grouped convolution; on a CPU with
    AVX2 and no AVX-512 (where `_small_groups` is off) and under differentiation, the
    dense groups' as before. Values and gradients equal the float64 reference's, and a
    NaN weight leaves the other groups' outputs finite."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: avx2_only)
    calls = []
    original = _dispatch.groups.block_diagonal

    def spy(w, g):
        calls.append((w.shape, g))
        return original(w, g)

    monkeypatch.setattr(_dispatch.groups, "block_diagonal", spy)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((32, 14, 14, 32) if channels_last else (32, 32, 14, 14))
    w = rng.standard_normal((4, 4, 8, 8) if channels_last else (8, 8, 4, 4))
    x, w = x.astype(np.float32), w.astype(np.float32)

    def conv(a, b, impl="auto"):
        return jaxconv.conv2d(
            a, b, stride=2, padding=2, groups=4, channels_last=channels_last, impl=impl
        )

    text = jax.jit(conv).lower(x, w).as_text()
    assert calls == ([] if avx2_only else [((8, 8, 4, 4), 4)])
    assert "feature_group_count = 4" not in text
    jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b) ** 2), (0, 1))).lower(x, w)
    assert len(calls) == (0 if avx2_only else 1)

    _assert_matches_float64(conv, lambda a, b: conv(a, b, "lax"), x, w, rng, (128, 32, 2048))

    w_nan = w.copy()
    w_nan[(0, 0, 0, 0)] = np.nan  # output channel 0's in either layout: group 0's
    y = np.asarray(jax.jit(conv)(x, w_nan))
    group_0 = y[..., :2] if channels_last else y[:, :2]
    others = y[..., 2:] if channels_last else y[:, 2:]
    assert np.isnan(group_0).any() and np.isfinite(others).all()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the scanned-value rule is the CPU's")
@pytest.mark.parametrize(
    "kernel, want",
    [
        ((3, 3, 3), ("shift",) * 3),  # unrolled
        ((4, 4, 4), ("shift", "fft", "fft")),  # 64 taps: scanned value
        ((3, 3, 5), ("shift", "fft", "fft")),
        ((7, 7, 7), ("shift", "fft", "fft")),  # `SCANNED_VALUE_MAX_TAPS`
        ((7, 7, 8), ("fft",) * 3),
        ((9, 9), ("shift", "fft", "fft")),  # 2-D as before
        ((17, 17), ("fft",) * 3),
        ((64,), ("shift",) * 3),  # 1-D unrolled
        ((65,), ("shift", "fft", "fft")),
        ((96,), ("shift", "fft", "fft")),
        ((97,), ("fft",) * 3),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_beyond_the_unrolled_sum(kernel, want, channels_last):
    """1-D and 3-D depthwise kernels of more taps than shift unrolls take shift's value
    (its loop over taps) and FFT's derivatives, up to `SCANNED_VALUE_MAX_TAPS` taps."""
    nd = len(kernel)
    padding = tuple((k // 2, k // 2) for k in kernel)
    spec = _spec.ConvSpec((1,) * nd, padding, (1,) * nd, (1,) * nd, 8)
    spec = dataclasses.replace(spec, channels_last=channels_last)
    got = _dispatch.choose(spec, (2, 8, *(12,) * nd), (8, 1, *kernel), jnp.float32, "cpu")
    assert got == want


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the scanned-value rule is the CPU's")
def test_auto_3d_depthwise_scanned_value_and_fft_derivatives():
    """auto on a 3-D depthwise 3x3x5 layer: the value by shift's loop over taps (a scan
    in the program, no FFT), training by FFT alone; values and gradients equal the
    float64 reference's."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 6, 5, 7, 9)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3, 5)).astype(np.float32)

    def conv(a, b, impl="auto"):
        return jaxconv.conv3d(a, b, padding=(1, 1, 2), groups=6, impl=impl)

    value = jax.jit(conv).lower(x, w).as_text()
    assert "fft" not in value and "while" in value
    grad = jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b) ** 2), (0, 1))).lower(x, w)
    assert "fft" in grad.as_text() and "while" not in grad.as_text()
    _assert_matches_float64(conv, lambda a, b: conv(a, b, "lax"), x, w, rng, (45, 45, 630))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU rule")
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, conv",
    [
        # Dense by XLA's convolution: value and both gradients in float32.
        # (5->16: past `_dispatch._few_inputs_value_by_shift`'s 600 multiply-adds.)
        ((2, 5, 11, 10), (16, 5, 3, 3), dict(padding=1), jaxconv.conv),
        ((2, 10, 11, 5), (3, 3, 5, 16), dict(padding=1, channels_last=True), jaxconv.conv),
        ((2, 4, 6, 10, 10), (4, 4, 3, 3, 3), dict(padding=1, stride=(1, 2, 2)), jaxconv.conv),
        # Transposed, to few channels from 32: XLA's input-dilated convolution whole (the
        # value and the input gradient, `_dispatch._xla`), the weight gradient by phases.
        ((2, 32, 7, 7), (32, 4, 3, 3), dict(stride=2, padding=1, output_padding=1), None),
        # Grouped: the value of small groups by XLA's grouped convolution (`_xla`)...
        ((8, 7, 7, 64), (3, 3, 8, 128), dict(padding=1, groups=8, channels_last=True), None),
        # ... and the groups loop.
        ((1, 512, 28, 28), (512, 16, 3, 3), dict(padding=1, groups=32), jaxconv.conv),
    ],
)
def test_half_precision_runs_xlas_convolution_in_float32(x_shape, w_shape, kwargs, conv, dtype):
    """bfloat16 and float16 layers that `auto` gives to XLA's convolution run it in
    float32, rounded once (`_dispatch._half`): no half-precision convolution in the
    program, and value and gradients those of float32 rounded to the dtype."""
    conv = conv or (jaxconv.conv if "groups" in kwargs else jaxconv.conv_transpose)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    w = jnp.asarray(rng.standard_normal(w_shape), dtype)

    def f(a, b):
        return conv(a, b, **kwargs)

    ct = jnp.asarray(cotangent(f, x, w), dtype)
    step = jax.jit(lambda a, b, c: (lambda r: (r[0], *r[1](c)))(jax.vjp(f, a, b)))
    for program in (jax.jit(f).lower(x, w), step.lower(x, w, ct)):
        convs = re.findall(r"stablehlo.convolution.*", program.as_text())
        assert convs and all("xf32>" in c and "bf16" not in c and "xf16>" not in c for c in convs)
    ((y, dx, dw),) = values_and_vjps([f], (x, w), ct)
    f32 = [a.astype(jnp.float32) for a in (x, w, ct)]
    ((y32, dx32, dw32),) = values_and_vjps([f], f32[:2], f32[2])
    for got, want in ((y, y32), (dx, dx32), (dw, dw32)):
        assert got.dtype == dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want.astype(dtype)))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU rule")
def test_half_precision_matmul_stays_in_half_precision():
    """A 1x1 layer (`matmul`) keeps its half-precision products, accumulated in float32
    (XLA's CPU dot; bfloat16 on AMX), and converts no operand to float32."""
    x = jnp.ones((2, 16, 9, 9), jnp.bfloat16)
    w = jnp.ones((8, 16, 1, 1), jnp.bfloat16)
    text = jax.jit(jaxconv.conv2d).lower(x, w).as_text()
    dots = re.findall(r"stablehlo.dot_general.*", text)
    assert dots and all("f32>" not in d.split("->")[0] for d in dots)
    assert np.all(np.asarray(jaxconv.conv2d(x, w), np.float32) == 16)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the planes rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, groups, channels_last, grouped_call",
    [
        ((1, 16, 5, 14, 14), (8, 2, 3, 3, 3), 8, False, False),  # per group, fewer outputs
        ((1, 16, 5, 14, 14), (16, 4, 3, 3, 3), 4, True, False),  # per group, as many
        ((1, 64, 5, 14, 14), (32, 2, 3, 3, 3), 32, True, True),  # one grouped call
    ],
)
def test_3d_grouped_value_output_stacked(
    monkeypatch, retrace, x_shape, w_shape, groups, channels_last, grouped_call
):
    """Grouped 3-D values under auto reach `planes.output_stacked` too (per group, or
    with the groups in one call), and equal lax's, with their gradients."""
    calls = spy_planes(monkeypatch, "output_stacked", lambda spec: spec.groups)
    x, w = arrays_3d(4, x_shape, w_shape, channels_last)

    def conv(impl):
        return lambda a, b: jaxconv.conv3d(
            a, b, padding=1, groups=groups, channels_last=channels_last, impl=impl
        )

    def every(a, b):
        out = []
        for impl in ("auto", "lax"):
            loss = lambda a, b, impl=impl: jnp.sum(conv(impl)(a, b) ** 2)  # noqa: E731
            out.append((conv(impl)(a, b), *jax.grad(loss, (0, 1))(a, b)))
        return out

    got, want = jax.jit(every)(x, w)
    assert calls and (max(calls) > 1) == grouped_call
    for g, e in zip(got, want, strict=True):
        scale = float(np.max(np.abs(e)))
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rows rule is the CPU's")
@pytest.mark.parametrize(
    "w_shape, kwargs, channels_last, by",
    [
        ((24, 32, 3, 3), dict(padding=1), False, "out"),  # fewer outputs
        ((24, 32, 3, 3), dict(padding=1), True, "out"),
        ((24, 32, 3, 3), dict(padding=(2, 1), dilation=(2, 1)), True, "out"),
        ((32, 32, 3, 3), dict(padding=1), False, "no"),  # as many
        ((48, 32, 3, 3), dict(padding=1), True, "no"),  # more
        ((24, 32, 3, 3), dict(padding=1, stride=(2, 1)), False, "no"),  # strided rows
    ],
)
def test_2d_weight_gradient_rows_stacked(monkeypatch, retrace, w_shape, kwargs, channels_last, by):
    """The weight gradient of a 2-D convolution by kernel rows folds the rows into the
    output channels (`planes.output_stacked`, its transpose written out by
    `planes.output_stacked_weight_gradient`: "out") to fewer output channels, else one
    1-D weight gradient per kernel row (`planes.decompose`, "no"); equal to lax's."""
    monkeypatch.setattr(_dispatch, "ROWS_MIN_FLOPS", 0)
    calls = []
    names = {
        "output_stacked_weight_gradient": "out",
        "output_stacked": "JAX's",
        "decompose_weight_gradient": "no",
        "decompose": "no",
    }
    for name, short in names.items():
        record = lambda spec, short=short: short if spec.ndim == 2 else None  # noqa: E731
        spy_planes(monkeypatch, name, record, calls)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 32, 20, 20)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))

    def grad(impl):
        conv = lambda a, b: jaxconv.conv2d(  # noqa: E731
            a, b, channels_last=channels_last, impl=impl, **kwargs
        )
        return jax.grad(lambda a, b: jnp.sum(conv(a, b) ** 2), 1)

    jax.jit(grad("auto")).lower(x, w)  # the spies record the weight gradient's trace
    assert calls and calls[-1] == by
    got, want = jax.jit(lambda a, b: (grad("auto")(a, b), grad("lax")(a, b)))(x, w)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(want))))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, stacks",
    [
        ((2, 3, 30, 30), (16, 3, 7, 7), dict(stride=2, padding=3), True),  # a 7x7 stem
        ((2, 3, 30, 30), (48, 3, 7, 7), dict(stride=2, padding=3), "large"),  # 4x4 phases
        ((2, 3, 30, 30), (72, 3, 7, 7), dict(stride=2, padding=3), False),  # ... to 72
        ((2, 8, 24, 24), (32, 8, 5, 5), dict(stride=2, padding=2), True),  # 3x3 phases
        ((2, 3, 24, 24), (48, 3, 5, 5), dict(stride=2, padding=2), False),  # ... to 48
        ((2, 8, 24, 24), (48, 8, 5, 5), dict(stride=2, padding=2), True),  # ... from 8
        ((2, 7, 24, 24), (48, 7, 5, 5), dict(stride=2, padding=2), False),  # ... from 7
        ((2, 4, 28, 28), (16, 4, 8, 8), dict(stride=4), True),  # stride 4
        ((2, 16, 40), (24, 16, 7), dict(stride=2, padding=3), True),  # 1-D
        ((2, 8, 24, 24), (32, 8, 5, 5), dict(stride=1, padding=2), False),  # unstrided
        # Dilated (3, coprime with the stride: sharing a factor, `auto` reduces the layer
        # to an unstrided one first, `_dispatch.reduced_layer`).
        ((2, 8, 24, 24), (32, 8, 5, 5), dict(stride=2, padding=6, dilation=3), False),
        ((2, 8, 24, 24), (32, 4, 5, 5), dict(stride=2, padding=2, groups=2), False),
        ((2, 32, 24, 24), (32, 32, 5, 5), dict(stride=2, padding=2), False),  # 32 inputs
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_input_gradient_stacked(
    monkeypatch, retrace, x_shape, w_shape, kwargs, stacks, channels_last
):
    """The input gradient of a strided convolution from few input channels runs as the
    transposed convolution of the output gradient, its phases stacked along the output
    channels (`subpixel._stacked`), to at most 32 output channels, or to at most 64 with
    phases of 4x4 taps, or smaller ones from 8 input channels, from large inputs
    ("large": taken only with the input-size threshold lowered to this input's)
    (`_dispatch._strided_input_gradient_stacked`);
    not where the value is unstrided, dilated or grouped, nor from many input channels.
    Every row but the size check runs with that threshold at its input's size, so that
    the 3x3 phases and the 72 channels are what keep those rows off. Values and both
    gradients equal `lax`'s (float64), and so do forward mode, second derivatives and
    `vmap` (`check_transforms`)."""
    from jaxconv._impls import subpixel

    # (The 8x8 stride-4 layer would train folded by default, `_kernel_multiple_of_stride`.)
    monkeypatch.setattr(_dispatch, "_kernel_multiple_of_stride", lambda *args: False)
    if stacks == "large":
        assert not _dispatch._strided_input_gradient_stacked(*_spec_of(x_shape, w_shape, kwargs)), (
            "an input this small stays off the rule"
        )
    monkeypatch.setattr(_dispatch, "STRIDED_INPUT_GRADIENT_LARGE_MIN_INPUT", np.prod(x_shape))

    calls = []
    original = subpixel._stacked

    def spy(*args):
        calls.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(subpixel, "_stacked", spy)
    nd = len(x_shape) - 2
    rng = np.random.default_rng(9)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (*range(2, nd + 2), 1, 0))

    def conv(impl):
        return lambda a, b: jaxconv.conv(a, b, channels_last=channels_last, impl=impl, **kwargs)

    def dx(a, b, c):
        return jax.vjp(lambda a_: conv("auto")(a_, b), a)[1](c)

    ct = cotangent(conv("lax"), x, w)
    jax.jit(dx).lower(x, w, ct)  # the spy records the input gradient's trace
    assert bool(calls) == bool(stacks), calls
    got, want = values_and_vjps([conv("auto"), conv("lax")], (x, w), ct)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * float(np.max(np.abs(b))))
    if stacks:
        check_transforms(conv, x, w, ct)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("threshold, crops", [(6728, True), (6729, False)])  # 2 x 4 x 29 x 29
def test_stacked_input_gradient_crops_in_callers_layout(
    monkeypatch, retrace, channels_last, threshold, crops
):
    """A channels-last input gradient by `subpixel._stacked` (its stride-3 phases of
    10x10 interleaved to 30x30 and cropped to the input's 29x29) of at least
    `STACKED_GRADIENT_CROP_MIN_ELEMENTS` elements is cropped in the caller's layout
    (`_interleaved`'s ``crop``); a smaller one, a channels-first one and a transposed
    layer's value after the move to the canonical layout. Values and both gradients
    equal `lax`'s (float64)."""
    from jaxconv._impls import subpixel

    x_shape, w_shape, kwargs = (2, 4, 29, 29), (8, 4, 3, 3), dict(stride=3)
    assert _dispatch._strided_input_gradient_stacked(*_spec_of(x_shape, w_shape, kwargs))
    # (Its kernel equals its stride: by default it folds, `_tiles_as_pointwise`.)
    monkeypatch.setattr(_dispatch, "_tiles_as_pointwise", lambda *args, **kwargs: False)
    monkeypatch.setattr(subpixel, "STACKED_GRADIENT_CROP_MIN_ELEMENTS", threshold)
    seen = []  # per `_stacked` call, whether its `_interleaved` crops
    stacked, interleaved = subpixel._stacked, subpixel._interleaved

    def stacked_spy(*args):
        seen.append(None)
        return stacked(*args)

    def interleaved_spy(y, lhs, c_out, sizes, cl, crop=None):
        seen[-1] = crop is not None
        return interleaved(y, lhs, c_out, sizes, cl, crop)

    monkeypatch.setattr(subpixel, "_stacked", stacked_spy)
    monkeypatch.setattr(subpixel, "_interleaved", interleaved_spy)
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=10)
    ct = cotangent(conv("lax"), x, w)
    jax.jit(lambda a, b, c: jax.vjp(conv("auto"), a, b)[1](c)).lower(x, w, ct)
    assert seen == [crops and channels_last]
    trains_as_lax_float64(conv, x, w, check=False)
    # A transposed layer's value by `_stacked` (to 3 channels, 5x5 stride 2) never.
    seen.clear()
    monkeypatch.setattr(subpixel, "STACKED_GRADIENT_CROP_MIN_ELEMENTS", 1)
    y, t, transposed = _layer(
        "conv_transpose", (2, 16, 40, 40), (16, 3, 5, 5), dict(stride=2), channels_last, seed=10
    )
    jax.jit(transposed("auto")).lower(y, t)
    assert seen == [False]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, phases",
    [
        ((8, 256, 56, 56), (16, 256, 3, 3), dict(stride=2, padding=1), True),
        ((8, 128, 56, 56), (128, 128, 3, 3), dict(stride=2, padding=1), True),  # as many
        ((8, 128, 64, 64), (128, 128, 2, 2), dict(stride=2), True),  # kernel = stride
        # Widening to at most twice the channels, kernels of at least 2 x stride - 1,
        # from 2^21 elements whatever the kernel (AVX-512 only).
        ((8, 128, 56, 56), (256, 128, 3, 3), dict(stride=2, padding=1), True),
        ((8, 128, 56, 56), (257, 128, 3, 3), dict(stride=2, padding=1), False),
        ((8, 128, 56, 56), (129, 128, 3, 3), dict(stride=2, padding=1), True),
        ((4, 128, 64, 64), (256, 128, 3, 3), dict(stride=2, padding=1), True),  # 2^21
        ((4, 128, 64, 63), (256, 128, 3, 3), dict(stride=2, padding=1), False),
        ((8, 128, 56, 56), (256, 128, 5, 5), dict(stride=3, padding=2), True),
        ((8, 128, 56, 56), (256, 128, 4, 4), dict(stride=3, padding=2), False),  # 4 < 5
        ((8, 128, 56, 56), (256, 128, 5, 4), dict(stride=3, padding=2), False),
        ((2, 64, 64, 64), (128, 64, 4, 4), dict(stride=2, padding=1), False),  # 2^19
        ((8, 256, 28, 28), (128, 256, 3, 3), dict(stride=2, padding=1), False),  # 2^20.6
        ((4, 96, 112, 112), (16, 96, 3, 3), dict(stride=4), False),  # kernel < stride
        ((8, 256, 56, 56), (16, 256, 3, 3), dict(stride=1, padding=1), False),  # unstrided
        ((8, 256, 56, 56), (16, 256, 3, 3), dict(stride=2, padding=2, dilation=2), False),
        ((8, 256, 56, 56), (16, 128, 3, 3), dict(stride=2, padding=1, groups=2), False),
        ((8, 256, 4000), (16, 256, 3), dict(stride=2, padding=1), False),  # 1-D
        # Kernels of 16 taps or more from 2^19 elements.
        ((2, 64, 64, 64), (64, 64, 4, 4), dict(stride=2, padding=1), True),  # 2^19
        ((2, 64, 64, 63), (64, 64, 4, 4), dict(stride=2, padding=1), False),
        ((2, 64, 64, 64), (64, 64, 5, 3), dict(stride=2, padding=1), False),  # 15 taps
        ((2, 64, 64, 64), (64, 64, 5, 5), dict(stride=3, padding=2), True),
        ((1, 256, 56, 56), (64, 256, 7, 7), dict(stride=2, padding=3), True),
        ((1, 256, 56, 56), (257, 256, 7, 7), dict(stride=2, padding=3), False),  # widening
    ],
)
def test_strided_input_gradient_phases(monkeypatch, x_shape, w_shape, kwargs, phases):
    """The input gradient of a strided dense 2-D convolution to at most as many output
    channels as input channels, from an input of at least
    `STRIDED_INPUT_GRADIENT_PHASES_MIN_INPUT` elements (2^19 with kernels of 16 taps or
    more), runs as the transposed
    convolution of the output gradient, by its sub-pixel phases
    (`_dispatch._strided_input_gradient_phases`); to at most twice as many with kernels
    of at least twice the stride less one from 2^21 elements, on CPUs with AVX-512; not
    smaller, with kernels shorter than the stride, unstrided, dilated, grouped or in
    1-D."""
    assert _dispatch.STRIDED_INPUT_GRADIENT_PHASES_MAX_WIDENING == 2
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    assert _dispatch._strided_input_gradient_phases(*_spec_of(x_shape, w_shape, kwargs)) == phases
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: True)
    widening = w_shape[0] > x_shape[1]
    want = phases and not widening
    assert _dispatch._strided_input_gradient_phases(*_spec_of(x_shape, w_shape, kwargs)) == want


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_input_gradient_phases_run_and_match(monkeypatch, retrace, channels_last):
    """With the input-size threshold at a small layer's, its input gradient goes through
    the phases (`subpixel.decompose`, where XLA's would be one input-dilated
    convolution), and the value and both gradients equal `lax`'s (float64), as do
    forward mode, second derivatives and `vmap` (`check_transforms`)."""
    from jaxconv._impls import subpixel

    x_shape, w_shape, kwargs = (2, 48, 13, 13), (8, 48, 3, 3), dict(stride=2, padding=1)
    assert not _dispatch._strided_input_gradient_stacked(*_spec_of(x_shape, w_shape, kwargs))
    calls = []
    original = subpixel.decompose

    def spy(*args, **kw):
        calls.append(args[0].shape)
        return original(*args, **kw)

    monkeypatch.setattr(subpixel, "decompose", spy)
    rng = np.random.default_rng(13)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))

    def conv(impl):
        return lambda a, b: jaxconv.conv2d(a, b, channels_last=channels_last, impl=impl, **kwargs)

    def dx(a, b, c):
        return jax.vjp(lambda a_: conv("auto")(a_, b), a)[1](c)

    ct = cotangent(conv("lax"), x, w)
    for threshold, taken in ((math.prod(x_shape) + 1, False), (math.prod(x_shape), True)):
        monkeypatch.setattr(_dispatch, "STRIDED_INPUT_GRADIENT_PHASES_MIN_INPUT", threshold)
        jax.clear_caches()
        calls.clear()
        jax.jit(dx).lower(x, w, ct)  # the spy records the input gradient's trace
        assert bool(calls) == taken, calls
    got, want = values_and_vjps([conv("auto"), conv("lax")], (x, w), ct)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * float(np.max(np.abs(b))))
    check_transforms(conv, x, w, ct)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
def test_grouped_parts_take_the_strided_input_gradient_rules(monkeypatch, retrace, channels_last):
    """Each group's part of a grouped 2-D layer run apart (`groups.decompose`) takes the
    whole layer's strided input-gradient rule (`group_part` in `_dispatch._run`): with
    the input-size threshold at a part's, both parts' input gradients go through the
    phases; the value and both gradients equal `lax`'s (float64), under the other
    transforms too."""
    from jaxconv._impls import subpixel

    x_shape, w_shape = (2, 96, 13, 13), (16, 48, 3, 3)
    kwargs = dict(stride=2, padding=1, groups=2)
    assert choose(x_shape, w_shape, **kwargs)[_dispatch.INPUT_GRADIENT] == _dispatch.DENSE_GROUPS
    part = (2, 48, 13, 13)
    monkeypatch.setattr(_dispatch, "STRIDED_INPUT_GRADIENT_PHASES_MIN_INPUT", math.prod(part))
    calls = spy_third_arguments(monkeypatch, subpixel, "decompose")
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=14)
    ct = cotangent(conv("lax"), x, w)
    calls.clear()
    jax.jit(lambda a, b, c: jax.vjp(lambda a_: conv("auto")(a_, b), a)[1](c)).lower(x, w, ct)
    assert len(calls) == 2, calls
    trains_as_lax_float64(conv, x, w, check=True)


def check_transforms(conv, x, w, ct):
    """``conv("auto")`` equals ``conv("lax")`` (float64) under forward mode
    (`jax.jvp` along both arguments), a second derivative (the gradient of the squared
    norm of the input and weight gradients) and `jax.vmap` of the VJP over two output
    gradients: the written-out derivative terms keep working under every transform."""
    rng = np.random.default_rng(11)
    tx, tw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)

    def transforms(impl):
        f = conv(impl)
        _, tangent = jax.jvp(f, (x, w), (tx, tw))

        def grads_norm(a, b):
            ga, gb = jax.vjp(f, a, b)[1](ct)
            return jnp.sum(ga**2) + jnp.sum(gb**2)

        second = jax.grad(grads_norm, (0, 1))(x, w)
        batched = jax.vmap(lambda c: jax.vjp(f, x, w)[1](c))(jnp.stack([ct, 2 * ct]))
        return tangent, second, batched

    got, want = jax.jit(lambda: (transforms("auto"), transforms("lax")))()
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * float(np.max(np.abs(b))))


def _spec_of(x_shape, w_shape, kwargs):
    """``(spec, x_shape, w_shape)`` of `jaxconv.conv` on these channels-first shapes."""
    nd = len(x_shape) - 2
    plan = _spec.conv_plan(f"conv{nd}d", x_shape, w_shape, None, ndim=nd, **kwargs)
    return plan.spec, x_shape, w_shape


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, takes",
    [
        ((2, 3, 30, 30), (16, 3, 7, 7), dict(stride=2, padding=3), True),  # a 7x7 stem
        ((2, 1, 20, 20), (8, 1, 5, 5), dict(stride=2, padding=2), True),  # grey
        ((2, 1, 20, 20), (8, 1, 5, 5), dict(padding=2), False),  # unstrided
        ((2, 3, 21, 19), (8, 3, 5, 5), dict(stride=(2, 1), padding=(2, 0)), True),
        ((2, 4, 21, 19), (8, 4, 5, 5), dict(stride=(2, 1), padding=(2, 0)), False),  # 4
        ((1, 1, 400, 200), (8, 1, 11, 11), dict(stride=(2, 1), padding=5), False),  # 19 MB
        ((2, 3, 30, 30), (16, 3, 7, 7), dict(stride=2, padding=3), "small"),  # 0.1 MFLOP
        ((2, 3, 20, 20), (8, 3, 4, 4), dict(stride=2, padding=1), False),  # matmul's
        ((2, 5, 20, 20), (8, 5, 5, 5), dict(stride=2, padding=2), False),  # 5 inputs
        ((2, 3, 24, 24), (8, 3, 5, 5), dict(stride=2, padding=4, dilation=2), False),
        ((2, 6, 20, 20), (8, 3, 5, 5), dict(stride=2, padding=2, groups=2), False),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_few_inputs_weight_gradient_by_patches(
    monkeypatch, retrace, x_shape, w_shape, kwargs, takes, channels_last
):
    """The weight gradient of a 2-D convolution from at most 3 input channels with more
    than 16 taps and a stride runs as one product of patches per image
    (`matmul.per_image_patches_weight_gradient`, `_dispatch._few_inputs_weight_gradient`);
    from at least 2e8 FLOPs ("small": only with that threshold left as it is, it is
    not taken), not for `matmul`'s small kernels, more input channels, unstrided,
    dilated or grouped kernels, nor past 16 MB of patches per image (each of those
    strided, so that its own condition keeps it off). Values and both gradients equal
    `lax`'s (float64), and so do forward mode, second derivatives and `vmap`."""
    if takes != "small":
        monkeypatch.setattr(_dispatch, "FEW_INPUTS_WEIGHT_GRADIENT_MIN_FLOPS", 0)
    calls = []
    original = matmul_impl.per_image_patches_weight_gradient

    def spy(*args):
        calls.append(args[-1])
        return original(*args)

    monkeypatch.setattr(matmul_impl, "per_image_patches_weight_gradient", spy)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))

    def conv(impl):
        return lambda a, b: jaxconv.conv2d(a, b, channels_last=channels_last, impl=impl, **kwargs)

    ct = cotangent(conv("lax"), x, w)
    got, want = values_and_vjps([conv("auto"), conv("lax")], (x, w), ct)
    assert bool(calls) == (takes is True), calls
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * float(np.max(np.abs(b))))
    if takes is True:
        check_transforms(conv, x, w, ct)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
def test_chunked_weight_gradient_rule():
    """`_dispatch._chunked_weight_gradient`: ResNet's 3x3 stride-2 widening layers on
    inputs past `ROWS_MAX_STRIDED_INPUT_ELEMENTS`, in either layout; not on smaller
    inputs, to fewer than twice the input channels, with other kernels, strides or
    dilations, grouped, nor in 1-D or 3-D."""
    rule = _dispatch._chunked_weight_gradient
    base = dict(stride=2, padding=1)
    for layout in (False, True):
        spec, x_shape, w_shape = _spec_of((16, 64, 56, 56), (128, 64, 3, 3), base)
        assert rule(dataclasses.replace(spec, channels_last=layout), x_shape, w_shape)
    assert rule(*_spec_of((2, 16, 400, 400), (32, 16, 3, 3), dict(stride=2)))  # unpadded
    for x_shape, w_shape, kwargs in [
        ((8, 64, 56, 56), (128, 64, 3, 3), base),  # 1.6M elements
        # (folded whatever the input on at most 4 images to at most 16 channels)
        ((4, 8, 400, 400), (16, 8, 3, 3), base),
        ((2, 8, 100, 100), (16, 8, 3, 3), base),
        ((16, 64, 56, 56), (127, 64, 3, 3), base),
        ((16, 64, 56, 56), (128, 64, 4, 4), base),
        ((16, 64, 56, 56), (128, 64, 2, 2), dict(stride=2)),
        ((16, 64, 56, 56), (128, 64, 3, 3), dict(padding=1)),
        ((16, 64, 56, 56), (128, 64, 3, 3), dict(stride=(2, 1), padding=1)),
        ((16, 64, 56, 56), (128, 64, 3, 3), dict(stride=2, padding=2, dilation=2)),
        ((16, 64, 56, 56), (128, 32, 3, 3), dict(stride=2, padding=1, groups=2)),
        ((16, 64, 3136), (128, 64, 3), base),
        ((4, 64, 16, 56, 56), (128, 64, 3, 3, 3), base),
    ]:
        assert not rule(*_spec_of(x_shape, w_shape, kwargs)), (x_shape, w_shape, kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64, np.complex128])
def test_chunked_patches_weight_gradient_dtypes(monkeypatch, retrace, dtype):
    """`matmul.chunked_patches_weight_gradient` sums its chunks in the operands' dtype
    (float32 with 64-bit types enabled, complex ones): the dtype and value of `lax`'s
    weight gradient, over several steps."""
    from jaxconv._impls import FORWARDS

    monkeypatch.setattr(matmul_impl, "PATCHES_CHUNK_BYTES", 1)  # an image a step
    spec, x_shape, w_shape = _spec_of((3, 4, 9, 9), (6, 4, 3, 3), dict(stride=2, padding=1))
    rng = np.random.default_rng(3)

    def draw(shape):
        a = rng.standard_normal(shape)
        return (a + 1j * rng.standard_normal(shape) if np.iscomplexobj(dtype(0)) else a).astype(
            dtype
        )

    x, w = draw(x_shape), draw(w_shape)
    y, vjp = jax.vjp(lambda b: FORWARDS["lax"](x, b, spec), w)
    ct = draw(y.shape)
    (want,) = vjp(ct)
    got = jax.jit(matmul_impl.chunked_patches_weight_gradient, static_argnums=(2, 3))(
        x, ct, spec, w_shape
    )
    assert got.dtype == want.dtype == dtype
    tol = 1e-5 if dtype(0).real.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * float(np.max(np.abs(want))))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "w_shape, takes", [((32, 8, 3, 3), True), ((32, 8, 4, 4), False), ((12, 8, 3, 3), False)]
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_chunked_weight_gradient(monkeypatch, retrace, w_shape, takes, channels_last):
    """Where `_dispatch._chunked_weight_gradient` says (its input bound lowered, and the
    rows' FLOPs floor, so that a small layer qualifies), `auto` takes the weight
    gradient by `matmul.chunked_patches_weight_gradient` (an image a step), and its value
    and both gradients equal `lax`'s (float64), under every transform too."""
    monkeypatch.setattr(_dispatch, "ROWS_MAX_STRIDED_INPUT_ELEMENTS", 1000)
    monkeypatch.setattr(_dispatch, "ROWS_MIN_FLOPS", 0)
    monkeypatch.setattr(matmul_impl, "PATCHES_CHUNK_BYTES", 1)  # an image a step
    calls = spy_third_arguments(monkeypatch, matmul_impl, "chunked_patches_weight_gradient")
    kwargs = dict(stride=2, padding=1)
    x, w, conv = float64_layer((4, 8, 20, 20), w_shape, kwargs, channels_last, seed=6)
    trains_as_lax_float64(conv, x, w, check=takes)
    assert bool(calls) == takes


def test_many_to_few_by_taps_rule():
    """`_dispatch._many_to_few_by_taps`: dense unstrided convolutions of more than one
    tap from at least `MANY_TO_FEW_MIN_IN_CHANNELS` channels to at most
    `lax.EIGEN_FEW_OUT_CHANNELS`, with at most `MANY_TO_FEW_MAX_INPUT_PER_OUTPUT` input
    positions an output and products within `lax.MALLOC_MAX_HEAP_BLOCK`; on
    `lax.EIGEN_FEW_OUT_CHANNELS_MIN_ROWS` rows or more only in 1-D and 2-D, with products
    of at most `MANY_TO_FEW_MANY_ROWS_MAX_BYTES`, values on maps of at most
    `MANY_TO_FEW_MANY_ROWS_VALUE_MAX_POSITIONS`; values only in 2-D and 3-D and on at
    least `MANY_TO_FEW_VALUE_MIN_ROWS` rows."""
    from jaxconv._impls import lax as lax_impl

    rule = _dispatch._many_to_few_by_taps
    assert (_dispatch.MANY_TO_FEW_MIN_IN_CHANNELS, _dispatch.MANY_TO_FEW_VALUE_MIN_ROWS) == (
        256,
        512,
    )
    assert _dispatch.MANY_TO_FEW_MAX_INPUT_PER_OUTPUT == 2
    assert _dispatch.MANY_TO_FEW_MANY_ROWS_MAX_BYTES == 16 * 2**20
    assert _dispatch.MANY_TO_FEW_MANY_ROWS_VALUE_MAX_POSITIONS == 3136
    assert (lax_impl.EIGEN_FEW_OUT_CHANNELS, lax_impl.EIGEN_FEW_OUT_CHANNELS_MIN_ROWS) == (
        24,
        6272,
    )
    same = dict(padding=1)
    for x_shape, w_shape, kwargs, value, takes in [
        ((8, 256, 8, 8), (24, 256, 3, 3), same, True, True),  # 512 rows
        ((4, 256, 8, 8), (24, 256, 3, 3), same, True, False),  # a value on 256 rows
        ((4, 256, 8, 8), (24, 256, 3, 3), same, False, True),
        ((4, 255, 8, 8), (24, 255, 3, 3), same, False, False),  # 255 channels
        ((4, 256, 8, 8), (25, 256, 3, 3), same, False, False),  # to 25
        ((4, 256, 8, 8), (24, 256, 1, 1), {}, False, False),  # 1x1
        ((4, 256, 8, 8), (24, 256, 3, 3), dict(padding=1, stride=(2, 1)), False, False),
        ((4, 512, 8, 8), (24, 256, 3, 3), dict(padding=1, groups=2), False, False),
        ((98, 256, 8, 8), (24, 256, 3, 3), same, False, True),  # 6,272 rows, 5.4 MB
        ((98, 256, 16, 16), (24, 256, 3, 3), same, False, False),  # 21.7 MB
        ((16, 256, 64, 64), (16, 256, 2, 2), same, False, True),  # 16 MiB exactly
        ((16, 256, 64, 64), (17, 256, 2, 2), same, False, False),
        ((98, 256, 4, 4, 4), (24, 256, 3, 3, 3), same, False, False),  # not in 3-D
        ((97, 256, 4, 4, 4), (24, 256, 3, 3, 3), same, False, True),  # 6,208 rows
        ((2, 256, 56, 56), (24, 256, 3, 3), same, True, True),  # a value @56: 6,272 rows
        ((2, 256, 56, 57), (24, 256, 3, 3), same, True, False),  # 3,192 positions
        ((2, 256, 56, 57), (24, 256, 3, 3), same, False, True),  # (not a value)
        ((1, 256, 7, 73), (24, 256, 3, 3), same, True, False),  # a value on 511 rows
        ((1, 256, 7, 73), (24, 256, 3, 3), same, False, True),  # (not a value)
        ((2, 256, 16, 16), (24, 256, 3, 3), same, True, True),
        ((16, 256, 8, 8), (24, 256, 5, 1), {}, True, True),  # two positions an output
        ((16, 256, 8, 8), (24, 256, 6, 1), {}, True, False),  # 2.7
        ((1, 256, 52, 52), (24, 256, 11, 11), {}, False, True),  # products of 31.4 MB
        ((1, 256, 60, 60), (24, 256, 11, 11), {}, False, False),  # 41.8 MB
        ((1, 256, 52, 52), (24, 256, 11, 11), {}, "float64", False),  # 62.8 MB
        ((8, 256, 64), (24, 256, 3), same, False, True),  # 1-D
        ((8, 256, 64), (24, 256, 3), same, True, False),  # not a 1-D value
        ((2, 256, 4, 8, 8), (24, 256, 3, 3, 3), same, True, True),  # 3-D
    ]:
        spec, x_, w_ = _spec_of(x_shape, w_shape, kwargs)
        size = 8 if value == "float64" else 4
        got = rule(spec, x_, w_, value=value is True, itemsize=size)
        assert got == takes, (x_shape, w_shape, kwargs, value)
    spec, x_shape, w_shape = _spec_of((4, 256, 8, 8), (24, 256, 3, 3), same)
    assert not rule(dataclasses.replace(spec, lhs_dilation=(2, 2)), x_shape, w_shape)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, roles",
    [
        # The value (600 products a position: not `_output_taps`'), padding 2.
        ((8, 256, 8, 8), (24, 256, 5, 5), "v"),
        ((2, 24, 8, 8), (256, 24, 3, 3), "x"),  # the input gradient, 256 -> 24
        ((2, 24, 8, 8), (25, 24, 3, 3), ""),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_many_to_few_by_taps(monkeypatch, retrace, x_shape, w_shape, roles, channels_last):
    """Where `_dispatch._many_to_few_by_taps` says, `auto` takes the value, or the input
    gradient, by `matmul.output_taps`, and its value and both gradients equal `lax`'s
    (float64), under every transform too."""
    calls = []
    original = matmul_impl.output_taps

    def spy(a, b, spec, *args, **kwargs):
        calls.append((a.shape[:2], b.shape[:2]))  # (images, C_in), (C_out, C_in)
        return original(a, b, spec, *args, **kwargs)

    monkeypatch.setattr(matmul_impl, "output_taps", spy)
    padding = w_shape[-1] // 2
    spec, *_ = _spec_of(x_shape, w_shape, dict(padding=padding))
    for role in (0, 1):
        assert not _dispatch._output_taps(spec, x_shape, w_shape, role)
    x, w, conv = float64_layer(x_shape, w_shape, dict(padding=padding), channels_last, seed=8)
    trains_as_lax_float64(conv, x, w, check=bool(roles))
    # From 256 channels to 24: the value, or the input gradient's convolution.
    want = {"v": {((8, 256), (24, 256))}, "x": {((2, 256), (24, 256))}, "": set()}
    assert set(calls) == want[roles]
    # Real layers only (half precision runs the rules in float32), not complex ones.
    calls.clear()
    jax.jit(conv("auto")).lower(x.astype(np.complex64), w.astype(np.complex64))
    assert not calls


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
def test_many_to_few_by_taps_not_transposed_phases(monkeypatch):
    """`_dispatch._many_to_few_by_taps` is not asked about the sub-pixel phases of a
    transposed layer (256->16 4x4 stride 2 channels-last, each phase a 256->16 2x2
    convolution, which the rule would take as a layer; not measured as phases), in
    training; it is about the same phase as a layer of its own."""
    calls = []
    original = _dispatch._many_to_few_by_taps

    def spy(*args, **kwargs):
        calls.append(args[2][:2])
        return original(*args, **kwargs)

    monkeypatch.setattr(_dispatch, "_many_to_few_by_taps", spy)
    x = jnp.ones((8, 8, 8, 256), jnp.float32)
    w = jnp.ones((4, 4, 16, 256), jnp.float32)

    def loss(a, b):
        return jnp.sum(jaxconv.conv_transpose2d(a, b, stride=2, padding=1, channels_last=True))

    jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w)
    assert not calls
    phase = jnp.ones((2, 2, 256, 16), jnp.float32)
    jax.jit(lambda a, b: jaxconv.conv2d(a, b, padding=1, channels_last=True)).lower(x, phase)
    assert calls == [(16, 256)]


def test_input_taps_rule():
    """`_dispatch._input_taps`: dense unstrided 2-D and 3-D convolutions of more than
    one tap from at least `INPUT_TAPS_MIN_IN_CHANNELS` channels, on outputs of at most
    `INPUT_TAPS_MAX_POSITIONS` positions an image and at least `INPUT_TAPS_MIN_ROWS`
    rows, whose taps meet the input at no more than `INPUT_TAPS_MAX_MET` of the (output,
    tap) pairs, times ``C_in / INPUT_TAPS_FULL_IN_CHANNELS`` below that many channels
    and ``sqrt(C_in / C_out)`` when widening."""
    rule = _dispatch._input_taps
    assert (
        _dispatch.INPUT_TAPS_MIN_IN_CHANNELS,
        _dispatch.INPUT_TAPS_MAX_POSITIONS,
        _dispatch.INPUT_TAPS_MIN_ROWS,
    ) == (64, 256, 128)
    assert (_dispatch.INPUT_TAPS_MAX_MET, _dispatch.INPUT_TAPS_FULL_IN_CHANNELS) == (0.6, 128)
    d3 = dict(padding=6, dilation=3)  # 5x5 on 7x7: 17 of 35 pairs a dim, 23.6%
    d6 = dict(padding=6, dilation=6)  # 3x3 on 16x16: 36 of 48, 56.2%
    d4 = dict(padding=4, dilation=4)  # 3x3 on 8x8: 16 of 24, 44.4%
    same7 = dict(padding=3)  # 7x7 on 7x7: 37 of 49, 57.0%
    for x_shape, w_shape, kwargs, takes in [
        ((8, 128, 7, 7), (128, 128, 5, 5), d3, True),
        ((8, 64, 7, 7), (64, 64, 5, 5), d3, True),  # 64 channels: up to 30%
        ((8, 63, 7, 7), (63, 63, 5, 5), d3, False),
        ((8, 128, 7, 7), (512, 128, 5, 5), d3, True),  # to 4x as many: up to 30%
        ((8, 128, 7, 7), (2048, 128, 5, 5), d3, False),  # 16x: 15%
        ((1, 128, 16, 16), (128, 128, 3, 3), d6, True),  # 256 positions
        ((1, 128, 16, 17), (128, 128, 3, 3), d6, False),  # 272
        ((2, 128, 8, 8), (128, 128, 3, 3), d4, True),  # 128 rows
        ((1, 128, 8, 8), (128, 128, 3, 3), d4, False),  # 64
        ((4, 128, 7, 7), (128, 128, 7, 7), same7, True),
        ((4, 112, 7, 7), (112, 112, 7, 7), same7, False),  # 112 channels: up to 52.5%
        ((4, 128, 7, 7), (144, 128, 7, 7), same7, False),  # to 144: up to 56.6%
        ((4, 128, 7, 7), (128, 128, 3, 3), dict(padding=1), False),  # 82%
        ((4, 256, 7, 7), (256, 256, 3, 3), dict(padding=1), False),  # 82% from 256
        ((4, 128, 7, 7), (32, 128, 3, 3), dict(padding=1), False),  # 82% narrowing
        ((8, 0, 7, 7), (64, 0, 5, 5), d3, False),  # no channels
        ((8, 64, 7, 7), (0, 64, 5, 5), d3, False),
        ((8, 128, 7, 7), (128, 128, 5, 5), dict(d3, stride=2), False),
        ((8, 256, 7, 7), (128, 128, 5, 5), dict(d3, groups=2), False),
        ((8, 128, 7, 7), (128, 128, 1, 1), dict(padding=3), False),  # 1x1: 29%
        ((64, 128, 7), (128, 128, 5), d3, False),  # not in 1-D
        ((2, 128, 4, 4, 4), (128, 128, 3, 3, 3), dict(padding=2, dilation=2), True),  # 30%
    ]:
        spec, x_, w_ = _spec_of(x_shape, w_shape, kwargs)
        assert rule(spec, x_, w_) == takes, (x_shape, w_shape, kwargs)
    spec, x_shape, w_shape = _spec_of((8, 128, 7, 7), (128, 128, 5, 5), d3)
    assert not rule(dataclasses.replace(spec, lhs_dilation=(2, 2)), x_shape, w_shape)
    # Channels-last 2-D layers of more than `INPUT_TAPS_CHANNELS_LAST_MAX_TAPS` taps to
    # `INPUT_TAPS_CHANNELS_LAST_MIN_OUT_CHANNELS` or more: up to
    # `INPUT_TAPS_MAX_MET_MANY_TAPS_CHANNELS_LAST` (45%) of the pairs, times the factors.
    assert _dispatch.INPUT_TAPS_MAX_MET_MANY_TAPS_CHANNELS_LAST == 0.45
    assert _dispatch.INPUT_TAPS_CHANNELS_LAST_MAX_TAPS == 25
    assert _dispatch.INPUT_TAPS_CHANNELS_LAST_MIN_OUT_CHANNELS == 128
    for x_shape, w_shape, kwargs, first, last in [
        ((8, 512, 7, 7), (128, 512, 7, 7), same7, True, False),  # 49 taps, 57.0%
        ((8, 512, 7, 7), (127, 512, 7, 7), same7, True, True),  # to 127 channels
        ((8, 512, 7, 7), (64, 512, 7, 7), same7, True, True),
        ((8, 256, 7, 7), (256, 256, 6, 6), dict(padding=3), True, False),  # 36 taps, 56.2%
        ((8, 256, 6, 6), (256, 256, 6, 6), dict(padding=4, dilation=2), True, True),  # 25.0%
        ((4, 256, 8, 8), (256, 256, 7, 7), dict(padding=6, dilation=2), True, True),  # 32.7%
        ((16, 256, 5, 5), (256, 256, 5, 5), dict(padding=2), True, True),  # 25 taps, 57.8%
        ((4, 256, 14, 14), (256, 256, 7, 7), dict(padding=5, dilation=3), True, True),  # 44.4%
        ((4, 256, 10, 10), (256, 256, 7, 7), dict(padding=5, dilation=2), True, False),  # 46.1%
        ((2, 128, 4, 4, 4), (128, 128, 3, 3, 3), dict(padding=1), True, True),  # 3-D, 57.9%
    ]:
        spec, x_, w_ = _spec_of(x_shape, w_shape, kwargs)
        cl = dataclasses.replace(spec, channels_last=True)
        assert (rule(spec, x_, w_), rule(cl, x_, w_)) == (first, last), (x_shape, w_shape)
    # The same bound on an input gradient's convolution: 7x7 128->512 @7 "same" (57.0%)
    # widens, so its value stays XLA's; its input gradient's, 512->128, is the first
    # case above.
    spec, x_, w_ = _spec_of((8, 128, 7, 7), (512, 128, 7, 7), same7)
    for channels_last, takes in [(False, True), (True, False)]:
        layer = dataclasses.replace(spec, channels_last=channels_last)
        problem = _derivatives.input_gradient_problem(x_, w_, layer)
        assert not rule(layer, x_, w_)
        assert problem[2].channels_last == channels_last
        assert rule(problem[2], *problem[:2]) == takes
    # Weight gradients from `INPUT_TAPS_WEIGHT_GRADIENT_MIN_DEPTH` (image, position)
    # pairs a tap: 3x3 dilation 4 on 8x8 meets 256 pairs in all, 28.4 an image a tap.
    assert _dispatch.INPUT_TAPS_WEIGHT_GRADIENT_MIN_DEPTH == 64
    for batch, takes in [(2, False), (3, True)]:
        spec, x_, w_ = _spec_of((batch, 128, 8, 8), (128, 128, 3, 3), d4)
        assert rule(spec, x_, w_)
        assert rule(spec, x_, w_, weight_gradient=True) == takes, batch
    # Input gradients whose windows and weights pass `lax.MALLOC_MAX_HEAP_BLOCK` (32 MiB)
    # only to `INPUT_TAPS_PAST_BLOCK_INPUT_GRADIENT_MIN_OUT_CHANNELS` channels or more:
    # found on 7x7 32->512 @7 "same" batch 16 (its input gradient's convolution 512->32;
    # 16 x 1369 pairs x 512 + 49 x 32 x 512 floats, 48.1 MB).
    assert _dispatch.INPUT_TAPS_PAST_BLOCK_INPUT_GRADIENT_MIN_OUT_CHANNELS == 256
    assert _dispatch.lax_impl.MALLOC_MAX_HEAP_BLOCK == 32 * 2**20
    # 1369 x 512 x 4 bytes an image and 49 x 32 x 512 x 4 of weights: 10 images 31.2
    # MB, 11 34.1 MB (the block 33.6 MB). Values alone (not differentiated) likewise, to
    # `INPUT_TAPS_PAST_BLOCK_VALUE_MIN_OUT_CHANNELS` channels or more, where the taps
    # meet the input on at least `INPUT_TAPS_PAST_BLOCK_VALUE_MIN_MET` of the pairs (57.0%
    # here): to 64 channels, 49 x 64 x 512 x 4 bytes of weights, 9 images 31.7 MB, 10
    # 34.5 MB.
    assert _dispatch.INPUT_TAPS_PAST_BLOCK_VALUE_MIN_OUT_CHANNELS == 128
    assert _dispatch.INPUT_TAPS_PAST_BLOCK_VALUE_MIN_MET == 0.3
    for role, batch, c_out, itemsize, takes in [
        ("input_gradient", 10, 32, 4, True),
        ("input_gradient", 11, 32, 4, False),
        ("input_gradient", 11, 32, 2, True),  # half as many bytes
        ("input_gradient", 11, 255, 4, False),
        ("input_gradient", 11, 256, 4, True),
        ("alone", 9, 64, 4, True),
        ("alone", 10, 64, 4, False),
        ("alone", 10, 64, 2, True),
        ("alone", 10, 127, 4, False),
        ("alone", 10, 128, 4, True),
    ]:
        spec, x_, w_ = _spec_of((batch, 512, 7, 7), (c_out, 512, 7, 7), same7)
        # (a differentiated value, which the bound leaves alone)
        assert rule(spec, x_, w_, itemsize=itemsize), (batch, c_out)
        taken = rule(spec, x_, w_, itemsize=itemsize, **{role: True})
        assert taken == takes, (role, batch, c_out, itemsize)
    # 5x5 dilation 3 on 7x7 meets 23.6% of the pairs: past the block at 240 images
    # (240 x 289 x 128 x 4 bytes of windows, 35.5 MB) and still taken.
    spec, x_, w_ = _spec_of((240, 128, 7, 7), (64, 128, 5, 5), d3)
    assert rule(spec, x_, w_, alone=True)
    assert not rule(spec, x_, w_, input_gradient=True)  # (the share not asked there)
    # ... while 3x3 dilation 4 on 8x8 (44.4%, 256 pairs) at 272 images (35.9 MB) is not.
    spec, x_, w_ = _spec_of((272, 128, 8, 8), (64, 128, 3, 3), d4)
    assert rule(spec, x_, w_) and not rule(spec, x_, w_, alone=True)


def _spy_input_taps(monkeypatch) -> list:
    """The (batch, channels) of every `matmul.input_taps` call from now on."""
    calls = []
    original = matmul_impl.input_taps

    def spy(a, b, spec, **kwargs):
        calls.append(a.shape[:2])
        return original(a, b, spec, **kwargs)

    monkeypatch.setattr(matmul_impl, "input_taps", spy)
    return calls


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "batch, itemsize, takes", [(8, 4, True), (10, 4, True), (11, 4, False), (8, 8, False)]
)
def test_input_taps_input_gradient_past_heap_block(monkeypatch, retrace, batch, itemsize, takes):
    """`auto` asks `_dispatch._input_taps` about a layer's input gradient with its
    element size: 7x7 32->512 @7 "same" trains its input gradient by
    `matmul.input_taps` while the windows and weights stay within glibc's largest heap
    block (up to 10 images in float32; 8 in float64 pass it), by XLA's convolution
    past it."""
    calls = _spy_input_taps(monkeypatch)
    dtype = {4: jnp.float32, 8: jnp.float64}[itemsize]
    x = jnp.ones((batch, 32, 7, 7), dtype)
    w = jnp.ones((512, 32, 7, 7), dtype)

    def loss(a):
        return jnp.sum(jaxconv.conv2d(a, w, padding=3).astype(jnp.float32))

    jax.jit(jax.grad(loss)).lower(x)
    assert calls == ([(batch, 512)] if takes else [])


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("batch, takes_alone", [(9, True), (10, False)])
def test_input_taps_value_past_heap_block(monkeypatch, retrace, batch, takes_alone):
    """`auto` asks `_dispatch._input_taps` about a value with whether it is
    differentiated: 7x7 512->64 @7 "same" runs its value alone by `matmul.input_taps`
    while the windows and weights stay within glibc's largest heap block (up to 9
    images in float32), by XLA's convolution past it; differentiated, by
    `matmul.input_taps` either way."""
    calls = _spy_input_taps(monkeypatch)
    x = jnp.ones((batch, 512, 7, 7), jnp.float32)
    w = jnp.ones((64, 512, 7, 7), jnp.float32)

    def value(a):
        return jaxconv.conv2d(a, w, padding=3)

    jax.jit(value).lower(x)
    assert calls == ([(batch, 512)] if takes_alone else [])
    calls.clear()
    jax.jit(jax.grad(lambda a: jnp.sum(value(a) ** 2))).lower(x)
    assert (batch, 512) in calls


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, roles",
    [
        # 5x5 dilation 3 on 7x7 (the taps meet the input at 23.6% of the pairs).
        ((8, 96, 7, 7), (64, 96, 5, 5), dict(padding=6, dilation=3), "vxw"),
        ((8, 64, 7, 7), (32, 64, 5, 5), dict(padding=6, dilation=3), "vw"),
        ((8, 32, 7, 7), (64, 32, 5, 5), dict(padding=6, dilation=3), "x"),  # 64 -> 32
        ((8, 64, 7, 7), (64, 64, 3, 3), dict(padding=1), ""),  # 82%
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_input_taps(monkeypatch, retrace, x_shape, w_shape, kwargs, roles, channels_last):
    """Where `_dispatch._input_taps` says, `auto` takes the value, or the input
    gradient, by `matmul.input_taps`, the weight gradient by
    `matmul.input_taps_weight_gradient`, and its value and both gradients equal `lax`'s
    (float64), under every transform too."""
    calls = []
    original = matmul_impl.input_taps
    original_weight_gradient = matmul_impl.input_taps_weight_gradient

    def spy(a, b, spec, **kwargs):
        calls.append((a.shape[:2], b.shape[:2]))  # (images, C_in), (C_out, C_in)
        return original(a, b, spec, **kwargs)

    def spy_weight_gradient(a, ct, spec, w_shape):
        calls.append(("w", a.shape[:2], tuple(w_shape[:2])))
        return original_weight_gradient(a, ct, spec, w_shape)

    monkeypatch.setattr(matmul_impl, "input_taps", spy)
    monkeypatch.setattr(matmul_impl, "input_taps_weight_gradient", spy_weight_gradient)
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=9)
    trains_as_lax_float64(conv, x, w, check=bool(roles))
    value = ((x_shape[0], w_shape[1]), w_shape[:2])
    gradient = ((x_shape[0], w_shape[0]), (w_shape[1], w_shape[0]))
    weight = ("w", (x_shape[0], w_shape[1]), w_shape[:2])
    want = {role for role, key in ((value, "v"), (gradient, "x"), (weight, "w")) if key in roles}
    assert set(calls) == want
    # Real layers only (half precision runs the rules in float32), not complex ones.
    calls.clear()
    xc, wc = x.astype(np.complex64), w.astype(np.complex64)
    jax.jit(lambda a, b: jax.vjp(conv("auto"), a, b)[1](conv("auto")(a, b))).lower(xc, wc)
    assert not calls


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
def test_input_taps_mask_computed_once():
    """Trained through a ReLU, the mask on the output gradient is computed once, not in
    each of the nine taps' slices that `input_taps` and its weight gradient cut from it
    (`_tap_window`: the operands are written out once): without that, the compiled
    program held 18 comparisons, here 3."""
    x, w = jnp.ones((4, 128, 14, 14)), jnp.ones((128, 128, 3, 3))

    def loss(a, b):
        return jnp.sum(jax.nn.relu(jaxconv.conv2d(a, b, padding=6, dilation=6)))

    spec, *_ = _spec_of(x.shape, w.shape, dict(padding=6, dilation=6))
    assert _dispatch._input_taps(spec, x.shape, w.shape, weight_gradient=True)
    text = jax.jit(jax.grad(loss, (0, 1))).lower(x, w).compile().as_text()
    assert text.count(" compare(") <= 4


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
def test_input_taps_weight_in_callers_layout():
    """Channels-last, `input_taps` slices each tap's ``(C_in, C_out)`` weight from the
    caller's ``(*K, C_in, C_out)`` as it lies: the compiled value holds no tap's weight
    transposed to ``(C_out, C_in)`` (XLA wrote those out per tap: 3x3 dilation 6
    256->512 @10 batch 4 ran 1.8 ms against 1.1). Nor does the input gradient, whose
    flipped weight's taps the canonical slice reads where they lie."""
    x, w = jnp.ones((4, 8, 8, 128)), jnp.ones((3, 3, 128, 192))
    kwargs = dict(padding=6, dilation=6)
    spec, x_shape, w_shape = _spec_of((4, 128, 8, 8), (192, 128, 3, 3), kwargs)
    spec = dataclasses.replace(spec, channels_last=True)
    assert _dispatch._input_taps(spec, x_shape, w_shape)
    problem = _derivatives.input_gradient_problem(x_shape, w_shape, spec)
    assert _dispatch._input_taps(problem[2], *problem[:2])

    def conv(a, b):
        return jaxconv.conv2d(a, b, **kwargs, channels_last=True)

    value = jax.jit(conv).lower(x, w).compile().as_text()
    dx = jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b)))).lower(x, w).compile().as_text()
    for text in (value, dx):
        assert text.count("[128,192]{") >= 9
        assert "[192,128]{" not in text


def test_input_taps_no_channels():
    """A layer of no input channels, whose input gradient's convolution has no output
    channels, still differentiates under `auto` (zeros)."""

    def loss(a, b):
        return jnp.sum(jaxconv.conv2d(a, b, padding=6, dilation=3))

    dx, dw = jax.grad(loss, (0, 1))(jnp.ones((8, 0, 7, 7)), jnp.ones((64, 0, 5, 5)))
    assert dx.shape == (8, 0, 7, 7) and dw.shape == (64, 0, 5, 5)


def test_matmul_weight_gradient_rows_rule():
    """`_dispatch._matmul_weight_gradient_rows`: channels-last dense layers of more than
    one tap on at least `MATMUL_WEIGHT_GRADIENT_MIN_ROWS` output rows (batch times
    output positions), strided, dilated, 1-D and 3-D too; not channels-first, 1x1,
    grouped, input-dilated (transposed) or on fewer rows."""
    rule = _dispatch._matmul_weight_gradient_rows
    assert _dispatch.MATMUL_WEIGHT_GRADIENT_MIN_ROWS == 1024

    def of(x_shape, w_shape, kwargs, channels_last=True):
        spec, x_shape, w_shape = _spec_of(x_shape, w_shape, kwargs)
        return dataclasses.replace(spec, channels_last=channels_last), x_shape, w_shape

    for x_shape, w_shape, kwargs in [
        ((2, 8, 24, 24), (96, 8, 3, 3), dict(padding=1)),  # 1,152 rows
        ((1, 8, 34, 34), (96, 8, 3, 3), {}),  # 1,024 rows
        ((1, 8, 65, 65), (96, 8, 3, 3), dict(stride=2)),  # 32 x 32
        ((1, 8, 36, 36), (96, 8, 3, 3), dict(dilation=2)),
        ((1, 8, 33, 32), (96, 8, 2, 1), {}),  # two taps
        ((2, 8, 514), (96, 8, 3), {}),
        ((2, 8, 10, 10, 10), (96, 8, 3, 3, 3), dict(padding=1)),
    ]:
        assert rule(*of(x_shape, w_shape, kwargs)), (x_shape, w_shape, kwargs)
    for x_shape, w_shape, kwargs, channels_last in [
        ((1, 8, 34, 33), (96, 8, 3, 3), {}, True),  # 1,023 rows
        ((1, 8, 63, 67), (96, 8, 3, 3), dict(stride=2), True),  # 31 x 33
        ((2, 8, 24, 24), (96, 8, 3, 3), dict(padding=1), False),  # channels-first
        ((2, 8, 24, 24), (96, 8, 1, 1), {}, True),  # 1x1
        ((2, 8, 24, 24), (96, 4, 3, 3), dict(padding=1, groups=2), True),
    ]:
        spec, x_, w_ = of(x_shape, w_shape, kwargs, channels_last)
        assert not rule(spec, x_, w_), (x_shape, w_shape, kwargs, channels_last)
    spec, x_shape, w_shape = of((2, 8, 24, 24), (96, 8, 3, 3), dict(padding=1))
    assert not rule(dataclasses.replace(spec, lhs_dilation=(2, 2)), x_shape, w_shape)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, kwargs, takes",
    [
        ((2, 8, 24, 24), dict(padding=1), True),
        ((2, 8, 22, 22), dict(padding=1), False),  # 968 rows
        ((2, 8, 26, 26), dict(padding=2, dilation=2), True),
    ],
)
def test_matmul_weight_gradient_rows(monkeypatch, retrace, x_shape, kwargs, takes):
    """Where `_dispatch._matmul_weight_gradient_rows` says, `auto` takes `matmul`'s
    weight gradient of a channels-last layer (3x3 8->96, which the rules give `matmul`'s
    derivatives) by `matmul.chunked_patches_weight_gradient`, and its value and both
    gradients equal `lax`'s (float64), under every transform too."""
    calls = spy_third_arguments(monkeypatch, matmul_impl, "chunked_patches_weight_gradient")
    x, w, conv = float64_layer(x_shape, (96, 8, 3, 3), kwargs, True, seed=7)
    trains_as_lax_float64(conv, x, w, check=takes)
    assert bool(calls) == takes


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 3, 13, 11), (5, 3, 3, 4), dict(stride=(2, 3), padding=((1, 2), (0, 3)))),
        ((3, 2, 9, 9), (4, 2, 3, 3), dict(dilation=2, padding=1)),
        ((0, 2, 9, 9), (4, 2, 3, 3), dict(padding=1)),  # an empty batch
        ((2, 1, 9, 9), (4, 1, 3, 3), dict(padding="cropped")),  # (-1, 0), (1, 1)
        ((2, 2, 11), (3, 2, 4), dict(stride=2, padding=1)),  # 1-D: one slice per tap
        ((1, 2, 5, 6, 7), (3, 2, 2, 3, 2), dict(padding=1)),  # 3-D
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, jnp.bfloat16])
# `matmul.chunked_patches_weight_gradient` with chunks of 1 or 2 images (or fewer where
# 2 does not divide the batch) or the whole batch at once.
@pytest.mark.parametrize("chunk", [None, 1, 2, 1000])
def test_patches_weight_gradients(
    monkeypatch, retrace, x_shape, w_shape, kwargs, channels_last, dtype, chunk
):
    """`matmul.per_image_patches_weight_gradient` (``chunk`` None) and
    `matmul.chunked_patches_weight_gradient` (``chunk`` images' patches a step) are the
    weight gradient, on canonical arrays, whatever the padding (cropping included),
    stride and dilation, for either layout of the output gradient, an empty batch,
    bfloat16 (accumulated in float32), and in 1-D and 3-D as in 2-D."""
    import dataclasses

    from jaxconv._impls import FORWARDS

    cropped = kwargs.get("padding") == "cropped"  # (the public functions pad, never crop)
    nd = len(x_shape) - 2
    plan = _spec.conv_plan(
        f"conv{nd}d", x_shape, w_shape, None, ndim=nd, **({} if cropped else kwargs)
    )
    spec = dataclasses.replace(plan.spec, channels_last=channels_last)
    if cropped:
        spec = dataclasses.replace(spec, padding=((-1, 0), (1, 1)))
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    w = jnp.asarray(rng.standard_normal(w_shape), dtype)
    lax_conv = FORWARDS["lax"]
    y, vjp = jax.vjp(lambda b: lax_conv(x.astype(np.float64), b, spec), w.astype(np.float64))
    ct = jnp.asarray(rng.standard_normal(y.shape), dtype)
    (want,) = vjp(ct.astype(np.float64))
    if chunk is None:
        function = matmul_impl.per_image_patches_weight_gradient
    else:
        function = matmul_impl.chunked_patches_weight_gradient
        per_image = math.prod(y.shape[2:]) * math.prod(w_shape[1:]) * x.dtype.itemsize
        monkeypatch.setattr(matmul_impl, "PATCHES_CHUNK_BYTES", chunk * per_image)
    got = jax.jit(function, static_argnums=(2, 3))(x, ct, spec, w_shape)
    assert got.shape == w_shape and got.dtype == dtype
    if chunk is not None and x_shape[0]:
        # One step per chunk: the largest divisor of the batch within ``chunk`` images.
        n = x_shape[0]
        images = max(c for c in range(1, min(chunk, n) + 1) if n % c == 0)
        jaxpr = jax.make_jaxpr(function, static_argnums=(2, 3))(x, ct, spec, w_shape)
        steps = [e.params["length"] for e in jaxpr.eqns if e.primitive.name == "scan"]
        assert steps == [n // images]
    tol = 1e-10 if dtype == np.float64 else 2e-2
    scale = max(float(np.max(np.abs(want))), 1.0)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding, lhs_dilation, rhs_dilation, groups",
    [
        ((2, 5, 9, 8), (3, 5, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 1),
        ((2, 4, 13, 11), (2, 4, 3, 4), (2, 3), ((1, 2), (0, 3)), (1, 1), (1, 1), 1),
        ((2, 6, 9, 9), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (2, 2), 2),
        ((2, 4, 9, 9), (2, 4, 3, 3), (1, 1), ((-1, 0), (1, 1)), (1, 1), (1, 1), 1),  # cropped
        ((2, 3, 5, 4), (2, 3, 3, 2), (1, 2), ((2, 2), (1, 1)), (2, 3), (1, 1), 1),
        ((0, 4, 9, 9), (2, 4, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 1),  # empty
        ((2, 4, 11), (1, 4, 5), (2,), ((2, 2),), (1,), (1,), 1),  # 1-D
        ((1, 3, 5, 6, 4), (2, 3, 2, 3, 2), (1, 1, 1), ((1, 1),) * 3, (1,) * 3, (1,) * 3, 1),
        ((1, 3, 2, 2), (1, 3, 3, 3), (1, 1), ((2, 2), (2, 2)), (1, 1), (1, 1), 1),  # past
    ],
)
# Image by image channels-first only (channels-last ignores it).
@pytest.mark.parametrize("channels_last, per_image", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("dtype", [np.float64, jnp.bfloat16])
def test_output_taps(
    x_shape,
    w_shape,
    stride,
    padding,
    lhs_dilation,
    rhs_dilation,
    groups,
    channels_last,
    dtype,
    per_image,
):
    """`matmul.output_taps` (every tap's products at once, then shifted and summed) is
    the convolution on canonical arrays, and its transposes are the input and weight
    gradients, whatever the stride, padding (cropping included), dilation, input
    dilation, groups, layout flag, batch (empty too) and number of spatial dims, with
    the product taken image by image or not; bfloat16 accumulated in float32."""

    spec = _spec.ConvSpec(
        stride, padding, lhs_dilation, rhs_dilation, groups, None, channels_last=channels_last
    )
    x, w, ct, want = lax_float64(x_shape, w_shape, spec, dtype, seed=3)
    run = functools.partial(matmul_impl.output_taps, spec=spec, per_image=per_image)
    (got,) = values_and_vjps([run], (x, w), ct)
    assert_near_float64(got, want, dtype)


def lax_float64(x_shape, w_shape, spec, dtype, seed):
    """Random ``dtype`` input, weight and output gradient, and `lax`'s value and both
    gradients of them computed in float64."""
    from jaxconv._impls import FORWARDS

    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    w = jnp.asarray(rng.standard_normal(w_shape), dtype)
    wide = (x.astype(np.float64), w.astype(np.float64))
    y, vjp = jax.vjp(lambda a, b: FORWARDS["lax"](a, b, spec), *wide)
    ct = jnp.asarray(rng.standard_normal(y.shape), dtype)
    return x, w, ct, (y, *vjp(ct.astype(np.float64)))


def assert_near_float64(got, want, dtype):
    """Each of ``got`` (``dtype``) equals its float64 counterpart in ``want``, to 1e-10
    in float64 and 2e-2 of the largest magnitude otherwise (bfloat16)."""
    tol = 1e-10 if dtype == np.float64 else 2e-2
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and a.dtype == dtype
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding, groups",
    [
        ((2, 5, 9, 8), (3, 5, 3, 3), (2, 2), ((1, 1), (1, 1)), 1),
        ((2, 4, 13, 11), (2, 4, 3, 4), (2, 3), ((1, 2), (0, 3)), 1),
        ((2, 6, 10, 9), (4, 3, 3, 3), (2, 2), ((1, 1), (1, 1)), 2),
        ((2, 4, 9, 9), (2, 4, 3, 3), (2, 2), ((-1, 0), (1, -1)), 1),  # cropped
        ((2, 4, 9, 9), (2, 4, 1, 3), (2, 2), ((0, 0), (1, 1)), 1),  # a kernel under the stride
        ((2, 4, 8, 8), (3, 4, 4, 4), (2, 2), ((1, 1), (1, 1)), 1),  # folds exactly
        ((0, 4, 9, 9), (2, 4, 3, 3), (2, 2), ((1, 1), (1, 1)), 1),  # empty batch
        ((2, 4, 11), (1, 4, 5), (3,), ((2, 2),), 1),  # 1-D
        ((1, 3, 5, 6, 4), (2, 3, 2, 3, 2), (2, 1, 2), ((1, 1),) * 3, 1),  # 3-D
        ((2, 4, 9, 9), (2, 4, 3, 3), (1, 1), ((1, 1), (1, 1)), 1),  # unstrided: inner's
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, jnp.bfloat16])
def test_space_to_depth(x_shape, w_shape, stride, padding, groups, channels_last, dtype):
    """`space_to_depth.forward` (the input and kernel folded space-to-depth, one
    unstrided convolution) is the strided convolution on canonical arrays, and its
    transposes are the input and weight gradients, whatever the stride per dim, padding
    (cropping included), kernel (smaller than the stride too), groups, layout flag,
    batch (empty too) and number of spatial dims."""
    from jaxconv._impls import FORWARDS, space_to_depth

    nd = len(stride)
    spec = _spec.ConvSpec(
        stride, padding, (1,) * nd, (1,) * nd, groups, None, channels_last=channels_last
    )
    x_folded, w_folded, folded = space_to_depth.problem(x_shape, w_shape, spec)
    if space_to_depth.applies(spec):
        assert folded.stride == (1,) * nd and folded.padding == ((0, 0),) * nd
        assert folded.out_spatial(x_folded[2:], w_folded[2:]) == spec.out_spatial(
            x_shape[2:], w_shape[2:]
        )
    x, w, ct, want = lax_float64(x_shape, w_shape, spec, dtype, seed=4)

    def folded_conv(a, b):
        return space_to_depth.forward(a, b, spec, FORWARDS["lax"])

    (got,) = values_and_vjps([folded_conv], (x, w), ct)
    assert_near_float64(got, want, dtype)


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding, dilation, groups, takes",
    [
        ((4, 64, 112, 112), (128, 64, 3, 3), 2, 1, 1, 1, True),
        ((8, 96, 56, 56), (192, 96, 2, 2), 2, 0, 1, 1, True),  # folds to 1x1
        ((8, 64, 113, 113), (128, 64, 3, 3), 2, 0, 1, 1, True),
        ((8, 64, 64, 64), (128, 64, 3, 3), 2, 1, 1, 1, False),  # 2^21 elements
        ((8, 64, 65, 65), (128, 64, 3, 3), 2, 1, 1, 1, True),
        ((4, 64, 112, 112), (128, 64, 3, 3), 1, 1, 1, 1, False),  # unstrided
        ((4, 64, 112, 112), (128, 64, 3, 3), 3, 1, 1, 1, False),  # stride 3
        ((4, 64, 112, 112), (128, 64, 3, 3), (2, 1), 1, 1, 1, False),
        ((4, 64, 112, 112), (128, 64, 1, 1), 2, 0, 1, 1, False),  # kernel under the stride
        ((4, 64, 112, 112), (128, 64, 3, 3), 2, 2, 2, 1, False),  # dilated
        ((4, 64, 112, 112), (128, 32, 3, 3), 2, 1, 1, 2, False),  # grouped
        ((8, 512, 28, 28), (512, 512, 3, 3), 2, 1, 1, 1, False),  # the folded rows lose
        ((8, 512, 28, 28), (16, 512, 3, 3), 2, 1, 1, 1, False),  # to 16 channels
        ((16, 64, 20000), (128, 64, 3), 2, 1, 1, 1, False),  # 1-D
        # Few images to few channels, whatever the input's size (both bounds).
        ((1, 256, 56, 56), (8, 256, 5, 5), 2, 0, 1, 1, True),
        ((4, 16, 12, 12), (16, 16, 3, 3), 2, 1, 1, 1, True),  # 6 output rows
        ((4, 16, 10, 10), (16, 16, 3, 3), 2, 1, 1, 1, False),  # 5: no row
        ((5, 16, 12, 12), (16, 16, 3, 3), 2, 1, 1, 1, False),  # one image more
        ((4, 16, 12, 12), (17, 16, 3, 3), 2, 1, 1, 1, False),  # one channel more
        ((4, 16, 12, 12), (16, 16, 3, 3), 3, 1, 1, 1, False),  # stride 3
        ((4, 16, 12, 12), (16, 8, 3, 3), 2, 1, 1, 2, False),  # grouped
        ((4, 16, 12, 12), (16, 16, 1, 1), 2, 0, 1, 1, False),  # 1x1
    ],
)
def test_space_to_depth_weight_gradient_rule(
    x_shape, w_shape, stride, padding, dilation, groups, takes
):
    """`_dispatch._space_to_depth_weight_gradient` takes dense 2-D layers of stride 2
    with kernels at least that large on inputs of more than 2^21 elements, where the
    folded layer's weight gradient goes by rows, and on any input to at most 16 channels
    from at most 4 images with at least 6 output rows; not unstrided, other strides,
    1x1, dilated, grouped or 1-D layers, nor where the folded layer's rows lose."""
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    spec, _, _ = _spec_of(x_shape, w_shape, kwargs)
    assert _dispatch._space_to_depth_weight_gradient(spec, x_shape, w_shape) == takes


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, calls_expected",
    [
        ((2, 24, 16, 16), (24, 24, 3, 3), dict(stride=2, padding=1), 1),
        ((2, 24, 16, 16), (24, 24, 4, 4), dict(stride=2, padding=1), 1),
        ((2, 24, 16, 16), (32, 24, 2, 2), dict(stride=2), 1),
        ((2, 8, 14, 14), (4, 8, 5, 5), dict(stride=2, padding=2), 1),  # few outputs
        ((2, 24, 16, 16), (24, 24, 3, 3), dict(padding=1), 0),  # unstrided
        ((2, 24, 16, 16), (24, 24, 1, 1), dict(stride=2), 0),  # 1x1
        ((2, 48, 16, 16), (48, 24, 3, 3), dict(stride=2, padding=1, groups=2), 2),  # a group's
        ((1, 24, 4, 12, 12), (24, 24, 3, 3, 3), dict(stride=(1, 2, 2), padding=1), 3),  # planes
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_weight_gradient_by_space_to_depth(
    monkeypatch, retrace, x_shape, w_shape, kwargs, calls_expected, channels_last
):
    """Under auto the weight gradient of a strided 2-D layer on a large input (and of the
    2-D planes of a 3-D one, and of each group's part of a grouped 2-D one) runs as the
    folded unstrided layer's (`space_to_depth`), and the value and input gradient do
    not; values and
    both gradients equal lax's (float64), and so do forward mode, second derivatives
    and `vmap`. (The thresholds lowered to the test's small layers.)"""
    from jaxconv._impls import space_to_depth

    monkeypatch.setattr(_dispatch, "ROWS_MAX_STRIDED_INPUT_ELEMENTS", 2**10)
    monkeypatch.setattr(_dispatch, "ROWS_MIN_FLOPS", 0)
    # (The 2x2 stride-2 layer would fold whole by default, `_tiles_as_pointwise`.)
    monkeypatch.setattr(_dispatch, "_tiles_as_pointwise", lambda *args, **kwargs: False)
    calls = spy_third_arguments(monkeypatch, space_to_depth, "forward")
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=12)
    jax.eval_shape(conv("auto"), x, w)  # (the value's trace, cached: counted once)
    assert calls == []
    trains_as_lax_float64(conv, x, w, check=bool(calls_expected))
    assert len(calls) == calls_expected


def float64_layer(x_shape, w_shape, kwargs, channels_last, seed):
    """``(x, w, conv)``: a random float64 input and weight (channels-first shapes) in
    the given layout, and ``conv(impl)``, the layer by ``impl``."""
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.moveaxis(np.moveaxis(w, 0, -1), 0, -2)

    def conv(impl):
        return lambda a, b: jaxconv.conv(a, b, channels_last=channels_last, impl=impl, **kwargs)

    return x, w, conv


def trains_as_lax_float64(conv, x, w, check):
    """``conv("auto")``'s value and both gradients (float64) equal ``conv("lax")``'s,
    in one program; with ``check``, under the other transforms too
    (`check_transforms`)."""
    ct = cotangent(conv("lax"), x, w)
    got, want = values_and_vjps([conv("auto"), conv("lax")], (x, w), ct)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * float(np.max(np.abs(b))))
    if check:
        check_transforms(conv, x, w, ct)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, first, last",
    [
        # Roles by output_taps channels-first / channels-last: value, input and weight
        # gradient ("v", "x", "w").
        ((2, 64, 10, 10), (1, 64, 3, 3), dict(padding=1), "vw", "vw"),
        ((2, 16, 10, 10), (3, 16, 3, 3), dict(padding=1), "v", "v"),  # 27 products
        ((2, 16, 10, 10), (4, 16, 3, 3), dict(padding=1), "", ""),  # 36 > 32
        ((2, 3, 10, 10), (3, 3, 3, 3), dict(padding=1), "", "v"),  # matmul's channels-first
        ((2, 3, 12, 12), (1, 3, 5, 5), dict(padding=2), "v", "v"),
        ((2, 17, 10, 10), (1, 17, 3, 3), dict(padding=1), "vw", "vw"),
        ((2, 54, 10, 10), (7, 54, 3, 3), dict(padding=1), "", ""),  # 7 from under 8x
        ((2, 54, 10, 10), (6, 54, 3, 3), dict(padding=1), "v", "v"),  # 6 from 54
        ((2, 128, 10, 10), (12, 128, 3, 3), dict(padding=1), "v", ""),  # 12 from 8x
        ((2, 96, 40), (12, 96, 3), dict(padding=1), "v", ""),  # 8x
        ((2, 95, 40), (12, 95, 3), dict(padding=1), "", ""),  # under 8x
        ((2, 128, 10, 10), (12, 128, 3, 3), dict(stride=2, padding=1), "", ""),  # strided
        ((2, 256, 6, 6), (28, 256, 3, 3), dict(padding=1), "v", ""),  # 252 products
        ((2, 256, 6, 6), (29, 256, 3, 3), dict(padding=1), "", ""),  # 261 > 256
        ((2, 512, 6, 6), (33, 512, 3, 3), dict(padding=1), "", ""),  # 33 outputs
        ((2, 108, 10, 10), (6, 108, 3, 3), dict(padding=1), "vw", "vw"),  # 2 * 54 products
        ((2, 107, 10, 10), (6, 107, 3, 3), dict(padding=1), "vw", "vw"),  # 6: any products
        ((2, 128, 10, 10), (8, 128, 3, 3), dict(padding=1), "vw", "w"),  # 8: 72 products
        ((2, 161, 10, 10), (9, 161, 3, 3), dict(padding=1), "v", ""),  # 9: 2 * 81 > 161
        ((2, 162, 10, 10), (9, 162, 3, 3), dict(padding=1), "vw", "w"),
        ((2, 48, 40), (3, 48, 3), dict(padding=1), "vxw", "vxw"),  # 16x (1-D: "x" unstrided)
        ((2, 64, 40), (4, 64, 3), dict(padding=1), "vw", "vw"),  # "x" to at most 3
        ((2, 47, 40), (3, 47, 3), dict(padding=1), "v", "v"),
        ((2, 64, 10, 10), (3, 64, 5, 5), dict(padding=2), "w", "w"),  # 75 products
        # ("w" of a layer of stride 2: its space-to-depth fold's, unstrided, see
        # `_dispatch._space_to_depth_weight_gradient`.)
        ((2, 64, 12, 12), (2, 64, 3, 3), dict(stride=2, padding=1), "vxw", "xw"),
        ((2, 64, 12, 12), (4, 64, 3, 3), dict(stride=2, padding=1), "vw", "w"),  # 4 outputs
        ((2, 47, 12, 12), (3, 47, 3, 3), dict(stride=(1, 2), padding=1), "v", ""),  # 47
        ((2, 48, 12, 12), (3, 48, 3, 3), dict(stride=(1, 2), padding=1), "vx", "x"),
        ((2, 32, 20, 20), (1, 32, 5, 5), dict(stride=2, padding=2), "vxw", "xw"),
        ((2, 32, 24, 24), (1, 32, 3, 3), dict(stride=3, padding=1), "vx", "x"),
        ((2, 32, 24, 24), (1, 32, 3, 3), dict(stride=4, padding=1), "x", "x"),  # stride 4
        # (one image: on two, channels-last, XLA's value on a CPU with AVX-512, see
        # `test_single_output_strided_value_by_xla`)
        ((1, 16, 12, 12), (1, 16, 3, 3), dict(stride=2, padding=1), "vxw", "vxw"),  # 36
        ((2, 16, 12, 12), (2, 16, 3, 3), dict(stride=2, padding=1), "vw", "w"),  # 72 > 36
        ((2, 16, 20, 20), (1, 16, 7, 7), dict(stride=2, padding=3), "w", "w"),  # 49 > 32
        # Its groups' parts: channels-last each group's value and weight gradient, one
        # call each.
        ((2, 64, 10, 10), (2, 32, 3, 3), dict(padding=1, groups=2), "", "vvww"),
        ((2, 64, 10, 10), (1, 64, 1, 1), dict(), "", ""),  # one tap
        ((2, 256, 40), (2, 256, 7), dict(padding=3), "vxw", "vxw"),  # 1-D
        ((1, 64, 6, 6, 6), (1, 64, 3, 3, 3), dict(padding=1), "vw", "vw"),  # 3-D
        ((2, 64, 8, 8, 8), (3, 64, 3, 3, 3), dict(stride=2, padding=1), "", ""),  # its planes
        ((2, 64, 6, 5, 4), (2, 64, 3, 1, 1), dict(padding=(1, 0, 0)), "vw", "vw"),  # (3, 1, 1)
        ((2, 32, 20, 20), (2, 32, 5, 5), dict(stride=2, padding=2), "w", "w"),  # 50 products
        ((2, 64, 10, 10), (1, 64, 3, 3), dict(padding=2, dilation=2), "vw", "vw"),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_few_output_channels_by_output_taps(
    monkeypatch, retrace, x_shape, w_shape, kwargs, first, last, channels_last
):
    """Dense layers to few output channels run as every tap's products at once, shifted
    and summed (`matmul.output_taps`, `_dispatch._output_taps`), under auto: the value
    to at most 6 channels with at most max(C_in, 32) products per position, and
    channels-first unstrided to
    at most 32 from 8x as many with fewer products than input channels; the weight
    gradient unstrided from 16x the output channels and twice the products (any number
    of them to at most 8 channels); the input gradient strided (or 1-D), to at most 3
    channels from 16x as many, with as few products as the value (channels-first as
    `matmul`'s patches on the cotangent); not 1x1, nor a
    grouped layer's groups where they run apart channels-first (channels-last each
    group's part, one call each). Values and both gradients equal lax's (float64), and
    so do forward mode, second derivatives and `vmap`."""
    roles = last if channels_last else first
    # (A 3x3 stride-3 layer below would fold by default, `_tiles_as_pointwise`; the
    # grouped layer's value alone would run as the dense one of its block-diagonal
    # weight, `_block_diagonal_value`.)
    monkeypatch.setattr(_dispatch, "_tiles_as_pointwise", lambda *args, **kwargs: False)
    monkeypatch.setattr(_dispatch, "_block_diagonal_value", lambda *args, **kwargs: False)
    calls = spy_third_arguments(monkeypatch, matmul_impl, "output_taps")
    # Channels-first the input gradient it takes runs as `matmul`'s patches on the
    # cotangent instead: counted as a call.
    by_patches = _dispatch._output_taps_input_gradient_by_patches

    def patches(spec):
        if by_patches(spec):
            calls.append(spec)
            return True
        return False

    monkeypatch.setattr(_dispatch, "_output_taps_input_gradient_by_patches", patches)
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    nd = len(x_shape) - 2
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.moveaxis(np.moveaxis(w, 0, -1), 0, -2)

    def conv(impl):
        return lambda a, b: jaxconv.conv(a, b, channels_last=channels_last, impl=impl, **kwargs)

    # (This also caches the value's own trace, which `jax.vjp` of the custom JVP would
    # trace again beside the JVP rule's: under differentiation each role counts once.)
    jax.eval_shape(conv("auto"), x, w)
    # (A grouped layer's value alone runs whole, by the grouped rules; its groups' parts
    # take `output_taps` under differentiation.)
    assert len(calls) == ("v" in roles and kwargs.get("groups", 1) == 1)
    calls.clear()
    trains_as_lax_float64(conv, x, w, check=bool(roles))
    assert len(calls) == len(roles), (calls, nd)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, channels_last, taken",
    [
        ((8, 16, 224, 224), (1, 16, 5, 5), dict(padding=2), False, False),  # 40 MB, 25 >= 16
        ((8, 16, 224, 224), (1, 16, 5, 5), dict(padding=2), True, False),
        ((2, 16, 224, 224), (1, 16, 5, 5), dict(padding=2), True, True),  # 10 MB
        ((8, 16, 224, 224), (3, 16, 3, 3), dict(padding=1), False, False),  # 43 MB, 27 >= 16
        ((8, 32, 224, 224), (3, 32, 3, 3), dict(padding=1), False, True),  # 27 < 32
        ((8, 16, 224, 224), (1, 16, 5, 5), dict(stride=2, padding=2), False, False),
        ((8, 16, 112, 112), (1, 16, 5, 5), dict(stride=2, padding=2), False, True),
        # Channels-last strided: at most 36 products per output, input and products
        # within the block.
        ((8, 16, 112, 112), (1, 16, 5, 5), dict(stride=2, padding=2), True, False),  # 100
        ((8, 4, 224, 224), (1, 4, 3, 3), dict(stride=2, padding=1), True, True),  # 21 MB
        ((8, 16, 224, 224), (1, 16, 3, 3), dict(stride=2, padding=1), True, False),  # 40 MB
        ((8, 16, 64, 64), (1, 16, 3, 3), dict(stride=2, padding=1), True, True),
        ((8, 16, 64, 64), (2, 16, 3, 3), dict(stride=2, padding=1), True, False),  # 72
        ((8, 16, 64, 64), (2, 16, 3, 3), dict(stride=2, padding=1), False, True),
    ],
)
def test_output_taps_value_within_the_heap_block(
    monkeypatch, x_shape, w_shape, kwargs, channels_last, taken
):
    """`_dispatch._output_taps` takes no value whose float32 products (``N * positions
    * taps * C_out``) pass `lax.MALLOC_MAX_HEAP_BLOCK` with as many products as input
    channels, and channels-last no strided value of more than 36 products per output
    (``taps * C_out * stride^2``) or whose input and products together pass it (on a
    CPU with AVX2 and no AVX-512, where those bounds were measured; with AVX-512 see
    `test_single_output_strided_value_by_xla`)."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: True)
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    spec = dataclasses.replace(spec, channels_last=channels_last)
    assert _dispatch._output_taps(spec, x_shape, w_shape, _dispatch.FORWARD) == taken


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, avx2_only, taken",
    [
        ((2, 16, 12, 12), (1, 16, 3, 3), dict(stride=2, padding=1), False, False),
        ((2, 12, 12, 12), (1, 12, 3, 3), dict(stride=2), False, False),
        ((2, 11, 12, 12), (1, 11, 3, 3), dict(stride=2), False, True),  # 5-11 channels
        ((2, 5, 12, 12), (1, 5, 3, 3), dict(stride=2), False, True),
        ((2, 4, 12, 12), (1, 4, 3, 3), dict(stride=2, padding=1), False, False),  # shift's
        ((2, 2, 12, 12), (1, 2, 3, 3), dict(stride=2), False, False),
        ((1, 16, 12, 12), (1, 16, 3, 3), dict(stride=2, padding=1), False, True),  # 1 image
        ((2, 16, 12, 12), (1, 16, 2, 2), dict(stride=2), False, True),  # 4 taps
        ((2, 16, 12, 12), (1, 16, 3, 3), dict(padding=1), False, True),  # unstrided
        ((2, 16, 12, 12), (2, 16, 3, 3), dict(stride=(1, 2), padding=1), False, True),  # 2
        ((2, 16, 12, 12), (1, 16, 3, 3), dict(stride=2, padding=1), True, True),  # AVX2
        ((2, 4, 12, 12), (1, 4, 3, 3), dict(stride=2, padding=1), True, True),
    ],
)
def test_single_output_strided_value_by_xla(
    monkeypatch, x_shape, w_shape, kwargs, avx2_only, taken
):
    """Channels-last, `_dispatch._output_taps` leaves the value of a 2-D layer strided
    to one channel (3x3 or larger, at least two images) to XLA's convolution from at
    least 12 input channels, and to `shift` from the 2-4 it takes, on a CPU with AVX-512
    (`_dispatch._single_output_strided_value_by_xla`); channels-first, its derivatives
    and on a CPU with AVX2 and no AVX-512 nothing changes."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: avx2_only)
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    cl = dataclasses.replace(spec, channels_last=True)
    assert _dispatch._output_taps(cl, x_shape, w_shape, _dispatch.FORWARD) == taken
    assert _dispatch._output_taps(spec, x_shape, w_shape, _dispatch.FORWARD)  # channels-first


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
def test_single_output_strided_values_under_auto(monkeypatch, retrace, channels_last):
    """Under `auto` on a CPU with AVX-512, channels-last values strided to one channel
    run off `matmul.output_taps` (differentiated too): from 16 channels XLA's, from 4
    `shift`'s; their derivatives, and channels-first the values, stay as they were.
    Values and both gradients equal lax's (float64)."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    calls = spy_third_arguments(monkeypatch, matmul_impl, "output_taps")
    for c_in, value in ((16, "lax"), (4, "shift")):
        x_shape, w_shape = (2, c_in, 13, 13), (1, c_in, 3, 3)
        x, w, conv = float64_layer(x_shape, w_shape, dict(stride=2), channels_last, seed=5)
        names = choose(x.shape, w.shape, stride=2, channels_last=channels_last)
        assert names[0] == (value if channels_last else "lax"), c_in
        calls.clear()
        jax.eval_shape(conv("auto"), x, w)  # (the value's trace, cached: counted once)
        assert len(calls) == (not channels_last), c_in
        trains_as_lax_float64(conv, x, w, check=False)
        # Training: channels-first all three roles; channels-last the input gradient,
        # and from 16 channels the weight gradient (its space-to-depth fold's).
        assert len(calls) == (3 if not channels_last else 1 + (c_in == 16)), c_in


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("c_in, phases", [(64, 4), (32, 0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_transposed_to_few_channels_weight_gradient_by_output_taps(
    monkeypatch, retrace, c_in, phases, channels_last
):
    """The weight gradient of a transposed 4x4 stride-2 layer to 3 channels (DCGAN's
    last) runs through `matmul.output_taps` once per sub-pixel phase (2x2 kernels from
    at least 16x as many channels, 3x twice their 12 products), not from 32 channels
    (whose value is XLA's whole, `_dispatch._transposed_value_whole`).
    Values and both gradients equal lax's (float64), and so do forward mode, second
    derivatives and `vmap`."""
    calls = spy_third_arguments(monkeypatch, matmul_impl, "output_taps")
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((2, c_in, 6, 5)), rng.standard_normal((c_in, 3, 4, 4))
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))

    def conv(impl):
        return lambda a, b: jaxconv.conv_transpose2d(
            a, b, stride=2, padding=1, channels_last=channels_last, impl=impl
        )

    trains_as_lax_float64(conv, x, w, check=True)
    assert len(calls) == phases


@pytest.mark.parametrize("kernel, chunks", [((7, 7), 13), ((2, 2), 1), ((3, 3), 3)])
def test_output_taps_transposes_chunk_by_chunk(kernel, chunks):
    """`matmul.output_taps` slices its taps out of chunks of `matmul.OUTPUT_TAPS_CHUNK`
    split once, so its weight gradient (as its input gradient) builds the output
    gradient's shifted copies chunk by chunk and concatenates them, with no zero-padded
    copy of every tap's products per tap (``taps^2`` work: a 7x7 layer's weight gradient
    ran 13x slower)."""
    spec = _spec.ConvSpec((1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 1, None)
    x, w = jnp.ones((2, 64, 9, 9)), jnp.ones((1, 64, *kernel))
    ct = jnp.ones(jax.eval_shape(lambda b: matmul_impl.output_taps(x, b, spec), w).shape)
    jaxpr = jax.make_jaxpr(
        lambda b, c: jax.vjp(lambda v: matmul_impl.output_taps(x, v, spec), b)[1](c)
    )(w, ct).jaxpr
    eqns = [e for e in jaxpr.eqns if e.primitive.name in ("pad", "concatenate")]
    taps = math.prod(kernel)
    # The taps' axis of ``z`` (N, taps, C_out, *S) channels-first.
    padded = [e.outvars[0].aval.shape[1] for e in eqns if e.primitive.name == "pad"]
    assert padded and max(padded) == min(taps, matmul_impl.OUTPUT_TAPS_CHUNK)
    joined = [len(e.invars) for e in eqns if e.primitive.name == "concatenate"]
    assert joined == ([chunks] if chunks > 1 else [])


@pytest.mark.parametrize("role", [0, 1, 2])  # FORWARD, INPUT_GRADIENT, WEIGHT_GRADIENT
def test_output_taps_rule_leaves_grouped_and_input_dilated_layers(role):
    """`_dispatch._output_taps` takes a dense layer to one channel for every role (the
    input gradient strided), but not the same layer grouped (its groups may take it
    where they run apart) nor input-dilated (a transposed convolution whole, whose
    phases may take it)."""
    stride = (2, 2) if role == _dispatch.INPUT_GRADIENT else (1, 1)
    for groups, lhs_dilation, takes in [(1, (1, 1), True), (2, (1, 1), False), (1, (2, 2), False)]:
        spec = _spec.ConvSpec(stride, ((1, 1), (1, 1)), lhs_dilation, (1, 1), groups, None)
        w_shape = (groups, 128 // groups, 3, 3)
        assert _dispatch._output_taps(spec, (2, 128, 16, 16), w_shape, role) == takes
    # The grouped weight (2, 64, 3, 3) as a dense layer's, 64->2, is taken for every
    # role: only its groups keep it off above.
    dense = _spec.ConvSpec(stride, ((1, 1), (1, 1)), (1, 1), (1, 1), 1, None)
    assert _dispatch._output_taps(dense, (2, 64, 16, 16), (2, 64, 3, 3), role)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "op, x_shape, w_shape, kwargs, channels_last, per_image, patches",
    [
        # 128->8 3x3: the value and the weight gradient by `output_taps`, per image
        # channels-first with twice as many positions per image as products (72), whole
        # with fewer or channels-last (the weight gradient alone there).
        ("conv2d", (2, 128, 12, 12), (8, 128, 3, 3), {"padding": 1}, False, {0: 1, 2: 1}, []),
        # Per image all the same, the 2-D value from 48-128 channels to at most 6 on at
        # least 25 positions; not to 7 or 8, from 256 or 32 channels, on 24 positions,
        # nor in 1-D.
        ("conv2d", (2, 128, 12, 11), (8, 128, 3, 3), {"padding": 1}, False, {0: 0, 2: 0}, []),
        ("conv2d", (2, 128, 10, 10), (6, 128, 3, 3), {"padding": 1}, False, {0: 1, 2: 0}, []),
        ("conv2d", (2, 128, 10, 10), (7, 128, 3, 3), {"padding": 1}, False, {0: 0, 2: 0}, []),
        ("conv2d", (2, 48, 5, 5), (4, 48, 3, 3), {"padding": 1}, False, {0: 1}, []),
        ("conv2d", (2, 256, 7, 7), (4, 256, 3, 3), {"padding": 1}, False, {0: 0, 2: 0}, []),
        ("conv2d", (2, 32, 7, 7), (3, 32, 3, 3), {"padding": 1}, False, {0: 0}, []),
        ("conv2d", (2, 64, 4, 6), (2, 64, 3, 3), {"padding": 1}, False, {0: 0, 2: 0}, []),
        ("conv1d", (2, 64, 30), (4, 64, 9), {"padding": 4}, False, {0: 0, 2: 0}, []),
        ("conv2d", (2, 128, 12, 12), (8, 128, 3, 3), {"padding": 1}, True, {2: 0}, []),
        # A stride-1 transposed layer is one convolution (its kernel flipped): per image.
        ("conv_transpose2d", (2, 128, 8, 8), (128, 1, 3, 3), {}, False, {0: 1, 2: 1}, []),
        # 64->1 4x4 stride 2 transposed: the weight gradients of its four phases (2x2)
        # by `output_taps`, whole.
        (
            "conv_transpose2d",
            (2, 64, 8, 8),
            (64, 1, 4, 4),
            {"stride": 2, "padding": 1},
            False,
            {2: 0},
            [],
        ),
        # 1-D 256->2 k7 and 3x3 stride 2 64->3: the input gradient by `matmul`'s patches
        # on the cotangent channels-first, by `output_taps` channels-last (the strided
        # layer's weight gradient is its space-to-depth fold's, unstrided).
        ("conv1d", (2, 256, 40), (2, 256, 7), {"padding": 3}, False, {0: 1, 2: 1}, [True]),
        ("conv1d", (2, 256, 40), (2, 256, 7), {"padding": 3}, True, {0: 0, 1: 0, 2: 0}, [False]),
        (
            "conv2d",
            (2, 64, 16, 16),
            (3, 64, 3, 3),
            {"stride": 2, "padding": 1},
            False,
            {0: 1, 2: 1},
            [True],
        ),
    ],
)
def test_output_taps_per_image(
    monkeypatch, op, x_shape, w_shape, kwargs, channels_last, per_image, patches
):
    """Where `auto` takes `matmul.output_taps` for a role, channels-first it runs the
    value and the weight gradient image by image (``per_image``,
    `_dispatch._output_taps_per_image`; ``per_image`` maps each role `output_taps` runs
    to whether it does so image by image) and the input gradient as `matmul`'s patches
    on the cotangent (`_dispatch._output_taps_input_gradient_by_patches`, whose answers
    are ``patches``); channels-last, with few positions per image, and in a transposed
    layer's sub-pixel phases, whole. The value and gradients are `lax`'s."""
    runs, by_patches = [], []
    for name, seen in [
        ("_output_taps_per_image", runs),
        ("_output_taps_input_gradient_by_patches", by_patches),
    ]:
        original = getattr(_dispatch, name)

        def spy(*args, original=original, seen=seen):
            answer = original(*args)
            seen.append((args[-1], answer) if seen is runs else answer)
            return answer

        monkeypatch.setattr(_dispatch, name, spy)
    x, w, conv = _layer(op, x_shape, w_shape, kwargs, channels_last, seed=4)
    ct = cotangent(conv("lax"), x, w)
    jax.clear_caches()
    (got,) = values_and_vjps([conv("auto")], (x, w), ct)
    assert set(runs) == {(role, bool(answer)) for role, answer in per_image.items()}
    assert sorted(set(by_patches)) == patches
    (expected,) = values_and_vjps([conv("lax")], (x, w), ct)
    for a, b in zip(got, expected, strict=True):
        scale = float(np.max(np.abs(b)))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5 * scale)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_few_output_channels_in_half_precision(monkeypatch, retrace, dtype, channels_last):
    """In bfloat16 and float16 too, `auto` takes the few-output rule (`matmul.output_taps`,
    its products accumulated in float32) and gives `lax`'s float32 value and gradients
    rounded, within a few of the dtype's steps."""
    calls = spy_third_arguments(monkeypatch, matmul_impl, "output_taps")
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((2, 64, 12, 12)), rng.standard_normal((2, 64, 3, 3)) / 24
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))

    def conv(impl):
        return lambda a, b: jaxconv.conv2d(
            a, b, stride=2, padding=1, channels_last=channels_last, impl=impl
        )

    ct = cotangent(conv("lax"), x, w)
    half = [jnp.asarray(a, dtype) for a in (x, w, ct)]
    jax.eval_shape(conv("auto"), *half[:2])  # (the value's trace, cached: counted once)
    calls.clear()
    (got,) = values_and_vjps([conv("auto")], half[:2], half[2])
    wide = [a.astype(np.float32) for a in half]
    (want,) = values_and_vjps([conv("lax")], wide[:2], wide[2])
    # Channels-first the value (from 64 channels) and the weight gradient of the layer's
    # space-to-depth fold (unstrided; see `_dispatch._space_to_depth_weight_gradient`),
    # the strided input gradient by `matmul`'s patches on the cotangent; channels-last
    # the input gradient and that weight gradient.
    assert len(calls) == 2
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype
        b = np.asarray(b, np.float32)
        scale = 2e-2 * np.abs(b).max()
        np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=2e-2, atol=scale)


_OUTPUT_STACKED_CASES = [
    ((2, 32, 12, 12), (24, 32, 3, 3), dict(padding=1)),
    ((2, 32, 12, 11), (24, 32, 3, 2), dict(padding=(2, 0), dilation=(2, 1))),
    ((2, 32, 12, 12), (24, 32, 4, 3), dict(padding=((0, 3), (1, 1)))),  # rows past it
    ((2, 32, 9, 9), (24, 32, 5, 3), dict(padding=((1, 0), (1, 1)))),
    ((2, 32, 12, 12), (24, 32, 3, 1), dict(padding=(1, 0))),  # 1x1 rows: matmul's
    ((2, 64, 12, 12), (48, 32, 3, 3), dict(padding=1, groups=2)),  # per dense group
]
_DECOMPOSE_CASES = [  # (channels-last only)
    ((2, 32, 12, 12), (32, 32, 3, 3), dict(padding=1)),  # as many outputs
    ((2, 24, 12, 11), (40, 24, 3, 2), dict(padding=(2, 0), dilation=(2, 1))),
    ((2, 16, 13, 12), (24, 16, 4, 3), dict(padding=((0, 3), (1, 1)), stride=(1, 2))),
    ((2, 16, 9, 9), (48, 16, 5, 3), dict(padding=((1, 0), (1, 1)))),
    ((2, 32, 12, 12), (40, 32, 3, 1), dict(padding=(1, 0))),  # 1x1 rows
    ((1, 16, 5, 10, 10), (24, 16, 3, 3, 3), dict(padding=1)),  # 3-D: its planes' rows
]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rows rule is the CPU's")
@pytest.mark.parametrize(
    "name, x_shape, w_shape, kwargs, channels_last",
    [("output_stacked", *case, cl) for case in _OUTPUT_STACKED_CASES for cl in (False, True)]
    + [("decompose", *case, True) for case in _DECOMPOSE_CASES],
)
def test_rows_weight_gradient_written_out(
    monkeypatch, retrace, name, x_shape, w_shape, kwargs, channels_last
):
    """Under auto the weight gradient of a 2-D layer by kernel rows, folded into the
    output channels (`planes.output_stacked`) or channels-last one 1-D weight gradient
    per row (`planes.decompose`), is the transpose written out
    (`planes.<name>_weight_gradient`); values and both gradients equal lax's (float64),
    and so do forward mode, second derivatives and `vmap`. (`ROWS_MIN_FLOPS` lowered to
    the test's layers.)"""
    from jaxconv._impls import planes

    monkeypatch.setattr(_dispatch, "ROWS_MIN_FLOPS", 0)
    calls = spy_third_arguments(monkeypatch, planes, f"{name}_weight_gradient")
    rng = np.random.default_rng(13)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    nd = len(x_shape) - 2
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (*range(2, nd + 2), 1, 0))

    def conv(impl):
        return lambda a, b: jaxconv.conv(a, b, channels_last=channels_last, impl=impl, **kwargs)

    trains_as_lax_float64(conv, x, w, check=True)
    assert calls and all(spec.ndim == 2 for spec in calls)


@pytest.mark.parametrize(
    "spec_kwargs",
    [dict(groups=2), dict(stride=(2, 1)), dict(lhs_dilation=(2, 1))],
    ids=["groups", "strided", "input-dilated"],
)
def test_rows_weight_gradients_refuse(spec_kwargs):
    """`planes.output_stacked_weight_gradient` takes one group, unstrided and not
    input-dilated along the first spatial dim, `planes.decompose_weight_gradient` no
    input dilation there; each says so otherwise."""
    from jaxconv._impls import lax as lax_impl
    from jaxconv._impls import planes

    kwargs = dict(stride=(1, 1), padding=((1, 1), (1, 1)), lhs_dilation=(1, 1))
    kwargs.update(rhs_dilation=(1, 1), groups=1, precision=None, channels_last=False)
    kwargs.update(spec_kwargs)
    s = _spec.ConvSpec(**kwargs)
    x = jnp.zeros((1, 4, 6, 6))
    with pytest.raises(ValueError, match="one group, unstrided"):
        planes.output_stacked_weight_gradient(x, x[:, :2], s, (2, 4, 3, 3), lax_impl.forward)
    if spec_kwargs.get("lhs_dilation"):
        with pytest.raises(ValueError, match="no input dilation"):
            planes.decompose_weight_gradient(x, x[:, :2], s, (2, 4, 3, 3), lax_impl.forward)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, first, last",
    [
        # 32 groups of 16->4 7x7 @12 batch 2 (288 rows): channels-first / channels-last.
        ((2, 512, 12, 12), (128, 16, 7, 7), dict(padding=3, groups=32), "fft", "lax"),
        # 17 groups of 16->8 (more channels than shift takes), 7x7 @10 batch 1.
        ((1, 272, 10, 10), (136, 16, 7, 7), dict(padding=3, groups=17), "fft", "lax"),  # 100
        ((1, 272, 9, 11), (136, 16, 7, 7), dict(padding=3, groups=17), None, None),  # 99
        ((1, 272, 12, 12), (136, 16, 6, 8), dict(padding=3, groups=17), None, None),  # 48 taps
        ((1, 272, 20, 20), (136, 16, 7, 7), dict(padding=3, stride=2, groups=17), None, None),
        # Dilated, where the output is as large as the input (not smaller).
        ((1, 272, 12, 12), (136, 16, 7, 7), dict(padding=6, dilation=2, groups=17), "fft", "lax"),
        ((1, 272, 12, 12), (136, 16, 7, 7), dict(padding=5, dilation=2, groups=17), None, None),
        ((1, 272, 20, 20), (136, 16, 7, 7), dict(padding=3, groups=17), "matmul", "matmul"),
        ((2, 272, 20, 20), (136, 16, 7, 7), dict(padding=3, groups=17), None, None),  # 800 rows
        ((1, 256, 12, 12), (128, 16, 7, 7), dict(padding=3, groups=16), None, None),  # 16 groups
        ((1, 272, 100), (136, 16, 49), dict(padding=24, groups=17), None, None),  # 1-D
    ],
)
def test_grouped_large_kernel_by_fft(monkeypatch, x_shape, w_shape, kwargs, first, last):
    """Grouped 2-D layers of more than 16 groups on fewer than 784 rows (batch x output
    positions), unstrided (and if dilated, with outputs as large as their inputs), with
    at least 49 taps on at least 100 output positions per image take FFT's derivatives
    (`_dispatch._grouped_large_kernel_by_fft`), and channels-first FFT's value where it
    would be XLA's; otherwise the rules' (``None``: no FFT in any role). On every CPU:
    with AVX2 alone, where the value of such layers channels-last or of one image is
    `matmul`'s (`_small_grouped_map_by_matmul`), the derivatives are FFT's all the same."""
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    choose = functools.partial(_dispatch.choose, dtype=jnp.float32, backend="cpu")
    for channels_last, value in ((False, first), (True, last)):
        layer = dataclasses.replace(spec, channels_last=channels_last)
        monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
        names = choose(layer, x_shape, w_shape)
        if value is None:
            assert "fft" not in names, names
        else:
            assert names == (value, "fft", "fft"), names
        monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: True)
        names = choose(layer, x_shape, w_shape)
        assert ("fft" in names) == (value is not None), names
        if value is not None:
            assert names[1:] == ("fft", "fft"), names


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
def test_grouped_large_kernel_by_fft_trains_as_lax(monkeypatch, channels_last):
    """Those layers' values and gradients (FFT's) equal lax's (float64), and so do forward
    mode, second derivatives and `vmap` (the value as CPUs with AVX-512 take it)."""
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    kwargs = dict(padding=3, groups=17)
    x_shape, w_shape = (1, 68, 10, 10), (289, 4, 7, 7)  # 17 groups of 4->17
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=5)
    spec = _spec.conv_plan("conv", x.shape, w.shape, channels_last=channels_last, **kwargs).spec
    names = _dispatch.choose(spec, x_shape, w_shape, jnp.float32, "cpu")
    assert names == ("lax" if channels_last else "fft", "fft", "fft")
    trains_as_lax_float64(conv, x, w, check=True)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, taken",
    [
        ((8, 32, 28, 28), (128, 32, 2, 2), dict(stride=3), True),  # found by a sweep
        ((2, 16, 20, 20), (8, 16, 3, 2), dict(stride=(4, 3), padding=1), True),
        ((2, 16, 20, 20), (8, 16, 1, 2), dict(stride=(2, 3)), True),
        ((2, 16, 20, 20), (7, 16, 2, 2), dict(stride=3), False),  # to 7 channels
        ((2, 16, 20, 20), (8, 16, 3, 2), dict(stride=3), False),  # 3 rows at stride 3
        ((2, 16, 20, 20), (8, 16, 2, 3), dict(stride=3), False),
        ((2, 16, 20, 20), (8, 16, 1, 1), dict(stride=2), False),  # 1x1
        ((2, 16, 20, 20), (8, 16, 2, 2), dict(stride=3, dilation=2), False),
        ((2, 16, 20, 20), (8, 8, 2, 2), dict(stride=3, groups=2), False),
        ((2, 16, 40), (8, 16, 2), dict(stride=3), False),  # 1-D
        ((2, 16, 9, 9, 9), (8, 16, 2, 2, 2), dict(stride=3), False),  # 3-D
    ],
)
def test_kernel_within_stride(monkeypatch, x_shape, w_shape, kwargs, taken):
    """Dense channels-last 2-D layers whose kernel is shorter than the stride along both
    dims, to 8 or more channels, take `matmul`'s derivatives
    (`_dispatch._kernel_within_stride`), the value as before; channels-first, with AVX2
    alone, and where `_run` splits a layer (nested), not."""
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    cl = dataclasses.replace(spec, channels_last=True)
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: False)
    assert _dispatch._kernel_within_stride(cl, w_shape) == taken
    assert not _dispatch._kernel_within_stride(spec, w_shape)
    choose = functools.partial(_dispatch.choose, dtype=jnp.float32, backend="cpu")
    if taken:
        rules, nested = choose(cl, x_shape, w_shape), choose(cl, x_shape, w_shape, nested=True)
        assert rules[1:] == ("matmul", "matmul")
        with monkeypatch.context() as m:
            m.setattr(_dispatch, "_kernel_within_stride", lambda *a: False)
            without = choose(cl, x_shape, w_shape)
            assert without[0] == rules[0]  # the value as without it
            assert without[1:] != ("matmul", "matmul")  # the rule's doing
            assert choose(cl, x_shape, w_shape, nested=True) == nested  # not nested
    monkeypatch.setattr(_dispatch.lax_impl, "avx2_only", lambda: True)
    assert not _dispatch._kernel_within_stride(cl, w_shape)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, roles",
    [
        # Roles folded: "v" the value alone, "t" the value differentiated and both
        # derivatives.
        ((8, 3, 224, 224), (96, 3, 4, 4), dict(stride=4), "t"),  # ConvNeXt's stem
        ((8, 96, 56, 56), (192, 96, 2, 2), dict(stride=2), "t"),  # its downsampling
        ((4, 3, 224, 224), (768, 3, 16, 16), dict(stride=16), "t"),  # ViT's, 196 positions
        ((2, 384, 112, 112), (64, 384, 16, 16), dict(stride=16), "t"),  # 49: 256 taps
        ((1, 384, 56, 56), (16, 384, 7, 7), dict(stride=7), "t"),  # 49 taps, 64 positions
        ((1, 384, 63, 56), (16, 384, 7, 7), dict(stride=7), ""),  # 72 positions, deep
        ((1, 64, 42, 56), (16, 64, 6, 8), dict(stride=(6, 8)), ""),  # 48 taps, deep
        ((1, 8, 63, 56), (16, 8, 7, 7), dict(stride=7), "t"),  # 392 deep
        ((16, 32, 98, 98), (32, 32, 14, 14), dict(stride=14), "t"),  # 6272 deep, 49
        ((2, 64, 59, 59), (128, 64, 2, 2), dict(stride=2), "t"),  # a row left over
        ((8, 3, 128, 128), (32, 3, 2, 2), dict(stride=2, padding=1), "t"),  # padded
        ((2, 4, 256, 256), (8, 4, 2, 2), dict(stride=2), "t"),  # 2^19 elements
        ((2, 4, 256, 258), (8, 4, 2, 2), dict(stride=2), "t"),  # (the value too, cl)
        ((2, 5, 256, 258), (8, 5, 2, 2), dict(stride=2), "t"),  # (not from 5 channels)
        ((8, 512, 16, 16), (512, 512, 2, 2), dict(stride=2), "t"),  # 2048 deep, 64
        ((8, 513, 16, 16), (512, 513, 2, 2), dict(stride=2), ""),  # 2052 deep
        ((8, 256, 14, 14), (256, 256, 2, 2), dict(stride=2), ""),  # 49 positions, 4 taps
        ((8, 256, 8, 8), (256, 256, 2, 2), dict(stride=2), ""),  # 16 positions
        ((2, 128, 129, 129), (16, 128, 8, 8), dict(stride=8), ""),  # 8192 deep, 64 taps
        ((16, 1, 16000), (128, 1, 10), dict(stride=10), "t"),  # 1-D
        ((4, 3, 16, 224, 224), (768, 3, 2, 16, 16), dict(stride=(2, 16, 16)), "vt"),  # 3-D
        ((2, 32, 16, 32, 32), (64, 32, 2, 2, 2), dict(stride=2), "t"),  # 2^20 elements
        ((2, 32, 16, 32, 34), (64, 32, 2, 2, 2), dict(stride=2), "vt"),
        ((2, 32, 16, 32, 34), (31, 32, 2, 2, 2), dict(stride=2), "t"),  # 31 outputs
        # Not: a kernel other than the stride, one tap, dilated, grouped (transposed:
        # `test_tiles_as_pointwise_transposed`).
        ((8, 64, 56, 56), (128, 64, 3, 3), dict(stride=2, padding=1), ""),
        ((8, 64, 56, 56), (128, 64, 2, 2), dict(stride=(2, 1)), ""),
        ((8, 64, 56, 56), (128, 64, 1, 1), dict(stride=1), ""),
        ((8, 64, 56, 56), (128, 64, 2, 2), dict(stride=2, dilation=2), ""),
        ((8, 64, 56, 56), (128, 32, 2, 2), dict(stride=2, groups=2), ""),
    ],
)
def test_tiles_as_pointwise_rule(x_shape, w_shape, kwargs, roles):
    """`_dispatch._tiles_as_pointwise`: which roles of a layer whose kernel equals its
    stride fold into a 1x1 convolution, channels-first ("v" here) and channels-last
    (where 2-D stems from at most 4 channels on inputs past 2^19 elements fold their
    value alone too, and 1-D layers fold nothing)."""
    rule = _dispatch._tiles_as_pointwise
    spec, x_shape, w_shape = _spec_of(x_shape, w_shape, kwargs)
    for channels_last in (False, True):
        layer = dataclasses.replace(spec, channels_last=channels_last)
        want_value = "v" in roles or (
            channels_last and layer.ndim == 2 and "t" in roles and x_shape[1] <= 4
        )
        if channels_last and layer.ndim == 2 and math.prod(x_shape) <= 2**19:
            want_value = False
        want_training = "t" in roles and not (channels_last and layer.ndim == 1)
        assert rule(layer, x_shape, w_shape, _dispatch.FORWARD) == want_value, channels_last
        for role in (_dispatch.INPUT_GRADIENT, _dispatch.WEIGHT_GRADIENT):
            assert rule(layer, x_shape, w_shape, role) == want_training, (channels_last, role)
        assert rule(layer, x_shape, w_shape, _dispatch.FORWARD, True) == want_training


def test_tiles_as_pointwise_transposed():
    """A transposed layer whose kernel equals its stride (U-Net's 2x2 stride 2) arrives
    input-dilated, with a unit stride: not folded."""
    plan = _spec.transpose_plan(
        "conv_transpose2d", (8, 256, 28, 28), (256, 128, 2, 2), ndim=2, stride=2
    )
    assert plan.spec.lhs_dilation == (2, 2)
    for role in range(3):
        assert not _dispatch._tiles_as_pointwise(
            plan.spec, (8, 256, 28, 28), (128, 256, 2, 2), role, True
        )


# The roles a fold rule takes in training: the differentiated value, both derivatives.
TRAINING_FOLDS = {
    (_dispatch.FORWARD, True),
    (_dispatch.INPUT_GRADIENT, False),
    (_dispatch.WEIGHT_GRADIENT, False),
}


def spy_rule_folds(monkeypatch, stride=None) -> list:
    """The ``(role, differentiated)`` of each convolution `_dispatch._run` folds
    space-to-depth by a rule of its own (`_tiles_as_pointwise`,
    `_kernel_multiple_of_stride`: ``inner`` is `_run` itself, where other rules pass
    `chosen`), from now on, as a list; with ``stride``, each such fold's stride is it."""
    from jaxconv._impls import space_to_depth

    folded = []
    fold = space_to_depth.forward

    def spy(x, w, spec, inner):
        if isinstance(inner, functools.partial):
            if stride is not None:
                assert tuple(spec.stride) == stride
            folded.append((inner.keywords["role"], inner.keywords["differentiated"]))
        return fold(x, w, spec, inner)

    monkeypatch.setattr(space_to_depth, "forward", spy)
    return folded


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 3, 16, 16), (8, 3, 2, 2), dict(stride=2)),
        ((3, 5, 19, 18), (6, 5, 4, 4), dict(stride=4, padding=1)),  # padded, rows left
        ((2, 4, 17, 13), (6, 4, 3, 2), dict(stride=(3, 2), padding=(2, 0))),
        ((2, 2, 70), (4, 2, 7), dict(stride=7, padding=3)),  # 1-D (channels-first)
        ((1, 3, 4, 17, 16), (5, 3, 2, 2, 2), dict(stride=2)),  # 3-D
        ((2, 3, 1, 17, 16), (5, 3, 1, 2, 2), dict(stride=(1, 2, 2))),
        ((2, 2, 14, 14), (3, 2, 7, 7), dict(stride=7)),  # 49 taps (by depth here)
        ((2, 48, 7, 7), (3, 48, 7, 7), dict(stride=7)),  # 2352 deep: 49 taps, 1 position
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_tiles_as_pointwise(monkeypatch, retrace, x_shape, w_shape, kwargs, channels_last):
    """Where `_dispatch._tiles_as_pointwise` says (its bounds lowered so that small
    layers qualify: a value alone in 3-D, and channels-last 2-D from at most 4
    channels), `auto` runs each role folded space-to-depth through `_run` (the value
    alone, then in training the differentiated value and both derivatives), and its
    value and both gradients equal `lax`'s (float64), under every transform too."""
    monkeypatch.setattr(_dispatch, "TILES_MIN_OUTPUT_POSITIONS", 1)
    monkeypatch.setattr(_dispatch, "TILES_VALUE_MIN_INPUT_2D", 0)
    monkeypatch.setattr(_dispatch, "TILES_VALUE_MIN_INPUT_3D", 0)
    monkeypatch.setattr(_dispatch, "TILES_VALUE_MIN_OUT_CHANNELS_3D", 1)
    folded = spy_rule_folds(monkeypatch, stride=tuple(w_shape[2:]))
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=8)
    np.testing.assert_allclose(jax.jit(conv("auto"))(x, w), conv("lax")(x, w), rtol=1e-10)
    value_alone = len(x_shape) == 5 or (len(x_shape) == 4 and channels_last and x_shape[1] <= 4)
    assert folded == ([(_dispatch.FORWARD, False)] if value_alone else [])
    folded.clear()
    trains_as_lax_float64(conv, x, w, check=False)
    takes = not (channels_last and len(x_shape) == 3)  # (1-D channels-last: never)
    assert set(folded) == (TRAINING_FOLDS if takes else set())
    check_transforms(conv, x, w, cotangent(conv("lax"), x, w))


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, takes",
    [
        ((32, 4, 84, 84), (32, 4, 8, 8), dict(stride=4), True),  # DQN's first layer
        ((8, 32, 60, 60), (64, 32, 6, 6), dict(stride=3), True),
        ((2, 16, 226, 226), (128, 16, 12, 12), dict(stride=4), True),  # 3x the stride
        ((2, 16, 60, 60), (128, 16, 12, 9), dict(stride=(4, 3), padding=2), True),
        ((16, 32, 12003), (16, 32, 9), dict(stride=3), True),  # 1-D
        ((2, 4, 24, 26, 24), (64, 4, 8, 8, 8), dict(stride=4), True),  # 3-D
        ((32, 32, 20, 20), (64, 32, 4, 4), dict(stride=2), False),  # stride 2
        ((8, 3, 224, 224), (64, 3, 11, 11), dict(stride=4, padding=2), False),  # 11 of 4
        ((2, 16, 60, 60), (128, 16, 12, 10), dict(stride=(4, 3)), False),  # 10 of 3
        ((2, 16, 60, 60), (128, 16, 12, 12), dict(stride=(4, 2)), False),  # a stride of 2
        ((2, 16, 60, 60), (128, 16, 16, 12), dict(stride=4), False),  # 4x the stride
        ((8, 1, 16000), (128, 1, 80), dict(stride=4), False),  # (the bench's audio layer)
        ((8, 1, 16000), (512, 1, 10), dict(stride=5), True),
        ((8, 32, 60, 60), (64, 32, 3, 3), dict(stride=3), False),  # equal: the 1x1 rule's
        ((8, 32, 60, 60), (64, 32, 6, 6), dict(stride=3, dilation=2), False),
        ((8, 32, 60, 60), (64, 16, 6, 6), dict(stride=3, groups=2), False),
    ],
)
def test_kernel_multiple_of_stride_rule(x_shape, w_shape, kwargs, takes):
    """`_dispatch._kernel_multiple_of_stride`: layers whose kernel is two or three
    times a stride of at least 3 in every dim fold in training (the
    differentiated value and both derivatives, either layout), never a value alone."""
    spec, x_shape, w_shape = _spec_of(x_shape, w_shape, kwargs)
    rule = _dispatch._kernel_multiple_of_stride
    for channels_last in (False, True):
        layer = dataclasses.replace(spec, channels_last=channels_last)
        assert not rule(layer, w_shape, _dispatch.FORWARD, False)
        assert rule(layer, w_shape, _dispatch.FORWARD, True) == takes
        for role in (_dispatch.INPUT_GRADIENT, _dispatch.WEIGHT_GRADIENT):
            assert rule(layer, w_shape, role, False) == takes


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 3, 26, 25), (5, 3, 6, 6), dict(stride=3, padding=1)),  # rows left over
        ((2, 2, 20, 21), (4, 2, 8, 6), dict(stride=(4, 3), padding=(3, 0))),
        ((2, 3, 40), (4, 3, 9), dict(stride=3, padding=2)),  # 1-D
        ((1, 2, 9, 8, 10), (3, 2, 6, 6, 6), dict(stride=3)),  # 3-D
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_kernel_multiple_of_stride(monkeypatch, retrace, x_shape, w_shape, kwargs, channels_last):
    """Where `_dispatch._kernel_multiple_of_stride` says, `auto` trains the layer folded
    space-to-depth through `_run` (the differentiated value and both derivatives; a
    value alone unfolded), and its value and both gradients equal `lax`'s (float64),
    under every transform too."""
    folded = spy_rule_folds(monkeypatch)
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=9)
    np.testing.assert_allclose(jax.jit(conv("auto"))(x, w), conv("lax")(x, w), rtol=1e-10)
    assert folded == []
    trains_as_lax_float64(conv, x, w, check=False)
    assert set(folded) == TRAINING_FOLDS
    check_transforms(conv, x, w, cotangent(conv("lax"), x, w))


def _assert_matches_float64_with_jvp(conv, x, w, x_shape, w_shape):
    """``conv``'s value and both gradients (`_assert_matches_float64`, with the summation
    lengths of these canonical shapes) and its forward mode in float64 equal
    ``conv(..., "lax")``'s."""
    nd = len(x_shape) - 2
    taps = math.prod(w_shape[2:])
    out = math.prod(jax.eval_shape(conv, x, w).shape[1 : 1 + nd])
    reductions = (w_shape[1] * taps, w_shape[0] * taps, x_shape[0] * out)
    rng = np.random.default_rng(7)
    _assert_matches_float64(conv, lambda a, b: conv(a, b, "lax"), x, w, rng, reductions)
    x64, w64 = jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64)
    tangents = (jnp.ones_like(x64), jnp.full_like(w64, 0.5))
    _, jvp = jax.jvp(conv, (x64, w64), tangents)
    _, jvp_ref = jax.jvp(functools.partial(conv, impl="lax"), (x64, w64), tangents)
    np.testing.assert_allclose(jvp, jvp_ref, rtol=1e-10, atol=1e-10)


def _common_factor_case(x_shape, w_shape, stride, dilation, padding, groups=1):
    """The canonical operands (zeros, channels-first) and spec of a layer."""
    spec = _spec.conv_plan(
        "conv", x_shape, w_shape, stride=stride, padding=padding, dilation=dilation, groups=groups
    ).spec
    return jnp.zeros(x_shape, jnp.float32), jnp.zeros(w_shape, jnp.float32), spec


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the common-factor rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, stride, dilation, padding, want",
    [
        # 5x5 stride 2 dilation 2 padding 4 @64: the even elements (32), padding 2.
        ((2, 8, 64, 64), (4, 8, 5, 5), 2, 2, 4, ((1, 1), (1, 1), ((2, 2),) * 2, (32, 32))),
        # Odd padding: the odd elements (@9: 1, 3, 5, 7), a padding element each side.
        ((1, 2, 9), (2, 2, 3), 2, 2, 1, ((1,), (1,), ((1, 1),), (4,))),
        # Stride 4, dilation 2: stride 2 and no dilation on the even elements, 14 (read
        # by no window) dropped.
        ((1, 2, 16), (2, 2, 3), 4, 2, 0, ((2,), (1,), ((0, 0),), (7,))),
        # Stride 2, dilation 4: stride 1, dilation 2.
        ((1, 2, 20), (2, 2, 3), 2, 4, 4, ((1,), (2,), ((2, 2),), (10,))),
        # Stride 3, dilation 6 along the height only; the width as it was.
        ((1, 2, 12, 12), (2, 2, 2, 2), (3, 1), (6, 2), 0, ((1, 1), (2, 2), ((0, 0),) * 2, (4, 12))),
        # Stride 3, dilation 3, padding 1 @13: elements 2, 5, 8, 11 (-lo mod 3 = 2).
        ((1, 2, 13), (2, 2, 3), 3, 3, 1, ((1,), (1,), ((1, 0),), (4,))),
        # Valid @10: the even elements 0..8, all read.
        ((1, 2, 10), (2, 2, 3), 2, 2, 0, ((1,), (1,), ((0, 0),), (5,))),
    ],
)
def test_common_factor_reduces_the_layer(x_shape, w_shape, stride, dilation, padding, want):
    """A layer whose stride and dilation share a factor runs as the convolution of the
    input elements it reads (`_dispatch._common_factor`): the reduced stride, dilation,
    padding and the elements taken as computed by hand."""
    x, w, spec = _common_factor_case(x_shape, w_shape, stride, dilation, padding)
    x = jnp.arange(math.prod(x_shape), dtype=jnp.float32).reshape(x_shape)
    reduced = _dispatch._common_factor(x, w, spec)
    assert reduced is not None
    x2, spec2 = reduced
    assert (spec2.stride, spec2.rhs_dilation, spec2.padding, x2.shape[2:]) == want
    assert spec2.out_spatial(x2.shape[2:], w_shape[2:]) == spec.out_spatial(
        x_shape[2:], w_shape[2:]
    )
    # The elements taken: every f-th from the first read (-lo mod f), f = gcd(s, d).
    index = [slice(None)] * 2
    dims = zip(spec.stride, spec.rhs_dilation, spec.padding, x2.shape[2:], strict=True)
    for s, d, (lo, _), n in dims:
        f = math.gcd(s, d)
        index.append(slice(-lo % f, -lo % f + f * (n - 1) + 1, f))
    np.testing.assert_array_equal(x2, x[tuple(index)])


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the common-factor rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, stride, dilation, groups",
    [
        ((1, 2, 16, 16), (2, 2, 3, 3), 2, 3, 1),  # coprime
        ((1, 2, 16, 16), (2, 2, 1, 1), 2, 2, 1),  # one tap: no dilation to share
        ((1, 2, 16, 16), (2, 2, 3, 3), 2, 1, 1),  # undilated
        ((2, 8, 56, 56), (8, 1, 5, 5), 2, 4, 8),  # depthwise: shift reads its windows
    ],
)
def test_common_factor_not_taken(x_shape, w_shape, stride, dilation, groups):
    """No common factor (or a layer shift-and-add runs), no reduction."""
    x, w, spec = _common_factor_case(x_shape, w_shape, stride, dilation, 1, groups)
    assert _dispatch._common_factor(x, w, spec) is None


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, dilation, padding, channels_last",
    [
        ((2, 6, 21, 19), (4, 6, 5, 5), 2, 2, 4, False),
        ((2, 6, 21, 19), (4, 6, 5, 5), 2, 2, 4, True),
        ((2, 6, 22, 17), (4, 6, 3, 3), (4, 2), (2, 4), ((1, 2), (3, 0)), True),
        ((1, 4, 31), (6, 4, 3), 3, 3, 2, False),
        ((1, 4, 16), (6, 4, 3), 4, 2, 0, True),  # the end cropped
        ((1, 4, 9, 10, 11), (4, 4, 3, 2, 3), 2, 2, 1, False),
        ((3, 4, 9, 10, 11), (4, 4, 3, 3, 3), (2, 1, 2), (2, 2, 4), (0, 2, 3), True),
    ],
)
def test_common_factor_matches_float64(x_shape, w_shape, stride, dilation, padding, channels_last):
    """Layers reduced by their common factor (`_dispatch._common_factor`, on the CPU):
    value and both gradients equal the float64 reference's, and forward mode too."""
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    x, w, by = _layer("conv", x_shape, w_shape, kwargs, channels_last, seed=71)

    def conv(a, b, impl="auto"):
        return by(impl)(a, b)

    if jax.default_backend() == "cpu":  # (the rule's backend)
        plan = _spec.conv_plan(
            "conv", x_shape, w_shape, stride=stride, padding=padding, dilation=dilation
        )
        zeros = jnp.zeros(x_shape), jnp.zeros(w_shape)
        assert _dispatch._common_factor(*zeros, plan.spec) is not None
    _assert_matches_float64_with_jvp(conv, x, w, x_shape, w_shape)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize(
    "x_shape, w_shape, transposes",
    [((8, 56, 56, 64), (3, 3, 64, 64), 0), ((8, 500, 512), (3, 512, 48), 2)],
    ids=["2d", "1d"],
)
def test_common_factor_cuts_in_the_callers_layout(x_shape, w_shape, transposes):
    """A channels-last 2-D layer reduced by its common factor takes the input elements
    it reads where they lie (`_common_factor`, `_common.slices_in_layout`): no
    transposed copy of the input around the slice, as the canonical slice made XLA
    write. In 1-D the canonical slice stays (its copies trained faster there)."""
    nd = len(x_shape) - 2
    x, w = jnp.ones(x_shape, jnp.float32), jnp.ones(w_shape, jnp.float32)

    def layer(a, b):
        return jaxconv.conv(a, b, stride=2, padding=2, dilation=2, channels_last=True)

    text = jax.jit(layer).lower(x, w).compile().as_text()
    assert text.count("transpose(") == transposes, nd
    got = jax.jit(layer)(x, w)
    want = jaxconv.conv(x, w, stride=2, padding=2, dilation=2, channels_last=True, impl="lax")
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_slices_in_layout():
    """`_common.slices_in_layout` is `lax.slice` of the canonical array in either
    layout."""
    from jaxconv._impls._common import slices_in_layout

    y = jnp.arange(2 * 3 * 7 * 9, dtype=jnp.float32).reshape((2, 3, 7, 9))
    starts, limits, strides = (0, 1, 1, 2), (2, 3, 7, 9), (1, 1, 2, 3)
    want = jax.lax.slice(y, starts, limits, strides)
    for channels_last in (False, True):
        spec = _spec.ConvSpec((1, 1), ((0, 0),) * 2, (1, 1), (1, 1), 1, None, channels_last)
        np.testing.assert_array_equal(slices_in_layout(y, spec, starts, limits, strides), want)


def _trim_case(x_shape, w_shape, stride, dilation, padding, groups=1):
    """Canonical operands (zeros) and the spec of a layer padded by ``padding`` (pairs)."""
    nd = len(x_shape) - 2
    spec = _spec.ConvSpec(
        stride=(stride,) * nd,
        padding=padding,
        lhs_dilation=(1,) * nd,
        rhs_dilation=(dilation,) * nd,
        groups=groups,
    )
    return jnp.zeros(x_shape, jnp.float32), jnp.zeros(w_shape, jnp.float32), spec


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, dilation, padding, want",
    [
        # ASPP's 3x3 dilation 18 @14: its centre tap alone, no padding.
        ((1, 8, 14, 14), (4, 8, 3, 3), 1, 18, ((18, 18),) * 2, ((1, 1), (2, 2), ((0, 0),) * 2)),
        # Stride 2, dilation 6 @5: the centre tap reads 0, 2, 4; the others only padding.
        ((1, 2, 5), (2, 2, 3), 2, 6, ((6, 6),), ((1,), (2,), ((0, 0),))),
        # k31 "same" @4 (64 rows): taps 12 to 18, padding 3 each side.
        ((16, 2, 4), (2, 2, 31), 1, 1, ((15, 15),), ((12,), (19,), ((3, 3),))),
        # Along one dim only, asymmetric padding: taps 3 and 4 along the width.
        ((8, 2, 16, 2), (2, 2, 3, 5), 1, 1, ((1, 1), (4, 0)), ((0, 3), (3, 5), ((1, 1), (1, 0)))),
        # Depthwise 5x5 @2 (one channel a group, no row count asked): taps 1 to 3.
        ((1, 4, 2, 2), (4, 1, 5, 5), 1, 1, ((2, 2),) * 2, ((1, 1), (4, 4), ((1, 1),) * 2)),
    ],
)
def test_touching_taps_trim_the_kernel(x_shape, w_shape, stride, dilation, padding, want):
    """`_dispatch._touching_taps`: the taps from the first to the last that read the
    input for some output, and the padding shortened by the dropped taps' reach, worked
    by hand; the output's size is the layer's."""
    groups = x_shape[1] if w_shape[1] == 1 else 1
    x, w, spec = _trim_case(x_shape, w_shape, stride, dilation, padding, groups)
    trimmed = _dispatch._touching_taps(x, w, spec)
    assert trimmed is not None
    first, last, spec2 = trimmed
    assert (first, last, spec2.padding) == want
    kernel = tuple(b - a for a, b in zip(first, last, strict=True))
    assert spec2.out_spatial(x_shape[2:], kernel) == spec.out_spatial(x_shape[2:], w_shape[2:])


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, dilation, padding",
    [
        ((1, 2, 7, 7), (2, 2, 3, 3), 1, 1, ((1, 1),) * 2),  # every tap reads the input
        ((8, 2, 2, 2), (2, 2, 5, 5), 1, 1, ((2, 2),) * 2),  # undilated, 32 rows
        ((1, 1, 4), (1, 1, 3), 5, 3, ((1, 2),)),  # tap 1 alone would need padding -2
        ((1, 2, 1, 1), (2, 2, 3, 3), 1, 1, ((1, 1),) * 2),  # one pixel, one row
    ],
)
def test_touching_taps_not_trimmed(x_shape, w_shape, stride, dilation, padding):
    """No kernel trimmed where every tap reads the input, where an undilated kernel
    of more than one channel a group meets fewer than `TRIM_MIN_ROWS` rows (its
    derivatives by patches already), or where the padding would go negative."""
    x, w, spec = _trim_case(x_shape, w_shape, stride, dilation, padding)
    assert _dispatch._touching_taps(x, w, spec) is None


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, channels_last",
    [
        ((2, 6, 9, 11), (4, 6, 3, 3), dict(dilation=12, padding=12), False),  # ASPP-like
        ((2, 6, 9, 11), (4, 6, 3, 3), dict(dilation=12, padding=12), True),
        ((2, 6, 9, 11), (4, 6, 3, 3), dict(dilation=(10, 2), padding=(10, 3)), True),
        ((3, 4, 2, 6), (4, 1, 5, 5), dict(padding=2, groups=4), True),  # depthwise
        ((4, 3, 13), (5, 3, 9), dict(stride=4, dilation=4, padding=14), False),  # both
        ((2, 4, 3, 4, 5), (4, 2, 3, 3, 3), dict(dilation=6, padding=6, groups=2), False),
        ((16, 4, 6), (6, 4, 15), dict(padding=7), True),  # 96 rows, undilated
    ],
)
def test_trimmed_layers_match_float64(x_shape, w_shape, kwargs, channels_last):
    """Layers whose kernels `auto` trims to the taps that read the input
    (`_dispatch.reduced_layer`): value, both gradients (zeros on the dropped taps) and forward
    mode equal the float64 reference's."""
    x, w, by = _layer("conv", x_shape, w_shape, kwargs, channels_last, seed=72)

    def conv(a, b, impl="auto"):
        return by(impl)(a, b)

    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    assert _dispatch._touching_taps(jnp.zeros(x_shape), jnp.zeros(w_shape), spec) is not None
    _assert_matches_float64_with_jvp(conv, x, w, x_shape, w_shape)


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, dilation, padding, want",
    [
        # 1x1 padding 1 on 4x4: a border of zeros, the whole input, no padding left.
        (
            (1, 4, 4, 4),
            (2, 4, 1, 1),
            1,
            1,
            ((1, 1),) * 2,
            ([0] * 4, [1, 4, 4, 4], [(1, 1)] * 2, ((0, 0),) * 2),
        ),
        # 3x3 padding 3 on 5: outputs 1-7 of 9 read the input, from padding 2 on each side.
        ((1, 2, 5), (2, 2, 3), 1, 1, ((3, 3),), ([0] * 3, [1, 2, 5], [(1, 1)], ((2, 2),))),
        # 1x1 stride 2 padding 1 on 4: output 0 reads -1; outputs 1, 2 read 1 and 3.
        ((1, 2, 4), (2, 2, 1), 2, 1, ((1, 1),), ([0, 0, 1], [1, 2, 4], [(1, 0)], ((0, 0),))),
        # 1x1 stride 3 padding (4, 0) on 10: outputs 2-4 read 2, 5 and 8 (9 unread).
        ((1, 2, 10), (2, 2, 1), 3, 1, ((4, 0),), ([0, 0, 2], [1, 2, 9], [(2, 0)], ((0, 0),))),
        # 3 taps, dilation 2, padding 5 on 3: outputs 1-7 of 9, from padding 4 a side.
        ((1, 2, 3), (2, 2, 3), 1, 2, ((5, 5),), ([0] * 3, [1, 2, 3], [(1, 1)], ((4, 4),))),
        # Widening 4->8 1x1 padding 1 on 2x2: 12 of 16 outputs zeros.
        (
            (1, 4, 2, 2),
            (8, 4, 1, 1),
            1,
            1,
            ((1, 1),) * 2,
            ([0] * 4, [1, 4, 2, 2], [(1, 1)] * 2, ((0, 0),) * 2),
        ),
        # Widening, padding along one dim only: 2x5 -> 4x5, half the outputs zeros.
        (
            (1, 4, 2, 5),
            (8, 4, 1, 1),
            1,
            1,
            ((1, 1), (0, 0)),
            ([0] * 4, [1, 4, 2, 5], [(1, 1), (0, 0)], ((0, 0),) * 2),
        ),
    ],
)
def test_outputs_reading_input(x_shape, w_shape, stride, dilation, padding, want):
    """`_dispatch._outputs_reading_input`: the input box read, the zero outputs at either
    end of each dim and the padding of the rest, worked by hand; the rest's outputs are
    the layer's less the zeros."""
    x, w, spec = _trim_case(x_shape, w_shape, stride, dilation, padding)
    cropped = _dispatch._outputs_reading_input(x, w, spec)
    assert cropped is not None
    starts, limits, zeros, inner = cropped
    assert (starts, limits, zeros, inner.padding) == want
    box = [b - a for a, b in zip(starts[2:], limits[2:], strict=True)]
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    want_out = [o - a - b for o, (a, b) in zip(out, zeros, strict=True)]
    assert list(inner.out_spatial(box, w_shape[2:])) == want_out


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, dilation, padding",
    [
        ((1, 2, 7, 7), (2, 2, 3, 3), 1, 1, ((2, 2),) * 2),  # every output reads the input
        ((1, 2, 7), (2, 2, 1), 2, 1, ((0, 1),)),  # no output lands on the padding
        ((1, 4, 8, 8), (8, 4, 1, 1), 1, 1, ((1, 1),) * 2),  # widening: 36 of 100 zeros
        ((1, 4, 2, 5), (8, 4, 1, 1), 1, 1, ((1, 0), (0, 0))),  # widening: 2 of 3 rows read
        ((1, 2, 2), (2, 2, 1), 5, 1, ((3, 3),)),  # no output reads the input
    ],
)
def test_outputs_reading_input_not_cropped(x_shape, w_shape, stride, dilation, padding):
    """Nothing cropped where every output reads the input, where a layer to more
    channels than it reads has fewer than half its outputs zeros
    (`CROP_WIDENING_MIN_ZEROS_RATIO`), or where no output reads the input."""
    x, w, spec = _trim_case(x_shape, w_shape, stride, dilation, padding)
    assert _dispatch._outputs_reading_input(x, w, spec) is None


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, channels_last",
    [
        ((2, 96, 9, 7), (4, 96, 1, 1), dict(padding=1), True),  # found by a sweep
        ((2, 96, 9, 7), (4, 96, 1, 1), dict(padding=1), False),
        ((3, 8, 6, 5), (4, 8, 3, 3), dict(padding=(4, 3), stride=2), True),
        ((2, 6, 17), (3, 6, 2), dict(padding=5, stride=3, dilation=2), False),
        ((2, 4, 3, 4, 5), (2, 4, 1, 1, 1), dict(padding=2), True),  # 3-D
        ((2, 4, 3, 4, 5), (2, 4, 1, 1, 1), dict(padding=2), False),
        ((2, 6, 5, 5), (6, 1, 3, 3), dict(padding=3, groups=6), True),  # depthwise
        ((2, 4, 3, 3), (8, 2, 1, 1), dict(padding=2, groups=2), False),  # widening, grouped
    ],
)
def test_cropped_layers_match_float64(x_shape, w_shape, kwargs, channels_last):
    """Layers whose outputs at the borders read only padding, which `auto` writes as
    zeros around the rest (`_dispatch._outputs_reading_input`): value, both gradients
    and forward mode equal the float64 reference's."""
    x, w, by = _layer("conv", x_shape, w_shape, kwargs, channels_last, seed=73)

    def conv(a, b, impl="auto"):
        return by(impl)(a, b)

    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    assert _dispatch._outputs_reading_input(jnp.zeros(x_shape), jnp.zeros(w_shape), spec)
    _assert_matches_float64_with_jvp(conv, x, w, x_shape, w_shape)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, taken",
    [
        # Found by a sweep: 32 groups of 3->2 7x7 @56 batch 16 (the groups loop's).
        ((16, 96, 56, 56), (64, 3, 7, 7), dict(padding=3, groups=32), True),
        ((2, 12, 10, 10), (16, 3, 7, 7), dict(padding=3, groups=4), True),  # dense groups'
        ((2, 64, 10, 10), (16, 16, 7, 7), dict(padding=3, groups=4), True),  # 16->4
        ((2, 12, 10, 10), (20, 3, 7, 7), dict(padding=3, groups=4), False),  # to 5
        ((2, 68, 10, 10), (8, 17, 7, 7), dict(padding=3, groups=4), False),  # from 17
        ((2, 12, 10, 10), (8, 3, 5, 5), dict(padding=2, groups=4), False),  # 25 taps
        ((2, 12, 20, 20), (8, 3, 7, 7), dict(padding=3, stride=2, groups=4), False),
        ((2, 12, 9, 11), (8, 3, 7, 7), dict(padding=3, groups=4), True),  # 99 positions
        # Found by a sweep: 32 groups of 3->1 7x7 unpadded @14 batch 16 (8x8 outputs).
        ((16, 96, 14, 14), (32, 3, 7, 7), dict(groups=32), True),
        ((4, 12, 5, 5), (8, 3, 7, 7), dict(padding=3, groups=4), True),  # 25 positions
        ((8, 12, 4, 6), (8, 3, 7, 7), dict(padding=3, groups=4), False),  # 24 positions
        ((3, 12, 6, 6), (8, 3, 7, 7), dict(padding=3, groups=4), True),  # 108 rows
        ((2, 12, 7, 7), (8, 3, 7, 7), dict(padding=3, groups=4), False),  # 98 rows
        ((1, 12, 9, 11), (8, 3, 7, 7), dict(padding=3, groups=4), False),  # 99 rows
        ((1, 96, 20, 20), (64, 3, 7, 7), dict(padding=3, groups=32), False),  # 400 rows
        ((2, 12, 100), (8, 3, 49), dict(padding=24, groups=4), False),  # 1-D
        # Dilated: found by a sweep, 8 groups of 3->2 7x7 dilation 2 @28 batch 4.
        ((4, 24, 28, 28), (16, 3, 7, 7), dict(padding=6, dilation=2, groups=8), True),
        ((4, 24, 28, 28), (16, 3, 7, 7), dict(padding=(6, 5), dilation=2, groups=8), False),
    ],
)
def test_grouped_few_outputs_by_fft(x_shape, w_shape, kwargs, taken):
    """Grouped 2-D layers that dense groups or the groups loop would take, to at most 4
    output channels a group from at most 16, unstrided (and if dilated, with outputs as
    large as their inputs), with at least 49 taps on at least 25 output positions per
    image and 100 rows, run all three roles by FFT
    (`_dispatch._grouped_few_outputs_by_fft`), in either layout; not otherwise."""
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    _assert_fft_rule(_dispatch._grouped_few_outputs_by_fft, spec, x_shape, w_shape, taken)


def _assert_fft_rule(rule, spec, x_shape, w_shape, taken):
    """``rule`` (one of `_dispatch`'s FFT rules) takes this layer in either layout iff
    ``taken``, and `choose` then runs all three roles by FFT, but not nested."""
    for channels_last in (False, True):
        layer = dataclasses.replace(spec, channels_last=channels_last)
        assert rule(layer, x_shape, w_shape) == taken
        names = _dispatch.choose(layer, x_shape, w_shape, jnp.float32, "cpu")
        assert (names == ("fft",) * 3) == taken, names
        nested = _dispatch.choose(layer, x_shape, w_shape, jnp.float32, "cpu", nested=True)
        assert nested != ("fft",) * 3  # (whole layers only)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape, kwargs",
    [
        ((2, 12, 10, 11), dict(padding=3, groups=4)),
        ((4, 12, 11, 11), dict(groups=4)),
        ((2, 12, 10, 11), dict(padding=6, dilation=2, groups=4)),
    ],
)
def test_grouped_few_outputs_by_fft_trains_as_lax(x_shape, kwargs, channels_last):
    """Those layers' values and gradients (FFT's) equal lax's (float64), and so do forward
    mode, second derivatives and `vmap`: padded, unpadded to 5x5 outputs, and dilated."""
    w_shape = (8, 3, 7, 7)  # 4 groups of 3->2
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=6)
    spec = _spec.conv_plan("conv", x.shape, w.shape, channels_last=channels_last, **kwargs).spec
    assert _dispatch.choose(spec, x_shape, w_shape, jnp.float32, "cpu") == ("fft",) * 3
    trains_as_lax_float64(conv, x, w, check=True)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, taken",
    [
        # Found by random sweeps: 16->8 7x7 dilation 2 @56, 12->1 11x11 dilation 3 @64.
        ((8, 16, 56, 56), (8, 16, 7, 7), dict(padding=6, dilation=2), True),
        ((8, 12, 64, 64), (1, 12, 11, 11), dict(padding=15, dilation=3), True),
        ((2, 8, 20, 20), (8, 8, 7, 7), dict(padding="same"), True),
        ((2, 4, 20, 20), (8, 4, 7, 7), dict(padding=3), True),  # from 4
        ((2, 3, 20, 20), (8, 3, 7, 7), dict(padding=3), False),  # from 3
        ((2, 16, 20, 20), (8, 16, 7, 7), dict(padding=3), True),  # from 16
        ((2, 17, 20, 20), (8, 17, 7, 7), dict(padding=3), False),  # from 17
        ((2, 8, 20, 20), (9, 8, 7, 7), dict(padding=3), False),  # to 9
        ((2, 8, 20, 20), (8, 8, 6, 8), dict(padding="same"), False),  # 48 taps to 8
        ((2, 8, 20, 20), (4, 8, 5, 5), dict(padding=2), True),  # 25 taps to 4
        ((2, 8, 20, 20), (2, 8, 5, 5), dict(padding=2), True),  # ... to 2
        ((2, 8, 20, 20), (5, 8, 5, 5), dict(padding=2), False),  # ... to 5
        ((2, 8, 20, 20), (1, 8, 5, 5), dict(padding=2), False),  # ... to 1
        ((2, 8, 20, 20), (4, 8, 4, 6), dict(padding="same"), False),  # 24 taps to 4
        ((2, 8, 20, 20), (1, 8, 7, 7), dict(padding=3), True),  # 49 taps to 1
        ((1, 8, 20, 20), (8, 8, 7, 7), dict(padding=3), False),  # one image to 8
        ((1, 8, 20, 20), (4, 8, 7, 7), dict(padding=3), True),  # one image to 4
        ((2, 8, 20, 20), (8, 8, 7, 7), dict(padding=(3, 2)), False),  # narrower output
        ((2, 8, 20, 20), (4, 8, 7, 6), dict(padding=(3, 2)), False),  # ... by one
        ((2, 8, 20, 20), (8, 8, 7, 7), dict(padding=0), False),  # valid
        ((2, 8, 20, 20), (8, 8, 7, 7), dict(padding=4), False),  # a larger output
        ((2, 8, 20, 20), (8, 8, 7, 7), dict(pairs=((-1, 7), (3, 3))), False),  # negative
        # Input-dilated (a zero between each two input rows), padded back to 20 outputs:
        (
            (2, 8, 20, 20),
            (4, 8, 7, 7),
            dict(padding=15, pairs=((14, 15),) * 2, dilation=8, lhs=2),
            False,
        ),
        ((2, 8, 20, 20), (8, 8, 7, 7), dict(padding=3, stride=2), False),
        ((2, 8, 20, 20), (16, 4, 7, 7), dict(padding=3, groups=2), False),
        ((2, 8, 100), (8, 8, 31), dict(padding=15), True),  # 1-D: 31 taps
        ((2, 8, 100), (1, 8, 31), dict(padding=15), True),  # ... to one channel
        ((2, 8, 100), (8, 8, 29), dict(padding=14), False),  # 29 taps
        ((2, 8, 100), (4, 8, 30), dict(padding="same"), False),  # 30 taps to 4
        ((2, 8, 100), (8, 8, 31), dict(padding=0), False),  # valid
        ((2, 17, 100), (8, 17, 31), dict(padding=15), False),  # from 17
        ((2, 8, 6, 20, 20), (8, 8, 1, 7, 7), dict(padding=(0, 3, 3)), False),  # 3-D
    ],
)
def test_few_channels_large_window_by_fft(x_shape, w_shape, kwargs, taken):
    """Dense 2-D layers that the rules leave to XLA, unstrided and padded to an output
    as large as the input, from 4-16 input channels to at most 8 with at least 49 taps,
    or to 2-4 with at least 25 (1-D: at least 31), and to at most 4 from one image, run
    all three roles by FFT (`_dispatch._few_channels_large_window_by_fft`), in either
    layout; not otherwise, nor nested."""
    kwargs = dict(kwargs)
    lhs, pairs = kwargs.pop("lhs", 1), kwargs.pop("pairs", None)  # (not public arguments)
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    spec = dataclasses.replace(spec, lhs_dilation=(lhs,) * spec.ndim)
    if pairs is not None:  # padded (back) to the input's size
        spec = dataclasses.replace(spec, padding=pairs)
        assert tuple(spec.out_spatial(x_shape[2:], w_shape[2:])) == x_shape[2:]
    rule = _dispatch._few_channels_large_window_by_fft
    _assert_fft_rule(rule, spec, x_shape, w_shape, taken)


def test_few_channels_large_window_by_fft_after_the_rules():
    """Only layers that the rules leave to XLA in all three roles: 4->2 5x5 dilation 2
    keeps `shift`'s value (`_dispatch._few_inputs_value_by_shift`)."""
    x_shape, w_shape = (4, 4, 56, 56), (2, 4, 5, 5)
    spec = _spec.conv_plan("conv", x_shape, w_shape, padding=4, dilation=2).spec
    assert _dispatch._few_channels_large_window_by_fft(spec, x_shape, w_shape)
    assert _dispatch.choose(spec, x_shape, w_shape, jnp.float32, "cpu")[0] == "shift"


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 5, 11, 12), (8, 5, 8, 8), dict(padding="same")),  # even kernel: padded 3, 4
        ((2, 6, 9, 10), (3, 6, 5, 7), dict(padding=(4, 9), dilation=(2, 3))),
        ((2, 5, 40), (3, 5, 32), dict(padding="same", dilation=2)),  # 1-D
    ],
)
def test_few_channels_large_window_by_fft_trains_as_lax(x_shape, w_shape, kwargs, channels_last):
    """Those layers' values and gradients (FFT's) equal lax's (float64), and so do forward
    mode, second derivatives and `vmap`."""
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=7)
    spec = _spec.conv_plan("conv", x.shape, w.shape, channels_last=channels_last, **kwargs).spec
    assert _dispatch.choose(spec, x_shape, w_shape, jnp.float32, "cpu") == ("fft",) * 3
    trains_as_lax_float64(conv, x, w, check=True)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the reduction is the CPU's")
@pytest.mark.parametrize("impl", ["auto", "autotune"])
def test_auto_runs_the_reduced_layer(impl, monkeypatch, tmp_path):
    """`auto` (and autotune) hand the rules the reduced layer (`_dispatch.reduced_layer`):
    ASPP's 3x3 dilation 18 @14 as its centre tap, stride 2 and dilation 2 as the
    unstrided, undilated layer of every other element; and a padded 1x1 layer's outputs
    that read the input, unpadded (`_dispatch.with_outputs_cropped`)."""
    monkeypatch.setenv("JAXCONV_AUTOTUNE_CACHE", str(tmp_path / "autotune.json"))
    seen = []
    real = _dispatch.forward_with

    def spy(x, w, spec, names):
        seen.append((x.shape, w.shape, spec.stride, spec.rhs_dilation, spec.padding))
        return real(x, w, spec, names)

    monkeypatch.setattr(_dispatch, "forward_with", spy)
    jax.clear_caches()
    x, w = jnp.ones((2, 16, 14, 14)), jnp.ones((8, 16, 3, 3))
    jax.eval_shape(lambda a, b: jaxconv.conv2d(a, b, padding=18, dilation=18, impl=impl), x, w)
    assert seen[-1] == ((2, 16, 14, 14), (8, 16, 1, 1), (1, 1), (18, 18), ((0, 0), (0, 0)))
    x, w = jnp.ones((2, 16, 13, 12)), jnp.ones((8, 16, 3, 3))
    f = functools.partial(jaxconv.conv2d, stride=2, padding=2, dilation=2, impl=impl)
    jax.eval_shape(f, x, w)
    assert seen[-1] == ((2, 16, 7, 6), (8, 16, 3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)))
    x, w = jnp.ones((2, 16, 6, 5)), jnp.ones((8, 16, 1, 1))
    y = jax.eval_shape(lambda a, b: jaxconv.conv2d(a, b, padding=1, impl=impl), x, w)
    assert y.shape == (2, 8, 8, 7)
    assert seen[-1] == ((2, 16, 6, 5), (8, 16, 1, 1), (1, 1), (1, 1), ((0, 0), (0, 0)))
    jax.clear_caches()


@pytest.mark.parametrize(
    "x_shape, w_shape, groups, want, dilation",
    [
        ((8, 128, 28, 28), (256, 2, 7, 7), 64, ("shift", "fft", "fft"), 1),  # 2->4 7x7
        ((1, 16, 56, 56), (48, 1, 7, 7), 16, ("shift", "fft", "fft"), 1),  # multiplier 3
        ((1, 32, 28, 28), (64, 2, 7, 7), 16, ("shift", "matmul", "matmul"), 1),  # 784 rows
        ((1, 16, 28, 28), (48, 1, 7, 7), 16, ("shift", "matmul", "shift"), 1),  # 784 rows
        ((8, 128, 28, 28), (256, 2, 5, 5), 64, ("shift",) * 3, 1),  # 5x5: shift's throughout
        ((8, 128, 28, 28), (384, 2, 3, 3), 64, ("shift",) * 3, 1),  # 3x3
        # Not dilated ones (0.74x in training), though padded to the input's size.
        ((8, 128, 28, 28), (256, 2, 7, 7), 64, ("shift", "matmul", "matmul"), 2),
    ],
)
def test_shift_derivatives_by_fft(x_shape, w_shape, groups, want, dilation):
    """Grouped 2-D layers whose value is `shift`'s and whose input gradient it would sum
    over many products take FFT's derivatives with an undilated 7x7 kernel from 3136
    rows (`_dispatch._shift_derivatives_by_fft`), `matmul`'s input gradient as before on
    fewer rows, smaller or dilated kernels; in either layout."""
    k = w_shape[-1]
    kwargs = dict(padding=k // 2 * dilation, dilation=dilation, groups=groups)
    spec = _spec.conv_plan("conv", x_shape, w_shape, **kwargs).spec
    for channels_last in (False, True):
        layer = dataclasses.replace(spec, channels_last=channels_last)
        assert _dispatch.choose(layer, x_shape, w_shape, jnp.float32, "cpu") == want
        nested = _dispatch.choose(layer, x_shape, w_shape, jnp.float32, "cpu", nested=True)
        assert nested[1:] != ("fft", "fft")  # (whole layers only)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule is the CPU's")
@pytest.mark.parametrize("channels_last", [False, True])
def test_shift_derivatives_by_fft_train_as_lax(channels_last, monkeypatch, retrace):
    """Those layers' values (shift's) and gradients (FFT's) equal lax's (float64), and so
    do forward mode, second derivatives and `vmap`."""
    monkeypatch.setattr(_dispatch, "SHIFT_FFT_DERIVATIVES_MIN_ROWS", 100)
    kwargs = dict(padding=3, groups=4)
    x_shape, w_shape = (1, 8, 10, 11), (16, 2, 7, 7)  # 4 groups of 2->4
    x, w, conv = float64_layer(x_shape, w_shape, kwargs, channels_last, seed=8)
    spec = _spec.conv_plan("conv", x.shape, w.shape, channels_last=channels_last, **kwargs).spec
    assert _dispatch.choose(spec, x_shape, w_shape, jnp.float32, "cpu") == ("shift", "fft", "fft")
    trains_as_lax_float64(conv, x, w, check=True)
