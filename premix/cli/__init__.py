"""The `premix` command: plan, wallets, keys, localnet, enqueue, status, watch, result,
retry, cancel, sweep and demo.

Every command reads `Settings` from the `PREMIX_*` environment once. Results go to stdout (a
table, or JSON with `--json`); notes and errors go to stderr. Every expected failure is one line,
`premix: error: ...`, with exit status 2 for a usage mistake, 1 for a failure and 130 when
interrupted; `--traceback` (before the command) shows the full traceback instead.

Modules: `base` (the group, its state, parameter types, errors and the entry point), one per
command family: `plan`, `wallets` (wallets and keys), `localnet`, `jobs` (enqueue, status,
watch), `result` (a job's receipt), `retry` (a new try of a failed premix), `cancel`, `sweep`
(buyer wallets back to the funding wallet), `demo`; a command's module is imported only when
that command runs (`COMMANDS`).
"""

from premix.cli.base import cli, main, run

__all__ = ["cli", "main", "run"]
