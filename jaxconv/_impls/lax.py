"""``impl="lax"``: XLA's own convolution, `jax.lax.conv_general_dilated`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
from jax import lax

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical convolution by `jax.lax.conv_general_dilated` (NC*, OI*, NC*)."""
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=spec.stride,
        padding=spec.padding,
        lhs_dilation=spec.lhs_dilation,
        rhs_dilation=spec.rhs_dilation,
        feature_group_count=spec.groups,
        precision=spec.precision,
    )
