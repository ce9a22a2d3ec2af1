"""The README's tour is real code: its blocks run here, against a real platform."""

from __future__ import annotations

import re
import textwrap
import types
from pathlib import Path
from typing import Any

from meshkit import EventEnvelope, PostOffice
from meshkit.core import default_registry
from meshkit.testing import running_platform

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def _block(starting: str) -> str:
    return next(block for block in BLOCKS if block.startswith(starting))


async def test_the_tour_runs_as_written(capsys: Any) -> None:
    module = types.ModuleType("readme_tour")
    exec(compile(_block("from pydantic import BaseModel"), "README.md (functions)", "exec"), module.__dict__)
    tour = "async def tour():\n" + textwrap.indent(_block("po = PostOffice()"), "    ")
    namespace: dict[str, Any] = {"PostOffice": PostOffice, "EventEnvelope": EventEnvelope}
    exec(compile(tour, "README.md (PostOffice)", "exec"), namespace)
    async with running_platform(default_registry.select(["readme_tour"])):
        await namespace["tour"]()
        await PostOffice().request("audit.log", "flush")  # audit.log has one instance: FIFO
    assert "audit: drop and forget" in capsys.readouterr().out


async def test_the_stream_tour_runs_as_written(capsys: Any) -> None:
    module = types.ModuleType("readme_streams")
    exec(
        compile(_block("from collections.abc import AsyncIterator"), "README.md (streams)", "exec"),
        module.__dict__,
    )
    async with running_platform(default_registry.select(["readme_streams"])):
        await module.read()
        po = PostOffice()
        segments = [s async for s in po.stream("report.lines")]
    assert capsys.readouterr().out.splitlines() == ["data to", "data be", "data or", "data not", "eof None"]
    assert [s.body for s in segments] == ["first line", {"done": 1}, {"lines": 1}]
