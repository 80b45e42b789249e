"""jaxconv: PyTorch-exact, jit-compiled convolutions for JAX, with several algorithms."""

from jaxconv._impls import IMPLS
from jaxconv.blocks import (
    corr2d,
    corr2d_multi_in,
    corr2d_multi_in_out,
    corr2d_multi_in_out_1x1,
)
from jaxconv.compose import compose_kernels
from jaxconv.cost import ConvCost, conv_cost
from jaxconv.functional import (
    conv,
    conv1d,
    conv2d,
    conv3d,
    conv_transpose,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
)
from jaxconv.init import init_conv
from jaxconv.patches import fold, unfold
from jaxconv.shapes import output_shape, resolve_padding, transpose_output_shape
from jaxconv.sharding import halo_exchange, sharded_conv

__all__ = [
    "IMPLS",
    "ConvCost",
    "compose_kernels",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_cost",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "corr2d",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "corr2d_multi_in_out_1x1",
    "fold",
    "halo_exchange",
    "init_conv",
    "output_shape",
    "resolve_padding",
    "sharded_conv",
    "transpose_output_shape",
    "unfold",
]
