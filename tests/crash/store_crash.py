"""Killing the store itself: SIGKILL a run's SecantusDB mid-run, restart it on the same files.

`StoreCrash` kills the store once per `StoreKill`, in order, each aimed at a ledger revision:
- `at_commit=False`: at the first JSON-RPC request a worker makes once the ledger holds the
  revision (a localnet interceptor; the request is held while the ledger is read), so the
  worker's next ledger write meets a dead store;
- `at_commit=True`: the moment the ledger watch sees the revision committed, racing the
  write's acknowledgement on its way to the worker (it may or may not get it).
Just before each kill it keeps what the test knows was acknowledged: every ledger version the
watch saw. `restart()` brings the store back after each kill (same port, same storage path)
`down_seconds` later, first noting every attempt the workers logged as signed (they log it
only once the store acknowledged the write). `check_nothing_lost()` proves every acknowledged
revision and attempt survived every kill.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from premix.ledger import AttemptState, RunRecord
from premix.localnet import InterceptedRequest, Stage
from premix.servers import SecantusServer
from tests.crash.harness import CrashRun
from tests.crash.ledger_watch import SeenVersion, attempt_states

KILL_WAIT_SECONDS = 60.0
# An attempt state may only move forward across a crash (open -> settled, never back).
_OPEN = {AttemptState.SIGNED.value, AttemptState.REJECTED.value}


@dataclass
class StoreKill:
    """One kill of the store, and what the test knew was acknowledged before it."""

    revision: int
    at_commit: bool
    killed: threading.Event = field(default_factory=threading.Event)
    seen_before: list[SeenVersion] = field(default_factory=list)
    logged_signed: set[str] = field(default_factory=set)
    revision_after_restart: int = -1

    def describe(self) -> str:
        moment = "as it committed" if self.at_commit else "before the next request"
        return f"store killed at revision {self.revision} {moment}"


class StoreCrash:
    """Kills and restarts the store of `run` (see the module docstring). Register it with
    `net.intercept(crash)` and `run.revision_callbacks.append(crash.on_revision)`."""

    def __init__(
        self,
        server: SecantusServer,
        run: CrashRun,
        kills: list[StoreKill],
        *,
        down_seconds: float,
    ) -> None:
        self.server = server
        self.run = run
        self.kills = kills
        self.down_seconds = down_seconds
        self._lock = threading.Lock()

    def __call__(self, request: InterceptedRequest) -> None:
        if request.stage is not Stage.RECEIVED:
            return
        kill = self._due()
        if kill is None or kill.at_commit:
            return
        if self.run.read_revision() >= kill.revision:
            self._kill(kill)

    def on_revision(self, revision: int) -> None:
        """The ledger watch saw `revision` committed."""
        kill = self._due()
        if kill is not None and kill.at_commit and revision >= kill.revision:
            self._kill(kill)

    async def restart(self) -> None:
        """After each kill, bring the store back `down_seconds` later."""
        for kill in self.kills:
            if not await asyncio.to_thread(kill.killed.wait, KILL_WAIT_SECONDS):
                raise AssertionError(f"the ledger never reached revision {kill.revision}")
            await asyncio.sleep(self.down_seconds)
            kill.logged_signed = {
                str(event["signature"])
                for worker in self.run.workers
                for event in worker.events()
                if event.get("event") == "transaction_signed"
            }
            await asyncio.to_thread(self.server.start)
            kill.revision_after_restart = self.run.read_revision()
            self.run.story.append(
                f"{kill.describe()}, back {self.down_seconds} s later at revision "
                f"{kill.revision_after_restart}"
            )
            assert self.run.watch is not None
            await self.run.watch.stop()
            await self.run.watch.start()

    def check_nothing_lost(self, final: RunRecord) -> None:
        """Every revision and attempt acknowledged before each kill survived it."""
        stored = attempt_states(final)
        for kill in self.kills:
            assert kill.seen_before, f"{kill.describe()}: no ledger write was seen before it"
            newest = max(version.revision for version in kill.seen_before)
            assert kill.revision_after_restart >= newest, (
                f"{kill.describe()}: the store came back at revision "
                f"{kill.revision_after_restart}, but revision {newest} had been acknowledged"
            )
            for version in kill.seen_before:
                for signature, state in attempt_states(version.record).items():
                    assert signature in stored, f"revision {version.revision}: {signature} lost"
                    if state not in _OPEN:
                        assert stored[signature] == state, (signature, state, stored[signature])
            missing = kill.logged_signed - set(stored)
            assert not missing, f"attempts logged as signed but not stored: {sorted(missing)}"

    def _due(self) -> StoreKill | None:
        """The next kill, once the store is up again after the previous one."""
        for kill in self.kills:
            if not kill.killed.is_set():
                return kill
            if kill.revision_after_restart < 0:
                return None  # still down, or not yet noted as back
        return None

    def _kill(self, kill: StoreKill) -> None:
        with self._lock:
            if kill.killed.is_set():
                return
            assert self.run.watch is not None
            kill.seen_before = list(self.run.watch.seen)
            self.server.kill()
            kill.killed.set()
