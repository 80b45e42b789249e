"""PyTorch's own sample inputs for its convolutions (the OpInfo samples of
``torch.nn.functional.conv{1,2,3}d`` and ``conv_transpose{1,2,3}d`` in PyTorch 2.13's
``common_methods_invocations``, batched; the unbatched ones are the same shapes less
the batch), run in float32 through every algorithm: the value and the gradients along
the input, weight and bias equal float64 ``lax``'s, batched and unbatched.

Float32 matters: XLA's float32 CPU convolution takes other paths than float64's (one
of them computed wrong results on some paddings, see `lax.low_padding_breaks`).
"""

import math

import jax
import numpy as np
import pytest
from jitted import values_and_vjps
from tolerance import assert_close

import jaxconv

# (function, input shape, weight shape, bias, keyword arguments)
SAMPLES = [
    ("conv1d", (1, 3, 4), (3, 3, 3), True, dict(stride=(2,), padding=2, groups=1)),
    ("conv1d", (2, 4, 8), (2, 2, 3), True, dict(stride=3, padding=1, groups=2, dilation=2)),
    ("conv1d", (1, 4, 5), (1, 4, 3), False, dict(stride=(2,), padding="valid")),
    ("conv1d", (2, 2, 4), (2, 1, 4), True, dict(padding="same", groups=2, dilation=(2,))),
    ("conv1d", (1, 4, 5), (3, 4, 3), False, dict()),
    ("conv2d", (1, 3, 4, 4), (3, 3, 3, 3), True, dict(stride=(2, 2), padding=2)),
    (
        "conv2d",
        (2, 4, 8, 8),
        (2, 2, 3, 3),
        True,
        dict(stride=(3, 2), padding=(2, 1), groups=2, dilation=(4, 4)),
    ),
    ("conv2d", (1, 4, 5, 5), (1, 4, 2, 3), True, dict(stride=2, padding=1, dilation=(2, 3))),
    ("conv2d", (1, 2, 4, 3), (4, 2, 3, 4), False, dict(stride=2, padding=1)),
    ("conv2d", (1, 4, 5, 5), (1, 4, 2, 3), True, dict(stride=2, padding="valid")),
    ("conv2d", (1, 4, 5, 5), (1, 4, 2, 3), True, dict(padding="same", dilation=3)),
    ("conv2d", (2, 4, 6, 6), (4, 1, 3, 3), True, dict(groups=4)),
    ("conv2d", (2, 4, 6, 6), (8, 1, 3, 3), True, dict(groups=4)),
    ("conv2d", (2, 4, 6, 6), (8, 1, 3, 3), False, dict(groups=4)),
    ("conv2d", (2, 4, 6, 6), (4, 1, 3, 3), True, dict(groups=4, stride=(3, 2))),
    ("conv2d", (2, 4, 6, 6), (4, 1, 3, 3), True, dict(groups=4, padding=(1, 1))),
    ("conv2d", (2, 4, 5, 5), (4, 1, 2, 2), True, dict(groups=4, dilation=(2, 2))),
    ("conv2d", (2, 4, 6, 5), (6, 2, 3, 2), True, dict(groups=2)),
    ("conv2d", (1, 4, 5, 5), (3, 4, 3, 3), False, dict()),
    ("conv3d", (1, 1, 4, 4, 4), (1, 1, 1, 1, 1), True, dict(padding="same")),
    ("conv3d", (1, 1, 4, 4, 4), (1, 1, 4, 4, 4), True, dict(stride=(2, 2, 2))),
    ("conv3d", (1, 1, 5, 5, 5), (1, 1, 3, 3, 3), True, dict(dilation=2)),
    ("conv3d", (1, 1, 1, 1, 10), (1, 1, 1, 1, 4), False, dict(padding="valid")),
    ("conv3d", (1, 1, 10, 11, 12), (1, 1, 1, 2, 5), False, dict(padding="same")),
    ("conv3d", (1, 1, 10, 11, 12), (1, 1, 1, 2, 5), False, dict(padding="same", dilation=2)),
    ("conv3d", (1, 1, 10, 11, 12), (1, 1, 4, 4, 4), False, dict(padding="same", dilation=3)),
    ("conv3d", (3, 9, 3, 1, 9), (3, 3, 3, 1, 9), True, dict(groups=3)),
    ("conv3d", (3, 9, 3, 1, 9), (3, 3, 3, 1, 9), True, dict(stride=2, dilation=1, groups=3)),
    (
        "conv_transpose1d",
        (1, 3, 4),
        (3, 3, 3),
        True,
        dict(stride=(2,), padding=2, output_padding=(1,)),
    ),
    (
        "conv_transpose1d",
        (2, 2, 4),
        (2, 2, 4),
        True,
        dict(stride=(3,), padding=(1,), output_padding=(2,), groups=2, dilation=(4,)),
    ),
    (
        "conv_transpose1d",
        (1, 1, 4),
        (1, 1, 4),
        True,
        dict(stride=2, padding=1, output_padding=1, dilation=(2,)),
    ),
    ("conv_transpose1d", (1, 1, 4), (1, 2, 3), False, dict(stride=2, padding=1, output_padding=1)),
    ("conv_transpose1d", (1, 4, 5), (4, 8, 3), False, dict()),
    (
        "conv_transpose2d",
        (1, 3, 4, 4),
        (3, 3, 3, 3),
        True,
        dict(stride=(2, 2), padding=2, output_padding=(1, 1)),
    ),
    (
        "conv_transpose2d",
        (2, 2, 4, 4),
        (2, 2, 4, 5),
        True,
        dict(stride=(3, 2), padding=(1, 2), output_padding=(2, 3), groups=2, dilation=(4, 4)),
    ),
    (
        "conv_transpose2d",
        (1, 1, 4, 5),
        (1, 1, 4, 3),
        True,
        dict(stride=2, padding=1, output_padding=1, dilation=(2, 3)),
    ),
    (
        "conv_transpose2d",
        (1, 1, 4, 3),
        (1, 2, 3, 4),
        False,
        dict(stride=2, padding=1, output_padding=1),
    ),
    ("conv_transpose2d", (2, 4, 4, 4), (4, 1, 3, 3), False, dict(groups=4)),
    ("conv_transpose2d", (1, 2, 5, 5), (2, 4, 3, 3), False, dict()),
    (
        "conv_transpose3d",
        (1, 3, 4, 4, 4),
        (3, 3, 3, 3, 3),
        True,
        dict(stride=(2, 2, 2), padding=2, output_padding=(1, 1, 1)),
    ),
    (
        "conv_transpose3d",
        (2, 2, 4, 4, 4),
        (2, 2, 4, 5, 6),
        True,
        dict(stride=(3, 2, 1), padding=(1, 2, 3), output_padding=(2, 3, 1), groups=2, dilation=4),
    ),
    (
        "conv_transpose3d",
        (1, 1, 4, 5, 2),
        (1, 1, 4, 3, 1),
        True,
        dict(stride=2, padding=1, output_padding=1, dilation=(2, 3, 2)),
    ),
    (
        "conv_transpose3d",
        (1, 1, 4, 3, 4),
        (1, 2, 3, 4, 5),
        False,
        dict(stride=2, padding=1, output_padding=1),
    ),
    ("conv_transpose3d", (1, 4, 5, 5, 5), (4, 8, 3, 3, 3), False, dict()),
]


