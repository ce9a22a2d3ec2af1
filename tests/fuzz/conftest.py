"""The count of fuzz inputs each target ran, printed at the end of the session (``make fuzz`` shows it)."""

from __future__ import annotations

import pytest

from tests.fuzz import COUNTS, EXAMPLES, EXAMPLES_VARIABLE, RANDOM


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not COUNTS:
        return
    mode = "random" if RANDOM else "derandomized"
    terminalreporter.section(f"fuzz inputs ({EXAMPLES_VARIABLE}={EXAMPLES}, {mode})")
    width = max(len(target) for target in COUNTS)
    for target, count in sorted(COUNTS.items()):
        terminalreporter.write_line(f"{target:<{width}}  {count:>9,}")
    terminalreporter.write_line(f"{'total':<{width}}  {sum(COUNTS.values()):>9,}")
