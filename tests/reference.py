"""A float64 NumPy reference for convolutions: direct loops, obviously right, no XLA.

Forward: for every output position, the window of the padded input it sees is read
out tap by tap and contracted with the kernel, group by group. Transposed: every input
element scatters ``x * w`` to the output positions it reaches (the definition), with no
use of the forward formula.
"""

import itertools

import numpy as np

NP_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(x, pads, mode="zeros"):
    """Pad the trailing len(pads) dims of x by (lo, hi) pairs with a PyTorch padding mode."""
    lead = [(0, 0)] * (x.ndim - len(pads))
    return np.pad(x, lead + [tuple(p) for p in pads], mode=NP_PAD_MODE[mode])


def conv(x, w, bias=None, stride=1, pads=0, dilation=1, groups=1, padding_mode="zeros"):
    """Cross-correlation of x (N, C_in, *S) with w (C_out, C_in/groups, *K), float64.

    ``pads`` is an int or a sequence of (lo, hi) pairs.
    """
    x = np.asarray(x, np.complex128 if np.iscomplexobj(x) or np.iscomplexobj(w) else np.float64)
    w = np.asarray(w, x.dtype)
    n = w.ndim - 2
    stride = _tup(stride, n)
    dilation = _tup(dilation, n)
    if isinstance(pads, int):
        pads = [(pads, pads)] * n
    xp = pad(x, pads, padding_mode)
    c_out, c_in_g, *kernel = w.shape
    out = [
        (m - d * (k - 1) - 1) // s + 1
        for m, k, s, d in zip(xp.shape[2:], kernel, stride, dilation, strict=True)
    ]
    y = np.zeros((x.shape[0], c_out, *out), x.dtype)
    c_out_g = c_out // groups
    for pos in itertools.product(*(range(m) for m in out)):
        window = np.empty((x.shape[0], x.shape[1], *kernel), x.dtype)
        for tap in itertools.product(*(range(k) for k in kernel)):
            src = tuple(
                p * s + t * d for p, t, s, d in zip(pos, tap, stride, dilation, strict=True)
            )
            window[(slice(None), slice(None), *tap)] = xp[(slice(None), slice(None), *src)]
        for g in range(groups):
            wg = w[g * c_out_g : (g + 1) * c_out_g]
            xg = window[:, g * c_in_g : (g + 1) * c_in_g]
            y[(slice(None), slice(g * c_out_g, (g + 1) * c_out_g), *pos)] = np.tensordot(
                xg, wg, axes=(list(range(1, n + 2)), list(range(1, n + 2)))
            )
    if bias is not None:
        y = y + np.asarray(bias).reshape((-1,) + (1,) * n)
    return y


def conv_transpose(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """PyTorch's transposed convolution of x (N, C_in, *S) with w (C_in, C_out/groups, *K).

    Each input element at position i adds ``x[i] * w[:, :, t]`` to output position
    ``i * stride - padding + t * dilation``; positions outside the output are dropped.
    """
    x = np.asarray(x, np.complex128 if np.iscomplexobj(x) or np.iscomplexobj(w) else np.float64)
    w = np.asarray(w, x.dtype)
    n = w.ndim - 2
    stride, padding, output_padding, dilation = (
        _tup(v, n) for v in (stride, padding, output_padding, dilation)
    )
    c_in, c_out_g, *kernel = w.shape
    c_in_g = c_in // groups
    out = [
        (m - 1) * s - 2 * p + d * (k - 1) + op + 1
        for m, k, s, p, op, d in zip(
            x.shape[2:], kernel, stride, padding, output_padding, dilation, strict=True
        )
    ]
    y = np.zeros((x.shape[0], c_out_g * groups, *out), x.dtype)
    for pos in itertools.product(*(range(m) for m in x.shape[2:])):
        for tap in itertools.product(*(range(k) for k in kernel)):
            dst = [
                i * s - p + t * d
                for i, t, s, p, d in zip(pos, tap, stride, padding, dilation, strict=True)
            ]
            if any(q < 0 or q >= m for q, m in zip(dst, out, strict=True)):
                continue
            for g in range(groups):
                xg = x[(slice(None), slice(g * c_in_g, (g + 1) * c_in_g), *pos)]
                wg = w[(slice(g * c_in_g, (g + 1) * c_in_g), slice(None), *tap)]
                y[(slice(None), slice(g * c_out_g, (g + 1) * c_out_g), *dst)] += xg @ wg
    if bias is not None:
        y = y + np.asarray(bias).reshape((-1,) + (1,) * n)
    return y


def _tup(v, n):
    if isinstance(v, int):
        return (v,) * n
    v = tuple(v)
    return v * n if len(v) == 1 else v
