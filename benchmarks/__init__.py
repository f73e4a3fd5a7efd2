"""premix benchmarks: the quality bars of SPEC section 9, measured side by side.

Run from the repository root:

    python -m benchmarks.run                 # full: 400 ms slots, 1/21/73 wallets, 3 repeats
    python -m benchmarks.run --quick         # short slots, small sizes (a minute or less)
    python -m benchmarks.run --json-out results.json

Modules, one per area: `engines` (transfer engines on localnet beside two reference designs),
`queue_bench` (enqueue and pickup latency, throughput with 1/2/4 workers, worker RSS),
`planner` (time per 73-wallet plan), `measure` (spreads, targets, machine), `report` (the
table and the JSON document), `worker_process` (a
stand-alone worker whose peak RSS is measured), `run` (the command line).

Nothing here asserts a time: `tests/test_benchmarks_smoke.py` only checks that a tiny run
produces the expected keys and exact non-timing values.
"""
