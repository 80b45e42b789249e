"""``impl="autotune"``: measure the algorithms once per call signature, keep the fastest.

PyTorch's ``torch.backends.cudnn.benchmark`` for every backend. The first time a
canonical convolution (spec, shapes, dtype) is traced on a backend, each candidate --
the rules of ``impl="auto"`` and every algorithm in `jaxconv.IMPLS` -- is compiled and
timed on random data of those shapes, separately for the three convolutions a
training step runs: the value, the input gradient and the weight gradient. The winner
of each runs from then on (through `jaxconv._dispatch.forward_with`, so derivatives of
any order and forward mode still work), and is written to a JSON file that later
processes read instead of measuring again:

- ``$JAXCONV_AUTOTUNE_CACHE`` if set, else ``$XDG_CACHE_HOME/jaxconv/autotune.json``
  (``~/.cache/jaxconv/autotune.json``). Entries are keyed by the jax version, backend,
  device kind, spec, shapes and dtype. A file that cannot be read or written is
  ignored: the winners are then kept for this process only.

Measuring happens while the caller's function is traced, so the first call of each
signature costs the compilation and a few runs of every candidate (seconds to minutes
for large convolutions); later traces of the same signature, in this process or
another, cost a dict lookup. Candidates are timed side by side: one run each, then
those within `KEEP_WITHIN` of the fastest run `REPEATS` more times interleaved, and
the lowest median wins. A measurement that fails (an algorithm that cannot compile
there, no memory) leaves that role to the rules.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv import _dispatch
from jaxconv._impls import FORWARDS, IMPLS

if TYPE_CHECKING:
    from jaxconv._spec import ConvSpec

# Candidates slower than this many times the fastest first run are not timed further.
KEEP_WITHIN = 3.0
# Interleaved timed runs of each remaining candidate, after the first.
REPEATS = 5
CANDIDATES = ("auto", *IMPLS)
ROLES = ("value", "input_gradient", "weight_gradient")

_lock = threading.Lock()
_memory: dict[str, tuple[str, str, str]] = {}
_disk_loaded = False


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """The canonical convolution by the measured-fastest algorithm for each role; on a
    mesh of several devices, roles measured fastest by FFT go by `auto`'s rules, which
    run XLA's convolution there (`jaxconv._dispatch.choose_for`). The layer is reduced
    first, as `auto` reduces it (`jaxconv._dispatch.reduced_layer`, and its outputs
    that read only padding written as zeros, `jaxconv._dispatch.with_outputs_cropped`),
    and measured reduced."""

    def run(a: jax.Array, b: jax.Array, spec_: ConvSpec) -> jax.Array:
        names = choose(spec_, a.shape, b.shape, a.dtype)
        return _dispatch.forward_with(
            a, b, spec_, _dispatch.without_fft_on_mesh(names, a, b, "auto")
        )

    x, w, spec = _dispatch.reduced_layer(x, w, spec)
    return _dispatch.with_outputs_cropped(x, w, spec, run)


def cache_path() -> Path:
    """Where the winners are kept across processes."""
    if path := os.environ.get("JAXCONV_AUTOTUNE_CACHE"):
        return Path(path)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxconv" / "autotune.json"


def choose(spec: ConvSpec, x_shape, w_shape, dtype) -> tuple[str, str, str]:
    """The fastest algorithm for the value, the input gradient and the weight gradient
    of this canonical convolution on the default backend: cached, or measured now."""
    key = _key(spec, x_shape, w_shape, dtype)
    with _lock:
        _load_disk()
        if key in _memory:
            return _memory[key]
    try:
        names = measure(spec, tuple(x_shape), tuple(w_shape), jnp.dtype(dtype))
    except Exception:  # noqa: BLE001 - no measurement (e.g. no memory for the arrays)
        names = ("auto",) * len(ROLES)
        with _lock:
            _memory[key] = names  # not written: another process may measure it
        return names
    with _lock:
        _memory[key] = names
        _store_disk(key, names)
    return names


def measure(spec: ConvSpec, x_shape, w_shape, dtype) -> tuple[str, str, str]:
    """Time every candidate for each role on random arrays of these shapes; the winners
    (``"auto"`` for a role that could not be measured)."""
    with jax.ensure_compile_time_eval():
        rng = np.random.default_rng(0)
        x = jnp.asarray(_random(rng, x_shape, dtype))
        w = jnp.asarray(_random(rng, w_shape, dtype))
        y_shape = jax.eval_shape(lambda a, b: FORWARDS["lax"](a, b, spec), x, w).shape
        ct = jnp.asarray(_random(rng, y_shape, dtype))
    return tuple(_fastest(_role_function(role, spec), (x, w, ct)) for role in range(3))


def clear_memory() -> None:
    """Forget the winners held in this process (the file stays); the next trace of a
    signature reads the file again or measures."""
    global _disk_loaded
    with _lock:
        _memory.clear()
        _disk_loaded = False


def _random(rng, shape, dtype) -> np.ndarray:
    a = rng.standard_normal(shape)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def _role_function(role: int, spec: ConvSpec):
    """``f(name) -> (x, w, ct) -> array``: the convolution of ``role`` by ``name``."""

    def run(name):
        def conv(x, w):
            if name == "auto":
                return _dispatch.forward(x, w, spec)
            # As `_dispatch._run` runs ``name`` in this role (`matmul`'s value picks its
            # product's layout as a value computed alone).
            return _dispatch._forward_by(name, role, False)(x, w, spec)

        if role == _dispatch.FORWARD:
            return lambda x, w, ct: conv(x, w)
        if role == _dispatch.INPUT_GRADIENT:
            return lambda x, w, ct: jax.vjp(lambda a: conv(a, w), x)[1](ct)[0]
        return lambda x, w, ct: jax.vjp(lambda b: conv(x, b), w)[1](ct)[0]

    return run


def _fastest(function, args) -> str:
    compiled = {}
    for name in CANDIDATES:
        try:
            compiled[name] = jax.jit(function(name)).lower(*args).compile()
        except Exception:  # noqa: BLE001 - a candidate that cannot compile is not a choice
            continue
    times: dict[str, list[float]] = {}
    for name, run in compiled.items():
        try:
            times[name] = [_time(run, args)]
        except Exception:  # noqa: BLE001 - nor one that cannot run (memory)
            continue
    if not times:
        return "auto"
    best = min(t[0] for t in times.values())
    kept = [name for name, t in times.items() if t[0] <= KEEP_WITHIN * best]
    for _ in range(REPEATS):
        for name in kept:
            times[name].append(_time(compiled[name], args))
    return min(kept, key=lambda name: (statistics.median(times[name]), name != "auto"))


def _time(run, args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(run(*args))
    return time.perf_counter() - start


def _key(spec: ConvSpec, x_shape, w_shape, dtype) -> str:
    device = jax.devices()[0]
    return "|".join(
        str(part)
        for part in (
            jax.__version__,
            device.platform,
            getattr(device, "device_kind", ""),
            spec,
            tuple(x_shape),
            tuple(w_shape),
            jnp.dtype(dtype).name,
        )
    )


def _valid(names) -> bool:
    return (
        isinstance(names, list)
        and len(names) == len(ROLES)
        and all(n == "auto" or n in IMPLS for n in names)
    )


def _read_disk() -> dict:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _load_disk() -> None:
    global _disk_loaded
    if _disk_loaded:
        return
    _disk_loaded = True
    for key, names in _read_disk().items():
        if _valid(names):
            _memory.setdefault(key, tuple(names))


def _store_disk(key: str, names) -> None:
    """Merge one entry into the file, written whole to a temporary file and renamed
    so that a concurrent reader never sees half of it."""
    path = cache_path()
    data = _read_disk()
    data[key] = list(names)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            tmp = f.name
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
