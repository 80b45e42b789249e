"""Strict JAX for every test, the compiler flags, and the jit/no-jit fixture."""

import os

from jitted import with_test_xla_flags

# Read when JAX starts its backend, at the first computation: see `jitted.TEST_XLA_FLAGS`.
os.environ["XLA_FLAGS"] = with_test_xla_flags(os.environ.get("XLA_FLAGS", ""))

import jax  # noqa: E402
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
# 8 simulated CPU devices for tests/test_sharding.py; must precede any JAX computation.
jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture(params=[False, True], ids=["eager", "jit"])
def maybe_jit(request):
    """Runs a check once eagerly and once under an outer `jax.jit`."""
    return jax.jit if request.param else (lambda f: f)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def retrace():
    """JAX's traces dropped before and after the test, for tests that patch a constant
    the rules read while tracing: `jaxconv.functional` traces under `jax.jit`, keyed by
    shapes and the plan, not by those constants, so a trace made under one setting
    would serve calls under another, in this test or a later one."""
    jax.clear_caches()
    yield
    jax.clear_caches()
