"""Derivative terms of ``impl="auto"`` whose transposes are written out, not derived.

`jaxconv._dispatch.forward` differentiates by a custom JVP: the tangent is
``conv(dx, w) + conv(x, dw)``, and reverse mode transposes each term. Transposing an
algorithm op by op is not always the fast way to its transpose:

- `input_term`: ``conv(dx, w)`` written as the transpose of the input gradient, so that
  transposing it back gives that gradient as a forward convolution of the cotangent
  (transposed spec, flipped and regrouped kernel) by the chosen algorithm.
- `weight_term`: ``conv(x, dw)`` as a primitive whose transpose is
  `jaxconv._impls.shift.weight_gradient`, one pass over input and cotangent for all
  taps, where shift's own transpose makes a pass (and a shifted copy) per tap.

Both stay linear, so forward mode, higher derivatives, `vmap` and sharding keep working:
the primitives lower to ordinary XLA ops, and under `vmap` they fall back to the
algorithm's own (op by op) transposes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jaxconv._impls import shift
from jaxconv._impls._common import flip_kernel, match_varying, varying_aval, varying_struct
from jaxconv._spec import ConvSpec

# ----------------------------------------------------------------------------- input


def input_gradient_spec(spec: ConvSpec, in_spatial, kernel) -> ConvSpec:
    """The spec whose convolution of the output cotangent with the flipped, regrouped
    kernel (`jaxconv._impls._common.flip_kernel`) is the input gradient of ``spec``'s convolution.

    A transposed convolution: the cotangent dilated by the stride, padded so that the
    result has the input's size (the input rows the stride skipped at the end get
    zeros), correlated with the kernel at the same dilation. Input-dilated specs
    (themselves transposed convolutions) have no such form here; callers check
    `has_input_gradient_spec`.
    """
    out = spec.out_spatial(in_spatial, kernel)
    padding = []
    for n, k, (lo, hi), s, d, m in zip(
        in_spatial, kernel, spec.padding, spec.stride, spec.rhs_dilation, out, strict=True
    ):
        span = d * (k - 1)
        unused = n + lo + hi - span - 1 - (m - 1) * s  # trailing rows no output reads
        padding.append((span - lo, span - hi + unused))
    return dataclasses.replace(
        spec,
        stride=(1,) * spec.ndim,
        padding=tuple(padding),
        lhs_dilation=spec.stride,
    )


def has_input_gradient_spec(spec: ConvSpec) -> bool:
    """Whether `input_gradient_spec` applies: no input dilation already."""
    return all(d == 1 for d in spec.lhs_dilation)


def input_gradient_problem(x_shape, w_shape, spec: ConvSpec):
    """The input gradient of ``spec``'s convolution of shapes ``x_shape`` and
    ``w_shape`` as a convolution: the output cotangent's shape, the flipped kernel's
    shape (`jaxconv._impls._common.flip_kernel`) and `input_gradient_spec`."""
    c_out, c_in_g, *kernel = w_shape
    ct_shape = (x_shape[0], c_out, *spec.out_spatial(x_shape[2:], kernel))
    w_t_shape = (c_in_g * spec.groups, c_out // spec.groups, *kernel)
    return ct_shape, w_t_shape, input_gradient_spec(spec, x_shape[2:], kernel)


def input_term(dx: jax.Array, w: jax.Array, spec: ConvSpec, algorithm: Callable) -> jax.Array:
    """``conv(dx, w)`` whose transpose along ``dx`` runs ``algorithm`` on the cotangent:
    the value is the transpose of that input gradient (depthwise 7x7 96@56: the input
    gradient 6.7x faster than shift's transpose, 6.5 ms against 44)."""
    dx, w = match_varying(dx, w)
    ct_shape, _, t_spec = input_gradient_problem(dx.shape, w.shape, spec)
    w_t = flip_kernel(w, spec.groups)
    ct = varying_struct(ct_shape, dx.dtype, dx)
    (y,) = jax.linear_transpose(lambda c: algorithm(c, w_t, t_spec), ct)(dx)
    return y


def input_term_direct(dx: jax.Array, w: jax.Array, spec: ConvSpec, algorithm: Callable):
    """``conv(dx, w)`` by ``algorithm``, whose transpose along ``dx`` is ``algorithm``
    run on the cotangent with the input gradient's spec (`input_gradient_problem`)."""
    dx, w = match_varying(dx, w)
    return _direct_p.bind(
        dx, w, spec=spec, algorithm=algorithm, input_gradient=True, weight_gradient=None
    )


def weight_term_direct(
    x: jax.Array, dw: jax.Array, spec: ConvSpec, algorithm: Callable, weight_gradient: Callable
):
    """``conv(x, dw)`` by ``algorithm``, whose transpose along ``dw`` is
    ``weight_gradient(x, cotangent, spec, w_shape)``."""
    x, dw = match_varying(x, dw)
    return _direct_p.bind(
        x, dw, spec=spec, algorithm=algorithm, input_gradient=False, weight_gradient=weight_gradient
    )


def _direct_value(x, w, *, spec, algorithm, input_gradient, weight_gradient):
    del input_gradient, weight_gradient
    return algorithm(x, w, spec)


# One primitive for both: its value is ``algorithm``'s, its transposes the ones asked for.
_direct_p = Primitive("jaxconv_direct_term")
_direct_p.def_impl(_direct_value)
_direct_p.def_abstract_eval(lambda x, w, *, spec, **_: _out_aval(x, w, spec))
mlir.register_lowering(_direct_p, mlir.lower_fun(_direct_value, multiple_results=False))


# ----------------------------------------------------------------------------- weight


def weight_term(x: jax.Array, dw: jax.Array, spec: ConvSpec) -> jax.Array:
    """``conv(x, dw)`` by shift-and-add, whose transpose along ``dw`` is
    `jaxconv._impls.shift.weight_gradient`."""
    x, dw = match_varying(x, dw)
    return _conv_p.bind(x, dw, spec=spec)


_conv_plain = shift.forward  # the primitive's value, op by op


def _wgrad_plain(x, ct, spec, w_shape):
    """The weight gradient op by op (transposable), for the rules below."""
    x, ct = match_varying(x, ct)
    w = varying_struct(w_shape, ct.dtype, x)
    (dw,) = jax.linear_transpose(lambda w_: shift.forward(x, w_, spec), w)(ct)
    return dw


def _out_aval(x_aval, w_aval, spec):
    out = spec.out_spatial(x_aval.shape[2:], w_aval.shape[2:])
    return varying_aval((x_aval.shape[0], w_aval.shape[0], *out), x_aval.dtype, x_aval, w_aval)


_conv_p = Primitive("jaxconv_shift_conv")
_wgrad_p = Primitive("jaxconv_shift_weight_gradient")

_conv_p.def_impl(_conv_plain)
_conv_p.def_abstract_eval(lambda x, w, *, spec: _out_aval(x, w, spec))
mlir.register_lowering(_conv_p, mlir.lower_fun(_conv_plain, multiple_results=False))


def _wgrad_fused(x, ct, *, spec, w_shape):
    return shift.weight_gradient(x, ct, spec, w_shape[2:])


_wgrad_p.def_impl(_wgrad_fused)
_wgrad_p.def_abstract_eval(
    lambda x, ct, *, spec, w_shape: varying_aval(w_shape, jnp.result_type(x.dtype, ct.dtype), x, ct)
)
mlir.register_lowering(_wgrad_p, mlir.lower_fun(_wgrad_fused, multiple_results=False))


def _is_zero(t) -> bool:
    return type(t) is ad.Zero


def _bilinear_jvp(p, primals, tangents, **params):
    a, b = primals
    ta, tb = tangents
    y = p.bind(a, b, **params)
    terms = []
    if not _is_zero(ta):
        terms.append(p.bind(*match_varying(ta, b), **params))
    if not _is_zero(tb):
        terms.append(p.bind(*match_varying(a, tb), **params))
    if not terms:
        return y, ad.Zero.from_primal_value(y)
    return y, functools.reduce(jnp.add, terms)


ad.primitive_jvps[_conv_p] = functools.partial(_bilinear_jvp, _conv_p)
ad.primitive_jvps[_wgrad_p] = functools.partial(_bilinear_jvp, _wgrad_p)


def _conv_transpose(ct, x, w, *, spec):
    if _is_zero(ct):
        return [None, None]
    if ad.is_undefined_primal(w):
        return [None, _wgrad_p.bind(*match_varying(x, ct), spec=spec, w_shape=w.aval.shape)]
    shape = varying_struct(x.aval.shape, x.aval.dtype, x.aval)
    (dx,) = jax.linear_transpose(lambda x_: _conv_plain(x_, w, spec), shape)(ct)
    return [dx, None]


def _wgrad_transpose(ct, x, c, *, spec, w_shape):
    if _is_zero(ct):
        return [None, None]
    if ad.is_undefined_primal(c):
        return [None, _conv_p.bind(*match_varying(x, ct), spec=spec)]
    shape = varying_struct(x.aval.shape, x.aval.dtype, x.aval)
    (dx,) = jax.linear_transpose(lambda x_: _wgrad_plain(x_, c, spec, w_shape), shape)(ct)
    return [dx, None]


def _direct_transpose(ct, x, w, *, spec, algorithm, input_gradient, weight_gradient):
    if _is_zero(ct):
        return [None, None]
    x_undefined, w_undefined = ad.is_undefined_primal(x), ad.is_undefined_primal(w)
    if input_gradient and x_undefined and not w_undefined:
        _, _, t_spec = input_gradient_problem(x.aval.shape, w.shape, spec)
        return [algorithm(ct, flip_kernel(w, spec.groups), t_spec), None]
    if weight_gradient is not None and w_undefined and not x_undefined:
        return [None, weight_gradient(x, ct, spec, w.aval.shape)]
    # Otherwise (higher derivatives) the algorithm's own transpose, op by op. The term
    # is bilinear, so exactly one of the two is the unknown.
    if x_undefined:
        shape = varying_struct(x.aval.shape, x.aval.dtype, x.aval)
        (dx,) = jax.linear_transpose(lambda x_: algorithm(x_, w, spec), shape)(ct)
        return [dx, None]
    shape = varying_struct(w.aval.shape, w.aval.dtype, w.aval)
    (dw,) = jax.linear_transpose(lambda w_: algorithm(x, w_, spec), shape)(ct)
    return [None, dw]


ad.primitive_jvps[_direct_p] = functools.partial(_bilinear_jvp, _direct_p)
ad.primitive_transposes[_direct_p] = _direct_transpose
ad.primitive_transposes[_conv_p] = _conv_transpose
ad.primitive_transposes[_wgrad_p] = _wgrad_transpose


def _vmapped(fn):
    def rule(args, dims, **params):
        f = functools.partial(fn, **params)
        return jax.vmap(f, in_axes=tuple(dims))(*args), 0

    return rule


batching.primitive_batchers[_conv_p] = _vmapped(_conv_plain)
batching.primitive_batchers[_wgrad_p] = _vmapped(_wgrad_plain)
batching.primitive_batchers[_direct_p] = _vmapped(_direct_value)
