"""``impl="subpixel"``: input-dilated (transposed) convolutions as stride² small ones.

A transposed convolution with stride ``L`` reaches the algorithms as a stride-1
correlation of the input dilated by ``L`` (``L - 1`` zeros between elements). Most of
its products are with those zeros. Split the output by phase instead: output position
``q * L + r`` only ever meets the kernel taps ``t`` with ``(r + t * d - lo) % L == 0``,
and those meet the undilated input at ``q + (r + t * d - lo) / L``. So phase ``r`` is
an ordinary stride-1 correlation of the undilated input with that subset of taps (every
``L / gcd(d, L)``-th one, at dilation ``d / gcd(d, L)``), and the output interleaves the
``L`` phases per dim. Each phase runs through ``inner`` (XLA's convolution here; the
``"auto"`` dispatcher passes its own choice). Specs without input dilation, or with both
input dilation and stride in one dim, go to ``inner`` unchanged.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._impls import lax as lax_impl
from jaxconv._impls._common import accumulation_dtype

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec

Forward = Callable[[jax.Array, jax.Array, "ConvSpec"], jax.Array]


@dataclasses.dataclass(frozen=True)
class _Phase:
    """Phase ``r`` of one dim: taps ``first + j * step``, input offset ``offset``."""

    first: int
    count: int
    step: int
    dilation: int
    offset: int
    size: int  # outputs in this phase


def _phases(n: int, k: int, lo: int, lhs: int, rhs: int, out: int) -> list[_Phase | None]:
    step = lhs // math.gcd(rhs, lhs)
    phases = []
    for r in range(lhs):
        size = max(0, -(-(out - r) // lhs))
        first = next((t for t in range(min(k, step)) if (r + t * rhs - lo) % lhs == 0), None)
        if first is None or size == 0:
            phases.append(None)
            continue
        count = (k - 1 - first) // step + 1
        offset = (r + first * rhs - lo) // lhs
        phases.append(_Phase(first, count, step, rhs * step // lhs, offset, size))
    return phases


def applies(spec: ConvSpec) -> bool:
    """Whether the decomposition helps: some input dilation, never with a stride."""
    return any(ld > 1 for ld in spec.lhs_dilation) and all(
        s == 1 or ld == 1 for s, ld in zip(spec.stride, spec.lhs_dilation, strict=True)
    )


def _per_dim(x_shape, w_shape, spec: ConvSpec):
    """Per spatial dim, its phases (`_phases`), or ``[None]`` without input dilation."""
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    return [
        _phases(n, k, lo, ld, d, m) if ld > 1 else [None]
        for n, k, (lo, _), ld, d, m in zip(
            x_shape[2:],
            w_shape[2:],
            spec.padding,
            spec.lhs_dilation,
            spec.rhs_dilation,
            out,
            strict=True,
        )
    ]


def one_convolution(x_shape, w_shape, spec: ConvSpec) -> str | None:
    """How `decompose` computes every phase in one convolution: ``"merged"`` (one tap
    per phase, `_merged`) or ``"stacked"`` (over a shared window, `_stacked`); None
    where it runs one convolution per phase, or there are no phases."""
    if not applies(spec):
        return None
    per_dim = _per_dim(x_shape, w_shape, spec)
    if _one_tap_phases(per_dim, spec):
        return "merged"
    return "stacked" if _stack_window(per_dim, w_shape, spec) is not None else None


def decompose(
    x: jax.Array,
    w: jax.Array,
    spec: ConvSpec,
    inner: Forward,
    shifted: bool = False,
    gradient: bool = False,
) -> jax.Array:
    """The canonical convolution, phase by phase through ``inner``; with ``shifted``, the
    phases that differ only in where they read the input in one convolution
    (`shifted_window`); ``gradient`` for an input gradient (see `_stacked`)."""
    if not applies(spec):
        return inner(x, w, spec)
    n_batch, c_out = x.shape[0], w.shape[0]
    out = spec.out_spatial(x.shape[2:], w.shape[2:])
    per_dim = _per_dim(x.shape, w.shape, spec)
    one_tap = _one_tap_phases(per_dim, spec)
    window = None if one_tap else _stack_window(per_dim, w.shape, spec)
    if window is not None:
        return _stacked(x, w, spec, per_dim, window, out, inner, gradient)
    lhs = spec.lhs_dilation
    # Per phase (one per combination of residues), its kernel slice, spec and sizes;
    # None where the phase meets no tap.
    problems = []
    for combo in itertools.product(*(range(ld) for ld in lhs)):
        phase = [per_dim[i][r] if lhs[i] > 1 else None for i, r in enumerate(combo)]
        if any(p is None for i, p in enumerate(phase) if lhs[i] > 1):
            problems.append(None)
        else:
            problems.append(_phase_problem(x.shape, w, spec, phase, out))
    if one_tap:
        return _merged(x, problems, spec, inner)
    shared = _shifted_window(per_dim, spec) if shifted and spec.groups == 1 else None
    if shared is not None and (turns := _rotations(per_dim, spec, shared)) is not None:
        return _shifted_interleaved(x, problems, spec, shared, turns, inner, out)
    blocks = tuple(-(-m // ld) for m, ld in zip(out, lhs, strict=True))
    if shared is not None:
        pieces = _shifted_pieces(x, problems, spec, shared, inner, blocks)
    else:
        pieces = [
            jnp.zeros((n_batch, c_out, *blocks), x.dtype)
            if problem is None
            else _padded_to(inner(x, problem[0], problem[1]), problem[2], blocks)
            for problem in problems
        ]
    nd = spec.ndim
    if spec.channels_last:
        # (*L, N, *B, C) -> (N, B1, L1, B2, L2, ..., C) -> (N, B1*L1, ..., C): in the
        # caller's layout, so that XLA cancels the pieces' layout transposes and the
        # result's. Interleaved channels-first, XLA wrote the result transposed in the
        # training step and copied it back. Against that (`impl="auto"`, Intel Xeon,
        # 9-11 interleaved runs; training with a fixed output gradient, then through a
        # ReLU): depthwise 3x3 stride 2 96@112 batch 4 (its input gradient) 1.36x,
        # 1.38x; transposed layers, with `_interleaved` channels-last too: 3x3 stride 2
        # 64->32 @56 batch 8 1.04x, 1.01x; U-Net's 2x2 stride 2 128->64 @128 batch 2
        # 1.59-1.65x, 1.00x, 256->128 @28 batch 8 1.13-1.17x, 0.99x; DCGAN's 4x4
        # stride 2 256->128 @16 batch 8 0.98-1.00x, 1.04x. Values 0.96-1.02x. (Not
        # `_interleaved` on the pieces side by side along the channels: the training
        # step of the transposed 3x3 stride 2 64->32 @56 compiled with 11 more
        # transposes and 11 more copies that way, and with 3 more fusions side by side
        # channels-last; the same results, 2026-12-02.)
        y = jnp.stack([jnp.moveaxis(p, 1, -1) for p in pieces])
        y = y.reshape((*lhs, n_batch, *blocks, c_out))
        y = jnp.transpose(
            y, (nd, *itertools.chain(*((nd + 1 + i, i) for i in range(nd))), 2 * nd + 1)
        )
        y = y.reshape((n_batch, *(b * ld for b, ld in zip(blocks, lhs, strict=True)), c_out))
        y = y[(slice(None), *(slice(0, m) for m in out))]
        return jnp.moveaxis(y, -1, 1)
    # (*L, N, C, *B) -> (N, C, B1, L1, B2, L2, ...) -> (N, C, B1*L1, ...), cropped to `out`.
    y = jnp.stack(pieces).reshape((*lhs, n_batch, c_out, *blocks))
    y = jnp.transpose(y, (nd, nd + 1, *itertools.chain(*((nd + 2 + i, i) for i in range(nd)))))
    y = y.reshape((n_batch, c_out, *(b * ld for b, ld in zip(blocks, lhs, strict=True))))
    return y[(slice(None), slice(None), *(slice(0, m) for m in out))]


def shifted_window(x_shape, w_shape, spec: ConvSpec):
    """Per dim, ``(lo, count, dilation, size)`` where every phase meets as many taps at
    one dilation, so that the phases differ only in where they read the input: one
    convolution over the positions all of them cover computes them all. None for dims
    without input dilation; None if some phase differs, or `decompose` takes one
    convolution (`one_convolution`) anyway."""
    if spec.groups != 1 or one_convolution(x_shape, w_shape, spec) is not None:
        return None
    return _shifted_window(_per_dim(x_shape, w_shape, spec), spec)


def _shifted_window(per_dim, spec: ConvSpec):
    """`shifted_window` from the phases ``per_dim`` (`_per_dim`), once `decompose` knows
    that no one convolution (`one_convolution`) takes them."""

    def window(phases):
        if len({(p.count, p.dilation) for p in phases}) != 1:
            return None
        lo = min(p.offset for p in phases)
        hi = max(p.offset + p.size for p in phases)
        return (lo, phases[0].count, phases[0].dilation, hi - lo)

    return _per_dilated_dim(per_dim, spec, window)


def _per_dilated_dim(per_dim, spec: ConvSpec, window_of):
    """Per dim, ``window_of(phases)`` of the dims with input dilation, None for the
    others; None if a phase meets no tap or ``window_of`` gives None."""
    window = []
    for ld, phases in zip(spec.lhs_dilation, per_dim, strict=True):
        if ld == 1:
            window.append(None)
            continue
        if any(p is None for p in phases) or (entry := window_of(phases)) is None:
            return None
        window.append(entry)
    return window


def _window_spec(x_shape, spec: ConvSpec, window) -> ConvSpec:
    """The stride-1 correlation of the undilated input over the positions every phase
    covers at the phases' dilation: ``window`` per dim ``(lo, taps, dilation, size)``
    (`shifted_window`'s, `_shared_window`'s), None for dims without input dilation."""
    nd = spec.ndim
    pads, dils = [], []
    for i in range(nd):
        if window[i] is None:
            pads.append(spec.padding[i])
            dils.append(spec.rhs_dilation[i])
            continue
        lo, count, dil, size = window[i]
        pads.append((-lo, size + lo + (count - 1) * dil - x_shape[2 + i]))
        dils.append(dil)
    return dataclasses.replace(
        spec, padding=tuple(pads), lhs_dilation=(1,) * nd, rhs_dilation=tuple(dils)
    )


def _rotations(per_dim, spec: ConvSpec, window):
    """Per dim, the ``c`` (``0 <= c < L``) for which phase ``r``'s part of the shared
    window (`shifted_window`'s ``window``) starts ``(r + c) // L`` positions in, 0 for
    dims without input dilation; None if some dim has none. Then output position
    ``q * L + r`` is the shared window's position ``q + (r + c) // L`` of phase ``r``:
    position ``q * L + r + c`` of the window's phases interleaved with phase ``r`` at
    residue ``(r + c) % L``, and `_shifted_interleaved` computes the output as one
    interleave and a crop. Every undilated kernel has one (with low padding ``P``,
    phase ``r`` meets tap ``(P - r) % L`` first, at offset ``ceil((r - P) / L)``);
    dilated ones had none over strides 2-5 and dilations 2-4, and keep
    `_shifted_pieces`."""
    turns = []
    for ld, phases, entry in zip(spec.lhs_dilation, per_dim, window, strict=True):
        if entry is None:
            turns.append(0)
            continue
        lo = entry[0]
        fits = (
            c
            for c in range(ld)
            if all(p.offset - lo == (r + c) // ld for r, p in enumerate(phases))
        )
        if (c := next(fits, None)) is None:
            return None
        turns.append(c)
    return turns


def _shifted_interleaved(x, problems, spec: ConvSpec, window, turns, inner: Forward, out):
    """`decompose`'s output where the phases share a window (`shifted_window`) and every
    dim has a rotation (`_rotations`): one convolution through ``inner`` with the
    phases' kernels (``problems``, `_phase_problem`'s) stacked along the output channels
    in the order of the residues they land on, its channels interleaved into the output
    (`_interleaved`) and cropped ``turns`` positions in, the crop in the caller's
    layout. `_shifted_pieces` instead cuts each phase's part at its own offset, pads it
    and stacks the parts: a copy of the whole product per phase. Against that
    (`impl="auto"`, Sapphire Rapids Xeon, 11 interleaved runs, 2026-12-06,
    `/tmp/s66/rotab.py`; forward and training with a fixed output gradient,
    channels-last / channels-first, batch 4 unless said): the kernel the size of the
    stride, padded, 3x3 stride 3 padding 1 256->64 @28 batch 16 2.27x, 1.03x / 2.21x,
    1.00x (forward 44 ms to 19, XLA's 23), 64->64 @28 1.94x, 1.08x / 1.60x, 1.11x;
    DCGAN's 4x4 stride 2 padding 1 at 0.95-1.04x, 0.95-1.00x over four layers in both
    layouts (256->128 @16 batch 8, the suite's, 21 runs: 1.02x, 1.00x / 1.00x, 1.00x).
    On the 13 of 24 random transposed layers that take it (`rotrand.py 6601 24`, 9
    runs): channels-last forward 0.97-5.0x over 10, geometric mean 1.60x (16->128 3x3
    stride 3 @56 batch 2 21.6 ms to 4.3), training 0.99-1.42x over 8, 1.13x;
    channels-first 0.89-1.01x over 3 (the 0.89x, 8x8 stride 4 256->128 @8 batch 2, 1.06x
    over 21 runs) and 0.99-1.01x. With the crop taken after `_interleaved`'s move back
    to the canonical layout, XLA wrote the interleaved result channels-first and copied
    it back in channels-last training (0.82-0.87x)."""
    lhs = spec.lhs_dilation
    combos = list(itertools.product(*(range(ld) for ld in lhs)))
    # The phase whose part lands on residues `s`: `r = (s - c) % L` per dim.
    order = [
        combos.index(tuple((si - c) % ld for si, c, ld in zip(s, turns, lhs, strict=True)))
        for s in combos
    ]
    kernels = [problems[j][0] for j in order]
    sub = _window_spec(x.shape, spec, window)
    y = inner(x, jnp.concatenate(kernels, axis=0), sub)
    crop = list(zip(turns, out, strict=True))
    return _interleaved(y, lhs, kernels[0].shape[0], y.shape[2:], spec.channels_last, crop)


def _shifted_pieces(x, problems, spec: ConvSpec, window, inner: Forward, blocks):
    """The phases' outputs (as `decompose`'s pieces) from one convolution through
    ``inner``: the phases' kernels (``problems``, `_phase_problem`'s) stacked along the
    output channels, over the positions every phase covers (`shifted_window`), each
    phase's part then cut at its own offset. For the dilated kernels that have no
    rotation (`_rotations`)."""
    sub = _window_spec(x.shape, spec, window)
    kernels = [kernel_slice for kernel_slice, _, _ in problems]
    y = inner(x, jnp.concatenate(kernels, axis=0), sub)
    c_out = kernels[0].shape[0]
    pieces = []
    for j, (_, phase_spec, sizes) in enumerate(problems):
        index = [slice(None), slice(j * c_out, (j + 1) * c_out)]
        for i, size in enumerate(sizes):
            # The phase's own padding below says where it starts reading the input.
            start = 0 if window[i] is None else -phase_spec.padding[i][0] - window[i][0]
            index.append(slice(start, start + size))
        pieces.append(_padded_to(y[tuple(index)], sizes, blocks))
    return pieces


def _padded_to(y: jax.Array, sizes, blocks) -> jax.Array:
    """A phase's output ``y``, of spatial ``sizes``, padded with zeros to ``blocks``."""
    return jnp.pad(y, [(0, 0), (0, 0)] + [(0, b - s) for b, s in zip(blocks, sizes, strict=True)])


