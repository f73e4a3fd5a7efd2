"""Adversarial review of the transfer engines: every way premix could pay a wallet twice, pay
the wrong amount, lose track of money, hang or leak a secret, each tried on localnet.

Every test ends by comparing the ledger with the chain's own transaction log
(`assert_ledger_matches_chain`): each attempt's recorded state is what the chain shows, an
attempt recorded as expired never landed and was given up only once the *finalized* block
height had passed its last valid block height, and the funding wallet lost exactly the
ledger's sent lamports plus its fees.
"""

import asyncio
import base64
import random
from collections.abc import Callable, Sequence

import bson
import pytest
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import decode_transfer
from solders.transaction import Transaction, VersionedTransaction

from premix.errors import TransientError
from premix.ledger import (
    AttemptState,
    Ledger,
    LedgerConflict,
    LedgerError,
    RunRecord,
    RunStatus,
    utc_now,
)
from premix.localnet import Localnet
from premix.localnet.chain import Commitment
from premix.mixer import MixerFailed, MixResult, WalletStatus
from premix.mixer.packing import LAMPORTS_PER_SIGNATURE
from premix.rpc import (
    LatestBlockhash,
    RetryPolicy,
    SendOutcome,
    SendResult,
    SignatureStatus,
    SolanaRpc,
)
from premix.store import Store
from tests.fixtures.store import secret_forms
from tests.test_mixer_helpers import (
    QUICK_RETRIES,
    KillAfterSend,
    KillAfterWrite,
    MixerHarness,
    SteppingRpc,
    WorkerKilled,
    drain,
)

MODES = ["fast", "standard"]
WALLETS = {"fast": 22, "standard": 3}  # fast: 2 transactions (21 + 1); standard: 3
TRANSACTIONS = {"fast": 2, "standard": 3}
STATUS_CACHE_SLOTS = 300  # a validator's recent status cache; older needs searchTransactionHistory
MAX_INT64 = 2**63 - 1


# --- the chain's truth ---


class WatchedLedger(Ledger):
    """A ledger that checks, at every write, that no attempt is recorded as expired unless the
    chain's finalized block height is above its last valid block height and it never landed;
    optionally dies after the `kill_at`-th write (1-based)."""

    def __init__(self, store: Store, net: Localnet, kill_at: int | None = None) -> None:
        super().__init__(store)
        self.net = net
        self.kill_at = kill_at
        self.writes = 0

    async def save(self, record: RunRecord) -> RunRecord:
        finalized = self.net.chain.block(Commitment.FINALIZED).height
        for tx in record.transactions:
            for attempt in tx.attempts:
                if attempt.state is AttemptState.EXPIRED:
                    assert finalized > attempt.last_valid_block_height, (
                        f"attempt {attempt.signature} given up at finalized height {finalized}, "
                        f"valid until {attempt.last_valid_block_height}"
                    )
                    assert not landed_on_chain(self.net, attempt.signature)
        saved = await super().save(record)
        self.writes += 1
        if self.writes == self.kill_at:
            raise WorkerKilled(f"after write {self.writes}")
        return saved


def landed_on_chain(net: Localnet, signature: str) -> bool:
    entry = net.transaction_log.get(Signature.from_string(signature))
    return entry is not None and entry.landed


async def assert_ledger_matches_chain(
    harness: MixerHarness, *, recipients_before: Sequence[int] | None = None
) -> RunRecord:
    """The ledger says exactly what the chain did: per attempt its state, per transaction at
    most one landed ok, per wallet its amount once (when funded), and the funding wallet's loss
    equals the ledger's sent lamports plus fees."""
    net = harness.net
    record = await harness.record()
    for tx in record.transactions:
        for attempt in tx.attempts:
            entry = net.transaction_log.get(Signature.from_string(attempt.signature))
            on_chain_ok = entry is not None and entry.landed and entry.err is None
            on_chain_failed = entry is not None and entry.landed and entry.err is not None
            assert (attempt.state is AttemptState.LANDED_OK) == on_chain_ok, attempt
            assert (attempt.state is AttemptState.LANDED_FAILED) == on_chain_failed, attempt
            if attempt.landed:
                assert attempt.slot == entry.landed_slot  # type: ignore[union-attr]
                assert attempt.fee_lamports == entry.fee_lamports  # type: ignore[union-attr]
        assert sum(a.state is AttemptState.LANDED_OK for a in tx.attempts) <= 1
    funded = set(record.funded_positions())
    before = recipients_before or [0] * len(record.plan)
    for planned in record.plan:
        expected = before[planned.position] + (
            planned.lamports if planned.position in funded else 0
        )
        assert net.balance(Pubkey.from_string(planned.recipient)) == expected, planned
    totals = record.totals
    assert net.balance(harness.funding.pubkey()) == (
        harness.funding_lamports - totals.sent_lamports - totals.fee_lamports
    )
    return record


