"""A worker killed anywhere - after any ledger write, right after any send - and the run started
again with the same run id pays every wallet exactly once, re-sending what it had signed."""

import pytest

from premix.ledger import Attempt, AttemptState, Ledger, LedgerConflict, utc_now
from premix.localnet import Localnet
from premix.store import Store
from tests.test_mixer_helpers import (
    KillAfterSend,
    KillAfterWrite,
    MixerHarness,
    SteppingRpc,
    WorkerKilled,
)

# An uninterrupted run writes: the plan, then fast: all attempts, their outcomes, completion
# (22 wallets = 2 transactions); standard: per transfer its attempt and its outcome, completion.
SCENARIOS = {"fast": (22, 2, 4), "standard": (3, 3, 8)}  # wallets, transactions, ledger writes


@pytest.mark.parametrize("mode", ["fast", "standard"])
async def test_an_uninterrupted_run_makes_exactly_the_ledger_writes_swept_below(
    localnet: Localnet, store: Store, mode: str
) -> None:
    wallets, transactions, writes = SCENARIOS[mode]
    harness = MixerHarness(localnet, store, wallets, mode)
    await harness.open()
    counting = KillAfterWrite(store, kill_at=0)
    await harness.run(ledger=counting)
    assert counting.writes == writes
    await harness.assert_each_wallet_paid_exactly_once(transactions)


@pytest.mark.parametrize(
    ("mode", "kill_at"),
    [(mode, k) for mode, (_, _, writes) in SCENARIOS.items() for k in range(1, writes + 1)],
)
async def test_worker_killed_after_any_ledger_write_does_not_pay_twice(
    localnet: Localnet, store: Store, mode: str, kill_at: int
) -> None:
    wallets, transactions, _ = SCENARIOS[mode]
    harness = MixerHarness(localnet, store, wallets, mode)
    await harness.open()
    with pytest.raises(WorkerKilled):
        await harness.run(ledger=KillAfterWrite(store, kill_at))
    signed_before_kill = {
        tx.index: tx.attempts[0].signature for tx in (await harness.record()).transactions
    }
    result = await harness.run()
    await harness.assert_each_wallet_paid_exactly_once(transactions)
    assert result.complete
    # what was signed before the kill was settled or re-sent as is, never signed again
    record = await harness.record()
    for index, signature in signed_before_kill.items():
        assert [a.signature for a in record.transactions[index].attempts] == [signature]


@pytest.mark.parametrize(
    ("mode", "kill_at"),
    [
        (mode, k)
        for mode, (_, transactions, _) in SCENARIOS.items()
        for k in range(1, transactions + 1)
    ],
)
async def test_worker_killed_between_a_send_and_its_ledger_update_does_not_pay_twice(
    localnet: Localnet, store: Store, mode: str, kill_at: int
) -> None:
    wallets, transactions, _ = SCENARIOS[mode]
    harness = MixerHarness(localnet, store, wallets, mode)
    await harness.open()
    killer = KillAfterSend(localnet, kill_at)
    with pytest.raises(WorkerKilled):
        await harness.run(rpc=killer)
    await killer.close()
    sent = await harness.record()
    assert any(a.state is AttemptState.SIGNED for _, a in sent.open_attempts())
    await harness.run()
    await harness.assert_each_wallet_paid_exactly_once(transactions)


@pytest.mark.parametrize("mode", ["fast", "standard"])
async def test_a_worker_killed_again_and_again_still_finishes_paying_each_wallet_once(
    localnet: Localnet, store: Store, mode: str
) -> None:
    wallets, transactions, _ = SCENARIOS[mode]
    harness = MixerHarness(localnet, store, wallets, mode)
    await harness.open()
    executions = 0
    while True:
        executions += 1
        assert executions < 30, "no progress across re-runs"
        try:
            # every execution dies right after its second ledger write
            await harness.run(ledger=KillAfterWrite(store, kill_at=2))
            break
        except WorkerKilled:
            continue
    assert executions > 2
    await harness.assert_each_wallet_paid_exactly_once(transactions)


async def test_a_resumed_run_keeps_the_plan_it_started_with(
    localnet: Localnet, store: Store
) -> None:
    harness = MixerHarness(localnet, store, 3, "fast")
    await harness.open()
    with pytest.raises(WorkerKilled):
        await harness.run(ledger=KillAfterWrite(store, kill_at=2))
    planned = list(zip(harness.recipients, harness.amounts, strict=True))
    harness.amounts = [a * 2 for a in harness.amounts]  # a re-run computing another plan
    result = await harness.run()
    assert [(w.public_key, w.lamports) for w in result.wallets] == [(str(r), a) for r, a in planned]
    assert harness.balances() == [a for _, a in planned]


async def test_a_run_held_by_another_worker_is_not_signed_twice(
    localnet: Localnet, store: Store
) -> None:
    harness = MixerHarness(localnet, store, 3, "fast")
    await harness.open()
    with pytest.raises(WorkerKilled):
        await harness.run(ledger=KillAfterWrite(store, kill_at=1))  # plan recorded only
    stale = await Ledger(store).require(harness.run_id)
    await harness.run()
    # a second worker still holding the old revision cannot add an attempt
    stale.add_transaction(
        [0], Attempt("sig", "hash", 1, "AA==", signed_at=utc_now(), fee_lamports=5_000)
    )
    with pytest.raises(LedgerConflict):
        await Ledger(store).save(stale)
    await harness.assert_each_wallet_paid_exactly_once(1)
    async with SteppingRpc(localnet) as rpc:
        await harness.run(rpc=rpc)
        assert rpc.round_trips == 0


@pytest.mark.parametrize("mode", ["fast", "standard"])
async def test_a_landed_transaction_found_long_after_the_kill_is_settled_not_re_signed(
    localnet: Localnet, store: Store, mode: str
) -> None:
    wallets, transactions, _ = SCENARIOS[mode]
    harness = MixerHarness(localnet, store, wallets, mode)
    await harness.open()
    killer = KillAfterSend(localnet, kill_at=1)  # the first transaction lands unrecorded
    with pytest.raises(WorkerKilled):
        await harness.run(rpc=killer)
    await killer.close()
    first = (await harness.record()).transactions[0].attempts[0].signature
    localnet.advance(200)  # the queue retries long after every blockhash expired
    await harness.run()
    await harness.assert_each_wallet_paid_exactly_once(transactions)
    [attempt] = (await harness.record()).transactions[0].attempts
    assert (attempt.signature, attempt.state) == (first, AttemptState.LANDED_OK)


@pytest.mark.parametrize("mode", ["fast", "standard"])
async def test_a_signed_transaction_that_never_left_is_re_signed_only_after_it_expired(
    localnet: Localnet, store: Store, mode: str
) -> None:
    wallets, transactions, _ = SCENARIOS[mode]
    harness = MixerHarness(localnet, store, wallets, mode)
    await harness.open()
    with pytest.raises(WorkerKilled):  # dies after writing its attempt(s), before any send
        await harness.run(ledger=KillAfterWrite(store, kill_at=2))
    signed = (await harness.record()).transactions
    localnet.advance(200)
    await harness.run()
    await harness.assert_each_wallet_paid_exactly_once(transactions)
    record = await harness.record()
    for tx in signed:
        attempts = record.transactions[tx.index].attempts
        assert [a.state for a in attempts] == [AttemptState.EXPIRED, AttemptState.LANDED_OK]
        assert attempts[0].signature == tx.attempts[0].signature
        assert attempts[1].blockhash != attempts[0].blockhash
