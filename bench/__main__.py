"""``python -m bench``: time every jaxconv algorithm on the backend at hand.

For each case of the suite and each mode, every algorithm (and "lax", the baseline, always)
is compiled (timed apart), run once and checked against "lax", then timed interleaved
with the others. Prints a table and a summary; writes results.json, results.md and
results.png under ``--out``. Ctrl-C stops early and still writes what was measured.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxconv
from bench import calls, report, suites, timing

DTYPES = ("float32", "bfloat16", "float16", "float64")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
# Matmul side for the peak: big enough to reach the machine's rate, small enough to be quick.
PEAK_SIZE = {"cpu": 2048}
DEFAULT_PEAK_SIZE = 8192


def _comma_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Time every jaxconv algorithm on the backend at hand, against XLA's "
        "convolution ('lax') and optionally PyTorch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--suite",
        choices=suites.SUITES,
        default="quick",
        help="which cases: quick (a representative subset, a few minutes on a 2-core CPU), "
        "full (every case, bigger batches), notes (the notes' 100->100 5x5 m=64 layer), "
        "tiny (seconds; what the test runs). Batches grow x8 on GPU/TPU.",
    )
    p.add_argument(
        "--impl",
        type=_comma_list,
        default=None,
        help="comma-separated algorithms to time; default every name in jaxconv.IMPLS "
        f"(now {','.join(jaxconv.IMPLS)}) plus 'auto'; 'autotune' on request (its compile "
        "time includes measuring the candidates, once per case and cache file). 'lax' is "
        "always run: it is the reference the others are checked against and the baseline "
        "of the speed-ups.",
    )
    p.add_argument(
        "--mode",
        type=_comma_list,
        default=["fwd"],
        help="comma-separated: fwd (forward only) and/or train (forward plus backward for "
        "input and weight, via jax.vjp with a fixed cotangent)",
    )
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="input and weight dtype")
    p.add_argument(
        "--layout",
        choices=("nchw", "nhwc", "both"),
        default=None,
        help="run every case channels-first (nchw), channels-last (nhwc) or both; default: "
        "each case's own layout (some cases appear in both)",
    )
    p.add_argument(
        "--compare",
        choices=("torch",),
        default=None,
        help="also time torch.nn.functional's equivalent on the same data (on the GPU where "
        "JAX runs on one and torch has CUDA, else on the CPU with all cores) and "
        "report the speed-up over it; skipped with a message if torch is not installed",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=7,
        help="timed runs of each algorithm per case and mode (rounds of interleaved runs)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=4.0,
        help="time budget of a case's timed runs: each algorithm stops being timed once its "
        "runs add up to its equal share (after at least one run), and one whose warm-up "
        "call alone exceeds its share is reported from that call (0 runs); 0 for no limit",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds of untimed runs of an algorithm before each of its timed runs, so that "
        "the one before it (PyTorch's spinning OpenMP threads) has let go of the cores; "
        f"0 for none (default {timing.SETTLE_S} on CPU, 0 on GPU/TPU, where runs are "
        "batches of calls, see --run-seconds)",
    )
    p.add_argument(
        "--run-seconds",
        type=float,
        default=None,
        help="least length of one timed run: on an accelerator a run is as many calls as "
        "take that long, waited for once and reported per call (default "
        f"{timing.ACCELERATOR_RUN_S} on GPU/TPU, where a call returns before its program "
        "has run; 0, one call a run, on CPU)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="directory for results.json, results.md and results.png",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=1,
        help="data-parallel over N devices: the batch (N times the case's) is sharded over a "
        "1-D mesh, the weight replicated. On CPU, try it with "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N",
    )
    p.add_argument(
        "--cases",
        type=_comma_list,
        default=[],
        help="comma-separated substrings: keep the cases whose id (name/layout) contains one",
    )
    p.add_argument(
        "--peak-size",
        type=int,
        default=None,
        help=f"side of the square matmul that measures the peak (default {PEAK_SIZE['cpu']} "
        f"on CPU, {DEFAULT_PEAK_SIZE} elsewhere)",
    )
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _load_torch():
    try:
        import torch
    except ImportError:
        print("--compare torch: torch is not installed; continuing without it", file=sys.stderr)
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def _error_text(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def run_case(
    case,
    mode,
    impls,
    dtype,
    shardings,
    torch,
    repeat,
    max_seconds,
    rows_out: list[dict],
    settle_s: float = timing.SETTLE_S,
    min_run_s: float = 0.0,
) -> None:
    """The rows of one (case, mode): every algorithm checked, then timed interleaved.

    With ``min_run_s``, each timed run of an algorithm is a `timing.batched` run of as
    many calls as make it last that long (`timing.calls_per_run`), and its rows report
    the time per call and ``calls_per_run``.

    Rows go to ``rows_out`` as they are made, so an interrupt keeps the compile times and
    checks of a case whose timing it cut short."""
    flops = suites.flops(case, mode, jaxconv)
    data = calls.make_data(case, mode)
    args = calls.jax_args(case, data, dtype, *shardings)
    tol = calls.tolerance(dtype, jax.default_backend())
    # A run slower than its share of the case's budget is not repeated: its warm-up call
    # (checked, blocked) stands as its one timing, marked as such.
    share = max_seconds / (len(impls) + (torch is not None)) if max_seconds else math.inf
    rows, runners, reference = {}, {}, None

    def accept(impl, run, out, warmup_s, step, finish):
        """Check a warmed-up algorithm's result and queue it for timing (or not): ``run``
        is one blocked call, ``step`` one call not waited for and ``finish`` the wait."""
        nonlocal reference
        row = rows[impl]
        row["warmup_s"] = warmup_s
        if impl == "lax":
            reference = out
        elif reference is not None:
            row["rel_err"] = calls.relative_error(out, reference)
            if not row["rel_err"] <= tol:
                row["status"] = "mismatch"
                return
        if warmup_s > share and min_run_s > 0:
            # On an accelerator a first call also builds what later calls reuse: cuFFT's
            # plans (jaxconv's FFT: 0.07-0.5 s on an H200), cuDNN's choice of algorithm
            # (PyTorch's first training call of the notes' layer took 3.4 s, of
            # depthwise 3x3 144@56 channels-last 0.5 s, against 0.3 ms for XLA's
            # program). Judge the algorithm by a second call.
            start = time.perf_counter()
            run()
            warmup_s = time.perf_counter() - start
        if warmup_s > share:
            row.update(timing.summarize([warmup_s]), runs=0)
            return
        per_run = timing.calls_per_run(step, finish, min_run_s) if min_run_s > 0 else 1
        row["calls_per_run"] = per_run
        runners[impl] = run if per_run == 1 else timing.batched(step, finish, per_run)

    for impl in impls:
        row = rows[impl] = report.new_row(case, mode, impl, dtype, flops)
        rows_out.append(row)
        try:
            compiled, row["compile_s"] = timing.compile_function(
                calls.jax_function(case, impl, mode), args
            )
            row["program"] = timing.program_fingerprint(compiled)
            if impl != "lax" and "lax" in rows:
                row["lax_program"] = row["program"] == rows["lax"].get("program")
            start = time.perf_counter()
            out = jax.block_until_ready(compiled(*args))  # the warm-up call
            warmup_s = time.perf_counter() - start
        except Exception as e:  # an algorithm that fails is a row, not a crash
            row.update(status="error", error=_error_text(e))
            continue
        out = calls.to_channels_first(out, case.channels_last)
        step = functools.partial(compiled, *args)
        accept(impl, timing.blocked(compiled, args), out, warmup_s, step, jax.block_until_ready)
    if torch is not None:
        row = rows["torch"] = report.new_row(case, mode, "torch", dtype, flops)
        rows_out.append(row)
        try:
            run = calls.torch_function(torch, case, mode, data, dtype)
            start = time.perf_counter()
            out = calls.torch_to_numpy(run())  # the warm-up call
            warmup_s = time.perf_counter() - start
        except Exception as e:
            row.update(status="error", error=_error_text(e))
        else:
            step = (
                calls.torch_function(torch, case, mode, data, dtype, sync=False)
                if min_run_s > 0
                else None
            )
            accept("torch", run, out, warmup_s, step, lambda _: calls.torch_sync(torch))
    times = timing.interleave(runners, repeat, max_seconds or None, settle_s=settle_s)
    for impl, seconds in times.items():
        per_call = rows[impl]["calls_per_run"]
        rows[impl].update(timing.summarize([s / per_call for s in seconds]))


# The instruction-set extensions a result depends on most: XLA's CPU kernels and
# PyTorch's oneDNN ones differ by the widest vectors the CPU has, and the bench's
# ratios with them (the same rules ran 0.73x PyTorch forward on an AVX-512 Intel Xeon
# and 1.05x on an AVX2 AMD EPYC, 2026-12-02).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")


def cpu_description(cpuinfo: str | None = None) -> str:
    """The host CPU as Linux's ``/proc/cpuinfo`` names it, with the `CPU_FLAGS` it has:
    ``"AMD EPYC (avx2, fma)"``; `platform.processor` (or ``"unknown"``) where that file
    cannot be read. ``cpuinfo`` is that file's text, for tests."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or "unknown"
    flags = set(fields.get("flags", "").split())
    have = [f for f in CPU_FLAGS if f in flags]
    return f"{model} ({', '.join(have)})" if have else model


