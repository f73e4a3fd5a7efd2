"""localnet as strict as a validator, always (no fault switched on), through the real solana-py
AsyncClient: reads at `confirmed` and `finalized` see those banks' accounts, getFeeForMessage
prices in its commitment's bank, `minContextSlot` is honoured by every read and by
sendTransaction (-32016), and transactions over 1,232 bytes are refused (-32602) with agave's
messages. The clock is manual: each test steps it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import base58
import httpx
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.async_http_provider import AsyncHTTPProvider
from solana.rpc.commitment import Confirmed, Finalized, Processed
from solana.rpc.core import RPCException
from solana.rpc.jsonrpc import JsonRpcRequest, SolanaJsonRpcError
from solana.rpc.models import TxOpts
from solders.commitment_config import CommitmentLevel
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.config import RpcContextConfig
from solders.rpc.errors import InvalidParamsMessage, MinContextSlotNotReachedMessage
from solders.rpc.requests import GetBalance
from solders.rpc.responses import GetBalanceResp
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction

from premix.localnet import Localnet
from premix.localnet.chain import ACCOUNT_HISTORY_SLOTS, MAX_RECENT_BLOCKHASHES

SOL = 1_000_000_000
LAMPORTS = 10_000_000
MIN_CONTEXT_MESSAGE = "Minimum context slot has not been reached"
TRANSACTION_TYPE = "solana_transaction::versioned::VersionedTransaction"


@pytest.fixture
async def client(localnet: Localnet) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(localnet.url, commitment=Processed) as rpc:
        yield rpc


def transfer_tx(sender: Keypair, recipient: Pubkey, blockhash: Hash) -> Transaction:
    ix = transfer(
        TransferParams(from_pubkey=sender.pubkey(), to_pubkey=recipient, lamports=LAMPORTS)
    )
    return Transaction([sender], Message([ix], sender.pubkey()), blockhash)


def padded_tx(sender: Keypair, blockhash: Hash, size: int) -> Transaction:
    """A transfer plus one instruction of filler data, exactly `size` bytes on the wire."""
    filler_program = Pubkey.new_unique()

    def build(filler: int) -> Transaction:
        ix = transfer(
            TransferParams(from_pubkey=sender.pubkey(), to_pubkey=sender.pubkey(), lamports=1)
        )
        pad = Instruction(filler_program, bytes(filler), [])
        return Transaction([sender], Message([ix, pad], sender.pubkey()), blockhash)

    base = len(bytes(build(0)))
    for filler in (size - base, size - base - 1):  # from 128 bytes the length takes 2 bytes
        tx = build(filler)
        if len(bytes(tx)) == size:
            return tx
    raise AssertionError(f"no filler gives {size} bytes")


async def call(client: AsyncClient, method: str, *params: Any) -> Any:
    """One raw call through the client; its `result`, or `SolanaJsonRpcError`."""
    return await client.send_rpc_request(JsonRpcRequest(method=method, params=list(params)), Any)


async def landed_transfer(localnet: Localnet, client: AsyncClient) -> tuple[Keypair, Pubkey]:
    """A sender funded in slot 0 and a recipient credited by a transfer landed in slot 1."""
    sender, recipient = Keypair(), Keypair().pubkey()
    localnet.airdrop(sender.pubkey(), SOL)
    localnet.advance(1)
    blockhash = (await client.get_latest_blockhash(Processed)).value.blockhash
    await client.send_transaction(transfer_tx(sender, recipient, blockhash))
    return sender, recipient


# -- reads at the requested commitment ---------------------------------------------------------


async def test_get_balance_at_each_commitment_is_that_banks_balance_and_context_slot(
    localnet: Localnet, client: AsyncClient
) -> None:
    _, recipient = await landed_transfer(localnet, client)

    async def balances() -> list[tuple[int, int]]:
        replies = [
            await client.get_balance(recipient, c) for c in (Processed, Confirmed, Finalized)
        ]
        return [(reply.context.slot, reply.value) for reply in replies]

    assert await balances() == [(1, LAMPORTS), (0, 0), (0, 0)]
    localnet.advance(1)
    assert await balances() == [(2, LAMPORTS), (1, LAMPORTS), (0, 0)]
    localnet.advance(30)
    assert await balances() == [(32, LAMPORTS), (31, LAMPORTS), (0, 0)]
    localnet.advance(1)
    assert await balances() == [(33, LAMPORTS), (32, LAMPORTS), (1, LAMPORTS)]


async def test_account_reads_at_finalized_show_the_sender_before_its_transfer(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender, recipient = await landed_transfer(localnet, client)
    localnet.advance(2)

    info = await client.get_account_info(sender.pubkey(), Finalized)
    missing = await client.get_account_info(recipient, Finalized)
    accounts = await client.get_multiple_accounts([sender.pubkey(), recipient], Confirmed)

    assert info.context.slot == 0
    assert info.value is not None and info.value.lamports == SOL
    assert (missing.context.slot, missing.value) == (0, None)
    assert accounts.context.slot == 2
    assert [a.lamports if a else None for a in accounts.value] == [
        SOL - LAMPORTS - 5_000,
        LAMPORTS,
    ]


async def test_account_history_keeps_only_recently_changed_accounts(localnet: Localnet) -> None:
    wallet = Keypair().pubkey()
    localnet.airdrop(wallet, SOL)  # changes the wallet and the faucet
    held = localnet.chain.remembered_account_states

    localnet.advance(ACCOUNT_HISTORY_SLOTS)
    assert held == 2
    assert localnet.chain.remembered_account_states == 0
    assert localnet.chain.balance(wallet, localnet.chain.block()) == SOL


async def test_fee_for_message_is_priced_in_its_commitments_bank(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender = Keypair()
    localnet.airdrop(sender.pubkey(), SOL)
    localnet.advance(40)
    newest = (await client.get_latest_blockhash(Processed)).value.blockhash
    message = transfer_tx(sender, Keypair().pubkey(), newest).message

    processed = await client.get_fee_for_message(message, Processed)
    finalized = await client.get_fee_for_message(message, Finalized)

    assert (processed.context.slot, processed.value) == (40, 5_000)
    assert (finalized.context.slot, finalized.value) == (8, None)  # not in that bank yet


async def test_fee_for_message_prices_blockhashes_of_the_last_300_blocks_as_agave_does(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender = Keypair()
    localnet.airdrop(sender.pubkey(), SOL)
    blockhash = (await client.get_latest_blockhash(Processed)).value.blockhash
    message = transfer_tx(sender, Keypair().pubkey(), blockhash).message

    localnet.advance(MAX_RECENT_BLOCKHASHES)
    priced = (await client.get_fee_for_message(message, Processed)).value
    validity = await call(client, "isBlockhashValid", str(blockhash), {"commitment": "processed"})
    localnet.advance(1)
    dropped = (await client.get_fee_for_message(message, Processed)).value

    assert (priced, validity["value"], dropped) == (5_000, False, None)


# -- minContextSlot ----------------------------------------------------------------------------


async def test_every_read_below_its_min_context_slot_is_minus_32016_with_the_banks_slot(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender = Keypair()
    localnet.airdrop(sender.pubkey(), SOL)
    localnet.advance(5)
    tx = transfer_tx(sender, Keypair().pubkey(), localnet.chain.block().blockhash)
    wire = base64.b64encode(bytes(tx)).decode()
    message = base64.b64encode(bytes(tx.message)).decode()
    key = str(sender.pubkey())
    processed = {"commitment": "processed", "minContextSlot": 6}
    confirmed = {"commitment": "confirmed", "minContextSlot": 5}
    calls: list[tuple[str, list[Any], int]] = [
        ("getBalance", [key, processed], 5),
        ("getBalance", [key, confirmed], 4),
        ("getBalance", [key, {"minContextSlot": 1}], 0),  # finalized by default
        ("getAccountInfo", [key, {**processed, "encoding": "base64"}], 5),
        ("getMultipleAccounts", [[key], confirmed], 4),
        ("getSlot", [processed], 5),
        ("getBlockHeight", [confirmed], 4),
        ("getEpochInfo", [processed], 5),
        ("getTransactionCount", [processed], 5),
        ("getLatestBlockhash", [processed], 5),
        ("isBlockhashValid", [str(tx.message.recent_blockhash), processed], 5),
        ("getFeeForMessage", [message, processed], 5),
        ("simulateTransaction", [wire, {**processed, "encoding": "base64"}], 5),
        ("sendTransaction", [wire, {"encoding": "base64", "minContextSlot": 6}], 0),
        (
            "sendTransaction",
            [wire, {"encoding": "base64", "preflightCommitment": "confirmed", "minContextSlot": 6}],
            4,
        ),
        # without preflight the processed bank serves it
        ("sendTransaction", [wire, {"encoding": "base64", "skipPreflight": True, **processed}], 5),
    ]

    for method, params, context_slot in calls:
        with pytest.raises(SolanaJsonRpcError) as raised:
            await call(client, method, *params)
        error = raised.value
        assert (error.code, error.message, error.data) == (
            -32016,
            MIN_CONTEXT_MESSAGE,
            {"contextSlot": context_slot},
        ), method
    assert tx.signatures[0] not in localnet.transaction_log  # refused before anything else


async def test_a_read_at_its_min_context_slot_is_answered(
    localnet: Localnet, client: AsyncClient
) -> None:
    wallet = Keypair().pubkey()
    localnet.airdrop(wallet, SOL)
    localnet.advance(5)

    reply = await call(
        client, "getBalance", str(wallet), {"commitment": "confirmed", "minContextSlot": 4}
    )

    assert reply == {"context": {"slot": 4, "apiVersion": "2.2.0"}, "value": SOL}


async def test_solders_parses_min_context_slot_not_reached(localnet: Localnet) -> None:
    localnet.advance(3)
    request = GetBalance(
        Keypair().pubkey(),
        RpcContextConfig(commitment=CommitmentLevel.Confirmed, min_context_slot=3),
    )

    async with AsyncHTTPProvider(localnet.url) as provider:
        with pytest.raises(RPCException) as raised:
            await provider.make_request(request, GetBalanceResp)

    error = raised.value.args[0]
    assert isinstance(error, MinContextSlotNotReachedMessage)
    assert (error.message, error.data.context_slot) == (MIN_CONTEXT_MESSAGE, 2)


async def test_get_signature_statuses_ignores_min_context_slot_as_agave_does(
    localnet: Localnet, client: AsyncClient
) -> None:
    signature = localnet.airdrop(Keypair().pubkey(), SOL)

    reply = await call(client, "getSignatureStatuses", [str(signature)], {"minContextSlot": 99})

    assert reply["context"]["slot"] == 0
    assert reply["value"][0]["confirmationStatus"] == "processed"


# -- size limits ------------------------------------------------------------------------------


async def test_a_1232_byte_transaction_is_accepted(localnet: Localnet, client: AsyncClient) -> None:
    sender = Keypair()
    localnet.airdrop(sender.pubkey(), SOL)
    tx = padded_tx(sender, localnet.chain.block().blockhash, 1_232)

    signature = (await client.send_transaction(tx, opts=TxOpts(skip_preflight=True))).value

    assert signature == tx.signatures[0]
    assert signature in localnet.transaction_log  # received: not refused for its size


async def test_a_transaction_over_1232_bytes_is_refused_with_agaves_messages(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender = Keypair()
    blockhash = localnet.chain.block().blockhash
    just_over = padded_tx(sender, blockhash, 1_233)  # its base64 is exactly 1,644 characters
    far_over = padded_tx(sender, blockhash, 1_300)
    far_over_base64 = len(base64.b64encode(bytes(far_over)))

    with pytest.raises(RPCException) as decoded:
        await client.send_transaction(just_over, opts=TxOpts(skip_preflight=True))
    with pytest.raises(RPCException) as encoded:
        await client.send_transaction(far_over, opts=TxOpts(skip_preflight=True))
    with pytest.raises(RPCException) as simulated:
        await client.simulate_transaction(VersionedTransaction.from_legacy(far_over))

    for raised in (decoded, encoded, simulated):
        assert isinstance(raised.value.args[0], InvalidParamsMessage)
    assert decoded.value.args[0].message == (
        f"decoded {TRANSACTION_TYPE} too large: 1233 bytes (max: 1232 bytes)"
    )
    assert (
        encoded.value.args[0].message
        == simulated.value.args[0].message
        == (
            f"base64 encoded {TRANSACTION_TYPE} too large: {far_over_base64} bytes "
            "(max: encoded/raw 1644/1232)"
        )
    )
    assert localnet.transaction_log == {}


async def test_base58_over_1683_characters_and_oversized_messages_are_refused(
    localnet: Localnet,
) -> None:
    tx = padded_tx(Keypair(), localnet.chain.block().blockhash, 1_300)
    as_base58 = base58.b58encode(bytes(tx)).decode()
    message = base64.b64encode(bytes(tx.message)).decode()
    calls = [
        {"jsonrpc": "2.0", "id": 1, "method": "sendTransaction", "params": [as_base58]},
        {"jsonrpc": "2.0", "id": 2, "method": "getFeeForMessage", "params": [message]},
    ]

    async with httpx.AsyncClient() as http:
        replies = {r["id"]: r["error"] for r in (await http.post(localnet.url, json=calls)).json()}

    assert replies[1] == {
        "code": -32602,
        "message": f"base58 encoded {TRANSACTION_TYPE} too large: {len(as_base58)} bytes "
        "(max: encoded/raw 1683/1232)",
    }
    assert replies[2] == {
        "code": -32602,
        "message": "base64 encoded solana_message::versions::VersionedMessage too large: "
        f"{len(message)} bytes (max: encoded/raw 1644/1232)",
    }
