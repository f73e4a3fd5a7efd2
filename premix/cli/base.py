"""What every `premix` command shares: the command group and its state (the settings, read
once), parameter types, output helpers, and how an error becomes the one `premix: error:` line
and an exit status (`run`, `main`)."""

import asyncio
import contextlib
import importlib
import json
import re
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, get_args

import click
from rich.console import Console

from premix.amounts import AmountError, sol_to_lamports
from premix.constants import MAX_BUYER_WALLETS
from premix.errors import PremixError
from premix.jobs import USER_ID_PATTERN, USER_ID_RULE, Mode
from premix.logs import configure_logging, redact_text
from premix.settings import Settings, SettingsInvalid, describe_settings_error

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
            except SettingsInvalid as e:
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


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event SIGINT or SIGTERM sets during the block, for a command running in the
    foreground until stopped (wait on it in short steps: signals are handled between them);
    the previous handlers are put back after."""
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to completion in a fresh event loop.

    Ctrl-C, or SIGTERM (a supervisor, `kill`), cancels the coroutine (its cleanup runs: the
    demo stops the servers it started) and raises `Interrupted`.
    """
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return asyncio.run(coroutine)
    except KeyboardInterrupt:
        raise Interrupted() from None  # not KeyboardInterrupt: click would print a blank line
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# --- the command group ---


class LazyGroup(click.Group):
    """A group whose commands are imported when one is asked for (`premix plan` loads neither
    the queue, the store nor the demo); `COMMANDS` maps each name to `module:attribute`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


COMMANDS: Final = {
    "cancel": "premix.cli.cancel:cancel",
    "demo": "premix.cli.demo:demo",
    "dev": "premix.cli.dev:dev",
    "enqueue": "premix.cli.jobs:enqueue",
    "health": "premix.cli.health:health",
    "keys": "premix.cli.wallets:keys",
    "localnet": "premix.cli.localnet:localnet_command",
    "plan": "premix.cli.plan:plan",
    "result": "premix.cli.result:result",
    "retry": "premix.cli.retry:retry",
    "status": "premix.cli.jobs:status",
    "sweep": "premix.cli.sweep:sweep",
    "wallets": "premix.cli.wallets:wallets",
    "watch": "premix.cli.jobs:watch",
}


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="premix", message="%(prog)s %(version)s")
@click.option(
    "--traceback", is_flag=True, help="Show the full traceback of an error (for bug reports)."
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Also log to stderr, at PREMIX_LOG_LEVEL (default INFO)."
)
@click.pass_context
def cli(ctx: click.Context, traceback: bool, verbose: bool) -> None:
    """premix: pre-fund a user's Solana buyer wallets from their funding wallet.

    Configuration comes from PREMIX_* environment variables, then a .env file in the working
    directory (see the README and .env.example). Start with
    `premix demo`: the whole pipeline on a local chain in a few seconds.
    """
    state = ctx.ensure_object(CliState)
    state.traceback = state.traceback or traceback
    state.verbose = verbose


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
    if _raised_by(error, "redis.exceptions", "RedisError"):
        return (
            f"Redis unavailable: {error} (check PREMIX_REDIS_URL)",
            EXIT_FAILURE,
        )
    if _raised_by(error, "pymongo.errors", "PyMongoError"):
        return f"MongoDB error ({type(error).__name__}); check PREMIX_MONGODB_URI", EXIT_FAILURE
    if _raised_by(error, "httpx", "HTTPError") or _raised_by(
        error, "solana.exceptions", "SolanaRpcException"
    ):
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


def _raised_by(error: BaseException, module: str, name: str) -> bool:
    """True when `error` is a `module.name`: a library's error can only arise once that library
    is loaded, so `describe_error` never imports one (commands load only what they use)."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(error, getattr(loaded, name))


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
