"""What a run costs the node, counted by method at the localnet (SPEC section 9), and waits that
follow the chain (issue 13): one blockhash reused while young, one status poll per transaction
right after the slot it was sent in, rebroadcasts every 2 s without preflight.

Time is virtual here (`ChainTimeRpc`): the chain's slots and premix's clock and sleeps run on one
clock, so what is asserted (calls, slots, moments) does not depend on the machine's speed.
"""

import asyncio
import itertools
import math
from collections.abc import Sequence

import pytest
from solders.signature import Signature

from premix.ledger import AttemptState, Ledger
from premix.localnet import Commitment, Localnet
from premix.mixer.blockhashes import REUSE_SLOTS
from premix.mixer.polling import SLOT_END_MARGIN
from premix.rpc import SignatureStatus, SolanaRpc
from premix.settings import Settings
from premix.slots import SlotTimeline
from premix.store import Store
from tests.test_mixer_helpers import QUICK_RETRIES, MixerHarness

SLOT_SECONDS = 0.5  # binary fractions: virtual moments add up exactly
POLL_SECONDS = 0.125
FINALIZATION_SLOTS = 32  # localnet's finalized bank is this far behind
# a fixed zero fee: the counts below are the engine's own; `auto`'s one reading more per
# signing round is counted in test_fast_mode_with_auto_fees_reads_the_fees_once
SETTINGS = Settings(confirm_poll_seconds=POLL_SECONDS, slot_seconds=SLOT_SECONDS, priority_fee=0)


