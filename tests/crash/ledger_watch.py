"""Watching the ledger from the test: every version of one run's document, as it is written.

A MongoDB change stream (SecantusDB serves them: it runs as a single-node replica set) on the
runs collection, filtered to one run id, with the full document of each change. Each version
seen is kept (`seen`) and handed to the `on_revision` callbacks (the kill switch's ledger
kills, the store-kill trigger). What the test saw is what the server acknowledged, so the
store-kill test checks that nothing seen before a crash is missing after it.

If the server goes away the stream ends quietly (`broken` says so); `start()` again resumes.
A server without change streams (a standalone `mongod` given as PREMIX_TEST_MONGODB_URI) is
polled instead, every 10 ms; a poll can miss a revision that is overwritten within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure, PyMongoError

from premix.constants import RUNS_COLLECTION
from premix.ledger import RunRecord, run_from_document

RevisionCallback = Callable[[int], None]
POLL_SECONDS = 0.01


@dataclass(frozen=True)
class SeenVersion:
    """One version of the run document the test saw."""

    revision: int
    record: RunRecord


def attempt_states(record: RunRecord) -> dict[str, str]:
    """Signature -> state of every attempt `record` holds."""
    return {
        attempt.signature: attempt.state.value
        for tx in record.transactions
        for attempt in tx.attempts
    }


class LedgerWatch:
    """A change stream on run `run_id` in `database` (see the module docstring)."""

    def __init__(self, mongodb_uri: str, database: str, run_id: str) -> None:
        self.mongodb_uri = mongodb_uri
        self.database = database
        self.run_id = run_id
        self.seen: list[SeenVersion] = []
        self.callbacks: list[RevisionCallback] = []
        self.broken: BaseException | None = None
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def revision(self) -> int:
        """The highest revision seen (-1 before the run was opened)."""
        return max((version.revision for version in self.seen), default=-1)

    async def start(self) -> None:
        """Open the stream; returns once it is open (every later write will be seen)."""
        self.broken = None
        self._client = AsyncMongoClient(self.mongodb_uri, tz_aware=True)
        collection = self._client[self.database][RUNS_COLLECTION]
        pipeline = [{"$match": {"documentKey._id": self.run_id}}]
        try:
            stream = await collection.watch(
                pipeline, full_document="updateLookup", max_await_time_ms=50
            )
        except OperationFailure:  # no change streams on this server
            self._task = asyncio.create_task(self._poll(collection))
            return
        self._task = asyncio.create_task(self._follow(stream))

    async def stop(self) -> None:
        """Close the stream and the client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _follow(self, stream: Any) -> None:
        try:
            async with stream:
                async for change in stream:
                    document = change.get("fullDocument")
                    if document is not None:
                        self._saw(run_from_document(document))
        except PyMongoError as e:
            self.broken = e

    async def _poll(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        try:
            while True:
                document = await collection.find_one({"_id": self.run_id})
                if document is not None and document.get("revision") != self.revision:
                    self._saw(run_from_document(document))
                await asyncio.sleep(POLL_SECONDS)
        except PyMongoError as e:
            self.broken = e

    def _saw(self, record: RunRecord) -> None:
        self.seen.append(SeenVersion(record.revision, record))
        for callback in self.callbacks:
            callback(record.revision)
