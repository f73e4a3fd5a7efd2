"""`premix dev [--workers N] [--port P]`: the service as separate processes on this machine
(`premix.dev`): a localnet, a Valkey, a SecantusDB and N workers, until Ctrl-C."""

import click

from premix.cli.base import CommandFailed, note, stop_on_signals
from premix.constants import LOCALNET_SLOT_MS
from premix.dev import DevError, dev_stack


@click.command()
@click.option(
    "--workers", type=click.IntRange(1, 32), default=2, show_default=True, help="Worker processes."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65_535),
    default=8899,
    show_default=True,
    help="The localnet's RPC port (0: a free one).",
)
@click.option(
    "--slot-ms",
    type=click.IntRange(min=1),
    default=LOCALNET_SLOT_MS,
    show_default=True,
    help="Localnet milliseconds per slot.",
)
def dev(workers: int, port: int, slot_ms: int) -> None:
    """Run the service locally as separate processes, without Docker: a localnet, a Valkey, a
    SecantusDB (the `local` extra) and N arq workers, until Ctrl-C or SIGTERM.

    Prints the environment to export in another terminal, so `premix wallets create`,
    `premix enqueue` and a bot script reach the same services. Ctrl-C stops everything it
    started and nothing else; the data lives in a temporary directory and goes with it.
    """
    try:
        with (
            stop_on_signals() as stop,
            dev_stack(workers=workers, port=port, slot_ms=slot_ms) as stack,
        ):
            click.echo(
                f"premix dev: localnet {stack.localnet.url} ({slot_ms} ms slots), Valkey "
                f"{stack.valkey.url}, SecantusDB {stack.secantus.url}, {workers} worker(s) "
                f"(logs in {stack.workdir})"
            )
            click.echo("# in another terminal:")
            for line in stack.export_lines():
                click.echo(line)
            click.echo("premix dev: ready; Ctrl-C stops everything it started", err=False)
            while not stop.wait(0.2):
                for number, process in enumerate(stack.workers, start=1):
                    if process.poll() is not None:
                        raise CommandFailed(
                            f"worker {number} exited ({process.returncode}): "
                            + stack.worker_log_tail(number)
                        )
    except DevError as e:
        raise CommandFailed(str(e)) from None
    note("dev: stopped everything it started")
