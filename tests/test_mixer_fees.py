"""Priority fees on a congested localnet: a fixed zero fee cannot land and pays nothing; `auto`
reads the recent fees once per signing round, raises its bid on each re-sign, never passes the
cap, and the fee on chain is the fee in the ledger and in the report."""

import pytest
from solders.signature import Signature

import premix.mixer.fees
from premix.amounts import format_sol
from premix.errors import TransientError
from premix.ledger import AttemptState
from premix.localnet import Localnet
from premix.mixer import PriorityFees, balance_needed
from premix.mixer.packing import LAMPORTS_PER_SIGNATURE
from premix.settings import Settings
from premix.store import Store
from tests.test_mixer_helpers import MixerHarness, SteppingRpc, run_with_plan, signed_attempt

MODES = ["fast", "standard"]
THRESHOLD = 50_000  # micro-lamports per compute unit, above the default floor (10,000)


def settings(**values: object) -> Settings:
    return Settings(confirm_poll_seconds=0.001, slot_seconds=0, **values)  # type: ignore[arg-type]


async def assert_chain_equals_ledger_and_report(harness: MixerHarness, report_fee: int) -> None:
    """Every recipient holds exactly its amount; the funding wallet paid the amounts plus the
    fees the chain charged for each landed transaction, which are the ledger's and the report's."""
    record = await harness.record()
    landed = [a for tx in record.transactions for a in tx.attempts if a.landed]
    log = harness.net.transaction_log
    chain_fees = sum(log[Signature.from_string(a.signature)].fee_lamports for a in landed)
    assert harness.balances() == harness.amounts
    assert harness.net.balance(harness.funding.pubkey()) == (
        harness.funding_lamports - sum(harness.amounts) - chain_fees
    )
    assert [a.fee_lamports for a in landed] == [
        log[Signature.from_string(a.signature)].fee_lamports for a in landed
    ]
    assert record.totals.fee_lamports == chain_fees == report_fee
    assert record.totals.priority_fee_lamports == chain_fees - LAMPORTS_PER_SIGNATURE * len(landed)
    assert len(landed) == len(record.transactions)  # each transaction landed once
    assert record.status == "completed"


