"""`premix health [--json]`: is the service up? Redis, MongoDB, the RPC node (slot and lag),
live workers and the queue depth (`premix.health`); exit 0 when all answer, 1 otherwise."""

from typing import Any

import click

from premix.cli.base import CliState, json_option, pass_state, print_json, run_async
from premix.health import check_health

EXIT_UNHEALTHY = 1


@click.command()
@json_option
@pass_state
def health(state: CliState, as_json: bool) -> None:
    """Check Redis, MongoDB, the Solana RPC node, the live workers and the queue.

    Exit 0 when every service answers and at least one worker is live, 1 otherwise (the
    Docker image's HEALTHCHECK runs this).
    """
    report = run_async(check_health(state.settings))
    if as_json:
        print_json(report)
    else:
        for line in health_lines(report):
            click.echo(line)
    if not report["ok"]:
        raise click.exceptions.Exit(EXIT_UNHEALTHY)


def health_lines(report: dict[str, Any]) -> list[str]:
    """One line per service: 'redis    ok  0.41 ms' or 'mongodb  DOWN  no answer within 3 s'."""
    lines = []
    for name in ("redis", "mongodb", "rpc", "workers", "queue"):
        entry = report[name]
        state = "ok" if entry["ok"] else "DOWN"
        if not entry["ok"]:
            detail = entry.get("error", "")
        elif name == "rpc":
            detail = (
                f"slot {entry['slot']}, finalized {entry['finalizedSlot']} "
                f"(lag {entry['lagSlots']} slots)"
            )
        elif name == "workers":
            detail = f"{entry['live']} live"
        elif name == "queue":
            detail = (
                f"{entry['depth']} queued on {entry['name']} ({entry['due']} due, "
                f"{entry['deferred']} deferred)"
            )
        else:
            detail = "embedded (memory://)" if entry.get("embedded") else ""
        latency = f"{entry['latencyMs']:.2f} ms" if "latencyMs" in entry else ""
        lines.append(" ".join(part for part in (f"{name:<8}", state, latency, detail) if part))
    lines.append("healthy" if report["ok"] else "unhealthy")
    return lines
