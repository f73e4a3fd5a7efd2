"""localnet through the real solana-py AsyncClient: balances, transfers, commitments, fees,
rent, duplicates, blockhash expiry, and the JSON-RPC envelope (batches, unknown methods)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized, Processed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.compute_budget import set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction
from solders.transaction_status import (
    TransactionConfirmationStatus,
    TransactionErrorInsufficientFundsForRent,
)

from premix.localnet import Localnet, TransactionOutcome

SOL = 1_000_000_000
RENT_EXEMPT_MINIMUM = 890_880  # an empty System account


def transfer_tx(
    sender: Keypair,
    recipient: Pubkey,
    lamports: int,
    blockhash: Hash,
    *,
    extra: list[Instruction] | None = None,
    signers: list[Keypair] | None = None,
) -> Transaction:
    """A plain System Program transfer, signed by `sender` (and `signers`)."""
    instructions = [
        *(extra or []),
        transfer(
            TransferParams(from_pubkey=sender.pubkey(), to_pubkey=recipient, lamports=lamports)
        ),
    ]
    return Transaction(
        [sender, *(signers or [])], Message(instructions, sender.pubkey()), blockhash
    )


@pytest.fixture
async def client(localnet: Localnet) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(localnet.url, commitment=Processed) as rpc:
        yield rpc


async def latest_blockhash(client: AsyncClient) -> Hash:
    return (await client.get_latest_blockhash(Processed)).value.blockhash


async def status_of(
    client: AsyncClient, signature: Signature
) -> TransactionConfirmationStatus | None:
    status = (await client.get_signature_statuses([signature])).value[0]
    return None if status is None else status.confirmation_status


async def test_airdrop_is_visible_as_balance(localnet: Localnet, client: AsyncClient) -> None:
    wallet = Keypair().pubkey()
    localnet.airdrop(wallet, 2 * SOL)

    assert (await client.get_balance(wallet)).value == 2 * SOL
    assert localnet.balance(wallet) == 2 * SOL


async def test_request_airdrop_signature_shows_in_signature_statuses(
    localnet: Localnet, client: AsyncClient
) -> None:
    wallet = Keypair().pubkey()

    signature = (await client.request_airdrop(wallet, SOL)).value

    assert (await client.get_balance(wallet)).value == SOL
    assert await status_of(client, signature) == TransactionConfirmationStatus.Processed


async def test_transfer_is_processed_then_confirmed_after_one_slot_then_finalized_after_32(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender, recipient = Keypair(), Keypair().pubkey()
    localnet.airdrop(sender.pubkey(), SOL)
    tx = transfer_tx(sender, recipient, 10_000_000, await latest_blockhash(client))

    signature = (await client.send_transaction(tx)).value
    landed_slot = localnet.slot

    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None
    assert (status.slot, status.confirmations, status.err) == (landed_slot, 0, None)
    assert status.confirmation_status == TransactionConfirmationStatus.Processed
    assert (await client.get_balance(recipient)).value == 10_000_000

    localnet.advance(1)
    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None
    assert status.confirmations == 1
    assert status.confirmation_status == TransactionConfirmationStatus.Confirmed

    localnet.advance(30)
    assert await status_of(client, signature) == TransactionConfirmationStatus.Confirmed
    localnet.advance(1)
    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None
    assert status.confirmations is None
    assert status.confirmation_status == TransactionConfirmationStatus.Finalized
    assert localnet.transaction_log[signature].landed_slot == landed_slot


async def test_fee_is_5000_lamports_per_signature(localnet: Localnet, client: AsyncClient) -> None:
    sender, cosigner, recipient = Keypair(), Keypair(), Keypair().pubkey()
    localnet.airdrop(sender.pubkey(), SOL)
    localnet.airdrop(cosigner.pubkey(), SOL)
    blockhash = await latest_blockhash(client)

    await client.send_transaction(transfer_tx(sender, recipient, 5_000_000, blockhash))
    assert localnet.balance(sender.pubkey()) == SOL - 5_000_000 - 5_000

    # a second signer (the cosigner sends to the same recipient) doubles the fee
    two_signers = Transaction(
        [sender, cosigner],
        Message(
            [
                transfer(
                    TransferParams(from_pubkey=sender.pubkey(), to_pubkey=recipient, lamports=1)
                ),
                transfer(
                    TransferParams(from_pubkey=cosigner.pubkey(), to_pubkey=recipient, lamports=1)
                ),
            ],
            sender.pubkey(),
        ),
        blockhash,
    )
    fee = (await client.get_fee_for_message(two_signers.message, Processed)).value
    await client.send_transaction(two_signers)

    assert fee == 10_000
    assert localnet.balance(sender.pubkey()) == SOL - 5_000_000 - 5_000 - 1 - 10_000
    assert localnet.balance(recipient) == 5_000_002


async def test_fee_for_message_includes_the_priority_fee_the_runtime_charges(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender = Keypair()
    localnet.airdrop(sender.pubkey(), SOL)
    tx = transfer_tx(
        sender,
        Keypair().pubkey(),
        RENT_EXEMPT_MINIMUM,
        await latest_blockhash(client),
        extra=[set_compute_unit_price(1_000_000)],
    )

    quoted = (await client.get_fee_for_message(tx.message, Processed)).value
    await client.send_transaction(tx)

    assert quoted is not None and quoted > 5_000
    assert localnet.balance(sender.pubkey()) == SOL - RENT_EXEMPT_MINIMUM - quoted


async def test_transfer_below_rent_exempt_minimum_into_empty_account_fails_preflight(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender, recipient = Keypair(), Keypair().pubkey()
    localnet.airdrop(sender.pubkey(), SOL)
    tx = transfer_tx(sender, recipient, RENT_EXEMPT_MINIMUM - 1, await latest_blockhash(client))

    with pytest.raises(RPCException) as raised:
        await client.send_transaction(tx)

    error = raised.value.args[0]
    assert isinstance(error, SendTransactionPreflightFailureMessage)
    assert error.message == (
        "Transaction simulation failed: "
        "Transaction results in an account (1) with insufficient funds for rent"
    )
    assert error.data.err == TransactionErrorInsufficientFundsForRent(1)
    assert localnet.balance(sender.pubkey()) == SOL  # preflight failures cost nothing
    assert localnet.balance(recipient) == 0
    assert localnet.transaction_log[tx.signatures[0]].outcome is TransactionOutcome.REJECTED


async def test_rent_failure_without_preflight_lands_with_its_error_and_pays_the_fee(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender, recipient = Keypair(), Keypair().pubkey()
    localnet.airdrop(sender.pubkey(), SOL)
    tx = transfer_tx(sender, recipient, RENT_EXEMPT_MINIMUM - 1, await latest_blockhash(client))

    signature = (await client.send_transaction(tx, opts=TxOpts(skip_preflight=True))).value

    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None
    assert status.err == TransactionErrorInsufficientFundsForRent(1)
    assert localnet.balance(sender.pubkey()) == SOL - 5_000
    assert localnet.balance(recipient) == 0


async def test_transfer_of_the_rent_exempt_minimum_into_empty_account_succeeds(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender, recipient = Keypair(), Keypair().pubkey()
    localnet.airdrop(sender.pubkey(), SOL)

    minimum = (await client.get_minimum_balance_for_rent_exemption(0)).value
    await client.send_transaction(
        transfer_tx(sender, recipient, minimum, await latest_blockhash(client))
    )

    assert minimum == RENT_EXEMPT_MINIMUM
    assert localnet.balance(recipient) == RENT_EXEMPT_MINIMUM


async def test_duplicate_send_is_rejected_as_already_processed(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender, recipient = Keypair(), Keypair().pubkey()
    localnet.airdrop(sender.pubkey(), SOL)
    tx = transfer_tx(sender, recipient, 10_000_000, await latest_blockhash(client))
    await client.send_transaction(tx)

    with pytest.raises(RPCException) as raised:
        await client.send_transaction(tx)
    error = raised.value.args[0]
    assert isinstance(error, SendTransactionPreflightFailureMessage)
    assert (
        error.message
        == "Transaction simulation failed: This transaction has already been processed"
    )

    # without preflight the node accepts it again, and it still lands only once
    again = (await client.send_transaction(tx, opts=TxOpts(skip_preflight=True))).value
    assert again == tx.signatures[0]
    assert localnet.balance(recipient) == 10_000_000
    assert localnet.balance(sender.pubkey()) == SOL - 10_000_000 - 5_000


async def test_blockhash_lands_up_to_150_blocks_later_and_not_after(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender, recipient = Keypair(), Keypair().pubkey()
    localnet.airdrop(sender.pubkey(), SOL)
    blockhash_resp = await client.get_latest_blockhash(Processed)
    blockhash = blockhash_resp.value.blockhash
    assert blockhash_resp.value.last_valid_block_height == localnet.block_height + 150

    localnet.advance(150)
    on_time = transfer_tx(sender, recipient, 1 * RENT_EXEMPT_MINIMUM, blockhash)
    await client.send_transaction(on_time, opts=TxOpts(skip_preflight=True))
    assert (await client.get_balance(recipient)).value == RENT_EXEMPT_MINIMUM

    localnet.advance(1)
    late = transfer_tx(sender, recipient, 2 * RENT_EXEMPT_MINIMUM, blockhash)
    signature = (await client.send_transaction(late, opts=TxOpts(skip_preflight=True))).value
    assert await status_of(client, signature) is None
    assert localnet.transaction_log[signature].outcome is TransactionOutcome.DROPPED
    assert (
        await client.get_block_height(Processed)
    ).value > blockhash_resp.value.last_valid_block_height
    assert (await client.get_balance(recipient)).value == RENT_EXEMPT_MINIMUM

    with pytest.raises(RPCException) as raised:
        await client.send_transaction(late)
    error = raised.value.args[0]
    assert isinstance(error, SendTransactionPreflightFailureMessage)
    assert error.message == "Transaction simulation failed: Blockhash not found"


async def test_finalized_reads_lag_32_slots_and_confirmed_one(
    localnet: Localnet, client: AsyncClient
) -> None:
    localnet.advance(40)

    assert (await client.get_slot(Processed)).value == 40
    assert (await client.get_slot(Confirmed)).value == 39
    assert (await client.get_block_height(Finalized)).value == 8
    finalized = (await client.get_latest_blockhash(Finalized)).value
    assert finalized.last_valid_block_height == 8 + 150


async def test_preflight_at_finalized_does_not_know_a_processed_blockhash(
    localnet: Localnet, client: AsyncClient
) -> None:
    """As on a validator: the finalized bank has not seen the newest blockhash yet."""
    sender = Keypair()
    localnet.airdrop(sender.pubkey(), SOL)
    localnet.advance(40)
    tx = transfer_tx(
        sender, Keypair().pubkey(), RENT_EXEMPT_MINIMUM, await latest_blockhash(client)
    )

    with pytest.raises(RPCException, match="Blockhash not found"):
        await client.send_transaction(tx, opts=TxOpts(preflight_commitment=Finalized))

    await client.send_transaction(tx, opts=TxOpts(preflight_commitment=Processed))
    assert localnet.transaction_log[tx.signatures[0]].landed


async def test_signature_statuses_forget_old_transactions_unless_history_is_searched(
    localnet: Localnet, client: AsyncClient
) -> None:
    signature = localnet.airdrop(Keypair().pubkey(), SOL)
    localnet.advance(301)

    assert (await client.get_signature_statuses([signature])).value == [None]
    searched = (
        await client.get_signature_statuses([signature], search_transaction_history=True)
    ).value[0]
    assert searched is not None
    assert searched.confirmation_status == TransactionConfirmationStatus.Finalized


async def test_concurrent_sends_all_land(localnet: Localnet, client: AsyncClient) -> None:
    sender = Keypair()
    localnet.airdrop(sender.pubkey(), 10 * SOL)
    blockhash = await latest_blockhash(client)
    recipients = [Keypair().pubkey() for _ in range(20)]

    await asyncio.gather(
        *(
            client.send_transaction(transfer_tx(sender, r, RENT_EXEMPT_MINIMUM, blockhash))
            for r in recipients
        )
    )

    balances = (await client.get_multiple_accounts(recipients)).value
    assert [account.lamports if account else 0 for account in balances] == [
        RENT_EXEMPT_MINIMUM
    ] * 20
    assert localnet.balance(sender.pubkey()) == 10 * SOL - 20 * (RENT_EXEMPT_MINIMUM + 5_000)


async def test_account_info_reports_lamports_and_owner_or_none(
    localnet: Localnet, client: AsyncClient
) -> None:
    wallet = Keypair().pubkey()
    assert (await client.get_account_info(wallet)).value is None
    localnet.airdrop(wallet, SOL)

    account = (await client.get_account_info(wallet)).value
    parsed = (await client.get_account_info_json_parsed(wallet)).value

    assert account is not None and parsed is not None
    assert (account.lamports, account.owner, account.data) == (SOL, Pubkey.default(), b"")
    assert parsed.lamports == SOL


async def test_simulation_reports_logs_and_does_not_change_balances(
    localnet: Localnet, client: AsyncClient
) -> None:
    from solders.transaction import VersionedTransaction

    sender, recipient = Keypair(), Keypair().pubkey()
    localnet.airdrop(sender.pubkey(), SOL)
    tx = transfer_tx(sender, recipient, RENT_EXEMPT_MINIMUM, await latest_blockhash(client))

    result = (
        await client.simulate_transaction(
            VersionedTransaction.from_legacy(tx), commitment=Processed
        )
    ).value

    assert result.err is None
    assert result.logs == [
        "Program 11111111111111111111111111111111 invoke [1]",
        "Program 11111111111111111111111111111111 success",
    ]
    assert localnet.balance(recipient) == 0


async def test_batch_request_answers_each_call_by_id(localnet: Localnet) -> None:
    wallet = Keypair().pubkey()
    localnet.airdrop(wallet, SOL)
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "getBalance", "params": [str(wallet)]},
        {"jsonrpc": "2.0", "id": 2, "method": "getHealth"},
        {"jsonrpc": "2.0", "id": 3, "method": "noSuchMethod"},
    ]

    async with httpx.AsyncClient() as http:
        response = await http.post(localnet.url, json=batch)

    replies = {reply["id"]: reply for reply in response.json()}
    assert replies[1]["result"]["value"] == SOL
    assert replies[2]["result"] == "ok"
    assert replies[3]["error"] == {"code": -32601, "message": "Method not found"}
    assert localnet.stats.http_requests == 1
    assert localnet.stats.calls["getBalance"] == 1


async def test_malformed_json_is_a_parse_error(localnet: Localnet) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(localnet.url, content=b"{not json")

    assert response.json() == {
        "jsonrpc": "2.0",
        "error": {"code": -32700, "message": "Parse error"},
        "id": None,
    }


async def test_invalid_pubkey_is_invalid_params(localnet: Localnet) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            localnet.url,
            json={"jsonrpc": "2.0", "id": 7, "method": "getBalance", "params": ["nope"]},
        )

    assert response.json()["error"]["code"] == -32602


async def test_base58_encoded_transaction_is_accepted(localnet: Localnet) -> None:
    import base58

    sender, recipient = Keypair(), Keypair().pubkey()
    localnet.airdrop(sender.pubkey(), SOL)
    tx = transfer_tx(sender, recipient, RENT_EXEMPT_MINIMUM, localnet.chain.block().blockhash)
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "sendTransaction",
        "params": [base58.b58encode(bytes(tx)).decode(), {"preflightCommitment": "processed"}],
    }

    async with httpx.AsyncClient() as http:
        reply = (await http.post(localnet.url, json=call)).json()

    assert reply["result"] == str(tx.signatures[0])
    assert localnet.balance(recipient) == RENT_EXEMPT_MINIMUM


async def test_stopped_localnet_refuses_connections() -> None:
    with Localnet(slot_ms=None) as net:
        url = net.url
    async with AsyncClient(url, max_transport_retries=0) as rpc:
        with pytest.raises(SolanaRpcException):
            await rpc.get_slot()


async def test_slot_clock_produces_blocks_on_its_own(fast_localnet: Localnet) -> None:
    start = fast_localnet.block_height
    async with AsyncClient(fast_localnet.url) as rpc:
        for _ in range(200):
            if (await rpc.get_block_height(Processed)).value >= start + 3:
                break
            await asyncio.sleep(0.01)
        assert (await rpc.get_block_height(Processed)).value >= start + 3


def test_serve_forever_prints_its_url_answers_and_stops_on_ctrl_c() -> None:
    import signal
    import subprocess
    import sys

    script = "from premix.localnet import serve_forever; serve_forever(port=0, slot_ms=50)"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = banner.split()[3]
        reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getHealth"}).json()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()

    assert banner.startswith("localnet listening on http://127.0.0.1:")
    assert reply == {"jsonrpc": "2.0", "result": "ok", "id": 1}


async def test_transfer_beyond_the_senders_balance_fails_preflight_with_custom_error_1(
    localnet: Localnet, client: AsyncClient
) -> None:
    sender, recipient = Keypair(), Keypair().pubkey()
    localnet.airdrop(sender.pubkey(), SOL)
    tx = transfer_tx(sender, recipient, 2 * SOL, await latest_blockhash(client))

    with pytest.raises(RPCException) as raised:
        await client.send_transaction(tx)

    assert raised.value.args[0].message == (
        "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1"
    )
    assert localnet.balance(sender.pubkey()) == SOL


async def test_a_stopped_node_cuts_open_connections_and_restarts_with_its_chain(
    localnet: Localnet,
) -> None:
    wallet = Keypair().pubkey()
    localnet.airdrop(wallet, SOL)
    url = localnet.url
    async with AsyncClient(url, commitment=Processed, max_transport_retries=0) as rpc:
        assert (await rpc.get_balance(wallet)).value == SOL  # opens a keep-alive connection

        localnet.stop()
        with pytest.raises(SolanaRpcException):
            await rpc.get_balance(wallet)

        localnet.start()
        assert localnet.url == url
        assert (await rpc.get_balance(wallet)).value == SOL


def test_a_client_hanging_up_mid_reply_prints_no_traceback_but_real_errors_do(
    localnet: Localnet, capsys: pytest.CaptureFixture[str]
) -> None:
    server = localnet._server
    assert server is not None
    for hang_up in (BrokenPipeError(), ConnectionResetError()):
        try:
            raise hang_up
        except ConnectionError:
            server.handle_error(None, ("127.0.0.1", 1))
    assert "Traceback" not in capsys.readouterr().err
    try:
        raise ValueError("a bug in a handler")
    except ValueError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert "ValueError: a bug in a handler" in capsys.readouterr().err