def wires(record: RunRecord) -> list[bytes]:
    return [base64.b64decode(a.wire) for tx in record.transactions for a in tx.attempts]


def deliver(net: Localnet, wire: bytes) -> None:
    """An earlier execution's copy reaching the leader now (no preflight, like a forward)."""
    net.chain.send_transaction(VersionedTransaction.from_bytes(wire), skip_preflight=True)


def harness_for(localnet: Localnet, store: Store, mode: str, **kwargs: object) -> MixerHarness:
    return MixerHarness(localnet, store, WALLETS[mode], mode, **kwargs)  # type: ignore[arg-type]


# --- RPC clients that misbehave on cue ---


class HookedRpc(SteppingRpc):
    """A stepping client calling `before_poll(poll_number)` after each slot it produces and
    before the status lookup, and `before_balance(call_number)` before each balance read."""

    def __init__(
        self,
        net: Localnet,
        *,
        before_poll: Callable[[int], None] | None = None,
        before_balance: Callable[[int], None] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(net, **kwargs)
        self.before_poll = before_poll
        self.before_balance = before_balance
        self.polls = 0
        self.balance_reads = 0

    async def signature_statuses(
        self, signatures: Sequence[Signature], *, search_history: bool = False
    ) -> list[SignatureStatus | None]:
        self.net.advance(1)
        self.polls += 1
        if self.before_poll is not None:
            self.before_poll(self.polls)
        return await SolanaRpc.signature_statuses(self, signatures, search_history=search_history)

    async def balance(self, pubkey: Pubkey, *, min_context_slot: int | None = None) -> int:
        self._balance_read()
        return await super().balance(pubkey, min_context_slot=min_context_slot)

    async def balances(
        self, pubkeys: Sequence[Pubkey], *, min_context_slot: int | None = None
    ) -> list[int]:
        self._balance_read()
        return await super().balances(pubkeys, min_context_slot=min_context_slot)

    def _balance_read(self) -> None:
        self.balance_reads += 1
        if self.before_balance is not None:
            self.before_balance(self.balance_reads)


class LaggingStatusesRpc(SteppingRpc):
    """An RPC endpoint that is several nodes behind a load balancer: the first
    `lagging_lookups` status lookups are answered by a node stopped at `node_slot`, which
    knows none of the signatures; every other call reaches a current node."""

    def __init__(self, net: Localnet, *, node_slot: int, lagging_lookups: int) -> None:
        super().__init__(net)
        self.node_slot = node_slot
        self.lagging_lookups = lagging_lookups

    async def signature_statuses_seen_at(
        self, signatures: Sequence[Signature], *, search_history: bool = False
    ) -> tuple[int, list[SignatureStatus | None]]:
        if self.lagging_lookups > 0:
            self.lagging_lookups -= 1
            self.calls["getSignatureStatuses"] += 1
            return self.node_slot, [None] * len(signatures)
        return await super().signature_statuses_seen_at(signatures, search_history=search_history)


class OneInFlightRpc(SteppingRpc):
    """Fails the test if a standard run sends while two transactions may be in flight: at
    every send, the ledger's open attempts all belong to one transaction."""

    def __init__(self, net: Localnet, ledger: Ledger, run_id: str) -> None:
        super().__init__(net)
        self.ledger = ledger
        self.run_id = run_id
        self.checked_sends = 0

    async def send_raw(self, wire: bytes) -> SendResult:
        record = await self.ledger.require(self.run_id)
        in_flight = {tx.index for tx, _ in record.open_attempts()}
        assert len(in_flight) <= 1, f"transactions {sorted(in_flight)} in flight at once"
        self.checked_sends += 1
        return await super().send_raw(wire)


class GatedRpc(SteppingRpc):
    """Holds `getLatestBlockhash` (the step right before signing) until `gate` is set."""

    def __init__(self, net: Localnet, gate: asyncio.Event) -> None:
        super().__init__(net)
        self.gate = gate
        self.waiting = asyncio.Event()

    async def latest_blockhash(self) -> LatestBlockhash:
        self.waiting.set()
        await self.gate.wait()
        return await super().latest_blockhash()


# --- an earlier execution's transaction still in flight during the re-run ---


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("landing_height", "lands"),
    [(0, True), (1, False)],
    ids=["at-last-valid-height", "one-block-late"],
)
async def test_an_earlier_copy_arriving_during_the_re_run_is_paid_once(
    localnet: Localnet, store: Store, mode: str, landing_height: int, lands: bool
) -> None:
    # The first execution signs and records, then dies; its copies are still travelling and
    # reach a leader during the re-run at last valid block height + `landing_height`.
    harness = harness_for(localnet, store, mode)
    await harness.open()
    with pytest.raises(WorkerKilled):
        await harness.run(ledger=KillAfterWrite(store, kill_at=2))
    first = await harness.record()
    last_valid = first.transactions[0].attempts[0].last_valid_block_height
    localnet.advance(last_valid - 5 - localnet.block_height)
    drop = localnet.faults.inject("drop_send")  # the re-run's own copies get lost

    def copies_arrive(_: int) -> None:
        if localnet.block_height == last_valid + landing_height:
            for wire in wires(first):
                deliver(localnet, wire)
            localnet.faults.remove(drop)

    async with HookedRpc(localnet, before_poll=copies_arrive) as rpc:
        result = await harness.run(rpc=rpc, ledger=WatchedLedger(store, localnet))
    assert result.complete
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    record = await assert_ledger_matches_chain(harness)
    for before in first.transactions:
        states = [a.state for a in record.transactions[before.index].attempts]
        signature = before.attempts[0].signature
        if lands:
            assert states == [AttemptState.LANDED_OK]
            assert result.wallets[before.transfers[0]].signature == signature
        else:
            assert states == [AttemptState.EXPIRED, AttemptState.LANDED_OK]
            assert not landed_on_chain(localnet, signature)


