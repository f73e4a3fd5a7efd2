"""The run ledger: its state machine (no I/O) and its documents in the store."""

from datetime import UTC, datetime, timedelta

import pytest
from solders.pubkey import Pubkey

from premix.constants import RUNS_COLLECTION
from premix.ledger import (
    Attempt,
    AttemptState,
    Ledger,
    LedgerConflict,
    LedgerError,
    RunRecord,
    RunStatus,
    TopUpEntry,
    Totals,
    TransactionState,
    run_from_document,
    run_to_document,
)
from premix.memory_store import as_server_sees_it
from premix.store import Store

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
RECIPIENTS = [str(Pubkey.new_unique()) for _ in range(3)]
AMOUNTS = [10_000_000, 20_000_000, 30_000_000]


def attempt(name: str, *, valid_until: int = 500) -> Attempt:
    return Attempt(
        signature=f"sig-{name}",
        blockhash=f"hash-{name}",
        last_valid_block_height=valid_until,
        wire="AQID",
        signed_at=T0,
        fee_lamports=5_000,
    )


def planned_run() -> RunRecord:
    record = RunRecord("premix-u1-1", "u1", "fast", sum(AMOUNTS), created_at=T0, updated_at=T0)
    assert record.set_plan(RECIPIENTS, AMOUNTS, now=T0)
    return record


# --- state machine ---


def test_a_new_transaction_starts_signed_and_lands_once() -> None:
    record = planned_run()
    tx = record.add_transaction([0, 1], attempt("a"))
    assert (record.status, tx.state) == (RunStatus.SENDING, TransactionState.SIGNED)
    assert record.uncovered_positions() == [2]
    record.settle("sig-a", AttemptState.LANDED_OK, now=T0, fee_lamports=5_000, slot=7)
    assert tx.state is TransactionState.LANDED_OK
    assert record.funded_positions() == [0, 1]
    assert record.totals.sent_lamports == 30_000_000
    assert (record.totals.fee_lamports, record.totals.transactions) == (5_000, 1)


def test_an_open_attempt_forbids_a_new_signature() -> None:
    record = planned_run()
    record.add_transaction([0], attempt("a"))
    with pytest.raises(LedgerError, match="transaction 0 is signed: it must not be signed again"):
        record.add_attempt(0, attempt("b"))


def test_a_refused_attempt_is_still_open_until_it_expires() -> None:
    record = planned_run()
    tx = record.add_transaction([0], attempt("a"))
    record.settle("sig-a", AttemptState.REJECTED, now=T0, error="insufficient funds for the fee")
    assert tx.state is TransactionState.SIGNED
    assert not tx.may_sign_new_attempt
    record.settle("sig-a", AttemptState.EXPIRED, now=T0)
    assert tx.may_sign_new_attempt


def test_only_an_expired_or_failed_attempt_allows_a_new_one() -> None:
    record = planned_run()
    tx = record.add_transaction([0], attempt("a"))
    record.settle("sig-a", AttemptState.EXPIRED, now=T0)
    assert tx.state is TransactionState.PENDING
    record.add_attempt(0, attempt("b"))
    record.settle("sig-b", AttemptState.LANDED_FAILED, now=T0, error="boom", fee_lamports=5_000)
    assert tx.state is TransactionState.FAILED
    record.add_attempt(0, attempt("c"))
    record.settle("sig-c", AttemptState.LANDED_OK, now=T0, fee_lamports=5_000)
    assert tx.state is TransactionState.LANDED_OK
    with pytest.raises(LedgerError, match="is landed_ok: it must not be signed again"):
        record.add_attempt(0, attempt("d"))
    # both landed attempts paid their fee; only the successful one moved money
    assert record.totals == type(record.totals)(10_000_000, 10_000, 2)


