"""Transfer engines on localnet: premix's fast and standard modes beside two reference designs.

For n wallets the input is the amount that fills exactly n wallets of the default tier table
(1 wallet: 0.5 SOL, 21: 12.7 SOL, 73: 85 SOL), planned with `plan_distribution`. Each run uses a
fresh localnet (its own slot clock) and a fresh in-memory ledger, and measures:

- transactions and fees (lamports) from the `MixResult`;
- RPC round trips: HTTP requests the localnet received during the run (`net.stats`), and for
  premix's standard mode per transfer;
- wall time from the payout's start until it completed (every transfer confirmed and the
  recipients' balances checked);

Before that window, as a worker does: the client learns when the node's slots begin (the
worker's startup `sync_slot_clock`: 11 getSlot reads over a few slots), and the plan is
recorded with every recipient's balance before, read in one getMultipleAccounts per 100 wallets
(phase 3 reads it for the recipient-account check anyway); neither is counted.
- slots elapsed over the run;
- "confirmed within N slots of the send": per transaction, the slot at which premix *saw* it
  confirmed (the chain's slot when the status answer came back) minus the slot the node
  received it in; the run's figure is the largest. On chain a transaction lands in the slot it
  is received and is confirmed one slot later, so 1 is the floor.

Reference designs on the same inputs:
- `sequential`: one transfer per transaction, sent one at a time, each confirmed before the next
  is signed, with none of premix's ledger writes or balance checks (the loop premix's standard
  mode is built on; it polls statuses as often as standard mode does);
- `ts-estimate`: the previous TypeScript premix system's own time estimate for n wallets and a
  SOL (standard max(15, min(120, 5n + 2a)) s, fast max(3, min(15, n + 0.5a)) s): computed, not
  measured.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from benchmarks.measure import Progress, Spread
from premix.amounts import lamports_to_sol
from premix.constants import LAMPORTS_PER_SOL
from premix.distribution import max_distributable_lamports, plan_distribution
from premix.ledger import Ledger
from premix.localnet import Localnet
from premix.mixer import Payout, check_recipient_accounts
from premix.mixer.packing import FeePolicy, build_message, sign
from premix.rpc import SignatureStatus, SolanaRpc
from premix.settings import Settings
from premix.store import Store, reset_memory_stores

# premix at a fixed zero fee (comparable with the figures before priority fees), and with the
# default `auto` priority fee (one getRecentPrioritizationFees reading more per signing round)
DESIGNS = (
    "premix-fast",
    "premix-fast-auto",
    "premix-standard",
    "premix-standard-auto",
    "sequential",
)
AUTO_SUFFIX = "-auto"
SPARE_LAMPORTS = 10 * LAMPORTS_PER_SOL  # funding beyond the plan: fees and nothing else


def amount_lamports_for(wallets: int) -> int:
    """The amount that needs exactly `wallets` wallets: the first `wallets` caps, full."""
    return max_distributable_lamports(wallets)


def ts_estimate_seconds(mode: str, wallets: int, amount_sol: Decimal) -> Decimal:
    """The previous TypeScript premix system's own time estimate, in seconds."""
    if mode == "standard":
        return max(Decimal(15), min(Decimal(120), 5 * wallets + 2 * amount_sol))
    return max(Decimal(3), min(Decimal(15), wallets + amount_sol / 2))


class ObservingRpc(SolanaRpc):
    """A `SolanaRpc` noting the chain's slot when each signature is first seen confirmed
    (read from the chain directly, so observing adds no round trip)."""

    def __init__(self, net: Localnet) -> None:
        super().__init__(net.url)
        self.net = net
        self.confirmed_seen_at: dict[str, int] = {}

    async def signature_statuses(
        self, signatures: Sequence[Signature], *, search_history: bool = False
    ) -> list[SignatureStatus | None]:
        statuses = await super().signature_statuses(signatures, search_history=search_history)
        slot = self.net.slot
        for signature, status in zip(signatures, statuses, strict=True):
            if status is not None and status.is_confirmed:
                self.confirmed_seen_at.setdefault(str(signature), slot)
        return statuses


@dataclass
class EngineRun:
    """One run of one design for one wallet count."""

    design: str
    wallets: int
    transactions: int
    fee_lamports: int
    rpc_round_trips: int
    rpc_calls: dict[str, int]
    wall_seconds: float
    slots_elapsed: int
    confirm_slots_after_send: int  # largest over the run's transactions (premix saw confirmed)
    funded_exactly: bool  # every recipient holds exactly its planned amount

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class EngineCase:
    """Every run of one design for one wallet count, summarized."""

    design: str
    wallets: int
    amount_sol: str
    runs: list[EngineRun] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        runs = self.runs
        return {
            "design": self.design,
            "wallets": self.wallets,
            "amount_sol": self.amount_sol,
            "repeat": len(runs),
            # exact counts: the same on every run unless a send was retried
            "transactions": _single_or_list([r.transactions for r in runs]),
            "fee_lamports": _single_or_list([r.fee_lamports for r in runs]),
            "funded_exactly": all(r.funded_exactly for r in runs),
            "rpc_round_trips": Spread.of([r.rpc_round_trips for r in runs]).to_dict(),
            "wall_seconds": Spread.of([r.wall_seconds for r in runs]).to_dict(),
            "slots_elapsed": Spread.of([r.slots_elapsed for r in runs]).to_dict(),
            "confirm_slots_after_send": Spread.of(
                [r.confirm_slots_after_send for r in runs]
            ).to_dict(),
            "runs": [r.to_dict() for r in runs],
        }