@pytest.mark.parametrize("mode", MODES)
async def test_an_unsent_attempt_waits_for_the_finalized_height_before_it_is_signed_again(
    localnet: Localnet, store: Store, mode: str
) -> None:
    # Block height 10 past the last valid one at `processed` is not enough: the finalized
    # height (32 blocks behind here) must pass it before premix believes it can never land.
    harness = harness_for(localnet, store, mode)
    await harness.open()
    with pytest.raises(WorkerKilled):
        await harness.run(ledger=KillAfterWrite(store, kill_at=2))
    first = await harness.record()
    last_valid = first.transactions[0].attempts[0].last_valid_block_height
    localnet.advance(last_valid + 10 - localnet.block_height)
    assert localnet.chain.block(Commitment.FINALIZED).height < last_valid
    watched = WatchedLedger(store, localnet)
    await harness.run(ledger=watched)
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    record = await assert_ledger_matches_chain(harness)
    for before in first.transactions:
        attempts = record.transactions[before.index].attempts
        assert [a.state for a in attempts] == [AttemptState.EXPIRED, AttemptState.LANDED_OK]


@pytest.mark.parametrize("mode", MODES)
async def test_a_transaction_landed_beyond_the_status_cache_is_found_by_searching_history(
    localnet: Localnet, store: Store, mode: str
) -> None:
    # The queue retries hours later: the landed signature is no longer in the node's recent
    # status cache, and its blockhash is long expired. Only a history search finds it.
    harness = harness_for(localnet, store, mode)
    await harness.open()
    killer = KillAfterSend(localnet, kill_at=1)  # the first transaction lands unrecorded
    with pytest.raises(WorkerKilled):
        await harness.run(rpc=killer)
    await killer.close()
    first = (await harness.record()).transactions[0].attempts[0]
    assert landed_on_chain(localnet, first.signature)
    localnet.advance(STATUS_CACHE_SLOTS + 100)
    await harness.run(ledger=WatchedLedger(store, localnet))
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    record = await assert_ledger_matches_chain(harness)
    assert [a.signature for a in record.transactions[0].attempts] == [first.signature]


