"""`premix enqueue`, `premix status JOB` and `premix watch JOB`: queue a premix as the bot
does, and follow a job's progress."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from arq.connections import ArqRedis
from arq.jobs import Job
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.text import Text

from premix.amounts import lamports_to_sol
from premix.cli.base import (
    MODE,
    SOL,
    USER_ID,
    WALLET_COUNT,
    CliState,
    CommandFailed,
    json_option,
    pass_state,
    print_json,
    run_async,
    stdout_console,
)
from premix.jobs import EnqueueResult
from premix.progress import ProgressEvent, ProgressStatus, latest_progress, subscribe_progress
from premix.queue import close_queue, enqueue_premix_funds, queue_pool
from premix.scheduling import format_run_time
from premix.settings import Settings


@click.command()
@click.option("--user", "user_id", type=USER_ID, required=True, help="The user's id.")
@click.option("--chat-id", type=int, required=True, help="The user's Telegram chat id.")
@click.option("--amount", "amount_lamports", type=SOL, required=True, help="SOL to distribute.")
@click.option(
    "--mode",
    type=MODE,
    default=None,
    help="Transfer engine (default: standard).",
)
@click.option(
    "--max-wallets", type=WALLET_COUNT, default=None, help="Use at most this many buyer wallets."
)
@click.option("--socket-user-id", default=None, help="Passed through to progress events.")
@click.option(
    "--top-up",
    is_flag=True,
    default=False,
    help="Send each wallet only what it lacks of its planned amount (topUp).",
)
@click.option("--run-at", default=None, help="Start no earlier than this ISO-8601 time (runAt).")
@click.option(
    "--delay",
    "delay_seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Start no earlier than this many seconds from now (delaySeconds).",
)
@click.option(
    "--idempotency-key", default=None, help="Queue nothing new for a key used in the last 24 h."
)
@json_option
@pass_state
def enqueue(
    state: CliState,
    user_id: str,
    chat_id: int,
    amount_lamports: int,
    mode: str | None,
    max_wallets: int | None,
    socket_user_id: str | None,
    top_up: bool,
    run_at: str | None,
    delay_seconds: float | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Queue a premix for a user, as the bot does (`enqueue_premix_funds`); prints the job id.

    A worker (`arq premix.worker.WorkerSettings`) runs it; follow it with `premix watch JOB`.
    """
    settings = state.settings
    options: dict[str, Any] = {}
    if mode is not None:
        options["mode"] = mode
    if max_wallets is not None:
        options["maxWallets"] = max_wallets
    if socket_user_id is not None:
        options["socketUserId"] = socket_user_id
    if top_up:
        options["topUp"] = True
    if run_at is not None:
        options["runAt"] = run_at
    if delay_seconds is not None:  # "--delay 60" is delaySeconds 60, not 60.0
        whole = delay_seconds.is_integer()
        options["delaySeconds"] = int(delay_seconds) if whole else delay_seconds
    if idempotency_key is not None:
        options["idempotencyKey"] = idempotency_key

    async def submit() -> EnqueueResult:
        try:
            return await enqueue_premix_funds(
                user_id, chat_id, lamports_to_sol(amount_lamports), options, settings=settings
            )
        finally:
            await close_queue()

    result = run_async(submit())
    if as_json:
        print_json({"success": result.success, "message": result.message, "jobId": result.job_id})
    elif result.success:
        click.echo(result.message)
    if not result.success:
        raise CommandFailed(result.message)


def describe_event(event: ProgressEvent) -> str:
    """One line for a progress event: phase, title, percent, status, description."""
    line = (
        f"phase {event.phase}/{event.total_phases} {event.title}: {event.percent}% "
        f"({event.status.value})"
    )
    return f"{line} - {event.description}" if event.description else line


async def queued_job_status(redis: ArqRedis, settings: Settings, job_id: str) -> str:
    """arq's status of `job_id` in the premix queue ("not_found" when arq does not know it)."""
    status = await Job(job_id, redis, _queue_name=settings.queue_name).status()
    return str(status.value)


async def scheduled_for(redis: ArqRedis, settings: Settings, job_id: str) -> str | None:
    """When a deferred job is due (its queue score, ISO-8601 UTC), or None if not queued."""
    score = await redis.zscore(settings.queue_name, job_id)
    return None if score is None else format_run_time(int(score))


QUEUED_STATES = {
    "deferred": "queued (deferred), no progress yet",
    "queued": "queued, no progress yet (is a worker running?)",
    "in_progress": "picked up by a worker, no progress yet",
    "complete": "finished; its progress state has expired",
}


def unknown_job(job_id: str, settings: Settings) -> CommandFailed:
    """Return the failure for a job id with neither progress nor a queued job (to raise)."""
    return CommandFailed(
        f"unknown job {job_id}: no progress and no queued job with that id (progress is kept "
        f"for {settings.progress_ttl_seconds} s; check PREMIX_REDIS_URL)"
    )


