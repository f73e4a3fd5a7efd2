"""Prometheus metrics of a worker process (`prometheus-client`), served on
`PREMIX_METRICS_PORT` (off by default) by `serve_metrics`.

Every value is counted where it happens, once: a job's outcome when its execution ends
(`premix_jobs_total`, `premix_job_duration_seconds`); lamports, fees and transfers when the
ledger records an attempt landing or expiring (after the write succeeded, so a write another
worker won is not counted twice); each RPC request as it is answered; each ledger
compare-and-swap lost; the queue's depth with each worker beacon (every 10 s). The metrics live
in their own registry (`REGISTRY`), not the library's global one.
"""

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from arq.worker import Retry, RetryJob
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from premix.runs import Attempt, AttemptState, LedgerTransaction, RunRecord

REGISTRY: Final = CollectorRegistry(auto_describe=True)

JOBS: Final = Counter(
    "premix_jobs_total",
    "Executions of premix jobs by how they ended: completed, failed, cancelled, retrying (arq "
    "tries again), superseded (a newer execution took over), error (premix could not report)",
    ["outcome"],
    registry=REGISTRY,
)
JOB_DURATION: Final = Histogram(
    "premix_job_duration_seconds",
    "Wall time of job executions that completed, failed or were cancelled",
    registry=REGISTRY,
    buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
TRANSFERS: Final = Counter(
    "premix_transfers_total",
    "Transfers as the ledger settles them: funded (landed ok), failed (landed with an error), "
    "expired (their attempt can never land; signed again later)",
    ["mode", "status"],
    registry=REGISTRY,
)
LAMPORTS_SENT: Final = Counter(
    "premix_lamports_sent_total",
    "Lamports of premix transfers (funding wallet to buyer wallets) that landed ok",
    registry=REGISTRY,
)
LAMPORTS_SWEPT: Final = Counter(
    "premix_lamports_swept_total",
    "Lamports of sweep transfers (buyer wallets back to the funding wallet) that landed ok",
    registry=REGISTRY,
)
FEES: Final = Counter(
    "premix_fees_lamports_total",
    "Fees paid by landed transactions, ok or failed (priority fees included)",
    registry=REGISTRY,
)
RPC_REQUESTS: Final = Counter(
    "premix_rpc_requests_total",
    "Solana RPC requests (each HTTP request, retries included) by method and outcome: ok, "
    "transient (a failure premix retries: 429, 5xx, a dropped connection), error (refused)",
    ["method", "outcome"],
    registry=REGISTRY,
)
LEDGER_CONFLICTS: Final = Counter(
    "premix_ledger_conflicts_total",
    "Ledger writes refused because another writer changed the run first",
    registry=REGISTRY,
)
QUEUE_DEPTH: Final = Gauge(
    "premix_queue_depth",
    "Jobs in the arq queue (due and deferred), as last read by this worker",
    registry=REGISTRY,
)


def settled(
    run: RunRecord,
    landed: Sequence[tuple[LedgerTransaction, Attempt]],
    expired: Sequence[Attempt],
) -> None:
    """Count what one ledger write of `run` just saved: the attempts that `landed` (ok: their
    transfers funded and lamports sent; with an error: their transfers failed; both: the fee)
    and those that `expired`."""
    funded = failed = lamports = 0
    for tx, attempt in landed:
        if attempt.state is AttemptState.LANDED_OK:
            funded += len(tx.transfers)
            lamports += sum(run.plan[position].lamports for position in tx.transfers)
        else:
            failed += len(tx.transfers)
    lost = sum(len(run.find_attempt(attempt.signature)[0].transfers) for attempt in expired)
    for status, count in (("funded", funded), ("failed", failed), ("expired", lost)):
        if count:
            TRANSFERS.labels(mode=run.mode, status=status).inc(count)
    if lamports:
        (LAMPORTS_SWEPT if run.kind == "sweep" else LAMPORTS_SENT).inc(lamports)
    fees = sum(attempt.fee_lamports for _, attempt in landed)
    if fees:
        FEES.inc(fees)


class MetricsServer:
    """The HTTP server of `serve_metrics`, stopped by `close`."""

    def __init__(self, port: int) -> None:
        server, thread = start_http_server(port, registry=REGISTRY)
        self.port = server.server_port
        self._server, self._thread = server, thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(port: int | None) -> MetricsServer | None:
    """Serve `REGISTRY` on `port` (all interfaces) from a thread; None when `port` is unset."""
    if not port:
        return None
    return MetricsServer(port)


class _Outcome:
    """What `counted_execution` learns of the result (set by `record`)."""

    outcome: str | None = None

    def record(self, result: dict[str, Any]) -> dict[str, Any]:
        if result.get("status") == "cancelled":
            self.outcome = "cancelled"
        else:
            self.outcome = "completed" if result.get("success") else "failed"
        return result


@contextmanager
def counted_execution() -> Iterator[_Outcome]:
    """Count one job execution by how it ended, timing those that completed or failed:
    wrap the execution and pass its result through `record` (raising arq's `Retry` counts
    `retrying`, `RetryJob` `superseded`, anything else `error`)."""
    started = time.perf_counter()
    outcome = _Outcome()
    try:
        yield outcome
    except Retry:
        JOBS.labels(outcome="retrying").inc()
        raise
    except RetryJob:
        JOBS.labels(outcome="superseded").inc()
        raise
    except BaseException:
        JOBS.labels(outcome="error").inc()
        raise
    if outcome.outcome is None:
        JOBS.labels(outcome="error").inc()
        return
    JOBS.labels(outcome=outcome.outcome).inc()
    JOB_DURATION.observe(time.perf_counter() - started)
