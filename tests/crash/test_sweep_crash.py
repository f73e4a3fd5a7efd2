"""Sweeps with worker processes killed with SIGKILL at chosen moments (after a send, mid-batch,
between ledger writes, with the chain expiring while no worker runs): new workers finish the
sweep and the chain shows every buyer wallet emptied exactly once, every lamport accounted for
(the buyer wallets' balances + the funding wallet's + the fees paid == before), and the ledger
and arq's result agreeing with it.

The buyer wallets are given their SOL by airdrop (what a premix left them); each scenario is a
`SweepScenario`, its own test id; rerun one alone with the command a failure prints.
"""

import dataclasses
import random
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

from premix.ledger import RunStatus, Totals
from premix.localnet.chain import LAMPORTS_PER_SIGNATURE
from premix.mixer.sweep_packing import pack_sweep
from premix.progress import latest_progress
from premix.queue import enqueue_sweep
from premix.user_lock import user_lock_holder
from tests.crash.harness import CHAT_ID, USER_ID, CrashRun, crash_environment
from tests.crash.ledger_watch import LedgerWatch
from tests.crash.scenario import FaultSpec, Kill, KillKind, Scenario
from tests.crash.test_process_crash import rerun_command
from tests.worker.helpers import create_user, job_result

FUNDING_LAMPORTS = 10**9  # the fee payer: fees only


@dataclasses.dataclass(frozen=True)
class SweepScenario(Scenario):
    """A sweep of `buyer_wallets` wallets holding `held` lamports each (by position)."""

    held: tuple[int, ...] = ()

    @property
    def transactions(self) -> int:
        """Sweep transactions the wallets need when nothing is re-signed (9 per transaction)."""
        moving = [(Pubkey.new_unique(), lamports) for lamports in self.held if lamports]
        return len(pack_sweep(Pubkey.new_unique(), moving))

    def describe(self) -> str:
        kills = ",".join(kill.describe() for kill in self.kills)
        faults = ",".join(fault.describe() for fault in self.faults) or "none"
        return (
            f"sweep seed {self.seed}: {sum(self.held)} lamports from {len(self.held)} wallets "
            f"in {self.transactions} transaction(s); kills {kills}; faults {faults}"
        )


def sweep_scenario(
    seed: int, wallets: int, kills: tuple[Kill, ...], *faults: FaultSpec
) -> SweepScenario:
    rng = random.Random(seed)
    held = tuple(rng.randint(890_880, 3 * 10**9) for _ in range(wallets))
    return SweepScenario(
        seed=seed,
        mode="fast",
        amount_lamports=sum(held),
        buyer_wallets=wallets,
        kills=kills,
        faults=faults,
        held=held,
    )


SWEEP_SCENARIOS = [
    # 22 wallets: 3 transactions (9, 9, 4) in one batch
    sweep_scenario(7_000, 22, (Kill(KillKind.AFTER_SEND, 2, expire_while_down=False),)),
    sweep_scenario(7_001, 22, (Kill(KillKind.MID_BATCH, 1, expire_while_down=True),)),
    sweep_scenario(
        7_002,
        13,
        (
            Kill(KillKind.LEDGER, 2, expire_while_down=False),  # the plan, then the signing
            Kill(KillKind.BEFORE_SEND, 1, expire_while_down=True),
        ),
    ),
    sweep_scenario(
        7_003,
        30,
        (
            Kill(KillKind.LOST_RESPONSE, 1, expire_while_down=True),
            Kill(KillKind.LEDGER, 1, expire_while_down=False),
        ),
        FaultSpec("no_history", method="getSignatureStatuses"),
        FaultSpec("stale_read", probability=0.3, params={"slots": 3}),
    ),
    # stopped (SIGSTOP) as its second send arrives, resumed once the next worker took over:
    # it must step aside; then a dropped send with the chain expiring while no worker runs
    sweep_scenario(
        7_004,
        19,
        (
            Kill(KillKind.STALL, 2, expire_while_down=False),
            Kill(KillKind.DROPPED, 1, expire_while_down=True),
        ),
        FaultSpec("lose_response", method="sendTransaction", probability=0.2, count=2),
    ),
]


