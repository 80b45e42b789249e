"""Shape arithmetic as public pure functions of ints (no JAX, nothing compiled).

They run the same validation as the convolutions, so a shape they return is the shape
the convolution returns, and an argument they reject the convolution rejects too.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxconv import _spec


def output_shape(
    input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, *, channels_last=False
) -> tuple[int, ...]:
    """The shape `jaxconv.conv` returns for these shapes and arguments.

    Args:
      input_shape: ``(*B, C_in, *S)`` (``(*B, *S, C_in)`` with ``channels_last``).
      weight_shape: ``(C_out, C_in / groups, *K)`` (``(*K, C_in / groups, C_out)``).
      stride, padding, dilation, groups: as in `jaxconv.conv`.
      channels_last: the layout of both shapes and of the result.

    Returns:
      The output shape, each spatial size ``floor((n - d*(k-1) - 1 + lo + hi) / s) + 1``.

    Raises:
      ValueError, TypeError: as `jaxconv.conv` would for these arguments.

    Examples:
      The notes' worked examples, an 8x8 single-channel input:

      >>> from jaxconv import output_shape
      >>> output_shape((1, 1, 8, 8), (1, 1, 3, 3), padding=1)
      (1, 1, 8, 8)
      >>> output_shape((1, 1, 8, 8), (1, 1, 5, 3), padding=(2, 1))
      (1, 1, 8, 8)
      >>> output_shape((1, 1, 8, 8), (1, 1, 3, 3), padding=1, stride=2)
      (1, 1, 4, 4)
      >>> output_shape((1, 1, 8, 8), (1, 1, 3, 5), padding=(0, 1), stride=(3, 4))
      (1, 1, 2, 2)
      >>> output_shape((1, 1, 8, 8), (1, 1, 3, 3), padding=(2, 3), stride=2)
      (1, 1, 5, 6)
    """
    return _spec.conv_plan(
        "output_shape",
        input_shape,
        weight_shape,
        None,
        stride,
        padding,
        dilation,
        groups,
        channels_last=channels_last,
    ).out_shape


def transpose_output_shape(
    input_shape,
    weight_shape,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
    *,
    channels_last=False,
) -> tuple[int, ...]:
    """The shape `jaxconv.conv_transpose` returns for these shapes and arguments.

    Args:
      input_shape: ``(*B, C_in, *S)`` (``(*B, *S, C_in)`` with ``channels_last``).
      weight_shape: ``(C_in, C_out / groups, *K)`` (``(*K, C_out / groups, C_in)``).
      stride, padding, output_padding, groups, dilation: as in `jaxconv.conv_transpose`.
      channels_last: the layout of both shapes and of the result.

    Returns:
      The output shape, each spatial size ``(n-1)*s - 2*p + d*(k-1) + output_padding + 1``.

    Raises:
      ValueError, TypeError: as `jaxconv.conv_transpose` would for these arguments.

    Examples:
      >>> from jaxconv import transpose_output_shape
      >>> transpose_output_shape((1, 16, 4, 4), (16, 8, 4, 4), stride=2, padding=1)
      (1, 8, 8, 8)
    """
    return _spec.transpose_plan(
        "transpose_output_shape",
        input_shape,
        weight_shape,
        None,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
        channels_last=channels_last,
    ).out_shape


def resolve_padding(padding, kernel_size, stride=1, dilation=1, input_size=None):
    """Any `padding` a convolution accepts -> explicit ``((lo, hi), ...)`` per spatial dim.

    Args:
      padding: int, per-dim ints, per-dim ``(lo, hi)`` pairs, or a padding string.
      kernel_size: int or one int per spatial dim.
      stride, dilation: int or one int per spatial dim.
      input_size: the input's spatial sizes; needed only by ``"tf_same"``.

    Returns:
      One ``(lo, hi)`` pair of non-negative ints per spatial dim. The number of dims is
      the length of the longest sequence argument (1 if all are ints).

    Raises:
      ValueError: an unknown string, negative or mismatched amounts, or ``"tf_same"``
        without ``input_size``.
      TypeError: a non-int amount.

    Examples:
      >>> from jaxconv import resolve_padding
      >>> resolve_padding("same", (4, 3))
      ((1, 2), (1, 1))
      >>> resolve_padding("tf_same", 3, stride=2, input_size=(8,))
      ((0, 1),)
      >>> resolve_padding("causal", 3, dilation=2)
      ((4, 0),)
    """
    fname = "resolve_padding"
    args = [kernel_size, stride, dilation, input_size]
    if not isinstance(padding, str):
        args.append(padding)
    n = max([len(a) for a in args if isinstance(a, Sequence)], default=1)
    kernel = _spec.ntuple(fname, "kernel_size", kernel_size, n, minimum=1)
    stride = _spec.ntuple(fname, "stride", stride, n, minimum=1)
    dilation = _spec.ntuple(fname, "dilation", dilation, n, minimum=1)
    if input_size is not None:
        input_size = _spec.ntuple(fname, "input_size", input_size, n, minimum=0)
    return _spec.resolve_padding_pairs(fname, padding, kernel, stride, dilation, input_size)
