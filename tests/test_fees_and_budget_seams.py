"""Review 2 of issue 13's merges: defects at the seams between fees, calls and budget."""

import asyncio
import contextlib
import time

import pytest
from redis.asyncio import Redis

from premix.ledger import Ledger
from premix.localnet import Localnet
from premix.mixer.fees import READING_MAX_AGE_BLOCKS
from premix.mixer.packing import LAMPORTS_PER_SIGNATURE, FeePolicy, max_transfers_per_transaction
from premix.rpc_budget import RpcBudget
from premix.settings import Settings
from premix.store import Store
from tests.test_mixer_calls import SETTINGS, run_counted
from tests.test_mixer_helpers import KillAfterSend, MixerHarness, WorkerKilled


async def test_standard_auto_reads_the_fee_market_again_once_a_reading_is_old(
    localnet: Localnet, store: Store
) -> None:
    """fees.py promises a reading is reused only within READING_MAX_AGE_BLOCKS blocks ("one call
    per ~10 transfers"). It measures that age by the last valid block height of the blockhash
    being signed with; since the calls merge reuses one blockhash for REUSE_SLOTS (90) slots,
    that height stands still and one reading prices ~90 slots of transfers."""
    auto = SETTINGS.model_copy(update={"priority_fee": "auto"})
    wallets = 40  # one transfer a slot: ~40 slots, so at least 3 readings of <= 10 blocks each
    harness, _, start_slot = await run_counted(localnet, store, "standard", wallets, settings=auto)
    slots = localnet.slot - start_slot
    assert slots >= 3 * (READING_MAX_AGE_BLOCKS + 1)
    reads = localnet.stats.calls["getRecentPrioritizationFees"]
    assert reads >= slots // (READING_MAX_AGE_BLOCKS + 1), (reads, slots)
    record = await Ledger(store).require(harness.run_id)
    assert record.status == "completed"


async def test_a_hung_redis_never_blocks_an_rpc_budget_for_long() -> None:
    """A Redis that accepts connections and never answers (a stopped process, a black-holed
    link): each acquire falls back to the local share within the budget's short timeout."""
    held: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", rpc_max_requests_per_second=50)
    budget = RpcBudget.from_settings(settings)
    assert budget is not None
    started = time.monotonic()
    try:
        async with asyncio.timeout(10):
            for _ in range(10):
                await budget.acquire()
    finally:
        elapsed = time.monotonic() - started
        for writer in held:
            writer.close()
        server.close()
        await budget.aclose()
    assert not budget.shared
    assert elapsed < 3.0, elapsed


async def test_a_21_transfer_transaction_signed_without_a_fee_is_re_signed_under_auto(
    localnet: Localnet, store: Store
) -> None:
    """The fees merge made `auto` the default. A fast run in flight across the upgrade has a
    21-transfer transaction signed without a priority fee (21 fit only without the two
    ComputeBudget instructions). Once it expired, the re-sign under `auto` must still fit the
    packet: the run completes and every wallet is paid exactly once."""
    wallets = max_transfers_per_transaction(FeePolicy())  # 21
    assert wallets > max_transfers_per_transaction(FeePolicy(1))
    zero = Settings(confirm_poll_seconds=0.001, slot_seconds=0, priority_fee=0)
    harness = MixerHarness(localnet, store, wallets, "fast", settings=zero)
    await harness.open()
    localnet.faults.inject("drop_send")  # accepted, never lands
    rpc = KillAfterSend(localnet, kill_at=1)
    try:
        with contextlib.suppress(WorkerKilled):
            await harness.run(rpc=rpc)
    finally:
        await rpc.close()
    localnet.faults.clear()
    localnet.expire_blockhashes()
    record = await harness.record()
    assert [len(tx.transfers) for tx in record.transactions] == [wallets]

    harness.settings = Settings(confirm_poll_seconds=0.001, slot_seconds=0)  # auto, the default
    result = await harness.run()
    assert result.complete
    assert harness.balances() == harness.amounts
    record = await harness.record()
    landed = [a for tx in record.transactions for a in tx.attempts if a.landed]
    assert len(landed) == 1
    assert harness.net.balance(harness.funding.pubkey()) == (
        harness.funding_lamports - sum(harness.amounts) - landed[0].fee_lamports
    )
    assert landed[0].fee_lamports >= LAMPORTS_PER_SIGNATURE


def test_the_retired_priority_fee_variable_is_refused_not_silently_replaced_by_auto(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fees merge replaced PREMIX_PRIORITY_FEE_MICRO_LAMPORTS with PREMIX_PRIORITY_FEE
    (default auto). A deployment still setting the old one (say a fixed 0 or 5,000) would
    silently bid auto prices up to PREMIX_MAX_PRIORITY_FEE_LAMPORTS per transaction: the worker
    refuses to start, naming both variables."""
    from premix.worker import WorkerStartupError, check_configuration

    monkeypatch.setenv("PREMIX_PRIORITY_FEE_MICRO_LAMPORTS", "5000")
    settings = Settings(
        mongodb_uri="mongodb://127.0.0.1:1/premix",
        encryption_keys="k1:q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=",  # type: ignore[arg-type]
    )
    assert settings.priority_fee == "auto"
    with pytest.raises(WorkerStartupError) as refused:
        check_configuration(settings)
    assert str(refused.value) == (
        "Worker refused to start: "
        "PREMIX_PRIORITY_FEE_MICRO_LAMPORTS is no longer read: set PREMIX_PRIORITY_FEE instead "
        "(auto, the default, or a fixed price in micro-lamports per compute unit)"
    )


async def test_a_bucket_stamped_in_the_future_does_not_stall_every_worker(
    redis_url: str, redis_client: Redis
) -> None:
    """The shared bucket refills only while Redis's TIME is past the bucket's `at`. A bucket
    stamped ahead of the server's clock (a failover to a replica whose clock is behind, or a
    clock stepped back) would admit nothing until the clock caught up, for every worker: the
    refill starts again from the server's present."""
    from premix.constants import RPC_BUDGET_KEY

    seconds, micros = await redis_client.time()
    ahead = (seconds + 120) * 1_000_000 + micros
    await redis_client.hset(RPC_BUDGET_KEY, mapping={"tokens": "0", "at": str(ahead)})
    settings = Settings(redis_url=redis_url, rpc_max_requests_per_second=20)
    budget = RpcBudget.from_settings(settings)
    assert budget is not None
    started = time.monotonic()
    try:
        async with asyncio.timeout(10):
            for _ in range(5):
                await budget.acquire()
    finally:
        await budget.aclose()
    assert budget.shared
    assert time.monotonic() - started < 2.0