class SweepCrashRun(CrashRun):
    """A `CrashRun` of a sweep: buyer wallets airdropped, `enqueue_sweep`, the sweep's proof."""

    scenario: SweepScenario

    async def _prepare(self) -> None:
        scenario, settings = self.scenario, self.env.settings
        self.user = await create_user(
            self.env.store,
            self.net,
            USER_ID,
            buyers=scenario.buyer_wallets,
            funding_lamports=FUNDING_LAMPORTS,
        )
        for buyer, lamports in zip(self.user.buyers, scenario.held, strict=True):
            self.net.airdrop(buyer.pubkey(), lamports)
        self.known_before = set(self.net.transaction_log)
        queued = await enqueue_sweep(USER_ID, CHAT_ID, settings=settings)
        assert queued.success and queued.job_id is not None, queued.message
        self.job_id = queued.job_id
        self.watch = LedgerWatch(settings.mongodb_uri, settings.mongodb_database, self.job_id)
        self.watch.callbacks.extend(self.revision_callbacks)
        await self.watch.start()
        for fault in scenario.faults:
            self.net.faults.inject(
                fault.kind, fault.method, fault.count, fault.probability, **fault.params
            )
        self.net.intercept(self.switch)

    async def check_exact(self) -> None:
        """Prove from the chain that the sweep moved every wallet's SOL exactly once."""
        assert self.user is not None
        net, scenario = self.net, self.scenario
        assert self.switch.fired, "the scenario's first kill never happened"
        landed = self.landed()
        failed = [str(s) for s in landed if net.transaction_log[s].err is not None]
        assert not failed, f"transactions landed with an error: {failed}"
        fees = sum(landed.values())
        buyers = [net.balance(b.pubkey()) for b in self.user.buyers]
        funding = net.balance(self.user.funding.pubkey())
        assert buyers == [0] * len(buyers)  # each emptied once: a second move could not land
        assert sum(buyers) + funding + fees == FUNDING_LAMPORTS + sum(scenario.held)
        assert funding == FUNDING_LAMPORTS + sum(scenario.held) - fees
        run = await self.ledger.get(self.job_id)
        assert run is not None and run.kind == "sweep"
        assert run.status is RunStatus.COMPLETED
        signers = sum(1 + len(tx.transfers) for tx in run.transactions)
        assert fees == LAMPORTS_PER_SIGNATURE * signers  # each transaction landed exactly once
        assert len(landed) == len(run.transactions) == scenario.transactions
        assert [e.lamports for e in run.plan] == list(scenario.held)
        assert run.totals == Totals(sum(scenario.held), fees, len(landed), 0)
        landed_in_ledger = {a.signature for tx in run.transactions for a in tx.attempts if a.landed}
        assert landed_in_ledger == {str(s) for s in landed}
        info = await job_result(self.env.settings, self.job_id)
        assert info.result["success"] is True, info.result["message"]
        totals = info.result["totals"]
        assert (totals["sentLamports"], totals["feeLamports"], totals["transactions"]) == (
            sum(scenario.held),
            fees,
            len(landed),
        )
        last_event = await latest_progress(self.env.redis, self.job_id)
        assert last_event is not None
        assert (last_event.phase, last_event.status) == (6, "completed"), last_event
        assert await user_lock_holder(self.env.redis, USER_ID) is None


@pytest.mark.parametrize("scenario", SWEEP_SCENARIOS, ids=lambda s: f"sweep-{s.seed}")
async def test_sweep_workers_killed_mid_run_move_every_wallet_exactly_once(
    scenario: SweepScenario,
    redis_url: str,
    mongodb_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    async with crash_environment(redis_url, mongodb_url, tmp_path, scenario.seed) as env:
        run = SweepCrashRun(env, scenario)
        with run.reported(rerun_command(request)):
            await run.execute()
            await run.check_exact()
