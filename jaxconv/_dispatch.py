"""``impl="auto"``: which algorithm runs, by backend and shape.

Every rule below is justified by a measurement written next to it: `python -m bench`
on this project's 2-core x86 CPU (float32, jaxlib 0.10.2), forward and forward plus
backward ("train"), as the speed-up over ``"lax"`` (XLA's convolution) in the same run.
Where nothing has been measured -- any backend but the CPU -- the answer is ``"lax"``:
XLA's convolution is cuDNN's on a GPU and the MXU's on a TPU, and auto must never be
slower than it there.

Input-dilated specs (transposed convolutions) are first split into stride² phases
(`jaxconv._impls.subpixel`), each phase then chosen by the same rules.
"""

from __future__ import annotations

import functools
import math

import jax
from jax.custom_derivatives import SymbolicZero

from jaxconv._impls import FORWARDS, subpixel
from jaxconv._impls import lax as lax_impl
from jaxconv._spec import ConvSpec

# Depthwise kernels up to this many taps go through shift-and-add; larger ones by FFT.
SHIFT_MAX_TAPS = 64
# What `choose` returns: the algorithm for the forward value, and for the derivatives.
FORWARD, GRADIENT = 0, 1
# Dense convolutions with at most this many output positions go through the matmul.
MATMUL_MAX_POSITIONS = 100


def choose(spec: ConvSpec, x_shape, w_shape, dtype, backend: str) -> tuple[str, str]:
    """The algorithms ``impl="auto"`` runs for this canonical call on ``backend``: one for
    the value (`FORWARD`) and one for its derivatives (`GRADIENT`)."""
    del dtype  # the rules were measured in float32; nothing else is known better
    if backend != "cpu":
        return ("lax",) * 2
    c_in_g = w_shape[1]
    taps = math.prod(w_shape[2:])
    if spec.groups > 1 and c_in_g == 1:
        # Depthwise (any channel multiplier). XLA's grouped convolution does one tiny
        # convolution per channel: depthwise 3x3 144@56 fwd lax 0.6 GFLOP/s, shift 51x
        # lax; 7x7 96@56 shift 37x. Large kernels: shift's compile time grows with the
        # taps (31x31 takes minutes) while FFT's does not, and FFT is 4x lax at 7x7.
        return ("shift",) * 2 if taps <= SHIFT_MAX_TAPS else ("fft",) * 2
    if spec.groups > 1:
        # Grouped (ResNeXt 3x3, 32 groups of 4): matmul with the groups as a batch dim,
        # in batch chunks that keep the patches in cache: batch 1 fwd 3.9x lax, batch 8
        # fwd 2.3x; XLA's grouped backward is slow at every size (batch 8 train 105x).
        return ("matmul",) * 2
    if taps == 1:
        # 1x1: one dot over channels, derivatives included (256->64 @56 batch 8 train
        # 1.5x lax NCHW). Forward channels-last, XLA off its unpadded path is faster
        # (2.0x lax, matmul 0.35x); channels-first both are 2.4x.
        return ("lax" if spec.channels_last else "matmul", "matmul")
    # 1-D: no rule. XLA's convolution is as fast as anything here (temporal k3 256@1000
    # batch 8: matmul fwd 0.86x lax, train 0.58x; raw audio k80 s4 1->128: matmul 1.0x
    # fwd and 0.82x train channels-first, 0.44x fwd channels-last).
    out = spec.out_spatial(x_shape[2:], w_shape[2:])
    if math.prod(out) <= MATMUL_MAX_POSITIONS:
        # Few positions, many channels: ResNet 3x3 512@7 fwd 2.0x lax, train 3.1x.
        return ("matmul",) * 2
    # Large dense maps: XLA's own convolution is the fastest we have (ResNet 3x3 64@56
    # matmul 0.5x fwd, 1.0x train; stem 7x7 from 3 channels 0.7x; the notes' 5x5 layer
    # 1.35x in batch chunks, but XLA steered off its unpadded slow path gives 2.8x).
    return ("lax",) * 2


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical convolution by the algorithm (or phase split) the rules choose.

    A convolution is bilinear, so its derivative is two more convolutions with the same
    spec: ``d conv(x, w) = conv(dx, w) + conv(x, dw)``. The custom JVP computes those
    with the algorithm chosen for gradients; reverse mode transposes that linear map,
    so the input gradient (a transposed convolution) and the weight gradient (a
    correlation of input and output gradient) run through that algorithm's transpose,
    never through XLA's slow convolution transposes unless it is the choice. Forward
    mode (`jax.jvp`, `jax.jacfwd`) keeps working, which a `custom_vjp` would break.
    """
    return _run(x, w, spec, FORWARD)


@functools.partial(forward.defjvp, symbolic_zeros=True)
def _forward_jvp(spec: ConvSpec, primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = _run(x, w, spec, FORWARD)
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(_run(dx, w, spec, GRADIENT))
    if not isinstance(dw, SymbolicZero):
        terms.append(_run(x, dw, spec, GRADIENT))
    if not terms:
        return y, SymbolicZero(jax.typeof(y).to_tangent_aval())
    return y, terms[0] if len(terms) == 1 else terms[0] + terms[1]


def _run(x: jax.Array, w: jax.Array, spec: ConvSpec, role: int) -> jax.Array:
    backend = jax.default_backend()

    def chosen(x_, w_, spec_):
        name = choose(spec_, x_.shape, w_.shape, x_.dtype, backend)[role]
        if name == "lax" and backend == "cpu" and role == FORWARD:
            # Values only: differentiated, the padded row sends XLA's transposed
            # convolutions down a slower path still (1x1 256->64 train 0.12x lax).
            return lax_impl.forward_padded(x_, w_, spec_)
        return FORWARDS[name](x_, w_, spec_)

    if backend == "cpu" and subpixel.applies(spec):
        # Transposed convolutions: DCGAN 4x4 s2 train 16x lax, U-Net 2x2 s2 train 13x.
        return subpixel.decompose(x, w, spec, chosen)
    return chosen(x, w, spec)
