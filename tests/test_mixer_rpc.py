"""SolanaRpc: bounded retries with backoff and Retry-After, batching, and how sends are read."""

from datetime import UTC, datetime

import pytest
from solana.rpc.commitment import Finalized
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from premix.errors import TransientError
from premix.localnet import Commitment, Localnet
from premix.localnet.chain import MAX_RECENT_BLOCKHASHES
from premix.rpc import (
    RetryPolicy,
    RpcRequestError,
    SendOutcome,
    SendResult,
    SolanaRpc,
    parse_retry_after,
)


class Sleeps:
    """Records the backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def client(net: Localnet, sleeps: Sleeps, tries: int = 4, **kwargs: object) -> SolanaRpc:
    policy = RetryPolicy(tries=tries, base_delay_seconds=0.25, max_delay_seconds=1.0)
    return SolanaRpc(net.url, retry=policy, sleep=sleeps, **kwargs)  # type: ignore[arg-type]


def signed_transfer(net: Localnet, payer: Keypair, lamports: int) -> bytes:
    blockhash = net.chain.block(Commitment.CONFIRMED).blockhash  # what preflight knows
    message = Message.new_with_blockhash(
        [
            transfer(
                TransferParams(
                    from_pubkey=payer.pubkey(), to_pubkey=Pubkey.new_unique(), lamports=lamports
                )
            )
        ],
        payer.pubkey(),
        blockhash,
    )
    return bytes(Transaction([payer], message, blockhash))


async def test_http_429_is_retried_after_the_servers_retry_after(localnet: Localnet) -> None:
    sleeps = Sleeps()
    localnet.advance(5)
    localnet.faults.inject("http_429", method="getBlockHeight", count=2, retry_after=3)
    async with client(localnet, sleeps) as rpc:
        assert await rpc.block_height() == localnet.chain.block(Commitment.CONFIRMED).height
        assert rpc.calls["getBlockHeight"] == 3
    assert sleeps.delays == [3.0, 3.0]


async def test_a_long_retry_after_is_capped(localnet: Localnet) -> None:
    sleeps = Sleeps()
    localnet.faults.inject("http_429", count=1, retry_after=3600)
    async with client(localnet, sleeps) as rpc:
        await rpc.latest_blockhash()
    assert sleeps.delays == [RetryPolicy().max_retry_after_seconds]


async def test_server_errors_back_off_exponentially_then_raise_a_transient_error(
    localnet: Localnet,
) -> None:
    sleeps = Sleeps()
    localnet.faults.inject("http_5xx", status=503)
    async with client(localnet, sleeps, tries=4) as rpc:
        with pytest.raises(TransientError) as raised:
            await rpc.balance(Pubkey.new_unique())
        assert rpc.calls["getBalance"] == 4
    assert str(raised.value) == (
        "Temporary failure: Solana RPC getBalance failed 4 times; last error: HTTP 503"
    )
    assert sleeps.delays == [0.25, 0.5, 1.0]


async def test_an_unreachable_endpoint_is_a_transient_error() -> None:
    sleeps = Sleeps()
    async with SolanaRpc("http://127.0.0.1:9", retry=RetryPolicy(tries=2), sleep=sleeps) as rpc:
        with pytest.raises(
            TransientError, match="getLatestBlockhash failed 2 times; last error: Connect"
        ):
            await rpc.latest_blockhash()


async def test_a_timeout_is_retried(localnet: Localnet) -> None:
    sleeps = Sleeps()
    localnet.faults.inject("latency", method="getBlockHeight", count=1, ms=500)
    async with client(localnet, sleeps, timeout_seconds=0.1) as rpc:
        assert await rpc.block_height() >= 0
        assert rpc.calls["getBlockHeight"] == 2
    assert sleeps.delays == [0.25]


async def test_statuses_are_batched_256_and_accounts_100_per_call(localnet: Localnet) -> None:
    funded = Keypair()
    localnet.airdrop(funded.pubkey(), 123_456_789)
    keys = [Pubkey.new_unique() for _ in range(149)] + [funded.pubkey()]
    async with SolanaRpc(localnet.url) as rpc:
        balances = await rpc.balances(keys)
        statuses = await rpc.signature_statuses([Signature.new_unique() for _ in range(300)])
        assert (rpc.calls["getMultipleAccounts"], rpc.calls["getSignatureStatuses"]) == (2, 2)
    assert balances == [0] * 149 + [123_456_789]
    assert statuses == [None] * 300


async def test_a_chain_point_and_the_slot_a_status_lookup_was_answered_at(
    localnet: Localnet,
) -> None:
    localnet.advance(40)
    async with SolanaRpc(localnet.url) as rpc:
        point = await rpc.chain_point(Finalized)
        seen_at, statuses = await rpc.signature_statuses_seen_at(
            [Signature.new_unique() for _ in range(300)], search_history=True
        )
        assert rpc.calls["getEpochInfo"] == 1
    finalized = localnet.chain.block(Commitment.FINALIZED)
    assert (point.slot, point.block_height) == (finalized.slot, finalized.height)
    assert seen_at == localnet.slot  # the node's processed slot, lowest over both batches
    assert statuses == [None] * 300


async def test_a_send_is_accepted_then_already_processed_and_confirmed_once(
    localnet: Localnet,
) -> None:
    payer = Keypair()
    localnet.airdrop(payer.pubkey(), 10**9)
    localnet.advance(2)
    wire = signed_transfer(localnet, payer, 1_000_000)
    signature = Transaction.from_bytes(wire).signatures[0]
    async with SolanaRpc(localnet.url) as rpc:
        assert await rpc.send_raw(wire) == SendResult(SendOutcome.ACCEPTED)
        localnet.advance(1)
        assert await rpc.send_raw(wire) == SendResult(SendOutcome.ALREADY_PROCESSED)
        [status] = await rpc.signature_statuses([signature])
    assert status is not None and status.is_confirmed and status.error is None
    assert localnet.balance(payer.pubkey()) == 10**9 - 1_000_000 - 5_000


async def test_a_send_whose_response_is_lost_is_retried_and_reads_as_sent(
    localnet: Localnet,
) -> None:
    payer = Keypair()
    localnet.airdrop(payer.pubkey(), 10**9)
    localnet.advance(2)
    localnet.faults.inject("lose_response", method="sendTransaction", count=1)
    async with client(localnet, Sleeps()) as rpc:
        result = await rpc.send_raw(signed_transfer(localnet, payer, 1_000_000))
        assert rpc.calls["sendTransaction"] == 2
    assert result == SendResult(SendOutcome.ALREADY_PROCESSED)
    assert localnet.balance(payer.pubkey()) == 10**9 - 1_000_000 - 5_000


async def test_a_send_refused_at_preflight_says_why_and_costs_nothing(localnet: Localnet) -> None:
    payer = Keypair()
    localnet.airdrop(payer.pubkey(), 10_000_000)
    localnet.advance(2)
    async with SolanaRpc(localnet.url) as rpc:
        result = await rpc.send_raw(signed_transfer(localnet, payer, 20_000_000))
        expired = signed_transfer(localnet, payer, 1)
        localnet.expire_blockhashes()
        stale = await rpc.send_raw(expired)
    assert result == SendResult(
        SendOutcome.REJECTED, "instruction 0 failed: insufficient lamports for the transfer"
    )
    assert stale == SendResult(SendOutcome.BLOCKHASH_NOT_FOUND, "blockhash not found")
    assert localnet.balance(payer.pubkey()) == 10_000_000


async def test_rent_and_fee_queries(localnet: Localnet) -> None:
    payer = Keypair()
    localnet.advance(2)
    async with SolanaRpc(localnet.url) as rpc:
        assert await rpc.minimum_balance_for_rent_exemption(0) == 890_880
        latest = await rpc.latest_blockhash()
        message = Message.new_with_blockhash(
            [
                transfer(
                    TransferParams(
                        from_pubkey=payer.pubkey(), to_pubkey=Pubkey.new_unique(), lamports=1
                    )
                )
            ],
            payer.pubkey(),
            latest.blockhash,
        )
        assert await rpc.fee_for_message(message) == 5_000
        localnet.advance(MAX_RECENT_BLOCKHASHES + 1)  # out of the blockhash queue, as agave's
        with pytest.raises(RpcRequestError, match="could not price the message"):
            await rpc.fee_for_message(message)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0)],
)
def test_retry_after_accepts_seconds_or_an_http_date(
    header: str | None, seconds: float | None
) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == seconds
