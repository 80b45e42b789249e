"""``impl="auto"``: which algorithm runs, by backend and shape.

Every rule below is justified by a measurement written next to it: `python -m bench`
on this project's 2-core x86 CPU (float32, jaxlib 0.10.2), forward and forward plus
backward ("train"), as the speed-up over ``"lax"`` (XLA's convolution) in the same run.
Where nothing has been measured the answer is ``"lax"``: XLA's convolution is cuDNN's
on a GPU and the MXU's on a TPU, and auto must never be slower than it there. On an
NVIDIA GPU one rule was measured (large depthwise kernels by FFT, see
`CUDA_FFT_GRADIENT_MIN_KERNEL`); on a TPU, and on other GPUs, every answer is ``"lax"``.

The value and the two derivatives are chosen apart (see `forward`). Input-dilated specs
(transposed convolutions) are first split into stride² phases
(`jaxconv._impls.subpixel`), and 3-D convolutions that would run XLA's convolution into
2-D ones per depth tap (`jaxconv._impls.planes`), each piece then chosen by the same
rules.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.extend import backend as jax_backend

from jaxconv import _derivatives
from jaxconv._impls import FORWARDS, groups, planes, space_to_depth, subpixel
from jaxconv._impls import lax as lax_impl
from jaxconv._impls import matmul as matmul_impl
from jaxconv._impls import shift as shift_impl
from jaxconv._impls._common import (
    computed_once,
    cpuinfo,
    pads_in_layout,
    slices_in_layout,
    split_mesh,
)
from jaxconv._spec import ConvSpec

# Depthwise kernels up to this many taps go through shift-and-add (3-D ones past
# shift's unrolled sum for the value only, `SCANNED_VALUE_MAX_TAPS`); larger ones by FFT
# (but for the 2-D value outside differentiation up to `shift.unroll_max_taps`, and the
# 1-D and 3-D values up to `SCANNED_VALUE_MAX_TAPS`).
SHIFT_MAX_TAPS = 64
# 1-D and 3-D depthwise kernels of more taps than shift unrolls, up to this many per
# spatial rank, take shift's value (its loop over taps, `shift.SCANNED_UNROLL`) and
# FFT's derivatives (see `_choose_cpu`).
SCANNED_VALUE_MAX_TAPS = {1: 96, 3: 343}
# What `choose` returns: the algorithm for the forward value, for the derivative along
# the input (whose transpose is the input gradient) and along the weight (whose
# transpose is the weight gradient).
FORWARD, INPUT_GRADIENT, WEIGHT_GRADIENT = 0, 1, 2
# Dense convolutions with at most this many output positions go through the matmul.
MATMUL_MAX_POSITIONS = 100
# ... and at least this many products per output (input channels times taps), and this
# many times the product's rows (batch times output positions).
MATMUL_MIN_DEPTH = 1024
MATMUL_DEPTH_PER_ROW = 8
# ... and patches of at most this many elements (rows times depth) per output channel
# (see `choose`).
MATMUL_MAX_PATCHES_PER_OUT_CHANNEL = 10_000
# ... with at least this many output channels (with fewer XLA's value is faster) and, for
# the value too (not only the derivatives), at least this many.
MATMUL_MIN_OUT_CHANNELS, MATMUL_VALUE_MIN_OUT_CHANNELS = 128, 256
# Grouped convolutions that neither shift, dense groups nor the groups loop take run the
# value by matmul from this many output positions (2-D; see `choose`).
GROUPED_MATMUL_MIN_POSITIONS = 400
# ... and take their derivatives by FFT (and channels-first the value) with kernels of
# at least this many taps, unstrided, on at least this many output positions per image
# (see `_grouped_large_kernel_by_fft`).
GROUPED_FFT_MIN_TAPS, GROUPED_FFT_MIN_POSITIONS = 49, 100
# Grouped convolutions with at most this many (input x output) channels per group (and
# few products per output, `shift.per_channel`) go through shift-and-add.
SHIFT_MAX_CHANNELS = 64
# What `choose` returns for a grouped convolution run as one dense convolution per group
# (`jaxconv._impls.groups`), each chosen by the dense rules; for at most this many
# groups, as each is one more convolution to compile (3x3 16x16 channels per group,
# forward and training compiled: 14 groups 1.4-2.1 s, 28 groups 2.7-3.7 s, 64 7.4 s).
DENSE_GROUPS, DENSE_GROUPS_MAX_GROUPS = "dense groups", 16
# Shift-and-add layers (see `choose`) of at most DENSE_GROUPS_MAX_GROUPS groups with
# at least this many output channels per group, this many (input x output) channels per
# group and this many rows (batch times output positions) take their derivatives by
# dense groups.
SHIFT_DENSE_DERIVATIVES_MIN_OUT_CHANNELS, SHIFT_DENSE_DERIVATIVES_MIN_CHANNELS = 8, 64
SHIFT_DENSE_DERIVATIVES_MIN_ROWS = 6272
# What `choose` returns for a grouped convolution of more groups: the same dense
# convolutions in a loop over the groups (`groups.loop`, derivatives included), from
# this many rows (batch times output positions).
GROUPS_LOOP, GROUPS_LOOP_MIN_ROWS = "groups loop", 784
# ... derivatives included from batch 2, or at batch 1 with this many (input x output)
# channels per group.
DENSE_GROUPS_MIN_CHANNELS_AT_BATCH_1 = 1024
# ... but 1x1 groups of at most this many input channels (and more input x output
# channels than SHIFT_MAX_CHANNELS) run by shift-and-add, the derivatives by shift and
# matmul (see `_pointwise_groups_by_shift`).
POINTWISE_GROUPS_SHIFT_MAX_IN_CHANNELS = 16
# Grouped 2-D layers of more than DENSE_GROUPS_MAX_GROUPS groups on fewer rows than
# GROUPS_LOOP_MIN_ROWS run their value alone by the groups loop from this many rows, on
# CPUs other than the AVX2-only ones (see `choose`).
GROUPS_LOOP_VALUE_MIN_ROWS = 49
# Dense 1-D and 2-D layers from one input channel with at most this many products per
# input position (taps x output channels) run their value by shift-and-add, and with at
# most the second their derivatives too (see `_single_input_by_shift`; with more, the
# rules' or `matmul`'s, `_single_input_derivatives_by_matmul`).
SINGLE_INPUT_SHIFT_MAX_PRODUCTS, SINGLE_INPUT_SHIFT_DERIVATIVES_MAX_PRODUCTS = 288, 100
# ... in 3-D the value alone, with at most this many.
SINGLE_INPUT_SHIFT_MAX_PRODUCTS_3D = 864
# ... and on CPUs with AVX-512, 2-D values with at most this many, channels-last or
# unstrided (see `_single_input_value_by_shift_wide`).
SINGLE_INPUT_SHIFT_WIDE_MAX_PRODUCTS = 2304
# Dense 2-D layers from 2 to this many input channels, with at most the second's taps
# and the third's multiply-adds per output position, run their value by shift-and-add
# (see `_few_inputs_value_by_shift`).
FEW_INPUTS_SHIFT_MAX_IN_CHANNELS, FEW_INPUTS_SHIFT_MAX_TAPS, FEW_INPUTS_SHIFT_MAX_MACS = 4, 25, 600
# ... and on CPUs with AVX-512 the value of channels-first RGB first layers (2-3 input
# channels, see `_few_inputs_channels_first_value_by_shift`) to at most this many
# output channels.
FEW_INPUTS_SHIFT_CHANNELS_FIRST_MAX_OUT_CHANNELS = 16
# ... and the others from one input channel take `matmul`'s derivatives to at least this
# many output channels, or with at most this many patch elements (see
# `_single_input_derivatives_by_matmul`).
SINGLE_INPUT_MATMUL_MIN_OUT_CHANNELS, SINGLE_INPUT_MATMUL_MAX_PATCHES = 128, 2**19
# ... with at most this many taps (more take seconds to compile).
SINGLE_INPUT_MATMUL_MAX_TAPS = 49
# ... and their value too to that many with at most this many (see
# `_single_input_value_by_matmul`).
SINGLE_INPUT_MATMUL_VALUE_MAX_PATCHES = 2**21
# ... on at least this many rows (batch times output positions).
SINGLE_INPUT_MATMUL_VALUE_MIN_ROWS = 512
# ... and values not differentiated of 2-D channels-last 1x1 layers of at least this many
# groups that widen, or twice as many, XLA's grouped value (see `_pointwise_many_groups`).
POINTWISE_MANY_GROUPS = 16
# ... and 2-D channels-last outputs of at most this many positions take XLA's grouped
# convolution for the value (see `choose`).
DENSE_GROUPS_MIN_POSITIONS_CHANNELS_LAST = 16
# ... and 2-D values not differentiated of fewer FLOPs per group than this, XLA's grouped
# value (see `_small_groups`), channels-first only with at most this many input x output
# channels per group.
DENSE_GROUPS_MIN_GROUP_FLOPS, SMALL_GROUPS_CHANNELS_FIRST_MAX_CHANNELS = 1.5e6, 512
# ... of which those whose groups times the square of their output channels a group is
# at most this, on at least this many rows, by the block-diagonal weight (see
# `_block_diagonal_value`).
BLOCK_DIAGONAL_MAX_GROUPS_OUT_SQUARED, BLOCK_DIAGONAL_MIN_ROWS = 64, 64
# The weight gradient of a 2-D convolution runs by kernel rows (`planes`) only with more
# output channels per group than this: with 16, XLA's own 2-D weight gradient is
# faster (96->16 3x3 @56 batch 8: 13 ms against 25-30 by rows); with 32 they are even
# (128->32 @28: 8.3 ms against 8.7) or rows win (the full bench's transposed 3x3
# stride-2 64->32 @56, whose phases have 32: train 78 ms by rows, 111 without); with
# more, rows win (96->64: 47 ms against 95; 64->64: 23 against 63).
ROWS_MIN_OUT_CHANNELS = 16
# ... and at least this many FLOPs (2 x multiply-adds of the value): below it the rows'
# extra convolutions and sum cost more than they save (3x3 24->64 @14 batch 2, 11
# MFLOP: 0.81-0.97x XLA's 2-D weight gradient; 5x5 48->64 @14, 60 MFLOP: 0.86-0.88x;
# 3x3 64->64 @14 batch 8 or @28 batch 2, 116 MFLOP: 0.91-1.31x; 231 MFLOP: 1.2-2.0x).
ROWS_MIN_FLOPS = 1e8
# ... and, strided, with an input of at most this many elements (see `_rows_lose`).
ROWS_MAX_STRIDED_INPUT_ELEMENTS = 2**21
# ... and, channels-last, with at least this many output rows in the batch.
ROWS_MIN_ROWS_CHANNELS_LAST = 12
# ... but channels-last layers of at least this many (input x output) channels per
# group on maps of at most this many output positions keep XLA's (see `_rows_lose`).
ROWS_WIDE_MIN_CHANNELS, ROWS_WIDE_MAX_POSITIONS = 2**17, 196
# ... and layers to at most this many output channels per group from at least this
# many input channels per group keep XLA's (see `_rows_lose`).
ROWS_NARROW_MAX_OUT_CHANNELS, ROWS_NARROW_MIN_IN_CHANNELS = 32, 160
# ... and at least this many products per output of each row's 1-D convolution (input
# channels per group times kernel width; see `_rows_lose`) ...
ROWS_MIN_ROW_DEPTH = 10
# ... and channels-first at least this many. Found by a random sweep on an AMD EPYC with
# AVX-512 (Zen 5, 2 cores; 3->192 5x5 padding 2 @32 batch 16 channels-first trained at
# 0.64x `lax` in one pass, 0.84-0.89x in reruns). Training with a fixed cotangent, XLA's
# 2-D weight gradient against the rows (padding keeping the size, 11 interleaved runs,
# 2026-12-06, `/tmp/s70/rowsab.py`, `/tmp/s70/rowsab2.py`), channels-first / channels-last:
# 10-15 products per row 1.10-2.30x channels-first on all 10 layers (3->32 5x5 @128
# batch 4 2.30x / 1.27x, 1->64 11x11 @96 batch 4 1.47x / 0.89x, 2->32 7x7 @112 batch 4
# 1.38x / 1.07x, 3->64 5x5 @64 batch 8 1.36x / 1.24x, 3->192 5x5 @32 batch 16 1.30x /
# 1.12x, 3->128 5x5 @32 batch 8 1.29x / 1.06x, 2->64 5x5 @96 batch 4 1.21x / 1.12x,
# 5->64 3x3 @56 batch 8 1.15x / 0.94x, 3->64 5x5 stride 2 @112 batch 8 1.13x / 0.97x,
# 4->64 3x3 @56 batch 8 1.10x / 0.89x), channels-last 0.89-1.27x (kept: mixed); 18-20
# mixed (6->48 3x3 @64 1.01x, 4->64 5x5 @64 1.18x, 4->96 5x5 @56 0.89x); from 21 the
# rows won or tied on four (7->64 3x3 @56 0.91x, 3->128 7x7 @64 0.95x, 3->96 7x7 @56
# 0.96x, 9->64 3x3 0.96x) and lost on one (3->64 7x7 @112 batch 2 1.06x). Also taken by
# the folded weight gradients of `_space_to_depth_weight_gradient` (not measured there).
ROWS_MIN_ROW_DEPTH_CHANNELS_FIRST = 16
# ... but channels-first 3x3 layers from at least this many input channels, at this
# batch or more, on maps of this many output positions per image, keep XLA's on CPUs
# of these vendors with AVX-512 (see `_rows_lose`, `cpu_vendor` and `lax.avx2_only`).
ROWS_MID_MAP_MIN_IN_CHANNELS, ROWS_MID_MAP_MIN_BATCH = 64, 8
ROWS_MID_MAP_POSITIONS = (2500, 8192)
ROWS_MID_MAP_VENDORS = ("AuthenticAMD",)
# ... and channels-first layers to exactly this many output channels per group, from at
# least this many input channels per group, on maps of this many output positions per
# image keep XLA's (see `_rows_lose`).
ROWS_512_OUT_CHANNELS, ROWS_512_MIN_IN_CHANNELS = 512, 160
ROWS_512_POSITIONS = (100, 256)
# The strided 3x3 weight gradients the space-to-depth fold takes, to at least this many
# times their input channels, run in chunks of images (see `_chunked_weight_gradient`).
CHUNKED_WEIGHT_GRADIENT_MIN_WIDENING = 2
# 1-D channels-first layers from few channels run by `matmul`'s product per image with
# at most this many taps (see `choose`): compiled 1->128 stride 4 @16000 batch 8,
# forward and training, against lax's 0.11-0.16 s: 10 taps 0.17 s and 0.31 s, 16 taps
# 0.24 and 0.47, 32 taps 0.35 and 0.53, 80 taps 0.85 and 1.12.
PER_IMAGE_MAX_TAPS = 12
# ... and patches at most this deep (input channels times taps; see `choose`).
PER_IMAGE_MAX_DEPTH = 24
# The input gradient of a dense 2-D convolution runs off YNNPACK (`lax.forward_eigen`)
# for kernels of at least this many taps (see `_run`).
EIGEN_INPUT_GRADIENT_MIN_TAPS = 9
# ... and, unpadded, through `lax.forward_padded`'s row for kernels of at least this many
# taps on inputs of at least this many positions per image (see
# `_unpadded_input_gradient_row`).
UNPADDED_INPUT_GRADIENT_ROW_MIN_TAPS, UNPADDED_INPUT_GRADIENT_ROW_MIN_POSITIONS = 36, 196
# ... or, from at most this many input channels, on inputs of at least this many.
UNPADDED_INPUT_GRADIENT_ROW_FEW_MAX_CHANNELS = 16
UNPADDED_INPUT_GRADIENT_ROW_FEW_MIN_POSITIONS = 784
# The value of a 3-D convolution strided along its planes runs as XLA's 3-D convolution,
# not by 2-D planes, from this many output positions per plane and this many (input x
# output) channels per group (see `_strided_3d_direct`).
STRIDED_3D_MIN_PLANE_POSITIONS, STRIDED_3D_MIN_CHANNELS = 576, 4096
# On smaller planes, from that many channels, with fewer than this many products per
# input element of a plane (output channels times plane taps over the planes' strides),
# short values run by `matmul` (see `_strided_3d_few_products`).
STRIDED_3D_PLANES_MIN_PRODUCTS_PER_ELEMENT = 256
# ... and such layers channels-last with at least this stride along both plane dims run
# as XLA's 3-D convolution (see `_strided_3d_direct`).
STRIDED_3D_FEW_PRODUCTS_CHANNELS_LAST_MIN_STRIDE = 4
# The value also runs as XLA's 3-D convolution, on any planes, from at most this many
# input channels to at least this many output channels per group (see
# `_strided_3d_direct`).
STRIDED_3D_EXPANSION_MAX_IN_CHANNELS, STRIDED_3D_EXPANSION_MIN_OUT_CHANNELS = 32, 256
# ... and a value not differentiated from this many (input x output) channels per group
# rather than `STRIDED_3D_MIN_CHANNELS` (see `_strided_3d_direct`).
STRIDED_3D_EXPANSION_VALUE_MIN_CHANNELS = 2048
# ... but a dense one on at most this many rows (batch x output positions), with
# patches of at least `MATMUL_MIN_DEPTH` products, to at least this many output
# channels, runs its value by `matmul` instead (see `_strided_3d_value_by_matmul`).
STRIDED_3D_MATMUL_VALUE_MAX_ROWS, STRIDED_3D_MATMUL_VALUE_MIN_OUT_CHANNELS = 128, 16
# ... and so does any dense one strided along its planes on small outputs: at most this
# many rows, at most this many output positions an image, patches at least this deep, to
# at least this many channels (see `_strided_3d_value_by_matmul`).
STRIDED_3D_MATMUL_VALUE_SMALL_MAX_ROWS, STRIDED_3D_MATMUL_VALUE_SMALL_MAX_POSITIONS = 448, 64
STRIDED_3D_MATMUL_VALUE_SMALL_MIN_DEPTH, STRIDED_3D_MATMUL_VALUE_SMALL_MIN_OUT_CHANNELS = 768, 96
# A channels-last dense 3-D value not differentiated, strided along every dim and
# undilated, runs by `matmul` from patches this deep, to at least this many channels, with
# at most this many taps (see `_strided_3d_value_alone_by_matmul`).
STRIDED_3D_ALONE_MIN_DEPTH, STRIDED_3D_ALONE_MAX_DEPTH = 128, 2600
STRIDED_3D_ALONE_MIN_OUT_CHANNELS, STRIDED_3D_ALONE_MAX_TAPS = 32, 64
# The weight gradient of a 3-D convolution by 2-D planes stacks the planes
# (`planes.stacked`) from at most this many input channels per group (see
# `_stacked_planes`), and no role stacks them on output planes of fewer than this many
# positions.
STACKED_PLANES_WEIGHT_MAX_IN_CHANNELS = 8
STACKED_PLANES_MIN_PLANE_POSITIONS = 196
# `planes.output_stacked` from planes of this many output positions (to fewer channels;
# to as many, from `STACKED_PLANES_MIN_PLANE_POSITIONS`): see `_output_stacked_planes`.
OUTPUT_STACKED_MIN_PLANE_POSITIONS = 49
# The value of a dense 2-D convolution strided along its height runs as one 1-D
# convolution of stacked rows from this many FLOPs and this many products per output
# position (input channels times taps times output channels), channels-last on inputs
# at most this wide (see `_strided_rows_stacked`).
STRIDED_ROWS_MIN_FLOPS = 1.5e8
STRIDED_ROWS_MIN_PRODUCTS_PER_POSITION = 8192
# ... and from this many products per stacked input element (output channels times
# kernel width over the stride along the width).
STRIDED_ROWS_MIN_PRODUCTS_PER_STACKED_ELEMENT = 128
STRIDED_ROWS_MAX_WIDTH_CHANNELS_LAST = 64
# ... and, to no more channels than it takes, from at most this many.
STRIDED_ROWS_MAX_IN_CHANNELS_NOT_WIDENING = 64
# The input gradient of a strided convolution from few input channels runs as the
# transposed convolution it is, its phases stacked, to at most this many output channels
# (see `_strided_input_gradient_stacked`) ...
STRIDED_INPUT_GRADIENT_MAX_OUT_CHANNELS = 32
# ... or, from inputs of at least this many elements, to at most this many with phases of
# at least this many taps.
STRIDED_INPUT_GRADIENT_LARGE_MIN_INPUT = 2**19
STRIDED_INPUT_GRADIENT_LARGE_MAX_OUT_CHANNELS, STRIDED_INPUT_GRADIENT_MIN_PHASE_TAPS = 64, 16
# ... or with smaller phases from at least this many input channels (2026-12-07).
STRIDED_INPUT_GRADIENT_SMALL_PHASES_MIN_IN_CHANNELS = 8
# ... and, in 2-D from many input channels, to at most as many output channels, its
# phases apart, from inputs of at least this many elements (see
# `_strided_input_gradient_phases`).
STRIDED_INPUT_GRADIENT_PHASES_MIN_INPUT = 2**21
# ... or of at least this many with kernels of at least this many taps.
STRIDED_INPUT_GRADIENT_PHASES_MIN_INPUT_LARGE_KERNEL = 2**19
STRIDED_INPUT_GRADIENT_PHASES_LARGE_KERNEL_TAPS = 16
# ... and to up to this many times as many channels where every kernel dim is at
# least twice its stride less one, with AVX-512 (see `_strided_input_gradient_phases`).
STRIDED_INPUT_GRADIENT_PHASES_MAX_WIDENING = 2
# ... and, with kernels at least this tall, from at most this many.
STRIDED_ROWS_TALL_KERNEL, STRIDED_ROWS_TALL_MAX_IN_CHANNELS = 7, 32
# The value of a transposed convolution to at most this many channels runs whole, not
# by sub-pixel phases (see `_transposed_value_whole`).
TRANSPOSED_WHOLE_MAX_OUT_CHANNELS = 8
# ... in 2-D also where the phases stack into one convolution, to at most this many
# output channels from at least this many input channels and this many times the
# output channels (see `_transposed_value_whole`).
TRANSPOSED_WHOLE_MAX_OUT_CHANNELS_STACKED = 16
# The input gradient of a 2-D transposed convolution to at most this many channels is
# XLA's whole where its phases are one convolution each (see
# `_transposed_input_gradient_whole`).
TRANSPOSED_INPUT_GRADIENT_WHOLE_MAX_OUT_CHANNELS = 16
TRANSPOSED_WHOLE_MIN_IN_CHANNELS_STACKED, TRANSPOSED_WHOLE_MIN_CHANNEL_RATIO_STACKED = 128, 16
# ... and, outside differentiation, from at least this many times the output channels
# on inputs of at most this many positions over the batch (see
# `_transposed_value_whole`).
TRANSPOSED_WHOLE_MIN_CHANNEL_RATIO_SMALL, TRANSPOSED_WHOLE_MAX_POSITIONS_SMALL = 8, 400
# ... but in 2-D, where each phase is a convolution of its own, only from at least this
# many input channels on inputs of at most this many positions an image (see
# `_transposed_value_whole`).
TRANSPOSED_WHOLE_MIN_IN_CHANNELS, TRANSPOSED_WHOLE_MAX_POSITIONS = 32, 64 * 64
# ... and channels-last, where the phases share no window (`subpixel.shifted_window`),
# on inputs of any size from at least this many input channels and this many times the
# output channels (see `_transposed_value_whole`).
TRANSPOSED_WHOLE_WIDE_MIN_IN_CHANNELS, TRANSPOSED_WHOLE_WIDE_MIN_CHANNEL_RATIO = 48, 8
# ... and, outside differentiation, at strides from this many to this many with kernels
# at most one longer than the stride, to at most this many channels from at least this
# many times as many and at least `TRANSPOSED_WHOLE_MIN_IN_CHANNELS` (see
# `_short_phases`).
TRANSPOSED_WHOLE_SHORT_MIN_STRIDE, TRANSPOSED_WHOLE_SHORT_MAX_STRIDE = 3, 4
TRANSPOSED_WHOLE_SHORT_MAX_OUT_CHANNELS, TRANSPOSED_WHOLE_SHORT_MIN_CHANNEL_RATIO = 128, 4
# ... and at stride 2 with kernels of at most this many taps a dim, from a batch of at
# least this many and at least this many times the output channels.
TRANSPOSED_WHOLE_STRIDE_2_MAX_KERNEL, TRANSPOSED_WHOLE_STRIDE_2_MIN_BATCH = 5, 4
TRANSPOSED_WHOLE_STRIDE_2_MIN_CHANNEL_RATIO = 8
# Dense 2-D convolutions from at most this many input channels (RGB and grey first
# layers) with kernels of at most this many taps run by `matmul` (see `choose`): value
# and derivatives channels-first; channels-last, the value alone by `shift` with this
# many output channels (inclusive), where XLA's convolution falls off a cliff.
FEW_INPUTS_MAX_CHANNELS, FEW_INPUTS_MAX_TAPS = 3, 16
# `_few_inputs_narrow_by_xla`: to at most this many output channels, with this many taps
# or on at most this many output rows.
FEW_INPUTS_NARROW_MAX_OUT_CHANNELS = 16
FEW_INPUTS_NARROW_MIN_TAPS, FEW_INPUTS_NARROW_MAX_ROWS = 16, 1600
FEW_INPUTS_CLIFF_OUT_CHANNELS = (17, 35)
# `_few_inputs_cliff`: not on at most this many output rows (batch x positions).
FEW_INPUTS_CLIFF_MAX_SMALL_ROWS = 2048
# ... and unstrided ones from more of them, up to this many, to at least this many output
# channels with kernels of at most this many taps: `matmul`'s derivatives, and its value
# too channels-first and undilated (see `choose`).
FEW_INPUTS_WIDE_MAX_IN_CHANNELS, FEW_INPUTS_WIDE_MIN_OUT_CHANNELS = 16, 96
FEW_INPUTS_WIDE_MAX_TAPS = 9
# ... the value on maps of at least this many output positions only (see
# `_few_inputs_wide`).
FEW_INPUTS_WIDE_VALUE_MIN_POSITIONS = 101
# ... and the weight gradients of larger kernels from at most this many input channels
# and of at least this many FLOPs by one product of patches per image (see
# `_few_inputs_weight_gradient`).
FEW_INPUTS_WEIGHT_GRADIENT_MAX_CHANNELS, FEW_INPUTS_WEIGHT_GRADIENT_MIN_FLOPS = 3, 2e8
# Dense convolutions whose kernel has more taps than the input has positions along an
# undilated dim run by `matmul`, value and derivatives, when they have at least this
# many input or output channels (see `kernel_past_input`).
KERNEL_PAST_INPUT_MIN_CHANNELS = 32
# ... and likewise the derivatives of those whose kernel has more taps than the output
# has positions, and the value channels-first from and to at least this many channels
# (see `kernel_past_output`).
KERNEL_PAST_OUTPUT_VALUE_MIN_CHANNELS = 64
# ... and channels-last in 2-D unpadded, on at least this many rows (batch x output
# positions; see `_kernel_past_output_unpadded_value`).
KERNEL_PAST_OUTPUT_UNPADDED_VALUE_MIN_ROWS = 4
# ... and along dilated dims, the dilated kernel's window, on outputs of at most this
# many positions (see `choose`).
KERNEL_PAST_OUTPUT_DILATED_MAX_POSITIONS = 64
# ... but on CPUs with AVX2 and no AVX-512 (`lax.avx2_only`) only with at least this
# many input and output channels on at most this many rows (batch x output positions).
# There the dilated rule mostly lost (AMD EPYC, 2026-12-05, training with a fixed
# cotangent, the rule against the rules without it, 9-11 interleaved runs,
# `/tmp/s54/kpo.py`, 3x3 padded "same" unless said, channels-first / channels-last):
# with fewer channels 0.38-0.93x (32->32 5x5 dilation 2 @7 batch 8 0.38x / 0.39x, batch
# 2 0.53x; 64x64 dilation 4 @6 batch 8 0.71x / 0.56x, batch 4 0.83x / 0.70x; 64x64 5x5
# dilation 2 @7 batch 8 0.67x / 0.68x; 64->128 dilation 6 @8 batch 8 0.93x / 1.08x;
# 64x64 @8 dilation 6 batch 2 0.79x); with 96-128 on 200 rows and more 0.81-1.05x
# (96->128 dilation 3 @6 batch 16 0.93x / 1.05x; 128x128 dilation 3 @6 batch 8 0.83x /
# 0.79x; 5x5 dilation 2 @5 batch 8 1.03x / 0.81x; dilation 6 @8 batch 8 0.90x / 0.92x;
# 256x256 dilation 4 @7 batch 8 1.03x / 1.07x). On at most 144 rows from 128 channels
# it won or tied: 128x128 dilation 6 padding 1 @16 batch 1 1.32x / 2.15x; 5x5 256x256
# dilation 2 padding 4 @3 batch 16 - / 1.79x; 512x512 dilation 6 @8 batch 2 - / 1.48x;
# 256x256 dilation 4 @6 batch 4 1.13x / 1.09x; 128x128 dilation 3 @6 batch 4 0.96x /
# 1.02x (- where the rules without it chose the same). The rule's wins above were
# measured on an Intel Xeon with AVX-512.
KERNEL_PAST_OUTPUT_DILATED_AVX2_MAX_ROWS = 160
KERNEL_PAST_OUTPUT_DILATED_AVX2_MIN_CHANNELS = 128
# ... and in 2-D on other CPUs on at most this many rows (batch x output positions):
# there the dilated rule lost on more rows to XLA's derivatives and `_input_taps`' (Zen
# 5 EPYC, 2026-12-07, training, the rule against without it, 7 interleaved runs, 24
# random layers, 3x3-5x5 dilation 2-6 "same" @4-8, 64-512 -> 96-512 channels, batch
# 1-32, `/tmp/s75/kpos.py 1 24 7`): on 144-768 rows 0.23-1.14x, 12 of 14 under 0.95x
# (5x5 dilation 2 256->96 @5 batch 16 channels-last 0.23x, 5x5 dilation 3 512->128 @8
# batch 8 0.27x; 3x3 dilation 3 64->128 @6 batch 4 channels-last, which `_input_taps`
# leaves to XLA, 0.63x); on 16-128 rows 0.73-2.07x, geometric mean 1.12x. The bound
# against none on 20 fresh layers (`/tmp/s75/kpos2.py 2 20 7`): 1.28x (0.91-6.5x; 5x5
# dilation 3 128->96 @7 batch 16 channels-first 6.5x, 3x3 dilation 4 512->256 @7 batch
# 16 3.3x), the layers on at most 128 rows unchanged (0.91-1.07x, noise); from 8-48
# channels on 144-2048 rows 1.06x over 16 (0.82-1.45x, `kpos3.py 3 16 7`). Not in 1-D,
# where the rule still won on more rows (k9 dilation 4 128->256 @32 batch 8
# channels-first 2.3x, k5 dilation 4 256 @16 batch 16 2.1x; `kpos1d.py`), nor in 3-D
# (not measured). AVX2-only CPUs keep their bound above (measured there before
# `_input_taps`).
KERNEL_PAST_OUTPUT_DILATED_MAX_ROWS = 128
# ... and on every CPU only to at least this many output channels. With AVX-512 too the
# dilated rule lost to fewer (Intel Xeon, 2026-12-06, found by a random sweep: 8->128
# 7x7 dilation 2 padding 6 @7 batch 2 channels-first trained 0.67x `lax`, the weight
# gradient by patches 0.40 ms against XLA's 0.17). Training with a fixed cotangent,
# the rules without it against with it, 9 interleaved runs, `/tmp/s64/kpod4.py` to
# `kpod6.py`, channels-first and channels-last, 7x7 dilation 2 padding 6 @7 batch 2,
# 3x3 dilation 3 padding 3 @6 batch 8, 5x5 dilation 2 padding 4 @5 batch 4, 3x3
# dilation 2 padding 2 @5 batch 4 and 3x3 dilation 4 padding 4 @8 batch 8: to 64
# channels from 8-512, 56 rows, geometric mean 1.28x, 36 rows over 1.1x, two under 0.9x
# (0.85x); to 32 and 48 channels 18 rows 0.93-2.48x (32x32 1.80-2.48x). To 96 channels
# 16 rows, 1.01x (0.75-1.28x); to 128, 32 rows, 1.07x (0.70-1.50x); to 256, 32 rows,
# 1.00x (0.67-1.65x): there the rule stays.
KERNEL_PAST_OUTPUT_DILATED_MIN_OUT_CHANNELS = 96
# ... and only to at least this many output channels: with fewer the derivatives by
# patches mostly lost (training with a fixed cotangent, then through a ReLU, with the
# rule against without it, batch 16 unless said, 9 interleaved runs, channels-first /
# channels-last): 512->1 4x4 @4 (DCGAN's last discriminator layer) 0.91x, 0.74x /
# 0.67x, 0.66x; 256->1 batch 64 0.78x, 0.85x / 0.67x, 0.68x; 128->8 5x5 @5 1.15x, 1.13x
# / 0.77x, 0.70x; 512->16 7x7 @7 0.85x, 0.74x / 0.96x, 0.80x. To 32 and more they won:
# 512->32 4x4 @4 1.71x, 2.04x / 1.52x, 1.45x; 256->32 7x7 @7 1.44x, 1.36x / 1.58x,
# 1.49x; 32->64 7x7 @8 batch 8 1.23x, 2.03x / 1.50x, 1.45x; 16->128 7x7 @8 1.78x,
# 1.84x / 1.94x, 1.97x; 512->64 4x4 @4 3.7x, 3.9x / 1.64x, 1.49x.
KERNEL_PAST_OUTPUT_MIN_OUT_CHANNELS = 32
# ... but on AMD CPUs with AVX-512 (Zen 4 and 5; `KERNEL_PAST_OUTPUT_FEW_VENDORS`) from
# this many. There XLA's input gradient of such layers to 8-31 channels ran 3-10x
# slower than the patches' (found by a random sweep on a Zen 5 EPYC, 2026-12-07: 5x5
# valid 512->16 @8 batch 4 channels-last trained in 8.6 ms, its input gradient 7.6 ms,
# 0.72 by `matmul`). The derivatives by patches against XLA's, training, 7 interleaved
# runs, random layers (`/tmp/s74/kpo.py 1 20 7` from 1-24 channels, `kpo.py 2 20 7`
# from 6-31): to 8-31 channels 0.94-9.2x on 28 rows (7x7 128->31 @9 batch 8 9.2x,
# 256->24 @12 batch 1 6.1x, 256->16 @7 batch 4 4.5x, 5x5 512->8 @8 batch 2 4.1x, 256->24
# @7 batch 16 3.6x); to 6 channels 0.74-0.94x, to 3-4 0.24-1.27x (256->4 @8 batch 32
# 0.24x).
KERNEL_PAST_OUTPUT_MIN_OUT_CHANNELS_FEW, KERNEL_PAST_OUTPUT_FEW_VENDORS = 8, ("AuthenticAMD",)
# Dense channels-last 2-D layers both strided and dilated take `matmul`'s derivatives
# with at most this many patch elements (whole batch; see
# `_strided_dilated_derivatives_by_matmul`).
STRIDED_DILATED_MAX_PATCHES = 1 << 22
# ... but their input gradient XLA's where they narrow: to at most this many output
# channels from at least this many input channels, and this many times the outputs
# (see `_strided_dilated_narrowing`).
STRIDED_DILATED_NARROWING_MAX_OUT_CHANNELS, STRIDED_DILATED_NARROWING_MIN_IN_CHANNELS = 16, 32
STRIDED_DILATED_NARROWING_MIN_RATIO = 4
# Dense channels-last 2-D layers whose kernel is shorter than the stride along both dims
# take `matmul`'s derivatives to at least this many channels (`_kernel_within_stride`).
KERNEL_WITHIN_STRIDE_MIN_OUT_CHANNELS = 8
# Channels-last 1x1 layers on few rows (batch x output positions) take the weight
# gradient by `matmul.pointwise_weight_gradient` to as many or fewer channels too (see
# `_pointwise_few_rows`): at most this many rows, from at least this many input
# channels to at least this many output channels.
POINTWISE_FEW_ROWS_MAX_ROWS = 128
POINTWISE_FEW_ROWS_MIN_IN_CHANNELS = 128
POINTWISE_FEW_ROWS_MIN_OUT_CHANNELS = 64


def backend_name() -> str:
    """The backend `choose` takes rules for: JAX's default backend, but ``"cuda"`` for a
    GPU on CUDA (``"gpu"`` stays any other GPU's, such as ROCm's)."""
    name = jax.default_backend()
    if name == "gpu" and "cuda" in jax_backend.get_backend().platform_version.lower():
        return "cuda"
    return name


def choose(
    spec: ConvSpec,
    x_shape,
    w_shape,
    dtype,
    backend: str,
    nested: bool = False,
    mesh: bool = False,
) -> tuple[str, str, str]:
    """The algorithms ``impl="auto"`` runs for this canonical call on ``backend``: for
    the value (`FORWARD`), the derivative along the input (`INPUT_GRADIENT`) and the
    derivative along the weight (`WEIGHT_GRADIENT`). ``nested`` for a convolution
    `_run` splits a layer into (a transposed layer's sub-pixel phases, a 3-D layer's
    2-D planes, a weight gradient's kernel rows, a group's part), which the rules
    measured on whole layers only leave alone. ``mesh``: the operands lie on a mesh of
    several devices (`choose_for`), where `_single_input_derivatives_by_matmul` stays
    off: channels-last 1->16 5x5 stride 2 padding 2 @32x40 batch 8 on an `Explicit`
    mesh of 8 split along the width trained to a wrong weight gradient with it
    (relative error 1.0; XLA's own right), `tests/test_sharding.py`, jax 0.10.2."""
    if backend == "cuda":
        return _choose_cuda(spec, x_shape, w_shape, dtype)
    if backend != "cpu":
        return ("lax",) * 3
    few_inputs_narrow = not nested and _few_inputs_narrow_by_xla(spec, x_shape, w_shape)
    rules = _choose_cpu(
        spec, x_shape, w_shape, dtype, few_inputs_by_matmul=not few_inputs_narrow, nested=nested
    )
    if (
        not nested
        and rules[FORWARD] == "lax"
        and _strided_3d_value_by_matmul(spec, x_shape, w_shape, dtype)
    ):
        rules = ("matmul", *rules[1:])
    if _few_inputs_wide(spec, w_shape):
        undilated = all(d == 1 for d in spec.rhs_dilation)
        positions = math.prod(spec.out_spatial(x_shape[2:], w_shape[2:]))
        by_patches = (
            not spec.channels_last
            and undilated
            and positions >= FEW_INPUTS_WIDE_VALUE_MIN_POSITIONS
        )
        rules = ("matmul",) * 3 if by_patches else (rules[FORWARD], "matmul", "matmul")
    if _single_input_by_shift(spec, w_shape):
        few = _single_input_shift_derivatives(spec, w_shape)
        rules = ("shift",) * 3 if few else ("shift", *rules[1:])
    if (
        not nested
        and rules[FORWARD] == "lax"
        and jnp.dtype(dtype) == jnp.float32
        and _few_inputs_value_by_shift(spec, w_shape)
        and not _output_taps(spec, x_shape, w_shape, FORWARD)
    ):
        rules = ("shift", *rules[1:])
    if not nested and not mesh and _single_input_derivatives_by_matmul(spec, x_shape, w_shape):
        value = _single_input_value_by_matmul(spec, x_shape, w_shape)
        weight = "lax" if _single_input_weight_gradient_by_xla(spec) else "matmul"
        rules = ("matmul" if value else rules[FORWARD], "matmul", weight)
    if (
        not nested
        and rules[FORWARD] != "matmul"
        and _single_input_value_by_shift_wide(spec, w_shape)
    ):
        rules = ("shift", *rules[1:])
    if not nested and _kernel_within_stride(spec, w_shape):
        rules = (rules[FORWARD], "matmul", "matmul")
    elif not nested and _strided_dilated_derivatives_by_matmul(spec, x_shape, w_shape):
        # (`kernel_past_output` below still gives `matmul`'s input gradient to such a
        # layer whose kernel runs past its output: XLA's slow path there.)
        narrowing = _strided_dilated_narrowing(w_shape)
        rules = (rules[FORWARD], "lax" if narrowing else "matmul", "matmul")
    if (
        not nested
        and rules == ("lax",) * 3
        and _few_channels_large_window_by_fft(spec, x_shape, w_shape)
    ):
        return ("fft",) * 3
    if kernel_past_output(spec, x_shape, w_shape):
        # A dense kernel with more taps than the output has positions along an undilated dim
        # (valid 7x7 on 8x8 maps, 5x5 stride 2 on 11x11, VGG's 7x7 on 7x7): the input
        # gradient is a transposed convolution whose kernel runs past its input (the output
        # gradient), where XLA's CPU convolution takes its slow path (see
        # `kernel_past_input`: 384->128 7x7 @8 batch 8, 46 ms for its 154 MFLOP, against 4.8
        # ms by matmul); the patches' product does not. Both derivatives by matmul, against
        # the rules before (which gave XLA's input gradient there channels-last, and in 1-D
        # and 3-D channels-first), training with a fixed cotangent and through a ReLU,
        # channels-last / channels-first, batch 8 unless said, 7-11 interleaved runs, Intel
        # Xeon, 2026-12-02 (`/tmp/s31/kpo3.py`): 384->128 7x7 @8 5.1x, 4.9x / 2.1x, 2.0x;
        # 256->128 7x7 @9 6.3x, 7.3x / 2.0x, 1.4x; 64x64 7x7 @12 9.6-10.2x, 7.8-8.0x /
        # 5.0-6.9x, 5.6-6.8x; 128x128 9x9 @12 batch 4 7.2x, 7.3x / 1.8x, 1.6x; 7x7 stride 2
        # 96->128 @13 5.8x, 6.1x / 1.25x, 1.1x; 5x5 stride 2 256x256 @11 batch 4 9.1x, 7.2x
        # / 1.0x, 0.9x; 5x5 stride 2 64x64 @9 padding 1 3.2x, 3.6-3.8x / 3.3-4.5x, 2.9x;
        # 128x128 5x5 @6 padding 1 7.5x, 7.8x / 1.2x, 1.1x; VGG's 7x7 512->1024 @7 batch 1
        # 2.3x, 1.8x / 1.05x, 1.0x; 512x512 @7 batch 2 1.35x, 1.2x / 0.97x, 0.97x; 1-D
        # 256x256 k9 @10 3.2x, 3.2x / 1.0x, 1.1x; k31 128@40 9.8x, 9.5x / 1.4x, 1.2x; 3-D
        # 64x64 5x5x5 @6 batch 2 1.8x, 1.9x / 2.4x, 2.1x; 3x3x3 @4 1.7x, 1.7x / 3.3x, 2.2x;
        # small layers (0.3-2 ms) 1.4-3.8x / 1.3-7.3x; 256x256 3x3 @4 5.0x, 4.7x / 1.0x,
        # 0.8x (its rules were matmul's already channels-first); past along one dim only,
        # 64x64 3x3 @3x200 1.55x, 1.55x / 1.16x, 1.24x, 128x128 5x5 @5x64 batch 2 2.2x, 2.0x
        # / 1.2x, 0.99x. The value channels-first by matmul too where its patches are small
        # (as `MATMUL_MAX_PATCHES_PER_OUT_CHANNEL` below) and it has at least
        # `KERNEL_PAST_OUTPUT_VALUE_MIN_CHANNELS` input and output channels, against the
        # rules before: 384->128 7x7 @8 4.4x, 256->128 @9 3.2x, 128x128 9x9 @12 batch 4
        # 2.8x, 5x5 @5 2.1x, 3-D 5x5x5 @6 1.8x, 7x7 stride 2 96->128 @13 1.2x; layers of
        # 0.15-0.6 ms (21 runs): 64x64 7x7 @7 batch 16 1.6x, 128x128 3x3 @4 batch 1 1.8x,
        # 64x64 3x3 @4 1.3x, 5x5 stride 2 @9 0.95x; but with 32 channels 5x5 @6 0.68x and
        # 0.96x at batch 8 and 2 (0.86x and 0.77x lax). Channels-last, the value by matmul
        # in 3-D (against lax, 7-11 interleaved runs; the rules' 3-D planes ran 0.62-2.1x):
        # 96->384 3x3x3 stride 2 @5 1.69x, 64->128 @6 batch 4 1.51x, 256x256 @4 1.70x, 64x64
        # @4 batch 2 1.40x, 5x5x5 @6 1.77x, 128x128 5x5x5 stride 2 @7 batch 2 1.97x, 7x7x7
        # 64@9 batch 1 2.41x; in 2-D and 1-D it stays the rules' (matmul 0.61-3.2x lax,
        # 0.67-0.79x in 1-D), but for unpadded 2-D values on 4 or more rows since
        # 2026-12-07 (`_kernel_past_output_unpadded_value`).
        # Dilated kernels whose window runs past a small output likewise (3x3 dilation 2-6
        # and 5x5 dilation 2, 64-512 channels, maps of 2-16, batch 1-16, training with a
        # fixed cotangent and through a ReLU against the rules before, 7-21 interleaved
        # runs, `/tmp/s31/kpod4.py`): channels-last 1.01-2.6x (96->128 @6 batch 16 2.1x,
        # 2.4x; 256 @9 dilation 4 2.6x, 2.4x; 128 @16 dilation 6 padding 1 2.3x, 1.9x; 5x5
        # 256 @3 padding 4 batch 16 1.3x, 1.7x) but 0.88-0.94x once each on three rows of
        # 0.2-2.5 ms (two of them 1.08-1.09x in reruns); channels-first 1.0-2.6x where the
        # rules changed (96->128 @6 2.6x, 2.3x; 128 @5 1.7x, 1.7x), once 0.83x through a
        # ReLU (0.98x in a 21-run rerun). Not on larger outputs: ASPP's 3x3 dilation 12-18
        # on 33x33 maps trained 0.41-0.53x by matmul; nor to fewer than 96 channels
        # (`KERNEL_PAST_OUTPUT_DILATED_MIN_OUT_CHANNELS`). Since 2026-12-07, in 2-D only
        # on at most `KERNEL_PAST_OUTPUT_DILATED_MAX_ROWS` rows (on a Zen 5 EPYC it lost
        # on more to XLA's derivatives and `_input_taps`').
        patches = _patch_elements(spec, x_shape, w_shape)  # (dense: C_in x taps per row)
        small = patches <= MATMUL_MAX_PATCHES_PER_OUT_CHANNEL * w_shape[0]
        deep = min(w_shape[:2]) >= KERNEL_PAST_OUTPUT_VALUE_MIN_CHANNELS
        by_patches = (
            small
            and deep
            and (
                not spec.channels_last
                or spec.ndim == 3
                or _kernel_past_output_unpadded_value(spec, x_shape, w_shape)
            )
        )
        value = "matmul" if by_patches else rules[FORWARD]
        return (value, "matmul", "matmul")
    return rules


# On an NVIDIA GPU, 2-D depthwise convolutions (one channel per group, no channel
# multiplier, stride 1, no dilation) whose kernel is at least this wide in each dim, on
# at least `CUDA_FFT_MIN_INPUT` input elements, take their derivatives by FFT, and from
# `CUDA_FFT_VALUE_MIN_KERNEL` their value too; everything else runs XLA's (cuDNN's)
# convolution. XLA's derivatives of a depthwise convolution slow sharply past 3x3 on the
# GPU (training, batch 64: 3x3 144@56 0.28-0.52 ms, 7x7 96@56 8.1-8.6 ms, 13x13 128@56
# 36 ms; PyTorch's 7x7 2.8 ms), while FFT's cost hardly grows with the kernel. Measured
# on an NVIDIA H200 (jax 0.11.2, CUDA 13, float32, batch 64, runs of 0.7-37 ms of calls,
# 2026-12-04, `python -m bench --suite full --mode fwd,train --impl auto,fft --cases
# depthwise --max-seconds 1.2 --repeat 5`, `bench/results/gpu-depthwise/`), FFT against
# XLA, channels-first / channels-last: 7x7 96@56 training 5.5x / 5.7x, forward 0.81x /
# 0.55x (so the value stays XLA's there, outside differentiation); 13x13 128@56 forward
# 13x / 12x, training 17x / 16x; 31x31 128@28 forward 24x / 23x, training 29x / 29x; 3x3
# 144@56 forward 0.25x / 0.11x, training 0.24x / 0.12x. With this rule `auto` ran 4.2x
# XLA forward and 7.0x in training over those 8 cases. Kernels between 3x3 and 7x7,
# smaller inputs, other dims and dtypes were not measured, and stay XLA's. The rule sees
# the shapes as traced: under `jax.vmap` of a per-example function the input is one
# example's, below `CUDA_FFT_MIN_INPUT`, and XLA's convolution runs; so it does on a
# mesh of several devices (`choose_for`). Transposed depthwise layers of stride 1 arrive
# as the same convolutions and are included.
CUDA_FFT_GRADIENT_MIN_KERNEL = 7
CUDA_FFT_VALUE_MIN_KERNEL = 13
# The smallest input measured (31x31 128@28 batch 64, 6.4M elements).
CUDA_FFT_MIN_INPUT = 64 * 128 * 28 * 28


def _choose_cuda(spec: ConvSpec, x_shape, w_shape, dtype) -> tuple[str, str, str]:
    """`choose` on an NVIDIA GPU: see `CUDA_FFT_GRADIENT_MIN_KERNEL`."""
    kernel = min(w_shape[2:])
    if (
        spec.ndim == 2
        and jnp.dtype(dtype) == jnp.float32
        and spec.groups == x_shape[1] == w_shape[0] > 1
        and w_shape[1] == 1
        and spec.stride == spec.rhs_dilation == spec.lhs_dilation == (1, 1)
        and kernel >= CUDA_FFT_GRADIENT_MIN_KERNEL
        and math.prod(x_shape) >= CUDA_FFT_MIN_INPUT
    ):
        value = "fft" if kernel >= CUDA_FFT_VALUE_MIN_KERNEL else "lax"
        return (value, "fft", "fft")
    return ("lax",) * 3


def _choose_cpu(
    spec: ConvSpec,
    x_shape,
    w_shape,
    dtype,
    few_inputs_by_matmul: bool = True,
    nested: bool = False,
) -> tuple[str, str, str]:
    """`choose` on the CPU, but for `kernel_past_output`; RGB and grey first layers by
    `matmul` only with ``few_inputs_by_matmul`` (see `_few_inputs_narrow_by_xla`);
    ``nested`` as in `choose`."""
    del dtype  # the rules were measured in float32; nothing else is known better
    c_in_g = w_shape[1]
    taps = math.prod(w_shape[2:])
    if spec.groups > 1 and c_in_g == 1:
        # Depthwise (any channel multiplier). XLA's grouped convolution does one tiny
        # convolution per channel: depthwise 3x3 144@56 fwd lax 0.6 GFLOP/s, shift 51x
        # lax; 7x7 96@56 shift 37x. Large kernels: shift's compile time grows with the
        # taps (31x31 takes minutes) while FFT's does not, and FFT is 4x lax at 7x7.
        scanned = shift_impl.unroll_max_taps(spec.ndim, spec.channels_last) < taps
        if scanned and taps <= SCANNED_VALUE_MAX_TAPS.get(spec.ndim, 0):
            # Beyond shift's unrolled sum in 1-D and 3-D: its value by the loop over
            # taps, eight taps a step (`shift.SCANNED_UNROLL`), the derivatives by FFT,
            # whose training then takes FFT's value too (`_forward_jvp`). Against FFT
            # (2026-12-03, one malloc arena, 5-7 interleaved runs, `/tmp/s39/valcmp.py`,
            # `fftt.py`), forward: 64@8x28x28 batch 2 4x4x4 3.5x channels-first, 3x3x5
            # 2.1x channels-last, 5x5x5 1.4-2.5x, 3x5x5 2.3-3.6x, 7x7x7 1.7x; 96@8x56x56
            # batch 1 3x7x7 channels-last 2.3x; 32@16x16x16 batch 4 4x4x4 2.4x; 1-D
            # 128@1000 batch 8 k65 1.34-1.75x, k81 1.25-1.82x, 256@2000 batch 4 k96
            # 1.27-1.75x, 64@500 batch 16 k65 1.81x (k129 0.92-1.11x, k255 0.89x, so
            # not there). Training by FFT against shift's scanned derivatives (3-D,
            # 28-64 taps, which shift took whole before): 4x4x4 30 ms against 190,
            # 3x3x5 26 against 190, 32@16 4x4x4 20 against 127, compiled in 0.5-0.6 s
            # against 1.4-2.4 (0.97 s before `shift.SCANNED_UNROLL`, 180 and 124 ms).
            return ("shift", "fft", "fft")
        if taps <= SHIFT_MAX_TAPS:
            if not _shift_input_gradient_per_channel(spec, w_shape):
                # A channel multiplier whose input gradient (a convolution from
                # `multiplier` channels a group to one) has more products per output than
                # shift sums one input channel at a time (`shift.PER_CHANNEL_MAX_TERMS`):
                # there shift's sum over the group's channels is slow, so matmul's input
                # gradient. The input gradient alone, shift's against matmul's (3-5
                # interleaved runs, AMD EPYC, 2026-12-05, `/tmp/s54/roles2.py`,
                # channels-first / channels-last, batch 4, 3x3 padded "same" unless
                # said): 8 groups x 12 @56 22 / 29 ms against 1.3 / 2.7; 8 x 16 @56 30 / 27
                # against 1.8 / 1.9; 32 x 16 @56 111 / 132 against 11 / 14; 4 x 16 @56 5.8
                # / 4.8 against 1.0 / 1.0; 5x5 32 x 8 @56 189 / 252 against 33 / 21; 3-D
                # 3x3x3 32 x 2 @8x28x28 batch 2 52 / 135 against 34 / 37, 32 x 4 100 / 193
                # against 40 / 43, 8 x 16 109 / 106 against 3.3 / 9.5; 4 x 64 dilation 2
                # @16^3 batch 1 79 / 63 against 1.3 / 0.8. Within those products shift's
                # stays: 3x3 32 x 8 @56 2.4 / 4.6 against 7.3 / 6.2, 16 x 8 @28 0.5 / 0.8
                # against 0.8 / 0.8; 5x5 32 x 4 2.4 / 5.0 against 16 / 25; 3-D 1x3x3
                # 32 x 2 0.9 / 0.6 against 7.7 / 6.1.
                if _shift_derivatives_by_fft(spec, x_shape, w_shape, nested):
                    return ("shift", "fft", "fft")
                return ("shift", "matmul", "shift")
            return ("shift",) * 3
        if spec.ndim == 2 and taps <= shift_impl.unroll_max_taps(2, channels_last=False):
            # 2-D up to 15x15: shift's unrolled value is the fastest (batch 4-8, maps
            # 14-56, both layouts, forward: 9x9 1.2-3.6x fft, 11x11 1.2-2.6x;
            # channels-first 13x13 1.7-4.5x, 15x15 2.0x, see
            # `shift.UNROLL_MAX_TAPS_CHANNELS_FIRST`; channels-last from 12x12 by the
            # channels-first sum, `shift._channels_first`: 12x12 to 15x15, 32-512
            # channels @7-112, batch 1-16, 1.8-5.3x fft, 9 interleaved runs), and under
            # differentiation FFT's (see `_forward_jvp`), whose derivatives win.
            return ("shift", "fft", "fft")
        return ("fft",) * 3
    if matmul_impl.single_pixel(x_shape):
        # One input pixel (a transposed convolution from a 1x1 map: DCGAN's first
        # generator layer): one product of the channels with the kernel gathered at the
        # taps each output meets (`matmul._single_pixel`).
        return ("matmul",) * 3
    if spec.groups > 1:
        c_out_g = w_shape[0] // spec.groups
        by_shift = (
            shift_impl.per_channel(w_shape, spec.ndim) and c_in_g * c_out_g <= SHIFT_MAX_CHANNELS
        )
        pointwise_by_shift = not by_shift and _pointwise_groups_by_shift(spec, w_shape)
        if pointwise_by_shift and (spec.channels_last or spec.groups > DENSE_GROUPS_MAX_GROUPS):
            return ("shift", "shift", "matmul")
        if not (by_shift or nested) and _grouped_few_outputs_by_fft(spec, x_shape, w_shape):
            return ("fft",) * 3  # (measured on whole layers, not on 3-D layers' planes)
        if not by_shift and spec.groups <= DENSE_GROUPS_MAX_GROUPS:
            # Groups of many channels: one dense convolution per group, value and
            # derivatives, each by the dense rules. Against the rules below (batch 8
            # unless said, 3x3 unless said, channels-first / channels-last; fwd, train):
            # 2 groups of 8->64 @28 2.1x / 1.7x, 1.8x / 1.3x; 3 of 16x16 @28 2.3x / 2.2x,
            # 3.2x / 2.5x; 2 of 64x64 @28 2.5x / 2.3x, 2.8x / 2.3x; 4 of 16x16 @56 2.8x
            # / 3.6x, 4.9x / 4.2x; 8 of 32x32 @28 2.7x / 2.8x, 3.0x / 2.7x; @14 2.1x /
            # 2.2x, 2.6x / 2.4x; 16 of 16x16 @7 2.4x / 1.6x, 1.7x / 1.6x; 14 of 16x16
            # @28 (RegNet) 3.5x / 1.7x, 4.1x / 3.9x; 8 of 32x64 5x5 @18 batch 2 3.3x /
            # 2.9x, 2.1x / 4.0x; 1-D k5 8 of 16x16 @1000 2.0x / 1.3x, 2.8x / 2.0x; 3-D
            # 4 of 16x16 @8x28x28 batch 2 3.6x / 4.7x, 7.2x / 6.4x; 1x1 4 of 64x64 @28
            # 0.93x / 1.5x, 0.92x / 1.1x. (28-64 groups win as much, but compile for
            # seconds; see DENSE_GROUPS_MAX_GROUPS.) At batch 1 XLA's dense derivatives
            # of small groups are slow, and the matmul ones stay (training with dense
            # groups, 14 of 16x16 @28: batch 1 0.68-0.73x, batch 2 2.1-2.6x; 4 of
            # 16x16 @56: 0.75x and 1.5-2.6x; with 32x32 channels batch 1 already
            # 1.3-1.9x). But not to at most 16 channels a group, where XLA's slow
            # dense weight gradient at batch 1 was the padded one that
            # `lax.explicit_padding_pays` now steers off, and the matmul derivatives
            # cost most on large maps (found by a random sweep, `/tmp/s55/rand.py 1818`:
            # 2 groups of 32->1 5x5 dilation 2 @224 batch 1 channels-last, training 553
            # ms, PyTorch 167). Training with the groups' derivatives against matmul's
            # (5 interleaved runs, AMD EPYC with AVX2, 2026-12-05, `/tmp/s55/tri.py`;
            # channels-first / channels-last): 14 of 16x16 @28 1.08x / 1.51x, 4 of
            # 16x16 @56 1.25x / 1.45x, that layer 16.6x, 8 of 8x8 @112 4.1x, 2 of 16x16
            # @56 1.07x, 4 of 32->16 dilation 2 @28 1.47x, 3-D 4 of 8x8 @16^3 8.0x, 1-D
            # 4 of 16x16 k5 1.0x / 1.0x; stride 2 4 of 16x16 @56 1.23x, stride 3
            # 0.89x. To 24-32 channels a group it went both ways (8 of 16->32
            # @28 0.77x / 1.54x, 16 of 16->24 @14 0.54x, 4 of 16->32 @112 unpadded
            # 2.8x), and stays as measured.
            dense = (
                x_shape[0] > 1
                or c_in_g * c_out_g >= DENSE_GROUPS_MIN_CHANNELS_AT_BATCH_1
                or c_out_g <= lax_impl.EXPLICIT_PADDING_MAX_OUT_CHANNELS
            )
            derivative = DENSE_GROUPS if dense else "matmul"
            if pointwise_by_shift:
                return ("shift", derivative, derivative)
            out = spec.out_spatial(x_shape[2:], w_shape[2:])
            tiny = math.prod(out) <= DENSE_GROUPS_MIN_POSITIONS_CHANNELS_LAST
            if (
                (spec.ndim == 2 and spec.channels_last and tiny)
                or (spec.ndim == 1 and spec.channels_last)
                or kernel_past_input(spec, x_shape, w_shape)
            ):
                # A tiny 2-D channels-last output: XLA's grouped value is faster than the
                # groups' (forward, 3x3 unless said, 8 groups of 32x32 channels unless
                # said, minimum of 31 shuffled runs: 7x7 stride 2 @7 (one position)
                # batch 2 0.33x lax, batch 8 0.53x; @2 batch 8 4 groups of 32 0.28x; @3
                # batch 4 0.85x; @4 batch 2 0.90x, 16 groups of 32 batch 1 0.66x; from
                # 5x5 on 0.74-1.65x, 1.2x or more in 5 of 7). Likewise a kernel longer
                # than the input (`kernel_past_input`), where XLA's grouped convolution
                # takes no slow path and each group's product runs 0.32-1.7x it forward
                # (2-8 groups of 32-64 channels @2-4, 3x3 and 5x5, batch 1-8, 11
                # interleaved runs; the derivatives by the groups' products, training
                # through a ReLU 1.1-2.2x the groups' by XLA's slow dense path). And in
                # 1-D channels-last, where the groups' values ran 0.72-1.08x XLA's
                # grouped one (forward, 11 interleaved runs, 2026-12-01: 2 groups of
                # 128->32 k9 @270 batch 2 0.80x, 0.78x, 0.72x; 2 of 128x128 k3 @1000
                # batch 8 1.08x; 4 of 32x32 k5 @1000 1.06x; 8 of 64x64 k3 @500 batch 4
                # 0.93x).
                return ("lax", derivative, derivative)
            return (DENSE_GROUPS, derivative, derivative)
        if by_shift:
            # Grouped, few products per output and few channels per group: shift-and-add,
            # one broadcast product per input channel, with its transposes written out
            # for the derivatives (`jaxconv._derivatives`). Batch 8, train against the
            # matmul derivatives: ResNeXt 3x3 g32 128@56 (4x4 channels) 4.3x
            # channels-first, 2.1x channels-last (full bench: 128 -> 30 ms, 211 -> 98);
            # g8 64@56 (8x8) 2.4x / 1.0x; g32 256@14 3.3x / 1.0x; 1-D k3 g32 128@2000
            # 3.1x / 1.3x. Forward: ResNeXt 15-24x lax channels-first, 6-7.5x
            # channels-last; g8 64@56 3.1x / 1.4x matmul. With 16x16 channels (1-D k5
            # g8 128@1000) matmul won (train 1.4x, fwd 1.9x channels-last); dense
            # groups, above, now take those.
            out = spec.out_spatial(x_shape[2:], w_shape[2:])
            if (
                spec.ndim == 2
                and spec.groups <= DENSE_GROUPS_MAX_GROUPS
                and c_out_g >= SHIFT_DENSE_DERIVATIVES_MIN_OUT_CHANNELS
                and c_in_g * c_out_g >= SHIFT_DENSE_DERIVATIVES_MIN_CHANNELS
                and x_shape[0] * math.prod(out) >= SHIFT_DENSE_DERIVATIVES_MIN_ROWS
            ):
                # ... except the derivatives of 2-D layers of few groups of at least 8
                # output channels each, on enough rows: one dense convolution per
                # group (training against shift's derivatives or the groups loop
                # below, 3x3, channels-first / channels-last, a fixed cotangent and
                # through a ReLU, 7 interleaved runs, 2026-12-01): 4 groups of 8x8 @56
                # batch 8 1.60x / 1.67x, 1.32x / 2.36x; 8 of 8x8 @56 1.72x / 1.59x,
                # 1.56x / 1.15x; 16 of 4->16 @28 batch 8 1.75x / 1.53x, 1.75x / 1.29x;
                # 2-8 of 8x8 @28 batch 8 (all three roles by dense groups) 1.71-2.65x,
                # 1.01-1.52x. With the rule against without (9 runs): 8x8 @56 and
                # @28 batch 8, 4-8 groups, 1.10-2.86x; 2 and 16 groups of 4->16 @28
                # batch 8 1.23-4.07x; compiled in 0.2-0.9 s. Not with fewer channels
                # per group (16 of 4->8 @28 batch 8 0.74-1.31x; 16 of 4x4 @56 batch 8
                # 0.43-0.50x, 0.54-0.75x), nor on fewer rows (8 of 8x8 @28 batch 2
                # 0.86-1.45x, @56 batch 1 0.33-1.05x), nor in 1-D (all three roles by
                # dense groups, channels-last: 0.55-0.74x on 2-4 groups).
                return ("shift", DENSE_GROUPS, DENSE_GROUPS)
            fan_out = c_out_g >= 16
            if (
                (fan_out or (spec.channels_last and min(c_in_g, c_out_g) >= 8))
                and spec.ndim == 2
                and spec.groups >= 8
                and x_shape[0] > 1
                and x_shape[0] * math.prod(out) >= GROUPS_LOOP_MIN_ROWS
            ):
                # ... except the derivatives of channels-last 8x8 groups and of groups
                # of at least 16 output channels, by the groups loop (below): training
                # with jax.grad through a ReLU, 3x3, against shift's derivatives (7
                # interleaved runs): 8x8 channels-last: 32 groups @28 batch 8 2.1x,
                # batch 2 1.2x; @56 batch 8 2.2x, batch 2 1.3x; @14 batch 8 1.8x; 8
                # groups @56 batch 4 2.1x. 4->16 channels: 16 groups @28 batch 8 3.4x
                # channels-first, 2.4x channels-last, batch 2 2.5x; 8 groups @56 2.9x;
                # 2->32: 32 groups @28 3.4x; 2->16 batch 4 3.3x. Not at batch 1 (8x8,
                # 32 groups @28: 0.78x), not 8x8 channels-first (1.15-1.2x at batch 8,
                # 0.54-0.76x at batch 2-4), not with fewer channels (4->8: 1.06x
                # channels-last, 0.65x channels-first; 4x4: 0.99x; 16->4: 0.53x), not
                # with fewer groups (2-4 groups of 4->16: 0.89-1.0x).
                return ("shift", GROUPS_LOOP, GROUPS_LOOP)
            if not _shift_input_gradient_per_channel(spec, w_shape):
                # As for depthwise layers with a channel multiplier (above): shift's input
                # gradient would sum more products per output a group than one channel at
                # a time. The derivatives alone, shift's against matmul's (5 interleaved
                # runs, AMD EPYC, 2026-12-05, `/tmp/s54/roles2.py`; found by a random
                # sweep: 4 groups of 2->32 7x7 @28 batch 1 channels-first trained 0.28x
                # PyTorch), input gradient and weight gradient: 4 of 2->32 7x7 @28 batch
                # 1 channels-last 6.1 and 2.5 ms against 0.82 and 0.73, channels-first
                # 4.7 and 4.2 against 0.92 and 0.62; 16 of 2->32 3x3 @28 batch 1 2.0 and
                # 0.76 against 0.47 and 0.63, channels-last 2.7 and 0.98 against 0.74 and
                # 0.95; 32 of 4->16 @28 4.8 and 1.4 against 1.0 and 1.25.
                if _shift_derivatives_by_fft(spec, x_shape, w_shape, nested):
                    return ("shift", "fft", "fft")
                return ("shift", "matmul", "matmul")
            return ("shift",) * 3
        # More groups than DENSE_GROUPS_MAX_GROUPS, of many channels: in 2-D, and in
        # 1-D channels-first, once the batch has enough output positions, the groups'
        # dense convolutions in a loop over the groups (`groups.loop`), the input
        # gradient as `loop` on the transposed convolution and the weight gradient as
        # `groups.loop_weight_gradient`. Forward against lax (3x3 unless said, 16x16
        # channels per group unless said; channels-first, channels-last; 7 interleaved
        # runs): 32 groups @56 batch 8 4.2x, 3.1x; @28 3.8x, 3.6x; @28 batch 1 2.6x,
        # 1.9x; @14 batch 8 3.0x, 1.8x; 64 groups @28 4.1x, 2.9x, batch 1 2.2x, 1.5x;
        # 24 of 32x32 @28 3.2x, 2.5x; 32 of 8x16 @28 4.0x, 2.5x; stride 2 @56 2.5x,
        # 1.7x; 5x5 32 of 32x32 @28 8.5x, 8.1x; valid @28 3.3x, 2.5x; 1-D k5 @1000
        # batch 8 2.1x, 0.85x; k3 batch 1 1.3x, 0.70x; against the rules below 1.2-4.4x
        # on the same shapes. Training (jax.grad through a ReLU) against the rules
        # below: 32 groups @28 batch 8 2.3x, 2.3x; 64 groups @28 batch 1 1.4x; 64 @14
        # 2.5x; 24 of 32x32 @14 channels-last 2.1x; 32 of 8x16 @56 2.2x; stride 2 @56
        # 1.7x, 1.7x; 1-D k3 @1000 batch 8 1.5x. (Each convolution must be laid out as
        # XLA lays it out outside a loop: see `groups.loop`.) At 7x7 the loop was
        # 0.65-1.3x lax at batch 1 (49 rows) and 0.77-2.2x at batch 8 (392), so it
        # takes 784 rows (28x28 at batch 1) and up. In 3-D XLA's grouped convolution is
        # as fast as the loop (0.80-0.98x lax).
        # Otherwise the derivatives by matmul with the groups as a batch dim (XLA's
        # grouped backward is slow at every size: train 34-105x), and the value too on
        # large 2-D maps, in batch chunks that keep the patches in cache (measured with
        # fewer groups: 4 groups of 16x16 channels @56 batch 8: fwd 1.3-1.5x lax; batch
        # 1 3.9x; 8 groups of 32x32 @28: 1.3-1.8x; 4 of 32x64 @32 batch 2: 1.5-1.7x),
        # and by XLA's grouped convolution on small maps, in 1-D channels-last and in
        # 3-D (3x3x3, 24-64 groups of 8-32 channels, @8-16, batch 1-4: matmul 0.63-0.83x
        # lax channels-last, 0.90-1.28x channels-first).
        out = spec.out_spatial(x_shape[2:], w_shape[2:])
        rows = x_shape[0] * math.prod(out)
        looped = spec.ndim == 2 or (spec.ndim == 1 and not spec.channels_last)
        if looped and rows >= GROUPS_LOOP_MIN_ROWS:
            return (GROUPS_LOOP,) * 3
        if _grouped_planes(spec):
            # ... but in 3-D all three by 2-D planes (`planes`, each plane's grouped
            # convolution by the 2-D rules: shift, the groups loop), not the matmul
            # derivatives, whose patches are 27x the input for 3x3x3 (8 GB for 256
            # channels @20x20x20 batch 8; XLA's grouped backward is slower still). Against
            # the matmul derivatives, training with a fixed cotangent, through a ReLU and
            # with a squared loss, channels-first / channels-last, 3x3x3 padding 1, 5
            # interleaved runs, Intel Xeon, 2026-12-02 (`/tmp/s31/g3d2.py`): 32 groups of
            # 4x4 @8x28x28 batch 2 3.0-3.2x / 2.7-3.0x; of 8x8 @8x14x14 3.0-3.5x /
            # 3.0-3.2x; of 8->1 @20x20x20 3.6-4.1x / 3.1-3.3x; of 2->4 @8x28x28 4.0-4.7x /
            # 2.8-3.0x; of 2x2 @4x14x14 batch 1 2.9-3.9x / 3.2-3.7x; of 4x4 @4x7x7 batch 4
            # 2.0-3.4x / 1.6-2.1x; 64 groups of 4x4 @16x14x14 batch 1 2.2-2.5x /
            # 2.2-2.3x; stride 2, 32 of 4->8 @8x28x28 2.0-2.1x / 1.6-1.9x; 32 of 16x16
            # @8x8x8 batch 2 2.3-2.8x / 2.7-3.1x, @4x4x4 batch 1 1.1-1.15x / 1.1-1.2x
            # (values 0.9-1.1x: the same program). (Against XLA's, the rules before ran
            # 1.0-6.7x, and 0.55x on 8->1 @20x20x20 batch 8.) 1x1x1 and 3x1x1 kernels,
            # which take other paths, ran even (0.88-1.17x).
            return ("lax",) * 3
        large_map = spec.ndim == 2 and math.prod(out) >= GROUPED_MATMUL_MIN_POSITIONS
        # (and on small maps too where `_small_grouped_map_by_matmul` says)
        by_matmul = large_map or _small_grouped_map_by_matmul(spec, x_shape, out)
        value = "matmul" if by_matmul else "lax"
        if _grouped_large_kernel_by_fft(spec, w_shape, out, x_spatial=x_shape[2:]):
            # ... but large kernels by FFT (see `_grouped_large_kernel_by_fft`).
            by_fft = value == "lax" and not spec.channels_last
            return ("fft" if by_fft else value, "fft", "fft")
        if _groups_loop_value(spec, x_shape, w_shape, rows, value):
            value = GROUPS_LOOP
        return (value, "matmul", "matmul")
    if taps == 1:
        if spec.channels_last and any(s > 1 for s in spec.stride):
            # Strided, channels-last (2-D layers take matmul's anyway, below), in 1-D
            # and 3-D too: XLA's derivatives of a strided 1x1 layer are slow (its input
            # gradient an input-dilated convolution), so matmul's (the strided input's
            # product and its scatter into zeros), and in 3-D matmul's value too, where
            # the exceptions below were measured unstrided. The rules before (all three
            # XLA's, or in 3-D to as many or fewer channels XLA's value and matmul's
            # derivatives) against matmul's, forward and training with a fixed
            # cotangent, 7 interleaved runs, AMD EPYC, 2026-12-05 (`/tmp/s54/tri.py`),
            # 3-D stride 2 unless said: 16->128 @16^3 batch 4 2.4x and 34x; 32->256
            # @16^3 batch 2 1.8x and 21x; 64->256 @8x28x28 stride (2, 2, 2) 1.7x and
            # 17x; 192->64 @8x28x28 stride (1, 2, 2) 2.1x and 1.4x (XLA's value 8.0x);
            # 256->512 @4x14x14 batch 8 0.83x and 11x; 512->2048 @4x14x14 stride (1, 2,
            # 2) 1.5x and 4.6x; 64->64 @16^3 batch 4 2.5x and 0.78x (matmul's
            # derivatives already); 24->96 @16x56x56 batch 1 2.6x and 47x. In 1-D
            # matmul's value lost (0.68-1.14x XLA's: 256->512 @2000 batch 8 0.68x), so
            # XLA's value, matmul's derivatives: training 1.9x (64->128 @1000 batch 4),
            # 1.03x (256->512 @2000 batch 8), 4.0x (128->64 @4000 stride 4), 2.4x
            # (512->1024 @250 batch 2), 3.3x (32->64 @1000 batch 16).
            return ("lax" if spec.ndim == 1 else "matmul", "matmul", "matmul")
        if spec.channels_last and spec.ndim == 1:
            # ... but not 1-D channels-last, where XLA rewrites its convolution into a
            # dot late enough that Eigen runs it, and runs matmul's dot on YNNPACK
            # (matmul against lax, minimum of 21 shuffled runs, forward and training
            # through a ReLU: 256->512 @500 batch 4 0.75x and 0.55x; 64->128 @1000
            # batch 8 1.05x and 0.47x; 128->128 @2000 0.82x and 0.64x).
            return ("lax",) * 3
        if spec.channels_last and spec.ndim == 3:
            # ... and in 3-D channels-last XLA's value, as XLA's own 3-D convolution
            # (not its 2-D planes, see `_run`), with matmul's derivatives: forward,
            # matmul against XLA's 3-D convolution (batch 8 unless said, 15 settled
            # interleaved runs, 2026-12-01): I3D's 192->64 @8x28x28 0.81x (and XLA's
            # value 1.01x), 256->64 @8x14x14 0.99x, 512->128 @4x7x7 0.93x, 64->64
            # @16x28x28 batch 4 1.02x, 128->32 @16x56x56 batch 2 0.96x; XLA's value
            # 0.98-1.02x on all five. Training with XLA's value against matmul's:
            # 0.97-1.02x (1.6-2.9x `lax` either way). To more channels than they take
            # these layers were XLA's whole until 2026-12-07 (matmul's three roles had
            # trained at 0.48-0.93x `lax` on seven of eight layers, 2026-12-01, before
            # `matmul.pointwise_weight_gradient`). With matmul's derivatives against XLA's
            # (AMD EPYC with AVX-512, Zen 5, 7-11 interleaved runs; found by a random
            # sweep, `/tmp/s72/rand2.py 715`: 32->256 @16x16x16 batch 2 trained in 2.97
            # ms, PyTorch 1.08, XLA's weight gradient 3.8 ms alone): training with a
            # fixed cotangent 1.57x geometric mean over 10 random layers (0.95-2.33x,
            # `/tmp/s73/p3rand.py 1 16 7`), through a ReLU 1.21x (0.68-1.87x; the loss,
            # 128->256 @4x32x32 batch 4, read 0.65x and 0.99x in two reruns,
            # `p3b.py`, `p3c.py`); forward unchanged (XLA's value either way).
            return ("lax", "matmul", "matmul")
        # 1x1: one dot over channels in the caller's layout, derivatives included
        # (full bench, batch 8, channels-first and channels-last: 256->64 @56 fwd 2.1x
        # and 2.7x lax, train 2.5x and 4.9x; 512->2048 @7 fwd 1.7x and 1.5x, train 1.8x
        # and 1.4x).
        return ("matmul",) * 3
    if kernel_past_input(spec, x_shape, w_shape) and (
        max(c_in_g, w_shape[0]) >= KERNEL_PAST_INPUT_MIN_CHANNELS
    ):
        # A kernel longer than the input along some dim (3x3 on 2x2 maps, 5x5 on 4x4,
        # 7x7 on 6x6, the rest padding): XLA's CPU convolution takes a slow path there,
        # 3-5 GFLOP/s, in 1-D to 3-D and in both layouts; the patches' product does not
        # (`/tmp/w10/kbig*.py`, 7-31 interleaved runs, matmul's speed-up over lax, forward
        # and training through a ReLU, channels-first / channels-last, batch 1 unless
        # said): 3x3 256@2 batch 8 32x / 26x, 23x / 12x; 384@4 5x5 44x / 20x, 27x / 4.1x;
        # 7x7 256@6x8 52x / 47x, 43x / 16x; 5x5 128->256 @3 batch 2 11x / 18x, 9.9x /
        # 5.7x; 64@4 5x5 batch 8 6.4x / 5.3x, 4.9x / 4.5x; 1-D 256@2 k3 10x / 12x, 9.4x /
        # 6.1x; 3-D 64@4x4x4 5x5x5 batch 2 7.0x / 6.3x, 6.2x / 5.5x; 32@2 3x3 2.3x /
        # 3.8x, 2.3x / 1.6x; 16->64 3x3x3 @2x2x2 1.7x / 1.6x, 3.4x / 2.1x. Not with 16 or
        # fewer channels, where XLA's is fast (16@2 3x3 batch 8: 0.38x / 0.61x forward;
        # 8@3 5x5 0.18x / 0.17x), nor along dilated dims only (64@2 3x3 dilation 2:
        # 1.2-1.5x forward but 0.72x training channels-last).
        return ("matmul",) * 3
    if (
        few_inputs_by_matmul
        and spec.ndim == 2
        and c_in_g <= FEW_INPUTS_MAX_CHANNELS
        and taps <= FEW_INPUTS_MAX_TAPS
        and all(d == 1 for d in (*spec.lhs_dilation, *spec.rhs_dilation))
    ):
        # RGB and grey first layers with small kernels (3x3, 4x4): XLA's convolution
        # runs them slowly, channels-first always and channels-last for 20-32 output
        # channels; `matmul`'s patches (27 deep for RGB 3x3) do not. Against the rules
        # before (batch 8 unless said, Intel Xeon, 11 interleaved runs, 2026-12-01,
        # forward; training with a fixed cotangent), channels-first: 3x3 stride 2 @224
        # (MobileNet's and EfficientNet's stem) 3->8 to 3->96 1.18-7.45x (3->32 3.5-3.7x,
        # 3->24 6.9-7.1x), training 3->32 2.03x, 3->24 1.78x, 3->16 1.23x; 3x3 3->64 @224
        # batch 2 (VGG's) 2.51x and 2.16x; 3->32 @112 4.01x; 1->32 @128 2.30x and 2.66x;
        # 4x4 stride 4 3->96 (ConvNeXt's patchify stem) 2.07x and 1.54x. With deeper
        # patches XLA's is faster (5x5 3->64 stride 2 0.81x, 7x7 0.83-0.85x; 4->32 3x3
        # 0.90x, 8->32 0.79x). Channels-last, 3x3 stride 2 @224: 3->20 5.66x, 3->24
        # 5.21-5.86x, 3->28 2.80x, 3->32 2.02-2.26x (and @112 stride 1 2.93x), the
        # value alone by `matmul` in training 2.28x (3->24) and 1.40x (3->32), and by
        # `shift` since 2026-12-06 faster still (`_few_inputs_cliff`); but 3->8
        # to 3->16 0.85-1.09x, 3->36 to 3->64 0.67-0.74x, 1->32 0.51x. 3-D stems run
        # by 2-D planes take the rule per plane (new against old rules, forward and
        # training): X3D's 3->24 1x3x3 stride (1, 2, 2) @16x160x160 batch 2 2.41x and
        # 1.45x channels-first, 2.08x and 1.43x channels-last; 3->32 3x3x3 stride (1, 2,
        # 2) @8x112x112 2.45x and 1.44x, 1.68x and 1.54x; 3->64 3x3x3 @8x64x64 batch 4
        # channels-first 1.20x and 1.73x (channels-last 0.97x and 1.01x); C3D's 3->64
        # @16x112x112 batch 1 channels-first 0.80x and 1.15x (still 1.48x `lax` forward).
        if not spec.channels_last:
            if _few_inputs_channels_first_value_by_shift(spec, w_shape):
                return ("shift", "matmul", "matmul")
            return ("matmul",) * 3
        if _few_inputs_cliff(spec, x_shape, w_shape, nested):
            return ("shift", "lax", "lax")
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    if (
        spec.ndim == 1
        and not spec.channels_last
        and taps <= PER_IMAGE_MAX_TAPS
        and c_in_g * taps <= PER_IMAGE_MAX_DEPTH
        and matmul_impl.per_image(c_in_g, w_shape[0], taps, out)
    ):
        # 1-D channels-first from few channels (raw audio): XLA's convolution computes
        # channels-last and transposes the large output; `matmul`'s product per image
        # writes it in place. Against lax (batch 8, 11 shuffled runs; forward,
        # training through a ReLU): 1->512 kernel 10 stride 5 @16000 2.3x, 2.4x;
        # 1->128 kernel 80 stride 4 1.06x, 1.6x. Otherwise in 1-D XLA's convolution is
        # as fast as anything here (temporal k3 256@1000 batch 8: matmul fwd 0.86x lax,
        # train 0.58x; channels-last audio: matmul 0.44x fwd). At most
        # `PER_IMAGE_MAX_TAPS` taps: the patches take a slice per tap to compile. At
        # most `PER_IMAGE_MAX_DEPTH` products per output: matmul against lax (padding
        # k // 2, batch 8 unless said, 15 shuffled runs, forward and training) with
        # depth 3-24 1.07-4.6x and 0.95-15.5x (2->128 k5 @4000 2.1x and 5.1x, 3->64 k3
        # @1000 2.2x and 1.1x, 8->256 k3 @1000 1.5x and 1.3x, 8->128 k3 @1000 1.07x and
        # 0.95x); deeper, 0.72-1.18x and 0.72-1.13x (12->128 k3 1.04x and 0.89x,
        # 16->128 1.00x and 0.85x, 24->128 0.72x and 0.72x, 64->256 1.00x and 0.77x).
        return ("matmul",) * 3
    small_map = math.prod(out) <= MATMUL_MAX_POSITIONS
    depth = c_in_g * taps
    deep = depth >= MATMUL_MIN_DEPTH and depth >= MATMUL_DEPTH_PER_ROW * x_shape[0] * math.prod(out)
    c_out = w_shape[0]
    patches = x_shape[0] * math.prod(out) * depth
    if (
        small_map
        and deep
        and (not spec.channels_last or (spec.ndim == 3 and c_out >= MATMUL_VALUE_MIN_OUT_CHANNELS))
        and c_out >= MATMUL_MIN_OUT_CHANNELS
        and patches <= MATMUL_MAX_PATCHES_PER_OUT_CHANNEL * c_out
    ):
        # Few positions, many channels, few rows: the patches' product is deep and
        # short. 3x3 @7 (fwd / train against lax, 9 interleaved runs): 512 channels
        # batch 8 1.3x / 1.6x, 384 batch 2 1.6x / 2.8x, 256 batch 1-4 1.1-1.4x /
        # 1.3-1.5x; 512@4 batch 8 2.2x / 2.5x. With more rows than depth / 8 XLA's
        # convolution is as fast or faster: 128 channels batch 8 0.52-0.56x / 0.69x,
        # 256 batch 8 0.75-0.87x / 0.9-1.0x, 512 batch 16 0.95x / 1.0x; 256@10 batch 16
        # 0.71x / 0.66x (and the 2-D planes of 3-D layers, whose batch is times the
        # depth: 3x3x3 128@4x7x7 batch 8 fwd 33 ms by matmul planes, 13 by XLA's, 22
        # by XLA's 3-D). Channels-last XLA is as fast (matmul fwd 0.96x, train 1.13x),
        # but not in 3-D, where the rules' 2-D planes trained slowly on small maps
        # (matmul against them, forward, training with a fixed cotangent and through a
        # ReLU, 7 interleaved runs, 2026-12-02, `/tmp/s31/s3d.py`): 3x3x3 384->512 @3x3x3
        # batch 1 1.9x, 4.0x, 3.4x (the rules' training 0.41x lax); 256x256 @4x4x4 batch 2
        # 1.4x, 2.3x, 2.1x. Not measured channels-last to fewer than
        # `MATMUL_VALUE_MIN_OUT_CHANNELS` channels, which keeps the rules'.
        # With few output channels XLA's value (off YNNPACK, `lax.forward_eigen`) is
        # faster, and so are its derivatives (batch 2 unless said, minimum of 21
        # shuffled runs, forward and training through a ReLU, matmul's time over the
        # rule's): 64 outputs, 96 @7 7x7 1.9x and 1.6x, 512 @7 3x3 1.8x and 1.2x, 256 @7
        # batch 1 1.6x and 1.07x; with 128 the value (1.35-1.55x) but not the derivatives
        # (0.82-0.87x against XLA's, 0.92-1.06x with the value alone by XLA's): 96 @7
        # 7x7, 512 and 256 @7 3x3; with 256 even forward (0.96-1.0x: 512 and 128 @7).
        # Not with patches of more than `MATMUL_MAX_PATCHES_PER_OUT_CHANNEL` elements per
        # output channel, whose writing costs more than the product saves (5x5 @5 padding
        # 2 unless said; the rules' time over XLA's in all three roles, 9-11 interleaved
        # runs, forward and training with a fixed cotangent): 384->128 batch 16 (30k per
        # channel) 1.00x and 2.47x, batch 12 (22k) 1.07x in training, batch 8 (15k) 1.19x,
        # batch 6 (11k) 1.03x; 384->256 batch 16 (15k) 1.11x and 1.62x. Below it the
        # rules win: 384->256 batch 8 (7.5k) 0.77x and 0.80x, 3x3 512->256 @5 batch 16
        # (7.2k) 1.00x and 0.90x, 3x3 512->512 @7 batch 8 (3.5k) 1.08x and 0.78x, 256->192
        # batch 4-8 (3.3-6.7k) training 0.84-0.91x; once 1.13x (7x7 96->128 @7 batch 4,
        # 7.2k).
        if c_out < MATMUL_VALUE_MIN_OUT_CHANNELS:
            return ("lax", "matmul", "matmul")
        return ("matmul",) * 3
    # Large dense maps: XLA's own convolution is the fastest we have (ResNet 3x3 64@56
    # matmul 0.5x fwd, 1.0x train; stem 7x7 from 3 channels 0.7x; the notes' 5x5 layer
    # 1.35x in batch chunks, but XLA steered off its unpadded slow path gives 2.8x),
    # in 2-D at stride 1 run by Eigen rather than YNNPACK (see `lax.forward_eigen`).
    return ("lax",) * 3


def kernel_past_input(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether the kernel of this canonical convolution has more taps than the input
    has positions along some undilated dim (the rest of the window is padding), where
    XLA's CPU convolution takes a slow path (see `choose`). In 3-D not along the depth,
    which the 2-D planes take apart (`_run`), each plane a convolution of its own."""
    if any(ld > 1 for ld in spec.lhs_dilation):
        return False  # input-dilated: on the CPU its sub-pixel phases come here instead
    dims = zip(w_shape[2:], x_shape[2:], spec.rhs_dilation, strict=True)
    skip = 1 if spec.ndim == 3 and planes.applies(spec) else 0
    return any(k > n and d == 1 for k, n, d in list(dims)[skip:])


def _grouped_planes(spec: ConvSpec) -> bool:
    """Whether this grouped convolution of many groups runs its derivatives, as its
    value, by 2-D planes (3-D, see `choose`): then its value is computed once under
    differentiation (see `_forward_jvp`)."""
    return spec.ndim == 3 and spec.groups > DENSE_GROUPS_MAX_GROUPS and planes.applies(spec)


def kernel_past_output(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether this canonical convolution is dense, with at least
    `KERNEL_PAST_INPUT_MIN_CHANNELS` input or output channels and at least
    `KERNEL_PAST_OUTPUT_MIN_OUT_CHANNELS` output channels (on AMD's AVX-512 CPUs
    `KERNEL_PAST_OUTPUT_MIN_OUT_CHANNELS_FEW`), and its kernel has more
    taps than the output has positions along some undilated dim, or (on outputs of at
    most `KERNEL_PAST_OUTPUT_DILATED_MAX_POSITIONS` positions, to at least
    `KERNEL_PAST_OUTPUT_DILATED_MIN_OUT_CHANNELS` channels; with AVX2 and no AVX-512,
    of at most `KERNEL_PAST_OUTPUT_DILATED_AVX2_MAX_ROWS` in the batch, from and to at
    least `KERNEL_PAST_OUTPUT_DILATED_AVX2_MIN_CHANNELS` channels, else in 2-D of at
    most `KERNEL_PAST_OUTPUT_DILATED_MAX_ROWS` rows) a dilated kernel's
    window is longer than the output along a dilated dim (see `choose`); in 3-D not
    along the depth alone, which the 2-D planes take apart."""
    if spec.groups != 1 or any(ld > 1 for ld in spec.lhs_dilation):
        return False
    if max(w_shape[:2]) < KERNEL_PAST_INPUT_MIN_CHANNELS or 0 in x_shape:
        return False
    if w_shape[0] < KERNEL_PAST_OUTPUT_MIN_OUT_CHANNELS and not (
        w_shape[0] >= KERNEL_PAST_OUTPUT_MIN_OUT_CHANNELS_FEW
        and cpu_vendor() in KERNEL_PAST_OUTPUT_FEW_VENDORS
        and "avx512f" in cpuinfo("flags").split()
    ):
        return False
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    if min(out) < 1:
        return False
    dims = zip(w_shape[2:], out, spec.rhs_dilation, strict=True)
    skip = 1 if spec.ndim == 3 and planes.applies(spec) else 0  # as `kernel_past_input`
    small = (
        math.prod(out) <= KERNEL_PAST_OUTPUT_DILATED_MAX_POSITIONS
        and w_shape[0] >= KERNEL_PAST_OUTPUT_DILATED_MIN_OUT_CHANNELS
    )
    if small and lax_impl.avx2_only():
        small = (
            x_shape[0] * math.prod(out) <= KERNEL_PAST_OUTPUT_DILATED_AVX2_MAX_ROWS
            and min(w_shape[:2]) >= KERNEL_PAST_OUTPUT_DILATED_AVX2_MIN_CHANNELS
        )
    elif small and spec.ndim == 2:
        small = x_shape[0] * math.prod(out) <= KERNEL_PAST_OUTPUT_DILATED_MAX_ROWS
    return any(
        (k > m and d == 1) or (d * (k - 1) + 1 > m and small) for k, m, d in list(dims)[skip:]
    )


def _by_rows(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether the weight gradient of this dense 2-D convolution goes by kernel rows
    (see `_run`): to more than `ROWS_MIN_OUT_CHANNELS` channels per group, from
    `ROWS_MIN_FLOPS`, unless `_rows_lose`."""
    return (
        spec.ndim == 2
        and planes.applies(spec)
        and w_shape[0] // spec.groups > ROWS_MIN_OUT_CHANNELS
        and spec.flops(x_shape, w_shape) >= ROWS_MIN_FLOPS
        and not _rows_lose(spec, x_shape, w_shape)
    )


def _space_to_depth_weight_gradient(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether the weight gradient of this strided 2-D convolution (or 2-D plane of a
    3-D one) runs as the folded unstrided one's (`space_to_depth`): dense, stride 2 with
    kernels at least as large, an input of more than `ROWS_MAX_STRIDED_INPUT_ELEMENTS`
    elements (where the rows lose, `_rows_lose`, and the weight gradient was XLA's
    strided one), and the folded layer's weight gradient by rows (`_by_rows`).

    XLA's strided 2-D weight gradient ran far below its unstrided one (found by a random
    held-out layer, 3x3 stride 2 64->128 @112 batch 4 channels-last: 40 ms of a 76 ms
    training step for 1.85 GFLOP). With the rule against without (padding k // 2 unless
    said, batch 8 unless said, 7-9 interleaved runs, settled, Intel Xeon, 2026-12-04,
    `/tmp/s46/abrule.py`; the weight gradient alone, a training step of a fixed
    cotangent, one through a ReLU; channels-last / channels-first): 3x3 64->128 @112
    batch 4 1.77x, 1.72x, 1.19x / 1.66x, 1.50x, 1.52x; 64->64 @112 1.49x, 1.08x, 1.12x /
    1.94x, 1.44x, 1.26x; 32->64 @112 1.21x, 1.05x, 1.06x; 128->128 @56 1.57x, 1.23x,
    1.35x / 2.21x, 1.49x, 1.64x; 128->256 @56 channels-first 2.40x, 1.39x, 1.48x;
    256->256 @56 1.73x, 1.39x, 1.33x / 2.05x, 1.50x, 1.62x; unpadded 64->128 @113 1.65x,
    1.30x, 1.45x; 64->128 @56 batch 32 1.17x, 1.12x, 1.17x (once 1.04x, 0.95x, 0.92x) /
    1.62x, 1.37x, 1.29x, batch 16 1.00x, 1.27x, 1.00x; 128->128 @56 batch 16 1.19x,
    1.20x, 1.11x; 32->64 @56 batch 32 1.22x, 1.10x, 1.18x; 128->128 @128 batch 2 1.55x,
    1.22x, 1.07x; 4x4 padding 1 64->128 @64 batch 16 1.61x, 1.14x, 1.16x / 1.72x, 1.24x,
    1.35x; 2x2 unpadded 96->192 @56 2.88x, 1.65x, 1.69x / 2.53x, 1.91x, 1.69x; 5x5
    96->96 @56 channels-last 1.62x, 1.02x, 1.07x; 7x7 64->64 @112 batch 4 channels-first
    3.67x, 1.34x, 1.39x. Where the folded layer's rows lose (3x3 256->512 @28 batch 16
    channels-last) the folded weight gradient alone ran 0.51x, and where the strided
    layer's rows apply (64->128 @56 batch 8) 0.44x / 0.65x: neither taken. The 2-D
    planes of 3-D layers too (`planes`; their batch is times the output depth), not a
    grouped 3-D layer's groups (not measured; a 2-D one's since 2026-12-05, below):
    against without, a training step of a fixed
    cotangent and one through a ReLU, 3x3x3 stride 2 padding 1, 5-7 interleaved runs:
    64->128 @16x56x56 batch 2 1.17-1.19x, 1.14-1.18x channels-last and 1.19x, 1.12x
    channels-first; 64->64 @8x56x56 batch 4 1.02-1.11x, 1.01-1.03x / 1.15x, 1.15x;
    32->64 @16x112x112 batch 2 channels-last 1.00-1.02x, 1.12-1.13x; stride (1, 2, 2)
    64->64 @16x112x112 batch 1 channels-first 1.27x, 1.26x (the weight gradient alone
    1.36-1.46x on the first three). A grouped 2-D layer's groups, where they run apart
    (`groups.decompose`), too since 2026-12-05 (see `group_part` in `_run`).

    And, whatever the input's size, on at most `lax.EXPLICIT_PADDING_MAX_BATCH` images to
    at most `lax.EXPLICIT_PADDING_MAX_OUT_CHANNELS` channels with outputs tall enough for
    `lax.forward_padded`'s row (`lax.FORWARD_PADDED_MIN_ROWS`), which the folded layer,
    unpadded, then takes: XLA's strided weight gradient there is as slow as its padded
    one (`lax.explicit_padding_pays`; 5x5 stride 2 256->8 @56 batch 1 channels-last:
    21.5 ms of a 26 ms training step for 69 MFLOP). Found by a random sweep
    (`/tmp/s55/rand.py 1515`). With the rule against without (`/tmp/s55/force.py`,
    `gen5(1, 50, maxco=16, maxb=4)`: 50 random layers, 1-4 images of 8-512 channels
    @14-112 to 1-16, 2x2-7x7 kernels, both layouts, 5 interleaved runs, AMD EPYC with
    AVX2, 2026-12-05): the weight gradient alone 1.13-18.9x on all 50 (median 5.8x),
    training 0.99-12.4x (median 3.6x). Not to more channels, where the rows or XLA's run
    it (`gen5(2, ...)`: the weight gradient 0.29-1.0x on 39 of 45 layers, training
    0.38-1.87x), nor on 8 images (0.58-2.26x on five, training 0.66-1.46x)."""
    if not (
        spec.stride == (2, 2)  # (2-D)
        and spec.groups == 1
        and min(w_shape[2:]) >= 2
        and space_to_depth.applies(spec)
    ):
        return False
    if (
        x_shape[0] <= lax_impl.EXPLICIT_PADDING_MAX_BATCH
        and w_shape[0] <= lax_impl.EXPLICIT_PADDING_MAX_OUT_CHANNELS
    ):
        out = spec.out_spatial(x_shape[2:], w_shape[2:])
        return out[0] >= lax_impl.FORWARD_PADDED_MIN_ROWS
    if math.prod(x_shape) <= ROWS_MAX_STRIDED_INPUT_ELEMENTS:
        return False
    x_folded, w_folded, folded = space_to_depth.problem(x_shape, w_shape, spec)
    return _by_rows(folded, x_folded, w_folded)


def _chunked_weight_gradient(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether the weight gradient of this 2-D 3x3 stride-2 convolution to at least twice
    its input channels runs as products of patches a few images at a time
    (`matmul.chunked_patches_weight_gradient`) rather than folded space-to-depth: dense,
    undilated, on an input of more than `ROWS_MAX_STRIDED_INPUT_ELEMENTS` elements where
    `_space_to_depth_weight_gradient` takes it.

    The fold runs a 3x3 kernel as a 2x2 one over four times the channels, 16 taps'
    products for 9, and its whole batch's temporaries outgrow glibc's heap blocks on
    large batches (see `matmul.chunked_patches_weight_gradient`). Found by the
    realistic-layer sweep (`/tmp/s61/real.py 681`): ResNet's 3x3 stride-2 64->128 @56
    at batch 16 channels-last trained in 52 ms, PyTorch 15.3; its weight gradient alone
    26 ms at batch 16 against 6.9 at batch 8 (by kernel rows there, the input under the
    bound). With the rule against without (random stride-2 layers the fold takes,
    training with a fixed cotangent, 5 interleaved runs, Sapphire Rapids Xeon,
    2026-12-06, `/tmp/s68/cpw_sweep.py 51 24`, `cpw_sweep2.py 52 20`, `cpw_ab.py`;
    channels-first and channels-last): 3x3 to at least twice the channels 1.10-1.53x
    on 17 of 19 layers, 0.98x and 0.99x on two (8->64 @224 batch 32 1.32x, 16->128
    @112 batch 16 1.53x, 64->128 @56 batch 16 1.38x / 1.45x, 128->256 @28 batch 32
    1.24x, 256->512 @112 batch 2 1.12x). Not larger kernels, which the fold pads less
    or not at all (4x4 0.86-1.15x over eight, 5x5 8->32 0.77x; 7x7 8->64 1.17x), nor
    2x2 (32->64 channels-first 0.85x), nor to fewer than twice the input channels (3x3
    0.86-1.11x over eight). Nor the layers to at most
    `lax.EXPLICIT_PADDING_MAX_OUT_CHANNELS` channels on at most
    `lax.EXPLICIT_PADDING_MAX_BATCH` images, which the fold takes whatever their input
    (not measured against it). Not on a mesh either (`_run`): ``lax.scan`` cannot loop
    over a batch split along ``Explicit`` axes; there the layer keeps the fold."""
    few = (
        x_shape[0] <= lax_impl.EXPLICIT_PADDING_MAX_BATCH
        and w_shape[0] <= lax_impl.EXPLICIT_PADDING_MAX_OUT_CHANNELS
    )
    return (
        tuple(w_shape[2:]) == (3, 3)
        and w_shape[0] >= CHUNKED_WEIGHT_GRADIENT_MIN_WIDENING * w_shape[1]
        and not few
        # (2-D, dense, stride 2, undilated and, but for the few, past the input bound)
        and _space_to_depth_weight_gradient(spec, x_shape, w_shape)
    )


def _rows_lose(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether the weight gradient of this 2-D convolution stays XLA's 2-D one rather
    than going by kernel rows (see `_run`): with fewer than `ROWS_MIN_ROW_DEPTH`
    products per output of a row (input channels per group times kernel width: RGB and
    grey first layers), channels-first fewer than `ROWS_MIN_ROW_DEPTH_CHANNELS_FIRST`;
    channels-last with `ROWS_WIDE_MIN_CHANNELS` (input x output)
    channels per group on at most `ROWS_WIDE_MAX_POSITIONS` output positions;
    channels-first 3x3 from `ROWS_MID_MAP_MIN_IN_CHANNELS` channels
    at batch `ROWS_MID_MAP_MIN_BATCH` or more on maps of `ROWS_MID_MAP_POSITIONS`
    output positions; strided with an input of more than
    `ROWS_MAX_STRIDED_INPUT_ELEMENTS` elements (of stride 2, folded space-to-depth
    then, see `_space_to_depth_weight_gradient`); channels-last with fewer than
    `ROWS_MIN_ROWS_CHANNELS_LAST` output rows in the batch (batch times output height);
    or channels-last and strided, and unpadded or to fewer channels than it takes;
    channels-first to `ROWS_512_OUT_CHANNELS` from `ROWS_512_MIN_IN_CHANNELS` channels
    (per group) on maps of `ROWS_512_POSITIONS` output positions; to at most
    `ROWS_NARROW_MAX_OUT_CHANNELS` from `ROWS_NARROW_MIN_IN_CHANNELS` channels.

    Few products per row (training with a fixed cotangent, with the rule against
    without, settled, 15 interleaved runs, 2026-12-01, channels-first / channels-last):
    3->32 3x3 stride 2 @224 batch 8 (MobileNet's stem) 1.60x / 1.07x (by rows 0.60x /
    0.91x `lax`); 3->32 3x3 @112 1.74x / 1.39x (0.57x / 0.72x); 1->64 5x5 @96 1.19x /
    1.07x; 1->64 7x7 1.15x / 0.86x (without the rows 0.99x / 0.96x `lax`); 3->64 3x3
    @224 and 1->32 3x3 @128 0.99-1.03x. With 21 or more, rows won or tied (without
    them against with them): 3->64 7x7 stride 2 @224 (the stem) 0.90x / 0.96x, 3->64
    9x9 @96 0.85x / 0.91x; 16->64 3x3 @112 0.72x / 1.07x; but 8->64 3x3 @112 (24
    products) 1.11x / 1.32x in one run, not followed up.

    Mid-sized channels-first maps at batch 8 or more, on an AMD EPYC with AVX-512 (3x3
    padding 1, the same measurement, channels-first): 64->64 @56 batch 8 1.30x (without the rows
    against with them in three runs before: 1.43-1.64x; `auto` at 1.36x `lax`, from
    1.04x), batch 16 1.19x (1.32x); 128->64
    @56 1.26x; 64->128 @56 1.12x; 96->96 @56 1.04x; 64->64 @64 1.50x, @50 1.07x;
    128->128 @56 0.98x. Not at batch 4 (64->64 @56 0.95x), nor on larger maps (64->64
    @112 batch 2 0.73x; 16->64 and 32->32 @112 0.72-0.82x), nor on smaller ones (@28
    0.84x, @14 0.95x), nor for 5x5 (the notes' layers 0.93-0.96x). On an Intel Xeon
    (AVX-512, 2 cores) the same eight layers ran the other way: with the rows against
    without them, training with a fixed cotangent, 9 interleaved runs, 2026-12-01:
    1.37x, 1.49x, 1.41x, 1.35x, 1.72x, 1.25x, 1.62x, 1.63x (the weight gradient alone of
    64->64 @56 batch 8: XLA's 50 ms, by rows 18 ms), so there the rows stay. And on an
    AMD EPYC with AVX2 and no AVX-512 (`lax.avx2_only`) they ran the other way too:
    training (the value and both gradients, the cotangent passed in), by rows against
    XLA's, 11-15 interleaved runs, 2026-12-04 (`/tmp/s51/patchab2.py`): 64->64 @56
    batch 8 1.81x (the weight gradient alone 2.56x: 56.0 ms against 21.8), 128->128 @56
    1.71x, 64->128 @56 batch 16 1.73x, 96->96 @72 1.55x (with the cotangent a constant
    of the program, 1.68-2.40x, and 64->64 @64 1.68x, @90 2.19x). Two days before, on
    such a CPU, the weight gradient alone had read 102-174 ms against about 40 and the
    step 0.88-1.17x, at an older `auto`. So the rule holds on AMD's CPUs with AVX-512
    only.

    Many channels on small maps, channels-last: training with a fixed cotangent, 3x3
    padding 1, XLA's 2-D weight gradient against the rows, on an Intel Xeon (AVX-512, 2
    cores, settled, 15 interleaved runs, 2026-12-01): 512->512 @7 batch 8 1.21x (the
    full bench's row, at 0.84x `lax` by rows), batch 4 1.31x, batch 2 1.52x, batch 16
    1.04x; @4 batch 8 1.45x; @10 1.14x; @14 batch 2 1.13x; 768->768 @7 batch 4 1.81x;
    256->512 @7 1.20x; 512->256, 448->448 and 384->384 1.02-1.03x. With fewer channels
    the rows win: 256->256 @7 batch 8 0.88x, 128->128 @7 batch 16 0.87x, 256->256 @10
    1.07x. Channels-first they win too (512->512 @7 batch 8 0.87x).

    Few rows, channels-last: training with a fixed cotangent, by rows against without
    (padding k // 2, settled, 15 interleaved runs, 2026-12-01): batch 1 @10 5x5 96->256
    0.80x, 3x3 256->256 0.86x, 512->512 0.86x; @7 512->512 0.71x (auto at 0.85x `lax`,
    without the rows 1.20x); batch 1 @14 0.97-1.13x; batch 4 @7-10 0.95-1.25x (but 5x5
    96->256 @14 batch 4 0.67x, which keeps the rows: not followed up).
    Channels-first the same layers ran 0.98-1.01x at batch 1 and keep the rows. With
    the rule against without (11 runs, a fixed cotangent and through a ReLU), batch 1:
    @10 96->256 5x5 1.13x and 1.21x, 256->256 1.14x and 1.12x, 512->512 1.06x and
    1.30x; @7 512->512 1.26x and 1.18x; @8 384->384 1.18x and 1.05x; now 0.90-1.24x
    `lax` (0.77-1.05x before).

    Strided, a large input: by rows the step ran from 0.78x to 1.19x XLA's, and without
    them it is XLA's own. Training without the rows against with them (3x3 stride 2
    padding 1, batch 8, settled, 15 interleaved runs, 2026-12-01; a fixed cotangent,
    then through a ReLU): 128->128 @56 (3.2M elements) channels-first 1.33x and 0.86x
    (rows at 0.78x and 1.17x `lax`; two runs before, 1.43x and 1.68x with a fixed
    cotangent), channels-last 1.01x and 1.04x; 32->32 @94 channels-last (2.3M) 1.25x
    and 1.13x (rows at 0.81x and 0.89x `lax`); 64->64 @112 (6.4M) channels-first 0.94x
    and 0.83x, channels-last 1.15x and 1.01x; without the rows all ten at 0.98-1.04x
    `lax`. The weight gradient alone by rows, channels-last @112 batch 8: 32->32 0.35x,
    32->64 0.56x, 64->64 0.65x (but 32->32 @56 batch 32 1.24x). With 1.6M elements
    rows win or tie: 64->128 @56 channels-first 1.3-1.5x, 128->128 @56 batch 4
    1.0-1.2x. By rows against without, training through a ReLU
    (3x3 unless said, stride 2, batch 8 unless said, channels-last, minimum of 21
    shuffled runs): unpadded 256->64 @28 0.67x, 128->128 @56 0.86x, 64->256 @28 0.99x
    (15 runs); padded, to fewer channels, 256->64 @28 0.87x, 512->64 @28 batch 4 0.92x,
    5x5 256->32 @28 0.98x; padded to as many or more, 128->128 @56 1.02x, 256->256 @14
    1.16x, 64->128 @56 1.06x, 32->64 @112 batch 4 1.17x, the 7x7 stem 3->64 @224 1.32x.
    A first run (15 runs) read 0.73x, 0.85x, 0.92x and 0.80x on four of those layers,
    and 1.08x on the padded 256->64. Channels-first the rows won on the same strided
    layers (256->64 @28 unpadded 1.15x, 512->64 @28 1.21x).

    To 512 channels, channels-first, on maps of 10x10 to 16x16 (found by a random
    held-out layer, 192->512 3x3 @14 batch 1, training at 0.69-0.88x `lax`): both
    gradients of a cotangent that was a constant of the program, XLA's 2-D weight
    gradient against the rows (3x3 padding 1, 9-11 interleaved runs, Intel Xeon,
    2026-12-03, `/tmp/s37/rowsgrid.py`):
    @14 192->512 batch 1-4 0.97-1.01x, 0.86-0.90x, 0.91-0.92x; 512->512 batch 1 and 2
    0.88-0.90x, 0.81-0.83x; 160, 256, 320 and 384 ->512 batch 2 0.84x, 0.85x, 0.83x,
    0.83x; @12 256->512 and 512->512 batch 2 0.78x, 0.88x; @10 192->512 batch 4 0.86x,
    512->512 batch 2 1.01x; @16 256->512 and 512->512 batch 2 0.84x, 0.86x. The rows
    win from 128 channels (128->512 @14 1.33x) and to other counts (256->768 1.17x,
    192->448 and 384->448 1.18-1.23x, 384->384 1.15-1.33x; 1024 0.97-0.99x @7) and on
    larger maps (192->512 @28 batch 2 2.17x, 256->512 @20 1.19x, though 512->512 @20
    batch 1 0.81x); @7 they are even (512->512 batch 1-8 0.98-1.29x, 192->512 0.78-1.04x).
    Channels-last the same 512 layers ran 1.01-1.06x by rows. With the rule against
    without, the cotangent passed in (a training step returning the value and both
    gradients, then through a ReLU; `/tmp/s37/abmode.py`): 192->512 @14 batch 1 1.36x
    and 1.12x, 512->512 @14 batch 2 1.08x and 1.17x, 256->512 @12 batch 2 1.25x and
    1.21x.

    Few output channels from many, channels-last (found by a random held-out layer, a
    stride-1 transposed 3x3 512->32 @56 batch 2, training at 0.58x `lax`: its weight
    gradient by rows took 44 ms against XLA's 22): both gradients of a cotangent that
    was a constant of the program, by rows against XLA's 2-D weight gradient (3x3
    padding 1, 11 interleaved runs, Intel Xeon, 2026-12-03, `/tmp/s37/rowsgrid3.py`,
    channels-last / channels-first): 512->32 @56 batch 2 0.74x / 0.79x, @28 batch 4 0.84x / 0.96x;
    384->32 @56 batch 2 0.90x / 0.83x; 256->32 @56 batch 2 and 4 0.66x and 0.68x /
    1.26x and 1.17x, @28 batch 8 0.70x / 0.88x; 192->32 @56 batch 4 0.80x / 0.63x;
    160->32 0.92x / 1.05x; 256->24 @56 batch 4 0.69x / 0.91x; 1024->32 @14 batch 8
    0.95x / 0.94x; but 512->24 @28 batch 4 1.03x / 1.30x. With more output channels or
    fewer input channels the rows win: 512->48 and 512->64 @28 1.02-1.17x, 256->64 @56
    1.12x / 1.51x, 128->32 @56 batch 8 1.34x / 1.25x, 64->32 1.80x / 1.83x. With the
    rule against without, channels-last, the cotangent passed in (a training step
    returning the value and both gradients, then through a ReLU): 512->32 @56 batch 2
    1.45x and 1.48x, 256->32 @28 batch 8 1.17x and 1.25x, 192->32 @56 batch 4 1.04x and
    1.06x, 384->32 @56 batch 2 1.17x and 1.27x, 256->24 @56 batch 4 1.33x and 1.34x.
    Channels-first, where both gradients alone were mixed, a training step returning
    the value and both gradients of a fixed cotangent (the bench's) ran 0.65-0.97x by
    rows on eight of nine layers (a random held-out 5x5 192->32 @28 batch 4 layer,
    0.76x; 3x3 192->32 @28 batch 8 0.65x, @56 batch 4 0.66x; 256->32 @56 batch 4 0.76x,
    batch 2 0.97x; 512->32 @56 batch 2 0.84x; 512->24 @28 batch 4 0.89x; 256->24 @56
    batch 4 0.88x; but 384->32 @56 batch 2 1.06x), and through a ReLU 0.85-1.17x
    (geometric mean 1.02x), so there too XLA's (`/tmp/s37/abmode.py`, 11 interleaved
    runs). (XLA's three YNNPACK convolutions of a training step run at the same time,
    one per core, where the rows' five to seven convolutions take both cores each.)"""
    c_out, c_in_g = w_shape[:2]
    depth = ROWS_MIN_ROW_DEPTH if spec.channels_last else ROWS_MIN_ROW_DEPTH_CHANNELS_FIRST
    if c_in_g * w_shape[-1] < depth:
        return True
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    if (
        not spec.channels_last
        and c_out // spec.groups == ROWS_512_OUT_CHANNELS
        and c_in_g >= ROWS_512_MIN_IN_CHANNELS
        and ROWS_512_POSITIONS[0] <= math.prod(out) <= ROWS_512_POSITIONS[1]
    ):
        return True
    low, high = ROWS_MID_MAP_POSITIONS
    if (
        cpu_vendor() in ROWS_MID_MAP_VENDORS
        and not lax_impl.avx2_only()
        and not spec.channels_last
        and tuple(w_shape[2:]) == (3, 3)
        and c_in_g >= ROWS_MID_MAP_MIN_IN_CHANNELS
        and x_shape[0] >= ROWS_MID_MAP_MIN_BATCH
        and low <= math.prod(out) <= high
    ):
        return True
    if (
        spec.channels_last
        and c_in_g * (c_out // spec.groups) >= ROWS_WIDE_MIN_CHANNELS
        and math.prod(out) <= ROWS_WIDE_MAX_POSITIONS
    ):
        return True
    if (
        c_out // spec.groups <= ROWS_NARROW_MAX_OUT_CHANNELS
        and c_in_g >= ROWS_NARROW_MIN_IN_CHANNELS
    ):
        return True
    if max(spec.stride) > 1 and math.prod(x_shape) > ROWS_MAX_STRIDED_INPUT_ELEMENTS:
        return True
    if spec.channels_last and x_shape[0] * out[0] < ROWS_MIN_ROWS_CHANNELS_LAST:
        return True
    return (
        spec.channels_last
        and max(spec.stride) > 1
        and (c_out // spec.groups < c_in_g or all(p == (0, 0) for p in spec.padding))
    )


def cpu_vendor() -> str:
    """The host CPU's vendor, as Linux's ``/proc/cpuinfo`` names it ("AuthenticAMD",
    "GenuineIntel"), or "" where that cannot be read. A rule that the same XLA program
    measured the other way round on two CPUs applies only on the one where it won
    (`ROWS_MID_MAP_VENDORS`)."""
    return cpuinfo("vendor_id")


def _temporal_as_2d(spec: ConvSpec, w_shape) -> ConvSpec | None:
    """The 2-D spec of this 3-D convolution with its last two spatial dims merged into
    one, where the convolution is the identity along both (a dense ``(k, 1, 1)`` kernel,
    unit stride, no padding or dilation of the input there: R(2+1)D's and SlowFast's
    temporal layers), or None. Those dims then reshape into one for free, channels-first
    or channels-last, and the 2-D rules apply: ``(k, 1)`` over (depth, height x width).

    By 2-D against the 3-D rules (2-D planes of 1x1 convolutions) and XLA's 3-D
    convolution, ``k // 2`` padding, settled, up to 9 interleaved runs in 6 s (2-3 for
    the slowest, training at batch 8), 2026-12-01, forward
    and training with a fixed cotangent, speed-up over XLA's 3-D (channels-first /
    channels-last): 3 taps 144->64 @8x56x56 batch 8: 2.09x / 3.23x and 1.06x / 1.50x
    (the 3-D rules 0.97x / 0.66x and 0.71x / 0.91x); batch 2 2.32x / 4.41x and 1.69x /
    1.63x; 64->64 @16x28x28 batch 4 3.13x / 4.48x and 1.91x / 1.67x; 256->256 @8x14x14
    batch 2 1.46x / 1.63x and 1.83x / 1.75x (the 3-D rules 1.23x / 1.09x, 1.55x / 1.35x);
    5 taps 32->32 @16x56x56 batch 8 2.96x / 4.43x and 2.04x / 1.83x."""
    if spec.ndim != 3 or spec.groups != 1 or any(d != 1 for d in spec.lhs_dilation):
        return None
    identity = (
        w_shape[2] > 1  # (1x1x1 layers have rules of their own)
        and tuple(w_shape[3:]) == (1, 1)
        and spec.stride[1:] == (1, 1)
        and spec.padding[1:] == ((0, 0), (0, 0))
    )
    if not identity:
        return None
    return dataclasses.replace(
        spec,
        stride=(spec.stride[0], 1),
        padding=(spec.padding[0], (0, 0)),
        lhs_dilation=(1, 1),
        rhs_dilation=(spec.rhs_dilation[0], 1),
    )


def _shift_input_gradient_per_channel(spec: ConvSpec, w_shape) -> bool:
    """Whether `shift` runs the input gradient of this grouped layer (a convolution
    from the output channels, ``C_out / groups`` a group, back to the input) one
    broadcast product per channel (`shift.per_channel`: at most
    `shift.PER_CHANNEL_MAX_TERMS` products per output), rather than by a sum
    over each group's channels, one product a tap (`shift._channel_sum`; see `choose`)."""
    c_out_g = w_shape[0] // spec.groups
    return shift_impl.per_channel((w_shape[1] * spec.groups, c_out_g, *w_shape[2:]), spec.ndim)


def _few_inputs_wide(spec: ConvSpec, w_shape) -> bool:
    """Whether this dense unstrided 2-D layer from `FEW_INPUTS_MAX_CHANNELS` + 1 to
    `FEW_INPUTS_WIDE_MAX_IN_CHANNELS` input channels to at least
    `FEW_INPUTS_WIDE_MIN_OUT_CHANNELS` output channels, with at most
    `FEW_INPUTS_WIDE_MAX_TAPS` taps, takes `matmul`'s derivatives, and its value too
    channels-first and undilated (see `choose`).

    From a few more channels (4-16) to many (96 and more): XLA's convolution runs
    the value channels-first slowly (4->256 3x3 @56 batch 4 at 20 ms, matmul 2.7),
    and its derivatives lose in both layouts. Forward, matmul against the rules (3x3
    padded "same", channels-first, batch 4 unless said, 5 interleaved runs, AMD
    EPYC, 2026-12-05, `/tmp/s54/grid.py`): 4->128 @56 4.3x, 4->256 7.8x, @112 batch
    8 2.3x, batch 1 2.1x; 4->96 1.2x, 4.7x; 8->96 1.6x; 8->128 1.9x, @112 batch 2
    2.1x; 8->256 2.1x, @28 batch 8 1.7x; 12->128 1.6x, 1.7x; 16->128 1.2x, @28 batch
    8 1.00x, 0.91x; 16->256 1.2x, 2.4x. Not to fewer (4->32 0.29x, 4->64 0.25x,
    8->32 0.93x, 16->32 0.53x, 16->64 0.72-1.02x), nor strided (8->128 stride 2 @112
    0.43x), dilated (8->128 dilation 2 0.85x) or channels-last (8->128 0.93x), nor
    5x5 in training (below). Training with a fixed cotangent, all three by matmul
    against the rules (`/tmp/s54/vs.py`): 4->128 @112 batch 8 2.2x, 8->128 @56 2.2x,
    8->256 @28 batch 8 2.5x, 16->128 @28 batch 8 1.24x, 12->128 1.19x, 4->96 1.79x,
    16->256 1.2x; 5x5 8->128 0.70x (not taken). Channels-last or dilated, the rules'
    value and matmul's derivatives: 8->128 @56 1.27x, dilation 2 1.43x; 4->128 @112
    batch 8 channels-last 1.16x, 16->256 @28 batch 8 1.20x.

    Not the value on maps of fewer than `FEW_INPUTS_WIDE_VALUE_MIN_POSITIONS` output
    positions, found by a random sweep on an AMD EPYC with AVX-512 (Zen 5), 2026-12-07
    (`/tmp/s72/rand2.py 718`: 3x3 16->256 @7 batch 8 forward 0.59-0.70x `lax`). XLA's
    value against matmul's (`/tmp/s73/fiw.py`, 3x3 "same", channels-first, 11
    interleaved runs; forward, training with a fixed cotangent): @7 and @10, 16->256
    batch 8, 8->128 batch 8, 12->192 batch 32, 16->128 batch 4: 1.19-2.31x, 1.02-1.37x;
    @14 1.06-1.61x, 0.86-1.62x; @20 0.87-1.25x, 0.88-1.24x; @28 0.36-1.25x, 0.67-0.99x.
    On 12 random layers of 4-16 -> 96-384 channels on 4x4 to 10x10 maps, batch 1-64
    (`fiw2.py 1 12`), with the bound against without: forward 1.40x (geometric mean;
    0.85-2.18x, the losses on layers under 0.1 ms), training 1.01x (0.84-1.32x)."""
    return (
        spec.ndim == 2
        and spec.groups == 1
        and FEW_INPUTS_MAX_CHANNELS < w_shape[1] <= FEW_INPUTS_WIDE_MAX_IN_CHANNELS
        and w_shape[0] >= FEW_INPUTS_WIDE_MIN_OUT_CHANNELS
        and math.prod(w_shape[2:]) <= FEW_INPUTS_WIDE_MAX_TAPS
        and all(s == 1 for s in (*spec.stride, *spec.lhs_dilation))
    )


def _few_inputs_channels_first_value_by_shift(spec: ConvSpec, w_shape) -> bool:
    """Whether the value of this channels-first RGB first layer with a small kernel
    (`choose`: `matmul` in every role), within `_few_inputs_value_by_shift`'s bounds (2-3
    channels here, at most `FEW_INPUTS_SHIFT_MAX_MACS` multiply-adds per output
    position) and to at most `FEW_INPUTS_SHIFT_CHANNELS_FIRST_MAX_OUT_CHANNELS`, runs by
    `shift` on a CPU with AVX-512 (not `lax.avx2_only`), the derivatives staying
    `matmul`'s. On a
    Sapphire Rapids Xeon, `shift`'s value against `matmul`'s (`/tmp/s61/stemgrid.py`,
    `cfstem.py`, 7-9 interleaved runs, 2026-12-06), forward; training with a fixed
    cotangent: 3x3 stride 2 @224, batch 1 / batch 8: 3->4 2.29x / 2.29x; 0.89x /
    2.21x; 3->8 1.74x / 2.01x; 0.91x / 2.27x; 3->12 1.60x / 1.78x; 0.98x / 2.12x;
    3->16 1.29x / 1.30x; 0.97x / 1.97x; 3->16 stride 1 @112 batch 4 2.29x; 1.08x; 3->8
    @224 batch 2 2.76x; 1.61x; 2->16 stride 2 batch 4 1.24x; 1.02x; 4x4 3->12 stride 4
    (576 multiply-adds) 2.56x; 1.14x; 2x2 3->16 stride 2 @128 1.62x; 1.50x; 3->8 stride
    2 @64 batch 16 1.89x; 1.03x (training 1.32x over these 14, geometric mean). To 20
    channels it lost (3->20 stride 2 @224 batch 8 0.92x; 0.96x, batch 1 1.31x; 0.79x),
    and so did it to more (3->32 0.74-0.83x forward, 3->48 0.63-0.73x). CPUs with AVX2
    and no AVX-512 were not measured. With the rule against without it
    (`/tmp/s61/cfstem2.py`, 7 runs), on the 15 2-D layers it changes: forward 1.22-2.9x,
    training at batch 8 @224 1.05-2.17x (3->4 to 3->12 2.0-2.2x; MobileNetV3's 3->16
    at batch 16 1.13x) but on the smaller layers (1.3-4 ms) 0.81-1.06x (2->16 stride 2
    @224 batch 4 0.81x, 3->16 batch 1 0.83x, 3->8 stride 2 @64 batch 16 0.83x; 0.89-1.03x
    in the run before); X3D-like 3->12 1x3x3 stride (1, 2, 2) @16x112x112 batch 2 by
    planes 0.96x forward, 1.09x training."""
    return (
        _few_inputs_value_by_shift(spec, w_shape)
        and w_shape[0] <= FEW_INPUTS_SHIFT_CHANNELS_FIRST_MAX_OUT_CHANNELS
        and not lax_impl.avx2_only()
    )


def _few_inputs_narrow_by_xla(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether this channels-first 2-D layer of stride 2 from 2-3 channels to at most
    `FEW_INPUTS_NARROW_MAX_OUT_CHANNELS`, which `choose` would run by `matmul` (RGB and
    grey first layers), runs by the rules after that one instead (XLA's convolution,
    `shift`'s value within `_few_inputs_value_by_shift`), as a whole layer (not a 3-D
    one's planes): with 16 or more taps, or on at most `FEW_INPUTS_NARROW_MAX_ROWS`
    output rows (batch times output positions).

    `matmul`'s patches were measured on stems at 112-224 (`choose`); on smaller layers
    and 4x4 kernels XLA's convolution won. Without `matmul` against with it (channels-
    first, 9 interleaved runs, Sapphire Rapids Xeon with AVX-512, 2026-12-06,
    `/tmp/s63/fewgrid.py`, `fewgrid2.py`; forward / training with a fixed cotangent):
    4x4 stride 2 unpadded 3->16 @14-112 batch 2-8 (72-24,200 rows) 1.20-2.95x / 0.88-2.18x
    on eight layers (@28 batch 8 1.90x / 2.18x, @112 batch 8 1.50x / 2.14x); 4x4 padded
    3->8 @56-224 0.96-1.06x / 1.09-1.34x; 3x3 stride 2 padded 3->16 on 98-1,568 rows
    0.91-1.41x / 1.01-1.78x (five layers; the value `shift`'s either way), 2->8 on
    196-784 rows 0.79-1.06x / 1.37-1.44x (four; `shift`'s value, 0.1 ms). Not 3x3 on
    more rows (3->16 on 6,272-25,088 rows 1.02-1.09x / 0.83-0.96x), nor to more channels
    (3->64 from 5,832 rows 0.56-0.92x / 0.28-0.90x, on 1,352-1,568 rows 0.92-1.23x /
    0.70-1.10x; 4x4 padded 3->24 to 3->48 training 0.62-1.08x; 2->32 3x3 on 196-784 rows
    0.63-0.73x forward), though 3->64 on at most 400 rows gained 1.03-1.98x /
    0.96-2.22x. Looked for after a random sweep's row
    (`/tmp/s63/rand.py 632`: 2->64 3x3 stride 3 @7 batch 2 training at 0.58-0.70x
    `lax`, 0.1 ms), which this rule leaves as it was (64 channels, stride 3)."""
    return (
        spec.ndim == 2
        and not spec.channels_last
        and spec.groups == 1
        and spec.stride == (2, 2)
        and 2 <= w_shape[1] <= FEW_INPUTS_MAX_CHANNELS
        and w_shape[0] <= FEW_INPUTS_NARROW_MAX_OUT_CHANNELS
        and (
            math.prod(w_shape[2:]) >= FEW_INPUTS_NARROW_MIN_TAPS
            or _rows(spec, x_shape, w_shape) <= FEW_INPUTS_NARROW_MAX_ROWS
        )
    )


def _few_inputs_cliff(spec: ConvSpec, x_shape, w_shape, nested: bool = False) -> bool:
    """Whether the channels-last value of this RGB or grey first layer with a small
    kernel (`choose`) runs by `shift` off XLA's cliff: to
    `FEW_INPUTS_CLIFF_OUT_CHANNELS` (inclusive) output channels, on more than
    `FEW_INPUTS_CLIFF_MAX_SMALL_ROWS` output rows (batch x positions) unless ``nested``
    (`choose`: the 2-D planes of a 3-D stem, which `_run` does not pad), measured on an Intel
    Xeon (3x3 stride 2 @224 batch 8, by `matmul` against XLA's: 3->24 5.2-5.9x, 3->32
    2.0-2.3x; see `choose`). By `shift` since 2026-12-06: against `matmul`'s value
    (`auto` before), forward / training with a fixed cotangent, channels-last, 9
    interleaved runs, Sapphire Rapids Xeon with AVX-512 (`/tmp/s61/cliff.py`), 3x3
    stride 2 @224: 3->17 to 3->35 at batch 1 2.02-2.80x / 0.84-1.15x, at batch 8
    1.46-3.57x / 0.95-1.31x; 3->32 stride 2 @112 batch 16 2.32x / 1.11x, stride 1
    @112 batch 4 2.47x / 1.18x; 3->24 @56 batch 8 2.10x / 1.16x; 2->24 stride 2 @224
    batch 4 2.42x / 0.83x; 4x4 3->32 stride 2 @128 1.56x / 1.55x, stride 4 @224 2.15x
    / 1.02x; 2x2 3->24 stride 2 3.55x / 0.95x (the training's derivatives are XLA's
    either way). Not
    on a CPU with AVX2 and no AVX-512 (`lax.avx2_only`), where XLA's convolution has
    no such cliff and `matmul`'s value lost. Found by a sweep of realistic layers
    (`/tmp/s59/real.py 601`: MobileNet's stem, 3->32 3x3 stride 2 @224 batch 1
    channels-last, 0.65 ms forward by `matmul`, XLA's 0.45, PyTorch 0.22). There, 3x3
    stride 2 @224 channels-last, `auto` with the rule ran 0.37-0.90x `lax` forward
    (3->20, 3->24, 3->32 at batch 1-8, 9 interleaved runs, AMD EPYC, 2026-12-05). Without
    it against with it (`/tmp/s59/force.py`, `gen.py` `gen70`: 16 random layers from
    1-3 channels to 17-35, 3x3 and 4x4, strides 1-4, @56-224, batch 1-8, 7 interleaved
    runs, 15 for a recheck), forward 1.34x (geometric mean; 3->35 3x3 @224 batch 4 5.0x,
    3->28 4x4 @224 batch 2 2.1x), slower on two (3->32 4x4 stride 2 @112 batch 2 0.65x,
    2->32 @56 batch 1 0.69x: 0.54 and 0.15 ms without, 0.35 and 0.10 with). The
    derivatives stay XLA's either way.

    Not on small maps of whole 2-D layers, where the rules' value is as fast or faster
    (XLA's convolution of the input padded to 4 channels to at most 32 output channels,
    `_odd_input_channels`; `shift`'s to 17-22 from 3 channels with 3x3 kernels,
    `_few_inputs_value_by_shift`): found by a random sweep on the Sapphire Rapids Xeon
    (`/tmp/s65/rand.py 6701`: 3->32 3x3 stride 2 @14 batch 2, 98 rows, training 0.73x
    `lax`, 0.108 ms against 0.078). Without the rule against with it, forward /
    training, 15-21 interleaved runs, 2026-12-06 (`/tmp/s67/cliff*.py`), 3->23 to 3->35
    3x3 and 4x4 layers at strides 1-2 @14-112, batch 1-8: on 98-2,048 rows 1.01-1.42x /
    0.88-1.46x over 14 layers (3->32 stride 2 @14 batch 8 1.42x / 1.32x, 3->32 4x4
    stride 2 @32 batch 4 1.04x / 0.90x); on 2,304-3,200 rows 0.88-1.16x / 0.85-1.37x
    over four; from 4,096 rows 0.60-0.81x / 0.57-1.03x over three (3->24 stride 2 @64
    batch 4 0.62x / 0.62x, 3->32 stride 2 @56 batch 8 0.81x / 0.57x); 4x4 layers from
    2-3 channels to 17-24 on 256-1,568 rows (`cliff4.py`, 15 runs) 0.95-1.47x /
    0.86-1.43x over seven. The 2-D planes of a 3-D stem keep the rule at any size: no
    padding reaches them."""
    low, high = FEW_INPUTS_CLIFF_OUT_CHANNELS
    rows = _rows(spec, x_shape, w_shape)
    return (
        low <= w_shape[0] <= high
        and (nested or rows > FEW_INPUTS_CLIFF_MAX_SMALL_ROWS)
        and not lax_impl.avx2_only()
    )


def _single_input_by_shift(spec: ConvSpec, w_shape) -> bool:
    """Whether this dense convolution from one input channel (a depthwise one with a channel
    multiplier, as one group) has at most `SINGLE_INPUT_SHIFT_MAX_PRODUCTS` products per
    input position (``taps * C_out``; in 3-D `SINGLE_INPUT_SHIFT_MAX_PRODUCTS_3D`), more
    than one tap and an undilated input, where `choose` runs its value by shift-and-add,
    and in 1-D and 2-D with at most `SINGLE_INPUT_SHIFT_DERIVATIVES_MAX_PRODUCTS` its
    derivatives too (`_single_input_shift_derivatives`; else the rules', `matmul`'s
    where `_single_input_derivatives_by_matmul` says). XLA's CPU convolution from one
    channel runs at 1-2 GFLOP/s: a random layer, 5x5 1->1 @224 batch 8 channels-last,
    ran 23.6 ms forward, PyTorch 4.1.

    Against the rules before (AMD EPYC, AVX2, one malloc arena, 5-7 interleaved runs,
    2026-12-05, `/tmp/s53/grid.py`; padding k // 2, batch 8 unless said;
    channels-first / channels-last), forward: 5x5 1->1 @224 45x / 49x; 3x3 1->1 @224
    9.8x / 0.93x (1.2 ms); 7x7 1->1 @128 24x / 32x; 3x3 1->3 @128 4.4x / 3.7x, 1->8 3.8x
    / 15x, 1->16 @112 2.5x / 11x, 1->32 @112 batch 4 1.7x / 3.2x; 5x5 1->4 @128 batch 4
    13x / 15x; 3x3 stride 2 1->4 @224 channels-last 14x; 1->48 dilation 2 @224 batch 2
    2.1x; 1-D k9 1->8 @16000 7.5x / 3.3x. With more products: 3x3 1->64 @64 batch 4 1.3x
    / 1.8x, stride 2 @224 0.78x / 1.7x; 5x5 1->32 @28 1.0x / 0.76x; raw audio 1->512 k10
    stride 5 0.87x, 1->128 k80 stride 4 0.26x (`matmul`'s per image there). Training
    with a fixed cotangent, every role by shift: 3x3 1->1 @224 18x / 8.8x, 5x5 9.8x /
    11x, 7x7 5.9x / 5.0x, 1->2 7.4x / 6.0x, 3x3 1->3 @128 2.0x / 6.1x, 1->8 2.0x / 3.7x,
    5x5 1->4 6.3x / 3.1x, stride 2 1->4 @224 4.8x channels-last, 1-D k9 1->8 4.1x /
    2.1x; but 3x3 1->16 0.20-0.30x, 1->32 0.14-0.20x, 1->64 0.25-0.38x, where shift's
    value with the rules' derivatives ran 0.83-1.50x (1->16 1.09x / 1.20-1.50x, 1->32
    1.10x / 0.83-0.99x; 1->64, past the rule, 1.09x / 1.44x). In 3-D the value alone, up to
    `SINGLE_INPUT_SHIFT_MAX_PRODUCTS_3D` products (3x3x3, 7 interleaved runs; forward,
    training with a fixed cotangent): 1->8 @16x64x64 batch 2 4.4x / 7.0x, 1.06x / 1.39x;
    1->16 5.8x / 5.7x, 1.09x / 1.32x; 1->32 batch 4 3.3-3.7x / 3.8-4.2x, 1.12-1.15x /
    1.51-1.91x; 1->4 @16x112x112 batch 2 3.7x / 8.3x, 1.01x / 1.81x; 1->32 @32x32x32
    batch 1 2.4x / 2.3x, 0.98x / 1.38x (once 0.84x, 1->8 channels-first); shift's
    derivatives lost there (1->8 0.16-0.20x)."""
    taps = math.prod(w_shape[2:])
    limit = (
        SINGLE_INPUT_SHIFT_MAX_PRODUCTS_3D if spec.ndim == 3 else SINGLE_INPUT_SHIFT_MAX_PRODUCTS
    )
    return (
        spec.groups == 1
        and w_shape[1] == 1
        and 1 < taps
        and taps * w_shape[0] <= limit
        and all(d == 1 for d in spec.lhs_dilation)
    )


def _single_input_value_by_shift_wide(spec: ConvSpec, w_shape) -> bool:
    """Whether this whole dense 2-D layer from one input channel, past
    `_single_input_by_shift`'s products (``taps * C_out`` over
    `SINGLE_INPUT_SHIFT_MAX_PRODUCTS`, at most `SINGLE_INPUT_SHIFT_WIDE_MAX_PRODUCTS`),
    undilated (input and kernel), channels-last or unstrided, runs its value by
    shift-and-add on a CPU with AVX-512 (not `lax.avx2_only`), the derivatives the
    rules', unless the rules run it by `matmul` (`_single_input_value_by_matmul`,
    whose patches its derivatives share). Found by a sweep of realistic layers
    (`/tmp/s61/oracle.py 612`: ESPCN's first layer, 1->64 5x5 @128 batch 8
    channels-first, 26 ms forward by XLA's convolution, `shift` 9.7, PyTorch 12).
    `shift`'s value wherever the rules' was not, against `auto`'s before,
    channels-first / channels-last, padded "same", 7 interleaved runs, Sapphire Rapids
    Xeon, 2026-12-06 (`/tmp/s61/grey.py`), forward; training with a fixed cotangent:
    1->64 5x5 @128 batch 8 2.60x / 1.42x; 1.36x / 1.21x; 1->64 3x3 @128 batch 2 1.22x /
    1.37x; 1.17x / 1.48x; 1->32 5x5 @224 batch 4 1.28x / 1.74x; 1.75x / 1.43x; 1->128
    3x3 @64 batch 4 1.27x / 1.72x; 1.50x / 1.14x; 1->16 9x9 @128 batch 4 2.71x /
    2.44x; 1.15x / 1.20x; 1->64 5x5 @28 batch 16 1.87x / 1.10x; 1.05x / 1.08x; 1->256
    3x3 @32 batch 8 (2304 products) 0.97x / 1.35x; 1.08x / 1.04x. Strided,
    channels-last only: 1->48 3x3 stride 2 @224 batch 8 1.97x; 2.15x, 1->96 4x4 stride
    4 1.48x; 1.16x, where channels-first lost (0.98x, 0.98x; 0.83x, 0.85x). Past the
    bound 1->64 7x7 stride 2 @224 (3136 products) 0.61x / 0.92x; 0.95x / 1.07x. On
    AVX2 CPUs without AVX-512, with more products than `_single_input_by_shift`'s, it
    went both ways (there: 3x3 1->64 @224 stride 2 0.78x channels-first), and the rules
    stay as measured there. Dilated kernels were not measured. Where the rules' value
    is `matmul`'s, `shift`'s trained slower (15 runs, twice, channels-first): 1->128
    3x3 @64 batch 4 0.93-0.97x (forward 1.35x), 1->256 3x3 @32 batch 8 0.89-0.92x
    (forward 0.95-1.03x); so there `matmul`'s stays (as it does on channels-first
    kernels of at most 16 taps, the RGB and grey first layers' rule). With the rule in
    place against without it (`/tmp/s61/grey2.py`, 7 runs; 15 for rechecks), on the 14
    layers whose program it changes: forward 1.08-5.9x (ESPCN's 2.6x, 1->32 5x5 @224
    batch 4 channels-first 5.9x, U-Net's 1->64 3x3 @128 batch 2 channels-last 1.96x,
    MNIST's 1->32 5x5 @28 batch 64 2.0x / 1.4x), training 1.08-1.64x but MNIST's
    channels-first 0.83x in one run (1.9x in two 15-run rechecks, 10.5 ms against
    20.2)."""
    c_out, c_in, *kernel = w_shape
    products = math.prod(kernel) * c_out
    return (
        spec.ndim == 2
        and spec.groups == 1
        and c_in == 1
        and SINGLE_INPUT_SHIFT_MAX_PRODUCTS < products <= SINGLE_INPUT_SHIFT_WIDE_MAX_PRODUCTS
        and all(d == 1 for d in (*spec.lhs_dilation, *spec.rhs_dilation))
        and (spec.channels_last or all(s == 1 for s in spec.stride))
        and not lax_impl.avx2_only()
    )


def _few_inputs_value_by_shift(spec: ConvSpec, w_shape) -> bool:
    """Whether this whole 2-D layer's value runs by shift-and-add: dense, from 2 to
    `FEW_INPUTS_SHIFT_MAX_IN_CHANNELS` (4) input channels, more than one and at most
    `FEW_INPUTS_SHIFT_MAX_TAPS` taps, at most `FEW_INPUTS_SHIFT_MAX_MACS` multiply-adds
    per output position (``taps * C_in * C_out``), no input dilation; `choose` takes it
    for whole float32 layers whose value the rules leave to XLA's convolution (not
    `_output_taps`', `matmul`'s first layers from RGB), the derivatives staying the
    rules'. XLA's CPU convolution from so few channels runs at a few GFLOP/s
    (`_single_input_by_shift` for one channel). Found by a random sweep
    (`/tmp/s58/rand.py 3535`: 3->8 3x3 dilation 2 @224 batch 2 channels-first, forward
    6.5 ms by XLA's convolution, PyTorch 0.67). `shift` against `auto` before, forward,
    5 interleaved runs, AMD EPYC with AVX2, 2026-12-05 (`/tmp/s58/shiftgrid.py`,
    `gen.py` `gen62(1, 30)`: dense 1-2-D layers from 2-8 channels to 2-64, 3x3-7x7,
    strides 1-2, dilations 1-2, batch 1-8 @56-224, both layouts): on the ten 2-D layers
    within these bounds 1.29-12.3x (2->8 3x3 @224 batch 4 channels-last 10.2x, 3->8
    dilation 2 @224 9.5x, 5x5 3->8 @224 batch 8 4.5x, 3->16 @128 3.7x, 2->2 @56 batch 1
    1.29x); with more multiply-adds 0.41-2.09x (8->16 3x3 stride 2 @224 channels-last
    0.41x, 8->16 @112 0.98x, 3->32 @112 1.04x); 7x7 kernels 0.01-0.04x; 1-D 0.48-3.9x
    (under 1x on three of nine): not those. With the rule against without over 16 random
    2-D layers within the bounds from 2-8 channels (`gen62(2, 80)`, `togr.py`, 5 runs,
    two runs): forward 1.21-34.9x on the eleven whose program it changed (4->2 5x5
    dilation 2 @56 batch 4 21-35x, 3->8 5x5 dilation 2 @224 batch 8 9.0-9.5x, 3->8 3x3
    @224 channels-last 4.4x), the value with both gradients 1.03-2.49x on the nine from
    2-4 channels; but from 8 channels 8->4 3x3 stride 2 @224 batch 8 trained with the
    value at 0.52x (9 runs, both layouts; forward 1.57x and 2.11x), and 8->8 @224 batch
    1 gained 1.07-1.14x: hence at most 4 input channels. The other five rows, whose
    program the rule leaves (`output_taps`' or `matmul`'s value), read 0.76-1.21x: this
    machine's noise. Over `_odd_input_channels`' padded channels, which it takes the
    place of (3->20 3x3 dilation 2 @224 batch 2, 5 runs): forward 1.63x / 1.04x
    channels-first / channels-last, the value with both gradients 1.43x / 1.07x."""
    c_out, c_in, *kernel = w_shape
    taps = math.prod(kernel)
    return (
        spec.ndim == 2
        and spec.groups == 1
        and 2 <= c_in <= FEW_INPUTS_SHIFT_MAX_IN_CHANNELS
        and 1 < taps <= FEW_INPUTS_SHIFT_MAX_TAPS
        and taps * c_in * c_out <= FEW_INPUTS_SHIFT_MAX_MACS
        and all(d == 1 for d in spec.lhs_dilation)
    )


def _single_input_shift_derivatives(spec: ConvSpec, w_shape) -> bool:
    """Whether `choose` runs the derivatives of this layer from one input channel by
    shift too (see `_single_input_by_shift`)."""
    products = math.prod(w_shape[2:]) * w_shape[0]
    return (
        _single_input_by_shift(spec, w_shape)
        and spec.ndim <= 2
        and products <= SINGLE_INPUT_SHIFT_DERIVATIVES_MAX_PRODUCTS
    )


def _single_input_derivatives_by_matmul(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether this dense convolution from one input channel, with 2 to
    `SINGLE_INPUT_MATMUL_MAX_TAPS` taps and an undilated input, not 1-D channels-last
    (the end of this note), whose derivatives `_single_input_by_shift` leaves to the
    rules, takes `matmul`'s (the patches' products: ``taps`` columns from one channel)
    to at least `SINGLE_INPUT_MATMUL_MIN_OUT_CHANNELS` output channels, or with at most
    `SINGLE_INPUT_MATMUL_MAX_PATCHES` patch elements (batch x output positions x taps).
    XLA's CPU convolutions from one channel, and their derivatives (a weight gradient
    whose contraction runs over one channel's positions, an input gradient to one
    channel), run far below the machine's rate: a random 3-D layer 1->256 3x3x3 dilation
    2 @16^3 batch 2 trained in 13.9 ms channels-first (XLA 723 ms, `matmul` 3.6) and
    17.7 channels-last, its derivatives by 2-D planes.

    Training with a fixed cotangent, `matmul`'s derivatives against the rules before
    (random 1-D, 2-D and 3-D layers from one channel to 16-512, kernels 3-15, strides
    1-2, dilations 1-2, both layouts, batch 1-16; 5 interleaved runs, AMD EPYC with
    AVX2, 2026-12-05, `/tmp/s57/singvar*.py`): with at most 2^19 patch elements
    0.96-13.7x on 29 layers (median 1.59x; 0.96-0.97x on three 3x3 and k3 layers to
    16-64 channels); with more, to at least 128 channels 0.91-11.5x on 23 (median 1.91x;
    0.91x and 0.98x on 3x3 layers to 128 @224 batch 16), but to 16-64 channels
    0.56-2.41x on 8, under 1x on four (3x3 stride 2 to 32 @224 batch 16 0.56x, 3x3x3 to
    64 @32^3 0.70x, 7x7 dilation 2 to 32 @224 0.78x, 3x3 to 64 @112 batch 8 0.98x). The
    raw-audio suite layer, 1->128 k80 stride 4 @16000, trained 1.1-1.5x faster so, but
    compiled in 1.4-1.5 s against 0.08-0.5 s (a slice per tap), as did 5x5x5 kernels
    (2.2 s; their training 0.2-3.0x): hence the taps' bound. In 1-D channels-last the
    strided raw-audio layers trained slower so (1->512 k10 stride 5 @16000 batch 2 and 8
    0.60x and 0.70x, 1->128 k12 stride 4 0.69x; 11 interleaved runs), unstrided ones
    1.04-1.08x (2.4-2.5x on two that take 0.1-0.2 ms), so it keeps to the rules there.
    The value by `matmul` too went both ways (0.22-3.8x), so it stays the rules' but for
    `_single_input_value_by_matmul`'s. For whole layers only (`choose`'s ``nested``): a
    transposed layer's sub-pixel phases, convolutions from one channel, took it there
    too, and trained 0.51x and 0.64x channels-last by it (1->64 3x3 output padding 1
    @32 and 1->128 4x4 @16, stride 2, batch 8; 1.09-1.14x channels-first; 9 interleaved
    runs)."""
    if spec.groups != 1 or w_shape[1] != 1 or any(d != 1 for d in spec.lhs_dilation):
        return False
    if spec.ndim == 1 and spec.channels_last:
        return False
    taps = math.prod(w_shape[2:])
    if not 1 < taps <= SINGLE_INPUT_MATMUL_MAX_TAPS:
        return False
    if _single_input_shift_derivatives(spec, w_shape):
        return False
    return w_shape[0] >= SINGLE_INPUT_MATMUL_MIN_OUT_CHANNELS or (
        _patch_elements(spec, x_shape, w_shape) <= SINGLE_INPUT_MATMUL_MAX_PATCHES
    )


def _single_input_weight_gradient_by_xla(spec: ConvSpec) -> bool:
    """Whether a channels-last 2-D layer that `_single_input_derivatives_by_matmul` takes
    keeps XLA's weight gradient (the rules' ``"lax"``), `matmul`'s input gradient only: on
    a CPU with AVX-512 (not `lax.avx2_only`, where the rule was measured as a whole); not
    in 3-D (not measured).

    Found by a random sweep on a Sapphire Rapids Xeon (`/tmp/s65/rand.py 6501 50 7`):
    1->48 5x5 stride 2 @56 batch 2 channels-last trained at 0.76-0.89x `lax` (21
    interleaved runs), its weight gradient by `matmul` 0.24 ms against XLA's 0.14 (input
    gradient 0.23 against 0.22). Each derivative alone, `matmul`'s against XLA's (9
    interleaved runs, random layers from one channel to 16-128, 3x3-7x7, stride 1-2 @28-224,
    batch 1-8, those whose derivatives the rule took; `/tmp/s65/si1.py 1 24`):
    channels-last, the weight gradient 0.40-1.02x on 16 layers (under 0.8x on 13), the
    input gradient 0.86-2.38x; channels-first, the weight gradient 0.99-2.53x on 6 layers,
    so there it stays `matmul`'s. Training with it against without (9 interleaved runs, a
    fixed cotangent and through a ReLU, fresh random channels-last layers from one channel
    to 16-256, 2x2-7x7, stride 1-4, batch 1-16 @28-224, `/tmp/s65/si2.py 2 30`): on the 16
    it changed, 0.99-1.80x and 0.85-4.18x, geometric means 1.33x and 1.38x (under 1x
    through the ReLU on three of 0.1-4 ms: 0.85x, 0.90x, 0.94x)."""
    return spec.channels_last and spec.ndim == 2 and not lax_impl.avx2_only()


def _rows(spec: ConvSpec, x_shape, w_shape) -> int:
    """The rows of this canonical convolution's products: batch x output positions."""
    return x_shape[0] * math.prod(spec.out_spatial(x_shape[2:], w_shape[2:]))


def _patch_elements(spec: ConvSpec, x_shape, w_shape) -> int:
    """The elements of the whole batch's patch matrices (`matmul.patch_bytes`)."""
    return x_shape[0] * matmul_impl.patch_bytes(x_shape, w_shape, spec, 1)


def _single_input_value_by_matmul(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether this convolution from one input channel, which takes `matmul`'s derivatives
    (`_single_input_derivatives_by_matmul`) and not shift's value
    (`_single_input_by_shift`), takes `matmul`'s value too: to at least
    `SINGLE_INPUT_MATMUL_MIN_OUT_CHANNELS` channels with at most
    `SINGLE_INPUT_MATMUL_VALUE_MAX_PATCHES` patch elements. Forward against the rules
    (the measurement of `_single_input_derivatives_by_matmul`): 0.84-3.8x on 21 layers
    (geometric mean 1.85x; under 1x only on 3x3 dilation 2 to 128 @28 batch 4
    channels-last, 0.84x; 1-D k15 to 128-512 3.4-3.8x, a random 3-D 1->256 3x3x3
    dilation 2 @16^3 batch 2 3.3-3.9x `lax`, 3.5-4.8x in a second run); training,
    against `matmul`'s derivatives alone, 0.76-1.21x (geometric mean 1.01x). To fewer
    channels 0.22-3.2x on 24 layers, and with more patch elements 0.33-2.6x on 15
    (channels-last from 7M 0.33-0.50x on all six). And on at least
    `SINGLE_INPUT_MATMUL_VALUE_MIN_ROWS` rows (batch times output positions): on fewer,
    the product's fixed cost loses (found by a random sweep, `/tmp/s59/rand.py 3838`:
    1->128 5x5 @7 batch 8 channels-first, 0.33 ms forward, XLA's 0.14). XLA's value
    against `matmul`'s (`/tmp/s59/force.py`, `gen.py` `gen71`: 20 random layers from one
    channel to 128-512, 3x3-7x7 @5-40, batch 1-16, both layouts, 11 interleaved runs,
    AMD EPYC, 2026-12-05): under 512 rows 1.24-2.86x on six of seven (8x5x5 to 128
    2.86x, 2x7x7 to 512 1.39x; 8x7x7 to 512 0.82x); from 512 rows 0.40-1.32x, under 1x
    on ten of thirteen (16x40x40 to 128 0.40x)."""
    return (
        _single_input_derivatives_by_matmul(spec, x_shape, w_shape)
        and not _single_input_by_shift(spec, w_shape)
        and w_shape[0] >= SINGLE_INPUT_MATMUL_MIN_OUT_CHANNELS
        and _patch_elements(spec, x_shape, w_shape) <= SINGLE_INPUT_MATMUL_VALUE_MAX_PATCHES
        and _rows(spec, x_shape, w_shape) >= SINGLE_INPUT_MATMUL_VALUE_MIN_ROWS
    )


def _pointwise_groups_by_shift(spec: ConvSpec, w_shape) -> bool:
    """Whether this grouped 1x1 convolution (undilated input, any dims, stride and
    padding) has at most `POINTWISE_GROUPS_SHIFT_MAX_IN_CHANNELS` input channels per
    group, where `choose` runs its value by shift-and-add (one broadcast product per
    input channel of a group, fused into one loop) and, channels-last or with more
    than `DENSE_GROUPS_MAX_GROUPS` groups, its input gradient by shift too (the same sum
    over the output channels) and its weight gradient by `matmul` (one product per group
    over the rows); channels-first with fewer groups, the derivatives stay the dense
    groups'. Groups of at most `SHIFT_MAX_CHANNELS` input x output channels take the
    shift rules whatever the kernel (see `choose`).

    A random layer found it: 32 groups of 16->8 @49 batch 4 channels-last ran XLA's
    grouped value in 12.5 ms (PyTorch 3.4 ms) and trained in 72 ms (PyTorch 13). Against
    the rules before (AMD EPYC, AVX2, one malloc arena, 5-9 interleaved runs,
    2026-12-05, `/tmp/s53/grid.py`; batch 8 unless said, channels-first /
    channels-last), forward: 32 groups of 16->8 @49 batch 4 5.2x / 8.7x, of 8->16 @28
    3.9x / 7.1x, of 16x16 @28 3.1x / 5.4x, stride 2 @56 4.3x / 3.0x; 16 of 16x16 @56
    batch 4 1.5x / 3.6x; 8 of 16->64 @56 batch 4 2.2x / 2.1x; 4 of 16x16 @56 1.7x / 4.2x;
    64 of 16x16 @14 3.8x / 2.5x; 16 of 8->32 @56 batch 4 1.7x / 3.7x; 2 of 16->128 @56
    batch 4 1.7x / 1.0x; 4 of 8->64 @56 2.6x / 1.6x; 8 of 16x16 @7 1.4x / 1.9x; 1-D
    32 of 16->8 @1000 2.9x / 10x; 3-D 32 of 16->8 @8x28x28 batch 2 2.9x / 7.3x, 8 of
    16x16 1.2x / 3.7x. With 32 or 64 input channels a group shift lost (0.31-0.79x on 7
    of 10 rows). Training with a fixed cotangent, shift's value, shift's input gradient
    and matmul's weight gradient: channels-last 1.2-7.0x on 24 rows (32 groups of 16->8
    @49 3.1x, of 8->16 @28 7.0x; 2 of 16->128 @56 1.3x; 4 of 8->64 4.4x; 1-D 3.3x, 2.8x;
    3-D 2.0x, 1.9x); channels-first with more than 16 groups 2.1-6.2x on 8 rows (32 of
    16x16 @28 4.4x). Channels-first with at most 16 groups those derivatives lost on
    some rows (2 of 16->128 @56 0.35-0.44x, 4 of 16->32 @28 0.82-0.87x, 8 of 16x16 @7
    0.82x), shift's value with the dense groups' derivatives did not (0.95-2.6x on 11
    rows)."""
    return (
        spec.groups > 1
        and 1 < w_shape[1] <= POINTWISE_GROUPS_SHIFT_MAX_IN_CHANNELS
        and math.prod(w_shape[2:]) == 1
        and all(d == 1 for d in spec.lhs_dilation)
    )


def _pointwise_many_groups(spec: ConvSpec, w_shape) -> bool:
    """Whether this value not differentiated, a grouped 2-D channels-last 1x1
    convolution of at least `POINTWISE_MANY_GROUPS` groups that widen (or twice as
    many groups), runs as XLA's grouped convolution where the rules chose dense groups
    or the groups loop (`_run` checks that; groups of at most 16 input channels, which
    `shift` takes since (`_pointwise_groups_by_shift`), were the first measured).
    Forward, with the rule against without it (11 interleaved runs, Sapphire Rapids
    Xeon, 2026-12-03; a random layer, 16 groups of 16->32 @56 batch 4, ran 0.41-0.83x
    `lax` without it): 16 groups of 16->32 @56 batch 4 2.3x,
    @28 batch 8 1.37x; 32 groups of 8->16 @56 batch 4 1.75x, of 16->16 @28 batch 8
    1.76x; but 16 groups of 32->32 @28 batch 8 0.93x, of 16->16 @56 batch 4 0.89x, of
    64->64 @14 batch 8 1.00x. With 32 input channels a group (batch 8, 11 interleaved
    runs, AMD EPYC, 2026-12-05, `/tmp/s53/pmg.py`): 32 groups of 32x32 @14 2.21x, @28
    1.73x; 16 of 32->64 @28 2.97x; 64 of 32x32 @14 1.90x; but 32 of 64x64 @14 0.97x.
    Under differentiation the rules stay: with XLA's grouped value and `matmul`'s
    derivatives training through a ReLU ran 0.28-0.73x on six of those layers (1.21x on
    32 groups of 16->16); XLA's grouped value with the rules' derivatives was not
    measured."""
    c_out_g, c_in_g = w_shape[0] // spec.groups, w_shape[1]
    return (
        spec.ndim == 2
        and spec.channels_last
        and math.prod(w_shape[2:]) == 1
        and (
            spec.groups >= 2 * POINTWISE_MANY_GROUPS
            or (spec.groups >= POINTWISE_MANY_GROUPS and c_out_g > c_in_g)
        )
    )


def _groups_loop_value(spec: ConvSpec, x_shape, w_shape, rows: int, value: str) -> bool:
    """Whether a grouped 2-D value that `choose` leaves to XLA's grouped convolution
    (more than `DENSE_GROUPS_MAX_GROUPS` groups, fewer rows than `GROUPS_LOOP_MIN_ROWS`,
    fewer output positions than `GROUPED_MATMUL_MIN_POSITIONS`, no FFT rule) runs by the
    groups loop instead (`groups.loop`), its derivatives staying `matmul`'s: from
    `GROUPS_LOOP_VALUE_MIN_ROWS` rows (batch x output positions), on CPUs other than the
    AVX2-only ones (`lax.avx2_only`; measured on AVX-512), not with a kernel longer than
    the input (`kernel_past_input`, where XLA's grouped convolution takes no slow path,
    as with dense groups).

    XLA's grouped convolution runs such layers at a few GFLOP/s. Found by a random sweep
    (`/tmp/s72/rand2.py 739 30 7 fwd,train --torch`): 32 groups of 8->12 3x3 dilation 2
    @14 batch 2 channels-last ran 0.92 ms forward, PyTorch 0.23; by the loop 0.57,
    by `shift` 0.48 (`/tmp/s76/g29.py`). The value's candidates against it on 24 random
    small-map layers (`gsm.py 1 24 7`, 24-64 groups of 4-32 to 4-32 channels, 3x3-5x5,
    dilation 1-2, stride 1-2, @7-28, batch 1-4, both layouts, AMD EPYC Zen 5,
    2026-12-07): the groups loop 1.59x (0.39x on 16 rows), `shift` 1.36x, `matmul`
    1.36x (geometric means). All three roles by the loop from 49 rows (`gsm2.py 2 24 7
    49`): forward 1.64x but training 0.97x (0.43-2.6x), so the value alone. The value
    alone against XLA's on fresh layers (`glv.py 3 30 7`, `glv.py 4 20 7`, 17-128 groups
    of 2-64 to 2-64 channels, with `matmul`'s large-map values too): forward 2.08x and
    1.73x, training 1.15x and 1.19x; against `matmul`'s values it went both ways
    (0.68-9.6x forward, 0.76-1.23x training on six layers), so they stay. XLA's values
    only (`glv.py 5 24 7`): forward 2.06x, training 1.17x, the losses kernels past the
    input (32 groups of 16->4 5x5 @4 batch 8, 0.52-0.67x forward against 0.89 ms), hence
    that exclusion; with it (`glv.py 6 24 7`): forward 1.90x, training 1.22x
    (0.90-1.80x), the lowest forward row (32 groups of 16x16 3x3 @8 batch 2
    channels-last, 0.61x) 1.50x in a rerun (`rx.py`, ResNeXt's later stages: 1.44-3.35x
    from batch 2). At first from 64 rows; from 49 (7x7 at batch 1, ResNeXt's last stage
    in inference) against XLA's value (`rx49.py`, 11 runs, 36-49 rows): 32 groups of
    32x32 @7 batch 1 1.37x channels-last, 5.5x channels-first, of 64x64 1.58x and 5.0x,
    of 16x16 1.10x and 1.23x, but 0.82x on 32 groups of 8->12 @7 channels-last (0.18 ms
    against 0.22, taken all the same); on 36 rows (3x3 maps at batch 4) 0.85x
    channels-last, so not below 49."""
    return (
        value == "lax"
        and spec.ndim == 2
        and rows >= GROUPS_LOOP_VALUE_MIN_ROWS
        and not lax_impl.avx2_only()
        and not kernel_past_input(spec, x_shape, w_shape)
    )


def _grouped_large_kernel_by_fft(
    spec: ConvSpec,
    w_shape,
    out,
    min_positions: int = GROUPED_FFT_MIN_POSITIONS,
    x_spatial=None,
) -> bool:
    """Whether a grouped 2-D layer of more than `DENSE_GROUPS_MAX_GROUPS` groups on fewer
    rows than the groups loop takes (`choose`: XLA's or `matmul`'s value, `matmul`'s
    derivatives) takes its derivatives by FFT, and channels-first XLA's value too:
    unstrided, with at least `GROUPED_FFT_MIN_TAPS` taps, on at least ``min_positions``
    (by default `GROUPED_FFT_MIN_POSITIONS`) output positions per image, and
    undilated unless ``x_spatial`` (the input's spatial shape) is given and the output
    is as large as it along every dim (`shift`'s derivatives, `_shift_derivatives_by_fft`,
    do not give it).

    XLA's grouped convolution, and `matmul`'s patches, of large kernels over many small
    groups run at a few GFLOP/s; FFT's cost does not grow with the kernel. Found by a
    random sweep on a Sapphire Rapids Xeon (`/tmp/s65/randbest.py 6502 40 5`): 32 groups
    of 16->4 7x7 stride 3 @14 batch 16 channels-first, training 111-116 ms, `fft` 43-44
    (PyTorch 10). Against the rules, `fft` (7 interleaved runs, `/tmp/s65/gsm2.py 2 22`,
    16-64 groups of 4-16 to 2-16 channels, 5x5 and 7x7 padded, @10-14, batch 1-4): 7x7,
    training 1.15-13.7x on 11 layers (32 groups of 16->2 @12 batch 4 channels-first 89
    ms against 6.5), forward channels-first 1.18-13.1x on 8, channels-last 0.77-1.10x on
    3 (so there the value stays); 5x5, one layer, 0.81x forward and 1.27x training; and
    on 7x7 maps forward 0.59-0.73x (`gsm.py 1 24`). The rule against without on 20 fresh
    layers (`gff.py 3 20`: 17-96 groups of 2-32 to 1-32 channels, 7x7-11x11 @7-20, batch
    1-8, 7 interleaved runs): training 1.42-33.7x with a fixed cotangent and 1.48-39.8x
    through a ReLU (geometric means 5.5x and 5.7x), forward 1.33-30.6x on the 9
    channels-first layers. Channels-last the value by FFT ran 0.72-46x XLA's on 11 layers
    (`gclv.py`; 0.72x on 32 groups of 16x16 7x7 @14 batch 1, 0.88x on 32 of 4->2 @10): not
    taken. Groups that `shift` takes (few channels each) keep its rules (not measured).

    Dilated kernels (found by a random sweep, `/tmp/s72/rand2.py 739 30 7 fwd,train
    --torch`: 32 groups of 16->2 5x5 dilation 3 @8 batch 8, XLA's grouped convolution as
    slow as `lax`, PyTorch 3.7x and 6x faster; 25 taps, not taken still): FFT's cost
    does not grow with the dilated window either. `fft` against the rules (5 interleaved
    runs, Zen 5, 2026-12-07, `/tmp/s76/gd.py 1 16`, 8-32 groups of 3-16 to 1-4 channels,
    3x3-7x7 dilation 2-3): 7x7 training 1.16-3.3x on all six layers, forward 0.81-5.7x;
    5x5 and 3x3 mixed. Allowing dilation against not (`gdab.py 1 16 5`, 7x7-9x9 dilation
    2-3): forward 1.43x, training 2.42x, but unpadded (64 groups of 8->2 7x7 dilation 3
    @28 batch 16 unpadded, 10x10 outputs: 0.44x forward) and `shift`'s derivatives (64
    groups of 1->4 7x7 dilation 2 @16 batch 16: 0.74x training) lost, hence the output
    as large as the input and not `shift`'s. With those (`gdab2.py 2 16 5 --torch`, 8-64
    groups of 2-16 to 1-4 channels, 7x7-11x11 dilation 2-4 @8-56, batch 1-16, both
    layouts): forward 2.58x (0.99-8.5x), training 2.68x (0.83-7.4x), geometric means
    over 16 fresh layers."""
    dilated = any(d > 1 for d in spec.rhs_dilation)
    if dilated and (x_spatial is None or any(o < n for o, n in zip(out, x_spatial, strict=True))):
        return False
    return (
        spec.ndim == 2
        and all(s == 1 for s in spec.stride)
        and all(d == 1 for d in spec.lhs_dilation)
        and math.prod(w_shape[2:]) >= GROUPED_FFT_MIN_TAPS
        and math.prod(out) >= min_positions
    )


# ... from this many rows (batch x output positions), see `_shift_derivatives_by_fft`.
SHIFT_FFT_DERIVATIVES_MIN_ROWS = 3136


def _shift_derivatives_by_fft(spec: ConvSpec, x_shape, w_shape, nested: bool) -> bool:
    """Whether a grouped layer whose value is `shift`'s and whose input gradient `shift`
    would sum over more products than one channel at a time (a channel multiplier, or 2
    input channels a group to 3 or more) takes both derivatives by FFT rather than
    `matmul`'s input gradient: a whole 2-D layer (not nested) with a kernel as
    `_grouped_large_kernel_by_fft` asks (unstrided, undilated, at least
    `GROUPED_FFT_MIN_TAPS` taps on at least `GROUPED_FFT_MIN_POSITIONS` output positions
    per image), on at least `SHIFT_FFT_DERIVATIVES_MIN_ROWS` rows. 7x7 kernels there,
    since larger depthwise ones take FFT's derivatives already.

    Found by a sweep of grouped large kernels against `fft` (`/tmp/s71/gfft.py 1 24 5`):
    64 groups of 2->4 7x7 @28 batch 8 channels-first trained in 139 ms, `fft` 36.
    Training with against without, 5 interleaved runs, AMD EPYC with AVX-512, 2026-12-07
    (`/tmp/s71/shfft.py 1 14 5 --torch`, 7x7, 8-128 groups of 1->2-8 and 2->4-8 channels
    @28-112, batch 1-8, both layouts): 1.02-3.9x on 13 of 14 layers (geometric mean
    1.55x; 8 groups of 2->4 @56 batch 4 27 ms, now 8.4; 16 of 1->4 @112 batch 1 29 ms,
    now 7.4), 0.88x on one of 1.3 ms (16 groups of 1->8 @28 batch 1). On fresh layers
    (`shfft2.py 2 8 5`) 1.45-3.5x on six, but 0.44x and 0.46x on two @28 batch 1 (784
    rows; 1.3 and 1.8 ms, 2.9 and 3.9 by FFT), so from 3136 rows (@56 batch 1, where
    three layers had won 1.7-1.9x). With that bound, on 8 fresh layers (`shfft2.py 3 8
    5`): 1.78-4.1x, geometric mean 2.62x."""
    if nested:
        return False
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    if x_shape[0] * math.prod(out) < SHIFT_FFT_DERIVATIVES_MIN_ROWS:
        return False
    return _grouped_large_kernel_by_fft(spec, w_shape, out)


# Grouped 2-D layers of large kernels to at most this many output channels a group, that
# dense groups or the groups loop would take, run by FFT (`_grouped_few_outputs_by_fft`).
GROUPED_FFT_MAX_OUT_CHANNELS = 4
GROUPED_FFT_MAX_IN_CHANNELS = 16
# ... on at least this many output positions per image and this many rows (batch x
# positions), where `_grouped_large_kernel_by_fft` asks for `GROUPED_FFT_MIN_POSITIONS`.
GROUPED_FEW_OUTPUTS_FFT_MIN_POSITIONS, GROUPED_FEW_OUTPUTS_FFT_MIN_ROWS = 25, 100


def _grouped_few_outputs_by_fft(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether a grouped 2-D layer that `shift` does not take, which would run by dense
    groups (at most `DENSE_GROUPS_MAX_GROUPS` groups) or by the groups loop (from
    `GROUPS_LOOP_MIN_ROWS` rows), runs all three roles by FFT: to at most
    `GROUPED_FFT_MAX_OUT_CHANNELS` output channels a group, with a kernel as
    `_grouped_large_kernel_by_fft` asks (unstrided, undilated unless the output is as
    large as the input along every dim, at least `GROUPED_FFT_MIN_TAPS` taps) on at
    least `GROUPED_FEW_OUTPUTS_FFT_MIN_POSITIONS` output positions per image and
    `GROUPED_FEW_OUTPUTS_FFT_MIN_ROWS` rows.

    Each group's dense convolution of a large kernel to a few channels runs at a few
    GFLOP/s; FFT's cost does not grow with the kernel, and its product over a group's
    channels is small. Found by a random sweep against PyTorch (`/tmp/s70/rand.py 707 30
    5 fwd,train --torch`): 32 groups of 3->2 7x7 @56 batch 16 channels-last by the
    groups loop, 101 ms forward and 273 training, PyTorch 17 and 46; rerun, 102 and 317
    against `fft`'s 43 and 106 (2.4x and 3.0x). `fft` against the rules, 5 interleaved
    runs, AMD EPYC with AVX-512, 2026-12-07 (`/tmp/s71/gfft.py 1 24`, 16-64 groups of
    2-16 to 1-16 channels, 5x5-11x11 @28-112, batch 1-16): to at most 4 channels a group
    0.98-3.3x forward and 1.26-5.1x training on 10 layers, to 8-16 0.17-1.04x forward
    and 0.54-1.66x training. The rule against without on fresh layers (`gfft2.py`, 2-64
    groups of 2-32 to 1-4 channels, 7x7-13x13 @14-112, batch 1-16): from 32 channels a
    group 0.42x and 0.51x forward (16 groups of 32->1 9x9 @56 batch 1, 2 of 32->3 9x9
    @112 batch 8), so at most 16 (`GROUPED_FFT_MAX_IN_CHANNELS`); with that bound on 14
    fresh layers (`gfft2.py 2 14 5`) 1.98x (geometric mean of 28 rows; training
    1.06-7.6x, forward 0.85-4.2x, below 1.0x on two layers of 16->1 7x7 of 2-8 ms: 0.85x
    and 0.95x).

    Small outputs (fewer than 100 positions, where the rule first stopped): found by a
    random sweep (`/tmp/s72/rand2.py 736 30 7 fwd,train --torch`), 32 groups of 3->1
    7x7 unpadded @14 (8x8 outputs) batch 16 channels-last, 2.6 ms forward and 11.2
    training by the groups loop, PyTorch 0.74 and 1.34; `fft` 1.8 and 2.1. `fft`
    against the rules on such layers (5 interleaved runs, AMD EPYC with AVX-512,
    2026-12-07, `/tmp/s76/gv.py 1 16`, `gv.py 2 20`, `gab.py 3 20`, 8-64 groups of 2-16
    to 1-4 channels, 7x7-11x11 @7-24, batch 1-16): forward 1.40x, 2.67x and 1.54x,
    training 2.25x, 2.41x and 1.64x (geometric means); it lost on outputs of at most 16
    positions (0.43-0.91x forward on four of five layers: 4->2 11x11 unpadded @12 batch 4
    0.17 ms against 0.36) and on fewer rows (`gab.py 4 20` from 25 positions: 2->2 9x9
    @14 batch 1, 36 rows, 0.66x forward; 4->3 9x9 @14 batch 2 0.78x), hence the bounds.
    The rule against without on 20 fresh layers (`gab2.py 5 20 5 --torch`): forward
    2.18x (0.76-13.9x), training 1.89x (1.30-3.6x); below 1.0x forward on four layers of
    16 groups of 8-16 to 3-4 channels, of which two channels-last on 128 rows ran
    0.81x and 0.89x `lax` (15 runs; 0.60-0.65 ms against 0.53); their training won
    1.30x and 1.45x."""
    c_out_g = w_shape[0] // spec.groups
    if c_out_g > GROUPED_FFT_MAX_OUT_CHANNELS or w_shape[1] > GROUPED_FFT_MAX_IN_CHANNELS:
        return False
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    rows = x_shape[0] * math.prod(out)
    if spec.groups > DENSE_GROUPS_MAX_GROUPS and rows < GROUPS_LOOP_MIN_ROWS:
        return False
    if rows < GROUPED_FEW_OUTPUTS_FFT_MIN_ROWS:
        return False
    return _grouped_large_kernel_by_fft(
        spec,
        w_shape,
        out,
        min_positions=GROUPED_FEW_OUTPUTS_FFT_MIN_POSITIONS,
        x_spatial=x_shape[2:],
    )


# `_few_channels_large_window_by_fft`: dense 1-D and 2-D layers from at least
# `DENSE_FFT_MIN_IN_CHANNELS` to at most `DENSE_FFT_MAX_IN_CHANNELS` input channels, to at
# most `DENSE_FFT_MAX_OUT_CHANNELS` output channels, of at least `DENSE_FFT_MIN_TAPS` taps
# (`DENSE_FFT_MIN_TAPS_FEW_OUT` to 2-`DENSE_FFT_FEW_OUT_CHANNELS` channels).
DENSE_FFT_MIN_IN_CHANNELS, DENSE_FFT_MAX_IN_CHANNELS = 4, 16
DENSE_FFT_MAX_OUT_CHANNELS, DENSE_FFT_FEW_OUT_CHANNELS = 8, 4
DENSE_FFT_MIN_TAPS, DENSE_FFT_MIN_TAPS_FEW_OUT = 49, 25
# ... and 1-D layers of at least this many taps (to any of those output channels).
DENSE_FFT_MIN_TAPS_1D = 31


def _few_channels_large_window_by_fft(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether a dense 1-D or 2-D layer that the rules leave to XLA (all three roles)
    runs them by FFT: unstrided, no input dilation, padded (not negatively) so that the
    output is as large as the input along each dim, from `DENSE_FFT_MIN_IN_CHANNELS` to
    `DENSE_FFT_MAX_IN_CHANNELS` input channels to at most `DENSE_FFT_MAX_OUT_CHANNELS`,
    with at least `DENSE_FFT_MIN_TAPS` taps (dilated or not), or
    `DENSE_FFT_MIN_TAPS_FEW_OUT` to 2-`DENSE_FFT_FEW_OUT_CHANNELS` channels (1-D: at least
    `DENSE_FFT_MIN_TAPS_1D`), and not to more than `DENSE_FFT_FEW_OUT_CHANNELS` from one
    image.

    XLA's convolution runs such padded layers at 12-30 GFLOP/s (12->1 11x11 dilation 3
    @64 batch 8 channels-last 11.9; 4->2 7x7 "same" @64 batch 16 13.4), while FFT's cost
    does not grow with the kernel. Found by a random sweep against PyTorch
    (`/tmp/s70/rand.py 709 30 7 fwd,train --torch`): 16->8 7x7 dilation 2 padding 6 @56
    batch 8 channels-first 4.1 ms forward, 10.6 training, PyTorch 1.33 and 4.25; `fft`
    1.57x `lax` forward. `fft` against `auto`, 5 interleaved runs, AMD EPYC with
    AVX-512, 2026-12-07 (`/tmp/s72/dfft3.py 3 32 5`: 4-24 -> 1-8 channels, 5x5-11x11,
    dilations 1-3, @28-112, batch 1-16, both layouts): forward 1.01x, training 1.39x
    (geometric means), winning on padded layers from at most 16 channels (12->1 11x11
    dilation 3 6.0x, 12->4 11x11 @64 batch 4 2.9x), losing on unpadded ones (4->1 5x5
    @112 batch 16 0.30x), from 24 channels (24->8 9x9 dilation 3 @56 batch 2 0.36x) and,
    in the other sweeps (`dfft.py 1 24 5`, `dfft2.py 2 30 5`), to 16 or more channels
    (4->64 7x7 dilation 2 0.22x). The rule against without on fresh layers within the
    bounds (`dfftab.py 4 24 5`): forward 2.17x, training 2.52x; to one channel 5x5 layers
    lost 0.08-0.40x forward (16->1 5x5 dilation 2 @56 batch 4 0.26 ms before), 7x7 won
    1.23-2.79x, hence 49 taps there. With that (`dfftab.py 5 18 5`): forward 2.37x
    (0.87-7.9x), training 2.59x (0.91-8.4x), the losses on 49 taps to 8 channels.
    In 1-D, `fft` against `auto` (`/tmp/s72/d1sweep.py 1 20`, 4-16 -> 1-8 channels,
    17-129 taps, 250-4000 long): from 31 taps 1.17-6.6x but for noise on a 0.1 ms layer,
    25 taps 0.52-0.72x; the rule against without on 16 fresh layers (`d1ab.py 2 16`):
    forward 2.45x (0.70x on 16->3 k49 @4000 batch 1, 0.71 ms against 0.50), training
    2.82x (1.01-6.6x).
    """
    c_out, c_in, *kernel = w_shape
    if (
        spec.ndim not in (1, 2)
        or spec.groups != 1
        or any(s != 1 for s in spec.stride)
        or any(d != 1 for d in spec.lhs_dilation)
        or not DENSE_FFT_MIN_IN_CHANNELS <= c_in <= DENSE_FFT_MAX_IN_CHANNELS
        or c_out > DENSE_FFT_MAX_OUT_CHANNELS
    ):
        return False
    few = 1 < c_out <= DENSE_FFT_FEW_OUT_CHANNELS
    if x_shape[0] == 1 and c_out > DENSE_FFT_FEW_OUT_CHANNELS:
        return False
    taps = math.prod(kernel)
    if spec.ndim == 1:
        least = DENSE_FFT_MIN_TAPS_1D
    else:
        least = DENSE_FFT_MIN_TAPS_FEW_OUT if few else DENSE_FFT_MIN_TAPS
    if taps < least:
        return False
    if any(min(p) < 0 for p in spec.padding):
        return False
    out = spec.out_spatial(x_shape[2:], kernel)
    return tuple(out) == tuple(x_shape[2:])


def _small_grouped_map_by_matmul(spec: ConvSpec, x_shape, out) -> bool:
    """Whether a grouped 2-D value, channels-last or of one image, that `choose` leaves
    to XLA's grouped convolution on a small map (more groups than
    `DENSE_GROUPS_MAX_GROUPS`, fewer rows than `GROUPS_LOOP_MIN_ROWS`, fewer positions
    than `GROUPED_MATMUL_MIN_POSITIONS`) runs by `matmul` instead, its derivatives'
    algorithm: unstrided, on more than `DENSE_GROUPS_MIN_POSITIONS_CHANNELS_LAST`
    output positions, on an x86 CPU with AVX2 and no AVX-512 (`lax_impl.avx2_only`),
    where it was measured.

    ResNeXt's later stages: `matmul` against XLA's value (the rule before), 3x3 unless
    said, forward / training with a fixed cotangent (the derivatives by `matmul`
    either way; 7-9 interleaved runs, 21 to recheck a forward reading under 1x; AMD
    EPYC, 2026-12-05, `/tmp/s60/abgrid.py`): 32 groups of 16x16 @14 batch 1 1.45x /
    1.19x, batch 2 0.98-1.19x / 1.40x, @7 batch 2 1.30x / 1.32x, batch 8 1.23x / 1.67x;
    32 of 32x32 @14 batch 1 1.07x / 1.58x, batch 2 1.10x / 1.26x, @7 batch 2
    0.84-0.89x / 1.63x, batch 8 0.92-1.15x / 1.16x; 64 of 16x16 @14 1.16x / 1.76x,
    1.00x / 1.01x, @7 1.27x / 1.50x, 0.85-0.95x / 1.16x; 32 of 8->16 1.36-1.86x /
    1.29-1.62x; 24 of 32x32 1.36-1.75x / 1.22-2.57x; 32 of 64x64 2.33-3.01x /
    1.34-1.66x; 16x16 @12 batch 1 1.22x / 1.87x, @5 batch 8 1.56x / 1.34x; 5x5 16x16
    @7 batch 2 1.28x / 1.51x, 32x32 @14 1.10x / 1.28x. Not on maps of 16 positions or
    fewer, the tiny maps' bound (32x32 @3 batch 8 0.68x forward; 16x16 @4 1.51x /
    1.63x, left with them), nor strided (stride 2 @14 0.79x, 0.92x
    forward, though 1.14x, 1.40x training), nor channels-first from batch 2 (forward
    0.39-1.07x at batch 2 and 8 @7 on five of six). Channels-first at batch 1: 1.12-3.25x
    forward, 1.04-2.15x training on 11 layers (32 groups of 16x16 @14 1.85x / 1.30x,
    @7 1.99x / 1.17x, @5 1.71x / 1.75x, @19 1.70x / 1.52x, 5x5 1.12x / 1.26x; 32x32 @14
    1.72x / 1.04x, @7 1.66x / 1.42x; 64 of 16x16 1.29x / 1.46x; 32 of 8->16 2.64x /
    1.84x; 24 of 32x32 1.80x / 1.77x; 32 of 64x64 @7 3.25x / 2.15x)."""
    return (
        spec.ndim == 2
        and (spec.channels_last or x_shape[0] == 1)
        and all(s == 1 for s in spec.stride)
        and math.prod(out) > DENSE_GROUPS_MIN_POSITIONS_CHANNELS_LAST
        and lax_impl.avx2_only()
    )


def _small_groups(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether this value not differentiated, a 2-D convolution the rules run by dense
    groups, has fewer than `DENSE_GROUPS_MIN_GROUP_FLOPS` FLOPs per group, where XLA's
    grouped value is faster than one small convolution per group and their copies
    (`_run` checks the rest). Found by a random sweep: 8 groups of 8->16 3x3 @7 batch 8
    channels-last ran 0.73x `lax`. Forward, channels-last, with the rule against
    without (3x3, 15 interleaved runs, Sapphire Rapids Xeon, 2026-12-03, one malloc
    arena; per group): 8 groups of 8->16 @7 batch 8 (0.9 MFLOP) 1.43x, batch 2 1.47x,
    @5 1.16x; 4 of 8->16 @7 1.07x; 8 of 16->16 @7 batch 4 0.98x; 8 of 32->32 @7 batch 1
    1.20x. Not from 1.8 MFLOP (dense groups against XLA's grouped value: 8 of 16->16 @7
    batch 8 1.19x, 0.89x with the rule; 4 of 16->16 0.73-0.80x, 8 of 8->16 @10 1.05x,
    16 of 16->16 1.14x; 3.6 MFLOP and more 1.12-1.69x). Training keeps the rules' (with
    XLA's grouped value there, 0.86-1.21x). Channels-first likewise, 1.04-1.41x (8 of
    8->16 @7 batch 8 1.11x, batch 2 1.37x; 4 of 8->16 1.27x; 8 of 16->16 batch 4 1.04x;
    @4 1.09x; of 16->16 batch 1 1.41x), but not from 1024 channels per group (8 of
    32->32 @7 batch 1 0.80-0.98x in three runs; @5 1.04x)
    (`SMALL_GROUPS_CHANNELS_FIRST_MAX_CHANNELS`).

    Not on a CPU with AVX2 and no AVX-512 (`lax.avx2_only`), where XLA's grouped value
    ran slower than the groups' convolutions on most such layers. Found by a random
    sweep (`/tmp/s59/rand.py 3737`: 4 groups of 32->1 3x3 @14 batch 8 channels-last,
    forward 1.8 ms by XLA's grouped value, the groups' 0.43, PyTorch 0.32). The groups'
    convolutions against XLA's grouped value (AMD EPYC, 2026-12-05, 9-11 interleaved
    runs, 21 for those under 1x; `/tmp/s59/force.py`, `gen.py` `gen67`, `gen68`: 2-16
    groups of 4-64 -> 1-64 channels, 3x3 and 5x5 @4-28, batch 1-8, both layouts, under
    1.5 MFLOP a group): geometric mean 1.58x over 51 layers (the channels-last ones on
    maps of at most 16 positions, which keep XLA's grouped value anyway, left out),
    1.3-4.0x from 32-64 input channels a group (2 of 64->2 @10 batch 2 3.70x, 16 of
    64->2 @7 batch 8 4.04x, 8 of 64->2 5x5 @7 batch 4 3.82x), the rule's own 8 of 8->16
    @7 batch 8 1.42x channels-last; under 1x on four channels-last layers at batch 1
    from 8-16 channels a group on 7x7 maps (2 of 16->16 5x5 0.60x, 8 of 8->16 0.82x, 8
    of 8->64 0.76x, 16 of 8->64 0.90x; 0.10-0.34 ms), while others of the kind gained
    (4 of 8->32 5x5 @10 1.57x, 2 of 16->32 @5 1.16x)."""
    channels = (w_shape[0] // spec.groups) * w_shape[1]
    return (
        spec.ndim == 2
        and not lax_impl.avx2_only()
        and spec.flops(x_shape, w_shape) < DENSE_GROUPS_MIN_GROUP_FLOPS * spec.groups
        and (spec.channels_last or channels <= SMALL_GROUPS_CHANNELS_FIRST_MAX_CHANNELS)
    )


def _block_diagonal_value(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether this small grouped value, which `_small_groups` would leave to XLA's
    grouped convolution, runs instead as one dense convolution by the block-diagonal
    weight (`groups.block_diagonal`), chosen by the dense rules: groups times the square
    of the output channels a group at most `BLOCK_DIAGONAL_MAX_GROUPS_OUT_SQUARED`, on
    at least `BLOCK_DIAGONAL_MIN_ROWS` rows (batch times output positions). The dense
    convolution does ``groups`` times the products, but XLA's grouped convolution of
    few outputs a group runs at a few GFLOP/s. (A non-finite input element then makes
    NaNs in the other groups' outputs that read it, as `fft` spreads one over its image.)

    Found by a random sweep (`/tmp/s78/rsweep.py 103`: 4 groups of 8->2 4x4 stride 2
    @14 batch 32 channels-last, forward 1.21 ms by XLA's grouped value, PyTorch 0.15;
    0.26 ms with the rule). The rule against without, forward, random 2-D layers under
    1.5 MFLOP a group (2-16 groups of 2-64 -> 1-8 channels, 2x2-5x5, strides 1-3,
    dilations 1-2, maps 3-40, batch 1-32, both layouts; 9 interleaved runs, Sapphire
    Rapids Xeon, 2026-12-07, `/tmp/s79/abbd.py`): 24 layers within the bounds 1.74x
    (geometric mean; 0.49-6.12x, under 1x on two: 6 groups of 32->1 4x4 stride 3
    dilation 2 @10 batch 16 channels-first 0.49x, whose dense layer's value the rules
    run by `_output_taps` at 0.76 ms where XLA's dense convolution takes 0.41; 6 of
    64->3 stride 2 @14 batch 2 0.94x); 24 more, 1-4 outputs a group and at most 32 in
    all, 1.71x (0.70-3.80x; the 0.70x layer, 8 groups of 32->3 5x5 stride 2 @14 batch 2
    channels-last, is 72 past the bound). Past the bounds: on fewer rows 1.02x over 16
    layers (0.76-1.37x, six under 0.95x); groups times the square past 64 (108-1024)
    0.94x over 16 (0.54-1.88x; 0.54x at 1024, 16 groups of 32->8)."""
    c_out_g = w_shape[0] // spec.groups
    rows = x_shape[0] * math.prod(spec.out_spatial(x_shape[2:], w_shape[2:]))
    return (
        spec.groups * c_out_g**2 <= BLOCK_DIAGONAL_MAX_GROUPS_OUT_SQUARED
        and rows >= BLOCK_DIAGONAL_MIN_ROWS
    )


def _per_image_pointwise(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether this is a channels-first 1x1 convolution, unstrided and unpadded, that
    `matmul` runs as one product per image (`matmul.per_image`): its input gradient is
    then the same product of the cotangent with the weight's transpose, and its weight
    gradient one product per image, summed (`matmul.per_image_weight_gradient`)."""
    return (
        not spec.channels_last
        and spec.groups == 1
        and math.prod(w_shape[2:]) == 1
        and all(s == 1 for s in spec.stride)
        and all(p == (0, 0) for p in spec.padding)
        and all(d == 1 for d in spec.lhs_dilation)
        and matmul_impl.per_image(w_shape[1], w_shape[0], 1, x_shape[2:])
    )


# Dense 1-D and 2-D float32 values from an odd number of input channels in this range
# to this many output channels (inclusive) run with zero input channels added up to a
# multiple of `ODD_MULTIPLE` (see `_odd_input_channels`).
ODD_IN_CHANNELS, ODD_OUT_CHANNELS = (3, 31), (17, 32)
ODD_MULTIPLE = 4
# ... and dense 2-D ones from an odd number in this range to these many (see
# `_odd_input_channels`).
ODD_WIDE_IN_CHANNELS, ODD_WIDE_OUT_CHANNELS = (7, 31), ((72, 96), (144, 160))
# On x86 CPUs with AVX2 and without AVX-512 (`lax_impl.avx2_only`), the narrow range's
# 2-D layers from at most this many input channels go to at most this many output
# channels (see `_odd_input_channels`): (input channels, output channels) pairs, the
# first that covers the layer's input channels applies; more input channels keep
# `ODD_OUT_CHANNELS`.
ODD_AVX2_OUT_CHANNELS = ((3, 20), (9, 25))


def _odd_input_channels(spec: ConvSpec, w_shape, dtype) -> bool:
    """Whether XLA's CPU convolution (YNNPACK's, jaxlib 0.10.2) of this dense 1-D or 2-D
    float32 value runs faster with input channels of zeros added (`_zeros_to_multiple`):
    from an odd number of input channels in `ODD_IN_CHANNELS` to `ODD_OUT_CHANNELS`
    output channels it falls off a cliff. XLA alone, the layer as it is against its
    input channels padded to a multiple of 4 inside the same program (5x5 @64 batch 4,
    3x3 @56 batch 4, 7x7 stride 2 @224 batch 2, 3x3 stride 2 @112 batch 4;
    channels-first and channels-last; medians of 7 runs, Sapphire Rapids Xeon,
    2026-12-03, `/tmp/s36/oddgrid.py`): from 3 channels to 17-24 2.6-14x, to 28-32
    1.0-4.1x; from 5-31 channels to 17-32 1.1-3.7x, 3 of 204 0.54-0.82x (25->32 and
    31->17 3x3 channels-last, 31->28 3x3 channels-first). Padded by one channel only (to
    an even count), the strided 3x3 layers channels-last lost 0.44-0.57x on several. Not
    with more output channels (3->35 to 3->48 0.34-1.3x; from 5 and 9 to 35-48
    0.61-1.34x, from 7, 11 and 15 1.4-3.2x: the speed follows the input channels modulo
    4 there), nor from even counts (6 and 10 to 17-32 0.35-1.16x), nor in 3-D (by 2-D
    planes, side by side 0.82-1.35x).

    `auto` with the rule against without it (11 interleaved runs; channels-first /
    channels-last; forward): 3->32 5x5 stride 2 @127 batch 4 2.1x / 3.2x; 3->24 7x7
    stride 2 @224 batch 2 10.6x / 11.7x; 5->32 5x5 @64 batch 4 2.1x / 2.3x; 3->32 5x5
    @32 batch 64 (CIFAR) 3.5x / 4.1x, 3->20 valid 4.0x / 5.6x; 7->24 3x3 dilation 2
    @64 batch 2 2.4x / 2.8x; 9->17 3x3 @28 batch 4 2.2x / 2.3x; 15->32 3x3 @8 batch 16
    1.37x / 1.30x; 5->32 3x3 stride 2 @14 batch 4 1.18x / 1.12x; 31->32 3x3 @28 batch 8
    1.09x / 0.98x; 1x1 15->32 @56 batch 8 1.00x / 1.04x; 1-D 15->32 k3 @1000 batch 8
    1.21x / 1.11x, 3->32 k9 @4000 1.01x / 1.12x, 5->24 k5 stride 2 0.99x / 0.99x
    (`/tmp/s36/abrule.py`). Training through a ReLU, the value by the rule and the
    derivatives as before: 3->32 5x5 stride 2 1.5x / 2.1x, 3->24 7x7 stride 2 3.3x /
    3.9x, 7->32 5x5 1.45x / 1.49x, 15->24 3x3 @56 0.97x / 1.09x; with the derivatives
    padded too, against the value alone, 0.63-0.88x from 3 channels and 0.94-1.14x from
    7 and 15, so they are left as they are.

    The cliff reaches further (`ODD_WIDE_OUT_CHANNELS`, 2-D only): XLA alone against
    the input channels padded to a multiple of 4, 3x3 @56 batch 4, channels-first /
    channels-last (medians of 7 runs, Sapphire Rapids Xeon, 2026-12-03,
    `/tmp/s37/oddgrid.py`): from 7-31 channels to 72-96 1.02-2.21x / 1.19-2.57x, to
    144 and 160 1.07-2.46x / 0.98-2.56x (the session before, over the four layers
    above: to 80 1.3-5.8x from 3-31 channels, to 96 1.2-2.4x from 5-31, to 144 and 160
    1.0-2.5x from 7-31); from 5 channels mixed (0.52-2.69x), and to 104-120, 176, 192
    and 224 mixed by the input channels modulo 4 (0.56-2.04x).

    On the AMD EPYC with AVX2 and no AVX-512 (2 cores, 2026-12-05, `auto` with the rule
    against without it, 11 interleaved runs, forward; 3x3 stride 2 @224 batch 2, 3x3
    @56 batch 4, 5x5 @64 batch 2; `/tmp/s60/force.py`) the 2-D cliff ends sooner
    (`ODD_AVX2_OUT_CHANNELS`) and past it the zeros only cost. As they are, from 3, 5
    and 7 channels to 26-32 the layers ran 1.13-5.35x faster channels-last (36 of 36
    on the grid; of 9 more, one, 3->32 3x3 @112 batch 4, 0.85x), 0.93-1.63x
    channels-first; from 9 channels 0.89-1.79x (9 of 12 faster); from 15 and 31 the
    strided ones 1.16-1.51x but the unstrided 0.78-1.14x, so those keep the zeros. The
    cliff stands from 5-9 channels to 17-24 (0.25-0.56x as they are, but for strided
    layers @224 channels-last) and from 3 channels to 17-20 (0.50-1.05x); from 3 to
    21-24 the layers ran 0.74-1.89x as they are (channels-last 0.97-1.89x). The input
    gradient (`_odd_output_channels`) follows the same bounds: 21->3 and 26->3 to
    32->9 1.02-2.71x without the zeros but for 26->9 (0.75-1.12x), 21->5 to 21->9
    0.26-0.56x. 1-D layers keep the rule (5->32 k3 @2000 channels-last 0.62x as they
    are)."""
    c_out, c_in = w_shape[:2]
    if spec.ndim > 2 or spec.groups != 1 or jnp.dtype(dtype) != jnp.float32 or c_in % 2 == 0:
        return False
    narrow_max = ODD_OUT_CHANNELS[1]
    if spec.ndim == 2 and lax_impl.avx2_only():
        narrow_max = next((o for i, o in ODD_AVX2_OUT_CHANNELS if c_in <= i), narrow_max)
    narrow = (
        ODD_IN_CHANNELS[0] <= c_in <= ODD_IN_CHANNELS[1]
        and ODD_OUT_CHANNELS[0] <= c_out <= narrow_max
    )
    wide = (
        spec.ndim == 2
        and ODD_WIDE_IN_CHANNELS[0] <= c_in <= ODD_WIDE_IN_CHANNELS[1]
        and any(low <= c_out <= high for low, high in ODD_WIDE_OUT_CHANNELS)
    )
    return narrow or wide


def _odd_output_channels(spec: ConvSpec, w_shape, dtype) -> bool:
    """Whether the input gradient of this dense 2-D float32 convolution, undilated and
    of stride 1, runs faster with zero filters added to the value: the input gradient
    is a convolution from the cotangent's channels (the value's output channels) to
    the input's, and XLA's CPU convolution falls off the cliff of
    `_odd_input_channels` from an odd number of them in `ODD_IN_CHANNELS` to
    `ODD_OUT_CHANNELS`. Training through a ReLU, with the rule against without it (11
    interleaved runs, Sapphire Rapids Xeon, 2026-12-03; channels-first /
    channels-last; padding ``k // 2``): 32->3 3x3 @64 batch 4 1.23x / 1.26x (with a
    fixed cotangent 1.26x / 1.25x), @16 batch 16 1.37x / 1.52x; 24->3 5x5 @128 batch 2
    1.83x / 1.80x, 3x3 dilation 2 @64 batch 4 2.09x / 2.10x; 17->7 3x3 @56 batch 4
    1.40x / 1.38x; 32->5 1.21x / 1.22x; 20->9 5x5 @28 batch 8 1.36x / 1.33x; 32->31
    @56 batch 4 1.09x / 1.27x. Not strided (32->3 3x3 stride 2 @128 1.07x / 0.92x), nor
    in 1-D (32->3 k5 @4000 batch 4 0.79x / 1.10x)."""
    return (
        spec.ndim == 2
        and all(s == 1 for s in spec.stride)
        and all(d == 1 for d in spec.lhs_dilation)
        and _odd_input_channels(spec, (w_shape[1], w_shape[0], *w_shape[2:]), dtype)
    )


def _zeros_to_multiple(a: jax.Array, axis: int) -> jax.Array:
    """``a`` with zeros added along ``axis`` up to a multiple of `ODD_MULTIPLE` (input
    channels of ``x`` and ``w``, or filters of ``w``: the same convolution)."""
    extra = [(0, 0)] * a.ndim
    extra[axis] = (0, -a.shape[axis] % ODD_MULTIPLE)
    return jnp.pad(a, extra)


def _xla_3d_pointwise(spec: ConvSpec, w_shape) -> bool:
    """Whether this is a dense channels-last 3-D 1x1x1 convolution, which runs XLA's
    3-D convolution whole wherever the rules choose "lax" for it (see `choose`)."""
    return (
        spec.channels_last and spec.ndim == 3 and spec.groups == 1 and math.prod(w_shape[2:]) == 1
    )


def _strided_3d_direct(spec: ConvSpec, x_shape, w_shape, differentiated: bool = True) -> bool:
    """Whether the value of this 3-D convolution runs as XLA's 3-D convolution rather
    than by 2-D planes: strided along the planes, whose strided 2-D convolutions XLA's
    CPU backend runs on YNNPACK, which on large planes of many channels is slower than
    XLA's 3-D convolution (Eigen's). Forward, planes against XLA's 3-D (3x3x3 stride 2,
    batch 2, depth 8, channels-last unless said, minimum of 15 shuffled runs): @56 (28x28
    output planes) 32->128 0.93x, 32->256 0.69x, 64->64 0.80x, 64->128 0.70-0.76x (0.76x
    channels-first, 0.86x and 0.80x with stride (1, 2, 2)), 64->256 0.83x, 128->128
    0.75x, 128->256 0.69x, batch 4 32->64 depth 16 0.76x; but 32->64 1.15x, 32->32 1.95x
    channels-first, 24->48 1.69x; with few channels planes win by far (3->64 @112 stride
    (1, 2, 2) 4.6x, 8->32 1.8x, 16->32 1.2-1.3x). On 14x14 output planes (@28) planes
    win: 1.12-1.88x on 7 of 8 layers of 32-128 to 64-256 channels (32->256 0.81x);
    @40 (20x20) 128->128 0.88x, 96->192 1.28x.

    Random layers later lost on smaller planes, where many input channels make few
    outputs (3x3x3 stride 2, padding 1, channels-first / channels-last, 11 interleaved
    runs, 2026-12-01): 256->32 @24 batch 1 1.04x / 0.61x (and 0.70x in a sweep); 256->64
    @24 (12x12 planes) 1.45x / 0.52x, 0.70x; depth 16 @20 1.40x / 0.67x, @32 0.74x,
    0.82x / 1.06x, @40 0.92x; 128->32 @24 0.79x channels-last. Each element of a plane's
    input enters ``C_out * K_h * K_w / (s_h * s_w)`` products: 72-144 in those; 288 in
    128->128 @32 batch 2 depth 8, which won 1.42x / 1.42x. So, from
    `STRIDED_3D_MIN_CHANNELS`, the value ran as XLA's 3-D convolution on any plane with
    fewer than `STRIDED_3D_PLANES_MIN_PRODUCTS_PER_ELEMENT` products per element, until
    the planes (stacked since) won it back on the Sapphire Rapids Xeon (2026-12-07,
    `/tmp/s78/s3g.py`, `s3g2.py`, 5-7 interleaved runs): the planes against XLA's 3-D
    convolution on random layers that clause took (k2-k5, strides 2-4 along the planes,
    dilations 1-2, 32-384 -> 16-192 channels @8-32, batch 1-4, both layouts), forward
    0.84-8.6x on 13 (1.76x geometric mean; 3x3x3 stride 3 dilation 2 256->16 @16 batch
    4 channels-last 16.5 ms against 1.9, 192->128 @16 10.9 against 3.7), training 1.16x
    (0.77-1.75x over nine); the planes against the clause on fresh layers
    (`s3g3.py 5 14 7 fwd`): 1.2-4.3x faster on 11 of 14. Only channels-last with
    strides of `STRIDED_3D_FEW_PRODUCTS_CHANNELS_LAST_MIN_STRIDE` or more along the
    planes does the clause still hold (`s3one.py` and the sweeps, kernels 2-3, 7-11
    runs): the planes 0.45-0.70x on four such layers @32 (256->32 2x2x2 stride 4 batch 2
    16.5 ms against 7.4), 1.01-1.35x on four @16-24 (0.79x over the eight); at stride 3
    channels-last they won on five of seven. Against the code before on fresh layers
    (`s3g3.py 7 12 7 fwd`, `8 10 5 train`): forward 1.93x, training 1.18x. Otherwise
    that clause (`_strided_3d_few_products`) picks values for
    `_strided_3d_value_by_matmul`, which beat the planes on the smallest outputs
    (3x3x3 and 2x2x2: the planes 0.58-0.69x).

    And layers from few channels to many, from at most
    `STRIDED_3D_EXPANSION_MAX_IN_CHANNELS` to at least
    `STRIDED_3D_EXPANSION_MIN_OUT_CHANNELS` (32->256 on 14x14 planes ran 0.81x by
    planes, above): XLA's 3-D convolution against the planes (3x3x3 stride 2, depth 8,
    batch 1 unless said, 15 interleaved runs, Sapphire Rapids Xeon, 2026-12-03,
    channels-last / channels-first; a random batch-1 layer, 16->384 @16, ran 0.87x
    `lax` by planes): 16->384 @16 (8x8 planes) 1.16x / 1.16x; 32->256 @16 1.26x /
    1.13x; 16->256 @24 1.27x / 1.14x, batch 2 @16 1.00x / 1.15x; 32->384 @24 1.15x /
    1.07x. Not from more channels (64->256 @16 0.84x / 0.94x) nor to fewer (32->128
    @16 1.01x / 0.81x).

    Not ``differentiated`` (a value alone), such expansions from
    `STRIDED_3D_EXPANSION_VALUE_MIN_CHANNELS` (input x output) channels per group
    rather than `STRIDED_3D_MIN_CHANNELS`. Found by a random sweep on a Zen 5 EPYC
    (2026-12-07, `/tmp/s72/rand2.py 732`): 5x5x5 stride 2 8->384 @8 batch 16
    channels-first forward at 0.58x `lax` by planes. XLA's 3-D convolution against the
    planes, forward (`/tmp/s75/s3d.py`, 9 interleaved runs, 3x3x3 and 5x5x5 stride 2,
    @8-16, batch 2-16, channels-first / channels-last): from 2048 pairs 1.04-2.5x on
    eight layers (8->384 5x5x5 @8 batch 16 1.69x / 1.94x, 3x3x3 1.26x / 1.32x; 8->256
    @16 batch 4 1.32x / 1.27x; 4->512 @16 batch 8 2.53x / 1.13x; 12->256 @8x12 batch 8
    1.19x / 1.04x), even on two (8->512, 8->320), 0.8x on 6->384; below, 0.25-0.87x
    (3->256, 4->256, 4->384). In training it went both ways (0.71-1.29x over five
    layers, 8->256 @16 batch 4 0.71x / 0.74x), so differentiated values keep the
    planes."""
    c_out, c_in_g = w_shape[:2]
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    c_out_g = c_out // spec.groups
    pairs = c_in_g * c_out_g
    expands = (
        c_in_g <= STRIDED_3D_EXPANSION_MAX_IN_CHANNELS
        and c_out_g >= STRIDED_3D_EXPANSION_MIN_OUT_CHANNELS
    )
    if max(spec.stride[1:]) == 1:
        return False
    if not differentiated and expands and pairs >= STRIDED_3D_EXPANSION_VALUE_MIN_CHANNELS:
        return True
    if (
        spec.channels_last
        and min(spec.stride[1:]) >= STRIDED_3D_FEW_PRODUCTS_CHANNELS_LAST_MIN_STRIDE
        and _strided_3d_few_products(spec, w_shape)
    ):
        return True
    return pairs >= STRIDED_3D_MIN_CHANNELS and (
        math.prod(out[1:]) >= STRIDED_3D_MIN_PLANE_POSITIONS or expands
    )


def _strided_3d_few_products(spec: ConvSpec, w_shape) -> bool:
    """Whether this 3-D convolution, strided along its planes, from
    `STRIDED_3D_MIN_CHANNELS` (input x output) channels per group, has fewer than
    `STRIDED_3D_PLANES_MIN_PRODUCTS_PER_ELEMENT` products per element of a plane's
    input (``C_out * K_h * K_w / (s_h * s_w)``, per group): what `_strided_3d_direct`
    took until 2026-12-07, and `_strided_3d_value_by_matmul` still takes."""
    c_out, c_in_g = w_shape[:2]
    c_out_g = c_out // spec.groups
    reuse = c_out_g * math.prod(w_shape[3:]) / math.prod(spec.stride[1:])
    return (
        max(spec.stride[1:]) > 1
        and c_in_g * c_out_g >= STRIDED_3D_MIN_CHANNELS
        and reuse < STRIDED_3D_PLANES_MIN_PRODUCTS_PER_ELEMENT
    )


def _strided_3d_value_by_matmul(spec: ConvSpec, x_shape, w_shape, dtype=jnp.float32) -> bool:
    """Whether the value of this dense 3-D convolution, one XLA would run as its own 3-D
    convolution (`_strided_3d_direct`, as differentiated) or that has few products per
    input element (`_strided_3d_few_products`), runs by `matmul`'s patches instead: on
    at most `STRIDED_3D_MATMUL_VALUE_MAX_ROWS` rows (batch x output positions), patches
    at least `MATMUL_MIN_DEPTH` deep, to at least
    `STRIDED_3D_MATMUL_VALUE_MIN_OUT_CHANNELS` output channels. XLA's 3-D convolution
    runs such short, deep products at 10-60 GFLOP/s; the derivatives keep the rules'.

    Found against PyTorch (`/tmp/s77/worst.py`: 3x3x3 stride 2 dilation 3 96->64 @8
    batch 2 channels-first, 2.2 ms against PyTorch's 0.13, `matmul` 0.37). The value by
    `matmul` against the rules before, random layers the rule takes (AMD EPYC with
    AVX-512, 5 interleaved runs, 2026-12-07, `/tmp/s77/s3d5.py 5 24 5`; k2-k5, stride 2,
    3 or (1, 2, 2), dilation 1-3, 128-512 -> 16-192 channels, @4-16, batch 1-8, both
    layouts, 8-128 rows): forward 2.35x geometric mean, 0.86-10.2x (384->64 3x3x3
    stride 3 dilation 2 @10 batch 1 channels-last 10.2x, 384->16 stride 3 @8 5.2x;
    below 1.0x only where the kernel was trimmed to the taps that read the input and
    XLA ran the rest fast: 0.86-0.95x on three); training with a fixed cotangent 1.18x,
    0.85-2.14x (0.85x on 384->96 stride 3 @10 batch 2, 128 rows). All three roles by
    `matmul` trained 1.22x but 0.77-2.55x; earlier sweeps (`/tmp/s77/s3d2.py`, all
    three roles by `matmul` on small 3-D layers the rule partly takes): on layers that
    XLA's 3-D convolution ran, 2.1-11x forward (all of them). The floor of 16 output
    channels is untested on layers XLA runs whole (to 8 channels, two layers the planes
    ran lost 0.15-0.65x by `matmul`). Not on CPUs with AVX2 and no AVX-512
    (`lax.avx2_only`), where it was not measured.

    And any dense 3-D value strided along its planes on small outputs, which the
    planes take (fewer channel pairs): on at most `STRIDED_3D_MATMUL_VALUE_SMALL_MAX_ROWS`
    rows and `STRIDED_3D_MATMUL_VALUE_SMALL_MAX_POSITIONS` output positions an image,
    patches at least `STRIDED_3D_MATMUL_VALUE_SMALL_MIN_DEPTH` deep, to at least
    `STRIDED_3D_MATMUL_VALUE_SMALL_MIN_OUT_CHANNELS` channels, from an input (of
    ``dtype``) within glibc's largest heap block. Found by a random sweep on the Sapphire
    Rapids Xeon (2026-12-07, `/tmp/s78/rsweep.py 103`): 5x5x5 stride 2 8->192 @8 batch
    32 channels-first forward at 0.80x `lax` by the planes (1.59 ms; `matmul` 1.05,
    PyTorch 1.04). `matmul` against `auto` on small strided 3-D outputs (`sm3.py 1 24
    7`): 1.38-1.87x to 64-256 channels from 864-16000-deep patches, 0.58-0.89x to fewer
    channels or from shallower patches. The rule against without on fresh layers
    (`sm3ab.py`, 7 interleaved runs, k2-k5, strides 2-4 along the planes, 8-256 ->
    32-384 channels @4-16, batch 1-32, both layouts): with a floor of 64 channels and
    512 rows forward 1.17x but 0.75-0.94x on six of 16 (`11 16 7 fwd`); with these
    bounds forward 1.21x (0.31-1.76x; `12 12 7`: the loss, 5x5x5 stride 4 192->96 @12
    batch 32 channels-last, 42 MB of input, hence the input's bound) and 1.34x
    (1.00-2.08x over 10, `14 10 7`), training 1.05x (0.74-1.25x over 10, `13 10 5
    train`)."""
    if spec.ndim != 3 or spec.groups != 1 or lax_impl.avx2_only():
        return False
    c_out, c_in = w_shape[:2]
    rows = _rows(spec, x_shape, w_shape)
    depth = c_in * math.prod(w_shape[2:])
    if (
        max(spec.stride[1:]) > 1
        and rows <= STRIDED_3D_MATMUL_VALUE_SMALL_MAX_ROWS
        and rows <= x_shape[0] * STRIDED_3D_MATMUL_VALUE_SMALL_MAX_POSITIONS
        and depth >= STRIDED_3D_MATMUL_VALUE_SMALL_MIN_DEPTH
        and c_out >= STRIDED_3D_MATMUL_VALUE_SMALL_MIN_OUT_CHANNELS
        and math.prod(x_shape) * jnp.dtype(dtype).itemsize <= lax_impl.MALLOC_MAX_HEAP_BLOCK
    ):
        return True
    return (
        rows <= STRIDED_3D_MATMUL_VALUE_MAX_ROWS
        and depth >= MATMUL_MIN_DEPTH
        and c_out >= STRIDED_3D_MATMUL_VALUE_MIN_OUT_CHANNELS
        and (_strided_3d_direct(spec, x_shape, w_shape) or _strided_3d_few_products(spec, w_shape))
    )


def _strided_3d_value_alone_by_matmul(spec: ConvSpec, x_shape, w_shape, itemsize: int) -> bool:
    """Whether the value of this dense 3-D convolution, computed without its derivatives,
    runs by `matmul`'s patches where the rules give it to XLA's 2-D planes (not where
    they give it to XLA's own 3-D convolution, `_strided_3d_direct`): channels-last,
    strided along every spatial dim, undilated, its patches
    `STRIDED_3D_ALONE_MIN_DEPTH` to `STRIDED_3D_ALONE_MAX_DEPTH` deep, one image's
    patches within `matmul.PATCH_BYTES` (of ``itemsize`` bytes each: `matmul` builds them
    a few images at a time, in the caller's layout); not on CPUs with AVX2 and no AVX-512
    (`lax.avx2_only`), where it was not measured.

    Found by a random sweep on the Sapphire Rapids Xeon (2026-12-08, `/tmp/s78/rsweep.py
    107`): 3x3x3 stride 2 96->48 @12 batch 32 channels-last forward at 0.93x `lax`
    (30.0 ms; PyTorch 4.1); by `matmul`, once its chunks were cut in the caller's
    layout (`matmul.forward`), 16.9 ms (`lax` 31.6, PyTorch 4.7). The rule against
    without on random strided 3-D layers (`/tmp/s81/r3ab.py SEED 16 5`: k2-k5, strides
    2-4, 3-256 -> 16-256 channels @6-32, batch 1-32, 5 interleaved runs), the value:
    - seed 1, with the depth's ceiling the only bound and the value by `matmul` in
      training too: forward 1.21x geometric mean over 16 (0.80-2.19x; from 3 input
      channels, 81 deep, 0.80x and 0.93x: hence the floor of depth), training 0.99x
      over 13 (0.58-1.45x): hence the value alone;
    - seed 2: 1.30x over 16 (0.47-2.36x); to 16 channels 0.47x and 0.65x (and 1.06x,
      1.73x): hence the floor of channels;
    - seed 3: 1.21x over 16 (0.30-1.93x); 5x5x5 kernels (125 taps) from 8 channels
      0.30x @24 batch 4 (and 1.28x, 1.36x): hence the taps' bound;
    - within the final bounds, those sweeps' layers ran 1.23x (12, 0.87-1.98x), 1.44x
      (13, 0.90-2.36x) and 1.33x (13, 0.92-1.93x); a fresh sweep with them (seed 4)
      1.26x over 16 (0.94-2.43x; 3x3x3 stride 2 8->96 @24 batch 32 40.5 -> 16.6 ms).
    Seed 5 found stride-4 layers XLA's own 3-D convolution ran faster (`_strided_3d_direct`:
    3x3x3 96->256 @16 batch 16 9.1 ms, `matmul` 12.0; 2x2x2 64->256 @32 batch 4 4.9
    against 17.5), hence not those, and a padded input past the heap block (2x2x2
    stride 3 192->32 @10 batch 32: 14.4 ms, `lax` 6.6), which `matmul.forward` now
    chunks (3.2-3.6 ms). With both, a fresh sweep (seed 6) ran 1.42x over 16 (1.02-4.74x;
    2x2x2 stride 3 32->32 @32 batch 8 20.9 -> 4.4 ms), each faster than `lax`.
    No training program changed. Deeper patches lost to the planes in an earlier sweep
    (`/tmp/s81/sm3big.py`: 0.21-0.49x at 3456-12000 deep, all dilated), and so did one
    image's patches past `matmul.PATCH_BYTES` (3x3x3 stride 2 64->192 @32 batch 1, 23 MB
    unchunked: 0.53x)."""
    if spec.ndim != 3 or spec.groups != 1 or not spec.channels_last or lax_impl.avx2_only():
        return False
    if min(spec.stride) < 2 or max(spec.rhs_dilation) > 1 or max(spec.lhs_dilation) > 1:
        return False
    if _strided_3d_direct(spec, x_shape, w_shape, differentiated=False):
        return False
    depth = w_shape[1] * math.prod(w_shape[2:])
    return (
        STRIDED_3D_ALONE_MIN_DEPTH <= depth <= STRIDED_3D_ALONE_MAX_DEPTH
        and w_shape[0] >= STRIDED_3D_ALONE_MIN_OUT_CHANNELS
        and math.prod(w_shape[2:]) <= STRIDED_3D_ALONE_MAX_TAPS
        and matmul_impl.patch_bytes(x_shape, w_shape, spec, itemsize) <= matmul_impl.PATCH_BYTES
    )


def _strided_rows_stacked(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether the value of this dense 2-D convolution, strided along its height, runs
    as one 1-D convolution over the output rows with each output row's kernel-height
    input rows stacked along the channels (`planes.stacked`), where XLA's strided 2-D
    convolution (YNNPACK's) is slow: from `STRIDED_ROWS_MIN_FLOPS`, not with a kernel
    one tap wide; and (`_run` checks these) not under differentiation, not in the
    planes of a 3-D convolution, not in one group's of a grouped one.

    Forward against XLA's strided convolution (batch 8 unless said, padded, 9
    interleaved runs, Intel Xeon, 2026-12-01; channels-first / channels-last; two or
    three numbers where the layer was rerun): 3x3 stride 2 64->128 @56 (the bench's
    layer) 1.68x, 1.72x, 1.74x / 1.50x, 0.95x, 1.51x; 128->256 @28 1.26x / 1.04x;
    256->512 @14 1.17x / 1.09x; 128->128 @56 1.40x / 1.05x; 32->64 @112 batch 4 1.39x,
    1.49x / 0.92x, 1.23x; 3->32 @224 1.16x / 1.04x; 512->512 @14 batch 2 0.98x / 0.99x;
    5x5 64->64 @56 1.54x / 1.40x; the 7x7 stem 3->64 @224 1.23x / 1.10x; 2x2 stride 2
    96->192 @56 1.47x / 1.76x, 64->64 @56 1.41x / 1.13x; 4x4 stride 2 64->128 @64 0.68x,
    0.98x / 0.91x, 1.03x, 128->256 @32 1.26x / 0.96x; 4x4 stride 4 3->96 @224 1.02x /
    1.06x. Under differentiation the value stacked trained 0.60-1.27x (fixed
    cotangent; 128->256 @28 channels-last 0.60x, 128->128 @56 0.78x), so training keeps
    XLA's. The planes of strided 3-D convolutions stacked ran 0.53-0.96x forward
    (3x3x3 stride (1, 2, 2) 32->32 @8x56 0.53x), and a (3, 1, 1) kernel with a depth
    stride of 2, flattened to a 3x1 2-D kernel (`_temporal_as_2d`), 0.71-0.84x. Small
    layers lose what the stacking costs: batch 1, the stem @112 (59 MFLOP) 0.84-0.89x /
    0.62-0.67x, 3x3 stride 2 64->128 @56 and 128->256 @28 (115 MFLOP) 1.14x and 1.18x /
    0.93x and 1.07x; from 173 MFLOP (3->32 @224 batch 8) the layers above.

    Rerun on 2026-12-01 evening (3x3 stride 2 unless said, batch 8 unless said, same
    harness; channels-first / channels-last), the machine's XLA ran its channels-last
    strided convolution faster than before (the bench's stem 16 ms against 30), and
    stacking lost on wide channels-last maps and on layers of few products per
    position: the 7x7 stem 1.08x, 1.23x, 1.33x / 0.63x, 0.69x, 0.87x (batch 2 1.17x /
    0.78x); @112 8->64 0.61x, 0.83x / 0.62x, 0.79x; 16->64 1.21x / 0.75x; 24->64 1.14x /
    0.94x; 32->48 1.60x / 1.09x; 32->64 batch 4 0.83x, 1.17x / 0.84x, 0.79x; 64->64
    1.26x / 0.87x; 64->128 batch 4 1.31x / 0.94x; 128->256 batch 2 1.40x / 1.12x; 16->32
    0.89x / 0.82x, @224 batch 4 0.72x / 0.81x. Where it still won: @64 32->64 1.28x /
    1.07x; @56 32->64 1.11x / 0.97x, 48->96 1.51x / 1.29x, 64->128 1.84x / 1.55x
    (batch 2 1.52x / 1.13x), 96->192 1.59x / 1.58x; 128->256 @28 1.15x / 1.09x; 256->512
    @14 1.40x / 1.22x. So the rule takes layers of at least
    `STRIDED_ROWS_MIN_PRODUCTS_PER_POSITION` products per output position (16->64 3x3
    and the 7x7 stem from 3 channels have 9216 and 9408; 8->64 and 16->32 3x3 4608; a
    5x5 stem 3->64 with 4800, left out, won 1.34x / 1.10x in one run), and
    channels-last inputs at most `STRIDED_ROWS_MAX_WIDTH_CHANNELS_LAST` wide.

    Random layers the same evening (21 interleaved runs) lost where few output channels
    reuse each stacked input element: 7x7 stride 2 256->16 @27 batch 4 0.49x / 0.38x,
    5x5 stride 2 256->48 @79 batch 1 0.71x (channels-first); 3x3 stride 2 48->192 @55
    batch 4 0.95x channels-first and 192->128 @43 0.93x channels-last ran even. Each
    element of the stacked input enters ``C_out * K_w / stride_w`` products: 56 and 120
    in the two that lost, 192 in ResNet's layer, 224 in the stem. So the rule takes at
    least `STRIDED_ROWS_MIN_PRODUCTS_PER_STACKED_ELEMENT` (3x3 stride 2 to 96 output
    channels or more; 48->96 @56 won 1.51x / 1.29x, and 16->64 and 24->64 @112,
    1.21x and 1.14x channels-first, are left out).

    Not dilated: with the rule against without it (3x3 stride 2 dilation 2 unless
    said, 11 interleaved runs, Sapphire Rapids Xeon, 2026-12-03, channels-first /
    channels-last; a random held-out layer, the 5x5 below, ran 0.82x `lax`): 5x5
    256->128 @28 batch 2 0.79x / 0.83x; 128->128 @56 batch 2 0.75x / 0.81x, @28 batch
    8 1.03x / 0.85x; 96->96 @56 batch 4 0.76x / 0.93x; dilation 3 256->256 @28 batch 4
    0.91x / 0.94x; 128->256 @28 batch 4 1.05x / 0.96x; only 64->128 @56 won, 1.35x /
    1.22x at batch 2 and 1.37x / 1.47x at batch 4.

    Not to as many channels or fewer from more than
    `STRIDED_ROWS_MAX_IN_CHANNELS_NOT_WIDENING`, nor with a kernel twice the stride high
    (found by a random held-out layer, 192->128 4x4 stride 2 padding 2 @32 batch 1
    channels-last, 0.74x `lax`). With the rule against without (stride 2, padding 1,
    11 interleaved runs, Sapphire Rapids Xeon, 2026-12-03, `/tmp/s37/abfn.py`,
    channels-last / channels-first): 3x3 192->128 @32 batch 4 0.75x / 0.88x, 256->128
    @28 batch 4 0.71x / 0.84x, 256->256 @28 batch 2 0.85x / 0.91x, 128->128 @56 batch 2
    0.78x / 1.08x; 4x4 192->128 @32 batch 4 0.81x / 0.72x, 128->128 @32 batch 8 0.86x /
    0.88x, 64->128 @64 batch 4 0.84x / 0.89x, 128->256 @32 and 256->512 @16 batch 4
    0.98-1.00x, 64->64 @64 batch 8 1.10x / 1.35x. Widening 3x3 layers still won: 64->128
    @56 batch 8 1.64x / 1.92x, batch 2 1.23x / 1.35x; 96->192 @56 batch 2 1.22x / 1.20x;
    128->256 @28 batch 8 1.08x / 1.11x (batch 4 0.90x / 1.00x); 256->512 @14 batch 8
    1.09x / 1.10x.

    Kernels `STRIDED_ROWS_TALL_KERNEL` or more high only from at most
    `STRIDED_ROWS_TALL_MAX_IN_CHANNELS` channels (a random held-out 7x7 stride 2
    48->128 @64 batch 4 channels-last layer ran 0.88x `lax`): 7x7 stride 2 padding 3,
    with the rule against without (11-15 interleaved runs, the same machine and day):
    48->128 @64 batch 4 0.86x / 0.79x (channels-last / -first), 64->128 @64 batch 2
    channels-first 0.82x, @56 channels-last 0.87x, 40->96 @56 batch 4 channels-first
    0.95x; but 32->64 @64 batch 4 channels-last 1.14x, 24->64 @112 batch 2
    channels-first 1.30x. 5x5 from as many still won or tied: 64->64 @56 batch 4
    1.08x / 1.09x, 96->192 batch 2 channels-first 1.22x, 48->96 @64 0.98x."""
    c_out, c_in = w_shape[:2]
    return (
        spec.ndim == 2  # (`_run` asks for the 1-D convolutions it runs too)
        and all(d == 1 for d in spec.rhs_dilation)
        and (c_out > c_in or c_in <= STRIDED_ROWS_MAX_IN_CHANNELS_NOT_WIDENING)
        and (w_shape[2] < STRIDED_ROWS_TALL_KERNEL or c_in <= STRIDED_ROWS_TALL_MAX_IN_CHANNELS)
        and w_shape[2] != 2 * spec.stride[0]
        and spec.flops(x_shape, w_shape) >= STRIDED_ROWS_MIN_FLOPS
        and math.prod(w_shape) >= STRIDED_ROWS_MIN_PRODUCTS_PER_POSITION
        and w_shape[0] * w_shape[3] / spec.stride[1]
        >= STRIDED_ROWS_MIN_PRODUCTS_PER_STACKED_ELEMENT
        and (not spec.channels_last or x_shape[3] <= STRIDED_ROWS_MAX_WIDTH_CHANNELS_LAST)
        and spec.stride[0] > 1
        and w_shape[2] > 1
        and w_shape[3] > 1
        and planes.applies(spec)
    )


def _stacked_planes(spec: ConvSpec, x_shape, w_shape, role: int) -> bool:
    """Whether ``role``'s 3-D convolution by 2-D planes stacks each output plane's input
    planes along the channels, one 2-D convolution for every depth tap
    (`planes.stacked`), rather than one 2-D convolution per depth tap, summed
    (`planes.decompose`), on output planes of at least
    `STACKED_PLANES_MIN_PLANE_POSITIONS` positions: the value; the input gradient
    unstrided along the depth; the weight gradient from at most
    `STACKED_PLANES_WEIGHT_MAX_IN_CHANNELS` input channels per group.

    Against one convolution per depth tap (3x3x3 unless said, padded, stride 1;
    channels-first / channels-last; 7 interleaved runs, Intel Xeon, 2026-12-01): forward
    64->64 @16x28 batch 8 (the bench's video layer) 1.22x / 1.03x, 32->32 @8x28 batch 8
    1.31x / 1.01x, 128->128 @8x14 batch 4 1.18x / 1.04x, 256->256 @4x14 batch 4 1.20x /
    1.11x, 5x3x3 32->32 @16x32 batch 2 1.32x / 1.12x, C3D's first layer 3->64 @16x112
    batch 2 1.83x / 2.00x, a 7x7x7 stride-2 stem 3->64 @16x112 batch 1 1.49x / 1.39x;
    strided 3x3x3 64->128 @16x56 stride 2 and 64->64 @8x56 stride (1, 2, 2) 0.99-1.01x.
    Training with a fixed cotangent, the value and input gradient stacked: 1.04x /
    1.18x, 1.05x / 1.14x, 1.03x / 1.08x, 1.06x / 1.08x, 1.06x / 1.18x, 1.17x / 1.49x;
    strided along the depth, where the input gradient's stacking transposes to strided
    updates, 0.78x / 0.72x (the stem), 0.93x / 1.06x (stride 2). The weight gradient
    stacked too: 3->64 1.72x / 2.56x (its 2-D weight gradient from 9 channels, not
    3), 8->32 @16x56 batch 2 1.27x / 1.03x; 16->32 0.94x / 1.01x, from 32 channels
    0.88-0.95x on four of six layers. On 7x7 planes (512->512 @2x7 batch 1, 11 runs)
    stacking ran 1.01x / 0.96x forward and 0.99x / 0.83x in training."""
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    if math.prod(out[1:]) < STACKED_PLANES_MIN_PLANE_POSITIONS:
        return False
    if role == FORWARD:
        return True
    if role == INPUT_GRADIENT:
        return spec.stride[0] == 1
    return w_shape[1] <= STACKED_PLANES_WEIGHT_MAX_IN_CHANNELS


def _output_stacked_planes(spec: ConvSpec, x_shape, w_shape, role: int) -> bool:
    """Whether ``role``'s 3-D convolution by 2-D planes folds the depth taps into the
    weight's output channels, every input plane convolved once and the taps' planes
    summed (`planes.output_stacked`), rather than stacking the input planes
    (`_stacked_planes`) or summing one 2-D convolution per depth tap: unstrided along
    the depth, to fewer output channels than input channels on output planes of at least
    `OUTPUT_STACKED_MIN_PLANE_POSITIONS` positions (or, the value channels-last, to as
    many on planes as large as `_stacked_planes` asks); the input gradient
    channels-first only (its transpose stacks the output gradient's planes), and not
    the weight gradient from at most `STACKED_PLANES_WEIGHT_MAX_IN_CHANNELS` input
    channels, which stacks its input planes.

    The value against the input planes stacked (3x3x3 unless said, padded, stride 1;
    channels-first / channels-last; 9 interleaved runs, Intel Xeon, 2026-12-03,
    `/tmp/s42/ab3d.py`): fewer outputs: 128->64 @16x28 batch 4 1.23x / 1.53x, 128->32
    @8x28 1.72x / 1.77x, 96->64 @16x28 1.12x / 1.52x, 64->32 1.41x / 1.99x, 32->16 1.67x /
    1.75x, 256->64 @8x28 batch 2 1.39x / 1.66x; as many: the bench's video layer 64
    @16x28 batch 8 0.93x / 1.42x, 32 @8x28 batch 2 1.14x / 1.30x, 128 @8x14 batch 4 0.97x
    / 1.16x, 256 @4x14 1.05x / 1.11x, 5x3x3 32 @16x32 0.95x / 1.45x, 5x5x5 64 @8x28 1.04x
    / 1.32x, 64 @8x14 batch 8 1.23x / 1.28x, 4 groups of 16 1.29x / 1.21x, 512 @4x14
    batch 1 1.11x / 0.96x (minimum 1.01x); more outputs: 64->256 0.61x / 0.98x, 3->64
    @16x112 0.62x / 0.45x; strided along the depth (every input plane convolved, half
    of them for nothing): 128->64 stride (2, 1, 1) 0.57x / 0.66x. Grouped layers take
    the rule per group (dense groups) or whole: 16 groups of 4 @8x28 batch 2 channels-last
    1.49x (forward) and 1.31x (training), @8x16 1.78x; 2 groups of 32->16 2.19x / 1.62x
    (training 1.02x / 0.99x); 32 groups of 4->2 3.38x / 3.42x (training 1.67x / 1.35x);
    32 groups of 4 @8x28 batch 4 channels-last 1.78x (channels-first, not taken: the same
    program, 0.81-1.06x its noise).

    The weight gradient against one 2-D weight gradient per depth tap (7 interleaved
    runs, `/tmp/s42/wgab.py`): fewer outputs: 128->64 @16x28 batch 4 1.22x / 1.48x,
    96->64 1.14x / 1.24x, 64->32 1.19x / 1.39x, 32->16 1.23x / 1.62x, 5x3x3 128->64
    batch 2 1.15x / 1.32x, 5x5x5 64->32 @8x28 1.39x / 1.49x; as many, mixed: the video
    layer 0.98x / 1.15x, 64 @8x14 batch 8 1.38x / 1.29x, 32, 48 and 64 @8-16x28
    0.97-1.07x, 128 and 256 @4-8x14-28 0.88-1.07x, 5x5x5 64 @8x28 0.90x / 0.92x, 5x3x3
    32 @16x32 0.56x / 0.64x; more outputs 0.56-0.78x; strided along the depth 0.64x /
    0.82x.

    The input gradient against the input planes stacked (its transpose: the output
    gradient's planes convolved once, the taps folded into the channels; 7 interleaved
    runs, `/tmp/s42/dxab3.py`), channels-first: fewer outputs 1.16-2.02x on twelve
    layers (128->64 @16x28 batch 4 1.36x, 64->32 1.49x, 96->64 1.20x, 256->64 @8x28
    1.59x, 32->16 1.63x, 128->32 @8x28 2.02x, 5x5x5 64->32 1.18x, 2 groups of 32->16
    1.20x, 512->256 @4x14 1.25x, 64->48 1.23x, 5x3x3 128->64 1.40x, 128->64 @8x14 batch
    8 1.16x), training 1.21-1.41x on five; as many 0.86-1.07x; channels-last 0.84-1.15x
    (channels-last the input gradient is 1.9x faster to begin with: 87 against 167 ms on
    128->64 @16x28).

    On planes under 196 positions, against one 2-D convolution per depth tap (7 runs,
    floors lifted; channels-first / channels-last): the value to fewer channels 128->64
    @8x7x7 batch 8 1.86x / 1.65x, 512->256 @4x7x7 batch 4 1.39x / 1.08x, 256->128
    @4x12x12 1.38x / 1.30x, 32->16 @8x8x8 1.23x / 1.20x, 256->128 @8x14x12 batch 1 1.34x
    / 1.26x, but 64->32 @8x4x4 1.11x / 0.81x; training with every role by the rule
    1.10-1.33x on four of them; as many channels 0.65-1.34x (512 @2x7x7, 128 @4x7x7, 256
    @4x4x4, 64 @8x12x12), so not there."""
    positions = math.prod(spec.out_spatial(x_shape[2:], w_shape[2:])[1:])
    c_out, c_in_g = w_shape[0] // spec.groups, w_shape[1]
    if spec.stride[0] != 1 or w_shape[2] == 1 or positions < OUTPUT_STACKED_MIN_PLANE_POSITIONS:
        return False
    fewer = c_out < c_in_g
    if role == FORWARD:
        as_many = spec.channels_last and c_out == c_in_g
        return fewer or (as_many and positions >= STACKED_PLANES_MIN_PLANE_POSITIONS)
    if role == WEIGHT_GRADIENT:
        return STACKED_PLANES_WEIGHT_MAX_IN_CHANNELS < c_in_g and fewer
    # The input gradient: its convolution of the output gradient goes to more channels.
    return fewer and not spec.channels_last


def _output_stacked_rows(spec: ConvSpec, w_shape) -> bool:
    """Whether the weight gradient of a 2-D convolution by kernel rows (the rows rule in
    `_run`) folds the kernel rows into the output channels, one 1-D weight gradient of
    every input row against the output gradient's rows stacked (`planes.output_stacked`),
    rather than one 1-D weight gradient per kernel row (`planes.decompose`): unstrided
    along the height, more than one kernel row, to fewer output channels than input
    channels per group.

    Against one per kernel row (channels-first / channels-last, batch 8 unless said, 7
    interleaved runs, Intel Xeon, 2026-12-03, `/tmp/s42/ab2dw.py`): the weight gradient
    alone 3x3 128->64 @56 1.56x / 1.52x, 256->128 @28 1.14x / 1.17x, 512->256 @14 1.38x
    (channels-last not by rows), 64->32 @56 1.30x / 1.25x, 256->64 @56 batch 4 1.84x /
    2.28x, 5x5 128->64 @28 1.25x / 1.29x; training 128->64 @56 1.17x / 1.18x, 256->64 @56
    1.24x / 1.33x; the bench's transposed layers, whose sub-pixel phases (2x2 kernels
    from 256 to 128 channels, 64 to 32) take it: DCGAN's training 1.04x / 1.10x, the 3x3
    stride-2 one 1.01x channels-first (11 runs, `/tmp/s42/abbench.py`). To as many
    channels 0.98-1.15x alone but training 0.99-1.14x (ResNet 3x3 64@56 and 256@14), so
    not there.

    For one group (a whole layer, or each of the dense groups a grouped layer is split
    into; `choose` sends no grouped layer's weight gradient here whole) its transpose is
    written out (`planes.output_stacked_weight_gradient`; the timings are dense layers'):
    against JAX's transpose of `planes.output_stacked` (9-11 interleaved runs, settled,
    2026-12-04, `/tmp/s47/abos.py`; the weight gradient alone, training with a fixed
    cotangent, through a ReLU): 3x3 1024->512 @16 batch 1 channels-last 1.03x, 1.44x,
    1.47x (XLA had split the transpose to the caller's weight in two copies beside the
    step's other outputs), channels-first 1.04x, 0.94-1.07x, 0.98-0.99x; 128->64 @56,
    256->128 @28, 512->256 @14, 256->64 @56 batch 4, 5x5 128->64 @28, 512->256 @32
    batch 2 and @16 batch 4, 1024->512 @8 batch 2, 2048->1024 @8 batch 1 and DCGAN's
    4x4 stride-2 256->128 phases: 0.96-1.09x, 0.99-1.09x, 0.96-1.13x."""
    c_out, c_in_g = w_shape[0] // spec.groups, w_shape[1]
    return spec.stride[0] == 1 and w_shape[2] > 1 and c_out < c_in_g


def _transposed_value_whole(x_shape, w_shape, spec: ConvSpec, differentiated: bool = False) -> bool:
    """Whether the value of this transposed (input-dilated) convolution runs as XLA's
    convolution whole, not by sub-pixel phases (whose derivatives it keeps): dense, to
    at most `TRANSPOSED_WHOLE_MAX_OUT_CHANNELS` channels, in 1-D, and in 2-D with one
    convolution per phase (`subpixel.one_convolution` None) from at least
    `TRANSPOSED_WHOLE_MIN_IN_CHANNELS` channels on inputs of at most
    `TRANSPOSED_WHOLE_MAX_POSITIONS` positions (and channels-last on any input from
    `TRANSPOSED_WHOLE_WIDE_MIN_IN_CHANNELS` channels and
    `TRANSPOSED_WHOLE_WIDE_MIN_CHANNEL_RATIO` times the output channels where the phases
    share no window: the comments at the function's end),
    there also from many channels on small inputs outside differentiation (the end of
    this note) and, outside differentiation, at stride 3-4 with kernels at most one
    longer than the stride or at stride 2 from a batch of 4 (`_short_phases`); never
    with a dilated kernel (below). In 1-D the phases, even in one convolution, ran
    0.31-0.96x XLA's forward (stride 2-8, 32-512 to 1-8 channels @500-4000, batch 1-8,
    both layouts, 12 layers, 11 interleaved runs). Not in 3-D,
    where XLA's input-dilated convolution is far slower than the phases (3x3x3 stride 2
    64->8 @8x14x14 batch 2: 228 ms, the phases 1.0 ms). In 2-D each phase's convolution
    to so few channels runs far below the machine's rate: forward, phases against XLA's
    input-dilated convolution (2-D, stride 2, 4x4 padding 1, 3x3 padding 1 with output
    padding 1 and 3x3 unpadded, from 32-256 channels @16-64, batch 1-8, 11 interleaved
    runs): to 1, 3 and 8 channels 0.25-1.40x, below 0.9x on 61 of 72 layers (to 3
    channels, DCGAN's last layer 64->3 4x4 @32 batch 8: 0.75x / 0.76x channels-first /
    channels-last; 3x3 unpadded 0.29-0.46x), above 1.1x on 5 (from 32 channels @64,
    1.2-1.4x); to 16 channels 0.60-1.75x, left to the phases. Where the phases stack
    into one convolution over a shared window (`subpixel.one_convolution` "stacked"), to
    at most 16 channels from at least 128 and 16 times as many: stacked against XLA's
    (2-D, stride 2, to 1-8 channels, 11 interleaved runs, both layouts) from 128-512
    channels 0.42-1.60x, below 0.9x on 13 of 20 layers (5x5 @14-56 0.42-0.94x, 4x4
    unpadded 0.71-0.93x, 6x6 0.87-1.60x); from 16-96 channels 0.49-7.9x, 1.1x or more on
    18 of 25 (5x5 0.81-7.9x, 4x4 unpadded 0.49-2.3x). With the rule, against without (15
    interleaved runs, forward and training through a ReLU): 5x5 1.42-2.45x and
    1.06-1.33x, 4x4 unpadded 1.03-1.31x and 1.01-1.13x, 6x6 0.90x and 1.01x from 128
    channels, 1.08x and 1.05x from 512; the value is then 0.90-1.06x XLA's. To 12-16
    channels stacked ran 0.58-0.71x XLA's on 5x5 from 256-512 channels, 0.93x from 128,
    and 0.92-1.26x on 4x4 unpadded; the rule against without: 5x5 from 256-512
    1.42-1.70x and 1.08-1.14x, 4x4 from 256-384 1.04-1.10x and 1.00-1.14x, but from 128
    (ratio 8) 4x4 0.80x and 0.86x, 5x5 1.03x and 0.93x. (Kernels the size of the stride
    take one 1x1 convolution, `subpixel._merged`, 0.52-4.1x XLA's over 19 layers, below
    0.9x only on four that take under 0.1 ms, and stay.) And, outside differentiation,
    in 2-D where each phase is a convolution of its own or `_shifted_phases` applies,
    from at least `TRANSPOSED_WHOLE_MIN_CHANNEL_RATIO_SMALL` times the output channels
    on inputs of at most `TRANSPOSED_WHOLE_MAX_POSITIONS_SMALL` positions (below).

    A dilated kernel keeps the phases: XLA's convolution dilating both its input and its
    kernel ran far slower than the phases, each of which meets only its own taps (all of
    them in one phase where the dilation is a multiple of the stride). Forward, XLA's
    whole against the phases (11 interleaved runs, AMD EPYC with AVX2, 2026-12-05,
    channels-first / channels-last, batch 8 unless said): 2-D 64->8 3x3 @32 stride 2
    dilation 2 4.81 / 4.38 ms against 1.33 / 1.13, stride 4 dilation 2 18.4 / 16.7
    against 4.5 / 2.0, stride 3 dilation 3 9.8 / 9.9 against 1.8 / 1.3, stride 2
    dilation 3 5.2 / 4.7 against 1.6 / 1.5, dilated along the height only 2.6 / 4.0
    against 1.5 / 1.2; 128->3 4x4 dilation 2 @28 batch 4 6.8 / 6.2 against 0.8 / 1.5;
    256->8 5x5 @14 8.3 / 7.6 against 1.8 / 2.1; 32->1 3x3 @64 batch 2 2.9 / 1.8 against
    0.24 / 0.39; from many channels on small inputs, 512->32 4x4 @7 batch 2 2.9 / 2.5
    against 1.3 / 1.0, 1024->64 @14 batch 2 27 / 29 against 8.1 / 9.0; 1-D 64->8 k7
    stride 2 dilation 2 @256 0.59-0.73 / 0.54-0.56 against 0.39-0.40 / 0.31, k5 stride 4
    dilation 2 0.91 / 0.67 against 0.36 / 0.24, stride 2 dilation 3 0.49 / 0.49 against
    0.34 / 0.33, 128->1 k9 dilation 2 @1000 batch 4 1.5 / 1.1 against 0.36 / 0.45, 32->1
    k5 dilation 2 @500 0.73 / 0.71 against 0.13 / 0.30. Training, where the programs
    differ (to at most 8 channels), with the phases 0.97-1.25x (`/tmp/s57/tog3.py`,
    `tw*.txt`)."""
    if spec.groups != 1 or spec.ndim == 3 or any(d > 1 for d in spec.rhs_dilation):
        return False
    c_out, c_in = w_shape[:2]
    if spec.ndim == 1:
        return c_out <= TRANSPOSED_WHOLE_MAX_OUT_CHANNELS
    one = subpixel.one_convolution(x_shape, w_shape, spec)
    if one == "stacked":
        return c_out <= TRANSPOSED_WHOLE_MAX_OUT_CHANNELS_STACKED and c_in >= max(
            TRANSPOSED_WHOLE_MIN_IN_CHANNELS_STACKED,
            TRANSPOSED_WHOLE_MIN_CHANNEL_RATIO_STACKED * c_out,
        )
    if one == "merged":
        # Kernels the size of the stride, outside differentiation: the phases' merged
        # kernel is a copy of the whole weight each call, which costs more than the
        # product where the weight is larger than the input. 2x2 stride 2, forward,
        # XLA's whole against the phases (11-15 interleaved runs): 512->384 @4 batch 1
        # 1.9-2.8x, batch 8 1.3x; 512->256 @8 batch 1 1.5-1.6x; 1024->512 @7 batch 2
        # 2.5-2.6x; 256->128 @16 batch 1 1.3x; with the input larger, 256->128 @16
        # batch 8 0.84x. In training, whose derivatives copy the merged kernel anyway,
        # XLA's value did not pay (0.76-1.07x). Channels-last likewise (11 interleaved
        # runs, Sapphire Rapids Xeon, 2026-12-04, `/tmp/s44/abwhole.py`; an earlier
        # measurement had the phases faster there, 0.23-0.31x, and kept them): 3x3 stride
        # 3 512->512 @7 batch 1 2.49x (the phases 0.38x `lax`), 512->256 @7 batch 2
        # 2.27x, 128->128 @7 1.10x, 128->64 @14 1.12x, 256->128 @14 1.10x; 2x2 512->384
        # @4 2.02x, 1024->512 @7 batch 2 1.69x, @14 batch 1 1.33x, 512->256 @8 batch 2
        # 1.29x, @7 batch 4 1.44x, @14 batch 1 1.04x, 64->64 @8 1.02x, but 256->256 @8
        # and @16 batch 1 0.91x and 0.88x; 4x4 stride 4 512->256 @7 3.35x, 256->128 @14
        # 1.58x; with the input larger (not taken) 256->128 3x3 @14 batch 8 0.94x,
        # 128->64 4x4 @14 batch 8 0.79x. Training (not taken) 0.69-1.05x.
        return not differentiated and math.prod(w_shape) > math.prod(x_shape)
    if one is not None:
        return False
    if not differentiated and _short_phases(x_shape, w_shape, spec):
        return True
    # From many channels to few on small inputs, outside differentiation: XLA's whole
    # against the phases (one convolution per phase, or `_shifted_phases`'), forward,
    # 4x4 stride 2 padding 1, batch 2 unless said, channels-first / channels-last, 11
    # interleaved runs, Intel Xeon, 2026-12-04 (`/tmp/s44/abwhole.py`): 512->32 @7
    # 0.98x / 1.22x, @14 1.14-1.24x / 1.25-1.32x; 1024->64 @7 1.17x / 1.29x, @14
    # 1.18-1.21x / 1.34-1.36x; 256->32 @7 1.07x / 1.31x, @14 1.12x / 1.35x; 512->64 @7
    # 1.13x / 1.15x, @14 1.07x / 1.14x, batch 8 @7 1.31x channels-last; 4x4 stride 3
    # 512->64 @14 batch 1 1.07x / 1.14x; 3x3 stride 2 output padding 1 1.32x
    # channels-first. Not from 4 times as many channels, where it was mixed (512->128
    # @7 0.90-1.00x / 0.92-1.09x, @14 0.95x / 1.03x; 256->64 @7 1.21-1.25x /
    # 1.33-1.35x), nor on larger inputs (@28:
    # 512->32 0.88x / 1.22x, 512->64 1.00x / 1.06x, 256->32 0.94x / 0.99x), nor in
    # training, where the whole value trained 0.92-1.13x.
    small = (
        not differentiated  # and 2-D (1-D and 3-D returned above)
        and c_in >= TRANSPOSED_WHOLE_MIN_CHANNEL_RATIO_SMALL * c_out
        and x_shape[0] * math.prod(x_shape[2:]) <= TRANSPOSED_WHOLE_MAX_POSITIONS_SMALL
    )
    # To few channels only as measured: from 32-256 channels on inputs of 16-64 px. From
    # fewer channels or on larger inputs the phases ran faster (forward / the value with
    # both gradients, XLA's whole against the phases, 5 interleaved runs, AMD EPYC with
    # AVX2, 2026-12-05, `/tmp/s58/force.py`): 8->8 3x3 stride 2 @224 batch 4 4.8x /
    # 1.50x (63 ms against 13), 4->3 4x4 @224 4.2x / 1.43x, 64->1 @128 3.4x / 1.54x, 8->1
    # 3x3 @64 channels-last 2.9x / 1.46x, 8->3 4x4 @112 2.7x / 1.18x, 16->3 @128 2.3x /
    # 1.21x, 32->3 @128 1.39x / 1.16x, 16->8 3x3 @112 channels-last 1.30x / 1.21x. (Within
    # the measured range this machine also ran the phases faster, forward 0.91-2.07x
    # over ten layers, training 0.69-1.63x; the Xeon that measured the rule had XLA's
    # whole faster on 61 of 72 such layers, and the rule stands there.)
    measured = (
        c_in >= TRANSPOSED_WHOLE_MIN_IN_CHANNELS
        and math.prod(x_shape[2:]) <= TRANSPOSED_WHOLE_MAX_POSITIONS
    )
    # Channels-last from many channels, where the phases share no window (3x3 stride 2,
    # any padding), on inputs of any size. Found by a random sweep (`/tmp/s59/rand.py
    # 3636`: 256->8 3x3 stride 2 @112 batch 1 channels-last, forward 8.3 ms by the
    # phases, XLA's whole 4.3). XLA's whole against the phases, forward / the value
    # with both gradients (5 interleaved runs, 11 where a first run read under 1x, AMD
    # EPYC with AVX2, 2026-12-05, `/tmp/s59/force.py`, `gen.py` `gen64`, `gen65`;
    # batch 1 unless said), on 23 layers from 48-512 channels to 1-8 on inputs @72-224:
    # forward 1.01-4.97x (512->2 @72 batch 2 4.9x, 512->4 @112 4.9x, 64->1 @160 5.0x,
    # 128->1 @224 2.9x; to 8 channels 1.01-1.52x), the value with both gradients
    # 0.94-4.39x (128->1 @224 4.4x; under 1x twice, 0.94x and 0.97x). From 32 channels
    # it went both ways (forward 0.56-2.48x over seven layers: 32->8 @224 batch 2 0.56x,
    # 32->2 @72 batch 2 2.48x), from 16 it lost (16->4 @224 0.72x / 1.08x), from 48 to 8
    # too (0.74x twice with both gradients); channels-first it lost (forward 0.45-0.98x
    # over twelve layers from 64-512 channels @72-224, with both gradients 0.49-1.87x),
    # and where the phases share a window (4x4 stride 2 padding 1, the `_shifted_phases`
    # forward: 0.16-1.78x; 48->8 @112 batch 8 0.16x).
    least = max(
        TRANSPOSED_WHOLE_WIDE_MIN_IN_CHANNELS, TRANSPOSED_WHOLE_WIDE_MIN_CHANNEL_RATIO * c_out
    )
    wide = (
        spec.channels_last
        and c_in >= least
        and subpixel.shifted_window(x_shape, w_shape, spec) is None
    )
    return small or (c_out <= TRANSPOSED_WHOLE_MAX_OUT_CHANNELS and (measured or wide))


def _short_phases(x_shape, w_shape, spec: ConvSpec) -> bool:
    """Whether this dense 2-D transposed convolution, each of whose phases is a
    convolution of its own (`subpixel.one_convolution` None, which its caller checked,
    and no shared window, `subpixel.shifted_window`), has (stride 2: the end of this
    note) a stride from `TRANSPOSED_WHOLE_SHORT_MIN_STRIDE` to
    `TRANSPOSED_WHOLE_SHORT_MAX_STRIDE` and a kernel at most one longer along each dim
    (4x4 stride 3, 5x5 and 3x3 stride 4: phases of one or two taps a dim, or none), to
    at most `TRANSPOSED_WHOLE_SHORT_MAX_OUT_CHANNELS` channels from at least
    `TRANSPOSED_WHOLE_SHORT_MIN_CHANNEL_RATIO` times as many and at least
    `TRANSPOSED_WHOLE_MIN_IN_CHANNELS` (the fewest measured: 32): outside
    differentiation its value is XLA's convolution whole (`_transposed_value_whole`).
    Found by random sweeps of transposed layers (Sapphire Rapids Xeon, 2026-12-06, 7
    interleaved runs, `/tmp/s66/tsweep*.py`): 512->32 4x4 stride 3 @14 batch 16
    channels-last forward 0.44-0.54x `lax`, and of 36 layers at stride 3-4 from 2-16
    times the output channels whose phases are a convolution each, 15 under 0.9x, nearly
    all with the kernel at most one longer than the stride (4x4 stride 3 0.56-0.92x on 9
    of 11, 5x5 stride 4 0.64-0.91x on 6 of 6), while 5x5 stride 3 and 7x7 stride 4 ran
    0.85-1.40x. The rule against without, forward (9 interleaved runs, `shortab.py`): on
    30 layers from 1-16 times the output channels 0.72-1.83x, under 0.9x on six
    (0.72-0.88x), five of them from at most twice as many; from 4-16 times, 0.88-1.83x
    on 20 (geometric mean 1.18x; 64->16 3x3 stride 4 @8 batch 1 1.83x, 256->16 @14 batch
    8 1.57x) and on 24 fresh ones 0.70-2.14x (1.08x; 128->32 2x2 stride 3 @14 batch 16
    2.14x; the losses on layers under 1.1 ms, 128->32 2x2 stride 4 @16 batch 2 0.70x,
    stride 3 @32 0.73x, 128->8 3x3 stride 4 @14 batch 16 0.90x). With it the value runs
    0.83-1.15x `lax` there, without it 0.53-1.57x. Not in training, where the whole
    value ran 0.56-1.62x with the phases' derivatives (geometric mean 1.02x over 30
    layers). Nor on a kernel the size of the stride with padding, whose phases share a
    window (`subpixel._shifted_interleaved`: 3x3 stride 3 padding 1 256->64 @28 batch 16
    forward 1.2-1.5x `lax`).

    At stride 2 too, with kernels of at most `TRANSPOSED_WHOLE_STRIDE_2_MAX_KERNEL` taps
    a dim (3x3 and 5x5: 4x4 shares a window or stacks), from a batch of at least
    `TRANSPOSED_WHOLE_STRIDE_2_MIN_BATCH` and at least
    `TRANSPOSED_WHOLE_STRIDE_2_MIN_CHANNEL_RATIO` times the output channels. A sweep
    (`tsweep4.py 6609 24 fwd`, 7 runs, from 2-8 times the channels) had 10 of 24 under
    0.9x `lax` (128->16 3x3 stride 2 padding 2 @16 batch 16 channels-last 0.48x); from
    8 times, XLA's whole was ahead on 6 of 7. The rule against without (9 interleaved
    runs, from 8-16 times the channels, `s2ab.py`): on 20 layers of batch 1-16
    0.70-2.21x, but from batch 4 0.98-2.21x on 9 and at batch 1-2 0.70-1.33x, under
    0.95x on 7 of 11 (512->64 3x3 @56 batch 2 channels-last 0.72x); from batch 4 on 18
    fresh layers (`s2ab4.py 6611 18`) 0.85-3.75x, geometric mean 1.54x (512->32 3x3
    padding 2 @32 batch 4 channels-last 22.9 ms to 6.1), under 1x on two (0.85x, 0.90x)."""
    c_out, c_in = w_shape[:2]
    strides = spec.lhs_dilation
    if all(ld == 2 for ld in strides) and x_shape[0] >= TRANSPOSED_WHOLE_STRIDE_2_MIN_BATCH:
        # Stride 2 (see the end of this note).
        short = all(k <= TRANSPOSED_WHOLE_STRIDE_2_MAX_KERNEL for k in w_shape[2:])
        ratio = TRANSPOSED_WHOLE_STRIDE_2_MIN_CHANNEL_RATIO
    else:
        short = all(
            TRANSPOSED_WHOLE_SHORT_MIN_STRIDE <= ld <= TRANSPOSED_WHOLE_SHORT_MAX_STRIDE
            for ld in strides
        ) and all(k <= ld + 1 for k, ld in zip(w_shape[2:], strides, strict=True))
        ratio = TRANSPOSED_WHOLE_SHORT_MIN_CHANNEL_RATIO
    return (
        short
        and c_in >= max(TRANSPOSED_WHOLE_MIN_IN_CHANNELS, ratio * c_out)
        and c_out <= TRANSPOSED_WHOLE_SHORT_MAX_OUT_CHANNELS
        and subpixel.shifted_window(x_shape, w_shape, spec) is None
    )


# See `_shifted_phases`.
SHIFTED_PHASES_MAX_OUT_CHANNELS = 128
SHIFTED_PHASES_MIN_OUT_CHANNELS_TRAINING_CHANNELS_LAST = 32


def _shifted_phases(x_shape, w_shape, spec: ConvSpec, differentiated: bool) -> bool:
    """Whether the value of this transposed convolution computes its phases in one
    convolution over the positions they all cover (`subpixel.shifted_window`: every
    phase meets as many taps, as in 4x4 stride 2 with padding 1, DCGAN's layer), its
    kernels stacked along the output channels, instead of one convolution per phase:
    1-D and 2-D, to at most `SHIFTED_PHASES_MAX_OUT_CHANNELS` channels; channels-last
    under differentiation to at least
    `SHIFTED_PHASES_MIN_OUT_CHANNELS_TRAINING_CHANNELS_LAST`. The derivatives stay the
    phases'. Against one convolution per phase (`impl="auto"`, 4x4 stride 2 padding 1
    unless said, batch 8 unless said, 11-21 interleaved runs, forward and training with
    a fixed output gradient, channels-last / channels-first, Intel Xeon, 2026-12-04,
    `/tmp/s44/abshift.py`): 512->64 @14 batch 2 0.96-1.04x, 1.03-1.11x / 1.15-1.16x,
    1.11-1.12x, batch 8 1.29-1.30x, 1.20x; 256->64 @14 batch 2 1.03-1.24x, 1.05-1.40x;
    DCGAN's 256->128 @16 1.08-1.09x, 1.10x / 1.10-1.11x, 1.09x; 128->64 @32 1.17-1.30x,
    1.10x / 1.14-1.23x, 1.14x; 64->32 @64 1.23x, 1.13x / 1.21x, 1.06x; 64->64 @28 batch
    4 1.17x, 1.28x; 32->32 @64 batch 4 channels-first 1.17x, 1.07x; 6x6 stride 3 256->128
    @16 channels-last 1.11x, 1.06x; output padding 1, 128->64 @16 batch 16
    channels-first 1.27x, 1.08x; 1-D 128->64 @500 1.16-1.19x, 1.11x; 6 taps stride 2
    padding 2 256->64 @300 batch 4 channels-last 0.99x, 1.16x; from deep small maps
    512->128 @8 0.90-0.94x, 1.07-1.10x / 0.97x, 1.11x, 256->128 @8 batch 16
    channels-first 1.10x, 1.07x. To 16 channels channels-last the training step lost
    (64->16 @64 1.55x forward, 0.81-0.84x training; 32->16 @64 1.57x, 0.85x; 128->16
    @32 1.55x, 1.04x; channels-first 64->16 1.62x, 1.06x). To 256 channels the one
    convolution was slower (512->256 @14 batch 2 channels-last 0.68x forward, @4 batch
    16 channels-first 0.96x), and in 3-D (64->32 @8 batch 2 0.83x / 1.01x forward)."""
    if spec.ndim > 2 or w_shape[0] > SHIFTED_PHASES_MAX_OUT_CHANNELS:
        return False
    if (
        differentiated
        and spec.channels_last
        and w_shape[0] < SHIFTED_PHASES_MIN_OUT_CHANNELS_TRAINING_CHANNELS_LAST
    ):
        return False
    return subpixel.shifted_window(x_shape, w_shape, spec) is not None


def _transposed_input_gradient_whole(x_shape, w_shape, spec: ConvSpec) -> bool:
    """Whether the derivative along the input of this transposed (input-dilated)
    convolution runs as XLA's convolution whole, so that its transpose, the input
    gradient, is one strided convolution of the output gradient rather than the sum of
    the phases' transposes: dense, 2-D, to at most
    `TRANSPOSED_INPUT_GRADIENT_WHOLE_MAX_OUT_CHANNELS` channels, where each phase is a
    convolution of its own (`subpixel.one_convolution` None, e.g. 3x3 and 4x4 with
    padding 1 at stride 2). The input gradient alone, XLA's against the phases' (11
    shuffled runs): there 0.99-4.9x the phases' speed on 18 layers (32-256 to 1-16
    channels, @14-64, batch 8-64, both layouts; 64->16 4x4 @64 batch 16 2.1-2.3x, 64->8
    3x3 @32 batch 64 channels-last 3.5x); where the phases stack or merge, 0.36-1.46x
    (32->3 5x5 @16 0.36x, 4x4 unpadded 0.36-0.98x). Training through a ReLU with the
    rule against without: 0.95-1.36x, 1.04x or more on 9 of 12 (DCGAN's last layer 64->3
    4x4 @32 batch 64 1.13x, batch 16 channels-last 1.31x; 64->1 @14 batch 64 1.24x).
    With 32 or more channels the whole ran 0.84-1.10x in training (64->32 4x4 @32
    channels-last 0.91x, 3x3 @56 0.93x; DCGAN 256->128 0.97-1.00x)."""
    return (
        spec.groups == 1
        and spec.ndim == 2
        and w_shape[0] <= TRANSPOSED_INPUT_GRADIENT_WHOLE_MAX_OUT_CHANNELS
        and subpixel.one_convolution(x_shape, w_shape, spec) is None
    )


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical convolution by the algorithm (or phase split) the rules choose.

    A convolution is bilinear, so its derivative is two more convolutions with the same
    spec: ``d conv(x, w) = conv(dx, w) + conv(x, dw)``. The custom JVP computes each
    with the algorithm chosen for it; reverse mode transposes that linear map,
    so the input gradient (a transposed convolution) and the weight gradient (a
    correlation of input and output gradient) run through that algorithm's transpose,
    never through XLA's slow convolution transposes unless it is the choice. Forward
    mode (`jax.jvp`, `jax.jacfwd`) keeps working, which a `custom_vjp` would break.

    A layer is first reduced to the part of it that reads the input (`reduced_layer`),
    and outputs that read only padding are zeros written around the rest
    (`_outputs_reading_input`).
    """
    x, w, spec = reduced_layer(x, w, spec)
    return with_outputs_cropped(x, w, spec, lambda x_, w_, spec_: forward_with(x_, w_, spec_, None))


def with_outputs_cropped(x: jax.Array, w: jax.Array, spec: ConvSpec, run) -> jax.Array:
    """``run(x, w, spec)``; where some outputs read only padding
    (`_outputs_reading_input`), ``run`` of the rest on the input it reads, with zeros
    written around it."""
    cropped = _outputs_reading_input(x, w, spec)
    if cropped is None:
        return run(x, w, spec)
    starts, limits, zeros, inner = cropped
    x = slices_in_layout(x, spec, starts, limits, [1] * x.ndim)
    return pads_in_layout(run(x, w, inner), spec, zeros)


def _outputs_reading_input(
    x: jax.Array, w: jax.Array, spec: ConvSpec
) -> tuple[list[int], list[int], list[tuple[int, int]], ConvSpec] | None:
    """Where some outputs at either end of a spatial dim read only padding (a padding
    past the kernel's reach: a padded 1x1 layer's border), the input box the others
    read (``starts``, ``limits`` of the canonical input), the zero outputs before and
    after them per dim, and the spec of their convolution; else None, and None on what
    `reduced_layer` leaves whole (not on the CPU, input-dilated, on a mesh), and where
    no output reads the input.

    Output ``o`` reads the input at ``s * o + d * t - lo`` for the taps ``t``; the
    outputs from ``first`` to ``last`` that read some input element need the input from
    ``s * first - lo`` to ``s * last + d * (k - 1) - lo`` (padded where past it). The
    other outputs are sums of zeros (no bias here), written as zeros around the rest:
    no padded copy of the input, no products of padding. A layer to more channels than
    it reads, whose zeros written cost more than its input's padded copy, only where
    at least half its outputs are zeros (`CROP_WIDENING_MIN_ZEROS_RATIO`). As with the
    trimmed taps, a non-finite weight no longer makes NaNs in those outputs.

    Found by a random sweep (`/tmp/s78/rsweep.py 101`: 1x1 96->4 padding 1 @112 batch
    8 channels-last forward 13.6 ms, PyTorch 1.7; in a 9-run rerun 1.25 ms, PyTorch
    1.40, `lax` 17.3). Cropped against whole (`auto` both), random layers of 1-3 dims padded 1-3
    past the kernel's reach (1x1-3x3, strides 1-2, 1-256 -> 1-256 channels, batch 1-16,
    both layouts; 7 interleaved runs, Sapphire Rapids Xeon, 2026-12-07,
    `/tmp/s79/crop.py 1|2|3 16 7 fwd,train`): forward 1.49x, 1.61x, 1.18x, training
    1.40x, 1.51x, 1.22x (geometric means of 16 layers each, those left whole
    included); 3-D 1x1 128->1 padding 3 @16 batch 16 channels-first 34.8x forward
    (43.3 ms to 1.24), 9.4x training; under 0.9x on five rows of 96 (0.56-0.87x, 0.1-0.7
    ms: 3-D 1->256 2x2x2 stride 2 padding 5 @8 batch 2 forward 0.56x, training 1.85x).
    Before the widening bound, 3->256 3x3 padding 5 @56 batch 8 channels-first trained
    0.61x, 8->128 1x1 padding 1 @56 batch 1 channels-last 0.53x forward."""
    if not _reducible(x, w, spec):
        return None
    kernel = w.shape[2:]
    out = spec.out_spatial(x.shape[2:], kernel)
    if min(out, default=1) < 1 or 0 in x.shape:
        return None
    starts, limits, zeros, padding = [0, 0], list(x.shape[:2]), [], []
    for n, k, o, s, d, (lo, _) in zip(
        x.shape[2:], kernel, out, spec.stride, spec.rhs_dilation, spec.padding, strict=True
    ):
        spans = [span for t in range(k) if (span := _tap_outputs(n, o, s, d, lo, t))]
        if not spans:
            return None
        first, last = min(a for a, _ in spans), max(b for _, b in spans)
        begin, end = s * first - lo, s * last + d * (k - 1) - lo  # (inclusive)
        starts.append(max(0, begin))
        limits.append(min(n, end + 1))
        padding.append((max(0, -begin), max(0, end - (n - 1))))
        zeros.append((first, o - 1 - last))
    if all(z == (0, 0) for z in zeros):
        return None
    inner = math.prod(o - a - b for o, (a, b) in zip(out, zeros, strict=True))
    if w.shape[0] > x.shape[1] and inner * CROP_WIDENING_MIN_ZEROS_RATIO > math.prod(out):
        return None
    return starts, limits, zeros, dataclasses.replace(spec, padding=tuple(padding))


# A layer to more channels than it reads crops its outputs that read only padding
# (`_outputs_reading_input`) only where at most 1/this of its outputs read the input.
CROP_WIDENING_MIN_ZEROS_RATIO = 2


def _reducible(x: jax.Array, w: jax.Array, spec: ConvSpec) -> bool:
    """Whether `reduced_layer` and `_outputs_reading_input` may change this layer: on
    the CPU, not input-dilated, not on a mesh of several devices."""
    return (
        backend_name() == "cpu"
        and all(d == 1 for d in spec.lhs_dilation)
        and split_mesh(x, w) is None
    )


def _tap_outputs(n: int, o: int, s: int, d: int, lo: int, t: int) -> tuple[int, int] | None:
    """The first and last of the ``o`` outputs along a dim of ``n`` inputs (stride
    ``s``, kernel dilation ``d``, low padding ``lo``) at which tap ``t`` reads an input
    element, not the padding; None if it reads only padding. With ``c = d * t - lo``:
    from ``max(0, ceil(-c / s))`` to ``min(o - 1, floor((n - 1 - c) / s))``."""
    c = d * t - lo
    first, last = max(0, -(c // s)), min(o - 1, (n - 1 - c) // s)
    return (first, last) if first <= last else None


def reduced_layer(
    x: jax.Array, w: jax.Array, spec: ConvSpec
) -> tuple[jax.Array, jax.Array, ConvSpec]:
    """The smaller convolution with this layer's result (on the CPU, not input-dilated,
    that is not a transposed layer of stride 2 or more, and not on a mesh; else the
    layer itself): the kernel without its taps at either end that read only padding
    (`_touching_taps`), and where the stride and kernel dilation share a factor along
    some dim, only the input elements read there (`_common_factor`). The same terms, so
    the same result up to the order of the sums (the rules may also choose another
    algorithm for the smaller layer), and under differentiation zero gradients for what
    was dropped. A non-finite weight on a dropped tap, which multiplied only padding,
    no longer makes NaNs (``inf * 0``) as XLA's convolution of the whole layer does."""
    if not _reducible(x, w, spec):
        return x, w, spec
    trimmed = _touching_taps(x, w, spec)
    if trimmed is not None:
        starts, limits, spec = trimmed
        w = jax.lax.slice(w, (0, 0, *starts), (*w.shape[:2], *limits))
    reduced = _common_factor(x, w, spec)
    if reduced is not None:
        x, spec = reduced
    return x, w, spec


# Undilated kernels of more than one input channel a group are trimmed (`_touching_taps`)
# only from this many rows (batch x output positions): with fewer, their whole weight
# weighs more than the work saved, and `kernel_past_output`'s patches already run them
# (trimmed against whole, 7-11 interleaved runs, AMD EPYC with AVX-512, 2026-12-07,
# `/tmp/s71/trimsweep.py`): 7x7 "same" 256->512 @3 batch 1 channels-last training 0.43x,
# 512->128 0.59x; 5x5 256->512 @2 batch 8 forward 0.73x, 256->128 0.96x; k31 64->512
# @4 batch 1 forward 0.50x; from 64 rows they won (k31 @4 batch 16 2.2x forward, 1.8x
# training; 3-D 5x5x5 64@2 batch 16 2.6x, 2.6x; 7x7x7 256->512 @2 batch 16 83x, 4.0x).
TRIM_MIN_ROWS = 64


def _touching_taps(
    x: jax.Array, w: jax.Array, spec: ConvSpec
) -> tuple[tuple[int, ...], tuple[int, ...], ConvSpec] | None:
    """``(first, last + 1, spec)`` per spatial dim: the taps of the kernel from the first
    to the last that read an input element for some output, and the spec of that kernel
    (its padding shortened by the dropped taps' reach); None where every tap does, where
    none does along some dim, where the shortened padding would go negative, where the
    input or output is empty, and for an undilated kernel (along the dims trimmed) of
    more than one input channel a group on fewer than `TRIM_MIN_ROWS` rows.

    A tap reads ``s * o + d * k - lo`` for the outputs ``o``; one that reads only the
    padding for every output adds zeros. A kernel dilated past a small map reads little
    else: DeepLab's ASPP 3x3 dilation 18 (padding 18) @14 is its centre tap, a 1x1
    convolution. Trimmed against whole (`auto` both), random layers of 1-3 dims taken
    where this trims (3x3 dilation 6-24 on maps of 4-33, and 3x3 to 7x7 and k9-k31
    "same" on maps of 1-16; 64-512 channels or depthwise, batch 1-16, both layouts; 9
    interleaved runs, AMD EPYC with AVX-512, 2026-12-07, `/tmp/s71/trimsweep.py 4 16
    9`): 1.01-8100x on all 32 rows, geometric mean 9.8x; 2-D ASPP 3x3 dilation 18-24
    @7-17 1.45-62x forward, 2.1-11x training, forward now 0.8-41x PyTorch's speed
    (0.02-1.03x before); 3-D depthwise 3x3x3 dilation 24 512@8 batch 8, which ran 0.23x
    `lax` (1.76 s), 0.22 ms. Before the row count (`TRIM_MIN_ROWS`), three earlier
    sweeps (seeds 1-3) read 0.43-0.99x on 19 of 92 rows, 16 of them undilated kernels on
    at most 32 rows that the bound now leaves whole."""
    kernel = w.shape[2:]
    out = spec.out_spatial(x.shape[2:], kernel)
    if min(out, default=1) < 1 or 0 in x.shape:
        return None
    firsts, lasts, padding = [], [], []
    for n, k, o, s, d, (lo, hi) in zip(
        x.shape[2:], kernel, out, spec.stride, spec.rhs_dilation, spec.padding, strict=True
    ):
        touching = [t for t in range(k) if _tap_outputs(n, o, s, d, lo, t)]
        if not touching:
            return None
        first, last = touching[0], touching[-1]
        lo2, hi2 = lo - d * first, hi - d * (k - 1 - last)
        if lo2 < 0 or hi2 < 0:
            return None
        firsts.append(first)
        lasts.append(last + 1)
        padding.append((lo2, hi2))
    trimmed = [(a, b) != (0, k) for a, b, k in zip(firsts, lasts, kernel, strict=True)]
    if not any(trimmed):
        return None
    dilated = any(t and d > 1 for t, d in zip(trimmed, spec.rhs_dilation, strict=True))
    if not dilated and w.shape[1] > 1 and x.shape[0] * math.prod(out) < TRIM_MIN_ROWS:
        return None
    return tuple(firsts), tuple(lasts), dataclasses.replace(spec, padding=tuple(padding))


def _common_factor(x: jax.Array, w: jax.Array, spec: ConvSpec) -> tuple[jax.Array, ConvSpec] | None:
    """The input elements this layer reads and the convolution of them, where its stride
    ``s`` and kernel dilation ``d`` share a factor ``f = gcd(s, d) > 1`` along some dim,
    else None, and None where the rules take shift-and-add for the value. For the layers
    `reduced_layer` reduces (on the CPU, not input-dilated, not on a mesh: it asks).

    Every tap reads the padded input at ``s * o + d * k``, a multiple of ``f``: only the
    input elements ``i = -lo (mod f)`` are read, and taken out (a strided slice) they
    convolve at stride ``s / f`` with dilation ``d / f``, the padding divided by ``f``;
    the same terms, so the same result. Under differentiation the input gradient lands on
    them (the slice's transpose). XLA's convolution strided and dilated at once is slow,
    and the smaller layer (stride 1 and no dilation where ``s == d``) takes the fast
    rules. Against the whole, random layers of 1-3 dims (stride and dilation 2 and 2,
    2 and 4, 4 and 2, 3 and 3 or 2 and 6; 3-256 channels, batch 1-8, both layouts; 7
    interleaved runs, AMD EPYC with AVX-512, 2026-12-06, `/tmp/s71/cfsweep.py` seeds 2
    and 3): 1.57x (geometric mean of 60 rows, forward and training), training 1.82x
    (1.17-5.7x on 27 of 30 layers; 0.93x and 0.95x on two of 0.4 ms, and 0.87x on a
    depthwise one whose program did not change, see below), forward 0.93-8.8x (below
    0.97x only on layers of 0.1-1.2 ms); found by a random sweep against PyTorch (5x5
    stride 2 dilation 2 128->32 @64 batch 16 channels-first: 34-38 ms forward, PyTorch
    14; now 2.0x faster forward and training). Where the whole went below 0.9x `lax`, now 1.2-2x
    faster than `lax` (3x3 stride 2 dilation 2 64@56 batch 8 training, 5x5 stride 2
    dilation 6 128->32 @112 batch 4 forward)."""
    kernel = w.shape[2:]
    factors = [
        math.gcd(s, d) if k > 1 else 1
        for k, s, d in zip(kernel, spec.stride, spec.rhs_dilation, strict=True)
    ]
    if all(f == 1 for f in factors):
        return None
    if choose_for(spec, x, w, "cpu")[FORWARD] == "shift":
        # Shift-and-add reads its strided, dilated windows straight from the input:
        # reduced, depthwise 5x5 stride 2 dilation 4 64@56 batch 8 channels-last trained
        # 0.56x (forward 1.25x).
        return None
    out = spec.out_spatial(x.shape[2:], kernel)
    if min(out, default=1) < 1:
        return None
    starts, limits, steps = [0, 0], list(x.shape[:2]), [1, 1]
    stride, dilation, padding = [], [], []
    for n, k, o, s, d, (lo, _), f in zip(
        x.shape[2:], kernel, out, spec.stride, spec.rhs_dilation, spec.padding, factors, strict=True
    ):
        # The first input element read, and the reduced layer's padding: ``lo2`` before
        # it, ``hi2`` past the last element taken (elements cropped instead where either
        # would be negative).
        first = -lo % f
        lo2 = (lo + first) // f
        if lo2 < 0:
            first, lo2 = first - lo2 * f, 0
        count = len(range(first, n, f))
        span = (o - 1) * (s // f) + (k - 1) * (d // f) + 1  # of the reduced padded input
        hi2 = span - count - lo2
        if hi2 < 0:
            count, hi2 = count + hi2, 0
        if count < 1:
            return None
        starts.append(first)
        limits.append(first + (count - 1) * f + 1)
        steps.append(f)
        stride.append(s // f)
        dilation.append(d // f)
        padding.append((lo2, hi2))
    reduced = dataclasses.replace(
        spec, stride=tuple(stride), rhs_dilation=tuple(dilation), padding=tuple(padding)
    )
    if spec.ndim == 1:
        # Cut in the canonical order: in 1-D XLA's transposed copies around the slice
        # trained faster than the slice in place (see `slices_in_layout`).
        return jax.lax.slice(x, starts, limits, steps), reduced
    return slices_in_layout(x, spec, starts, limits, steps), reduced


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def forward_with(x: jax.Array, w: jax.Array, spec: ConvSpec, names) -> jax.Array:
    """`forward`, with the algorithms for the value and the two derivatives given:
    ``names`` is None (the rules choose all three) or one name per role (`FORWARD`,
    `INPUT_GRADIENT`, `WEIGHT_GRADIENT`), each in `jaxconv.IMPLS` or ``"auto"`` (that
    role as the rules choose it). `jaxconv._autotune` passes what it measured."""
    return _run(x, w, spec, FORWARD, names)


@functools.partial(forward_with.defjvp, symbolic_zeros=True)
def _forward_jvp(spec: ConvSpec, names, primals, tangents):
    x, w = primals
    dx, dw = tangents
    algorithms = _algorithms(spec, x, w, names)
    if algorithms[INPUT_GRADIENT] == algorithms[WEIGHT_GRADIENT] == "fft" != algorithms[FORWARD]:
        # The derivatives transform x, w and the cotangent once each, and an FFT value
        # reuses the transforms of x and w. Against shift's value (the fastest for
        # inference, see `choose`), depthwise 9x9 96@56 batch 4: grad through a ReLU
        # 25 ms against 59, a fixed cotangent 23 against 25; 11x11 128@28 batch 8: 21
        # against 54 and 21 against 25 (both layouts alike).
        y = FORWARDS["fft"](x, w, spec)
    elif algorithms[FORWARD] == DENSE_GROUPS and algorithms[INPUT_GRADIENT] == "matmul":
        # Likewise the matmul derivatives share the value's patches: dense groups for
        # the value (the fastest for inference) with them trained slower (14 groups of
        # 16x16 @28 batch 1: 0.91-0.94x; 4 of 16x16 @56: 0.82-0.95x).
        y = FORWARDS["matmul"](x, w, spec)
    else:
        y = _run(x, w, spec, FORWARD, names, differentiated=True)
        planes_all = algorithms == ("lax",) * 3 and jax.default_backend() == "cpu"
        if algorithms[FORWARD] == "shift" or (planes_all and _grouped_planes(spec)):
            # (A grouped 3-D value by planes is shift's in its planes, often: without
            # the update, training through a ReLU or with a squared loss recomputed it
            # in the planes' derivatives, 0.20-0.93x the matmul derivatives on 2x2, 2->4
            # and 4x4 channels per group; with it 1.55-4.0x, see `choose`.)
            y = _computed_once(y, spec)
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(_run(dx, w, spec, INPUT_GRADIENT, names))
    if not isinstance(dw, SymbolicZero):
        terms.append(_run(x, dw, spec, WEIGHT_GRADIENT, names))
    if not terms:
        return y, SymbolicZero(jax.typeof(y).to_tangent_aval())
    return y, terms[0] if len(terms) == 1 else terms[0] + terms[1]


def choose_for(
    spec: ConvSpec, x: jax.Array, w: jax.Array, backend: str, nested: bool = False
) -> tuple[str, str, str]:
    """`choose` for these operands (``nested`` as there): on a mesh of several devices
    (`_common.split_mesh`), XLA's convolution wherever the rules say FFT.

    XLA's partitioner splits no FFT, so `fft` runs each device's block inside
    ``jax.shard_map`` (`fft.device_split`); on 8 simulated CPU devices (2026-12-04,
    `/tmp/s50/meshtime.py`, depthwise, channels-first unless said, 9 interleaved runs)
    that ran against XLA's partitioned convolution, forward / training: 9x9 64@28
    batch 8 split along the batch 4.2x / 19x (channels-last 4.3x / 6.3x), along a
    spatial dim (@32) 3.2x / 23x; 15x15 channels-last 9.2x / 13x; 31x31 128@28 145x /
    571x. But a ``shard_map`` in the program does not survive everything a caller may
    do to it: ``jax.vmap`` over a mesh axis (``spmd_axis_name``, or a dim split over
    ``Explicit`` axes) fails in its batching rule, and inside ``jax.shard_map`` over
    part of the mesh its gradients do not lower. XLA's convolution splits along every
    dim under every transformation, so `auto` keeps to it on a mesh."""
    names = choose(spec, x.shape, w.shape, x.dtype, backend, nested, split_mesh(x, w) is not None)
    return without_fft_on_mesh(names, x, w, "lax")


def without_fft_on_mesh(names, x: jax.Array, w: jax.Array, instead: str) -> tuple[str, ...]:
    """``names`` (one algorithm per role) with ``instead`` for each ``"fft"`` where ``x``
    or ``w`` lies on a mesh of several devices (`_common.split_mesh`; see `choose_for`)."""
    if "fft" in names and split_mesh(x, w) is not None:
        return tuple(instead if name == "fft" else name for name in names)
    return tuple(names)


def _algorithms(spec: ConvSpec, x: jax.Array, w: jax.Array, names) -> tuple[str, str, str]:
    """The algorithms `_run` runs for each role: ``names`` where given, else the rules'
    (for the whole spec, before any phase split)."""
    rules = choose_for(spec, x, w, backend_name())
    if names is None:
        return rules
    return tuple(rule if name == "auto" else name for name, rule in zip(names, rules, strict=True))


def _computed_once(y: jax.Array, spec: ConvSpec) -> jax.Array:
    """``y``, with its producer kept out of its consumers' loops.

    Shift-and-add's value is one loop fusion of elementwise ops, and XLA's CPU fusion
    copies such a producer into every consumer that reads it. Under differentiation the
    output cotangent is usually a function of ``y`` (a ReLU's mask, a squared loss), and
    it is read by both derivatives, so the whole sum over taps was recomputed two or
    three times, in loops that no longer vectorise. `computed_once` stops that.
    ``jax.grad`` of ``sum(conv(x, w) ** 2)``, batch 8, before and after: depthwise 7x7
    96@56 98 -> 41 ms channels-first, 83 -> 43 channels-last; ResNeXt 3x3 g32 128@56
    299 -> 45 and 295 -> 101; a fixed cotangent (the bench's train) is unchanged.
    The update is taken in the caller's layout, where shift computes ``y``: in the
    canonical one it costs a layout transpose each way (channels-last fixed-cotangent
    depthwise 7x7: 53 -> 90 ms).
    """
    if not spec.channels_last:
        return computed_once(y)
    return jnp.moveaxis(computed_once(jnp.moveaxis(y, 1, -1)), -1, 1)


# Channels-last 2-D depthwise layers of at most `shift.SPLIT_MAX_TAPS_ND` taps, on maps
# of at least this many input positions per image, take their input gradient split
# (`_split_input_gradient`).
SPLIT_INPUT_GRADIENT_MIN_POSITIONS = 784


def _split_input_gradient(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether `shift`'s input gradient of this depthwise layer runs `shift.forward` (the
    interior summed straight from the cotangent, `shift._depthwise_split`, where its
    padding allows) on the cotangent written out once (`_split_once`), rather than
    padding it first.

    Written out, a ReLU's mask (or a loss's derivative) is computed once instead of
    inside each border part's loop. Against padding first, in one process, 15
    interleaved runs, 2026-12-03 (`/tmp/s41/dxab.py`; training with a fixed cotangent,
    through a ReLU, of a squared loss): 3x3 144@56 batch 8 1.12-1.73x, 0.95-1.00x,
    1.17x; 144@28 1.19x, 0.93x, 1.05x; 240@28 1.27x, 1.07x, 1.04x; 32@112 batch 4
    1.16x, 1.00x, 0.98x; stride 2 96@112 batch 4 1.63x, 1.14x, 1.17x; batch 1 144@56
    0.95x, 1.06x, 0.98x, 32@112 1.06x, 0.97x, 0.94x. Not on smaller maps (576@14 batch
    16 1.01x, 1.06x, 1.00x; 384@14 0.88x, 1.03x, 0.78x; 960@7 batch 16 1.02x, 0.96x,
    0.81x), larger kernels (5x5 128@56 0.88-0.92x; 7x7 192@28 0.85-0.94x, though 96@56
    1.08-1.11x), 3-D (3x3x3 64@8x28x28 batch 2 0.95-0.98x) or 1-D (k3 256@1000 1.16x,
    0.93x, 1.14x; k5 512@1000 0.96x, 1.07x, 1.27x: mixed)."""
    return (
        spec.channels_last
        and spec.ndim == 2
        and shift_impl.splits(spec, x_shape, w_shape, large=False)
        and math.prod(x_shape[2:]) >= SPLIT_INPUT_GRADIENT_MIN_POSITIONS
    )


def _split_once(ct: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """`shift.forward` of ``ct`` written out once in the caller's layout."""
    return shift_impl.forward(_computed_once(ct, spec), w, spec)


def _half(x: jax.Array, w: jax.Array) -> bool:
    """Whether XLA's convolution of these operands (alone, or in the groups loop) runs
    in float32 instead, rounded once at the end: bfloat16 and float16 (its callers ask
    on the CPU only).

    XLA's CPU convolution upcasts half precision itself and runs no faster than in
    float32 (ResNet 3x3 64@56 batch 8: 14.2 ms in bfloat16 against 13.7 in float32, 8.4
    against 8.1 with `lax.forward_eigen`'s extra row), but `auto`'s rules around it were
    measured in float32 (`lax.eigen_pays` takes float32 and float64 only), and it
    accumulated some weight gradients partly in half precision (the 7x7 stride-2 stem
    3->64 @224 batch 8: 1.7e-2 of the largest entry off float32's in bfloat16, 1.6e-3
    in float16; in float32 and rounded, 3.1e-3 and 3.6e-4). The full bench in bfloat16
    (`python -m bench --suite full --mode fwd,train --impl auto --dtype bfloat16`,
    Intel Xeon with AMX, 2026-12-03, against the same at 49e2933): `auto` 3.24x -> 3.51x
    `lax` forward, 4.96x -> 5.43x in training; ResNet 3x3 64@56 1.7-1.8x faster
    forward, 1.8-2.0x in training, the video layer 1.6x and 1.15-1.2x, dilated 3x3
    256@33 1.2x and 1.1x; the largest difference from `lax` 1.9e-2 -> 8.7e-3. The
    groups loop likewise (`/tmp/s40/upab.py`, 7 interleaved runs, channels-first /
    channels-last): 32 groups of 16x16 3x3 @28 batch 8 forward 1.62x / 1.63x, training
    1.28x / 1.18x; 32 of 32x32 @14 channels-first 2.10x and 1.44x. (A forward-mode
    tangent rounds each of its two terms before adding them.)

    Only XLA's convolution: with every algorithm of a call in float32 (`matmul`'s dots
    and `subpixel`'s phases too), U-Net's 2x2 stride-2 transposed layer ran 0.30x
    forward, `matmul`'s products no longer in bfloat16 (which XLA's CPU dot takes on
    AMX, 1.9-5x its float32 dot on the shapes measured); `shift` in float32 ran
    depthwise 3x3 144@56 forward 0.80x, 7x7 96@56 0.87x.
    """
    return jnp.dtype(x.dtype) in (jnp.bfloat16, jnp.float16) and x.dtype == w.dtype


def _in_float32(conv, x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """``conv`` of ``x`` and ``w`` in float32, rounded to their dtype (see `_half`)."""
    return conv(x.astype(jnp.float32), w.astype(jnp.float32), spec).astype(x.dtype)


def _xla(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """XLA's convolution as it is, in float32 for half precision on the CPU (`_half`)."""
    if jax.default_backend() == "cpu" and _half(x, w):
        return _in_float32(FORWARDS["lax"], x, w, spec)
    return FORWARDS["lax"](x, w, spec)


# Channels-last transposed convolutions whose kernel is their stride, with at least this
# many input positions over the batch, take their weight gradient as one product
# (`subpixel.unpatched_weight_gradient`). Against the phases (2x2 stride 2 unless said,
# Intel Xeon, 9 interleaved runs; the weight gradient alone, then training with a fixed
# output gradient and through a ReLU): 256->128 @28 batch 8 1.51-1.67x, 1.36-1.44x,
# 1.14-1.51x (three runs); 128->64 @56 batch 8 2.27x, 1.27x, 1.84x; 64->32 @112 batch 4
# 2.29x, 1.28x, 1.87x; 512->256 @14 batch 16 1.36x, 1.19x, 1.47x; 128->64 @28 batch 4
# 1.10x, 1.06x, 1.36x; 256->128 @56 batch 1 1.27x, 1.28x, 1.30x; 3-D 2x2x2 64->32 @16
# batch 2 1.55x, 1.03x, 1.25x. Fewer positions lose with a fixed output gradient:
# 256->128 @14 batch 8 0.86x, 0.94x, 1.32x; 512->256 @14 batch 4 0.80x, 0.83x, 1.13x.
# 1-D kernel 4 stride 4 128->64 @500 batch 4: 0.97x, 1.04x, 1.05x. Channels-first (256->128
# @28 batch 8), as one `jnp.einsum` 1.35-1.54x, 0.98-1.00x, 0.72x, and as one product
# per image 1.10x, 1.00x, 1.03x.
NON_OVERLAPPING_MIN_POSITIONS = 3000


def _strided_input_gradient_stacked(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether the input gradient of this strided 1-D or 2-D convolution runs as the
    transposed convolution of the output gradient it is, by `auto`'s value of that
    (`_transposed_value`): its phases stacked along the output channels
    (`subpixel._stacked`: one stride-1 convolution to ``stride^n`` times the input
    channels), where XLA's transpose of the value is one input-dilated convolution to
    the few input channels. Dense, undilated, from few input channels (where
    `subpixel.stacked_window` stacks), to at most 32 output channels, or to at most 64
    with phases of at least 4x4 taps from inputs of at least 2^19 elements.

    Against the rules before (XLA's input gradient; batch 8 unless said, stride 2 unless
    said, 9-11 interleaved runs, Sapphire Rapids Xeon, 2026-12-03, `/tmp/s43/abdx.py`;
    the input gradient alone, then the training step with a fixed output gradient,
    channels-first / channels-last): the 7x7 stem 3->64 @224 2.23x / 1.74x, 1.33x /
    1.35x (batch 1: 1.38x / 1.64x, 1.00x / 1.03x); 3->32 7x7 @112 1.48x / 1.53x, 1.12x /
    1.15x (@32 batch 4 1.27x / 1.32x training); 16->64 7x7 @56 1.75x / 1.74x, 1.21x /
    1.33x; 5x5: 16->32 @112 2.48x / 2.48x, 1.38x / 1.46x (@28 batch 2 1.71x / 1.30x
    training), 8->32 @112 1.94x / 2.16x, 1.60x / 1.35x, 16->16 @56 2.58x / 2.74x, 1.74x
    / 1.81x, 3->16 @112 1.95x / 2.20x, 1.57x / 1.53x, 1->32 @128 1.41x / 1.74x, 1.42x /
    1.40x; 8x8 stride 4 4->32 @84 batch 16 1.84x / 1.60x, 1.22x / 1.46x; 1-D 16->32 k7
    @4000 1.85x / 2.59x, 1.47x / 1.24x. Not to more output channels with smaller
    phases, where XLA's input gradient runs deeper and faster: 5x5 3->64 @112-224
    0.84-0.99x, training 0.87-0.95x; 12->48 @56 1.65x alone but training 0.96x. A
    random sweep of 30 layers the rule took then (`/tmp/s43/randsig.py` seed 71,
    training, the rule against without, 9-21 interleaved runs): 0.96-2.39x on those to
    at most 32 channels (a 0.79x read 1.00x in a rerun); to more, with 4x4 phases or
    larger, the stems and 16->64 7x7 gained where the input is large (3->64 @224 batch
    4 1.09x / 1.29x, batch 8 above; 16->64 @56 batch 8 1.05x / 1.17x) but lost on small
    inputs or few phase outputs (3->64 @224 batch 1 1.00x / 1.03x, 3->48 @224 padding 1
    batch 1-2 0.83-0.96x; 1->48 11x11 @112 batch 4 0.89x / 0.79x; 2->96 9x9 @56 batch 8
    0.77x / 0.73x), so there the rule asks for at most 64 output channels and an input
    of 2^19 elements. But smaller phases pay from 8 input channels
    (`STRIDED_INPUT_GRADIENT_SMALL_PHASES_MIN_IN_CHANNELS`), where the stacked outputs
    are 32 or more: found by a random sweep against PyTorch on an AMD EPYC with AVX-512
    (`/tmp/s70/rand.py 707 30 5 fwd,train --torch`: 5x5 stride 2 16->64 @112 batch 16
    channels-first trained in 96 ms, PyTorch 24; its input gradient alone 70 ms, 3x3
    phases, XLA's input-dilated convolution). Training with the stacked input gradient
    against without, 5 interleaved runs, 2026-12-07 (`/tmp/s71/stk.py 1 14 5`, 5x5
    stride 2 to 48-64 channels @112-224, batch 1-16, both layouts): from 8-16 input
    channels 1.14-2.18x on 11 layers (that layer 2.31x, 1.89x channels-last); from 4
    1.14x; from 3 0.83x and 0.93x (as the Xeon's 3->64 above). The rule against
    without on 12 fresh layers from 8-16 channels (`stk.py 2 12 5`): 1.03-2.07x,
    geometric mean 1.45x. (On the Xeon, 12->48 @56 had trained 0.96x this way.)
    """
    if not _strided_dense_undilated(spec, (1, 2)):
        return False
    window = subpixel.stacked_window(*_derivatives.input_gradient_problem(x_shape, w_shape, spec))
    if window is None:
        return False
    if w_shape[0] <= STRIDED_INPUT_GRADIENT_MAX_OUT_CHANNELS:
        return True
    taps = math.prod(d[1] for d in window if d is not None)
    return (
        w_shape[0] <= STRIDED_INPUT_GRADIENT_LARGE_MAX_OUT_CHANNELS
        and (
            taps >= STRIDED_INPUT_GRADIENT_MIN_PHASE_TAPS
            or x_shape[1] >= STRIDED_INPUT_GRADIENT_SMALL_PHASES_MIN_IN_CHANNELS
        )
        and math.prod(x_shape) >= STRIDED_INPUT_GRADIENT_LARGE_MIN_INPUT
    )


def _unpadded_input_gradient_row(x_shape, w_shape, problem) -> bool:
    """Whether the input gradient of this convolution, unpadded as a convolution of the
    cotangent (``problem``, `_derivatives.input_gradient_problem`: a stride-1 transposed
    convolution's, or a convolution padded ``K - 1``), runs as that convolution with
    `lax.forward_padded`'s row (`lax.padded_row`), as a value would: kernels of at least
    `UNPADDED_INPUT_GRADIENT_ROW_MIN_TAPS` taps on inputs of at least
    `UNPADDED_INPUT_GRADIENT_ROW_MIN_POSITIONS` positions per image. JAX's transpose of
    the value is that convolution unpadded, on XLA's slow path for unpadded ones.

    Found by a random sweep (`/tmp/s55/rand.py 1818`: a transposed 7x7 stride-1 128->256
    @14 batch 8 channels-first, training 289 ms, PyTorch 113, XLA's input gradient
    124 ms where the same convolution as a value ran 42). The input gradient alone, with
    the rule against without (`/tmp/s55/togr.py`, 5 interleaved runs, AMD EPYC with AVX2,
    2026-12-05; 24 random layers of 6x6-11x11 kernels, 60% transposed, `gen7(1, 24)`):
    1.0-14x on the 20 from 14x14 inputs up but for 0.99x twice (8->256 7x7 padding 6 @56
    batch 4 channels-first 590 -> 42 ms, 256->128 9x9 padding 8 @14 batch 8 225 -> 107
    ms, a transposed 64->256 11x11 @14 1.46x), 0.85-0.95x on three of the four @7; that
    layer's training step 1.69x / 1.42x channels-first / channels-last. Smaller kernels
    went both ways (`gen6(1, 40)`: 3x3-5x5, 0.77-1.15x on the input gradient alone).

    And kernels of fewer taps (at least `EIGEN_INPUT_GRADIENT_MIN_TAPS`, as `_run` asks
    first) from at most `UNPADDED_INPUT_GRADIENT_ROW_FEW_MAX_CHANNELS` input channels on
    inputs of at least `UNPADDED_INPUT_GRADIENT_ROW_FEW_MIN_POSITIONS` positions: their
    input gradient is a convolution to those few channels, XLA's slow path unpadded
    (see `lax.forward_padded`). Found by a random sweep (`/tmp/s55/rand.py 2020`: a
    transposed 7x7 stride-2 8->256 @112 batch 1 channels-last, training 390 ms, PyTorch
    99; its phases' input gradients 305 ms). The rule against without (`gen8(1, 30)`,
    5 interleaved runs; the input gradient alone / training): that layer 3.9x / 2.6x
    (3.1x / 2.1x channels-first); a transposed 3x3 8->64 @56 batch 2 2.4x / 1.8x;
    8->256 5x5 padding 4 @28 16x / 5.4x; the 9 of the 30 random layers it takes
    0.95-16x / 0.96-5.4x; on smaller inputs 0.76-1.61x (not taken), and from one
    channel, with phases of 4 taps, 0.43x (which the taps keep out)."""
    ct_shape, w_t_shape, t_spec = problem
    positions = math.prod(x_shape[2:])
    large = (
        math.prod(w_shape[2:]) >= UNPADDED_INPUT_GRADIENT_ROW_MIN_TAPS
        and positions >= UNPADDED_INPUT_GRADIENT_ROW_MIN_POSITIONS
    )
    few = (
        w_t_shape[0] <= UNPADDED_INPUT_GRADIENT_ROW_FEW_MAX_CHANNELS
        and positions >= UNPADDED_INPUT_GRADIENT_ROW_FEW_MIN_POSITIONS
    )
    return (large or few) and lax_impl.padded_row(ct_shape, w_t_shape, t_spec) is not t_spec


def _strided_dense_undilated(spec: ConvSpec, ndims) -> bool:
    """Whether this convolution of ``ndims`` spatial dims is dense, strided, undilated
    and its input gradient a transposed convolution of the output gradient
    (`_derivatives.has_input_gradient_spec`): what `_strided_input_gradient_stacked`
    and `_strided_input_gradient_phases` ask first."""
    return (
        spec.ndim in ndims
        and spec.groups == 1
        and any(s > 1 for s in spec.stride)
        and all(d == 1 for d in spec.rhs_dilation)
        and _derivatives.has_input_gradient_spec(spec)
    )


def _strided_input_gradient_phases(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether the input gradient of this strided dense 2-D convolution runs as the
    transposed convolution of the output gradient it is, by `auto`'s value of that
    (`_transposed_value`: its sub-pixel phases, `subpixel.decompose`), where
    `_strided_input_gradient_stacked` does not stack them: undilated, kernels at least
    as long as the stride, to at most as many output channels as input channels, from
    an input of at least `STRIDED_INPUT_GRADIENT_PHASES_MIN_INPUT` elements (with
    kernels of at least `STRIDED_INPUT_GRADIENT_PHASES_LARGE_KERNEL_TAPS` taps,
    `STRIDED_INPUT_GRADIENT_PHASES_MIN_INPUT_LARGE_KERNEL`, below). XLA's
    transpose of the value is one input-dilated convolution to the many input
    channels, three in four of its products with an inserted zero at stride 2, and its
    time grows faster than the input's elements.

    The input gradient alone, the phases against XLA's (3x3 stride 2 padding 1 unless
    said, batch 8 unless said, 5 interleaved runs, AMD EPYC with AVX2, 2026-12-05,
    `/tmp/s52/dxab.py`; channels-last / channels-first): 384->16 @64 unpadded 3.21x /
    2.66x; 256->16 @56 11.0x / 4.50x, 256->64 3.61x / 3.05x, 256->128 2.30x / 2.39x;
    batch 4 256->32 @56 2.48x / 1.36x; 128->64 @56 1.92x / 1.75x, 128->128 1.37x /
    1.16x; 96->48 @56 2.18x / 1.85x; batch 16 64->32 @112 2.76x / 2.44x. On smaller
    inputs it was a toss-up, so they keep XLA's: 256->32 @28 1.58x / 1.33x but 256->128
    @28 0.97x / 0.89x; 64->64 @56 2.02x / 1.09x; 512->256 @14 2.70x / 0.97x; batch 2
    512->16 @28 1.45x / 0.64x. Nor widening layers, where XLA's is as fast or faster:
    64->128 @56 1.01x / 1.22x, 128->256 @28 0.81x / 0.95x.

    Training with a fixed cotangent, the rule against without (5 interleaved runs,
    `/tmp/s52/patchab.py`), 18 random layers of the rule's class (stride 2-4, kernels
    1-7, 2^21-2^24 input elements, `/tmp/s52/cfgs.txt`): 1.02-2.45x on 16, e.g. 5x5
    stride 2 128->16 @112 batch 4 channels-last 2.45x, 4x4 stride 2 48->48 @112 batch
    16 channels-first 1.87x, 7x7 stride 4 64->16 @56 batch 16 1.61x, 3x3 stride 3
    32->8 @64 batch 16 1.54x, 3x3 512->128 @32 batch 4 1.42x; but with kernels smaller
    than the stride, whose phases are partly empty, 0.53x (2x2 stride 4 96->32 @112
    batch 2) and 0.87x (3x3 stride 4 96->16 @112 batch 4), so not those.

    Kernels of 4x4 and more pay on smaller inputs too. Found by a random sweep
    (`/tmp/s55/rand.py 1515`: 7x7 stride 2 256->64 @56 batch 1 channels-last, XLA's
    input gradient 50 ms of a training step of 96, PyTorch's step 31). The rule against
    without (`/tmp/s55/force.py`, 5 interleaved runs, AMD EPYC with AVX2, 2026-12-05;
    the input gradient alone, a training step with a fixed cotangent): that layer 4.7x,
    1.95x (4.5x, 2.6x channels-first); 30 random layers of 4x4-7x7 kernels at stride
    2-3 from 2^19 to 2^21 input elements (`gen4(2, 30)`: 1-8 images, 16-512 to 8-512
    channels, both layouts): the input gradient 0.90-17x (below 1.0 on 2, 0.90x and
    0.96x), training 1.04-3.0x on 29 and once 0.79x (4 images of 256->256 5x5 stride 3
    @28 channels-first; 0.95x when measured again, with 9 runs). From 2^14 to 2^19
    elements (`gen3(1, 40)`) the training step went both ways, 0.80-2.70x (below 0.95x
    on 5 of 40), so not there.

    Widening layers, to at most `STRIDED_INPUT_GRADIENT_PHASES_MAX_WIDENING` times as
    many channels, where every kernel dim is at least twice its stride less one (every
    phase at least one tap along it, one at least two), from inputs of at least
    `STRIDED_INPUT_GRADIENT_PHASES_MIN_INPUT` elements whatever the kernel, on CPUs with
    AVX-512 (not `lax.avx2_only`, where they were measured as above). Found by a sweep against
    PyTorch (`/tmp/s77/roles6.py`: 3x3 stride 2 48->64 @112 batch 8 channels-first,
    XLA's input gradient 32.8 ms of a training step of 63, PyTorch's step 20). The
    phases against XLA's on widening layers (training with a fixed cotangent, 5
    interleaved runs, AMD EPYC with AVX-512, 2026-12-07; 3x3-7x7, stride 2-3, 8-256 to
    twice or four times the channels @28-128, batch 1-16, 2^19-2^25 input elements,
    both layouts; `/tmp/s77/wid.py 1 20 5`): 1.17x, 0.71-2.04x, the losses at stride 3
    with 3x3 and 4x4 kernels (0.71-0.96x) and to four times the channels (16->64 3x3
    @112 batch 16 channels-last 0.77x); with kernels of at least twice the stride less
    one (`wid2.py 2 22 5`) 1.14x, 0.72-1.86x, 0.72x and 0.84x to four times the channels
    (48->192 7x7 stride 3 @56 batch 8 channels-first, 16->64 7x7 stride 2 @112 batch 4
    channels-last), 0.97-1.86x on all 17 to twice as many (3x3 stride 2 48->96 @112
    batch 8 channels-first 1.47x, 7x7 stride 3 32->64 @112 batch 8 1.86x); to twice as
    many in the first sweep 0.93-2.04x (0.93x and 0.96x on 5x5 stride 3). The rule then
    (from 2^19 elements with 16 or more taps) against without on 20 fresh layers
    (`wid3.py 3 20 5`): 1.18x, 0.75-2.14x, the losses on 4x4 kernels from under 2^21
    elements (32->64 @56 batch 8 channels-last 0.75x, 0.94x in 15 runs; 16->32 @128
    batch 2 0.86x, 0.87x); from 2^21 elements, 1.00-1.77x on all eight there, and
    0.99-2.04x on the 14 such layers of the earlier sweeps. The rule against without
    on 16 fresh layers (`wid4.py 4 16 5`, 1.25-2x the channels): 1.45x, 1.02-2.31x."""
    if not _strided_dense_undilated(spec, (2,)):
        return False
    c_out, c_in, *kernel = w_shape
    if math.prod(kernel) >= STRIDED_INPUT_GRADIENT_PHASES_LARGE_KERNEL_TAPS:
        least = STRIDED_INPUT_GRADIENT_PHASES_MIN_INPUT_LARGE_KERNEL
    else:
        least = STRIDED_INPUT_GRADIENT_PHASES_MIN_INPUT
    strides = zip(kernel, spec.stride, strict=True)
    if c_out <= c_in:
        return all(k >= s for k, s in strides) and math.prod(x_shape) >= least
    return (
        c_out <= STRIDED_INPUT_GRADIENT_PHASES_MAX_WIDENING * c_in
        and all(k >= 2 * s - 1 for k, s in strides)
        and math.prod(x_shape) >= STRIDED_INPUT_GRADIENT_PHASES_MIN_INPUT
        and not lax_impl.avx2_only()
    )


def _few_inputs_weight_gradient(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether the weight gradient of this 2-D convolution runs as one product per image
    of its patches with the output gradient (`matmul.per_image_patches_weight_gradient`):
    dense, strided, undilated, from at most `FEW_INPUTS_WEIGHT_GRADIENT_MAX_CHANNELS` input
    channels, with more taps than `FEW_INPUTS_MAX_TAPS` (fewer go to `matmul` whole,
    whose derivatives share the value's patches), at least
    `FEW_INPUTS_WEIGHT_GRADIENT_MIN_FLOPS` and one image's patches (float32) within
    `matmul.PATCH_BYTES`. XLA's weight gradient there is a convolution
    over the few input channels with the output gradient as its kernel (the 7x7 stride-2
    stem at batch 8: 40-45 ms, for 1.9 GFLOP).

    Against the rules before (XLA's weight gradient by kernel rows; batch 8 unless said,
    9-15 interleaved runs, Sapphire Rapids Xeon, 2026-12-04, `/tmp/s43/abfiwg.py`; the
    weight gradient alone, then the training step with a fixed output gradient,
    channels-first / channels-last): the 7x7 stride-2 stem 3->64 @224 1.89x / 2.00x,
    1.35x / 1.49x (batch 2 1.08x / 1.01x, batch 1 1.11-1.19x / 1.02-1.07x training);
    3->48 7x7 stride 2 @160 1.97x / 1.20x, 1.53x / 1.13x; 3->64 5x5 stride 2 @224
    1.82x / 1.72x, 1.10x / 1.21x (batch 4 1.08x / 1.02x); 1->64 5x5 @128 1.26x / 1.92x,
    1.22x / 1.18x (batch 4 1.48x / 1.38x). With the patches taken by rows, then columns
    (`matmul._patches_by_rows`; one slice per tap compiled the stem's training step in
    1.0 s): the stem 2.16x / 1.64x, 1.25x / 1.33x (batch 1 1.12x / 0.95x training);
    3->64 5x5 0.98x / 1.45x, 1.22x / 1.26x; 1->64 5x5 1.86x / 1.84x, 1.25x / 1.36x;
    3->48 7x7 @160 2.14x / 1.20x, 1.68x / 0.99x. Not on smaller layers (under 0.1 GFLOP:
    0.80-1.15x training, 3->16 5x5 stride 2 @112 0.80-0.84x), nor where `matmul` takes
    the layer (3x3 and 4x4 kernels: 0.71-0.98x channels-first, the derivatives no longer
    sharing the value's patches), nor from 8 input channels (0.80-0.90x alone). A
    random sweep of 20 layers the rule took (`/tmp/s43/randfiwg.py` seed 81, 1-4 input
    channels, 5x5 to 11x11 kernels, training, the rule against without, 9-15
    interleaved runs): 0.95-1.51x but for four, rerun: from 4 channels 11x11 @128
    unstrided channels-last 0.57x (one image's patches 32 MB, hence the cap), 9x9
    stride 2 0.85x and 11x5 0.92x (their weight gradients alone 1.39-1.41x; from 4
    channels the rule's other layers gained 1.05-1.08x, hence at most 3), and 2->128
    9x9 @64 batch 16 channels-last 0.88x (alone 1.37x). A second sweep (seed 82, 14
    layers, from at most 3 channels): strided 1.08-1.63x on all nine; unstrided
    0.81-1.35x (channels-last 3->32 7x7 @128 batch 4 0.81x, 2->32 11x11 @128 0.87x), so
    unstrided layers keep XLA's weight gradient (1->64 5x5 @128 above, 1.2x, with it).
    """
    return (
        spec.ndim == 2
        and spec.groups == 1
        and w_shape[1] <= FEW_INPUTS_WEIGHT_GRADIENT_MAX_CHANNELS
        and any(s > 1 for s in spec.stride)
        and math.prod(w_shape[2:]) > FEW_INPUTS_MAX_TAPS
        and _derivatives.has_input_gradient_spec(spec)
        and all(d == 1 for d in spec.rhs_dilation)
        and spec.flops(x_shape, w_shape) >= FEW_INPUTS_WEIGHT_GRADIENT_MIN_FLOPS
        and matmul_impl.patch_bytes(x_shape, w_shape, spec, 4) <= matmul_impl.PATCH_BYTES
    )


OUTPUT_TAPS_MAX_OUT_CHANNELS = 6
OUTPUT_TAPS_MAX_OUT_CHANNELS_UNSTRIDED, OUTPUT_TAPS_UNSTRIDED_MIN_RATIO = 32, 8
OUTPUT_TAPS_MIN_FOLDED = 32
OUTPUT_TAPS_WEIGHT_MIN_RATIO = 16
OUTPUT_TAPS_WEIGHT_ANY_PRODUCTS_MAX_OUT = 8
OUTPUT_TAPS_INPUT_GRADIENT_MAX_OUT_CHANNELS = 3
OUTPUT_TAPS_MAX_VALUE_STRIDE = 3
OUTPUT_TAPS_CHANNELS_LAST_STRIDED_MAX_PRODUCTS = 36
# `_output_taps_per_image` with at least this many times as many positions per image as
# products per position, or for a 2-D value from this range of input channels on at least
# this many positions.
OUTPUT_TAPS_PER_IMAGE_MIN_RATIO = 2
OUTPUT_TAPS_PER_IMAGE_VALUE_IN_CHANNELS = (48, 128)
OUTPUT_TAPS_PER_IMAGE_VALUE_MIN_POSITIONS = 25
# `_single_output_strided_value_by_xla` from this many taps and input channels.
SINGLE_OUTPUT_XLA_MIN_TAPS, SINGLE_OUTPUT_XLA_MIN_IN_CHANNELS = 9, 12


# `_many_to_few_by_taps` takes convolutions from at least this many input channels, and
# values on at least this many rows (batch times output positions).
# Values from 256 rows had been taken until 2026-12-07 (late morning); below 512 they
# went both ways, 0.92x (geometric mean of six, 0.67-1.46x, `/tmp/s74/m2fsmall.py 1 20
# 11`; found by `/tmp/s72/rand2.py 728`: 3x3 valid 256->16 @7 batch 16 channels-last
# 0.56x `lax`, 400 rows, and @8 batch 8 0.72x, 288 rows), from 512 0.92-2.54x on 14.
MANY_TO_FEW_MIN_IN_CHANNELS, MANY_TO_FEW_VALUE_MIN_ROWS = 256, 512
# ... and no more than this many input positions per output position (`output_taps`
# takes the products at every input position).
MANY_TO_FEW_MAX_INPUT_PER_OUTPUT = 2
# ... and on `lax.EIGEN_FEW_OUT_CHANNELS_MIN_ROWS` rows or more only in 1-D and 2-D,
# with products of at most this many bytes, values on maps of at most this many output
# positions.
MANY_TO_FEW_MANY_ROWS_MAX_BYTES = 16 * 2**20
MANY_TO_FEW_MANY_ROWS_VALUE_MAX_POSITIONS = 3136


def _many_to_few_by_taps(
    spec: ConvSpec, x_shape, w_shape, value: bool = False, itemsize: int = 4
) -> bool:
    """Whether this canonical convolution (a whole layer's value, or the convolution that
    is a whole layer's input gradient) runs as one product to every tap's output
    channels (`matmul.output_taps`) where `_output_taps` does not take it: dense,
    unstrided, not input-dilated, more than one tap, from at least
    `MANY_TO_FEW_MIN_IN_CHANNELS` input channels to at most `lax.EIGEN_FEW_OUT_CHANNELS`,
    on fewer rows than `lax.EIGEN_FEW_OUT_CHANNELS_MIN_ROWS` (where XLA's convolution
    stays on YNNPACK; see `lax.eigen_pays`) or, in 1-D and 2-D, on more with products of
    at most `MANY_TO_FEW_MANY_ROWS_MAX_BYTES` (values on maps of at most
    `MANY_TO_FEW_MANY_ROWS_VALUE_MAX_POSITIONS`), with products within
    `lax.MALLOC_MAX_HEAP_BLOCK` (of ``itemsize`` bytes each; `_run` takes real layers
    only, half precision in float32, and not a transposed layer's phases); a ``value``
    in 2-D or 3-D only, on at least `MANY_TO_FEW_VALUE_MIN_ROWS` rows. Any number of
    products per position: XLA's convolution from so many channels to so few runs at
    30-100 GFLOP/s, where the product of ``(rows, C_in) @ (C_in, taps * C_out)`` is a
    large one.

    Found by a random sweep on an AMD EPYC with AVX-512 (Zen 5), 2026-12-07
    (`/tmp/s72/rand2.py 713 30 7 --torch`): 7x7 24->512 @7 batch 16 "same"
    channels-last trained at 0.96x `lax` (22.3 ms, PyTorch 6.2), 10.5 ms of it the input
    gradient, a convolution 512->24; by `output_taps` 3.4-4.2 ms in either layout
    (`/tmp/s73/roles4.py`, training 1.5-1.8x). Values by `output_taps` against `auto`
    before, padding k // 2, 7 interleaved runs, channels-first / channels-last
    (`/tmp/s73/otgrid2.py`): 7x7 512->24 @7 batch 16 2.37x / 2.68x, 5x5 2.76x / 1.65x,
    7x7 512->16 @7 batch 8 1.81x / 1.63x, 5x5 384->24 @14 batch 8 2.46x / 2.30x, 7x7
    256->24 @14 batch 4 1.91x / 1.78x, 5x5 256->16 @28 batch 4 1.71x / 1.31x (3,136
    rows), 3x3 512->16 @14 1.54x, 3x3 512->24 @7 2.39x, 5x5 1024->8 @7 1.13x
    channels-last (channels-first `_output_taps` takes these three already);
    from 128 channels mixed (0.80-1.47x, and XLA's Eigen convolution faster still); to
    32 and more mixed against the Eigen path `auto` takes there (`otgrid.py`: 0.58-1.21x
    from 256-512 channels, 0.16-0.33x from 128 with 7x7 kernels @14-28). On 12,544
    rows (5x5 256->24 @28 batch 16, products of 30 MB) 0.49x in both layouts, and the
    input gradients there 0.93-1.03x: hence the rows' bound. The rule against without
    on random layers whose program it changes (`/tmp/s73/m2frand.py 1 24 7`, 1-3-D,
    3-1024 channels): training 1.22x geometric mean over 24 (0.96-2.49x; 1-D k9
    dilation 2 3->1024 @128 batch 16 channels-last 2.49x, 2-D 5x5 dilation 2 512->12 @8
    batch 4 1.30x); values 1.09x over 13, but 1-D values lost (k3 1024->16 @64 batch 8
    0.74x, @1000 batch 16 0.53x) and so did one on 49 rows (7x7 dilation 2 1024->8 @7
    batch 1 0.75x): not those. A second sweep
    (`m2frand.py 2 24 7`) found valid values losing where `output_taps`' products at
    every input position are several times the outputs' (3x3 384->8 @6x6x6 batch 4,
    3.4 input positions an output, 0.82x; 5x5 384->12 @8x8x8 batch 8, 8 an output,
    0.93x; 7x7 dilation 2 768->24 @28 batch 1, 3.1 an output, 0.81x), hence at most
    `MANY_TO_FEW_MAX_INPUT_PER_OUTPUT`; its other layers trained 0.91-3.15x (8->384 7x7
    valid @16 batch 8 channels-last 3.15x, 12->1024 7x7 valid @16 batch 4 2.07x) and
    their values ran 1.67-2.90x (5x5 256->12 @16 batch 16 2.90x). A third, with these
    bounds (`m2frand.py 3 20 7`): training 1.22x (0.87-2.24x), values 1.15x (0.90-1.74x).

    On more rows, where XLA's convolution runs on Eigen: the rule without the rows'
    bound, products within 16 MiB, against it (`/tmp/s73/m2frows.py 16`, 8 layers by
    layout, 7 runs): channels-last 0.99-1.62x (3->256 3x3 @64 batch 8 training 1.62x,
    XLA's input gradient 21.6 ms there; 512->8 @56 batch 4 forward 1.55x), channels-first
    0.90-1.36x. On random layers whose program it changed (`m2frows2.py 1 20 7`): training
    1.30x (0.90-2.77x), forward 1.32x but 3-D 7x7x7 256->3 @8^3 batch 8 channels-last
    0.39x (3-D left out since); `m2frows3.py 2 20 7` (1-D and 2-D): training 1.34x
    (0.87-2.57x), values 1.23x, but values of one image @112 lost (512->8, 2x2 384->3,
    5x5 256->4: 0.77-0.90x, where Eigen's path runs them well), hence the values' map
    bound; with it (`m2frows3.py 3 20 7`) training 1.31x (1.02-3.68x, 1-D k5 3->512
    @2000 batch 8 channels-last 3.68x), values 1.26x (1.16-1.45x).
    """
    c_out, c_in, *kernel = w_shape
    if spec.groups != 1 or max(spec.stride) > 1 or max(spec.lhs_dilation) > 1:
        return False
    if math.prod(kernel) == 1 or c_out > lax_impl.EIGEN_FEW_OUT_CHANNELS:
        return False
    if c_in < MANY_TO_FEW_MIN_IN_CHANNELS or (value and spec.ndim == 1):
        return False
    out = math.prod(spec.out_spatial(x_shape[2:], kernel))
    rows = x_shape[0] * out
    products = x_shape[0] * math.prod(x_shape[2:]) * math.prod(kernel) * c_out * itemsize
    if rows >= lax_impl.EIGEN_FEW_OUT_CHANNELS_MIN_ROWS and (
        spec.ndim == 3
        or products > MANY_TO_FEW_MANY_ROWS_MAX_BYTES
        or (value and out > MANY_TO_FEW_MANY_ROWS_VALUE_MAX_POSITIONS)
    ):
        return False
    if math.prod(x_shape[2:]) > MANY_TO_FEW_MAX_INPUT_PER_OUTPUT * out:
        return False
    if value and rows < MANY_TO_FEW_VALUE_MIN_ROWS:
        return False
    return products <= lax_impl.MALLOC_MAX_HEAP_BLOCK


# `_matmul_weight_gradient_rows` takes layers of at least this many output rows (batch
# times output positions).
MATMUL_WEIGHT_GRADIENT_MIN_ROWS = 1024


def _matmul_weight_gradient_rows(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether `matmul`'s weight gradient of this whole layer runs as its transpose
    written out, the patches ``(images * positions, taps * C_in)`` against the output
    gradient ``(images * positions, C_out)`` with the rows contracted where they lie
    (`matmul.chunked_patches_weight_gradient`), rather than JAX's transpose of the
    value's product: channels-last, dense, more than one tap, not input-dilated, on at
    least `MATMUL_WEIGHT_GRADIENT_MIN_ROWS` output rows.

    JAX's transpose contracts the images and positions of the patches ``(N, *S, taps,
    C)``; XLA's CPU compiler (jaxlib 0.10.2) canonicalises that product with the
    contracted dims minor, which writes the patches and the output gradient out
    transposed, and hands it to YNNPACK. A product of 2-D operands contracting their
    leading dim stays as it is, Eigen's. Found by a random sweep on an AMD EPYC with
    AVX-512 (Zen 5), 2026-12-07 (`/tmp/s72/rand2.py 712 30 7 --torch`): 3x3 8->96 @112
    batch 4 channels-last trained in 29.6 ms (PyTorch 8.9), 16.1 of them the weight
    gradient, 3.6 this way (training 13.9 ms). Training with the rule against without
    on random layers whose program it changes (`/tmp/s73/mmrand.py 1 20 7`, `2 24 9`,
    7-9 interleaved runs, 1x1 excluded, 2-D and 3-D): geometric mean 1.03x and 1.16x,
    wins to 1.93x (3-D 2x2x2 1->192 @12 batch 16), 1.58x (2x2 4->192 @28 batch 16),
    1.41x (2x2 8->256 @128 batch 4), 1.28x (2x2 8->192 @128 batch 8), 1.21x (3x3
    dilation 2 8->96 @64 batch 4); on fewer rows 0.72-1.16x (7x7 stride 2 dilation 2
    64->32 @7 batch 16, 256 rows, 0.72x and 0.88x in a 15-run rerun; 3x3 16->192 @14
    batch 4, 576 rows, 0.93-0.97x), hence the floor; two losses above it were noise in
    15-run reruns (2x2 8->128 @28 batch 4 0.71x, then 1.06x; 16->128 @14 batch 16
    0.79x, then 1.01x), and 3x3 8->192 @128 batch 2 read 0.81x and 0.95x.
    Channels-first not: there the products contract the positions of ``(images,
    taps * C_in, positions)`` and ran 0.49-1.07x (`/tmp/s73/mmrandcf.py 1 20 7`,
    geometric mean 0.78x).
    """
    if not spec.channels_last or spec.groups != 1 or math.prod(w_shape[2:]) == 1:
        return False
    if any(d != 1 for d in spec.lhs_dilation):
        return False
    rows = _rows(spec, x_shape, w_shape)
    return rows >= MATMUL_WEIGHT_GRADIENT_MIN_ROWS


# `_input_taps` takes layers from at least this many input channels, on outputs of at
# most this many positions an image and at least this many rows (batch times
# positions) ...
INPUT_TAPS_MIN_IN_CHANNELS, INPUT_TAPS_MAX_POSITIONS, INPUT_TAPS_MIN_ROWS = 64, 256, 128
# ... whose taps meet the input on at most this share of their (output, tap) pairs, from
# `INPUT_TAPS_FULL_IN_CHANNELS` input channels to as many output channels or fewer (a
# smaller share from fewer, or to more; see `_input_taps`).
INPUT_TAPS_MAX_MET, INPUT_TAPS_FULL_IN_CHANNELS = 0.6, 128
# ... but this share for channels-last 2-D layers of more than
# `INPUT_TAPS_CHANNELS_LAST_MAX_TAPS` taps to at least
# `INPUT_TAPS_CHANNELS_LAST_MIN_OUT_CHANNELS` channels (see `_input_taps`).
INPUT_TAPS_MAX_MET_MANY_TAPS_CHANNELS_LAST, INPUT_TAPS_CHANNELS_LAST_MAX_TAPS = 0.45, 25
INPUT_TAPS_CHANNELS_LAST_MIN_OUT_CHANNELS = 128
# ... and their weight gradients where each tap's product contracts at least this many
# (image, position) pairs on average (see `_input_taps`).
INPUT_TAPS_WEIGHT_GRADIENT_MIN_DEPTH = 64
# ... and input gradients whose windows and weights pass `lax.MALLOC_MAX_HEAP_BLOCK` only
# to at least this many channels (the layer's input channels; see `_input_taps`).
INPUT_TAPS_PAST_BLOCK_INPUT_GRADIENT_MIN_OUT_CHANNELS = 256
# ... and values alone (not differentiated) whose windows and weights pass it only to at
# least this many channels, where their taps meet at least this share of the pairs (see
# `_input_taps`).
INPUT_TAPS_PAST_BLOCK_VALUE_MIN_OUT_CHANNELS, INPUT_TAPS_PAST_BLOCK_VALUE_MIN_MET = 128, 0.3


def _input_taps(
    spec: ConvSpec,
    x_shape,
    w_shape,
    weight_gradient: bool = False,
    *,
    input_gradient: bool = False,
    alone: bool = False,
    itemsize: int = 4,
) -> bool:
    """Whether this canonical convolution (a whole layer's value, or the convolution
    that is a whole layer's input gradient) runs as one product per tap of the input
    positions the tap meets (`matmul.input_taps`), where XLA's convolution multiplies
    the padding too: dense, unstrided, not input-dilated, 2-D or 3-D, more than one tap,
    from at least `INPUT_TAPS_MIN_IN_CHANNELS` channels, on outputs of at most
    `INPUT_TAPS_MAX_POSITIONS` positions an image and at least `INPUT_TAPS_MIN_ROWS` rows,
    whose taps meet the input at no more than a share of its (output, tap) pairs:
    `INPUT_TAPS_MAX_MET`, times ``C_in / INPUT_TAPS_FULL_IN_CHANNELS`` below that many
    input channels and times ``sqrt(C_in / C_out)`` to more output channels than input
    ones (`_run` takes real layers only, half precision in float32). With
    ``weight_gradient``, whether its weight gradient runs as one product per tap of the
    output gradient's box and the input it meets (`matmul.input_taps_weight_gradient`):
    the same, where each tap's product contracts at least
    `INPUT_TAPS_WEIGHT_GRADIENT_MIN_DEPTH` (image, position) pairs on average. With
    ``input_gradient`` (a layer's input gradient's convolution), not to fewer than
    `INPUT_TAPS_PAST_BLOCK_INPUT_GRADIENT_MIN_OUT_CHANNELS` channels where its windows
    and per-tap weights (``(N * met + taps * C_out) * C_in`` elements of ``itemsize``
    bytes, all live at once) pass `lax.MALLOC_MAX_HEAP_BLOCK` (see below); with
    ``alone`` (a value not differentiated), likewise not to fewer than
    `INPUT_TAPS_PAST_BLOCK_VALUE_MIN_OUT_CHANNELS` where its taps meet at least
    `INPUT_TAPS_PAST_BLOCK_VALUE_MIN_MET` of the pairs.

    Found by a random sweep on an AMD EPYC with AVX-512 (Zen 5), 2026-12-07
    (`/tmp/s72/rand2.py 722 30 7 --torch`): 5x5 dilation 3 384->64 @7 batch 8 "same"
    channels-first ran 1.9 ms forward, PyTorch 0.5; its taps meet the input at 24% of
    the pairs (a tap of offset 6 meets one output row of seven). By `input_taps`
    0.67-0.86 ms. Forward against `auto` before, 7 interleaved runs, channels-first /
    channels-last (`/tmp/s74/itab.py`): that layer 2.2x / 2.4x, 3x3 dilation 6 256@14
    batch 8 (51%) 1.36x / 1.55x, 7x7 512->128 @7 batch 4 (57%) 1.30x / 1.03x; but on
    large maps the padded sum, a pass over the output a tap, costs more than the
    padding saves (3x3 128@28 0.23x, 3x3 dilation 2 256@33 0.36x, 5x5 128@14 0.44x),
    and where the taps meet the input at most pairs the products alone lose (3x3 512@7,
    82%, 1.0x / 0.83x). On random small-map layers whose taps meet at most 60% of the
    pairs (`/tmp/s74/itrand.py 1 24 7 fwd 0.6`) it won from 64 channels and more (to
    2.6x; 256->256 3x3 dilation 2 @5 batch 16 2.1x) and lost from 16-32 (16->512 7x7
    dilation 4 @4 0.32x, 32->256 7x7 @8 0.27x: products of 16-32 terms each and a padded
    sum of many output channels), hence the input channels' factor; then widening
    layers lost (`/tmp/s74/itrule.py 2`-`4`, the rule against without: 3x3 dilation 4
    64->512 @10 batch 4-8, 54%, 0.67-0.71x; 3x3x3 64->256 @4 batch 16, 30%, 0.57x), hence
    the output channels' factor. With these bounds, on 24 random layers it changes
    (`/tmp/s74/itrule.py 5 24 7 fwd,train 0.7`, 2-D and 3-D, 64-512 channels, batch
    1-16 @3-16, dilations 1-6): 1.44x forward and training together (geometric mean of
    48 rows; 7x7 dilation 2 512->128 @4 batch 1 forward 9.2x, 3x3 dilation 4 256->512
    @7 batch 8 2.3x, 3x3x3 dilation 2 512->32 @5 batch 8 1.95x; lowest 0.86x, 3x3
    dilation 2 512->256 @5 batch 8 channels-last forward at 54%). The input gradient's
    share (the rule on its own convolution) against the value's alone: training
    0.88-1.31x on the layers it changed, about even. No suite program changes
    (`/tmp/s70/sweep.py NOIT`). Not measured: 1-D and strided layers.

    The weight gradient by taps against XLA's, training with the rule's other roles on
    (`/tmp/s74/itdw.py 5 24 7 train 0.7`): 1.16x over the same 24 layers, but 7x7
    dilation 2 512->128 @4 batch 1 (output 16x16) 0.52x, 0.64x in a 15-run rerun
    (`itdw2.py`): each of its 49 taps contracts 16 pairs into a 128x512 product. Hence
    the depth's floor; with it, on 20 fresh layers (`itdw.py 6 20 7 train 0.7`) 1.30x
    (0.88-3.5x; 3x3 dilation 6 512->512 @4 batch 4 3.5x, 5x5 dilation 3 64->16 @4 batch
    16 2.9x), and the three roles against none of them 1.70x (1.07-5.7x).

    Channels-last 2-D layers of more than `INPUT_TAPS_CHANNELS_LAST_MAX_TAPS` taps to
    `INPUT_TAPS_CHANNELS_LAST_MIN_OUT_CHANNELS` or more channels take it up to
    `INPUT_TAPS_MAX_MET_MANY_TAPS_CHANNELS_LAST` of the pairs instead (times the same
    factors): there XLA's convolution runs in place on a deep contraction, while each
    of the many taps' products needs its window and weight written out. Found by the
    random sweeps of 2026-12-07 (Zen 5; `/tmp/s75/its.py 1 24 9 0.3`, the rule against
    without it, forward): 7x7 512->128 @7 batch 8 "same" channels-last (57% met)
    0.53-0.60x, 384->256 0.70x, where channels-first the same layers ran 0.9-1.5x. The
    bound against 60%, with each tap's weight read in the caller's layout
    (`/tmp/s75/cl49.py`, eight 7x7 channels-last layers to 128-384 channels at 33-57%
    met): training 1.26x (0.97-1.81x, 11 runs), forward 1.07x (0.68-1.71x, 15 runs), the
    forward rows now all at 0.99-1.03x XLA's where 60% ran them at 0.60-1.48x (7x7
    512->128 @7 batch 8 0.60x, 384->128 batch 16 0.64x, dilation 2 512->256 @14 batch 2
    0.70x). To 32 channels it lost (0.82-0.85x) and to 64 forward (0.76-0.79x, before
    the weight's fix; `cl64.py`): hence the output channels' floor. On an input
    gradient's convolution (the layer's, transposed: the same layout, its channels
    swapped) that floor is on the layer's input channels.

    The heap block's bound: glibc maps a block past it afresh on every call and its
    pages fault in. Found by a random sweep (`/tmp/s72/rand2.py 737 30 7 fwd,train
    --torch`): 7x7 32->512 @7 "same" batch 16 channels-last trained at 0.65x `lax`
    (0.78x in 15 runs), its input gradient 17.1 ms against XLA's 8.7, where batch 8
    took 3.4 against 4.4 (`/tmp/s76/itb.py`: the step at 12 images channels-first, 16
    channels-last, the temporaries 37-49 MB; gone with ``MALLOC_MMAP_THRESHOLD_``
    raised). Past the block the values and weight gradients, and input gradients to
    256-512 channels, still won (`itbig.py 1 16`, `itw3.py`: input gradients alone
    1.04-3.2x on six layers); to 32-128 channels the input gradient lost (training
    0.66-0.99x on three layers; the found layer's input gradient alone 0.36x). The
    bound against without on 14 fresh layers it changes (`itab2.py 1 14 5`, 3x3-7x7
    dilations 1-3, 32-192 -> 128-512 channels @4-10, batch 8-64, both layouts):
    training 1.25x (0.95-1.82x).

    A value ``alone`` (not differentiated) past the block likewise, where its taps
    meet the input on at least `INPUT_TAPS_PAST_BLOCK_VALUE_MIN_MET` of the pairs: only
    to `INPUT_TAPS_PAST_BLOCK_VALUE_MIN_OUT_CHANNELS` channels or more (meeting fewer,
    at any). Found on the Sapphire Rapids Xeon (2026-12-07, `/tmp/s78`): 7x7 dilation 3
    96->24 @14 "same" channels-first ran forward in 1.8 ms at batch 8 and 3.8 at 16 by
    the taps (XLA's 3.9 and 7.9), then 12.2 at 24 (XLA's 11.8), where its windows and
    weights pass the block (34 MiB; `it1.py`). Values by the taps past the block
    against without, each program timed alone (`itv3.py 11 24 9`, 3x3-7x7 dilations
    1-4, 96-512 -> 8-128 channels @7-16): 0.43-0.89x on 14 of 16 layers meeting 33-58%
    of the pairs (7x7 dilation 2 192->16 @10 batch 64 channels-last 37.6 ms against
    16.2), 0.72-4.5x meeting 14-27% (where XLA's convolution mostly multiplies
    padding). The bound
    against without on fresh layers it changes (`itv4.py 21 16 7 32 200 fwd`, `31 14 7`,
    `41 14 7`; 8-96 output channels, 33-200 MB): forward 1.83x, 1.53x, 1.55x (0.72-3.8x
    over 29 layers). A differentiated value keeps the taps: with the floor on values in
    training too, training ran 0.72-0.86x on layers meeting 14-26% of the pairs
    (`itv4.py 22 12 5 32 200 train`, the floor alone) and 0.76-1.02x on layers meeting
    33-58% (`itv4.py 32 12 5 32 200 train`, with the share)."""
    c_out, c_in, *kernel = w_shape
    if spec.groups != 1 or spec.ndim == 1 or max(spec.stride) > 1 or max(spec.lhs_dilation) > 1:
        return False
    if 0 in x_shape or 0 in w_shape:
        return False
    if c_in < INPUT_TAPS_MIN_IN_CHANNELS or math.prod(kernel) == 1:
        return False
    out = spec.out_spatial(x_shape[2:], kernel)
    positions = math.prod(out)
    if positions > INPUT_TAPS_MAX_POSITIONS or x_shape[0] * positions < INPUT_TAPS_MIN_ROWS:
        return False
    boxes = matmul_impl.tap_ranges(x_shape[2:], kernel, spec)
    met = sum(math.prod(e - f for f, e, _ in box) for box in boxes if box is not None)
    share = INPUT_TAPS_MAX_MET
    if (
        spec.channels_last
        and spec.ndim == 2
        and len(boxes) > INPUT_TAPS_CHANNELS_LAST_MAX_TAPS
        and c_out >= INPUT_TAPS_CHANNELS_LAST_MIN_OUT_CHANNELS
    ):
        share = INPUT_TAPS_MAX_MET_MANY_TAPS_CHANNELS_LAST
    share *= min(1, c_in / INPUT_TAPS_FULL_IN_CHANNELS)
    share *= min(1, math.sqrt(c_in / c_out))
    if weight_gradient and x_shape[0] * met < INPUT_TAPS_WEIGHT_GRADIENT_MIN_DEPTH * len(boxes):
        return False
    if input_gradient:
        floor = INPUT_TAPS_PAST_BLOCK_INPUT_GRADIENT_MIN_OUT_CHANNELS
    elif alone and met >= INPUT_TAPS_PAST_BLOCK_VALUE_MIN_MET * len(boxes) * positions:
        floor = INPUT_TAPS_PAST_BLOCK_VALUE_MIN_OUT_CHANNELS
    else:
        floor = 0
    if c_out < floor:
        copies = (x_shape[0] * met + len(boxes) * c_out) * c_in * itemsize
        if copies > lax_impl.MALLOC_MAX_HEAP_BLOCK:
            return False
    return met <= share * len(boxes) * positions


def _output_taps(spec: ConvSpec, x_shape, w_shape, role: int) -> bool:
    """Whether ``role``'s convolution runs as one product to every tap's output channels
    (`matmul.output_taps`) rather than XLA's convolution: dense, not input-dilated, more
    than one tap, to few output channels. The value to at most
    `OUTPUT_TAPS_MAX_OUT_CHANNELS` with at most ``max(C_in, OUTPUT_TAPS_MIN_FOLDED)``
    products per position (``taps * C_out``), and channels-first unstrided to at most
    `OUTPUT_TAPS_MAX_OUT_CHANNELS_UNSTRIDED` from at least
    `OUTPUT_TAPS_UNSTRIDED_MIN_RATIO` times as many input channels with fewer products
    than input channels; the weight gradient unstrided, from at least
    `OUTPUT_TAPS_WEIGHT_MIN_RATIO` times as many input channels as output channels and
    twice ``taps * C_out`` (any number of products to at most
    `OUTPUT_TAPS_WEIGHT_ANY_PRODUCTS_MAX_OUT`); the input gradient of strided (or 1-D)
    layers to at most `OUTPUT_TAPS_INPUT_GRADIENT_MAX_OUT_CHANNELS` from at least
    `OUTPUT_TAPS_WEIGHT_MIN_RATIO` times as many input channels, with as few products as
    the value (the output gradient's shifted copies are ``taps * C_out`` channels;
    measured to 5x5). XLA's CPU convolution runs its product with the output channels as
    one of its sides, too narrow for its tiles there (64->1 3x3 @128 batch 8
    channels-first: 34 ms for 0.15 GFLOP).

    Against the rules before (`lax`'s convolution there), 3x3 stride 1 padded, batch 8
    unless said, 5-7 interleaved runs, Sapphire Rapids Xeon, 2026-12-04,
    `/tmp/s45/abot.py`; channels-first / channels-last. The value: 64->1 @128 3.44x /
    1.59x, 256->3 @64 2.37x / 1.41x (channels-last from so many channels not taken,
    below); from 8-512 channels to 1-6 @16-64 channels-first 1.24-4.92x (the 25 layers
    of that grid the rule takes), 5x5 512->6 @16 2.65x, 7x7 128->3 @32 1.78x, stride 2
    64->3 @64 1.73x, 256->1 @32 2.51x, dilation 2 128->3 2.04x, 1-D k7 256->2 @1000
    4.41x, k9 4->1 @4000 3.60x, 5x5 3->1 @128 3.54x, 3-D 64->2 @16 1.27x, batch 32 64->3
    @32 1.84x; but 5x5 64->3 0.98x and 7x7 16->4 0.97x (more products than input
    channels: not taken). Channels-last from 8 or 16 channels to 1-3 1.33-4.54x, 1->1
    6.55x, 3->3 2.23x, 5x5 3->1 3.09x; from 32-512 channels 0.59-1.13x on 18 layers
    @16-64, so not those then. Those were measured while the product kept the groups as
    a batch dim of one, 3-11x slower channels-last (`output_taps`). Without it, from 17
    or more channels (the value by this against XLA's, forward / training through a
    ReLU, `/tmp/s80/otsweep.py` seeds 1 and 2, 16 random layers each: 24-1024 -> 1-6
    channels, 2x2-7x7, strides 1-2, dilations 1-2 @7-112, batch 1-32; 7 interleaved
    runs, Sapphire Rapids Xeon, 2026-12-07): 1.82x / 1.26x and 2.06x / 1.33x (geometric
    means); 512->1 2x2 @64 batch 4 20.1 -> 0.83 ms forward, 512->4 3x3 dilation 2 @64
    batch 4 27.1 -> 2.6, 96->6 @56 batch 32 35.2 -> 9.8 (PyTorch 10.1), 48->2 dilation 2
    @112 batch 32 55.3 -> 8.0 (PyTorch 18.2); under 0.95x on two forward values of
    0.07-0.18 ms (0.90x, 0.91x) and two training steps (0.82x at 0.2 ms, 0.89x on
    24->3 dilation 2 @64 batch 32). So channels-last from any number of channels since.
    The weight gradient (taken): 64->1 @128
    0.79x / 2.21x, 256->3 @64 1.45x / 5.19x, 32-512 to 1-6 1.01-4.91x / 1.22-8.04x (the
    15 layers of that grid the rule takes), 5x5 512->6 @16 2.34x / 3.02x, batch 1 64->3
    @128 8.77x / 10.37x, 1-D k7 256->2 2.26x / 3.32x, dilation 2 128->3 1.99x / 2.44x,
    batch 32 64->3 @32 1.02x / 1.83x; the phases of a transposed 6x6 stride-2 1024->3
    @16 batch 1 22x (0.59x `lax` in training before). Not taken: from fewer channels
    (32->3 0.86x / 2.18x, 16->1-8 0.44-1.01x, 3->1 5x5 0.05x / 0.08x), with more
    products (5x5 64->3 0.67x / 0.87x, 7x7 128->3 0.92x / 0.98x, 3-D 64->2 0.69x /
    0.54x) or strided (64->3 stride 2 0.55x / 1.79x). The input gradient (the output
    gradient's shifted copies stacked, times the weight) of strided layers: 64->3 stride
    2 @64 1.04x / 1.49x, 256->1 @32 2.54x / 7.00x, 5x5 64->2 @64 3.70x / 3.94x (XLA's 29
    ms), 4x4 32->1 3.17x / 2.02x, 1-D k5 128->2 @1000 3.40x / 4.27x, 512->3 @16 1.69x /
    3.31x; not from 16 channels (0.78x / 0.48x) nor to 6 or 8 (0.79-1.07x, 0.75-0.86x);
    unstrided it ran 0.12-1.74x, not taken. Training with every role by the rule against
    the rules before (7 runs, a fixed cotangent / through a ReLU): unstrided 64->1 @128
    1.34x / 1.45x channels-first, 1.28x / 1.28x channels-last, 256->3 @64 1.35-1.59x,
    16->3 @64 1.05-1.46x, 3->3 @128 channels-last 1.30x / 1.68x, batch 1 64->3 @128
    5.13x / 4.33x, 5x5 512->6 @16 channels-last 1.50x / 1.58x, 1-D k7 256->2 2.34x /
    2.24x, DCGAN's last transposed layer 64->3 4x4 stride 2 @32 batch 16 1.29x / 1.31x
    and 1.92x / 2.06x channels-last, 6x6 stride 2 1024->3 @16 batch 1 11.4x / 9.95x;
    strided 1.25-2.71x on eleven layers (64->3 stride 2 @64 1.67x / 1.47x, 5x5 64->2
    2.66x / 2.43x). Only whole layers, their sub-pixel phases and (channels-last, see
    `_run`) the groups of a grouped 2-D layer where they run apart
    (`groups.decompose`): the 2-D planes of a 3-D layer were not measured enough (3-D
    groups of 2->1 @8x28x28 0.71-1.02x and 4->1 0.82-1.21x). A (k, 1, 1) 3-D
    layer, which runs as one 2-D convolution over (depth, height x width), counts as
    whole (against without the rule, 11 interleaved runs, value / training with a fixed
    cotangent: 64->2 3x1x1 @16x28x28 batch 8 1.51x / 1.20x channels-first, 1.02-1.03x /
    0.73x and 1.29x in two runs channels-last; 5x1x1 128->3 @8x28x28 batch 4 1.42x /
    1.64x and 1.03x / 1.49x; 256->1 @16x14x14 batch 2 1.17x / 1.01x and 1.02x / 1.61x;
    32->1 channels-last 1.08x / 1.13x). Channels-first values to 8-32 channels,
    unstrided, from at least 8x as many input channels with fewer products than input
    channels (against the rules before, 9 interleaved runs, value / training with a
    fixed cotangent / through a ReLU): 256->16 @32 batch 8 1.79x / 1.19x / 1.12x,
    512->32 @16 1.95x / 1.28x / 1.16x, 128->12 @32 1.76x / 1.18x / 1.08x, 512->24 @16
    1.93x / 1.16x / 1.52x, 1-D k5 256->16 @1000 1.56x / 1.28x / 1.04x; the value alone
    512->8-16 @16 1.56-2.22x, 256->8-12 @28 1.73-2.13x, 1024->16-32 @14 batch 4-8
    1.12-1.44x, 128->8 @32 1.19-1.67x. Not strided (256->12 stride 2 @28 0.77x: every
    input position's products, four times the outputs'), nor from fewer than 8x as many
    inputs: the 1x2 and 2x1 phases of the suite's transposed 3x3 stride-2 64->32 @56, 64
    products from 64 channels, ran their value 0.71x.

    No value strided by more than `OUTPUT_TAPS_MAX_VALUE_STRIDE` along a dim: its
    products at every input position are stride^2 times the outputs'. Found by a random
    sweep (3x3 stride 4 128->4 @64 batch 2 channels-first forward at 0.51x `lax`).
    `auto` (the value by this) against `lax`, 3x3 unpadded unless said, channels-first,
    9-15 interleaved runs, AMD EPYC with AVX2, 2026-12-05 (`/tmp/s52/ab.py`): stride 4
    128->4 @64 batch 2 0.31x, 64->3 @128 batch 8 0.93x, 5x5 padding 2 1.04x (not taken:
    75 products); stride 3 128->4 @64 batch 2 0.86x, 256->1 @64 batch 4 1.71x, 64->3
    @128 batch 8 padding 1 1.82x; stride 2 128->4 @64 batch 2 1.65x.

    The weight gradient with more products than half the input channels, to at most
    `OUTPUT_TAPS_WEIGHT_ANY_PRODUCTS_MAX_OUT` channels: those above (5x5 64->3, 7x7
    128->3, 3-D 64->2) were measured while `output_taps`' transpose did ``taps^2`` work
    per element (see `matmul.OUTPUT_TAPS_CHUNK`). Found by a random sweep
    (`/tmp/s56/rand.py 2525`: 7x7 128->1 padding 3 @14 batch 8 channels-last trained at
    0.52x `lax`, its weight gradient by `output_taps` 5.1 ms against XLA's 3.2, then
    0.4). The rule against without it, unstrided layers from at least 16x as many
    input channels with more products than half of them (`/tmp/s56/gen.py` `gen11(1,
    30)`, `gen11(2, 30)`, `gen12(3, 30)`: 1-D k5-k49, 2-D 3x3-9x9, 3-D 2x2x2-4x4x4,
    dilation 1-2, padded or not, batch 1-8, both layouts; 7 interleaved runs, AMD EPYC
    with AVX2, 2026-12-05, `/tmp/s56/force.py`; weight gradient / training with a fixed
    cotangent, geometric means): to 1-8 channels, 70 layers, 1.68x / 1.44x (36 taps
    and more 2.00x / 1.60x on 31), training under 0.9x on five (0.73-0.86x, all
    unpadded: 5x5 128->8 @28 and 32->1 @16 channels-first, 32->1 @14 channels-last, 9x9
    dilation 2 512->8 @28, 3-D dilation 2 32->2 @8); to 12 channels 1.17x / 1.09x
    on 5, to 16 0.93x / 0.97x on 15 (9x9 12-16 0.47-0.90x, 5x5 256->16 @32-56
    0.64-0.69x): not taken.

    The input gradient of unstrided 1-D layers: measured again with the fast transpose
    (`/tmp/s56/force.py`, `gen13(1, 30)`, `gen14(2, 30)`, 7 interleaved runs, same
    machine; 1-D k3-k15 to 1-3 channels from 16-512 channels @256-4096, batch 1-8, both
    layouts), training 1.0-2.09x on 21 of 22 (0.86x on 256->3 k3 @4096 batch 4
    channels-last), the input gradient alone 0.42-2.66x (it shares the output
    gradient's shifted copies with the weight gradient). Not 2-D (training 0.52-2.64x
    on 16, seven under 0.9x) nor 3-D (1.09-5.79x on 19 of 22, but 0.35x on 64->2 3x3x3
    @16 batch 1, 0.62x and 0.82x).

    No intermediate (``N * positions * taps * C_out`` float32 products) past
    `lax.MALLOC_MAX_HEAP_BLOCK` with as many products as input channels (glibc maps
    such a block afresh each call, and its pages fault in; XLA's convolution is fast
    from so few channels). Channels-last, no strided value of more than
    `OUTPUT_TAPS_CHANNELS_LAST_STRIDED_MAX_PRODUCTS` products per output (``taps *
    C_out`` at each of the ``stride^2`` input positions it spans), nor one whose input
    and intermediate together pass the block. Found by a random sweep (`rand.py 707`:
    5x5 stride 2 16->1 @224 batch 8 channels-last forward 0.15x `lax`). `auto` against
    `lax`, forward, batch 8, 3x3 padding 1 unless said, 9 interleaved runs, AMD EPYC,
    2026-12-05 (`/tmp/s53/ab.py`); past the block with as many products as inputs:
    16->3 @224 0.79x channels-first, 0.50x channels-last; 5x5 8->1 @224 0.40x and 0.36x;
    5x5 16->1 @224 stride 1 channels-last 0.43x, stride 2 channels-first 0.39x (at
    batch 2, 10 MB, 2.69x stride 1); past it with fewer products than inputs still
    1.47-2.0x channels-first (32->3 @224 1.83x, 64->3 @224 1.54x, stride 2 1.88x).
    Channels-last strided by 2: 3x3 to one channel from 3-16 channels @64-224 1.36-2.58x
    (4->1 @224 2.58x) but 16->1 @224 (input and intermediate 40 MB) 0.19x; more products
    per output: 16->2 @64 1.12x, 16->3 0.79x, 16->4 1.06x, 8->3 @128 0.83x, 3->3 @224
    0.20x, 16->2 @224 0.20x, 5x5 16->1 @64 0.43x, @112 0.46x."""
    if spec.groups != 1 or any(d != 1 for d in spec.lhs_dilation):
        return False
    c_out, c_in, *kernel = w_shape
    taps = math.prod(kernel)
    if taps == 1:
        return False
    product_bytes = x_shape[0] * math.prod(x_shape[2:]) * taps * c_out * 4
    if product_bytes > lax_impl.MALLOC_MAX_HEAP_BLOCK and taps * c_out >= c_in:
        return False
    few_products = taps * c_out <= max(c_in, OUTPUT_TAPS_MIN_FOLDED)
    if role == FORWARD:
        if max(spec.stride) > OUTPUT_TAPS_MAX_VALUE_STRIDE or _single_output_strided_value_by_xla(
            spec, x_shape, w_shape
        ):
            return False
        if spec.channels_last and max(spec.stride) > 1:
            per_output = taps * c_out * math.prod(spec.stride)
            together = product_bytes + 4 * math.prod(x_shape)
            if (
                per_output > OUTPUT_TAPS_CHANNELS_LAST_STRIDED_MAX_PRODUCTS
                or together > lax_impl.MALLOC_MAX_HEAP_BLOCK
            ):
                return False
        if c_out <= OUTPUT_TAPS_MAX_OUT_CHANNELS:
            return few_products
        # To more channels, channels-first only: unstrided, from many more inputs, with
        # fewer products than inputs.
        return (
            not spec.channels_last
            and c_out <= OUTPUT_TAPS_MAX_OUT_CHANNELS_UNSTRIDED
            and c_in >= OUTPUT_TAPS_UNSTRIDED_MIN_RATIO * c_out
            and all(s == 1 for s in spec.stride)
            and taps * c_out <= c_in
        )
    if role == WEIGHT_GRADIENT:
        return (
            all(s == 1 for s in spec.stride)
            and c_in >= OUTPUT_TAPS_WEIGHT_MIN_RATIO * c_out
            and (c_in >= 2 * taps * c_out or c_out <= OUTPUT_TAPS_WEIGHT_ANY_PRODUCTS_MAX_OUT)
        )
    return (
        (any(s > 1 for s in spec.stride) or spec.ndim == 1)
        and c_out <= OUTPUT_TAPS_INPUT_GRADIENT_MAX_OUT_CHANNELS
        and c_in >= OUTPUT_TAPS_WEIGHT_MIN_RATIO * c_out
        and few_products
    )


def _single_output_strided_value_by_xla(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether `_output_taps` leaves the value of this channels-last 2-D layer strided
    to one output channel to the rules after it: from at least
    `SINGLE_OUTPUT_XLA_MIN_TAPS` taps on at least two images, from at least
    `SINGLE_OUTPUT_XLA_MIN_IN_CHANNELS` input channels (XLA's convolution then) or from
    the few that `shift` takes (`_few_inputs_value_by_shift`), on a CPU with AVX-512
    (not `lax.avx2_only`).

    `_output_taps`' channels-last strided bounds were measured on an AMD EPYC with
    AVX2. On a Sapphire Rapids Xeon with AVX-512 a random sweep found 16->1 3x3 stride
    2 unpadded @56 batch 16 channels-last forward at 0.71x `lax` (`/tmp/s63/rand.py
    631`; 0.85x in a 21-run recheck). With the rule against without (3x3 stride 2,
    padding 1 unless said, 15 interleaved runs, 2026-12-06, `/tmp/s63/otcl5.py`;
    forward, and training with a fixed cotangent): 16->1 unpadded @56 batch 16 1.41x,
    1.05x, unpadded @28 1.75x, 0.87x, @112 batch 4 1.00x, 0.90x; 12->1 unpadded @64
    batch 4 1.30x, 0.98x; by `shift` 4->1 @224 batch 2 1.47x, 1.20x, unpadded @96 1.61x,
    1.28x, unpadded @56 batch 8 2.04x, 1.09x; 3->1 @128 batch 8 1.59x, 1.01x, @224
    1.96x, 0.89x, unpadded @112 batch 16 3.2x, 1.33x; 2->1 @64 batch 4 1.12x, 1.27x,
    unpadded @160 batch 2 2.8x, 1.30x. From 5-8 channels XLA's value lost or tied
    (6->1 unpadded @96 batch 4 0.90x and 0.84x in two runs, training 0.83x; 8->1 @112
    batch 8 0.95-1.04x), on one image it went both ways (16->1 and 12->1 unpadded @56
    0.89-0.91x, 8->1 1.09x, 3->1 @28 1.68x, 6->1 @64 0.53x; `/tmp/s63/otcl4.py`, the
    rule then without its channel bounds), and 2x2 kernels mixed (0.69-1.58x on six
    layers): not those."""
    c_out, c_in = w_shape[:2]
    return (
        spec.ndim == 2
        and spec.channels_last
        and max(spec.stride) > 1
        and c_out == 1
        and math.prod(w_shape[2:]) >= SINGLE_OUTPUT_XLA_MIN_TAPS
        and x_shape[0] >= 2
        and (c_in >= SINGLE_OUTPUT_XLA_MIN_IN_CHANNELS or _few_inputs_value_by_shift(spec, w_shape))
        and not lax_impl.avx2_only()
    )


def _dense_channels_last_2d(spec: ConvSpec) -> bool:
    """Whether ``spec`` is a dense (one group) channels-last 2-D convolution on a CPU with
    AVX-512 (not `lax.avx2_only`): where `_strided_dilated_derivatives_by_matmul` and
    `_kernel_within_stride` were measured."""
    return spec.ndim == 2 and spec.groups == 1 and spec.channels_last and not lax_impl.avx2_only()


def _strided_dilated_derivatives_by_matmul(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether this dense channels-last 2-D layer, strided and with a dilated kernel,
    takes both derivatives by `matmul`'s patches: with at most
    `STRIDED_DILATED_MAX_PATCHES` patch elements, on a CPU with AVX-512 (not
    `lax.avx2_only`, where it was not measured).

    XLA's strided derivatives of a dilated kernel (an input-dilated convolution for the
    input gradient, a kernel-dilated one for the weight's) run slowly channels-last; the
    undilated rules (`_strided_dense_undilated`) do not take them. Found by a random
    sweep on a Sapphire Rapids Xeon (`/tmp/s64/randbest.py 6405 40 5`): 128->48 3x3
    stride 2 dilation 2 @56 batch 1 channels-last, training 5.05 ms by the rules, 2.8-2.9
    by `matmul` (input gradient 1.53 against 0.99 ms, weight gradient 2.10 against
    1.21). With the patches' derivatives against the rules (training with a fixed
    cotangent, 9 interleaved runs, 2026-12-06, random layers of 8-512 channels, stride
    2, 3 or (2, 1), dilation 2-4, 2x2 to 7x7 @14-112, batch 1-16; `/tmp/s64/sd.py`,
    `sd2.py 11 24`): channels-last, up to 4M patch elements, 0.94-5.4x on 25 layers;
    with more, 0.18-0.75x on four of eight (128->8 5x5 dilation 3 @28 batch 16, 20M
    elements, 0.18x; 128->48 3x3 dilation 3 @112 batch 2, 6.7M, 0.43x) though 1.5-2.2x
    on three. Channels-first the patches went both ways (0.66-1.65x on 15 layers): not
    there. The rule against without on 30 fresh layers (`sd3.py 12 30`): it changed 21,
    training 1.01-3.3x on 20 (median 1.8x), 0.81x on one (32->8 7x7 stride 3 dilation 3
    @112 batch 2, 12.9 ms against 10.4). Since 2026-12-06 (night) a stride and
    dilation that share a factor are divided by it first (`_common_factor`), which
    trained the channels-last layers of that kind in `/tmp/s71/cfsweep.py` seeds 1-3
    1.04-1.81x on six of eight, 0.93x and 0.95x on two of 0.35-0.4 ms."""
    if not _dense_channels_last_2d(spec) or any(d > 1 for d in spec.lhs_dilation):
        return False
    return (
        max(spec.stride) > 1
        and max(spec.rhs_dilation) > 1
        and _patch_elements(spec, x_shape, w_shape) <= STRIDED_DILATED_MAX_PATCHES
    )


def _kernel_past_output_unpadded_value(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether a channels-last layer `kernel_past_output` takes (few and deep patches,
    see `choose`) runs its value by `matmul` too: 2-D, unpadded, on at least
    `KERNEL_PAST_OUTPUT_UNPADDED_VALUE_MIN_ROWS` rows (batch x output positions), on a
    CPU with AVX-512 (not `lax.avx2_only`, where it was not measured). Unpadded, the
    value is XLA's convolution whole, which runs such short, deep products slowly;
    padded, other rules run it (`_input_taps`, the kernel trimmed to the taps that read
    the input), which `matmul` did not beat.

    Found by a sweep against PyTorch (`/tmp/s77/roles6.py`: 7x7 384->128 @8 batch 8
    channels-last, the value 3.35 ms by the rules, 0.98 by `matmul`). `matmul`'s value
    against the rules on the layers `kernel_past_output` takes with few, deep patches
    (channels-last, 2-D, 3x3-9x9, stride 1-2, dilation 1-2, 64-512 channels, @2-14,
    batch 1-16, 5 interleaved runs, AMD EPYC with AVX-512, 2026-12-07): padded or not
    (`kpo.py 1 20 5`), forward 1.29x (0.72-5.33x), training 1.08x (0.76-1.90x), the
    losses padded or on 1-8 rows; unpadded (`kpo2.py 2 24 5`), forward 1.37x
    (0.42-3.63x), training 1.13x (0.91-1.45x): 7x7 256->512 @8 batch 4 2.66x, 9x9 stride
    2 192->128 @10 batch 16 3.25x, 3x3 512->512 @3 batch 8 3.63x; lost on 1-2 rows
    (0.60-0.98x; 9x9 stride 2 512->128 @9 batch 1 0.60x, 0.76x in 15 runs), on a 1.2
    MFLOP layer of 4 rows (0.42x, 0.60x in 15 runs: 0.07 ms against 0.12) and on 5x5
    stride 2 128->192 @12 batch 16 (0.75x, 0.86x in 15 runs; training 1.26x)."""
    return (
        spec.ndim == 2
        and spec.channels_last
        and all(lo == 0 and hi == 0 for lo, hi in spec.padding)
        and _rows(spec, x_shape, w_shape) >= KERNEL_PAST_OUTPUT_UNPADDED_VALUE_MIN_ROWS
        and not lax_impl.avx2_only()
    )


def _strided_dilated_narrowing(w_shape) -> bool:
    """Whether a layer `_strided_dilated_derivatives_by_matmul` takes keeps XLA's input
    gradient (its weight gradient still `matmul`'s): to at most
    `STRIDED_DILATED_NARROWING_MAX_OUT_CHANNELS` channels from at least
    `STRIDED_DILATED_NARROWING_MIN_IN_CHANNELS`, and at least
    `STRIDED_DILATED_NARROWING_MIN_RATIO` times as many. The patches' input gradient
    multiplies the few output channels out to every input channel and tap, then folds
    the products back (``C_in * taps`` per row, for a product ``C_out`` deep); XLA's
    convolution from the few channels to the many does no such copy.

    Found by a sweep against PyTorch (`/tmp/s77/worst.py train`): 7x7 stride 2 dilation
    3 96->8 @56 batch 1 channels-last trained at 0.44x `lax`, its input gradient by
    `matmul` 7.15 ms against XLA's 0.83. XLA's input gradient against `matmul`'s
    (training with a fixed cotangent, 5 interleaved runs, AMD EPYC with AVX-512,
    2026-12-07, layers the rule above takes: 3x3-7x7, stride 2-3, dilation 2-4, @14-112,
    batch 1-16; `/tmp/s77/sdx.py 1 24 5`, `sdx.py 2 24 5`, `sdx2.py 3 24 5`, `sdx3.py 4
    24 5`): from 8-24 channels 0.63-1.44x (three of 8->1-12 0.63-0.74x); to 48-384
    channels 0.11-1.52x (32->256 @64 batch 8 0.44x, 8->256 0.11-0.25x); to 24-32
    channels, or from fewer than 4x as many, 0.42-2.01x (64->32 7x7 stride 3 @14 batch 8
    0.42x, 48->32 0.52x, 96->32 0.77x, 64->24 0.80x, 48->16 0.88x); within the bounds
    (to at most 16 from 32 or more, 4x as many) 1.02-6.1x on all but one (64->12 3x3
    @14 batch 4, 0.71x: 0.25 ms against 0.18). The bounds on 24 fresh layers
    (`sdx3.py 5 24 5`): training 1.74x, 1.09-3.18x. Not on CPUs with AVX2 and no AVX-512,
    as the rule above."""
    c_out, c_in = w_shape[:2]
    return (
        c_out <= STRIDED_DILATED_NARROWING_MAX_OUT_CHANNELS
        and c_in >= STRIDED_DILATED_NARROWING_MIN_IN_CHANNELS
        and c_in >= STRIDED_DILATED_NARROWING_MIN_RATIO * c_out
    )


def _pointwise_few_rows(spec: ConvSpec, x_shape, w_shape) -> bool:
    """Whether this channels-last 1x1 layer to as many or fewer channels takes its weight
    gradient by `matmul.pointwise_weight_gradient` (the input as the product's left
    operand), as layers that widen do (`matmul.pointwise_expands`): unstrided, on at most
    `POINTWISE_FEW_ROWS_MAX_ROWS` rows (batch x output positions), from at least
    `POINTWISE_FEW_ROWS_MIN_IN_CHANNELS` channels to at least
    `POINTWISE_FEW_ROWS_MIN_OUT_CHANNELS`, in 2-D, on a CPU with AVX-512 (not
    `lax.avx2_only`, where it was not measured).

    Found by a random sweep on a Sapphire Rapids Xeon (`/tmp/s65/rand.py 6501 50 7`): 1x1
    256->128 @7 batch 1 channels-last trained at 0.77-0.89x `lax` (21 interleaved runs), its
    weight gradient by JAX's transpose of the value's product 0.19 ms against XLA's 0.11
    (the widening layer 128->256 by the written-out product 0.10). Training with it against
    without, a fixed cotangent and through a ReLU (11 interleaved runs, 2026-12-06,
    `/tmp/s65/pw2.py`): unstrided, from 128-1024 channels to 64-512, on 49-100 rows (@7-10,
    batch 1-2), 24 layers 0.86-1.85x and 0.95-1.82x, geometric means 1.31x and 1.28x (1.2x
    or more on 15 and 12); a second set (`pw2.py b`, 128-2048 to 64-1024 channels @4-11,
    batch 1-4, 64-128 rows): 40 layers 0.74-1.68x and 0.93-1.52x, geometric means 1.14x and
    1.12x (the one loss, 2048->512 @11 batch 1 with a fixed cotangent, 1.00x through the
    ReLU). Not strided (1x1 stride 2 @14, 49-98 rows: 256->128 0.63-0.78x, 512->64
    0.60-0.79x, 128->128 batch 2 0.60-0.66x), not from fewer channels (96->96 0.87-1.12x,
    64->64 0.83-1.39x) or to fewer (128->32 0.83-1.07x), not on more rows (144 rows
    0.83-1.29x; 392 and up, 0.73-1.20x). Padded, 256->128 @5 batch 2 1.48x and 1.65x;
    transposed (a 1x1 convolution), 256->128 @7 1.63x and 1.44x (`pw3.py`). Not in 3-D,
    where it went both ways (five layers of 128-1024 channels @2x4x4-4x4x4, batch 1-4,
    64-128 rows, 21 interleaved runs: 0.81-1.04x and 0.92-1.19x, `pw4.py`); 1-D 1x1
    layers channels-last run XLA's derivatives (`choose`), not `matmul`'s.
    """
    if not spec.channels_last or spec.groups != 1 or w_shape[2:] != (1,) * spec.ndim:
        return False
    if spec.ndim != 2 or any(s > 1 for s in spec.stride):
        return False
    if any(d > 1 for d in spec.lhs_dilation):
        return False
    c_out, c_in = w_shape[:2]
    rows = _rows(spec, x_shape, w_shape)
    return (
        rows <= POINTWISE_FEW_ROWS_MAX_ROWS
        and c_in >= POINTWISE_FEW_ROWS_MIN_IN_CHANNELS
        and c_out >= POINTWISE_FEW_ROWS_MIN_OUT_CHANNELS
        and not lax_impl.avx2_only()
    )


def _kernel_within_stride(spec: ConvSpec, w_shape) -> bool:
    """Whether this dense channels-last 2-D layer, whose kernel is shorter than its
    stride along both dims (the windows skip input rows and columns, and do not
    overlap), takes `matmul`'s derivatives: undilated, with more than one tap, to at least
    `KERNEL_WITHIN_STRIDE_MIN_OUT_CHANNELS` channels (fewer were not measured, and
    `output_taps` takes some), on a CPU with AVX-512 (not `lax.avx2_only`, where it was
    not measured).

    The patches of such a layer are a subset of its input, so `matmul`'s input gradient
    is one product scattered into zeros, its weight gradient one product; XLA's
    derivatives of these strided windows run slowly (32->128 2x2 stride 3 @28 batch 8
    channels-last trained at 0.63x `lax` by the rules). `matmul` in every role against
    the rules (7 interleaved runs, `/tmp/s65/kls.py 1 18`, 2x2 and 3x3 kernels at stride
    3-5, 3-256 to 8-256 channels @28-112, batch 1-8): channels-last, training 1.22-3.01x
    on 8 of 9 layers (0.95x on one of 0.13 ms), its value 0.57-1.21x (so the value stays
    the rules'); channels-first training 0.94-1.81x on 9, left. The rule against without
    on 20 fresh channels-last layers (`klsab.py 2 20`, kernels 1x2-3x3 at strides 2x3-5x4,
    padded or not, 3-512 channels @14-112, batch 1-16, 9 interleaved runs): training
    0.60-3.60x with a fixed cotangent and 0.55-3.51x through a ReLU, geometric means 1.39x
    and 1.42x, 1.2x or more on 12; the losses on layers of 0.07-0.7 ms (16->8 3x3 stride 4
    @28 batch 1 0.60x and 0.55x, 16x16 3x2 stride 4 @14 batch 16 0.74x and 0.70x)."""
    if not _dense_channels_last_2d(spec):
        return False
    if any(d > 1 for d in (*spec.lhs_dilation, *spec.rhs_dilation)):
        return False
    kernel = w_shape[2:]
    within = all(k < s for k, s in zip(kernel, spec.stride, strict=True))
    return within and math.prod(kernel) > 1 and w_shape[0] >= KERNEL_WITHIN_STRIDE_MIN_OUT_CHANNELS


# A layer whose kernel equals its stride runs as the 1x1 convolution of its input folded
# space-to-depth (`_tiles_as_pointwise`) in training where the folded layer has at most
# `TILES_MAX_FOLDED_DEPTH` input channels (``C_in x taps``) and each image at least
# `TILES_MIN_OUTPUT_POSITIONS` output positions, and where a kernel of at least
# `TILES_LARGE_KERNEL_TAPS` taps leaves each image at most that many positions (not
# 1-D channels-last layers). A value alone: on 3-D inputs of more than
# `TILES_VALUE_MIN_INPUT_3D` elements to at least `TILES_VALUE_MIN_OUT_CHANNELS_3D`
# channels, or channels-last 2-D ones of more than `TILES_VALUE_MIN_INPUT_2D` from at
# most `TILES_VALUE_MAX_IN_CHANNELS_2D` channels.
TILES_LARGE_KERNEL_TAPS = 49
TILES_MAX_FOLDED_DEPTH = 2048
TILES_MIN_OUTPUT_POSITIONS = 64
TILES_VALUE_MIN_INPUT_3D = 2**20
TILES_VALUE_MIN_OUT_CHANNELS_3D = 32
TILES_VALUE_MIN_INPUT_2D = 2**19
TILES_VALUE_MAX_IN_CHANNELS_2D = 4


def _tiles_as_pointwise(
    spec: ConvSpec, x_shape, w_shape, role: int, differentiated: bool = False
) -> bool:
    """Whether ``role`` of this layer, whose kernel equals its stride (a patch embedding:
    ViT's 16x16 stride 16, ConvNeXt's 4x4 stride-4 stem and 2x2 stride-2 downsampling,
    Swin's patch merging, video tubelets), runs as a 1x1 convolution of its input folded
    space-to-depth (`space_to_depth.forward`: each ``k x k`` tile's elements become
    ``k^2`` times the channels) by the 1x1 layer's own rules: dense, undilated, not
    transposed, more than one tap.

    The windows tile the input, so the fold is a permutation of it and the 1x1
    convolution does the layer's products and no more; its derivatives are the 1x1
    layer's (one product each, `matmul`'s per-image products where the 1x1 rules say),
    the fold's transpose a permutation back. XLA's derivatives of these strided windows
    run slowly: ViT's 16x16 stride 16 3->768 @224 batch 4 channels-last trained in 69 ms
    (PyTorch 29), its weight gradient 30 ms; by the fold 11 ms (`/tmp/s69/fold1.py`).

    Measured (without the rule against with it, training with a fixed cotangent, 5-7
    interleaved runs, Sapphire Rapids Xeon, 2026-12-06; random layers of 1-3 dims, both
    layouts, batch 1-32). First everything folded (`/tmp/s69/nov2.py 2 30 5 all`): 2-D
    2x2 64->128 @59 batch 2 1.32x, 96->192 @56 batch 16 channels-last 1.46x, @57
    channels-first 1.20x, 16->32 @64 1.22x, 3->32 @128 1.13-1.18x, 4x4 3->128 @224
    batch 8 2.23x, @225 batch 1 1.52x, 14x14 3->256 @224 1.56x; 3-D 2x16x16 3->768
    @16x224x224 8.6x (channels-last batch 1) and 14x (channels-first batch 4), 2x2x2
    64->128 @8x28x28 1.34-1.59x, 32->64 @16x32x32 1.10-2.72x, 2x4x4 3->96 @8x112x112
    batch 16 1.57x; 1-D kernel 10 1->128 @16000 2.38x, 4 128->256 @2000 channels-first
    1.11x. Lost: 2x2 256->256 @8 batch 8 channels-first 0.84x and 0.99x (16 output
    positions per image: hence `TILES_MIN_OUTPUT_POSITIONS`; 2x2 768->1536 @14 0.84x),
    1-D 4 128->256 @2000 batch 16 channels-last 0.73x and 1->64 0.95x (1-D
    channels-last is left to the rules), 3-D 2x4x4 3->96 @8x112x112 batch 1
    channels-last 0.83x (1.7 ms, taken). Only the derivatives folded (`nov2.py 2 30 5
    deriv`) gained less (96->192 channels-last 1.00x, 2x2x2 64->128 1.04-1.16x). A
    fresh sweep (`/tmp/s69/val.py 691 30 7`) found the folded layer's depth: 2x4x4
    128->16 @8x32x32 (4096 folded channels) 0.37x, 8x8 128->16 @129 channels-last
    (8192) 0.78x, 1-D 16 192->192 @16000 batch 1 (3072) 0.61x (hence
    `TILES_MAX_FOLDED_DEPTH`), while its gains ran 1.17-3.71x (2x2 3->384 @32 batch 32
    channels-last 3.71x, 8x8 32->16 @112 batch 16 2.56x, 1-D 5 192->16 @500 2.05x,
    16x16 3->768 @257 1.68x) and 0.87x on a 1 ms 3-D layer from one channel; and large
    kernels on few positions, which XLA trains far slower (`/tmp/s69/big.py`, all
    three past both bounds): 14x14 32->32 @98 batch 16 channels-last 648 ms against
    15.9 (PyTorch 9.1), 14x14 256->64 @57x56 batch 2 81 against 25, 16x16 384->64 @112
    batch 2 channels-first 1610 against 109 (PyTorch 155), 7x7 384->16 @57 batch 1
    1.21x (64 positions): hence `TILES_LARGE_KERNEL_TAPS` on at most
    `TILES_MIN_OUTPUT_POSITIONS` positions, past the depth bound (not on more: the 8x8
    128->16 layer above has 256). A second fresh sweep (`val.py 692 30 7`): training
    1.18-9.17x on 19 of the 21 layers the rule folds (16x16 256->384 @128 batch 2
    channels-last 3052 -> 333 ms, PyTorch 498), 0.82x on a 0.8 ms 3-D layer of one
    image and 0.92x on 2x2 128->128 @16 batch 16. To fewer than 16 output channels,
    where other rules (`_output_taps`, `_few_inputs_weight_gradient`) took some of these
    layers before (`/tmp/s69/fewout.py 693 24 7`): training 1.04-4.77x on 10 of the 13
    folded (3x3 192->8 @84 batch 1 2.43x, 1-D 5 3->1 @20001 batch 32 4.77x), 0.74x on
    4x4 16->12 @56 batch 16 and 2x2x2 64->6 @8x8x8 batch 8 channels-last, 0.91x on 2x2
    64->3 @56 batch 16 channels-last.

    A value alone (not ``differentiated``) went both ways (`nov2.py 2 30 5 all`,
    `val.py 691 30 7`, `val.py 692 30 7`, `/tmp/s69/fold1.py 1 16 7`): 3-D gained on
    inputs of more than `TILES_VALUE_MIN_INPUT_3D` elements (1.12-1.75x on ten; 0.96x on
    2^20, 0.73x on a batch of one of 0.3M) but for 2x4x4 8->16 @16x113x112
    channels-last 0.72x (hence `TILES_VALUE_MIN_OUT_CHANNELS_3D`; 2x4x4 3->96 @8x112x112
    batch 8 channels-first 0.84x and 192->32 @16x33x33 0.89x, taken), and channels-last
    2-D stems (4x4 3->96 @224 1.70x at batch 8, 1.81x at 16; 16x16 3->768 batch 4 1.15x,
    3->384 @896 batch 4 1.88x; 14x14 3->256 batch 1 0.79x, under the input bound), but
    2-D layers from more channels lost (2x2 96->192 @56 batch 16 channels-last 0.61x,
    16->32 @64 0.67x, 256->256 @8 0.78-0.87x), as did 1-D (0.43-0.92x)."""
    kernel = tuple(w_shape[2:])
    taps = math.prod(kernel)
    tiles = (
        spec.groups == 1
        and taps > 1
        and kernel == tuple(spec.stride)
        and all(d == 1 for d in (*spec.rhs_dilation, *spec.lhs_dilation))
    )
    if not tiles:
        return False
    if role == FORWARD and not differentiated:
        if spec.ndim == 3:
            return (
                math.prod(x_shape) > TILES_VALUE_MIN_INPUT_3D
                and w_shape[0] >= TILES_VALUE_MIN_OUT_CHANNELS_3D
            )
        return (
            spec.ndim == 2
            and spec.channels_last
            and x_shape[1] <= TILES_VALUE_MAX_IN_CHANNELS_2D
            and math.prod(x_shape) > TILES_VALUE_MIN_INPUT_2D
        )
    if spec.ndim == 1 and spec.channels_last:
        return False
    positions = math.prod(spec.out_spatial(x_shape[2:], kernel))
    if taps >= TILES_LARGE_KERNEL_TAPS and positions <= TILES_MIN_OUTPUT_POSITIONS:
        return True
    return x_shape[1] * taps <= TILES_MAX_FOLDED_DEPTH and positions >= TILES_MIN_OUTPUT_POSITIONS


# A layer whose kernel is two to `MULTIPLE_OF_STRIDE_MAX_MULTIPLE` times a stride of at
# least `MULTIPLE_OF_STRIDE_MIN_STRIDE` in every dim trains folded space-to-depth too
# (`_kernel_multiple_of_stride`).
MULTIPLE_OF_STRIDE_MIN_STRIDE = 3
MULTIPLE_OF_STRIDE_MAX_MULTIPLE = 3


def _kernel_multiple_of_stride(spec: ConvSpec, w_shape, role: int, differentiated: bool) -> bool:
    """Whether ``role`` of this layer, whose kernel is two to
    `MULTIPLE_OF_STRIDE_MAX_MULTIPLE` times its stride of at least
    `MULTIPLE_OF_STRIDE_MIN_STRIDE` in every dim (DQN's 8x8 stride 4, 6x6 stride 3,
    12x12 stride 4), runs in training as the unstrided convolution of its input and
    kernel folded space-to-depth (`space_to_depth.forward`: a ``k/s``-tap kernel over
    ``s^n`` times the channels, with no zero taps) by that layer's own rules: dense,
    undilated, not transposed. Not a value alone (not measured), nor on a mesh of
    several devices (`_run`): there XLA's partitioner gave the folded weight gradient
    wrong (6x6 stride 3 padding 1, the input's padded width split unevenly over 8
    devices: `tests/test_sharding.py::test_folds_under_sharding`, jax 0.10.2; the 1x1
    fold of `_tiles_as_pointwise` and 8x8 stride 4 came out right).

    Found after `_tiles_as_pointwise`, with which it shares the fold (Sapphire Rapids
    Xeon, 2026-12-06, training with a fixed cotangent, the rules without against with,
    5 interleaved runs, scripts in `/tmp/s69`): DQN's 8x8 stride 4 4->32 @84 batch 32
    1.31x / 1.98x (channels-first / channels-last), 6x6 stride 3 32->64 @60 1.45x /
    1.85x (`mult.py`); over 20 random such layers (`mul2.py 695 20 5`: strides 3-5,
    kernels 2-3x the stride, 1-D to 3-D, 1-128 -> 16-256 channels, batch 1-32, both
    layouts) **1.08-11.7x on 19 and 0.99x on one** (8x8 stride 4 3->64 @52 batch 32
    channels-last 1.71x, 15x15 stride 5 8->96 @140 2.00x, 3-D 8x8x8 stride 4 4->64
    @24x26x24 batch 16 11.7x, 1-D 9 stride 3 32->16 @12003 2.20x; the deepest folded
    layer, 3-D 8x8x8 stride 4 64->32 @44x41x43, 4096 channels, 1.97x). Not stride 2, where
    it went both ways (`mult.py`: DQN's 4x4 stride 2 32->64 @20 1.27x /
    1.43x, 64->128 @56 1.12x / 0.99x, 3->64 @128 0.88x / 1.10x), nor kernels that are
    not multiples, whose fold pads zero taps (`s3.py 694 26 5`: 1.06-2.36x where the
    padding adds at most a third of the products, AlexNet's 11x11 stride 4 3->64 @224
    2.07x / 2.50x in `mult.py`, but 0.52x on 11x11 stride 4 16->32 @84 batch 16
    channels-last; 0.50-0.98x on 5x5 stride 4 and 6x6 stride 5, which double the
    products or more; ResNet's 7x7 stride-2 stem 0.68x / 0.77x). Nor kernels of many
    times the stride: the bench suite's 1-D kernel 80 stride 4 1->128 @16000 batch 8
    (20 folded taps) trained at 0.79x / 0.72x (`suiterows.py`, 11 runs), while its
    kernel 10 stride 5 1->512 gained 1.06x."""
    kernel = tuple(w_shape[2:])
    return (
        (role != FORWARD or differentiated)
        and spec.groups == 1
        and min(spec.stride) >= MULTIPLE_OF_STRIDE_MIN_STRIDE
        and all(
            k % s == 0 and 2 <= k // s <= MULTIPLE_OF_STRIDE_MAX_MULTIPLE
            for k, s in zip(kernel, spec.stride, strict=True)
        )
        and all(d == 1 for d in (*spec.rhs_dilation, *spec.lhs_dilation))
    )


def _output_taps_per_image(layer: ConvSpec, spec: ConvSpec, x_shape, w_shape, role: int) -> bool:
    """Whether `matmul.output_taps` runs ``spec`` (the ``layer``'s, or a part of it)
    image by image (``per_image``): the value and the weight gradient, channels-first,
    not of a transposed layer's sub-pixel phases (``layer`` input-dilated), with at
    least `OUTPUT_TAPS_PER_IMAGE_MIN_RATIO` times as many positions per image as
    products per position (``taps * C_out``).

    The value multiplies the input (N, C_in, positions) by the weight, and the weight
    gradient contracts the input with the output gradient's shifted copies (N, taps *
    C_out, positions) over images and positions. Taken whole, XLA first copies the input
    positions-first (4-34 MB on the layers below), and for the weight gradient the
    shifted copies too; image by image, each image's product reads them where they lie
    (the weight broadcast along the batch, whose transpose sums the images' products).
    Found by a random sweep (`/tmp/s58/rand.py 3333`: 128->8 3x3 padding 1 @56 batch 8
    channels-first trained at 0.65x `lax`, 41.3 ms against `lax`'s 26.7, its weight
    gradient by `output_taps` 24 ms against XLA's 12.6; with the weight gradient image
    by image 1.72x `lax`, and with the value too and the input gradient by
    `_output_taps_input_gradient_by_patches`, 1.90x, 1.86x with the value kept, batch 4
    2.59x). Image by image against whole, 7-11 interleaved runs, AMD EPYC with AVX2,
    2026-12-05 (`/tmp/s58/togr.py`, `force.py`): the weight gradient of 128->8 3x3 @56
    batch 4 / 8 2.76x / 2.72x (training 1.50x / 2.06x), 5x5 128->8 dilation 2 @32 batch
    8 1.94x, 256->3 @64 batch 8 3.07x, 1-D k7 256->2 @1000 batch 8 2.46x; the value of
    64->1 @128 batch 8 4.72x, 256->3 @64 batch 8 4.26x, 3x3 stride 2 64->3 @64 1.37x.
    Over random layers that `output_taps` takes (`/tmp/s58/gen.py`: for the weight
    gradient `gen59`, three runs over two draws of 40 layers, 35 and 34 of them not
    transposed, 103 rows; for the value `gen60`, one run over each of two draws of 40,
    64 rows not transposed; 1-3-D, 1-512 -> 1-32 channels, batch 1-32, strides 1-2,
    dilations 1-2; geometric means): with the bound, the weight gradient 1.67x over 95
    rows (0.70-4.8x; training 1.17x), the value 1.27x over 59 (0.64-2.8x; the value with
    both gradients 1.02x over 26). Below the bound (small maps against many products)
    the weight gradient 0.93x over 8 rows (256->8 7x7 dilation 2 @16 batch 2 0.42x and
    0.51x, 256->3 5x5 @8 batch 8 0.76x and 0.82x, training 0.63-0.84x there; 32 images
    of 256->2 5x5 @8 2.1-2.2x) and the value 0.90x over 5 (32 images of 512->16 3x3 @8
    0.61x, then 0.49x in 11 runs). Not a transposed layer's phases: DCGAN's 64->3 4x4
    stride 2 @32 at batch 4-32 trained 0.31-0.82x with the weight gradient image by
    image (each phase's weight 12 products by 64 channels against 1024 positions, within
    the bound), four of five other transposed layers 0.44-0.97x, and five of six of
    their values 0.80-0.96x. Nor the input gradient: the 1-D one (k7 256->2) ran 0.61x
    image by image. Channels-last the input is positions-first already.

    Below the bound, the 2-D value from `OUTPUT_TAPS_PER_IMAGE_VALUE_IN_CHANNELS` (48 to
    128) input channels to at most `OUTPUT_TAPS_MAX_OUT_CHANNELS` (6, as measured) on at
    least `OUTPUT_TAPS_PER_IMAGE_VALUE_MIN_POSITIONS` (25) positions per image runs image
    by image too. Found by a random sweep (`/tmp/s65/rand.py 6801`, then
    `/tmp/s68/parts1.py`): 128->4 5x5 valid @7 batch 8 channels-first, its
    value by `output_taps` whole 0.35 ms against XLA's 0.13, and 64->4 4x4 padding 1 @7
    batch 16 0.37 against 0.14. Whole, image by image and XLA's (3x3-5x5, @4-14, batch
    1-32, 11 interleaved runs, Sapphire Rapids Xeon, 2026-12-06, `/tmp/s68/otv4.py`,
    `otv5.py`): from 48-128 channels image by image won or tied on all 23 layers from
    25 positions (1.01-1.98x, those two 1.47x and 1.86x); from 192-512 channels it went
    both ways (0.62-1.69x, 32 images of 256->5 4x4 @7 0.72x, 16 of 512->5 3x3 @6 0.62x),
    as on 16 positions (0.62-1.12x). The rule against without it on random layers it
    changes (`/tmp/s68/piv.py`, strides 1-3, dilations 1-2, @5-14, batch 1-32, 11
    interleaved runs; forward / training with a fixed cotangent, geometric means):
    seed 32, 30 layers of 48-128 channels, 1.17x / 1.08x (0.89-1.99x / 0.84-1.38x),
    rows under 0.9x `lax` 13 -> 6 forward and 10 -> 5 in training; seed 31, 30 layers
    of 16-128 channels, from 48 channels 0.96-1.92x / 0.90-1.48x over 19, from 16-32
    channels 0.88-1.04x / 0.87-1.13x over 11 (hence the floor)."""
    products = math.prod(w_shape[2:]) * w_shape[0]  # per position (dense layers only)
    positions = math.prod(x_shape[2:])
    low, high = OUTPUT_TAPS_PER_IMAGE_VALUE_IN_CHANNELS
    small_value = (
        role == FORWARD
        and spec.ndim == 2
        and low <= w_shape[1] <= high
        and w_shape[0] <= OUTPUT_TAPS_MAX_OUT_CHANNELS
        and positions >= OUTPUT_TAPS_PER_IMAGE_VALUE_MIN_POSITIONS
    )
    return (
        role != INPUT_GRADIENT
        and not spec.channels_last
        and all(d == 1 for d in layer.lhs_dilation)
        and (positions >= OUTPUT_TAPS_PER_IMAGE_MIN_RATIO * products or small_value)
    )


def _output_taps_input_gradient_by_patches(spec: ConvSpec) -> bool:
    """Whether the input gradient `_output_taps` takes runs instead as `matmul`'s
    patches product on the cotangent (the input gradient's own convolution,
    `_derivatives.input_term_direct`; `_output_taps` takes no input-dilated layer, whose
    input gradient has no such form): channels-first.

    `output_taps`' input gradient, the transpose of its value, stacks the output
    gradient's shifted copies and multiplies them by the weight over every image at
    once, which XLA lays out positions-first and back (the copies, then the result);
    `matmul` on the cotangent builds its patches in batch chunks that fit in cache
    (`matmul.forward`). Found after the per-image value and weight gradient
    (`_output_taps_per_image`), whose input gradient ran 0.61x image by image. `matmul`
    against `output_taps`, the input gradient / the value with both gradients, 7
    interleaved runs, AMD EPYC with AVX2, 2026-12-05 (`/tmp/s58/togr.py`): 1-D k7 256->2
    @1000 batch 8 3.29x / 1.43x, k9 64->1 @4096 1.89x / 2.00x; 3x3 stride 2 64->3 @64
    batch 8 2.04x / 1.38x, 256->1 @32 1.98x / 1.54x; 5x5 stride 2 64->2 @64 1.58x /
    1.21x; 3-D stride 2 64->2 @16 3.50x / 1.67x; over 30 random such layers (`gen.py`
    `gen61`: strided 1-3-D and unstrided 1-D, 16-512 -> 1-3 channels, batch 1-16) 2.09x
    / 1.15x (geometric means; the input gradient 0.88-5.6x, training 0.61-1.79x, under
    0.9x on six, which run again with 11 runs read 0.75x and 0.86x on two layers under
    0.25 ms, 0.88x on 1-D k15 128->2 @256 batch 16 and 0.98-1.31x on the other three).
    Channels-last (XLA's layout already positions-first): 1-D k3 256->3 @4096 0.81x /
    0.95x, 3x3 stride 2 64->3 @64 1.62x / 0.94x: not taken. The auto-chosen value of the
    transposed problem instead of `matmul`'s: 0.40-1.69x against `matmul`'s (five of
    nine under 1x)."""
    return not spec.channels_last


def _transposed_value(ct: jax.Array, w_t: jax.Array, t_spec: ConvSpec) -> jax.Array:
    """`auto`'s value of the transposed convolution ``t_spec`` (for
    `_strided_input_gradient_stacked` and `_strided_input_gradient_phases`)."""
    return _run(ct, w_t, t_spec, FORWARD, gradient=True)


def _forward_by(name: str, role: int, differentiated: bool):
    """The convolution ``name`` (in `jaxconv.IMPLS`) as ``role`` runs it: `matmul`'s
    value reads the caller's weight (`matmul.forward`'s ``value``): reverse mode never
    transposes the value (its derivatives are the other two roles). Forward mode through
    `_derivatives.input_term` and second derivatives may transpose it, with the same
    result; ``value`` only picks the layout of its product, and so does ``alone`` (a
    value not ``differentiated``, `matmul.rows_first`)."""
    if name == "matmul" and role == FORWARD:
        return functools.partial(matmul_impl.forward, value=True, alone=not differentiated)
    return FORWARDS[name]


def _rows_written_out(x: jax.Array, w: jax.Array, spec: ConvSpec, name: str, inner):
    """``planes.<name>(x, w, spec, inner)``, a weight gradient's convolution by kernel
    rows, whose transpose along ``w`` is ``planes.<name>_weight_gradient``: written out
    in the layout XLA's convolution writes it in, where JAX's transpose left a copy with
    the output channels strided (see `_output_stacked_rows`,
    `planes.decompose_weight_gradient`)."""
    return _derivatives.weight_term_direct(
        x,
        w,
        spec,
        functools.partial(getattr(planes, name), inner=inner),
        functools.partial(getattr(planes, f"{name}_weight_gradient"), inner=inner),
    )


def _run(
    x: jax.Array,
    w: jax.Array,
    spec: ConvSpec,
    role: int,
    names=None,
    differentiated: bool = False,
    gradient: bool = False,
) -> jax.Array:
    """``role``'s convolution by the algorithm chosen for it (``names``, else the
    rules); ``differentiated`` for the value computed alongside its derivatives;
    ``gradient`` for a transposed convolution that is an input gradient
    (`_transposed_value`)."""
    if names is not None and names[role] != "auto":
        return _forward_by(names[role], role, differentiated)(x, w, spec)
    backend = backend_name()

    def chosen(x_, w_, spec_):
        # A convolution the layer was split into (or changed to), not the layer itself.
        nested = spec_ != spec or x_.shape != x.shape or w_.shape != w.shape
        name = choose_for(spec_, x_, w_, backend, nested)[role]
        # The whole layer (or one of its sub-pixel phases, or the one 2-D convolution a
        # (k, 1, 1) 3-D layer runs as), not the 2-D planes of a 3-D convolution nor one
        # group's part.
        whole = spec_.ndim == spec.ndim and spec.groups == 1
        # One group's part of a grouped 2-D layer (`groups.decompose`), which takes the
        # strided rules of a whole one: the weight gradient by the space-to-depth fold,
        # the input gradient by the transposed convolution's phases. Found by a random
        # sweep (`/tmp/s55/rand.py 2121`: 2 groups of 16->1 7x7 stride 2 @224 batch 1
        # channels-last, training 213 ms, PyTorch 9; each group's input and weight
        # gradients 86-88 ms, the same dense layer's under `auto` 0.7 and 1.6). The
        # rule against without (`/tmp/s55/togr.py`, `gen9(1, 30)`: 30 random stride-2
        # layers of 2-16 groups of 4-64 -> 1-64 channels, 2x2-7x7, 1-8 images @14-224,
        # both layouts, 5 interleaved runs, AMD EPYC with AVX2, 2026-12-05): training
        # 1.0-7.1x on 25 (median of all 1.6x; 4 groups of 16->8 7x7 @224 batch 8
        # 4.6x), 0.86-0.99x on five (the input gradient alone 0.62x on one, 16 groups of
        # 8->4 3x3 @224, whose weight gradient gained 1.70x); that layer 64x and 14x
        # on the two gradients.
        group_part = spec.ndim == spec_.ndim == 2 and spec.groups > 1 == spec_.groups
        # Channels-last, a group's part takes `_output_taps` too, measured with its
        # transposes built chunk by chunk (`matmul.OUTPUT_TAPS_CHUNK`): against without
        # (`/tmp/s56/togr.py`, `gen15`: 2-8 groups of 16-256 -> 1-4 channels, 3x3-7x7,
        # strides 1-2, dilations 1-2, batch 1-8 @14-224, 7 interleaved runs, AMD EPYC
        # with AVX2, 2026-12-05), training 1.65x (geometric mean of 38 layers; 1.0-6.8x
        # on 34, 0.77-0.99x on four), forward 1.00x (0.79-1.22x). Channels-first
        # training 1.35x on 18 but 0.62-0.87x on five (unstrided 3x3 groups of 16-128
        # -> 1-3 channels): not taken.
        if (
            name == "lax"
            and backend == "cpu"
            and (whole or (group_part and spec_.channels_last))
            and _output_taps(spec_, x_.shape, w_.shape, role)
        ):
            if role == INPUT_GRADIENT and _output_taps_input_gradient_by_patches(spec_):
                return _derivatives.input_term_direct(x_, w_, spec_, matmul_impl.forward)
            per_image = _output_taps_per_image(spec, spec_, x_.shape, w_.shape, role)
            return matmul_impl.output_taps(x_, w_, spec_, per_image)
        if (
            name == "lax"
            and backend == "cpu"
            and whole
            # Not a transposed layer's phases (unmeasured), nor a strided layer's
            # input gradient run as a transposed layer (`_transposed_value`).
            and max(spec.lhs_dilation) == 1
            and (dtype := jnp.result_type(x_.dtype, w_.dtype)) in (jnp.float32, jnp.float64)
        ):
            size = dtype.itemsize
            if role == WEIGHT_GRADIENT and _input_taps(spec_, x_.shape, w_.shape, True):
                # Its transpose written out: a product per tap of what it meets.
                return _derivatives.weight_term_direct(
                    x_, w_, spec_, FORWARDS[name], matmul_impl.input_taps_weight_gradient
                )
            if role == FORWARD and _many_to_few_by_taps(spec_, x_.shape, w_.shape, True, size):
                return matmul_impl.output_taps(x_, w_, spec_)
            alone = not differentiated  # (a value past the heap block, `_input_taps`)
            if role == FORWARD and _input_taps(
                spec_, x_.shape, w_.shape, alone=alone, itemsize=size
            ):
                return matmul_impl.input_taps(x_, w_, spec_)
            if (
                role == FORWARD
                and alone
                and _strided_3d_value_alone_by_matmul(spec_, x_.shape, w_.shape, size)
            ):
                return _forward_by("matmul", role, differentiated)(x_, w_, spec_)
            if role == INPUT_GRADIENT and _derivatives.has_input_gradient_spec(spec_):
                problem = _derivatives.input_gradient_problem(x_.shape, w_.shape, spec_)
                if _many_to_few_by_taps(problem[2], *problem[:2], itemsize=size):
                    # The input gradient of a layer from few channels to many.
                    return _derivatives.input_term(x_, w_, spec_, matmul_impl.output_taps)
                if _input_taps(problem[2], *problem[:2], input_gradient=True, itemsize=size):
                    # Its input gradient's convolution likewise.
                    by = functools.partial(matmul_impl.input_taps, callers_weight=False)
                    return _derivatives.input_term(x_, w_, spec_, by)
        if name in ("lax", GROUPS_LOOP) and backend == "cpu" and _half(x_, w_):
            return _in_float32(chosen, x_, w_, spec_)
        if (
            role == WEIGHT_GRADIENT
            and name in ("lax", "matmul")
            and backend == "cpu"
            and whole
            and _few_inputs_weight_gradient(spec_, x_.shape, w_.shape)
        ):
            # Its transpose written out: one product of patches per image.
            return _derivatives.weight_term_direct(
                x_, w_, spec_, FORWARDS["lax"], matmul_impl.per_image_patches_weight_gradient
            )
        if (
            role == WEIGHT_GRADIENT
            and backend == "cpu"
            and whole
            and (
                (
                    name == "lax"
                    and _chunked_weight_gradient(spec_, x_.shape, w_.shape)
                    and split_mesh(x_, w_) is None
                )
                or (name == "matmul" and _matmul_weight_gradient_rows(spec_, x_.shape, w_.shape))
            )
        ):
            # Its transpose written out: products of patches a few images at a time,
            # their rows contracted where they lie (XLA's on a mesh: see
            # `_chunked_weight_gradient`; `_matmul_weight_gradient_rows`).
            return _derivatives.weight_term_direct(
                x_, w_, spec_, FORWARDS[name], matmul_impl.chunked_patches_weight_gradient
            )
        if name in (DENSE_GROUPS, GROUPS_LOOP) and role == FORWARD and not differentiated:
            small = name == DENSE_GROUPS and _small_groups(spec_, x_.shape, w_.shape)
            if (
                small
                and spec.ndim == 2  # (not a grouped 3-D layer's planes: unmeasured)
                and split_mesh(x_, w_) is None
                and _block_diagonal_value(spec_, x_.shape, w_.shape)
            ):
                # One dense convolution by the block-diagonal weight, by the rules.
                dense = dataclasses.replace(spec_, groups=1)
                return _run(x_, groups.block_diagonal(w_, spec_.groups), dense, FORWARD)
            if small or _pointwise_many_groups(spec_, w_.shape):
                # XLA's grouped value instead (`_pointwise_many_groups`, `_small_groups`).
                return _xla(x_, w_, spec_)
        if name == DENSE_GROUPS:
            return groups.decompose(x_, w_, spec_, chosen)
        if name == GROUPS_LOOP:
            if role == INPUT_GRADIENT and _derivatives.has_input_gradient_spec(spec_):
                return _derivatives.input_term(x_, w_, spec_, groups.loop)
            if role == WEIGHT_GRADIENT:
                return groups.weight_term(x_, w_, spec_)
            return groups.loop(x_, w_, spec_)
        if name == "shift" and role != FORWARD:
            # Shift's transposes written out: depthwise 7x7 96@56 batch 8 train 5x
            # faster than transposing shift op by op (see `jaxconv._derivatives`).
            if role == INPUT_GRADIENT and _derivatives.has_input_gradient_spec(spec_):
                # Not by `shift._depthwise_split`: transposed op by op it runs slower
                # than padding first (3x3 144@56 batch 8: 5.2 ms against 3.6), and run
                # directly on the cotangent (`_derivatives.input_term_direct`), XLA
                # fuses a ReLU's mask into each of its border parts: training through
                # a ReLU 0.75-0.96x on 3x3 @7-56. But split on the cotangent written
                # out once where `_split_input_gradient` says.
                if _split_input_gradient(spec_, x_.shape, w_.shape):
                    return _derivatives.input_term_direct(x_, w_, spec_, _split_once)
                unsplit = shift_impl.forward_unsplit
                return _derivatives.input_term(x_, w_, spec_, unsplit)
            if role == WEIGHT_GRADIENT and shift_impl.fused_weight_gradient(spec_, w_.shape[2:]):
                return _derivatives.weight_term(x_, w_, spec_)
        if name == "matmul" and role != FORWARD and _per_image_pointwise(spec_, x_.shape, w_.shape):
            # Both derivatives as products per image, transposes written out
            # (`_derivatives._direct_p`). The input gradient is the same product of the
            # cotangent with the weight's transpose: transposed op by op, it was one
            # product over the batch between a layout transpose of the cotangent and one
            # of the result (256->64 @56 batch 8: 17 ms against 3.7). Training with
            # against without it (1x1, batch 8 unless said, Intel Xeon, 11 interleaved
            # runs, a fixed cotangent and through a ReLU, 2026-12-01): 256->64 @56 1.53x
            # and 1.40x, batch 1 1.40x and 2.0x; 64->256 @56 1.75x and 1.17x; 64->64 @56
            # 1.48x and 1.34x; 16->96 @112 1.64x and 1.21x; 96->24 @56 1.20x and 1.30x;
            # 128->128 @28 1.15x and 1.10x; 32->16 @14 1.27x and 1.33x; 128->512 @28
            # 1.03x and 1.07x; 1024->256 @14 1.01x and 1.01x. The weight gradient is one
            # product per image, summed (`matmul.per_image_weight_gradient`), where JAX's
            # transpose laid the whole input out channels-last first. Training with
            # against without it (the same measurement, the input gradient by the rule
            # above): 256->64 @56 2.19x and 2.03x, batch 1 1.18x and 1.15x; 96->24 @56
            # 1.57x and 1.69x; 128->128 @28 1.21x and 1.20x; 64->64 @56 1.13x and 1.25x;
            # 64->256 @56 1.12x and 1.16x; 32->16 @14 1.15x and 1.10x; 128->512 @28,
            # 1024->256 @14 and 16->96 @112 1.03-1.08x.
            if role == INPUT_GRADIENT:
                return _derivatives.input_term_direct(x_, w_, spec_, FORWARDS[name])
            return _derivatives.weight_term_direct(
                x_, w_, spec_, FORWARDS[name], matmul_impl.per_image_weight_gradient
            )
        if (
            name == "matmul"
            and role == WEIGHT_GRADIENT
            and (
                matmul_impl.pointwise_expands(w_.shape, spec_)
                or _pointwise_few_rows(spec_, x_.shape, w_.shape)
            )
        ):
            # The transpose written out, its product's operands chosen
            # (`matmul.pointwise_expands`, `_pointwise_few_rows`).
            return _derivatives.weight_term_direct(
                x_, w_, spec_, FORWARDS[name], matmul_impl.pointwise_weight_gradient
            )
        if name == "shift" and role == FORWARD and differentiated:
            # Under differentiation the value pads first (`shift.forward_unsplit`), as
            # the input gradient does (below): split (`shift._depthwise_split`),
            # training through a ReLU ran 0.44-0.50x on depthwise 3x3 144@56 batch 8
            # channels-last (21 interleaved runs), 0.94x @7; strided 0.89-1.15x.
            return shift_impl.forward_unsplit(x_, w_, spec_)
        if name != "lax" or backend != "cpu" or _xla_3d_pointwise(spec_, w_.shape):
            return _forward_by(name, role, differentiated)(x_, w_, spec_)
        odd = spec.ndim <= 2  # (not the 2-D planes of a 3-D convolution)
        if odd and role == FORWARD and _odd_input_channels(spec_, w_.shape, x_.dtype):
            # The value from odd input channels off XLA's cliff (`_odd_input_channels`).
            return chosen(_zeros_to_multiple(x_, 1), _zeros_to_multiple(w_, 1), spec_)
        if odd and role == INPUT_GRADIENT and _odd_output_channels(spec_, w_.shape, x_.dtype):
            # Likewise the input gradient, a convolution from the output channels
            # (`_odd_output_channels`): zero filters added, their outputs dropped.
            return chosen(x_, _zeros_to_multiple(w_, 0), spec_)[:, : w_.shape[0]]
        if spec_.ndim == 3 and planes.applies(spec_):
            direct = role == FORWARD and _strided_3d_direct(
                spec_, x_.shape, w_.shape, differentiated
            )
            if not direct:
                # 3-D by 2-D planes (the taps folded into the output channels or the
                # input planes stacked where `_output_stacked_planes` or
                # `_stacked_planes` says): video 3x3x3 64@16x28x28 batch 8 fwd 1.9-2.2x
                # lax and train 1.7-2.1x (full bench, four runs); batch 1 32@8x28x28
                # fwd 3x, train 4.6x (unstacked).
                if _output_stacked_planes(spec_, x_.shape, w_.shape, role):
                    by = planes.output_stacked
                elif _stacked_planes(spec_, x_.shape, w_.shape, role):
                    by = planes.stacked
                else:
                    by = planes.decompose
                return by(x_, w_, spec_, chosen)
        if (
            role == WEIGHT_GRADIENT
            and (spec.groups == 1 or group_part)  # (not a 3-D grouped one's planes)
            and _space_to_depth_weight_gradient(spec_, x_.shape, w_.shape)
        ):
            # Strided weight gradients on large inputs, folded space-to-depth.
            return space_to_depth.forward(x_, w_, spec_, chosen)
        if role == WEIGHT_GRADIENT and _by_rows(spec_, x_.shape, w_.shape):
            # The weight gradient of a 2-D convolution as one 1-D weight gradient per
            # kernel row, rows folded into the batch: XLA's 2-D weight gradient is
            # 2.6x its forward (ResNet 3x3 64@56 batch 8: 61 ms against 23), per row
            # 1-D ones 1.0x (19-23 ms). Train: ResNet 3x3 @56 1.85x, @28 stride 2
            # 1.5-1.7x, @14 1.1x, @7 1.0x; dilated 3x3 @33 1.6-2.0x; the notes' 5x5
            # 1.5-1.6x; 7x7 stride-2 stem 1.3x; video 3x3x3 (its 2-D planes) 1.7-2.0x.
            # The value and the input gradient by rows were slower (ResNet 3x3 @56
            # train 0.6-0.8x). To fewer output channels, one 1-D weight gradient with
            # the kernel rows folded into the output channels (`_output_stacked_rows`).
            # Their transposes written out where measured faster, in the layout XLA's
            # convolution writes the weight gradient in (`_rows_written_out`).
            if not _output_stacked_rows(spec_, w_.shape):
                if spec_.channels_last:
                    return _rows_written_out(x_, w_, spec_, "decompose", chosen)
                return planes.decompose(x_, w_, spec_, chosen)
            if spec_.groups == 1:
                return _rows_written_out(x_, w_, spec_, "output_stacked", chosen)
            return planes.output_stacked(x_, w_, spec_, chosen)
        if role == INPUT_GRADIENT:
            # (Not the stacked phases on a mesh: split along its height over `Explicit`
            # axes, 8x8 stride 4 4->8 channels-last @24x40 on 8 devices gave the input
            # gradient 4x too large, `test_folds_under_sharding`, jax 0.10.2.)
            if (whole or group_part) and (
                (
                    split_mesh(x_, w_) is None
                    and _strided_input_gradient_stacked(spec_, x_.shape, w_.shape)
                )
                or _strided_input_gradient_phases(spec_, x_.shape, w_.shape)
            ):
                return _derivatives.input_term(x_, w_, spec_, _transposed_value)
            if (
                _derivatives.has_input_gradient_spec(spec_)
                and math.prod(w_.shape[2:]) >= EIGEN_INPUT_GRADIENT_MIN_TAPS
            ):
                problem = _derivatives.input_gradient_problem(x_.shape, w_.shape, spec_)
                ct_shape, w_t_shape, t_spec = problem
                dtype = jnp.result_type(x_.dtype, w_.dtype)
                if lax_impl.eigen_pays(
                    ct_shape, w_t_shape, dtype, t_spec
                ) or _unpadded_input_gradient_row(x_.shape, w_.shape, problem):
                    # The input gradient written out as a convolution of the cotangent,
                    # off YNNPACK like the value (see `lax.forward_eigen`). Training
                    # (jax.grad through a ReLU, batch 8, 21 shuffled runs) against the
                    # value alone off YNNPACK: ResNet 3x3 64@56 0.88-1.14x, 256@14 1.0x,
                    # 512@7 1.0x, 5x5 64@28 1.0-1.2x, 3x3 256@33 dilation 2 1.0-1.1x;
                    # against neither: 1.0-1.3x. Not for the 2x2, 2x1 and 1x2 phases of
                    # a transposed 3x3 stride 2 (64->32 @56: 0.85-0.94x). Unpadded, it
                    # takes `lax.forward_padded`'s row where `eigen_pays` does not
                    # (`_unpadded_input_gradient_row`).
                    return _derivatives.input_term(x_, w_, spec_, lax_impl.forward_eigen)
            # Transposed, the padded row below sends XLA's input gradient down a
            # slower path still (1x1 256->64 train 0.12x lax).
            return FORWARDS[name](x_, w_, spec_)
        if role == WEIGHT_GRADIENT:
            # Steered off XLA's slow weight gradients: the unpadded one (as the value
            # below) and the over-padded one (see `lax.weight_derivative`).
            return lax_impl.weight_derivative(x_, w_, spec_)
        if (
            role == FORWARD
            and not differentiated
            and spec.ndim == 2  # not the planes of a 3-D convolution
            and spec.groups == 1  # nor one group's of a grouped one (not measured)
            and _strided_rows_stacked(spec_, x_.shape, w_.shape)
        ):
            # Strided dense 2-D values as 1-D convolutions of stacked rows.
            return planes.stacked(x_, w_, spec_, chosen)
        # The value: off YNNPACK where that pays, else off the unpadded slow path. Small
        # maps stay on YNNPACK for a value not differentiated only (not the planes of a
        # 3-D convolution nor one group's of a grouped one, which were not measured; see
        # `lax.EIGEN_SMALL_MAP_POSITIONS`).
        value = role == FORWARD and not differentiated and spec.ndim == 2 and spec.groups == 1
        return lax_impl.forward_eigen(x_, w_, spec_, value=value)

    flat = _temporal_as_2d(spec, w.shape) if backend == "cpu" else None
    if flat is not None:
        # (k, 1, 1): one 2-D convolution over (depth, height x width), see
        # `_temporal_as_2d`.
        n, c, depth, height, width = x.shape
        y = _run(
            x.reshape((n, c, depth, height * width)),
            w.reshape((*w.shape[:3], 1)),
            flat,
            role,
            names,
            differentiated,
            gradient,
        )
        return y.reshape((*y.shape[:3], height, width))
    if backend == "cpu" and (
        _tiles_as_pointwise(spec, x.shape, w.shape, role, differentiated)
        or (
            _kernel_multiple_of_stride(spec, w.shape, role, differentiated)
            and split_mesh(x, w) is None
        )
    ):
        # Kernel equal to (a multiple of) the stride: one 1x1 (unstrided) convolution of
        # the input folded space-to-depth.
        inner = functools.partial(
            _run, role=role, names=names, differentiated=differentiated, gradient=gradient
        )
        return space_to_depth.forward(x, w, spec, inner)
    if (
        backend == "cpu"
        and role == WEIGHT_GRADIENT
        and spec.channels_last
        and subpixel.non_overlapping(spec, w.shape)
        and math.prod(x.shape[2:]) * x.shape[0] >= NON_OVERLAPPING_MIN_POSITIONS
    ):
        # The weight gradient of a channels-last transposed convolution whose kernel is
        # its stride as one product (`subpixel.unpatched_weight_gradient`), not one per
        # phase, each of its own strided copy of the output gradient.
        return _derivatives.weight_term_direct(
            x, w, spec, FORWARDS["subpixel"], subpixel.unpatched_weight_gradient
        )
    if backend == "cpu" and subpixel.applies(spec) and not matmul_impl.single_pixel(x.shape):
        if role == FORWARD and _transposed_value_whole(x.shape, w.shape, spec, differentiated):
            return _xla(x, w, spec)
        if role == INPUT_GRADIENT and (
            _transposed_input_gradient_whole(x.shape, w.shape, spec) or split_mesh(x, w) is not None
        ):
            # On a mesh too: the phases' input gradient of a 1-D transposed layer split
            # along its length (16 -> 16 in 2 groups, kernel 4, stride 2, output
            # padding 1, a loss reading the value) failed XLA's HLO verifier after
            # partitioning (a reshape of the wrong size; a sharding fuzz, 2026-12-04).
            # On 8 simulated CPU devices, training with XLA's input gradient against
            # the phases': 4x4 stride 2 256->128 @16 batch 8 split along the batch
            # 4.2-4.7x `lax` against 4.7-4.8x, along the height 21-22x both.
            return _xla(x, w, spec)
        # Transposed convolutions: DCGAN 4x4 s2 train 16x lax, U-Net 2x2 s2 train 13x.
        # (From one input pixel they go to matmul whole: see `choose`.)
        shifted = role == FORWARD and _shifted_phases(x.shape, w.shape, spec, differentiated)
        return subpixel.decompose(x, w, spec, chosen, shifted, gradient)
    return chosen(x, w, spec)
