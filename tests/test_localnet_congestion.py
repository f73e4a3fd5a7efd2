"""The `congestion` fault and getRecentPrioritizationFees, as the real solana-py AsyncClient sees
them: cheap transactions are accepted and held back, priced ones land, the recent fees agree."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Processed
from solana.rpc.jsonrpc import JsonRpcRequest, SolanaJsonRpcError
from solana.rpc.models import TxOpts
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from premix.cli.localnet import FaultSpecType, describe_rule
from premix.localnet import Localnet, TransactionOutcome

SOL = 1_000_000_000
LAMPORTS = 10_000_000
THRESHOLD = 1_000


@pytest.fixture
async def client(localnet: Localnet) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(localnet.url, commitment=Processed, max_transport_retries=0) as rpc:
        yield rpc


async def priced_transfer(
    localnet: Localnet, client: AsyncClient, price: int | None, sender: Keypair | None = None
) -> tuple[Transaction, Pubkey]:
    """A transfer of `LAMPORTS` to a fresh wallet bidding `price` (None: no ComputeBudget)."""
    if sender is None:
        sender = Keypair()
        localnet.airdrop(sender.pubkey(), SOL)
    recipient = Keypair().pubkey()
    blockhash = (await client.get_latest_blockhash(Processed)).value.blockhash
    instructions = []
    if price is not None:
        instructions = [set_compute_unit_limit(900), set_compute_unit_price(price)]
    instructions.append(
        transfer(
            TransferParams(from_pubkey=sender.pubkey(), to_pubkey=recipient, lamports=LAMPORTS)
        )
    )
    return Transaction([sender], Message(instructions, sender.pubkey()), blockhash), recipient


async def recent_fees(client: AsyncClient, params: list[object]) -> list[dict[str, int]]:
    request = JsonRpcRequest(method="getRecentPrioritizationFees", params=params)
    result: list[dict[str, int]] = await client.send_rpc_request(request, object)  # type: ignore[arg-type]
    return result


@pytest.mark.parametrize("price", [None, 0, THRESHOLD - 1])
async def test_a_transaction_bidding_below_the_threshold_is_accepted_and_never_lands(
    localnet: Localnet, client: AsyncClient, price: int | None
) -> None:
    tx, recipient = await priced_transfer(localnet, client, price)
    localnet.faults.inject("congestion", min_micro_lamports=THRESHOLD, land_probability=0)

    signature = (await client.send_transaction(tx)).value
    localnet.advance(10)

    assert signature == tx.signatures[0]
    assert localnet.transaction_log[signature].outcome is TransactionOutcome.HELD
    assert (await client.get_signature_statuses([signature])).value == [None]
    localnet.advance(150)  # its blockhash expires: it is dropped, and never lands later
    record = localnet.transaction_log[signature]
    assert (record.outcome, record.landed_slot) == (TransactionOutcome.DROPPED, None)
    localnet.faults.clear()
    localnet.advance(5)
    assert localnet.balance(recipient) == 0


async def test_a_transaction_bidding_the_threshold_lands_at_once(
    localnet: Localnet, client: AsyncClient
) -> None:
    tx, recipient = await priced_transfer(localnet, client, THRESHOLD)
    localnet.faults.inject("congestion", min_micro_lamports=THRESHOLD, land_probability=0)

    await client.send_transaction(tx)

    assert localnet.balance(recipient) == LAMPORTS
    assert localnet.transaction_log[tx.signatures[0]].landed_slot == localnet.slot


async def test_a_held_transaction_lands_by_the_odds_repeatably_and_once_when_re_sent() -> None:
    landed_slots = []
    for _ in range(2):
        with Localnet(slot_ms=None, seed=7) as net:
            async with AsyncClient(net.url, commitment=Processed) as client:
                tx, recipient = await priced_transfer(net, client, None)
                net.faults.inject("congestion", min_micro_lamports=THRESHOLD, land_probability=0.2)
                sent_at = net.slot
                await client.send_transaction(tx)
                while net.balance(recipient) == 0:
                    net.advance(1)
                    # a rebroadcast is the same transaction
                    await client.send_transaction(tx, opts=TxOpts(skip_preflight=True))
                net.advance(3)
                assert net.balance(recipient) == LAMPORTS
                landed_slots.append(net.transaction_log[tx.signatures[0]].landed_slot)
                assert landed_slots[-1] is not None and landed_slots[-1] > sent_at + 1
    assert landed_slots[0] == landed_slots[1]


async def test_a_held_transaction_lands_at_the_next_slot_once_congestion_is_off(
    localnet: Localnet, client: AsyncClient
) -> None:
    tx, recipient = await priced_transfer(localnet, client, None)
    localnet.faults.inject("congestion", min_micro_lamports=THRESHOLD)  # land_probability 0
    await client.send_transaction(tx)
    localnet.advance(3)
    assert localnet.balance(recipient) == 0

    localnet.faults.clear()
    localnet.advance(1)

    assert localnet.balance(recipient) == LAMPORTS
    assert localnet.transaction_log[tx.signatures[0]].landed_slot == localnet.slot


async def test_congestion_with_a_count_holds_only_that_many_sends(
    localnet: Localnet, client: AsyncClient
) -> None:
    localnet.faults.inject("congestion", count=1, min_micro_lamports=THRESHOLD)
    first, first_recipient = await priced_transfer(localnet, client, None)
    second, second_recipient = await priced_transfer(localnet, client, None)

    await client.send_transaction(first)
    await client.send_transaction(second)

    assert (localnet.balance(first_recipient), localnet.balance(second_recipient)) == (0, LAMPORTS)
    localnet.advance(1)  # the rule is used up: the congestion is over
    assert localnet.balance(first_recipient) == LAMPORTS


async def test_recent_prioritization_fees_are_zero_for_150_slots_when_quiet(
    localnet: Localnet, client: AsyncClient
) -> None:
    localnet.advance(200)

    fees = await recent_fees(client, [])

    assert [f["slot"] for f in fees] == list(range(localnet.slot - 149, localnet.slot + 1))
    assert {f["prioritizationFee"] for f in fees} == {0}
    assert set(fees[0]) == {"slot", "prioritizationFee"}


async def test_recent_prioritization_fees_show_the_fees_that_landed_on_the_accounts(
    localnet: Localnet, client: AsyncClient
) -> None:
    localnet.advance(5)
    payer = Keypair()
    localnet.airdrop(payer.pubkey(), SOL)
    tx, recipient = await priced_transfer(localnet, client, 5_000, sender=payer)
    await client.send_transaction(tx)
    landed = localnet.slot
    cheap, _ = await priced_transfer(localnet, client, None)  # another account, same slot
    await client.send_transaction(cheap)
    localnet.advance(2)

    by_account = {
        f["slot"]: f["prioritizationFee"] for f in await recent_fees(client, [[str(recipient)]])
    }
    everyone = {f["slot"]: f["prioritizationFee"] for f in await recent_fees(client, [])}

    assert by_account[landed] == 5_000 and by_account[landed + 1] == 0
    assert everyone[landed] == 0  # the block's lowest fee: the cheap transfer
    assert set(by_account) == set(range(0, localnet.slot + 1))


async def test_recent_prioritization_fees_reach_the_threshold_while_congestion_is_on(
    localnet: Localnet, client: AsyncClient
) -> None:
    localnet.advance(160)
    rule = localnet.faults.inject("congestion", min_micro_lamports=THRESHOLD)

    congested = [
        f["prioritizationFee"] for f in await recent_fees(client, [[str(Pubkey.new_unique())]])
    ]
    localnet.faults.remove(rule)
    quiet = [f["prioritizationFee"] for f in await recent_fees(client, [])]

    assert len(congested) == 150
    assert all(THRESHOLD <= fee <= THRESHOLD * 3 // 2 for fee in congested)
    assert len(set(congested)) > 1  # fees vary from slot to slot
    assert set(quiet) == {0}


async def test_recent_prioritization_fees_refuse_more_than_128_accounts_and_bad_keys(
    localnet: Localnet, client: AsyncClient
) -> None:
    keys = [str(Pubkey.new_unique()) for _ in range(129)]
    assert len(await recent_fees(client, [keys[:128]])) == 1
    with pytest.raises(SolanaJsonRpcError) as too_many:
        await recent_fees(client, [keys])
    assert (too_many.value.code, too_many.value.message) == (
        -32602,
        "Too many inputs provided; max 128",
    )
    with pytest.raises(SolanaJsonRpcError) as bad:
        await recent_fees(client, [["not-a-key"]])
    assert (bad.value.code, bad.value.message) == (-32602, "Invalid param: Invalid")


def test_congestion_from_the_command_line_and_its_parameters_are_checked(
    localnet: Localnet,
) -> None:
    rule = FaultSpecType().convert(
        "congestion:min_micro_lamports=1000,land_probability=0.1", None, None
    )
    assert describe_rule(rule) == (
        "congestion (min_micro_lamports=1000, land_probability=0.1, "
        "reported_micro_lamports=1000, method=sendTransaction)"
    )
    for params, message in [
        ({}, "congestion needs parameter(s): ['min_micro_lamports']"),
        ({"min_micro_lamports": -1}, "congestion min_micro_lamports must be a whole number"),
        ({"min_micro_lamports": 1, "land_probability": 2}, "land_probability must be between"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            localnet.faults.inject("congestion", **params)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="congestion does not apply to getBalance"):
        localnet.faults.inject("congestion", method="getBalance", min_micro_lamports=1)