@pytest.mark.parametrize("mode", MODES)
async def test_auto_on_a_quiet_chain_bids_the_floor_and_reports_the_fee_the_chain_charged(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = MixerHarness(localnet, store, 22, mode, settings=settings())
    await harness.open()
    async with SteppingRpc(localnet) as rpc:
        result = await harness.run(rpc=rpc)
        fee_reads = rpc.calls["getRecentPrioritizationFees"]
    await assert_chain_equals_ledger_and_report(harness, result.fee_lamports)
    record = await harness.record()
    prices = {a.compute_unit_price for tx in record.transactions for a in tx.attempts}
    assert prices == {Settings().priority_fee_floor_micro_lamports}
    assert result.priority_fee_lamports == record.totals.priority_fee_lamports > 0
    # fast: 22 wallets in 20 + 2 (the ComputeBudget instructions leave room for 20), one read;
    # standard: one read covers ~10 blocks of transfers, never one per transfer
    assert [len(tx.transfers) for tx in record.transactions][:2] == (
        [20, 2] if mode == "fast" else [1, 1]
    )
    assert fee_reads == 1 if mode == "fast" else 1 <= fee_reads < 22 / 2


@pytest.mark.parametrize("mode", MODES)
async def test_a_fixed_zero_fee_under_congestion_never_lands_and_pays_nothing(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = MixerHarness(localnet, store, 73, mode, settings=settings(priority_fee=0))
    await harness.open()
    localnet.faults.inject("congestion", min_micro_lamports=THRESHOLD, land_probability=0)

    with pytest.raises(TransientError, match="keep expiring without landing"):
        await harness.run()

    assert harness.balances() == [0] * 73
    assert localnet.balance(harness.funding.pubkey()) == harness.funding_lamports
    record = await harness.record()
    attempts = [a for tx in record.transactions for a in tx.attempts]
    assert attempts and all(a.state is AttemptState.EXPIRED for a in attempts)
    assert {a.compute_unit_price for a in attempts} == {0}
    assert record.totals.fee_lamports == 0
    # congestion over: the same run finishes on a re-run, each wallet paid once
    localnet.faults.clear()
    result = await harness.run()
    await harness.assert_each_wallet_paid_exactly_once(result.transactions)


@pytest.mark.parametrize("mode", MODES)
async def test_auto_under_congestion_funds_73_wallets_exactly(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = MixerHarness(localnet, store, 73, mode, settings=settings())
    await harness.open()
    localnet.faults.inject("congestion", min_micro_lamports=THRESHOLD, land_probability=0)
    async with SteppingRpc(localnet) as rpc:
        result = await harness.run(rpc=rpc)
        fee_reads = rpc.calls["getRecentPrioritizationFees"]

    await assert_chain_equals_ledger_and_report(harness, result.fee_lamports)
    record = await harness.record()
    assert result.transactions == (4 if mode == "fast" else 73)
    assert all(len(tx.attempts) == 1 for tx in record.transactions)  # none expired
    assert all(a.compute_unit_price >= THRESHOLD for tx in record.transactions for a in tx.attempts)
    assert fee_reads == 1 if mode == "fast" else fee_reads <= 73 // 2


@pytest.mark.parametrize("mode", MODES)
async def test_auto_raises_its_bid_on_each_re_sign_until_it_lands(
    localnet: Localnet, store: Store, mode: str
) -> None:
    # The fee data lags the market: recent slots show ~a third of what it takes to land.
    threshold = 1_000_000
    harness = MixerHarness(localnet, store, 2, mode, settings=settings())
    await harness.open()
    localnet.faults.inject(
        "congestion",
        min_micro_lamports=threshold,
        land_probability=0,
        reported_micro_lamports=threshold // 3,
    )
    async with SteppingRpc(localnet) as rpc:
        result = await harness.run(rpc=rpc)
        sends = rpc.calls["sendTransaction"]
        fee_reads = rpc.calls["getRecentPrioritizationFees"]

    await assert_chain_equals_ledger_and_report(harness, result.fee_lamports)
    record = await harness.record()
    attempts = sum(len(tx.attempts) for tx in record.transactions)
    # one fee reading per signing round (a re-sign comes 150+ blocks later: a fresh one)
    assert fee_reads == attempts if mode == "fast" else 2 <= fee_reads <= attempts
    for tx in record.transactions:
        prices = [a.compute_unit_price for a in tx.attempts]
        assert 2 <= len(prices) <= 3, prices  # the first or second re-sign lands
        assert prices == sorted(set(prices))  # raised on every re-sign
        assert all(p < threshold for p in prices[:-1]) and prices[-1] >= threshold
        assert [a.state for a in tx.attempts] == [AttemptState.EXPIRED] * (len(prices) - 1) + [
            AttemptState.LANDED_OK
        ]
    assert sends >= sum(len(tx.attempts) for tx in record.transactions)


@pytest.mark.parametrize("mode", MODES)
async def test_auto_never_bids_past_the_cap_and_hands_back_then_pays_once(
    localnet: Localnet, store: Store, mode: str
) -> None:
    cap_lamports = 1_000
    fees = PriorityFees(fixed_micro_lamports=None, max_lamports=cap_lamports)
    threshold = 10 * fees.cap_price(1)  # no transaction may bid that much
    harness = MixerHarness(
        localnet, store, 3, mode, settings=settings(max_priority_fee_lamports=cap_lamports)
    )
    await harness.open()
    localnet.faults.inject("congestion", min_micro_lamports=threshold, land_probability=0)

    with pytest.raises(TransientError) as handed_back:
        await harness.run()

    assert str(handed_back.value) == (
        "Temporary failure: the network is congested: transaction 1 did not land even at the "
        "highest priority fee "
        "allowed (0.000001 SOL per transaction)"
    )
    assert harness.balances() == [0] * 3
    assert localnet.balance(harness.funding.pubkey()) == harness.funding_lamports
    record = await harness.record()
    for tx in record.transactions:
        assert all(a.priority_fee_lamports <= cap_lamports for a in tx.attempts)
        assert tx.attempts[-1].compute_unit_price == fees.cap_price(len(tx.transfers))
    # the congestion passes: the next execution bids the cap again, lands, pays each once
    localnet.faults.clear()
    result = await harness.run()
    await assert_chain_equals_ledger_and_report(harness, result.fee_lamports)
    landed = [a for tx in (await harness.record()).transactions for a in tx.attempts if a.landed]
    assert all(a.priority_fee_lamports <= cap_lamports for a in landed)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("fault", "params"),
    [
        ("drop_send", {"count": 2}),
        ("lose_response", {"method": "sendTransaction", "count": 2}),
        ("stale_read", {"slots": 5, "probability": 0.5}),
        ("no_history", {}),
        ("http_429", {"method": "getRecentPrioritizationFees", "count": 1, "retry_after": 0}),
    ],
)
async def test_auto_under_congestion_and_rpc_faults_pays_each_wallet_once(
    localnet: Localnet, store: Store, mode: str, fault: str, params: dict[str, object]
) -> None:
    harness = MixerHarness(localnet, store, 22 if mode == "fast" else 3, mode, settings=settings())
    await harness.open()
    localnet.faults.inject("congestion", min_micro_lamports=THRESHOLD, land_probability=0)
    localnet.faults.inject(fault, **params)  # type: ignore[arg-type]

    result = await harness.run()

    await assert_chain_equals_ledger_and_report(harness, result.fee_lamports)


def test_the_balance_check_counts_each_attached_fee_and_the_cap_for_the_rest() -> None:
    fees = PriorityFees(fixed_micro_lamports=None)
    run = run_with_plan([10**9] * 22)
    attempt = signed_attempt("sig-1")
    attempt.fee_lamports = 5_007  # what its bid attached
    run.add_transaction(list(range(20)), attempt)

    need = balance_needed(run, "fast", fees, 0)

    assert (need.fee_lamports, need.transactions) == (5_007 + fees.max_fee_lamports(2), 2)
    assert need.describe() == (
        f"22 SOL to 22 wallet(s) + up to {format_sol(need.fee_lamports)} fees for "
        "2 transaction(s) + 0 SOL buffer"
    )


class RecordingLog:
    """Stands in for a module's structlog logger: notes each line with its bound context."""

    def __init__(self, lines: list[dict[str, object]], **context: object) -> None:
        self.lines, self.context = lines, context

    def bind(self, **values: object) -> "RecordingLog":
        return RecordingLog(self.lines, **self.context, **values)

    def _line(self, event: str, **values: object) -> None:
        self.lines.append({"event": event, **self.context, **values})

    info = warning = _line


async def test_every_priority_fee_log_line_names_its_run(
    localnet: Localnet, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # several premixes share a worker process (PREMIX_WORKER_MAX_JOBS): each line must say whose
    lines: list[dict[str, object]] = []
    monkeypatch.setattr(premix.mixer.fees, "log", RecordingLog(lines))
    harness = MixerHarness(localnet, store, 3, "standard", settings=settings())
    await harness.open()
    async with SteppingRpc(localnet) as rpc:
        await harness.run(rpc=rpc)
    assert [line["event"] for line in lines][:1] == ["priority_fee_market_read"]
    assert {line.get("run_id") for line in lines} == {harness.run_id}