def _phase_problem(x_shape, w: jax.Array, spec: ConvSpec, phase, out):
    """``(kernel, spec, sizes)`` of one phase: its taps of ``w``, the stride-1
    correlation of the undilated input it is, and its output's spatial sizes. ``phase``
    holds a `_Phase` per input-dilated dim and None for the others."""
    kernel = w.shape[2:]
    start, limit, strides, pads, dils, sizes = [0, 0], list(w.shape[:2]), [1, 1], [], [], []
    for i, p in enumerate(phase):
        if p is None:  # a dim without input dilation keeps the spec's own
            start.append(0)
            limit.append(kernel[i])
            strides.append(1)
            pads.append(spec.padding[i])
            dils.append(spec.rhs_dilation[i])
            sizes.append(out[i])
            continue
        start.append(p.first)
        limit.append(p.first + (p.count - 1) * p.step + 1)
        strides.append(p.step)
        hi = p.size + p.offset + (p.count - 1) * p.dilation - x_shape[2 + i]
        pads.append((-p.offset, hi))
        dils.append(p.dilation)
        sizes.append(p.size)
    sub = dataclasses.replace(
        spec, padding=tuple(pads), lhs_dilation=(1,) * spec.ndim, rhs_dilation=tuple(dils)
    )
    return lax.slice(w, start, limit, strides), sub, tuple(sizes)


