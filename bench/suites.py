"""The benchmark cases, as data: which convolutions `python -m bench` times.

Shapes are written in PyTorch's channels-first layout (input ``(N, C_in, *S)``, conv
weight ``(C_out, C_in / groups, *K)``, transpose weight ``(C_in, C_out / groups, *K)``);
``channels_last`` says which layout jaxconv is called in (`Case.jax_shapes` converts).
Each suite is a tuple of cases; `suite` scales the batch for the backend.
"""

from __future__ import annotations

import dataclasses

SUITES = ("quick", "full", "notes", "tiny")

# Accelerators are far faster than a CPU; a bigger batch keeps their timings above noise.
_BATCH_SCALE = {"cpu": 1, "gpu": 8, "cuda": 8, "rocm": 8, "tpu": 8}


@dataclasses.dataclass(frozen=True)
class Case:
    """One convolution to time: shapes (channels-first) and the call's arguments."""

    name: str
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | str | tuple[int, ...] = 0
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    channels_last: bool = False
    transpose: bool = False
    output_padding: int | tuple[int, ...] = 0

    @property
    def kind(self) -> str:
        return "transpose" if self.transpose else "conv"

    @property
    def ndim(self) -> int:
        """The number of spatial dims."""
        return len(self.weight_shape) - 2

    @property
    def layout(self) -> str:
        return "nhwc" if self.channels_last else "nchw"

    @property
    def id(self) -> str:
        """The name with its layout, unique within a suite: what ``--cases`` filters."""
        return f"{self.name}/{self.layout}"

    @property
    def batch(self) -> int:
        return self.input_shape[0]

    def with_layout(self, channels_last: bool) -> Case:
        return dataclasses.replace(self, channels_last=channels_last)

    def with_batch(self, batch: int) -> Case:
        return dataclasses.replace(self, input_shape=(batch, *self.input_shape[1:]))

    def jax_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(input shape, weight shape) in the layout jaxconv is called with."""
        if not self.channels_last:
            return self.input_shape, self.weight_shape
        return to_channels_last_shape(self.input_shape), weight_to_channels_last_shape(
            self.weight_shape
        )

    def kwargs(self) -> dict:
        """The keyword arguments of the jaxconv (and torch) call, less layout and impl."""
        if self.transpose:
            return dict(
                stride=self.stride,
                padding=self.padding,
                output_padding=self.output_padding,
                groups=self.groups,
                dilation=self.dilation,
            )
        return dict(
            stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups
        )


def to_channels_last_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(N, C, *S)`` -> ``(N, *S, C)``."""
    return (shape[0], *shape[2:], shape[1])


def weight_to_channels_last_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(A, B, *K)`` -> ``(*K, B, A)``, jaxconv's channels-last weight."""
    return (*shape[2:], shape[1], shape[0])


def _both(case: Case) -> tuple[Case, Case]:
    return case.with_layout(False), case.with_layout(True)


def _notes(n: int) -> tuple[Case, ...]:
    # The notes' worked example: c_i = c_o = 100, k = 5, m = 64: about 1 GFLOP a sample.
    return (
        Case("notes_100to100_5x5_m64_valid", (n, 100, 68, 68), (100, 100, 5, 5)),
        Case("notes_100to100_5x5_m64_pad2", (n, 100, 64, 64), (100, 100, 5, 5), padding=2),
    )


