"""Worker processes killed with SIGKILL at seeded moments (SPEC sections 9 and 10): whatever
the kills, faults and expiries, new workers finish the job and the chain shows every planned
wallet credited exactly once with exactly its amount, the funding wallet charged exactly the
plan plus the fees of the transactions that landed, and the ledger and arq's result agreeing.

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
from tests.crash.scenario import Kill, KillKind, Scenario, scenario_for_seed
from tests.crash.store_crash import StoreCrash
from tests.fixtures import missing_tool

DEFAULT_SEEDS = range(30)
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


# 2.1 SOL to 5 wallets, one at a time: revision 4 is the second transaction's signing, so the
# store dies while that send is in flight and the worker's next write (its landing) meets a
# dead store; later the same worker is killed right after its fourth send.
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
            crash = StoreCrash(server, run, after_revision=4, down_seconds=0.5)
            env.net.intercept(crash)
            with run.reported(rerun_command(request)):
                restarted = asyncio.create_task(crash.restart())
                await run.execute()
                await restarted
                await run.check_exact()
                final = await run.ledger.get(run.job_id)
                assert final is not None
                crash.check_nothing_lost(final)
        SUITE_TALLY["store_kills"] += 1
    finally:
        server.stop()
