"""Crash scenarios: what one seed makes happen to one premix (pure; no I/O).

A `Scenario` is drawn from its seed alone, so a failing seed reruns the same plan: the mode,
the amount and wallets, whether the funding wallet holds exactly what the premix needs (the
plan, one fee per transaction and the 0.01 SOL buffer) or plenty, the localnet faults switched
on, and the kills, 1 to 3 of them, each aimed at a point of a send or at the ledger and
optionally followed by the chain moving past every open attempt's blockhash while no worker
runs. Timing still varies between runs (threads, processes), so a rerun takes the same
decisions, not always the same interleaving.

The first kill of seed i has kind `FIRST_KILLS[i % 7]` (mid_batch needs a fast-mode batch of
several transactions, so those seeds are fast mode with 22 to 73 wallets), and seeds with an
even `i // 7` let the chain expire after it: the default seeds cover every kind both ways.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from premix.constants import LAMPORTS_PER_SOL, MAX_BUYER_WALLETS
from premix.distribution import DEFAULT_TABLE, plan_distribution
from premix.mixer.packing import transaction_count
from premix.settings import Settings


class KillKind(StrEnum):
    """Where a worker process is killed (SIGKILL), or stalled (SIGSTOP). `nth` counts within
    one worker process."""

    BEFORE_SEND = "before_send"  # the nth send reached the node: killed, the node never saw it
    AFTER_SEND = "after_send"  # the nth send was processed: killed before reading the answer
    MID_BATCH = "mid_batch"  # fast mode: nth sends of the batch in, killed as the next arrives
    DROPPED = "dropped"  # the nth send is dropped (drop_send): killed while awaiting it
    LOST_RESPONSE = "lost_response"  # the nth send lands, its answer is lost: killed on re-send
    LEDGER = "ledger"  # killed as soon as the ledger shows nth more revisions
    STALL = "stall"  # stopped as the nth send arrives; resumed once the next worker took over


FIRST_KILLS: Final = (
    KillKind.BEFORE_SEND,
    KillKind.AFTER_SEND,
    KillKind.MID_BATCH,
    KillKind.DROPPED,
    KillKind.LOST_RESPONSE,
    KillKind.LEDGER,
    KillKind.STALL,
)
LATER_KILLS: Final = tuple(kind for kind in FIRST_KILLS if kind is not KillKind.MID_BATCH)
SEND_KILLS: Final = frozenset(set(KillKind) - {KillKind.LEDGER})
MAX_SMALL_WALLETS: Final = 5
FEE_LAMPORTS: Final = 5_000  # one signature, no priority fee
FEE_BUFFER_LAMPORTS: Final = int(Settings.model_fields["fee_buffer_sol"].default * LAMPORTS_PER_SOL)
PLENTY_LAMPORTS: Final = 100 * LAMPORTS_PER_SOL
BIG_FAST_WALLETS: Final = (22, 30, 43, 73)  # 2, 2, 3 and 4 transactions


@dataclass(frozen=True)
class Kill:
    """One planned kill of the worker process that holds the job."""

    kind: KillKind
    nth: int  # which send (or how many more ledger revisions) of the worker's life
    expire_while_down: bool  # then advance the chain past every open attempt's validity

    def describe(self) -> str:
        expiry = "+expiry" if self.expire_while_down else ""
        return f"{self.kind.value}#{self.nth}{expiry}"


@dataclass(frozen=True)
class FaultSpec:
    """One localnet fault rule switched on for the whole scenario (`net.faults.inject`)."""

    kind: str
    method: str | None = None
    count: int | None = None
    probability: float | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [self.kind]
        if self.method:
            parts.append(self.method)
        if self.probability is not None:
            parts.append(f"p={self.probability}")
        if self.count is not None:
            parts.append(f"x{self.count}")
        parts += [f"{name}={value}" for name, value in self.params.items()]
        return ":".join(parts)


@dataclass(frozen=True)
class Scenario:
    """One premix run and everything that goes wrong during it."""

    seed: int
    mode: str  # "standard" | "fast"
    amount_lamports: int
    buyer_wallets: int  # stored; the plan may use fewer (the rest must stay at 0)
    kills: tuple[Kill, ...]
    faults: tuple[FaultSpec, ...]
    exact_funding: bool = False  # the funding wallet holds exactly what the premix needs
    priority_fee: int | str = 0  # PREMIX_PRIORITY_FEE of the workers ("auto" or a price)

    @property
    def plan(self) -> list[int]:
        """The lamports each planned wallet must end with (the default tier table)."""
        return plan_distribution(self.amount_lamports, self.buyer_wallets)

    @property
    def transactions(self) -> int:
        """Transactions the plan needs when nothing is re-signed."""
        return transaction_count(self.mode, len(self.plan))

    @property
    def funding_lamports(self) -> int:
        """What the funding wallet gets: exactly the plan, a fee per transaction and the
        buffer (`exact_funding`), or 100 SOL."""
        if not self.exact_funding:
            return PLENTY_LAMPORTS
        return self.amount_lamports + self.transactions * FEE_LAMPORTS + FEE_BUFFER_LAMPORTS

    @property
    def amount_sol(self) -> Decimal:
        return Decimal(self.amount_lamports) / LAMPORTS_PER_SOL

    def describe(self) -> str:
        """One line naming everything the seed decided, for failure messages."""
        kills = ",".join(kill.describe() for kill in self.kills)
        faults = ",".join(fault.describe() for fault in self.faults) or "none"
        funding = "exact funding" if self.exact_funding else "plenty of funding"
        if self.priority_fee != 0:
            funding += f", priority fee {self.priority_fee}"
        return (
            f"seed {self.seed}: {self.mode} mode, {self.amount_sol} SOL to {len(self.plan)} of "
            f"{self.buyer_wallets} wallets in {self.transactions} transaction(s), {funding}; "
            f"kills {kills}; faults {faults}"
        )


def scenario_for_seed(seed: int) -> Scenario:
    """The scenario seed `seed` stands for (see the module docstring)."""
    rng = random.Random(seed)
    first = FIRST_KILLS[seed % len(FIRST_KILLS)]
    big = first is KillKind.MID_BATCH or rng.random() < 0.1
    mode = "fast" if big or rng.random() < 0.4 else "standard"
    planned = rng.choice(BIG_FAST_WALLETS) if big else rng.randint(1, MAX_SMALL_WALLETS)
    amount = _amount_for(planned, rng)
    transactions = transaction_count(mode, planned)
    nth = _first_nth(first, mode, transactions, rng)
    kills = [Kill(first, nth, seed // len(FIRST_KILLS) % 2 == 0)]
    for _ in range(rng.randint(0, 2)):
        kind = rng.choice(LATER_KILLS)
        nth = rng.randint(1, 4) if kind is KillKind.LEDGER else rng.randint(1, 2)
        kills.append(Kill(kind, nth, rng.random() < 0.4))
    return Scenario(
        seed=seed,
        mode=mode,
        amount_lamports=amount,
        buyer_wallets=min(planned + rng.randint(0, 2), MAX_BUYER_WALLETS),
        kills=tuple(kills),
        faults=_faults(rng),
        exact_funding=rng.random() < 0.3,
    )


def _amount_for(wallets: int, rng: random.Random) -> int:
    """A lamport amount whose plan uses exactly `wallets` wallets (not a round number)."""
    caps = DEFAULT_TABLE.cumulative_lamports
    low = caps[wallets - 2] + 1 if wallets > 1 else DEFAULT_TABLE.min_lamports
    return rng.randint(low, caps[wallets - 1])


def _first_nth(kind: KillKind, mode: str, transactions: int, rng: random.Random) -> int:
    """An n the first worker always reaches: its sends, or a ledger revision before the last
    (revisions: 0 opened, 1 planned, then standard mode signs and lands each transaction in
    turn while fast mode signs all in one write and may land all in one; then completed)."""
    if kind is KillKind.MID_BATCH:
        return rng.randint(1, transactions - 1)  # that many sends in, the others not
    if kind is KillKind.LEDGER:
        return rng.randint(1, 2 * transactions + 2 if mode == "standard" else 4)
    return rng.randint(1, transactions)


def _faults(rng: random.Random) -> tuple[FaultSpec, ...]:
    """Faults switched on at random, each bounded so a run always gets through."""
    candidates = (
        FaultSpec("latency", probability=0.3, count=40, params={"ms": rng.randint(5, 40)}),
        FaultSpec("http_429", probability=0.1, count=6, params={"retry_after": 0}),
        FaultSpec("http_5xx", probability=0.1, count=6, params={"status": rng.choice([502, 503])}),
        FaultSpec("drop_send", probability=0.2, count=3),
        FaultSpec("lose_response", method="sendTransaction", probability=0.2, count=2),
        FaultSpec("expire_blockhash", method="sendTransaction", probability=0.1, count=1),
        # a node a few slots behind the load balancer answers some reads (SPEC section 11)
        FaultSpec("stale_read", probability=0.3, params={"slots": rng.randint(1, 5)}),
        # a node without transaction history answers every status lookup
        FaultSpec("no_history", method="getSignatureStatuses"),
    )
    return tuple(fault for fault in candidates if rng.random() < 0.3)
