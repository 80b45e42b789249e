"""The bench: one tiny run end to end through the command line, and its measuring logic."""

import importlib.util
import json
import math
import time

import jax
import jax.numpy as jnp
import pytest

from bench import report, timing
from bench.__main__ import cpu_description, main

ENV_FIELDS = (
    "backend",
    "device_kind",
    "cpu_count",
    "cpu",
    "jax",
    "jaxlib",
    "date",
    "command",
    "dtype",
    "matmul_peak",
)


def test_tiny_suite_end_to_end(tmp_path, capsys):
    has_torch = importlib.util.find_spec("torch") is not None
    argv = ["--suite", "tiny", "--mode", "fwd,train", "--repeat", "2", "--out", str(tmp_path)]
    # One algorithm besides lax keeps the compiles few; the algorithms have their own tests.
    argv += ["--impl", "matmul", "--peak-size", "64", "--compare", "torch"]
    # No time budget, so every row is repeated: PyTorch's first backward call took 2.1 s
    # beside the rest of the suite on 2 cores (2026-12-02), over its share of the default
    # 4 s, and would stand as its one timing (0 runs).
    argv += ["--max-seconds", "0", "--run-seconds", "0"]
    assert main(argv) == 0

    results = json.loads((tmp_path / "results.json").read_text())
    env, rows = results["environment"], results["rows"]
    for field in ENV_FIELDS:
        assert env[field] is not None, field
    assert env["command"].startswith("python -m bench --suite tiny")
    assert env["malloc_arenas"] == timing.cap_malloc_arenas()
    assert env["matmul_peak"]["flops_per_s"] > 0
    assert (env["torch"] is not None) == has_torch

    impls = {"lax", "matmul"} | ({"torch"} if has_torch else set())
    cases = {r["case"] for r in rows}
    assert len(cases) == 2
    for case in cases:
        for mode in ("fwd", "train"):
            got = {r["impl"]: r for r in rows if r["case"] == case and r["mode"] == mode}
            assert set(got) == impls
            lax = got["lax"]
            assert lax["status"] == "ok" and lax["runs"] == 2 and lax["speedup_lax"] == 1.0
            assert lax["min_s"] <= lax["median_s"] <= lax["max_s"]
            assert lax["compile_s"] > 0 and lax["flops"] > 0
            assert len(lax["program"]) == 16 and "lax_program" not in lax
            assert lax["calls_per_run"] == 1  # the CPU's default: one call a run
            assert isinstance(got["matmul"]["lax_program"], bool)
            for r in got.values():
                assert r["status"] in ("ok", "mismatch", "error")
                if r["status"] == "ok" and r["impl"] != "lax":
                    assert r["rel_err"] < 1e-4 and r["runs"] >= 1
    for suffix in ("md", "png"):
        assert (tmp_path / f"results.{suffix}").stat().st_size > 0
    assert "geomean speed-up over lax" in capsys.readouterr().out


class _SlowCalls:
    """A compiled function whose calls take ``seconds`` more (the first ``first`` more
    again), for the bench's logic; ``as_text`` and the rest are the function's."""

    def __init__(self, compiled, seconds, first=0.0):
        self.compiled, self.seconds, self.first = compiled, seconds, first

    def __call__(self, *args):
        time.sleep(self.seconds + self.first)
        self.first = 0.0
        return self.compiled(*args)

    def __getattr__(self, name):
        return getattr(self.compiled, name)


def _slowed(monkeypatch, seconds, first=0.0):
    compile_function = timing.compile_function

    def slow(fn, args):
        compiled, compile_s = compile_function(fn, args)
        return _SlowCalls(compiled, seconds, first), compile_s

    monkeypatch.setattr(timing, "compile_function", slow)


