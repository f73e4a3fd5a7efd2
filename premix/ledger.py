"""The run ledger: one document per premix run in the store, written ahead of every send.

`Ledger` persists a `RunRecord` (`premix.runs`: the records and their state machine, re-exported
here), one whole-document compare-and-swap on its revision per write, so two workers holding the
same run can never both add an attempt.

A write whose outcome the client cannot see (a connection lost after sending, a timeout, a write
concern error after the write applied, a driver retry that matched nothing because its first try
had applied) is settled by reading the run back: the document this write made means it happened;
the revision it was based on means it did not (yet), and it is written again - harmless, since a
late copy of the first try can no longer match; anything else is another writer's.
"""

from collections.abc import Sequence
from typing import Any, Final, Protocol, cast

from pymongo.errors import DuplicateKeyError, PyMongoError, WriteError

from premix.constants import RUNS_COLLECTION
from premix.documents import DocumentCollection, as_server_sees_it
from premix.errors import TransientError
from premix.metrics import LEDGER_CONFLICTS
from premix.run_documents import run_from_document, run_to_document
from premix.runs import (
    FINISHED_STATUSES,
    MAX_INT64,
    OPEN_ATTEMPT_STATES,
    Attempt,
    AttemptState,
    LedgerError,
    LedgerTransaction,
    PlanEntry,
    RunRecord,
    RunStatus,
    TopUpEntry,
    Totals,
    TransactionState,
    utc_now,
)

__all__ = [
    "FINISHED_STATUSES",
    "MAX_INT64",
    "OPEN_ATTEMPT_STATES",
    "Attempt",
    "AttemptState",
    "Ledger",
    "LedgerConflict",
    "LedgerError",
    "LedgerTransaction",
    "PlanEntry",
    "RunRecord",
    "RunStatus",
    "TopUpEntry",
    "Totals",
    "TransactionState",
    "run_from_document",
    "run_to_document",
    "utc_now",
]

# Writes of one revision (each after PyMongo's own retry) before the store counts as unavailable.
WRITE_TRIES: Final = 3


class LedgerConflict(TransientError):
    """Another worker wrote the run since it was read; this one stops without sending."""

    title = "Run is being processed by another worker"


# --- persistence ---


class HasCollections(Protocol):
    """A store: anything that hands out collections by name (`premix.store.Store`)."""

    def collection(self, name: str) -> DocumentCollection: ...


def _is_store(source: object) -> bool:
    # Looked up on the type: PyMongo's AsyncCollection answers every attribute an instance is
    # asked for with a sub-collection, so `source.collection` exists on a collection too.
    return callable(getattr(type(source), "collection", None))


