"""The `premix` command: plan, wallets, keys, localnet, enqueue, status, watch and demo.

Every command reads `Settings` from the `PREMIX_*` environment once. Results go to stdout (a
table, or JSON with `--json`); notes and errors go to stderr. Every expected failure is one line,
`premix: error: ...`, with exit status 2 for a usage mistake, 1 for a failure and 130 when
interrupted; `--traceback` (before the command) shows the full traceback instead.
"""

import asyncio
import json
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args

import click
import httpx
from arq.connections import ArqRedis
from arq.jobs import Job
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from solana.exceptions import SolanaRpcException
from solders.keypair import Keypair

from premix.amounts import AmountError, format_sol, lamports_to_sol, sol_text, sol_to_lamports
from premix.constants import MAX_BUYER_WALLETS
from premix.demo import DEFAULT_AMOUNT_SOL as DEMO_DEFAULT_AMOUNT_SOL
from premix.demo import DEFAULT_SLOT_MS as DEMO_DEFAULT_SLOT_MS
from premix.demo import DemoOptions, DemoReport, run_demo
from premix.distribution import format_plan, plan_distribution
from premix.errors import PremixError, TransientError
from premix.jobs import USER_ID_PATTERN, USER_ID_RULE, EnqueueResult, Mode
from premix.keys import KeyRing, keypair_from_file, keypair_from_secret
from premix.localnet import DEFAULT_SLOT_MS, Localnet
from premix.logs import configure_logging, redact_text
from premix.progress import ProgressEvent, ProgressStatus, latest_progress, subscribe_progress
from premix.queue import close_queue, enqueue_premix_funds, queue_pool
from premix.settings import Settings, describe_settings_error
from premix.store import Store
from premix.wallets import BUYER, FUNDING, TooManyBuyerWallets

PROG = "premix"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
STDIN_PATH = "-"

T = TypeVar("T")


class CommandFailed(Exception):
    """A failure a command reports as its one error line (exit status 1)."""


class Interrupted(Exception):
    """Ctrl-C (SIGINT) stopped a command (exit status 130)."""


@dataclass
class CliState:
    """Options of the `premix` group and the settings, read once on first use."""

    traceback: bool = False
    verbose: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        """The `PREMIX_*` settings; raises `CommandFailed` naming an invalid variable."""
        if self._settings is None:
            try:
                settings = Settings()
            except ValidationError as e:
                raise CommandFailed(f"invalid configuration: {describe_settings_error(e)}") from e
            # Errors are the command's one line; logs only with --verbose.
            level = settings.log_level if self.verbose else "CRITICAL"
            # Kept in the settings: the demo's in-process worker configures logging from them.
            settings = settings.model_copy(update={"log_level": level})
            configure_logging(settings)
            self._settings = settings
        return self._settings


pass_state = click.make_pass_decorator(CliState)


# --- parameter types ---


class SolAmountType(click.ParamType[int]):
    """A SOL amount given on the command line, converted exactly to integer lamports."""

    name = "SOL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return sol_to_lamports(str(value).strip())
        except AmountError as e:
            self.fail(str(e), param, ctx)


class UserIdType(click.ParamType[str]):
    """A user id as the bot sends it: 1 to 128 letters, digits or _.:@- characters."""

    name = "USER"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not re.fullmatch(USER_ID_PATTERN, text):
            self.fail(USER_ID_RULE, param, ctx)
        return text


SOL = SolAmountType()
USER_ID = UserIdType()
WALLET_COUNT = click.IntRange(1, MAX_BUYER_WALLETS)
MODE = click.Choice(get_args(Mode))