@pytest.mark.parametrize("mode", MODES)
async def test_a_status_lookup_answered_by_a_lagging_node_never_gives_up_a_landed_transaction(
    localnet: Localnet, store: Store, mode: str
) -> None:
    # The block height comes from a current node, the status lookups from one that stopped
    # before the transaction landed: "not found" there proves nothing.
    harness = harness_for(localnet, store, mode)
    await harness.open()
    killer = KillAfterSend(localnet, kill_at=1)  # the first transaction lands unrecorded
    with pytest.raises(WorkerKilled):
        await harness.run(rpc=killer)
    await killer.close()
    first = (await harness.record()).transactions[0].attempts[0]
    landed = localnet.transaction_log[Signature.from_string(first.signature)]
    assert landed.landed_slot is not None
    localnet.advance(200)  # its blockhash expired long ago, even at `finalized`
    lagging = LaggingStatusesRpc(localnet, node_slot=landed.landed_slot - 1, lagging_lookups=4)
    async with lagging:
        await harness.run(rpc=lagging, ledger=WatchedLedger(store, localnet))
    assert lagging.lagging_lookups == 0
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    record = await assert_ledger_matches_chain(harness)
    assert [a.signature for a in record.transactions[0].attempts] == [first.signature]


@pytest.mark.parametrize("mode", MODES)
async def test_a_poll_stalled_past_the_status_cache_still_finds_the_landed_transaction(
    localnet: Localnet, store: Store, mode: str
) -> None:
    # The worker stalls (GC pause, overloaded host) between its send and its first poll.
    harness = harness_for(localnet, store, mode)
    await harness.open()

    def stall(poll: int) -> None:
        if poll == 1:
            localnet.advance(STATUS_CACHE_SLOTS + 100)

    async with HookedRpc(localnet, before_poll=stall) as rpc:
        await harness.run(rpc=rpc, ledger=WatchedLedger(store, localnet))
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    record = await assert_ledger_matches_chain(harness)
    assert all(len(tx.attempts) == 1 for tx in record.transactions)


# --- crashes during confirmation polling and during the recipient balance check ---


@pytest.mark.parametrize(
    ("mode", "poll"), [("fast", 1), ("standard", 1), ("standard", 2), ("standard", 3)]
)
async def test_a_worker_killed_during_confirmation_polling_does_not_pay_twice(
    localnet: Localnet, store: Store, mode: str, poll: int
) -> None:
    # fast confirms both transactions at its first poll; standard polls once per transfer
    harness = harness_for(localnet, store, mode)
    await harness.open()

    def kill(number: int) -> None:
        if number == poll:
            raise WorkerKilled(f"at poll {number}")

    async with HookedRpc(localnet, before_poll=kill) as rpc:
        with pytest.raises(WorkerKilled):
            await harness.run(rpc=rpc)
    await harness.run(ledger=WatchedLedger(store, localnet))
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    await assert_ledger_matches_chain(harness)


@pytest.mark.parametrize("mode", MODES)
async def test_a_worker_killed_during_the_recipient_balance_check_does_not_pay_twice(
    localnet: Localnet, store: Store, mode: str
) -> None:
    # fast reads balances twice (before signing, after landing); standard reads before signing
    # (getMultipleAccounts) and checks with getBalance: the second read is the check.
    harness = harness_for(localnet, store, mode)
    await harness.open()

    def kill(number: int) -> None:
        if number == 2:
            raise WorkerKilled("during the balance check")

    async with HookedRpc(localnet, before_balance=kill) as rpc:
        with pytest.raises(WorkerKilled):
            await harness.run(rpc=rpc)
    assert (await harness.record()).transactions[0].state == "landed_ok"
    result = await harness.run(ledger=WatchedLedger(store, localnet))
    assert result.complete
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    await assert_ledger_matches_chain(harness)


# --- two workers holding the same run ---


