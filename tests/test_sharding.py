"""Sharded inputs and weights on 8 simulated CPU devices, and the halo-exchange conv.

conftest.py asks for 8 CPU devices before JAX starts. Meshes are built from the CPU
devices explicitly, so the tests mean the same on a machine with an accelerator.
The meshes use `AxisType.Auto` (XLA's SPMD partitioner decides the distribution),
which is what jaxconv's contract relies on.
"""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from reference import conv as ref_conv
from reference import conv_transpose as ref_conv_transpose
from tolerance import assert_close

import jaxconv
from jaxconv._impls import shift

DEVICES = 8
IMPLS = (*jaxconv.IMPLS, "auto")


@functools.cache
def cpu_mesh(shape=(DEVICES,), names=("d",), axis_type=AxisType.Auto) -> jax.sharding.Mesh:
    """A mesh of `DEVICES` CPU devices, its axes all of ``axis_type``."""
    devices = jax.devices("cpu")
    if len(devices) < DEVICES:
        pytest.fail(
            f"tests/test_sharding.py needs {DEVICES} CPU devices, JAX has {len(devices)}: "
            'tests/conftest.py sets jax.config.update("jax_num_cpu_devices", 8), which '
            "only works before JAX's first computation (or run with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={DEVICES})"
        )
    return jax.make_mesh(
        shape, names, axis_types=(axis_type,) * len(shape), devices=devices[:DEVICES]
    )


def put(x, *spec, mesh=None):
    return jax.device_put(x, NamedSharding(mesh or cpu_mesh(), P(*spec)))


_SINGLE_DEVICE = {}


def single_device(key, f, *args):
    """``jax.jit(f)(*args)`` on unsplit NumPy arguments, as NumPy arrays, computed once
    per `key` and argument values; `key` names `f` and what it closes over.

    A case run under both Auto and Explicit mesh axes compares with the same
    single-device results; they are compiled once, not once per axis type.
    """
    key = (key, *((a.shape, a.dtype.str, a.tobytes()) for a in args))
    if key not in _SINGLE_DEVICE:
        _SINGLE_DEVICE[key] = jax.tree.map(np.asarray, jax.jit(f)(*args))
    return _SINGLE_DEVICE[key]


# ----------------------------------------------------------------------------- XLA SPMD
# One 2-D case per op, every dim a multiple of 8 so that every one of them can be split:
# input (N=8, C=8, 8, 8); forward kernel (3, 2) with "same" padding (uneven halo);
# transposed stride 2, padding 1, output_padding 1 (output 16 x 15).

KERNEL = (3, 2)
FORWARD = dict(padding="same")
TRANSPOSE = dict(stride=2, padding=1, output_padding=1)


def _case(op, channels_last, rng):
    """(x, w, f, expected) in the caller's layout; expected from the NumPy reference."""
    x = rng.standard_normal((8, 8, 8, 8))
    w = rng.standard_normal((8, 8, *KERNEL))
    if op == "conv":
        expected = ref_conv(x, w, pads=[(1, 1), (0, 1)])
        f = functools.partial(jaxconv.conv, **FORWARD)
    else:
        expected = ref_conv_transpose(x, w, **TRANSPOSE)
        f = functools.partial(jaxconv.conv_transpose, **TRANSPOSE)
    if channels_last:
        x, expected = np.moveaxis(x, 1, -1), np.moveaxis(expected, 1, -1)
        w = np.transpose(w, (2, 3, 1, 0))
    return x, w, functools.partial(f, channels_last=channels_last), expected


def _specs(sharded, op, channels_last):
    """PartitionSpecs (input, weight, output) for sharding along `sharded`.

    The output spec is where the result should stay split; for "channels" (split
    along the contracted dim) it is the output channels, requested with out_shardings.
    """
    d = "d"
    batch, chan, space = 0, (3 if channels_last else 1), (1 if channels_last else 2)

    def at(dim, ndim=4):
        return tuple(d if i == dim else None for i in range(ndim))

    # The weight's C_out dim: conv (O, I, *K) / (*K, I, O); transpose (I, O, *K) / (*K, O, I).
    w_out = {("conv", False): 0, ("conv", True): 3, ("conv_transpose", False): 1}
    w_out = w_out.get((op, channels_last), 2)
    return {
        "batch": (at(batch), (), at(batch)),
        "channels": (at(chan), (), at(chan)),
        "spatial": (at(space), (), at(space)),
        "weight_out": ((), at(w_out), at(chan)),
    }[sharded]


SHARDINGS = ("batch", "channels", "spatial", "weight_out")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["NC*", "N*C"])
@pytest.mark.parametrize("op", ["conv", "conv_transpose"])
def test_sharded_equals_single_device(op, channels_last, impl, rng):
    """Each way of splitting gives the reference result, and the result stays split.

    The four splits compile as one program (compile time dominates these tests).
    Split along a dim the output keeps (batch, a spatial dim, the weight's output
    channels), XLA's partitioner keeps the result split there. Split along the
    contracted input channels, XLA reduces across devices and leaves the sum
    replicated; asked to, it keeps the result split along the output channels.
    """
    x, w, f, expected = _case(op, channels_last, rng)
    mesh = cpu_mesh()
    shardings = SHARDINGS
    specs = [_specs(s, op, channels_last) for s in shardings]
    args = [(put(x, *x_spec), put(w, *w_spec)) for x_spec, w_spec, _ in specs]

    def run(args):
        outs = [f(xs, ws, impl=impl) for xs, ws in args]
        return [
            jax.lax.with_sharding_constraint(out, NamedSharding(mesh, P(*out_spec)))
            if sharded == "channels"
            else out
            for sharded, out, (_, _, out_spec) in zip(shardings, outs, specs, strict=True)
        ]

    for sharded, out, (_, _, out_spec) in zip(shardings, jax.jit(run)(args), specs, strict=True):
        if impl == "fft" and sharded != "channels":
            out_spec = ("d", None, None, None)
        want = NamedSharding(mesh, P(*out_spec))
        assert out.sharding.is_equivalent_to(want, out.ndim), (sharded, out.sharding)
        assert len(out.sharding.device_set) == DEVICES
        shard_shape = list(out.shape)
        shard_shape[out_spec.index("d")] //= DEVICES
        assert {s.data.shape for s in out.addressable_shards} == {tuple(shard_shape)}, sharded
        assert_close(out, expected, reduction=8 * 6)


