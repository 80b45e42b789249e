"""The notes' cost of a convolution layer: multiply-adds, FLOPs, bytes and time.

Pure integer arithmetic over shapes (no JAX computation), validated exactly as the
convolutions validate their arguments.

Conventions:

- One multiply-add (MAC) is 2 FLOPs: ``flops = 2 * macs``.
- A forward convolution costs, per output element, one MAC per weight entry it sees:
  ``macs = prod(output_shape) * C_in/groups * prod(K)``, the notes'
  ``c_i * c_o * k_h * k_w * m_h * m_w`` with groups and batch dims. Taps that fall on
  zero padding are counted too (the notes' formula does). XLA's own cost analysis
  (``jax.jit(f).lower(...).compile().cost_analysis()["flops"]``) skips padded taps, so
  the two agree exactly only without padding.
- A transposed convolution is counted as the scatter that defines it: every input
  element times every weight entry of its input channel,
  ``macs = prod(input_shape) * C_out/groups * prod(K)``. Scatters that PyTorch's
  ``padding`` crops away are counted too (XLA skips them; without padding the two agree).
- The backward pass is the input gradient plus the weight gradient, each costing what
  the forward costs: ``backward_flops = 2 * flops`` (the notes' "about twice the
  forward"; the bias gradient, a plain sum, is left out).
- Bytes are those of the input, weight and output arrays in ``dtype``, each read or
  written once (the bias is left out); ``arithmetic_intensity = flops / bytes``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax.numpy as jnp

from jaxconv import _spec


@dataclasses.dataclass(frozen=True)
class ConvCost:
    """The cost of one convolution call (or of several, summed with ``+`` or `sum`).

    Attributes:
      macs: multiply-adds of the forward pass, padded taps included.
      input_bytes: bytes of the input array.
      weight_bytes: bytes of the weight array.
      output_bytes: bytes of the output array.
    """

    macs: int
    input_bytes: int
    weight_bytes: int
    output_bytes: int

    @property
    def flops(self) -> int:
        """Forward FLOPs, 2 per multiply-add."""
        return 2 * self.macs

    @property
    def backward_flops(self) -> int:
        """Input gradient plus weight gradient, each as many FLOPs as the forward."""
        return 2 * self.flops

    @property
    def bytes(self) -> int:
        """Input, weight and output bytes together."""
        return self.input_bytes + self.weight_bytes + self.output_bytes

    @property
    def arithmetic_intensity(self) -> float:
        """Forward FLOPs per byte of input, weight and output."""
        return self.flops / self.bytes

    def seconds(
        self, flops_per_second: float, *, samples: int = 1, layers: int = 1, backward=False
    ) -> float:
        """The time to do this work at a sustained rate, ignoring memory traffic.

        Args:
          flops_per_second: the sustained rate, in FLOP/s (2 per multiply-add).
          samples: how many times the call runs (e.g. the number of samples when
            ``input_shape`` holds one sample).
          layers: how many such layers each sample passes through.
          backward: if True, a training step: forward plus backward FLOPs.

        Returns:
          ``(flops [+ backward_flops]) * samples * layers / flops_per_second``.

        Raises:
          ValueError: a non-positive rate, samples or layers.
          TypeError: a non-number rate, samples or layers.
        """
        for arg, value in (
            ("flops_per_second", flops_per_second),
            ("samples", samples),
            ("layers", layers),
        ):
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise TypeError(f"ConvCost.seconds: `{arg}` (={value!r}) must be a number")
            if not value > 0:
                raise ValueError(f"ConvCost.seconds: `{arg}` (={value!r}) must be positive")
        work = self.flops + (self.backward_flops if backward else 0)
        return work * samples * layers / flops_per_second

    def __add__(self, other: ConvCost) -> ConvCost:
        if not isinstance(other, ConvCost):
            return NotImplemented
        return ConvCost(
            *(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self))
        )

    def __radd__(self, other) -> ConvCost:
        # `sum(costs)` starts from 0.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented


def _itemsize(fname: str, dtype) -> int:
    try:
        dt = None if dtype is None else jnp.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or not jnp.issubdtype(dt, jnp.number):
        raise TypeError(
            f"{fname}: `dtype` (={dtype!r}) is not a numeric dtype; pass e.g. 'float32' "
            "or 'bfloat16'"
        )
    return dt.itemsize


def conv_cost(
    input_shape,
    weight_shape,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    *,
    channels_last: bool = False,
    dtype="float32",
    transpose: bool = False,
    output_padding=0,
) -> ConvCost:
    """The notes' cost of `jaxconv.conv` (or `jaxconv.conv_transpose`) on these shapes.

    See the module docstring for the conventions: 2 FLOPs per multiply-add, padded taps
    counted (XLA's cost analysis does not count them), backward = input gradient plus
    weight gradient = twice the forward, transposed convolutions counted as a scatter.

    Args:
      input_shape: ``(*B, C_in, *S)`` (``(*B, *S, C_in)`` with ``channels_last``).
      weight_shape: ``(C_out, C_in / groups, *K)`` (``(*K, C_in / groups, C_out)``); with
        ``transpose`` the transposed weight ``(C_in, C_out / groups, *K)``
        (``(*K, C_out / groups, C_in)``).
      stride, padding, dilation, groups: as in `jaxconv.conv`; with ``transpose`` as in
        `jaxconv.conv_transpose` (``padding`` is PyTorch's transposed padding).
      channels_last: the layout of both shapes.
      dtype: the element type, for bytes (any name `jax.numpy.dtype` accepts,
        ``"bfloat16"`` included).
      transpose: cost `jaxconv.conv_transpose` instead of `jaxconv.conv`.
      output_padding: as in `jaxconv.conv_transpose`; only with ``transpose``.

    Returns:
      A `ConvCost`: ``macs`` (forward: ``prod(output_shape) * C_in/groups * prod(K)``;
      transposed: ``prod(input_shape) * C_out/groups * prod(K)``), ``flops``,
      ``backward_flops``, bytes of input, weight and output, ``arithmetic_intensity`` and
      ``seconds(rate)``.

    Raises:
      ValueError, TypeError: as the convolution would for these arguments (messages name
        ``conv_cost``); TypeError for an unknown ``dtype``.

    Examples:
      The notes' layer: ``c_i = c_o = 100``, a 5x5 kernel, a 64x64 output (a 68x68
      input without padding, or 64x64 with padding 2):

      >>> from jaxconv import conv_cost
      >>> cost = conv_cost((100, 68, 68), (100, 100, 5, 5))
      >>> cost.macs  # the notes' "1 GFLOP": 100 * 100 * 5 * 5 * 64 * 64
      1024000000
      >>> conv_cost((100, 64, 64), (100, 100, 5, 5), padding=2).macs
      1024000000

      The notes count one multiply-add as one operation: 10 such layers over 1M samples
      are ``1.024e16`` multiply-adds, "10 PFLOP" (forward only). At 0.15 T and 12 T
      multiply-adds per second, their CPU and GPU rates:

      >>> work = cost.macs * 10 * 1_000_000
      >>> round(work / 0.15e12 / 3600, 1)  # hours; the notes round 1.024e9 to 1e9: 18.5 h
      19.0
      >>> round(work / 12e12 / 60, 1)  # minutes; 13.9 with 1e9, the notes' "14 min"
      14.2

      `ConvCost.seconds` counts 2 FLOPs per multiply-add, so at 12 TFLOP/s it takes
      twice that, and a training step (forward + backward) three times the forward:

      >>> round(cost.seconds(12e12, samples=1_000_000, layers=10) / 60, 1)
      28.4
      >>> round(cost.seconds(12e12, samples=1_000_000, layers=10, backward=True) / 60, 1)
      85.3
      >>> cost.bytes, round(cost.arithmetic_intensity, 1)  # float32 input, weight, output
      (4488000, 456.3)
    """
    fname = "conv_cost"
    transpose = _spec._check_bool(fname, "transpose", transpose)
    itemsize = _itemsize(fname, dtype)
    if transpose:
        out_shape = _spec.transpose_plan(
            fname,
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
    else:
        out_shape = _spec.conv_plan(
            fname,
            input_shape,
            weight_shape,
            None,
            stride,
            padding,
            dilation,
            groups,
            channels_last=channels_last,
        ).out_shape
    input_shape = tuple(int(v) for v in input_shape)
    weight_shape = tuple(int(v) for v in weight_shape)
    n = len(weight_shape) - 2
    if not transpose and any(_spec.ntuple(fname, "output_padding", output_padding, n, minimum=0)):
        raise ValueError(
            f"{fname}: `output_padding` (={output_padding!r}) applies only with transpose=True"
        )
    _, second, kernel = _spec.split_weight_shape(weight_shape, n, channels_last)
    # Forward: every output element sees the weight of its output channel (the first
    # channel dim). Transposed: every input element scatters the weight of its input
    # channel (the first channel dim too). Either way that slice is second * prod(K).
    per_element = second * math.prod(kernel)
    elements = math.prod(input_shape) if transpose else math.prod(out_shape)
    return ConvCost(
        macs=elements * per_element,
        input_bytes=math.prod(input_shape) * itemsize,
        weight_bytes=math.prod(weight_shape) * itemsize,
        output_bytes=math.prod(out_shape) * itemsize,
    )
