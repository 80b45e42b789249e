"""The notes' integer arithmetic: output sizes and padding rules, one spatial dim at a time.

Pure Python over ints; no validation (that lives in `_spec.py`) and no JAX.
"""

PADDING_STRINGS = ("valid", "same", "same_lower", "tf_same", "causal", "full")


def kernel_extent(k: int, d: int) -> int:
    """The span of a kernel of size ``k`` dilated by ``d``: ``d * (k - 1) + 1``."""
    return d * (k - 1) + 1


def conv_out_size(n: int, k: int, lo: int, hi: int, s: int = 1, d: int = 1) -> int:
    """The notes' ``floor((n - k + p + s) / s)`` with total padding ``p = lo + hi``.

    With dilation the kernel counts with its extent ``d * (k - 1) + 1``. The result may
    be zero or negative; callers decide what that means.
    """
    return (n - kernel_extent(k, d) + lo + hi + s) // s


def transpose_out_size(n: int, k: int, p: int, op: int, s: int = 1, d: int = 1) -> int:
    """PyTorch's transposed size: ``(n - 1) * s - 2 * p + d * (k - 1) + op + 1``."""
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


def string_padding(mode: str, k: int, s: int = 1, d: int = 1, n: int | None = None):
    """The ``(lo, hi)`` padding that a padding string means for one spatial dim.

    ``mode`` is lower-case and one of `PADDING_STRINGS` (callers validate it; any other
    string is taken as ``"tf_same"``); ``n`` is needed only by ``"tf_same"``, the one
    rule that depends on the input size.
    """
    total = d * (k - 1)
    if mode == "valid":
        return (0, 0)
    if mode == "same":
        return (total // 2, total - total // 2)
    if mode == "same_lower":
        return (total - total // 2, total // 2)
    if mode == "causal":
        return (total, 0)
    if mode == "full":
        return (total, total)
    # "tf_same": as many outputs as ceil(n / s), the padding split as "same" splits it.
    out = -(-n // s)
    total = max((out - 1) * s + kernel_extent(k, d) - n, 0)
    return (total // 2, total - total // 2)


def transpose_as_forward_padding(k: int, p: int, op: int, d: int = 1) -> tuple[int, int]:
    """The padding of the input-dilated forward convolution equal to a transposed one.

    A transposed convolution is a stride-1 convolution of the stride-dilated input with
    the flipped kernel, padded by ``d * (k - 1) - p`` below and that plus
    ``output_padding`` above. Either side may be negative: a crop.
    """
    edge = d * (k - 1) - p
    return (edge, edge + op)
