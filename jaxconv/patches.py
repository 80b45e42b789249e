"""Patches: PyTorch's ``F.unfold`` (im2col) and its adjoint ``F.fold``, in any number of dims.

The number of spatial dims is ``len(kernel_size)`` when ``kernel_size`` is a sequence
(``fold`` also reads it from ``output_size``) and 2 when it is an int, PyTorch's
reading: every input PyTorch accepts gives PyTorch's values, and a 1-D or 3-D call
passes a 1- or 3-element ``kernel_size``. Everything before the channel dim is a
batch dim (any number, none included).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxconv._impls._common import varying_struct
from jaxconv._impls.matmul import patches
from jaxconv._spec import ConvSpec, ntuple
from jaxconv.functional import check_array


def _is_seq(v) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, str)


def _spec(fname, spatial_ndim, kernel_size, dilation, padding, stride):
    """Normalise the shared arguments -> (kernel, ConvSpec)."""
    n = spatial_ndim
    if n < 1:
        raise ValueError(f"{fname}: `kernel_size` (={kernel_size!r}) must not be empty")
    kernel = ntuple(fname, "kernel_size", kernel_size, n, minimum=1)
    dilation = ntuple(fname, "dilation", dilation, n, minimum=1)
    padding = ntuple(fname, "padding", padding, n, minimum=0)
    stride = ntuple(fname, "stride", stride, n, minimum=1)
    spec = ConvSpec(
        stride=stride,
        padding=tuple((p, p) for p in padding),
        lhs_dilation=(1,) * n,
        rhs_dilation=dilation,
        groups=1,
    )
    return kernel, spec


def _blocks(fname, spatial, kernel, spec, arg, value) -> tuple[int, ...]:
    """Sliding-block counts per dim; each must be positive."""
    blocks = spec.out_spatial(spatial, kernel)
    if any(b < 1 for b in blocks):
        raise ValueError(
            f"{fname}: `{arg}` (={value!r}) is too small for kernel_size={kernel}, "
            f"dilation={spec.rhs_dilation}, padding={tuple(p for p, _ in spec.padding)}, "
            f"stride={spec.stride}: it gives {blocks} sliding blocks per dim, each must "
            "be positive"
        )
    return blocks


@functools.partial(jax.jit, static_argnames=("kernel", "spec"))
def _unfold(x: jax.Array, kernel, spec: ConvSpec) -> jax.Array:
    with jax.named_scope("jaxconv.unfold"):
        n = spec.ndim
        batch = x.shape[: x.ndim - n - 1]
        cols = patches(x.reshape((math.prod(batch), *x.shape[-n - 1 :])), kernel, spec)
        # Explicit L, not -1: a zero-size batch cannot infer it.
        return cols.reshape((*batch, cols.shape[1], math.prod(cols.shape[2:])))


@functools.partial(jax.jit, static_argnames=("output_size", "kernel", "spec"))
def _fold(y: jax.Array, output_size, kernel, spec: ConvSpec) -> jax.Array:
    with jax.named_scope("jaxconv.fold"):
        batch = y.shape[:-2]
        rows, _ = y.shape[-2:]
        channels = rows // math.prod(kernel)
        blocks = spec.out_spatial(output_size, kernel)
        y = y.reshape((math.prod(batch), rows, *blocks))
        primal = varying_struct((y.shape[0], channels, *output_size), y.dtype, y)
        (x,) = jax.linear_transpose(lambda x: patches(x, kernel, spec), primal)(y)
        return x.reshape((*batch, channels, *output_size))


def unfold(
    input: ArrayLike,
    kernel_size: int | Sequence[int],
    dilation: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    stride: int | Sequence[int] = 1,
) -> jax.Array:
    """Sliding blocks of a batched input as columns, as `torch.nn.functional.unfold`.

    Args:
      input: ``(*B, C, *S)``, any number of batch dims; floating or complex.
      kernel_size: an int (2 spatial dims, as PyTorch) or one int per spatial dim (its
        length is the number of spatial dims).
      dilation: int or one int per spatial dim: the spacing of a block's elements.
      padding: int or one int per spatial dim: zeros added on both sides.
      stride: int or one int per spatial dim: the step between blocks.

    Returns:
      ``(*B, C * prod(kernel_size), L)``, ``L`` the number of blocks, row-major over the
      blocks' positions. Row ``c * prod(kernel_size) + t`` holds channel ``c`` at kernel
      offset ``t`` (row-major over ``kernel_size``), PyTorch's channel-major order.

    Raises:
      TypeError: a non-array or an integer/bool input, or a non-int size.
      ValueError: a bad size (non-positive kernel, dilation or stride, negative
        padding), too few input dims, or an input too small for one block.

    Examples:
      >>> import jax.numpy as jnp, jaxconv
      >>> x = jnp.arange(16.0).reshape(1, 1, 4, 4)
      >>> cols = jaxconv.unfold(x, 2, stride=2)
      >>> cols.shape
      (1, 4, 4)
      >>> cols[0, :, 0].tolist()
      [0.0, 1.0, 4.0, 5.0]
      >>> jaxconv.unfold(jnp.ones((2, 3, 10)), (3,)).shape
      (2, 9, 8)
    """
    fname = "unfold"
    check_array(fname, "input", input)
    n = len(kernel_size) if _is_seq(kernel_size) else 2
    kernel, spec = _spec(fname, n, kernel_size, dilation, padding, stride)
    if input.ndim < n + 1:
        raise ValueError(
            f"{fname}: `input` (shape {tuple(input.shape)}) must have at least {n + 1} "
            f"dims, (*B, C, *S) with {n} spatial dims (the length of kernel_size)"
        )
    _blocks(fname, tuple(input.shape[-n:]), kernel, spec, "input", tuple(input.shape))
    return _unfold(jnp.asarray(input), kernel=kernel, spec=spec)


def fold(
    input: ArrayLike,
    output_size: int | Sequence[int],
    kernel_size: int | Sequence[int],
    dilation: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    stride: int | Sequence[int] = 1,
) -> jax.Array:
    """Columns of sliding blocks summed back into an array, as `torch.nn.functional.fold`.

    The adjoint of `unfold`: each column is added back where its block came from, so
    overlapping blocks add up, and ``fold(unfold(x))`` is ``x`` times the number of
    blocks covering each element.

    Args:
      input: ``(*B, C * prod(kernel_size), L)``, any number of batch dims.
      output_size: int or one int per spatial dim: the spatial shape ``S`` of the result.
      kernel_size: int or one int per spatial dim. The number of spatial dims is the
        length of ``kernel_size`` or else of ``output_size``, and 2 if both are ints.
      dilation: int or one int per spatial dim.
      padding: int or one int per spatial dim: dropped from both sides of the result.
      stride: int or one int per spatial dim.

    Returns:
      ``(*B, C, *output_size)``.

    Raises:
      TypeError: a non-array or an integer/bool input, or a non-int size.
      ValueError: a bad size, ``C * prod(kernel_size)`` not divisible by
        ``prod(kernel_size)``, or ``L`` not the number of blocks ``output_size`` holds.

    Examples:
      >>> import jax.numpy as jnp, jaxconv
      >>> x = jnp.ones((1, 1, 3, 3))
      >>> jaxconv.fold(jaxconv.unfold(x, 2), (3, 3), 2)[0, 0].tolist()
      [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """
    fname = "fold"
    check_array(fname, "input", input)
    if _is_seq(kernel_size):
        n = len(kernel_size)
    elif _is_seq(output_size):
        n = len(output_size)
    else:
        n = 2
    kernel, spec = _spec(fname, n, kernel_size, dilation, padding, stride)
    output_size = ntuple(fname, "output_size", output_size, n, minimum=1)
    if input.ndim < 2:
        raise ValueError(
            f"{fname}: `input` (shape {tuple(input.shape)}) must have at least 2 dims, "
            "(*B, C * prod(kernel_size), L)"
        )
    rows, length = input.shape[-2:]
    taps = math.prod(kernel)
    if rows % taps:
        raise ValueError(
            f"{fname}: `input` (shape {tuple(input.shape)}) must have a multiple of "
            f"prod(kernel_size) (={taps}, kernel_size={kernel}) rows in dim -2, got {rows}"
        )
    blocks = _blocks(fname, output_size, kernel, spec, "output_size", output_size)
    if length != math.prod(blocks):
        raise ValueError(
            f"{fname}: `input` (shape {tuple(input.shape)}) must have L = "
            f"{math.prod(blocks)} columns in its last dim ({blocks} sliding blocks for "
            f"output_size={output_size}), got {length}"
        )
    return _fold(jnp.asarray(input), output_size=output_size, kernel=kernel, spec=spec)