@pytest.mark.parametrize("mode", MODES)
async def test_a_worker_that_loses_the_ledger_race_signs_nothing_that_is_sent(
    localnet: Localnet, store: Store, mode: str
) -> None:
    # arq re-delivers a job whose worker timed out while that worker still runs: the late
    # worker reads the run, the first one signs, sends and finishes, then the late one signs.
    harness = harness_for(localnet, store, mode)
    await harness.open()
    gate = asyncio.Event()
    late_rpc = GatedRpc(localnet, gate)
    async with late_rpc:
        late = asyncio.create_task(harness.run(rpc=late_rpc))
        await late_rpc.waiting.wait()
        await harness.run()
        gate.set()
        with pytest.raises(LedgerConflict):
            await late
        assert late_rpc.calls["sendTransaction"] == 0
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    await assert_ledger_matches_chain(harness)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(4))
async def test_two_workers_running_the_same_run_concurrently_pay_each_wallet_once(
    localnet: Localnet, store: Store, mode: str, seed: int
) -> None:
    harness = harness_for(localnet, store, mode)
    await harness.open()
    localnet.faults.inject("latency", probability=0.5, ms=random.Random(seed).randint(1, 5))
    outcomes = await asyncio.gather(
        harness.run(ledger=WatchedLedger(store, localnet)),
        harness.run(ledger=WatchedLedger(store, localnet)),
        return_exceptions=True,
    )
    assert any(isinstance(o, MixResult) for o in outcomes) or all(
        isinstance(o, LedgerConflict) for o in outcomes
    ), outcomes
    assert all(isinstance(o, MixResult | LedgerConflict) for o in outcomes), outcomes
    localnet.faults.clear()
    await harness.run()  # the queue's retry finishes whatever the loser left
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    await assert_ledger_matches_chain(harness)


# --- on-chain failures, recipients with other money ---


async def test_fast_mode_a_transaction_failing_on_chain_is_reported_and_only_it_is_re_signed(
    localnet: Localnet, store: Store
) -> None:
    # Enough for either transaction of the round, never both; the node lets the second land
    # and fail (no preflight), so its fee is paid and its transfers are not.
    funding = 21 * 10_000_000 + 2 * LAMPORTS_PER_SIGNATURE + 5_000_000
    harness = MixerHarness(localnet, store, 22, "fast", funding_lamports=funding)
    harness.amounts = [10_000_000] * 22
    await harness.open()
    async with SteppingRpc(localnet, skip_preflight=True) as rpc:
        with pytest.raises(MixerFailed) as stopped:
            await harness.run(rpc=rpc)
    report = stopped.value.result
    assert report is not None
    record = await assert_ledger_matches_chain(harness)
    states = sorted(tx.attempts[0].state.value for tx in record.transactions)
    assert states == ["landed_failed", "landed_ok"]
    failed_tx = next(tx for tx in record.transactions if tx.state == "failed")
    assert stopped.value.reason == (
        f"transaction {failed_tx.index + 1} failed on chain: "
        "instruction 0 failed: insufficient lamports for the transfer"
    )
    assert {w.status for i, w in enumerate(report.wallets) if i in failed_tx.transfers} == {
        WalletStatus.FAILED
    }
    assert {w.status for i, w in enumerate(report.wallets) if i not in failed_tx.transfers} == {
        WalletStatus.FUNDED
    }
    assert (report.transactions, report.fee_lamports) == (2, 2 * LAMPORTS_PER_SIGNATURE)
    assert (await harness.record()).status is RunStatus.FAILED

    localnet.airdrop(harness.funding.pubkey(), 10**9)  # the user tops up; the queue re-runs
    harness.funding_lamports += 10**9
    localnet.advance(1)  # a later block: a new blockhash to sign with
    result = await harness.run(ledger=WatchedLedger(store, localnet))
    assert result.complete
    assert harness.balances() == harness.amounts
    record = await assert_ledger_matches_chain(harness)
    assert [a.state for a in record.transactions[failed_tx.index].attempts] == [
        AttemptState.LANDED_FAILED,
        AttemptState.LANDED_OK,
    ]
    assert (result.transactions, result.fee_lamports) == (3, 3 * LAMPORTS_PER_SIGNATURE)
    assert result.sent_lamports == sum(harness.amounts)


