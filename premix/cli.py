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
from typing import Any, TypeVar

import click
import httpx
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table
from solana.exceptions import SolanaRpcException
from solders.keypair import Keypair

from premix.amounts import AmountError, format_sol, lamports_to_sol, sol_to_lamports
from premix.constants import MAX_BUYER_WALLETS
from premix.distribution import TierTable, format_plan, plan_distribution
from premix.errors import PremixError
from premix.jobs import USER_ID_PATTERN
from premix.keys import KeyRing, keypair_from_file, keypair_from_secret
from premix.localnet import DEFAULT_SLOT_MS, Localnet
from premix.logs import configure_logging, redact_text
from premix.settings import Settings
from premix.store import BUYER, FUNDING, Store, TooManyBuyerWallets

PROG = "premix"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
STDIN_PATH = "-"

T = TypeVar("T")


class CommandFailed(Exception):
    """A failure a command reports as its one error line (exit status 1)."""


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
                raise CommandFailed(f"invalid configuration: {_describe_settings_error(e)}") from e
            # Command output stays readable: only warnings, unless --verbose.
            level = settings.log_level if self.verbose else "WARNING"
            configure_logging(settings.model_copy(update={"log_level": level}))
            self._settings = settings
        return self._settings


pass_state = click.make_pass_decorator(CliState)


def _describe_settings_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        name = "_".join(str(loc) for loc in item["loc"]).upper()
        parts.append(f"PREMIX_{name}: {item['msg']}")
    return "; ".join(parts)


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
            self.fail("must be 1 to 128 letters, digits or _.:@- characters", param, ctx)
        return text


SOL = SolAmountType()
USER_ID = UserIdType()
WALLET_COUNT = click.IntRange(1, MAX_BUYER_WALLETS)


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


def sol_text(lamports: int) -> str:
    """`lamports` as an exact, plain SOL string for JSON: '0.5', '12'."""
    return format(lamports_to_sol(lamports), "f")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to completion in a fresh event loop."""
    return asyncio.run(coroutine)


# --- the command group ---


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--traceback", is_flag=True, help="Show the full traceback of an error (for bug reports)."
)
@click.option("-v", "--verbose", is_flag=True, help="Log at PREMIX_LOG_LEVEL instead of WARNING.")
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
    table = TierTable.from_settings(settings)
    available = available_wallets if available_wallets is not None else settings.max_wallets
    wallet_limit = min(available, max_wallets or settings.max_wallets, settings.max_wallets)
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


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The configured store, reachable and indexed; closed afterwards."""
    if settings.uses_memory_store:
        note(MEMORY_STORE_NOTE)
    store = await Store.open(settings)
    try:
        await store.ping()
        yield store
    finally:
        await store.close()


def wallet_rows(funding: object | None, buyers: Sequence[object]) -> list[dict[str, Any]]:
    """Wallets as JSON rows: role, 1-based position among buyers (0 for funding), public key."""
    rows: list[dict[str, Any]] = []
    if funding is not None:
        rows.append({"role": FUNDING, "position": 0, "publicKey": str(funding)})
    rows += [
        {"role": BUYER, "position": position, "publicKey": str(public_key)}
        for position, public_key in enumerate(buyers, start=1)
    ]
    return rows


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

    Private keys are stored encrypted under PREMIX_ENCRYPTION_KEYS and never printed.
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
        async with open_store(settings) as store:
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
                {"role": BUYER, "position": position + 1, "publicKey": str(keypair.pubkey())}
                for position, keypair in zip(positions, buyer_keypairs, strict=True)
            ]
            if funding:
                funding_keypair = Keypair()
                await store.wallets.set_funding_wallet(user_id, funding_keypair)
                rows.insert(
                    0, {"role": FUNDING, "position": 0, "publicKey": str(funding_keypair.pubkey())}
                )
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
        async with open_store(settings) as store:
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
                return {"role": FUNDING, "position": 0, "publicKey": str(keypair.pubkey())}
            [position] = await store.wallets.add_buyer_wallets(user_id, [keypair])
            return {"role": BUYER, "position": position + 1, "publicKey": str(keypair.pubkey())}

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


# --- errors and the entry point ---


def describe_error(error: BaseException) -> tuple[str, int]:
    """Return the one-line message and exit status for an error a command raised."""
    if isinstance(error, click.UsageError):
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
        return error.format_message() + hint, EXIT_USAGE
    if isinstance(error, click.ClickException):
        return error.format_message(), error.exit_code
    if isinstance(error, KeyboardInterrupt | click.Abort):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(error, CommandFailed | PremixError):
        return str(error), EXIT_FAILURE
    if isinstance(error, RedisError):
        return (
            f"Redis unavailable ({type(error).__name__}: {error}); check PREMIX_REDIS_URL",
            EXIT_FAILURE,
        )
    if isinstance(error, PyMongoError):
        return f"MongoDB error ({type(error).__name__}); check PREMIX_MONGODB_URI", EXIT_FAILURE
    if isinstance(error, httpx.HTTPError | SolanaRpcException):
        return (
            f"Solana RPC unavailable ({type(error).__name__}: {error}); check PREMIX_RPC_URL",
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
