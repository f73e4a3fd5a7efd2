"""A premix run as the ledger records it: the plan, every transaction with its attempts (signed
transactions), totals; and the state machine that says which changes are allowed. Pure: no I/O
(`premix.run_documents` is its stored form, `premix.ledger` persists runs).

The rule that makes re-runs safe: a transaction gets a new attempt (new blockhash, new
signature) only when every earlier attempt is final - landed, or expired (block height above
its last valid block height and the signature not on chain) - and none landed without error.
An attempt that is neither found nor expired may still land; it is re-sent as the same bytes.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

MAX_INT64 = 2**63 - 1  # the largest integer BSON (MongoDB) stores


class RunStatus(StrEnum):
    OPENED = "opened"  # job accepted, no plan yet
    PLANNED = "planned"  # plan recorded, nothing signed
    SENDING = "sending"  # at least one attempt signed; a re-run resumes from here
    COMPLETED = "completed"  # every transfer landed (terminal)
    FAILED = "failed"  # stopped by a permanent failure; a re-run may resume it
    CANCELLED = "cancelled"  # stopped by `cancel_premix` at a safe point; a retry may resume it


class AttemptState(StrEnum):
    SIGNED = "signed"  # written before its first send; may land until its blockhash expires
    REJECTED = "rejected"  # the RPC node refused it (preflight); settled exactly like `signed`
    LANDED_OK = "landed_ok"  # on chain without error: the transfers are done
    LANDED_FAILED = "landed_failed"  # on chain with an error: fee paid, transfers not done
    EXPIRED = "expired"  # blockhash expired and signature not on chain: can never land


class TransactionState(StrEnum):
    PENDING = "pending"  # no attempt can land: a new attempt may be signed
    SIGNED = "signed"  # one attempt is open and may still land
    LANDED_OK = "landed_ok"  # done
    FAILED = "failed"  # last attempt failed on chain; a re-run signs a new one


# How a run ends; the two that are not `completed` may be resumed by `retry_premix`.
FINISHED_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
OPEN_ATTEMPT_STATES = frozenset({AttemptState.SIGNED, AttemptState.REJECTED})
_ALLOWED = {
    AttemptState.SIGNED: frozenset(AttemptState) - {AttemptState.SIGNED},
    AttemptState.REJECTED: frozenset(AttemptState) - {AttemptState.REJECTED},
}


class LedgerError(Exception):
    """A change the state machine forbids (a bug, never a chain condition)."""


def utc_now() -> datetime:
    """Return the current UTC time at millisecond precision (what BSON stores)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass
class Attempt:
    """One signed transaction: the signature and what is needed to settle or re-send it."""

    signature: str  # base58
    blockhash: str  # base58
    last_valid_block_height: int
    wire: str  # base64 of the signed transaction (public data): re-sent as is, never re-signed
    signed_at: datetime
    state: AttemptState = AttemptState.SIGNED
    error: str | None = None
    fee_lamports: int = 0  # attached when signed; paid only once landed (ok or failed)
    slot: int | None = None  # where it landed (None when only the balances prove it landed)
    settled_at: datetime | None = None
    # How a landing was proven when its status could not be found (a node without history):
    # "balances" = every recipient holds its balance before plus its amount.
    evidence: str | None = None
    compute_unit_price: int = 0  # micro-lamports per compute unit it bids (0: none)
    priority_fee_lamports: int = 0  # the part of `fee_lamports` that price adds

    @property
    def is_open(self) -> bool:
        """True while the attempt may still land (signed or rejected, not yet expired)."""
        return self.state in OPEN_ATTEMPT_STATES

    @property
    def landed(self) -> bool:
        """True once the attempt is on chain, with or without error (its fee was paid)."""
        return self.state in (AttemptState.LANDED_OK, AttemptState.LANDED_FAILED)

    def move_to(self, state: AttemptState, *, now: datetime, error: str | None = None) -> None:
        """Change state; raises `LedgerError` for a transition the state machine forbids."""
        if state not in _ALLOWED.get(self.state, frozenset()):
            raise LedgerError(f"attempt {self.signature}: {self.state} -> {state} is not allowed")
        self.state = state
        if error is not None:
            self.error = error
        if not self.is_open:
            self.settled_at = now