def test_runs_of_many_calls_report_the_time_per_call(tmp_path, capsys, monkeypatch):
    """``--run-seconds`` (an accelerator's default): each timed run is as many calls
    as last that long, and the row's times are per call."""
    _slowed(monkeypatch, 0.001)  # every call 1 ms or more
    argv = ["--suite", "tiny", "--impl", "auto", "--mode", "fwd", "--repeat", "2"]
    argv += ["--peak-size", "64", "--max-seconds", "0", "--run-seconds", "0.01"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["environment"]["run_seconds"] == 0.01
    assert results["environment"]["settle_s"] == timing.SETTLE_S  # the CPU's default
    rows = results["rows"]
    assert len(rows) == 4
    out = capsys.readouterr().out
    for r in rows:
        assert r["status"] == "ok" and r["runs"] == 2
        # 16 calls of 1 ms make a run of 10 ms (fewer on a loaded machine, where a call
        # sleeps longer), a power of two; each call is reported alone.
        n = r["calls_per_run"]
        assert n in (2, 4, 8, 16) and f"2 runs of {n} calls" in out
        assert 0.001 <= r["min_s"] <= r["median_s"] < 0.005
    assert "timed runs of at least 10 ms, reported per call" in out


@pytest.mark.parametrize("run_seconds", ["0", "0.001"])
def test_slow_first_calls_are_judged_by_a_second_with_run_seconds(
    tmp_path, monkeypatch, run_seconds
):
    """With ``--run-seconds``, a warm-up call over its share is called again (a GPU's
    first call also builds cuFFT plans and picks cuDNN's algorithm), and timed if that
    one is within it; without, the warm-up call stands (0 runs)."""
    _slowed(monkeypatch, 0.0, first=0.2)  # each algorithm's first call takes 0.2 s more
    argv = ["--suite", "tiny", "--impl", "auto", "--mode", "fwd", "--peak-size", "64"]
    argv += ["--max-seconds", "0.2", "--run-seconds", run_seconds, "--settle", "0"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert len(rows) == 4 and all(r["warmup_s"] >= 0.2 for r in rows)
    if run_seconds == "0":
        assert all(r["runs"] == 0 and r["median_s"] >= 0.2 for r in rows)
    else:
        assert all(r["runs"] >= 1 and r["median_s"] < 0.1 for r in rows)


def test_negative_run_seconds_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--suite", "tiny", "--run-seconds", "-1", "--out", str(tmp_path)])
    assert "--run-seconds" in capsys.readouterr().err


def test_program_fingerprint_ignores_source_and_names_but_not_the_computation():
    x = jnp.ones((4, 8))

    def compiled(f):
        return jax.jit(f).lower(x).compile()

    def written_out(a):
        b = jnp.sin(a)
        return b * 2

    same = timing.program_fingerprint(compiled(lambda a: jnp.sin(a) * 2))
    assert timing.program_fingerprint(compiled(written_out)) == same
    assert timing.program_fingerprint(compiled(lambda a: jnp.cos(a) * 2)) != same
    assert timing.program_fingerprint(compiled(lambda a: jnp.sin(a) * 3)) != same


def test_rows_on_laxs_program_say_so():
    row = {"status": "ok", "runs": 7, "lax_program": True}
    assert report._note(row) == "7 runs, lax's program"
    assert report._note({**row, "lax_program": False}) == "7 runs"
    only = "one call only (too slow to repeat)"
    assert report._note({**row, "runs": 0}) == f"{only}, lax's program"
    assert report._note({**row, "calls_per_run": 8}) == "7 runs of 8 calls, lax's program"
    assert report._note({**row, "calls_per_run": 1, "lax_program": False}) == "7 runs"


def test_cap_malloc_arenas(monkeypatch):
    """On glibc the bench caps malloc at one arena (`timing.cap_malloc_arenas`) unless
    ``MALLOC_ARENA_MAX`` says otherwise, and records which."""
    import ctypes

    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert timing.cap_malloc_arenas() == "MALLOC_ARENA_MAX=2 (as set)"
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    try:
        glibc = hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
    except OSError:
        glibc = False
    assert timing.cap_malloc_arenas() == ("mallopt(M_ARENA_MAX, 1)" if glibc else None)


def test_cpu_description_names_the_model_and_its_vector_extensions():
    """The bench records which CPU it ran on: the model and the `CPU_FLAGS` it has, from
    the first processor's entry; the model alone without them."""
    info = (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
        "flags\t\t: fpu sse2 avx2 fma bmi2\n\nprocessor\t: 1\nmodel name\t: other\n"
    )
    assert cpu_description(info) == "AMD EPYC (avx2, fma)"
    xeon = "model name\t: Intel Xeon\nflags\t: avx2 avx512f fma avx512_bf16 amx_tile\n"
    assert cpu_description(xeon) == "Intel Xeon (avx2, fma, avx512f, avx512_bf16, amx_tile)"
    assert cpu_description("model name : Some CPU\n") == "Some CPU"
    assert cpu_description("").strip()


def test_autotune_on_request(tmp_path, monkeypatch):
    from jaxconv import _autotune

    monkeypatch.setenv("JAXCONV_AUTOTUNE_CACHE", str(tmp_path / "autotune.json"))
    monkeypatch.setattr(_autotune, "CANDIDATES", ("auto", "lax", "matmul"))
    _autotune.clear_memory()
    argv = ["--suite", "tiny", "--mode", "fwd", "--repeat", "1", "--out", str(tmp_path)]
    assert main([*argv, "--impl", "autotune", "--peak-size", "64"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    tuned = [r for r in rows if r["impl"] == "autotune"]
    assert len(tuned) == 2 and all(r["status"] == "ok" for r in tuned)
    assert len(json.loads((tmp_path / "autotune.json").read_text())) == 2
    _autotune.clear_memory()


def test_too_many_devices_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--suite", "tiny", "--devices", "4096", "--out", str(tmp_path)])
    assert "--devices 4096" in capsys.readouterr().err


def _fake_runners(seconds: dict[str, float]):
    """Runners that take ``seconds[name]`` on a fake clock and log their order:
    ``(runners, order, clock)``."""
    now, order = [0.0], []

    def runner(name):
        def run():
            order.append(name)
            now[0] += seconds[name]

        return run

    return {name: runner(name) for name in seconds}, order, lambda: now[0]


def test_interleave_is_round_robin_within_each_runners_share():
    runners, order, clock = _fake_runners({"fast": 1.0, "slow": 10.0, "mid": 2.0})
    times = timing.interleave(runners, repeat=4, max_seconds=30.0, clock=clock)
    # Each round starts one further along; "slow" spends its share (30 / 3) in one run.
    assert order == ["fast", "slow", "mid", "mid", "fast", "mid", "fast", "fast", "mid"]
    assert times == {"fast": [1.0] * 4, "slow": [10.0], "mid": [2.0] * 4}
    unlimited = timing.interleave(runners, repeat=2, clock=clock)
    assert [len(t) for t in unlimited.values()] == [2, 2, 2]


def test_interleave_settles_each_runner_untimed_before_timing_it():
    runners, order, clock = _fake_runners({"short": 0.004, "long": 0.05})
    times = timing.interleave(runners, repeat=2, clock=clock, settle_s=0.01)
    # "short" runs three times untimed (0.012 s >= 0.01) before each timed run, "long"
    # once; the untimed runs are not in the times.
    assert order == ["short"] * 4 + ["long"] * 2 + ["long"] * 2 + ["short"] * 4
    assert times == {"short": [pytest.approx(0.004)] * 2, "long": [pytest.approx(0.05)] * 2}


def test_negative_settle_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--suite", "tiny", "--settle", "-1", "--out", str(tmp_path)])
    assert "--settle" in capsys.readouterr().err


def test_summary_statistics_and_ratios():
    assert timing.summarize([5.0, 1.0, 3.0]) == {
        "median_s": 3.0,
        "min_s": 1.0,
        "max_s": 5.0,
        "runs": 3,
    }
    assert timing.summarize([4.0, 1.0, 2.0, 3.0])["median_s"] == 2.5
    assert timing.summarize([])["median_s"] is None

    def row(case, impl, median):
        return {"case": case, "mode": "fwd", "impl": impl, "median_s": median, "flops": 8e9}

    rows = [row("a", "lax", 2.0), row("a", "x", 1.0), row("b", "lax", 1.0), row("b", "x", 4.0)]
    report.derive(rows, peak_flops_per_s=16e9)
    assert [r["speedup_lax"] for r in rows] == [1.0, 2.0, 1.0, 0.25]
    assert [r["frac_peak"] for r in rows] == [0.25, 0.5, 0.5, 0.125]
    g, n = report.geomean_speedups(rows)[("x", "fwd")]
    assert n == 2 and math.isclose(g, math.sqrt(2.0 * 0.25))


def test_float32_tolerance_is_tf32s_off_the_cpu():
    from bench import calls

    assert calls.tolerance("float32", "cpu") == calls.TOLERANCE["float32"]
    assert calls.tolerance("float32", "gpu") == calls.ACCELERATOR_FLOAT32_TOLERANCE
    assert calls.tolerance("bfloat16", "gpu") == calls.TOLERANCE["bfloat16"]