def _one_tap_phases(per_dim, spec: ConvSpec) -> bool:
    """Whether every phase exists, meets one tap per input-dilated dim, and reads the
    input at the same offset for as many outputs as every other phase: a transposed
    convolution whose kernel equals its stride, without padding (U-Net's 2x2 stride-2
    up-convolution, a patch-wise "unpatchify")."""
    if spec.groups != 1:
        return False
    for ld, phases in zip(spec.lhs_dilation, per_dim, strict=True):
        if ld == 1:
            continue
        if any(p is None or p.count != 1 for p in phases):
            return False
        if len({(p.offset, p.size) for p in phases}) != 1:
            return False
    return True


def _merged(x: jax.Array, problems, spec: ConvSpec, inner: Forward) -> jax.Array:
    """`decompose` for `_one_tap_phases`: the phases' kernels stacked along the output
    channels, so that one convolution through ``inner`` computes them all (with a
    stride-sized kernel, one 1x1 convolution with ``L^n`` times the output channels),
    and its channels interleaved into the output. Against one convolution per phase
    (batch 8 unless said, minimum of 15-25 shuffled runs, forward and training through
    a ReLU, channels-first / channels-last): 2x2 stride 2 256->128 @28 1.07-1.18x /
    0.90-1.05x and 1.24-1.29x / 1.20-1.39x; 64->32 @56 1.09x / 1.07x and 1.01x / 1.77x;
    128->64 @64 batch 2 1.07-1.17x / 0.89-1.13x and 1.26-1.33x / 1.34-1.52x; 512->256
    @16 batch 4 1.06x / 1.04x and 1.11x / 1.16x; 1024->512 @8 batch 1 1.03x / 1.01x
    and 1.03x / 1.00x; 4x4 stride 4 96->3 @14 1.06x / 2.38x and 1.86x / 3.56x; 1-D 2 taps
    stride 2 128->64 @500 1.22x / 1.11x and 1.27x / 1.35x; 3-D 2x2x2 64->32 @8 batch 2
    1.50x / 1.39x and 1.54x / 1.88x."""
    kernels = [kernel_slice for kernel_slice, _, _ in problems]
    _, sub, sizes = problems[0]  # every phase's spec and sizes alike (`_one_tap_phases`)
    y = inner(x, jnp.concatenate(kernels, axis=0), sub)  # (N, prod(L) * C_out, *B)
    return _interleaved(y, spec.lhs_dilation, kernels[0].shape[0], sizes, spec.channels_last)


