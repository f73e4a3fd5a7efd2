"""Each localnet fault does what it says, as seen by the real solana-py AsyncClient; and the
request interceptors tests use to act at a precise point of a request (`Localnet.intercept`)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import httpx2
import pytest
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Processed
from solana.rpc.core import RPCException
from solana.rpc.jsonrpc import JsonRpcRequest, SolanaJsonRpcError
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction
from solders.transaction_status import TransactionConfirmationStatus

from premix.localnet import (
    DropRequest,
    InterceptedRequest,
    Localnet,
    Stage,
    TransactionOutcome,
)

SOL = 1_000_000_000
LAMPORTS = 10_000_000


@pytest.fixture
async def client(localnet: Localnet) -> AsyncIterator[AsyncClient]:
    """A client that surfaces transport errors instead of retrying them once."""
    async with AsyncClient(localnet.url, commitment=Processed, max_transport_retries=0) as rpc:
        yield rpc


async def signed_transfer(
    localnet: Localnet, client: AsyncClient
) -> tuple[Transaction, Keypair, Pubkey]:
    sender, recipient = Keypair(), Keypair().pubkey()
    localnet.airdrop(sender.pubkey(), SOL)
    blockhash = (await client.get_latest_blockhash(Processed)).value.blockhash
    ix = transfer(
        TransferParams(from_pubkey=sender.pubkey(), to_pubkey=recipient, lamports=LAMPORTS)
    )
    return Transaction([sender], Message([ix], sender.pubkey()), blockhash), sender, recipient


def http_error(raised: pytest.ExceptionInfo[SolanaRpcException]) -> httpx2.HTTPStatusError:
    cause = raised.value.__cause__
    assert isinstance(cause, httpx2.HTTPStatusError)
    return cause


async def test_http_429_carries_retry_after_and_processes_nothing(
    localnet: Localnet, client: AsyncClient
) -> None:
    tx, _sender, recipient = await signed_transfer(localnet, client)
    localnet.faults.inject("http_429", method="sendTransaction", count=1, retry_after=3)

    with pytest.raises(SolanaRpcException) as raised:
        await client.send_transaction(tx)

    response = http_error(raised).response
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert localnet.balance(recipient) == 0
    assert tx.signatures[0] not in localnet.transaction_log

    await client.send_transaction(tx)  # the next call goes through
    assert localnet.balance(recipient) == LAMPORTS


async def test_http_5xx_uses_the_given_status_for_the_next_n_calls(
    localnet: Localnet, client: AsyncClient
) -> None:
    wallet = Keypair().pubkey()
    localnet.airdrop(wallet, SOL)
    localnet.faults.inject("http_5xx", method="getBalance", count=2, status=502)

    for _ in range(2):
        with pytest.raises(SolanaRpcException) as raised:
            await client.get_balance(wallet)
        assert http_error(raised).response.status_code == 502

    assert (await client.get_balance(wallet)).value == SOL


async def test_http_5xx_defaults_to_503_and_spares_other_methods(
    localnet: Localnet, client: AsyncClient
) -> None:
    localnet.faults.inject("http_5xx", method="getSlot")

    assert (await client.get_block_height(Processed)).value == 0
    with pytest.raises(SolanaRpcException) as raised:
        await client.get_slot()
    assert http_error(raised).response.status_code == 503


async def test_latency_delays_the_response_past_a_client_timeout(localnet: Localnet) -> None:
    localnet.faults.inject("latency", method="getSlot", count=1, ms=1_000)

    async with AsyncClient(localnet.url, timeout=0.1, max_transport_retries=0) as impatient:
        with pytest.raises(SolanaRpcException) as raised:
            await impatient.get_slot()
        assert isinstance(raised.value.__cause__, httpx2.TimeoutException)

        assert (await impatient.get_slot(Processed)).value == 0  # the rule is used up


async def test_drop_send_returns_the_signature_but_the_transfer_never_lands(
    localnet: Localnet, client: AsyncClient
) -> None:
    tx, sender, recipient = await signed_transfer(localnet, client)
    localnet.faults.inject("drop_send", count=1)

    signature = (await client.send_transaction(tx)).value
    localnet.advance(40)

    assert signature == tx.signatures[0]
    assert (await client.get_signature_statuses([signature])).value == [None]
    assert localnet.balance(recipient) == 0
    assert localnet.balance(sender.pubkey()) == SOL
    record = localnet.transaction_log[signature]
    assert (record.outcome, record.landed_slot) == (TransactionOutcome.DROPPED, None)


async def test_a_dropped_transaction_can_be_resent_while_its_blockhash_is_valid(
    localnet: Localnet, client: AsyncClient
) -> None:
    tx, _, recipient = await signed_transfer(localnet, client)
    localnet.faults.inject("drop_send", count=1)
    await client.send_transaction(tx)

    await client.send_transaction(tx)

    assert localnet.balance(recipient) == LAMPORTS
    assert localnet.transaction_log[tx.signatures[0]].landed


async def test_lose_response_lands_the_transfer_but_the_client_sees_a_connection_error(
    localnet: Localnet, client: AsyncClient
) -> None:
    tx, _sender, recipient = await signed_transfer(localnet, client)
    localnet.faults.inject("lose_response", method="sendTransaction", count=1)

    with pytest.raises(SolanaRpcException) as raised:
        await client.send_transaction(tx)

    assert isinstance(raised.value.__cause__, httpx2.TransportError)
    assert localnet.balance(recipient) == LAMPORTS
    status = (await client.get_signature_statuses([tx.signatures[0]])).value[0]
    assert status is not None and status.err is None


async def test_lose_response_with_the_clients_default_retry_meets_already_processed(
    localnet: Localnet,
) -> None:
    """solana-py retries a transport error once: the resend is refused, the transfer paid once."""
    async with AsyncClient(localnet.url, commitment=Processed) as retrying:
        tx, sender, recipient = await signed_transfer(localnet, retrying)
        localnet.faults.inject("lose_response", method="sendTransaction", count=1)

        with pytest.raises(RPCException) as raised:
            await retrying.send_transaction(tx)

    error = raised.value.args[0]
    assert isinstance(error, SendTransactionPreflightFailureMessage)
    assert (
        error.message
        == "Transaction simulation failed: This transaction has already been processed"
    )
    assert localnet.balance(recipient) == LAMPORTS
    assert localnet.balance(sender.pubkey()) == SOL - LAMPORTS - 5_000
    assert localnet.stats.calls["sendTransaction"] == 2


async def test_expire_blockhash_makes_the_blockhash_in_hand_expire(
    localnet: Localnet, client: AsyncClient
) -> None:
    tx, _, recipient = await signed_transfer(localnet, client)
    last_valid = (await client.get_latest_blockhash(Processed)).value.last_valid_block_height
    localnet.faults.inject("expire_blockhash", method="sendTransaction", count=1)

    with pytest.raises(RPCException) as raised:
        await client.send_transaction(tx)

    assert raised.value.args[0].message == "Transaction simulation failed: Blockhash not found"
    assert (await client.get_block_height(Processed)).value > last_valid
    assert localnet.balance(recipient) == 0


async def test_expire_blockhash_without_preflight_drops_the_transaction(
    localnet: Localnet, client: AsyncClient
) -> None:
    tx, _, recipient = await signed_transfer(localnet, client)
    localnet.faults.inject("expire_blockhash", method="sendTransaction", count=1)

    signature = (await client.send_transaction(tx, opts=TxOpts(skip_preflight=True))).value

    assert (await client.get_signature_statuses([signature])).value == [None]
    assert localnet.transaction_log[signature].outcome is TransactionOutcome.DROPPED
    assert localnet.balance(recipient) == 0


async def test_probability_faults_repeat_for_the_same_seed() -> None:
    def pattern(seed: int) -> list[int]:
        with Localnet(slot_ms=None, seed=seed) as net:
            net.faults.inject("http_5xx", method="getHealth", probability=0.5)
            with httpx.Client() as http:
                call = {"jsonrpc": "2.0", "id": 1, "method": "getHealth"}
                return [http.post(net.url, json=call).status_code for _ in range(30)]

    first, again = pattern(seed=7), pattern(seed=7)

    assert first == again
    assert set(first) == {200, 503}


async def test_cleared_faults_stop_and_a_removed_rule_stops(
    localnet: Localnet, client: AsyncClient
) -> None:
    rule = localnet.faults.inject("http_5xx", method="getSlot")
    localnet.faults.inject("http_429", method="getBlockHeight")

    localnet.faults.remove(rule)
    assert (await client.get_slot(Processed)).value == 0
    with pytest.raises(SolanaRpcException):
        await client.get_block_height()

    localnet.faults.clear()
    assert (await client.get_block_height(Processed)).value == 0


async def test_a_fault_on_one_method_hits_a_batch_that_contains_it(localnet: Localnet) -> None:
    localnet.faults.inject("http_429", method="getSlot", count=1)
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "getHealth"},
        {"jsonrpc": "2.0", "id": 2, "method": "getSlot"},
    ]

    async with httpx.AsyncClient() as http:
        refused = await http.post(localnet.url, json=batch)
        answered = await http.post(localnet.url, json=batch)

    assert refused.status_code == 429
    assert [reply["result"] for reply in answered.json()] == ["ok", 0]
    assert localnet.stats.http_requests == 2
    assert localnet.stats.calls["getSlot"] == 2


def test_unknown_fault_kinds_and_parameters_are_refused(localnet: Localnet) -> None:
    with pytest.raises(ValueError):
        localnet.faults.inject("meteor_strike")
    with pytest.raises(ValueError, match="needs parameter"):
        localnet.faults.inject("latency")
    with pytest.raises(ValueError, match="unknown parameter"):
        localnet.faults.inject("http_429", status=500)
    with pytest.raises(ValueError, match="between 500 and 599"):
        localnet.faults.inject("http_5xx", status=404)


# -- a lagging node (stale_read) and one without history (no_history) ---------------------------


async def test_stale_read_answers_every_read_from_the_bank_slots_ago(
    localnet: Localnet, client: AsyncClient
) -> None:
    old_tx, _, _ = await signed_transfer(localnet, client)
    old = (await client.send_transaction(old_tx)).value  # lands in slot 0
    localnet.advance(8)
    new_tx, sender, recipient = await signed_transfer(localnet, client)
    new = (await client.send_transaction(new_tx)).value  # lands in slot 8
    localnet.advance(2)
    lagging = localnet.chain.block(behind=3)
    localnet.faults.inject("stale_read", slots=3)

    slot = (await client.get_slot(Processed)).value
    confirmed_height = (await client.get_block_height(Confirmed)).value
    latest = await client.get_latest_blockhash(Processed)
    balance = await client.get_balance(recipient)
    account = await client.get_account_info(sender.pubkey())
    accounts = await client.get_multiple_accounts([sender.pubkey(), recipient])
    statuses = await client.get_signature_statuses([old, new])
    fee = await client.get_fee_for_message(new_tx.message)

    assert (slot, confirmed_height) == (7, 6)
    assert (latest.context.slot, latest.value.blockhash) == (7, lagging.blockhash)
    assert latest.value.last_valid_block_height == 7 + 150
    assert (balance.context.slot, balance.value) == (7, 0)
    assert (account.context.slot, account.value) == (7, None)
    assert (accounts.context.slot, accounts.value) == (7, [None, None])
    assert statuses.context.slot == 7
    old_status, new_status = statuses.value
    assert new_status is None  # landed after the node's slot
    assert old_status is not None
    assert (old_status.slot, old_status.confirmations) == (0, 7)
    assert old_status.confirmation_status == TransactionConfirmationStatus.Confirmed
    assert (fee.context.slot, fee.value) == (7, None)  # its blockhash is newer than the bank
    localnet.faults.clear()
    assert (await client.get_balance(recipient)).value == LAMPORTS


async def test_stale_read_below_min_context_slot_is_minus_32016_and_a_send_still_lands(
    localnet: Localnet, client: AsyncClient
) -> None:
    localnet.advance(10)
    tx, _, recipient = await signed_transfer(localnet, client)
    localnet.faults.inject("stale_read", slots=4)
    wire = base64.b64encode(bytes(tx)).decode()

    at_tip = {"commitment": "processed", "minContextSlot": 10}
    unchecked_send = {"encoding": "base64", "skipPreflight": True, "minContextSlot": 10}

    with pytest.raises(SolanaJsonRpcError) as read:
        await client.send_rpc_request(JsonRpcRequest(method="getSlot", params=[at_tip]), int)
    with pytest.raises(SolanaJsonRpcError) as send:
        request = JsonRpcRequest(method="sendTransaction", params=[wire, unchecked_send])
        await client.send_rpc_request(request, str)
    with pytest.raises(RPCException) as preflight:
        await client.send_transaction(tx)  # its blockhash is newer than the lagging bank

    assert (read.value.code, read.value.data) == (-32016, {"contextSlot": 6})
    assert (send.value.code, send.value.data) == (-32016, {"contextSlot": 6})
    assert preflight.value.args[0].message == "Transaction simulation failed: Blockhash not found"
    landed = await client.send_transaction(tx, opts=TxOpts(skip_preflight=True))
    assert landed.value == tx.signatures[0]
    assert localnet.balance(recipient) == LAMPORTS  # forwarded to the leader all the same


async def test_stale_read_spares_calls_without_a_bank_and_counts_only_reads(
    localnet: Localnet, client: AsyncClient
) -> None:
    localnet.advance(5)
    rule = localnet.faults.inject("stale_read", count=2, slots=5)

    assert await client.is_connected()  # getHealth: not a read of a bank, the rule stays
    assert (await client.get_minimum_balance_for_rent_exemption(0)).value == 890_880
    lagging = [(await client.get_slot(Processed)).value for _ in range(3)]

    assert lagging == [0, 0, 5]
    assert rule.fired == 2


async def test_stale_read_with_probability_lags_some_reads_repeatably() -> None:
    def slots(seed: int) -> list[int]:
        with Localnet(slot_ms=None, seed=seed) as net:
            net.advance(3)
            net.faults.inject("stale_read", probability=0.5, slots=2)
            with httpx.Client() as http:
                call = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "getSlot",
                    "params": [{"commitment": "processed"}],
                }
                return [http.post(net.url, json=call).json()["result"] for _ in range(30)]

    first = slots(seed=3)

    assert first == slots(seed=3)
    assert set(first) == {1, 3}


async def test_no_history_finds_only_the_last_150_slots_even_when_history_is_searched(
    localnet: Localnet, client: AsyncClient
) -> None:
    old = localnet.airdrop(Keypair().pubkey(), SOL)  # slot 0
    localnet.advance(1)
    edge = localnet.airdrop(Keypair().pubkey(), SOL)  # slot 1
    localnet.advance(150)  # slot 151: `edge` is 150 slots old, `old` 151
    localnet.faults.inject("no_history")

    cache_only = (await client.get_signature_statuses([old, edge])).value
    searched = (
        await client.get_signature_statuses([old, edge], search_transaction_history=True)
    ).value
    localnet.faults.clear()
    with_history = (await client.get_signature_statuses([old, edge])).value

    assert cache_only[0] is None and searched[0] is None
    assert cache_only[1] is not None and searched[1] is not None
    assert (searched[1].slot, searched[1].confirmations) == (1, None)
    assert with_history[0] is not None and with_history[0].slot == 0


def test_stale_read_and_no_history_refuse_bad_parameters(localnet: Localnet) -> None:
    with pytest.raises(ValueError, match="stale_read needs parameter"):
        localnet.faults.inject("stale_read")
    for slots in (0, 151, "3", True):
        with pytest.raises(ValueError, match="between 1 and 150"):
            localnet.faults.inject("stale_read", slots=slots)
    with pytest.raises(ValueError, match="stale_read does not apply to getHealth"):
        localnet.faults.inject("stale_read", method="getHealth", slots=1)
    with pytest.raises(ValueError, match="no_history does not apply to getBalance"):
        localnet.faults.inject("no_history", method="getBalance")
    with pytest.raises(ValueError, match="unknown parameter"):
        localnet.faults.inject("no_history", slots=3)


# -- interceptors ------------------------------------------------------------------------------


async def test_an_interceptor_sees_each_request_received_then_answered_with_path_and_signatures(
    localnet: Localnet, client: AsyncClient
) -> None:
    tx, _, recipient = await signed_transfer(localnet, client)
    seen: list[tuple[str, Stage, tuple[str, ...], bool]] = []

    def watch(request: InterceptedRequest) -> None:
        landed = localnet.balance(recipient) == LAMPORTS
        seen.append((request.path, request.stage, request.methods, landed))
        if request.calls("sendTransaction"):
            assert request.signatures == (tx.signatures[0],)
        else:
            assert request.signatures == ()

    localnet.intercept(watch)
    await client.send_transaction(tx)
    async with AsyncClient(f"{localnet.url}/worker-7") as named:
        await named.get_slot()
    localnet.stop_intercepting(watch)
    await client.get_slot()

    assert seen == [
        ("/", Stage.RECEIVED, ("sendTransaction",), False),
        ("/", Stage.ANSWERED, ("sendTransaction",), True),
        ("/worker-7", Stage.RECEIVED, ("getSlot",), True),
        ("/worker-7", Stage.ANSWERED, ("getSlot",), True),
    ]


async def test_a_request_dropped_when_received_is_never_processed(
    localnet: Localnet, client: AsyncClient
) -> None:
    tx, sender, recipient = await signed_transfer(localnet, client)

    def drop_sends(request: InterceptedRequest) -> None:
        if request.stage is Stage.RECEIVED and request.calls("sendTransaction"):
            raise DropRequest

    localnet.intercept(drop_sends)
    with pytest.raises(SolanaRpcException) as raised:
        await client.send_transaction(tx)

    assert isinstance(raised.value.__cause__, httpx2.TransportError)
    assert tx.signatures[0] not in localnet.transaction_log
    assert (localnet.balance(recipient), localnet.balance(sender.pubkey())) == (0, SOL)
    assert (await client.get_slot(Processed)).value == 0  # other methods pass


async def test_a_request_dropped_when_answered_was_processed_but_gets_no_response(
    localnet: Localnet, client: AsyncClient
) -> None:
    tx, _, recipient = await signed_transfer(localnet, client)

    def drop_answers(request: InterceptedRequest) -> None:
        if request.stage is Stage.ANSWERED:
            raise DropRequest

    localnet.intercept(drop_answers)
    with pytest.raises(SolanaRpcException) as raised:
        await client.send_transaction(tx)

    assert isinstance(raised.value.__cause__, httpx2.TransportError)
    assert localnet.transaction_log[tx.signatures[0]].landed
    assert localnet.balance(recipient) == LAMPORTS


async def test_an_interceptor_sees_requests_that_faults_then_refuse(
    localnet: Localnet, client: AsyncClient
) -> None:
    stages: list[Stage] = []
    localnet.intercept(lambda request: stages.append(request.stage))
    localnet.faults.inject("http_5xx", method="getSlot", count=1)

    with pytest.raises(SolanaRpcException):
        await client.get_slot()

    assert stages == [Stage.RECEIVED]  # refused by the fault: never answered
