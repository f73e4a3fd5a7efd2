"""Worker processes killed with SIGKILL (or stalled with SIGSTOP) at seeded moments (SPEC
sections 9 and 10): whatever the kills, faults and expiries, new workers finish the job and the
chain shows every planned wallet credited exactly once with exactly its amount, the funding
wallet charged exactly the plan plus the fees of the transactions that landed, and the ledger
and arq's result agreeing with it.

Each seed is one scenario (`tests/crash/scenario.py`), its own test id: a failure names the
seed and the scenario and says how to rerun it alone. `PREMIX_SOAK_SCENARIOS=N` adds N more
seeds (1000, 1001, ...). Once per suite the store itself is killed mid-run (its own SecantusDB).
"""

import asyncio
import os
import re
from pathlib import Path

import pytest

from premix.servers import SecantusServer, ServerError
from tests.crash.harness import SUITE_TALLY, CrashRun, crash_environment
from tests.crash.scenario import FaultSpec, Kill, KillKind, Scenario, scenario_for_seed
from tests.crash.store_crash import StoreCrash, StoreKill
from tests.fixtures import missing_tool

DEFAULT_SEEDS = range(35)  # each first-kill kind 5 times, 3 of them with expiry
SOAK_FIRST_SEED = 1000
SOAK_ENV = "PREMIX_SOAK_SCENARIOS"


def crash_seeds() -> list[object]:
    """The default seeds, then the soak seeds `PREMIX_SOAK_SCENARIOS` asks for."""
    soak = int(os.environ.get(SOAK_ENV) or 0)
    seeds = [pytest.param(seed, id=f"seed-{seed}") for seed in DEFAULT_SEEDS]
    soak_seeds = range(SOAK_FIRST_SEED, SOAK_FIRST_SEED + soak)
    return seeds + [pytest.param(seed, id=f"soak-{seed}") for seed in soak_seeds]


def rerun_command(request: pytest.FixtureRequest) -> str:
    """The command that runs this test alone (a soak seed needs enough soak scenarios)."""
    node_id = request.node.nodeid
    soak = re.search(r"\[soak-(\d+)\]", node_id)
    prefix = f"{SOAK_ENV}={int(soak[1]) - SOAK_FIRST_SEED + 1} " if soak else ""
    return f"{prefix}python -m pytest -q '{node_id}'"


@pytest.mark.parametrize("seed", crash_seeds())
async def test_workers_killed_at_seeded_moments_pay_every_wallet_exactly_once(
    seed: int, redis_url: str, mongodb_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    scenario = scenario_for_seed(seed)
    async with crash_environment(redis_url, mongodb_url, tmp_path, seed) as env:
        run = CrashRun(env, scenario)
        with run.reported(rerun_command(request)):
            await run.execute()
            await run.check_exact()


# Congestion the fee data underestimates (recent fees show two thirds of the 1,000,000
# micro-lamports it takes to land; cheaper transactions never land): `auto`'s first bids expire
# and each re-sign bids twice as much, with workers killed around the sends and the chain
# advanced past every open attempt while one is down.
CONGESTION = FaultSpec(
    "congestion",
    params={
        "min_micro_lamports": 1_000_000,
        "land_probability": 0,
        "reported_micro_lamports": 666_000,
    },
)
AUTO_FEE_SCENARIOS = [
    Scenario(
        seed=9_100,
        mode="standard",
        amount_lamports=1_100_000_003,
        buyer_wallets=3,
        kills=(Kill(KillKind.AFTER_SEND, 2, expire_while_down=True),),
        faults=(CONGESTION,),
        priority_fee="auto",
    ),
    Scenario(
        seed=9_101,
        mode="fast",
        amount_lamports=9_500_000_011,
        buyer_wallets=22,
        kills=(Kill(KillKind.AFTER_SEND, 1, expire_while_down=False),),
        faults=(CONGESTION,),
        priority_fee="auto",
    ),
]


@pytest.mark.parametrize("scenario", AUTO_FEE_SCENARIOS, ids=lambda s: f"{s.mode}-{s.seed}")
async def test_auto_fees_raised_across_killed_workers_pay_every_wallet_exactly_once(
    scenario: Scenario,
    redis_url: str,
    mongodb_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    async with crash_environment(
        redis_url, mongodb_url, tmp_path, scenario.seed, priority_fee="auto"
    ) as env:
        run = CrashRun(env, scenario)
        with run.reported(rerun_command(request)):
            await run.execute()
            await run.check_exact()
            final = await run.ledger.get(run.job_id)
            assert final is not None
            for tx in final.transactions:
                prices = [a.compute_unit_price for a in tx.attempts]
                assert prices == sorted(prices) and prices[-1] >= 1_000_000, prices
                assert len(prices) >= 2  # the first bid never lands


# 2.1 SOL to 5 wallets, one at a time (revisions: 0 opened, 1 planned, then a signing and a
# landing per transaction, 12 completed). The store dies while the second transaction's send is
# in flight (its landing, revision 5, meets a dead store); the worker is killed after its fourth
# send; the store dies again as the next worker's signing of the fifth transaction (revision
# 10) commits, racing the acknowledgement.
STORE_KILL_SCENARIO = Scenario(
    seed=9_000,
    mode="standard",
    amount_lamports=2_100_000_007,
    buyer_wallets=5,
    kills=(Kill(KillKind.AFTER_SEND, 4, expire_while_down=False),),
    faults=(),
)


async def test_store_killed_mid_run_loses_no_acknowledged_write_and_the_run_finishes_exactly(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    try:
        server = SecantusServer(tmp_path / "secantus")  # its own: the session's is shared
    except ServerError as e:
        missing_tool(str(e))
    server.start()
    try:
        scenario = STORE_KILL_SCENARIO
        async with crash_environment(redis_url, server.url, tmp_path, scenario.seed) as env:
            run = CrashRun(env, scenario)
            kills = [StoreKill(4, at_commit=False), StoreKill(10, at_commit=True)]
            crash = StoreCrash(server, run, kills, down_seconds=0.5)
            env.net.intercept(crash)
            run.revision_callbacks.append(crash.on_revision)
            with run.reported(rerun_command(request)):
                restarts = asyncio.create_task(crash.restart())
                await run.execute()
                await restarts
                await run.check_exact()
                final = await run.ledger.get(run.job_id)
                assert final is not None
                crash.check_nothing_lost(final)
        SUITE_TALLY["store_kills"] += len(kills)
    finally:
        server.stop()
