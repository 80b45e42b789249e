"""One tolerance table, keyed by dtype and scaled by the reduction size."""

import jax.numpy as jnp
import numpy as np

# Per-dtype (atol, rtol) for a reduction of one term; scaled by sqrt(reduction size).
_TOL = {
    np.dtype(np.float64): 1e-12,
    np.dtype(np.complex128): 1e-12,
    np.dtype(np.float32): 2e-6,
    np.dtype(np.complex64): 2e-6,
    np.dtype(jnp.bfloat16): 2e-2,
    np.dtype(np.float16): 2e-3,
}


def tolerance(dtype, reduction: int = 1) -> dict:
    """{atol, rtol} for comparing a result of `dtype` that sums `reduction` products."""
    t = _TOL[np.dtype(dtype)] * max(1.0, float(reduction)) ** 0.5
    return {"atol": t, "rtol": t}


def assert_close(actual, expected, dtype=None, reduction: int = 1):
    """Compare with the dtype's tolerance; inputs drawn from N(0, 1) keep values O(1)."""
    actual = np.asarray(actual)
    dtype = actual.dtype if dtype is None else dtype
    np.testing.assert_allclose(
        actual.astype(np.complex128 if np.iscomplexobj(actual) else np.float64),
        np.asarray(expected),
        **tolerance(dtype, reduction),
    )
