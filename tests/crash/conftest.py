"""The crash suite's summary line: how many scenarios ran and which kills they made."""

import pytest

from tests.crash.harness import SUITE_TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SUITE_TALLY:
        return
    kills = {k.removeprefix("kill:"): n for k, n in sorted(SUITE_TALLY.items()) if ":" in k}
    terminalreporter.write_line(
        f"crash suite: {SUITE_TALLY['scenarios']} scenario(s) finished, "
        f"{sum(kills.values())} worker kill(s) or stall(s) {kills}, "
        f"{SUITE_TALLY['store_kills']} store kill(s)"
    )