@pytest.mark.parametrize("mode", MODES)
async def test_recipients_holding_or_receiving_other_money_are_paid_their_amount_once(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = harness_for(localnet, store, mode)
    already = 123_456_789
    localnet.airdrop(harness.recipients[0], already)
    await harness.open()
    gift = 987_654_321

    def someone_pays_the_last_wallet(poll: int) -> None:
        if poll == 1:
            localnet.airdrop(harness.recipients[-1], gift)

    async with HookedRpc(localnet, before_poll=someone_pays_the_last_wallet) as rpc:
        result = await harness.run(rpc=rpc, ledger=WatchedLedger(store, localnet))
    assert result.complete
    before = [already] + [0] * (len(harness.recipients) - 2) + [gift]
    record = await assert_ledger_matches_chain(harness, recipients_before=before)
    assert record.plan[0].balance_before == already


async def test_a_recipient_spending_before_the_check_fails_the_run_and_is_never_paid_again(
    localnet: Localnet, store: Store
) -> None:
    harness = MixerHarness(localnet, store, 2, "standard")
    owners = [Keypair(), Keypair()]
    harness.recipients = [k.pubkey() for k in owners]
    await harness.open()

    def owner_spends(read: int) -> None:
        if read == 2:  # the check after the first confirmed transfer
            drain(localnet, owners[0], keep_lamports=1_000_000)
            localnet.advance(1)  # the spend is confirmed: a confirmed read sees it

    async with HookedRpc(localnet, before_balance=owner_spends) as rpc:
        with pytest.raises(MixerFailed) as stopped:
            await harness.run(rpc=rpc)
    assert stopped.value.reason == (
        f"wallet {owners[0].pubkey()} holds 0.001 SOL after its confirmed transfer, "
        "expected at least 0.010000007 SOL"
    )
    assert stopped.value.funded == [(str(owners[0].pubkey()), harness.amounts[0])]
    result = await harness.run()
    assert result.complete
    assert harness.balances() == [1_000_000, harness.amounts[1]]
    record = await harness.record()
    assert [len(tx.attempts) for tx in record.transactions] == [1, 1]
    totals = record.totals
    assert (totals.transactions, totals.sent_lamports) == (2, sum(harness.amounts))


# --- chaos: random faults and random kills until the run finishes ---


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(6))
async def test_random_faults_and_kills_never_pay_twice_and_keep_one_transfer_in_flight(
    localnet: Localnet, store: Store, mode: str, seed: int
) -> None:
    chaos = random.Random(seed)
    harness = harness_for(localnet, store, mode)
    await harness.open()
    faults = localnet.faults  # seeded: the same draws for the same calls
    faults.inject("drop_send", probability=0.3)
    faults.inject("lose_response", probability=0.1)
    faults.inject("http_5xx", probability=0.05)
    faults.inject("http_429", probability=0.05, retry_after=0)
    faults.inject("expire_blockhash", method="getSignatureStatuses", probability=0.02)
    kills = 0
    for _ in range(60):
        rpc = (
            OneInFlightRpc(localnet, Ledger(store), harness.run_id)
            if mode == "standard"
            else SteppingRpc(localnet)
        )
        # an uninterrupted run writes at least 4 times: the first execution always dies
        ledger = WatchedLedger(store, localnet, kill_at=chaos.randint(1, 4 if kills == 0 else 12))
        try:
            async with rpc:
                result = await harness.run(rpc=rpc, ledger=ledger)
            break
        except WorkerKilled:
            kills += 1
        except TransientError:
            pass
    else:
        pytest.fail("no progress across 60 executions")
    assert result.complete
    assert kills > 0
    faults.clear()
    await harness.assert_each_wallet_paid_exactly_once(len((await harness.record()).transactions))
    record = await assert_ledger_matches_chain(harness)
    assert record.totals.sent_lamports == sum(harness.amounts)


# --- what the ledger holds ---


