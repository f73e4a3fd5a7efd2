"""`premix localnet`: a local Solana JSON-RPC node in the foreground."""

import signal
import threading

import click

from premix.cli.base import CommandFailed, note
from premix.constants import LOCALNET_SLOT_MS
from premix.localnet import Localnet


@click.command("localnet")
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
    default=LOCALNET_SLOT_MS,
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
