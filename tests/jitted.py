"""Values and derivatives of several convolutions in one compiled program, and the
compiler flags the suite runs under.

XLA's CPU compiler costs about 0.05-0.4 s a program, whatever its size, and an eager
`jax.vjp` compiles several (the forward, the backward, each primitive around them).
Tests that compare implementations compute everything they compare in one `jax.jit`
call instead; eager execution itself is covered by `tests/test_functional.py`.
"""

import os
import subprocess
import sys

import jax
import numpy as np

# Compiling is most of the suite's time. LLVM's optimisations off, and the older (LLVM
# IR) fusion emitters in place of the MLIR ones, took the whole suite (`pytest -n 2`)
# from 16m23s to 6m00s on a 2-core AMD EPYC (2026-12-02), all passing both ways. The
# first changes only the machine code; with the second, XLA's CPU fusion pass also
# forms a few fusions fewer (a 3x3 layer's gradient: 8 instead of 10), the other
# operations (convolutions, dots, loops, transposes, copies) being the same. So a test
# that reads a compiled program compiles it with `compile_as_shipped`, and a test of the
# compiler as users run it runs in a child process with `run_shipped_child`.
# `conftest.py` sets the flags before JAX starts its backend.
_LEGACY_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", _LEGACY_EMITTERS)
# The flags of `TEST_XLA_FLAGS` this jaxlib knows, once found, for pytest-xdist's workers.
_KNOWN = "JAXCONV_TEST_XLA_FLAGS"


def _xla_knows(flags) -> bool:
    """Whether XLA starts with `flags`: it ends the process on one it does not know (a
    jaxlib older or newer than the flag), so a child process tries them."""
    env = {**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"}
    code = "import jax; jax.devices()"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    return run.returncode == 0


def known_test_xla_flags() -> list[str]:
    """The flags of `TEST_XLA_FLAGS` this jaxlib knows: tried once a run (about 2 s), in
    the first process that asks, and passed on to the processes it starts."""
    if _KNOWN not in os.environ:
        known = TEST_XLA_FLAGS
        if not _xla_knows(known):
            known = [flag for flag in TEST_XLA_FLAGS if _xla_knows((flag,))]
        os.environ[_KNOWN] = " ".join(known)
    return os.environ[_KNOWN].split()


def _without_test_flags(flags: str) -> list[str]:
    return [f for f in flags.split() if f not in TEST_XLA_FLAGS]


def with_test_xla_flags(flags: str) -> str:
    """`flags` (an ``XLA_FLAGS`` value) with the known `TEST_XLA_FLAGS` in front, once:
    flags given by the caller come later and win."""
    return " ".join((*known_test_xla_flags(), *_without_test_flags(flags)))


def run_shipped_child(code: str) -> None:
    """Run ``code`` in a child process that compiles as a user's program would (this
    environment with `TEST_XLA_FLAGS` taken out of ``XLA_FLAGS``), and assert it printed
    "ok": for tests of XLA aborting or crashing, which fail that way instead of ending
    the run."""
    flags = _without_test_flags(os.environ.get("XLA_FLAGS", ""))
    env = {**os.environ, "XLA_FLAGS": " ".join(flags)}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", (run.returncode, run.stderr[-2000:])


def compile_as_shipped(f, *args):
    """``jax.jit(f)`` for `args`, compiled with XLA's fusion emitters as shipped: for
    tests that read the compiled program (its text, its cost analysis)."""
    legacy = _LEGACY_EMITTERS in known_test_xla_flags()
    return jax.jit(f).lower(*args).compile({"xla_cpu_use_fusion_emitters": True} if legacy else {})


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
