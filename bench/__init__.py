"""``python -m bench``: compare every jaxconv algorithm on the backend at hand.

Modules: `bench.suites` (the cases, as data), `bench.calls` (what is timed: inputs and
one function per case, algorithm and mode), `bench.timing` (compile, warm-up,
interleaved blocked runs, medians, matmul peak), `bench.report` (table, JSON, markdown,
plot) and `bench.__main__` (the command line).
"""