# `_stacked` computes the phases of transposed convolutions to at most this many output
# channels, when the shared window has at most this many times the kernel's taps; to
# at most `STACK_MAX_OUT_CHANNELS_EXACT` when it has exactly the kernel's taps.
STACK_MAX_OUT_CHANNELS, STACK_MAX_WASTE = 16, 1.5
STACK_MAX_OUT_CHANNELS_EXACT = 64


def stacked_window(x_shape, w_shape, spec: ConvSpec):
    """The shared window `decompose` stacks this input-dilated convolution's phases in
    (`_stacked`), as `_shared_window` gives it, or None where it does not stack them."""
    if not applies(spec):
        return None
    per_dim = _per_dim(x_shape, w_shape, spec)
    if _one_tap_phases(per_dim, spec):
        return None
    return _stack_window(per_dim, w_shape, spec)


def _shared_window(per_dim, spec: ConvSpec):
    """Per dim, ``(lo, taps, dilation, size)`` of the input window every phase's taps
    fall in (its first offset, its taps at the phases' dilation, the most outputs of a
    phase), None for dims without input dilation; None if a phase meets no tap or the
    phases' taps do not share one grid."""

    def window(phases):
        dil = phases[0].dilation
        lo = min(p.offset for p in phases)
        if any((p.offset - lo) % dil for p in phases):
            return None
        hi = max(p.offset + (p.count - 1) * dil for p in phases)
        return (lo, (hi - lo) // dil + 1, dil, max(p.size for p in phases))

    return _per_dilated_dim(per_dim, spec, window)


def _stack_window(per_dim, w_shape, spec: ConvSpec):
    """The shared window (`_shared_window`) if `decompose` stacks the phases
    (`_stacked`), else None: dense, few output channels and a shared window of few more
    taps than the kernel; or up to `STACK_MAX_OUT_CHANNELS_EXACT` channels when the
    window has no more taps than the kernel (e.g. a kernel of twice the stride,
    unpadded)."""
    window = _shared_window(per_dim, spec) if spec.groups == 1 else None
    if window is None:
        return None
    taps = math.prod(
        (ld * d[1] if d is not None else k)
        for ld, d, k in zip(spec.lhs_dilation, window, w_shape[2:], strict=True)
    )
    kernel = math.prod(w_shape[2:])
    if taps == kernel:
        return window if w_shape[0] <= STACK_MAX_OUT_CHANNELS_EXACT else None
    stacks = w_shape[0] <= STACK_MAX_OUT_CHANNELS and taps <= STACK_MAX_WASTE * kernel
    return window if stacks else None


def _stacked(
    x, w, spec: ConvSpec, per_dim, window, out, inner: Forward, gradient: bool = False
) -> jax.Array:
    """`decompose` as one convolution through ``inner``: every phase's taps placed in the
    window the phases share (`_shared_window`, zeros elsewhere), the phases' kernels
    stacked along the output channels, the output's channels interleaved as
    `_merged`'s. With few output channels one convolution to ``L^n`` times as many
    runs faster than one per phase, the zero taps included (transposed, stride 2,
    batch 1-8, 11 interleaved runs; forward and training through a ReLU, against one
    convolution per phase, channels-first / channels-last): to 3 channels 5x5 128->3
    @28 2.0x / 2.0x and 2.3x / 2.4x, 24->3 @64 3.7x / 4.1x and 3.7x / 3.6x; to 16, 5x5
    512->16 @28 1.05x / 1.03x and 1.9x / 1.8x, 4x4 384->16 @7 1.5x / 1.4x and 1.4x /
    1.4x, 512->16 @4 1.1x / 0.84x and 1.3x / 1.25x. Not where the shared window is
    much larger than the kernel (4x4 padding 1: 2.25x the taps; 32->16 @64 0.87x /
    0.83x and 0.58x / 0.76x), nor to more channels (5x5: 32 0.92x / 0.88x and 1.05x /
    0.87x; 64 and 128: 0.47-0.83x forward), but for a window of exactly the kernel's
    taps (4x4 stride 2 unpadded, batch 2-8): to 24-64 channels 1.03-4.2x and
    1.08-1.64x (128->32 @16 4.2x / 1.3x forward; 256->64 @16 1.08x / 1.18x and 1.27x /
    1.08x), to 128 1.05-1.1x and 0.97-1.01x, to 256 0.90x / 0.78x and 1.10x / 0.58x."""
    lhs = spec.lhs_dilation
    kernels = []
    for combo in itertools.product(*(range(ld) for ld in lhs)):
        k = w
        for i, r in enumerate(combo):
            if lhs[i] == 1:
                continue
            p = per_dim[i][r]
            lo, taps, dil, _ = window[i]
            k = lax.slice_in_dim(k, p.first, p.first + (p.count - 1) * p.step + 1, p.step, 2 + i)
            before = (p.offset - lo) // dil
            pad = [(0, 0)] * k.ndim
            pad[2 + i] = (before, taps - before - p.count)
            k = jnp.pad(k, pad)
        kernels.append(k)
    sizes = [m if entry is None else entry[3] for m, entry in zip(out, window, strict=True)]
    y = inner(x, jnp.concatenate(kernels, axis=0), _window_spec(x.shape, spec, window))
    if gradient and spec.channels_last and _large(x.shape[0], w.shape[0], out):
        # Cropped in the caller's layout (`_large`).
        return _interleaved(y, lhs, w.shape[0], sizes, True, [(0, m) for m in out])
    y = _interleaved(y, lhs, w.shape[0], sizes, spec.channels_last)
    return y[(slice(None), slice(None), *(slice(0, m) for m in out))]


# A channels-last input gradient by `_stacked` (a strided convolution's, through
# `_dispatch._transposed_value`) of at least this many elements is cropped in the
# caller's layout, before `_interleaved`'s move to the canonical one.
STACKED_GRADIENT_CROP_MIN_ELEMENTS = 2**21


def _large(n: int, c_out: int, out) -> bool:
    """Whether `_stacked`'s input gradient of ``n`` images, ``c_out`` channels and
    spatial sizes ``out`` crops in the caller's layout: at least
    `STACKED_GRADIENT_CROP_MIN_ELEMENTS` elements. Cropped after the move, XLA wrote
    the interleaved result channels-first and copied it to channels-last in a separate
    pass whenever the program computed anything else (the value, the weight gradient):
    64->4 3x3 stride 3 @112 batch 8 channels-last (6.4M elements) trained in 52 ms
    against 24.6 for `lax`, its input gradient alone 2.3 ms and with the value 42
    (`/tmp/s67/fo4.py`; found by a random sweep, `/tmp/s65/rand.py 6711` with ``ND=2``:
    0.42x `lax`). This rule against without, training with a fixed cotangent, 9
    interleaved runs, 2026-12-06 (`/tmp/s67/stcrop4.py`): that layer 2.39x (50.6 ms to
    21.2), 64->64 @112 2.23x, 32->32 3x3 stride 3 @97 and @98 batch 8 (2.4-2.5M
    elements) 1.38x and 1.27x. On 30 random strided layers of smaller gradients
    (`stcrop2.py 6712 30 conv`, 7 runs) the crop before read 0.84-1.48x in training,
    most within 0.95-1.05x, and on 12 transposed layers' values 0.91-1.01x
    (`stcrop3.py 6713 12`): not taken there (see also `_shifted_interleaved`'s note)."""
    return n * c_out * math.prod(out) >= STACKED_GRADIENT_CROP_MIN_ELEMENTS


def _interleaved(y: jax.Array, lhs, c_out: int, sizes, channels_last: bool, crop=None) -> jax.Array:
    """``(N, prod(L) * C_out, *B)``, the phases' outputs stacked along the channels (phase
    major), as ``(N, C_out, B1 * L1, ...)``; for a channels-last caller, interleaved
    channels-last. With ``crop``, per dim ``(start, size)``, only that part."""
    nd = len(lhs)
    part = () if crop is None else tuple(slice(a, a + m) for a, m in crop)
    if channels_last:
        # (N, *B, *L, C) -> (N, B1, L1, B2, L2, ..., C): the inner convolution's result
        # moved back to the caller's layout cancels its own move to the canonical one,
        # and the result's move to the canonical layout cancels the caller's.
        n = y.shape[0]
        y = jnp.moveaxis(y, 1, -1).reshape((n, *sizes, *lhs, c_out))
        y = jnp.transpose(
            y, (0, *itertools.chain(*((1 + i, 1 + nd + i) for i in range(nd))), 1 + 2 * nd)
        )
        y = y.reshape((n, *(b * ld for b, ld in zip(sizes, lhs, strict=True)), c_out))
        return jnp.moveaxis(y[(slice(None), *part)], -1, 1)
    y = y.reshape((y.shape[0], *lhs, c_out, *sizes))
    y = jnp.transpose(y, (0, nd + 1, *itertools.chain(*((nd + 2 + i, 1 + i) for i in range(nd)))))
    y = y.reshape((y.shape[0], c_out, *(b * ld for b, ld in zip(sizes, lhs, strict=True))))
    return y[(slice(None), slice(None), *part)]


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """Phases through XLA's convolution."""
    return decompose(x, w, spec, lax_impl.forward)


def non_overlapping(spec: ConvSpec, w_shape) -> bool:
    """Whether this is a transposed convolution whose kernel equals its stride and that
    crops nothing (U-Net's 2x2 stride 2): every output position but the output padding
    meets exactly one input position and one tap, so its weight gradient is one product
    (`unpatched_weight_gradient`).
    Canonically: input dilation ``k`` in each dim, padding ``k - 1`` low and at least that
    high (output padding), no stride, no kernel dilation, one group."""
    kernel = w_shape[2:]
    return (
        spec.groups == 1
        and all(k > 1 for k in kernel)
        and all(s == 1 for s in spec.stride)
        and all(d == 1 for d in spec.rhs_dilation)
        and tuple(spec.lhs_dilation) == tuple(kernel)
        and all(lo == k - 1 <= hi for (lo, hi), k in zip(spec.padding, kernel, strict=True))
    )


def unpatched_weight_gradient(x: jax.Array, ct: jax.Array, spec: ConvSpec, w_shape) -> jax.Array:
    """The weight gradient of a `non_overlapping` transposed convolution as one product:
    the output gradient ``(N, C_out, *(Q * k + output padding))``, its output padding
    dropped, read as ``(N, C_out, *(Q, k))`` (output position ``k * q + a`` meets input
    ``q`` and tap ``k - 1 - a``), contracted with the input over the batch and the input
    positions.

    The input is the product's ``(positions, C_in)`` operand as a channels-last caller
    holds it, and the output gradient is written once as ``(positions, *k, C_out)``. By
    phases, each phase's weight gradient is a product of its own strided copy of the
    output gradient. For the measurements see `jaxconv._dispatch.NON_OVERLAPPING_MIN_POSITIONS`.
    """
    n, c_in, *q = x.shape
    c_out = ct.shape[1]
    kernel = tuple(w_shape[2:])
    nd = len(kernel)
    dtype = jnp.result_type(x.dtype, ct.dtype)
    acc = accumulation_dtype(dtype)
    ct = ct[(slice(None), slice(None), *(slice(0, m * k) for m, k in zip(q, kernel, strict=True)))]
    ct = ct.reshape((n, c_out, *itertools.chain.from_iterable(zip(q, kernel, strict=True))))
    positions = n * math.prod(q)
    xm = jnp.moveaxis(x, 1, -1).reshape((positions, c_in))
    taps_last = (0, *range(2, 2 + 2 * nd, 2), *range(3, 3 + 2 * nd, 2), 1)
    cm = jnp.transpose(ct, taps_last).reshape((positions, math.prod(kernel) * c_out))
    dims = (((0,), (0,)), ((), ()))
    r = lax.dot_general(xm, cm, dims, spec.precision, preferred_element_type=acc)
    dw = jnp.moveaxis(r.reshape((c_in, *kernel, c_out)), -1, 0)  # (C_out, C_in, *a)
    dw = dw[(slice(None), slice(None), *(slice(None, None, -1),) * nd)]  # tap k - 1 - a
    return dw.astype(dtype).reshape(w_shape)