@pytest.mark.parametrize("impl", sorted({"lax", "einsum" if "einsum" in IMPLS else IMPLS[-1]}))
@pytest.mark.parametrize("sharded", ["spatial"])
def test_grad_under_sharding(sharded, impl, rng):
    x, w, f, _ = _case("conv", False, rng)
    x_spec, _, _ = _specs(sharded, "conv", False)

    def loss(x, w):
        # Nonlinear in x, so the gradient depends on the (sharded) input.
        return jnp.sum(f(x, w, impl=impl) ** 2)

    grad = jax.jit(jax.grad(loss))(put(x, *x_spec), w)
    expected = jax.jit(jax.grad(loss))(x, w)
    assert not grad.sharding.is_fully_replicated, grad.sharding
    assert_close(grad, expected, reduction=8 * 6 * 8 * 6)


# ----------------------------------------------------------------------------- halo_exchange


def _halo_reference(x, halo, dim, circular, shards):
    """Each block of the split `dim` with its neighbours' edges, built with NumPy."""
    lo, hi = (halo, halo) if isinstance(halo, int) else halo
    m = x.shape[dim] // shards
    widths = [(0, 0)] * x.ndim
    widths[dim] = (m, m)  # one whole block of zeros (or of the other end) on each side
    padded = np.pad(x, widths, mode="wrap" if circular else "constant")
    blocks = [
        np.take(padded, np.arange((i + 1) * m - lo, (i + 2) * m + hi), axis=dim)
        for i in range(shards)
    ]
    return np.concatenate(blocks, axis=dim)


@pytest.mark.parametrize("circular", [False, True], ids=["zeros", "circular"])
@pytest.mark.parametrize("halo, dim", [(1, 0), ((2, 0), 1), ((0, 3), -1), ((3, 1), 1)])
def test_halo_exchange(halo, dim, circular, rng):
    x = rng.standard_normal((16, 24, 3)) if dim != -1 else rng.standard_normal((2, 3, 24))
    mesh = cpu_mesh()
    spec = P(*(None,) * (dim % x.ndim), "d")
    f = jax.jit(
        jax.shard_map(
            lambda b: jaxconv.halo_exchange(b, "d", halo, dim, circular=circular),
            mesh=mesh,
            in_specs=spec,
            out_specs=spec,
        )
    )
    out = f(put(x, *spec))
    np.testing.assert_array_equal(out, _halo_reference(x, halo, dim % x.ndim, circular, DEVICES))


@pytest.mark.parametrize(
    "halo, dim, error, match",
    [
        (-1, 0, ValueError, r"halo_exchange: `halo` \(=-1\) must be non-negative"),
        ((1, 4), 0, ValueError, r"`halo` \(=\(1, 4\)\) must be at most the local block's size"),
        (1, 2, ValueError, r"halo_exchange: `dim` \(=2\) must be in \[-2, 2\)"),
        (1.5, 0, TypeError, r"`halo` \(=1.5\) must be an int or a \(lo, hi\) pair"),
        ((1, 2, 3), 0, TypeError, r"`halo` \(=\(1, 2, 3\)\) must be an int or a \(lo, hi\)"),
        (1, 0.0, TypeError, r"halo_exchange: `dim` \(=0.0\) must be an int"),
    ],
)
def test_halo_exchange_errors(halo, dim, error, match):
    mesh = cpu_mesh()
    f = jax.shard_map(
        lambda b: jaxconv.halo_exchange(b, "d", halo, dim),
        mesh=mesh,
        in_specs=P("d"),
        out_specs=P("d"),
    )
    with pytest.raises(error, match=match):
        jax.eval_shape(f, jax.ShapeDtypeStruct((24, 2), jnp.float64))


def test_halo_exchange_needs_an_array():
    with pytest.raises(TypeError, match=r"^halo_exchange: `x` must be an array, got list$"):
        jaxconv.halo_exchange([1.0, 2.0], "d", 1, 0)


# ----------------------------------------------------------------------------- sharded_conv


SHARDED_CASES = [
    # (input, weight, kwargs, spatial_dim)
    ((2, 3, 32), (4, 3, 3), dict(padding="same"), 0),
    ((2, 3, 32), (4, 3, 4), dict(padding="same", dilation=2), 0),
    ((2, 3, 32), (4, 3, 3), dict(padding=[(2, 0)], padding_mode="circular"), 0),
    ((2, 3, 32), (4, 3, 2), dict(padding="causal", dilation=2, padding_mode="circular"), 0),
    ((2, 3, 32), (4, 3, 3), dict(padding="same", padding_mode="reflect", stride=2), 0),
    ((2, 32), (4, 2, 5), dict(padding="same_lower", padding_mode="replicate"), -1),
    ((2, 4, 16, 5), (4, 2, 3, 2), dict(padding=((1, 1), (0, 1)), groups=2), 0),
    ((2, 4, 5, 16), (4, 4, 2, 3), dict(padding="same", dilation=(1, 2)), 1),
    ((1, 4, 16, 8), (3, 4, 3, 3), dict(padding="same", padding_mode="circular"), 0),
]


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, spatial_dim, channels_last",
    [(*case, False) for case in SHARDED_CASES]
    + [(*SHARDED_CASES[i], True) for i in (1, 4, 5, 7)],  # a few channels-last
)
def test_sharded_conv(x_shape, w_shape, kwargs, spatial_dim, channels_last, rng):
    x, w, b = (rng.standard_normal(s) for s in (x_shape, w_shape, w_shape[:1]))
    expected = jax.jit(functools.partial(jaxconv.conv, impl="lax", **kwargs))(x, w, b)
    n = w.ndim - 2
    if channels_last:
        x, expected = np.moveaxis(x, -n - 1, -1), np.moveaxis(expected, -n - 1, -1)
        w = np.transpose(w, (*range(2, n + 2), 1, 0))
    f = functools.partial(
        jaxconv.sharded_conv,
        mesh=cpu_mesh(),
        axis_name="d",
        spatial_dim=spatial_dim,
        channels_last=channels_last,
        **kwargs,
    )
    out = jax.jit(f)(x, w, b)
    axis = x.ndim - n - 1 + spatial_dim % n if channels_last else x.ndim - n + spatial_dim % n
    assert out.sharding.spec == P(*(None,) * axis, "d")
    assert_close(out, expected, reduction=w.size)


