"""Review 2 of issue 13's merges: defects at the seams between fees, calls and budget."""

from premix.ledger import Ledger
from premix.localnet import Localnet
from premix.mixer.fees import READING_MAX_AGE_BLOCKS
from premix.store import Store
from tests.test_mixer_calls import SETTINGS, run_counted


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
