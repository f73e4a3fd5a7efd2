"""RPC faults and on-chain failures: runs finish with exact balances, or stop with a per-wallet
report and finish on a re-run without paying anyone twice; the ledger shows what happened."""

import pytest

from premix.errors import TransientError
from premix.ledger import AttemptState, RunStatus
from premix.localnet import Localnet
from premix.mixer import MixerFailed, MixerProgress, WalletStatus
from premix.mixer.packing import LAMPORTS_PER_SIGNATURE
from premix.store import Store
from tests.test_mixer_helpers import MixerHarness, SteppingRpc, drain

TRANSACTIONS = {"fast": 2, "standard": 3}
WALLETS = {"fast": 22, "standard": 3}
MODES = ["fast", "standard"]


def harness_for(localnet: Localnet, store: Store, mode: str) -> MixerHarness:
    return MixerHarness(localnet, store, WALLETS[mode], mode)


async def attempt_states(harness: MixerHarness) -> list[list[AttemptState]]:
    return [[a.state for a in tx.attempts] for tx in (await harness.record()).transactions]


@pytest.mark.parametrize("mode", MODES)
async def test_a_dropped_send_is_re_sent_as_the_same_transaction_and_lands_once(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = harness_for(localnet, store, mode)
    await harness.open()
    localnet.faults.inject("drop_send", count=1)
    async with SteppingRpc(localnet) as rpc:
        await harness.run(rpc=rpc)
        assert rpc.calls["sendTransaction"] > TRANSACTIONS[mode]  # the unseen one re-sent
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    assert await attempt_states(harness) == [[AttemptState.LANDED_OK]] * TRANSACTIONS[mode]


@pytest.mark.parametrize("mode", MODES)
async def test_a_lost_send_response_is_retried_with_the_same_bytes_and_pays_once(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = harness_for(localnet, store, mode)
    await harness.open()
    localnet.faults.inject("lose_response", method="sendTransaction", count=1)
    async with SteppingRpc(localnet) as rpc:
        await harness.run(rpc=rpc)
        assert rpc.calls["sendTransaction"] == TRANSACTIONS[mode] + 1
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    assert await attempt_states(harness) == [[AttemptState.LANDED_OK]] * TRANSACTIONS[mode]


@pytest.mark.parametrize("mode", MODES)
async def test_a_send_that_times_out_but_lands_is_not_paid_twice(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = harness_for(localnet, store, mode)
    await harness.open()
    localnet.faults.inject("latency", method="sendTransaction", count=1, ms=600)
    async with SteppingRpc(localnet, timeout_seconds=0.2) as rpc:
        await harness.run(rpc=rpc)
        assert rpc.calls["sendTransaction"] >= TRANSACTIONS[mode] + 1
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("fault", "params"),
    [
        ("http_429", {"retry_after": 0}),
        ("http_5xx", {"status": 502}),
        ("http_5xx", {"status": 503}),
        ("latency", {"ms": 20}),
    ],
)
async def test_transient_http_faults_on_every_method_are_retried_and_the_run_completes(
    localnet: Localnet, store: Store, mode: str, fault: str, params: dict[str, int]
) -> None:
    harness = harness_for(localnet, store, mode)
    await harness.open()
    rule = localnet.faults.inject(fault, probability=0.3, **params)
    async with SteppingRpc(localnet) as rpc:
        await harness.run(rpc=rpc)
    assert rule.fired > 0
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "expire_on", ["sendTransaction", "getSignatureStatuses"], ids=["before-send", "in-flight"]
)
async def test_a_blockhash_expiring_before_landing_gets_a_new_attempt_recorded_after_the_old(
    localnet: Localnet, store: Store, mode: str, expire_on: str
) -> None:
    harness = harness_for(localnet, store, mode)
    await harness.open()
    # the first transaction never lands: refused as expired, or dropped and then expired
    if expire_on == "getSignatureStatuses":
        localnet.faults.inject("drop_send", count=1)
    localnet.faults.inject("expire_blockhash", method=expire_on, count=1)
    await harness.run()
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    record = await harness.record()
    first = record.transactions[0].attempts
    assert [a.state for a in first] == [AttemptState.EXPIRED, AttemptState.LANDED_OK]
    assert first[1].last_valid_block_height > first[0].last_valid_block_height
    assert first[0].settled_at is not None
    assert record.totals.fee_lamports == LAMPORTS_PER_SIGNATURE * TRANSACTIONS[mode]


async def test_funding_drained_mid_run_stops_with_a_per_wallet_report_and_a_re_run_pays_the_rest(
    localnet: Localnet, store: Store
) -> None:
    harness = MixerHarness(localnet, store, 3, "standard")
    await harness.open()

    async def drain_after_first(progress: MixerProgress) -> None:
        if progress.done_wallets == 1:
            drain(localnet, harness.funding, keep_lamports=1_000_000)

    with pytest.raises(MixerFailed) as stopped:
        await harness.run(on_progress=drain_after_first)
    w0, w1, w2 = ((str(r), a) for r, a in zip(harness.recipients, harness.amounts, strict=True))
    error = stopped.value
    assert str(error) == (
        "Mixer operation failed: transaction 2 was refused by the RPC node: instruction 0 "
        "failed: insufficient lamports for the transfer. Sent 0.010000007 SOL to 1 wallet(s); "
        "2 wallet(s) not funded"
    )
    assert (error.funded, error.unfunded) == ([w0], [w1, w2])
    assert error.result is not None
    assert [w.status for w in error.result.wallets] == [
        WalletStatus.FUNDED,
        WalletStatus.FAILED,
        WalletStatus.NOT_SENT,
    ]
    assert (
        error.result.wallets[1].error
        == "instruction 0 failed: insufficient lamports for the transfer"
    )
    assert harness.balances() == [harness.amounts[0], 0, 0]
    record = await harness.record()
    assert (record.status, record.error) == (RunStatus.FAILED, error.reason)
    assert localnet.balance(harness.funding.pubkey()) == 1_000_000  # the refusal cost no fee

    localnet.airdrop(harness.funding.pubkey(), 10**9)  # the user tops up; the queue re-runs
    result = await harness.run()
    assert result.complete
    assert harness.balances() == harness.amounts
    assert localnet.balance(harness.funding.pubkey()) == (
        1_000_000 + 10**9 - harness.amounts[1] - harness.amounts[2] - 2 * LAMPORTS_PER_SIGNATURE
    )
    assert (await harness.record()).status is RunStatus.COMPLETED


async def test_a_transfer_failing_on_chain_is_reported_with_its_fee_and_re_signed_on_a_re_run(
    localnet: Localnet, store: Store
) -> None:
    harness = MixerHarness(localnet, store, 2, "standard")
    await harness.open()

    async def drain_after_first(progress: MixerProgress) -> None:
        if progress.done_wallets == 1:
            drain(localnet, harness.funding, keep_lamports=1_000_000)

    # a node that skips preflight lets the failing transaction land and charge its fee
    async with SteppingRpc(localnet, skip_preflight=True) as rpc:
        with pytest.raises(MixerFailed) as stopped:
            await harness.run(rpc=rpc, on_progress=drain_after_first)
    assert stopped.value.reason == (
        "transaction 2 failed on chain: "
        "instruction 0 failed: insufficient lamports for the transfer"
    )
    assert localnet.balance(harness.funding.pubkey()) == 1_000_000 - LAMPORTS_PER_SIGNATURE
    localnet.airdrop(harness.funding.pubkey(), 10**9)
    result = await harness.run()
    assert harness.balances() == harness.amounts
    assert await attempt_states(harness) == [
        [AttemptState.LANDED_OK],
        [AttemptState.LANDED_FAILED, AttemptState.LANDED_OK],
    ]
    assert (result.transactions, result.fee_lamports) == (3, 3 * LAMPORTS_PER_SIGNATURE)


async def test_fast_mode_short_of_funds_funds_one_transaction_and_reports_the_other(
    localnet: Localnet, store: Store
) -> None:
    # 22 equal amounts; enough for one transaction of either size, never for both
    funding = 21 * 10_000_000 + 2 * 5_000 + 5_000_000
    harness = MixerHarness(localnet, store, 22, "fast", funding_lamports=funding)
    harness.amounts = [10_000_000] * 22
    await harness.open()
    with pytest.raises(MixerFailed) as stopped:
        await harness.run()
    report = stopped.value
    funded = {key for key, _ in report.funded}
    assert len(funded) in (1, 21)
    assert [localnet.balance(r) for r in harness.recipients] == [
        10_000_000 if str(r) in funded else 0 for r in harness.recipients
    ]
    assert len(report.unfunded) == 22 - len(funded)
    localnet.airdrop(harness.funding.pubkey(), 10**9)
    await harness.run()
    assert harness.balances() == harness.amounts
    assert (await harness.record()).totals.transactions == 2


@pytest.mark.parametrize("mode", MODES)
async def test_a_node_dropping_everything_hands_the_job_back_and_the_re_run_pays_once(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = harness_for(localnet, store, mode)
    await harness.open()
    localnet.faults.inject("drop_send")
    localnet.faults.inject("expire_blockhash", method="getSignatureStatuses")
    with pytest.raises(TransientError, match="transactions keep expiring without landing"):
        await harness.run()
    first = (await harness.record()).transactions[0]
    assert [a.state for a in first.attempts] == [AttemptState.EXPIRED] * 5
    assert harness.balances() == [0] * WALLETS[mode]
    localnet.faults.clear()
    await harness.run()
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