@pytest.mark.parametrize(
    "final", [AttemptState.LANDED_OK, AttemptState.LANDED_FAILED, AttemptState.EXPIRED]
)
@pytest.mark.parametrize("target", list(AttemptState))
def test_final_attempt_states_never_change(final: AttemptState, target: AttemptState) -> None:
    record = planned_run()
    record.add_transaction([0], attempt("a"))
    record.settle("sig-a", final, now=T0)
    with pytest.raises(LedgerError, match=f"attempt sig-a: {final} -> {target} is not allowed"):
        record.settle("sig-a", target, now=T0)


def test_a_refused_attempt_accepted_on_a_later_send_is_signed_again() -> None:
    record = planned_run()
    record.add_transaction([0], attempt("a"))
    record.settle("sig-a", AttemptState.REJECTED, now=T0, error="insufficient")
    record.settle("sig-a", AttemptState.SIGNED, now=T0)
    assert record.open_attempts()[0][1].state is AttemptState.SIGNED


def test_positions_are_signed_in_one_transaction_only() -> None:
    record = planned_run()
    record.add_transaction([0, 1], attempt("a"))
    with pytest.raises(LedgerError, match=r"positions \[1, 2\] are not all unsigned"):
        record.add_transaction([1, 2], attempt("b"))
    with pytest.raises(LedgerError, match="are not all unsigned"):
        record.add_transaction([7], attempt("c"))


def test_the_first_plan_wins() -> None:
    record = planned_run()
    assert not record.set_plan(RECIPIENTS[:1], [1], now=T0)
    assert [e.lamports for e in record.plan] == AMOUNTS


@pytest.mark.parametrize(
    ("recipients", "amounts", "message"),
    [
        (RECIPIENTS, [1, 2], "as many amounts as recipients"),
        ([], [], "at least one"),
        (RECIPIENTS[:2], [1, 0], "positive integer lamports"),
        (RECIPIENTS[:2], [1, True], "positive integer lamports"),
        ([RECIPIENTS[0], RECIPIENTS[0]], [1, 2], "pays each recipient once"),
    ],
)
def test_a_malformed_plan_is_refused(
    recipients: list[str], amounts: list[int], message: str
) -> None:
    record = RunRecord("r", "u1", "fast", 3, created_at=T0, updated_at=T0)
    with pytest.raises(LedgerError, match=message):
        record.set_plan(recipients, amounts, now=T0)


def test_a_run_completes_only_when_every_transfer_landed_and_then_stays_completed() -> None:
    record = planned_run()
    record.add_transaction([0, 1, 2], attempt("a"))
    with pytest.raises(LedgerError, match="not every transfer landed"):
        record.finish(RunStatus.COMPLETED, now=T0)
    record.finish(RunStatus.FAILED, now=T0, error="stopped")
    assert (record.status, record.error) == (RunStatus.FAILED, "stopped")
    record.settle("sig-a", AttemptState.LANDED_OK, now=T0)
    record.finish(RunStatus.COMPLETED, now=T0)
    assert (record.status, record.error) == (RunStatus.COMPLETED, None)
    with pytest.raises(LedgerError, match="is completed"):
        record.finish(RunStatus.FAILED, now=T0)


def test_the_document_round_trips_through_bson_with_derived_states_for_readers() -> None:
    record = planned_run()
    record.record_balance_before(0, 123)
    record.record_balance_before(0, 999)  # first value wins
    record.add_transaction([0, 1], attempt("a", valid_until=2**40))
    record.settle("sig-a", AttemptState.LANDED_OK, now=T0 + timedelta(seconds=1), slot=9)
    record.add_transaction([2], attempt("b"))
    document = as_server_sees_it(run_to_document(record))
    assert document["transactions"][0]["state"] == "landed_ok"
    assert document["transactions"][1]["state"] == "signed"
    assert document["totals"] == {"sent_lamports": 30_000_000, "fee_lamports": 0, "transactions": 1}
    assert document["plan"][0] == {
        "position": 0,
        "recipient": RECIPIENTS[0],
        "lamports": 10_000_000,
        "balance_before": 123,
    }
    assert run_from_document(document) == record