def json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """`--json`: print the result as JSON on stdout instead of a table."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."
    )(function)


# --- output ---


def stdout_console() -> Console:
    """A rich console on stdout; wide enough for public keys and signatures when piped."""
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console.width = max(console.width, 200)
    return console


def print_json(value: object) -> None:
    """Print `value` as indented JSON on stdout."""
    click.echo(json.dumps(value, indent=2))


def note(message: str) -> None:
    """Print an informational line on stderr (never mixed into stdout's JSON)."""
    click.echo(f"{PROG}: {message}", err=True)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to completion in a fresh event loop.

    Ctrl-C cancels the coroutine (its cleanup runs) and raises `Interrupted`.
    """
    try:
        return asyncio.run(coroutine)
    except KeyboardInterrupt:
        raise Interrupted() from None  # not KeyboardInterrupt: click would print a blank line


# --- the command group ---


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--traceback", is_flag=True, help="Show the full traceback of an error (for bug reports)."
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Also log to stderr, at PREMIX_LOG_LEVEL (default INFO)."
)
@click.pass_context
def cli(ctx: click.Context, traceback: bool, verbose: bool) -> None:
    """premix: pre-fund a user's Solana buyer wallets from their funding wallet.

    Configuration comes from PREMIX_* environment variables (see the README). Start with
    `premix demo`: the whole pipeline on a local chain in a few seconds.
    """
    state = ctx.ensure_object(CliState)
    state.traceback = state.traceback or traceback
    state.verbose = verbose


# --- plan ---


@cli.command()
@click.option("--amount", "amount_lamports", type=SOL, required=True, help="SOL to distribute.")
@click.option(
    "--max-wallets",
    type=WALLET_COUNT,
    default=None,
    help="Use at most this many buyer wallets (1-73).",
)
@click.option(
    "--wallets",
    "available_wallets",
    type=WALLET_COUNT,
    default=None,
    help="Buyer wallets the user has (default: PREMIX_MAX_WALLETS, 73).",
)
@json_option
@pass_state
def plan(
    state: CliState,
    amount_lamports: int,
    max_wallets: int | None,
    available_wallets: int | None,
    as_json: bool,
) -> None:
    """Show how an amount is split over the buyer wallets (the 73-wallet tier table).

    Uses the fewest wallets whose caps hold the amount, in proportion to their caps; the
    amounts add up exactly to the amount.
    """
    settings = state.settings
    table = settings.tier_table()
    available = available_wallets if available_wallets is not None else settings.max_wallets
    wallet_limit = min(available, settings.wallet_limit(max_wallets))
    amounts = plan_distribution(amount_lamports, wallet_limit, table)
    if as_json:
        print_json(
            {
                "amountLamports": amount_lamports,
                "amountSol": sol_text(amount_lamports),
                "walletsAvailable": wallet_limit,
                "walletsUsed": len(amounts),
                "wallets": [
                    {
                        "position": position,
                        "capLamports": cap,
                        "lamports": lamports,
                        "sol": sol_text(lamports),
                    }
                    for position, (cap, lamports) in enumerate(
                        zip(table.caps_lamports, amounts, strict=False), start=1
                    )
                ],
                "totalLamports": sum(amounts),
                "totalSol": sol_text(sum(amounts)),
            }
        )
        return
    click.echo(
        f"Plan for {format_sol(amount_lamports)}: {len(amounts)} of {wallet_limit} buyer "
        "wallet(s), the fewest whose caps hold the amount"
    )
    click.echo(format_plan(amounts, table=table))


# --- wallets ---

MEMORY_STORE_NOTE = (
    "note: PREMIX_MONGODB_URI is memory://, an in-process store that is gone when this command "
    "exits; set it to a MongoDB URI to keep wallets (the demo uses memory:// on its own)"
)
MEMORY_STORE_REFUSED = (
    "PREMIX_MONGODB_URI is memory://, an in-process store that is gone when this command "
    "exits: the wallet keys would be lost; set it to a MongoDB URI. Nothing was stored"
)


@asynccontextmanager
async def open_store(settings: Settings, *, stores_keys: bool = False) -> AsyncIterator[Store]:
    """The configured store, reachable; closed afterwards. `stores_keys`: the command writes
    wallet keys, refused on `memory://` (they would be gone when the command exits)."""
    if settings.uses_memory_store:
        if stores_keys:
            raise CommandFailed(MEMORY_STORE_REFUSED)
        note(MEMORY_STORE_NOTE)
    store = await Store.open(settings)
    try:
        try:
            await store.ping()
        except TransientError as e:
            raise CommandFailed(f"{e} (check PREMIX_MONGODB_URI)") from e
        yield store
    finally:
        await store.close()


def funding_row(public_key: object) -> dict[str, Any]:
    """The funding wallet as a JSON row (position 0)."""
    return {"role": FUNDING, "position": 0, "publicKey": str(public_key)}


def buyer_row(stored_position: int, public_key: object) -> dict[str, Any]:
    """A buyer wallet as a JSON row; the store counts from 0, people (and `premix plan`) from 1."""
    return {"role": BUYER, "position": stored_position + 1, "publicKey": str(public_key)}


def wallet_rows(funding: object | None, buyers: Sequence[object]) -> list[dict[str, Any]]:
    """Wallets as JSON rows: the funding wallet (if any) first, then the buyers in order."""
    rows = [] if funding is None else [funding_row(funding)]
    return rows + [buyer_row(position, public_key) for position, public_key in enumerate(buyers)]


def print_wallet_table(title: str, rows: Sequence[dict[str, Any]]) -> None:
    """Print wallet rows as a table (buyer positions are 1-based, as in `premix plan`)."""
    table = Table(title=title, title_justify="left")
    table.add_column("role")
    table.add_column("#", justify="right")
    table.add_column("public key", no_wrap=True)
    for row in rows:
        position = "" if row["role"] == FUNDING else str(row["position"])
        table.add_row(row["role"], position, row["publicKey"])
    stdout_console().print(table)


@cli.group()
def wallets() -> None:
    """Create, list and import a user's wallets in the store (PREMIX_MONGODB_URI).

    Private keys are stored encrypted under PREMIX_ENCRYPTION_KEYS and never printed. These
    commands are for a real MongoDB: with memory:// the store lives only as long as the command.
    """


@wallets.command("create")
@click.option("--user", "user_id", type=USER_ID, required=True, help="The user's id.")
@click.option(
    "--buyers",
    type=click.IntRange(0, MAX_BUYER_WALLETS),
    default=0,
    help="Append this many new buyer wallets (a user has at most 73).",
)
@click.option("--funding", is_flag=True, help="Create the user's funding wallet.")
@json_option
@pass_state
def wallets_create(
    state: CliState, user_id: str, buyers: int, funding: bool, as_json: bool
) -> None:
    """Generate new wallets for a user: a funding wallet and/or buyer wallets.

    Refuses, creating nothing, when the user already has a funding wallet (see `wallets import
    --replace`) or would have more than 73 buyer wallets.
    """
    if not funding and buyers == 0:
        raise click.UsageError("nothing to create: give --funding and/or --buyers N")
    settings = state.settings

    async def create() -> list[dict[str, Any]]:
        async with open_store(settings, stores_keys=True) as store:
            await store.ensure_indexes()
            if funding:
                existing = await store.wallets.funding_public_key(user_id)
                if existing is not None:
                    raise CommandFailed(
                        f"user {user_id} already has a funding wallet ({existing}); nothing "
                        "was created"
                    )
            held = await store.wallets.buyer_wallet_count(user_id)
            if held + buyers > MAX_BUYER_WALLETS:
                raise TooManyBuyerWallets(user_id, existing=held, adding=buyers)
            store.wallets.key_ring  # noqa: B018 - fail on missing keys before writing anything
            buyer_keypairs = [Keypair() for _ in range(buyers)]
            positions = await store.wallets.add_buyer_wallets(user_id, buyer_keypairs)
            rows = [
                buyer_row(position, keypair.pubkey())
                for position, keypair in zip(positions, buyer_keypairs, strict=True)
            ]
            if funding:
                funding_keypair = Keypair()
                await store.wallets.set_funding_wallet(user_id, funding_keypair)
                rows.insert(0, funding_row(funding_keypair.pubkey()))
            return rows

    rows = run_async(create())
    if as_json:
        print_json({"userId": user_id, "created": rows})
    else:
        print_wallet_table(f"Created for user {user_id}", rows)


@wallets.command("list")
@click.option("--user", "user_id", type=USER_ID, required=True, help="The user's id.")
@json_option
@pass_state
def wallets_list(state: CliState, user_id: str, as_json: bool) -> None:
    """List a user's funding and buyer wallets (public keys only)."""
    settings = state.settings

    async def read() -> tuple[object | None, list[object]]:
        async with open_store(settings) as store:
            funding = await store.wallets.funding_public_key(user_id)
            buyers: list[object] = list(await store.wallets.buyer_public_keys(user_id))
            return funding, buyers

    funding, buyers = run_async(read())
    if as_json:
        print_json(
            {
                "userId": user_id,
                "funding": None if funding is None else str(funding),
                "buyers": wallet_rows(None, buyers),
            }
        )
        return
    if funding is None and not buyers:
        click.echo(f"user {user_id} has no wallets")
        return
    print_wallet_table(
        f"Wallets of user {user_id}: {'1' if funding else 'no'} funding, {len(buyers)} buyer",
        wallet_rows(funding, buyers),
    )


@wallets.command("import")
@click.option("--user", "user_id", type=USER_ID, required=True, help="The user's id.")
@click.option("--funding", "role", flag_value=FUNDING, help="Import as the funding wallet.")
@click.option("--buyer", "role", flag_value=BUYER, help="Import as the next buyer wallet.")
@click.option(
    "--secret-file",
    "keypair_path",
    metavar="PATH",
    required=True,
    help="File holding the secret key: base58 (64 bytes) or a Solana CLI keypair JSON; "
    "'-' reads standard input.",
)
@click.option("--replace", is_flag=True, help="Replace an existing funding wallet.")
@json_option
@pass_state
def wallets_import(
    state: CliState,
    user_id: str,
    role: str | None,
    keypair_path: str,
    replace: bool,
    as_json: bool,
) -> None:
    """Import an existing keypair as a user's funding wallet or next buyer wallet.

    The secret key is read from a file (or stdin) and stored encrypted; it is never printed.
    """
    if role is None:
        raise click.UsageError("give --funding or --buyer")
    if keypair_path == STDIN_PATH:
        keypair = keypair_from_secret(sys.stdin.read())
    else:
        keypair = keypair_from_file(keypair_path)
    settings = state.settings

    async def store_keypair() -> dict[str, Any]:
        async with open_store(settings, stores_keys=True) as store:
            await store.ensure_indexes()
            store.wallets.key_ring  # noqa: B018 - fail on missing keys before writing anything
            if role == FUNDING:
                existing = await store.wallets.funding_public_key(user_id)
                if existing is not None and existing != keypair.pubkey() and not replace:
                    raise CommandFailed(
                        f"user {user_id} already has a funding wallet ({existing}); give "
                        "--replace to replace it (its key is then deleted from the store)"
                    )
                await store.wallets.set_funding_wallet(user_id, keypair)
                return funding_row(keypair.pubkey())
            [position] = await store.wallets.add_buyer_wallets(user_id, [keypair])
            return buyer_row(position, keypair.pubkey())

    row = run_async(store_keypair())
    if as_json:
        print_json({"userId": user_id, "imported": row})
    elif row["role"] == FUNDING:
        click.echo(f"imported {row['publicKey']} as the funding wallet of user {user_id}")
    else:
        click.echo(
            f"imported {row['publicKey']} as buyer wallet #{row['position']} of user {user_id}"
        )


# --- keys ---


@cli.group()
def keys() -> None:
    """Encryption keys for wallet private keys (PREMIX_ENCRYPTION_KEYS)."""


@keys.command("generate")
@click.option("--key-id", default=None, help="Id of the new key (default: random 'k' + 8 hex).")
def keys_generate(key_id: str | None) -> None:
    """Print a new random 'key_id:base64' entry for PREMIX_ENCRYPTION_KEYS (stdout only).

    To rotate: put it first in PREMIX_ENCRYPTION_KEYS, keep the old keys after it, restart the
    workers, run `premix keys rotate`, then drop the old keys.
    """
    click.echo(KeyRing.generate_key(key_id))


@keys.command("rotate")
@json_option
@pass_state
def keys_rotate(state: CliState, as_json: bool) -> None:
    """Re-encrypt every stored wallet key under the newest (first) key. Safe to re-run."""
    settings = state.settings
    key_ring = KeyRing.from_settings(settings)

    async def rotate() -> int:
        async with open_store(settings) as store:
            return await store.wallets.reencrypt_all()

    count = run_async(rotate())
    if as_json:
        print_json({"reencrypted": count, "keyId": key_ring.primary_key_id})
    else:
        click.echo(f"re-encrypted {count} wallet key(s) under key '{key_ring.primary_key_id}'")


# --- localnet ---


@cli.command("localnet")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65_535),
    default=8899,
    show_default=True,
    help="Port to listen on (0: a free one).",
)
@click.option(
    "--slot-ms",
    type=click.IntRange(min=1),
    default=DEFAULT_SLOT_MS,
    show_default=True,
    help="Milliseconds per slot.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random faults.")
