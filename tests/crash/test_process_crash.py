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
from tests.crash.scenario import Kill, KillKind, Scenario, scenario_for_seed
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
