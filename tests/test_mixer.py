"""Both modes fund 1, 21, 22 and 73 wallets exactly, with the transactions and fees promised."""

import itertools
import math

import pytest
from solders.signature import Signature

from premix.errors import InvalidParameters
from premix.ledger import AttemptState
from premix.localnet import Localnet
from premix.mixer import WalletStatus
from premix.mixer.packing import LAMPORTS_PER_SIGNATURE, FeePolicy
from premix.rpc import SolanaRpc
from premix.settings import Settings
from premix.store import Store
from tests.test_mixer_helpers import QUICK_RETRIES, MixerHarness


@pytest.mark.parametrize("wallets", [1, 21, 22, 73])
async def test_fast_mode_funds_every_wallet_in_ceil_n_over_21_transactions(
    localnet: Localnet, store: Store, wallets: int
) -> None:
    harness = MixerHarness(localnet, store, wallets, "fast")
    await harness.open()
    result = await harness.run()
    transactions = math.ceil(wallets / 21)
    await harness.assert_each_wallet_paid_exactly_once(transactions)
    assert (result.transactions, result.fee_lamports) == (transactions, 5_000 * transactions)
    assert result.sent_lamports == sum(harness.amounts)
    assert [w.status for w in result.wallets] == [WalletStatus.FUNDED] * wallets
    assert [(w.public_key, w.lamports) for w in result.wallets] == [
        (str(r), a) for r, a in zip(harness.recipients, harness.amounts, strict=True)
    ]
    record = await harness.record()
    assert [len(tx.transfers) for tx in record.transactions] == [
        min(21, wallets - 21 * i) for i in range(transactions)
    ]
    # every transaction of the run was signed with one blockhash
    assert len({tx.attempts[0].blockhash for tx in record.transactions}) == 1
    # each wallet's signature is its transaction's, as found on chain
    for wallet in result.wallets:
        assert wallet.signature is not None
        assert localnet.transaction_log[Signature.from_string(wallet.signature)].landed


@pytest.mark.parametrize("wallets", [1, 21, 22, 73])
async def test_standard_mode_funds_every_wallet_one_confirmed_transfer_at_a_time(
    localnet: Localnet, store: Store, wallets: int
) -> None:
    harness = MixerHarness(localnet, store, wallets, "standard")
    await harness.open()
    result = await harness.run()
    await harness.assert_each_wallet_paid_exactly_once(wallets)
    assert (result.transactions, result.fee_lamports) == (wallets, 5_000 * wallets)
    record = await harness.record()
    assert [tx.transfers for tx in record.transactions] == [[p] for p in range(wallets)]
    # never two in flight: each transfer reached the node after the previous one was confirmed
    log = localnet.transaction_log
    chain = [log[Signature.from_string(tx.attempts[-1].signature)] for tx in record.transactions]
    for previous, following in itertools.pairwise(chain):
        assert previous.landed_slot is not None
        assert following.received_slot >= previous.landed_slot + 1  # confirmed a slot later


async def test_fast_mode_on_a_running_clock_takes_few_round_trips(
    fast_localnet: Localnet, store: Store
) -> None:
    harness = MixerHarness(
        fast_localnet,
        store,
        73,
        "fast",
        settings=Settings(confirm_poll_seconds=0.02, slot_seconds=0, priority_fee=0),
    )
    await harness.open()
    async with SolanaRpc(fast_localnet.url, retry=QUICK_RETRIES) as rpc:
        result = await harness.run(rpc=rpc)
        assert rpc.calls["sendTransaction"] == 4
        assert rpc.calls["getLatestBlockhash"] == 1
        assert rpc.calls["getMultipleAccounts"] == 2  # balances before and after
        assert rpc.round_trips <= 12
    await harness.assert_each_wallet_paid_exactly_once(4)
    assert result.transactions == 4


