"""Measurement: compile apart, warm up, then interleaved, blocked, timed runs.

Each function is compiled once (``jax.jit(f).lower(*args).compile()``, timed apart),
called once to warm up (that call's result is the one checked against "lax"), and then
the compiled object is timed: algorithms run round-robin within a case, one run each
per round, every run ending in ``block_until_ready()``, so that load drifting over time
hits every algorithm alike. Before each timed run the algorithm runs untimed for a few
milliseconds (`SETTLE_S`), so that what ran before it has let go of the cores: after a
call PyTorch's OpenMP threads spin on them for several milliseconds, and XLA's next
call, timed straight after, ran at half its speed (see `interleave`). A run is reported
by its median, min and max.
"""

from __future__ import annotations

import hashlib
import re
import statistics
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

# Untimed runs before each timed one add up to at least this many seconds (see
# `interleave`).
SETTLE_S = 0.02


# glibc's mallopt parameter for the number of malloc arenas.
_M_ARENA_MAX = -8


def cap_malloc_arenas() -> str | None:
    """Make every thread of this process allocate from glibc's main malloc arena, as
    ``MALLOC_ARENA_MAX=1`` does; what was done, for the results' environment.

    XLA's CPU runtime allocates each call's outputs and temporaries, apparently from its
    worker threads; a thread on an arena of its own gives a large freed block back to
    the system, and the next call faults its pages in again (measured: the page faults
    per call, and that one arena ends them). On this project's 2-core Xeon
    (glibc 2.36, jaxlib 0.10.2) a process either ran ``x * 1.5 + 1`` on a 14 MB array in
    0.7 ms with 18 page faults per call, or in 3.2 ms with 3529 (every page of the
    output), decided at random per process (16 of 19 slow); PyTorch's times were the
    same in both kinds of process. With one arena, 6 processes of 6 ran it
    in 0.69-0.71 ms. It must happen before XLA starts its threads (capped after JAX's
    first array, 2 of 4 processes were still slow), so `bench.__main__` calls it first.
    Where ``MALLOC_ARENA_MAX`` is set it is left as set; elsewhere than glibc it does
    nothing.
    """
    import ctypes
    import os

    if (set_value := os.environ.get("MALLOC_ARENA_MAX")) is not None:
        return f"MALLOC_ARENA_MAX={set_value} (as set)"
    try:
        libc = ctypes.CDLL("libc.so.6")
        return "mallopt(M_ARENA_MAX, 1)" if libc.mallopt(_M_ARENA_MAX, 1) == 1 else None
    except (OSError, AttributeError):  # not glibc
        return None