@pytest.mark.parametrize("mode", MODES)
async def test_the_ledger_holds_no_secret_only_public_plain_transfers_in_int64(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = harness_for(localnet, store, mode)
    await harness.open()
    localnet.faults.inject("expire_blockhash", method="sendTransaction", count=1)
    await harness.run()
    document = await store.collection("premix_runs").find_one({"_id": harness.run_id})
    assert document is not None
    encoded = bson.encode(document)
    for form in secret_forms(harness.funding):
        assert form.encode() not in encoded
        assert form not in repr(document)

    def ints(value: object) -> list[int]:
        if isinstance(value, bool):
            return []
        if isinstance(value, int):
            return [value]
        if isinstance(value, dict):
            return [i for v in value.values() for i in ints(v)]
        if isinstance(value, list):
            return [i for v in value for i in ints(v)]
        return []

    assert all(-(2**63) <= i <= MAX_INT64 for i in ints(document))
    plan = {(e["recipient"], e["lamports"]) for e in document["plan"]}
    for tx in document["transactions"]:
        for attempt in tx["attempts"]:
            transaction = Transaction.from_bytes(base64.b64decode(attempt["wire"]))
            message: Message = transaction.message
            transaction.verify()  # raises unless the funding wallet's signature is valid
            assert message.account_keys[0] == harness.funding.pubkey()
            assert message.header.num_required_signatures == 1
            assert str(transaction.signatures[0]) == attempt["signature"]
            assert str(message.recent_blockhash) == attempt["blockhash"]
            paid = set()
            for compiled in message.instructions:
                instruction = Instruction(
                    message.account_keys[compiled.program_id_index],
                    bytes(compiled.data),
                    [
                        AccountMeta(message.account_keys[i], message.is_signer(i), is_writable=True)
                        for i in bytes(compiled.accounts)
                    ],
                )
                assert instruction.program_id == SYSTEM_PROGRAM_ID
                params = decode_transfer(instruction)
                assert params["from_pubkey"] == harness.funding.pubkey()
                paid.add((str(params["to_pubkey"]), params["lamports"]))
            assert paid <= plan
            assert len(paid) == len(tx["transfers"])


def test_a_plan_amount_beyond_int64_is_refused_before_it_reaches_the_store() -> None:
    now = utc_now()
    record = RunRecord("premix-u1-1", "u1", "fast", 1, created_at=now, updated_at=now)
    recipients = [str(Pubkey.new_unique()) for _ in range(2)]
    with pytest.raises(LedgerError, match=f"plan amounts must sum to at most {MAX_INT64} lamp"):
        record.set_plan(recipients, [MAX_INT64 // 2 + 1, MAX_INT64 // 2 + 1], now=now)
    assert record.plan == []


# --- round trips and confirmation latency ---


async def test_fast_mode_73_wallets_confirm_within_2_slots_in_at_most_12_round_trips(
    localnet: Localnet, store: Store
) -> None:
    harness = MixerHarness(localnet, store, 73, "fast")
    await harness.open()
    async with SteppingRpc(localnet) as rpc:  # one slot per status poll
        result = await harness.run(rpc=rpc)
        assert rpc.calls["getSignatureStatuses"] <= 2
        assert rpc.round_trips <= 12
    assert result.transactions == 4
    record = await assert_ledger_matches_chain(harness)
    for tx in record.transactions:
        [attempt] = tx.attempts
        landed = localnet.transaction_log[Signature.from_string(attempt.signature)]
        assert landed.landed_slot is not None
        assert landed.landed_slot - landed.received_slot <= 2


# --- a chain that stops ---


@pytest.mark.parametrize("mode", MODES)
async def test_a_chain_that_stops_producing_blocks_hands_the_job_back_instead_of_hanging(
    localnet: Localnet, store: Store, mode: str
) -> None:
    # A manual clock nobody steps: the transaction is processed and never confirmed.
    harness = harness_for(localnet, store, mode)
    await harness.open()
    async with SolanaRpc(localnet.url, retry=QUICK_RETRIES) as rpc:
        with pytest.raises(TransientError, match="the chain is not advancing"):
            await asyncio.wait_for(harness.run(rpc=rpc), timeout=10)
    record = await harness.record()
    assert record.open_attempts()
    localnet.advance(1)
    await harness.run()
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])


# --- a refusal proves nothing while an earlier copy may land ---


class RefusedButForwardedRpc(SteppingRpc):
    """Behind a load balancer: the first send of each transaction reaches a node that forwards
    it to the leader, while the answer comes from another node whose preflight refuses it."""

    def __init__(self, net: Localnet) -> None:
        super().__init__(net)
        self.refused: set[bytes] = set()

    async def send_raw(self, wire: bytes) -> SendResult:
        if wire in self.refused:
            return await super().send_raw(wire)
        self.refused.add(wire)
        deliver(self.net, wire)
        return SendResult(SendOutcome.REJECTED, "insufficient funds for the fee")


@pytest.mark.parametrize("mode", MODES)
async def test_a_refused_send_that_landed_anyway_is_reported_funded_not_failed(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = harness_for(localnet, store, mode)
    await harness.open()

    async with RefusedButForwardedRpc(localnet) as rpc:
        result = await harness.run(rpc=rpc, ledger=WatchedLedger(store, localnet))

    assert result.complete
    assert [w.status for w in result.wallets] == [WalletStatus.FUNDED] * len(harness.recipients)
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    await assert_ledger_matches_chain(harness)


class RefusingRpc(SteppingRpc):
    """Every send is refused at preflight and reaches no one."""

    async def send_raw(self, wire: bytes) -> SendResult:
        return SendResult(SendOutcome.REJECTED, "insufficient funds for the fee")


@pytest.mark.parametrize("mode", MODES)
async def test_a_run_fails_for_a_refusal_only_once_the_refused_attempt_can_never_land(
    localnet: Localnet, store: Store, mode: str
) -> None:
    harness = harness_for(localnet, store, mode)
    await harness.open()

    async with RefusingRpc(localnet) as rpc:
        with pytest.raises(MixerFailed) as stopped:
            await harness.run(rpc=rpc)

    record = await harness.record()
    attempts = [a for tx in record.transactions for a in tx.attempts]
    assert attempts and all(a.state is AttemptState.EXPIRED for a in attempts)
    assert localnet.block_height > max(a.last_valid_block_height for a in attempts)
    assert stopped.value.pending == []
    assert "was refused by the RPC node: insufficient funds for the fee" in stopped.value.reason
    assert harness.balances() == [0] * len(harness.recipients)


# --- a lagging node behind the load balancer ---


@pytest.mark.parametrize("mode", MODES)
async def test_a_node_a_few_slots_behind_never_fails_the_balance_check(
    fast_localnet: Localnet, store: Store, mode: str
) -> None:
    # Every balance read is answered by a node 3 slots behind: it would show the recipient
    # without the transfer it just received. premix asks for the landed slot and waits.
    harness = harness_for(fast_localnet, store, mode)
    await harness.open()
    for method in ("getBalance", "getMultipleAccounts"):
        fast_localnet.faults.inject("stale_read", method=method, slots=3)
    patient = RetryPolicy(tries=8, base_delay_seconds=0.02, max_delay_seconds=0.1)

    async with SolanaRpc(fast_localnet.url, retry=patient) as rpc:
        result = await harness.run(rpc=rpc)

    assert result.complete
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])


