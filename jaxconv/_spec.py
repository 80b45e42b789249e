"""Argument validation and normalisation: user arguments in, a frozen hashable plan out.

Everything here is pure Python over ints, tuples and strings, so it runs before any
computation and raises the same errors with and without `jax.jit`. Algorithms receive
only `ConvSpec`; the public layer reads the rest of `ConvPlan`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

from jaxconv import _shapes
from jaxconv._impls import IMPLS

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A canonical convolution, as every algorithm receives it.

    Arrays are channels-first with one batch dim: input ``(N, C_in, *S)``, weight
    ``(C_out, C_in // groups, *K)``. The convolution is XLA's general one: the input is
    dilated by ``lhs_dilation`` (zeros between elements), padded by ``padding`` (a
    negative amount crops), then correlated with the kernel dilated by
    ``rhs_dilation`` at ``stride``. Transposed convolutions arrive in this form with
    ``lhs_dilation`` > 1 and a flipped, regrouped weight.
    """

    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    groups: int
    precision: Any = None
    # The caller's layout, a hint only: an algorithm may order its operands so that XLA
    # cancels the layout transposes around it. Results never depend on it.
    channels_last: bool = False

    @property
    def ndim(self) -> int:
        """The number of spatial dims."""
        return len(self.stride)

    def out_spatial(self, in_spatial: Sequence[int], kernel: Sequence[int]) -> tuple[int, ...]:
        """The output's spatial shape for an input and kernel of these spatial shapes."""
        return tuple(
            _shapes.conv_out_size((n - 1) * ld + 1, k, lo, hi, s, d)
            for n, k, (lo, hi), s, d, ld in zip(
                in_spatial,
                kernel,
                self.padding,
                self.stride,
                self.rhs_dilation,
                self.lhs_dilation,
                strict=True,
            )
        )

    def flops(self, x_shape: Sequence[int], w_shape: Sequence[int]) -> int:
        """FLOPs (2 x multiply-adds) of this convolution of canonical arrays of these
        shapes."""
        return (
            2
            * x_shape[0]
            * math.prod(w_shape)
            * math.prod(self.out_spatial(x_shape[2:], w_shape[2:]))
        )


@dataclasses.dataclass(frozen=True)
class ConvPlan:
    """Everything the public layer needs inside `jit`: the canonical spec and the layout.

    ``mode_padding`` is the padding applied with ``padding_mode`` before the convolution
    (then ``spec.padding`` is zero), or None for zero padding.
    """

    name: str
    spec: ConvSpec
    transpose: bool
    channels_last: bool
    batch_ndim: int
    padding_mode: str
    mode_padding: tuple[tuple[int, int], ...] | None
    impl: str
    out_shape: tuple[int, ...]


# ----------------------------------------------------------------------------- helpers


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _as_int(fname: str, arg: str, value, v):
    if not _is_int(v):
        raise TypeError(
            f"{fname}: `{arg}` (={value!r}) must be an int or a sequence of ints, "
            f"got an element of type {type(v).__name__}"
        )
    return operator.index(v)


