"""The algorithms: one module each, each exposing ``forward(x, w, spec) -> y``.

Every ``forward`` takes canonical arrays (input ``(N, C_in, *S)``, weight
``(C_out, C_in // groups, *K)``, one dtype) and a `jaxconv._spec.ConvSpec`, and returns
``(N, C_out, *S_out)``. They never parse user arguments.
"""

from jaxconv._impls import einsum, fft, lax, matmul, shift, subpixel

FORWARDS = {
    "lax": lax.forward,
    "einsum": einsum.forward,
    "matmul": matmul.forward,
    "fft": fft.forward,
    "shift": shift.forward,
    "subpixel": subpixel.forward,
}

IMPLS: tuple[str, ...] = tuple(FORWARDS)