class Ledger:
    """The run ledger in the store: `Ledger(store)` or `Ledger(collection)`.

    Every write replaces the whole run document if and only if its `revision` is still the one
    read; otherwise `LedgerConflict` (a `TransientError`) is raised and nothing is written.
    """

    def __init__(self, source: HasCollections | DocumentCollection) -> None:
        self.collection: DocumentCollection = (
            cast(HasCollections, source).collection(RUNS_COLLECTION)
            if _is_store(source)
            else cast(DocumentCollection, source)
        )

    async def ensure_indexes(self) -> None:
        """Create the index that finds a user's runs (idempotent; run once per process)."""
        await self.collection.create_index([("user_id", 1)], name="user_id")
        await self.collection.create_index([("retry_jobs", 1)], name="retry_jobs")

    async def open_runs_of(self, user_id: str, *, excluding: str) -> list[RunRecord]:
        """The user's runs other than `excluding` that hold an attempt that may still land."""
        if not isinstance(user_id, str):
            raise TypeError("user_id must be a str")
        cursor = self.collection.find(
            {
                "user_id": user_id,
                "_id": {"$ne": _run_id(excluding)},
                "transactions.attempts.state": {"$in": [s.value for s in OPEN_ATTEMPT_STATES]},
            },
            sort=[("created_at", 1)],
        )
        return [run_from_document(document) for document in await cursor.to_list()]

    async def runs_of(self, user_id: str) -> list[RunRecord]:
        """Every run of the user, newest first (the `user_id` index)."""
        if not isinstance(user_id, str):
            raise TypeError("user_id must be a str")
        cursor = self.collection.find({"user_id": user_id}, sort=[("created_at", -1)])
        return [run_from_document(document) for document in await cursor.to_list()]

    async def get(self, run_id: str) -> RunRecord | None:
        """Return the run `run_id`, or None if it was never opened."""
        document = await self.collection.find_one({"_id": _run_id(run_id)})
        return None if document is None else run_from_document(document)

    async def run_of_job(self, job_id: str) -> RunRecord | None:
        """The run job `job_id` works on: the run of that id, or the run a retry job of that
        id continues (`retry_premix`); None when there is neither."""
        job_id = _run_id(job_id)
        document = await self.collection.find_one(
            {"$or": [{"_id": job_id}, {"retry_jobs": job_id}]}
        )
        return None if document is None else run_from_document(document)

    async def add_retry_job(self, run_id: str, job_id: str) -> RunRecord:
        """Record that job `job_id` continues run `run_id` (idempotent); returns the run.
        Raises `LedgerError` if the run was never opened."""
        for _ in range(WRITE_TRIES):
            record = await self.require(run_id)
            if job_id in record.retry_jobs:
                return record
            record.retry_jobs.append(_run_id(job_id))
            try:
                return await self.save(record)
            except LedgerConflict:
                continue  # another writer came first: read it again
        raise _unconfirmed(f"the retry job of run {run_id}", None)

    async def open_run(
        self,
        run_id: str,
        *,
        user_id: str,
        mode: str,
        amount_lamports: int,
        request: dict[str, Any] | None = None,
        kind: str = "premix",
    ) -> RunRecord:
        """Return the run `run_id` (`kind` "premix" or "sweep"), creating it if new
        (idempotent: a re-run gets the stored one). An insert whose outcome is unknown is
        settled by reading the run back. Raises `LedgerError` if the stored run belongs to
        another user, `TransientError` if the store does not confirm the insert in
        `WRITE_TRIES` tries."""
        if not isinstance(user_id, str):
            raise TypeError("user_id must be a str")
        now = utc_now()
        record = RunRecord(
            run_id=_run_id(run_id),
            user_id=user_id,
            mode=mode,
            amount_lamports=amount_lamports,
            created_at=now,
            updated_at=now,
            request=request,
            kind=kind,
        )
        failure: PyMongoError | None = None
        for _ in range(WRITE_TRIES):
            existing = await self.get(run_id)
            if existing is not None:  # opened before, concurrently, or by our lost insert
                if existing.user_id != user_id:
                    raise LedgerError(f"run {run_id} belongs to another user")
                return existing
            try:
                await self.collection.insert_one(run_to_document(record))
                return record
            except DuplicateKeyError as e:  # opened meanwhile: the next read returns it
                failure = e
            except WriteError:
                raise  # refused by the server: nothing was written
            except PyMongoError as e:  # may have applied: the next read tells
                failure = e
        raise _unconfirmed(f"the opening of run {record.run_id}", failure) from failure

    async def record_plan(
        self,
        run_id: str,
        recipients: Sequence[str],
        amounts: Sequence[int],
        *,
        balances_before: Sequence[int] | None = None,
        sources: Sequence[str] | None = None,
    ) -> RunRecord:
        """Record the plan of an opened run (with the recipients' balances before, if read; a
        sweep's with its sources and their balances); the first plan wins and is returned (a
        re-run keeps the plan it started with). Raises `LedgerError` if the run was never
        opened."""
        record = await self.require(run_id)
        now = utc_now()
        if record.set_plan(
            recipients, amounts, now=now, balances_before=balances_before, sources=sources
        ):
            record = await self.save(record)
        return record

    async def record_sweep_plan(
        self,
        run_id: str,
        *,
        funding: str,
        sources: Sequence[str],
        amounts: Sequence[int],
        balances: Sequence[int],
    ) -> RunRecord:
        """Record a sweep's plan (see `RunRecord.set_sweep_plan`); the first plan wins and is
        returned. Raises `LedgerError` if the run was never opened or is not a sweep."""
        record = await self.require(run_id)
        if record.set_sweep_plan(funding, sources, amounts, balances, now=utc_now()):
            record = await self.save(record)
        return record

    async def record_top_up(self, run_id: str, entries: Sequence[TopUpEntry]) -> RunRecord:
        """Record a top-up's distribution and, as its plan, what each wallet lacked (see
        `RunRecord.set_top_up`); the first plan wins and is returned. Raises `LedgerError` if
        the run was never opened."""
        record = await self.require(run_id)
        if record.set_top_up(entries, now=utc_now()):
            record = await self.save(record)
        return record

    async def require(self, run_id: str) -> RunRecord:
        """Return the run `run_id`; raises `LedgerError` if it was never opened."""
        record = await self.get(run_id)
        if record is None:
            raise LedgerError(f"run {run_id} was never opened")
        return record

    async def save(self, record: RunRecord) -> RunRecord:
        """Write `record` if the stored revision is still `record.revision`; returns it with
        the new revision.

        A write whose outcome is unknown (an error that may have followed the write, or nothing
        matched) is settled by reading the run back: this write's document means success; the
        old revision means it did not happen, and it is written again. Raises `LedgerConflict`
        when another writer came first, `TransientError` when the store does not confirm the
        write in `WRITE_TRIES` tries (the run then stays at the old revision or, should a late
        copy of this write still apply, becomes exactly this one).
        """
        document = run_to_document(record)
        document["revision"] = record.revision + 1
        written = as_server_sees_it(document)  # what the store holds once this write applied
        failure: PyMongoError | None = None
        for _ in range(WRITE_TRIES):
            try:
                result = await self.collection.replace_one(
                    {"_id": record.run_id, "revision": record.revision}, document
                )
                if result.matched_count == 1:
                    record.revision += 1
                    return record
            except WriteError:
                raise  # refused by the server: nothing was written
            except PyMongoError as e:  # may have applied before the error
                failure = e
            try:
                stored = await self.collection.find_one({"_id": record.run_id})
            except PyMongoError as e:
                failure = e
                continue
            if stored == written:  # our write applied; its acknowledgement was lost
                record.revision += 1
                return record
            if stored is None or stored.get("revision") != record.revision:
                LEDGER_CONFLICTS.inc()
                raise LedgerConflict(
                    f"run {record.run_id} changed since revision {record.revision}"
                )
            # still at the revision read: this try did not apply; write it again
        raise _unconfirmed(
            f"revision {record.revision + 1} of run {record.run_id}", failure
        ) from failure

    async def finish(
        self, run_id: str, status: RunStatus, *, error: str | None = None
    ) -> RunRecord:
        """Mark the run completed, failed or cancelled (with the reason) and return it."""
        record = await self.require(run_id)
        record.finish(status, now=utc_now(), error=error)
        return await self.save(record)


def _unconfirmed(write: str, failure: PyMongoError | None) -> TransientError:
    """The error for a ledger `write` the store did not confirm in `WRITE_TRIES` tries."""
    cause = type(failure).__name__ if failure is not None else "nothing matched"
    return TransientError(f"the store did not confirm {write} ({cause}, {WRITE_TRIES} tries)")


def _run_id(run_id: object) -> str:
    # Run ids reach MongoDB only as strings (no operator injection through a dict).
    if not isinstance(run_id, str) or not run_id:
        raise TypeError("run_id must be a non-empty str")
    return run_id