def top_up_entries(held: list[int]) -> list[TopUpEntry]:
    return [
        TopUpEntry(position, recipient, planned, balance)
        for position, (recipient, planned, balance) in enumerate(
            zip(RECIPIENTS, AMOUNTS, held, strict=True)
        )
    ]


def test_a_top_up_plans_only_what_each_wallet_lacks_and_keeps_both_figures() -> None:
    record = RunRecord("premix-u1-1", "u1", "fast", sum(AMOUNTS), created_at=T0, updated_at=T0)
    entries = top_up_entries([10_000_000, 5_000_000, 31_000_000])  # full, short, over

    assert record.set_top_up(entries, now=T0)

    assert record.status is RunStatus.PLANNED and record.planned
    assert [(e.position, e.recipient, e.lamports, e.balance_before) for e in record.plan] == [
        (0, RECIPIENTS[1], 15_000_000, 5_000_000)
    ]
    assert record.top_up == entries
    assert [e.missing_lamports for e in entries] == [0, 15_000_000, 0]
    assert not record.set_top_up(top_up_entries([0, 0, 0]), now=T0)  # the first plan wins
    assert [e.lamports for e in record.plan] == [15_000_000]
    document = as_server_sees_it(run_to_document(record))
    assert document["top_up"][1] == {
        "position": 1,
        "recipient": RECIPIENTS[1],
        "planned_lamports": 20_000_000,
        "held_lamports": 5_000_000,
    }
    assert run_from_document(document) == record


def test_a_top_up_of_wallets_holding_enough_is_planned_empty_and_completes_with_nothing_sent() -> (
    None
):
    record = RunRecord("premix-u1-1", "u1", "fast", sum(AMOUNTS), created_at=T0, updated_at=T0)

    assert record.set_top_up(top_up_entries(AMOUNTS), now=T0)

    assert (record.plan, record.planned, record.status) == ([], True, RunStatus.PLANNED)
    assert not record.set_plan(RECIPIENTS, AMOUNTS, now=T0)  # planned: the first plan wins
    record.finish(RunStatus.COMPLETED, now=T0)
    assert record.totals == Totals(sent_lamports=0, fee_lamports=0, transactions=0)
    assert run_from_document(as_server_sees_it(run_to_document(record))) == record
    with pytest.raises(LedgerError, match="by position"):
        RunRecord("r", "u1", "fast", 1, T0, T0).set_top_up([], now=T0)


def test_a_run_stored_before_top_ups_reads_back_as_no_top_up() -> None:
    document = as_server_sees_it(run_to_document(planned_run()))
    del document["top_up"]
    assert run_from_document(document).top_up is None


# --- persistence ---
# --- persistence ---


async def test_open_run_is_idempotent_and_keeps_the_stored_run(store: Store) -> None:
    ledger = Ledger(store)
    first = await ledger.open_run("premix-u1-1", user_id="u1", mode="fast", amount_lamports=7)
    again = await ledger.open_run("premix-u1-1", user_id="u1", mode="standard", amount_lamports=9)
    assert again == first
    assert (again.mode, again.amount_lamports, again.status) == ("fast", 7, RunStatus.OPENED)
    assert await store.collection(RUNS_COLLECTION).count_documents({}) == 1
    with pytest.raises(LedgerError, match="belongs to another user"):
        await ledger.open_run("premix-u1-1", user_id="u2", mode="fast", amount_lamports=7)


