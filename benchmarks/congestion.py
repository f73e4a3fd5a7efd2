"""Priority fees under congestion: a 73-wallet premix in both modes with a fixed zero fee versus
`auto`, on a localnet whose `congestion` fault holds back every transaction bidding less than
`THRESHOLD_MICRO_LAMPORTS` per compute unit (`land_probability` 0: they never land).

Each case runs premix's `Payout` (resume, pay, verify, complete) on a fresh localnet and store
and measures, per SPEC section 9 and issue 13:
- slots from the plan to the run's end (completed, handed back, or stopped at the slot budget);
- the fee paid (lamports, from the ledger: what the chain charged for each landed attempt) and
  its priority part;
- re-signs: attempts beyond the first of each transaction (an attempt expired without landing);
- whether it completed within the job deadline, counted in slots at mainnet's 400 ms slots
  (`PREMIX_JOB_TIMEOUT_SECONDS` - 10 s, 890 s: 2,225 slots), so a fast clock (short slots keep
  the run short) measures the same thing. Poll intervals scale with the slot as premix's
  defaults do at 400 ms (status polls every quarter slot, fast mode's first after one slot).

A case that has not ended within its slot budget (the deadline; fewer slots in `--quick`) is
stopped and counts as not completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import Any, Final

from solders.keypair import Keypair

from benchmarks.engines import SPARE_LAMPORTS, amount_lamports_for
from benchmarks.measure import Progress
from premix.constants import LOCALNET_SLOT_MS
from premix.distribution import plan_distribution
from premix.errors import PremixError
from premix.ledger import Ledger
from premix.localnet import Localnet
from premix.mixer import Payout
from premix.rpc import SolanaRpc
from premix.settings import Settings
from premix.store import Store, reset_memory_stores

THRESHOLD_MICRO_LAMPORTS: Final = 50_000  # what it takes to land (above auto's 10,000 floor)
LAND_PROBABILITY: Final = 0.0  # below the threshold: never
FEES: Final = ("0", "auto")
MODES: Final = ("fast", "standard")
DEADLINE_MARGIN_SECONDS: Final = 10  # premix's own deadline is this far under arq's timeout


@dataclass
class CongestionCase:
    mode: str
    priority_fee: str
    wallets: int
    outcome: str  # "completed", the hand-back message, or "stopped at the slot budget"
    completed: bool
    slots: int
    deadline_slots: int
    fee_lamports: int
    priority_fee_lamports: int
    transactions: int
    re_signs: int
    funded_exactly: bool
    rpc_calls: dict[str, int]

    @property
    def within_deadline(self) -> bool:
        return self.completed and self.slots <= self.deadline_slots

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "within_deadline": self.within_deadline}


def deadline_slots(settings: Settings) -> int:
    """The job deadline in slots of mainnet's (and premix's default) 400 ms."""
    return (settings.job_timeout_seconds - DEADLINE_MARGIN_SECONDS) * 1000 // LOCALNET_SLOT_MS


async def run_case(
    mode: str, priority_fee: str, wallets: int, *, slot_ms: int, budget_slots: int
) -> CongestionCase:
    """One premix of `wallets` under congestion with `priority_fee` ("0" or "auto")."""
    slot_seconds = slot_ms / 1000
    settings = Settings(
        log_level="WARNING",
        priority_fee=priority_fee,
        confirm_poll_seconds=slot_seconds / 4,
        slot_seconds=slot_seconds,
        mongodb_uri=f"memory://bench-congestion-{uuid.uuid4().hex}",
    )
    amounts = plan_distribution(amount_lamports_for(wallets), wallets)
    funding, recipients = Keypair(), [Keypair().pubkey() for _ in amounts]
    store = await Store.open(settings)
    run_id = f"premix-bench-{uuid.uuid4().hex[:12]}"
    outcome = "stopped at the slot budget"
    try:
        ledger = Ledger(store)
        await ledger.open_run(run_id, user_id="bench", mode=mode, amount_lamports=sum(amounts))
        with Localnet(slot_ms=slot_ms, seed=0) as net:
            net.airdrop(funding.pubkey(), sum(amounts) + SPARE_LAMPORTS)
            net.faults.inject(
                "congestion",
                min_micro_lamports=THRESHOLD_MICRO_LAMPORTS,
                land_probability=LAND_PROBABILITY,
            )
            start = net.slot
            async with SolanaRpc(net.url) as rpc:
                task = asyncio.create_task(
                    _premix(ledger, run_id, recipients, amounts, rpc, funding, settings)
                )
                while net.slot - start < budget_slots:
                    done, _ = await asyncio.wait({task}, timeout=slot_seconds)
                    if done:
                        break
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    try:
                        await task
                        outcome = "completed"
                    except PremixError as error:
                        outcome = f"handed back: {error.detail or error}"
                slots = net.slot - start
                calls = dict(rpc.calls)
            funded = [net.balance(r) for r in recipients] == amounts
        record = await ledger.require(run_id)
    finally:
        await store.close()
        reset_memory_stores(settings.mongodb_uri)
    totals = record.totals
    return CongestionCase(
        mode=mode,
        priority_fee=priority_fee,
        wallets=wallets,
        outcome=outcome,
        completed=outcome == "completed",
        slots=slots,
        deadline_slots=deadline_slots(settings),
        fee_lamports=totals.fee_lamports,
        priority_fee_lamports=totals.priority_fee_lamports,
        transactions=len(record.transactions),
        re_signs=sum(len(tx.attempts) - 1 for tx in record.transactions),
        funded_exactly=funded,
        rpc_calls=calls,
    )


async def _premix(
    ledger: Ledger,
    run_id: str,
    recipients: list[Any],
    amounts: list[int],
    rpc: SolanaRpc,
    funding: Keypair,
    settings: Settings,
) -> None:
    run = await ledger.record_plan(run_id, [str(r) for r in recipients], amounts)
    payout = await Payout.resume(ledger, run, rpc=rpc, settings=settings)
    await payout.pay(funding)
    await payout.verify()
    await payout.complete()


async def bench_congestion(
    *, wallets: int, slot_ms: int, budget_slots: int | None, progress: Progress = None
) -> dict[str, Any]:
    """Every (mode, fee) case once; the JSON section `congestion`."""
    deadline = deadline_slots(Settings())
    budget = deadline if budget_slots is None else min(budget_slots, deadline)
    cases = []
    for mode in MODES:
        for fee in FEES:
            if progress is not None:
                progress(f"congestion: {mode}, priority fee {fee}, {wallets} wallets")
            case = await run_case(mode, fee, wallets, slot_ms=slot_ms, budget_slots=budget)
            cases.append(case.to_dict())
    return {
        "slot_ms": slot_ms,
        "wallets": wallets,
        "threshold_micro_lamports": THRESHOLD_MICRO_LAMPORTS,
        "land_probability": LAND_PROBABILITY,
        "deadline_slots": deadline,
        "budget_slots": budget,
        "cases": cases,
    }
