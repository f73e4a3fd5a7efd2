"""Planner: time per 73-wallet plan (`plan_distribution`), with `timeit`.

The amount is the one that fills all 73 wallets of the default tier table (85 SOL), so every
position is planned. Each repeat times `number` plans; the figure is seconds per plan.
"""

from __future__ import annotations

import timeit
from typing import Any

from benchmarks.measure import Spread
from premix.distribution import DEFAULT_TABLE, max_distributable_lamports, plan_distribution

WALLETS = 73


def bench_planner(*, repeat: int, number: int) -> dict[str, Any]:
    """Return the JSON section `planner`: microseconds per plan over `repeat` x `number` plans."""
    amount = max_distributable_lamports(WALLETS)
    plan = plan_distribution(amount, WALLETS, DEFAULT_TABLE)
    timer = timeit.Timer(lambda: plan_distribution(amount, WALLETS, DEFAULT_TABLE))
    totals = timer.repeat(repeat=repeat, number=number)
    per_plan_us = [total / number * 1e6 for total in totals]
    return {
        "wallets": WALLETS,
        "amount_lamports": amount,
        "plan_wallets": len(plan),
        "plan_sum_lamports": sum(plan),
        "repeat": repeat,
        "number": number,
        "microseconds_per_plan": Spread.of(per_plan_us).to_dict(),
    }