@pytest.mark.parametrize("impl", [*jaxconv.IMPLS, "auto"])
@pytest.mark.parametrize(
    "name, x_shape, w_shape, has_bias, kwargs",
    SAMPLES,
    ids=[f"{s[0]}-{i}" for i, s in enumerate(SAMPLES)],
)
def test_torch_sample_float32_value_and_gradients(name, x_shape, w_shape, has_bias, kwargs, impl):
    fn = getattr(jaxconv, name)
    rng = np.random.default_rng(sum(x_shape) + 7 * sum(w_shape))
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    c_out = w_shape[1] * kwargs.get("groups", 1) if "transpose" in name else w_shape[0]
    b = rng.standard_normal((c_out,)) if has_bias else None

    def conv(impl_):
        return lambda *a: fn(*a[:2], a[2] if has_bias else None, **kwargs, impl=impl_)

    args = (x, w, b) if has_bias else (x, w)
    ct = rng.standard_normal(jax.eval_shape(conv("lax"), *args).shape)
    (want,) = values_and_vjps([conv("lax")], args, ct)
    args32 = tuple(a.astype(np.float32) for a in args)
    (got,) = values_and_vjps([conv(impl)], args32, ct.astype(np.float32))
    # The value and the input gradient sum at most a weight's worth of products per
    # element, the weight and bias gradients one product per output position of the batch.
    reduction = max(math.prod(w_shape), math.prod(ct.shape) // ct.shape[1])
    for a, e in zip(got, want, strict=True):
        assert a.dtype == np.float32
        assert_close(a, e, reduction=reduction)
    # Unbatched: the first image, as PyTorch's unbatched sample.
    unbatched = conv(impl)(x[0].astype(np.float32), *args32[1:])
    assert unbatched.shape == want[0].shape[1:]
    assert_close(unbatched, want[0][0], reduction=math.prod(w_shape))
