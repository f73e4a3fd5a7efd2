"""What the transfer engine reports: per-wallet outcomes, totals and progress, built from the
ledger, and `MixerFailed`, the failure that carries that report."""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from premix.amounts import format_sol
from premix.errors import PremixError
from premix.ledger import AttemptState, RunRecord, TransactionState


class WalletStatus(StrEnum):
    FUNDED = "funded"  # its transaction landed without error
    FAILED = "failed"  # its last attempt failed on chain, or was refused and can never land
    PENDING = "pending"  # signed and maybe sent, not settled: it may still land (a re-run settles)
    NOT_SENT = "not_sent"  # never landed (not signed yet, or every attempt expired)


@dataclass(frozen=True)
class WalletOutcome:
    public_key: str
    lamports: int
    status: WalletStatus
    signature: str | None = None  # the landed one when funded, else the newest attempt's
    error: str | None = None
    evidence: str | None = None  # "balances": funded, proven by balances (status not found)


@dataclass(frozen=True)
class MixResult:
    run_id: str
    mode: str
    wallets: tuple[WalletOutcome, ...]
    sent_lamports: int  # transferred by transactions that landed ok
    fee_lamports: int  # paid by every landed transaction (5,000 per signature + priority fee)
    transactions: int  # landed transactions
    priority_fee_lamports: int = 0  # the priority part of `fee_lamports`, as attached

    @property
    def funded(self) -> list[tuple[str, int]]:
        """(public key, lamports) of every funded wallet."""
        return [(w.public_key, w.lamports) for w in self.wallets if w.status is WalletStatus.FUNDED]

    @property
    def unfunded(self) -> list[tuple[str, int]]:
        """(public key, lamports) of every wallet known not to have received its amount."""
        return [
            (w.public_key, w.lamports)
            for w in self.wallets
            if w.status in (WalletStatus.FAILED, WalletStatus.NOT_SENT)
        ]

    @property
    def pending(self) -> list[tuple[str, int]]:
        """(public key, lamports) of every wallet whose transfer may still land."""
        return [
            (w.public_key, w.lamports) for w in self.wallets if w.status is WalletStatus.PENDING
        ]

    @property
    def complete(self) -> bool:
        """True when every wallet was funded."""
        return all(w.status is WalletStatus.FUNDED for w in self.wallets)

    @classmethod
    def from_record(cls, record: RunRecord) -> "MixResult":
        """The per-wallet report of `record`, as the ledger stands."""
        wallets = []
        for entry in record.plan:
            tx = record.transaction_of(entry.position)
            status, signature, error, evidence = WalletStatus.NOT_SENT, None, None, None
            if tx is not None and (last := tx.last_attempt) is not None:
                signature, error = last.signature, last.error
                if tx.state is TransactionState.LANDED_OK:
                    status, error = WalletStatus.FUNDED, None
                    landed = next(a for a in tx.attempts if a.state is AttemptState.LANDED_OK)
                    signature, evidence = landed.signature, landed.evidence
                elif last.is_open:  # signed or refused: an earlier copy may still land
                    status = WalletStatus.PENDING
                elif last.state is AttemptState.LANDED_FAILED or last.error is not None:
                    status = WalletStatus.FAILED  # failed on chain, or refused and expired
            wallets.append(
                WalletOutcome(entry.watched, entry.lamports, status, signature, error, evidence)
            )
        totals = record.totals
        return cls(
            run_id=record.run_id,
            mode=record.mode,
            wallets=tuple(wallets),
            sent_lamports=totals.sent_lamports,
            fee_lamports=totals.fee_lamports,
            transactions=totals.transactions,
            priority_fee_lamports=totals.priority_fee_lamports,
        )


class MixerFailed(PremixError):
    """The transfer engine stopped; the message lists what was and was not sent."""

    title = "Mixer operation failed"

    def __init__(
        self,
        reason: str,
        *,
        funded: Sequence[tuple[str, int]] = (),
        unfunded: Sequence[tuple[str, int]] = (),
        pending: Sequence[tuple[str, int]] = (),
        result: MixResult | None = None,
    ) -> None:
        self.reason = reason
        self.funded = list(funded)
        self.unfunded = list(unfunded)
        self.pending = list(pending)
        self.result = result  # the mixer's per-wallet report (signatures, errors), if it ran
        sent = sum(lamports for _, lamports in self.funded)
        detail = (
            f"{reason}. Sent {format_sol(sent)} to {len(self.funded)} wallet(s); "
            f"{len(self.unfunded)} wallet(s) not funded"
        )
        if self.pending:
            detail += f"; {len(self.pending)} wallet(s) pending (sent, may still land)"
        super().__init__(detail)

    @classmethod
    def from_result(cls, reason: str, result: MixResult) -> "MixerFailed":
        """The failure with `result`'s per-wallet report (funded, not funded, pending)."""
        return cls(
            reason,
            funded=result.funded,
            unfunded=result.unfunded,
            pending=result.pending,
            result=result,
        )


@dataclass(frozen=True)
class MixerProgress:
    done_wallets: int
    total_wallets: int
    sent_lamports: int
    message: str
