"""What a run reports: the terminal table and summary, results.json, .md and .png.

A row is a dict (JSON as it stands) for one (case, mode, algorithm): the case's
arguments, ``status`` ("ok", "mismatch", "error" or "interrupted") with ``error``,
``rel_err`` against "lax", ``compile_s``, ``warmup_s``, the timings (``median_s``,
``min_s``, ``max_s``, ``runs``; ``runs`` 0 means one call's time stands in, the warm-up
call's, or with ``--run-seconds`` a second call's; per call, of ``calls_per_run`` calls
a run),
``program`` (`timing.program_fingerprint` of what XLA compiled) and, but on ``lax``'s
own row and torch's, ``lax_program`` (whether that is ``lax``'s program), and, after
`derive`, ``gflops``, ``speedup_lax``, ``speedup_torch`` and ``frac_peak``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

COLUMNS = (
    ("case", "case"),
    ("mode", "mode"),
    ("impl", "impl"),
    ("median ms", "median_s"),
    ("GFLOP/s", "gflops"),
    ("x lax", "speedup_lax"),
    ("x torch", "speedup_torch"),
    ("% peak", "frac_peak"),
    ("compile s", "compile_s"),
    ("note", "note"),
)


def new_row(case, mode: str, impl: str, dtype: str, flops: int) -> dict:
    """A row before measurement. Shapes are channels-first (PyTorch's); ``layout`` is the
    layout jaxconv was called in."""
    return {
        "case": case.id,
        "name": case.name,
        "kind": case.kind,
        "layout": case.layout,
        "mode": mode,
        "impl": impl,
        "dtype": dtype,
        "input_shape": list(case.input_shape),
        "weight_shape": list(case.weight_shape),
        "kwargs": case.kwargs(),
        "flops": flops,
        "status": "ok",
        "error": None,
        "rel_err": None,
        "compile_s": None,
        "median_s": None,
        "min_s": None,
        "max_s": None,
        "runs": None,
        "calls_per_run": None,
        "warmup_s": None,
    }


def derive(rows: list[dict], peak_flops_per_s: float | None) -> None:
    """Fill each row's rates and ratios, in place: GFLOP/s, speed-up over the case's
    "lax" row and "torch" row (their median over this one's), fraction of matmul peak."""
    medians = {(r["case"], r["mode"], r["impl"]): r["median_s"] for r in rows}
    for r in rows:
        t = r["median_s"]
        lax_t = medians.get((r["case"], r["mode"], "lax"))
        torch_t = medians.get((r["case"], r["mode"], "torch"))
        ok = t is not None and t > 0
        r["gflops"] = r["flops"] / t / 1e9 if ok else None
        r["speedup_lax"] = lax_t / t if ok and lax_t else None
        r["speedup_torch"] = torch_t / t if ok and torch_t else None
        r["frac_peak"] = r["flops"] / t / peak_flops_per_s if ok and peak_flops_per_s else None


def geomean_speedups(rows: list[dict]) -> dict[tuple[str, str], tuple[float, int]]:
    """``{(impl, mode): (geometric mean speed-up over lax, number of cases)}``."""
    logs: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r["speedup_lax"]:
            logs[(r["impl"], r["mode"])].append(math.log(r["speedup_lax"]))
    return {k: (math.exp(sum(v) / len(v)), len(v)) for k, v in logs.items()}


def _note(r: dict) -> str:
    if r["status"] == "error":
        return f"ERROR {r['error']}"
    if r["status"] == "interrupted":
        return "interrupted before timing"
    if r["status"] == "mismatch":
        return f"MISMATCH rel err {r['rel_err']:.1e}, not timed"
    if r["runs"] == 0:
        note = "one call only (too slow to repeat)"
    else:
        note = "" if r["runs"] is None else f"{r['runs']} runs"
        if note and (r.get("calls_per_run") or 1) > 1:
            note = f"{note} of {r['calls_per_run']} calls"
    if r.get("lax_program"):
        # XLA compiled it to lax's own program: its ratio to lax is the run's noise.
        note = f"{note}, lax's program" if note else "lax's program"
    return note


def _cell(key: str, r: dict) -> str:
    v = r.get(key) if key != "note" else _note(r)
    if v is None:
        return "-"
    if key in ("median_s",):
        return f"{v * 1e3:.3f}"
    if key in ("gflops",):
        return f"{v:.1f}"
    if key in ("speedup_lax", "speedup_torch"):
        return f"{v:.2f}"
    if key == "frac_peak":
        return f"{100 * v:.1f}"
    if key == "compile_s":
        return f"{v:.2f}"
    return str(v)


def _cells(rows: list[dict]) -> list[list[str]]:
    return [[_cell(key, r) for _, key in COLUMNS] for r in rows]


def table(rows: list[dict]) -> str:
    """The rows as an aligned text table."""
    head = [h for h, _ in COLUMNS]
    body = _cells(rows)
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    numeric = [i for i, (h, _) in enumerate(COLUMNS) if h not in ("case", "mode", "impl", "note")]

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), sep, *(line(c) for c in body)])