async def test_record_plan_stores_the_first_plan_and_returns_it_on_a_rerun(store: Store) -> None:
    ledger = Ledger(store.collection(RUNS_COLLECTION))
    await ledger.open_run("run-1", user_id="u1", mode="fast", amount_lamports=60_000_000)
    stored = await ledger.record_plan("run-1", RECIPIENTS, AMOUNTS)
    rerun = await ledger.record_plan("run-1", RECIPIENTS[::-1], [1, 2, 3])
    assert [(e.recipient, e.lamports) for e in rerun.plan] == list(
        zip(RECIPIENTS, AMOUNTS, strict=True)
    )
    assert rerun == stored
    document = await store.collection(RUNS_COLLECTION).find_one({"_id": "run-1"})
    assert document is not None
    assert (document["status"], document["user_id"], document["revision"]) == ("planned", "u1", 1)


async def test_record_top_up_stores_the_first_top_up_plan(store: Store) -> None:
    ledger = Ledger(store)
    await ledger.open_run("run-1", user_id="u1", mode="fast", amount_lamports=sum(AMOUNTS))
    stored = await ledger.record_top_up("run-1", top_up_entries([0, 20_000_000, 0]))
    rerun = await ledger.record_top_up("run-1", top_up_entries(AMOUNTS))
    assert rerun == stored == await ledger.get("run-1")
    assert [e.lamports for e in rerun.plan] == [10_000_000, 30_000_000]
    assert rerun.revision == 1


async def test_a_plan_for_a_run_never_opened_is_refused(store: Store) -> None:
    with pytest.raises(LedgerError, match="run nope was never opened"):
        await Ledger(store).record_plan("nope", RECIPIENTS, AMOUNTS)


async def test_a_stale_writer_cannot_overwrite_the_run(store: Store) -> None:
    ledger = Ledger(store)
    await ledger.open_run("run-1", user_id="u1", mode="fast", amount_lamports=60_000_000)
    await ledger.record_plan("run-1", RECIPIENTS, AMOUNTS)
    mine, theirs = await ledger.require("run-1"), await ledger.require("run-1")
    theirs.add_transaction([0], attempt("theirs"))
    await ledger.save(theirs)
    mine.add_transaction([0], attempt("mine"))
    with pytest.raises(LedgerConflict, match="run run-1 changed since revision 1"):
        await ledger.save(mine)
    stored = await ledger.require("run-1")
    assert [a.signature for tx in stored.transactions for a in tx.attempts] == ["sig-theirs"]


async def test_finish_records_the_reason(store: Store) -> None:
    ledger = Ledger(store)
    await ledger.open_run("run-1", user_id="u1", mode="fast", amount_lamports=1)
    await ledger.finish("run-1", RunStatus.FAILED, error="funding drained")
    stored = await ledger.require("run-1")
    assert (stored.status, stored.error) == (RunStatus.FAILED, "funding drained")


@pytest.mark.parametrize("bad", [{"$ne": None}, 5, ""])
async def test_run_ids_reach_the_store_only_as_strings(store: Store, bad: object) -> None:
    with pytest.raises(TypeError, match="run_id must be a non-empty str"):
        await Ledger(store).get(bad)  # type: ignore[arg-type]


async def test_a_run_keeps_its_request_and_is_found_by_the_jobs_that_retry_it(
    store: Store,
) -> None:
    ledger = Ledger(store)
    request = {"userId": "u1", "userChatId": 42, "mixAmount": "2.5", "mode": "fast"}
    await ledger.open_run("run-1", user_id="u1", mode="fast", amount_lamports=1, request=request)

    await ledger.add_retry_job("run-1", "retry-1")
    again = await ledger.add_retry_job("run-1", "retry-1")  # idempotent
    await ledger.add_retry_job("run-1", "retry-2")

    assert again.retry_jobs == ["retry-1"]
    for job_id in ("run-1", "retry-1", "retry-2"):
        run = await ledger.run_of_job(job_id)
        assert run is not None and run.run_id == "run-1"
        assert run.request == request and run.retry_jobs == ["retry-1", "retry-2"]
    assert await ledger.run_of_job("retry-3") is None
    with pytest.raises(LedgerError, match="run nope was never opened"):
        await ledger.add_retry_job("nope", "retry-1")