class ChainTimeRpc(SolanaRpc):
    """premix's clock and the chain's on one virtual time: a manual-clock localnet whose slots of
    `SLOT_SECONDS` begin at whole multiples of it; sleeping moves the time and produces the
    blocks due; calls take no time. Notes the moment and slot of every status poll."""

    def __init__(self, net: Localnet, *, start_seconds: float) -> None:
        super().__init__(net.url, retry=QUICK_RETRIES, sleep=self.pass_time, clock=self.now)
        self.net = net
        self.seconds = start_seconds
        self.first_slot = net.slot - int(start_seconds // SLOT_SECONDS)
        self.polls: list[tuple[float, int]] = []

    def now(self) -> float:
        return self.seconds

    async def pass_time(self, seconds: float) -> None:
        self.seconds += seconds
        due = self.first_slot + int(self.seconds // SLOT_SECONDS)
        if due > self.net.slot:
            self.net.advance(due - self.net.slot)
        await asyncio.sleep(0)

    async def signature_statuses(
        self, signatures: Sequence[Signature], *, search_history: bool = False
    ) -> list[SignatureStatus | None]:
        self.polls.append((self.seconds, self.net.slot))
        return await super().signature_statuses(signatures, search_history=search_history)


async def record_plan_as_the_worker_does(harness: MixerHarness, rpc: SolanaRpc) -> None:
    """Phase 3 of a job: one read of every recipient's account, recorded as its balance before."""
    balances = await rpc.balances(harness.recipients)
    await Ledger(harness.store).record_plan(
        harness.run_id,
        [str(r) for r in harness.recipients],
        harness.amounts,
        balances_before=balances,
    )


async def run_counted(
    localnet: Localnet,
    store: Store,
    mode: str,
    wallets: int,
    *,
    start_seconds: float = 0.3,
    settings: Settings = SETTINGS,
) -> tuple[MixerHarness, ChainTimeRpc, int]:
    """Run a payout in virtual time; returns the harness, the client and the slot it began."""
    localnet.advance(2)
    harness = MixerHarness(localnet, store, wallets, mode, settings=settings)
    await harness.open()
    async with ChainTimeRpc(localnet, start_seconds=start_seconds) as rpc:
        await record_plan_as_the_worker_does(harness, rpc)
        localnet.stats.reset()
        start_slot = localnet.slot
        async with asyncio.timeout(30):
            result = await harness.run(rpc=rpc)
    assert result.complete
    assert harness.balances() == harness.amounts
    return harness, rpc, start_slot


async def test_standard_mode_costs_three_calls_per_transfer_and_one_slot_each(
    localnet: Localnet, store: Store
) -> None:
    wallets = 10
    _, _, start_slot = await run_counted(localnet, store, "standard", wallets)
    # one blockhash for the run; per transfer: the send, one status poll right after its slot,
    # and the balance check before the next is signed
    assert dict(localnet.stats.calls) == {
        "getLatestBlockhash": 1,
        "sendTransaction": wallets,
        "getSignatureStatuses": wallets,
        "getBalance": wallets,
    }
    assert localnet.slot - start_slot <= wallets + 1
    assert [send.skip_preflight for send in localnet.stats.sends] == [False] * wallets


async def test_fast_mode_costs_seven_calls_for_73_wallets(localnet: Localnet, store: Store) -> None:
    await run_counted(localnet, store, "fast", 73)
    assert dict(localnet.stats.calls) == {
        "getLatestBlockhash": 1,
        "sendTransaction": 4,
        "getSignatureStatuses": 1,
        "getMultipleAccounts": 1,  # the balance check of all 73 recipients
    }
    assert localnet.stats.http_requests == 7


async def test_fast_mode_with_auto_fees_reads_the_fees_once(
    localnet: Localnet, store: Store
) -> None:
    auto = SETTINGS.model_copy(update={"priority_fee": "auto"})
    harness, _, _ = await run_counted(localnet, store, "fast", 73, settings=auto)
    assert dict(localnet.stats.calls) == {
        "getLatestBlockhash": 1,
        "getRecentPrioritizationFees": 1,  # one reading for the whole signing round
        "sendTransaction": 4,
        "getSignatureStatuses": 1,
        "getMultipleAccounts": 1,
    }
    record = await Ledger(store).require(harness.run_id)
    assert all(tx.attempts[0].priority_fee_lamports > 0 for tx in record.transactions)


async def test_standard_mode_reads_a_new_blockhash_only_once_the_old_one_is_old(
    localnet: Localnet, store: Store
) -> None:
    wallets = REUSE_SLOTS + 10  # one transfer per slot: the first blockhash ages past reuse
    await run_counted(localnet, store, "standard", wallets)
    assert localnet.stats.calls["getLatestBlockhash"] == 2
    record = await Ledger(store).require("premix-user1-1700000000000")
    blockhashes = [tx.attempts[0].blockhash for tx in record.transactions]
    assert len(set(blockhashes)) == 2
    # the first serves about REUSE_SLOTS transfers (one a slot), the second the rest
    assert REUSE_SLOTS - 3 <= blockhashes.count(blockhashes[0]) <= REUSE_SLOTS
    # each attempt records its own blockhash's last valid height (the expiry rule reads it)
    heights = {
        a.blockhash: a.last_valid_block_height for tx in record.transactions for a in tx.attempts
    }
    assert len(set(heights.values())) == 2


@pytest.mark.parametrize("mode", ["fast", "standard"])
async def test_the_first_status_poll_comes_right_after_the_slot_of_the_send(
    localnet: Localnet, store: Store, mode: str
) -> None:
    localnet.advance(2)
    harness = MixerHarness(localnet, store, 22 if mode == "fast" else 1, mode, settings=SETTINGS)
    await harness.open()
    async with ChainTimeRpc(localnet, start_seconds=0.0) as rpc:
        await rpc.sync_slot_clock(SLOT_SECONDS)  # a worker learns the phase once it starts
        await rpc.pass_time(0.3 - rpc.seconds % SLOT_SECONDS + SLOT_SECONDS)  # 0.3 s into a slot
        sent_slot = localnet.slot
        await record_plan_as_the_worker_does(harness, rpc)
        async with asyncio.timeout(30):
            await harness.run(rpc=rpc)
    [(moment, slot)] = rpc.polls  # one poll: the transactions were confirmed by then
    assert slot == sent_slot + 1
    slot_end = math.ceil(rpc.polls[0][0] / SLOT_SECONDS - 1e-9) * SLOT_SECONDS
    assert (
        slot_end - SLOT_SECONDS
        < moment
        <= slot_end - SLOT_SECONDS + 2 * SLOT_END_MARGIN * (SLOT_SECONDS)
    )


async def test_without_knowing_the_slots_phase_the_first_poll_waits_one_slot(
    localnet: Localnet, store: Store
) -> None:
    _, rpc, start_slot = await run_counted(localnet, store, "fast", 22, start_seconds=0.3)
    [(moment, slot)] = rpc.polls
    assert slot == start_slot + 1
    assert moment == pytest.approx(0.3 + SLOT_SECONDS + SLOT_END_MARGIN * SLOT_SECONDS)


@pytest.mark.parametrize("mode", ["fast", "standard"])
async def test_an_unseen_transaction_is_rebroadcast_every_2_s_without_preflight(
    localnet: Localnet, store: Store, mode: str
) -> None:
    localnet.faults.inject("drop_send", count=3)  # the first send and two rebroadcasts
    # one transaction in either mode (21 transfers fit in one)
    harness, _, _ = await run_counted(localnet, store, mode, 21 if mode == "fast" else 1)
    record = await harness.record()
    [attempt] = record.transactions[0].attempts  # never re-signed
    sends = localnet.stats.sends_of(Signature.from_string(attempt.signature))
    assert len(sends) == 4
    assert (sends[0].skip_preflight, sends[0].max_retries) == (False, None)
    assert [(s.skip_preflight, s.max_retries) for s in sends[1:]] == [(True, 0)] * 3
    assert all(s.min_context_slot is not None for s in sends)
    # 2 s of the clock apart (4 slots of 0.5 s), at the first poll past that (fast mode backs
    # off to 0.5 s polls), whatever the number of polls in between
    gaps = [b.slot - a.slot for a, b in itertools.pairwise(sends)]
    assert set(gaps) <= ({4} if mode == "standard" else {4, 5}), gaps


def test_a_slot_timeline_bounds_the_end_of_the_slot_in_progress() -> None:
    timeline = SlotTimeline()
    assert timeline.slot_end_after(10.0, 0.4) == pytest.approx(10.4)  # nothing seen: one slot
    timeline.observe("processed", 100, 40.10, 40.11)  # slot 100 began by 40.11
    timeline.observe("processed", 100, 40.35, 40.36)  # ... and 101 had not by 40.35
    timeline.observe("processed", 101, 40.41, 40.42)  # ... but had by 40.42
    low, high = timeline.phase(0.4) or (0.0, 0.0)
    assert (low + 101 * 0.4, high + 101 * 0.4) == (pytest.approx(40.35), pytest.approx(40.42))
    # a send at 41.00 is in slot 102 (began in (41.15 - 0.4, 41.22 - 0.4]): it ends by 41.22
    assert timeline.slot_end_after(41.00, 0.4) == pytest.approx(41.22)
    # a send at 40.80 may be in 102 or just before it: only a whole slot later is sure
    assert timeline.slot_end_after(40.80, 0.4) == pytest.approx(41.20)
    # a lagging node's older slot disagrees with the newer ones: they stand
    timeline.observe("processed", 99, 41.30, 41.31)
    assert timeline.phase(0.4) != (low, high)
    assert timeline.highest("processed") == 101


class ClearsFaultsAfterHeight(ChainTimeRpc):
    """Clears the localnet's faults once the chain's block height passed `height`."""

    def __init__(self, net: Localnet, *, start_seconds: float, height: int) -> None:
        super().__init__(net, start_seconds=start_seconds)
        self.height = height

    async def signature_statuses(
        self, signatures: Sequence[Signature], *, search_history: bool = False
    ) -> list[SignatureStatus | None]:
        if self.net.block_height > self.height:
            self.net.faults.clear()
        return await super().signature_statuses(signatures, search_history=search_history)


async def test_rebroadcasts_go_on_until_the_attempt_expires_then_a_new_one_lands(
    localnet: Localnet, store: Store
) -> None:
    localnet.advance(2)
    harness = MixerHarness(localnet, store, 1, "standard", settings=SETTINGS)
    await harness.open()
    localnet.faults.inject("drop_send")  # every copy of the first attempt is dropped
    first_valid_height = localnet.chain.block(Commitment.CONFIRMED).last_valid_block_height
    async with ClearsFaultsAfterHeight(
        localnet, start_seconds=0.3, height=first_valid_height
    ) as rpc:
        await record_plan_as_the_worker_does(harness, rpc)
        async with asyncio.timeout(60):
            result = await harness.run(rpc=rpc)
    assert result.complete and harness.balances() == harness.amounts
    [tx] = (await harness.record()).transactions
    expired, landed = tx.attempts
    assert (expired.state, landed.state) == (AttemptState.EXPIRED, AttemptState.LANDED_OK)
    assert expired.last_valid_block_height == first_valid_height
    sends = localnet.stats.sends_of(Signature.from_string(expired.signature))
    assert not sends[0].skip_preflight
    assert all((s.skip_preflight, s.max_retries) == (True, 0) for s in sends[1:])
    # one copy every 2 s (4 slots) until the expiry is decided: the finalized height (32 slots
    # behind) past the blockhash's 150 blocks; none after
    assert {b.slot - a.slot for a, b in itertools.pairwise(sends)} == {4}
    assert len(sends) == pytest.approx((150 + FINALIZATION_SLOTS) / 4, abs=2)
    assert sends[-1].slot <= sends[0].slot + 150 + FINALIZATION_SLOTS + 4


async def test_the_slot_clock_sync_pins_the_slots_phase_to_a_small_part_of_a_slot(
    localnet: Localnet,
) -> None:
    async with ChainTimeRpc(localnet, start_seconds=0.17) as rpc:
        await rpc.sync_slot_clock(SLOT_SECONDS)
        low, high = rpc.slots.phase(SLOT_SECONDS) or (0.0, SLOT_SECONDS)
    assert low < 0.0 <= high  # virtual slots begin at whole multiples of SLOT_SECONDS
    assert high - low <= SLOT_SECONDS / 32  # 8 probes over a slot, then 3 halvings
    assert localnet.stats.calls["getSlot"] == 11