def summary(rows: list[dict]) -> list[str]:
    """One line per algorithm: its geometric-mean speed-up over lax in each mode."""
    means = geomean_speedups(rows)
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    lines = []
    for impl in impls:
        parts = []
        for mode in modes:
            if (impl, mode) in means:
                g, n = means[(impl, mode)]
                parts.append(f"{mode} x{g:.2f} over {n} cases")
        counts = defaultdict(int)
        for r in rows:
            if r["impl"] == impl and r["status"] != "ok":
                counts[r["status"]] += 1
        parts += [f"{n} {status}" for status, n in counts.items()]
        lines.append(f"{impl:>8}: geomean speed-up over lax: " + ("; ".join(parts) or "-"))
    return lines


def environment_lines(env: dict) -> list[str]:
    peak = env.get("matmul_peak") or {}
    rate = peak.get("flops_per_s")
    return [
        (
            f"backend {env['backend']} ({env['device_kind']}, {env['device_count']} device(s) "
            f"used of {env['devices_available']}), {env['cpu_count']} CPUs"
            + (f" ({env['cpu']})" if env.get("cpu") else "")
            + f", dtype {env['dtype']}"
        ),
        f"jax {env['jax']}, jaxlib {env['jaxlib']}"
        + (f", torch {env['torch']}" if env.get("torch") else "")
        + f"; {env['date']}",
        f"matmul peak ({peak.get('n')}x{peak.get('n')} jnp.dot, best run of start and end): "
        + (f"{rate / 1e9:.1f} GFLOP/s" if rate else "not measured"),
        f"command: {env['command']}",
        *([f"malloc: {env['malloc_arenas']}"] if env.get("malloc_arenas") else []),
        *(
            [f"timed runs of at least {env['run_seconds'] * 1e3:g} ms, reported per call"]
            if env.get("run_seconds")
            else []
        ),
    ]


def markdown(rows: list[dict], env: dict) -> str:
    """The table, summary and environment as markdown."""
    head = [h for h, _ in COLUMNS]
    lines = [
        "# jaxconv benchmark",
        "",
        *(f"- {x}" for x in environment_lines(env)),
        "",
        "| " + " | ".join(head) + " |",
        "|"
        + "|".join("---" if h in ("case", "mode", "impl", "note") else "---:" for h in head)
        + "|",
        *("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in _cells(rows)),
        "",
        "Speed-up = lax's (or torch's) median time / this row's. Geometric means over cases:",
        "",
        *(f"- `{x.strip()}`" for x in summary(rows)),
        "",
    ]
    if env.get("interrupted"):
        lines.insert(2, "**Interrupted: partial results.**\n")
    return "\n".join(lines)


def plot(path: Path, rows: list[dict], env: dict) -> None:
    """Speed-up over lax per case and algorithm, log axis, one panel per mode."""
    from matplotlib.figure import Figure  # Agg through savefig; no pyplot, no global state
    from matplotlib.ticker import FuncFormatter

    modes = list(dict.fromkeys(r["mode"] for r in rows)) or ["fwd"]
    impls = [i for i in dict.fromkeys(r["impl"] for r in rows) if i != "lax"]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    by_key = {(r["case"], r["mode"], r["impl"]): r for r in rows}
    bar = 0.8 / max(1, len(impls))
    height = max(3.0, 0.9 + len(cases) * max(0.35, 0.16 * len(impls)))
    fig = Figure(figsize=(7.5 * len(modes), height), layout="constrained")
    axes = fig.subplots(1, len(modes), squeeze=False)[0]
    colors = [f"C{i}" for i in range(10)]
    for ax, mode in zip(axes, modes, strict=True):
        if not cases:
            ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
            continue
        for j, impl in enumerate(impls):
            ys, xs, bad = [], [], []
            for i, case in enumerate(cases):
                r = by_key.get((case, mode, impl))
                y = i - 0.4 + bar * (j + 0.5)
                if r is None:
                    continue
                if r["speedup_lax"]:
                    ys.append(y)
                    xs.append(r["speedup_lax"])
                elif r["status"] != "ok":
                    bad.append(y)
            color = colors[j % len(colors)]
            ax.barh(ys, [x - 1 for x in xs], left=1, height=bar, color=color, label=impl)
            if bad:
                ax.plot([1] * len(bad), bad, "x", color=color, markersize=6)
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_yticks(range(len(cases)), cases, fontsize=8)
        ax.set_ylim(len(cases) - 0.5, -0.5)
        ax.set_xlabel("speed-up over lax (XLA conv), median; x = error or mismatch")
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.set_title(
            f"{mode}: {env['backend']} / {env['device_kind']} / {env['dtype']}", fontsize=10
        )
        if impls:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle("jaxconv algorithms vs XLA's convolution (> 1 is faster)")
    fig.savefig(path, dpi=110)


def write(out: Path, rows: list[dict], env: dict) -> dict[str, Path]:
    """results.json, results.md and results.png under ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"results.{k}" for k in ("json", "md", "png")}
    paths["json"].write_text(json.dumps({"environment": env, "rows": rows}, indent=1) + "\n")
    paths["md"].write_text(markdown(rows, env))
    plot(paths["png"], rows, env)
    return paths