def test_sharded_conv_grad_and_other_mesh_axes(rng):
    """A 2 x 4 mesh: batch split over "b" by XLA, length over "s" by halo exchange."""
    mesh = cpu_mesh((2, 4), ("b", "s"))
    x, w = rng.standard_normal((4, 3, 16)), rng.standard_normal((2, 3, 3))
    xs = put(x, "b", None, "s", mesh=mesh)

    def loss(f, x, w):
        return jnp.sum(jnp.sin(f(x, w)))

    sharded = functools.partial(
        jaxconv.sharded_conv, padding="same", mesh=mesh, axis_name="s", spatial_dim=0
    )
    plain = functools.partial(jaxconv.conv, padding="same")
    out = jax.jit(sharded)(xs, w)
    assert out.sharding.spec == P("b", None, "s")
    assert_close(out, plain(x, w), reduction=9)
    grads = jax.jit(jax.grad(functools.partial(loss, sharded), argnums=(0, 1)))(xs, w)
    expected = jax.jit(jax.grad(functools.partial(loss, plain), argnums=(0, 1)))(x, w)
    for g, e in zip(grads, expected, strict=True):
        assert_close(g, e, reduction=9 * 16)


def test_sharded_conv_explicit_mesh(rng):
    """`jax.make_mesh`'s default axes are Explicit; an unsharded input is resharded."""
    mesh = jax.make_mesh(
        (DEVICES,), ("d",), axis_types=(AxisType.Explicit,), devices=jax.devices("cpu")[:8]
    )
    x, w = rng.standard_normal((1, 2, 16)), rng.standard_normal((3, 2, 3))
    out = jaxconv.sharded_conv(x, w, padding=1, mesh=mesh, axis_name="d", spatial_dim=0)
    assert out.sharding.spec == P(None, None, "d")
    assert_close(out, jaxconv.conv(x, w, padding=1), reduction=6)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, match",
    [
        ((1, 2, 20), (1, 2, 3), dict(padding=1), r"spatial dim 0 \(size 20\) must divide evenly"),
        ((1, 2, 16), (1, 2, 3), dict(padding=0), r"give 14 outputs along the split spatial"),
        ((1, 2, 16), (1, 2, 3), dict(padding=1, stride=4), r"block size \(2\) a multiple"),
        ((1, 2, 16), (1, 2, 7), dict(padding="same"), r"\(lo, hi\) = \(3, 3\) .* at most one"),
        ((1, 2, 16), (1, 2, 5), dict(padding=2, padding_mode="reflect"), r"smaller than one"),
        ((1, 2, 16), (1, 2, 3), dict(spatial_dim=1), r"`spatial_dim` \(=1\) must be in \[-1, 1\)"),
        ((1, 2, 16), (1, 2, 3), dict(axis_name="x"), r"`axis_name` \(='x'\) must be one of"),
        ((1, 3, 16), (1, 2, 3), dict(), r"sharded_conv: `weight` .* expects 2 input channels"),
    ],
)
def test_sharded_conv_errors(x_shape, w_shape, kwargs, match):
    kwargs = dict(dict(mesh=cpu_mesh(), axis_name="d", spatial_dim=0), **kwargs)
    x, w = jnp.zeros(x_shape), jnp.zeros(w_shape)
    with pytest.raises(ValueError, match=match):
        jaxconv.sharded_conv(x, w, **kwargs)


def test_sharded_conv_operand_errors():
    """The operands are checked as `jaxconv.conv` checks them, under sharded_conv's name."""
    kwargs = dict(mesh=cpu_mesh(), axis_name="d", spatial_dim=0)
    x, w = jnp.zeros((1, 2, 16)), jnp.zeros((1, 2, 3))
    with pytest.raises(TypeError, match=r"^sharded_conv: `input` must be an array"):
        jaxconv.sharded_conv(x.tolist(), w, **kwargs)
    with pytest.raises(TypeError, match=r"^sharded_conv: `bias` has dtype complex128"):
        jaxconv.sharded_conv(x, w, jnp.zeros(1, jnp.complex128), **kwargs)


