"""What a mixer run reports: per-wallet outcomes, totals and progress. Built from the ledger."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from premix.ledger import AttemptState, RunRecord, TransactionState


class WalletStatus(StrEnum):
    FUNDED = "funded"  # its transaction landed without error
    FAILED = "failed"  # its last attempt failed on chain or was refused by the node
    PENDING = "pending"  # signed and maybe sent, not settled: it may still land (a re-run settles)
    NOT_SENT = "not_sent"  # never landed (not signed yet, or every attempt expired)


@dataclass(frozen=True)
class WalletOutcome:
    public_key: str
    lamports: int
    status: WalletStatus
    signature: str | None = None  # the landed one when funded, else the newest attempt's
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (camel case not needed: the worker's result is internal)."""
        return {
            "public_key": self.public_key,
            "lamports": self.lamports,
            "status": self.status.value,
            "signature": self.signature,
            "error": self.error,
        }


@dataclass(frozen=True)
class MixResult:
    run_id: str
    mode: str
    wallets: tuple[WalletOutcome, ...]
    sent_lamports: int  # transferred by transactions that landed ok
    fee_lamports: int  # paid by every landed transaction (5,000 per signature + priority fee)
    transactions: int  # landed transactions

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: ints, strings, lists."""
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "wallets": [w.to_dict() for w in self.wallets],
            "sent_lamports": self.sent_lamports,
            "fee_lamports": self.fee_lamports,
            "transactions": self.transactions,
        }


@dataclass(frozen=True)
class MixerProgress:
    done_wallets: int
    total_wallets: int
    sent_lamports: int
    message: str


def result_from_record(record: RunRecord) -> MixResult:
    """The per-wallet report of `record`, as the ledger stands."""
    wallets = []
    for entry in record.plan:
        tx = record.transaction_of(entry.position)
        status, signature, error = WalletStatus.NOT_SENT, None, None
        if tx is not None and (last := tx.last_attempt) is not None:
            signature, error = last.signature, last.error
            if tx.state is TransactionState.LANDED_OK:
                status, error = WalletStatus.FUNDED, None
                signature = next(
                    a.signature for a in tx.attempts if a.state is AttemptState.LANDED_OK
                )
            elif last.state in (AttemptState.LANDED_FAILED, AttemptState.REJECTED):
                status = WalletStatus.FAILED
            elif last.is_open:
                status = WalletStatus.PENDING
        wallets.append(WalletOutcome(entry.recipient, entry.lamports, status, signature, error))
    totals = record.totals
    return MixResult(
        run_id=record.run_id,
        mode=record.mode,
        wallets=tuple(wallets),
        sent_lamports=totals.sent_lamports,
        fee_lamports=totals.fee_lamports,
        transactions=totals.transactions,
    )
