"""What `premix.rpc` answers with and how it retries (pure values; re-exported by `rpc`)."""

from dataclasses import dataclass
from enum import StrEnum

from solders.hash import Hash
from solders.pubkey import Pubkey


@dataclass(frozen=True)
class RetryPolicy:
    """How long one RPC call keeps trying before it raises `TransientError` (the defaults are
    the `PREMIX_RPC_RETRY_*` settings')."""

    tries: int = 6
    base_delay_seconds: float = 0.1
    max_delay_seconds: float = 2.0
    max_retry_after_seconds: float = 10.0

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `retry` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_seconds)
        return min(self.base_delay_seconds * float(2**retry), self.max_delay_seconds)


@dataclass(frozen=True)
class AccountInfo:
    """What premix reads of an account: its lamports, owning program and executable flag."""

    lamports: int
    owner: Pubkey
    executable: bool


@dataclass(frozen=True)
class ChainPoint:
    """A slot and its block height, as one node sees them at one commitment."""

    slot: int
    block_height: int


@dataclass(frozen=True)
class LatestBlockhash:
    blockhash: Hash
    last_valid_block_height: int  # the transaction can land in blocks up to this height
    context_slot: int = 0  # the `confirmed` bank's slot it was read from


class SendOutcome(StrEnum):
    ACCEPTED = "accepted"  # the node took it; it may land
    ALREADY_PROCESSED = "already_processed"  # an earlier copy of these bytes landed
    BLOCKHASH_NOT_FOUND = "blockhash_not_found"  # not taken now (expired or node behind)
    REJECTED = "rejected"  # preflight failed: this copy will not land (e.g. insufficient funds)


@dataclass(frozen=True)
class SendResult:
    outcome: SendOutcome
    error: str | None = None


@dataclass(frozen=True)
class SignatureStatus:
    """Where a signature is on chain: its slot, commitment reached and error (None if ok)."""

    slot: int
    confirmation: str  # "processed" | "confirmed" | "finalized"
    error: str | None

    @property
    def is_confirmed(self) -> bool:
        """True at `confirmed` or `finalized`: the outcome will not change."""
        return self.confirmation in ("confirmed", "finalized")
