"""Killing the store itself: SIGKILL a run's SecantusDB mid-run, restart it on the same files.

`StoreCrash` is a localnet interceptor: at the first JSON-RPC request a worker makes once the
ledger holds revision `after_revision` (the request is held while the ledger is read), it
SIGKILLs SecantusDB, so the worker's next ledger write meets a dead store. Before it kills, it
keeps what the test knows was acknowledged: every ledger version the watch saw. `restart()`
waits for the kill, keeps the store down `down_seconds`, notes every attempt the workers logged
as signed (they log it only after the store acknowledged the write), and restarts the server
on the same port and storage path. `check_nothing_lost()` then proves every acknowledged
revision and attempt is still stored.
"""

from __future__ import annotations

import asyncio
import threading

from premix.ledger import AttemptState, RunRecord
from premix.localnet import InterceptedRequest, Stage
from premix.servers import SecantusServer
from tests.crash.harness import CrashRun
from tests.crash.ledger_watch import SeenVersion, attempt_states

RESTART_WAIT_SECONDS = 60.0
# An attempt state may only move forward across the crash (open -> settled, never back).
_OPEN = {AttemptState.SIGNED.value, AttemptState.REJECTED.value}


class StoreCrash:
    """Kills and restarts the store of `run` once (see the module docstring)."""

    def __init__(
        self, server: SecantusServer, run: CrashRun, *, after_revision: int, down_seconds: float
    ) -> None:
        self.server = server
        self.run = run
        self.after_revision = after_revision
        self.down_seconds = down_seconds
        self.killed = threading.Event()
        self.seen_before: list[SeenVersion] = []
        self.logged_signed: set[str] = set()
        self.revision_after_restart = -1

    def __call__(self, request: InterceptedRequest) -> None:
        if self.killed.is_set() or request.stage is not Stage.RECEIVED:
            return
        if self.run.read_revision() < self.after_revision:
            return
        assert self.run.watch is not None
        self.seen_before = list(self.run.watch.seen)
        self.server.kill()
        self.killed.set()

    async def restart(self) -> None:
        """Wait for the kill, then bring the store back after `down_seconds`."""
        if not await asyncio.to_thread(self.killed.wait, RESTART_WAIT_SECONDS):
            raise AssertionError(f"the ledger never reached revision {self.after_revision}")
        await asyncio.sleep(self.down_seconds)
        self.logged_signed = {
            str(event["signature"])
            for worker in self.run.workers
            for event in worker.events()
            if event.get("event") == "transaction_signed"
        }
        await asyncio.to_thread(self.server.start)
        self.revision_after_restart = self.run.read_revision()
        self.run.story.append(
            f"store killed after revision {self.after_revision} and restarted "
            f"{self.down_seconds} s later (stored revision {self.revision_after_restart})"
        )
        assert self.run.watch is not None
        await self.run.watch.stop()
        await self.run.watch.start()

    def check_nothing_lost(self, final: RunRecord) -> None:
        """Every revision and attempt acknowledged before the kill survived it."""
        assert self.seen_before, "the watch saw no ledger write before the store was killed"
        newest = max(version.revision for version in self.seen_before)
        assert self.revision_after_restart >= newest, (
            f"the store came back at revision {self.revision_after_restart}, "
            f"but revision {newest} was acknowledged before the kill"
        )
        stored = attempt_states(final)
        for version in self.seen_before:
            for signature, state in attempt_states(version.record).items():
                assert signature in stored, f"revision {version.revision}: {signature} lost"
                if state not in _OPEN:
                    assert stored[signature] == state, (signature, state, stored[signature])
        missing = self.logged_signed - set(stored)
        assert not missing, f"attempts the workers logged as signed are not stored: {missing}"
