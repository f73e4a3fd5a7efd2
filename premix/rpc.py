"""The one Solana JSON-RPC wrapper: solana-py's `AsyncClient` plus bounded retries.

Transient failures (timeouts, connection errors, HTTP 429 honouring Retry-After, HTTP 5xx,
an unhealthy node) are retried with exponential backoff; when the budget is spent the call
raises `TransientError` and the queue retries the whole job, which resumes from the ledger.

Retrying is safe for every method here, `sendTransaction` included, because premix only ever
re-sends the same signed bytes: the same signature cannot land twice. A new blockhash (a new
signature) is the ledger's decision, never this module's.

A transaction's first send has preflight on, at `confirmed`: a transaction that would fail is
refused without landing and without a fee. Rebroadcasts of the same bytes skip preflight and
turn the node's own retries off (`maxRetries` 0: premix rebroadcasts on its own cadence). Every
send carries `minContextSlot`, the highest slot this client saw at the bank it is served from,
so a node behind the blockhash waits (-32016, retried) instead of refusing it. "Already
processed" counts as sent. Every context slot a response reports feeds `slots`, the client's
estimate of when the node's slots begin (`premix.slots`).
"""

import asyncio
import base64
import email.utils
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, TypeVar

import httpx2
import structlog
from pydantic import ValidationError
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment, Confirmed, Processed
from solana.rpc.core import RPCException
from solana.rpc.jsonrpc import JsonRpcErrorCode, JsonRpcRequest, SolanaJsonRpcError
from solders.account_decoder import UiAccountEncoding
from solders.commitment_config import CommitmentLevel
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc import responses
from solders.rpc.config import RpcAccountInfoConfig, RpcContextConfig
from solders.rpc.errors import (
    BlockNotAvailableMessage,
    InternalErrorMessage,
    MinContextSlotNotReachedMessage,
    NodeUnhealthyMessage,
)
from solders.rpc.requests import (
    Body,
    GetBalance,
    GetLatestBlockhash,
    GetMultipleAccounts,
    GetRecentPrioritizationFees,
)
from solders.rpc.responses import (
    GetBalanceResp,
    GetLatestBlockhashResp,
    GetMultipleAccountsResp,
    RPCResult,
)
from solders.signature import Signature
from solders.transaction_status import TransactionConfirmationStatus

from premix.errors import TransientError
from premix.metrics import RPC_REQUESTS
from premix.rpc_budget import RequestLimiter
from premix.rpc_types import (
    AccountInfo as AccountInfo,
)
from premix.rpc_types import (
    ChainPoint as ChainPoint,
)
from premix.rpc_types import (
    LatestBlockhash as LatestBlockhash,
)
from premix.rpc_types import (
    RetryPolicy as RetryPolicy,
)
from premix.rpc_types import (
    SendOutcome as SendOutcome,
)
from premix.rpc_types import (
    SendResult as SendResult,
)
from premix.rpc_types import (
    SignatureStatus as SignatureStatus,
)
from premix.settings import Settings
from premix.slots import SlotTimeline
from premix.transaction_errors import describe_transaction_error as describe_transaction_error

T = TypeVar("T")
Response = TypeVar("Response", bound=RPCResult)
log = structlog.get_logger(__name__)

MAX_SIGNATURES_PER_STATUS_CALL: Final = 256  # getSignatureStatuses limit
MAX_ACCOUNTS_PER_CALL: Final = 100  # getMultipleAccounts limit
_TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT_RPC_ERRORS = (
    NodeUnhealthyMessage,
    BlockNotAvailableMessage,
    MinContextSlotNotReachedMessage,
    InternalErrorMessage,
)
_TRANSIENT_RPC_CODES = frozenset(
    {
        JsonRpcErrorCode.INTERNAL_ERROR,
        JsonRpcErrorCode.SERVER_ERROR_NODE_UNHEALTHY,
        JsonRpcErrorCode.SERVER_ERROR_BLOCK_NOT_AVAILABLE,
        JsonRpcErrorCode.SERVER_ERROR_MIN_CONTEXT_SLOT_NOT_REACHED,
    }
)