@pytest.mark.parametrize("impl", IMPLS)
def test_explicit_mesh_axes(impl, rng):
    """`jax.make_mesh`'s default (Explicit) axes: every algorithm runs, the result is the
    single-device one, and it stays split along batch, spatial and output channels."""
    mesh = jax.make_mesh(
        (DEVICES,), ("d",), axis_types=(AxisType.Explicit,), devices=jax.devices("cpu")[:8]
    )
    x, w, f, expected = _case("conv", False, rng)
    cases = [
        ((("d",), ()), P("d")),
        (((), ("d",)), P(None, "d")),
        (((None, None, "d"), ()), P(None, None, "d")),
    ]
    args = [
        (put(x, *x_spec, mesh=mesh), put(w, *w_spec, mesh=mesh)) for (x_spec, w_spec), _ in cases
    ]
    # The splits compile as one program (compile time dominates these tests).
    outs = jax.jit(lambda args: [f(xs, ws, impl=impl) for xs, ws in args])(args)
    for out, (_, out_spec) in zip(outs, cases, strict=True):
        assert out.sharding.is_equivalent_to(NamedSharding(mesh, out_spec), out.ndim)
        assert_close(out, expected, reduction=8 * 6)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize(
    "groups, c_out, kernel",
    [
        (8, 8, (3, 3)),  # depthwise: shift, its written-out transposes (custom primitives)
        (2, 8, (3, 2)),  # few channels per group: shift for value and derivatives
        (1, 8, (3, 2)),  # dense: the weight gradient as 1-D rows
        (1, 1, (3, 3)),  # to one channel: the value by `matmul.output_taps`
    ],
    ids=["depthwise", "grouped", "dense", "few-outputs"],
)
def test_auto_gradients_under_sharding(groups, c_out, kernel, axis_type, rng):
    """`auto`'s derivative paths (custom transposes, per-row weight gradients) compile
    and give the single-device gradients with the input split along batch or a spatial
    dim."""
    mesh = cpu_mesh(axis_type=axis_type)
    x = rng.standard_normal((8, 8, 8, 8))
    w = rng.standard_normal((c_out, 8 // groups, *kernel))
    ct = rng.standard_normal((8, c_out, 8, 8))

    def grads(x, w):
        f = lambda a, b: jaxconv.conv2d(a, b, padding="same", groups=groups)  # noqa: E731
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(jnp.asarray(ct)))

    expected = single_device(("auto_gradients_under_sharding", groups, ct.tobytes()), grads, x, w)
    for got in split_both_ways(grads, x, w, mesh):
        for g, e in zip(got, expected, strict=True):
            assert_close(g, e, reduction=8 * 6 * 8)


def in_batch_shard_map(f, x, w, mesh):
    """``f(x, w)`` inside `jax.shard_map` over the mesh's axis ``"d"``, ``x`` split along
    batch and ``w`` replicated (``f``'s second output summed over the devices)."""
    body = jax.shard_map(f, mesh=mesh, in_specs=(P("d"), P()), out_specs=(P("d"), P()))
    return jax.jit(body)(put(x, "d", mesh=mesh), put(w, mesh=mesh))


def sin_loss_grads(channels_last=False, **kwargs):
    """``impl -> jax.grad`` (in both arguments) of ``sum(sin(conv2d(a, b, **kwargs)))``
    by that algorithm."""

    def loss_grads(impl):
        def loss(a, b):
            y = jaxconv.conv2d(a, b, channels_last=channels_last, impl=impl, **kwargs)
            return jnp.sum(jnp.sin(y))

        return jax.grad(loss, (0, 1))

    return loss_grads


def split_both_ways(f, x, w, mesh):
    """``f(x, w)`` with `x` split along batch and along its first spatial dim (`w`
    replicated), both from one program."""
    xs = [put(x, *x_spec, mesh=mesh) for x_spec in (("d",), (None, None, "d"))]
    return jax.jit(lambda xs, w: [f(x, w) for x in xs])(xs, put(w, mesh=mesh))


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((8, 24, 9, 9), (8, 24, 1, 1), {}),  # 1x1 per image: the direct-term primitive
        ((8, 16, 9, 9), (16, 1, 3, 3), dict(padding=1, groups=16)),  # shift's primitives
        ((8, 32, 9, 9), (32, 4, 3, 3), dict(padding=1, groups=8)),  # grouped shift
        ((8, 16, 12, 12), (16, 1, 9, 9), dict(padding=4, groups=16)),  # fft
        ((8, 64, 6, 6), (64, 16, 3, 3), dict(padding=1, groups=4)),  # dense groups
        ((8, 16, 30), (16, 1, 5), dict(padding=2, groups=16)),  # 1-D depthwise
        ((8, 8, 5, 5, 5), (8, 1, 3, 3, 3), dict(padding=1, groups=8)),  # 3-D depthwise
        ((8, 16, 6, 6), (16, 8, 4, 4), dict(stride=2, padding=1, transpose=True)),
        ((8, 64, 9, 9), (1, 64, 3, 3), dict(padding=1)),  # output_taps: value, dw
        ((8, 64, 9, 9), (2, 64, 3, 3), dict(stride=2, padding=1)),  # ... value, dx
    ],
    ids=[
        "pointwise",
        "depthwise",
        "grouped",
        "fft",
        "dense-groups",
        "1d",
        "3d",
        "transposed",
        "few-outputs",
        "few-outputs-strided",
    ],
)
def test_auto_gradients_inside_shard_map(x_shape, w_shape, kwargs, axis_type, rng):
    """`auto`'s derivative paths (its primitives with written-out transposes among them)
    differentiate inside `jax.shard_map` over a batch split, where the per-device input
    varies over the mesh axis and the weight does not, and give the single-device
    gradients (the weight's summed over devices by shard_map)."""
    mesh = cpu_mesh(axis_type=axis_type)
    kwargs = dict(kwargs)
    op = jaxconv.conv_transpose if kwargs.pop("transpose", False) else jaxconv.conv
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)

    def grads(impl):
        return jax.grad(lambda a, b: jnp.sum(jnp.sin(op(a, b, impl=impl, **kwargs))), (0, 1))

    key = ("auto_gradients_inside_shard_map", op.__name__, repr(kwargs))
    expected = single_device(key, grads("lax"), x, w)
    got = in_batch_shard_map(grads("auto"), x, w, mesh)
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e, reduction=8 * 9 * 25)