async def test_standard_mode_on_a_running_clock(fast_localnet: Localnet, store: Store) -> None:
    harness = MixerHarness(
        fast_localnet,
        store,
        3,
        "standard",
        settings=Settings(confirm_poll_seconds=0.01, slot_seconds=0, priority_fee=0),
    )
    await harness.open()
    async with SolanaRpc(fast_localnet.url, retry=QUICK_RETRIES) as rpc:
        await harness.run(rpc=rpc)
    await harness.assert_each_wallet_paid_exactly_once(3)


@pytest.mark.parametrize("mode", ["fast", "standard"])
async def test_a_priority_fee_is_paid_exactly_as_configured(
    localnet: Localnet, store: Store, mode: str
) -> None:
    settings = Settings(confirm_poll_seconds=0.001, slot_seconds=0, priority_fee=25_000)
    harness = MixerHarness(localnet, store, 22, mode, settings=settings)
    await harness.open()
    result = await harness.run()
    fees = FeePolicy(compute_unit_price=25_000)
    groups = [20, 2] if mode == "fast" else [1] * 22
    expected_fee = sum(fees.fee_lamports(n) for n in groups)
    assert expected_fee > LAMPORTS_PER_SIGNATURE * len(groups)
    assert harness.balances() == harness.amounts
    assert localnet.balance(harness.funding.pubkey()) == (
        harness.funding_lamports - sum(harness.amounts) - expected_fee
    )
    assert (result.transactions, result.fee_lamports) == (len(groups), expected_fee)


@pytest.mark.parametrize("mode", ["fast", "standard"])
async def test_progress_is_reported_after_each_confirmed_transaction(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = MixerHarness(localnet, store, 22, mode)
    await harness.open()
    await harness.run()
    done = [p.done_wallets for p in harness.progress]
    assert done == ([21, 22] if mode == "fast" else list(range(1, 23)))
    assert {p.total_wallets for p in harness.progress} == {22}
    assert harness.progress[-1].sent_lamports == sum(harness.amounts)


@pytest.mark.parametrize("mode", ["fast", "standard"])
async def test_a_completed_run_run_again_sends_nothing(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = MixerHarness(localnet, store, 3, mode)
    await harness.open()
    first = await harness.run()
    async with SolanaRpc(localnet.url) as rpc:
        again = await harness.run(rpc=rpc)
        assert rpc.round_trips == 0
    assert again == first
    await harness.assert_each_wallet_paid_exactly_once(1 if mode == "fast" else 3)


async def test_the_ledger_records_each_attempt_before_it_lands(
    localnet: Localnet, store: Store
) -> None:
    harness = MixerHarness(localnet, store, 2, "fast")
    await harness.open()
    await harness.run()
    record = await harness.record()
    [tx] = record.transactions
    [attempt] = tx.attempts
    assert attempt.state is AttemptState.LANDED_OK
    assert attempt.signed_at <= attempt.settled_at  # type: ignore[operator]
    landed = localnet.transaction_log[Signature.from_string(attempt.signature)]
    assert attempt.slot == landed.landed_slot
    assert attempt.last_valid_block_height >= localnet.block_height - 150
    assert [e.balance_before for e in record.plan] == [0, 0]
    assert record.funding == str(harness.funding.pubkey())


async def test_the_funding_wallet_cannot_be_a_recipient_and_nothing_is_sent(
    localnet: Localnet, store: Store
) -> None:
    harness = MixerHarness(localnet, store, 2, "fast")
    harness.recipients[1] = harness.funding.pubkey()
    await harness.open()
    with pytest.raises(InvalidParameters) as refused:
        await harness.run()
    assert refused.value.detail == (
        f"the funding wallet {harness.funding.pubkey()} cannot also be a buyer wallet (position 2)"
    )
    assert (await harness.record()).plan == []
    assert localnet.balance(harness.funding.pubkey()) == harness.funding_lamports


def test_polls_after_the_first_come_at_the_poll_interval_or_back_off_to_4x() -> None:
    from itertools import islice

    from premix.mixer.polling import poll_delays

    assert list(islice(poll_delays(0.1, backoff=True), 4)) == [0.2, 0.4, 0.4, 0.4]
    assert list(islice(poll_delays(0.1, backoff=False), 3)) == [0.1] * 3
    assert Settings().slot_seconds == 0.4