def compile_function(fn: Callable, args: tuple) -> tuple[Callable, float]:
    """``(compiled, seconds)``: ``fn`` traced, lowered and compiled for ``args``."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def program_fingerprint(compiled) -> str:
    """A hash of what ``compiled`` (a ``jax.stages.Compiled``) runs: its optimized HLO
    with source metadata, stack-frame tables and instruction names left out (names are
    numbered in order of first use), so that two functions that XLA compiled to the same
    program hash alike, wherever in Python they were written. `run_case` marks the rows
    whose program is ``lax``'s: their ratio to ``lax`` is the run's noise (the full
    suite's raw-audio training row, ``auto``'s program identical to ``lax``'s, read 0.85x
    in one run, with both rows' runs spread over 28.6-43.5 ms)."""
    text = compiled.as_text()
    lines = [
        line
        for line in text.splitlines()
        if line.startswith(("%", "ENTRY", " ", "}", "ROOT"))  # computations only
    ]
    body = re.sub(r",? ?metadata=\{[^}]*\}", "", "\n".join(lines))
    names: dict[str, str] = {}
    body = re.sub(r"%[\w.\-]+", lambda m: names.setdefault(m.group(0), f"%v{len(names)}"), body)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# On an accelerator each timed run is a batch of calls that lasts at least this many
# seconds, waited for once at its end and reported per call (as
# `torch.utils.benchmark.Timer.blocked_autorange` does): a blocked call there costs a
# launch and a wait of tens of microseconds besides its program, and a layer of the
# suite runs in 0.1-1 ms. The H200 run of 2026-11-30 timed one call per run: rows of one
# and the same program (`auto` there is `lax`) read 0.54x-2.7x each other over 7 runs
# (ResNet 3x3 256@14 forward: 0.73 ms against 0.27 ms, runs spread over 0.18-0.90 ms);
# with batches of 0.7-47 ms, median 4-6 ms (2026-12-04, the count then taken from one
# blocked call's time), 0.87-1.10x. On the CPU a run stays one call, as it was measured.
ACCELERATOR_RUN_S = 0.01


def calls_per_run(
    step: Callable[[], object],
    finish: Callable[[object], object],
    min_run_s: float,
    max_calls: int = 1024,
    clock: Callable[[], float] = time.perf_counter,
) -> int:
    """How many back-to-back calls make a `batched` run of at least ``min_run_s``: the
    first of 1, 2, 4, ... calls (``max_calls`` at most) whose run lasted that long, as
    `timeit.Timer.autorange` finds it (one call timed alone can read several times its
    run's share: a slow call, or on a GPU the launch and the wait).

    Examples:
      >>> now = [0.0]
      >>> def step():
      ...     now[0] += 0.003
      >>> calls_per_run(step, lambda out: None, 0.01, clock=lambda: now[0])
      4
      >>> calls_per_run(step, lambda out: None, 0.0, clock=lambda: now[0])
      1
    """
    calls = 1
    while calls < max_calls:
        start = clock()
        batched(step, finish, calls)()
        if clock() - start >= min_run_s:
            break
        calls *= 2
    return min(calls, max_calls)


def batched(
    step: Callable[[], object], finish: Callable[[object], object], calls: int
) -> Callable[[], None]:
    """A zero-argument run of ``calls`` back-to-back ``step()`` calls, then ``finish`` on
    the last one's result (`blocked`'s wait, or ``torch.cuda.synchronize``), which returns
    once every call has run: on one device and stream they run in order.

    Examples:
      >>> seen = []
      >>> run = batched(lambda: seen.append("step") or len(seen), seen.append, calls=3)
      >>> run(); seen
      ['step', 'step', 'step', 3]
    """

    def run() -> None:
        out = None
        for _ in range(calls):
            out = step()
        finish(out)

    return run


def blocked(fn: Callable, args: tuple) -> Callable[[], None]:
    """A zero-argument run of ``fn(*args)`` that returns once the result is ready."""

    def run() -> None:
        jax.block_until_ready(fn(*args))

    return run


def interleave(
    runners: Mapping[str, Callable[[], object]],
    repeat: int,
    max_seconds: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
    settle_s: float = 0.0,
) -> dict[str, list[float]]:
    """Seconds of each run of each runner, taken round-robin.

    Round ``r`` runs every runner once, starting from the ``r``-th (mod their number)
    so no runner always follows the same one; ``repeat`` rounds. With ``max_seconds``,
    each runner has an equal share of it: once its runs add up to its share it sits out
    the remaining rounds (it always runs once), so one slow algorithm cannot eat the
    case's time and the whole stays under about ``max_seconds`` plus one run of each.

    With ``settle_s``, each timed run follows untimed runs of the same runner that add up
    to at least ``settle_s`` (one at least), which do not count to its share: the machine
    as that runner alone leaves it, not as the one before it did. On this project's
    2-core CPU, PyTorch's OpenMP threads spin for several milliseconds after each call
    (libgomp's default wait policy), and XLA's call straight after shared the cores with
    them: a 1x1 512->2048 @7 channels-last layer (batch 8, 21 interleaved runs) ran in
    4.9 ms after PyTorch's call, 4.1 ms after one untimed run of its own, 2.7 ms after
    two, and 2.1 ms alone, and a 3x3 64@56 layer in 7.9, 7.0, 5.5 and 5.4 ms. A pause
    instead of the untimed runs does not do: after 20 ms asleep the same XLA call took
    3.3 ms, with nothing else in the process. (``OMP_WAIT_POLICY=PASSIVE`` would end the
    spinning but slows PyTorch itself, up to 1.7x on a depthwise layer's training.)

    Examples:
      >>> order = []
      >>> times = interleave({k: (lambda k=k: order.append(k)) for k in "abc"}, repeat=3)
      >>> "".join(order)
      'abcbcacab'
      >>> [len(t) for t in times.values()]
      [3, 3, 3]
    """
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    share = max_seconds / len(names) if max_seconds and names else None
    for r in range(repeat):
        k = r % len(names) if names else 0
        active = [n for n in names[k:] + names[:k] if share is None or sum(times[n]) < share]
        if not active:
            break
        for name in active:
            settled = 0.0
            while settled < settle_s:
                t0 = clock()
                runners[name]()
                settled += clock() - t0
            t0 = clock()
            runners[name]()
            times[name].append(clock() - t0)
    return times


def summarize(seconds: list[float]) -> dict[str, float | int | None]:
    """``{"median_s", "min_s", "max_s", "runs"}`` of a list of run times (None if empty).

    Examples:
      >>> summarize([0.3, 0.1, 0.2, 0.9])
      {'median_s': 0.25, 'min_s': 0.1, 'max_s': 0.9, 'runs': 4}
    """
    if not seconds:
        return {"median_s": None, "min_s": None, "max_s": None, "runs": 0}
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "runs": len(seconds),
    }


def matmul_peak(
    dtype: str, n: int, batch_sharding, replicated, repeat: int = 5
) -> dict[str, float | int]:
    """The machine's matmul rate in ``dtype``: an ``n x n`` by ``n x n`` ``jnp.dot``, its
    rows sharded like the convs' batch, compiled and warmed up as they are; a peak, so
    from the fastest of ``repeat`` runs.

    Returns ``{"n", "flops_per_s", "min_s"}``.
    """
    rng = np.random.default_rng(1)
    a = jax.device_put(jnp.asarray(rng.standard_normal((n, n), np.float32), dtype), batch_sharding)
    b = jax.device_put(jnp.asarray(rng.standard_normal((n, n), np.float32), dtype), replicated)
    compiled, _ = compile_function(jnp.dot, (a, b))
    run = blocked(compiled, (a, b))
    run()
    fastest = summarize(interleave({"dot": run}, repeat)["dot"])["min_s"]
    return {"n": n, "flops_per_s": 2 * n**3 / fastest, "min_s": fastest}
