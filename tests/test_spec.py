"""Every error path: raised before any computation, the same with and without jit."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv

X2 = jnp.ones((1, 4, 8, 8))
W2 = jnp.ones((6, 4, 3, 3))
WT2 = jnp.ones((4, 3, 3, 3))

# (function, args, kwargs, exception, pattern); the message must also start with the
# function's name.
CASES = [
    # types
    ("conv2d", ([[1.0]], W2), {}, TypeError, r"`input` must be an array"),
    ("conv2d", (X2, "w"), {}, TypeError, r"`weight` must be an array"),
    ("conv2d", (X2.astype(jnp.int32), W2), {}, TypeError, r"`input` has dtype int32"),
    ("conv2d", (X2, W2.astype(bool)), {}, TypeError, r"`weight` has dtype bool"),
    ("conv2d", (X2, W2, jnp.ones(6, jnp.int32)), {}, TypeError, r"`bias` has dtype int32"),
    ("conv2d", (X2, W2), dict(stride=1.0), TypeError, r"`stride` \(=1\.0\)"),
    ("conv2d", (X2, W2), dict(stride=(2, 2.5)), TypeError, r"`stride`"),
    ("conv2d", (X2, W2), dict(dilation=True), TypeError, r"`dilation` \(=True\)"),
    ("conv2d", (X2, W2), dict(groups=2.0), TypeError, r"`groups` \(=2\.0\) must be an int"),
    ("conv2d", (X2, W2), dict(padding=1.5), TypeError, r"`padding` \(=1\.5\)"),
    ("conv2d", (X2, W2), dict(padding_mode=None), TypeError, r"`padding_mode`"),
    ("conv2d", (X2, W2), dict(channels_last=1), TypeError, r"`channels_last` \(=1\)"),
    ("conv2d", (X2, W2), dict(impl=3), TypeError, r"`impl` \(=3\)"),
    (
        "conv_transpose2d",
        (X2, WT2),
        dict(padding="same"),
        TypeError,
        r"`padding` \(='same'\)",
    ),
    ("conv_transpose2d", (X2, WT2), dict(padding=((1, 1), (1, 1))), TypeError, r"`padding`"),
    ("conv2d", (X2, W2, jnp.ones(6, jnp.complex64)), {}, TypeError, r"`bias` has dtype complex64"),
    # values
    (
        "output_shape",
        ((1, -4, 8), (6, 4, 3)),
        {},
        ValueError,
        r"`input` \(shape \(1, -4, 8\)\) must",
    ),
    ("conv2d", (X2, W2), dict(stride=0), ValueError, r"`stride` \(=0\) must be positive"),
    ("conv2d", (X2, W2), dict(stride=(1, -1)), ValueError, r"`stride`.*positive"),
    ("conv2d", (X2, W2), dict(stride=(1, 1, 1)), ValueError, r"`stride`.*one entry per"),
    ("conv2d", (X2, W2), dict(dilation=0), ValueError, r"`dilation` \(=0\) must be positive"),
    ("conv2d", (X2, W2), dict(groups=0), ValueError, r"`groups` \(=0\) must be positive"),
    (
        "conv2d",
        (X2, W2),
        dict(groups=3),
        ValueError,
        r"`groups` \(=3\) must divide in_channels \(=4\)",
    ),
    (
        "conv2d",
        (X2, jnp.ones((5, 1, 3, 3))),
        dict(groups=4),
        ValueError,
        r"`groups` \(=4\) must divide out_channels \(=5\)",
    ),
    ("conv2d", (X2, jnp.ones((6, 3, 3, 3))), {}, ValueError, r"expects 3 input channels"),
    ("conv2d", (X2, W2), dict(padding=-1), ValueError, r"`padding` \(=-1\) must be non-neg"),
    ("conv2d", (X2, W2), dict(padding=((1, -1), (0, 0))), ValueError, r"non-negative"),
    ("conv2d", (X2, W2), dict(padding=((1, 1, 1), (0, 0))), ValueError, r"\(lo, hi\) pairs"),
    (
        "conv2d",
        (X2, W2),
        dict(padding="half"),
        ValueError,
        r"`padding` \(='half'\) is not a known padding string.*'valid'",
    ),
    (
        "conv2d",
        (X2, W2),
        dict(padding_mode="mirror"),
        ValueError,
        r"`padding_mode` \(='mirror'\) must be one of",
    ),
    (
        "conv2d",
        (X2, W2),
        dict(padding=8, padding_mode="reflect"),
        ValueError,
        r"smaller than the input's spatial size",
    ),
    (
        "conv2d",
        (X2, W2),
        dict(padding=9, padding_mode="circular"),
        ValueError,
        r"at most the input's spatial size",
    ),
    ("conv2d", (X2, W2), dict(impl="cudnn"), ValueError, r"`impl` \(='cudnn'\) must be one"),
    ("conv2d", (X2, W2), dict(precision="ultra"), ValueError, r"`precision`"),
    ("conv2d", (X2, jnp.ones((6, 4, 9, 3))), {}, ValueError, r"output would be empty"),
    ("conv2d", (X2, W2), dict(dilation=4), ValueError, r"output would be empty"),
    ("conv2d", (jnp.ones((8, 8)), W2), {}, ValueError, r"`input` must have at least 3 dims"),
    ("conv2d", (X2, jnp.ones((6, 2, 3))), {}, ValueError, r"`weight` must have 4 dims"),
    ("conv2d", (X2, jnp.ones((6, 4, 0, 3))), {}, ValueError, r"empty kernel dim"),
    ("conv2d", (X2, W2, jnp.ones(5)), {}, ValueError, r"`bias` must have shape \(6,\)"),
    ("conv", (X2, jnp.ones((6, 2))), {}, ValueError, r"`weight` must have at least 3 dims"),
    ("conv1d", (jnp.ones((1, 2, 4)), jnp.ones((3, 2, 5))), {}, ValueError, r"empty"),
    ("conv3d", (X2, W2), {}, ValueError, r"`weight` must have 5 dims"),
    (
        "conv2d",
        (X2, jnp.ones((3, 3, 2, 6))),
        dict(channels_last=True),
        ValueError,
        r"expects 2 input channels.*has 8",
    ),
    (
        "conv_transpose2d",
        (X2, WT2),
        dict(output_padding=2, stride=2),
        ValueError,
        r"`output_padding` \(=\(2, 2\)\) must be smaller than either stride",
    ),
    ("conv_transpose2d", (X2, WT2), dict(output_padding=1), ValueError, r"`output_padding`"),
    ("conv_transpose2d", (X2, WT2), dict(padding=-1), ValueError, r"non-negative"),
    ("conv_transpose2d", (X2, WT2), dict(groups=3), ValueError, r"`groups` \(=3\) must div"),
    ("conv_transpose2d", (X2, jnp.ones((3, 3, 3, 3))), {}, ValueError, r"expects 3 input channels"),
    (
        "conv_transpose2d",
        (jnp.ones((1, 4, 1, 1)), WT2),
        dict(padding=2),
        ValueError,
        r"output would be empty.*`padding` \(=2\) is too large",
    ),
    # An empty spatial dim: (n - 1) * stride + ... means nothing for n = 0 (XLA's answer
    # and the phases' differed); PyTorch refuses it too.
    (
        "conv_transpose1d",
        (jnp.ones((1, 4, 0)), jnp.ones((4, 2, 3))),
        dict(stride=2),
        ValueError,
        r"`input` \(shape \(1, 4, 0\)\) has an empty spatial dim",
    ),
    (
        "transpose_output_shape",
        ((2, 4, 0, 5), (4, 2, 3, 3)),
        {},
        ValueError,
        r"empty spatial dim",
    ),
    # ... and so for a convolution, padded or not, in any padding mode (PyTorch: "Only
    # zero batch or zero channel inputs are supported").
    *(
        (
            "conv2d",
            (jnp.ones((1, 4, 0, 3)), W2),
            dict(padding=2, padding_mode=mode),
            ValueError,
            r"`input` \(shape \(1, 4, 0, 3\)\) has an empty spatial dim",
        )
        for mode in ("zeros", "replicate", "circular")
    ),
    ("conv1d", (jnp.ones((2, 4, 0)), jnp.ones((3, 4, 1))), {}, ValueError, r"empty spatial dim"),
    (
        "output_shape",
        ((2, 4, 0, 5), (6, 4, 3, 3)),
        dict(padding=1),
        ValueError,
        r"empty spatial dim",
    ),
    ("conv_transpose2d", (X2, WT2, jnp.ones(4)), {}, ValueError, r"`bias` must have shape"),
    ("output_shape", ((1, 4, 8, 8), (6, 2, 3, 3)), dict(groups=3), ValueError, r"`groups`"),
    ("output_shape", ((1, 4, 8, 8), (6, 4, 3, 3)), dict(stride=0.5), TypeError, r"`stride`"),
    (
        "transpose_output_shape",
        ((1, 4, 8, 8), (4, 3, 3, 3)),
        dict(output_padding=3, stride=2),
        ValueError,
        r"`output_padding`",
    ),
    ("resolve_padding", ("tf_same", 3), {}, ValueError, r"pass `input_size`"),
    ("resolve_padding", ("bogus", 3), {}, ValueError, r"not a known padding string"),
    ("resolve_padding", (-1, 3), {}, ValueError, r"non-negative"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[4][:30]}")
def test_errors(case):
    fname, args, kwargs, exc, pattern = case
    fn = getattr(jaxconv, fname)
    with pytest.raises(exc, match=pattern) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{fname}: "), message
    assert "\n" not in message


def test_errors_identical_under_jit():
    """Validation reads only static shapes and config, so jit changes nothing."""
    for fname, args, kwargs, exc, _ in CASES:
        if fname in ("output_shape", "transpose_output_shape", "resolve_padding"):
            continue
        arrays = [a for a in args if hasattr(a, "shape") and hasattr(a, "dtype")]
        if len(arrays) != len(args):
            continue
        fn = getattr(jaxconv, fname)
        with pytest.raises(exc) as eager:
            fn(*args, **kwargs)
        with pytest.raises(exc) as jitted:
            jax.jit(lambda *a, fn=fn, kwargs=kwargs: fn(*a, **kwargs))(*args)
        assert str(eager.value) == str(jitted.value)


def test_errors_before_any_computation(monkeypatch):
    from jaxconv import functional

    def boom(*args, **kwargs):
        raise AssertionError("reached the computation")

    monkeypatch.setattr(functional, "_run", boom)
    for fname, args, kwargs, exc, _ in CASES:
        if fname.startswith("conv"):
            with pytest.raises(exc):
                getattr(jaxconv, fname)(*args, **kwargs)


def test_reflect_and_circular_limits_match_pytorch():
    # reflect: padding < size; circular: padding <= size (PyTorch's rules).
    x = jnp.ones((1, 1, 4))
    w = jnp.ones((1, 1, 3))
    assert jaxconv.conv1d(x, w, padding=3, padding_mode="reflect").shape == (1, 1, 8)
    assert jaxconv.conv1d(x, w, padding=4, padding_mode="circular").shape == (1, 1, 10)
    assert jaxconv.conv1d(x, w, padding=9, padding_mode="replicate").shape == (1, 1, 20)
    with pytest.raises(ValueError, match=re.escape("((4, 4),)")):
        jaxconv.conv1d(x, w, padding=4, padding_mode="reflect")


def test_numpy_scalar_config_accepted():
    out = jaxconv.conv2d(X2, W2[:, :2], None, np.int64(2), np.int32(1), groups=np.int64(2))
    assert out.shape == (1, 6, 4, 4)