def ntuple(fname: str, arg: str, value, n: int, *, minimum: int) -> tuple[int, ...]:
    """An int or a length-1 or length-n sequence of ints -> n ints, each >= minimum."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = tuple(_as_int(fname, arg, value, v) for v in value)
        if len(items) == 1:
            items = items * n
        elif len(items) != n:
            raise ValueError(
                f"{fname}: `{arg}` (={value!r}) must be an int or have one entry per "
                f"spatial dim ({n}), got {len(items)} entries"
            )
    else:
        items = (_as_int(fname, arg, value, value),) * n
    if any(v < minimum for v in items):
        rule = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{fname}: `{arg}` (={value!r}) must be {rule}")
    return items


def _padding_pairs(fname: str, padding, n: int) -> tuple[tuple[int, int], ...]:
    """Int, per-dim ints or per-dim (lo, hi) pairs -> n non-negative (lo, hi) pairs."""
    is_seq = isinstance(padding, Sequence) and not isinstance(padding, str)
    if (
        is_seq
        and len(padding) > 0
        and all(isinstance(p, Sequence) and not isinstance(p, str) for p in padding)
    ):
        pairs = []
        for p in padding:
            if len(p) != 2:
                raise ValueError(
                    f"{fname}: `padding` (={padding!r}) must hold (lo, hi) pairs, "
                    f"got an entry of length {len(p)}"
                )
            pairs.append(tuple(_as_int(fname, "padding", padding, v) for v in p))
        if len(pairs) == 1:
            pairs = pairs * n
        elif len(pairs) != n:
            raise ValueError(
                f"{fname}: `padding` (={padding!r}) must have one (lo, hi) pair per "
                f"spatial dim ({n}), got {len(pairs)}"
            )
        if any(v < 0 for p in pairs for v in p):
            raise ValueError(f"{fname}: `padding` (={padding!r}) must be non-negative")
        return tuple(pairs)
    return tuple((p, p) for p in ntuple(fname, "padding", padding, n, minimum=0))


def resolve_padding_pairs(
    fname: str, padding, kernel, stride, dilation, input_size=None
) -> tuple[tuple[int, int], ...]:
    """Any accepted `padding` of a forward convolution -> explicit (lo, hi) pairs."""
    n = len(kernel)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in _shapes.PADDING_STRINGS:
            raise ValueError(
                f"{fname}: `padding` (={padding!r}) is not a known padding string; "
                f"expected one of {_shapes.PADDING_STRINGS} (case-insensitive)"
            )
        if mode == "tf_same" and input_size is None:
            raise ValueError(
                f"{fname}: `padding` (={padding!r}) depends on the input size; pass `input_size`"
            )
        sizes = input_size if input_size is not None else (None,) * n
        return tuple(
            _shapes.string_padding(mode, k, s, d, m)
            for k, s, d, m in zip(kernel, stride, dilation, sizes, strict=True)
        )
    return _padding_pairs(fname, padding, n)


def _check_shape(fname: str, arg: str, shape) -> tuple[int, ...]:
    try:
        shape = tuple(operator.index(v) for v in shape)
    except TypeError:
        raise TypeError(
            f"{fname}: `{arg}` must be a shape (a sequence of ints), got {shape!r}"
        ) from None
    if any(v < 0 for v in shape):
        raise ValueError(f"{fname}: `{arg}` (shape {shape}) must have non-negative dims")
    return shape


def check_impl(fname: str, impl) -> str:
    """`impl` must be "auto", "autotune" or a registered algorithm name."""
    if not isinstance(impl, str):
        raise TypeError(f"{fname}: `impl` (={impl!r}) must be a string")
    choices = ("auto", "autotune", *IMPLS)
    if impl not in choices:
        raise ValueError(f"{fname}: `impl` (={impl!r}) must be one of {choices}")
    return impl


def check_precision(fname: str, precision):
    """None, a `jax.lax.Precision`, its name, or a pair of those; lists become tuples."""
    from jax import lax  # a leaf import: lax.Precision parses names

    def one(p):
        if p is None or isinstance(p, lax.Precision):
            return p
        if isinstance(p, str):
            try:
                return lax.Precision(p)
            except (ValueError, KeyError):
                pass
        raise ValueError(
            f"{fname}: `precision` (={precision!r}) must be None, a jax.lax.Precision "
            "or one of 'default', 'high', 'highest' (or a pair of those)"
        )

    if isinstance(precision, Sequence) and not isinstance(precision, str):
        if len(precision) != 2:
            raise ValueError(f"{fname}: `precision` (={precision!r}) as a sequence must be a pair")
        return (one(precision[0]), one(precision[1]))
    return one(precision)


def _check_bool(fname: str, arg: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{fname}: `{arg}` (={value!r}) must be a bool")
    return value


# ----------------------------------------------------------------------------- layouts


def split_input_shape(fname, input_shape, n, channels_last):
    """(*B, C, *S) or (*B, *S, C) -> (batch_shape, channels, spatial)."""
    if len(input_shape) < n + 1:
        layout = "(*B, *S, C_in)" if channels_last else "(*B, C_in, *S)"
        raise ValueError(
            f"{fname}: `input` must have at least {n + 1} dims, {layout} with {n} "
            f"spatial dims, got shape {input_shape}"
        )
    if channels_last:
        return input_shape[: -n - 1], input_shape[-1], input_shape[-n - 1 : -1]
    return input_shape[: -n - 1], input_shape[-n - 1], input_shape[-n:]


def split_weight_shape(weight_shape, n, channels_last):
    """Weight shape in either layout -> (first channel dim, second channel dim, kernel).

    Channels-first ``(A, B, *K)``; channels-last ``(*K, B, A)``. For a convolution
    ``A = C_out, B = C_in / groups``; for a transposed one ``A = C_in, B = C_out / groups``.
    """
    if channels_last:
        return weight_shape[-1], weight_shape[-2], weight_shape[:n]
    return weight_shape[0], weight_shape[1], weight_shape[2:]


def _common(fname, input_shape, weight_shape, ndim, channels_last):
    input_shape = _check_shape(fname, "input", input_shape)
    weight_shape = _check_shape(fname, "weight", weight_shape)
    channels_last = _check_bool(fname, "channels_last", channels_last)
    if ndim is None:
        if len(weight_shape) < 3:
            raise ValueError(
                f"{fname}: `weight` must have at least 3 dims (two channel dims and at "
                f"least one kernel dim), got shape {weight_shape}"
            )
        n = len(weight_shape) - 2
    else:
        n = ndim
        if len(weight_shape) != n + 2:
            raise ValueError(
                f"{fname}: `weight` must have {n + 2} dims for a {n}-d convolution, "
                f"got shape {weight_shape}"
            )
    a, b, kernel = split_weight_shape(weight_shape, n, channels_last)
    if any(k < 1 for k in kernel):
        raise ValueError(f"{fname}: `weight` (shape {weight_shape}) has an empty kernel dim")
    batch, channels, spatial = split_input_shape(fname, input_shape, n, channels_last)
    return n, input_shape, weight_shape, channels_last, a, b, kernel, batch, channels, spatial


def _check_groups(fname, groups):
    if not _is_int(groups):
        raise TypeError(f"{fname}: `groups` (={groups!r}) must be an int")
    if groups < 1:
        raise ValueError(f"{fname}: `groups` (={groups}) must be positive")
    return operator.index(groups)


def _check_out(fname, out, input_shape, weight_shape, rule=None):
    if any(m < 1 for m in out):
        rule = rule or "the kernel's extent must fit in the padded input"
        raise ValueError(
            f"{fname}: the output would be empty (spatial size {tuple(out)}) for input "
            f"shape {input_shape} and weight shape {weight_shape}; {rule}"
        )


def _check_bias(fname, bias_shape, c_out):
    if bias_shape is not None and tuple(bias_shape) != (c_out,):
        raise ValueError(
            f"{fname}: `bias` must have shape ({c_out},) (out_channels), got {tuple(bias_shape)}"
        )


# ----------------------------------------------------------------------------- plans


def conv_plan(
    fname: str,
    input_shape,
    weight_shape,
    bias_shape=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    *,
    ndim: int | None = None,
    padding_mode: str = "zeros",
    channels_last: bool = False,
    impl: str = "auto",
    precision=None,
) -> ConvPlan:
    """Validate a forward convolution -> its plan (``out_shape`` in the caller's layout)."""
    n, input_shape, weight_shape, channels_last, c_out, c_in_g, kernel, batch, c_in, spatial = (
        _common(fname, input_shape, weight_shape, ndim, channels_last)
    )
    stride = ntuple(fname, "stride", stride, n, minimum=1)
    dilation = ntuple(fname, "dilation", dilation, n, minimum=1)
    groups = _check_groups(fname, groups)
    if c_in % groups:
        raise ValueError(f"{fname}: `groups` (={groups}) must divide in_channels (={c_in})")
    if c_out % groups:
        raise ValueError(f"{fname}: `groups` (={groups}) must divide out_channels (={c_out})")
    if c_in_g * groups != c_in:
        raise ValueError(
            f"{fname}: `weight` (shape {weight_shape}) expects {c_in_g * groups} input "
            f"channels ({c_in_g} per group x {groups} groups), but `input` (shape "
            f"{input_shape}) has {c_in}"
        )
    _check_bias(fname, bias_shape, c_out)
    if not isinstance(padding_mode, str):
        raise TypeError(f"{fname}: `padding_mode` (={padding_mode!r}) must be a string")
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            f"{fname}: `padding_mode` (={padding_mode!r}) must be one of {PADDING_MODES}"
        )
    pads = resolve_padding_pairs(fname, padding, kernel, stride, dilation, spatial)
    if any(m < 1 for m in spatial):
        # PyTorch refuses it ("Only zero batch or zero channel inputs are supported"),
        # padded or not; padding alone would give windows that meet only padding.
        raise ValueError(
            f"{fname}: `input` (shape {input_shape}) has an empty spatial dim (spatial "
            f"size {tuple(spatial)}); only the batch and channel dims may be empty"
        )
    if padding_mode in ("reflect", "circular"):
        for m, (lo, hi) in zip(spatial, pads, strict=True):
            too_big = max(lo, hi) >= m if padding_mode == "reflect" else max(lo, hi) > m
            if too_big:
                rule = "smaller than" if padding_mode == "reflect" else "at most"
                raise ValueError(
                    f"{fname}: `padding` (={padding!r}) resolves to {pads}; with "
                    f"padding_mode={padding_mode!r} each amount must be {rule} the "
                    f"input's spatial size {tuple(spatial)}"
                )
    ones = (1,) * n
    spec = ConvSpec(
        stride=stride,
        padding=pads if padding_mode == "zeros" else ((0, 0),) * n,
        lhs_dilation=ones,
        rhs_dilation=dilation,
        groups=groups,
        precision=check_precision(fname, precision),
        channels_last=channels_last,
    )
    mode_spatial = tuple(m + lo + hi for m, (lo, hi) in zip(spatial, pads, strict=True))
    out = spec.out_spatial(spatial if padding_mode == "zeros" else mode_spatial, kernel)
    _check_out(fname, out, input_shape, weight_shape)
    return ConvPlan(
        name=fname,
        spec=spec,
        transpose=False,
        channels_last=channels_last,
        batch_ndim=len(batch),
        padding_mode=padding_mode,
        mode_padding=None if padding_mode == "zeros" else pads,
        impl=check_impl(fname, impl),
        out_shape=_layout(batch, c_out, out, channels_last),
    )