class RpcRequestError(Exception):
    """The node answered a request with an error that retrying cannot fix (a bug or a
    misconfigured endpoint, never a chain condition)."""


class SolanaRpc:
    """The Solana JSON-RPC client premix uses; every method retries transient failures and
    raises `TransientError` when they persist, `RpcRequestError` for a request the node will
    never accept."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 10.0,
        retry: RetryPolicy | None = None,
        skip_preflight: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        limiter: RequestLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.limiter = limiter  # None: no RPC budget (every request goes at once)
        self.retry = retry or RetryPolicy()
        # Preflight on: a transaction that would fail is refused without a fee. Off only to
        # reproduce on-chain failures in tests.
        self.skip_preflight = skip_preflight
        # solana-py's own transport retry is off: every retry is counted and bounded here.
        self.client = AsyncClient(
            url, commitment=Confirmed, timeout=timeout_seconds, max_transport_retries=0
        )
        self.calls: Counter[str] = Counter()  # HTTP round trips per JSON-RPC method
        # The time every wait on the chain through this client follows (retries, status polls):
        # injectable, so tests can run the chain's clock and premix's on one virtual time.
        self.sleep = sleep
        self.clock = clock
        self.slots = SlotTimeline()

    @classmethod
    def from_settings(
        cls, settings: Settings, limiter: RequestLimiter | None = None
    ) -> "SolanaRpc":
        """Return a client for `settings.rpc_url` with its timeout, retry policy and budget."""
        return cls(
            settings.rpc_url,
            timeout_seconds=settings.rpc_timeout_seconds,
            retry=RetryPolicy(
                tries=settings.rpc_max_tries,
                base_delay_seconds=settings.rpc_retry_base_delay_seconds,
                max_delay_seconds=settings.rpc_retry_max_delay_seconds,
                max_retry_after_seconds=settings.rpc_retry_after_max_seconds,
            ),
            limiter=limiter,
        )

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self.client.close()

    async def __aenter__(self) -> "SolanaRpc":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def round_trips(self) -> int:
        """HTTP requests made so far, retries included."""
        return sum(self.calls.values())

    # --- reads ---

    async def latest_blockhash(self) -> LatestBlockhash:
        """Return the latest `confirmed` blockhash and the last block height it is valid for,
        from a node at or past the highest `confirmed` slot this client saw (minContextSlot:
        a lagging node would hand out an older one)."""
        config = RpcContextConfig(CommitmentLevel.Confirmed, self.slots.highest("confirmed"))
        body, sent_at = GetLatestBlockhash(config), self.clock()
        response = await self._call(
            "getLatestBlockhash", lambda: self._request(body, GetLatestBlockhashResp)
        )
        self._observe("confirmed", response.context.slot, sent_at)
        value, slot = response.value, response.context.slot
        return LatestBlockhash(value.blockhash, value.last_valid_block_height, slot)

    async def block_height(self, commitment: Commitment = Confirmed) -> int:
        """Return the current block height at `commitment`."""
        response = await self._call(
            "getBlockHeight", lambda: self.client.get_block_height(commitment)
        )
        return response.value

    async def chain_point(self, commitment: Commitment = Confirmed) -> ChainPoint:
        """Return the slot and block height at `commitment`, read together (getEpochInfo)."""
        sent_at = self.clock()
        response = await self._call("getEpochInfo", lambda: self.client.get_epoch_info(commitment))
        self._observe(str(commitment), response.value.absolute_slot, sent_at)
        return ChainPoint(response.value.absolute_slot, response.value.block_height)

    async def sync_slot_clock(
        self, slot_seconds: float, probes: int = 8, halvings: int = 3
    ) -> None:
        """Learn when the node's slots begin (`slots`): `probes` getSlot reads spread over one
        slot, then `halvings` more, each at the middle of what is still unknown."""
        for probe in range(probes + halvings):
            if probe >= probes and (bounds := self.slots.phase(slot_seconds)) is not None:
                await self.sleep((sum(bounds) / 2 - self.clock()) % slot_seconds)
            sent_at = self.clock()
            response = await self._call("getSlot", lambda: self.client.get_slot(Processed))
            self._observe("processed", response.value, sent_at)
            if probe + 1 < probes:
                await self.sleep(slot_seconds / probes)

    async def balance(self, pubkey: Pubkey, *, min_context_slot: int | None = None) -> int:
        """Return the `confirmed` balance of `pubkey` in lamports (0 for a missing account).

        `min_context_slot`: a node that has not reached that slot answers -32016 and the call
        is retried (with backoff) until it has, so a lagging node cannot show an old balance.
        """
        body = GetBalance(pubkey, RpcContextConfig(CommitmentLevel.Confirmed, min_context_slot))
        sent_at = self.clock()
        response = await self._call("getBalance", lambda: self._request(body, GetBalanceResp))
        self._observe("confirmed", response.context.slot, sent_at)
        return response.value

    async def balances(
        self, pubkeys: Sequence[Pubkey], *, min_context_slot: int | None = None
    ) -> list[int]:
        """Return the `confirmed` balances of `pubkeys` in lamports, in order (0 for missing
        accounts), with one getMultipleAccounts per 100 keys; `min_context_slot` as for
        `balance`."""
        accounts = await self.accounts(pubkeys, min_context_slot=min_context_slot)
        return [0 if account is None else account.lamports for account in accounts]

    async def accounts(
        self, pubkeys: Sequence[Pubkey], *, min_context_slot: int | None = None
    ) -> list[AccountInfo | None]:
        """Return the `confirmed` lamports, owner and executable flag of `pubkeys`, in order
        (None for an account that does not exist), one getMultipleAccounts per 100 keys."""
        config = RpcAccountInfoConfig(
            encoding=UiAccountEncoding.Base64,
            commitment=CommitmentLevel.Confirmed,
            min_context_slot=min_context_slot,
        )
        result: list[AccountInfo | None] = []
        for start in range(0, len(pubkeys), MAX_ACCOUNTS_PER_CALL):
            body = GetMultipleAccounts(list(pubkeys[start : start + MAX_ACCOUNTS_PER_CALL]), config)
            sent_at = self.clock()
            response = await self._call(
                "getMultipleAccounts", partial(self._request, body, GetMultipleAccountsResp)
            )
            self._observe("confirmed", response.context.slot, sent_at)
            result.extend(
                None
                if account is None
                else AccountInfo(account.lamports, account.owner, account.executable)
                for account in response.value
            )
        return result

    async def recent_prioritization_fees(self, accounts: Sequence[Pubkey]) -> list[int]:
        """Return the prioritization fee (micro-lamports per compute unit) of each recent slot
        (up to 150, oldest first) for transactions writing any of `accounts` (at most 128)."""
        body = GetRecentPrioritizationFees(list(accounts))
        parser = responses.GetRecentPrioritizationFeesResp
        request = partial(self._request, body, parser)
        response = await self._call("getRecentPrioritizationFees", request)
        return [fee.prioritization_fee for fee in sorted(response.value, key=lambda f: f.slot)]

    async def _request(self, body: Body, parser: type[Response]) -> Response:
        # solana-py's typed client has no minContextSlot parameters: send solders' request.
        return await self.client._provider.make_request(body, parser)

    async def minimum_balance_for_rent_exemption(self, size: int = 0) -> int:
        """Return the lamports an account of `size` data bytes needs to be rent-exempt."""
        response = await self._call(
            "getMinimumBalanceForRentExemption",
            lambda: self.client.get_minimum_balance_for_rent_exemption(size),
        )
        return response.value

    async def fee_for_message(self, message: Message) -> int:
        """Return the fee in lamports the cluster charges for `message`; raises
        `RpcRequestError` if the node cannot price it (its blockhash is unknown)."""
        response = await self._call(
            "getFeeForMessage",
            lambda: self.client.get_fee_for_message(message),  # type: ignore[arg-type]
        )
        if response.value is None:
            raise RpcRequestError("the node could not price the message (unknown blockhash)")
        return response.value

    async def signature_statuses(
        self, signatures: Sequence[Signature], *, search_history: bool = False
    ) -> list[SignatureStatus | None]:
        """Return each signature's status, None when the node has not seen it; batched 256 per
        call. `search_history` also searches beyond the recent status cache (use it before
        concluding that an expired transaction never landed)."""
        _, statuses = await self.signature_statuses_seen_at(
            signatures, search_history=search_history
        )
        return statuses

    async def signature_statuses_seen_at(
        self, signatures: Sequence[Signature], *, search_history: bool = False
    ) -> tuple[int, list[SignatureStatus | None]]:
        """Like `signature_statuses`, with the lowest slot the answering node(s) had reached
        (the responses' context slot): a node behind that slot may not know a landed one."""
        result: list[SignatureStatus | None] = []
        seen_at: int | None = None
        for start in range(0, len(signatures), MAX_SIGNATURES_PER_STATUS_CALL):
            chunk = list(signatures[start : start + MAX_SIGNATURES_PER_STATUS_CALL])
            sent_at = self.clock()
            response = await self._call(
                "getSignatureStatuses",
                partial(self.client.get_signature_statuses, chunk, search_history),
            )
            slot = response.context.slot
            self._observe("processed", slot, sent_at)  # statuses come from the processed bank
            seen_at = slot if seen_at is None else min(seen_at, slot)
            for status in response.value:
                if status is None:
                    result.append(None)
                    continue
                confirmation = _confirmation_name(status.confirmation_status)
                error = None if status.err is None else describe_transaction_error(status.err)
                result.append(SignatureStatus(status.slot, confirmation, error))
        return (seen_at if seen_at is not None else 0), result

    # --- send ---

    async def send_raw(self, wire: bytes) -> SendResult:
        """Send signed transaction bytes for the first time (preflight on, `confirmed`).

        Returns ACCEPTED, ALREADY_PROCESSED (an earlier copy landed), BLOCKHASH_NOT_FOUND or
        REJECTED (preflight failed; with the reason). Transient failures are retried with the
        same bytes; raises `TransientError` when they persist.
        """
        if self.skip_preflight:  # served from the processed bank, as a rebroadcast is
            return await self._send(wire, {"skipPreflight": True}, "processed", "confirmed")
        return await self._send(wire, {"preflightCommitment": "confirmed"}, "confirmed")

    async def rebroadcast_raw(self, wire: bytes) -> SendResult:
        """Send the same signed bytes again: preflight skipped (it was run at the first send) and
        the node's own retries off (`maxRetries` 0); results as for `send_raw` (a copy the node
        drops is ACCEPTED: only statuses tell)."""
        config = {"skipPreflight": True, "maxRetries": 0}
        return await self._send(wire, config, "processed", "confirmed")

    async def _send(self, wire: bytes, config: dict[str, Any], *banks: str) -> SendResult:
        seen = self.slots.highest(*banks)
        config = {
            "encoding": "base64",
            **config,
            **({} if seen is None else {"minContextSlot": seen}),
        }
        request = JsonRpcRequest(
            method="sendTransaction", params=[base64.b64encode(wire).decode("ascii"), config]
        )
        try:
            await self._call("sendTransaction", lambda: self.client.send_rpc_request(request, str))
        except SolanaJsonRpcError as e:
            return _classify_send_error(e)
        return SendResult(SendOutcome.ACCEPTED)

    def _observe(self, commitment: str, slot: int, sent_at: float) -> None:
        self.slots.observe(commitment, slot, sent_at, self.clock())

    # --- retries ---

    async def _call(self, method: str, request: Callable[[], Awaitable[T]]) -> T:
        last_error = ""
        for retry in range(self.retry.tries):
            if self.limiter is not None:  # each HTTP request, retries included, costs one
                await self.limiter.acquire()
            self.calls[method] += 1
            outcome = RPC_REQUESTS.labels(method=method, outcome="error")  # until proven else
            try:
                answer = await request()
                RPC_REQUESTS.labels(method=method, outcome="ok").inc()
                return answer
            except SolanaRpcException as e:
                retry_after = _transient_http(e)
                last_error = _describe_http(e)
            except RPCException as e:
                error = e.args[0] if e.args else None
                if not isinstance(error, _TRANSIENT_RPC_ERRORS):
                    outcome.inc()
                    raise RpcRequestError(f"{method}: {error}") from e
                retry_after, last_error = None, type(error).__name__
            except SolanaJsonRpcError as e:
                if e.code not in _TRANSIENT_RPC_CODES:
                    outcome.inc()
                    raise
                retry_after, last_error = None, f"JSON-RPC error {e.code}"
            except (ValidationError, ValueError) as e:  # a body that is not a JSON-RPC answer
                retry_after, last_error = None, f"unreadable response ({type(e).__name__})"
            except BaseException:
                outcome.inc()
                raise
            RPC_REQUESTS.labels(method=method, outcome="transient").inc()
            if retry + 1 < self.retry.tries:
                delay = self.retry.delay(retry, retry_after)
                log.info("rpc_retry", method=method, error=last_error, delay_seconds=delay)
                await self.sleep(delay)
        raise TransientError(
            f"Solana RPC {method} failed {self.retry.tries} times; last error: {last_error}"
        )


def _transient_http(error: SolanaRpcException) -> float | None:
    """Return the Retry-After hint of a transient HTTP failure; re-raise a permanent one."""
    cause = error.__cause__
    if isinstance(cause, httpx2.HTTPStatusError):
        status = cause.response.status_code
        if status not in _TRANSIENT_HTTP_STATUSES:
            raise RpcRequestError(f"HTTP {status} from the Solana RPC endpoint") from error
        return parse_retry_after(cause.response.headers.get("Retry-After"))
    return None  # transport errors: timeouts, refused or reset connections


def _describe_http(error: SolanaRpcException) -> str:
    cause = error.__cause__
    if isinstance(cause, httpx2.HTTPStatusError):
        return f"HTTP {cause.response.status_code}"
    return type(cause).__name__ if cause is not None else type(error).__name__


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _classify_send_error(error: SolanaJsonRpcError) -> SendResult:
    data = error.data if isinstance(error.data, dict) else {}
    err = data.get("err")
    text = f"{err} {error.message}".lower()
    if err == "AlreadyProcessed" or "already been processed" in text:
        return SendResult(SendOutcome.ALREADY_PROCESSED)
    if err == "BlockhashNotFound" or "blockhash not found" in text:
        return SendResult(SendOutcome.BLOCKHASH_NOT_FOUND, "blockhash not found")
    if error.code in (
        JsonRpcErrorCode.SERVER_ERROR_SEND_TRANSACTION_PREFLIGHT_FAILURE,
        JsonRpcErrorCode.SERVER_ERROR_TRANSACTION_SIGNATURE_VERIFICATION_FAILURE,
        JsonRpcErrorCode.SERVER_ERROR_TRANSACTION_PRECOMPILE_VERIFICATION_FAILURE,
    ):
        reason = describe_transaction_error(err) if err is not None else error.message
        return SendResult(SendOutcome.REJECTED, reason)
    raise RpcRequestError(f"sendTransaction: JSON-RPC error {error.code}: {error.message}")


def _confirmation_name(status: TransactionConfirmationStatus | None) -> str:
    if status == TransactionConfirmationStatus.Finalized:
        return "finalized"
    if status == TransactionConfirmationStatus.Confirmed:
        return "confirmed"
    return "processed"
