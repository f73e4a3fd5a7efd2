"""`premix localnet`: a local Solana JSON-RPC node in the foreground, optionally with faults."""

from typing import Any

import click

from premix.cli.base import CommandFailed, note, stop_on_signals
from premix.constants import LOCALNET_SLOT_MS
from premix.localnet import FaultRule, Localnet, make_rule

FAULT_SYNTAX = "KIND[:param=value,...]"


class FaultSpecType(click.ParamType[FaultRule]):
    """A fault rule written `KIND[:param=value,...]`: `method`, `count` and `probability` say
    where and how often it fires, any other parameter is the kind's own (`stale_read:slots=3`)."""

    name = "FAULT"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> FaultRule:
        if isinstance(value, FaultRule):
            return value
        kind, _, spec = str(value).partition(":")
        try:
            options = _options(spec)
            method = options.pop("method", None)
            count = options.pop("count", None)
            probability = options.pop("probability", None)
            return make_rule(
                kind.strip(),
                method=None if method is None else str(method),
                count=None if count is None else _integer("count", count),
                probability=None if probability is None else _probability(probability),
                **options,
            )
        except ValueError as e:
            self.fail(f"{value!r}: {e}", param, ctx)


def _options(spec: str) -> dict[str, Any]:
    """`param=value,...` as a dict, each value an int, a float or else the text."""
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, equals, text = item.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"expected {FAULT_SYNTAX}, got {item!r}")
        options[name.strip()] = _value(text.strip())
    return options


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _integer(name: str, value: Any) -> int:
    if not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


def _probability(value: Any) -> float:
    if isinstance(value, str):
        raise ValueError("probability must be a number between 0 and 1")
    return float(value)


def describe_rule(rule: FaultRule) -> str:
    """One line naming a rule: its kind, parameters, method and how often it fires."""
    parts = [f"{name}={value}" for name, value in rule.params.items()]
    if rule.method is not None:
        parts.append(f"method={rule.method}")
    if rule.remaining is not None:
        parts.append(f"count={rule.remaining}")
    if rule.probability is not None:
        parts.append(f"probability={rule.probability}")
    return f"{rule.kind.value} ({', '.join(parts)})" if parts else rule.kind.value


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
@click.option(
    "--fault",
    "faults",
    type=FaultSpecType(),
    multiple=True,
    metavar=FAULT_SYNTAX,
    help=(
        "Switch a fault on (repeatable), e.g. stale_read:slots=3,probability=0.5 or no_history. "
        "Kinds: latency (ms), http_429 (retry_after), http_5xx (status), drop_send, "
        "lose_response, expire_blockhash, stale_read (slots), no_history, congestion "
        "(min_micro_lamports, land_probability, reported_micro_lamports), e.g. "
        "congestion:min_micro_lamports=1000,land_probability=0.1; any kind also takes "
        "method, count and probability."
    ),
)
def localnet_command(
    host: str, port: int, slot_ms: int, seed: int, faults: tuple[FaultRule, ...]
) -> None:
    """Run a local Solana JSON-RPC node (LiteSVM) in the foreground until Ctrl-C or SIGTERM.

    Point PREMIX_RPC_URL at the URL it prints. Airdrops go through `requestAirdrop`.
    """
    net = Localnet(slot_ms=slot_ms, seed=seed, host=host, port=port)
    for rule in faults:
        net.faults.add(rule)
    with stop_on_signals() as stop:
        try:
            try:
                net.start()
            except OSError as e:
                raise CommandFailed(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
            click.echo(f"localnet listening on {net.url} ({slot_ms} ms slots); Ctrl-C to stop")
            for rule in faults:
                note(f"fault on: {describe_rule(rule)}")
            while not stop.wait(0.2):  # short waits: signals are handled between them
                pass
        finally:
            net.stop()
    note("localnet stopped")