def spy_specs(monkeypatch, module, name) -> list:
    """The specs (third arguments) ``module.name`` is called with from now on, as a
    list; the function still runs."""
    calls, original = [], getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, loop, bounds",
    [
        # 1-D channels-last, the weight gradient by chunks of rows (two of 170 positions
        # and a tail of 60; the products' bound lowered to this small layer)
        (
            (8, 400, 48),
            (5, 1, 48),
            dict(padding=2, groups=48, channels_last=True),
            "_chunked_rows_weight_gradient",
            {"CHUNKED_MIN_PRODUCTS": 0},
        ),
        # 2-D depthwise channels-last, the weight gradient by the loop over rows
        (
            (8, 28, 28, 16),
            (3, 3, 1, 16),
            dict(padding=1, groups=16, channels_last=True),
            "_rows_weight_gradient_unpadded",
            {},
        ),
        # ... groups of 4 channels, the loop's products per tap (its bound lowered)
        (
            (8, 28, 28, 32),
            (3, 3, 4, 32),
            dict(padding=1, groups=8, channels_last=True),
            "_rows_weight_gradient",
            {"ROWS_MIN_PRODUCTS": 0},
        ),
        # 3-D depthwise 4x4x4, the value by the scan over taps
        ((8, 8, 10, 10, 10), (8, 1, 4, 4, 4), dict(padding=1, groups=8), "_scanned", {}),
    ],
    ids=["1d-chunks", "depthwise-rows", "grouped-rows", "scanned-taps"],
)
def test_shift_loops_inside_shard_map(
    x_shape, w_shape, kwargs, loop, bounds, axis_type, rng, monkeypatch, retrace
):
    """`shift`'s loops (over rows, chunks of rows, taps), whose accumulators are a loop's
    carry, differentiate inside `jax.shard_map` over a batch split (each device's part
    taking the loop, ``bounds`` lowered where it is too small) and give the
    single-device gradients. (JAX's traces dropped first, ``retrace``: a trace of the
    same layer under the other axis type would serve this one and the spy would see no
    call.)"""
    for name, value in bounds.items():
        monkeypatch.setattr(shift, name, value)
    calls = spy_specs(monkeypatch, shift, loop)
    mesh = cpu_mesh(axis_type=axis_type)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)

    def grads(impl):
        return jax.grad(
            lambda a, b: jnp.sum(jnp.sin(jaxconv.conv(a, b, impl=impl, **kwargs))), (0, 1)
        )

    expected = single_device(("shift_loops_inside_shard_map", repr(kwargs)), grads("lax"), x, w)
    got = in_batch_shard_map(grads("auto"), x, w, mesh)
    assert calls, f"shift.{loop} did not run"
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e, reduction=8 * 9 * 32)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_space_to_depth_weight_gradient_under_sharding(axis_type, rng, monkeypatch, retrace):
    """`auto`'s weight gradient of a strided layer as the folded unstrided layer's
    (`space_to_depth`; its thresholds lowered to the test's layer) gives the
    single-device gradients with the input split along batch or its first spatial dim,
    and inside `jax.shard_map` over a batch split."""
    from jaxconv import _dispatch
    from jaxconv._impls import space_to_depth

    monkeypatch.setattr(_dispatch, "ROWS_MAX_STRIDED_INPUT_ELEMENTS", 2**10)
    monkeypatch.setattr(_dispatch, "ROWS_MIN_FLOPS", 0)
    # (Not the chunks of images, which take this layer inside shard_map; tested below.)
    monkeypatch.setattr(_dispatch, "CHUNKED_WEIGHT_GRADIENT_MIN_WIDENING", 2**20)
    calls = spy_specs(monkeypatch, space_to_depth, "forward")
    mesh = cpu_mesh(axis_type=axis_type)
    x = rng.standard_normal((8, 8, 16, 16))
    w = rng.standard_normal((24, 8, 3, 3))
    ct = rng.standard_normal((8, 24, 8, 8))

    def grads(impl):
        def f(x, w):
            y, vjp = jax.vjp(
                lambda a, b: jaxconv.conv2d(a, b, stride=2, padding=1, impl=impl), x, w
            )
            return (y, *vjp(jnp.asarray(ct)))

        return f

    expected = single_device(("space_to_depth_under_sharding", ct.tobytes()), grads("lax"), x, w)
    for got in split_both_ways(grads("auto"), x, w, mesh):
        for g, e in zip(got, expected, strict=True):
            assert_close(g, e, reduction=8 * 9 * 8)
    assert calls  # (traced once or twice: the splits' avals differ under Explicit axes)
    traced = len(calls)

    loss_grads = sin_loss_grads(stride=2, padding=1)

    got = in_batch_shard_map(loss_grads("auto"), x, w, mesh)
    want = single_device(("space_to_depth_in_shard_map",), loss_grads("lax"), x, w)
    for g, e in zip(got, want, strict=True):
        assert_close(g, e, reduction=8 * 9 * 8)
    assert len(calls) == traced + 1


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize("channels_last", [False, True])
def test_chunked_weight_gradient_under_sharding(
    axis_type, channels_last, rng, monkeypatch, retrace
):
    """The weight gradient of a 3x3 stride-2 widening layer (its thresholds lowered to
    the test's layer) keeps the space-to-depth fold on a mesh, split along batch or its
    first spatial dim, and runs in chunks of images
    (`matmul.chunked_patches_weight_gradient`, an image a step) inside `jax.shard_map`
    over a batch split; the single-device gradients either way."""
    from jaxconv import _dispatch
    from jaxconv._impls import matmul

    monkeypatch.setattr(_dispatch, "ROWS_MAX_STRIDED_INPUT_ELEMENTS", 2**10)
    monkeypatch.setattr(_dispatch, "ROWS_MIN_FLOPS", 0)
    monkeypatch.setattr(matmul, "PATCHES_CHUNK_BYTES", 1)
    calls = spy_specs(monkeypatch, matmul, "chunked_patches_weight_gradient")
    mesh = cpu_mesh(axis_type=axis_type)
    # Two images a device (channels-last, the rows need 12 output rows, see `_rows_lose`).
    x = rng.standard_normal((16, 8, 16, 16))
    w = rng.standard_normal((24, 8, 3, 3))
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))

    loss_grads = sin_loss_grads(channels_last, stride=2, padding=1)

    want = single_device(("chunked_weight_gradient", channels_last), loss_grads("lax"), x, w)
    for got in split_both_ways(loss_grads("auto"), x, w, mesh):
        for g, e in zip(got, want, strict=True):
            assert_close(g, e, reduction=16 * 9 * 8)
    assert not calls
    got = in_batch_shard_map(loss_grads("auto"), x, w, mesh)
    for g, e in zip(got, want, strict=True):
        assert_close(g, e, reduction=16 * 9 * 8)
    assert calls


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize("channels_last", [False, True])
def test_input_taps_under_sharding(axis_type, channels_last, rng, monkeypatch, retrace):
    """`auto`'s value by taps (`matmul.input_taps`) and weight gradient by taps
    (`matmul.input_taps_weight_gradient`: 3x3 dilation 4 on 8x8, whose taps meet the
    input at 44% of the pairs) give the single-device gradients with the input split
    along batch or its first spatial dim, and inside `jax.shard_map` over a batch
    split."""
    from jaxconv._impls import matmul

    values = spy_specs(monkeypatch, matmul, "input_taps")
    calls = spy_specs(monkeypatch, matmul, "input_taps_weight_gradient")
    mesh = cpu_mesh(axis_type=axis_type)
    # Four images a device: each tap's weight gradient contracts 114 (image, position)
    # pairs in a shard (`INPUT_TAPS_WEIGHT_GRADIENT_MIN_DEPTH`).
    x, w = rng.standard_normal((32, 128, 8, 8)), rng.standard_normal((64, 128, 3, 3))
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))

    loss_grads = sin_loss_grads(channels_last, padding=4, dilation=4)

    want = single_device(("input_taps", channels_last), loss_grads("lax"), x, w)
    for got in split_both_ways(loss_grads("auto"), x, w, mesh):
        for g, e in zip(got, want, strict=True):
            assert_close(g, e, reduction=32 * 9 * 128)
    assert values and calls
    traced = len(calls)
    got = in_batch_shard_map(loss_grads("auto"), x, w, mesh)
    for g, e in zip(got, want, strict=True):
        assert_close(g, e, reduction=32 * 9 * 128)
    assert len(calls) > traced


@pytest.mark.parametrize(
    "channels_last, c_out, name",
    [(False, 24, "output_stacked"), (True, 24, "output_stacked"), (True, 40, "decompose")],
)
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_rows_weight_gradient_under_sharding(
    axis_type, channels_last, c_out, name, rng, monkeypatch, retrace
):
    """`auto`'s weight gradient by kernel rows, written out
    (`planes.<name>_weight_gradient`: the rows folded into the output channels, or
    channels-last one per row; `ROWS_MIN_FLOPS` lowered to the test's layer), gives the
    single-device gradients with the input split along batch or its first spatial dim,
    and inside `jax.shard_map` over a batch split."""
    from jaxconv import _dispatch
    from jaxconv._impls import planes

    monkeypatch.setattr(_dispatch, "ROWS_MIN_FLOPS", 0)
    calls = spy_specs(monkeypatch, planes, f"{name}_weight_gradient")
    mesh = cpu_mesh(axis_type=axis_type)
    x, w = rng.standard_normal((16, 32, 8, 8)), rng.standard_normal((c_out, 32, 3, 3))
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))

    loss_grads = sin_loss_grads(channels_last, padding=1)

    want = single_device(("rows_weight_gradient", channels_last, c_out), loss_grads("lax"), x, w)
    spatial = (None, "d") if channels_last else (None, None, "d")
    for x_spec in (("d",), spatial):
        got = jax.jit(loss_grads("auto"))(put(x, *x_spec, mesh=mesh), put(w, mesh=mesh))
        for g, e in zip(got, want, strict=True):
            assert_close(g, e, reduction=16 * 9 * 32)
    traced = len(calls)
    got = in_batch_shard_map(loss_grads("auto"), x, w, mesh)
    for g, e in zip(got, want, strict=True):
        assert_close(g, e, reduction=16 * 9 * 32)
    assert traced > 0 and len(calls) > traced


