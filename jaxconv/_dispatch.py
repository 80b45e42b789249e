"""``impl="auto"``: which algorithm runs, by backend and shape.

Rules are added only with the bench measurements that justify them, written next to
the rule. Where nothing has been measured the answer is ``"lax"``, XLA's convolution.
"""

from __future__ import annotations

from jaxconv._spec import ConvSpec


def choose(spec: ConvSpec, x_shape, w_shape, dtype, backend: str) -> str:
    """The algorithm ``impl="auto"`` runs for this canonical call on ``backend``."""
    del spec, x_shape, w_shape, dtype, backend
    return "lax"