def environment(args, argv, devices, torch) -> dict:
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "devices_available": len(jax.devices()),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu": cpu_description(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": importlib.metadata.version("jaxlib"),
        "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "torch_device": None if torch is None else calls.torch_device(torch),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench", *argv]),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "suite": args.suite,
        "modes": args.mode,
        "dtype": args.dtype,
        "repeat": args.repeat,
        "max_seconds": args.max_seconds,
        "settle_s": args.settle,
        "run_seconds": args.run_seconds,
        "matmul_peak": None,
        "interrupted": False,
    }


def main(argv: list[str] | None = None) -> int:
    malloc = timing.cap_malloc_arenas()  # before XLA starts its threads
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    default = ("auto", *jaxconv.IMPLS)
    # autotune only on request: its compile time includes measuring every candidate.
    valid = (*default, "autotune")
    impls = args.impl if args.impl is not None else list(default)
    if bad := [i for i in impls if i not in valid]:
        parser.error(f"--impl: unknown {bad}; choose from {', '.join(valid)}")
    impls = ["lax", *(i for i in dict.fromkeys(impls) if i != "lax")]
    if bad := [m for m in args.mode if m not in calls.MODES]:
        parser.error(f"--mode: unknown {bad}; choose from {', '.join(calls.MODES)}")
    if args.repeat < 1:
        parser.error(f"--repeat must be positive, got {args.repeat}")
    if args.settle is not None and not args.settle >= 0:
        parser.error(f"--settle must be 0 or more seconds, got {args.settle}")
    if args.run_seconds is not None and not args.run_seconds >= 0:
        parser.error(f"--run-seconds must be 0 or more seconds, got {args.run_seconds}")
    available = jax.devices()
    if not 1 <= args.devices <= len(available):
        parser.error(
            f"--devices {args.devices}: this {jax.default_backend()} backend has "
            f"{len(available)} device(s); on CPU, start with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={args.devices}"
        )
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)

    backend = jax.default_backend()
    if args.run_seconds is None:
        args.run_seconds = 0.0 if backend == "cpu" else timing.ACCELERATOR_RUN_S
    if args.settle is None:
        args.settle = timing.SETTLE_S if backend == "cpu" else 0.0
    cases = suites.select(
        suites.suite(args.suite, backend), layout=args.layout, patterns=tuple(args.cases)
    )
    if args.devices > 1:
        cases = tuple(c.with_batch(c.batch * args.devices) for c in cases)
    if not cases:
        parser.error(f"--cases {args.cases}: no case of suite {args.suite!r} matches")
    if args.list:
        print("\n".join(c.id for c in cases))
        return 0

    devices = available[: args.devices]
    mesh = Mesh(np.array(devices), ("batch",))
    shardings = (NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec()))
    torch = _load_torch() if args.compare == "torch" else None
    env = environment(args, argv, devices, torch)
    env["malloc_arenas"] = malloc
    peak_n = args.peak_size or PEAK_SIZE.get(backend, DEFAULT_PEAK_SIZE)
    peak_n = math.ceil(peak_n / args.devices) * args.devices

    from tqdm import tqdm

    rows: list[dict] = []
    bar = tqdm(
        total=len(cases) * len(args.mode),
        file=sys.stderr,
        disable=args.no_progress,
        unit="case",
        dynamic_ncols=True,
    )
    try:
        bar.set_description("matmul peak")
        env["matmul_peak"] = timing.matmul_peak(args.dtype, peak_n, *shardings)
        for case in cases:
            for mode in args.mode:
                bar.set_description(f"{case.id} {mode}")
                run_case(
                    case,
                    mode,
                    impls,
                    args.dtype,
                    shardings,
                    torch,
                    args.repeat,
                    args.max_seconds,
                    rows,
                    args.settle,
                    args.run_seconds,
                )
                bar.update()
        # Load from elsewhere can slow the first measurement: keep the better of two.
        bar.set_description("matmul peak")
        again = timing.matmul_peak(args.dtype, peak_n, *shardings)
        if again["flops_per_s"] > env["matmul_peak"]["flops_per_s"]:
            env["matmul_peak"] = again
    except KeyboardInterrupt:
        env["interrupted"] = True
        for row in rows:
            if row["status"] == "ok" and row["runs"] is None:
                row.update(status="interrupted", error="interrupted before it was timed")
        print("\ninterrupted: writing what was measured so far", file=sys.stderr)
    finally:
        bar.close()

    peak = env["matmul_peak"]
    report.derive(rows, peak and peak["flops_per_s"])
    print(report.table(rows))
    print()
    print("\n".join(report.summary(rows)))
    print("\n".join(report.environment_lines(env)))
    paths = report.write(args.out, rows, env)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 130 if env["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