@dataclass
class RunCost:
    """What a run cost on the node; the `EngineRun` fields of the same names."""

    wall_seconds: float = 0.0
    slots_elapsed: int = 0
    rpc_round_trips: int = 0
    rpc_calls: dict[str, int] = field(default_factory=dict)
    confirm_slots_after_send: int = 0


@contextmanager
def _measured(net: Localnet, rpc: ObservingRpc) -> Iterator[RunCost]:
    """Measure the block's wall time, slots and RPC traffic; the figures are set when it ends."""
    net.stats.reset()
    start_slot = net.slot
    started = time.perf_counter()
    cost = RunCost()
    yield cost
    cost.wall_seconds = time.perf_counter() - started
    cost.slots_elapsed = net.slot - start_slot
    cost.rpc_round_trips = net.stats.http_requests
    cost.rpc_calls = dict(net.stats.calls)
    cost.confirm_slots_after_send = _confirm_slots(net, rpc.confirmed_seen_at)


def _single_or_list(values: list[int]) -> int | list[int]:
    return values[0] if len(set(values)) == 1 else values


async def run_premix_once(
    mode: str,
    wallets: int,
    *,
    slot_ms: int,
    settings: Settings,
    arrival_seconds: float = 0.0,
    design: str | None = None,
) -> EngineRun:
    """Fund `wallets` fresh recipients with premix's `mode` engine on a fresh localnet; the
    payout starts `arrival_seconds` after the worker's slot-clock sync (a job arrives anywhere
    in a slot)."""
    amounts = plan_distribution(amount_lamports_for(wallets), wallets)
    funding = Keypair()
    recipients = [Keypair().pubkey() for _ in amounts]
    settings = settings.model_copy(update={"slot_seconds": slot_ms / 1000})
    memory_uri = f"memory://bench-engines-{uuid.uuid4().hex}"
    store = await Store.open(settings.model_copy(update={"mongodb_uri": memory_uri}))
    run_id = f"premix-bench-{uuid.uuid4().hex[:12]}"
    try:
        ledger = Ledger(store)
        await ledger.open_run(run_id, user_id="bench", mode=mode, amount_lamports=sum(amounts))
        with Localnet(slot_ms=slot_ms, seed=0) as net:
            net.airdrop(funding.pubkey(), sum(amounts) + SPARE_LAMPORTS)
            rpc = ObservingRpc(net)
            try:
                await rpc.sync_slot_clock(settings.slot_seconds)  # the worker's startup
                accounts = await rpc.accounts(recipients)  # phase 3 of the job
                check_recipient_accounts([str(r) for r in recipients], accounts)
                await asyncio.sleep(arrival_seconds)
                run = await ledger.record_plan(
                    run_id,
                    [str(r) for r in recipients],
                    amounts,
                    balances_before=[0 if a is None else a.lamports for a in accounts],
                )
                with _measured(net, rpc) as cost:
                    payout = await Payout.resume(ledger, run, rpc=rpc, settings=settings)
                    await payout.pay(funding)
                    await payout.verify()
                    result = await payout.complete()
            finally:
                await rpc.close()
            funded = [net.balance(r) for r in recipients] == amounts
    finally:
        await store.close()
        reset_memory_stores(memory_uri)
    return EngineRun(
        design=design or f"premix-{mode}",
        wallets=wallets,
        transactions=result.transactions,
        fee_lamports=result.fee_lamports,
        funded_exactly=funded,
        **vars(cost),
    )


async def run_sequential_once(wallets: int, *, slot_ms: int, poll_seconds: float) -> EngineRun:
    """The reference loop: one transfer per transaction, each confirmed before the next."""
    amounts = plan_distribution(amount_lamports_for(wallets), wallets)
    funding = Keypair()
    recipients = [Keypair().pubkey() for _ in amounts]
    fees = FeePolicy()
    with Localnet(slot_ms=slot_ms, seed=0) as net:
        net.airdrop(funding.pubkey(), sum(amounts) + SPARE_LAMPORTS)
        rpc = ObservingRpc(net)
        try:
            with _measured(net, rpc) as cost:
                fee_total = 0
                for recipient, lamports in zip(recipients, amounts, strict=True):
                    fee_total += await _send_and_confirm(
                        rpc, funding, recipient, lamports, fees, poll_seconds
                    )
        finally:
            await rpc.close()
        funded = [net.balance(r) for r in recipients] == amounts
    return EngineRun(
        design="sequential",
        wallets=wallets,
        transactions=len(amounts),
        fee_lamports=fee_total,
        funded_exactly=funded,
        **vars(cost),
    )