@click.command()
@click.argument("job_id", metavar="JOB")
@json_option
@pass_state
def status(state: CliState, job_id: str, as_json: bool) -> None:
    """Show the latest progress of job JOB (its last progress event, kept in Redis).

    Exit 0 while the job is queued, running or completed; 1 when it failed, was cancelled or
    is unknown.
    """
    settings = state.settings

    async def read() -> tuple[ProgressEvent | None, str, str | None]:
        try:
            redis = queue_pool(settings.redis_url)
            event = await latest_progress(redis, job_id)
            queued = "" if event is not None else await queued_job_status(redis, settings, job_id)
            due = await scheduled_for(redis, settings, job_id) if queued == "deferred" else None
            return event, queued, due
        finally:
            await close_queue()

    event, queued, due = run_async(read())
    if event is None:
        if queued in ("", "not_found"):
            raise unknown_job(job_id, settings)
        if as_json:
            answer = {"jobId": job_id, "status": queued}
            print_json(answer if due is None else {**answer, "scheduledFor": due})
        elif due is not None:
            click.echo(f"job {job_id}: scheduled for {due}, no progress yet")
        else:
            click.echo(f"job {job_id}: {QUEUED_STATES.get(queued, queued)}")
        return
    if as_json:
        print_json(event.model_dump(mode="json", by_alias=True))
    else:
        click.echo(f"job {job_id}: {describe_event(event)}")
    if event.status in (ProgressStatus.FAILED, ProgressStatus.CANCELLED):  # like `watch`: exit 1
        raise CommandFailed(f"job {job_id} {event.status.value}: {event.description}")


class JobElapsedColumn(ProgressColumn):
    """The time since the job began (its events' `startedAt`, the task's `started_at` field),
    not since the bar appeared: a watch joining a long job shows how long it has run. Stops at
    the final event (the task's `ended_at`); "-:--:--" before the first event."""

    def render(self, task: Task) -> Text:
        started_at = task.fields.get("started_at")
        if not isinstance(started_at, datetime):
            return Text("-:--:--", style="progress.elapsed")
        ended_at = task.fields.get("ended_at")
        until = ended_at if isinstance(ended_at, datetime) else datetime.now(UTC)
        elapsed = timedelta(seconds=max(0, int((until - started_at).total_seconds())))
        return Text(str(elapsed), style="progress.elapsed")


def progress_bar(console: Console) -> Progress:
    """The live progress bar for one job: description, bar, percent, time since it began."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        JobElapsedColumn(),
        console=console,
    )


def bar_text(event: ProgressEvent) -> str:
    """Return the progress bar's label for `event`: '[3/6] Calculating Distribution', in
    phase 5 '[5/6] Initializing Mixer: 12 of 73 wallets funded', and ' (retrying)' while a
    retry is due."""
    text = f"[{event.phase}/{event.total_phases}] {event.title}"
    details = event.details or {}
    done, total = details.get("done"), details.get("total")
    if event.phase == 5 and isinstance(done, int) and isinstance(total, int):
        text += f": {done} of {total} wallets funded"
    if event.status is ProgressStatus.RETRYING:
        text += " (retrying)"
    return text


def update_bar(bar: Progress, task: TaskID, event: ProgressEvent) -> None:
    """Move the bar to `event`; a `retrying` event is also printed as a line of its own."""
    if event.status is ProgressStatus.RETRYING:
        bar.console.print(f"job {event.job_id}: {describe_event(event)}")
    bar.update(
        task,
        completed=event.percent,
        description=bar_text(event),
        started_at=event.started_at or event.timestamp,
        ended_at=event.timestamp if event.is_terminal else None,
    )


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Give up after this many seconds (default: wait for the job to end).",
)
@click.option("--json", "as_json", is_flag=True, help="Print each progress event as a JSON line.")
@pass_state
def watch(state: CliState, job_id: str, timeout: float | None, as_json: bool) -> None:
    """Follow job JOB live until it ends: exit 0 when it completed, 1 when it failed or was
    cancelled.

    With --json, prints each progress event as one JSON line instead of a progress bar.
    """
    settings = state.settings
    console = stdout_console()

    async def follow() -> ProgressEvent | None:
        redis = queue_pool(settings.redis_url)
        try:
            known = await latest_progress(redis, job_id) is not None
            if not known and await queued_job_status(redis, settings, job_id) == "not_found":
                raise unknown_job(job_id, settings)
            async with asyncio.timeout(timeout):
                return await follow_events(redis)
        except TimeoutError:
            raise CommandFailed(f"job {job_id} did not end within {timeout:g} s") from None
        finally:
            await close_queue()

    async def follow_events(redis: ArqRedis) -> ProgressEvent | None:
        last: ProgressEvent | None = None
        if as_json:
            async for event in subscribe_progress(redis, job_id, poll_interval_seconds=0.2):
                click.echo(event.to_json())
                last = event
            return last
        with progress_bar(console) as bar:
            task = bar.add_task(f"job {job_id}: waiting for a worker", total=100)
            async for event in subscribe_progress(redis, job_id, poll_interval_seconds=0.2):
                update_bar(bar, task, event)
                last = event
        return last

    final = run_async(follow())
    if final is not None and final.status is ProgressStatus.CANCELLED:
        raise CommandFailed(f"job {job_id} cancelled: {final.description}")
    if final is None or final.status is not ProgressStatus.COMPLETED:
        reason = final.description if final is not None else "no final event"
        raise CommandFailed(f"job {job_id} failed: {reason}")
    if not as_json:
        click.echo(f"job {job_id} completed: {final.description}")