def _quick() -> tuple[Case, ...]:
    # No large-kernel depthwise here: the tap-by-tap algorithms take minutes to compile
    # a 31x31 kernel on CPU (the full suite has them).
    return (
        _notes(1)[0],
        Case("resnet3x3_64@56", (1, 64, 56, 56), (64, 64, 3, 3), padding=1),
        Case("resnet3x3_512@7", (2, 512, 7, 7), (512, 512, 3, 3), padding=1),
        Case("stem7x7_s2_3to64@112", (1, 3, 112, 112), (64, 3, 7, 7), stride=2, padding=3),
        *_both(Case("pointwise1x1_256to64@56", (1, 256, 56, 56), (64, 256, 1, 1))),
        Case("depthwise3x3_144@56", (1, 144, 56, 56), (144, 1, 3, 3), padding=1, groups=144),
        Case("depthwise7x7_96@56", (1, 96, 56, 56), (96, 1, 7, 7), padding=3, groups=96),
        Case("resnext3x3_g32_128@56", (1, 128, 56, 56), (128, 4, 3, 3), padding=1, groups=32),
        Case("dilated3x3_d2_128@33", (1, 128, 33, 33), (128, 128, 3, 3), padding=2, dilation=2),
        Case("audio1d_k80_s4_1to128@16000", (1, 1, 16000), (128, 1, 80), stride=4),
        Case("temporal1d_k3_256@1000", (1, 256, 1000), (256, 256, 3), padding=1),
        Case("video3d_3x3x3_32@8x28x28", (1, 32, 8, 28, 28), (32, 32, 3, 3, 3), padding=1),
        Case(
            "dcgan_up4x4_s2_256to128@16",
            (1, 256, 16, 16),
            (256, 128, 4, 4),
            stride=2,
            padding=1,
            transpose=True,
        ),
        Case(
            "unet_up2x2_s2_256to128@28",
            (1, 256, 28, 28),
            (256, 128, 2, 2),
            stride=2,
            transpose=True,
        ),
    )