def localnet_command(host: str, port: int, slot_ms: int, seed: int) -> None:
    """Run a local Solana JSON-RPC node (LiteSVM) in the foreground until Ctrl-C or SIGTERM.

    Point PREMIX_RPC_URL at the URL it prints. Airdrops go through `requestAirdrop`.
    """
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    net = Localnet(slot_ms=slot_ms, seed=seed, host=host, port=port)
    try:
        try:
            net.start()
        except OSError as e:
            raise CommandFailed(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        click.echo(f"localnet listening on {net.url} ({slot_ms} ms slots); Ctrl-C to stop")
        while not stop.wait(0.2):  # short waits: signals are handled between them
            pass
    finally:
        net.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    note("localnet stopped")


# --- queue: enqueue, status, watch ---


@cli.command()
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


@cli.command()
@click.argument("job_id", metavar="JOB")
@json_option
@pass_state
def status(state: CliState, job_id: str, as_json: bool) -> None:
    """Show the latest progress of job JOB (its last progress event, kept in Redis)."""
    settings = state.settings

    async def read() -> tuple[ProgressEvent | None, str]:
        try:
            redis = queue_pool(settings.redis_url)
            event = await latest_progress(redis, job_id)
            queued = "" if event is not None else await queued_job_status(redis, settings, job_id)
            return event, queued
        finally:
            await close_queue()

    event, queued = run_async(read())
    if event is None:
        if queued in ("", "not_found"):
            raise unknown_job(job_id, settings)
        if as_json:
            print_json({"jobId": job_id, "status": queued})
        else:
            click.echo(f"job {job_id}: {QUEUED_STATES.get(queued, queued)}")
        return
    if as_json:
        print_json(event.model_dump(mode="json", by_alias=True))
    else:
        click.echo(f"job {job_id}: {describe_event(event)}")


def progress_bar(console: Console) -> Progress:
    """The live progress bar for one job: description, bar, percent, elapsed time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def bar_text(event: ProgressEvent) -> str:
    """Return the progress bar's label for `event`: '[3/6] Calculating Distribution'."""
    return f"[{event.phase}/{event.total_phases}] {event.title}"


@cli.command()
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
    """Follow job JOB live until it ends: exit 0 when it completed, 1 when it failed.

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
                bar.update(task, completed=event.percent, description=bar_text(event))
                last = event
        return last

    final = run_async(follow())
    if final is None or final.status is not ProgressStatus.COMPLETED:
        reason = final.description if final is not None else "no final event"
        raise CommandFailed(f"job {job_id} failed: {reason}")
    if not as_json:
        click.echo(f"job {job_id} completed: {final.description}")


# --- demo ---


@cli.command()
@click.option(
    "--mode",
    type=MODE,
    default="standard",
    show_default=True,
    help="Transfer engine.",
)
@click.option(
    "--amount",
    "amount_lamports",
    type=SOL,
    default=DEMO_DEFAULT_AMOUNT_SOL,
    show_default=True,
    help="SOL to distribute.",
)
@click.option(
    "--max-wallets", type=WALLET_COUNT, default=None, help="Use at most this many buyer wallets."
)
@click.option(
    "--slot-ms",
    type=click.IntRange(min=1),
    default=DEMO_DEFAULT_SLOT_MS,
    show_default=True,
    help="Localnet slot length (a validator's is 400).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Give up when the job has not ended after this many seconds.",
)
@click.option(
    "--redis-url",
    metavar="URL",
    default=None,
    help="Use this Redis (with a queue private to the run) instead of a private Valkey.",
)
@json_option
@pass_state
def demo(
    state: CliState,
    mode: Mode,
    amount_lamports: int,
    max_wallets: int | None,
    slot_ms: int,
    timeout: float,
    redis_url: str | None,
    as_json: bool,
) -> None:
    """Run the whole pipeline in this process, on a local chain, in a few seconds.

    Starts a localnet (LiteSVM, short slots) and a private Valkey (stopped afterwards), uses
    the in-memory store and a throwaway encryption key, creates a user with a funding wallet and
    73 buyer wallets, airdrops the amount plus fees, enqueues a premix, runs a worker
    in-process, shows its progress through the six phases and then every wallet, amount and
    signature. Needs no Redis and never touches a real queue (PREMIX_REDIS_URL is not used);
    with --redis-url it uses that Redis, on a queue of its own.
    """
    options = DemoOptions(
        mode=mode,
        amount_lamports=amount_lamports,
        max_wallets=max_wallets,
        slot_ms=slot_ms,
        timeout_seconds=timeout,
        redis_url=redis_url,
    )
    settings = state.settings
    if as_json:
        report = run_async(run_demo(options, settings))
        print_json(report.to_json())
    else:
        report = run_async(render_demo(options, settings, stdout_console()))
    if not report.succeeded:
        raise CommandFailed(f"job {report.job_id} failed: {report.message}")


FULL_DEMO_TABLE_WIDTH = 190  # columns the demo table needs with whole signatures


async def render_demo(options: DemoOptions, settings: Settings, console: Console) -> DemoReport:
    """Run the demo showing its plan, a live progress bar and the final table on `console`."""
    console.print(
        f"premix demo: {format_sol(options.amount_lamports)}, {options.mode} mode, on a local "
        f"chain with {options.slot_ms} ms slots (a validator's are 400 ms), the in-memory store "
        + (
            "and a private Valkey"
            if options.redis_url is None
            else f"and Redis at {redact_text(options.redis_url)} (a queue of its own)"
        )
    )
    bar = progress_bar(console)
    task = bar.add_task("waiting for the worker", total=100, start=False)

    def show_plan(amounts: Sequence[int], public_keys: Sequence[object]) -> None:
        console.print(
            f"\nCreated a user with a funding wallet and {MAX_BUYER_WALLETS} buyer wallets. "
            f"Plan: {len(amounts)} of them, the fewest whose caps hold the amount:"
        )
        console.print(format_plan(amounts, [str(key) for key in public_keys]))
        console.print()
        bar.start()

    def show_event(event: ProgressEvent) -> None:
        bar.start_task(task)
        bar.update(task, completed=event.percent, description=bar_text(event))

    try:
        report = await run_demo(options, settings, on_plan=show_plan, on_event=show_event)
    finally:
        bar.stop()
    console.print()
    console.print(demo_table(report, console.width))
    console.print(
        f"Sent {format_sol(report.sent_lamports)} to {report.funded_wallets} of "
        f"{len(report.wallets)} wallet(s) in {report.transactions} transaction(s); fees "
        f"{format_sol(report.fee_lamports)}; wall time {report.wall_seconds:.2f} s "
        f"(enqueue to the final event)."
    )
    console.print(f"Job {report.job_id}: {report.message}")
    return report


def demo_table(report: DemoReport, width: int) -> Table:
    """Every wallet of the plan: position, public key, amount, status, signature, balance.

    Signatures are shortened when `width` cannot hold them (`--json` always has them whole).
    """
    short = width < FULL_DEMO_TABLE_WIDTH

    def signature_text(signature: str | None) -> str:
        if signature is None:
            return "-"
        return f"{signature[:12]}…{signature[-12:]}" if short else signature

    table = Table(title=f"Buyer wallets funded by job {report.job_id}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("wallet", no_wrap=True)
    table.add_column("amount (SOL)", justify="right")
    table.add_column("on chain (SOL)", justify="right")
    table.add_column("status")
    table.add_column("signature", no_wrap=True)
    for wallet in report.wallets:
        table.add_row(
            str(wallet.position),
            wallet.public_key,
            sol_text(wallet.lamports),
            sol_text(wallet.balance_lamports),
            wallet.status,
            signature_text(wallet.signature),
        )
    table.add_section()
    table.add_row(
        "",
        "total",
        sol_text(sum(wallet.lamports for wallet in report.wallets)),
        sol_text(report.balance_total_lamports),
        "",
        "",
    )
    return table


# --- errors and the entry point ---


def describe_error(error: BaseException) -> tuple[str, int]:
    """Return the one-line message and exit status for an error a command raised."""
    if isinstance(error, click.UsageError):
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
        return error.format_message() + hint, EXIT_USAGE
    if isinstance(error, click.ClickException):
        return error.format_message(), error.exit_code
    if isinstance(error, Interrupted | KeyboardInterrupt | click.Abort):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(error, CommandFailed | PremixError):
        return str(error), EXIT_FAILURE
    if isinstance(error, RedisError):
        return (
            f"Redis unavailable: {error} (check PREMIX_REDIS_URL)",
            EXIT_FAILURE,
        )
    if isinstance(error, PyMongoError):
        return f"MongoDB error ({type(error).__name__}); check PREMIX_MONGODB_URI", EXIT_FAILURE
    if isinstance(error, httpx.HTTPError | SolanaRpcException):
        return (
            f"Solana RPC unavailable: {type(error).__name__}: {error} (check PREMIX_RPC_URL)",
            EXIT_FAILURE,
        )
    if isinstance(error, ValueError):  # amounts, distribution limits, tier tables
        return str(error), EXIT_FAILURE
    if isinstance(error, OSError):
        if error.strerror and error.filename:
            return f"{error.strerror}: {error.filename}", EXIT_FAILURE
        return str(error.strerror or error), EXIT_FAILURE
    return (
        f"unexpected {type(error).__name__}: {error} (run 'premix --traceback ...' for details)",
        EXIT_FAILURE,
    )


def run(args: Sequence[str] | None = None) -> int:
    """Run the `premix` command line with `args` (default: `sys.argv[1:]`); return the status."""
    state = CliState()
    try:
        result = cli.main(args=args, prog_name=PROG, standalone_mode=False, obj=state)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help())  # bare `premix`: the help, not an error
        return 0
    except (Exception, KeyboardInterrupt) as e:
        if state.traceback:
            raise
        message, status = describe_error(e)
        one_line = " ".join(redact_text(message).split())
        click.echo(f"{PROG}: error: {one_line}", err=True)
        return status
    return result if isinstance(result, int) else 0


def main() -> None:
    """Console entry point (`premix`)."""
    sys.exit(run())


if __name__ == "__main__":
    main()
