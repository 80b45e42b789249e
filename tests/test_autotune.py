"""impl="autotune": measured winners give XLA's results, are cached in memory and on
disk, and a cache that cannot be used never breaks a call."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv import _autotune, _spec

DEFAULT_CANDIDATES = _autotune.CANDIDATES  # before the fixture narrows them


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh cache file and memory per test (and no trace kept by jit, which would skip
    the lookup); few candidates and runs, for speed."""
    jax.clear_caches()
    path = tmp_path / "autotune.json"
    monkeypatch.setenv("JAXCONV_AUTOTUNE_CACHE", str(path))
    monkeypatch.setattr(_autotune, "CANDIDATES", ("auto", "lax", "matmul", "shift"))
    monkeypatch.setattr(_autotune, "REPEATS", 1)
    _autotune.clear_memory()
    yield path
    _autotune.clear_memory()


def _count_calls(monkeypatch, name):
    """The arguments of each call to ``_autotune.<name>`` from now on. Counting calls to
    `choose` proves that a trace reached the lookup (a trace JAX kept would skip it)."""
    calls = []
    real = getattr(_autotune, name)

    def counted(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(_autotune, name, counted)
    return calls


CASES = [
    (jaxconv.conv1d, (2, 3, 11), (4, 3, 3), dict(stride=2, padding=1)),
    (jaxconv.conv2d, (2, 4, 9, 8), (4, 1, 3, 3), dict(padding="same", groups=4)),
    (jaxconv.conv2d, (1, 9, 8, 4), (2, 3, 2, 6), dict(groups=2, dilation=2, channels_last=True)),
    (jaxconv.conv_transpose2d, (2, 4, 5, 5), (4, 3, 4, 4), dict(stride=2, padding=1)),
    (jaxconv.conv3d, (1, 2, 4, 5, 5), (3, 2, 2, 3, 3), dict(padding=1)),
    # Stride and dilation sharing a factor: measured reduced (`_dispatch._common_factor`).
    (jaxconv.conv2d, (2, 16, 13, 12), (8, 16, 3, 3), dict(stride=2, dilation=2, padding=2)),
]


@pytest.mark.parametrize("fn,x_shape,w_shape,kwargs", CASES)
def test_autotune_matches_lax_values_and_gradients(fn, x_shape, w_shape, kwargs):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)

    def loss(impl):
        return lambda a, b: jnp.sum(jnp.sin(fn(a, b, **kwargs, impl=impl)))

    def every(a, b):
        # One compiled program (the value first: its trace measures the candidates).
        values = [fn(a, b, **kwargs, impl=impl) for impl in ("autotune", "lax")]
        grads = [jax.grad(loss(impl), (0, 1))(a, b) for impl in ("autotune", "lax")]
        return values, grads

    (value, value_lax), (got, want) = jax.jit(every)(x, w)
    np.testing.assert_allclose(value, value_lax, rtol=1e-4, atol=1e-4)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_measured_once_per_signature_then_read_from_disk(cache, monkeypatch):
    calls = _count_calls(monkeypatch, "measure")
    choices = _count_calls(monkeypatch, "choose")
    x, w = np.ones((2, 4, 8, 8)), np.ones((4, 1, 3, 3))
    conv = lambda a, b, s=1: jaxconv.conv2d(a, b, padding=1, groups=4, stride=s, impl="autotune")  # noqa: E731
    conv(x, w)
    jax.clear_caches()
    jax.jit(conv).lower(x, w)  # another trace, same signature (measuring is tracing)
    assert len(calls) == 1 and len(choices) == 2  # looked up again, read from memory
    conv(x, w, 2)  # another signature
    assert len(calls) == 2
    entries = json.loads(cache.read_text())
    assert len(entries) == 2
    assert all(len(v) == 3 and set(v) <= set(_autotune.CANDIDATES) for v in entries.values())
    # A new process (memory cleared) reads the file instead of measuring.
    _autotune.clear_memory()
    jax.clear_caches()
    jax.jit(lambda a, b: conv(a, b) + 0).lower(x, w)
    assert len(calls) == 2 and len(choices) == 4


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the common-factor rule is the CPU's")
def test_a_layer_with_a_common_factor_is_measured_reduced(monkeypatch):
    """Stride 2 and dilation 2 read every other element: autotune measures the plain
    convolution of those, as `auto` runs it (`_dispatch._common_factor`)."""
    choices = _count_calls(monkeypatch, "choose")
    x, w = np.ones((2, 16, 13, 12), np.float32), np.ones((8, 16, 3, 3), np.float32)
    jaxconv.conv2d(x, w, stride=2, dilation=2, padding=2, impl="autotune")
    ((spec, x_shape, w_shape, _),) = choices
    assert (spec.stride, spec.rhs_dilation, spec.padding) == ((1, 1), (1, 1), ((1, 1), (1, 1)))
    assert (tuple(x_shape), tuple(w_shape)) == ((2, 16, 7, 6), (8, 16, 3, 3))


