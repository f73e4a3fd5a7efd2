"""The kill switch: a localnet interceptor that SIGKILLs the worker at an exact request.

The switch is armed with the live `WorkerProcess` and the `Kill` planned for it. It sees every
JSON-RPC request the worker makes (`premix.localnet.intercept`) and, on the request the kill
aims at, sends SIGKILL from the node's request thread while that request is held:

- before_send #n: the n-th sendTransaction is received; the worker dies and the request is
  dropped unprocessed (its attempt is in the ledger; the chain never saw this send);
- after_send #n: the n-th sendTransaction was processed; the worker dies before the reply;
- mid_batch #n: n sends of a fast-mode batch were received; the worker dies as the next one
  arrives, which is dropped with the rest of the batch (some transactions in, others not);
- dropped #n: from the n-th send on, a one-shot `drop_send` fault is kept armed until a send is
  seen dropped; the worker then dies at its next status poll, while it waits for it (every
  accepted send is followed by one);
- lost_response #n: a one-shot `lose_response` fault eats the answer to the n-th send; the
  worker dies when it sends a signature again (its retry), not knowing whether it landed;
- ledger #n: the worker dies once the ledger holds n more revisions than when it started: at
  its first RPC request after that write (the ledger is read while the request is held), or
  when the ledger watch sees the write, whichever comes first;
- stall #n: like before_send, but the worker is stopped (SIGSTOP), not killed: it holds the
  job in memory and will go on when resumed (the harness resumes it once a newer worker took
  the job over).

Requests are told apart by their URL path (each worker has its own): the switch aims only at
the armed worker's, and drops every request still arriving from a killed one (its process is
gone). `n` counts within one worker's life.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from solders.signature import Signature

from premix.localnet import (
    DropRequest,
    FaultRule,
    InterceptedRequest,
    Localnet,
    Stage,
    TransactionOutcome,
)
from tests.crash.scenario import Kill, KillKind
from tests.crash.workers import WorkerProcess

SEND = "sendTransaction"
STATUSES = "getSignatureStatuses"

RevisionReader = Callable[[], int]


@dataclass(frozen=True)
class KillRecord:
    """A kill that happened: which, in which worker, and what the aimed request carried."""

    kill: Kill
    generation: int
    signatures: tuple[Signature, ...]  # sent by the request the kill was aimed at, if any
    chain_had_seen: bool  # whether the node had received any of them before

    def describe(self) -> str:
        seen = " (chain had seen it)" if self.chain_had_seen else ""
        verb = "stalled" if self.kill.kind is KillKind.STALL else "killed"
        return f"{self.kill.describe()} {verb} worker {self.generation}{seen}"


class KillSwitch:
    """The interceptor (register with `net.intercept(switch)`); see the module docstring.
    `read_revision` returns the run's stored revision (-1 before it exists)."""

    def __init__(self, net: Localnet, read_revision: RevisionReader) -> None:
        self.net = net
        self.read_revision = read_revision
        self.fired: list[KillRecord] = []
        self._lock = threading.Lock()
        self._worker: WorkerProcess | None = None
        self._kill: Kill | None = None
        self._dead_paths: set[str] = set()
        self._received = 0  # sendTransaction requests received from this worker
        self._answered = 0  # ... and processed
        self._sent: set[Signature] = set()
        self._fault: FaultRule | None = None  # the one-shot fault a kill armed
        self._dropped_seen = False
        self._revision_target = 0

    def arm(self, worker: WorkerProcess, kill: Kill | None) -> None:
        """Watch `worker` for `kill` (None: let it run)."""
        target = self.read_revision() + kill.nth if kill and kill.kind is KillKind.LEDGER else 0
        with self._lock:
            self._worker, self._kill, self._revision_target = worker, kill, target
            self._received = self._answered = 0
            self._sent.clear()
            if self._fault is not None:  # armed for the previous worker and never fired
                self.net.faults.remove(self._fault)
            self._fault = None
            self._dropped_seen = False

    def killed(self, worker: WorkerProcess) -> KillRecord | None:
        """The kill that ended `worker`, if the switch killed it."""
        with self._lock:
            return next((r for r in self.fired if r.generation == worker.generation), None)

    def on_revision(self, revision: int) -> None:
        """The ledger watch saw `revision`: fire a ledger kill that is due."""
        with self._lock:
            kill = self._kill
            if kill is None or kill.kind is not KillKind.LEDGER:
                return
            if revision >= self._revision_target:
                self._fire(kill, ())

    def __call__(self, request: InterceptedRequest) -> None:
        with self._lock:
            if request.path in self._dead_paths:
                raise DropRequest  # from a worker already killed: its process is gone
            worker, kill = self._worker, self._kill
            if worker is None or request.path != worker.rpc_path:
                return  # a stalled worker resumed: not aimed at
            if kill is None or not self._aimed_at(kill, request):
                return
            self._fire(kill, request.signatures)
        raise DropRequest

    # -- aiming (under the lock) --------------------------------------------------------------

    def _aimed_at(self, kill: Kill, request: InterceptedRequest) -> bool:
        """Count `request` and say whether `kill` is aimed at it."""
        if kill.kind is KillKind.LEDGER:
            return request.stage is Stage.RECEIVED and self.read_revision() >= self._revision_target
        sends = request.calls(SEND)
        if request.stage is Stage.ANSWERED:
            if not sends:
                return False
            self._answered += 1
            self._dropped_seen = self._dropped_seen or self._any_dropped(request.signatures)
            return kill.kind is KillKind.AFTER_SEND and self._answered == kill.nth
        if request.calls(STATUSES) and kill.kind is KillKind.DROPPED:
            return self._dropped_seen
        if not sends:
            return False
        self._received += 1
        resent = any(signature in self._sent for signature in request.signatures)
        self._sent.update(request.signatures)
        match kill.kind:
            case KillKind.BEFORE_SEND | KillKind.STALL:
                return self._received == kill.nth
            case KillKind.MID_BATCH:
                return self._received == kill.nth + 1
            case KillKind.DROPPED:
                self._keep_armed("drop_send", kill)
                return False
            case KillKind.LOST_RESPONSE:
                lost = self._fault is not None and self._fault.fired > 0
                self._keep_armed("lose_response", kill)
                return lost and resent
        return False

    def _keep_armed(self, fault: str, kill: Kill) -> None:
        """From the kill's n-th send on, keep one one-shot `fault` armed until it fired (for
        drop_send: until a send was seen dropped; a drop of a landed one proves nothing)."""
        if self._received < kill.nth:
            return
        if fault == "drop_send":
            rearm = not self._dropped_seen and (self._fault is None or self._fault.exhausted)
        else:
            rearm = self._fault is None
        if rearm:
            self._fault = self.net.faults.inject(fault, method=SEND, count=1)

    def _any_dropped(self, signatures: tuple[Signature, ...]) -> bool:
        log = self.net.transaction_log
        return any(
            (record := log.get(signature)) is not None
            and record.outcome is TransactionOutcome.DROPPED
            for signature in signatures
        )

    def _fire(self, kill: Kill, signatures: tuple[Signature, ...]) -> None:
        worker = self._worker
        assert worker is not None
        log = self.net.transaction_log
        seen = any(signature in log for signature in signatures)
        if kill.kind is KillKind.STALL:
            worker.stop()
        else:
            worker.signal_kill()
            self._dead_paths.add(worker.rpc_path)
        self.fired.append(KillRecord(kill, worker.generation, signatures, seen))
        self._worker, self._kill = None, None