async def _send_and_confirm(
    rpc: SolanaRpc,
    funding: Keypair,
    recipient: Pubkey,
    lamports: int,
    fees: FeePolicy,
    poll_seconds: float,
) -> int:
    latest = await rpc.latest_blockhash()
    transaction = sign(
        build_message(funding.pubkey(), [(recipient, lamports)], latest.blockhash, fees), funding
    )
    signature = transaction.signatures[0]
    await rpc.send_raw(bytes(transaction))
    while True:
        await asyncio.sleep(poll_seconds)
        [status] = await rpc.signature_statuses([signature])
        if status is not None and status.is_confirmed:
            if status.error is not None:
                raise RuntimeError(f"reference transfer failed on chain: {status.error}")
            return fees.fee_lamports(1)


def _confirm_slots(net: Localnet, seen_at: dict[str, int]) -> int:
    """Largest (slot premix saw it confirmed - slot the node received it) over the run."""
    log = net.transaction_log
    gaps = [
        slot - log[Signature.from_string(signature)].received_slot
        for signature, slot in seen_at.items()
    ]
    return max(gaps, default=0)


async def bench_engines(
    *,
    wallet_counts: Sequence[int],
    slot_ms: int,
    repeat: int,
    settings: Settings,
    progress: Progress = None,
) -> dict[str, Any]:
    """Run every design `repeat` times for each wallet count (interleaved, so drift on a shared
    machine hits every design alike) and return the JSON section `engines`."""
    cases = {
        (design, n): EngineCase(design, n, str(lamports_to_sol(amount_lamports_for(n))))
        for n in wallet_counts
        for design in DESIGNS
    }
    arrivals = random.Random(0)  # where in a slot each payout starts: the same on every run
    for round_number in range(repeat):
        for n in wallet_counts:
            for design in DESIGNS:
                if progress is not None:
                    progress(f"engines: {design} {n} wallets, run {round_number + 1}/{repeat}")
                if design == "sequential":
                    run = await run_sequential_once(
                        n, slot_ms=slot_ms, poll_seconds=settings.confirm_poll_seconds
                    )
                else:
                    auto = design.endswith(AUTO_SUFFIX)
                    run = await run_premix_once(
                        design.removeprefix("premix-").removesuffix(AUTO_SUFFIX),
                        n,
                        slot_ms=slot_ms,
                        settings=settings.model_copy(update={"priority_fee": "auto"})
                        if auto
                        else settings,
                        arrival_seconds=arrivals.uniform(0, slot_ms / 1000),
                        design=design,
                    )
                cases[(design, n)].runs.append(run)
    estimates = [
        {
            "design": f"ts-estimate-{mode}",
            "wallets": n,
            "amount_sol": str(lamports_to_sol(amount_lamports_for(n))),
            "seconds": float(ts_estimate_seconds(mode, n, lamports_to_sol(amount_lamports_for(n)))),
        }
        for n in wallet_counts
        for mode in ("fast", "standard")
    ]
    return {
        "slot_ms": slot_ms,
        "confirm_poll_seconds": settings.confirm_poll_seconds,
        "cases": [case.summary() for case in cases.values()],
        "estimates": estimates,
        "ratios": _ratios(cases, estimates, wallet_counts),
    }


def _ratios(
    cases: dict[tuple[str, int], EngineCase],
    estimates: list[dict[str, Any]],
    wallet_counts: Sequence[int],
) -> list[dict[str, Any]]:
    """Per wallet count, median wall-time ratios between designs measured in this run."""
    ratios = []
    for n in wallet_counts:

        def median(design: str, wallets: int = n) -> float:
            return Spread.of([r.wall_seconds for r in cases[(design, wallets)].runs]).median

        def paired(numerator: str, denominator: str, wallets: int = n) -> Spread:
            # run i of one design against run i of the other: the same round, similar load
            return Spread.of(
                [
                    a.wall_seconds / b.wall_seconds
                    for a, b in zip(
                        cases[(numerator, wallets)].runs,
                        cases[(denominator, wallets)].runs,
                        strict=True,
                    )
                ]
            )

        estimate = {e["design"]: e["seconds"] for e in estimates if e["wallets"] == n}
        ratios.append(
            {
                "wallets": n,
                "standard_over_fast": paired("premix-standard", "premix-fast").to_dict(),
                "standard_over_sequential": paired("premix-standard", "sequential").to_dict(),
                "ts_estimate_fast_over_fast": estimate["ts-estimate-fast"] / median("premix-fast"),
                "ts_estimate_standard_over_standard": estimate["ts-estimate-standard"]
                / median("premix-standard"),
            }
        )
    return ratios