def test_cached_winners_are_the_ones_run(cache, monkeypatch):
    """A winner read from the file decides what runs: an entry naming "fft" for the
    value puts FFTs in the program."""
    x, w = np.ones((2, 4, 8, 8)), np.ones((4, 4, 3, 3))
    plan = _spec.conv_plan("conv2d", x.shape, w.shape, padding=1)
    key = _autotune._key(plan.spec, x.shape, w.shape, x.dtype)
    cache.write_text(json.dumps({key: ["fft", "lax", "lax"]}))
    calls = _count_calls(monkeypatch, "measure")
    text = jax.jit(lambda a, b: jaxconv.conv2d(a, b, padding=1, impl="autotune")).lower(x, w)
    assert "fft" in text.as_text()
    assert not calls


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"k": ["nope", "lax", "lax"]}'])
def test_a_bad_cache_file_is_ignored(cache, content):
    cache.write_text(content)
    x, w = np.ones((1, 2, 6, 6)), np.ones((2, 2, 3, 3))
    got, want = jax.jit(
        lambda a, b: [jaxconv.conv2d(a, b, impl=impl) for impl in ("autotune", "lax")]
    )(x, w)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert isinstance(json.loads(cache.read_text()), dict)  # rewritten with the winner


def test_unwritable_cache_keeps_winners_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("JAXCONV_AUTOTUNE_CACHE", str(blocker / "sub" / "autotune.json"))
    calls = _count_calls(monkeypatch, "measure")
    choices = _count_calls(monkeypatch, "choose")
    x, w = np.ones((1, 2, 6, 6)), np.ones((2, 2, 3, 3))
    for _ in range(2):  # traced twice (measuring is tracing)
        jax.clear_caches()
        jax.jit(lambda a, b: jaxconv.conv2d(a, b, impl="autotune")).lower(x, w)
    assert len(calls) == 1 and len(choices) == 2
    assert not list(tmp_path.glob("**/*.tmp"))


def test_failed_measurement_falls_back_to_the_rules(monkeypatch):
    def fail(*args):
        raise MemoryError("no room")

    monkeypatch.setattr(_autotune, "measure", fail)
    x, w = np.ones((1, 2, 6, 6)), np.ones((2, 2, 3, 3))
    plan = _spec.conv_plan("conv2d", x.shape, w.shape)
    assert _autotune.choose(plan.spec, x.shape, w.shape, x.dtype) == ("auto",) * 3
    got, want = jax.jit(
        lambda a, b: [jaxconv.conv2d(a, b, impl=impl) for impl in ("autotune", "lax")]
    )(x, w)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_candidates_that_fail_are_skipped(monkeypatch):
    def broken(x, w, spec):
        raise RuntimeError("cannot compile here")

    monkeypatch.setitem(_autotune.FORWARDS, "matmul", broken)
    x, w = np.ones((1, 2, 6, 6)), np.ones((2, 2, 3, 3))
    plan = _spec.conv_plan("conv2d", x.shape, w.shape)
    names = _autotune.measure(plan.spec, x.shape, w.shape, jnp.float32)
    assert len(names) == 3 and "matmul" not in names


def test_autotune_under_vmap_jvp_and_hessian():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 4, 7)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3)).astype(np.float32)
    t = np.ones_like(w)

    def f(impl):
        return lambda a, b: jaxconv.conv1d(a, b, padding=1, groups=4, impl=impl)

    def every(x, w, t):  # one compiled program, traced in the order the checks run
        impls = ("autotune", "lax")
        mapped = [jax.vmap(f(impl), (0, None))(x, w) for impl in impls]
        jvps = [jax.jvp(lambda b, impl=impl: f(impl)(x[0], b), (w,), (t,)) for impl in impls]
        hess = lambda impl: jax.hessian(lambda b: jnp.sum(f(impl)(x[0], b) ** 3))(w)  # noqa: E731
        return mapped, jvps, [hess(impl) for impl in impls]

    (mapped, mapped_lax), (got, want), (hess, hess_lax) = jax.jit(every)(x, w, t)
    np.testing.assert_allclose(mapped, mapped_lax, rtol=1e-5)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hess, hess_lax, rtol=1e-4, atol=1e-4)


def test_every_candidate_by_default():
    assert set(DEFAULT_CANDIDATES) == {"auto", *jaxconv.IMPLS}


def test_unknown_impl_names_autotune_among_choices():
    with pytest.raises(ValueError, match="autotune"):
        jaxconv.conv1d(np.ones((1, 1, 4)), np.ones((1, 1, 2)), impl="fastest")