# --- a node without transaction history ---


@pytest.mark.parametrize("mode", MODES)
async def test_a_landed_transfer_a_node_without_history_cannot_find_is_never_paid_again(
    localnet: Localnet, store: Store, mode: str
) -> None:
    # The first send lands and the worker dies; arq runs the job again thousands of slots
    # later, on a node that answers statuses only from its recent cache: the signature is not
    # found and the blockhash has expired, but the recipients' balances show the transfer.
    harness = harness_for(localnet, store, mode)
    await harness.open()
    with pytest.raises(WorkerKilled):
        await harness.run(rpc=KillAfterSend(localnet, kill_at=1))
    localnet.advance(2)  # it lands and is confirmed
    first = (await harness.record()).transactions[0].attempts[0]
    assert localnet.transaction_log[Signature.from_string(first.signature)].landed
    localnet.expire_blockhashes()
    localnet.advance(200)  # far out of the status cache, and finalized
    localnet.faults.inject("no_history", method="getSignatureStatuses")

    result = await harness.run()

    assert result.complete
    await harness.assert_each_wallet_paid_exactly_once(TRANSACTIONS[mode])
    record = await harness.record()
    settled = record.transactions[0].attempts[0]
    assert (settled.signature, settled.state, settled.evidence) == (
        first.signature,
        AttemptState.LANDED_OK,
        "balances",
    )
    assert len(record.transactions[0].attempts) == 1  # never signed again
    assert result.wallets[0].evidence == "balances"


async def test_a_transfer_whose_recipients_only_partly_hold_their_amount_stops_for_review(
    localnet: Localnet, store: Store
) -> None:
    # The first transaction's send was dropped, so it can never land; meanwhile someone else
    # paid the first recipient exactly its amount. Re-signing might pay it twice, not
    # re-signing leaves the others unpaid: premix sends nothing more and asks for a review.
    harness = harness_for(localnet, store, "fast")
    await harness.open()
    localnet.faults.inject("drop_send", count=1)
    with pytest.raises(WorkerKilled):
        await harness.run(rpc=KillAfterSend(localnet, kill_at=1))
    localnet.airdrop(harness.recipients[0], harness.amounts[0])
    localnet.expire_blockhashes()
    localnet.advance(40)
    balances_before = harness.balances()
    signed_before = len([a for tx in (await harness.record()).transactions for a in tx.attempts])

    with pytest.raises(MixerFailed) as stopped:
        await harness.run()

    assert stopped.value.reason.startswith(
        "needs review: transaction 1 is not found on chain and its blockhash expired, yet only "
        "some of its recipients hold their amount (not: "
    )
    record = await harness.record()
    assert record.status is RunStatus.FAILED
    # nothing more was signed, nor paid
    assert len([a for tx in record.transactions for a in tx.attempts]) == signed_before
    assert harness.balances() == balances_before
