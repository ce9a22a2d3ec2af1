"""The README's testing example is real code: its test runs here as a user's would."""

from __future__ import annotations

import re
import types
from pathlib import Path

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


async def test_the_readme_testing_example_passes() -> None:
    (block,) = [
        b for b in re.findall(r"```python\n(.*?)```", README, re.DOTALL) if "from meshkit.testing import" in b
    ]
    module = types.ModuleType("readme_testing")
    exec(compile(block, "README.md (testing)", "exec"), module.__dict__)
    await module.test_an_order_is_charged()
