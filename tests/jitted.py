"""Values and derivatives of several convolutions in one compiled program.

XLA's CPU compiler costs about 0.05-0.2 s a program, whatever its size, and an eager
`jax.vjp` compiles several (the forward, the backward, each primitive around them).
Tests that compare implementations compute everything they compare in one `jax.jit`
call instead; eager execution itself is covered by `tests/test_functional.py`.
"""

import jax
import numpy as np


def cotangent(f, *args, seed=0):
    """A standard-normal cotangent of `f(*args)`'s shape and dtype, drawn by NumPy
    (without compiling anything)."""
    out = jax.eval_shape(f, *args)
    rng = np.random.default_rng(seed)
    return rng.standard_normal(out.shape).astype(out.dtype)


def values_and_vjps(fs, args, ct):
    """For each f of `fs`: ``(f(*args), *vjp(ct))``, all from one jitted program."""

    def run(args, ct):
        outs = []
        for f in fs:
            y, vjp = jax.vjp(f, *args)
            outs.append((y, *vjp(ct)))
        return outs

    return jax.jit(run)(tuple(args), ct)


def run_jit(f, *args):
    """``jax.jit(f)(*args)``, compiled with LLVM's optimisations off: the program XLA
    computes is the same (the HLO passes all run), and the backend optimisation level
    halves the compile time, which dominates the tests that use it."""
    compiled = jax.jit(f).lower(*args).compile({"xla_backend_optimization_level": 0})
    return compiled(*args)