@dataclass
class LedgerTransaction:
    """A group of plan positions sent in one transaction, with every attempt at it."""

    index: int
    transfers: list[int]  # plan positions
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def state(self) -> TransactionState:
        """The state derived from the attempts."""
        if any(a.state is AttemptState.LANDED_OK for a in self.attempts):
            return TransactionState.LANDED_OK
        if any(a.is_open for a in self.attempts):
            return TransactionState.SIGNED
        if self.attempts and self.attempts[-1].state is AttemptState.LANDED_FAILED:
            return TransactionState.FAILED
        return TransactionState.PENDING

    @property
    def may_sign_new_attempt(self) -> bool:
        """True when no attempt landed ok and none may still land."""
        return self.state in (TransactionState.PENDING, TransactionState.FAILED)

    @property
    def open_attempt(self) -> Attempt | None:
        """The attempt that may still land, if any (there is at most one)."""
        return next((a for a in self.attempts if a.is_open), None)

    @property
    def last_attempt(self) -> Attempt | None:
        """The newest attempt, if any."""
        return self.attempts[-1] if self.attempts else None


@dataclass
class PlanEntry:
    """One transfer of the plan: `lamports` to `recipient`, from `source` (a sweep's buyer
    wallet) or, when `source` is None, from the run's funding wallet (a premix)."""

    position: int
    recipient: str  # base58
    lamports: int
    # premix: the recipient's balance when its first attempt was signed; sweep: the source's,
    # read when the plan was made
    balance_before: int | None = None
    source: str | None = None  # base58; set only in a sweep (the recipient is then the funding)

    @property
    def watched(self) -> str:
        """The wallet whose balance shows the transfer landed: a sweep's source (it drops by
        `lamports`), else the recipient (it grows by `lamports`)."""
        return self.source if self.source is not None else self.recipient

    @property
    def expected_balance(self) -> int:
        """What the watched wallet holds once the transfer landed: at most this for a sweep's
        source, at least this for a premix's recipient."""
        before = self.balance_before or 0
        return before - self.lamports if self.source is not None else before + self.lamports

    def shows_transfer(self, balance: int) -> bool:
        """True when the watched wallet's `balance` shows the transfer landed."""
        if self.source is not None:
            return balance <= self.expected_balance
        return balance >= self.expected_balance


@dataclass(frozen=True)
class TopUpEntry:
    """A top-up's wallet: its target, what it held at planning; the plan pays what it lacked."""

    position: int  # the wallet's position in the distribution (its buyer-wallet order)
    recipient: str  # base58
    planned_lamports: int  # what the distribution plans for it: the target
    held_lamports: int  # its balance on chain when the run was planned

    @property
    def missing_lamports(self) -> int:
        """What the wallet lacked of its planned amount (0: it held enough)."""
        return max(0, self.planned_lamports - self.held_lamports)


@dataclass(frozen=True)
class Totals:
    sent_lamports: int  # transferred by transactions that landed ok
    fee_lamports: int  # paid by every landed attempt, ok or failed
    transactions: int  # landed attempts (each paid a fee)
    priority_fee_lamports: int = 0  # the priority part of `fee_lamports`


