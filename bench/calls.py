"""What gets timed: a case's inputs, and one function per (case, algorithm, mode).

Every function returns a tuple: ``(y,)`` for mode "fwd", ``(y, dx, dw)`` for "train"
(forward plus the backward for input and weight: `jax.vjp` with a fixed cotangent, so
the real backward runs and the forward is not dead code). The jaxconv functions take
and return arrays in the case's layout; the torch ones are channels-first (with
PyTorch's channels-last memory format where the case is channels-last).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxconv
from bench.suites import Case

MODES = ("fwd", "train")

# max |out - ref| / max |ref| allowed against "lax", per dtype.
TOLERANCE = {"float64": 1e-10, "float32": 1e-4, "bfloat16": 2e-2, "float16": 1e-2}
# Off the CPU, XLA's default precision computes float32 products in TF32 (GPU) or bf16
# passes (TPU), as PyTorch's cuDNN convolutions take TF32: errors near 1e-3.
ACCELERATOR_FLOAT32_TOLERANCE = 1e-2


def tolerance(dtype: str, backend: str) -> float:
    """The largest relative error `relative_error` accepts for ``dtype`` on ``backend``."""
    if dtype == "float32" and backend != "cpu":
        return ACCELERATOR_FLOAT32_TOLERANCE
    return TOLERANCE[dtype]


def output_shape(case: Case) -> tuple[int, ...]:
    """The channels-first output shape of ``case``."""
    if case.transpose:
        return jaxconv.transpose_output_shape(case.input_shape, case.weight_shape, **case.kwargs())
    return jaxconv.output_shape(case.input_shape, case.weight_shape, **case.kwargs())


def make_data(case: Case, mode: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Channels-first float32 inputs: ``x`` ~ N(0, 1), ``w`` ~ N(0, 1/fan_in) and, for
    "train", the cotangent ``ct`` ~ N(0, 1). Every algorithm (and torch) gets these."""
    rng = np.random.default_rng(seed)
    w_shape = case.weight_shape
    fan_in = (w_shape[0] // case.groups if case.transpose else w_shape[1]) * math.prod(w_shape[2:])
    data = {
        "x": rng.standard_normal(case.input_shape, dtype=np.float32),
        "w": rng.standard_normal(w_shape, dtype=np.float32) / np.float32(math.sqrt(fan_in)),
    }
    if mode == "train":
        data["ct"] = rng.standard_normal(output_shape(case), dtype=np.float32)
    return data


def activation_to_layout(a: np.ndarray, channels_last: bool) -> np.ndarray:
    """``(N, C, *S)`` -> ``(N, *S, C)`` when ``channels_last``."""
    return np.moveaxis(a, 1, -1) if channels_last else a


def weight_to_layout(w: np.ndarray, channels_last: bool) -> np.ndarray:
    """``(A, B, *K)`` -> ``(*K, B, A)`` (jaxconv's channels-last weight) when ``channels_last``."""
    if not channels_last:
        return w
    n = w.ndim - 2
    return np.transpose(w, (*range(2, n + 2), 1, 0))


def to_channels_first(outputs: tuple, channels_last: bool) -> tuple[np.ndarray, ...]:
    """A jaxconv function's outputs (in the case's layout) -> channels-first NumPy."""
    arrays = [np.asarray(a) for a in outputs]
    if not channels_last:
        return tuple(arrays)
    y, *grads = arrays
    out = [np.moveaxis(y, -1, 1)]
    if grads:
        dx, dw = grads
        n = dw.ndim - 2
        out += [np.moveaxis(dx, -1, 1), np.transpose(dw, (n + 1, n, *range(n)))]
    return tuple(out)


def jax_args(
    case: Case, data: dict[str, np.ndarray], dtype: str, batch_sharding, replicated
) -> tuple[jax.Array, ...]:
    """The jaxconv function's arguments in the case's layout and ``dtype``, placed on the
    device(s) (the batch dim sharded by ``batch_sharding``, the weight replicated) and
    ready."""
    cl = case.channels_last
    arrays = [
        (activation_to_layout(data["x"], cl), batch_sharding),
        (weight_to_layout(data["w"], cl), replicated),
    ]
    if "ct" in data:
        arrays.append((activation_to_layout(data["ct"], cl), batch_sharding))
    args = tuple(
        jax.device_put(jnp.asarray(np.ascontiguousarray(a), dtype=dtype), s) for a, s in arrays
    )
    return jax.block_until_ready(args)


def jax_function(case: Case, impl: str, mode: str):
    """``f(x, w)`` (fwd) or ``f(x, w, ct)`` (train) calling jaxconv with ``impl``."""
    op = jaxconv.conv_transpose if case.transpose else jaxconv.conv
    kwargs = dict(case.kwargs(), channels_last=case.channels_last, impl=impl)

    def forward(x, w):
        return op(x, w, None, **kwargs)

    if mode == "fwd":
        return lambda x, w: (forward(x, w),)

    def train(x, w, ct):
        y, vjp = jax.vjp(forward, x, w)
        dx, dw = vjp(ct)
        return y, dx, dw

    return train


def relative_error(outputs, reference) -> float:
    """max over outputs of ``max |out - ref| / max |ref|`` (inf on a shape mismatch)."""
    worst = 0.0
    for out, ref in zip(outputs, reference, strict=True):
        out = np.asarray(out).astype(np.float64)
        ref = np.asarray(ref).astype(np.float64)
        if out.shape != ref.shape:
            return math.inf
        scale = float(np.max(np.abs(ref), initial=0.0)) or 1.0
        err = float(np.max(np.abs(out - ref), initial=0.0)) / scale
        worst = max(worst, err if math.isfinite(err) else math.inf)
    return worst


# ----------------------------------------------------------------------------- torch


def torch_function(
    torch: Any,
    case: Case,
    mode: str,
    data: dict[str, np.ndarray],
    dtype: str,
    sync: bool = True,
):
    """A zero-argument function running ``torch.nn.functional``'s equivalent of ``case``
    (same data, dtype and arguments), returning channels-first NumPy-convertible
    outputs like `jax_function`'s. On the GPU when JAX runs on one and torch has CUDA
    (each run then waits for its result, unless ``sync`` is false: `torch_sync` waits),
    else on torch's CPU; ``torch`` is the imported module."""
    F = torch.nn.functional
    device = torch_device(torch)

    def wait():
        if sync and device == "cuda":
            torch.cuda.synchronize()

    name = ("conv_transpose" if case.transpose else "conv") + f"{case.ndim}d"
    op = getattr(F, name)
    tdtype = getattr(torch, dtype)
    fmt = {2: torch.channels_last, 3: torch.channels_last_3d}.get(case.ndim)

    def tensor(a):
        t = torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=tdtype)
        if case.channels_last and fmt is not None and t.ndim == case.ndim + 2:
            t = t.contiguous(memory_format=fmt)
        return t

    x, w = tensor(data["x"]), tensor(data["w"])
    kwargs = case.kwargs()

    if mode == "fwd":

        def run():
            with torch.no_grad():
                y = op(x, w, None, **kwargs)
            wait()
            return (y,)

        return run

    x.requires_grad_(True)
    w.requires_grad_(True)
    ct = tensor(data["ct"])

    def run_train():
        y = op(x, w, None, **kwargs)
        dx, dw = torch.autograd.grad(y, (x, w), ct)
        wait()
        return y.detach(), dx, dw

    return run_train


def torch_device(torch: Any) -> str:
    """Where `torch_function` runs: "cuda" when JAX's backend is a GPU and torch sees
    one, else "cpu"."""
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_sync(torch: Any) -> None:
    """Wait for what `torch_function`'s runs queued on the GPU (nothing on the CPU)."""
    if torch_device(torch) == "cuda":
        torch.cuda.synchronize()


def torch_to_numpy(outputs) -> tuple[np.ndarray, ...]:
    return tuple(t.detach().cpu().double().numpy() for t in outputs)