def _full() -> tuple[Case, ...]:
    n = 8
    return (
        *_notes(n),
        *_both(Case("resnet3x3_64@56", (n, 64, 56, 56), (64, 64, 3, 3), padding=1)),
        *_both(Case("resnet3x3_128@28_s2", (n, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1)),
        *_both(Case("resnet3x3_256@14", (n, 256, 14, 14), (256, 256, 3, 3), padding=1)),
        *_both(Case("resnet3x3_512@7", (n, 512, 7, 7), (512, 512, 3, 3), padding=1)),
        *_both(Case("stem7x7_s2_3to64@224", (n, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)),
        *_both(Case("pointwise1x1_256to64@56", (n, 256, 56, 56), (64, 256, 1, 1))),
        *_both(Case("pointwise1x1_512to2048@7", (n, 512, 7, 7), (2048, 512, 1, 1))),
        *_both(
            Case("depthwise3x3_144@56", (n, 144, 56, 56), (144, 1, 3, 3), padding=1, groups=144)
        ),
        *_both(Case("depthwise7x7_96@56", (n, 96, 56, 56), (96, 1, 7, 7), padding=3, groups=96)),
        *_both(
            Case("depthwise13x13_128@56", (n, 128, 56, 56), (128, 1, 13, 13), padding=6, groups=128)
        ),
        *_both(
            Case(
                "depthwise31x31_128@28", (n, 128, 28, 28), (128, 1, 31, 31), padding=15, groups=128
            )
        ),
        *_both(
            Case("resnext3x3_g32_128@56", (n, 128, 56, 56), (128, 4, 3, 3), padding=1, groups=32)
        ),
        *_both(
            Case("dilated3x3_d2_256@33", (n, 256, 33, 33), (256, 256, 3, 3), padding=2, dilation=2)
        ),
        Case("dilated3x3_d4_256@33", (n, 256, 33, 33), (256, 256, 3, 3), padding=4, dilation=4),
        *_both(Case("audio1d_k80_s4_1to128@16000", (n, 1, 16000), (128, 1, 80), stride=4)),
        Case("audio1d_k10_s5_1to512@16000", (n, 1, 16000), (512, 1, 10), stride=5),
        *_both(Case("temporal1d_k3_256@1000", (n, 256, 1000), (256, 256, 3), padding=1)),
        Case("temporal1d_k5_128@1000", (n, 128, 1000), (128, 128, 5), padding=2),
        *_both(
            Case("video3d_3x3x3_64@16x28x28", (n, 64, 16, 28, 28), (64, 64, 3, 3, 3), padding=1)
        ),
        *_both(
            Case(
                "dcgan_up4x4_s2_256to128@16",
                (n, 256, 16, 16),
                (256, 128, 4, 4),
                stride=2,
                padding=1,
                transpose=True,
            )
        ),
        *_both(
            Case(
                "unet_up2x2_s2_256to128@28",
                (n, 256, 28, 28),
                (256, 128, 2, 2),
                stride=2,
                transpose=True,
            )
        ),
        Case(
            "up3x3_s2_op1_64to32@56",
            (n, 64, 56, 56),
            (64, 32, 3, 3),
            stride=2,
            padding=1,
            output_padding=1,
            transpose=True,
        ),
    )


def _tiny() -> tuple[Case, ...]:
    # Seconds to run end to end: what the test of the bench itself uses.
    return (
        Case("tiny_conv2d_4to4@8", (1, 4, 8, 8), (4, 4, 3, 3), padding=1),
        Case(
            "tiny_up1d_4to2@6",
            (1, 4, 6),
            (4, 2, 3),
            stride=2,
            padding=1,
            output_padding=1,
            transpose=True,
            channels_last=True,
        ),
    )


def suite(name: str, backend: str = "cpu") -> tuple[Case, ...]:
    """The cases of suite ``name``, their batch scaled for ``backend``.

    Examples:
      >>> [c.id for c in suite("notes")]
      ['notes_100to100_5x5_m64_valid/nchw', 'notes_100to100_5x5_m64_pad2/nchw']
    """
    cases = {"quick": _quick, "full": _full, "notes": lambda: _notes(1), "tiny": _tiny}
    if name not in cases:
        raise ValueError(f"suite: `name` (={name!r}) must be one of {SUITES}")
    scale = _BATCH_SCALE.get(backend, 8) if name != "tiny" else 1
    return tuple(c.with_batch(c.batch * scale) for c in cases[name]())


def select(
    cases: tuple[Case, ...], *, layout: str | None = None, patterns: tuple[str, ...] = ()
) -> tuple[Case, ...]:
    """Cases in ``layout`` ("nchw", "nhwc", "both"; None keeps each case's own), then
    those whose id contains one of ``patterns`` (all when empty), without duplicates.

    Examples:
      >>> [c.id for c in select(suite("tiny"), layout="both", patterns=("conv",))]
      ['tiny_conv2d_4to4@8/nchw', 'tiny_conv2d_4to4@8/nhwc']
    """
    if layout is not None and layout not in ("nchw", "nhwc", "both"):
        raise ValueError(f"select: `layout` (={layout!r}) must be 'nchw', 'nhwc' or 'both'")
    out: list[Case] = []
    for case in cases:
        if layout is None:
            variants = (case,)
        elif layout == "both":
            variants = _both(case)
        else:
            variants = (case.with_layout(layout == "nhwc"),)
        for v in variants:
            if v not in out and (not patterns or any(p in v.id for p in patterns)):
                out.append(v)
    return tuple(out)


def flops(case: Case, mode: str, jaxconv) -> int:
    """FLOPs of one call of ``case`` in ``mode`` ("fwd" or "train"), by the notes' formula.

    Forward: ``2 * c_i/g * c_o * prod(k) * prod(m)`` times the batch (a transposed conv
    counts as the forward conv it is the adjoint of); train adds the backward pass
    (input and weight gradients, twice the forward), as ``jaxconv.conv_cost`` counts.

    Examples:
      >>> import jaxconv
      >>> flops(suite("notes")[0], "fwd", jaxconv) / 1e9
      2.048
    """
    kw = dict(stride=case.stride, padding=case.padding, groups=case.groups)
    kw["dilation"] = case.dilation
    cost = jaxconv.conv_cost(case.input_shape, case.weight_shape, **kw, transpose=case.transpose)
    fwd, bwd = int(cost.flops), int(cost.backward_flops)
    return fwd if mode == "fwd" else fwd + bwd