@dataclass
class RunRecord:
    """Everything the ledger knows about one run (`premix.run_documents`: its stored form)."""

    run_id: str
    user_id: str
    mode: str
    amount_lamports: int
    created_at: datetime
    updated_at: datetime
    status: RunStatus = RunStatus.OPENED
    funding: str | None = None  # base58 public key of the paying wallet, set at the first attempt
    plan: list[PlanEntry] = field(default_factory=list)
    transactions: list[LedgerTransaction] = field(default_factory=list)
    error: str | None = None
    revision: int = 0  # bumped by every write; the compare-and-swap token
    # The job's payload as queued (`PremixFundsJob.to_wire()`: public data), so `retry_premix`
    # can queue the run again; None for runs opened before it was kept.
    request: dict[str, Any] | None = None
    # Jobs `retry_premix` queued to continue this run, oldest first (the run id is the first job).
    retry_jobs: list[str] = field(default_factory=list)
    # a top-up: every wallet of its distribution (the plan holds only those that lacked some)
    top_up: list[TopUpEntry] | None = None
    # "premix" (funding -> buyer wallets) or "sweep" (buyer wallets -> funding, each plan
    # entry naming its source); runs stored before sweeps existed are premixes
    kind: str = "premix"

    # --- reading ---

    @property
    def planned(self) -> bool:
        """True once a plan is recorded (a top-up's may be empty: every wallet held enough; a
        sweep's too: no wallet held more than it keeps)."""
        swept = self.kind == "sweep" and self.status is not RunStatus.OPENED
        return bool(self.plan) or self.top_up is not None or swept

    @property
    def totals(self) -> Totals:
        """Sent lamports, fees paid and landed transactions, from the attempts."""
        sent = sum(self.plan[p].lamports for p in self.funded_positions())
        landed = [a for tx in self.transactions for a in tx.attempts if a.landed]
        return Totals(
            sent,
            sum(a.fee_lamports for a in landed),
            len(landed),
            sum(a.priority_fee_lamports for a in landed),
        )

    def transaction_of(self, position: int) -> LedgerTransaction | None:
        """The transaction holding plan `position`, if it was ever signed."""
        return next((tx for tx in self.transactions if position in tx.transfers), None)

    def uncovered_positions(self) -> list[int]:
        """Plan positions no transaction holds yet (never signed), in plan order."""
        covered = {p for tx in self.transactions for p in tx.transfers}
        return [entry.position for entry in self.plan if entry.position not in covered]

    def funded_positions(self) -> list[int]:
        """Plan positions whose transaction landed ok, in plan order."""
        done = {
            p
            for tx in self.transactions
            if tx.state is TransactionState.LANDED_OK
            for p in tx.transfers
        }
        return [entry.position for entry in self.plan if entry.position in done]

    def open_attempts(self) -> list[tuple[LedgerTransaction, Attempt]]:
        """Every attempt that may still land, with its transaction."""
        return [
            (tx, attempt) for tx in self.transactions if (attempt := tx.open_attempt) is not None
        ]

    def find_attempt(self, signature: str) -> tuple[LedgerTransaction, Attempt]:
        """The attempt with `signature`; raises `LedgerError` when there is none."""
        for tx in self.transactions:
            for attempt in tx.attempts:
                if attempt.signature == signature:
                    return tx, attempt
        raise LedgerError(f"run {self.run_id} has no attempt {signature}")

    # --- the state machine (no I/O; `Ledger.save` persists) ---

    def set_plan(
        self,
        recipients: Sequence[str],
        amounts: Sequence[int],
        *,
        now: datetime,
        balances_before: Sequence[int] | None = None,
        sources: Sequence[str] | None = None,
    ) -> bool:
        """Record the plan (with each recipient's balance before, when read; a sweep's with
        each transfer's source and its balance then) unless one is recorded already (first plan
        wins); True if set."""
        if self.planned:
            return False
        if len(recipients) != len(amounts) or not recipients:
            raise LedgerError("a plan needs as many amounts as recipients, at least one")
        if any(isinstance(a, bool) or not isinstance(a, int) or a <= 0 for a in amounts):
            raise LedgerError("plan amounts must be positive integer lamports")
        if sum(amounts) > MAX_INT64:  # so every amount and total fits a BSON int64
            raise LedgerError(f"plan amounts must sum to at most {MAX_INT64} lamports")
        if sources is None and len(set(recipients)) != len(recipients):
            raise LedgerError("a plan pays each recipient once")
        if balances_before is not None and len(balances_before) != len(recipients):
            raise LedgerError("a plan needs one balance before per recipient")
        if sources is not None and (
            len(sources) != len(recipients) or len(set(sources)) != len(sources)
        ):
            raise LedgerError("a sweep's plan moves from each source once, one per recipient")
        befores = list(balances_before) if balances_before is not None else [None] * len(amounts)
        froms = [str(s) for s in sources] if sources is not None else [None] * len(amounts)
        self.plan = [
            PlanEntry(position, str(recipient), int(lamports), before, source)
            for position, (recipient, lamports, before, source) in enumerate(
                zip(recipients, amounts, befores, froms, strict=True)
            )
        ]
        self._set_status(RunStatus.PLANNED, now)
        return True

    def set_top_up(self, entries: Sequence[TopUpEntry], *, now: datetime) -> bool:
        """Record a top-up's distribution and, as the plan, what each wallet lacked of its
        planned amount (with its balance then as balance before), unless a plan is recorded
        already (first plan wins); True if set. Every wallet holding enough: an empty plan."""
        if self.planned:
            return False
        if not entries or [e.position for e in entries] != list(range(len(entries))):
            raise LedgerError("a top-up lists its wallets by position, at least one")
        if sum(e.planned_lamports + e.held_lamports for e in entries) > MAX_INT64:
            raise LedgerError(f"a top-up's amounts must sum to at most {MAX_INT64} lamports")
        lacking = [e for e in entries if e.missing_lamports]
        if lacking:
            self.set_plan(
                [e.recipient for e in lacking],
                [e.missing_lamports for e in lacking],
                now=now,
                balances_before=[e.held_lamports for e in lacking],
            )
        self.top_up = list(entries)
        self._set_status(RunStatus.PLANNED, now)
        return True

    def set_sweep_plan(
        self,
        funding: str,
        sources: Sequence[str],
        amounts: Sequence[int],
        balances: Sequence[int],
        *,
        now: datetime,
    ) -> bool:
        """Record a sweep's plan: `amounts` from each of `sources` (holding `balances` when it
        was read) to `funding`, unless a plan is recorded already (first plan wins); True if
        set. No wallet with anything to move: an empty plan."""
        if self.planned:
            return False
        if self.kind != "sweep":
            raise LedgerError(f"run {self.run_id} is a {self.kind}, not a sweep")
        if str(funding) in sources:
            raise LedgerError("a sweep moves from buyer wallets, never from the funding wallet")
        if sources:
            recipients = [str(funding)] * len(sources)
            self.set_plan(recipients, amounts, now=now, balances_before=balances, sources=sources)
        self.amount_lamports = sum(amounts)  # a sweep's amount: what its wallets held to move
        self._set_status(RunStatus.PLANNED, now)
        return True

    def add_transaction(self, transfers: Sequence[int], attempt: Attempt) -> LedgerTransaction:
        """Record a new transaction for never-signed `transfers`, with its first attempt."""
        uncovered = set(self.uncovered_positions())
        if not transfers or any(p not in uncovered for p in transfers):
            raise LedgerError(f"positions {list(transfers)} are not all unsigned plan positions")
        tx = LedgerTransaction(index=len(self.transactions), transfers=list(transfers))
        self.transactions.append(tx)
        self.add_attempt(tx.index, attempt)
        return tx

    def add_attempt(self, index: int, attempt: Attempt) -> None:
        """Record a new signed attempt at transaction `index`; raises `LedgerError` unless every
        earlier attempt is final and none landed ok."""
        tx = self.transactions[index]
        if not tx.may_sign_new_attempt:
            raise LedgerError(f"transaction {index} is {tx.state}: it must not be signed again")
        if attempt.state is not AttemptState.SIGNED:
            raise LedgerError("a new attempt starts as signed")
        tx.attempts.append(attempt)
        self._set_status(RunStatus.SENDING, attempt.signed_at)

    def record_balance_before(self, position: int, lamports: int) -> None:
        """Remember the recipient's balance before its first attempt (first value wins)."""
        entry = self.plan[position]
        if entry.balance_before is None:
            entry.balance_before = lamports

    def settle(
        self,
        signature: str,
        state: AttemptState,
        *,
        now: datetime,
        error: str | None = None,
        fee_lamports: int = 0,
        slot: int | None = None,
        evidence: str | None = None,
    ) -> Attempt:
        """Move the attempt with `signature` to `state` (see `AttemptState`); returns it."""
        _, attempt = self.find_attempt(signature)
        attempt.move_to(state, now=now, error=error)
        if attempt.landed:
            attempt.fee_lamports = fee_lamports
            attempt.slot = slot
            attempt.evidence = evidence
        self.updated_at = now
        return attempt

    def finish(self, status: RunStatus, *, now: datetime, error: str | None = None) -> None:
        """End the run as completed, failed or cancelled (`error`: why it stopped)."""
        if status not in FINISHED_STATUSES:
            raise LedgerError(f"a run finishes as completed, failed or cancelled, not {status}")
        if status is RunStatus.COMPLETED and len(self.funded_positions()) != len(self.plan):
            raise LedgerError(f"run {self.run_id} cannot complete: not every transfer landed")
        self._set_status(status, now)
        self.error = error

    def _set_status(self, status: RunStatus, now: datetime) -> None:
        if self.status is RunStatus.COMPLETED and status is not RunStatus.COMPLETED:
            raise LedgerError(f"run {self.run_id} is completed: it cannot become {status}")
        self.status = status
        if status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            self.error = None
        self.updated_at = now
