"""Sends as the node sees them (SPEC section 12): a first send keeps preflight, a rebroadcast
skips it with the node's retries off, and both carry `minContextSlot`; localnet records each
sendTransaction's flags and checks `maxRetries`."""

from typing import Any

import httpx2
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from premix.localnet import Commitment, Localnet, TransactionOutcome
from premix.rpc import SendOutcome, SolanaRpc
from tests.test_mixer_helpers import QUICK_RETRIES


def signed_transfer(net: Localnet, lamports: int, *, funded: int = 10**9) -> Transaction:
    payer = Keypair()
    net.airdrop(payer.pubkey(), funded)
    instruction = transfer(
        TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Pubkey.new_unique(), lamports=lamports)
    )
    blockhash = net.chain.block(Commitment.CONFIRMED).blockhash
    return Transaction([payer], Message([instruction], payer.pubkey()), blockhash)


def post(net: Localnet, method: str, params: list[Any]) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    answer: dict[str, Any] = httpx2.post(net.url, json=body).json()
    return answer


def wire(transaction: Transaction) -> str:
    import base64

    return base64.b64encode(bytes(transaction)).decode()


def test_localnet_records_each_send_with_its_flags(localnet: Localnet) -> None:
    localnet.advance(3)
    transaction = signed_transfer(localnet, 1_000_000)
    config = {"encoding": "base64", "skipPreflight": True, "maxRetries": 0, "minContextSlot": 2}
    answer = post(localnet, "sendTransaction", [wire(transaction), config])
    assert answer["result"] == str(transaction.signatures[0])
    [send] = localnet.stats.sends_of(transaction.signatures[0])
    assert (send.skip_preflight, send.max_retries, send.min_context_slot) == (True, 0, 2)
    assert send.slot == localnet.slot


def test_localnet_refuses_a_max_retries_that_is_not_a_non_negative_integer(
    localnet: Localnet,
) -> None:
    localnet.advance(1)
    transaction = signed_transfer(localnet, 1_000_000)
    for bad in (-1, "3", 1.5):
        answer = post(
            localnet,
            "sendTransaction",
            [wire(transaction), {"encoding": "base64", "maxRetries": bad}],
        )
        assert answer["error"] == {
            "code": -32602,
            "message": "Invalid params: maxRetries must be a non-negative integer.",
        }
    assert transaction.signatures[0] not in localnet.transaction_log


def test_localnet_without_preflight_takes_what_preflight_would_refuse_and_lands_it_failing(
    localnet: Localnet,
) -> None:
    localnet.advance(1)
    too_much = signed_transfer(localnet, 2 * 10**9)  # the payer holds 1 SOL
    refused = post(localnet, "sendTransaction", [wire(too_much), {"encoding": "base64"}])
    assert refused["error"]["code"] == -32002
    config = {"encoding": "base64", "skipPreflight": True, "maxRetries": 0}
    taken = post(localnet, "sendTransaction", [wire(too_much), config])
    assert taken["result"] == str(too_much.signatures[0])
    record = localnet.transaction_log[too_much.signatures[0]]
    assert record.outcome is TransactionOutcome.LANDED and record.err is not None


async def test_a_first_send_keeps_preflight_and_waits_for_the_blockhash_slot(
    localnet: Localnet,
) -> None:
    localnet.advance(4)
    async with SolanaRpc(localnet.url, retry=QUICK_RETRIES) as rpc:
        latest = await rpc.latest_blockhash()
        assert latest.context_slot == localnet.chain.block(Commitment.CONFIRMED).slot
        transaction = signed_transfer(localnet, 1_000_000)
        # the node answering the send is a slot behind the blockhash: it waits (-32016, retried)
        localnet.faults.inject("stale_read", method="sendTransaction", count=1, slots=1)
        result = await rpc.send_raw(bytes(transaction))
        assert result.outcome is SendOutcome.ACCEPTED
        assert rpc.calls["sendTransaction"] == 2
    sends = localnet.stats.sends_of(transaction.signatures[0])
    assert [(s.skip_preflight, s.max_retries, s.min_context_slot) for s in sends] == [
        (False, None, latest.context_slot)
    ] * 2
    assert sends[0].preflight_commitment == "confirmed"


async def test_a_rebroadcast_skips_preflight_with_the_node_retries_off(
    localnet: Localnet,
) -> None:
    localnet.advance(4)
    async with SolanaRpc(localnet.url, retry=QUICK_RETRIES) as rpc:
        transaction = signed_transfer(localnet, 1_000_000)
        await rpc.signature_statuses([transaction.signatures[0]])  # the processed slot seen
        seen = localnet.slot
        result = await rpc.rebroadcast_raw(bytes(transaction))
        assert result.outcome is SendOutcome.ACCEPTED
    [send] = localnet.stats.sends_of(transaction.signatures[0])
    assert (send.skip_preflight, send.max_retries, send.min_context_slot) == (True, 0, seen)
    assert localnet.transaction_log[transaction.signatures[0]].outcome is (
        TransactionOutcome.LANDED
    )


async def test_a_blockhash_read_waits_for_a_node_behind_the_slots_already_seen(
    localnet: Localnet,
) -> None:
    localnet.advance(6)
    async with SolanaRpc(localnet.url, retry=QUICK_RETRIES) as rpc:
        await rpc.balances([Pubkey.new_unique()])
        seen = rpc.slots.highest("confirmed")
        # a node 2 slots behind would hand out an older blockhash (fewer blocks to land in)
        localnet.faults.inject("stale_read", method="getLatestBlockhash", count=1, slots=2)
        latest = await rpc.latest_blockhash()
        assert rpc.calls["getLatestBlockhash"] == 2  # -32016, then a node that has caught up
    assert latest.context_slot == seen
    assert latest.blockhash == localnet.chain.block(Commitment.CONFIRMED).blockhash