def transpose_plan(
    fname: str,
    input_shape,
    weight_shape,
    bias_shape=None,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
    *,
    ndim: int | None = None,
    channels_last: bool = False,
    impl: str = "auto",
    precision=None,
) -> ConvPlan:
    """Validate a transposed convolution -> its plan (``out_shape`` in the caller's layout)."""
    n, input_shape, weight_shape, channels_last, c_in_w, c_out_g, kernel, batch, c_in, spatial = (
        _common(fname, input_shape, weight_shape, ndim, channels_last)
    )
    stride = ntuple(fname, "stride", stride, n, minimum=1)
    dilation = ntuple(fname, "dilation", dilation, n, minimum=1)
    if isinstance(padding, str) or (
        isinstance(padding, Sequence) and any(isinstance(p, Sequence) for p in padding)
    ):
        raise TypeError(
            f"{fname}: `padding` (={padding!r}) of a transposed convolution must be an "
            "int or one int per spatial dim (PyTorch's meaning); strings and (lo, hi) "
            "pairs are for forward convolutions"
        )
    pads = ntuple(fname, "padding", padding, n, minimum=0)
    output_padding = ntuple(fname, "output_padding", output_padding, n, minimum=0)
    for op, s, d in zip(output_padding, stride, dilation, strict=True):
        if op >= max(s, d):
            raise ValueError(
                f"{fname}: `output_padding` (={output_padding}) must be smaller than "
                f"either stride (={stride}) or dilation (={dilation}) in every dim"
            )
    groups = _check_groups(fname, groups)
    if c_in % groups:
        raise ValueError(f"{fname}: `groups` (={groups}) must divide in_channels (={c_in})")
    if c_in_w != c_in:
        raise ValueError(
            f"{fname}: `weight` (shape {weight_shape}) expects {c_in_w} input channels, "
            f"but `input` (shape {input_shape}) has {c_in}"
        )
    c_out = c_out_g * groups
    _check_bias(fname, bias_shape, c_out)
    if any(m < 1 for m in spatial):
        # (n - 1) * s + ... has no meaning for n = 0 (XLA's and the phases' answers
        # differ); PyTorch refuses it too.
        raise ValueError(
            f"{fname}: `input` (shape {input_shape}) has an empty spatial dim (spatial "
            f"size {tuple(spatial)}); a transposed convolution needs at least one "
            "position along each (only the batch and channel dims may be empty)"
        )
    out = tuple(
        _shapes.transpose_out_size(m, k, p, op, s, d)
        for m, k, p, op, s, d in zip(
            spatial, kernel, pads, output_padding, stride, dilation, strict=True
        )
    )
    _check_out(
        fname,
        out,
        input_shape,
        weight_shape,
        f"`padding` (={padding!r}) is too large: each output size (n - 1) * stride - 2 "
        "* padding + dilation * (k - 1) + output_padding + 1 must be positive",
    )
    spec = ConvSpec(
        stride=(1,) * n,
        padding=tuple(
            _shapes.transpose_as_forward_padding(k, p, op, d)
            for k, p, op, d in zip(kernel, pads, output_padding, dilation, strict=True)
        ),
        lhs_dilation=stride,
        rhs_dilation=dilation,
        groups=groups,
        precision=check_precision(fname, precision),
        channels_last=channels_last,
    )
    return ConvPlan(
        name=fname,
        spec=spec,
        transpose=True,
        channels_last=channels_last,
        batch_ndim=len(batch),
        padding_mode="zeros",
        mode_padding=None,
        impl=check_impl(fname, impl),
        out_shape=_layout(batch, c_out, out, channels_last),
    )


def _layout(batch, channels, spatial, channels_last) -> tuple[int, ...]:
    if channels_last:
        return (*batch, *spatial, channels)
    return (*batch, channels, *spatial)
