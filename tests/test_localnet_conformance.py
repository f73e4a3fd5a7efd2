"""Conformance: the same checks against localnet and, when `PREMIX_TEST_RPC_URL` is set, a real
validator (e.g. `solana-test-validator`), so localnet's result and error shapes can be compared:
transfers and commitments, preflight errors, fees, `minContextSlot` (-32016), the 1,232-byte
limit (-32602) and reads at `finalized` that agree with their context slot.

Only RPC is used here (no manual clock, no direct airdrops): accounts are funded with
`requestAirdrop` and commitments are awaited by polling, as against any validator.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment, Confirmed, Finalized, Processed
from solana.rpc.core import RPCException
from solana.rpc.jsonrpc import JsonRpcRequest, SolanaJsonRpcError
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.errors import InvalidParamsMessage, SendTransactionPreflightFailureMessage
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction
from solders.transaction_status import (
    TransactionConfirmationStatus,
    TransactionErrorInsufficientFundsForRent,
)

from premix.localnet import Localnet
from tests.fixtures.localnet import FAST_SLOT_MS, TEST_RPC_URL_ENV

SOL = 1_000_000_000
POLL_SECONDS = 0.05
WAIT_SECONDS = 60  # a real validator needs ~13 s to finalize


@pytest.fixture(params=["localnet", "validator"])
def node_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "validator":
        external = os.environ.get(TEST_RPC_URL_ENV)
        if not external:
            pytest.skip(f"{TEST_RPC_URL_ENV} not set")
        yield external
        return
    with Localnet(slot_ms=FAST_SLOT_MS) as net:
        yield net.url


@pytest.fixture
async def client(node_url: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(node_url, commitment=Confirmed) as rpc:
        yield rpc


async def wait_for_status(
    client: AsyncClient, signature: Signature, wanted: TransactionConfirmationStatus
) -> None:
    order = [
        TransactionConfirmationStatus.Processed,
        TransactionConfirmationStatus.Confirmed,
        TransactionConfirmationStatus.Finalized,
    ]
    for _ in range(int(WAIT_SECONDS / POLL_SECONDS)):
        status = (await client.get_signature_statuses([signature])).value[0]
        reached = None if status is None else status.confirmation_status
        if reached is not None and order.index(reached) >= order.index(wanted):
            return
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"{signature} did not reach {wanted}")


async def funded(client: AsyncClient, lamports: int = SOL) -> Keypair:
    wallet = Keypair()
    signature = (await client.request_airdrop(wallet.pubkey(), lamports)).value
    await wait_for_status(client, signature, TransactionConfirmationStatus.Confirmed)
    return wallet


async def transfer_tx(
    client: AsyncClient,
    sender: Keypair,
    recipient: Pubkey,
    lamports: int,
    commitment: Commitment = Confirmed,
) -> Transaction:
    blockhash = (await client.get_latest_blockhash(commitment)).value.blockhash
    ix = transfer(
        TransferParams(from_pubkey=sender.pubkey(), to_pubkey=recipient, lamports=lamports)
    )
    return Transaction([sender], Message([ix], sender.pubkey()), blockhash)


async def test_transfer_reaches_finalized_and_moves_exact_lamports(client: AsyncClient) -> None:
    sender, recipient = await funded(client), Keypair().pubkey()
    minimum = (await client.get_minimum_balance_for_rent_exemption(0)).value
    tx = await transfer_tx(client, sender, recipient, minimum)

    signature = (await client.send_transaction(tx)).value
    await wait_for_status(client, signature, TransactionConfirmationStatus.Finalized)

    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None and status.confirmations is None and status.err is None
    assert (await client.get_balance(recipient, Finalized)).value == minimum
    assert (await client.get_balance(sender.pubkey(), Finalized)).value == SOL - minimum - 5_000


async def test_rent_failure_is_a_preflight_error_with_insufficient_funds_for_rent(
    client: AsyncClient,
) -> None:
    sender = await funded(client)
    tx = await transfer_tx(client, sender, Keypair().pubkey(), 1_000)

    with pytest.raises(RPCException) as raised:
        await client.send_transaction(tx)

    error = raised.value.args[0]
    assert isinstance(error, SendTransactionPreflightFailureMessage)
    assert error.data.err == TransactionErrorInsufficientFundsForRent(1)
    assert "insufficient funds for rent" in error.message


async def test_resending_a_landed_transaction_is_already_processed(client: AsyncClient) -> None:
    sender = await funded(client)
    tx = await transfer_tx(client, sender, Keypair().pubkey(), 10_000_000)
    signature = (await client.send_transaction(tx)).value
    await wait_for_status(client, signature, TransactionConfirmationStatus.Confirmed)

    with pytest.raises(RPCException, match="already been processed"):
        await client.send_transaction(tx)


async def test_fee_for_a_one_signature_transfer_is_5000(client: AsyncClient) -> None:
    sender = await funded(client)
    tx = await transfer_tx(client, sender, Keypair().pubkey(), 10_000_000)

    assert (await client.get_fee_for_message(tx.message)).value == 5_000


async def test_latest_blockhash_is_valid_for_150_more_blocks(client: AsyncClient) -> None:
    height = (await client.get_block_height(Processed)).value
    latest = (await client.get_latest_blockhash(Processed)).value

    assert height <= latest.last_valid_block_height - 150 <= height + 5


async def test_raw_shapes_match_a_validator(node_url: str) -> None:
    calls = [
        {"jsonrpc": "2.0", "id": 1, "method": "getLatestBlockhash"},
        {"jsonrpc": "2.0", "id": 2, "method": "getBalance", "params": [str(Keypair().pubkey())]},
        {"jsonrpc": "2.0", "id": 3, "method": "getHealth"},
        {"jsonrpc": "2.0", "id": 4, "method": "getVersion"},
        {"jsonrpc": "2.0", "id": 5, "method": "noSuchMethod"},
        {
            "jsonrpc": "2.0",
            "id": 6,
            "method": "getSignatureStatuses",
            "params": [[str(Signature.default())]],
        },
    ]

    async with httpx.AsyncClient() as http:
        replies = {r["id"]: r for r in (await http.post(node_url, json=calls)).json()}

    assert set(replies[1]["result"]) == {"context", "value"}
    assert {"slot"} <= set(replies[1]["result"]["context"])
    assert set(replies[1]["result"]["value"]) == {"blockhash", "lastValidBlockHeight"}
    assert replies[2]["result"]["value"] == 0
    assert replies[3]["result"] == "ok"
    assert {"solana-core", "feature-set"} <= set(replies[4]["result"])
    assert replies[5]["error"]["code"] == -32601
    assert replies[5]["error"]["message"] == "Method not found"
    assert replies[6]["result"]["value"] == [None]


async def test_a_read_or_send_below_its_min_context_slot_is_minus_32016(
    client: AsyncClient,
) -> None:
    sender = await funded(client)
    tx = await transfer_tx(client, sender, Keypair().pubkey(), 10_000_000)
    far_ahead = (await client.get_slot(Processed)).value + 1_000_000
    wire = base64.b64encode(bytes(tx)).decode()
    ahead = {"minContextSlot": far_ahead}
    calls = [
        JsonRpcRequest(method="getBalance", params=[str(sender.pubkey()), ahead]),
        JsonRpcRequest(method="sendTransaction", params=[wire, {"encoding": "base64", **ahead}]),
    ]

    for request in calls:
        with pytest.raises(SolanaJsonRpcError) as raised:
            await client.send_rpc_request(request, Any)
        error = raised.value
        assert (error.code, error.message) == (-32016, "Minimum context slot has not been reached")
        assert set(error.data) == {"contextSlot"} and error.data["contextSlot"] < far_ahead
    status = (await client.get_signature_statuses([tx.signatures[0]])).value[0]
    assert status is None  # refused before it was sent


async def test_a_transaction_over_1232_bytes_is_refused_with_minus_32602(
    client: AsyncClient,
) -> None:
    sender = await funded(client)
    blockhash = (await client.get_latest_blockhash(Confirmed)).value.blockhash
    recipients = [Keypair().pubkey() for _ in range(24)]  # 24 transfers: about 1,500 bytes
    ixs = [
        transfer(TransferParams(from_pubkey=sender.pubkey(), to_pubkey=r, lamports=1_000_000))
        for r in recipients
    ]
    tx = Transaction([sender], Message(ixs, sender.pubkey()), blockhash)
    encoded = len(base64.b64encode(bytes(tx)))

    with pytest.raises(RPCException) as raised:
        await client.send_transaction(tx)

    error = raised.value.args[0]
    assert isinstance(error, InvalidParamsMessage)
    assert len(bytes(tx)) > 1_232 and encoded > 1_644
    assert error.message == (
        "base64 encoded solana_transaction::versioned::VersionedTransaction too large: "
        f"{encoded} bytes (max: encoded/raw 1644/1232)"
    )


async def test_a_finalized_read_shows_a_transfer_only_once_its_bank_contains_it(
    client: AsyncClient,
) -> None:
    sender, recipient = await funded(client), Keypair().pubkey()
    minimum = (await client.get_minimum_balance_for_rent_exemption(0)).value
    signature = (
        await client.send_transaction(await transfer_tx(client, sender, recipient, minimum))
    ).value
    await wait_for_status(client, signature, TransactionConfirmationStatus.Confirmed)
    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None

    reads = [await client.get_balance(recipient, c) for c in (Processed, Confirmed, Finalized)]

    for read in reads:
        expected = minimum if read.context.slot >= status.slot else 0
        assert read.value == expected, read
    assert reads[0].value == reads[1].value == minimum