@pytest.mark.parametrize(
    "x_shape, w_shape, groups",
    [((8, 16, 9, 9), (16, 1, 3, 3), 16), ((8, 24, 9, 9), (8, 24, 1, 1), 1)],
    ids=["depthwise", "pointwise"],
)
def test_auto_gradients_inside_shard_map_over_two_axes(x_shape, w_shape, groups, rng):
    """Inside `jax.shard_map` with the input varying over one mesh axis and the weight
    over the other, `auto`'s gradients are `lax`'s."""
    mesh = jax.make_mesh(
        (4, 2), ("a", "b"), axis_types=(AxisType.Explicit,) * 2, devices=jax.devices("cpu")[:8]
    )
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    pad = w_shape[-1] // 2

    def body(impl):
        def grads(a, b):
            b = jax.lax.pcast(b, "b", to="varying")
            loss = lambda a, b: jnp.sum(  # noqa: E731
                jnp.sin(jaxconv.conv2d(a, b, padding=pad, groups=groups, impl=impl))
            )
            return jax.grad(loss, (0, 1))(a, b)

        return jax.shard_map(grads, mesh=mesh, in_specs=(P("a"), P()), out_specs=(P("a"), P("b")))

    args = put(x, "a", mesh=mesh), put(w, mesh=mesh)
    got, want = jax.jit(lambda *args: (body("auto")(*args), body("lax")(*args)))(*args)
    for g, e in zip(got, want, strict=True):
        assert_close(g, e, reduction=8 * 9 * 24)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_groups_loop_under_sharding(axis_type, rng):
    """`auto`'s loop over groups (more than 16 groups of many channels: the groups' dense
    convolutions in a `lax.map`) compiles and gives the single-device value and
    gradients with the input split along batch or a spatial dim."""
    mesh = cpu_mesh(axis_type=axis_type)
    x = rng.standard_normal((8, 68, 8, 16))
    w = rng.standard_normal((17 * 17, 4, 3, 3))
    ct = rng.standard_normal((8, 17 * 17, 8, 16))

    def grads(x, w):
        f = lambda a, b: jaxconv.conv2d(a, b, padding="same", groups=17)  # noqa: E731
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(jnp.asarray(ct)))

    assert "while" in jax.jit(grads).lower(x, w).as_text()
    expected = single_device(("groups_loop_under_sharding", ct.tobytes()), grads, x, w)
    for got in split_both_ways(grads, x, w, mesh):
        for g, e in zip(got, expected, strict=True):
            assert_close(g, e, reduction=4 * 9 * 8)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_autotune_under_sharding(axis_type, rng, tmp_path, monkeypatch):
    """`impl="autotune"` measures (on one device) while a sharded call is traced, then
    gives the single-device value and gradients with the input split."""
    from jaxconv import _autotune

    monkeypatch.setenv("JAXCONV_AUTOTUNE_CACHE", str(tmp_path / "autotune.json"))
    monkeypatch.setattr(_autotune, "CANDIDATES", ("auto", "lax", "shift"))
    monkeypatch.setattr(_autotune, "REPEATS", 1)
    _autotune.clear_memory()
    mesh = cpu_mesh(axis_type=axis_type)
    x = rng.standard_normal((8, 4, 8, 8))
    w = rng.standard_normal((4, 1, 3, 3))
    ct = rng.standard_normal((8, 4, 8, 8))

    def grads(impl):
        def run(x, w):
            f = lambda a, b: jaxconv.conv2d(a, b, padding=1, groups=4, impl=impl)  # noqa: E731
            y, vjp = jax.vjp(f, x, w)
            return (y, *vjp(jnp.asarray(ct)))

        return run

    expected = single_device(("autotune_under_sharding", ct.tobytes()), grads("lax"), x, w)
    for got in split_both_ways(grads("autotune"), x, w, mesh):
        for g, e in zip(got, expected, strict=True):
            assert_close(g, e, reduction=8 * 6 * 8)
    # Measured, not fallen back to the rules (a failed measurement writes nothing).
    assert (tmp_path / "autotune.json").read_text().count("ConvSpec") == 1
    _autotune.clear_memory()


def fft_blocks(program) -> list[tuple[int, ...]]:
    """The shapes of the FFTs' results in a compiled program, as each device runs them."""
    text = program.as_text()
    return [tuple(map(int, d.split(","))) for d in re.findall(r"= \w+\[([\d,]+)\]\S* fft\(", text)]


@pytest.mark.parametrize("impl", ["fft", "auto"])
def test_fft_inside_a_partial_shard_map(impl, rng):
    """Inside `jax.shard_map` over one axis of a mesh whose other axis XLA splits, the
    gradients of a `shard_map` nested in it do not lower: `impl="fft"` leaves its
    transforms to XLA's partitioner there (which splits them along the batch), and
    `auto` runs XLA's convolution where its rules say FFT (`_dispatch.choose_for`, the
    input split along its height inside). Both give the single-device gradients."""
    mesh = jax.make_mesh(
        (2, 4), ("a", "b"), axis_types=(AxisType.Auto,) * 2, devices=jax.devices("cpu")[:8]
    )
    x, w = rng.standard_normal((8, 8, 12, 12)), rng.standard_normal((8, 1, 9, 9))
    f = lambda a, b: jnp.sum(jnp.sin(jaxconv.conv2d(a, b, padding=4, groups=8, impl=impl)))  # noqa: E731
    body = jax.shard_map(
        jax.grad(f, (0, 1)),
        mesh=mesh,
        in_specs=(P("a"), P()),
        out_specs=(P("a"), P()),
        axis_names={"a"},
    )
    xs = put(x, *((("a", "b"),) if impl == "fft" else ("a", None, "b")), mesh=mesh)
    program = jax.jit(body).lower(xs, put(w, mesh=mesh))
    assert ("fft" in program.as_text()) == (impl == "fft")
    got = program.compile()(xs, put(w, mesh=mesh))
    halves = [jax.grad(f, (0, 1))(x[:4], w), jax.grad(f, (0, 1))(x[4:], w)]
    assert_close(got[0], np.concatenate([halves[0][0], halves[1][0]]), reduction=81 * 8)
    # The weight is the same on every device: its gradient sums the blocks'.
    assert_close(got[1], halves[0][1] + halves[1][1], reduction=81 * 8 * 8)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_auto_transposed_input_gradient_on_a_mesh(axis_type, rng):
    """A grouped 1-D transposed layer split along its length, trained through a loss
    that reads its value: the phases' input gradient failed XLA's HLO verifier after
    partitioning, so on a mesh `auto` takes XLA's (`_dispatch._run`)."""
    mesh = cpu_mesh(axis_type=axis_type)
    x, w = rng.standard_normal((8, 16, 32)), rng.standard_normal((16, 8, 4))
    kw = dict(stride=2, output_padding=1, groups=2)
    f = lambda a, b: jnp.sum(jnp.sin(jaxconv.conv_transpose1d(a, b, **kw)))  # noqa: E731
    value_and_grads = jax.value_and_grad(f, (0, 1))
    expected = single_device(("transposed_input_gradient",), value_and_grads, x, w)
    got = jax.jit(value_and_grads)(put(x, None, None, "d", mesh=mesh), put(w, mesh=mesh))
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert_close(g, e, reduction=16 * 4 * 8)


def test_fft_of_empty_operands_on_a_mesh(rng):
    """`impl="fft"` leaves empty operands on a mesh to XLA's partitioner (a
    `jax.shard_map` whose body reads none of its operands does not lower): zeros for the
    value and the weight gradient, an empty input gradient."""
    w = rng.standard_normal((8, 1, 9, 9))
    f = lambda a, b: jnp.sum(jnp.sin(jaxconv.conv2d(a, b, padding=4, groups=8, impl="fft")))  # noqa: E731
    empty = np.zeros((0, 8, 12, 12))
    y, grads = jax.jit(jax.value_and_grad(f, (0, 1)))(put(empty), put(w, "d"))
    assert float(y) == 0.0 and grads[0].shape == empty.shape and not np.any(np.asarray(grads[1]))


@pytest.mark.parametrize("channels_last", [False, True], ids=["NC*", "N*C"])
def test_fft_splits_what_divides(channels_last, rng):
    """`impl="fft"` on a mesh splits along the batch while it divides, then along whole
    groups (the input's channels with them), then along a dense layer's output channels;
    on a 2x4 mesh a batch of 2 splits the first axis and leaves the second to the
    channels, and a batch and channels that divide neither axis are transformed whole
    on every device. Each
    gives the single-device value and gradients."""
    mesh = jax.make_mesh(
        (2, 4), ("a", "b"), axis_types=(AxisType.Auto,) * 2, devices=jax.devices("cpu")[:8]
    )
    cases = [  # batch, channels in, channels out, groups, each device's batch and C_out
        (2, 8, 8, 8, (1, 2)),  # a: the batch; b: 2 groups each
        (2, 8, 4, 2, (1, 4)),  # a: the batch; b: 2 groups divide 4 ways no more
        (2, 3, 8, 1, (1, 2)),  # a: the batch; b: 2 output channels each
        (3, 5, 5, 5, (3, 5)),  # neither: the whole layer on every device
    ]
    for n, c_in, c_out, groups, (n_local, c_out_local) in cases:
        x = rng.standard_normal((n, c_in, 12, 10))
        w = rng.standard_normal((c_out, c_in // groups, 5, 3))
        ct = rng.standard_normal((n, c_out, 10, 10))
        if channels_last:
            x, ct = np.moveaxis(x, 1, -1), np.moveaxis(ct, 1, -1)
            w = np.moveaxis(w, (0, 1), (-1, -2))
        kw = dict(padding=(1, 1), groups=groups, channels_last=channels_last)

        def grads(a, b, impl):
            y, vjp = jax.vjp(lambda a, b: jaxconv.conv2d(a, b, impl=impl, **kw), a, b)  # noqa: B023
            return (y, *vjp(jnp.asarray(ct)))  # noqa: B023

        key = ("fft_splits", channels_last, groups, c_in, c_out)
        expected = single_device(key, functools.partial(grads, impl="lax"), x, w)
        # Split along its height (12 rows, which any batch leaves whole); `fft` re-splits.
        xs, ws = put(x, *[None] * (1 if channels_last else 2), "a", mesh=mesh), put(w, mesh=mesh)
        program = jax.jit(functools.partial(grads, impl="fft")).lower(xs, ws).compile()
        # Each device transforms its block of the input (and of the input gradient),
        # of the weight (and its gradient) and of the output (and its cotangent).
        c_in_local = c_in if groups == 1 else c_in * c_out_local // c_out
        want = {(n_local, c_in_local), (c_out_local, c_in // groups), (n_local, c_out_local)}
        assert {b[:2] for b in fft_blocks(program)} == want, fft_blocks(program)
        for g, e in zip(program(xs, ws), expected, strict=True):
            assert_close(g, e, reduction=c_in * 15 * 2)


@pytest.mark.parametrize("impl", ["fft", "auto"])
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize("channels_last", [False, True], ids=["NC*", "N*C"])
def test_fft_on_a_mesh(impl, axis_type, channels_last, rng):
    """A 2-D depthwise 9x9 layer in training, where `auto`'s rules say FFT, split over a
    mesh along the batch, the channels (the weight's too) or a spatial dim: the value
    and gradients are the single-device ones. XLA's partitioner gathers each FFT's whole
    operand, and on the CPU one split along a transformed dim or gathered along the
    channels failed (RET_CHECK in fft_thunk.cc, or an abort). So `impl="fft"` transforms
    each device's block (`fft.device_split`: no device transforms the whole batch), and
    `auto` runs XLA's convolution on a mesh (`_dispatch.choose_for`: a `jax.shard_map` in
    the program does not survive every transformation of the caller's); on one device,
    and inside `jax.shard_map`, it runs FFT."""
    mesh = cpu_mesh(axis_type=axis_type)
    c = 16
    x, w = rng.standard_normal((8, c, 16, 16)), rng.standard_normal((c, 1, 9, 9))
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.moveaxis(w, (0, 1), (-1, -2))
    kw = dict(padding=4, groups=c, channels_last=channels_last)

    def value_and_grads(impl):
        f = lambda a, b: jnp.sum(jnp.sin(jaxconv.conv2d(a, b, impl=impl, **kw)))  # noqa: E731
        return jax.value_and_grad(f, (0, 1))

    expected = single_device(("fft_on_a_mesh", channels_last), value_and_grads("lax"), x, w)
    whole = fft_blocks(jax.jit(value_and_grads(impl)).lower(x, w).compile())
    assert {b[0] for b in whole} == {8, c}
    chan, space = (-1, 1) if channels_last else (1, 2)
    w_out = -1 if channels_last else 0
    splits = {
        "batch": ((0,), ()),
        "channels": ((chan,), (w_out,)),
        "spatial": ((space,), ()),
    }
    for name, (x_dims, w_dims) in splits.items():

        def spec(ndim, dims):
            return ["d" if d in {i % ndim for i in dims} else None for d in range(ndim)]

        xs, ws = put(x, *spec(4, x_dims), mesh=mesh), put(w, *spec(4, w_dims), mesh=mesh)
        program = jax.jit(value_and_grads(impl)).lower(xs, ws).compile()
        blocks = fft_blocks(program)
        if impl == "fft":
            # The input's and the cotangent's transforms one image each; the weight's whole.
            assert {b[0] for b in blocks} == {1, c}, (name, blocks)
        else:
            assert not blocks, (name, blocks)
        got = jax.tree.leaves(program(xs, ws))
        for g, e in zip(got, jax.tree.leaves(expected), strict=True):
            assert_close(g, e, reduction=8 * 81 * 256)
    grads = lambda a, b: value_and_grads(impl)(a, b)[1]  # noqa: E731
    body = jax.shard_map(grads, mesh=mesh, in_specs=(P("d"), P()), out_specs=(P("d"), P()))
    assert "fft" in jax.jit(body).lower(put(x, "d", mesh=mesh), put(w, mesh=mesh)).as_text()


def test_autotune_leaves_fft_off_a_mesh(rng, monkeypatch):
    """Roles that `impl="autotune"` measured fastest by FFT go by `auto`'s rules on a
    mesh (XLA's convolution where they say FFT), and stay FFT on one device."""
    from jaxconv import _autotune

    monkeypatch.setattr(_autotune, "choose", lambda *args: ("fft", "fft", "auto"))
    x, w = rng.standard_normal((8, 16, 16, 16)), rng.standard_normal((16, 1, 9, 9))
    f = lambda a, b: jnp.sum(jnp.sin(jaxconv.conv2d(a, b, padding=4, groups=16, impl="autotune")))  # noqa: E731
    value_and_grads = jax.value_and_grad(f, (0, 1))
    assert "fft" in jax.jit(value_and_grads).lower(x, w).as_text()
    xs, ws = put(x, None, "d"), put(w, "d")  # the channels, the weight's output channels
    program = jax.jit(value_and_grads).lower(xs, ws)
    assert "fft" not in program.as_text()
    expected = single_device(("autotune_leaves_fft",), value_and_grads, x, w)
    for g, e in zip(
        jax.tree.leaves(program.compile()(xs, ws)), jax.tree.leaves(expected), strict=True
    ):
        assert_close(g, e, reduction=8 * 81 * 256)


def trains_as_single_device(x, w, kwargs, channels_last, axis_type, split_dims, reduction):
    """``jax.grad`` of a loss of `jaxconv.conv2d` (``kwargs``) by `auto` on a mesh of
    ``axis_type`` axes equals the single-device gradients by `lax`, the input (``x``
    and ``w`` given channels-first, moved to the layout) split along each of the
    channels-first dims ``split_dims`` in turn, all in one program."""
    mesh = cpu_mesh(axis_type=axis_type)
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 1, 0))
        split_dims = [d - 1 if d > 1 else d for d in split_dims]  # (the spatial dims)
    loss_grads = sin_loss_grads(channels_last, **kwargs)

    key = ("trains_as_single_device", tuple(kwargs.items()), channels_last)
    want = single_device(key, loss_grads("lax"), x, w)
    xs = [put(x, *(None,) * d, "d", mesh=mesh) for d in split_dims]
    got = jax.jit(lambda xs, w: [loss_grads("auto")(x, w) for x in xs])(xs, put(w, mesh=mesh))
    for grads in got:
        for g, e in zip(grads, want, strict=True):
            assert_close(g, e, reduction=reduction)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "w_shape, kwargs",
    [
        ((8, 4, 2, 2), dict(stride=2, padding=1)),  # kernel equal to stride
        ((8, 4, 4, 4), dict(stride=4)),
        ((8, 4, 6, 6), dict(stride=3, padding=1)),  # kernel a multiple of the stride
        ((8, 4, 8, 8), dict(stride=4)),
        # (Not 8x8 stride 4 padding 2 on this input: split along the width, XLA's own
        # convolution, `lax`, gives its weight gradient wrong, relative error 0.3.)
    ],
)
def test_folds_under_sharding(axis_type, channels_last, w_shape, kwargs, rng, monkeypatch):
    """Layers whose kernel equals (`_dispatch._tiles_as_pointwise`, its bounds lowered
    to the test's layers) or is a multiple of its stride (`_kernel_multiple_of_stride`,
    which keeps off a mesh: XLA's partitioner gave its folded weight gradient wrong, a
    padded input split along the width, jax 0.10.2) train to the single-device
    gradients on a mesh, the input split along the batch, the height or the width. (On
    a mesh the 8x8 stride-4 layer's input gradient keeps off the stacked phases too,
    `_strided_input_gradient_stacked`: channels-last over `Explicit` axes, split along
    the height, it came out 4x too large.)"""
    from jaxconv import _dispatch

    monkeypatch.setattr(_dispatch, "TILES_MIN_OUTPUT_POSITIONS", 1)
    x = rng.standard_normal((8, 4, 24, 40))  # (padded, the width's blocks split unevenly)
    w = rng.standard_normal(w_shape)
    reduction = 4 * math.prod(w_shape[2:]) * 8
    trains_as_single_device(x, w, kwargs, channels_last, axis_type, [0, 2, 3], reduction)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize("channels_last", [False, True])
def test_single_input_layer_under_sharding(axis_type, channels_last, rng):
    """A layer from one input channel (1->16 5x5 stride 2 padding 2) trains to the
    single-device gradients on a mesh, split along the batch, the height or the width
    (channels-last): there `auto` keeps off `matmul`'s derivatives (`_dispatch.choose`'s
    ``mesh``), with which the channels-last layer's weight gradient came out wrong over
    `Explicit` axes split along the width."""
    x = rng.standard_normal((8, 1, 32, 40))
    w = rng.standard_normal((16, 1, 5, 5))
    # (Not channels-first split along the width: there XLA's own weight gradient, and
    # so `auto`'s, is wrong, twice the right one; README's "Not done yet".)
    split_dims = [0, 2, 3] if channels_last else [0, 2]
    kwargs = dict(stride=2, padding=2)
    trains_as_single_device(x, w, kwargs, channels_last, axis_type, split_dims, 25 * 8)
